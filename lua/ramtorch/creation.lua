-- ramtorch/creation.lua: tensor factories (empty, zeros, ones, full, arange, linspace, rand, randn,
-- randint, tensor from nested Lua tables, *_like) and the seeded generator.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local tensor = require("ramtorch.tensor")
local ffi, C = rffi.ffi, rffi.C

local box, shape_buf = core.box, core.shape_buf
local result = core.result
local oom = core.oom
local M = {}

local function finish(t, opts)
  if opts.requires_grad then t:requires_grad_(true) end
  return t
end

-- LuaJIT's int64_t / uint64_t cdata (9007199254740993LL) are how Lua spells integers beyond 2^53
-- (totable and item give them back for such int64 elements); the factories take them as int64 values.
local int64_t, uint64_t = ffi.typeof("int64_t"), ffi.typeof("uint64_t")
local function is_i64_cdata(x)
  return type(x) == "cdata" and (ffi.istype(int64_t, x) or ffi.istype(uint64_t, x))
end
-- x (int64 cdata) as int64_t; nil for a uint64 beyond int64's range
local function to_i64(x)
  if ffi.istype(uint64_t, x) and x > 9223372036854775807ULL then return nil end
  return int64_t(x)
end
-- A Lua number that torch.tensor would store as int64 (integral and within int64's range). Lua cannot
-- tell 3 from 3.0, so every such number counts as an integer, as PyTorch counts Python ints.
local function is_int_number(x)
  return x == math.floor(x) and x >= -2 ^ 63 and x < 2 ^ 63
end

-- PyTorch's promotion of two dtypes (bool < uint8 < int32 < int64 < float16/bfloat16 < float32 < float64;
-- float16 with bfloat16 gives float32), on dtype objects; the C twin is rt_promote_types.
local promo_rank = { bool = 0, uint8 = 1, int32 = 2, int64 = 3, float16 = 4, bfloat16 = 4, float32 = 5, float64 = 6 }
local function promote(a, b)
  if a == b then return a end
  if promo_rank[a.name] == 4 and promo_rank[b.name] == 4 then return core.float32 end
  return promo_rank[a.name] >= promo_rank[b.name] and a or b
end

local function factory(name, fill)
  return function(...)
    local shape, opts = core.shape_and_opts(...)
    local n = core.shape_into(shape_buf, shape, 2, name)
    for i = 1, n do
      -- rt_full/rt_rand report a negative size as "empty: ..."; name the factory called
      if shape_buf[i - 1] < 0 then
        error(("%s: negative dimension in shape [%s]"):format(name, table.concat(shape, ", ")), 2)
      end
    end
    local dt = core.dtype(opts.dtype, 2)
    local dev = core.device_code(opts.device, 2)
    local t = fill(n, dt, dev, opts)
    return finish(t, opts)
  end
end

M.empty = factory("empty", function(n, dt, dev) return result(oom(C.rt_empty(n, shape_buf, dt.code, dev, box)) or C.rt_empty(n, shape_buf, dt.code, dev, box)) end)
M.zeros = factory("zeros", function(n, dt, dev) return result(oom(C.rt_full(n, shape_buf, 0, dt.code, dev, box)) or C.rt_full(n, shape_buf, 0, dt.code, dev, box)) end)
M.ones = factory("ones", function(n, dt, dev) return result(oom(C.rt_full(n, shape_buf, 1, dt.code, dev, box)) or C.rt_full(n, shape_buf, 1, dt.code, dev, box)) end)
M.rand = factory("rand", function(n, dt, dev) return result(oom(C.rt_rand(n, shape_buf, dt.code, dev, box)) or C.rt_rand(n, shape_buf, dt.code, dev, box)) end)
M.randn = factory("randn", function(n, dt, dev) return result(oom(C.rt_randn(n, shape_buf, dt.code, dev, box)) or C.rt_randn(n, shape_buf, dt.code, dev, box)) end)

