#!/usr/bin/env python3
"""Generate the golden GPT-2 reference fixture tests/reference/gpt2_tiny.h5.

A tiny GPT-2 (V=96, Vp=128, L=2, NH=4, C=48, T=32, B=4) is written out
explicitly here, following Braid's parameter layout. The script saves the
float32 initial parameters, one batch, and float64-computed reference values
(logits, loss, every parameter gradient) plus the losses and pre-clip gradient
norms of 10 AdamW steps. It needs only CPU torch and h5py.

Usage:
    python3 tests/reference/make_reference.py --out tests/reference/gpt2_tiny.h5
"""

import argparse
import math
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------
# Configuration (must match the C++ tests that read the fixture)
V = 96          # real vocabulary
Vp = 128        # padded vocabulary (rows of wte)
L = 2           # layers
NH = 4          # heads
C = 48          # channels
HS = C // NH    # head size (12)
T = 32          # sequence length (== rows of wpe)
B = 4           # batch size

LR = 1e-3
BETA1 = 0.9
BETA2 = 0.95
EPS = 1e-8
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 1.0
STEPS = 10

INIT_SEED = 1337
DATA_SEED = 4242
LN_EPS = 1e-5
IGNORE_INDEX = -1
IGNORED = [(1, 5), (3, 0)]  # (b, t) positions of targets set to -1


def param_shapes():
    """Ordered dict-like list of (name, saved shape)."""
    shapes = [("wte", (Vp, C)), ("wpe", (T, C))]
    for l in range(L):
        p = f"h.{l}."
        shapes += [
            (p + "ln1.w", (C,)),
            (p + "ln1.b", (C,)),
            (p + "attn.qkv.w", (3, C, C)),
            (p + "attn.qkv.b", (3, C)),
            (p + "attn.proj.w", (C, C)),
            (p + "attn.proj.b", (C,)),
            (p + "ln2.w", (C,)),
            (p + "ln2.b", (C,)),
            (p + "mlp.fc.w", (4 * C, C)),
            (p + "mlp.fc.b", (4 * C,)),
            (p + "mlp.proj.w", (C, 4 * C)),
            (p + "mlp.proj.b", (C,)),
        ]
    shapes += [("lnf.w", (C,)), ("lnf.b", (C,))]
    return shapes


def decays(name):
    """True for the parameters that receive weight decay."""
    return name in ("wte", "wpe") or name.endswith(
        ("attn.qkv.w", "attn.proj.w", "mlp.fc.w", "mlp.proj.w"))


