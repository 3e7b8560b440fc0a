// CPU reference kernels of the attention-weight transfer loss (see transfer_loss.h).
#include "ops/transfer_loss/transfer_loss.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace ha {

namespace {

void check_params(const TransferLossParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("transfer_loss cpu: unsupported dtype ") + dtype_name(p.dtype));
  if (p.batch < 0 || p.heads < 0 || p.kv_heads < 0 || p.seqlen < 0 || p.head_dim < 0 || p.feature_dim < 0)
    throw std::invalid_argument("transfer_loss: negative size");
  if (p.kv_heads <= 0 || p.heads % p.kv_heads != 0)
    throw std::invalid_argument("transfer_loss: heads must be a positive multiple of kv_heads");
  if (!p.q || !p.k || !p.fq || !p.fk) throw std::invalid_argument("transfer_loss: null input");
}

double effective_scale(const TransferLossParams& p) {
  return p.scale != 0.0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(p.head_dim));
}

template <typename T>
double dot(const T* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

template <typename T>
double dotd(const T* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Pointers of one (b, h).
template <typename T>
struct Head {
  const T *q, *k, *fq, *fk;
};

template <typename T>
Head<T> head_ptrs(const TransferLossParams& p, int64_t bh) {
  const int64_t H = p.heads, Hkv = p.kv_heads, T_ = p.seqlen;
  const int64_t b = bh / H, h = bh % H, hk = h / (H / Hkv);
  Head<T> r;
  r.q = static_cast<const T*>(p.q) + bh * T_ * p.head_dim;
  r.k = static_cast<const T*>(p.k) + (b * Hkv + hk) * T_ * p.head_dim;
  r.fq = static_cast<const T*>(p.fq) + bh * T_ * p.feature_dim;
  r.fk = static_cast<const T*>(p.fk) + bh * T_ * p.feature_dim;
  return r;
}

// Sum over n of L_n for one (b, h): one online-softmax pass per row.
template <typename T>
double head_loss(const TransferLossParams& p, int64_t bh, double scale) {
  const int64_t T_ = p.seqlen, d = p.head_dim, F = p.feature_dim;
  const Head<T> P = head_ptrs<T>(p, bh);
  std::vector<double> z(std::max<int64_t>(F, 1), 0.0);  // prefix sum of fk
  double total = 0;
  for (int64_t n = 0; n < T_; ++n) {
    const T* qn = P.q + n * d;
    const T* fqn = P.fq + n * F;
    for (int64_t f = 0; f < F; ++f) z[f] += static_cast<double>(P.fk[n * F + f]);
    double m = -INFINITY, l = 0, acc = 0;  // acc = sum exp(s - m) log max(g, eps)
    for (int64_t i = 0; i <= n; ++i) {
      const double s = scale * dot(qn, P.k + i * d, d);
      const double lg = std::log(std::max(dot(fqn, P.fk + i * F, F), kTransferLossLogFloor));
      if (s > m) {
        const double r = std::exp(m - s);  // 0 on the first step (m = -inf)
        l *= r;
        acc *= r;
        m = s;
      }
      const double e = std::exp(s - m);
      l += e;
      acc += e * lg;
    }
    const double Z = dotd(fqn, z.data(), F);
    total += std::log(std::max(Z, kTransferLossLogFloor)) - acc / l;
  }
  return total;
}

template <typename T>
void forward_impl(const TransferLossParams& p) {
  const int64_t BH = p.batch * p.heads;
  const double scale = effective_scale(p);
  std::vector<double> partial(BH, 0.0);
  parallel_for(BH, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t bh = b0; bh < b1; ++bh) partial[bh] = head_loss<T>(p, bh, scale);
  });
  double total = 0;
  for (double v : partial) total += v;
  const int64_t rows = BH * p.seqlen;
  *static_cast<T*>(p.loss) = static_cast<T>(rows > 0 ? total / static_cast<double>(rows) : 0.0);
}

