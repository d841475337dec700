# host_adamw.py: PyTorch twin of host_adamw.lua: torch.optim.AdamW(fused=True) on CPU f32 tensors of
# 2^LOG2 parameters (f32 states; PyTorch has no bf16-state option), same thread count, same timing.
#   python host_adamw.py [log2 size = 27] [threads = 0: torch default] [iters = 10]
import sys
import time
import torch

log2 = int(sys.argv[1]) if len(sys.argv) > 1 else 27
threads = int(sys.argv[2]) if len(sys.argv) > 2 else 0
iters = int(sys.argv[3]) if len(sys.argv) > 3 else 10
if threads > 0:
    torch.set_num_threads(threads)
n = 2**log2
print("torch AdamW(fused=True): 2^%d = %d parameters, threads %d" % (log2, n, torch.get_num_threads()))
p = torch.nn.Parameter(torch.randn(n))
p.grad = torch.randn(n)
opt = torch.optim.AdamW([p], lr=1e-4, fused=True)
for _ in range(2):
    opt.step()
t0 = time.perf_counter()
for _ in range(iters):
    opt.step()
s = (time.perf_counter() - t0) / iters
gps = n / s / 1e9
print("RESULT torch_adamw_fused_f32_2^%d %.3f Gparam/s  %.2f ms/step  28 B/param  %.1f GB/s"
      % (log2, gps, s * 1e3, gps * 28))
