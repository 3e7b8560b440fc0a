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

}  // namespace ha
