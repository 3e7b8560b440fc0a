// CUDA kernels of RMSNorm (see rms_norm.h), dtypes bf16, f16, f32; rstd f32.
//   forward   one block per row: sum of squares in double (fixed tree), y = x rstd w.
//   backward  one block per row for dx; dw in two passes (no atomics): per chunk of rows a
//             double partial per column, then the chunks summed in order per column.
#include <cuda_runtime.h>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/elementwise/llama_cuda_common.cuh"
#include "ops/rms_norm/rms_norm.h"

namespace ha {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads) rms_fwd_kernel(RmsNormParams p) {
  using A = typename lc::Acc<T>::type;
  __shared__ double sh[32];
  const int64_t D = p.dim;
  const T* x = static_cast<const T*>(p.x) + blockIdx.x * D;
  const T* w = static_cast<const T*>(p.w);
  T* y = static_cast<T*>(p.y) + blockIdx.x * D;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    const double v = lc::tof(x[i]);
    ss += v * v;
  }
  ss = lc::block_sum(ss, sh);  // all reads of x happen before this barrier (y may alias x)
  const double rs = 1.0 / sqrt(ss / static_cast<double>(D) + p.eps);
  const A ra = static_cast<A>(rs);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) lc::st(y, i, lc::ld(x, i) * ra * lc::ld(w, i));
  if (p.rstd && threadIdx.x == 0) static_cast<float*>(p.rstd)[blockIdx.x] = static_cast<float>(rs);
}

template <class T>
__global__ void __launch_bounds__(kThreads) rms_bwd_dx_kernel(RmsNormGradParams g) {
  using A = typename lc::Acc<T>::type;
  __shared__ double sh[32];
  const int64_t D = g.fwd.dim, r = blockIdx.x;
  const T* x = static_cast<const T*>(g.fwd.x) + r * D;
  const T* w = static_cast<const T*>(g.fwd.w);
  const T* dy = static_cast<const T*>(g.dy) + r * D;
  T* dx = static_cast<T*>(g.dx) + r * D;
  const double rs = static_cast<const float*>(g.fwd.rstd)[r];
  double s = 0;  // sum_j dy_j w_j x_j
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    s += static_cast<double>(lc::tof(dy[i])) * lc::tof(w[i]) * lc::tof(x[i]);
  s = lc::block_sum(s, sh);  // dx may alias dy: every dy read above is done before any write
  const A coef = static_cast<A>(rs * rs * s / static_cast<double>(D));
  const A ra = static_cast<A>(rs);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
    lc::st(dx, i, ra * (lc::ld(dy, i) * lc::ld(w, i) - lc::ld(x, i) * coef));
}

// part[c, j] = sum over rows of chunk c of dy_rj x_rj rstd_r (double, rows in order).
template <class T>
__global__ void __launch_bounds__(kThreads) rms_dw_partial_kernel(RmsNormGradParams g, int64_t chunk, double* part) {
  const int64_t D = g.fwd.dim, R = g.fwd.rows;
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= D) return;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(R, r0 + chunk);
  const T* x = static_cast<const T*>(g.fwd.x);
  const T* dy = static_cast<const T*>(g.dy);
  const float* rstd = static_cast<const float*>(g.fwd.rstd);
  double s = 0;
  for (int64_t r = r0; r < r1; ++r) s += static_cast<double>(lc::tof(dy[r * D + j])) * lc::tof(x[r * D + j]) * rstd[r];
  part[blockIdx.y * D + j] = s;
}

template <class T>
__global__ void __launch_bounds__(kThreads) rms_dw_reduce_kernel(RmsNormGradParams g, int64_t chunks, const double* part) {
  const int64_t D = g.fwd.dim;
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= D) return;
  T* dw = static_cast<T*>(g.dw);
  double s = g.accumulate_dw ? static_cast<double>(lc::tof(dw[j])) : 0.0;
  for (int64_t c = 0; c < chunks; ++c) s += part[c * D + j];
  lc::st(dw, j, s);
}

void check_params(const RmsNormParams& p) {
  if (p.rows < 0 || p.dim < 0) throw std::invalid_argument("rms_norm: negative size");
  if (!p.x || !p.w) throw std::invalid_argument("rms_norm: null input");
  if (p.rows > 0x7fffffff) throw std::invalid_argument("rms_norm cuda: too many rows");
}

}  // namespace

void rms_norm_forward_cuda(const RmsNormParams& p, void* stream) {
  check_params(p);
  if (!p.y) throw std::invalid_argument("rms_norm: y is null");
  if (p.rows == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(p.dtype, "rms_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    rms_fwd_kernel<T><<<static_cast<unsigned>(p.rows), kThreads, 0, st>>>(p);
  });
  lc::check_launch("rms_norm", "forward launch");
}

void rms_norm_backward_cuda(const RmsNormGradParams& g, void* stream) {
  check_params(g.fwd);
  if (!g.fwd.rstd) throw std::invalid_argument("rms_norm backward: needs the forward's rstd");
  if (!g.dy || !g.dx) throw std::invalid_argument("rms_norm: null gradient pointer");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t R = g.fwd.rows, D = g.fwd.dim;
  if (D == 0) return;
  // Fixed chunking (a function of the shape only): at most ~1024 chunks of >= 32 rows.
  const int64_t chunk = std::max<int64_t>(32, (R + 1023) / 1024);
  const int64_t chunks = (R + chunk - 1) / chunk;
  lc::dispatch(g.fwd.dtype, "rms_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    // dw first: dx may alias dy, which the dw partials read.
    if (g.dw) {
      lc::Scratch part(chunks * D * static_cast<int64_t>(sizeof(double)), st, "rms_norm");
      const unsigned cb = static_cast<unsigned>((D + kThreads - 1) / kThreads);
      if (chunks > 0) {
        rms_dw_partial_kernel<T><<<dim3(cb, static_cast<unsigned>(chunks)), kThreads, 0, st>>>(g, chunk, part.as<double>());
        lc::check_launch("rms_norm", "dw partial launch");
      }
      rms_dw_reduce_kernel<T><<<cb, kThreads, 0, st>>>(g, chunks, part.as<double>());
      lc::check_launch("rms_norm", "dw reduce launch");
    }
    if (R > 0) {
      rms_bwd_dx_kernel<T><<<static_cast<unsigned>(R), kThreads, 0, st>>>(g);
      lc::check_launch("rms_norm", "dx launch");
    }
  });
}

}  // namespace ha
