# gpu_memory.py: PyTorch twin of gpu_memory.lua (256 MiB f32 tensors, GB/s read + written, CUDA events).
import torch
import torch.nn.functional as F
rows, cols = 65536, 1024
nf = rows * cols
x = torch.randn(rows, cols, device="cuda")
y = torch.randn(rows, cols, device="cuda")
e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

def bench(name, nbytes, fn):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    iters = 20
    e0.record()
    for _ in range(iters):
        fn()
    e1.record()
    e1.synchronize()
    ms = e0.elapsed_time(e1) / iters
    print("RESULT %s %.0f GB/s" % (name, nbytes / (ms * 1e-3) / 1e9))

B = nf * 4
target = torch.randint(0, cols, (rows,), device="cuda")
bench("copy_d2d", 2 * B, lambda: x.clone())
bench("add", 3 * B, lambda: x + y)
bench("mul_scalar", 2 * B, lambda: x * 2)
bench("relu", 2 * B, lambda: x.relu())
bench("cast_bf16", B + B // 2, lambda: x.to(torch.bfloat16))
bench("sum_rows", B, lambda: x.sum(1))
bench("softmax", 2 * B, lambda: torch.softmax(x, -1))
bench("layer_norm", 2 * B, lambda: F.layer_norm(x, (cols,)))
bench("cross_entropy", B, lambda: F.cross_entropy(x, target))
