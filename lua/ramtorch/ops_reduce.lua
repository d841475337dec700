-- ramtorch/ops_reduce.lua: PyTorch's statistical and norm reductions that have no kernel of their own:
-- var / std / var_mean / std_mean, logsumexp, torch.norm and torch.linalg.vector_norm (as
-- M.linalg.vector_norm, reached through ramtorch/linalg.lua), with their Tensor methods. Each is a
-- composition of existing ops (mean, sum, amax, where, pow, ...), so it runs on every device and
-- autograd differentiates the composition; where the plain composition's gradient would be NaN (norms
-- at 0) a double `where` keeps PyTorch's subgradient 0. init.lua merges the functions into torch.
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ops = require("ramtorch.ops") -- also defines the Tensor methods composed below (mean, sum, amax, ...)

local Tensor, is_tensor, describe = tensor.Tensor, tensor.is_tensor, tensor.describe
local f16, bf16, f32 = core.float16, core.bfloat16, core.float32
local INF = math.huge

local M = {}

-- torch.where(cond, number, t)
local where_num = ops.where

-- ---- argument handling ----------------------------------------------------------------------------------

-- a table with a string key is options ({dim=, keepdim=, ...}), not a list of dims
local function is_opts(t)
  if type(t) ~= "table" then return false end
  for k in pairs(t) do
    if type(k) ~= "number" then return true end
  end
  return false
end