def init_params(seed):
    """GPT-2-like seeded init; every tensor is rounded to float32."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in param_shapes():
        z = torch.randn(shape, generator=g, dtype=torch.float64)
        if name.endswith(("ln1.w", "ln2.w")) or name == "lnf.w":
            t = 1.0 + 0.1 * z                       # layernorm gain
        elif name.endswith(("attn.proj.w", "mlp.proj.w")):
            t = (0.02 / math.sqrt(2 * L)) * z       # residual projections
        else:
            t = 0.02 * z                            # other weights, all biases
        if name == "wte":
            t[V:] = 0.0                             # padded vocab rows
        out[name] = t.to(torch.float32)
    return out


def make_batch(seed):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (B, T + 1), generator=g, dtype=torch.int64)
    inputs = tokens[:, :T].clone()
    targets = tokens[:, 1:].clone()
    for b, t in IGNORED:
        targets[b, t] = IGNORE_INDEX
    return tokens, inputs, targets


# ----------------------------------------------------------------------------
# Model, written against the saved parameter layout


def layernorm(x, w, b):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)   # biased variance
    return (x - mean) / torch.sqrt(var + LN_EPS) * w + b


def linear(x, w, b):
    """x [..., in] @ w[out, in]^T + b[out]."""
    return x @ w.transpose(0, 1) + b


def attention(x, P, p):
    Bx, Tx, _ = x.shape
    wqkv = P[p + "attn.qkv.w"].reshape(3 * C, C)
    bqkv = P[p + "attn.qkv.b"].reshape(3 * C)
    qkv = linear(x, wqkv, bqkv)                         # [B, T, 3C]
    q, k, v = qkv.split(C, dim=-1)                      # consecutive C groups

    def heads(z):                                       # [B, NH, T, HS]
        return z.reshape(Bx, Tx, NH, HS).permute(0, 2, 1, 3)

    q, k, v = heads(q), heads(k), heads(v)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(HS)  # [B, NH, T, T]
    causal = torch.ones(Tx, Tx, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    att = torch.softmax(scores, dim=-1)
    y = (att @ v).permute(0, 2, 1, 3).reshape(Bx, Tx, C)
    return linear(y, P[p + "attn.proj.w"], P[p + "attn.proj.b"])


def mlp(x, P, p):
    h = linear(x, P[p + "mlp.fc.w"], P[p + "mlp.fc.b"])
    h = F.gelu(h, approximate="tanh")
    return linear(h, P[p + "mlp.proj.w"], P[p + "mlp.proj.b"])


def forward(P, inputs, targets):
    """Returns (logits over the V real tokens [B,T,V], mean loss)."""
    Tx = inputs.shape[1]
    x = P["wte"][inputs] + P["wpe"][:Tx]
    for l in range(L):
        p = f"h.{l}."
        x = x + attention(layernorm(x, P[p + "ln1.w"], P[p + "ln1.b"]), P, p)
        x = x + mlp(layernorm(x, P[p + "ln2.w"], P[p + "ln2.b"]), P, p)
    x = layernorm(x, P["lnf.w"], P["lnf.b"])
    logits_padded = x @ P["wte"].transpose(0, 1)        # [B, T, Vp], tied
    logits = logits_padded[..., :V]
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="mean")
    return logits, loss


def leaf64(params32):
    return {n: t.to(torch.float64).clone().requires_grad_(True)
            for n, t in params32.items()}


# ----------------------------------------------------------------------------


def finite_difference_check(params32, inputs, targets, grads):
    """Spot-check a few gradient entries against central differences."""
    g = torch.Generator().manual_seed(7)
    worst = 0.0
    with torch.no_grad():
        P = {n: t.to(torch.float64).clone() for n, t in params32.items()}
        for name, shape in param_shapes():
            n = int(np.prod(shape))
            hi = V * C if name == "wte" else n    # skip padded rows (grad 0)
            for _ in range(2):
                i = int(torch.randint(0, hi, (1,), generator=g))
                flat = P[name].view(-1)
                h = 1e-6
                old = flat[i].item()
                flat[i] = old + h
                lp = forward(P, inputs, targets)[1].item()
                flat[i] = old - h
                lm = forward(P, inputs, targets)[1].item()
                flat[i] = old
                fd = (lp - lm) / (2 * h)
                an = grads[name].reshape(-1)[i].item()
                err = abs(fd - an) / (1e-6 + abs(an))
                worst = max(worst, err)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "gpt2_tiny.h5"))
    args = ap.parse_args()

    torch.set_num_threads(min(8, torch.get_num_threads()))
    params32 = init_params(INIT_SEED)
    tokens, inputs, targets = make_batch(DATA_SEED)

    # --- reference forward/backward in float64 --------------------------------
    P = leaf64(params32)
    logits, loss = forward(P, inputs, targets)
    loss.backward()
    grads = {n: P[n].grad.detach().clone() for n in P}
    assert torch.all(grads["wte"][V:] == 0), "padded wte rows got gradient"
    loss0 = loss.item()

    worst = finite_difference_check(params32, inputs, targets, grads)
    print(f"finite-difference spot check: worst |fd - grad| / (1e-6 + |grad|)"
          f" = {worst:.3e}")
    assert worst < 1e-3, "autograd disagrees with finite differences"

    # --- 10 AdamW steps in float64 ---------------------------------------------
    Q = leaf64(params32)
    decay = [Q[n] for n, _ in param_shapes() if decays(n)]
    no_decay = [Q[n] for n, _ in param_shapes() if not decays(n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=(BETA1, BETA2), eps=EPS, foreach=False)
    ordered = [Q[n] for n, _ in param_shapes()]
    losses, grad_norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        _, l = forward(Q, inputs, targets)
        l.backward()
        norm = torch.nn.utils.clip_grad_norm_(ordered, MAX_GRAD_NORM)
        opt.step()
        losses.append(l.item())
        grad_norms.append(norm.item())
    assert abs(losses[0] - loss0) <= 1e-12 * abs(loss0), (losses[0], loss0)

    # --- write ---------------------------------------------------------------
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with h5py.File(args.out, "w") as f:
        for k, v in dict(V=V, Vp=Vp, L=L, NH=NH, C=C, T=T, B=B).items():
            f.attrs[k] = np.int64(v)
        for k, v in dict(lr=LR, beta1=BETA1, beta2=BETA2, eps=EPS,
                         weight_decay=WEIGHT_DECAY,
                         max_grad_norm=MAX_GRAD_NORM).items():
            f.attrs[k] = np.float64(v)
        f.attrs["steps"] = np.int64(STEPS)
        f.attrs["description"] = (
            "Braid tiny GPT-2 golden reference, generated by "
            "tests/reference/make_reference.py with torch "
            f"{torch.__version__}. params/* are the float32 initial weights; "
            "logits, loss and grads/* were computed in float64 from them on "
            "the batch inputs/targets (ignore_index -1, mean over non-ignored "
            "tokens); losses/grad_norms are from 10 float64 AdamW steps "
            "(decay only on wte, wpe, attn.qkv.w, attn.proj.w, mlp.fc.w, "
            "mlp.proj.w; clip_grad_norm_ to max_grad_norm before each step; "
            "losses[i] and grad_norms[i] (pre-clip) are before step i).")
        f.create_dataset("tokens", data=tokens.numpy().astype(np.int32))
        f.create_dataset("inputs", data=inputs.numpy().astype(np.int32))
        f.create_dataset("targets", data=targets.numpy().astype(np.int32))
        for name, shape in param_shapes():
            f.create_dataset("params/" + name,
                             data=params32[name].numpy().astype(np.float32))
            g = grads[name].numpy().astype(np.float32)
            assert g.shape == shape
            f.create_dataset("grads/" + name, data=g)
        f.create_dataset("logits",
                         data=logits.detach().numpy().astype(np.float32))
        f.create_dataset("loss", data=np.float64(loss0))
        f.create_dataset("losses", data=np.array(losses, dtype=np.float64))
        f.create_dataset("grad_norms",
                         data=np.array(grad_norms, dtype=np.float64))

    n_params = sum(int(np.prod(s)) for _, s in param_shapes())
    print(f"torch {torch.__version__}, h5py {h5py.__version__}")
    print(f"parameters: {n_params}")
    print(f"loss: {loss0!r}  (ln V = {math.log(V)!r})")
    print("losses:", [repr(x) for x in losses])
    print("grad_norms:", [repr(x) for x in grad_norms])
    print(f"wrote {args.out}: {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
