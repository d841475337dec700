-- ramtorch/ops_round.lua: rounding and integer-division ops with PyTorch's semantics, composed of
-- existing ops (comparisons, where, dtype conversion, arithmetic) so that they run on every device:
-- trunc / fix, floor, ceil, round (half to even), frac; floor_divide, remainder, fmod and div's
-- rounding_mode ("floor" / "trunc"); any / all. init.lua merges the functions into torch; the Tensor
-- methods are installed here.
-- Floats: |x| >= 2^52 (f64) / 2^23 (f32; bf16 and f16 are computed in f32) is already integral and
-- returned as is; NaN and +-inf pass through; zeros keep PyTorch's sign. trunc converts to int64
-- (the conversion truncates toward zero) where |x| is below that threshold.
-- remainder / fmod / floor division of floats are computed in f64 with an exact product (Dekker's
-- two-product), so the remainder is exact while |a / b| < 2^53; integers are divided exactly in int64
-- (a float estimate of the quotient refined with exact int64 arithmetic).
local C = require("ramtorch.ffi").C
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ops = require("ramtorch.ops")
local creation = require("ramtorch.creation")
require("ramtorch.ops_logical") -- logical_and / logical_or as Tensor methods

local Tensor, is_tensor, describe = tensor.Tensor, tensor.is_tensor, tensor.describe
local where = ops.where
local INF = math.huge

local M = {}

local function expect(x, name, level)
  if not is_tensor(x) then
    error(("%s: expected a Tensor, got %s"):format(name, describe(x)), level + 1)
  end
  return x
end

-- fn(...) with an error from the ops composed inside re-raised under the caller's function name
local function named(name, level, fn, ...)
  local ok, r = pcall(fn, ...)
  if ok then return r end
  error(name .. ": " .. tostring(r):gsub("^[^\n]-%.lua:%d+: ", ""), level + 1)
end

local function grad_on() return C.rt_grad_enabled() ~= 0 end

-- r (computed without a graph) as the output of a zero-gradient op of the inputs: where with an
-- all-true condition selects r's values and sends no gradient to the inputs (PyTorch's zeros_like).
local function zero_grad(r, ...)
  if not grad_on() then return r end
  for i = 1, select("#", ...) do
    local x = select(i, ...)
    if is_tensor(x) and x.requires_grad then
      local yes = creation.full({}, true, { dtype = core.bool, device = r.device })
      local xr = x.dtype == r.dtype and x or x:to(r.dtype)
      r = where(yes, r, xr)
    end
  end
  return r
end

-- ---- rounding of one tensor -------------------------------------------------------------------------

