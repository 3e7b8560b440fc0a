// CUDA kernels of the next-token cross-entropy, plain and chunked over the vocabulary with the
// lm_head product on the tensor-core GEMM (see cross_entropy.h), dtypes bf16, f16, f32; lse f32;
// loss f64 on the device.
//
// Targets are copied to the host once per call (one stream synchronisation) to check them with
// the CPU's exact error and to count the rows (the normaliser is then a host number).
//   forward   one block per row: online (max, sum of exp) per thread (sum in double), merged by
//             a fixed tree; the per-row losses (double) are summed by one block in a fixed order.
//   backward  dz = (exp(z - lse) - [j = target]) * dloss / norm, ignored rows 0.
//   chunked   per chunk of `vocab_chunk` rows of weight: logits [N, c] = hidden weight_c^T (GEMM,
//             stored in the dtype, like the CPU), the running (max, sum) per row updated; the
//             backward recomputes the chunk's logits, turns them into dz in place, and adds
//             dz weight_c into dhidden and dz^T hidden into dweight_c (GEMMs). For 16-bit dtypes
//             dhidden is accumulated over the chunks in an fp32 buffer (one rounding at the end),
//             for f32 directly in dhidden as the CPU does. Never more than N x chunk logits.
#include <cuda_runtime.h>

#include <cmath>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/cross_entropy/cross_entropy.h"
#include "ops/elementwise/llama_cuda_common.cuh"
#include "ops/matmul/matmul_cuda.cuh"

namespace ha {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kDefaultChunk = 4096;

// Online (max, sum exp(x - max)) pair.
struct MS {
  float m;
  double s;
};
__device__ __forceinline__ MS ms_merge(MS a, MS b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.0};
  const double sa = a.m == -INFINITY ? 0.0 : a.s * exp(static_cast<double>(a.m) - m);
  const double sb = b.m == -INFINITY ? 0.0 : b.s * exp(static_cast<double>(b.m) - m);
  return {m, sa + sb};
}
// Block-wide merge (fixed tree); every thread gets the result.
__device__ MS block_ms(MS v, float* shm, double* shs) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MS u{__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
    v = ms_merge(v, u);
  }
  __syncthreads();
  if (lane == 0) {
    shm[w] = v.m;
    shs[w] = v.s;
  }
  __syncthreads();
  if (w == 0) {
    MS x = lane < nw ? MS{shm[lane], shs[lane]} : MS{-INFINITY, 0.0};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      MS u{__shfl_xor_sync(0xffffffffu, x.m, o), __shfl_xor_sync(0xffffffffu, x.s, o)};
      x = ms_merge(x, u);
    }
    if (lane == 0) {
      shm[0] = x.m;
      shs[0] = x.s;
    }
  }
  __syncthreads();
  return {shm[0], shs[0]};
}

// (max, sum) of row z[0 .. c) with stride 1.
// Each exp in the compute type (float for 16-bit logits, double for f32), summed in double.
template <class T>
__device__ MS row_ms(const T* z, int64_t c, float* shm, double* shs) {
  using A = typename lc::Acc<T>::type;
  MS v{-INFINITY, 0.0};
  for (int64_t j = threadIdx.x; j < c; j += blockDim.x) {
    const float x = lc::tof(z[j]);
    if (x > v.m) {
      v.s = (v.m == -INFINITY ? 0.0 : v.s * exp(static_cast<double>(v.m) - x)) + 1.0;
      v.m = x;
    } else if (x != -INFINITY || v.m != -INFINITY) {
      v.s += static_cast<double>(lc::acc_exp(static_cast<A>(x) - static_cast<A>(v.m)));
    }
  }
  return block_ms(v, shm, shs);
}

template <class T>
__global__ void __launch_bounds__(kThreads) ce_fwd_kernel(CrossEntropyParams p, double* row_loss) {
  __shared__ float shm[32];
  __shared__ double shs[32];
  const int64_t n = blockIdx.x, V = p.vocab;
  const T* z = static_cast<const T*>(p.logits) + n * V;
  const MS r = row_ms(z, V, shm, shs);
  if (threadIdx.x == 0) {
    const double l = static_cast<double>(r.m) + log(r.s);
    if (p.lse) static_cast<float*>(p.lse)[n] = static_cast<float>(l);
    const int32_t t = p.targets[n];
    row_loss[n] = t != p.ignore_index ? l - static_cast<double>(lc::tof(z[t])) : 0.0;
  }
}

