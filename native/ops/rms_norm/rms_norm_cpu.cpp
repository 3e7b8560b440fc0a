// CPU kernels of RMSNorm (see rms_norm.h).
#include "ops/rms_norm/rms_norm.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace ha {

namespace {

constexpr int64_t kRowChunk = 32;  // rows per dw partial (fixed: makes dw thread-count independent)

void check_params(const RmsNormParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("rms_norm cpu: unsupported dtype ") + dtype_name(p.dtype));
  if (p.rows < 0 || p.dim < 0) throw std::invalid_argument("rms_norm: negative size");
  if (!p.x || !p.w) throw std::invalid_argument("rms_norm: null input");
}

template <typename T>
void forward_impl(const RmsNormParams& p) {
  const int64_t D = p.dim;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.w);
  T* y = static_cast<T*>(p.y);
  T* rstd = static_cast<T*>(p.rstd);
  parallel_for(p.rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * D;
      double ss = 0;
      for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(xr[i]) * static_cast<double>(xr[i]);
      const double rs = 1.0 / std::sqrt(ss / static_cast<double>(D) + p.eps);
      T* yr = y + r * D;
      for (int64_t i = 0; i < D; ++i) yr[i] = static_cast<T>(static_cast<double>(xr[i]) * rs * static_cast<double>(w[i]));
      if (rstd) rstd[r] = static_cast<T>(rs);
    }
  });
}

template <typename T>
void backward_impl(const RmsNormGradParams& g) {
  const RmsNormParams& p = g.fwd;
  const int64_t R = p.rows, D = p.dim;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.w);
  const T* rstd = static_cast<const T*>(p.rstd);
  const T* dy = static_cast<const T*>(g.dy);
  T* dx = static_cast<T*>(g.dx);
  T* dw = static_cast<T*>(g.dw);
  const int64_t chunks = (R + kRowChunk - 1) / kRowChunk;
  std::vector<double> part(dw ? chunks * D : 0);
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double* pc = dw ? part.data() + c * D : nullptr;
      if (pc) std::fill(pc, pc + D, 0.0);
      for (int64_t r = c * kRowChunk; r < std::min(R, (c + 1) * kRowChunk); ++r) {
        const T* xr = x + r * D;
        const T* dyr = dy + r * D;
        const double rs = static_cast<double>(rstd[r]);
        double s = 0;  // sum_j dy_j w_j x_j
        for (int64_t i = 0; i < D; ++i)
          s += static_cast<double>(dyr[i]) * static_cast<double>(w[i]) * static_cast<double>(xr[i]);
        const double coef = rs * rs * s / static_cast<double>(D);
        if (pc)
          for (int64_t i = 0; i < D; ++i) pc[i] += static_cast<double>(dyr[i]) * static_cast<double>(xr[i]) * rs;
        T* dxr = dx + r * D;
        for (int64_t i = 0; i < D; ++i) {
          const double xi = static_cast<double>(xr[i]);
          dxr[i] = static_cast<T>(rs * (static_cast<double>(dyr[i]) * static_cast<double>(w[i]) - xi * coef));
        }
      }
    }
  });
  if (!dw) return;
  parallel_for(D, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      double s = g.accumulate_dw ? static_cast<double>(dw[i]) : 0.0;
      for (int64_t c = 0; c < chunks; ++c) s += part[c * D + i];
      dw[i] = static_cast<T>(s);
    }
  });
}

}  // namespace

void rms_norm_forward_cpu(const RmsNormParams& p) {
  check_params(p);
  if (!p.y) throw std::invalid_argument("rms_norm: y is null");
  if (p.dtype == DType::F64) forward_impl<double>(p);
  else forward_impl<float>(p);
}

void rms_norm_backward_cpu(const RmsNormGradParams& g) {
  check_params(g.fwd);
  if (!g.fwd.rstd) throw std::invalid_argument("rms_norm backward: needs the forward's rstd");
  if (!g.dy || !g.dx) throw std::invalid_argument("rms_norm: null gradient pointer");
  if (g.fwd.dtype == DType::F64) backward_impl<double>(g);
  else backward_impl<float>(g);
}

}  // namespace ha
