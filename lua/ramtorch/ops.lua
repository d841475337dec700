-- ramtorch/ops.lua: tensor math as functions (torch.add(a, b)) and methods (a:add(b)), with the
-- arithmetic metamethods. Thin wrappers: the C side validates, broadcasts, promotes and records autograd.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ffi, C = rffi.ffi, rffi.C

local Tensor, mt, is_tensor = tensor.Tensor, tensor.mt, tensor.is_tensor
local box, box2, int_buf = core.box, core.box2, core.int_buf
local result, check, own = core.result, core.check, core.own
local oom = core.oom
local meta = tensor.meta

local M = {}

-- ---- elementwise binary ----------------------------------------------------------------------------

local BIN = { add = 0, sub = 1, mul = 2, div = 3, pow = 4, maximum = 5, minimum = 6,
              eq = 7, ne = 8, lt = 9, le = 10, gt = 11, ge = 12 }
M.BINARY = BIN

local function bad_operand(name, x, level)
  error(("%s: expected a Tensor or a number, got %s"):format(name, type(x) == "cdata" and tostring(ffi.typeof(x)) or type(x)),
        level + 1)
end

-- a (op) b where either side may be a number.
local function binary(name, op, a, b)
  if is_tensor(a) then
    if is_tensor(b) then return result(oom(C.rt_binary(op, a.p, b.p, box)) or C.rt_binary(op, a.p, b.p, box)) end
    if type(b) == "number" then return result(oom(C.rt_binary_scalar(op, a.p, b, 0, box)) or C.rt_binary_scalar(op, a.p, b, 0, box)) end
    if type(b) == "boolean" then return result(oom(C.rt_binary_scalar(op, a.p, b and 1 or 0, 0, box)) or C.rt_binary_scalar(op, a.p, b and 1 or 0, 0, box)) end
    bad_operand(name, b, 3)
  elseif type(a) == "number" and is_tensor(b) then
    return result(oom(C.rt_binary_scalar(op, b.p, a, 1, box)) or C.rt_binary_scalar(op, b.p, a, 1, box))
  end
  bad_operand(name, is_tensor(a) and b or a, 3)
end

for name, op in pairs(BIN) do
  M[name] = function(a, b) return binary(name, op, a, b) end
  Tensor[name] = M[name]
  if op < 7 then
    -- in place: a:add_(b), no autograd (optimizer updates, accumulation)
    Tensor[name .. "_"] = function(a, b)
      if is_tensor(b) then check(C.rt_binary_(op, a.p, b.p))
      elseif type(b) == "number" then check(C.rt_binary_scalar_(op, a.p, b))
      else bad_operand(name .. "_", b, 2) end
      return a
    end
  end
end

-- PyTorch's alpha: a + alpha * b (b may be a number: torch.add(t, 2, alpha=3) is t + 6)
local function scaled(b, alpha)
  if type(b) == "number" and type(alpha) == "number" then return b * alpha end
  return binary("mul", BIN.mul, b, alpha)
end
-- PyTorch's alpha_check: a fractional alpha needs a floating-point result (scaling b first would
-- otherwise turn int + int into a float tensor silently)
local function fractional(x)
  if is_tensor(x) then return x.dtype.is_floating_point end
  return type(x) == "number" and x ~= math.floor(x)
end
local function check_alpha(name, a, b, alpha)
  if type(alpha) ~= "number" then
    error(("%s: argument alpha must be a number, got %s"):format(name, tensor.describe(alpha)), 3)
  end
  if not is_tensor(b) and type(b) ~= "number" then
    error(("%s: expected a Tensor or a number, got %s"):format(name, tensor.describe(b)), 3)
  end
  if type(alpha) == "number" and alpha ~= math.floor(alpha) and not fractional(a) and not fractional(b) then
    error(("%s: for integral input tensors, argument alpha must not be a floating point number (got alpha=%s); "
           .. "convert the tensors to a float dtype first"):format(name, tostring(alpha)), 3)
  end