-- full(shape, value, opts)
-- Without opts.dtype the dtype is inferred from value as PyTorch does (bool -> bool, int -> int64, float
-- -> the default dtype), with torch.tensor's reading of Lua numbers: an integral number within int64
-- (3, also written 3.0) gives int64; 2.5, inf, nan and 2^63 the default dtype; int64 cdata int64.
function M.full(shape, value, opts)
  opts = opts or {}
  if type(shape) == "number" then shape = { shape } end
  local inferred
  if type(value) == "boolean" then
    value = value and 1 or 0
    inferred = core.bool
  elseif is_i64_cdata(value) then
    local v = to_i64(value)
    if v == nil then error(("full: uint64 fill value %s is beyond the int64 range"):format(tostring(value)), 2) end
    -- exact beyond 2^53 (rt_full takes a double): a 0-d int64 tensor, expanded and copied
    local dt = opts.dtype and core.dtype(opts.dtype, 2) or core.int64
    local n = core.shape_into(shape_buf, shape, 2, "full")
    local dims = {}
    for i = 1, n do dims[i] = tonumber(shape_buf[i - 1]) end
    local t = M.tensor(v, { dtype = dt, device = opts.device })
    return finish(t:expand(dims):contiguous(), opts)
  elseif type(value) == "number" then
    inferred = is_int_number(value) and core.int64 or nil
  end
  if type(value) ~= "number" then error(("full: expected a number fill value, got %s"):format(type(value)), 2) end
  local n = core.shape_into(shape_buf, shape, 2, "full")
  local dt = core.dtype(opts.dtype or inferred, 2)
  return finish(result(oom(C.rt_full(n, shape_buf, value, dt.code, core.device_code(opts.device, 2), box)) or C.rt_full(n, shape_buf, value, dt.code, core.device_code(opts.device, 2), box)), opts)
end

-- randint(low?, high, shape, opts) as in PyTorch: randint(10, {3}) or randint(2, 10, {3})
function M.randint(a, b, c, d)
  local low, high, shape, opts
  if type(b) == "table" then low, high, shape, opts = 0, a, b, c else low, high, shape, opts = a, b, c, d end
  if type(opts) ~= "nil" and type(opts) ~= "table" then
    error(("randint: expected an options table, got %s"):format(tensor.describe(opts)), 2)
  end
  opts = opts or {}
  if type(shape) ~= "table" then error("randint: expected a shape table, e.g. randint(10, {3, 4})", 2) end
  local n = core.shape_into(shape_buf, shape, 2, "randint")
  local dt = opts.dtype and core.dtype(opts.dtype, 2) or core.int64
  return result(oom(C.rt_randint(low, high, n, shape_buf, dt.code, core.device_code(opts.device, 2), box)) or C.rt_randint(low, high, n, shape_buf, dt.code, core.device_code(opts.device, 2), box))
end

