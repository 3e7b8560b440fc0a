// CPU kernels of the next-token cross-entropy, plain and fused with the lm_head in vocabulary
// chunks (see cross_entropy.h).
#include "ops/cross_entropy/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"
#include "ops/matmul/matmul.h"

namespace ha {

namespace {

constexpr int64_t kDefaultChunk = 4096;

void check_dtype(DType t) {
  if (t != DType::F64 && t != DType::F32)
    throw std::invalid_argument(std::string("cross_entropy cpu: unsupported dtype ") + dtype_name(t));
}

// Validates the targets; returns the number of counted (not ignored) rows.
int64_t count_targets(const int32_t* targets, int64_t N, int64_t V, int32_t ignore) {
  if (N > 0 && !targets) throw std::invalid_argument("cross_entropy: targets is null");
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int32_t t = targets[n];
    if (t == ignore) continue;
    if (t < 0 || t >= V)
      throw std::out_of_range("cross_entropy: target " + std::to_string(t) + " at row " + std::to_string(n) +
                              " is outside [0, " + std::to_string(V) + ") and is not the ignore index " +
                              std::to_string(ignore));
    ++count;
  }
  return count;
}

double norm_of(double normalizer, int64_t count) {
  return normalizer > 0 ? normalizer : static_cast<double>(count);
}

// Sum over counted rows in row order.
double reduce_loss(const std::vector<double>& row_loss, const int32_t* targets, int32_t ignore) {
  double s = 0;
  for (size_t n = 0; n < row_loss.size(); ++n)
    if (targets[n] != ignore) s += row_loss[n];
  return s;
}

template <typename T>
void forward_impl(const CrossEntropyParams& p, int64_t count) {
  const int64_t N = p.rows, V = p.vocab;
  const T* z = static_cast<const T*>(p.logits);
  T* lse = static_cast<T*>(p.lse);
  std::vector<double> row_loss(N, 0.0);
  parallel_for(N, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* zn = z + n * V;
      double m = -INFINITY;
      for (int64_t j = 0; j < V; ++j) m = std::max(m, static_cast<double>(zn[j]));
      double s = 0;
      for (int64_t j = 0; j < V; ++j) s += std::exp(static_cast<double>(zn[j]) - m);
      const double l = m + std::log(s);
      if (lse) lse[n] = static_cast<T>(l);
      const int32_t t = p.targets[n];
      if (t != p.ignore_index) row_loss[n] = l - static_cast<double>(zn[t]);
    }
  });
  *p.loss = reduce_loss(row_loss, p.targets, p.ignore_index) / norm_of(p.normalizer, count);
}

template <typename T>
void backward_impl(const CrossEntropyGradParams& g, int64_t count) {
  const CrossEntropyParams& p = g.fwd;
  const int64_t N = p.rows, V = p.vocab;
  const T* z = static_cast<const T*>(p.logits);
  const T* lse = static_cast<const T*>(p.lse);
  T* dz = static_cast<T*>(g.dlogits);
  const double scale = count > 0 ? g.dloss / norm_of(p.normalizer, count) : 0.0;
  parallel_for(N, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t n = r0; n < r1; ++n) {
      const T* zn = z + n * V;
      T* dn = dz + n * V;
      const int32_t t = p.targets[n];
      if (t == p.ignore_index) {
        std::fill(dn, dn + V, T(0));
        continue;
      }
      const double l = static_cast<double>(lse[n]);
      for (int64_t j = 0; j < V; ++j) {
        const double pj = std::exp(static_cast<double>(zn[j]) - l);
        dn[j] = static_cast<T>((j == t ? pj - 1.0 : pj) * scale);
      }
    }
  });
}

void check_chunked(const ChunkedCrossEntropyParams& p) {
  check_dtype(p.dtype);
  if (p.rows < 0 || p.dim < 0 || p.vocab < 0 || p.vocab_chunk < 0)
    throw std::invalid_argument("chunked_cross_entropy: negative size");
  if (!p.hidden || !p.weight) throw std::invalid_argument("chunked_cross_entropy: null hidden or weight");
}

// logits[N, c] = hidden [N, D] weight[v0 : v0 + c]^T
template <typename T>
void chunk_logits(const ChunkedCrossEntropyParams& p, int64_t v0, int64_t c, T* logits) {
  MatmulParams mm;
  mm.dtype = p.dtype;
  mm.m = p.rows; mm.n = c; mm.k = p.dim;
  mm.trans_b = true;
  mm.a = p.hidden;
  mm.b = static_cast<const T*>(p.weight) + v0 * p.dim;
  mm.c = logits;
  matmul_cpu(mm);
}

template <typename T>
void chunked_forward_impl(const ChunkedCrossEntropyParams& p, int64_t count) {
  const int64_t N = p.rows, V = p.vocab;
  const int64_t C = std::min(V, p.vocab_chunk > 0 ? p.vocab_chunk : kDefaultChunk);
  std::vector<T> logits(N * std::max<int64_t>(C, 1));
  std::vector<double> m(N, -INFINITY), s(N, 0.0), zt(N, 0.0);
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    const int64_t c = std::min(C, V - v0);
    chunk_logits<T>(p, v0, c, logits.data());
    parallel_for(N, 4, [&](int64_t r0, int64_t r1) {
      for (int64_t n = r0; n < r1; ++n) {
        const T* zn = logits.data() + n * c;
        double mc = -INFINITY;
        for (int64_t j = 0; j < c; ++j) mc = std::max(mc, static_cast<double>(zn[j]));
        const double mn = std::max(m[n], mc);
        double acc = s[n] * std::exp(m[n] - mn);  // s = 0, m = -inf on the first chunk: 0 * 0
        for (int64_t j = 0; j < c; ++j) acc += std::exp(static_cast<double>(zn[j]) - mn);
        m[n] = mn;
        s[n] = acc;
        const int32_t t = p.targets[n];
        if (t != p.ignore_index && t >= v0 && t < v0 + c) zt[n] = static_cast<double>(zn[t - v0]);
      }
    });
  }
  T* lse = static_cast<T*>(p.lse);
  std::vector<double> row_loss(N, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    const double l = m[n] + std::log(s[n]);
    if (lse) lse[n] = static_cast<T>(l);
    row_loss[n] = l - zt[n];
  }
  if (p.loss) *p.loss = reduce_loss(row_loss, p.targets, p.ignore_index) / norm_of(p.normalizer, count);
}

