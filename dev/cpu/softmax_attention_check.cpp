// Dev harness for ops/softmax_attention (CPU): a naive O(T^2) version with full matrices,
// finite differences of sum(y * dy) for dq, dk, dv (GQA ratios 1, 2 and 4, T not a power of
// two, causal and not), lse, f32 vs f64, dtype rejection. Build from the repository root:
//   g++ -O2 -std=c++17 -I/work/main/native -I/work/main dev/cpu/softmax_attention_check.cpp
//       native/ops/softmax_attention/softmax_attention_cpu.cpp native/core/parallel.cpp -lpthread
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "dev/cpu/check_util.h"
#include "ops/softmax_attention/softmax_attention.h"

using namespace ha;
using devcheck::report;

struct Problem {
  int64_t B, H, Hkv, T, d, dv;
  double scale;
  bool causal;
  std::vector<double> q, k, v, dy;
};

struct Result { std::vector<double> y, lse, dq, dk, dv; };

template <typename T>
Result run(const Problem& P) {
  auto q = devcheck::cast<T>(P.q), k = devcheck::cast<T>(P.k), v = devcheck::cast<T>(P.v), dy = devcheck::cast<T>(P.dy);
  auto y = devcheck::poisoned<T>(P.B * P.H * P.T * P.dv), lse = devcheck::poisoned<T>(P.B * P.H * P.T);
  SoftmaxAttentionParams p;
  p.dtype = std::is_same<T, double>::value ? DType::F64 : DType::F32;
  p.batch = P.B; p.heads = P.H; p.kv_heads = P.Hkv; p.seqlen = P.T; p.head_dim = P.d; p.value_dim = P.dv;
  p.scale = P.scale; p.causal = P.causal;
  p.q = q.data(); p.k = k.data(); p.v = v.data(); p.y = y.data(); p.lse = lse.data();
  softmax_attention_forward_cpu(p);
  SoftmaxAttentionGradParams g;
  g.fwd = p;
  g.dy = dy.data();
  auto dq = devcheck::poisoned<T>(q.size()), dk = devcheck::poisoned<T>(k.size()), dvv = devcheck::poisoned<T>(v.size());
  g.dq = dq.data(); g.dk = dk.data(); g.dv = dvv.data();
  softmax_attention_backward_cpu(g);
  return {devcheck::to_d(y), devcheck::to_d(lse), devcheck::to_d(dq), devcheck::to_d(dk), devcheck::to_d(dvv)};
}

double objective(const Problem& P) {  // sum(y * dy), f64 kernel forward
  std::vector<double> y(P.B * P.H * P.T * P.dv), lse(P.B * P.H * P.T);
  SoftmaxAttentionParams p;
  p.dtype = DType::F64;
  p.batch = P.B; p.heads = P.H; p.kv_heads = P.Hkv; p.seqlen = P.T; p.head_dim = P.d; p.value_dim = P.dv;
  p.scale = P.scale; p.causal = P.causal;
  p.q = P.q.data(); p.k = P.k.data(); p.v = P.v.data(); p.y = y.data(); p.lse = lse.data();
  softmax_attention_forward_cpu(p);
  double s = 0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * P.dy[i];
  return s;
}

// Full-matrix reference: S, P = softmax(S), y = P V; dP = dy V^T, dS = P * (dP - rowsum(dP * P)).
Result naive(const Problem& P) {
  const int64_t T = P.T, d = P.d, dv = P.dv, g = P.H / P.Hkv;
  Result R;
  R.y.assign(P.B * P.H * T * dv, 0.0);
  R.lse.assign(P.B * P.H * T, 0.0);
  R.dq.assign(P.q.size(), 0.0);
  R.dk.assign(P.k.size(), 0.0);
  R.dv.assign(P.v.size(), 0.0);
  for (int64_t b = 0; b < P.B; ++b)
    for (int64_t h = 0; h < P.H; ++h) {
      const int64_t qo = (b * P.H + h) * T, ko = (b * P.Hkv + h / g) * T;
      std::vector<double> S(T * T, -INFINITY), Pm(T * T, 0.0), dP(T * T, 0.0);
      for (int64_t n = 0; n < T; ++n) {
        double m = -INFINITY;
        for (int64_t i = 0; i < T; ++i) {
          if (P.causal && i > n) continue;
          double s = 0;
          for (int64_t e = 0; e < d; ++e) s += P.q[(qo + n) * d + e] * P.k[(ko + i) * d + e];
          S[n * T + i] = s * P.scale;
          m = std::max(m, S[n * T + i]);
        }
        double l = 0;
        for (int64_t i = 0; i < T; ++i) l += std::exp(S[n * T + i] - m);
        R.lse[qo + n] = m + std::log(l);
        for (int64_t i = 0; i < T; ++i) Pm[n * T + i] = std::exp(S[n * T + i] - m) / l;
        for (int64_t i = 0; i < T; ++i)
          for (int64_t e = 0; e < dv; ++e) R.y[(qo + n) * dv + e] += Pm[n * T + i] * P.v[(ko + i) * dv + e];
        double rs = 0;
        for (int64_t i = 0; i < T; ++i) {
          double acc = 0;
          for (int64_t e = 0; e < dv; ++e) acc += P.dy[(qo + n) * dv + e] * P.v[(ko + i) * dv + e];
          dP[n * T + i] = acc;
          rs += acc * Pm[n * T + i];
        }
        for (int64_t i = 0; i < T; ++i) {
          const double dS = Pm[n * T + i] * (dP[n * T + i] - rs) * P.scale;
          for (int64_t e = 0; e < d; ++e) {
            R.dq[(qo + n) * d + e] += dS * P.k[(ko + i) * d + e];
            R.dk[(ko + i) * d + e] += dS * P.q[(qo + n) * d + e];
          }
          for (int64_t e = 0; e < dv; ++e) R.dv[(ko + i) * dv + e] += Pm[n * T + i] * P.dy[(qo + n) * dv + e];
        }
      }
    }
  return R;
}