end
function M.add(a, b, alpha)
  if alpha ~= nil and alpha ~= 1 then check_alpha("add", a, b, alpha); b = scaled(b, alpha) end
  return binary("add", BIN.add, a, b)
end
Tensor.add = M.add
-- a bool operand goes to the C side unscaled, which refuses subtraction with it (scaling first
-- would turn the mask into an int64 tensor and hide that)
local function has_bool(a, b)
  return (is_tensor(a) and a.dtype == core.bool) or (is_tensor(b) and b.dtype == core.bool)
end
function M.sub(a, b, alpha)
  if alpha ~= nil and alpha ~= 1 and not has_bool(a, b) then check_alpha("sub", a, b, alpha); b = scaled(b, alpha) end
  return binary("sub", BIN.sub, a, b)
end
Tensor.sub = M.sub
local add_inplace, sub_inplace = Tensor.add_, Tensor.sub_
function Tensor.add_(a, b, alpha)
  if alpha ~= nil and alpha ~= 1 then check_alpha("add_", a, b, alpha); b = scaled(b, alpha) end
  return add_inplace(a, b)
end
function Tensor.sub_(a, b, alpha)
  if alpha ~= nil and alpha ~= 1 and not has_bool(a, b) then check_alpha("sub_", a, b, alpha); b = scaled(b, alpha) end
  return sub_inplace(a, b)
end
-- div's rounding_mode ("floor"/"trunc", or {rounding_mode=...}): composed in ramtorch/ops_round.lua
-- (loaded on first use: it requires this module); nil (or {}) is true division
local function check_rounding(name, mode)
  if type(mode) == "table" then mode = mode.rounding_mode end
  if mode == nil then return nil end
  if mode == "floor" or mode == "trunc" then return mode end
  if type(mode) == "string" then
    error(("div expected rounding_mode to be one of None, 'trunc', or 'floor' but found '%s'"):format(mode), 3)
  end
  error(("%s: expected rounding_mode to be nil, 'trunc' or 'floor' (or {rounding_mode=...}), got %s")
        :format(name, tensor.describe(mode)), 3)
end
local function div_rounded(name, a, b, mode)
  return require("ramtorch.ops_round").internal.div_rounded(name, a, b, mode, 3)
end
local div_plain, div_inplace = M.div, Tensor.div_
function M.div(a, b, mode)
  if mode ~= nil then mode = check_rounding("div", mode) end
  if mode then
    local r = div_rounded("div", a, b, mode)
    return r
  end
  return div_plain(a, b)
end
Tensor.div = M.div
function Tensor.div_(a, b, mode)
  if mode ~= nil then mode = check_rounding("div_", mode) end
  if mode then
    tensor.expect_tensor(a, "div_", 2)
    -- the rules of the C in-place ops: no unrecorded write to a tensor that requires grad, and no
    -- result of a wider category than the target (a float quotient into an integer tensor)
    if a.requires_grad and C.rt_grad_enabled() ~= 0 then
      error("div_: a tensor that requires grad is being used in an in-place operation (wrap it in no_grad)", 2)
    end
    local r = div_rounded("div_", a, b, mode)
    if r.dtype.is_floating_point and not a.dtype.is_floating_point then
      error(("div_: result type %s can't be cast to the desired output type %s (convert the tensor first, or "
             .. "use the out-of-place form)"):format(r.dtype.name, a.dtype.name), 2)
    end
    a:copy_(r:detach())
    return a
  end
  return div_inplace(a, b)
end
M.multiply, M.divide, M.true_divide = M.mul, M.div, M.div
Tensor.multiply, Tensor.divide = M.mul, M.div
M.greater, M.less, M.equal_elementwise = M.gt, M.lt, M.eq

function mt.__add(a, b) return binary("add", 0, a, b) end
function mt.__sub(a, b) return binary("sub", 1, a, b) end
function mt.__mul(a, b) return binary("mul", 2, a, b) end
function mt.__div(a, b) return binary("div", 3, a, b) end
function mt.__pow(a, b) return binary("pow", 4, a, b) end
function mt.__unm(a) return result(oom(C.rt_unary(0, a.p, box)) or C.rt_unary(0, a.p, box)) end

