-- ramtorch/nn/linear.lua: nn.Linear (y = x W^T + b with PyTorch's default initialisation) and
-- nn.Identity.
local torch = require("ramtorch")
local mod = require("ramtorch.nn.module")
local init = require("ramtorch.nn.initializers")

local Module, Parameter, pyrepr = mod.Module, mod.Parameter, mod.pyrepr

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

local function expect_size(v, what, name)
  if type(v) ~= "number" or v ~= math.floor(v) or v < 0 then
    error(("%s: expected a non-negative integer %s, got %s"):format(what, name, tostring(v)), 4)
  end
end

-- nn.Linear(in_features, out_features, {bias=true, dtype=, device=}); a boolean third argument is bias.
local Linear = Module:extend("Linear")
M.Linear = Linear

function Linear:__init(in_features, out_features, opts)
  if type(opts) == "boolean" then opts = { bias = opts } end
  opts = opts or {}
  expect_size(in_features, "Linear", "in_features")
  expect_size(out_features, "Linear", "out_features")
  self.in_features, self.out_features = in_features, out_features
  local topts = { dtype = opts.dtype, device = opts.device }
  self.weight = Parameter(torch.empty({ out_features, in_features }, topts))
  if opts.bias ~= false then self.bias = Parameter(torch.empty({ out_features }, topts)) end
  self:reset_parameters()
end

-- PyTorch: kaiming_uniform_(weight, a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)), and the bias from the
-- same range.
function Linear:reset_parameters()
  init.kaiming_uniform_(self.weight, math.sqrt(5))
  local b = self.bias
  if b ~= nil then
    local fan_in = self.in_features
    local bound = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
    init.uniform_(b, -bound, bound)
  end
end

function Linear:forward(x) return F().linear(x, self.weight, self.bias) end

function Linear:extra_repr()
  return ("in_features=%d, out_features=%d, bias=%s"):format(self.in_features, self.out_features,
                                                             pyrepr(self.bias ~= nil))
end

local Identity = Module:extend("Identity")
M.Identity = Identity
function Identity:__init() end
function Identity:forward(x) return x end

return M
