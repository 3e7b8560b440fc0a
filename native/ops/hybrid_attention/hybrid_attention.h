// Hybrid attention (SPEC sec. 2): sliding-window softmax plus linear attention over older tokens,
// one shared normaliser. Parameters in the style of flash-attention's flash.h: raw pointers and
// sizes, no framework types, so the CPU and CUDA kernels and the binding share one struct.
//
// Layouts (all contiguous, row-major):
//   q  [B, H,   T, d]     k [B, Hkv, T, d]     v [B, Hkv, T, dv]
//   fq [B, H,   T, F]     fk [B, H,  T, F]     (feature maps are per q head)
//   gamma [H]  keep [B, H] (optional SSD keep mask, values 0 or 1: gamma_eff = gamma * keep; keep = 0
//              switches the softmax branch off in every mode, so swa and sinks then output 0)
//   y  [B, H,   T, dv]    stats c, den_swa, den_la [B, H, T]
// q, k, v, fq, fk, y, dy and their gradients have element type `dtype`.
// gamma, keep, the statistics and dgamma have the accumulator type accum_dtype(dtype):
// f64 when dtype is f64, otherwise f32.
// GQA: q head h reads kv head h / (H / Hkv).
//
// Semantics fixed by the CPU reference (hybrid_attention_cpu.cpp; the CUDA kernels must match):
//   * gamma_eff = gamma * keep. With LambdaKind::Affine, lambda = 1 - gamma uses the UN-masked
//     gamma; dgamma = keep * dL/dgamma_eff - [Affine] dL/dlambda. The golden fixtures use
//     lambda = 1.
//   * Statistics in every mode: c = max over the window (0 in la, la-full, none), den_swa =
//     gamma_eff * sum exp(s - c) in hybrid/overlap and the plain softmax denominator
//     sum exp(s - c) in swa/sinks (0 otherwise), den_la = lambda * sum fq.fk over the LA set
//     (0 in swa, sinks, none). A row with den_swa + den_la == 0 has y = 0 and zero gradient.
//   * c does not cancel in hybrid/overlap: its gradient goes to the arg-max key (first on ties).
//   * Gradients of inputs a mode does not use are exactly 0 (dgamma is 0 except in hybrid and
//     overlap: gamma does not enter swa/sinks, and lambda cancels in la/la-full).
//   * scale <= 0 means 1/sqrt(head_dim). window >= seqlen is allowed (pure softmax, empty LA set
//     for hybrid/la).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

enum class HybridMode : int32_t {
  Hybrid = 0,   // eq. 7: gamma * window softmax + lambda * LA over Lin(n), one normaliser
  Swa = 1,      // exact windowed softmax
  La = 2,       // LA over Lin(n) alone
  LaFull = 3,   // LA over the whole prefix j <= n
  Overlap = 4,  // like Hybrid, LA over j <= n
  Sinks = 5,    // softmax over the first `sinks` tokens
  None = 6,     // y = 0
};

enum class WindowGeometry : int32_t {
  Sliding = 0,   // Win(n) = (n-w, n],  Lin(n) = [0, n-w]
  Terraced = 1,  // blocks of w: Win(n) = blocks floor(n/w)-1 and floor(n/w) up to n
};

enum class LambdaKind : int32_t { One = 0, Affine = 1 /* lambda = 1 - gamma */ };

struct HybridAttentionParams {
  DType dtype = DType::F32;
  int64_t batch = 0, heads = 0, kv_heads = 0, seqlen = 0;
  int64_t head_dim = 0, value_dim = 0, feature_dim = 0;
  int64_t window = 64;
  int64_t sinks = 8;
  HybridMode mode = HybridMode::Hybrid;
  WindowGeometry geometry = WindowGeometry::Sliding;
  LambdaKind lambda_kind = LambdaKind::One;
  double scale = 0.0;  // softmax scale, 1/sqrt(head_dim) by default

  // inputs
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* fq = nullptr;
  const void* fk = nullptr;
  const void* gamma = nullptr;
  const void* keep = nullptr;  // may be null: keep everything

  // forward outputs (y required; statistics always written, the backward reads them)
  void* y = nullptr;
  void* c = nullptr;        // max_{Win(n)} s_ni (0 where the window is empty or unused)
  void* den_swa = nullptr;  // gamma_eff * sum_{Win} exp(s - c)
  void* den_la = nullptr;   // lambda * sum_{Lin} fq.fk
};

struct HybridAttentionGradParams {
  HybridAttentionParams fwd;  // the forward's inputs, y and statistics (read only here)
  const void* dy = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  void* dfq = nullptr;
  void* dfk = nullptr;
  void* dgamma = nullptr;  // [H], accumulator dtype
};

// CPU kernels: dtype f64 or f32. Chunked/recurrent state scan, O(T (w + F) d), no T x T buffers.
void hybrid_attention_forward_cpu(const HybridAttentionParams& p);
void hybrid_attention_backward_cpu(const HybridAttentionGradParams& p);

// Quadratic reference straight from the formula (tests only).
void hybrid_attention_forward_naive_cpu(const HybridAttentionParams& p);
void hybrid_attention_backward_naive_cpu(const HybridAttentionGradParams& p);

#ifdef HA_WITH_CUDA
// CUDA kernels: dtype bf16, f16 or f32; `stream` is a cudaStream_t.
void hybrid_attention_forward_cuda(const HybridAttentionParams& p, void* stream);
void hybrid_attention_backward_cuda(const HybridAttentionGradParams& p, void* stream);
#endif

}  // namespace ha
