// CPU kernels of hybrid attention (SPEC sec. 2): a per-(batch, head) recurrent scan.
//
// Forward, per (batch, q head), rows n = 0..T-1 in order:
//   * the linear state S = sum_j fk_j v_j^T (F x dv) and z = sum_j fk_j over the LA set of row n
//     grows monotonically with n; a token is added when it leaves the window (sliding: token n-w
//     enters at row n; terraced: the whole block m-2 enters when row n enters block m; la-full
//     and overlap: token n enters at row n);
//   * the window part is computed directly over Win(n) (w keys, at most 2w for terraced, S for
//     sinks).
//   Time O(T (w (d + dv) + F dv)), memory O(F dv) per head. No T x T buffer anywhere.
// Backward, per (batch, kv head) so that the q heads of a GQA group, which write the same dk/dv
// rows, run on one thread (no races, deterministic):
//   * forward-direction scan: window softmax recomputed from the saved statistics (c, and
//     D = den_swa + den_la), giving dq, the window part of dk/dv, and dfq_n =
//     (lambda/D_n)(S_n dy_n - (dy_n.y_n) z_n);
//   * reverse scan: U = sum_n (lambda/D_n) fq_n dy_n^T, u = sum_n (lambda/D_n)(dy_n.y_n) fq_n over
//     the rows n whose LA set contains j, giving dfk_j = U v_j - u and dv_j += U^T fk_j.
//   * dgamma: one partial per (batch, q head), reduced over the batch in a fixed order.
//
// Semantic decisions (shared with the naive reference, hybrid_attention_naive_cpu.cpp):
//   * gamma_eff = gamma * keep (keep optional). With lambda_kind Affine, lambda = 1 - gamma uses
//     the UN-masked gamma: the SSD mask only switches the window branch off, the LA branch keeps
//     the weight it has in the unmasked model. dgamma = keep * dL/dgamma_eff - dL/dlambda (the
//     latter only for Affine).
//   * c_n = max_{Win(n)} s_ni does not cancel in hybrid/overlap; its gradient goes to the first
//     arg-max key (ties have measure zero for real data). In swa/sinks the softmax is invariant
//     to c, so no gradient flows through it (it would be exactly 0 analytically).
//   * swa and sinks are plain softmaxes: gamma does not enter (dgamma = 0) but the keep mask
//     does: keep = 0 switches the softmax branch off in every mode, leaving nothing in swa and
//     sinks (y = 0, as eq. 7 with gamma_eff = 0 and the den = 0 rule give). den_swa is
//     keep * sum exp(s - c). In la the output does not depend on lambda
//     (it cancels), so dgamma = 0 there too; la-full likewise.
//   * Statistics, every mode: c = window max (0 in modes without a window: la, la-full, none,
//     and sinks with S <= 0), den_swa = gamma_eff * sum exp(s - c) (hybrid, overlap; plain sum
//     for swa/sinks; 0 otherwise), den_la = lambda * sum fq.fk over the LA set (0 in modes without
//     LA). A row with D = den_swa + den_la == 0 outputs y = 0 and gets zero gradient.
//   * The backward reads y, c, den_swa, den_la from p.fwd (the forward's outputs).
//   * scale <= 0 means 1/sqrt(head_dim). A window w >= T behaves as w = T (identical sets).
//   * Accumulation: double for F64, float for F32 (SPEC sec. 8: fp32 minimum).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "core/parallel.h"
#include "ops/hybrid_attention/hybrid_attention.h"

namespace ha {
namespace {

struct Geo {
  HybridMode mode;
  WindowGeometry geom;
  int64_t w, sinks, T;
  bool use_win, use_la, la_prefix, c_flows, has_dgamma;