Problem random_problem(uint64_t seed, int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t d, int64_t dv, bool causal) {
  devcheck::Rng rng(seed);
  Problem P{B, H, Hkv, T, d, dv, 1.0 / std::sqrt(double(d)), causal, {}, {}, {}, {}};
  P.q = rng.normal(B * H * T * d, 1.5);
  P.k = rng.normal(B * Hkv * T * d, 1.5);
  P.v = rng.normal(B * Hkv * T * dv);
  P.dy = rng.normal(B * H * T * dv);
  return P;
}

void check(const std::string& name, Problem P) {
  std::printf("%s (B %lld H %lld Hkv %lld T %lld d %lld dv %lld, %s)\n", name.c_str(), (long long)P.B, (long long)P.H,
              (long long)P.Hkv, (long long)P.T, (long long)P.d, (long long)P.dv, P.causal ? "causal" : "non-causal");
  Result R = run<double>(P), N = naive(P);
  report(name + " y vs naive", devcheck::rel(R.y, N.y), 1e-12);
  report(name + " lse vs naive", devcheck::rel(R.lse, N.lse), 1e-12);
  report(name + " dq vs naive", devcheck::rel(R.dq, N.dq), 1e-12);
  report(name + " dk vs naive", devcheck::rel(R.dk, N.dk), 1e-12);
  report(name + " dv vs naive", devcheck::rel(R.dv, N.dv), 1e-12);
  auto f = [&] { return objective(P); };
  report(name + " dq vs FD", devcheck::rel(R.dq, devcheck::finite_diff(P.q, f)), 1e-7);
  report(name + " dk vs FD", devcheck::rel(R.dk, devcheck::finite_diff(P.k, f)), 1e-7);
  report(name + " dv vs FD", devcheck::rel(R.dv, devcheck::finite_diff(P.v, f)), 1e-7);
  Result S = run<float>(P);
  report(name + " f32 vs f64 (y, lse, dq, dk, dv max)",
         std::max({devcheck::rel(S.y, R.y), devcheck::rel(S.lse, R.lse), devcheck::rel(S.dq, R.dq),
                   devcheck::rel(S.dk, R.dk), devcheck::rel(S.dv, R.dv)}), 1e-5);
}

void check_dtype_rejected() {
  std::printf("dtype rejection\n");
  for (DType t : {DType::BF16, DType::F16, DType::I32}) {
    SoftmaxAttentionParams p;
    p.dtype = t;
    bool threw = false, threw2 = false;
    try { softmax_attention_forward_cpu(p); } catch (const std::invalid_argument&) { threw = true; }
    SoftmaxAttentionGradParams g; g.fwd = p;
    try { softmax_attention_backward_cpu(g); } catch (const std::invalid_argument&) { threw2 = true; }
    report(std::string("invalid_argument for ") + dtype_name(t), threw && threw2 ? 0.0 : INFINITY, 0);
  }
}

int main() {
  try {
    check("gqa1", random_problem(1, 2, 3, 3, 37, 8, 6, true));
    check("gqa2", random_problem(2, 2, 4, 2, 29, 8, 5, true));
    check("gqa4", random_problem(3, 1, 4, 1, 23, 6, 7, true));
    check("gqa2 non-causal", random_problem(4, 2, 4, 2, 19, 5, 4, false));
    check_dtype_rejected();
  } catch (const std::exception& e) {
    std::printf("exception: %s\n", e.what());
    return 2;
  }
  return devcheck::finish("softmax_attention_check");
}
