-- ramtorch/linear.lua: ramtorch.Linear, RamTorch's memory-efficient linear layer (CPUBouncingLinear).
-- Same arguments as nn.Linear (in_features, out_features, {bias=, dtype=, device=, skip_init=}); its
-- weight and bias live in host memory (CPU tensors) whatever `device` says, and model:to(device)
-- leaves them there (only dtype conversions apply), as RamTorch does. `device` is the compute device.
--
-- Until the offload engine lands (DESIGN section 5) forward computes like nn.Linear on the CPU; an
-- input on another device is an error saying so.
local torch = require("ramtorch")
local core = require("ramtorch.core")
local nn = require("ramtorch.nn")
local mod = require("ramtorch.nn.module")

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
  local topts = { dtype = opts.dtype, device = "cpu" }
  local w = opts.weight
  if w ~= nil then
    if not torch.is_tensor(w) or w.device ~= "cpu" then
      error("ramtorch.Linear: opts.weight must be a CPU tensor", 3)
    end
    self:register_parameter("weight", w)
  else
    self.weight = Parameter(torch.zeros({ out_features, in_features }, topts))
  end
  if opts.bias ~= false then
    local b = opts.bias_tensor
    if b ~= nil then
      if not torch.is_tensor(b) or b.device ~= "cpu" then
        error("ramtorch.Linear: opts.bias_tensor must be a CPU tensor", 3)
      end
      self:register_parameter("bias", b)
    else
      self.bias = Parameter(torch.zeros({ out_features }, topts))
    end
  end
  mark(self.weight)
  mark(self.bias)
  if not opts.skip_init and w == nil then self:reset_parameters() end
end

-- Parameters stay in host memory: a device move only records the compute device; dtype changes apply.
function Linear:_to_own(dev, dt, memo)
  if dev ~= nil then self.device = dev end
  mod.Module._to_own(self, nil, dt, memo)
  mark(self.weight)
  mark(self.bias)
end

function Linear:forward(x)
  if not torch.is_tensor(x) then
    error(("ramtorch.Linear: expected a Tensor input, got %s"):format(type(x)), 2)
  end
  if x.device ~= "cpu" then
    error(("ramtorch.Linear: the input is on %s but the offload engine (streaming host parameters to the GPU) is not available yet; run this layer on CPU inputs for now")
          :format(x.device), 2)
  end
  return nn.functional.linear(x, self.weight, self.bias)
end

function Linear:extra_repr()
  return ("in_features=%d, out_features=%d, bias=%s"):format(self.in_features, self.out_features,
                                                             mod.pyrepr(self.bias ~= nil))
end

return M