  explicit Geo(const HybridAttentionParams& p) {
    mode = p.mode;
    geom = p.geometry;
    T = p.seqlen;
    w = std::min<int64_t>(p.window, std::max<int64_t>(T, 1));
    sinks = p.sinks;
    use_win = mode == HybridMode::Hybrid || mode == HybridMode::Swa || mode == HybridMode::Overlap ||
              mode == HybridMode::Sinks;
    use_la = mode == HybridMode::Hybrid || mode == HybridMode::La || mode == HybridMode::LaFull ||
             mode == HybridMode::Overlap;
    la_prefix = mode == HybridMode::LaFull || mode == HybridMode::Overlap;
    c_flows = mode == HybridMode::Hybrid || mode == HybridMode::Overlap;
    has_dgamma = c_flows;
  }
  // Window keys of row n: [lo, hi], empty when hi < lo.
  void win(int64_t n, int64_t& lo, int64_t& hi) const {
    if (mode == HybridMode::Sinks) {
      lo = 0;
      hi = std::min(sinks - 1, n);
      return;
    }
    hi = n;
    if (geom == WindowGeometry::Sliding) lo = std::max<int64_t>(0, n - w + 1);
    else lo = std::max<int64_t>(0, (n / w - 1) * w);
  }
  // The LA set of row n is [0, la_count(n)).
  int64_t la_count(int64_t n) const {
    if (la_prefix) return n + 1;
    if (geom == WindowGeometry::Sliding) return std::max<int64_t>(0, n - w + 1);
    return std::max<int64_t>(0, (n / w - 1) * w);
  }
  // First row whose LA set contains token j (may be >= T).
  int64_t la_first_row(int64_t j) const {
    if (la_prefix) return j;
    if (geom == WindowGeometry::Sliding) return j + w;
    return (j / w + 2) * w;
  }
};

template <class Acc, class T>
inline Acc dot(const T* a, const Acc* b, int64_t n) {
  Acc s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += Acc(a[i]) * b[i];
    s1 += Acc(a[i + 1]) * b[i + 1];
    s2 += Acc(a[i + 2]) * b[i + 2];
    s3 += Acc(a[i + 3]) * b[i + 3];
  }
  for (; i < n; ++i) s0 += Acc(a[i]) * b[i];
  return (s0 + s1) + (s2 + s3);
}

void check_params(const HybridAttentionParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("hybrid_attention cpu: unsupported dtype ") + dtype_name(p.dtype));
  if (p.batch < 0 || p.seqlen < 0 || p.heads <= 0 || p.kv_heads <= 0 || p.heads % p.kv_heads != 0)
    throw std::invalid_argument("hybrid_attention cpu: heads must be a positive multiple of kv_heads");
  if (p.head_dim <= 0 || p.value_dim <= 0 || p.feature_dim <= 0)
    throw std::invalid_argument("hybrid_attention cpu: head_dim, value_dim and feature_dim must be positive");
  if (p.window < 1) throw std::invalid_argument("hybrid_attention cpu: window must be >= 1");
  int m = static_cast<int>(p.mode);
  if (m < 0 || m > 6) throw std::invalid_argument("hybrid_attention cpu: unknown mode");
  int g = static_cast<int>(p.geometry);
  if (g < 0 || g > 1) throw std::invalid_argument("hybrid_attention cpu: unknown geometry");
}

