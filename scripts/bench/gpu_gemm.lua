-- gpu_gemm.lua: bf16 GEMM 8192^3 on the GPU through ramtorch (cuBLASLt), TFLOP/s from CUDA events
-- (mean of 10 products after 3 warm-ups, random inputs). Twin: gpu_gemm.py (PyTorch, same method).
-- Prints "RESULT gemm_bf16_8192 <tflops> TFLOP/s".
local torch = require("ramtorch")
local n = tonumber(arg and arg[1]) or 8192
local a = torch.randn({ n, n }, { dtype = torch.bfloat16, device = "cuda" })
local b = torch.randn({ n, n }, { dtype = torch.bfloat16, device = "cuda" })
for _ = 1, 3 do local _ = a:matmul(b) end
torch.cuda.synchronize()
local e0, e1 = torch.cuda.Event({ enable_timing = true }), torch.cuda.Event({ enable_timing = true })
local iters = 10
e0:record()
for _ = 1, iters do local _ = a:matmul(b) end
e1:record()
e1:synchronize()
local ms = e0:elapsed_time(e1) / iters
print(("RESULT gemm_bf16_%d %.1f TFLOP/s"):format(n, 2 * n ^ 3 / (ms * 1e-3) / 1e12))