// Gradient of loss for one (b, h), c = dloss / (B H T).
//   dL_n/dfq_n = [Z_n >= eps] z_n / Z_n - sum_{i<=n} a_ni [g_ni >= eps] fk_i / g_ni
//   dL/dfk_i   = sum_{n>=i} ( [Z_n >= eps] fq_n / Z_n - a_ni [g_ni >= eps] fq_n / g_ni )
template <typename T>
void head_backward(const TransferLossGradParams& g, int64_t bh, double scale, double c,
                   std::vector<double>& lse, std::vector<double>& invZ, std::vector<double>& s_row,
                   std::vector<double>& vec) {
  const TransferLossParams& p = g.fwd;
  const int64_t T_ = p.seqlen, d = p.head_dim, F = p.feature_dim;
  const Head<T> P = head_ptrs<T>(p, bh);
  T* dfq = static_cast<T*>(g.dfq) + bh * T_ * F;
  T* dfk = static_cast<T*>(g.dfk) + bh * T_ * F;
  double* z = vec.data();      // prefix sum of fk, then suffix sum of fq_n / Z_n
  double* acc = vec.data() + F;
  const double eps = kTransferLossLogFloor;

  // Pass 1, per row n: teacher log-normaliser lse_n, 1/Z_n (0 where clamped), and dfq_n.
  std::fill(z, z + F, 0.0);
  for (int64_t n = 0; n < T_; ++n) {
    const T* qn = P.q + n * d;
    const T* fqn = P.fq + n * F;
    for (int64_t f = 0; f < F; ++f) z[f] += static_cast<double>(P.fk[n * F + f]);
    double m = -INFINITY;
    for (int64_t i = 0; i <= n; ++i) {
      s_row[i] = scale * dot(qn, P.k + i * d, d);
      m = std::max(m, s_row[i]);
    }
    double l = 0;
    for (int64_t i = 0; i <= n; ++i) l += std::exp(s_row[i] - m);
    lse[n] = m + std::log(l);
    const double Z = dotd(fqn, z, F);
    invZ[n] = Z >= eps ? 1.0 / Z : 0.0;
    std::fill(acc, acc + F, 0.0);
    for (int64_t i = 0; i <= n; ++i) {
      const T* fki = P.fk + i * F;
      const double gni = dot(fqn, fki, F);
      if (gni < eps) continue;
      const double w = std::exp(s_row[i] - lse[n]) / gni;
      for (int64_t f = 0; f < F; ++f) acc[f] += w * static_cast<double>(fki[f]);
    }
    for (int64_t f = 0; f < F; ++f) dfq[n * F + f] = static_cast<T>(c * (invZ[n] * z[f] - acc[f]));
  }

  // Pass 2, per key i from the last: suffix sum of fq_n / Z_n, minus the teacher-weighted term.
  double* suf = z;
  std::fill(suf, suf + F, 0.0);
  for (int64_t i = T_ - 1; i >= 0; --i) {
    const T* ki = P.k + i * d;
    const T* fki = P.fk + i * F;
    for (int64_t f = 0; f < F; ++f) suf[f] += invZ[i] * static_cast<double>(P.fq[i * F + f]);
    std::fill(acc, acc + F, 0.0);
    for (int64_t n = i; n < T_; ++n) {
      const T* fqn = P.fq + n * F;
      const double gni = dot(fqn, fki, F);
      if (gni < eps) continue;
      const double w = std::exp(scale * dot(P.q + n * d, ki, d) - lse[n]) / gni;
      for (int64_t f = 0; f < F; ++f) acc[f] += w * static_cast<double>(fqn[f]);
    }
    for (int64_t f = 0; f < F; ++f) dfk[i * F + f] = static_cast<T>(c * (suf[f] - acc[f]));
  }
}

template <typename T>
void backward_impl(const TransferLossGradParams& g) {
  const TransferLossParams& p = g.fwd;
  const int64_t BH = p.batch * p.heads;
  const double scale = effective_scale(p);
  const int64_t rows = BH * p.seqlen;
  const double c = rows > 0 ? static_cast<double>(*static_cast<const T*>(g.dloss)) / static_cast<double>(rows) : 0.0;
  parallel_for(BH, 1, [&](int64_t b0, int64_t b1) {
    const size_t Tn = static_cast<size_t>(std::max<int64_t>(p.seqlen, 1));
    std::vector<double> lse(Tn), invZ(Tn), s_row(Tn), vec(2 * std::max<int64_t>(p.feature_dim, 1));
    for (int64_t bh = b0; bh < b1; ++bh) head_backward<T>(g, bh, scale, c, lse, invZ, s_row, vec);
  });
}

}  // namespace

void transfer_loss_forward_cpu(const TransferLossParams& p) {
  check_params(p);
  if (!p.loss) throw std::invalid_argument("transfer_loss: loss is null");
  if (p.dtype == DType::F64) forward_impl<double>(p);
  else forward_impl<float>(p);
}

void transfer_loss_backward_cpu(const TransferLossGradParams& g) {
  check_params(g.fwd);
  if (!g.dloss || !g.dfq || !g.dfk) throw std::invalid_argument("transfer_loss: null gradient pointer");
  if (g.fwd.dtype == DType::F64) backward_impl<double>(g);
  else backward_impl<float>(g);
}

}  // namespace ha
