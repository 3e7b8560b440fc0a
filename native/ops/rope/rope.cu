// CUDA kernels of rotary position embedding (see rope.h), dtypes bf16, f16, f32.
// One block per (b, t): the angles pos * inv_freq[i] and their cos/sin are computed once in
// double (exact for large positions) into shared memory, then every head of that token is
// rotated (rotation in float for 16-bit dtypes, in double for f32). y may alias x: each pair
// (i, i + D/2) is read and written by the same thread.
#include <cuda_runtime.h>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/elementwise/llama_cuda_common.cuh"
#include "ops/rope/rope.h"

namespace ha {
namespace {

constexpr int kThreads = 128;

template <class T>
__global__ void __launch_bounds__(kThreads) rope_kernel(RopeParams p, const void* src, void* dst, double sign) {
  using A = typename lc::Acc<T>::type;
  extern __shared__ __align__(16) unsigned char smraw[];
  const int64_t H = p.heads, Tn = p.seqlen, D = p.head_dim, h = D / 2;
  A* cs = reinterpret_cast<A*>(smraw);
  A* sn = cs + h;
  const int64_t u = blockIdx.x;  // b * T + t
  const int64_t b = u / Tn, t = u % Tn;
  const double pos = static_cast<double>(p.positions[u]);
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) {
    double s, c;
    sincos(pos * p.inv_freq[i], &s, &c);
    cs[i] = static_cast<A>(c);
    sn[i] = static_cast<A>(sign * s);
  }
  __syncthreads();
  const T* x = static_cast<const T*>(src);
  T* y = static_cast<T*>(dst);
  for (int64_t k = threadIdx.x; k < H * h; k += blockDim.x) {
    const int64_t hd = k / h, i = k % h;
    const int64_t off = ((b * H + hd) * Tn + t) * D;
    const A x1 = lc::ld(x, off + i), x2 = lc::ld(x, off + i + h);
    lc::st(y, off + i, x1 * cs[i] - x2 * sn[i]);
    lc::st(y, off + i + h, x2 * cs[i] + x1 * sn[i]);
  }
}

void check_params(const RopeParams& p) {
  if (p.batch < 0 || p.heads < 0 || p.seqlen < 0 || p.head_dim < 0) throw std::invalid_argument("rope: negative size");
  if (p.head_dim % 2 != 0) throw std::invalid_argument("rope: head_dim must be even");
  if (!p.positions || !p.inv_freq) throw std::invalid_argument("rope: null positions or inv_freq");
  if (p.batch * p.seqlen > 0x7fffffff) throw std::invalid_argument("rope cuda: too many tokens");
}

void rotate(const RopeParams& p, const void* src, void* dst, double sign, void* stream) {
  const int64_t units = p.batch * p.seqlen;
  if (units == 0 || p.heads == 0 || p.head_dim == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(p.dtype, "rope", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = typename lc::Acc<T>::type;
    const size_t smem = sizeof(A) * static_cast<size_t>(p.head_dim);
    if (smem > 48 * 1024) throw std::invalid_argument("rope cuda: head_dim too large");
    rope_kernel<T><<<static_cast<unsigned>(units), kThreads, smem, st>>>(p, src, dst, sign);
  });
  lc::check_launch("rope", "launch");
}

}  // namespace

void rope_forward_cuda(const RopeParams& p, void* stream) {
  check_params(p);
  if (!p.x || !p.y) throw std::invalid_argument("rope: null x or y");
  rotate(p, p.x, p.y, 1.0, stream);
}

void rope_backward_cuda(const RopeGradParams& g, void* stream) {
  check_params(g.fwd);
  if (!g.dy || !g.dx) throw std::invalid_argument("rope: null dy or dx");
  rotate(g.fwd, g.dy, g.dx, -1.0, stream);
}

}  // namespace ha
