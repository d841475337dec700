-- ramtorch/nn/normalization.lua: LayerNorm over the trailing normalized_shape dims, with PyTorch's
-- options and initialisation (weight ones, bias zeros).
local torch = require("ramtorch")
local mod = require("ramtorch.nn.module")

local Module, Parameter, pyrepr = mod.Module, mod.Parameter, mod.pyrepr

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

-- nn.LayerNorm(normalized_shape, {eps=1e-5, elementwise_affine=true, bias=true, dtype=, device=})
local LayerNorm = Module:extend("LayerNorm")
M.LayerNorm = LayerNorm

function LayerNorm:__init(normalized_shape, opts)
  opts = opts or {}
  if type(normalized_shape) == "number" then normalized_shape = { normalized_shape } end
  if type(normalized_shape) ~= "table" or #normalized_shape == 0 then
    error(("LayerNorm: expected normalized_shape as an integer or a table of integers, got %s"):format(tostring(normalized_shape)), 3)
  end
  local shape = {}
  for i, d in ipairs(normalized_shape) do
    if type(d) ~= "number" or d ~= math.floor(d) or d < 1 or d >= 2 ^ 62 then
      error(("LayerNorm: normalized_shape[%d] must be a positive integer, got %s"):format(i, tostring(d)), 3)
    end
    shape[i] = d
  end
  self.normalized_shape = shape
  self.eps = opts.eps or 1e-5
  self.elementwise_affine = opts.elementwise_affine ~= false
  local topts = { dtype = opts.dtype, device = opts.device }
  if self.elementwise_affine then
    self.weight = Parameter(torch.ones(shape, topts))
    if opts.bias ~= false then self.bias = Parameter(torch.zeros(shape, topts)) end
  end
end

function LayerNorm:reset_parameters()
  if self.weight ~= nil then self.weight:fill_(1) end
  if self.bias ~= nil then self.bias:fill_(0) end
end

function LayerNorm:forward(x)
  return F().layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
end

function LayerNorm:extra_repr()
  return ("%s, eps=%s, elementwise_affine=%s"):format(pyrepr(self.normalized_shape), pyrepr(self.eps),
                                                     pyrepr(self.elementwise_affine))
end

return M
