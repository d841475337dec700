-- ramtorch/models: model definitions, loaded on first use (torch.models.gpt or
-- require("ramtorch.models.gpt")).
return setmetatable({}, {
  __index = function(t, k)
    local ok, m = pcall(require, "ramtorch.models." .. k)
    if not ok then return nil end
    rawset(t, k, m)
    return m
  end,
})
