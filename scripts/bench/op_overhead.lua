-- op_overhead.lua: per-op overhead of a call from Lua into C for a small tensor (issue 2, Performance:
-- target under 1 us): 10^6 adds of two 16-element f32 tensors under no_grad, in microseconds per op.
-- Also times a few neighbours (scalar add, in-place add, mul+sum chain) for context. Best of 5 runs.
--
-- Run: build/bin/ramtorch-lua scripts/bench/op_overhead.lua [n=1000000]
local torch = require("ramtorch")
local ffi = require("ffi")

ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } rt_bench_timespec;
int clock_gettime(int clk, rt_bench_timespec *ts);
]])
local ts = ffi.new("rt_bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + 1e-9 * tonumber(ts.tv_nsec)
end

local N = tonumber(arg and arg[1]) or 1000000
local a, b = torch.randn(16), torch.randn(16)

-- Wall time and process CPU time (os.clock) per op, best of 5 runs each. On a shared, loaded machine
-- the CPU time is the steadier number (wall time also counts time the process waited for a core).
local function bench(name, body)
  local best, best_cpu = math.huge, math.huge
  for _ = 1, 5 do
    collectgarbage("collect")
    local t0, c0 = now(), os.clock()
    torch.no_grad(body)
    local dt, dc = now() - t0, os.clock() - c0
    if dt < best then best = dt end
    if dc < best_cpu then best_cpu = dc end
  end
  local us, cpu_us = best / N * 1e6, best_cpu / N * 1e6
  print(("%-34s %7.3f us/op wall %7.3f us/op cpu"):format(name, us, cpu_us))
  return us, cpu_us
end

print(("ramtorch-lua %s, %d ops per run, %d threads, %s"):format(torch.__version__, N, torch.get_num_threads(),
  jit and jit.version or "no jit"))
local us, cpu_us = bench("a + b (16 f32, no_grad)", function()
  local c
  for _ = 1, N do c = a + b end
  return c
end)
bench("torch.add(a, b)", function()
  local c
  for _ = 1, N do c = torch.add(a, b) end
  return c
end)
bench("a * 2.0 (scalar)", function()
  local c
  for _ = 1, N do c = a * 2.0 end
  return c
end)
bench("a:add_(b) (in place)", function()
  for _ = 1, N do a:add_(b) end
end)
bench("a:exp() (unary)", function()
  local c
  for _ = 1, N do c = a:exp() end
  return c
end)
print(("RESULT add_16_f32 wall_us_per_op=%.3f cpu_us_per_op=%.3f target=1.0 %s"):format(us, cpu_us,
  math.min(us, cpu_us) < 1 and "OK" or "ABOVE TARGET"))
