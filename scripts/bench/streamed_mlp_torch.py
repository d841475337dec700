"""streamed_mlp_torch.py: the PyTorch twin of scripts/bench/streamed_mlp.lua with every weight resident
on the GPU (the ceiling the streamed run is compared with in issue 5): --layers x (Linear(dim, dim) +
ReLU) in bf16, forward and forward+backward at each token count, mean of --steps after --warmup, and
peak GPU memory. Prints one RESULT line per token count.

    python3 scripts/bench/streamed_mlp_torch.py [--layers 16] [--dim 8192] [--tokens 1024,4096,16384]
"""
import argparse
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--tokens", default="1024,4096,16384")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    dev = torch.device("cuda")
    layers = []
    for _ in range(a.layers):
        layers += [torch.nn.Linear(a.dim, a.dim), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers).to(dev, torch.bfloat16)
    for t in [int(s) for s in a.tokens.split(",")]:
        x = torch.randn(t, a.dim, device=dev, dtype=torch.bfloat16)

        def fwd():
            with torch.no_grad():
                model(x)

        def fwdbwd():
            model(x.requires_grad_(False)).float().sum().backward()

        res = {}
        for name, fn in (("fwd", fwd), ("fwdbwd", fwdbwd)):
            torch.cuda.reset_peak_memory_stats()
            for _ in range(a.warmup):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                fn()
            torch.cuda.synchronize()
            res[name] = (time.perf_counter() - t0) / a.steps * 1e3
            res[name + "_mem"] = torch.cuda.max_memory_allocated() / 2**30
            model.zero_grad(set_to_none=True)
        print(f"RESULT pytorch_resident T={t} fwd_ms={res['fwd']:.2f} fwdbwd_ms={res['fwdbwd']:.2f} "
              f"peak_gib={res['fwdbwd_mem']:.2f}")


if __name__ == "__main__":
    main()