// loss = sum_n row_loss[n] / norm by one block in a fixed order; optional device count.
__global__ void __launch_bounds__(1024) loss_reduce_kernel(const double* row_loss, int64_t rows, double norm, double* loss,
                                                          int64_t* count_out, int64_t count) {
  __shared__ double sh[32];
  double s = 0;
  for (int64_t n = threadIdx.x; n < rows; n += blockDim.x) s += row_loss[n];
  s = lc::block_sum(s, sh);
  if (threadIdx.x == 0) {
    if (loss) *loss = s / norm;
    if (count_out) *count_out = count;
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) ce_bwd_kernel(const T* z, const float* lse, const int32_t* targets,
                                                          int32_t ignore, int64_t rows, int64_t cols, int64_t ld,
                                                          int64_t col0, double scale, T* dz) {
  using A = typename lc::Acc<T>::type;
  const int64_t n = blockIdx.y;
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= rows || j >= cols) return;
  const int32_t t = targets[n];
  const int64_t idx = n * ld + j;
  if (t == ignore) {
    dz[idx] = lc::cvt<T>(0.0);
    return;
  }
  const A l = static_cast<A>(lse[n]);
  const A pj = lc::acc_exp(lc::ld(z, idx) - l);
  const A sc = static_cast<A>(scale);
  lc::st(dz, idx, (col0 + j == t ? pj - A(1) : pj) * sc);
}

// Chunked forward: running (max, sum) and the target logit per row, chunk [v0, v0 + c).
template <class T>
__global__ void __launch_bounds__(kThreads) chunk_update_kernel(const T* logits, int64_t c, int64_t ld, int64_t v0,
                                                                const int32_t* targets, int32_t ignore, float* m,
                                                                double* s, double* zt) {
  __shared__ float shm[32];
  __shared__ double shs[32];
  const int64_t n = blockIdx.x;
  const T* z = logits + n * ld;
  const MS r = row_ms(z, c, shm, shs);
  if (threadIdx.x == 0) {
    const MS merged = ms_merge(MS{m[n], s[n]}, r);
    m[n] = merged.m;
    s[n] = merged.s;
    const int32_t t = targets[n];
    if (t != ignore && t >= v0 && t < v0 + c) zt[n] = static_cast<double>(lc::tof(z[t - v0]));
  }
}

__global__ void chunk_init_kernel(float* m, double* s, double* zt, int64_t rows) {
  for (int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; n < rows; n += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    m[n] = -INFINITY;
    s[n] = 0.0;
    zt[n] = 0.0;
  }
}

__global__ void chunk_finish_kernel(const float* m, const double* s, const double* zt, const int32_t* targets,
                                    int32_t ignore, int64_t rows, float* lse, double* row_loss) {
  for (int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; n < rows; n += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double l = static_cast<double>(m[n]) + log(s[n]);
    if (lse) lse[n] = static_cast<float>(l);
    row_loss[n] = targets[n] != ignore ? l - zt[n] : 0.0;
  }
}

// dh = (accumulate ? dh : 0) + acc (fp32 accumulator of the 16-bit path).
template <class T>
__global__ void add_acc_kernel(T* dh, const float* acc, int64_t n, int accumulate) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float base = accumulate ? lc::tof(dh[i]) : 0.f;
    dh[i] = lc::fromf<T>(base + acc[i]);
  }
}

// Validates the targets (host copy, the CPU's error); returns the number of counted rows.
int64_t count_targets(const int32_t* targets, int64_t N, int64_t V, int32_t ignore, cudaStream_t st) {
  if (N > 0 && !targets) throw std::invalid_argument("cross_entropy: targets is null");
  const std::vector<int32_t> t = lc::ids_to_host(targets, N, st, "cross_entropy");
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (t[n] == ignore) continue;
    if (t[n] < 0 || t[n] >= V)
      throw std::out_of_range("cross_entropy: target " + std::to_string(t[n]) + " at row " + std::to_string(n) +
                              " is outside [0, " + std::to_string(V) + ") and is not the ignore index " +
                              std::to_string(ignore));
    ++count;
  }
  return count;
}

