// CUDA counter-based normal random numbers (see random.h): one element per thread-iteration of
// a grid-stride loop, f64 arithmetic, one rounding to bf16/f16/f32.
#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/elementwise/llama_cuda_common.cuh"
#include "ops/random/random.h"

namespace ha {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads) random_normal_kernel(RandomNormalParams p) {
  T* y = static_cast<T*>(p.y);
  const double two_pi = 6.283185307179586476925286766559;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double u1, u2;
    random_uniform_pair(p.seed, i, u1, u2);
    lc::st(y, i, p.mean + p.std * sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
  }
}

}  // namespace

void random_normal_cuda(const RandomNormalParams& p, void* stream) {
  if (p.n < 0) throw Error(ErrorCode::InvalidArgument, "random_normal: negative size", "shape");
  lc::dispatch(p.dtype, "random_normal", [](auto) {});
  if (p.n == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(p.dtype, "random_normal", [&](auto tag) {
    using T = typename decltype(tag)::type;
    random_normal_kernel<T><<<lc::grid_1d(p.n, kThreads), kThreads, 0, st>>>(p);
  });
  lc::check_launch("random_normal", "launch");
}

}  // namespace ha