local function threshold(dt) return dt == core.float64 and 2 ^ 52 or 2 ^ 23 end
-- the dtype to compute in: f32 for bf16 / f16 (as PyTorch's opmath), else the dtype itself
local function compute_dtype(dt)
  if dt == core.bfloat16 or dt == core.float16 then return core.float32 end
  return dt
end

-- xd: a detached f32 / f64 tensor. Returns trunc(x) for the elements below the threshold (sign of
-- zero kept: trunc(-0.5) = -0.0), the mask of those elements, and x * 0 (+-0 with x's sign).
local function trunc_small(xd)
  local small = xd:abs():lt(threshold(xd.dtype)) -- false for NaN and +-inf
  local t = where(small, xd, 0):to(core.int64):to(xd.dtype)
  local z = xd * 0
  return where(t:eq(0), z, t), small, z
end

local ROUNDERS = {
  trunc = function(xd)
    local t, small = trunc_small(xd)
    return where(small, t, xd)
  end,
  -- floor(-0.0) = -0.0: t is -0.0 there and x < t is false
  floor = function(xd)
    local t, small = trunc_small(xd)
    return where(small, where(xd:lt(t), t - 1, t), xd)
  end,
  -- ceil(-0.5) = -0.0: t is -0.0 and x > t is false
  ceil = function(xd)
    local t, small = trunc_small(xd)
    return where(small, where(xd:gt(t), t + 1, t), xd)
  end,
  -- half to even: below the threshold T, (|x| + T) - T rounds |x| to the nearest integer with ties
  -- to even (the sum's ulp is 1 and T is even); the sign and the zero's sign come back from x
  round = function(xd)
    local T = threshold(xd.dtype)
    local small = xd:abs():lt(T)
    local a = where(small, xd:abs(), 0)
    local ra = (a + T) - T
    local r = where(xd:lt(0), -ra, ra)
    r = where(ra:eq(0), xd * 0, r)
    return where(small, r, xd)
  end,
}

local function rounder(name)
  local fn = ROUNDERS[name]
  return function(x, opts)
    expect(x, name, 2)
    if name == "round" and opts ~= nil then
      local decimals = opts
      if type(opts) == "table" then
        for k in pairs(opts) do
          if k ~= "decimals" then
            error(("round: unknown option '%s' (expected decimals)"):format(tostring(k)), 2)
          end
        end
        decimals = opts.decimals
      end
      if decimals ~= nil and decimals ~= 0 then
        error(("round: decimals=%s is not supported by ramtorch (only decimals=0)"):format(describe(decimals)), 2)
      end
    elseif opts ~= nil then
      error(("%s: expected one argument (the input tensor), got an extra %s"):format(name, describe(opts)), 2)
    end
    local dt = x.dtype
    if dt == core.bool then
      error(("%s: not implemented for 'Bool' (convert the tensor to an integer or float dtype)"):format(name), 2)
    end
    if not dt.is_floating_point then return x:clone() end -- integers are integral already
    local cd = compute_dtype(dt)
    local xd = x:detach()
    if cd ~= dt then xd = xd:to(cd) end
    local r = fn(xd)
    if cd ~= dt then r = r:to(dt) end
    return zero_grad(r, x)
  end
end

M.trunc, M.floor, M.ceil, M.round = rounder("trunc"), rounder("floor"), rounder("ceil"), rounder("round")
M.fix = M.trunc

-- frac(x) = x - trunc(x), gradient 1; frac(+-inf) is NaN (inf - inf), as in PyTorch
function M.frac(x)
  expect(x, "frac", 2)
  if not x.dtype.is_floating_point then
    error(("frac: not implemented for '%s' (frac is defined for floating-point tensors)"):format(x.dtype.name), 2)
  end
  return x - M.trunc(x:detach())
end

-- ---- division with rounding ------------------------------------------------------------------------------

-- Dekker's split and two-product in f64: p + e == x * y exactly (x, y below ~2^996 in magnitude)
local SPLIT = 134217729 -- 2^27 + 1
local function split(x)
  local c = x * SPLIT
  local hi = c - (c - x)
  return hi, x - hi
end
local function two_prod(x, y)
  local p = x * y
  local xh, xl = split(x)
  local yh, yl = split(y)
  local e = (((xh * yh) - p) + (xh * yl) + (xl * yh)) + (xl * yl)
  return p, e
end

-- A, B: f64 tensors (broadcastable). Returns the trunc quotient q (an integral f64) and the fmod
-- remainder r = A - q * B (NaN where A is not finite, B is 0 or either is NaN; A where B is +-inf).
-- trunc(fl(A / B)) is the true quotient or one too far from zero while |A / B| < 2^53 (rounding is
-- monotonic and integers are representable there); the exact two-product finds the sign of
-- A - q * B, and one step corrects q.
-- q, r: a trunc quotient and its remainder, at most one step off; aneg: A < 0; s: sign(A) * sign(B);
-- sb: sign(A) * |B|. Returns the exact pair (the remainder has A's sign and |r| < |B|).
local function one_step_fix(q, r, aneg, s, sb)
  -- a remainder of the wrong sign: q went one past the true quotient
  local wrong = r:ne(0):logical_and(r:lt(0):ne(aneg))
  q = where(wrong, q - s, q)
  r = where(wrong, r + sb, r)
  -- |r| >= |B| (A's sign kept): q one short
  local r2 = r - sb
  local over = r2:eq(0):logical_or(r2:lt(0):eq(aneg)):logical_and(r:ne(0))
  return where(over, q + s, q), where(over, r2, r)
end

local function float_divmod(A, B)
  local q = ROUNDERS.trunc(A / B)
  local p, e = two_prod(q, B)
  local r = (A - p) - e
  local aneg = A:lt(0)
  local sb = where(aneg, -B:abs(), B:abs())       -- sign(A) * |B|
  local s = where(aneg:ne(B:lt(0)), -1.0, 1.0)   -- sign(A) * sign(B)
  q, r = one_step_fix(q, r, aneg, s, sb)
  -- fmod(a, +-inf) = a for finite a (the product above was 0 * inf)
  local keep = B:abs():eq(INF):logical_and(A:abs():lt(INF))
  r = where(keep, A, r)
  q = where(keep, A * 0, q)
  -- a zero remainder has A's sign (C's fmod)
  r = where(r:eq(0), A * 0, r)
  return q, r
end

local I64_QMAX = 9223372036854774784 -- the largest double below 2^63

-- A, B: int64 tensors, B without zeros. The trunc quotient and the fmod remainder, exact: a float
-- estimate of the quotient, refined twice from the exact int64 remainder, then one corrective step.
-- Only tensor-tensor int64 ops (the exact integer path on every backend).
local function int_divmod(A, B)
  local f64, i64 = core.float64, core.int64
  local Bf = B:to(f64)
  local q = (A:to(f64) / Bf):clamp(-I64_QMAX, I64_QMAX):to(i64)
  local r = A - q * B
  for _ = 1, 2 do
    local d = (r:to(f64) / Bf):clamp(-I64_QMAX, I64_QMAX):to(i64)
    q = q + d
    r = r - d * B
  end
  local aneg = A:lt(0)
  local s = where(aneg:ne(B:lt(0)), -1, 1):to(i64) -- sign(A) * sign(B)
  local sb = s * B                                  -- sign(A) * |B|
  q, r = one_step_fix(q, r, aneg, s, sb)
  return q, r
end

-- PyTorch's promoted result dtype of a (op) b (numbers as Python scalars), from the C side's rules
local function result_dtype(name, a, b, level)
  for _, x in ipairs({ a, b }) do
    if not is_tensor(x) and type(x) ~= "number" then
      error(("%s: expected a Tensor or a number, got %s"):format(name, describe(x)), level + 1)
    end
  end
  if not is_tensor(a) and not is_tensor(b) then
    error(("%s: expected at least one Tensor operand, got two numbers"):format(name), level + 1)
  end
  local ad = is_tensor(a) and a:detach() or a
  local bd = is_tensor(b) and b:detach() or b
  -- the sum's dtype is the promotion (a bool pair stays bool); it also checks shapes and devices
  local dt = named(name, level + 1, ops.add, ad, bd).dtype
  -- an infinite or NaN number is a float (Lua cannot tell 3 from 3.0, but inf is no integer)
  if not dt.is_floating_point then
    for _, x in ipairs({ a, b }) do
      if type(x) == "number" and not (x > -INF and x < INF) then dt = core.default_dtype end
    end
  end
  if dt == core.bool then
    error(("%s: not implemented for 'Bool' (convert the operands to an integer or float dtype)"):format(name), level + 1)
  end
  return dt, (is_tensor(a) and a or b).device
end

-- x as a detached tensor of dtype dt (a number rounded to dt first, as PyTorch casts a scalar to the
-- common dtype), then converted to the compute dtype cd
local function lift(name, x, dt, cd, device, level)
  local t
  if is_tensor(x) then
    t = x:detach()
    if t.dtype ~= dt then t = t:to(dt) end
  else -- a number that overflows dt is refused under the caller's name
    t = named(name, level + 1, creation.full, {}, x, { dtype = dt, device = device })
  end
  if cd ~= dt then t = t:to(cd) end
  return t
end

local function check_no_zero(name, B, level)
  if B:eq(0):sum():item() ~= 0 then
    error(("%s: ZeroDivisionError (integer division by zero)"):format(name), level + 1)
  end
end

-- mode: "trunc", "floor", "fmod", "remainder". Returns the value (no graph) in dtype dt, and the
-- quotient that the gradient of fmod / remainder needs (trunc / floor).
local function divide(name, mode, a, b, level)
  local dt, device = result_dtype(name, a, b, level + 1)
  if not dt.is_floating_point then
    local A, B = lift(name, a, dt, core.int64, device, level + 1), lift(name, b, dt, core.int64, device, level + 1)
    check_no_zero(name, B, level + 1)
    local q, r = int_divmod(A, B)
    local out
    if mode == "trunc" then out = q
    elseif mode == "fmod" then out = r
    else
      local adj = r:ne(0):logical_and(r:lt(0):ne(B:lt(0)))
      if mode == "floor" then
        out = where(adj, q - creation.full({}, 1, { dtype = core.int64, device = device }), q)
      else
        out = where(adj, r + B, r)
      end
    end
    return out:to(dt)
  end
  if mode == "trunc" then -- PyTorch: trunc(a / b) in the compute dtype
    local cd = compute_dtype(dt)
    local A, B = lift(name, a, dt, cd, device, level + 1), lift(name, b, dt, cd, device, level + 1)
    return ROUNDERS.trunc(A / B):to(dt)
  end
  local f64 = core.float64
  local A, B = lift(name, a, dt, f64, device, level + 1), lift(name, b, dt, f64, device, level + 1)
  local q, r = float_divmod(A, B)
  local out, quot
  if mode == "fmod" then
    out, quot = r, q
  else
    -- PyTorch's remainder: fmod, plus b where the signs differ (a zero keeps fmod's sign)
    local adj = r:ne(0):logical_and(r:lt(0):ne(B:lt(0)))
    local qf = where(adj, q - 1, q)
    if mode == "remainder" then
      out, quot = where(adj, r + B, r), qf
    else
      -- floor division (div_floor_floating): a / b where b is 0, NaN where the remainder is,
      -- a zero quotient with the sign of a / b
      local z = A / B
      qf = where(qf:eq(0), z * 0, qf)
      out = where(B:eq(0), z, where(r:ne(r), r, qf))
    end
  end
  if dt ~= f64 then
    out = out:to(dt)
    if quot then quot = quot:to(dt) end
  end
  return out, quot
end

-- g reduced to shape (the inverse of broadcasting)
local function sum_to(g, shape)
  local gs = g.shape
  local lead = #gs - #shape
  local dims = {}
  for i = 1, #gs do
    if i <= lead or (shape[i - lead] == 1 and gs[i] ~= 1) then dims[#dims + 1] = i - 1 end
  end
  if #dims > 0 then g = g:sum(dims, true) end
  return g:reshape(shape)
end

local autograd -- loaded on first use (autograd.lua requires the ops)
local GRAD_FNS = {}
local function grad_fn(mode)
  if GRAD_FNS[mode] then return GRAD_FNS[mode] end
  autograd = autograd or require("ramtorch.autograd")
  GRAD_FNS[mode] = autograd.Function({
    forward = function(ctx, a, b)
      local out, q = divide(mode, mode, a, b, 1)
      ctx.a_shape = is_tensor(a) and a.shape
      ctx.a_dtype = is_tensor(a) and a.dtype
      ctx.b_shape = is_tensor(b) and b.shape
      ctx.b_dtype = is_tensor(b) and b.dtype
      ctx:save_for_backward(q)
      return out
    end,
    -- d/da = 1, d/db = -q (q: the trunc quotient for fmod, the floor quotient for remainder)
    backward = function(ctx, g)
      local ga, gb
      if ctx.a_shape then ga = sum_to(g, ctx.a_shape):to(ctx.a_dtype) end
      if ctx.b_shape then
        local q = ctx.saved_tensors[1]
        gb = sum_to(-(g * q), ctx.b_shape):to(ctx.b_dtype)
      end
      return ga, gb
    end,
  })
  return GRAD_FNS[mode]
end

local function needs_grad(a, b)
  return grad_on() and ((is_tensor(a) and a.requires_grad) or (is_tensor(b) and b.requires_grad))
end

local function remainder_like(name)
  return function(a, b)
    if needs_grad(a, b) then
      result_dtype(name, a, b, 2) -- the argument errors, raised under this name
      local ok, r = pcall(grad_fn(name), a, b)
      if not ok then error(tostring(r):gsub("^[^\n]-%.lua:%d+: ", ""), 2) end
      return r
    end
    local r = divide(name, name, a, b, 2)
    return r
  end
end
M.remainder = remainder_like("remainder")
M.fmod = remainder_like("fmod")

-- floor(a / b) (PyTorch >= 1.13), zero gradient
function M.floor_divide(a, b)
  local r = divide("floor_divide", "floor", a, b, 2)
  return zero_grad(r, a, b)
end

-- div(a, b, rounding_mode) for "floor" / "trunc" (ops.lua's div calls this), zero gradient; kept out of
-- torch (init.lua copies the functions of M only)
M.internal = {}
function M.internal.div_rounded(name, a, b, mode, level)
  local r = divide(name, mode, a, b, level + 1)
  return zero_grad(r, a, b)
end

-- ---- any / all ----------------------------------------------------------------------------------------------

-- any(x, dim=nil, keepdim=false) / all(...), or (x, {dim=, keepdim=}): bool results; NaN counts as true
local function anyall(name)
  return function(x, dim, keepdim)
    expect(x, name, 2)
    if type(dim) == "table" then
      local named_opts = false
      for k in pairs(dim) do
        if type(k) ~= "number" then named_opts = true end
      end
      if named_opts then
        for k in pairs(dim) do
          if k ~= "dim" and k ~= "keepdim" then
            error(("%s: unknown option '%s' (expected dim, keepdim)"):format(name, tostring(k)), 2)
          end
        end
        dim, keepdim = dim.dim, dim.keepdim == nil and keepdim or dim.keepdim
      end
    end
    if keepdim ~= nil and type(keepdim) ~= "boolean" then
      error(("%s: expected keepdim to be a boolean, got %s"):format(name, describe(keepdim)), 2)
    end
    local xd = x:detach()
    local hits = name == "any" and xd:ne(0) or xd:eq(0)
    local n = named(name, 2, ops.sum, hits, dim, keepdim)
    if name == "any" then return n:gt(0) end
    return n:eq(0)
  end
end
M.any, M.all = anyall("any"), anyall("all")

for _, name in ipairs({ "trunc", "fix", "floor", "ceil", "round", "frac", "remainder", "fmod", "floor_divide",
                        "any", "all" }) do
  Tensor[name] = M[name]
end

return M
