// Internal entry of the CUDA GEMM (matmul.cu) for other CUDA ops of the Llama runtime (the
// chunked cross-entropy): the same product as matmul_cuda, with the output dtype chosen apart
// from the operands' (c_dtype = p.dtype, or F32 to accumulate 16-bit products in fp32 across
// calls without rounding C each time).
#pragma once
#include "core/dtype.h"
#include "ops/matmul/matmul.h"

namespace ha {

// A, B in p.dtype (bf16, f16 or f32); C in c_dtype (p.dtype or F32). Semantics of matmul_cuda.
void gemm_cuda_ex(const MatmulParams& p, DType c_dtype, void* stream);

// Kernel selection, for the dev harnesses (dev/cuda/matmul_check.cu) to check every path on one
// card: Auto picks the fastest that applies (sm90 wgmma on Hopper, else mma.sync, else SIMT);
// Mma skips the Hopper kernel; Simt forces the fp32 SIMT kernel. Process-wide.
enum class GemmPath { Auto = 0, Mma = 1, Simt = 2 };
void gemm_cuda_force_path(GemmPath path);
// The kernel the latest call ran: "sm90-wgmma", "mma-sync", "simt" (or "none").
const char* gemm_cuda_last_path();

}  // namespace ha
