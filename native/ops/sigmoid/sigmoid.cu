// CUDA logistic sigmoid (see sigmoid.h), dtypes bf16, f16, f32; arithmetic in the compute type
// of llama_cuda_common.cuh (float for 16-bit, double for f32, matching the f64 CPU reference
// to rounding). x = +inf gives exactly 1 (the fixed gamma of inference-time hybridisation).
#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/elementwise/llama_cuda_common.cuh"
#include "ops/sigmoid/sigmoid.h"

namespace ha {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads) sigmoid_kernel(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ y, int64_t n) {
  using A = typename lc::Acc<T>::type;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const A v = lc::ld(x, i);
    if (dy == nullptr) lc::st(y, i, A(1) / (A(1) + lc::acc_exp(-v)));
    else lc::st(y, i, lc::ld(dy, i) * v * (A(1) - v));  // x holds the forward's output y
  }
}

}  // namespace

void sigmoid_cuda(const SigmoidParams& p, void* stream) {
  if (p.n < 0) throw Error(ErrorCode::InvalidArgument, "sigmoid: negative size", "x");
  lc::dispatch(p.dtype, "sigmoid", [](auto) {});
  if (p.n == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(p.dtype, "sigmoid", [&](auto tag) {
    using T = typename decltype(tag)::type;
    sigmoid_kernel<T><<<lc::grid_1d(p.n, kThreads), kThreads, 0, st>>>(static_cast<const T*>(p.x), static_cast<const T*>(p.dy), static_cast<T*>(p.y), p.n);
  });
  lc::check_launch("sigmoid", "launch");
}

}  // namespace ha
