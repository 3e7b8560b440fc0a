"""torch.matmul (cuBLAS) peer of `npm run bench -- --gemm` (run on the GPU machine, with PyTorch).

Times bf16 torch.matmul on the shapes and layouts of bench/gemm.ts (nn: a @ b; nt: a @ b.T with
b [N, K]; tn: a.T @ b with a [K, M]; the transposes are views, cuBLAS takes them as flags),
median of CUDA-event intervals after a warm-up, on uniform(-1, 1) inputs (never zeros).
Prints JSON keyed like bench/gemm.ts ("M4096_N4096_K4096_nn": {"ms": ..., "tflops": ...});
save it and pass the file to `npm run bench -- --gemm --gemm-peers FILE`.
"""
import json
import sys

import torch

from cuda_timing import median_ms  # bench/ is on sys.path when run as python3 bench/gemm_peer.py

SHAPES = [
    (4096, 4096, 4096, "nn"),
    (8192, 8192, 4096, "nn"),
    (4096, 4096, 4096, "nt"),
    (8192, 8192, 4096, "nt"),
    (4096, 4096, 4096, "tn"),
    (8192, 8192, 4096, "tn"),
]


def main():
    if not torch.cuda.is_available():
        print("gemm_peer.py: no CUDA device", file=sys.stderr)
        sys.exit(1)
    out = {"_card": torch.cuda.get_device_name(), "_torch": torch.__version__}
    for m, n, k, layout in SHAPES:
        gen = torch.Generator(device="cuda").manual_seed(m + n + k)
        a = (torch.rand(((k, m) if layout == "tn" else (m, k)), device="cuda", generator=gen) * 2 - 1).to(torch.bfloat16)
        b = (torch.rand(((n, k) if layout == "nt" else (k, n)), device="cuda", generator=gen) * 2 - 1).to(torch.bfloat16)
        if layout == "nn":
            fn = lambda: torch.matmul(a, b)
        elif layout == "nt":
            fn = lambda: torch.matmul(a, b.t())
        else:
            fn = lambda: torch.matmul(a.t(), b)
        ms = median_ms(fn, runs=30, warmup=5)
        out[f"M{m}_N{n}_K{k}_{layout}"] = {"ms": ms, "tflops": 2 * m * n * k / (ms * 1e-3) / 1e12}
        del a, b
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