double norm_of(double normalizer, int64_t count) { return normalizer > 0 ? normalizer : static_cast<double>(count); }

void check_rows(int64_t rows) {
  if (rows > 0x7fffffff) throw std::invalid_argument("cross_entropy cuda: too many rows");
}

void launch_reduce(const double* row_loss, int64_t rows, double norm, double* loss, int64_t* count_out, int64_t count,
                   cudaStream_t st) {
  loss_reduce_kernel<<<1, 1024, 0, st>>>(row_loss, rows, norm, loss, count_out, count);
  lc::check_launch("cross_entropy", "loss reduction launch");
}

template <class T>
void launch_bwd(const T* z, const float* lse, const int32_t* targets, int32_t ignore, int64_t rows, int64_t cols, int64_t ld,
                int64_t col0, double scale, T* dz, cudaStream_t st) {
  if (rows == 0 || cols == 0) return;
  for (int64_t r0 = 0; r0 < rows; r0 += 65535) {  // grid.y limit
    const int64_t r = std::min<int64_t>(65535, rows - r0);
    dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(r));
    ce_bwd_kernel<T><<<grid, kThreads, 0, st>>>(z + r0 * ld, lse + r0, targets + r0, ignore, r, cols, ld, col0, scale, dz + r0 * ld);
  }
  lc::check_launch("cross_entropy", "backward launch");
}

// Chunk geometry: C columns per chunk, scratch rows padded to a multiple of 8 elements (16-byte
// rows for the tensor-core GEMM).
struct Chunking {
  int64_t C, ld;
};
Chunking chunking(const ChunkedCrossEntropyParams& p) {
  const int64_t C = std::max<int64_t>(1, std::min(p.vocab, p.vocab_chunk > 0 ? p.vocab_chunk : kDefaultChunk));
  return {C, (C + 7) / 8 * 8};
}

// logits [N, c] (row stride ld) = hidden [N, D] weight[v0 : v0 + c]^T
template <class T>
void chunk_logits(const ChunkedCrossEntropyParams& p, int64_t v0, int64_t c, int64_t ld, T* out, cudaStream_t st) {
  MatmulParams mm;
  mm.dtype = p.dtype;
  mm.m = p.rows;
  mm.n = c;
  mm.k = p.dim;
  mm.trans_b = true;
  mm.a = p.hidden;
  mm.b = static_cast<const T*>(p.weight) + v0 * p.dim;
  mm.c = out;
  mm.ldc = ld;
  gemm_cuda_ex(mm, p.dtype, st);
}

void check_chunked(const ChunkedCrossEntropyParams& p) {
  if (p.rows < 0 || p.dim < 0 || p.vocab < 0 || p.vocab_chunk < 0) throw std::invalid_argument("chunked_cross_entropy: negative size");
  if (!p.hidden || !p.weight) throw std::invalid_argument("chunked_cross_entropy: null hidden or weight");
  check_rows(p.rows);
}

}  // namespace

void cross_entropy_forward_cuda(const CrossEntropyParams& p, void* stream) {
  if (p.rows < 0 || p.vocab < 0) throw std::invalid_argument("cross_entropy: negative size");
  if (!p.loss || (p.rows > 0 && !p.logits)) throw std::invalid_argument("cross_entropy: null logits or loss");
  check_rows(p.rows);
  lc::dispatch(p.dtype, "cross_entropy", [](auto) {});
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t count = count_targets(p.targets, p.rows, p.vocab, p.ignore_index, st);
  lc::Scratch row_loss(p.rows * 8, st, "cross_entropy");
  if (p.rows > 0) {
    lc::dispatch(p.dtype, "cross_entropy", [&](auto tag) {
      using T = typename decltype(tag)::type;
      ce_fwd_kernel<T><<<static_cast<unsigned>(p.rows), kThreads, 0, st>>>(p, row_loss.as<double>());
    });
    lc::check_launch("cross_entropy", "forward launch");
  }
  launch_reduce(row_loss.as<double>(), p.rows, norm_of(p.normalizer, count), p.loss, p.count, count, st);
}