-- ---- elementwise unary -----------------------------------------------------------------------------

local UN = { neg = 0, abs = 1, exp = 2, log = 3, sqrt = 4, rsqrt = 5, tanh = 6, sigmoid = 7, relu = 8,
             gelu = 9, gelu_tanh = 10, silu = 11, sin = 12, cos = 13, square = 14, reciprocal = 15 }
M.UNARY = UN
for name, op in pairs(UN) do
  M[name] = function(a)
    tensor.expect_tensor(a, name, 2)
    return result(oom(C.rt_unary(op, a.p, box)) or C.rt_unary(op, a.p, box))
  end
  Tensor[name] = M[name]
end
M.negative = M.neg
-- gelu(x, "tanh") or gelu(x, {approximate="tanh"}) as in PyTorch
function M.gelu(a, approximate)
  tensor.expect_tensor(a, "gelu", 2)
  if type(approximate) == "table" then approximate = approximate.approximate end
  if approximate == "tanh" then return result(oom(C.rt_unary(UN.gelu_tanh, a.p, box)) or C.rt_unary(UN.gelu_tanh, a.p, box)) end
  if approximate ~= nil and approximate ~= "none" then
    error(("gelu: approximate must be 'none' or 'tanh', got %s"):format(tostring(approximate)), 2)
  end
  return result(oom(C.rt_unary(UN.gelu, a.p, box)) or C.rt_unary(UN.gelu, a.p, box))
end
Tensor.gelu = M.gelu

function M.clamp(a, lo, hi)
  tensor.expect_tensor(a, "clamp", 2)
  if type(lo) == "table" then lo, hi = lo.min, lo.max end
  if lo ~= nil and type(lo) ~= "number" then error(("clamp: expected a number for min, got %s"):format(tensor.describe(lo)), 2) end
  if hi ~= nil and type(hi) ~= "number" then error(("clamp: expected a number for max, got %s"):format(tensor.describe(hi)), 2) end
  return result(oom(C.rt_clamp(a.p, lo or 0, hi or 0, lo and 1 or 0, hi and 1 or 0, box)) or C.rt_clamp(a.p, lo or 0, hi or 0, lo and 1 or 0, hi and 1 or 0, box))
end
Tensor.clamp = M.clamp
M.clip, Tensor.clip = M.clamp, M.clamp

function M.where(cond, a, b)
  tensor.expect_tensor(cond, "where", 2)
  local ref = is_tensor(a) and a or b
  if not is_tensor(ref) then
    -- where(cond, x, y) with two scalars (recent PyTorch): the result dtype comes from the scalars,
    -- bool for two booleans, int64 for integral numbers, else the default dtype (Lua cannot tell
    -- 1.0 from 1: an integral number counts as an int); ref is a 0-d tensor of that dtype
    if a == nil and b == nil then
      error("where: the single-argument form where(cond) (indices of the true elements) is not supported "
            .. "by ramtorch; pass the two values, where(cond, x, y)", 2)
    end
    local vals = { a, b }
    for i = 1, 2 do -- (not ipairs: a nil value would end it)
      local x = vals[i]
      if type(x) ~= "number" and type(x) ~= "boolean" then
        error(("where: expected a Tensor or a number value, got %s"):format(tensor.describe(x)), 2)
      end
    end
    local dt = core.bool
    for i = 1, 2 do
      local x = vals[i]
      if type(x) == "number" then
        local int = x == math.floor(x) and x > -2 ^ 63 and x < 2 ^ 63
        if not int then dt = core.default_dtype elseif dt == core.bool then dt = core.int64 end
      end
    end
    local v = a
    if type(v) == "boolean" and dt ~= core.bool then v = v and 1 or 0 end
    ref = require("ramtorch.creation").full({}, v, { dtype = dt, device = cond.device })
    a = ref
  end
  local function lift(x)
    if is_tensor(x) then return x end
    if type(x) ~= "number" and type(x) ~= "boolean" then
      error(("where: expected a Tensor or a number value, got %s"):format(tensor.describe(x)), 3)
    end
    -- a number of a higher category than ref's dtype promotes as in PyTorch: where(c, int_t, 2.5) is
    -- float (default dtype), where(c, bool_t, 3) is int64; otherwise the number takes ref's dtype
    local dt = ref.dtype
    if type(x) == "number" and not dt.is_floating_point and (x ~= math.floor(x) or x ~= x) then
      dt = core.default_dtype
    elseif type(x) == "number" and dt == core.bool then
      dt = core.int64
    end
    local ok, r = pcall(require("ramtorch.creation").full, {}, x, { dtype = dt, device = ref.device })
    if not ok then error("where: " .. tostring(r), 3) end -- e.g. a value that overflows ref's dtype
    return r
  end
  return result(oom(C.rt_where(cond.p, lift(a).p, lift(b).p, box)) or C.rt_where(cond.p, lift(a).p, lift(b).p, box))
