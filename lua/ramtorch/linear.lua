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

local Linear = nn.Linear:extend("CPUBouncingLinear")
M.Linear = Linear
M.CPUBouncingLinear = Linear

-- opts: bias (default true), dtype, device (compute device; parameters stay on the host), skip_init
-- (leave the parameters zero instead of PyTorch's default initialisation), and for helpers that
-- convert an existing layer: weight / bias_tensor (CPU tensors to adopt as the parameters, shared).
function Linear:__init(in_features, out_features, opts)
  if type(opts) == "boolean" then opts = { bias = opts } end
  opts = opts or {}
  for _, v in ipairs({ { in_features, "in_features" }, { out_features, "out_features" } }) do
    if type(v[1]) ~= "number" or v[1] ~= math.floor(v[1]) or v[1] < 0 then
      error(("ramtorch.Linear: expected a non-negative integer %s, got %s"):format(v[2], tostring(v[1])), 3)
    end
  end
  self.in_features, self.out_features = in_features, out_features
  self.is_ramtorch = true
  self.device = core.device_name(core.device_code(opts.device, 3))
  local pdt = core.dtype(opts.dtype, 3)
  local w = opts.weight
  if w ~= nil then
    if not torch.is_tensor(w) or w.device ~= "cpu" then
      error("ramtorch.Linear: opts.weight must be a CPU tensor", 3)
    end
    self:register_parameter("weight", w)
  else
    self.weight = Parameter(offload.arena_zeros({ out_features, in_features }, pdt))
  end
  if opts.bias ~= false then
    local b = opts.bias_tensor
    if b ~= nil then
      if not torch.is_tensor(b) or b.device ~= "cpu" then
        error("ramtorch.Linear: opts.bias_tensor must be a CPU tensor", 3)
      end
      self:register_parameter("bias", b)
    else
      self.bias = Parameter(offload.arena_zeros({ out_features }, pdt))
    end
  end
  mark(self.weight)
  mark(self.bias)
  if not opts.skip_init and w == nil then self:reset_parameters() end
end

-- Parameters stay in host memory: a device move only records the compute device; dtype changes apply.
-- A dtype change makes new tensors: those that were arena slices move back into the arena.
function Linear:_to_own(dev, dt, memo)
  if dev ~= nil then self.device = dev end
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
