// RMSNorm (Llama's LlamaRMSNorm) over the last dimension. Parameters in the style of
// flash-attention's flash.h: raw pointers and sizes, no framework types.
//
// Per row r of x [rows, dim]:
//   rstd_r = 1 / sqrt(mean_i x_ri^2 + eps),   y_ri = x_ri * rstd_r * w_i
// Backward (g_i = dy_ri w_i):
//   dx_ri = rstd_r * (g_i - x_ri * rstd_r^2 * mean_j(g_j x_rj)),   dw_i = sum_r dy_ri x_ri rstd_r
//
// Element type `dtype` (f64 or f32, std::invalid_argument otherwise) for x, w, y, dy, dx, dw;
// rstd [rows] has the accumulator type accum_dtype(dtype). Accumulation is in f64. y may alias
// x; dx may alias dy. dw is reduced over rows in fixed chunks of rows whose f64 partials are
// summed in order: bit-identical for any thread count.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct RmsNormParams {
  DType dtype = DType::F32;
  int64_t rows = 0, dim = 0;
  double eps = 1e-6;

  const void* x = nullptr;  // [rows, dim]
  const void* w = nullptr;  // [dim]
  void* y = nullptr;        // [rows, dim]
  void* rstd = nullptr;     // [rows], accumulator dtype; may be null for a forward-only call
};

struct RmsNormGradParams {
  RmsNormParams fwd;        // x, w and the forward's rstd (read only; y is not used)
  const void* dy = nullptr;  // [rows, dim]
  void* dx = nullptr;        // [rows, dim]
  void* dw = nullptr;        // [dim]; may be null (no weight gradient)
  bool accumulate_dw = false;  // dw += (instead of dw =)
};

void rms_norm_forward_cpu(const RmsNormParams& p);
void rms_norm_backward_cpu(const RmsNormGradParams& g);

#ifdef HA_WITH_CUDA
// CUDA kernels (rms_norm.cu): dtype bf16, f16 or f32, rstd f32. Sums in double; dw in fixed
// row chunks summed in order (deterministic, no atomics; stream-ordered scratch).
void rms_norm_forward_cuda(const RmsNormParams& p, void* stream);
void rms_norm_backward_cuda(const RmsNormGradParams& g, void* stream);
#endif

}  // namespace ha
