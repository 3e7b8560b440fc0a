// CUDA kernels of the elementwise basics (see elementwise.h), dtypes bf16, f16, f32:
// grid-stride loops, arithmetic in float (16-bit) or double (f32), y may alias a or b (each
// element is read before it is written by the same thread). sum_rows: per fixed chunk of rows a
// double partial per column, then the chunks summed in order per column (deterministic, no
// atomics; one pass when the rows fit one chunk). broadcast_add_rows: y[r, :] += bias.
#include <cuda_runtime.h>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/elementwise/elementwise.h"
#include "ops/elementwise/llama_cuda_common.cuh"

namespace ha {
namespace {

constexpr int kThreads = 256;
enum Op { kAdd, kMul, kScale, kFill, kAccumulate };

template <class T, int op>
__global__ void __launch_bounds__(kThreads) ew_kernel(ElementwiseParams p) {
  using A = typename lc::Acc<T>::type;
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* y = static_cast<T*>(p.y);
  const A alpha = static_cast<A>(p.alpha);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < p.n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    A r;
    if constexpr (op == kAdd) r = lc::ld(a, i) + alpha * lc::ld(b, i);
    else if constexpr (op == kMul) r = lc::ld(a, i) * lc::ld(b, i);
    else if constexpr (op == kScale) r = alpha * lc::ld(a, i);
    else if constexpr (op == kFill) r = alpha;
    else r = lc::ld(y, i) + alpha * lc::ld(a, i);
    lc::st(y, i, r);
  }
}

template <int op>
void run(const ElementwiseParams& p, const char* what, bool needs_a, bool needs_b, void* stream) {
  if (p.n < 0) throw std::invalid_argument(std::string(what) + ": negative size");
  lc::dispatch(p.dtype, what, [](auto) {});
  if (p.n == 0) return;
  if (!p.y || (needs_a && !p.a) || (needs_b && !p.b)) throw std::invalid_argument(std::string(what) + ": null pointer");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(p.dtype, what, [&](auto tag) {
    using T = typename decltype(tag)::type;
    ew_kernel<T, op><<<lc::grid_1d(p.n, kThreads), kThreads, 0, st>>>(p);
  });
  lc::check_launch(what, "launch");
}

// part[c, j] = sum over rows [c * chunk, min(R, (c + 1) * chunk)) of x[r, j], in row order.
template <class T>
__global__ void __launch_bounds__(kThreads) colsum_partial_kernel(const T* x, int64_t R, int64_t C, int64_t chunk, double* part) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= C) return;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(R, r0 + chunk);
  double s = 0;
  for (int64_t r = r0; r < r1; ++r) s += lc::tof(x[r * C + j]);
  part[blockIdx.y * C + j] = s;
}

template <class T>
__global__ void __launch_bounds__(kThreads) colsum_reduce_kernel(const double* part, int64_t chunks, int64_t C, T* y, int accumulate) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= C) return;
  double s = accumulate ? static_cast<double>(lc::tof(y[j])) : 0.0;
  for (int64_t c = 0; c < chunks; ++c) s += part[c * C + j];
  lc::st(y, j, s);
}

template <class T>
__global__ void __launch_bounds__(kThreads) add_rows_kernel(T* y, const T* bias, int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    lc::st(y, i, lc::ld(y, i) + lc::ld(bias, i % cols));
}

}  // namespace

void add_cuda(const ElementwiseParams& p, void* stream) { run<kAdd>(p, "add", true, true, stream); }
void mul_cuda(const ElementwiseParams& p, void* stream) { run<kMul>(p, "mul", true, true, stream); }
void scale_cuda(const ElementwiseParams& p, void* stream) { run<kScale>(p, "scale", true, false, stream); }
void fill_cuda(const ElementwiseParams& p, void* stream) { run<kFill>(p, "fill", false, false, stream); }
void accumulate_cuda(const ElementwiseParams& p, void* stream) { run<kAccumulate>(p, "accumulate", true, false, stream); }

void sum_rows_cuda(const SumRowsParams& p, void* stream) {
  if (p.rows < 0 || p.cols < 0) throw std::invalid_argument("sum_rows: negative size");
  lc::dispatch(p.dtype, "sum_rows", [](auto) {});
  if (p.cols == 0) return;
  if (!p.y || (p.rows > 0 && !p.x)) throw std::invalid_argument("sum_rows: null pointer");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t R = p.rows, C = p.cols;
  const int64_t chunk = std::max<int64_t>(32, (R + 1023) / 1024);  // fixed by the shape
  const int64_t chunks = (R + chunk - 1) / chunk;
  const unsigned cb = static_cast<unsigned>((C + kThreads - 1) / kThreads);
  lc::Scratch part(chunks * C * 8, st, "sum_rows");
  lc::dispatch(p.dtype, "sum_rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (chunks > 0) {
      colsum_partial_kernel<T><<<dim3(cb, static_cast<unsigned>(chunks)), kThreads, 0, st>>>(static_cast<const T*>(p.x), R, C, chunk,
                                                                                             part.as<double>());
      lc::check_launch("sum_rows", "partial launch");
    }
    colsum_reduce_kernel<T><<<cb, kThreads, 0, st>>>(part.as<double>(), chunks, C, static_cast<T*>(p.y), p.accumulate ? 1 : 0);
    lc::check_launch("sum_rows", "reduce launch");
  });
}

void broadcast_add_rows_cuda(DType dtype, int64_t rows, int64_t cols, const void* bias, void* y, void* stream) {
  if (rows < 0 || cols < 0) throw std::invalid_argument("add bias: negative size");
  lc::dispatch(dtype, "add bias", [](auto) {});
  if (rows == 0 || cols == 0) return;
  if (!bias || !y) throw std::invalid_argument("add bias: null pointer");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  lc::dispatch(dtype, "add bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    add_rows_kernel<T><<<lc::grid_1d(rows * cols, kThreads), kThreads, 0, st>>>(static_cast<T*>(y), static_cast<const T*>(bias), rows, cols);
  });
  lc::check_launch("add bias", "launch");
}

}  // namespace ha
