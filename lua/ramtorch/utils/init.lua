-- ramtorch/utils: torch.utils. utils.checkpoint(fn, ...) is activation checkpointing
-- (ramtorch/utils/checkpoint.lua); further submodules load on first use (utils.X from
-- ramtorch/utils/X.lua).
local M = {}

function M.checkpoint(fn, ...) return require("ramtorch.utils.checkpoint").checkpoint(fn, ...) end

return setmetatable(M, {
  __index = function(t, k)
    local ok, m = pcall(require, "ramtorch.utils." .. k)
    if not ok then return nil end
    rawset(t, k, m)
    return m
  end,
})
