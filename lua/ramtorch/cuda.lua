-- ramtorch/cuda.lua: torch.cuda: devices, the caching allocator's statistics and budget, streams and
-- events (the handles the offload engine overlaps copies and compute with). Everything forwards to
-- the rt_cuda_* / rt_stream_* / rt_event_* calls of libramtorch, which loads the CUDA backend on
-- first use; without CUDA, is_available() is false, device_count() is 0, and the rest raise an error
-- saying why.
local rffi = require("ramtorch.ffi")
local core = require("ramtorch.core")
local ffi, C = rffi.ffi, rffi.C

local M = {}

local i64_box = ffi.new("int64_t[3]")
local int_box = ffi.new("int[1]")
local dbl_box = ffi.new("double[1]")
local stream_box = ffi.new("rt_stream*[1]")
local event_box = ffi.new("rt_event*[1]")

local function check(rc, level)
  if rc < 0 then error(ffi.string(C.rt_last_error()), (level or 1) + 1) end
  return rc
end

local function device_arg(d, fname)
  if d == nil then
    check(C.rt_cuda_get_device(int_box), 3)
    return int_box[0]
  end
  if type(d) == "table" and d.device ~= nil then d = d.device end
  local ok, code = pcall(core.device_code, d)
  if not ok or code < 0 then
    error(("torch.cuda.%s: expected a cuda device (\"cuda\", \"cuda:N\" or an ordinal), got %s")
          :format(fname, tostring(d)), 3)
  end
  return code
end

function M.is_available() return C.rt_cuda_is_available() ~= 0 end
function M.device_count() return tonumber(C.rt_cuda_device_count()) end

function M.set_device(d)
  local code = device_arg(d, "set_device")
  check(C.rt_cuda_set_device(code), 2)
  core.set_current_cuda(code)
end

function M.current_device()
  check(C.rt_cuda_get_device(int_box), 2)
  return int_box[0]
end

function M.synchronize(d)
  check(C.rt_cuda_synchronize(d == nil and -1 or device_arg(d, "synchronize")), 2)
end

-- ---- memory ------------------------------------------------------------------------------------------

local function stats(d)
  check(C.rt_cuda_memory_stats(device_arg(d, "memory_stats"), i64_box, i64_box + 1, i64_box + 2), 3)
  return tonumber(i64_box[0]), tonumber(i64_box[1]), tonumber(i64_box[2])
end

function M.memory_allocated(d) return (stats(d)) end
function M.max_memory_allocated(d) return select(2, stats(d)) end
function M.memory_reserved(d) return select(3, stats(d)) end
function M.reset_peak_memory_stats(d) check(C.rt_cuda_reset_peak_memory_stats(device_arg(d, "reset_peak_memory_stats")), 2) end
function M.empty_cache(d) check(C.rt_cuda_empty_cache(device_arg(d, "empty_cache")), 2) end

-- Cap on the bytes the allocator holds from the driver; nil or 0 removes the cap.
function M.set_memory_budget(bytes, d)
  if bytes ~= nil and (type(bytes) ~= "number" or bytes < 0) then
    error("torch.cuda.set_memory_budget: expected a byte count >= 0 (or nil for no cap), got " ..
          tostring(bytes), 2)
  end
  check(C.rt_cuda_set_memory_budget(device_arg(d, "set_memory_budget"), bytes or 0), 2)
end

function M.get_memory_budget(d)
  check(C.rt_cuda_get_memory_budget(device_arg(d, "get_memory_budget"), i64_box), 2)
  local b = tonumber(i64_box[0])
  return b > 0 and b or nil
end

-- f32 matmuls through TF32 tensor cores (torch.backends.cuda.matmul.allow_tf32).
function M.set_allow_tf32(on) check(C.rt_cuda_set_tf32(on and 1 or 0), 2) end

-- ---- streams -------------------------------------------------------------------------------------------

local Stream = {}
Stream.__index = Stream
M.StreamClass = Stream

local function wrap_stream(p, owned)
  local s = setmetatable({ _p = p }, Stream)
  if owned then s._gc = ffi.gc(ffi.cast("void*", p), function() C.rt_stream_destroy(p) end) end
  return s
end

-- torch.cuda.Stream([device])
function M.Stream(d)
  local code = d == nil and -1 or device_arg(d, "Stream")
  check(C.rt_stream_create(code, stream_box), 2)
  return wrap_stream(stream_box[0], true)
end

function M.current_stream(d)
  check(C.rt_current_stream(d == nil and -1 or device_arg(d, "current_stream"), stream_box), 2)
  return wrap_stream(stream_box[0], false)
end

function M.set_stream(s)
  check(C.rt_set_current_stream(s and s._p or nil), 2)
end

function Stream:synchronize() check(C.rt_stream_synchronize(self._p), 2) end
function Stream:wait_event(e) check(C.rt_stream_wait_event(self._p, e._p), 2) end
function Stream:wait_stream(other)
  local e = M.Event()
  e:record(other)
  self:wait_event(e)
end
function Stream:record_event(e)
  e = e or M.Event()
  e:record(self)
  return e
end
function Stream:query() return self:record_event():query() end
Stream.__eq = function(a, b) return a._p == b._p end
Stream.__tostring = function(s) return ("<torch.cuda.Stream %s>"):format(tostring(s._p)) end

-- Run fn() with s as the current stream, restoring the previous one even when fn raises.
function M.with_stream(s, fn, ...)
  local prev = M.current_stream()
  M.set_stream(s)
  local res = { n = 0 }
  local function collect(ok, ...)
    res.n = select("#", ...)
    for i = 1, res.n do res[i] = select(i, ...) end
    return ok
  end
  local ok = collect(pcall(fn, ...))
  M.set_stream(prev)
  if not ok then error(res[1], 0) end
  return unpack(res, 1, res.n)
end
M.stream = M.with_stream

-- ---- events --------------------------------------------------------------------------------------------

local Event = {}
Event.__index = Event
M.EventClass = Event

-- torch.cuda.Event({enable_timing = true})
function M.Event(opts)
  local timing = type(opts) == "table" and opts.enable_timing and 1 or 0
  check(C.rt_event_create(timing, event_box), 2)
  local p = event_box[0]
  local e = setmetatable({ _p = p }, Event)
  e._gc = ffi.gc(ffi.cast("void*", p), function() C.rt_event_destroy(p) end)
  return e
end

function Event:record(s) check(C.rt_event_record(self._p, s and s._p or nil), 2) end
function Event:synchronize() check(C.rt_event_synchronize(self._p), 2) end
function Event:query() return check(C.rt_event_query(self._p), 2) == 1 end
function Event:wait(s) check(C.rt_stream_wait_event(s and s._p or nil, self._p), 2) end
-- Milliseconds from this event to `other` (both recorded, with enable_timing).
function Event:elapsed_time(other)
  check(C.rt_event_elapsed_time(self._p, other._p, dbl_box), 2)
  return dbl_box[0]
end

return M