-- arange(end), arange(start, end), arange(start, end, step), each with an optional opts table
function M.arange(a, b, c, d)
  local args = { a, b, c, d }
  local opts = {}
  if type(args[#args]) == "table" then opts = table.remove(args) end
  local start, stop, step
  if #args == 1 then start, stop, step = 0, args[1], 1
  elseif #args == 2 then start, stop, step = args[1], args[2], 1
  else start, stop, step = args[1], args[2], args[3] end
  -- int64 cdata bounds (9007199254740993LL): an exact int64 arange, unless a bound is not integral
  local any_cdata, all_int = false, true
  for _, v in ipairs({ { start, "start" }, { stop, "end" }, { step, "step" } }) do
    if is_i64_cdata(v[1]) then
      if to_i64(v[1]) == nil then
        error(("arange: %s %s is beyond the int64 range"):format(v[2], tostring(v[1])), 2)
      end
      any_cdata = true
    elseif type(v[1]) ~= "number" then
      error(("arange: expected a number for %s, got %s"):format(v[2], tensor.describe(v[1])), 2)
    elseif not is_int_number(v[1]) then
      all_int = false
    end
  end
  if any_cdata and not all_int then -- arange(0LL, 2.5): a float arange, as in PyTorch
    if is_i64_cdata(start) then start = tonumber(start) end
    if is_i64_cdata(stop) then stop = tonumber(stop) end
    if is_i64_cdata(step) then step = tonumber(step) end
    any_cdata = false
  end
  if any_cdata then
    local dt = opts.dtype and core.dtype(opts.dtype, 2) or core.int64
    local a, b, s = int64_t(start), int64_t(stop), int64_t(step)
    local dev = core.device_code(opts.device, 2)
    return finish(result(oom(C.rt_arange_i64(a, b, s, dt.code, dev, box)) or C.rt_arange_i64(a, b, s, dt.code, dev, box)), opts)
  end
  for _, v in ipairs({ { start, "start" }, { stop, "end" }, { step, "step" } }) do
    if type(v[1]) ~= "number" then
      error(("arange: expected a number for %s, got %s"):format(v[2], tensor.describe(v[1])), 2)
    end
    if v[1] ~= v[1] or v[1] == math.huge or v[1] == -math.huge then
      error(("arange: %s must be finite, got %s"):format(v[2], tostring(v[1])), 2)
    end
  end
  -- the C side computes the length in int64; a length beyond it would wrap to a negative size
  if step ~= 0 and math.abs((stop - start) / step) >= 2 ^ 62 then
    error(("arange: too many elements: start %s, end %s, step %s"):format(start, stop, step), 2)
  end
  local integral = start == math.floor(start) and stop == math.floor(stop) and step == math.floor(step)
  local dt = opts.dtype and core.dtype(opts.dtype, 2) or (integral and core.int64 or core.default_dtype)
  if dt == core.int64 and all_int then
    -- in int64, not doubles: start + i * step rounds beyond 2^53 (PyTorch computes an integral
    -- arange in int64)
    local a, b, s = int64_t(start), int64_t(stop), int64_t(step)
    local dev = core.device_code(opts.device, 2)
    return finish(result(oom(C.rt_arange_i64(a, b, s, dt.code, dev, box)) or C.rt_arange_i64(a, b, s, dt.code, dev, box)), opts)
  end
  return finish(result(oom(C.rt_arange(start, stop, step, dt.code, core.device_code(opts.device, 2), box)) or C.rt_arange(start, stop, step, dt.code, core.device_code(opts.device, 2), box)), opts)
end

function M.linspace(start, stop, steps, opts)
  if type(start) ~= "number" or type(stop) ~= "number" then
    error(("linspace: expected numbers for start and end, got %s and %s"):format(tensor.describe(start),
                                                                                tensor.describe(stop)), 2)
  end
  opts = opts or {}
  if type(steps) ~= "number" or steps < 0 or steps ~= math.floor(steps) then
    error(("linspace: expected a non-negative integer number of steps, got %s"):format(tostring(steps)), 2)
  end
  local buf = ffi.new("double[?]", math.max(steps, 1))
  -- PyTorch's formula: the first half from start, the second from the end, so both endpoints are exact
  -- (start + (end - start) * i / (steps - 1) misses the end by an ulp for about half of the inputs)
  local step = steps > 1 and (stop - start) / (steps - 1) or 0
  local halfway = math.floor(steps / 2)
  for i = 0, steps - 1 do
    buf[i] = (i < halfway or steps == 1) and start + step * i or stop - step * (steps - 1 - i)
  end
  shape_buf[0] = steps
  local dt = core.dtype(opts.dtype, 2)
  return finish(result(oom(C.rt_from_host(1, shape_buf, dt.code, core.device_code(opts.device, 2), buf, 3, box)) or C.rt_from_host(1, shape_buf, dt.code, core.device_code(opts.device, 2), buf, 3, box)), opts)
end

-- tensor(data, opts): data is a number, a boolean, an int64 cdata, or nested tables of them. Integers
-- (integral numbers within int64, int64_t / uint64_t cdata, taken exactly) give int64, any non-integer
-- gives the default float dtype, booleans give bool (as torch.tensor does).
function M.tensor(data, opts)
  if type(opts) ~= "nil" and type(opts) ~= "table" then -- type(): NULL == nil
    error(("tensor: expected an options table, got %s"):format(tensor.describe(opts)), 2)
  end
  opts = opts or {}
  if tensor.is_tensor(data) then
    local t = data:detach():clone()
    if opts.dtype or opts.device then t = t:to(opts) end
    return finish(t, opts)
  end
  local shape, flat = {}, {}
  local all_int, all_bool, any_bool, any_i64 = true, true, false, false
  local leaves = 0 -- depth of the scalars (0: not seen yet); a scalar and a table at one depth is ragged
  local tdt -- the promoted dtype of 0-d tensor elements (nil: none), as PyTorch promotes them
  local s_bool, s_int, s_float = false, false, false -- the kinds of plain Lua scalars seen
  local path = {} -- the 1-based index of the element being walked, for error messages
  local function where() return "[" .. table.concat(path, "][") .. "]" end
  -- errors are raised from M.tensor (level 2): the recursion depth would misplace a level given here
  local function fail(msg) error({ tensor_error = msg }) end
  local function scalar(x, d)
    if leaves == 0 then leaves = d end
    if d ~= leaves or (shape[d] ~= nil) then
      fail(("tensor: ragged nested table: expected a table of length %d at %s, got a %s"):format(
        shape[d] or 0, where(), tensor.is_tensor(x) and "tensor" or type(x)))
    end
  end
  local function walk(x, d)
    local tx = type(x)
    if tx == "table" then
      if leaves ~= 0 and d >= leaves then
        fail(("tensor: ragged nested table: expected a scalar at %s, got a table"):format(where()))
      end
      local n = #x
      -- #x of a table with holes is any border: {1, nil, 3} would silently become tensor([1])
      local m = table.maxn(x)
      if m ~= n then fail(("tensor: table at %s has a hole (nil) before index %d"):format(where(), m)) end
      if shape[d] == nil then shape[d] = n
      elseif shape[d] ~= n then
        fail(("tensor: ragged nested table: expected length %d at dim %d, got %d at %s"):format(
          shape[d], d - 1, n, where()))
      end
      for i = 1, n do
        path[d] = i
        walk(x[i], d + 1)
      end
      path[d] = nil
      if n == 0 and d > #shape then shape[d] = 0 end
    elseif tensor.is_tensor(x) then
      -- a 0-d tensor is a scalar of its dtype (PyTorch: tensor([tensor(1.5), tensor(2.5)]) works);
      -- an n-d one is refused, as PyTorch refuses it ("only one element tensors can be converted")
      if #x.shape ~= 0 then
        fail(("tensor: element at %s is a tensor of shape [%s]; only 0-d tensors are taken as scalars "
              .. "(use torch.stack to join tensors)"):format(where(), table.concat(x.shape, ", ")))
      end
      scalar(x, d)
      tdt = tdt == nil and x.dtype or promote(tdt, x.dtype)
      local v = x:item()
      if x.dtype == core.bool then
        any_bool = true
        flat[#flat + 1] = v and 1 or 0
      else
        all_bool = false
        if x.dtype.is_floating_point then all_int = false
        elseif is_i64_cdata(v) then any_i64 = true end
        flat[#flat + 1] = v
      end
    elseif tx == "number" or is_i64_cdata(x) then
      scalar(x, d)
      all_bool = false
      s_int = true
      if tx == "number" then
        -- an integral number outside int64 (1e20, inf) is a float: as int64 it would wrap to garbage
        if x ~= math.floor(x) or x ~= x or x >= 2 ^ 63 or x < -2 ^ 63 then all_int, s_float = false, true end
      else
        local v = to_i64(x)
        if v == nil then fail(("tensor: uint64 value %s is beyond the int64 range"):format(tostring(x))) end
        x, any_i64 = v, true
      end
      flat[#flat + 1] = x
    elseif tx == "boolean" then
      scalar(x, d)
      s_bool = true
      any_bool = true
      flat[#flat + 1] = x and 1 or 0
    else
      fail(("tensor: expected numbers, booleans, int64 cdata or nested tables, got a %s at %s"):format(
        tx, where()))
    end
  end
  local ok, err = pcall(walk, data, 1)
  if not ok then
    if type(err) == "table" and err.tensor_error then error(err.tensor_error, 2) end
    error(err, 0)
  end
  if #flat == 0 then all_int, all_bool = false, false end
  local expected = 1
  for i = 1, #shape do expected = expected * shape[i] end
  if expected ~= #flat then error("tensor: ragged nested table (sub-tables of different lengths)", 2) end
  local dt
  if opts.dtype then dt = core.dtype(opts.dtype, 2)
  elseif tdt ~= nil then
    -- 0-d tensor elements: their dtypes promoted with the Lua scalars' (int64 for integers, the default
    -- dtype for other numbers, bool for booleans), as torch.tensor's scalar type inference does.
    dt = tdt
    if s_float then dt = promote(dt, core.default_dtype)
    elseif s_int then dt = promote(dt, core.int64)
    elseif s_bool then dt = promote(dt, core.bool) end
  elseif any_bool and all_bool then dt = core.bool
  elseif all_int then dt = core.int64
  else dt = core.default_dtype end
  local n = core.shape_into(shape_buf, shape, 2, "tensor")
  -- int64 cdata among integers: an int64 buffer keeps them exact (the C side converts to dtype);
  -- otherwise doubles, which hold every Lua number
  local exact = any_i64 and all_int
  local buf = ffi.new(exact and "int64_t[?]" or "double[?]", math.max(#flat, 1))
  if exact then
    for i = 1, #flat do buf[i - 1] = flat[i] end
  else
    for i = 1, #flat do buf[i - 1] = tonumber(flat[i]) end
  end
  local src = exact and core.int64.code or core.float64.code
  return finish(result(oom(C.rt_from_host(n, shape_buf, dt.code, core.device_code(opts.device, 2), buf, src, box)) or C.rt_from_host(n, shape_buf, dt.code, core.device_code(opts.device, 2), buf, src, box)), opts)
end

local function like(f, name)
  return function(t, opts)
    tensor.expect_tensor(t, name, 2)
    if type(opts) ~= "nil" and type(opts) ~= "table" then -- type(): NULL == nil
      error(("%s: expected an options table, got %s"):format(name, tensor.describe(opts)), 2)
    end
    opts = opts or {}
    local o = { dtype = opts.dtype or t.dtype, device = opts.device or t.device, requires_grad = opts.requires_grad }
    return f(t.shape, o)
  end
end
M.zeros_like, M.ones_like, M.empty_like = like(M.zeros, "zeros_like"), like(M.ones, "ones_like"),
  like(M.empty, "empty_like")
M.rand_like, M.randn_like = like(M.rand, "rand_like"), like(M.randn, "randn_like")
function M.full_like(t, v, opts)
  tensor.expect_tensor(t, "full_like", 2)
  if type(opts) ~= "nil" and type(opts) ~= "table" then -- type(): NULL == nil
    error(("full_like: expected an options table, got %s"):format(tensor.describe(opts)), 2)
  end
  opts = opts or {}
  return M.full(t.shape, v, { dtype = opts.dtype or t.dtype, device = opts.device or t.device,
                              requires_grad = opts.requires_grad })
end

-- ---- the generator --------------------------------------------------------------------------------------

function M.manual_seed(seed)
  if type(seed) ~= "number" or seed < 0 or seed ~= math.floor(seed) or seed >= 2 ^ 64 then
    error(("manual_seed: expected a non-negative integer, got %s"):format(tostring(seed)), 2)
  end
  C.rt_manual_seed(seed)
end
M.seed = M.manual_seed

local s_box, o_box = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
-- The generator state as two numbers (exact up to 2^53; checkpoints store them as strings for safety).
function M.get_rng_state()
  C.rt_rng_get_state(s_box, o_box)
  return { seed = tostring(s_box[0]):gsub("ULL$", ""), offset = tostring(o_box[0]):gsub("ULL$", "") }
end
-- A state field: a decimal string (what get_rng_state gives) or an exact non-negative integer number;
-- anything else (a missing field, "-5", "1e3", 2^53 printed as "9.007199254741e+15") is refused
-- instead of being read as whatever digits it happens to contain.
local function parse_u64(s, name)
  if type(s) == "number" and s >= 0 and s == math.floor(s) and s < 2 ^ 53 then
    return ffi.new("uint64_t", s)
  end
  local str = type(s) == "string" and s:match("^%d+$")
  if not str or #str > 20 or (#str == 20 and str > "18446744073709551615") then
    error(("set_rng_state: expected %s as a decimal string (from get_rng_state) or an integer in "
           .. "[0, 2^53), got %s"):format(name, tostring(s)), 3)
  end
  local v = ffi.new("uint64_t", 0)
  for c in str:gmatch("%d") do v = v * 10 + (c:byte() - 48) end
  return v
end
function M.set_rng_state(st)
  if type(st) ~= "table" then
    error(("set_rng_state: expected a table {seed=, offset=} from get_rng_state, got %s"):format(type(st)), 2)
  end
  C.rt_rng_set_state(parse_u64(st.seed, "seed"), parse_u64(st.offset, "offset"))
end

return M