-- PyTorch's positional-or-keyword arguments: args after the tensor fill `names` in order; one
-- trailing options table may give any key of `allowed` (a key given both ways is refused, as is an
-- unknown key: ignoring it would return a silently different result).
local function parse(name, names, allowed, level, n, ...)
  local out, args = {}, { ... }
  for i = 1, n do
    local v = args[i]
    if is_opts(v) then
      if i ~= n then error(("%s: the options table must be the last argument"):format(name), level + 1) end
      for k, val in pairs(v) do
        if not allowed[k] then
          local keys = {}
          for a in pairs(allowed) do keys[#keys + 1] = a end
          table.sort(keys)
          error(("%s: unknown option '%s' (expected one of %s)"):format(name, tostring(k), table.concat(keys, ", ")),
                level + 1)
        end
        if out[k] ~= nil then error(("%s: argument '%s' given twice"):format(name, k), level + 1) end
        out[k] = val
      end
    elseif names[i] == nil then
      error(("%s: too many arguments (at most %d after the tensor, then an options table)"):format(name, #names),
            level + 1)
    else
      out[names[i]] = v
    end
  end
  return out
end

local function expect_bool(v, name, what, level)
  if v ~= nil and type(v) ~= "boolean" then
    error(("%s: expected %s to be a boolean, got %s"):format(name, what, describe(v)), level + 1)
  end
  return v == true
end

-- dim: nil (every dim), an integer or a table of integers (an empty table: every dim, as sum).
-- Returns the wrapped 0-based dims (nil: all) and the number of elements reduced into each output.
local function reduce_dims(x, dim, name, level)
  level = level + 1
  local nd, shape = x.ndim, x.shape
  local list
  if dim == nil then return nil, x:numel() end
  if type(dim) == "number" then list = { dim }
  elseif type(dim) == "table" and not is_tensor(dim) and not is_opts(dim) then list = dim
  else
    error(("%s: expected dim as an integer or a table of integers, got %s"):format(name, describe(dim)), level)
  end
  if #list == 0 then return nil, x:numel() end
  local n, lo, hi = math.max(nd, 1), -math.max(nd, 1), math.max(nd, 1) - 1
  local seen, dims, count = {}, {}, 1
  for i = 1, #list do
    local d = list[i]
    if type(d) ~= "number" or d ~= math.floor(d) then
      error(("%s: expected integer dims, got %s at position %d"):format(name, describe(d), i), level)
    end
    if d < lo or d > hi then
      error(("%s: dimension %d out of range for a tensor of %d dims (expected %d to %d)"):format(name, d, nd, lo, hi),
            level)
    end
    if d < 0 then d = d + n end
    if seen[d] then error(("%s: dim %d appears more than once in the list of dims"):format(name, d), level) end
    seen[d] = true
    dims[#dims + 1] = d
    if nd > 0 then count = count * shape[d + 1] end
  end
  if nd == 0 then return nil, 1 end
  return dims, count
end

-- float16 / bfloat16 compute in float32 and return their own dtype (PyTorch's reductions accumulate
-- in float for them); returns the tensor to compute on and the dtype to return
local function widen(x)
  local dt = x.dtype
  if dt == f16 or dt == bf16 then return x:to(f32), dt end
  return x, dt
end
local function narrow(r, dt)
  if r.dtype ~= dt then return r:to(dt) end
  return r
end

-- ---- var / std -----------------------------------------------------------------------------------------

local VAR_ALLOWED = { dim = true, correction = true, unbiased = true, keepdim = true }

-- var(x), var(x, unbiased), var(x, dim, unbiased, keepdim), var(x, dim, {correction=, keepdim=}),
-- var(x, {dim=, correction=, unbiased=, keepdim=}) -> dims, count, correction, keepdim
local function var_args(name, x, n, ...)
  tensor.expect_tensor(x, name, 3)
  local first = ...
  local names = type(first) == "boolean" and { "unbiased" } or { "dim", "unbiased", "keepdim" }
  local a = parse(name, names, VAR_ALLOWED, 3, n, ...)
  if not x.dtype.is_floating_point then
    error(("%s: std and var only support floating point dtypes, got %s (convert first, e.g. x:double())")
          :format(name, x.dtype.name), 3)
  end
  if a.unbiased ~= nil and a.correction ~= nil then
    error(("%s: cannot specify both unbiased and correction"):format(name), 3)
  end
  local correction = 1
  if a.unbiased ~= nil then correction = expect_bool(a.unbiased, name, "unbiased", 3) and 1 or 0 end
  if a.correction ~= nil then
    if type(a.correction) ~= "number" or a.correction ~= a.correction then
      error(("%s: expected correction to be a number, got %s"):format(name, describe(a.correction)), 3)
    end
    correction = a.correction
  end
  local keepdim = expect_bool(a.keepdim, name, "keepdim", 3)
  local dims, count = reduce_dims(x, a.dim, name, 3)
  return dims, count, correction, keepdim
end

-- sum((x - mean)^2) / max(0, n - correction), as PyTorch: n <= correction divides by zero (inf, or
-- NaN for a constant slice or an empty one). Two passes in the input's float type (f32 for f16/bf16).
-- Returns var and mean, both in the reduced shape (keepdim or not).
local function var_core(x, dims, count, correction, keepdim)
  local xc, dt = widen(x)
  local m = xc:mean(dims, true)
  local d = xc - m
  local s = (d * d):sum(dims, keepdim)
  local v = s / math.max(0, count - correction)
  if not keepdim then m = m:reshape(v.shape) end
  return v, m, dt
end

function M.var(x, ...)
  local dims, count, correction, keepdim = var_args("var", x, select("#", ...), ...)
  local v, _, dt = var_core(x, dims, count, correction, keepdim)
  return narrow(v, dt)
end
function M.std(x, ...)
  local dims, count, correction, keepdim = var_args("std", x, select("#", ...), ...)
  local v, _, dt = var_core(x, dims, count, correction, keepdim)
  return narrow(v:sqrt(), dt)
end
-- (var, mean) and (std, mean), as PyTorch's tuples
function M.var_mean(x, ...)
  local dims, count, correction, keepdim = var_args("var_mean", x, select("#", ...), ...)
  local v, m, dt = var_core(x, dims, count, correction, keepdim)
  return narrow(v, dt), narrow(m, dt)
end
function M.std_mean(x, ...)
  local dims, count, correction, keepdim = var_args("std_mean", x, select("#", ...), ...)
  local v, m, dt = var_core(x, dims, count, correction, keepdim)
  return narrow(v:sqrt(), dt), narrow(m, dt)
end

-- ---- logsumexp -----------------------------------------------------------------------------------------

local LSE_ALLOWED = { dim = true, keepdim = true }

-- logsumexp(x, dim, keepdim): log(sum(exp(x - m))) + m with m = amax over dim, detached (as in
-- PyTorch's implementation, so the gradient is exactly softmax(x)) and infinite maxima replaced by 0
-- (an all -inf slice gives -inf, a +inf gives +inf instead of inf - inf = NaN); NaN propagates.
-- Integer and bool inputs promote to the default dtype, as PyTorch.
function M.logsumexp(x, ...)
  tensor.expect_tensor(x, "logsumexp", 2)
  local a = parse("logsumexp", { "dim", "keepdim" }, LSE_ALLOWED, 2, select("#", ...), ...)
  if a.dim == nil then
    error("logsumexp: missing argument dim (an integer or a table of integers; {} reduces every dim)", 2)
  end
  local keepdim = expect_bool(a.keepdim, "logsumexp", "keepdim", 2)
  local dims = reduce_dims(x, a.dim, "logsumexp", 2)
  if not x.dtype.is_floating_point then x = x:to(core.default_dtype) end
  local xc, dt = widen(x)
  local r
  if xc:numel() == 0 then
    r = xc:exp():sum(dims, keepdim):log() -- amax has no identity; an empty slice gives log(0) = -inf
  else
    local m = xc:detach():amax(dims, true)
    m = where_num(m:abs():eq(INF), 0, m)
    local e = (xc - m):exp():sum(dims, keepdim):log()
    r = e + (keepdim and m or m:reshape(e.shape))
  end
  return narrow(r, dt)
end

-- ---- norms ----------------------------------------------------------------------------------------------

-- p-norm of x over dims (x already in the compute dtype). Zero elements and zero norms take PyTorch's
-- subgradient 0: the double-where pattern evaluates the non-differentiable point on a safe operand (1)
-- and selects the constant, so no inf * 0 reaches the gradient.
local function pnorm(x, ord, dims, keepdim)
  if ord == 2 then
    local s = (x * x):sum(dims, keepdim)
    local z = s:eq(0)
    return where_num(z, 0, where_num(z, 1, s):sqrt())
  elseif ord == 1 then
    return x:abs():sum(dims, keepdim)
  elseif ord == INF then
    return x:abs():amax(dims, keepdim)
  elseif ord == -INF then
    return x:abs():amin(dims, keepdim)
  elseif ord == 0 then
    -- the count of non-zeros (NaN counts); x * 0 is only selected where x == 0, so the value is exact
    -- and the gradient is 0 (PyTorch's), not missing
    return where_num(x:ne(0), 1, x * 0):sum(dims, keepdim)
  end
  local ax = x:abs()
  local z = ax:eq(0)
  -- |0|^p is 0 for p > 0 and inf for p < 0 (so a zero makes a negative-order norm 0)
  local t = where_num(z, ord > 0 and 0 or INF, where_num(z, 1, ax) ^ ord)
  local s = t:sum(dims, keepdim)
  local sz = s:eq(0)
  return where_num(sz, 0, where_num(sz, 1, s) ^ (1 / ord))
end

local function check_float(x, name, level)
  if not x.dtype.is_floating_point then
    error(("%s: expected a floating point tensor as input, got %s (convert first, or pass dtype=)")
          :format(name, x.dtype.name), level + 1)
  end
end

local function check_ord(ord, name, level)
  if type(ord) ~= "number" or ord ~= ord then
    error(("%s: expected ord to be a number (2, 1, 0, math.huge, -math.huge or any p), got %s")
          :format(name, type(ord) == "string" and ("'" .. ord .. "'") or describe(ord)), level + 1)
  end
end

local function vector_norm_impl(name, x, ord, dim, keepdim, dtype, level)
  level = level + 1
  check_ord(ord, name, level)
  keepdim = expect_bool(keepdim, name, "keepdim", level)
  if dtype ~= nil then
    local dt = core.dtype(dtype, level)
    if not dt.is_floating_point then
      error(("%s: dtype must be a floating point dtype, got %s"):format(name, dt.name), level)
    end
    x = x:to(dt) -- PyTorch checks the dtype given, so an integer input with dtype= is fine
  end
  check_float(x, name, level)
  local dims = reduce_dims(x, dim, name, level)
  if x:numel() == 0 and (ord < 0 or ord == INF) then
    -- amax / amin have no identity (PyTorch refuses these orders on an empty tensor too)
    local empty_reduced = dims == nil
    if dims then
      for _, d in ipairs(dims) do
        if x.shape[d + 1] == 0 then empty_reduced = true end
      end
    end
    if empty_reduced then
      error(("%s: cannot compute the %s norm on an empty tensor because the operation does not have an identity")
            :format(name, tostring(ord)), level)
    end
  end
  local xc, dt = widen(x)
  return narrow(pnorm(xc, ord, dims, keepdim), dt)
end

local VN_ALLOWED = { ord = true, dim = true, keepdim = true, dtype = true }

-- torch.linalg.vector_norm(x, ord=2, dim=nil, keepdim=false, {dtype=}): the p-norm of the elements
-- over dim (every element by default); ord may be 2, 1, 0 (count of non-zeros), math.huge (max |x|),
-- -math.huge (min |x|) or any other number p: sum(|x|^p)^(1/p).
local function vector_norm(x, ...)
  tensor.expect_tensor(x, "linalg.vector_norm", 2)
  local a = parse("linalg.vector_norm", { "ord", "dim", "keepdim" }, VN_ALLOWED, 2, select("#", ...), ...)
  local ord = a.ord
  if ord == nil then ord = 2 end
  return vector_norm_impl("linalg.vector_norm", x, ord, a.dim, a.keepdim, a.dtype, 2)
end
M.linalg = { vector_norm = vector_norm }

local NORM_ALLOWED = { p = true, dim = true, keepdim = true, dtype = true }

-- torch.norm(x, p='fro', dim=nil, keepdim=false, {dtype=}) / x:norm(...): p 'fro' (or nil) is the
-- 2-norm over at most two dims (every element by default), a number p the vector p-norm over dim.
-- 'nuc' (a matrix norm, needs an SVD) is refused.
function M.norm(x, ...)
  tensor.expect_tensor(x, "norm", 2)
  local a = parse("norm", { "p", "dim", "keepdim" }, NORM_ALLOWED, 2, select("#", ...), ...)
  local p = a.p
  if p == nil or p == "fro" then
    if type(a.dim) == "table" and not is_opts(a.dim) and #a.dim > 2 then
      error(("norm: the 'fro' norm takes at most 2 dims, got %d"):format(#a.dim), 2)
    end
    p = 2
  elseif p == "nuc" then
    error("norm: p='nuc' (the nuclear norm, a matrix norm needing an SVD) is not supported by ramtorch", 2)
  elseif type(p) ~= "number" then
    error(("norm: expected p to be 'fro' or a number, got %s")
          :format(type(p) == "string" and ("'" .. p .. "'") or describe(p)), 2)
  end
  return vector_norm_impl("norm", x, p, a.dim, a.keepdim, a.dtype, 2)
end

Tensor.var, Tensor.std, Tensor.var_mean, Tensor.std_mean = M.var, M.std, M.var_mean, M.std_mean
Tensor.logsumexp, Tensor.norm = M.logsumexp, M.norm

-- autocast: logsumexp and norm run in float32 (PyTorch's list; ramtorch/autocast.lua)
require("ramtorch.autocast").install(M, Tensor)

return M
