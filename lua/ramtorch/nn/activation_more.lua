-- ramtorch/nn/activation_more.lua: the activation modules beyond activation.lua (LeakyReLU, ELU, SELU,
-- CELU, Softplus, Hardtanh, ReLU6, Hardsigmoid, Hardswish, Mish, LogSigmoid, Softsign, Tanhshrink),
-- thin wrappers over ramtorch.functional with PyTorch's constructor arguments, defaults and reprs.
-- Arguments are positional as in PyTorch or one options table: nn.LeakyReLU(0.2) / nn.LeakyReLU({
-- negative_slope = 0.2}). inplace is accepted for compatibility; results are computed out of place.
local mod = require("ramtorch.nn.module")

local Module, pyrepr = mod.Module, mod.pyrepr

local F_mod
local function F()
  F_mod = F_mod or require("ramtorch.functional")
  return F_mod
end

local M = {}

local function expect_number(v, cls, what)
  if type(v) ~= "number" then
    error(("%s: expected %s to be a number, got %s"):format(cls, what, type(v)), 4)
  end
  return v
end

-- a class whose constructor takes `names` (positionally or as a table; missing ones from defaults)
local function define(name, names, defaults, forward, extra_repr)
  local cls = Module:extend(name)
  function cls:__init(...)
    local first = ...
    local a = {}
    if type(first) == "table" then
      local allowed = {}
      for _, n in ipairs(names) do allowed[n] = true end
      for k, v in pairs(first) do
        if not allowed[k] then
          error(("%s: unknown option '%s' (expected %s)"):format(name, tostring(k), table.concat(names, ", ")), 3)
        end
        a[k] = v
      end
    else
      local p = { ... }
      for i, n in ipairs(names) do a[n] = p[i] end
    end
    for _, n in ipairs(names) do
      local v = a[n]
      if v == nil then v = defaults[n] end
      if n == "inplace" then v = v == true else expect_number(v, name, n) end
      self[n] = v
    end
    if self.min_val ~= nil and self.max_val <= self.min_val then
      error(("%s: max_val must be greater than min_val (got min_val=%s, max_val=%s)")
            :format(name, pyrepr(self.min_val), pyrepr(self.max_val)), 3)
    end
  end
  function cls:forward(x)
    -- checked here so the message names the module
    if not require("ramtorch").is_tensor(x) then
      error(("%s: expected a Tensor input, got %s"):format(name, type(x)), 2)
    end
    if not x.dtype.is_floating_point then
      error(("%s: expected a floating point input, got %s"):format(name, x.dtype.name), 2)
    end
    return forward(self, x)
  end
  cls.extra_repr = extra_repr
  M[name] = cls
  return cls
end

local function inplace_repr(self) return self.inplace and "inplace=True" or "" end
local function with_inplace(s, self) return s .. (self.inplace and ", inplace=True" or "") end

define("LeakyReLU", { "negative_slope", "inplace" }, { negative_slope = 0.01 },
       function(self, x) return F().leaky_relu(x, self.negative_slope) end,
       function(self) return with_inplace("negative_slope=" .. pyrepr(self.negative_slope), self) end)
define("ELU", { "alpha", "inplace" }, { alpha = 1.0 },
       function(self, x) return F().elu(x, self.alpha) end,
       function(self) return with_inplace("alpha=" .. pyrepr(self.alpha), self) end)
define("CELU", { "alpha", "inplace" }, { alpha = 1.0 },
       function(self, x) return F().celu(x, self.alpha) end,
       function(self) return with_inplace("alpha=" .. pyrepr(self.alpha), self) end)
define("SELU", { "inplace" }, {}, function(_, x) return F().selu(x) end, inplace_repr)
define("Softplus", { "beta", "threshold" }, { beta = 1.0, threshold = 20.0 },
       function(self, x) return F().softplus(x, self.beta, self.threshold) end,
       function(self) return ("beta=%s, threshold=%s"):format(pyrepr(self.beta), pyrepr(self.threshold)) end)
define("Hardtanh", { "min_val", "max_val", "inplace" }, { min_val = -1.0, max_val = 1.0 },
       function(self, x) return F().hardtanh(x, self.min_val, self.max_val) end,
       function(self)
         return with_inplace(("min_val=%s, max_val=%s"):format(pyrepr(self.min_val), pyrepr(self.max_val)), self)
       end)
define("ReLU6", { "inplace" }, {}, function(_, x) return F().relu6(x) end, inplace_repr)
define("Hardsigmoid", { "inplace" }, {}, function(_, x) return F().hardsigmoid(x) end)
define("Hardswish", { "inplace" }, {}, function(_, x) return F().hardswish(x) end)
define("Mish", { "inplace" }, {}, function(_, x) return F().mish(x) end)
define("LogSigmoid", {}, {}, function(_, x) return F().logsigmoid(x) end)
define("Softsign", {}, {}, function(_, x) return F().softsign(x) end)
define("Tanhshrink", {}, {}, function(_, x) return F().tanhshrink(x) end)

return M
