// General matrix product for the Llama runtime (linear layers, their backward, the lm_head).
// Parameters in the style of flash-attention's flash.h: raw pointers and sizes, no framework types.
//
// For each batch item b in [0, batch):
//   C_b = alpha * op(A_b) op(B_b) + beta * C_b,   op(X) = X or X^T
// with op(A) [M, K], op(B) [K, N], C [M, N]. Row-major storage:
//   A is [M, K] (trans_a = false) or [K, M] (trans_a = true), row length lda
//   B is [K, N] (trans_b = false) or [N, K] (trans_b = true), row length ldb
//   C is [M, N], row length ldc
// lda/ldb/ldc = 0 means packed (the stored row length). Batch strides are in elements;
// -1 means packed (rows * ld of one item), 0 repeats the same matrix for every item (e.g. a
// shared weight; C must not use 0 with batch > 1).
//
// Linear layer y = x W^T (x [N, in], W [out, in]):  y = mm(x, W, trans_b)
//   backward dx = dy W = mm(dy, W),  dW (+)= dy^T x = mm(dy, x, trans_a) with beta 0 (or 1).
//
// dtype f64 or f32 (std::invalid_argument otherwise); A, B, C share it. Products are
// accumulated in f64 over the whole K; C is read only when beta != 0 (so it may hold NaN for
// beta = 0, as in BLAS) and written once, as alpha * acc + beta * C rounded to the dtype.
// Cache-blocked with packed f64 panels, an AVX2/FMA micro-kernel picked at run time on x86-64
// (portable kernel elsewhere), parallel over blocks of C: every element of C is summed in the
// same order whatever the thread count, so results are bit-identical for any thread count.
// C must not overlap A or B.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct MatmulParams {
  DType dtype = DType::F32;
  int64_t batch = 1;
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  double alpha = 1.0, beta = 0.0;

  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  int64_t lda = 0, ldb = 0, ldc = 0;                   // 0: packed
  int64_t stride_a = -1, stride_b = -1, stride_c = -1;  // elements per batch item; -1: packed, 0: shared
};

void matmul_cpu(const MatmulParams& p);

// Name of the micro-kernel matmul_cpu uses on this machine ("avx2-fma" or "generic").
const char* matmul_cpu_kernel_name();

#ifdef HA_WITH_CUDA
// CUDA product (matmul.cu): dtype bf16, f16 or f32 for A, B and C, fp32 accumulation (alpha,
// beta applied in fp32). bf16/f16 run on the tensor cores when A and B are 16-byte aligned with
// lda, ldb and batch strides multiples of 8 elements (any M, N, K): wgmma + TMA on Hopper
// (sm_90a code, matmul_sm90.cu), mma.sync + cp.async elsewhere; f32, and 16-bit operands not so
// aligned, run on an fp32 SIMT path. Deterministic.
// `stream` is a cudaStream_t; CUDA failures throw ha::Error (ErrorCode::Device).
void matmul_cuda(const MatmulParams& p, void* stream);
#endif

}  // namespace ha
