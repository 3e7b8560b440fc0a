// Attention-weight transfer loss (SPEC sec. 4; Hedgehog / HedgeCATs stage 1): cross-entropy
// between the causal softmax teacher and the linear-attention student, LA alone over the full
// prefix. Parameters in the style of flash-attention's flash.h.
//
// Per (b, h) and row n (0-based), with q head h reading kv head h / (H / Hkv):
//   s_ni    = scale * q_n . k_i                       (i <= n)
//   a_ni    = exp(s_ni - m_n) / sum_{j<=n} exp(s_nj - m_n)          teacher (frozen)
//   g_ni    = fq_n . fk_i,   z_n = sum_{j<=n} fk_j,   Z_n = fq_n . z_n
//   ahat_ni = g_ni / Z_n                                             student
//   L_n     = -sum_i a_ni log ahat_ni = log Z_n - sum_i a_ni log g_ni   (since sum_i a_ni = 1)
//   loss    = mean over (b, h, n) of L_n
//
// Clamping (SPEC sec. 3: at >= 1e-12 only where a log is taken). The two logs above are taken of
//   max(g_ni, 1e-12)  and  max(Z_n, 1e-12),
// i.e. each pairwise score fq_n.fk_i is clamped before its log, and the row normaliser fq_n.z_n
// is clamped before its log (Z_n is the unclamped sum of the unclamped g_ni). Nothing else is
// clamped. Gradients follow torch.clamp: they pass where the value is >= 1e-12 and are zero
// where it was clamped. For non-negative feature maps with any positive overlap the clamps are
// inactive and the loss is exactly the formula above.
//
// No T x T buffer: the forward does one online-softmax pass per row, accumulating
// sum_i exp(s_ni - m) log g_ni together with the running prefix sum z_n; the backward stores the
// per-row log-normaliser and 1/Z_n ([T] each) and then, per key i, sums over rows n >= i.
// Cost O(T^2 (d + F)) per (b, h), extra memory O(T + F) per worker.
//
// Layouts (contiguous, row-major), element type `dtype` (f64 or f32):
//   q [B, H, T, d]   k [B, Hkv, T, d]   fq, fk [B, H, T, F]   dfq, dfk [B, H, T, F]
// loss and dloss are scalars of the accumulator type accum_dtype(dtype) (f64 for f64, else f32).
// Accumulation is in f64.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

// The clamp floor applied before each log (see above).
constexpr double kTransferLossLogFloor = 1e-12;

struct TransferLossParams {
  DType dtype = DType::F32;
  int64_t batch = 0, heads = 0, kv_heads = 0, seqlen = 0;
  int64_t head_dim = 0;     // d
  int64_t feature_dim = 0;  // F
  double scale = 0.0;       // teacher softmax scale; 0 means 1/sqrt(head_dim)

  const void* q = nullptr;   // [B, H, T, d]
  const void* k = nullptr;   // [B, Hkv, T, d]
  const void* fq = nullptr;  // [B, H, T, F]
  const void* fk = nullptr;  // [B, H, T, F]
  void* loss = nullptr;      // scalar, accumulator dtype
};

struct TransferLossGradParams {
  TransferLossParams fwd;       // the forward's inputs (loss is not read)
  const void* dloss = nullptr;  // scalar, accumulator dtype: upstream gradient of loss
  void* dfq = nullptr;          // [B, H, T, F]
  void* dfk = nullptr;          // [B, H, T, F]
};

// CPU kernels, dtype f64 or f32 (std::invalid_argument otherwise). Gradients go to fq and fk
// only (the teacher q, k is frozen); dfq and dfk are overwritten. Deterministic: work is split
// over (b, h), and the loss sums the per-(b, h) partials in order.
void transfer_loss_forward_cpu(const TransferLossParams& p);
void transfer_loss_backward_cpu(const TransferLossGradParams& p);

#ifdef HA_WITH_CUDA
// CUDA kernels (transfer_loss.cu): dtype bf16, f16 or f32 for q, k, fq, fk, dfq, dfk; loss and
// dloss are f32 device scalars (accum_dtype). head_dim <= 256, feature_dim <= 512. fp32 math,
// no T x T storage; the loss mean is reduced from per-block partials in a fixed order, and the
// backward uses no atomics (both bitwise deterministic). Stream-ordered scratch. `stream` is a
// cudaStream_t. Errors throw ha::Error (ErrorCode::Device for CUDA failures).
void transfer_loss_forward_cuda(const TransferLossParams& p, void* stream);
void transfer_loss_backward_cuda(const TransferLossGradParams& p, void* stream);
#endif

}  // namespace ha
