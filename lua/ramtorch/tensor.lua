-- ramtorch/tensor.lua: the Tensor type. An rt_tensor* handle with methods through ffi.metatype (set
-- once), operators (a + b, a * 2, -a, a ^ 2, #t, t[i]), and properties read straight from the C
-- metadata struct without a call. Dims and indices given to methods are 0-based like PyTorch (so
-- PyTorch code ports line by line); the Lua sequence protocol is 1-based: #t is the size of dim 0 and
-- t[1] .. t[#t] are its slices.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local ffi, C = rffi.ffi, rffi.C

local box, box2 = core.box, core.box2
local shape_buf, int_buf = core.shape_buf, core.int_buf
local result, check, raise, own = core.result, core.check, core.raise, core.own
local oom = core.oom
local meta_ptr = ffi.typeof("const rt_tensor_meta*")

local Tensor = {}   -- methods
local props = {}    -- computed properties: t.shape, t.dtype, ...
local M = { Tensor = Tensor, props = props }

local function meta(t) return ffi.cast(meta_ptr, t.p) end
M.meta = meta

local Ref = core.Ref
-- A freed handle (free() cleared its pointer) is not a tensor any more: the callers that dispatch on
-- is_tensor would read its metadata through NULL and crash the process.
local function is_tensor(x) return type(x) == "cdata" and ffi.istype(Ref, x) and x.p ~= nil end
M.is_tensor = is_tensor

local function expect_tensor(x, what, level)
  if not is_tensor(x) then
    if type(x) == "cdata" and ffi.istype(Ref, x) then
      error(("%s: the Tensor was freed (free()) and cannot be used"):format(what), (level or 1) + 1)
    end
    error(("%s: expected a Tensor, got %s"):format(what, type(x) == "cdata" and tostring(ffi.typeof(x)) or type(x)),
          (level or 1) + 1)
  end
  return x
end
M.expect_tensor = expect_tensor

-- "3.5", "a string", "a table", "nil": how an unexpected argument is named in messages
local function describe(x)
  local tx = type(x)
  if tx == "number" or tx == "boolean" or tx == "nil" then return tostring(x) end
  if is_tensor(x) then return "a Tensor" end
  return "a " .. (tx == "cdata" and tostring(ffi.typeof(x)) or tx)
end
M.describe = describe

local function expect_int(x, what, name, level)
  if type(x) ~= "number" or x ~= math.floor(x) then
    error(("%s: expected an integer %s, got %s"):format(what, name, describe(x)), (level or 1) + 1)
  end
  return x
end
M.expect_int = expect_int

-- ---- properties ------------------------------------------------------------------------------------

local function shape_of(t)
  local m = meta(t)
  local s = {}
  for i = 0, m.ndim - 1 do s[i + 1] = tonumber(m.shape[i]) end
  return s
end
M.shape_of = shape_of

function props.shape(t) return shape_of(t) end
function props.ndim(t) return meta(t).ndim end
function props.dtype(t) return core.dtypes_by_code[meta(t).dtype] end
function props.device(t) return core.device_name(meta(t).device) end
function props.requires_grad(t) return meta(t).requires_grad ~= 0 end
function props.is_leaf(t) return meta(t).is_leaf ~= 0 end
function props.grad(t)
  check(C.rt_tensor_grad(t.p, box))
  return own(box[0])
end
function props.grad_fn(t)
  local p = C.rt_tensor_grad_fn_name(t.p)
  return p ~= nil and ffi.string(p) or nil
end
function props.data(t) return t:detach() end
function props.T(t)
  local n = meta(t).ndim
  if n < 2 then return t end
  local dims = {}
  for i = 1, n do dims[i] = n - i end
  return t:permute(dims)
end
function props.is_cuda(t) return meta(t).device >= 0 end

-- ---- small accessors -------------------------------------------------------------------------------

function Tensor.size(t, dim)
  local m = meta(t)
  if dim == nil then return shape_of(t) end
  expect_int(dim, "size", "dim", 2)
  local d = dim < 0 and dim + m.ndim or dim
  if d < 0 or d >= m.ndim then
    error(("size: dimension %d out of range for a tensor of %d dims"):format(dim, m.ndim), 2)
  end
  return tonumber(m.shape[d])
end
function Tensor.dim(t) return meta(t).ndim end
function Tensor.numel(t) return tonumber(meta(t).numel) end
function Tensor.nelement(t) return tonumber(meta(t).numel) end
function Tensor.stride(t, dim)
  local m = meta(t)
  if dim then
    expect_int(dim, "stride", "dim", 2)
    local d = dim < 0 and dim + m.ndim or dim
    if d < 0 or d >= m.ndim then
      error(("stride: dimension %d out of range for a tensor of %d dims"):format(dim, m.ndim), 2)
    end
    return tonumber(m.strides[d])
  end
  local s = {}
  for i = 0, m.ndim - 1 do s[i + 1] = tonumber(m.strides[i]) end
  return s
end
function Tensor.is_contiguous(t) return C.rt_tensor_is_contiguous(t.p) ~= 0 end
function Tensor.is_floating_point(t) return props.dtype(t).is_floating_point end
function Tensor.data_ptr(t) return C.rt_tensor_data_ptr(t.p) end
function Tensor.element_size(t) return props.dtype(t).itemsize end

-- Lua numbers are doubles: an int64 value beyond +-2^53 comes back as exact int64_t cdata (e.g.
-- 9007199254740993LL) rather than silently rounded; smaller ones stay plain numbers.
local EXACT = 2 ^ 53
local i64_box = ffi.new("int64_t[1]")
local function exact_int(v) -- v: int64_t cdata
  if v > EXACT or v < -EXACT then return v end
  return tonumber(v)
end

function Tensor.item(t)
  local d = core.double_box
  check(C.rt_item(t.p, d))
  local v = d[0]
  local dt = meta(t).dtype
  if dt == 7 then return v ~= 0 end
  if dt == 4 and (v >= EXACT or v <= -EXACT) then -- the double may be rounded: read the int64 itself
    check(C.rt_to_host(t.p, i64_box, 4))
    return exact_int(i64_box[0]) -- reading an int64_t element yields a fresh boxed value
  end
  return v
end

-- Free the C tensor now instead of at the next garbage collection. Safe to call twice.
function Tensor.free(t)
  ffi.gc(t, nil)
  C.rt_tensor_ref_release(t)
end

-- ---- shape-changing views ---------------------------------------------------------------------------

-- Accept (2, 3), ({2, 3}); resolve one -1 against numel.
local function view_shape(t, what, ...)
  local shape = ...
  if type(shape) ~= "table" then shape = { ... } end
  local n, known, infer = #shape, 1, nil
  for i = 1, n do
    local d = shape[i]
    expect_int(d, what, "size", 3)
    if d == -1 then
      if infer then error(what .. ": only one dimension can be inferred (-1)", 3) end
      infer = i
    else
      known = known * d
    end
  end
  if infer then
    local numel = tonumber(meta(t).numel)
    if known == 0 or numel % known ~= 0 then
      error(("%s: shape [%s] is invalid for input of %d elements"):format(what, table.concat(shape, ", "), numel), 3)
    end
    shape = { unpack(shape) }
    shape[infer] = numel / known
  end
  return core.shape_into(shape_buf, shape, 3, what)
end

function Tensor.view(t, ...)
  local n = view_shape(t, "view", ...)
  return result(oom(C.rt_view(t.p, n, shape_buf, box)) or C.rt_view(t.p, n, shape_buf, box))
end
function Tensor.reshape(t, ...)
  local n = view_shape(t, "reshape", ...)
  return result(oom(C.rt_reshape(t.p, n, shape_buf, box)) or C.rt_reshape(t.p, n, shape_buf, box))
end
-- other's metadata is read through a pointer cast: anything but a live Tensor would read garbage
function Tensor.view_as(t, other) return t:view(shape_of(expect_tensor(other, "view_as", 2))) end
function Tensor.reshape_as(t, other) return t:reshape(shape_of(expect_tensor(other, "reshape_as", 2))) end
function Tensor.flatten(t, start_dim, end_dim)
  local s = shape_of(t)
  local n = #s
  start_dim = expect_int(start_dim or 0, "flatten", "start_dim", 2)
  end_dim = expect_int(end_dim or -1, "flatten", "end_dim", 2)
  if n == 0 then -- a scalar accepts dims 0 and -1, as in PyTorch
    if start_dim < -1 or start_dim > 0 or end_dim < -1 or end_dim > 0 then
      error("flatten: dimension out of range for a 0-dim tensor (expected -1 to 0)", 2)
    end
    return t:reshape(1)
  end
  if start_dim < 0 then start_dim = start_dim + n end
  if end_dim < 0 then end_dim = end_dim + n end
  if start_dim < 0 or start_dim >= n or end_dim < 0 or end_dim >= n then
    error(("flatten: dimension out of range for a tensor of %d dims (expected -%d to %d)"):format(n, n, n - 1), 2)
  end
  if start_dim > end_dim then error("flatten: start_dim cannot come after end_dim", 2) end
  local out, p = {}, 1
  for i = 1, start_dim do out[#out + 1] = s[i] end
  for i = start_dim + 1, end_dim + 1 do p = p * s[i] end
  out[#out + 1] = p
  for i = end_dim + 2, n do out[#out + 1] = s[i] end
  return t:reshape(out)
end

function Tensor.permute(t, ...)
  local dims = ...
  if type(dims) ~= "table" then dims = { ... } end
  for i = 1, #dims do int_buf[i - 1] = expect_int(dims[i], "permute", "dim", 2) end
  return result(oom(C.rt_permute(t.p, #dims, int_buf, box)) or C.rt_permute(t.p, #dims, int_buf, box))
end
function Tensor.transpose(t, d0, d1)
  expect_int(d0, "transpose", "dim0", 2)
  expect_int(d1, "transpose", "dim1", 2)
  return result(oom(C.rt_transpose(t.p, d0, d1, box)) or C.rt_transpose(t.p, d0, d1, box))
end
function Tensor.t(t)
  if meta(t).ndim < 2 then return t end
  if meta(t).ndim > 2 then
    error(("t: expects a tensor with <= 2 dimensions, got %d (use transpose)"):format(meta(t).ndim), 2)
  end
  return result(oom(C.rt_transpose(t.p, 0, 1, box)) or C.rt_transpose(t.p, 0, 1, box))
end
function Tensor.narrow(t, dim, start, length)
  expect_int(dim, "narrow", "dim", 2)
  expect_int(start, "narrow", "start", 2)
  expect_int(length, "narrow", "length", 2)
  return result(oom(C.rt_narrow(t.p, dim, start, length, box)) or C.rt_narrow(t.p, dim, start, length, box))
end
function Tensor.select(t, dim, index)
  expect_int(dim, "select", "dim", 2)
  expect_int(index, "select", "index", 2)
  return result(oom(C.rt_select(t.p, dim, index, box)) or C.rt_select(t.p, dim, index, box))
end
function Tensor.expand(t, ...)
  local shape = ...
  if type(shape) ~= "table" then shape = { ... } end
  local n = core.shape_into(shape_buf, shape, 2, "expand")
  local rc = oom(C.rt_expand(t.p, n, shape_buf, box)) or C.rt_expand(t.p, n, shape_buf, box)
  -- the C side reports a negative size as "view: ..."; say which call it was
  if rc ~= 0 then error("expand: " .. ffi.string(C.rt_last_error()), 2) end
  return result(rc)
end
function Tensor.expand_as(t, other) return t:expand(shape_of(expect_tensor(other, "expand_as", 2))) end
function Tensor.squeeze(t, dim)
  if dim ~= nil then
    expect_int(dim, "squeeze", "dim", 2)
    -- the C call reads a dim below -ndim as "every size-1 dim": an explicit one must be in range
    local n = math.max(meta(t).ndim, 1)
    if dim < -n or dim >= n then
      error(("squeeze: dimension %d out of range for a tensor of %d dims (expected %d to %d)")
            :format(dim, meta(t).ndim, -n, n - 1), 2)
    end
  end
  return result(oom(C.rt_squeeze(t.p, dim or -1000, box)) or C.rt_squeeze(t.p, dim or -1000, box))
end
function Tensor.unsqueeze(t, dim)
  expect_int(dim, "unsqueeze", "dim", 2)
  return result(oom(C.rt_unsqueeze(t.p, dim, box)) or C.rt_unsqueeze(t.p, dim, box))
end
function Tensor.contiguous(t) return result(oom(C.rt_contiguous(t.p, box)) or C.rt_contiguous(t.p, box)) end
function Tensor.clone(t) return result(oom(C.rt_clone(t.p, box)) or C.rt_clone(t.p, box)) end
function Tensor.detach(t) return result(oom(C.rt_detach(t.p, box)) or C.rt_detach(t.p, box)) end

-- ---- dtype and device ---------------------------------------------------------------------------------

-- t:to("cuda"), t:to(torch.bfloat16), t:to("cuda", torch.bfloat16), t:to({device=, dtype=}), t:to(other)
-- non_blocking (t:to("cuda", true) or {non_blocking=true}): with a pinned host side the copy is only
-- enqueued on the current stream, as in PyTorch.
function Tensor.to(t, a, b, c)
  local dev, dt, nb
  local function take(x)
    if x == nil then return end
    if is_tensor(x) then
      dev, dt = props.device(x), props.dtype(x)
    elseif core.is_dtype(x) then
      dt = x
    elseif type(x) == "boolean" then
      nb = x
    elseif type(x) == "table" and not x.code then
      dev, dt = x.device or dev, x.dtype and core.dtype(x.dtype, 3) or dt
      if x.non_blocking ~= nil then nb = x.non_blocking and true or false end
    elseif pcall(core.device_code, x) then
      dev = x
    else
      dt = core.dtype(x, 3)
    end
  end
  take(a)
  take(b)
  take(c)
  local r = t
  if dt and dt.code ~= meta(r).dtype then r = result(oom(C.rt_to_dtype(r.p, dt.code, box)) or C.rt_to_dtype(r.p, dt.code, box)) end
  if dev ~= nil then
    local code = core.device_code(dev, 2)
    if code ~= meta(r).device then r = result(oom(C.rt_to_device_ex(r.p, code, nb and 1 or 0, box)) or C.rt_to_device_ex(r.p, code, nb and 1 or 0, box)) end
  end
  return r
end
function Tensor.type_as(t, other) return t:to(props.dtype(expect_tensor(other, "type_as", 2))) end
function Tensor.float(t) return t:to(core.float32) end
function Tensor.double(t) return t:to(core.float64) end
function Tensor.half(t) return t:to(core.float16) end
function Tensor.bfloat16(t) return t:to(core.bfloat16) end
function Tensor.long(t) return t:to(core.int64) end
function Tensor.int(t) return t:to(core.int32) end
function Tensor.bool(t) return t:to(core.bool) end
function Tensor.byte(t) return t:to(core.uint8) end
function Tensor.cpu(t) return t:to("cpu") end
function Tensor.cuda(t, i, non_blocking)
  if type(i) == "boolean" then i, non_blocking = nil, i end
  if type(i) ~= "nil" and (type(i) ~= "number" or i < 0 or i ~= math.floor(i)) then
    error(("cuda: expected a device ordinal (a non-negative integer), got %s"):format(describe(i)), 2)
  end
  return t:to(i and ("cuda:" .. i) or "cuda", non_blocking or false)
end
-- A page-locked copy of a cpu tensor (copies to and from the GPU can then be asynchronous).
function Tensor.pin_memory(t) return result(oom(C.rt_pin_memory(t.p, box)) or C.rt_pin_memory(t.p, box)) end
function Tensor.is_pinned(t) return meta(t).memkind == 1 end

-- ---- reading values out ---------------------------------------------------------------------------------

-- Nested Lua tables of numbers (booleans for bool tensors; int64_t cdata for int64 values beyond
-- +-2^53, see item), row-major.
function Tensor.totable(t)
  local m = meta(t)
  local n = tonumber(m.numel)
  local dt = m.dtype
  local is_int = dt == 4 or dt == 5 or dt == 6
  local buf = ffi.new(is_int and "int64_t[?]" or "double[?]", math.max(n, 1))
  check(C.rt_to_host(t.p, buf, is_int and 4 or 3))
  local is_bool = dt == 7
  local shape = shape_of(t)
  local conv = dt == 4 and exact_int or tonumber
  if #shape == 0 then
    local v = conv(buf[0])
    if is_bool then return v ~= 0 end
    return v
  end
  local pos = 0
  local function build(d)
    local out = {}
    if d == #shape then
      for i = 1, shape[d] do
        local v = conv(buf[pos])
        if is_bool then v = v ~= 0 end
        out[i] = v
        pos = pos + 1
      end
    else
      for i = 1, shape[d] do out[i] = build(d + 1) end
    end
    return out
  end
  return build(1)
end
Tensor.tolist = Tensor.totable

-- ---- autograd ----------------------------------------------------------------------------------------------

function Tensor.requires_grad_(t, flag)
  if flag == nil then flag = true end
  check(C.rt_set_requires_grad(t.p, flag and 1 or 0))
  return t
end

function Tensor.retain_grad(t)
  error("retain_grad: not supported; read gradients of leaves (parameters) or use a custom Function", 2)
end

-- backward(gradient?, retain_graph?) or backward({gradient=, retain_graph=})
function Tensor.backward(t, grad, retain_graph)
  if type(grad) == "table" and not is_tensor(grad) then
    grad, retain_graph = grad.gradient, grad.retain_graph
  end
  -- type(): a NULL cdata compares equal to nil but is no gradient
  if type(grad) ~= "nil" then expect_tensor(grad, "backward", 2) end
  require("ramtorch.autograd").run_backward(t, grad, retain_graph)
end

-- ---- operators -------------------------------------------------------------------------------------------

local mt = {}
M.mt = mt

function mt.__index(t, k)
  if t.p == nil and k ~= "free" then -- free() is safe twice; anything else would read through NULL
    error(("%s: the Tensor was freed (free()) and cannot be used"):format(tostring(k)), 2)
  end
  local m = Tensor[k]
  if m ~= nil then return m end
  local p = props[k]
  if p ~= nil then return p(t) end
  if type(k) == "number" then
    expect_int(k, "index", "index", 2)
    local n = tonumber(meta(t).ndim > 0 and meta(t).shape[0] or 0)
    if meta(t).ndim == 0 then error("index: a 0-dim tensor cannot be indexed (use item())", 2) end
    local i = k > 0 and k - 1 or (k < 0 and n + k or -1)
    if i < 0 or i >= n then
      error(("index %d is out of range for dimension 0 of size %d (valid: 1..%d or -%d..-1)"):format(k, n, n, n), 2)
    end
    return result(oom(C.rt_select(t.p, 0, i, box)) or C.rt_select(t.p, 0, i, box))
  end
  return nil
end

function mt.__newindex(t, k, v)
  if t.p == nil then
    error(("%s: the Tensor was freed (free()) and cannot be used"):format(tostring(k)), 2)
  end
  if k == "requires_grad" then
    check(C.rt_set_requires_grad(t.p, v and 1 or 0))
  elseif k == "grad" then
    if v ~= nil then expect_tensor(v, "grad", 2) end
    check(C.rt_tensor_set_grad(t.p, v and v.p or nil))
  elseif type(k) == "number" then
    local dst = mt.__index(t, k)
    if is_tensor(v) then dst:copy_(v) else dst:fill_(v) end
  else
    error(("cannot set field '%s' of a Tensor"):format(tostring(k)), 2)
  end
end

function mt.__len(t)
  if t.p == nil then error("len: the Tensor was freed (free()) and cannot be used", 2) end
  local m = meta(t)
  if m.ndim == 0 then error("len() of a 0-dim tensor", 2) end
  return tonumber(m.shape[0])
end

function mt.__tostring(t)
  if t.p == nil then return "Tensor(freed)" end
  return require("ramtorch.print").format(t)
end

M.Tensor_mt = mt

-- Install: ops modules add methods to Tensor (and arithmetic metamethods) before this runs.
function M.install()
  ffi.metatype("rt_tensor_ref", mt)
end

return M
