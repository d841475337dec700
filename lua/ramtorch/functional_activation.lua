-- ramtorch/functional_activation.lua: PyTorch's activations that have no kernel of their own
-- (leaky_relu, elu, selu, celu, softplus, hardtanh, relu6, hardsigmoid, hardswish, mish, logsigmoid,
-- softsign, tanhshrink), composed of existing ops (where, exp, log, tanh, ...) so they run on every
-- device and autograd differentiates the composition. functional.lua merges this table into F.
--
-- Two patterns recur. (1) Piecewise functions are `where` selections whose branches are finite
-- everywhere (exp only ever sees x <= 0), because where's backward sends 0 to the unselected branch
-- and 0 * inf would still be NaN. (2) The branch chosen at a kink is the one PyTorch's backward
-- kernel uses (elu: x <= 0 is the negative side; hardtanh/hardsigmoid: gradient 0 at the bounds;
-- hardswish: the middle branch on [-3, 3]), so gradients at kinks match PyTorch exactly.
local tensor = require("ramtorch.tensor")
local ops = require("ramtorch.ops")

local expect_tensor, describe = tensor.expect_tensor, tensor.describe
local where = ops.where

local M = {}

local function expect_float(x, name, level)
  expect_tensor(x, name, level + 1)
  if not x.dtype.is_floating_point then
    error(("%s: expected a floating point tensor, got %s"):format(name, x.dtype.name), level + 1)
  end
end

local function expect_number(v, name, what, level)
  if type(v) ~= "number" then
    error(("%s: expected %s to be a number, got %s"):format(name, what, describe(v)), level + 1)
  end
  return v
end

-- Positional arguments or one options table: args(name, {"alpha", "inplace"}, defaults, ...) -> table.
-- An unknown option key is refused (ignoring it would silently compute something else).
local function args(name, names, defaults, level, ...)
  local first = ...
  local out = {}
  if type(first) == "table" then
    local allowed = {}
    for _, n in ipairs(names) do allowed[n] = true end
    for k, v in pairs(first) do
      if not allowed[k] then
        error(("%s: unknown option '%s' (expected %s)"):format(name, tostring(k), table.concat(names, ", ")), level + 1)
      end
      out[k] = v
    end
  else
    local a = { ... }
    for i, n in ipairs(names) do out[n] = a[i] end
  end
  for k, v in pairs(defaults) do
    if out[k] == nil then out[k] = v end
  end
  return out
end

-- log1p(u) for u >= 0 (Kahan's trick: log(w) * u / (w - 1) with w = 1 + u is exact to a few ulps; where
-- w rounds to 1, log1p(u) = u). The double where keeps 0 / 0 out of the unselected branch's gradient.
local function log1p(u)
  local w = u + 1
  local d = w - 1
  local tiny = d:eq(0)
  local safe = where(tiny, 1, d)
  return where(tiny, u, w:log() * u / safe)
end
M._log1p = log1p

-- log(1 + exp(z)) without overflow: max(z, 0) + log1p(exp(-|z|)), with -|z| written as a where so the
-- gradient at z == 0 is 1/2 (sigmoid(0)) rather than abs's subgradient
local function softplus1(z)
  local neg = z:lt(0)
  local a = where(neg, z, -z) -- -|z| <= 0: exp never overflows
  return where(neg, 0, z) + log1p(a:exp())
end

