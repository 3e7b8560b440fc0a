// CUDA kernels of the embedding lookup and its backward (see embedding.h), dtypes bf16, f16,
// f32. ids live on the device; both directions copy them to the host once (one stream
// synchronisation) to check them with the CPU's exact error (nothing is written when an id is
// bad), and the backward groups positions by id there (stable counting sort, O(N + V)).
//
// Backward, deterministic and atomic-free: one block per distinct id owns that row of dweight
// and sums its dout rows in position order (double for f32, float for 16-bit dtypes), writing
// (or adding to) the row once. Rows no id touches are zeroed by a memset first (accumulate =
// false) or left alone (accumulate = true).
#include <cuda_runtime.h>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "ops/elementwise/llama_cuda_common.cuh"
#include "ops/embedding/embedding.h"

namespace ha {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void __launch_bounds__(kThreads) gather_kernel(EmbeddingParams p) {
  const int64_t D = p.dim, n = blockIdx.x;
  const T* src = static_cast<const T*>(p.weight) + static_cast<int64_t>(p.ids[n]) * D;
  T* dst = static_cast<T*>(p.out) + n * D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) dst[i] = src[i];
}

// seg_id[s]: the id of segment s; order[seg_start[s] .. seg_start[s + 1]): its positions.
template <class T>
__global__ void __launch_bounds__(kThreads) scatter_kernel(EmbeddingGradParams g, const int32_t* seg_id,
                                                           const int64_t* seg_start, const int64_t* order) {
  using A = typename lc::Acc<T>::type;
  const int64_t D = g.fwd.dim, s = blockIdx.x;
  const int64_t b = seg_start[s], e = seg_start[s + 1];
  T* row = static_cast<T*>(g.dweight) + static_cast<int64_t>(seg_id[s]) * D;
  const T* dout = static_cast<const T*>(g.dout);
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    A acc = g.accumulate ? lc::ld(row, i) : A(0);
    for (int64_t j = b; j < e; ++j) acc += lc::ld(dout, order[j] * D + i);
    lc::st(row, i, acc);
  }
}

void check_sizes(const EmbeddingParams& p) {
  if (p.num_ids < 0 || p.vocab < 0 || p.dim < 0) throw std::invalid_argument("embedding: negative size");
  if (p.num_ids > 0 && !p.ids) throw std::invalid_argument("embedding: ids is null");
  if (p.num_ids > 0x7fffffff) throw std::invalid_argument("embedding cuda: too many ids");
}

std::vector<int32_t> checked_ids(const EmbeddingParams& p, cudaStream_t st) {
  std::vector<int32_t> ids = lc::ids_to_host(p.ids, p.num_ids, st, "embedding");
  for (int64_t n = 0; n < p.num_ids; ++n)
    if (ids[n] < 0 || ids[n] >= p.vocab)
      throw std::out_of_range("embedding: id " + std::to_string(ids[n]) + " at position " + std::to_string(n) +
                              " is outside [0, " + std::to_string(p.vocab) + ")");
  return ids;
}

}  // namespace

void embedding_forward_cuda(const EmbeddingParams& p, void* stream) {
  check_sizes(p);
  if (p.num_ids == 0) return;
  if (!p.weight || !p.out) throw std::invalid_argument("embedding: null weight or out");
  lc::dispatch(p.dtype, "embedding", [](auto) {});
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  checked_ids(p, st);
  if (p.dim == 0) return;
  lc::dispatch(p.dtype, "embedding", [&](auto tag) {
    using T = typename decltype(tag)::type;
    gather_kernel<T><<<static_cast<unsigned>(p.num_ids), kThreads, 0, st>>>(p);
  });
  lc::check_launch("embedding", "forward launch");
}

void embedding_backward_cuda(const EmbeddingGradParams& g, void* stream) {
  const EmbeddingParams& p = g.fwd;
  check_sizes(p);
  if (!g.dweight || (p.num_ids > 0 && !g.dout)) throw std::invalid_argument("embedding: null gradient pointer");
  lc::dispatch(p.dtype, "embedding", [](auto) {});
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const std::vector<int32_t> ids = checked_ids(p, st);
  const int64_t N = p.num_ids, V = p.vocab, D = p.dim;
  if (!g.accumulate && V * D > 0)
    lc::check(cudaMemsetAsync(g.dweight, 0, static_cast<size_t>(V * D * dtype_size(p.dtype)), st), "embedding", "zero dweight");
  if (N == 0 || D == 0) return;
  // Stable counting sort of positions by id; segments = distinct ids in increasing order.
  std::vector<int64_t> count(static_cast<size_t>(V) + 1, 0);
  for (int64_t n = 0; n < N; ++n) ++count[ids[n] + 1];
  for (int64_t v = 0; v < V; ++v) count[v + 1] += count[v];
  std::vector<int64_t> order(N), fill(count.begin(), count.end() - 1);
  for (int64_t n = 0; n < N; ++n) order[fill[ids[n]]++] = n;
  std::vector<int32_t> seg_id;
  std::vector<int64_t> seg_start;
  for (int64_t v = 0; v < V; ++v)
    if (count[v + 1] > count[v]) {
      seg_id.push_back(static_cast<int32_t>(v));
      seg_start.push_back(count[v]);
    }
  seg_start.push_back(N);
  const int64_t segs = static_cast<int64_t>(seg_id.size());
  lc::Scratch d_seg_id(segs * 4, st, "embedding"), d_seg_start((segs + 1) * 8, st, "embedding"), d_order(N * 8, st, "embedding");
  lc::to_device(d_seg_id.as<int32_t>(), seg_id, st, "embedding");
  lc::to_device(d_seg_start.as<int64_t>(), seg_start, st, "embedding");
  lc::to_device(d_order.as<int64_t>(), order, st, "embedding");
  lc::dispatch(p.dtype, "embedding", [&](auto tag) {
    using T = typename decltype(tag)::type;
    scatter_kernel<T><<<static_cast<unsigned>(segs), kThreads, 0, st>>>(g, d_seg_id.as<int32_t>(), d_seg_start.as<int64_t>(),
                                                                        d_order.as<int64_t>());
  });
  lc::check_launch("embedding", "backward launch");
}

}  // namespace ha
