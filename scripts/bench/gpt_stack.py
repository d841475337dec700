"""gpt_stack.py: the PyTorch eager twin of scripts/bench/gpt_stack.lua: the same GPT-2-shaped model
(12 layers, width 1024, 16 heads, sequence 1024, batch 16, vocabulary 50304, no dropout), one training
step = forward, cross-entropy, backward, AdamW; tokens per second over --steps after --warmup, and peak
GPU memory. Runs with bf16 weights and with f32 weights under torch.autocast(bfloat16).

    python3 scripts/bench/gpt_stack.py [--steps 5]
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, block, n_layer, d, h):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.h = nn.ModuleList(Block(d, h) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.h:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def run(a, mode):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = GPT(a.vocab, a.block_size, a.n_layer, a.n_embd, a.n_head).to(dev)
    if mode == "bf16":
        model = model.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    B, T = a.batch, a.block_size
    idx = torch.randint(0, a.vocab, (B, T), device=dev)
    tgt = torch.randint(0, a.vocab, (B, T), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(mode == "autocast")):
            logits = model(idx)
            loss = F.cross_entropy(logits.view(B * T, -1).float(), tgt.view(B * T))
        model.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    loss.item()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"gpt_stack pytorch {torch.__version__} {mode}: {dt * 1e3:.1f} ms/step, peak GPU {peak:.2f} GiB")
    print(f"RESULT gpt_stack_resident_{mode} {B * T / dt:.0f} tokens/s")
    # the same split as gpt_stack.lua --breakdown: each phase synchronized apart
    acc = [0.0, 0.0, 0.0, 0.0]

    def mark():
        torch.cuda.synchronize()
        return time.perf_counter()

    for _ in range(a.steps):
        t_a = mark()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(mode == "autocast")):
            logits = model(idx)
            t_b = mark()
            loss = F.cross_entropy(logits.view(B * T, -1).float(), tgt.view(B * T))
        t_c = mark()
        model.zero_grad(set_to_none=True)
        loss.backward()
        t_d = mark()
        opt.step()
        t_e = mark()
        for i, v in enumerate((t_b - t_a, t_c - t_b, t_d - t_c, t_e - t_d)):
            acc[i] += v
    print("gpt_stack pytorch %s breakdown (ms, synchronized apart): forward %.1f, loss %.1f, backward %.1f, "
          "optimizer %.1f" % ((mode,) + tuple(x / a.steps * 1e3 for x in acc)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--n-embd", type=int, default=1024)
    ap.add_argument("--n-head", type=int, default=16)
    ap.add_argument("--block-size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=50304)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", default="bf16,autocast", help="comma-separated: bf16, autocast")
    a = ap.parse_args()
    for mode in a.modes.split(","):
        run(a, mode)


if __name__ == "__main__":
    main()
