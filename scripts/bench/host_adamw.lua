-- host_adamw.lua: the fused host AdamW (DESIGN section 6; kernels/cpu/host_optim.c) alone on 2^LOG2 f32
-- parameters with f32 gradients, f32 states and bf16 states (stochastic rounding); the PyTorch twin is
-- host_adamw.py (torch.optim.AdamW(fused=True) on CPU tensors). Prints parameters per second, the bytes
-- each update moves per parameter and the host memory bandwidth that makes.
--   ramtorch-lua scripts/bench/host_adamw.lua [log2 size = 27] [threads = 0: OpenMP default] [iters = 10]
--                                             [path: 0 auto, 1 scalar, 2 avx2, 3 avx512]
local torch = require("ramtorch")
local optim = require("ramtorch.optim")
local timer = require("ramtorch.timer")
local C = require("ramtorch.ffi").C

local log2 = tonumber(arg[1]) or 27
local threads = tonumber(arg[2]) or 0
local iters = tonumber(arg[3]) or 10
local n = 2 ^ log2
C.rt_host_optim_set_threads(threads)
if C.rt_host_optim_set_simd(tonumber(arg[4]) or 0) ~= 0 then error("this CPU lacks code path " .. arg[4]) end
local paths = { [1] = "scalar", [2] = "avx2", [3] = "avx512" }
print(("host AdamW: 2^%d = %d parameters, threads %s, code path %s"):format(log2, n,
  threads > 0 and threads or "default", paths[C.rt_host_optim_simd()] or "?"))

-- bytes per parameter per update: read p, g, m, v; write p, m, v
local BYTES = { f32 = 4 + 4 + 4 + 4 + 4 + 4 + 4, bf16 = 4 + 4 + 2 + 2 + 4 + 2 + 2 }

local p = torch.randn({ n }):requires_grad_(true)
p.grad = torch.randn({ n })
for _, sd in ipairs({ "f32", "bf16" }) do
  local opt = optim.AdamW({ p }, { lr = 1e-4, state_dtype = sd })
  for _ = 1, 2 do opt:step() end -- warm-up (state allocation, page faults)
  local t0 = timer.now()
  for _ = 1, iters do opt:step() end
  local s = (timer.now() - t0) / iters
  local gps = n / s / 1e9
  print(("RESULT host_adamw_%s_2^%d %.3f Gparam/s  %.2f ms/step  %d B/param  %.1f GB/s"):format(
    sd, log2, gps, s * 1e3, BYTES[sd], gps * BYTES[sd]))
  opt = nil
  collectgarbage()
end
