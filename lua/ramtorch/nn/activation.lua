-- ramtorch/nn/activation.lua: activation modules (ReLU, GELU, SiLU, Tanh, Sigmoid, Softmax, LogSoftmax),
-- thin wrappers over ramtorch.functional with PyTorch's constructor arguments and reprs.
local mod = require("ramtorch.nn.module")

local Module, pyrepr = mod.Module, mod.pyrepr

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

local function simple(name, fname)
  local cls = Module:extend(name)
  -- inplace is accepted for PyTorch compatibility; the result is computed out of place
  function cls:__init(inplace) self.inplace = inplace == true end
  function cls:forward(x) return F()[fname](x) end
  M[name] = cls
  return cls
end

simple("ReLU", "relu").extra_repr = function(self) return self.inplace and "inplace=True" or "" end
simple("SiLU", "silu").extra_repr = function(self) return self.inplace and "inplace=True" or "" end
simple("Tanh", "tanh")
simple("Sigmoid", "sigmoid")

-- GELU(approximate="none"|"tanh") or GELU({approximate=})
local GELU = Module:extend("GELU")
M.GELU = GELU
function GELU:__init(approximate)
  if type(approximate) == "table" then approximate = approximate.approximate end
  approximate = approximate or "none"
  if approximate ~= "none" and approximate ~= "tanh" then
    error(("GELU: approximate must be 'none' or 'tanh', got %s"):format(tostring(approximate)), 3)
  end
  self.approximate = approximate
end
function GELU:forward(x) return F().gelu(x, self.approximate) end
function GELU:extra_repr() return ("approximate='%s'"):format(self.approximate) end

local function with_dim(name, fname)
  local cls = Module:extend(name)
  function cls:__init(dim)
    if type(dim) == "table" then dim = dim.dim end
    if dim ~= nil and (type(dim) ~= "number" or dim ~= math.floor(dim)) then
      error(("%s: expected an integer dim, got %s"):format(name, tostring(dim)), 3)
    end
    self.dim = dim
  end
  function cls:forward(x)
    if not require("ramtorch").is_tensor(x) then
      error(("%s: expected a Tensor input, got %s"):format(name, type(x)), 2)
    end
    local dim = self.dim
    if dim == nil then
      -- PyTorch's legacy implicit dim: 0 for 0-, 1- and 3-d inputs, else 1
      local nd = x:dim()
      dim = (nd == 0 or nd == 1 or nd == 3) and 0 or 1
    end
    return F()[fname](x, dim)
  end
  function cls:extra_repr() return "dim=" .. pyrepr(self.dim) end
  M[name] = cls
end
with_dim("Softmax", "softmax")
with_dim("LogSoftmax", "log_softmax")

return M
