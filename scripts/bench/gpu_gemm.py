# gpu_gemm.py: PyTorch twin of gpu_gemm.lua (bf16 GEMM 8192^3, CUDA events, mean of 10 after 3 warm-ups).
import sys
import torch
n = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
for _ in range(3):
    a @ b
torch.cuda.synchronize()
e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
iters = 10
e0.record()
for _ in range(iters):
    a @ b
e1.record()
e1.synchronize()
ms = e0.elapsed_time(e1) / iters
print("RESULT gemm_bf16_%d %.1f TFLOP/s" % (n, 2 * n**3 / (ms * 1e-3) / 1e12))
