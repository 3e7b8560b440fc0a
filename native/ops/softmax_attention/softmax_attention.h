// Softmax attention (the teacher of the transfer, SPEC sec. 4), causal by default. Parameters in
// the style of flash-attention's flash.h: raw pointers and sizes, no framework types.
//
// Per (b, h), q head h reading kv head h / (H / Hkv) (GQA):
//   s_ni = scale * q_n . k_i,   i <= n when causal, every i otherwise
//   y_n  = sum_i softmax_i(s_n)_i v_i,   lse_n = log sum_i exp(s_ni)
//
// Layouts (contiguous, row-major), element type `dtype` (f64 or f32):
//   q [B, H, T, d]   k [B, Hkv, T, d]   v [B, Hkv, T, dv]   y [B, H, T, dv]
// lse [B, H, T] has the accumulator type accum_dtype(dtype) (f64 for f64, else f32).
// Accumulation is in f64. Flash-style: no T x T buffer in either direction; the backward
// recomputes the probabilities from lse and uses D_n = dy_n . y_n.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct SoftmaxAttentionParams {
  DType dtype = DType::F32;
  int64_t batch = 0, heads = 0, kv_heads = 0, seqlen = 0;
  int64_t head_dim = 0, value_dim = 0;
  double scale = 0.0;  // 0 means 1/sqrt(head_dim)
  bool causal = true;

  const void* q = nullptr;  // [B, H, T, d]
  const void* k = nullptr;  // [B, Hkv, T, d]
  const void* v = nullptr;  // [B, Hkv, T, dv]
  void* y = nullptr;        // [B, H, T, dv]
  void* lse = nullptr;      // [B, H, T], accumulator dtype; may be null for a forward-only call
};

struct SoftmaxAttentionGradParams {
  SoftmaxAttentionParams fwd;  // the forward's inputs and its outputs y, lse (read only here)
  const void* dy = nullptr;    // [B, H, T, dv]
  void* dq = nullptr;          // [B, H, T, d]
  void* dk = nullptr;          // [B, Hkv, T, d]
  void* dv = nullptr;          // [B, Hkv, T, dv]
};

// CPU kernels, dtype f64 or f32 (std::invalid_argument otherwise). The backward overwrites
// dq, dk, dv; it is parallel over (batch, kv head), so the GQA sums into dk, dv are race-free
// and deterministic.
void softmax_attention_forward_cpu(const SoftmaxAttentionParams& p);
void softmax_attention_backward_cpu(const SoftmaxAttentionGradParams& p);

#ifdef HA_WITH_CUDA
// CUDA kernels (softmax_attention.cu): dtype bf16, f16 or f32 (lse is f32 for all three);
// head_dim, value_dim in [1, 256]. Tensor-core path for bf16/f16 with head_dim == value_dim in
// {64, 128} (16-byte aligned pointers), fp32 SIMT path otherwise. Deterministic (no atomics);
// the backward allocates B*H*T floats of stream-ordered scratch. `stream` is a cudaStream_t.
// Errors throw ha::Error (ErrorCode::Device for CUDA failures).
void softmax_attention_forward_cuda(const SoftmaxAttentionParams& p, void* stream);
void softmax_attention_backward_cuda(const SoftmaxAttentionGradParams& p, void* stream);
#endif

}  // namespace ha