void cross_entropy_backward_cuda(const CrossEntropyGradParams& g, void* stream) {
  const CrossEntropyParams& p = g.fwd;
  if (p.rows < 0 || p.vocab < 0) throw std::invalid_argument("cross_entropy: negative size");
  if (p.rows > 0 && (!p.logits || !p.lse || !g.dlogits))
    throw std::invalid_argument("cross_entropy backward: needs logits, the forward's lse and dlogits");
  check_rows(p.rows);
  lc::dispatch(p.dtype, "cross_entropy", [](auto) {});
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t count = count_targets(p.targets, p.rows, p.vocab, p.ignore_index, st);
  const double scale = count > 0 ? g.dloss / norm_of(p.normalizer, count) : 0.0;
  lc::dispatch(p.dtype, "cross_entropy", [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_bwd<T>(static_cast<const T*>(p.logits), static_cast<const float*>(p.lse), p.targets, p.ignore_index, p.rows,
                  p.vocab, p.vocab, 0, scale, static_cast<T*>(g.dlogits), st);
  });
}

void chunked_cross_entropy_forward_cuda(const ChunkedCrossEntropyParams& p, void* stream) {
  check_chunked(p);
  if (!p.loss && !p.lse) throw std::invalid_argument("chunked_cross_entropy: neither loss nor lse requested");
  lc::dispatch(p.dtype, "chunked_cross_entropy", [](auto) {});
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t count = count_targets(p.targets, p.rows, p.vocab, p.ignore_index, st);
  const int64_t N = p.rows, V = p.vocab;
  const Chunking ch = chunking(p);
  lc::Scratch m(N * 4, st, "chunked_cross_entropy"), s(N * 8, st, "chunked_cross_entropy"), zt(N * 8, st, "chunked_cross_entropy"),
      row_loss(N * 8, st, "chunked_cross_entropy");
  if (N > 0) {
    lc::dispatch(p.dtype, "chunked_cross_entropy", [&](auto tag) {
      using T = typename decltype(tag)::type;
      lc::Scratch logits(N * ch.ld * static_cast<int64_t>(sizeof(T)), st, "chunked_cross_entropy");
      chunk_init_kernel<<<lc::grid_1d(N, kThreads), kThreads, 0, st>>>(m.as<float>(), s.as<double>(), zt.as<double>(), N);
      lc::check_launch("chunked_cross_entropy", "init launch");
      for (int64_t v0 = 0; v0 < V; v0 += ch.C) {
        const int64_t c = std::min(ch.C, V - v0);
        chunk_logits<T>(p, v0, c, ch.ld, logits.as<T>(), st);
        chunk_update_kernel<T><<<static_cast<unsigned>(N), kThreads, 0, st>>>(logits.as<T>(), c, ch.ld, v0, p.targets, p.ignore_index,
                                                                             m.as<float>(), s.as<double>(), zt.as<double>());
        lc::check_launch("chunked_cross_entropy", "chunk launch");
      }
      chunk_finish_kernel<<<lc::grid_1d(N, kThreads), kThreads, 0, st>>>(m.as<float>(), s.as<double>(), zt.as<double>(), p.targets,
                                                                        p.ignore_index, N, static_cast<float*>(p.lse),
                                                                        row_loss.as<double>());
      lc::check_launch("chunked_cross_entropy", "finish launch");
    });
  }
  if (p.loss || p.count) launch_reduce(row_loss.as<double>(), N, norm_of(p.normalizer, count), p.loss, p.count, count, st);
}

