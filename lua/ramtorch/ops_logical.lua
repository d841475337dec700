-- ramtorch/ops_logical.lua: PyTorch's predicates and logical ops that have no kernel of their own:
-- isnan / isinf / isposinf / isneginf / isfinite / isreal, nan_to_num (and nan_to_num_), logical_not /
-- logical_and / logical_or / logical_xor, isclose / allclose / equal, with their Tensor methods.
-- Each is a composition of existing ops (comparisons, abs, where, sum), so it runs on every device.
-- The predicates answer bool tensors and record no graph (their inputs are detached first);
-- nan_to_num is differentiable through `where`: gradient 1 where x was finite, 0 elsewhere (PyTorch's).
-- init.lua merges the functions into torch.
local C = require("ramtorch.ffi").C
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ops = require("ramtorch.ops") -- comparisons, abs, where, sum as Tensor methods
local creation = require("ramtorch.creation")

local Tensor, is_tensor, describe = tensor.Tensor, tensor.is_tensor, tensor.describe
local INF = math.huge
local where = ops.where

local M = {}

-- fn(...) with an error from the ops composed inside (e.g. "where: shapes [2] and [3] cannot be
-- broadcast") re-raised under the name of the function the caller called, position stripped
local function named(name, level, fn, ...)
  local ok, r = pcall(fn, ...)
  if ok then return r end
  error(name .. ": " .. tostring(r):gsub("^[^\n]-%.lua:%d+: ", ""), level + 1)
end

local function expect(x, name, what, level)
  if not is_tensor(x) then
    error(("%s: expected %s to be a Tensor, got %s"):format(name, what, describe(x)), level + 1)
  end
  return x
end

-- bool tensors of x's shape and device, filled with v (the answer for integer / bool inputs, where no
-- float op may run)
local function bool_full(x, v)
  return creation.full(x.shape, v, { dtype = core.bool, device = x.device })
end

-- ---- float classification ---------------------------------------------------------------------------------

-- NaN is the one value not equal to itself
function M.isnan(x)
  expect(x, "isnan", "input", 2)
  if not x.dtype.is_floating_point then return bool_full(x, false) end
  x = x:detach()
  return x:ne(x)
end
function M.isinf(x)
  expect(x, "isinf", "input", 2)
  if not x.dtype.is_floating_point then return bool_full(x, false) end
  return x:detach():abs():eq(INF)
end
function M.isposinf(x)
  expect(x, "isposinf", "input", 2)
  if not x.dtype.is_floating_point then return bool_full(x, false) end
  return x:detach():eq(INF)
end
function M.isneginf(x)
  expect(x, "isneginf", "input", 2)
  if not x.dtype.is_floating_point then return bool_full(x, false) end
  return x:detach():eq(-INF)
end
-- |x| < inf is false for +-inf and for NaN (every comparison with NaN is false)
function M.isfinite(x)
  expect(x, "isfinite", "input", 2)
  if not x.dtype.is_floating_point then return bool_full(x, true) end
  return x:detach():abs():lt(INF)
end
-- ramtorch has no complex dtypes: every element is real
function M.isreal(x)
  expect(x, "isreal", "input", 2)
  return bool_full(x, true)
end

-- the largest finite value of each float dtype (PyTorch's torch.finfo(dtype).max)
local FMAX = { [core.float32] = 3.4028234663852886e38, [core.float64] = 1.7976931348623157e308,
               [core.bfloat16] = 3.3895313892515355e38, [core.float16] = 65504 }

local function expect_num(v, name, what, level)
  if type(v) ~= "nil" and type(v) ~= "number" then -- type(): a NULL cdata compares equal to nil
    error(("%s: expected %s to be a number or nil, got %s"):format(name, what, describe(v)), level + 1)
  end
end

-- nan_to_num(x, nan=0, posinf=nil, neginf=nil) or (x, {nan=, posinf=, neginf=}): NaN, +inf and -inf
-- replaced by the given numbers; posinf / neginf default to the dtype's largest / lowest finite value.
-- Integer and bool inputs come back as a copy (they hold no NaN or inf).
local NTN_KEYS = { nan = true, posinf = true, neginf = true }
local function ntn_args(name, x, nan, posinf, neginf, level)
  level = level + 1
  expect(x, name, "input", level)
  if type(nan) == "table" then
    if posinf ~= nil or neginf ~= nil then
      error(("%s: the options table must be the last argument"):format(name), level)
    end
    for k in pairs(nan) do
      if not NTN_KEYS[k] then
        error(("%s: unknown option '%s' (expected nan, posinf, neginf)"):format(name, tostring(k)), level)
      end
    end
    nan, posinf, neginf = nan.nan, nan.posinf, nan.neginf
  end
  expect_num(nan, name, "nan", level)
  expect_num(posinf, name, "posinf", level)
  expect_num(neginf, name, "neginf", level)
  local max = FMAX[x.dtype]
  return nan or 0, posinf or max, neginf or (max and -max)
end

local function ntn(x, nan, posinf, neginf)
  local xd = x:detach()
  -- where passes the gradient to the x branch only where x was kept, i.e. finite
  return where(xd:ne(xd), nan, where(xd:eq(INF), posinf, where(xd:eq(-INF), neginf, x)))
end

function M.nan_to_num(x, nan, posinf, neginf)
  nan, posinf, neginf = ntn_args("nan_to_num", x, nan, posinf, neginf, 2)
  if not x.dtype.is_floating_point then return x:clone() end
  return ntn(x, nan, posinf, neginf)
end

-- in place (no autograd), as the other in-place methods (add_, fill_)
function Tensor.nan_to_num_(x, nan, posinf, neginf)
  nan, posinf, neginf = ntn_args("nan_to_num_", x, nan, posinf, neginf, 2)
  -- the rule of the C in-place ops (add_): an unrecorded write to a tensor that requires grad would
  -- leave its gradient wrong
  if x.requires_grad and C.rt_grad_enabled() ~= 0 then
    error(("nan_to_num_: a %s that requires grad is being used in an in-place operation (wrap it in no_grad)")
          :format(x.is_leaf and "leaf tensor" or "tensor"), 2)
  end
  if not x.dtype.is_floating_point then return x end
  x:copy_(ntn(x:detach(), nan, posinf, neginf))
  return x
end

-- ---- logical ops -------------------------------------------------------------------------------------------

-- x as a bool tensor: nonzero is true (NaN and -0.0: NaN is nonzero, -0.0 is zero)
local function truth(x) return x:detach():ne(0) end

function M.logical_not(x)
  expect(x, "logical_not", "input", 2)
  return x:detach():eq(0)
end

local function operands(name, a, b, level)
  expect(a, name, "input", level + 1)
  expect(b, name, "other", level + 1)
  return truth(a), truth(b)
end

-- where broadcasts cond against both values, so these broadcast as PyTorch's
function M.logical_and(a, b)
  local x, y = operands("logical_and", a, b, 2)
  return named("logical_and", 2, where, x, y, false)
end
function M.logical_or(a, b)
  local x, y = operands("logical_or", a, b, 2)
  return named("logical_or", 2, where, x, true, y)
end
function M.logical_xor(a, b)
  local x, y = operands("logical_xor", a, b, 2)
  return named("logical_xor", 2, x.ne, x, y)
end

-- ---- closeness -----------------------------------------------------------------------------------------------

local ISCLOSE_KEYS = { rtol = true, atol = true, equal_nan = true }

-- isclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=false) or (a, b, {rtol=, atol=, equal_nan=}):
-- |a - b| <= atol + rtol * |b| elementwise (broadcasting), or a == b (so equal infinities are close);
-- NaNs are close to each other only with equal_nan. PyTorch's algorithm: same dtypes required, bool
-- inputs compared in the default dtype.
local isclose_values -- below: the computation, once the arguments are checked
local function isclose_impl(name, a, b, rtol, atol, equal_nan, level)
  level = level + 1
  expect(a, name, "input", level)
  expect(b, name, "other", level)
  if type(rtol) == "table" then
    if atol ~= nil or equal_nan ~= nil then
      error(("%s: the options table must be the last argument"):format(name), level)
    end
    for k in pairs(rtol) do
      if not ISCLOSE_KEYS[k] then
        error(("%s: unknown option '%s' (expected rtol, atol, equal_nan)"):format(name, tostring(k)), level)
      end
    end
    rtol, atol, equal_nan = rtol.rtol, rtol.atol, rtol.equal_nan
  end
  if rtol == nil then rtol = 1e-5 end
  if atol == nil then atol = 1e-8 end
  for _, p in ipairs({ { "rtol", rtol }, { "atol", atol } }) do
    if type(p[2]) ~= "number" or p[2] ~= p[2] then
      error(("%s: expected %s to be a number, got %s"):format(name, p[1], describe(p[2])), level)
    end
    if p[2] < 0 then
      error(("%s: %s must be greater than or equal to zero, but got %s"):format(name, p[1], tostring(p[2])), level)
    end
  end
  if equal_nan ~= nil and type(equal_nan) ~= "boolean" then
    error(("%s: expected equal_nan to be a boolean, got %s"):format(name, describe(equal_nan)), level)
  end
  if a.dtype ~= b.dtype then
    error(("%s: expected both tensors to have the same dtype, got %s and %s"):format(name, a.dtype.name, b.dtype.name),
          level)
  end
  return named(name, level, isclose_values, a:detach(), b:detach(), rtol, atol, equal_nan)
end

function isclose_values(a, b, rtol, atol, equal_nan)
  local close = a:eq(b)
  if equal_nan and a.dtype.is_floating_point then
    close = where(a:ne(a), b:ne(b), close)
  end
  if rtol == 0 and atol == 0 then return close end
  if a.dtype == core.bool then a, b = a:to(core.default_dtype), b:to(core.default_dtype) end
  local allowed = (b * rtol):abs() + atol
  local actual = (a - b):abs()
  -- actual <= allowed is false for NaN; an infinite difference is never close
  local fin = actual.dtype.is_floating_point and actual:lt(INF) or nil
  local within = actual:le(allowed)
  if fin then within = where(fin, within, false) end
  return where(close, true, within)
end

function M.isclose(a, b, rtol, atol, equal_nan)
  return isclose_impl("isclose", a, b, rtol, atol, equal_nan, 2)
end

-- no false element; an empty tensor has none
local function all_true(t)
  return t:numel() == 0 or t:eq(false):sum():item() == 0
end

-- allclose: a Lua boolean
function M.allclose(a, b, rtol, atol, equal_nan)
  return all_true(isclose_impl("allclose", a, b, rtol, atol, equal_nan, 2))
end

-- equal(a, b): the same shape (no broadcasting) and equal elements (a Lua boolean); the dtypes may
-- differ (compared after promotion, as PyTorch 2.x); NaN equals nothing
function M.equal(a, b)
  expect(a, "equal", "input", 2)
  expect(b, "equal", "other", 2)
  local sa, sb = a.shape, b.shape
  if #sa ~= #sb then return false end
  for i = 1, #sa do
    if sa[i] ~= sb[i] then return false end
  end
  return named("equal", 2, function() return all_true(a:detach():eq(b:detach())) end)
end

for _, name in ipairs({ "isnan", "isinf", "isposinf", "isneginf", "isfinite", "isreal", "nan_to_num",
                        "logical_not", "logical_and", "logical_or", "logical_xor", "isclose", "allclose",
                        "equal" }) do
  Tensor[name] = M[name]
end

return M