end
function Tensor.where(cond_self, cond, other) return M.where(cond, cond_self, other) end

-- ---- reductions -------------------------------------------------------------------------------------

local RED = { sum = 0, mean = 1, max = 2, min = 3 }

-- dims: nil (all), a number, or a table of numbers
local function dims_into(dims, name)
  if dims == nil then return 0 end
  if type(dims) == "number" then dims = { dims } end
  if type(dims) ~= "table" then
    error(("%s: expected dim as an integer or a table of integers, got %s"):format(name, tensor.describe(dims)), 3)
  end
  if #dims > 8 then error(("%s: at most 8 dims, got %d"):format(name, #dims), 3) end
  for i = 1, #dims do
    local d = dims[i]
    if type(d) ~= "number" or d ~= math.floor(d) then
      error(("%s: expected integer dims, got %s at position %d"):format(name, tensor.describe(d), i), 3)
    end
    int_buf[i - 1] = d
  end
  return #dims
end

-- PyTorch's keyword arguments as a table, x:sum({dim=, keepdim=, dtype=}): a table with a string key
-- is options, not a list of dims; dtype (sum/mean only) casts the input first, as PyTorch does; any
-- other key is refused (ignoring it would return a silently different result)
local function reduce_opts(opts, name, with_dtype, keepdim)
  local dim, dtype
  for k, v in pairs(opts) do
    if k == "dim" then dim = v
    elseif k == "keepdim" then keepdim = v
    elseif k == "dtype" and with_dtype then dtype = core.dtype(v, 3)
    else -- a number key too: {0, keepdim=true} mixes the two forms
      error(("%s: unknown option '%s' (expected a list of dims, or options {dim=, keepdim=%s})")
            :format(name, tostring(k), with_dtype and ", dtype=" or ""), 3)
    end
  end
  return dim, keepdim, dtype
end

local function is_opts(t)
  for k in pairs(t) do
    if type(k) ~= "number" then return true end
  end
  return false
end

local function reducer(name, op, with_dtype)
  return function(a, dim, keepdim)
    tensor.expect_tensor(a, name, 2)
    if type(dim) == "table" and is_opts(dim) then
      local dtype
      dim, keepdim, dtype = reduce_opts(dim, name, with_dtype, keepdim)
      if dtype then a = a:to(dtype) end
    end
    local n = dims_into(dim, name)
    return result(oom(C.rt_reduce(op, a.p, n, int_buf, keepdim and 1 or 0, box)) or C.rt_reduce(op, a.p, n, int_buf, keepdim and 1 or 0, box))
  end
end
M.sum, M.mean = reducer("sum", RED.sum, true), reducer("mean", RED.mean, true)
Tensor.sum, Tensor.mean = M.sum, M.mean

