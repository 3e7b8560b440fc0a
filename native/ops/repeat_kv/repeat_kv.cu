// CUDA repeat-kv (see repeat_kv.h), dtypes bf16, f16, f32. Forward: a gather, one thread per
// output element. Backward: each dx element sums its group's `groups` gradients in order, in the
// compute type of llama_cuda_common.cuh (float for 16-bit, double for f32): deterministic.
#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/elementwise/llama_cuda_common.cuh"
#include "ops/repeat_kv/repeat_kv.h"

namespace ha {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads) repeat_kv_forward_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t kv, int64_t groups, int64_t inner, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = i % inner, r = i / inner;  // r = (o, h) over the repeated heads
    const int64_t h = r % (kv * groups), o = r / (kv * groups);
    y[i] = x[(o * kv + h / groups) * inner + e];
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) repeat_kv_backward_kernel(const T* __restrict__ dy, T* __restrict__ dx, int64_t groups, int64_t inner, int64_t n) {
  using A = typename lc::Acc<T>::type;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = i % inner, r = i / inner;  // r = (o, j): kv head j; its group is heads j*g ..
    A acc = 0;
    for (int64_t g = 0; g < groups; ++g) acc += lc::ld(dy, (r * groups + g) * inner + e);
    lc::st(dx, i, acc);
  }
}

}  // namespace

void repeat_kv_cuda(const RepeatKvParams& p, void* stream) {
  if (p.outer < 0 || p.kv_heads < 0 || p.inner < 0 || p.groups < 1)
    throw Error(ErrorCode::InvalidArgument, "repeat_kv: bad sizes", "groups");
  lc::dispatch(p.dtype, "repeat_kv", [](auto) {});
  const int64_t small = p.outer * p.kv_heads * p.inner, n = p.backward ? small : small * p.groups;
  if (n == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(p.dtype, "repeat_kv", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (p.backward)
      repeat_kv_backward_kernel<T><<<lc::grid_1d(n, kThreads), kThreads, 0, st>>>(static_cast<const T*>(p.x), static_cast<T*>(p.y), p.groups, p.inner, n);
    else
      repeat_kv_forward_kernel<T><<<lc::grid_1d(n, kThreads), kThreads, 0, st>>>(static_cast<const T*>(p.x), static_cast<T*>(p.y), p.kv_heads, p.groups, p.inner, n);
  });
  lc::check_launch("repeat_kv", "launch");
}

}  // namespace ha
