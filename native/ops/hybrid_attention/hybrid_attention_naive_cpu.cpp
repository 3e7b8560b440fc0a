// Quadratic reference of hybrid attention, straight from SPEC sec. 2 (tests only).
// Every row n loops over all keys i <= n and tests set membership with the SPEC's formulas;
// the backward recomputes the whole forward of the row from the inputs (it does not read the
// saved statistics) and scatters the gradients of sum(y * dy) directly. Accumulation is in double
// for both F64 and F32. Semantic decisions: see hybrid_attention_cpu.cpp (they are identical).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "ops/hybrid_attention/hybrid_attention.h"

namespace ha {
namespace {

struct NaiveSets {
  HybridMode mode;
  WindowGeometry geom;
  int64_t w, S;
  bool in_win(int64_t n, int64_t i) const {
    if (i > n) return false;
    switch (mode) {
      case HybridMode::Hybrid: case HybridMode::Swa: case HybridMode::Overlap:
        if (geom == WindowGeometry::Sliding) return n - w < i;
        return i / w >= n / w - 1;
      case HybridMode::Sinks: return i <= std::min(S - 1, n);
      default: return false;
    }
  }
  bool in_lin(int64_t n, int64_t j) const {
    if (j > n) return false;
    switch (mode) {
      case HybridMode::LaFull: case HybridMode::Overlap: return true;
      case HybridMode::Hybrid: case HybridMode::La:
        if (geom == WindowGeometry::Sliding) return j <= n - w;
        return j / w < n / w - 1;
      default: return false;
    }
  }
};

void naive_check(const HybridAttentionParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("hybrid_attention naive: unsupported dtype ") + dtype_name(p.dtype));
  if (p.heads <= 0 || p.kv_heads <= 0 || p.heads % p.kv_heads != 0 || p.window < 1)
    throw std::invalid_argument("hybrid_attention naive: bad sizes");
}

// Everything the forward of one row needs, recomputed from the inputs.
struct Row {
  std::vector<double> s, a, L;  // indexed by key position 0..n
  std::vector<char> inw, inl;
  double c = 0, A = 0, SL = 0, D = 0, gw = 0, lam = 0;
  int64_t arg = -1;
  std::vector<double> y;
};

template <class T, class Acc>
Row naive_row(const HybridAttentionParams& p, const NaiveSets& sets, int64_t b, int64_t h, int64_t n) {
  const int64_t H = p.heads, Hkv = p.kv_heads, Tn = p.seqlen, d = p.head_dim, dv = p.value_dim, F = p.feature_dim;
  const int64_t bh = b * H + h, kvh = b * Hkv + h / (H / Hkv);
  const double scale = p.scale > 0 ? p.scale : 1.0 / std::sqrt(double(d));
  const T* q = static_cast<const T*>(p.q) + (bh * Tn + n) * d;
  const T* k = static_cast<const T*>(p.k) + kvh * Tn * d;
  const T* v = static_cast<const T*>(p.v) + kvh * Tn * dv;
  const T* fq = static_cast<const T*>(p.fq) + (bh * Tn + n) * F;
  const T* fk = static_cast<const T*>(p.fk) + bh * Tn * F;
  const double gamma = p.gamma ? double(static_cast<const Acc*>(p.gamma)[h]) : 0.0;
  const double m = p.keep ? double(static_cast<const Acc*>(p.keep)[bh]) : 1.0;
  Row r;
  r.s.assign(n + 1, 0); r.a.assign(n + 1, 0); r.L.assign(n + 1, 0);
  r.inw.assign(n + 1, 0); r.inl.assign(n + 1, 0);
  r.y.assign(dv, 0);
  r.lam = p.lambda_kind == LambdaKind::Affine ? 1.0 - gamma : 1.0;  // un-masked gamma
  r.gw = (p.mode == HybridMode::Swa || p.mode == HybridMode::Sinks) ? m : gamma * m;  // keep = 0: softmax branch off
  if (p.mode == HybridMode::None) return r;
  bool any_w = false;
  r.c = -INFINITY;
  for (int64_t i = 0; i <= n; ++i) {
    if (m != 0 && sets.in_win(n, i)) {  // keep = 0: the softmax branch is off
      r.inw[i] = 1;
      any_w = true;
      double s = 0;
      for (int64_t e = 0; e < d; ++e) s += double(q[e]) * double(k[i * d + e]);
      r.s[i] = s * scale;
      if (r.s[i] > r.c) { r.c = r.s[i]; r.arg = i; }
    }
    if (sets.in_lin(n, i)) {
      r.inl[i] = 1;
      double l = 0;
      for (int64_t f = 0; f < F; ++f) l += double(fq[f]) * double(fk[i * F + f]);
      r.L[i] = l;
    }
  }
  if (!any_w) r.c = 0;
  std::vector<double> num(dv, 0.0);
  for (int64_t i = 0; i <= n; ++i) {
    if (r.inw[i]) {
      r.a[i] = std::exp(r.s[i] - r.c);
      r.A += r.a[i];
      for (int64_t e = 0; e < dv; ++e) num[e] += r.gw * r.a[i] * double(v[i * dv + e]);
    }
    if (r.inl[i]) {
      r.SL += r.L[i];
      for (int64_t e = 0; e < dv; ++e) num[e] += r.lam * r.L[i] * double(v[i * dv + e]);
    }
  }
  r.D = r.gw * r.A + r.lam * r.SL;
  if (r.D != 0)
    for (int64_t e = 0; e < dv; ++e) r.y[e] = num[e] / r.D;
  return r;
}

template <class T, class Acc>
void naive_forward(const HybridAttentionParams& p) {
  const NaiveSets sets{p.mode, p.geometry, p.window, p.sinks};
  const int64_t B = p.batch, H = p.heads, Tn = p.seqlen, dv = p.value_dim;
  T* y = static_cast<T*>(p.y);
  Acc* c = static_cast<Acc*>(p.c);
  Acc* dsw = static_cast<Acc*>(p.den_swa);
  Acc* dla = static_cast<Acc*>(p.den_la);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < Tn; ++n) {
        Row r = naive_row<T, Acc>(p, sets, b, h, n);
        const int64_t row = (b * H + h) * Tn + n;
        for (int64_t e = 0; e < dv; ++e) y[row * dv + e] = T(r.y[e]);
        c[row] = Acc(r.c);
        dsw[row] = Acc(r.gw * r.A);
        dla[row] = Acc(r.lam * r.SL);
      }
}

