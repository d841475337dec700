# gpu_overhead.py: PyTorch twin of gpu_overhead.lua (tiny add on the GPU, 10^5 eager calls, wall clock).
import time
import torch
x = torch.ones(1, device="cuda")
n = 100000
for _ in range(1000):
    x + x
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(n):
    x + x
torch.cuda.synchronize()
print("RESULT add_overhead %.2f us/op" % ((time.perf_counter() - t0) / n * 1e6))
