-- host_adamw.lua: the fused host AdamW (DESIGN section 6; kernels/cpu/host_optim.c) alone on 2^LOG2
-- parameters: f32 parameters with f32 or bf16 gradients and f32 or bf16 states (stochastic rounding),
-- and bf16 parameters with bf16 gradients and states (RamTorch's bf16-weight setup); the PyTorch twin is
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

-- Configurations: parameter dtype, gradient dtype (bf16 is how the offload engine lands a first
-- micro-batch's gradient), state dtype. Bytes per parameter per update: read p, g, m, v; write p, m, v.
local configs = {
  { "f32", "f32", "f32" }, { "f32", "f32", "bf16" }, { "f32", "bf16", "f32" }, { "f32", "bf16", "bf16" },
  { "bf16", "bf16", "bf16" },
}
local SIZE = { f32 = 4, bf16 = 2 }
local DT = { f32 = torch.float32, bf16 = torch.bfloat16 }

for _, c in ipairs(configs) do
  local pd, gd, sd = c[1], c[2], c[3]
  local bytes = 2 * SIZE[pd] + SIZE[gd] + 4 * SIZE[sd]
  local p = torch.randn({ n }):to(DT[pd]):requires_grad_(true)
  p.grad = torch.randn({ n }):to(DT[gd])
  local opt = optim.AdamW({ p }, { lr = 1e-4, state_dtype = sd })
  for _ = 1, 2 do opt:step() end -- warm-up (state allocation, page faults)
  local t0 = timer.now()
  for _ = 1, iters do opt:step() end
  local s = (timer.now() - t0) / iters
  local gps = n / s / 1e9
  local name = pd == "f32" and gd == "f32" and ("host_adamw_%s"):format(sd)
    or ("host_adamw_p%s_g%s_s%s"):format(pd, gd, sd)
  print(("RESULT %s_2^%d %.3f Gparam/s  %.2f ms/step  %d B/param  %.1f GB/s"):format(
    name, log2, gps, s * 1e3, bytes, gps * bytes))
  p, opt = nil, nil
  collectgarbage()
end
