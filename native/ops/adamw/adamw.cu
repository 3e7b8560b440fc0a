// CUDA kernels of the AdamW step and the global gradient norm / clipping (see adamw.h).
//   adamw_step_cuda   elementwise, arithmetic in double (the CPU's formulas), state in `dtype`
//                     (f32 master weights and moments in the runtime; bf16/f16 also accepted).
//   grad_norm_cuda    squares summed in double per fixed chunk of kNormChunk elements of each
//                     tensor (one block per chunk, fixed tree), the partials then summed in order
//                     by one block: deterministic, no atomics. The norm is written to a device
//                     double; with max_norm >= 0 every tensor is then scaled in place by
//                     max_norm / (norm + 1e-6) when that is < 1, read on the device (no host
//                     synchronisation).
#include <cuda_runtime.h>

#include <cmath>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/adamw/adamw.h"
#include "ops/elementwise/llama_cuda_common.cuh"

namespace ha {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kNormChunk = 1 << 15;

struct AdamWConsts {
  double decay, step_size, b1, b2, eps, gs, bc2_sqrt;
};

template <class T>
__global__ void __launch_bounds__(kThreads) adamw_kernel(AdamWParams p, AdamWConsts k) {
  T* param = static_cast<T*>(p.param);
  const T* grad = static_cast<const T*>(p.grad);
  T* m = static_cast<T*>(p.exp_avg);
  T* v = static_cast<T*>(p.exp_avg_sq);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double g = k.gs * static_cast<double>(lc::tof(grad[i]));
    const double mi = k.b1 * static_cast<double>(lc::tof(m[i])) + (1.0 - k.b1) * g;
    const double vi = k.b2 * static_cast<double>(lc::tof(v[i])) + (1.0 - k.b2) * g * g;
    const double denom = sqrt(vi) / k.bc2_sqrt + k.eps;
    lc::st(param, i, static_cast<double>(lc::tof(param[i])) * k.decay - k.step_size * mi / denom);
    lc::st(m, i, mi);
    lc::st(v, i, vi);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) sumsq_kernel(const T* x, int64_t n, double* part) {
  __shared__ double sh[32];
  const int64_t b = blockIdx.x * kNormChunk, e = min(n, b + kNormChunk);
  double s = 0;
  for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) {
    const double v = lc::tof(x[i]);
    s += v * v;
  }
  s = lc::block_sum(s, sh);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void __launch_bounds__(1024) norm_finish_kernel(const double* part, int64_t count, double* norm) {
  __shared__ double sh[32];
  double s = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += part[i];
  s = lc::block_sum(s, sh);
  if (threadIdx.x == 0) *norm = sqrt(s);
}

template <class T>
__global__ void __launch_bounds__(kThreads) clip_kernel(T* x, int64_t n, const double* norm, double max_norm) {
  const double coef = max_norm / (*norm + 1e-6);
  if (!(coef < 1.0)) return;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    lc::st(x, i, static_cast<double>(lc::tof(x[i])) * coef);
}

template <class T>
__global__ void __launch_bounds__(kThreads) scale_kernel(T* x, int64_t n, double s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    lc::st(x, i, static_cast<double>(lc::tof(x[i])) * s);
}

void check_list(const TensorList& t) {
  if (t.count < 0) throw std::invalid_argument("grad_norm: negative count");
  if (t.count > 0 && (!t.data || !t.sizes)) throw std::invalid_argument("grad_norm: null list");
  for (int64_t k = 0; k < t.count; ++k) {
    if (t.sizes[k] < 0) throw std::invalid_argument("grad_norm: negative size");
    if (t.sizes[k] > 0 && !t.data[k]) throw std::invalid_argument("grad_norm: null tensor");
  }
  lc::dispatch(t.dtype, "grad_norm", [](auto) {});
}

}  // namespace

void adamw_step_cuda(const AdamWParams& p, void* stream) {
  if (p.n < 0) throw std::invalid_argument("adamw: negative size");
  if (p.step < 1) throw std::invalid_argument("adamw: step must be >= 1");
  if (p.n > 0 && (!p.param || !p.grad || !p.exp_avg || !p.exp_avg_sq)) throw std::invalid_argument("adamw: null pointer");
  lc::dispatch(p.dtype, "adamw", [](auto) {});
  if (p.n == 0) return;
  const double t = static_cast<double>(p.step);
  AdamWConsts k;
  k.decay = 1.0 - p.lr * p.weight_decay;
  k.step_size = p.lr / (1.0 - std::pow(p.beta1, t));
  k.bc2_sqrt = std::sqrt(1.0 - std::pow(p.beta2, t));
  k.b1 = p.beta1;
  k.b2 = p.beta2;
  k.eps = p.eps;
  k.gs = p.grad_scale;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(p.dtype, "adamw", [&](auto tag) {
    using T = typename decltype(tag)::type;
    adamw_kernel<T><<<lc::grid_1d(p.n, kThreads), kThreads, 0, st>>>(p, k);
  });
  lc::check_launch("adamw", "launch");
}

void grad_norm_cuda(const TensorList& t, double max_norm, double* norm, void* stream) {
  check_list(t);
  if (!norm) throw std::invalid_argument("grad_norm: null norm output");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  int64_t chunks = 0;
  for (int64_t k = 0; k < t.count; ++k) chunks += (t.sizes[k] + kNormChunk - 1) / kNormChunk;
  lc::Scratch part(chunks * 8, st, "grad_norm");
  lc::dispatch(t.dtype, "grad_norm", [&](auto tag) {
    using T = typename decltype(tag)::type;
    int64_t off = 0;
    for (int64_t k = 0; k < t.count; ++k) {
      const int64_t c = (t.sizes[k] + kNormChunk - 1) / kNormChunk;
      if (c == 0) continue;
      if (c > 0x7fffffff) throw std::invalid_argument("grad_norm cuda: tensor too large");
      sumsq_kernel<T><<<static_cast<unsigned>(c), kThreads, 0, st>>>(static_cast<const T*>(t.data[k]), t.sizes[k], part.as<double>() + off);
      lc::check_launch("grad_norm", "partial launch");
      off += c;
    }
    norm_finish_kernel<<<1, 1024, 0, st>>>(part.as<double>(), chunks, norm);
    lc::check_launch("grad_norm", "finish launch");
    if (max_norm >= 0) {
      for (int64_t k = 0; k < t.count; ++k) {
        if (t.sizes[k] == 0) continue;
        clip_kernel<T><<<lc::grid_1d(t.sizes[k], kThreads), kThreads, 0, st>>>(static_cast<T*>(t.data[k]), t.sizes[k], norm, max_norm);
        lc::check_launch("grad_norm", "clip launch");
      }
    }
  });
}

void scale_tensors_cuda(const TensorList& t, double s, void* stream) {
  check_list(t);
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(t.dtype, "scale_tensors", [&](auto tag) {
    using T = typename decltype(tag)::type;
    for (int64_t k = 0; k < t.count; ++k) {
      if (t.sizes[k] == 0) continue;
      scale_kernel<T><<<lc::grid_1d(t.sizes[k], kThreads), kThreads, 0, st>>>(static_cast<T*>(t.data[k]), t.sizes[k], s);
      lc::check_launch("scale_tensors", "launch");
    }
  });
}

}  // namespace ha
