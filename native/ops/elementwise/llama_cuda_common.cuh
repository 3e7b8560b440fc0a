// Shared pieces of the Llama runtime's small CUDA kernels (rms_norm, rope, swiglu, embedding,
// cross_entropy, adamw, elementwise): element conversions, the compute type per dtype, dtype
// dispatch, deterministic block reductions, error checks, stream-ordered scratch.
//
// Compute type: float for bf16/f16 elements, double for f32 elements (the CPU reference
// computes in f64; f32 outputs then match it to rounding). Sums over many elements (norms,
// log-sum-exp, column sums) always accumulate in double. Reductions use fixed shuffle trees and
// fixed chunkings: results are bit-identical run to run.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/cuda_device.cuh"
#include "core/dtype.h"
#include "core/errors.h"

namespace ha {
namespace lc {

inline void check(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess)
    throw Error(ErrorCode::Device, std::string(op) + " CUDA (" + what + "): " + cudaGetErrorString(e));
}
inline void check_launch(const char* op, const char* what) { check(cudaGetLastError(), op, what); }

using ::ha::fromf;  // float -> element (core/cuda_device.cuh)
using ::ha::tof;    // element -> float

// Compute type of an element type.
template <class T>
struct Acc {
  using type = float;
};
template <>
struct Acc<float> {
  using type = double;
};

// Element -> compute type.
template <class T>
__device__ __forceinline__ typename Acc<T>::type ld(const T* p, int64_t i) {
  return static_cast<typename Acc<T>::type>(tof(p[i]));
}
// Any float or double -> element (one rounding; double -> bf16/f16 goes through float, which
// can double-round in rare ties: below the tolerance of 16-bit outputs).
template <class T>
__device__ __forceinline__ T cvt(double x);
template <>
__device__ __forceinline__ float cvt<float>(double x) { return static_cast<float>(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 cvt<__nv_bfloat16>(double x) { return __float2bfloat16_rn(static_cast<float>(x)); }
template <>
__device__ __forceinline__ __half cvt<__half>(double x) { return __float2half_rn(static_cast<float>(x)); }
template <class T>
__device__ __forceinline__ void st(T* p, int64_t i, double x) { p[i] = cvt<T>(x); }
template <class T>
__device__ __forceinline__ void st(T* p, int64_t i, float x) { p[i] = fromf<T>(x); }

__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }

template <class T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) for the CUDA element dtypes; std::invalid_argument otherwise.
template <class F>
void dispatch(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: f(Tag<float>{}); break;
    case DType::BF16: f(Tag<__nv_bfloat16>{}); break;
    case DType::F16: f(Tag<__half>{}); break;
    default: throw std::invalid_argument(std::string(op) + " cuda: unsupported dtype " + dtype_name(t));
  }
}

// Grid for a grid-stride loop over n items.
inline unsigned grid_1d(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, 65535LL * 16)));
}

// Deterministic block-wide sum / max (fixed shuffle tree, then warp 0 over the warp results).
// `sh` holds >= 32 entries; every thread of the block must call it; all threads get the result.
template <class V>
__device__ __forceinline__ V warp_sum(V v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class V>
__device__ __forceinline__ V warp_max(V v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <class V>
__device__ V block_sum(V v, V* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // sh may still be read from a previous call
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    V x = lane < nw ? sh[lane] : V(0);
    x = warp_sum(x);
    if (lane == 0) sh[0] = x;
  }
  __syncthreads();
  return sh[0];
}
template <class V>
__device__ V block_max(V v, V* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  if (w == 0) {
    V x = lane < nw ? sh[lane] : V(-INFINITY);
    x = warp_max(x);
    if (lane == 0) sh[0] = x;
  }
  __syncthreads();
  return sh[0];
}

// Stream-ordered device scratch, released (stream-ordered) when it goes out of scope.
class Scratch {
 public:
  Scratch(int64_t bytes, cudaStream_t st, const char* op) : st_(st) {
    check(cudaMallocAsync(&p_, static_cast<size_t>(std::max<int64_t>(bytes, 16)), st), op, "scratch allocation");
  }
  ~Scratch() {
    if (p_ && cudaFreeAsync(p_, st_) != cudaSuccess) cudaGetLastError();
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class V>
  V* as() const { return static_cast<V*>(p_); }

 private:
  void* p_ = nullptr;
  cudaStream_t st_;
};

// Copies n int32 values from the device to the host (waits for the stream).
inline std::vector<int32_t> ids_to_host(const int32_t* d, int64_t n, cudaStream_t st, const char* op) {
  std::vector<int32_t> h(static_cast<size_t>(n));
  if (n > 0) {
    check(cudaMemcpyAsync(h.data(), d, static_cast<size_t>(n) * sizeof(int32_t), cudaMemcpyDeviceToHost, st), op, "copy of ids");
    check(cudaStreamSynchronize(st), op, "synchronize");
  }
  return h;
}

// Copies a host array to the device (waits, so `h` may be freed at once).
template <class V>
void to_device(V* d, const std::vector<V>& h, cudaStream_t st, const char* op) {
  if (h.empty()) return;
  check(cudaMemcpyAsync(d, h.data(), h.size() * sizeof(V), cudaMemcpyHostToDevice, st), op, "upload");
  check(cudaStreamSynchronize(st), op, "synchronize");
}

}  // namespace lc
}  // namespace ha