template <class T, class Acc>
void forward_impl(const HybridAttentionParams& p) {
  const Geo G(p);
  const int64_t B = p.batch, H = p.heads, Hkv = p.kv_heads, Tn = p.seqlen;
  const int64_t d = p.head_dim, dv = p.value_dim, F = p.feature_dim, grp = H / Hkv;
  const Acc scale = p.scale > 0 ? Acc(p.scale) : Acc(1.0 / std::sqrt(double(d)));
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T* fq = static_cast<const T*>(p.fq);
  const T* fk = static_cast<const T*>(p.fk);
  const Acc* gamma = static_cast<const Acc*>(p.gamma);
  const Acc* keep = static_cast<const Acc*>(p.keep);
  T* y = static_cast<T*>(p.y);
  Acc* c_out = static_cast<Acc*>(p.c);
  Acc* dsw_out = static_cast<Acc*>(p.den_swa);
  Acc* dla_out = static_cast<Acc*>(p.den_la);
  const int64_t maxwin = G.mode == HybridMode::Sinks ? std::max<int64_t>(0, std::min(G.sinks, Tn)) : std::min(2 * G.w, Tn);

  parallel_for(B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<Acc> S(F * dv), z(F), qa(d), fqa(F), s(std::max<int64_t>(maxwin, 1)), numw(dv), numl(dv);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H, kvh = b * Hkv + h / grp;
      const T* qh = q + bh * Tn * d;
      const T* kh = k + kvh * Tn * d;
      const T* vh = v + kvh * Tn * dv;
      const T* fqh = fq + bh * Tn * F;
      const T* fkh = fk + bh * Tn * F;
      T* yh = y + bh * Tn * dv;
      const Acc gam = gamma ? gamma[h] : Acc(0);
      const Acc m = keep ? keep[bh] : Acc(1);
      const Acc lam = p.lambda_kind == LambdaKind::Affine ? Acc(1) - gam : Acc(1);
      const Acc gw = (G.mode == HybridMode::Swa || G.mode == HybridMode::Sinks) ? m : gam * m;  // keep = 0 switches the softmax branch off in every mode
      std::fill(S.begin(), S.end(), Acc(0));
      std::fill(z.begin(), z.end(), Acc(0));
      int64_t added = 0;
      for (int64_t n = 0; n < Tn; ++n) {
        Acc c = 0, dsw = 0, dla = 0;
        std::fill(numw.begin(), numw.end(), Acc(0));
        std::fill(numl.begin(), numl.end(), Acc(0));
        if (G.mode != HybridMode::None) {
          if (G.use_la) {
            const int64_t cnt = G.la_count(n);
            for (; added < cnt; ++added) {
              const T* fkj = fkh + added * F;
              const T* vj = vh + added * dv;
              for (int64_t f = 0; f < F; ++f) {
                const Acc a = Acc(fkj[f]);
                Acc* Sf = S.data() + f * dv;
                for (int64_t e = 0; e < dv; ++e) Sf[e] += a * Acc(vj[e]);
                z[f] += a;
              }
            }
            if (added > 0) {
              for (int64_t f = 0; f < F; ++f) fqa[f] = Acc(fqh[n * F + f]);
              dla = dot<Acc>(fqa.data(), z.data(), F);
              for (int64_t f = 0; f < F; ++f) {
                const Acc a = fqa[f];
                const Acc* Sf = S.data() + f * dv;
                for (int64_t e = 0; e < dv; ++e) numl[e] += a * Sf[e];
              }
            }
          }
          if (G.use_win && m != 0) {  // keep = 0: the softmax branch is off (c = 0, den_swa = 0)
            int64_t lo, hi;
            G.win(n, lo, hi);
            if (hi >= lo) {
              for (int64_t e = 0; e < d; ++e) qa[e] = Acc(qh[n * d + e]);
              c = -INFINITY;
              for (int64_t i = lo; i <= hi; ++i) {
                const Acc si = dot<Acc>(kh + i * d, qa.data(), d) * scale;
                s[i - lo] = si;
                c = std::max(c, si);
              }
              for (int64_t i = lo; i <= hi; ++i) {
                const Acc a = std::exp(s[i - lo] - c);
                dsw += a;
                const T* vi = vh + i * dv;
                for (int64_t e = 0; e < dv; ++e) numw[e] += a * Acc(vi[e]);
              }
            }
          }
        }
        dsw *= gw;
        dla *= lam;
        const Acc D = dsw + dla;
        T* yn = yh + n * dv;
        if (D != 0) {
          const Acc inv = Acc(1) / D;
          for (int64_t e = 0; e < dv; ++e) yn[e] = T((gw * numw[e] + lam * numl[e]) * inv);
        } else {
          for (int64_t e = 0; e < dv; ++e) yn[e] = T(0);
        }
        c_out[bh * Tn + n] = c;
        dsw_out[bh * Tn + n] = dsw;
        dla_out[bh * Tn + n] = dla;
      }
    }
  });
}