-- max(t) -> scalar tensor; max(t, dim, keepdim) -> values, indices; max(a, b) -> maximum
local function maxmin(name, op, elementwise)
  return function(a, dim, keepdim)
    tensor.expect_tensor(a, name, 2)
    if is_tensor(dim) then return elementwise(a, dim) end
    if dim ~= nil then tensor.expect_int(dim, name, "dim", 2) end
    if dim == nil then return result(oom(C.rt_reduce(op, a.p, 0, int_buf, 0, box)) or C.rt_reduce(op, a.p, 0, int_buf, 0, box)) end
    check(oom(C.rt_reduce_dim_with_indices(op, a.p, dim, keepdim and 1 or 0, box, box2))
          or C.rt_reduce_dim_with_indices(op, a.p, dim, keepdim and 1 or 0, box, box2))
    return own(box[0]), own(box2[0])
  end
end
M.max = maxmin("max", RED.max, M.maximum)
M.min = maxmin("min", RED.min, M.minimum)
Tensor.max, Tensor.min = M.max, M.min
function M.amax(a, dim, keepdim) return reducer("amax", RED.max)(a, dim, keepdim) end
function M.amin(a, dim, keepdim) return reducer("amin", RED.min)(a, dim, keepdim) end
Tensor.amax, Tensor.amin = M.amax, M.amin

local INT32_MIN = -2147483648
function M.argmax(a, dim, keepdim)
  tensor.expect_tensor(a, "argmax", 2)
  if dim ~= nil then tensor.expect_int(dim, "argmax", "dim", 2) end
  return result(oom(C.rt_argmax(a.p, dim or INT32_MIN, keepdim and 1 or 0, box)) or C.rt_argmax(a.p, dim or INT32_MIN, keepdim and 1 or 0, box))
end
function M.argmin(a, dim, keepdim)
  tensor.expect_tensor(a, "argmin", 2)
  if dim ~= nil then tensor.expect_int(dim, "argmin", "dim", 2) end
  return result(oom(C.rt_argmin(a.p, dim or INT32_MIN, keepdim and 1 or 0, box)) or C.rt_argmin(a.p, dim or INT32_MIN, keepdim and 1 or 0, box))
end
Tensor.argmax, Tensor.argmin = M.argmax, M.argmin

-- ---- linear algebra -----------------------------------------------------------------------------------

function M.matmul(a, b)
  tensor.expect_tensor(a, "matmul", 2)
  tensor.expect_tensor(b, "matmul", 2)
  return result(oom(C.rt_matmul(a.p, b.p, box)) or C.rt_matmul(a.p, b.p, box))
end
Tensor.matmul = M.matmul

-- mm and bmm are matmul restricted as in PyTorch: mm takes two matrices, bmm two 3-d batches of one
-- batch size (no 1-d promotion, no batch broadcasting: a wrong-rank operand is a bug to report).
local function shape_str(t) return "[" .. table.concat(t.shape, ", ") .. "]" end
local function matmul_restricted(name, nd, what, a, b)
  tensor.expect_tensor(a, name, 3)
  tensor.expect_tensor(b, name, 3)
  local sa, sb = a.shape, b.shape
  if #sa ~= nd or #sb ~= nd then
    error(("%s: expected %d-d tensors (%s), got shapes %s and %s"):format(name, nd, what, shape_str(a), shape_str(b)), 3)
  end
  if nd == 3 and sa[1] ~= sb[1] then
    error(("%s: batch sizes %d and %d differ (shapes %s and %s; bmm does not broadcast, matmul does)")
          :format(name, sa[1], sb[1], shape_str(a), shape_str(b)), 3)
  end
  if sa[nd] ~= sb[nd - 1] then
    error(("%s: shapes %s and %s cannot be multiplied (inner dimensions %d and %d differ)")
          :format(name, shape_str(a), shape_str(b), sa[nd], sb[nd - 1]), 3)
  end
  if a.dtype ~= b.dtype then -- checked here so that the message names mm / bmm, not matmul
    error(("%s: expected both operands of one dtype, got %s and %s"):format(name, tostring(a.dtype), tostring(b.dtype)), 3)
  end
  return result(oom(C.rt_matmul(a.p, b.p, box)) or C.rt_matmul(a.p, b.p, box))
