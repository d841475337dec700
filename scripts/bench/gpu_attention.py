# gpu_attention.py: PyTorch twin of gpu_attention.lua (F.scaled_dot_product_attention, bf16, batch 8,
# 16 heads of 128, sequence 2048, causal; forward and forward + backward; CUDA events, mean of 10 after 3
# warm-ups; FLOPs as flash attention counts them).
import sys
import torch
import torch.nn.functional as F
B, H, T, D = 8, 16, int(sys.argv[1]) if len(sys.argv) > 1 else 2048, 128
kw = dict(dtype=torch.bfloat16, device="cuda")
q = torch.randn(B, H, T, D, **kw).requires_grad_(True)
k = torch.randn(B, H, T, D, **kw).requires_grad_(True)
v = torch.randn(B, H, T, D, **kw).requires_grad_(True)
dout = torch.randn(B, H, T, D, **kw)
fwd_flops = 4 * B * H * T * T * D / 2


def timed(fn, iters=10):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(iters):
        fn()
    e1.record()
    e1.synchronize()
    return e0.elapsed_time(e1) / iters


def fwd():
    with torch.no_grad():
        F.scaled_dot_product_attention(q, k, v, is_causal=True)


def fwd_bwd():
    F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)


ms_f = timed(fwd)
ms_fb = timed(fwd_bwd)
print("RESULT attention_fwd %.1f TFLOP/s" % (fwd_flops / (ms_f * 1e-3) / 1e12))
print("RESULT attention_fwd_bwd %.1f TFLOP/s" % (3.5 * fwd_flops / (ms_fb * 1e-3) / 1e12))
