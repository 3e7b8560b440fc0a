"""PyTorch eager peer for `npm run bench -- --model` (run on the GPU machine).

The same ~110M-parameter Llama as bench/model.ts (MODEL_100M: 12 layers, width 768, 12 heads,
4 kv heads, SwiGLU 2048, vocabulary 16384, RMSNorm, RoPE theta 1e4, untied lm_head), bf16
parameters, every parameter trainable, B = 8, T = 1024: forward + next-token cross-entropy +
backward, eager (no torch.compile), attention through F.scaled_dot_product_attention (causal,
GQA by repeating kv heads: what transformers' default "sdpa" attention runs). Wall-clock median
per step after warm-up, each step ending with loss.item() as bench/model.ts does. Prints JSON
for `--model-peers`.
"""
import json
import time

import torch
import torch.nn.functional as F

V, D, L, H, HKV, FF, B, T = 16384, 768, 12, 12, 4, 2048, 8, 1024
HD = D // H
EPS = 1e-5


def rms(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * w


def rope_tables(device):
    inv = 1.0 / (10000 ** (torch.arange(0, HD, 2, device=device, dtype=torch.float32) / HD))
    ang = torch.arange(T, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([ang, ang], dim=-1)
    return emb.cos().to(torch.bfloat16), emb.sin().to(torch.bfloat16)


def rotate(x, cos, sin):
    x1, x2 = x[..., : HD // 2], x[..., HD // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def main():
    dev = "cuda"
    torch.manual_seed(0)
    p = lambda *s: torch.nn.Parameter(torch.randn(*s, device=dev, dtype=torch.bfloat16) * 0.02)
    emb, head = p(V, D), p(V, D)
    layers = [dict(n1=torch.nn.Parameter(torch.ones(D, device=dev, dtype=torch.bfloat16)), q=p(H * HD, D), k=p(HKV * HD, D), v=p(HKV * HD, D),
                   o=p(D, H * HD), n2=torch.nn.Parameter(torch.ones(D, device=dev, dtype=torch.bfloat16)), g=p(FF, D), u=p(FF, D), d=p(D, FF)) for _ in range(L)]
    norm = torch.nn.Parameter(torch.ones(D, device=dev, dtype=torch.bfloat16))
    params = [emb, head, norm] + [t for l in layers for t in l.values()]
    cos, sin = rope_tables(dev)
    ids = torch.randint(0, V, (B, T), device=dev)

    def step():
        for t in params:
            t.grad = None
        x = F.embedding(ids, emb)
        for l in layers:
            h = rms(x, l["n1"])
            q = F.linear(h, l["q"]).view(B, T, H, HD).transpose(1, 2)
            k = F.linear(h, l["k"]).view(B, T, HKV, HD).transpose(1, 2)
            v = F.linear(h, l["v"]).view(B, T, HKV, HD).transpose(1, 2)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            k = k.repeat_interleave(H // HKV, dim=1)
            v = v.repeat_interleave(H // HKV, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + F.linear(y.transpose(1, 2).reshape(B, T, D), l["o"])
            h = rms(x, l["n2"])
            x = x + F.linear(F.silu(F.linear(h, l["g"])) * F.linear(h, l["u"]), l["d"])
        logits = F.linear(rms(x, norm), head)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V).float(), ids[:, 1:].reshape(-1))
        loss.backward()
        return loss.item()

    for _ in range(3):
        step()
    times = []
    for _ in range(8):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    ms = sorted(times)[len(times) // 2]
    n = sum(t.numel() for t in params)
    print(json.dumps({"stepMs": ms, "tokensPerSecond": B * T / (ms / 1000), "params": n, "torch": torch.__version__,
                      "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
