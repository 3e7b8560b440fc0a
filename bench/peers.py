"""PyTorch peers for `npm run bench` (run on the GPU machine, where PyTorch is installed).

Measures, on the benchmark's shapes (bf16, d = F = 128, w = 64, mode hybrid, sliding window):
  flex_window_*          FlexAttention sliding-window causal attention alone (torch.compile)
  torch_chunked_hybrid_* the SPEC hybrid (eq. 7) as a chunked PyTorch program (torch.compile)
  naive_hybrid_fwd       the quadratic reference (T x T), where it fits in memory
Each as forward (_fwd) and forward+backward (_fwdbwd) median milliseconds over CUDA events.
Prints JSON keyed like bench/run.ts ("B4_H32_T2048"); pass the file to `npm run bench -- --peers`.
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from cuda_timing import median_ms  # bench/ is on sys.path when run as python3 bench/peers.py

WINDOW = 64
SHAPES = [(4, 32, 2048), (1, 32, 16384)]
D = FD = 128


def chunked_hybrid(q, k, v, fq, fk, gamma, w):
    """SPEC eq. 7, sliding geometry, lambda = 1, in chunks of w (T a multiple of w)."""
    B, H, T, d = q.shape
    n = T // w
    scale = 1.0 / math.sqrt(d)
    qc, kc, vc = (x.float().view(B, H, n, w, -1) for x in (q, k, v))
    fqc, fkc = (x.float().view(B, H, n, w, -1) for x in (fq, fk))
    # keys of the previous and the current chunk
    pad = lambda x: torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, :-1]], dim=2)
    k2 = torch.cat([pad(kc), kc], dim=3)
    v2 = torch.cat([pad(vc), vc], dim=3)
    fk2 = torch.cat([pad(fkc), fkc], dim=3)
    row = torch.arange(w, device=q.device).view(w, 1) + w  # position of the query inside [prev, cur]
    col = torch.arange(2 * w, device=q.device).view(1, 2 * w)
    chunk_idx = torch.arange(n, device=q.device).view(n, 1, 1)
    valid = (col >= w) | (chunk_idx > 0)  # the previous chunk of chunk 0 does not exist
    win = (col <= row) & (col > row - w) & valid
    lin = (col <= row - w) & valid
    s = torch.einsum("bhnid,bhnjd->bhnij", qc, k2) * scale
    s = s.masked_fill(~win, float("-inf"))
    c = s.amax(dim=-1, keepdim=True)
    p = torch.exp(s - c) * gamma.view(1, H, 1, 1, 1)
    a = torch.einsum("bhnif,bhnjf->bhnij", fqc, fk2) * lin
    # inter-chunk state: chunks <= current - 2 (exclusive prefix, shifted by one more chunk)
    kv = torch.einsum("bhnjf,bhnjd->bhnfd", fkc, vc)
    ks = fkc.sum(dim=3)
    S = torch.cumsum(kv, dim=2) - kv
    Z = torch.cumsum(ks, dim=2) - ks
    S = torch.cat([torch.zeros_like(S[:, :, :1]), S[:, :, :-1]], dim=2)
    Z = torch.cat([torch.zeros_like(Z[:, :, :1]), Z[:, :, :-1]], dim=2)
    num = torch.einsum("bhnij,bhnjd->bhnid", p + a, v2) + torch.einsum("bhnif,bhnfd->bhnid", fqc, S)
    den = (p + a).sum(-1, keepdim=True) + torch.einsum("bhnif,bhnf->bhni", fqc, Z).unsqueeze(-1)
    y = torch.where(den > 0, num / den, torch.zeros_like(num))
    return y.view(B, H, T, -1).to(q.dtype)


def naive_hybrid(q, k, v, fq, fk, gamma, w):
    B, H, T, d = q.shape
    idx = torch.arange(T, device=q.device)
    win = (idx.view(T, 1) >= idx.view(1, T)) & (idx.view(1, T) > idx.view(T, 1) - w)
    lin = idx.view(1, T) <= idx.view(T, 1) - w
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(d)
    s = s.masked_fill(~win, float("-inf"))
    p = torch.exp(s - s.amax(-1, keepdim=True)) * gamma.view(1, H, 1, 1)
    a = (fq.float() @ fk.float().transpose(-1, -2)) * lin
    y = ((p + a) @ v.float()) / (p + a).sum(-1, keepdim=True)
    return y.to(q.dtype)


def main():
    torch.manual_seed(0)
    dev = "cuda"
    out = {"card": torch.cuda.get_device_name(), "torch": torch.__version__}
    flex = torch.compile(flex_attention)
    hybrid = torch.compile(chunked_hybrid)
    for B, H, T in SHAPES:
        key = f"B{B}_H{H}_T{T}"
        r = {}
        mk = lambda *shape, **kw: torch.randn(*shape, device=dev, dtype=torch.bfloat16, **kw)
        q, k, v = (mk(B, H, T, D, requires_grad=True) for _ in range(3))
        fq, fk = (torch.softmax(mk(B, H, T, FD), -1).requires_grad_(True) for _ in range(2))
        gamma = torch.full((H,), 0.1, device=dev, requires_grad=True)
        dy = mk(B, H, T, D)

        def sliding(b, h, qi, ki):
            return (qi >= ki) & (qi - ki < WINDOW)

        mask = create_block_mask(sliding, B=None, H=None, Q_LEN=T, KV_LEN=T, device=dev)
        r["flex_window_fwd"] = median_ms(lambda: flex(q, k, v, block_mask=mask))
        r["flex_window_fwdbwd"] = median_ms(lambda: flex(q, k, v, block_mask=mask).backward(dy))
        r["torch_chunked_hybrid_fwd"] = median_ms(lambda: hybrid(q, k, v, fq, fk, gamma, WINDOW))
        r["torch_chunked_hybrid_fwdbwd"] = median_ms(lambda: hybrid(q, k, v, fq, fk, gamma, WINDOW).backward(dy))
        # the chunked program equals the quadratic reference (checked where the latter fits)
        try:
            with torch.no_grad():
                ref = naive_hybrid(q, k, v, fq, fk, gamma, WINDOW)
                got = chunked_hybrid(q, k, v, fq, fk, gamma, WINDOW)
                r["chunked_vs_naive_max_err"] = float((ref.float() - got.float()).abs().max())
                r["naive_hybrid_fwd"] = median_ms(lambda: naive_hybrid(q, k, v, fq, fk, gamma, WINDOW), runs=10, warmup=2)
            del ref, got
        except torch.OutOfMemoryError:
            r["naive_hybrid_fwd"] = None
        torch.cuda.empty_cache()
        out[key] = r
        print(key, r, file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