void chunked_cross_entropy_backward_cuda(const ChunkedCrossEntropyGradParams& g, void* stream) {
  const ChunkedCrossEntropyParams& p = g.fwd;
  check_chunked(p);
  if (!p.lse) throw std::invalid_argument("chunked_cross_entropy backward: needs the forward's lse");
  lc::dispatch(p.dtype, "chunked_cross_entropy", [](auto) {});
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t count = count_targets(p.targets, p.rows, p.vocab, p.ignore_index, st);
  const double scale = count > 0 ? g.dloss / norm_of(p.normalizer, count) : 0.0;
  const int64_t N = p.rows, V = p.vocab, D = p.dim;
  const Chunking ch = chunking(p);
  lc::dispatch(p.dtype, "chunked_cross_entropy", [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr bool kF32 = std::is_same<T, float>::value;
    if (g.dhidden && V == 0 && !g.accumulate_dhidden && N * D > 0)
      lc::check(cudaMemsetAsync(g.dhidden, 0, static_cast<size_t>(N * D) * sizeof(T), st), "chunked_cross_entropy", "zero dhidden");
    if (V == 0 || N == 0) {
      // No rows: dweight = 0 unless accumulating (dz is empty, so dz^T hidden = 0).
      if (g.dweight && !g.accumulate_dweight && V * D > 0)
        lc::check(cudaMemsetAsync(g.dweight, 0, static_cast<size_t>(V * D) * sizeof(T), st), "chunked_cross_entropy", "zero dweight");
      if (g.dhidden && V > 0 && !g.accumulate_dhidden && N * D > 0)
        lc::check(cudaMemsetAsync(g.dhidden, 0, static_cast<size_t>(N * D) * sizeof(T), st), "chunked_cross_entropy", "zero dhidden");
      return;
    }
    lc::Scratch dz(N * ch.ld * static_cast<int64_t>(sizeof(T)), st, "chunked_cross_entropy");
    // fp32 accumulator of dhidden for 16-bit dtypes (f32 accumulates in place, as on the CPU).
    lc::Scratch acc(!kF32 && g.dhidden ? N * D * 4 : 16, st, "chunked_cross_entropy");
    for (int64_t v0 = 0; v0 < V; v0 += ch.C) {
      const int64_t c = std::min(ch.C, V - v0);
      T* dzp = dz.as<T>();
      chunk_logits<T>(p, v0, c, ch.ld, dzp, st);
      launch_bwd<T>(dzp, static_cast<const float*>(p.lse), p.targets, p.ignore_index, N, c, ch.ld, v0, scale, dzp, st);
      const T* wc = static_cast<const T*>(p.weight) + v0 * D;
      if (g.dhidden && D > 0) {  // dhidden (+)= dz [N, c] weight_c [c, D]
        MatmulParams mm;
        mm.dtype = p.dtype;
        mm.m = N;
        mm.n = D;
        mm.k = c;
        mm.a = dzp;
        mm.lda = ch.ld;
        mm.b = wc;
        if (kF32) {
          mm.c = g.dhidden;
          mm.beta = (v0 == 0 && !g.accumulate_dhidden) ? 0.0 : 1.0;
          gemm_cuda_ex(mm, p.dtype, st);
        } else {
          mm.c = acc.as<float>();
          mm.beta = v0 == 0 ? 0.0 : 1.0;
          gemm_cuda_ex(mm, DType::F32, st);
        }
      }
      if (g.dweight && D > 0) {  // dweight[v0 : v0 + c] (+)= dz^T [c, N] hidden [N, D]
        MatmulParams mm;
        mm.dtype = p.dtype;
        mm.m = c;
        mm.n = D;
        mm.k = N;
        mm.trans_a = true;
        mm.a = dzp;
        mm.lda = ch.ld;
        mm.b = p.hidden;
        mm.c = static_cast<T*>(g.dweight) + v0 * D;
        mm.beta = g.accumulate_dweight ? 1.0 : 0.0;
        gemm_cuda_ex(mm, p.dtype, st);
      }
    }
    if (!kF32 && g.dhidden && N * D > 0) {
      add_acc_kernel<T><<<lc::grid_1d(N * D, kThreads), kThreads, 0, st>>>(static_cast<T*>(g.dhidden), acc.as<float>(), N * D,
                                                                          g.accumulate_dhidden ? 1 : 0);
      lc::check_launch("chunked_cross_entropy", "dhidden launch");
    }
  });
}

}  // namespace ha
