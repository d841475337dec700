-- ramtorch/core.lua: what every Lua module of the runtime shares: dtype and device values, the out-pointer
-- boxes, turning a C status into a tensor (with the one garbage-collection retry on out-of-memory that
-- DESIGN section 2 asks for), and shape marshalling.
local rffi = require("ramtorch.ffi")
local ffi, C = rffi.ffi, rffi.C

local M = {}

-- ---- dtypes ---------------------------------------------------------------------------------------

local dtype_mt = {
  __tostring = function(d) return "torch." .. d.name end,
}

local dtypes_by_code, dtypes_by_name = {}, {}
local function def_dtype(code, name, aliases, is_float)
  local d = setmetatable({ code = code, name = name, is_floating_point = is_float,
                           itemsize = tonumber(C.rt_dtype_size(code)) }, dtype_mt)
  dtypes_by_code[code] = d
  dtypes_by_name[name] = d
  for _, a in ipairs(aliases) do dtypes_by_name[a] = d end
  return d
end

M.float32 = def_dtype(0, "float32", { "float", "f32" }, true)
M.bfloat16 = def_dtype(1, "bfloat16", { "bf16" }, true)
M.float16 = def_dtype(2, "float16", { "half", "f16" }, true)
M.float64 = def_dtype(3, "float64", { "double", "f64" }, true)
M.int64 = def_dtype(4, "int64", { "long", "i64" }, false)
M.int32 = def_dtype(5, "int32", { "int", "i32" }, false)
M.uint8 = def_dtype(6, "uint8", { "u8" }, false)
M.bool = def_dtype(7, "bool", {}, false)
M.dtypes_by_code = dtypes_by_code

M.default_dtype = M.float32

-- Accepts a dtype value, a name ("float32", "bf16", ...) or nil (the default). level: error level.
function M.dtype(d, level)
  if d == nil then return M.default_dtype end
  if getmetatable(d) == dtype_mt then return d end
  if type(d) == "string" then
    local r = dtypes_by_name[d:gsub("^torch%.", "")]
    if r then return r end
  end
  error(("expected a dtype (torch.float32, \"bf16\", ...), got %s"):format(tostring(d)), (level or 1) + 1)
end

function M.is_dtype(d) return getmetatable(d) == dtype_mt end

-- ---- devices --------------------------------------------------------------------------------------
-- A device is an integer for C (-1 = cpu, N = cuda:N) and a string for people ("cpu", "cuda:0").

local current_cuda = 0
function M.set_current_cuda(i) current_cuda = i end

function M.device_code(dev, level)
  if dev == nil or dev == "cpu" then return -1 end
  local t = type(dev)
  if t == "number" then
    if dev >= 0 and dev == math.floor(dev) then return dev end
  elseif t == "string" then
    if dev == "cuda" then return current_cuda end
    local n = dev:match("^cuda:(%d+)$")
    if n then return tonumber(n) end
  elseif t == "table" and dev.code then
    return dev.code
  end
  error(("expected a device (\"cpu\", \"cuda\", \"cuda:N\" or an ordinal), got %s"):format(tostring(dev)),
        (level or 1) + 1)
end

function M.device_name(code)
  code = tonumber(code)
  return code < 0 and "cpu" or ("cuda:" .. code)
end

-- ---- calling C --------------------------------------------------------------------------------------

M.box = ffi.new("rt_tensor*[1]")
M.box2 = ffi.new("rt_tensor*[1]")
M.shape_buf = ffi.new("int64_t[8]")
M.shape_buf2 = ffi.new("int64_t[8]")
M.int_buf = ffi.new("int[8]")
M.double_box = ffi.new("double[1]")
local RT_ERR_OOM = -5

local box = M.box
local Ref = ffi.typeof("rt_tensor_ref")
M.Ref = Ref
local release = C.rt_tensor_ref_release
M.release = release

local function raise(level) error(ffi.string(C.rt_last_error()), level + 1) end
M.raise = raise

