// CPU kernels of the embedding lookup and its scatter-add backward (see embedding.h).
#include "ops/embedding/embedding.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace ha {

namespace {

void check_params(const EmbeddingParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("embedding cpu: unsupported dtype ") + dtype_name(p.dtype));
  if (p.num_ids < 0 || p.vocab < 0 || p.dim < 0) throw std::invalid_argument("embedding: negative size");
  if (p.num_ids > 0 && !p.ids) throw std::invalid_argument("embedding: ids is null");
  for (int64_t n = 0; n < p.num_ids; ++n)
    if (p.ids[n] < 0 || p.ids[n] >= p.vocab)
      throw std::out_of_range("embedding: id " + std::to_string(p.ids[n]) + " at position " + std::to_string(n) +
                              " is outside [0, " + std::to_string(p.vocab) + ")");
}

template <typename T>
void forward_impl(const EmbeddingParams& p) {
  const int64_t D = p.dim;
  const T* w = static_cast<const T*>(p.weight);
  T* out = static_cast<T*>(p.out);
  parallel_for(p.num_ids, 64, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) std::memcpy(out + n * D, w + static_cast<int64_t>(p.ids[n]) * D, D * sizeof(T));
  });
}

template <typename T>
void backward_impl(const EmbeddingGradParams& g) {
  const EmbeddingParams& p = g.fwd;
  const int64_t N = p.num_ids, V = p.vocab, D = p.dim;
  const T* dout = static_cast<const T*>(g.dout);
  T* dw = static_cast<T*>(g.dweight);
  // Counting sort of positions by id (stable: positions stay in increasing order per id).
  std::vector<int64_t> start(V + 1, 0);
  for (int64_t n = 0; n < N; ++n) ++start[p.ids[n] + 1];
  for (int64_t v = 0; v < V; ++v) start[v + 1] += start[v];
  std::vector<int64_t> order(N), fill(start.begin(), start.end() - 1);
  for (int64_t n = 0; n < N; ++n) order[fill[p.ids[n]]++] = n;
  // Parallel over vocabulary rows; each row is owned by one thread.
  parallel_for(V, 256, [&](int64_t v0, int64_t v1) {
    std::vector<double> acc(D);
    for (int64_t v = v0; v < v1; ++v) {
      T* row = dw + v * D;
      const int64_t b = start[v], e = start[v + 1];
      if (b == e) {
        if (!g.accumulate) std::fill(row, row + D, T(0));
        continue;
      }
      for (int64_t i = 0; i < D; ++i) acc[i] = g.accumulate ? static_cast<double>(row[i]) : 0.0;
      for (int64_t j = b; j < e; ++j) {
        const T* src = dout + order[j] * D;
        for (int64_t i = 0; i < D; ++i) acc[i] += static_cast<double>(src[i]);
      }
      for (int64_t i = 0; i < D; ++i) row[i] = static_cast<T>(acc[i]);
    }
  });
}

}  // namespace

void embedding_forward_cpu(const EmbeddingParams& p) {
  check_params(p);
  if (p.num_ids == 0) return;
  if (!p.weight || !p.out) throw std::invalid_argument("embedding: null weight or out");
  if (p.dtype == DType::F64) forward_impl<double>(p);
  else forward_impl<float>(p);
}

void embedding_backward_cpu(const EmbeddingGradParams& g) {
  check_params(g.fwd);
  if (!g.dweight || (g.fwd.num_ids > 0 && !g.dout)) throw std::invalid_argument("embedding: null gradient pointer");
  if (g.fwd.dtype == DType::F64) backward_impl<double>(g);
  else backward_impl<float>(g);
}

}  // namespace ha