-- ELU family, PyTorch's elu kernel: x > 0 ? scale * x : scale * alpha * (exp(x * input_scale) - 1);
-- the negative side includes x == 0 (forward and backward, as PyTorch's elu_backward)
local function elu_core(x, alpha, scale, input_scale)
  local pos = x:gt(0)
  local xn = where(pos, 0, x) -- exp sees x <= 0 only
  local neg = ((xn * input_scale):exp() - 1) * (alpha * scale)
  local p = scale == 1 and x or x * scale
  return where(pos, p, neg)
end

-- leaky_relu(x, negative_slope=0.01, inplace=false): x > 0 ? x : negative_slope * x (gradient at 0:
-- negative_slope, as PyTorch)
function M.leaky_relu(x, ...)
  expect_float(x, "leaky_relu", 2)
  local a = args("leaky_relu", { "negative_slope", "inplace" }, { negative_slope = 0.01 }, 2, ...)
  local s = expect_number(a.negative_slope, "leaky_relu", "negative_slope", 2)
  return where(x:gt(0), x, x * s)
end

-- elu(x, alpha=1, inplace=false)
function M.elu(x, ...)
  expect_float(x, "elu", 2)
  local a = args("elu", { "alpha", "inplace" }, { alpha = 1.0 }, 2, ...)
  return elu_core(x, expect_number(a.alpha, "elu", "alpha", 2), 1, 1)
end

-- PyTorch's SELU constants (Klambauer et al.), as in aten's Activation.cpp
M.SELU_ALPHA = 1.6732632423543772848170429916717
M.SELU_SCALE = 1.0507009873554804934193349852946

-- selu(x, inplace=false)
function M.selu(x, inplace)
  expect_float(x, "selu", 2)
  if type(inplace) == "table" then args("selu", { "inplace" }, {}, 2, inplace) end
  return elu_core(x, M.SELU_ALPHA, M.SELU_SCALE, 1)
end

-- celu(x, alpha=1, inplace=false) = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
function M.celu(x, ...)
  expect_float(x, "celu", 2)
  local a = args("celu", { "alpha", "inplace" }, { alpha = 1.0 }, 2, ...)
  local alpha = expect_number(a.alpha, "celu", "alpha", 2)
  if alpha == 0 then error("celu: ZeroDivisionError: alpha must not be 0 (CELU divides by alpha)", 2) end
  return elu_core(x, alpha, 1, 1 / alpha)
end

-- softplus(x, beta=1, threshold=20) = log(1 + exp(beta * x)) / beta, and x itself where
-- beta * x > threshold (PyTorch's linear region, gradient 1 there)
function M.softplus(x, ...)
  expect_float(x, "softplus", 2)
  local a = args("softplus", { "beta", "threshold" }, { beta = 1.0, threshold = 20.0 }, 2, ...)
  local beta = expect_number(a.beta, "softplus", "beta", 2)
  local threshold = expect_number(a.threshold, "softplus", "threshold", 2)
  local z = beta == 1 and x or x * beta
  local sp = softplus1(z)
  if beta ~= 1 then sp = sp / beta end
  return where(z:gt(threshold), x, sp)
end

-- The clamp to [lo, hi] with PyTorch's hardtanh_backward: gradient only where lo < x < hi (clamp's own
-- backward passes it at the bounds too). NaN stays NaN.
local function hardclamp(x, lo, hi)
  return where(x:le(lo), lo, where(x:ge(hi), hi, x))
end

-- hardtanh(x, min_val=-1, max_val=1, inplace=false)
function M.hardtanh(x, ...)
  expect_float(x, "hardtanh", 2)
  local a = args("hardtanh", { "min_val", "max_val", "inplace" }, { min_val = -1.0, max_val = 1.0 }, 2, ...)
  local lo = expect_number(a.min_val, "hardtanh", "min_val", 2)
  local hi = expect_number(a.max_val, "hardtanh", "max_val", 2)
  if lo > hi then
    error(("hardtanh: min_val cannot be greater than max_val (got min_val=%s, max_val=%s)"):format(lo, hi), 2)
  end
  return hardclamp(x, lo, hi)
end

-- relu6(x, inplace=false) = hardtanh(x, 0, 6), as PyTorch (gradient 0 at 0 and at 6)
function M.relu6(x)
  expect_float(x, "relu6", 2)
  return hardclamp(x, 0, 6)
end

-- hardsigmoid(x, inplace=false) = 0 (x <= -3), 1 (x >= 3), x / 6 + 1/2 between; gradient 1/6 only
-- strictly inside (-3, 3), as PyTorch's hardsigmoid_backward
function M.hardsigmoid(x)
  expect_float(x, "hardsigmoid", 2)
  return where(x:le(-3), 0, where(x:ge(3), 1, x / 6 + 0.5))
end

-- hardswish(x, inplace=false) = x * relu6(x + 3) / 6; PyTorch's hardswish_backward: 0 for x < -3,
-- x / 3 + 1/2 on [-3, 3] (so -1/2 at -3 and 3/2 at 3), 1 above
function M.hardswish(x)
  expect_float(x, "hardswish", 2)
  return where(x:lt(-3), x * 0, where(x:le(3), x * (x + 3) / 6, x))
end

-- mish(x, inplace=false) = x * tanh(softplus(x))
function M.mish(x)
  expect_float(x, "mish", 2)
  return x * softplus1(x):tanh()
end

-- logsigmoid(x) = -softplus(-x) = min(x, 0) - log1p(exp(-|x|)): finite and accurate for large |x|
-- (logsigmoid(-1000) = -1000, logsigmoid(40) = -4.25e-18); gradient 1/2 at 0
function M.logsigmoid(x)
  expect_float(x, "logsigmoid", 2)
  local neg = x:lt(0)
  local l = log1p(where(neg, x, -x):exp())
  return where(neg, x - l, -l)
end

-- softsign(x) = x / (1 + |x|) (PyTorch's composite; gradient 1 at 0)
function M.softsign(x)
  expect_float(x, "softsign", 2)
  return x / (x:abs() + 1)
end

-- tanhshrink(x) = x - tanh(x)
function M.tanhshrink(x)
  expect_float(x, "tanhshrink", 2)
  return x - x:tanh()
end

return M