-- Turn the status of a call that wrote box[0] into a tensor (out of memory: see M.oom below).
-- Garbage-collector pacing. Tensors are freed when the GC runs their finalizers, but the GC only
-- sees 16-byte handles, not the storage behind them; left alone, a training loop's memory grows until
-- a natural collection and every step touches fresh pages. So after each op we look at how many
-- storage bytes C allocated (on any device) since the last collection, and collect once that exceeds
-- what was live after it (at least 64 MiB): memory stays within about twice its live size and is
-- reused warm, on the host and in the device caching allocator alike.
local pressure = C.rt_alloc_pressure()
local MIN_GC_BYTES = 64 * 1024 * 1024
local gc_threshold = MIN_GC_BYTES
local function pace_gc()
  collectgarbage("collect")
  pressure[0] = 0
  local live = tonumber(C.rt_live_storage_bytes())
  gc_threshold = live > MIN_GC_BYTES and live or MIN_GC_BYTES
end
M.pace_gc = pace_gc

-- DESIGN section 2's out-of-memory rule: before an out-of-memory error is raised, one full garbage
-- collection (the Lua handles of dead tensors are what holds their memory) and one retry. Call sites
-- write `result(oom(C.rt_x(ARGS)) or C.rt_x(ARGS))`: oom passes any other status through and, for
-- RT_ERR_OOM, collects and returns false so that the call is made again. The retry repeats the call
-- with the arguments' tensor handles (`a.p`), which keeps them referenced across the collection (a
-- generic retry given raw pointers could see a temporary's handle collected and its tensor freed).
-- An op that reserves random numbers before allocating (dropout, rand) draws new ones on its retry.
-- The collection itself, also run by the backward loop (autograd.lua) when the C engine reports that
-- a node ran out of memory.
local function collect_for_oom()
  collectgarbage("collect")
  collectgarbage("collect") -- the first pass runs finalizers; the second frees what they released
  pressure[0] = 0
end
M.collect_for_oom = collect_for_oom

function M.oom(rc)
  if rc ~= RT_ERR_OOM then return rc end
  collect_for_oom()
  return false
end

function M.result(rc)
  if rc ~= 0 then raise(2) end
  local t = ffi.gc(Ref(box[0]), release)
  if pressure[0] > gc_threshold then pace_gc() end
  return t
end

-- For calls with no tensor result.
function M.check(rc)
  if rc ~= 0 then raise(2) end
end

-- Wrap a new reference (an rt_tensor*) in a Tensor handle with its finalizer; NULL gives nil.
function M.own(p)
  if p == nil then return nil end
  local t = ffi.gc(Ref(p), release)
  if pressure[0] > gc_threshold then pace_gc() end
  return t
end

-- Shapes: accept (2, 3), ({2, 3}) or a tensor's shape table; write into buf; return ndim.
-- what (optional): the function name that prefixes the messages.
function M.shape_into(buf, shape, level, what)
  local pre = what and (what .. ": ") or ""
  local n = #shape
  if n > 8 then error(("%sat most 8 dimensions are supported, got %d"):format(pre, n), (level or 1) + 1) end
  for i = 1, n do
    local d = shape[i]
    -- sizes beyond int64 (inf, 2^63) would wrap to a negative size in the conversion
    if type(d) ~= "number" or d ~= math.floor(d) or d >= 2 ^ 63 or d < -2 ^ 63 then
      local dd = (type(d) == "number" or type(d) == "string") and tostring(d) or ("a " .. type(d))
      error(("%sexpected integer sizes in a shape, got %s at position %d"):format(pre, dd, i), (level or 1) + 1)
    end
    buf[i - 1] = d
  end
  return n
end

-- Split varargs of a creation function into (shape table, options table).
-- Forms: f(2, 3), f({2, 3}), f(2, 3, {dtype=...}), f({2, 3}, {dtype=...}), f() (scalar).
function M.shape_and_opts(...)
  local n = select("#", ...)
  local last = n > 0 and select(n, ...) or nil
  local opts = {}
  if type(last) == "table" and last[1] == nil and getmetatable(last) == nil then
    opts = last
    n = n - 1
  end
  local first = select(1, ...)
  if n == 1 and type(first) == "table" then return first, opts end
  local shape = {}
  for i = 1, n do shape[i] = (select(i, ...)) end
  return shape, opts
end

return M
