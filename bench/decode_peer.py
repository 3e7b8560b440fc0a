"""Eager PyTorch peer of `npm run bench -- --decode` (run on the GPU machine, with PyTorch).

One single-token decode step of hybrid attention (mode hybrid, sliding window, lambda one) for a
batch of sequences at the same position past the window, written the way one would in eager
PyTorch, with the state of bench/decode.ts: S [B, H, F, dv] and z [B, H, F] in fp32, the
window's keys / values / feature keys as a ring of w slots in bf16, bf16 q, k, v, fq, fk:
  the new token enters the ring (slot pos % w, which held pos - w: already folded);
  softmax over the w window tokens (fp32), y = (gamma sum e v + fq^T S) / (gamma sum e + fq.z);
  the token pos + 1 - w, which leaves the window for the next position, folds into S and z.
Shapes of bench/decode.ts: H = Hkv = 32, d = F = dv = 128, w = 64, B in {1, 16, 64, 256}.
Median of CUDA-event intervals after a warm-up (bench/cuda_timing.py). Prints JSON keyed like
bench/decode.ts ("B64": {"ms": ...}); save it and pass it to the decode bench with
--decode-peers FILE.
"""
import json
import sys

import torch

from cuda_timing import median_ms  # bench/ is on sys.path when run as python3 bench/decode_peer.py

H, D, F, DV, W = 32, 128, 128, 128, 64
BATCHES = [1, 16, 64, 256]


class EagerDecode:
    def __init__(self, B, gen):
        dev, bf = "cuda", torch.bfloat16
        r = lambda *s: (torch.rand(*s, device=dev, generator=gen) * 2 - 1)
        p = lambda *s: (torch.rand(*s, device=dev, generator=gen) + 0.5) / 64  # positive features
        self.S = (p(B, H, F, DV) * r(B, H, F, DV)).float()
        self.z = p(B, H, F).float() * 100
        self.ring_k = r(B, H, W, D).to(bf)
        self.ring_v = r(B, H, W, DV).to(bf)
        self.ring_fk = p(B, H, W, F).to(bf)
        self.q, self.k, self.v = r(B, H, D).to(bf), r(B, H, D).to(bf), r(B, H, DV).to(bf)
        self.fq, self.fk = p(B, H, F).to(bf), p(B, H, F).to(bf)
        self.gamma = torch.full((H, 1), 0.1, device=dev)
        self.scale = D ** -0.5
        self.pos = 2 * W  # past the window: the fold runs every step

    def step(self):
        slot, leave = self.pos % W, (self.pos + 1) % W
        self.ring_k[:, :, slot] = self.k
        self.ring_v[:, :, slot] = self.v
        self.ring_fk[:, :, slot] = self.fk
        s = torch.einsum("bhd,bhwd->bhw", self.q.float(), self.ring_k.float()) * self.scale
        c = s.amax(-1, keepdim=True)
        e = torch.exp(s - c)
        num = self.gamma * torch.einsum("bhw,bhwd->bhd", e, self.ring_v.float())
        den = self.gamma * e.sum(-1, keepdim=True)
        fq = self.fq.float()
        num = num + torch.einsum("bhf,bhfd->bhd", fq, self.S)
        den = den + (fq * self.z).sum(-1, keepdim=True)
        y = (num / den).to(torch.bfloat16)
        fkj = self.ring_fk[:, :, leave].float()
        self.S.add_(fkj.unsqueeze(-1) * self.ring_v[:, :, leave].float().unsqueeze(-2))
        self.z.add_(fkj)
        self.pos += 1
        return y, c, den


def main():
    if not torch.cuda.is_available():
        print("decode_peer.py: no CUDA device", file=sys.stderr)
        sys.exit(1)
    out = {"_card": torch.cuda.get_device_name(), "_torch": torch.__version__,
           "_what": "eager PyTorch hybrid decode step, bf16 tokens, fp32 S/z, window ring; median CUDA-event ms"}
    with torch.inference_mode():
        for B in BATCHES:
            gen = torch.Generator(device="cuda").manual_seed(B)
            m = EagerDecode(B, gen)
            out[f"B{B}"] = {"ms": median_ms(m.step, runs=200, warmup=20)}
            del m
            torch.cuda.empty_cache()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
