// CUDA kernels of the SwiGLU gate (see swiglu.h), dtypes bf16, f16, f32: grid-stride
// elementwise loops, arithmetic in float (16-bit dtypes) or double (f32), the same overflow-safe
// sigmoid as the CPU. Each element is read before it is written by the same thread, so the
// aliasing the header allows is safe.
#include <cuda_runtime.h>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/elementwise/llama_cuda_common.cuh"
#include "ops/swiglu/swiglu.h"

namespace ha {
namespace {

constexpr int kThreads = 256;

template <class A>
__device__ __forceinline__ A sigmoid(A g) {
  if (g >= A(0)) return A(1) / (A(1) + lc::acc_exp(-g));
  const A e = lc::acc_exp(g);
  return e / (A(1) + e);
}

template <class T>
__global__ void __launch_bounds__(kThreads) swiglu_fwd_kernel(SwigluParams p) {
  using A = typename lc::Acc<T>::type;
  const T* gate = static_cast<const T*>(p.gate);
  const T* up = static_cast<const T*>(p.up);
  T* y = static_cast<T*>(p.y);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const A g = lc::ld(gate, i), u = lc::ld(up, i);
    lc::st(y, i, g * sigmoid(g) * u);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) swiglu_bwd_kernel(SwigluGradParams gp) {
  using A = typename lc::Acc<T>::type;
  const T* gate = static_cast<const T*>(gp.fwd.gate);
  const T* up = static_cast<const T*>(gp.fwd.up);
  const T* dy = static_cast<const T*>(gp.dy);
  T* dgate = static_cast<T*>(gp.dgate);
  T* dup = static_cast<T*>(gp.dup);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < gp.fwd.n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const A g = lc::ld(gate, i), u = lc::ld(up, i), d = lc::ld(dy, i);
    const A s = sigmoid(g);
    const A dg = d * u * s * (A(1) + g * (A(1) - s));
    const A du = d * g * s;
    lc::st(dgate, i, dg);
    lc::st(dup, i, du);
  }
}

void check_params(const SwigluParams& p) {
  if (p.n < 0) throw std::invalid_argument("swiglu: negative size");
  if (!p.gate || !p.up) throw std::invalid_argument("swiglu: null input");
}

}  // namespace

void swiglu_forward_cuda(const SwigluParams& p, void* stream) {
  check_params(p);
  if (!p.y) throw std::invalid_argument("swiglu: y is null");
  if (p.n == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(p.dtype, "swiglu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    swiglu_fwd_kernel<T><<<lc::grid_1d(p.n, kThreads), kThreads, 0, st>>>(p);
  });
  lc::check_launch("swiglu", "forward launch");
}

void swiglu_backward_cuda(const SwigluGradParams& g, void* stream) {
  check_params(g.fwd);
  if (!g.dy || !g.dgate || !g.dup) throw std::invalid_argument("swiglu: null gradient pointer");
  if (g.dgate == g.dup) throw std::invalid_argument("swiglu: dgate and dup must be distinct");
  if (g.fwd.n == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(g.fwd.dtype, "swiglu", [&](auto tag) {
    using T = typename decltype(tag)::type;
    swiglu_bwd_kernel<T><<<lc::grid_1d(g.fwd.n, kThreads), kThreads, 0, st>>>(g);
  });
  lc::check_launch("swiglu", "backward launch");
}

}  // namespace ha
