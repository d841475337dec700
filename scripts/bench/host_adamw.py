# host_adamw.py: PyTorch twin of host_adamw.lua: torch.optim.AdamW(fused=True) on CPU f32 tensors of
# 2^LOG2 parameters, f32 (f32 states) and bf16 (parameters, gradients and states bf16; PyTorch has no
# stochastic-rounding option), same thread count, same timing.
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
for dt, name in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
    # bf16: parameters, gradients and states all bf16 (PyTorch keeps states in the parameter dtype)
    p = torch.nn.Parameter(torch.randn(n).to(dt))
    p.grad = torch.randn(n).to(dt)
    try:
        opt = torch.optim.AdamW([p], lr=1e-4, fused=True)
        for _ in range(2):
            opt.step()
    except Exception as e:  # a PyTorch build without the fused CPU kernel for this dtype
        print("RESULT torch_adamw_fused_%s_2^%d unsupported (%s)" % (name, log2, str(e)[:80]))
        continue
    t0 = time.perf_counter()
    for _ in range(iters):
        opt.step()
    s = (time.perf_counter() - t0) / iters
    gps = n / s / 1e9
    b = 28 if dt == torch.float32 else 14
    print("RESULT torch_adamw_fused_%s_2^%d %.3f Gparam/s  %.2f ms/step  %d B/param  %.1f GB/s"
          % (name, log2, gps, s * 1e3, b, gps * b))
    del p, opt