template <class T, class Acc>
void backward_impl(const HybridAttentionGradParams& gp) {
  const HybridAttentionParams& p = gp.fwd;
  const Geo G(p);
  const int64_t B = p.batch, H = p.heads, Hkv = p.kv_heads, Tn = p.seqlen;
  const int64_t d = p.head_dim, dv = p.value_dim, F = p.feature_dim, grp = H / Hkv;
  const Acc scale = p.scale > 0 ? Acc(p.scale) : Acc(1.0 / std::sqrt(double(d)));
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T* fq = static_cast<const T*>(p.fq);
  const T* fk = static_cast<const T*>(p.fk);
  const Acc* gamma = static_cast<const Acc*>(p.gamma);
  const Acc* keep = static_cast<const Acc*>(p.keep);
  const T* y = static_cast<const T*>(p.y);
  const Acc* c_in = static_cast<const Acc*>(p.c);
  const Acc* dsw_in = static_cast<const Acc*>(p.den_swa);
  const Acc* dla_in = static_cast<const Acc*>(p.den_la);
  const T* dy = static_cast<const T*>(gp.dy);
  T* dq = static_cast<T*>(gp.dq);
  T* dk = static_cast<T*>(gp.dk);
  T* dvo = static_cast<T*>(gp.dv);
  T* dfq = static_cast<T*>(gp.dfq);
  T* dfk = static_cast<T*>(gp.dfk);
  Acc* dgamma = static_cast<Acc*>(gp.dgamma);
  const int64_t maxwin = G.mode == HybridMode::Sinks ? std::max<int64_t>(0, std::min(G.sinks, Tn)) : std::min(2 * G.w, Tn);
  std::vector<Acc> dg_part(B * H, Acc(0));

  parallel_for(B * Hkv, 1, [&](int64_t begin, int64_t end) {
    const int64_t mw = std::max<int64_t>(maxwin, 1);
    std::vector<Acc> S(F * dv), z(F), qa(d), dya(dv), fqa(F), t(F), s(mw), ds(mw), dqa(d);
    std::vector<Acc> dka(Tn * d), dva(Tn * dv);  // per kv head accumulators, O(T (d + dv))
    for (int64_t bg = begin; bg < end; ++bg) {
      const int64_t b = bg / Hkv;
      const T* kh = k + bg * Tn * d;
      const T* vh = v + bg * Tn * dv;
      std::fill(dka.begin(), dka.end(), Acc(0));
      std::fill(dva.begin(), dva.end(), Acc(0));
      for (int64_t hh = 0; hh < grp; ++hh) {
        const int64_t h = (bg % Hkv) * grp + hh, bh = b * H + h;
        const T* qh = q + bh * Tn * d;
        const T* fqh = fq + bh * Tn * F;
        const T* fkh = fk + bh * Tn * F;
        const T* yh = y + bh * Tn * dv;
        const T* dyh = dy + bh * Tn * dv;
        T* dqh = dq + bh * Tn * d;
        T* dfqh = dfq + bh * Tn * F;
        T* dfkh = dfk + bh * Tn * F;
        const Acc gam = gamma ? gamma[h] : Acc(0);
        const Acc m = keep ? keep[bh] : Acc(1);
        const Acc lam = p.lambda_kind == LambdaKind::Affine ? Acc(1) - gam : Acc(1);
        const Acc gw = (G.mode == HybridMode::Swa || G.mode == HybridMode::Sinks) ? m : gam * m;  // keep = 0 switches the softmax branch off in every mode
        Acc dgw = 0, dlam = 0;
        auto row_D = [&](int64_t n) { return dsw_in[bh * Tn + n] + dla_in[bh * Tn + n]; };
        auto row_yy = [&](int64_t n) {
          Acc r = 0;
          for (int64_t e = 0; e < dv; ++e) r += Acc(dyh[n * dv + e]) * Acc(yh[n * dv + e]);
          return r;
        };

        // ---- forward-direction scan: window part, dq, dfq ----
        std::fill(S.begin(), S.end(), Acc(0));
        std::fill(z.begin(), z.end(), Acc(0));
        int64_t added = 0;
        for (int64_t n = 0; n < Tn; ++n) {
          if (G.use_la) {  // the state must advance even on rows with zero gradient
            const int64_t cnt = G.la_count(n);
            for (; added < cnt; ++added) {
              const T* fkj = fkh + added * F;
              const T* vj = vh + added * dv;
              for (int64_t f = 0; f < F; ++f) {
                const Acc a = Acc(fkj[f]);
                Acc* Sf = S.data() + f * dv;
                for (int64_t e = 0; e < dv; ++e) Sf[e] += a * Acc(vj[e]);
                z[f] += a;
              }
            }
          }
          const Acc D = row_D(n);
          if (G.mode == HybridMode::None || D == 0) {
            for (int64_t e = 0; e < d; ++e) dqh[n * d + e] = T(0);
            for (int64_t f = 0; f < F; ++f) dfqh[n * F + f] = T(0);
            continue;
          }
          const Acc invD = Acc(1) / D;
          for (int64_t e = 0; e < dv; ++e) dya[e] = Acc(dyh[n * dv + e]);
          const Acc yy = row_yy(n);
          std::fill(dqa.begin(), dqa.end(), Acc(0));
          if (G.use_win && (gw != 0 || m != 0)) {  // gamma_eff = 0 still has a dgamma unless keep = 0
            int64_t lo, hi;
            G.win(n, lo, hi);
            if (hi >= lo) {
              for (int64_t e = 0; e < d; ++e) qa[e] = Acc(qh[n * d + e]);
              const Acc c = c_in[bh * Tn + n];
              Acc smax = -INFINITY, dc = 0, dgn = 0;
              int64_t arg = lo;
              for (int64_t i = lo; i <= hi; ++i) {
                const Acc si = dot<Acc>(kh + i * d, qa.data(), d) * scale;
                if (si > smax) { smax = si; arg = i; }
                const Acc a = std::exp(si - c);
                const Acc dyv = dot<Acc>(vh + i * dv, dya.data(), dv);
                const Acc g = a * (dyv - yy);
                dgn += g;
                const Acc dsi = gw * g * invD;
                ds[i - lo] = dsi;
                dc -= dsi;
                const Acc cv = gw * a * invD;
                Acc* dvi = dva.data() + i * dv;
                for (int64_t e = 0; e < dv; ++e) dvi[e] += cv * dya[e];
              }
              if (G.c_flows) ds[arg - lo] += dc;
              for (int64_t i = lo; i <= hi; ++i) {
                const Acc dsi = ds[i - lo] * scale;
                const T* ki = kh + i * d;
                Acc* dki = dka.data() + i * d;
                for (int64_t e = 0; e < d; ++e) {
                  dqa[e] += dsi * Acc(ki[e]);
                  dki[e] += dsi * qa[e];
                }
              }
              dgw += dgn * invD;
            }
          }
          for (int64_t e = 0; e < d; ++e) dqh[n * d + e] = T(dqa[e]);
          if (G.use_la && added > 0) {
            for (int64_t f = 0; f < F; ++f) {
              t[f] = dot<Acc>(S.data() + f * dv, dya.data(), dv);
              fqa[f] = Acc(fqh[n * F + f]);
            }
            const Acc cf = lam * invD;
            Acc ft = 0, fz = 0;
            for (int64_t f = 0; f < F; ++f) {
              dfqh[n * F + f] = T(cf * (t[f] - yy * z[f]));
              ft += fqa[f] * t[f];
              fz += fqa[f] * z[f];
            }
            dlam += (ft - yy * fz) * invD;
          } else {
            for (int64_t f = 0; f < F; ++f) dfqh[n * F + f] = T(0);
          }
        }

        // ---- reverse scan: dfk and the LA part of dv ----
        if (G.use_la) {
          std::vector<Acc>& U = S;  // reuse the F x dv buffer
          std::vector<Acc>& u = z;
          std::fill(U.begin(), U.end(), Acc(0));
          std::fill(u.begin(), u.end(), Acc(0));
          int64_t nn = Tn;
          for (int64_t j = Tn - 1; j >= 0; --j) {
            const int64_t first = std::min(G.la_first_row(j), Tn);
            while (nn > first) {
              --nn;
              const Acc D = row_D(nn);
              if (D == 0) continue;
              const Acc cf = lam / D;
              const Acc cy = cf * row_yy(nn);
              const T* fqn = fqh + nn * F;
              const T* dyn = dyh + nn * dv;
              for (int64_t e = 0; e < dv; ++e) dya[e] = Acc(dyn[e]);
              for (int64_t f = 0; f < F; ++f) {
                const Acc a = cf * Acc(fqn[f]);
                Acc* Uf = U.data() + f * dv;
                for (int64_t e = 0; e < dv; ++e) Uf[e] += a * dya[e];
                u[f] += cy * Acc(fqn[f]);
              }
            }
            const T* vj = vh + j * dv;
            const T* fkj = fkh + j * F;
            Acc* dvj = dva.data() + j * dv;
            for (int64_t f = 0; f < F; ++f) {
              const Acc* Uf = U.data() + f * dv;
              dfkh[j * F + f] = T(dot<Acc>(vj, Uf, dv) - u[f]);
              const Acc a = Acc(fkj[f]);
              for (int64_t e = 0; e < dv; ++e) dvj[e] += a * Uf[e];
            }
          }
        } else {
          for (int64_t i = 0; i < Tn * F; ++i) dfkh[i] = T(0);
        }
        Acc dg = 0;
        if (G.has_dgamma) {
          dg = m * dgw;
          if (p.lambda_kind == LambdaKind::Affine) dg -= dlam;
        }
        dg_part[bh] = dg;
      }
      T* dkh = dk + bg * Tn * d;
      T* dvh = dvo + bg * Tn * dv;
      for (int64_t i = 0; i < Tn * d; ++i) dkh[i] = T(dka[i]);
      for (int64_t i = 0; i < Tn * dv; ++i) dvh[i] = T(dva[i]);
    }
  });
  for (int64_t h = 0; h < H; ++h) {
    Acc acc = 0;
    for (int64_t b = 0; b < B; ++b) acc += dg_part[b * H + h];
    dgamma[h] = acc;
  }
}

}  // namespace

void hybrid_attention_forward_cpu(const HybridAttentionParams& p) {
  check_params(p);
  if (p.dtype == DType::F64) forward_impl<double, double>(p);
  else forward_impl<float, float>(p);
}

void hybrid_attention_backward_cpu(const HybridAttentionGradParams& gp) {
  check_params(gp.fwd);
  if (gp.fwd.dtype == DType::F64) backward_impl<double, double>(gp);
  else backward_impl<float, float>(gp);
}

}  // namespace ha
