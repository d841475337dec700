-- ramtorch/nn/rmsnorm.lua: nn.RMSNorm (PyTorch 2.4+): x * rsqrt(mean(x^2) + eps) * weight over the
-- trailing normalized_shape dims; eps nil means torch.finfo(x.dtype).eps as in PyTorch.
local torch = require("ramtorch")
local mod = require("ramtorch.nn.module")

local Module, Parameter, pyrepr = mod.Module, mod.Parameter, mod.pyrepr

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

-- nn.RMSNorm(normalized_shape, {eps=nil, elementwise_affine=true, dtype=, device=})
local RMSNorm = Module:extend("RMSNorm")
M.RMSNorm = RMSNorm

function RMSNorm:__init(normalized_shape, opts)
  opts = opts or {}
  if type(normalized_shape) == "number" then normalized_shape = { normalized_shape } end
  if type(normalized_shape) ~= "table" or #normalized_shape == 0 then
    error(("RMSNorm: expected normalized_shape as an integer or a table of integers, got %s"):format(tostring(normalized_shape)), 3)
  end
  local shape = {}
  for i, d in ipairs(normalized_shape) do
    if type(d) ~= "number" or d ~= math.floor(d) or d < 1 then
      error(("RMSNorm: normalized_shape[%d] must be a positive integer, got %s"):format(i, tostring(d)), 3)
    end
    shape[i] = d
  end
  self.normalized_shape = shape
  self.eps = opts.eps
  self.elementwise_affine = opts.elementwise_affine ~= false
  if self.elementwise_affine then
    self.weight = Parameter(torch.ones(shape, { dtype = opts.dtype, device = opts.device }))
  end
end

function RMSNorm:reset_parameters()
  if self.weight ~= nil then self.weight:fill_(1) end
end

function RMSNorm:forward(x) return F().rms_norm(x, self.normalized_shape, self.weight, self.eps) end

function RMSNorm:extra_repr()
  return ("%s, eps=%s, elementwise_affine=%s"):format(pyrepr(self.normalized_shape),
                                                     self.eps == nil and "None" or pyrepr(self.eps),
                                                     pyrepr(self.elementwise_affine))
end

return M