template <class T, class Acc>
void naive_backward(const HybridAttentionGradParams& gp) {
  const HybridAttentionParams& p = gp.fwd;
  const NaiveSets sets{p.mode, p.geometry, p.window, p.sinks};
  const int64_t B = p.batch, H = p.heads, Hkv = p.kv_heads, Tn = p.seqlen;
  const int64_t d = p.head_dim, dv = p.value_dim, F = p.feature_dim;
  const double scale = p.scale > 0 ? p.scale : 1.0 / std::sqrt(double(d));
  const bool c_flows = p.mode == HybridMode::Hybrid || p.mode == HybridMode::Overlap;
  std::vector<double> dq(B * H * Tn * d, 0), dk(B * Hkv * Tn * d, 0), dvv(B * Hkv * Tn * dv, 0);
  std::vector<double> dfq(B * H * Tn * F, 0), dfk(B * H * Tn * F, 0), dgamma(H, 0);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T* fq = static_cast<const T*>(p.fq);
  const T* fk = static_cast<const T*>(p.fk);
  const T* dy = static_cast<const T*>(gp.dy);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h, kvh = b * Hkv + h / (H / Hkv);
      const double m = p.keep ? double(static_cast<const Acc*>(p.keep)[bh]) : 1.0;
      double dgw = 0, dlam = 0;
      for (int64_t n = 0; n < Tn; ++n) {
        Row r = naive_row<T, Acc>(p, sets, b, h, n);
        if (p.mode == HybridMode::None || r.D == 0) continue;
        const double* yv = r.y.data();
        const T* dyn = dy + (bh * Tn + n) * dv;
        double yy = 0;
        for (int64_t e = 0; e < dv; ++e) yy += double(dyn[e]) * yv[e];
        // dy . v_i for all keys
        std::vector<double> ds(n + 1, 0.0);
        double dc = 0;
        for (int64_t i = 0; i <= n; ++i) {
          if (!r.inw[i] && !r.inl[i]) continue;
          double dyv = 0;
          for (int64_t e = 0; e < dv; ++e) dyv += double(dyn[e]) * double(v[(kvh * Tn + i) * dv + e]);
          if (r.inw[i]) {
            // y = num/D, num and D both contain gw * a_i (v_i resp. 1)
            const double da = r.gw * (dyv - yy) / r.D;
            ds[i] = da * r.a[i];
            dc -= ds[i];
            dgw += r.a[i] * (dyv - yy) / r.D;
            for (int64_t e = 0; e < dv; ++e) dvv[(kvh * Tn + i) * dv + e] += r.gw * r.a[i] / r.D * double(dyn[e]);
          }
          if (r.inl[i]) {
            const double dL = r.lam * (dyv - yy) / r.D;
            dlam += r.L[i] * (dyv - yy) / r.D;
            for (int64_t f = 0; f < F; ++f) {
              dfq[(bh * Tn + n) * F + f] += dL * double(fk[(bh * Tn + i) * F + f]);
              dfk[(bh * Tn + i) * F + f] += dL * double(fq[(bh * Tn + n) * F + f]);
            }
            for (int64_t e = 0; e < dv; ++e) dvv[(kvh * Tn + i) * dv + e] += r.lam * r.L[i] / r.D * double(dyn[e]);
          }
        }
        if (c_flows && r.arg >= 0) ds[r.arg] += dc;  // c_n = s_{n, argmax}
        for (int64_t i = 0; i <= n; ++i) {
          if (!r.inw[i] || ds[i] == 0) continue;
          for (int64_t e = 0; e < d; ++e) {
            dq[(bh * Tn + n) * d + e] += ds[i] * scale * double(k[(kvh * Tn + i) * d + e]);
            dk[(kvh * Tn + i) * d + e] += ds[i] * scale * double(q[(bh * Tn + n) * d + e]);
          }
        }
      }
      if (c_flows) {
        dgamma[h] += m * dgw;
        if (p.lambda_kind == LambdaKind::Affine) dgamma[h] -= dlam;
      }
    }
  auto store = [](void* dst, const std::vector<double>& src) {
    T* o = static_cast<T*>(dst);
    for (size_t i = 0; i < src.size(); ++i) o[i] = T(src[i]);
  };
  store(gp.dq, dq); store(gp.dk, dk); store(gp.dv, dvv); store(gp.dfq, dfq); store(gp.dfk, dfk);
  Acc* dg = static_cast<Acc*>(gp.dgamma);
  for (int64_t h = 0; h < H; ++h) dg[h] = Acc(dgamma[h]);
}

}  // namespace

void hybrid_attention_forward_naive_cpu(const HybridAttentionParams& p) {
  naive_check(p);
  if (p.dtype == DType::F64) naive_forward<double, double>(p);
  else naive_forward<float, float>(p);
}

void hybrid_attention_backward_naive_cpu(const HybridAttentionGradParams& gp) {
  naive_check(gp.fwd);
  if (gp.fwd.dtype == DType::F64) naive_backward<double, double>(gp);
  else naive_backward<float, float>(gp);
}

}  // namespace ha