template <typename T>
void chunked_backward_impl(const ChunkedCrossEntropyGradParams& g, int64_t count) {
  const ChunkedCrossEntropyParams& p = g.fwd;
  const int64_t N = p.rows, V = p.vocab, D = p.dim;
  const int64_t C = std::min(V, p.vocab_chunk > 0 ? p.vocab_chunk : kDefaultChunk);
  const T* lse = static_cast<const T*>(p.lse);
  const double scale = count > 0 ? g.dloss / norm_of(p.normalizer, count) : 0.0;
  std::vector<T> dz(N * std::max<int64_t>(C, 1));
  if (g.dhidden && !g.accumulate_dhidden && V == 0) std::fill_n(static_cast<T*>(g.dhidden), N * D, T(0));
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    const int64_t c = std::min(C, V - v0);
    chunk_logits<T>(p, v0, c, dz.data());
    parallel_for(N, 4, [&](int64_t r0, int64_t r1) {
      for (int64_t n = r0; n < r1; ++n) {
        T* dn = dz.data() + n * c;
        const int32_t t = p.targets[n];
        if (t == p.ignore_index) {
          std::fill(dn, dn + c, T(0));
          continue;
        }
        const double l = static_cast<double>(lse[n]);
        for (int64_t j = 0; j < c; ++j) {
          const double pj = std::exp(static_cast<double>(dn[j]) - l);
          dn[j] = static_cast<T>((v0 + j == t ? pj - 1.0 : pj) * scale);
        }
      }
    });
    if (g.dhidden) {  // dhidden (+)= dz [N, c] weight[v0 : v0 + c] [c, D]
      MatmulParams mm;
      mm.dtype = p.dtype;
      mm.m = N; mm.n = D; mm.k = c;
      mm.a = dz.data();
      mm.b = static_cast<const T*>(p.weight) + v0 * D;
      mm.c = g.dhidden;
      mm.beta = (v0 == 0 && !g.accumulate_dhidden) ? 0.0 : 1.0;
      matmul_cpu(mm);
    }
    if (g.dweight) {  // dweight[v0 : v0 + c] (+)= dz^T [c, N] hidden [N, D]
      MatmulParams mm;
      mm.dtype = p.dtype;
      mm.m = c; mm.n = D; mm.k = N;
      mm.trans_a = true;
      mm.a = dz.data();
      mm.b = p.hidden;
      mm.c = static_cast<T*>(g.dweight) + v0 * D;
      mm.beta = g.accumulate_dweight ? 1.0 : 0.0;
      matmul_cpu(mm);
    }
  }
}

}  // namespace

void cross_entropy_forward_cpu(const CrossEntropyParams& p) {
  check_dtype(p.dtype);
  if (p.rows < 0 || p.vocab < 0) throw std::invalid_argument("cross_entropy: negative size");
  if (!p.loss || (p.rows > 0 && !p.logits)) throw std::invalid_argument("cross_entropy: null logits or loss");
  const int64_t count = count_targets(p.targets, p.rows, p.vocab, p.ignore_index);
  if (p.count) *p.count = count;
  if (p.dtype == DType::F64) forward_impl<double>(p, count);
  else forward_impl<float>(p, count);
}

void cross_entropy_backward_cpu(const CrossEntropyGradParams& g) {
  const CrossEntropyParams& p = g.fwd;
  check_dtype(p.dtype);
  if (p.rows < 0 || p.vocab < 0) throw std::invalid_argument("cross_entropy: negative size");
  if (p.rows > 0 && (!p.logits || !p.lse || !g.dlogits))
    throw std::invalid_argument("cross_entropy backward: needs logits, the forward's lse and dlogits");
  const int64_t count = count_targets(p.targets, p.rows, p.vocab, p.ignore_index);
  if (p.dtype == DType::F64) backward_impl<double>(g, count);
  else backward_impl<float>(g, count);
}

void chunked_cross_entropy_forward_cpu(const ChunkedCrossEntropyParams& p) {
  check_chunked(p);
  if (!p.loss && !p.lse) throw std::invalid_argument("chunked_cross_entropy: neither loss nor lse requested");
  const int64_t count = count_targets(p.targets, p.rows, p.vocab, p.ignore_index);
  if (p.count) *p.count = count;
  if (p.dtype == DType::F64) chunked_forward_impl<double>(p, count);
  else chunked_forward_impl<float>(p, count);
}

void chunked_cross_entropy_backward_cpu(const ChunkedCrossEntropyGradParams& g) {
  check_chunked(g.fwd);
  if (!g.fwd.lse) throw std::invalid_argument("chunked_cross_entropy backward: needs the forward's lse");
  const int64_t count = count_targets(g.fwd.targets, g.fwd.rows, g.fwd.vocab, g.fwd.ignore_index);
  if (g.fwd.dtype == DType::F64) chunked_backward_impl<double>(g, count);
  else chunked_backward_impl<float>(g, count);
}

}  // namespace ha
