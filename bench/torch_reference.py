#!/usr/bin/env python3
"""The PyTorch baseline for braid-bench: the same GPT-2 (pre-LN, GELU tanh, tied embedding,
vocabulary padded to 50304, learned positions, biases), the same step (bf16 autocast over
fp32 weights, causal flash attention through SDPA, cross-entropy, grad-norm clip 1.0,
AdamW with fp32 moments), on random tokens. Eager or torch.compile. One line per run, the
same figures and MFU formula as braid-bench:
  MFU = tok/s x (6N + 12LTC) / peak, HFU = tok/s x (6N + 14LTC) / peak (SDPA's flash
  backward recomputes QK^T too).

  python3 bench/torch_reference.py --preset gpt2-124m --batch 16 [--compile] [--json FILE]
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {"gpt2-124m": (12, 12, 768), "gpt2-350m": (24, 16, 1024), "gpt2-1.5b": (48, 25, 1600)}


class Block(nn.Module):
    def __init__(self, c, nh):
        super().__init__()
        self.nh = nh
        self.ln1 = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Linear(c, c)
        self.ln2 = nn.LayerNorm(c)
        self.fc = nn.Linear(c, 4 * c)
        self.fc_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (y.view(b, t, self.nh, c // self.nh).transpose(1, 2) for y in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers, heads, width, seq_len, vocab):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # tied
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpt2-124m", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    layers, heads, width = PRESETS[a.preset]
    vocab, T, B = 50304, a.seq_len, a.batch
    model = GPT(layers, heads, width, T, vocab).cuda()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    step_model = torch.compile(model) if a.compile else model

    def step(x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    gen = torch.Generator(device="cuda").manual_seed(1)
    times, loss = [], None
    for i in range(a.warmup + a.steps):
        x = torch.randint(0, 50257, (B, T), device="cuda", generator=gen)
        y = torch.randint(0, 50257, (B, T), device="cuda", generator=gen)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step(x, y)
        loss.item()  # the step ends when its loss is on the host (as in braid-bench)
        torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    tps = B * T / med
    ltc = layers * T * width
    peak = a.peak_tflops * 1e12
    mfu, hfu = tps * (6 * n_params + 12 * ltc) / peak, tps * (6 * n_params + 14 * ltc) / peak
    mem = torch.cuda.max_memory_reserved() / 2**30
    label = "torch.compile" if a.compile else "torch eager"
    print(f"torch-reference {a.preset} | {label} | B={B}, T={T} | {tps:.0f} tok/s | ms/step median {med*1e3:.2f} "
          f"min {min(times)*1e3:.2f} max {max(times)*1e3:.2f} | MFU {mfu*100:.1f}% HFU {hfu*100:.1f}% | "
          f"peak memory {mem:.2f} GiB reserved | loss {loss.item():.3f} | N = {n_params/1e6:.1f}M", flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps({"label": a.preset, "layout": label, "gpus": 1, "micro_batch": B, "seq_len": T,
                                "params": n_params, "tokens_per_s": tps, "tokens_per_s_per_gpu": tps,
                                "ms_median": med * 1e3, "mfu": mfu, "hfu": hfu, "peak_allocator_gib": mem}) + "\n")


if __name__ == "__main__":
    main()