end
-- (not tail calls: the error levels count the wrapper's frame)
function M.mm(a, b)
  local r = matmul_restricted("mm", 2, "matrices", a, b)
  return r
end
function M.bmm(a, b)
  local r = matmul_restricted("bmm", 3, "batches of matrices", a, b)
  return r
end
Tensor.mm, Tensor.bmm = M.mm, M.bmm

-- ---- in-place fills ---------------------------------------------------------------------------------------

function Tensor.fill_(t, v)
  if type(v) == "boolean" then v = v and 1 or 0 end
  if type(v) ~= "number" then error(("fill_: expected a number, got %s"):format(type(v)), 2) end
  check(C.rt_fill_(t.p, v))
  return t
end
function Tensor.zero_(t) return Tensor.fill_(t, 0) end
function Tensor.copy_(t, src)
  tensor.expect_tensor(src, "copy_", 2)
  -- PyTorch records the copy (CopyBackwards); here it is not recorded, so src's gradient would be lost
  if src.requires_grad and C.rt_grad_enabled() ~= 0 then
    error("copy_: the source requires grad and in-place copies are not recorded by autograd, so its gradient "
          .. "would be lost; copy src:detach() (or under no_grad), or use the out-of-place src:clone()", 2)
  end
  -- the C side reports a shape mismatch as "broadcast: ..."; say which call it was
  if C.rt_copy_(t.p, src.p) ~= 0 then error("copy_: " .. ffi.string(C.rt_last_error()), 2) end
  return t
end
function Tensor.uniform_(t, lo, hi)
  check(C.rt_uniform_(t.p, lo or 0, hi or 1))
  return t
end
function Tensor.normal_(t, mean, std)
  check(C.rt_normal_(t.p, mean or 0, std or 1))
  return t
end

-- ---- gathers along a dim (runtime/ops_index.c) ---------------------------------------------------------

-- indices: a 1-d int64/int32 Tensor, or a Lua table of 0-based integers (made on t's device).
local function index_tensor(t, idx, what, level)
  what, level = what or "index_tensor", level or 1
  tensor.expect_tensor(t, what, level + 1)
  if is_tensor(idx) then return idx end
  if type(idx) ~= "table" then
    error(("%s: expected indices as a Tensor or a table of integers, got %s"):format(what, type(idx)), level + 1)
  end
  local n = #idx
  local buf = ffi.new("int64_t[?]", n > 0 and n or 1)
  for i = 1, n do
    local v = idx[i]
    if type(v) ~= "number" or v ~= math.floor(v) then
      error(("%s: expected integer indices, got %s at position %d"):format(what, tostring(v), i), level + 1)
    end
    buf[i - 1] = v
  end
  core.shape_buf[0] = n
  return result(oom(C.rt_from_host(1, core.shape_buf, 4, meta(t).device, buf, 4, box)) or C.rt_from_host(1, core.shape_buf, 4, meta(t).device, buf, 4, box))
end
M.index_tensor = index_tensor

-- torch.index_select(t, dim, indices) / t:index_select(dim, indices): rows of t along dim (0-based
-- indices), differentiable with respect to t.
function M.index_select(t, dim, indices)
  tensor.expect_tensor(t, "index_select", 2)
  local idx = index_tensor(t, indices, "index_select", 2)
  return result(oom(C.rt_index_select(t.p, dim, idx.p, box)) or C.rt_index_select(t.p, dim, idx.p, box))
end
Tensor.index_select = M.index_select

-- t:index_add_(dim, indices, src): t[.., indices[j], ..] += src[.., j, ..] in place (no autograd).
function Tensor.index_add_(t, dim, indices, src)
  tensor.expect_tensor(src, "index_add_", 2)
  local idx = index_tensor(t, indices, "index_add_", 2)
  check(C.rt_index_add_(t.p, dim, idx.p, src.p))
  return t
end

-- autocast: PyTorch's cast policies on the functions above (ramtorch/autocast.lua; one test when off)
require("ramtorch.autocast").install(M, Tensor, mt)

return M
