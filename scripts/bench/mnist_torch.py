"""mnist_torch.py: the PyTorch twin of scripts/train_mnist.lua for timing one Fashion-MNIST epoch:
the same MLP (784-512-256-10), AdamW, batch 128, cross-entropy, on the same data (read from the gzip'd
idx files). Prints seconds per epoch and samples/s for the given device and thread count.

    python3 scripts/bench/mnist_torch.py DATA_DIR [--device cpu|cuda] [--threads N] [--epochs 1]
"""
import argparse
import gzip
import time

import numpy as np
import torch


def read_idx(path):
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.from_numpy(read_idx(f"{a.data}/train-images-idx3-ubyte.gz").copy()).float().div(255).view(-1, 784)
    y = torch.from_numpy(read_idx(f"{a.data}/train-labels-idx1-ubyte.gz").copy()).long()
    xt = torch.from_numpy(read_idx(f"{a.data}/t10k-images-idx3-ubyte.gz").copy()).float().div(255).view(-1, 784)
    yt = torch.from_numpy(read_idx(f"{a.data}/t10k-labels-idx1-ubyte.gz").copy()).long()
    dev = torch.device(a.device)
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    n = x.shape[0]
    for epoch in range(a.epochs):
        perm = torch.randperm(n)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, n, a.batch_size):
            idx = perm[i:i + a.batch_size]
            xb = ((x[idx] - 0.2860) / 0.3530).to(dev)
            yb = y[idx].to(dev)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            model.zero_grad()
            loss.backward()
            opt.step()
        loss.item()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        with torch.no_grad():
            acc = (model(((xt - 0.2860) / 0.3530).to(dev)).argmax(1).cpu() == yt).float().mean().item()
        print(f"pytorch {torch.__version__} device={a.device} threads={torch.get_num_threads()} epoch {epoch + 1}: "
              f"{dt:.2f} s ({n / dt:.0f} samples/s), test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
