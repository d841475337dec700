-- ramtorch/helpers.lua: RamTorch's helpers. replace_linear_with_ramtorch(model, rank) swaps every
-- nn.Linear of a model, in place and under the same names, for a ramtorch.Linear that adopts the same
-- weight and bias tensors (no copy when they are already in host memory). A Linear whose weight or
-- bias is shared with another module (a GPT's lm_head tied to its token embedding) stays a plain
-- Linear, with a note on stderr: streaming it would split the tie into a host copy and a device copy
-- that train apart.
local torch = require("ramtorch")
local nn = require("ramtorch.nn")
local rlinear = require("ramtorch.linear")

local M = {}

local function convert(lin, rank)
  local w, b = lin.weight, lin.bias
  -- parameters already on the host are shared; device ones are brought back to the host, and
  -- non-contiguous host ones (a transposed view) copied, since the engine streams one block
  local function host(t)
    if t == nil or (t.device == "cpu" and t:is_contiguous()) then return t end
    local h = torch.no_grad(function() return t:detach():to("cpu"):contiguous() end)
    if t.requires_grad then h:requires_grad_(true) end
    return h
  end
  local new = rlinear.Linear(lin.in_features, lin.out_features, {
    bias = b ~= nil, dtype = w.dtype, skip_init = true, weight = host(w), bias_tensor = host(b),
    -- the compute device, as RamTorch's helper sets it (cuda:<rank>); the parameters stay on the host
    device = rank ~= nil and ("cuda:" .. rank) or "cpu",
  })
  rawset(new, "training", lin.training)
  rawset(new, "rank", rank)
  return new
end

local function is_plain_linear(m) return m:is_a(nn.Linear) and not m.is_ramtorch end

-- How many times each parameter tensor (by C handle) is registered across the model's modules.
local function param_uses(model)
  local uses = {}
  for _, m in ipairs(model:modules()) do
    local reg = m._parameters
    for _, k in ipairs(reg.keys) do
      local t = reg.map[k]
      if t ~= nil then
        local key = tostring(t.p)
        uses[key] = (uses[key] or 0) + 1
      end
    end
  end
  return uses
end

local function is_tied(lin, uses)
  for _, t in ipairs({ lin.weight, lin.bias }) do
    if t ~= nil and (uses[tostring(t.p)] or 0) > 1 then return true end
  end
  return false
end

-- Returns the model (the replacement itself when the model is an nn.Linear).
function M.replace_linear_with_ramtorch(model, rank)
  if not nn.is_module(model) then
    error(("replace_linear_with_ramtorch: expected a Module, got %s"):format(type(model)), 2)
  end
  if rank ~= nil and (type(rank) ~= "number" or rank < 0 or rank ~= math.floor(rank) or rank == math.huge) then
    error(("replace_linear_with_ramtorch: rank must be a non-negative integer, got %s"):format(tostring(rank)), 2)
  end
  -- RamTorch builds each layer with device=f"cuda:{rank}" unchecked, and PyTorch refuses the ordinal
  -- only when the layer first runs there; with CUDA present a rank beyond the device count is refused
  -- here, before any layer is swapped. Without CUDA (device_count() == 0) the rank is only recorded as
  -- the layers' compute device, as RamTorch does, and CPU inputs compute on the CPU.
  local count = rank ~= nil and torch.cuda.device_count() or 0
  if count > 0 and rank >= count then
    error(("replace_linear_with_ramtorch: rank %d is out of range: %d CUDA device%s (valid rank%s)")
          :format(rank, count, count == 1 and "" or "s",
                  count == 1 and " 0" or (("s 0 to %d"):format(count - 1))), 2)
  end
  if is_plain_linear(model) then return convert(model, rank) end
  local uses = param_uses(model)
  -- one replacement per Linear instance: a layer registered under two names (or reached through a
  -- shared parent) is the same module twice, as in PyTorch; converting it once per name would make two
  -- layers and, for a device model, two host copies of its weight that train apart
  local converted = {}
  local function walk(m, prefix)
    -- every name, a child registered twice included (named_children lists it once, as PyTorch)
    local names = {}
    for i, name in ipairs(m._modules.keys) do names[i] = name end
    for _, name in ipairs(names) do
      local child, path = m._modules.map[name], prefix == "" and name or (prefix .. "." .. name)
      if is_plain_linear(child) then
        if converted[child] then
          m:register_module(name, converted[child])
        elseif is_tied(child, uses) then
          io.stderr:write(("replace_linear_with_ramtorch: %s stays a plain Linear: its parameters are shared "
            .. "with another module (tied weights), which keeps them where that module lives\n"):format(path))
        else
          converted[child] = convert(child, rank)
          m:register_module(name, converted[child])
        end
      else
        walk(child, path)
      end
    end
  end
  walk(model, "")
  return model
end

M.is_ramtorch_param = rlinear.is_ramtorch_param

return M
