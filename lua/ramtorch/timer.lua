-- ramtorch/timer.lua: wall-clock time in seconds with sub-microsecond resolution (clock_gettime
-- CLOCK_MONOTONIC), for progress bars and benchmarks. os.clock() is CPU time, wrong with threads.
local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef long rt_time_t_;
struct rt_timespec_ { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct rt_timespec_ *tp);
]])
local ts = ffi.new("struct rt_timespec_")
local M = {}
function M.now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
return M
