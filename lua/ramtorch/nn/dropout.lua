-- ramtorch/nn/dropout.lua: Dropout (zeroes elements with probability p and scales the rest by 1/(1-p)
-- in training mode; identity in eval mode) and Flatten.
local mod = require("ramtorch.nn.module")

local Module, pyrepr = mod.Module, mod.pyrepr

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

-- nn.Dropout(p=0.5) or nn.Dropout({p=})
local Dropout = Module:extend("Dropout")
M.Dropout = Dropout

function Dropout:__init(p, inplace)
  if type(p) == "table" then p, inplace = p.p, p.inplace end
  if p == nil then p = 0.5 end
  if type(p) ~= "number" or p < 0 or p > 1 then
    error(("Dropout: dropout probability has to be between 0 and 1, but got %s"):format(tostring(p)), 3)
  end
  self.p, self.inplace = p, inplace == true
end

function Dropout:forward(x) return F().dropout(x, self.p, self.training) end
function Dropout:extra_repr() return ("p=%s, inplace=%s"):format(pyrepr(self.p), pyrepr(self.inplace)) end

-- nn.Flatten(start_dim=1, end_dim=-1)
local Flatten = Module:extend("Flatten")
M.Flatten = Flatten

function Flatten:__init(start_dim, end_dim)
  self.start_dim = start_dim or 1
  self.end_dim = end_dim or -1
end
function Flatten:forward(x)
  if not require("ramtorch").is_tensor(x) then
    error(("Flatten: expected a Tensor input, got %s"):format(type(x)), 2)
  end
  return x:flatten(self.start_dim, self.end_dim)
end
function Flatten:extra_repr() return ("start_dim=%d, end_dim=%d"):format(self.start_dim, self.end_dim) end

return M
