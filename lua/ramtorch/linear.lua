-- ramtorch/linear.lua: ramtorch.Linear, RamTorch's memory-efficient linear layer (CPUBouncingLinear).
-- Same arguments as nn.Linear (in_features, out_features, {bias=, dtype=, device=, skip_init=}); its
-- weight and bias live in host memory (CPU tensors) whatever `device` says, and model:to(device)
-- leaves them there (only dtype conversions apply), as RamTorch does. `device` is the compute device.
--
-- New parameters are slices of the host arena (DESIGN section 3; ramtorch.offload.arena_zeros); adopted
-- ones (opts.weight / opts.bias_tensor, from helpers.replace_linear_with_ramtorch) are kept as given.
-- forward streams the parameters through the offload engine (DESIGN section 5; ramtorch.offload.linear)
-- when the input is on a device, or on the CPU when the engine's CPU mode is on
-- (ramtorch.offload.enable_cpu_streams(true)); otherwise it computes like nn.Linear.
local torch = require("ramtorch")
local core = require("ramtorch.core")
local nn = require("ramtorch.nn")
local mod = require("ramtorch.nn.module")
local offload = require("ramtorch.offload")

local Parameter = nn.Parameter

local M = {}

-- Parameters owned by ramtorch layers (weak keys: the Lua handles), for is_ramtorch_param.
local ramtorch_params = setmetatable({}, { __mode = "k" })

local function mark(t)
  if t ~= nil then ramtorch_params[t] = true end
end

-- True for a weight or bias of a ramtorch.Linear (a host-resident, streamed parameter).
function M.is_ramtorch_param(t) return torch.is_tensor(t) and ramtorch_params[t] == true end

-- An adopted parameter (opts.weight / opts.bias_tensor) must be what the engine can stream: a
-- contiguous floating-point CPU tensor of the layer's shape. Errors at ramtorch.Linear's caller.
local function check_adopted(t, name, shape, dims)
  if not torch.is_tensor(t) or t.device ~= "cpu" then
    error(("ramtorch.Linear: opts.%s must be a CPU tensor"):format(name), 4)
  end
  local s, same = t.shape, #t.shape == #shape
  for i = 1, #shape do same = same and s[i] == shape[i] end
  if not same then
    error(("ramtorch.Linear: opts.%s must have shape [%s] (%s), got [%s]"):format(name, table.concat(shape, ", "),
      dims, table.concat(s, ", ")), 4)
  end
  if not t.dtype.is_floating_point then
    error(("ramtorch.Linear: opts.%s must be a floating-point tensor, got %s"):format(name, tostring(t.dtype)), 4)
  end
  if not t:is_contiguous() then
    error(("ramtorch.Linear: opts.%s must be contiguous (the engine copies it as one block)"):format(name), 4)
  end
end

local Linear = nn.Linear:extend("CPUBouncingLinear")
M.Linear = Linear
M.CPUBouncingLinear = Linear

-- opts: bias (default true), dtype, device (compute device; parameters stay on the host), skip_init
-- (leave the parameters zero instead of PyTorch's default initialisation), and for helpers that
-- convert an existing layer: weight / bias_tensor (CPU tensors to adopt as the parameters, shared).
function Linear:__init(in_features, out_features, opts)
  if type(opts) == "boolean" then opts = { bias = opts } end
  if opts ~= nil and type(opts) ~= "table" then
    error(("ramtorch.Linear: expected an options table (or a boolean bias), got %s"):format(type(opts)), 3)
  end
  opts = opts or {}
  for _, v in ipairs({ { in_features, "in_features" }, { out_features, "out_features" } }) do
    if type(v[1]) ~= "number" or v[1] ~= math.floor(v[1]) or v[1] < 0 or v[1] == math.huge then
      error(("ramtorch.Linear: expected a non-negative integer %s, got %s"):format(v[2], tostring(v[1])), 3)
    end
  end
  self.in_features, self.out_features = in_features, out_features
  self.is_ramtorch = true
  self.device = core.device_name(core.device_code(opts.device, 3))
  local pdt = core.dtype(opts.dtype, 3)
  local w = opts.weight
  if w ~= nil then
    -- checked here, so that a bad adoption fails where the layer is built, not at its first forward
    check_adopted(w, "weight", { out_features, in_features }, "out_features, in_features")
    if opts.dtype ~= nil and w.dtype ~= pdt then
      error(("ramtorch.Linear: opts.dtype %s does not match opts.weight's %s"):format(tostring(pdt),
        tostring(w.dtype)), 3)
    end
    pdt = w.dtype
    self:register_parameter("weight", w)
  else
    if not pdt.is_floating_point then
      error(("ramtorch.Linear: expected a floating-point dtype, got %s"):format(tostring(pdt)), 3)
    end
    self.weight = Parameter(offload.arena_zeros({ out_features, in_features }, pdt))
  end
  if opts.bias ~= false then
    local b = opts.bias_tensor
    if b ~= nil then
      check_adopted(b, "bias_tensor", { out_features }, "out_features")
      self:register_parameter("bias", b)
    else
      self.bias = Parameter(offload.arena_zeros({ out_features }, pdt))
    end
  end
  mark(self.weight)
  mark(self.bias)
  if not opts.skip_init and w == nil then self:reset_parameters() end
end

-- Parameters stay in host memory: a device move only records the compute device; dtype changes apply;
-- a move to the CPU brings back parameters that a memory budget moved to the device for good.
-- A dtype change makes new tensors: those that were arena slices move back into the arena.
function Linear:_to_own(dev, dt, memo)
  if dev ~= nil then self.device = dev end
  if dev == "cpu" then -- parameters a memory budget moved to the device come back to the host
    for _, k in ipairs({ "weight", "bias" }) do
      local t = self._parameters.map[k]
      if t ~= nil then offload.unmigrate(t) end
    end
  end
  local was_arena = {}
  for _, k in ipairs({ "weight", "bias" }) do
    local t = self._parameters.map[k]
    was_arena[k] = t ~= nil and offload.is_arena_tensor(t)
  end
  mod.Module._to_own(self, nil, dt, memo)
  for _, k in ipairs({ "weight", "bias" }) do
    local t = self._parameters.map[k]
    if t ~= nil and was_arena[k] and not offload.is_arena_tensor(t) then
      local a = offload.arena_empty(t.shape, t.dtype)
      torch.no_grad(function() a:copy_(t) end)
      self._parameters.map[k] = Parameter(a, t.requires_grad)
    end
  end
  mark(self.weight)
  mark(self.bias)
end

function Linear:forward(x)
  if not torch.is_tensor(x) then
    error(("ramtorch.Linear: expected a Tensor input, got %s"):format(type(x)), 2)
  end
  if x.device ~= "cpu" or offload.cpu_streams_enabled() then
    return offload.linear(x, self.weight, self.bias)
  end
  -- computed from the masters themselves: a delayed optimizer update still writing them (optim's
  -- delay_update, whose front copies only the engine reads) is finished first, so these layers
  -- train as with synchronous updates rather than on half-written weights
  local o = package.loaded["ramtorch.optim.optimizer"]
  if o ~= nil then o.flush_pending() end
  return nn.functional.linear(x, self.weight, self.bias)
end

function Linear:extra_repr()
  return ("in_features=%d, out_features=%d, bias=%s"):format(self.in_features, self.out_features,
                                                             mod.pyrepr(self.bias ~= nil))
end

return M
