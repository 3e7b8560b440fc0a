// Dev harness for ops/transfer_loss (CPU): golden fixture, a naive T x T version, finite
// differences (GQA, T not a power of two), upstream-gradient scaling, clamping, f32 vs f64,
// dtype rejection. Build from the repository root:
//   g++ -O2 -std=c++17 -I/work/main/native -I/work/main dev/cpu/transfer_loss_check.cpp
//       native/ops/transfer_loss/transfer_loss_cpu.cpp native/core/parallel.cpp -lpthread
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "dev/cpu/check_util.h"
#include "ops/transfer_loss/transfer_loss.h"

using namespace ha;
using devcheck::report;

struct Problem {
  int64_t B, H, Hkv, T, d, F;
  double scale;
  std::vector<double> q, k, fq, fk;
};

template <typename T>
TransferLossParams params(const Problem& P, const std::vector<T>& q, const std::vector<T>& k,
                          const std::vector<T>& fq, const std::vector<T>& fk, T* loss) {
  TransferLossParams p;
  p.dtype = std::is_same<T, double>::value ? DType::F64 : DType::F32;
  p.batch = P.B; p.heads = P.H; p.kv_heads = P.Hkv; p.seqlen = P.T; p.head_dim = P.d; p.feature_dim = P.F;
  p.scale = P.scale;
  p.q = q.data(); p.k = k.data(); p.fq = fq.data(); p.fk = fk.data(); p.loss = loss;
  return p;
}

template <typename T>
double run(const Problem& P, double dloss_v, std::vector<double>& dfq_o, std::vector<double>& dfk_o) {
  auto q = devcheck::cast<T>(P.q), k = devcheck::cast<T>(P.k), fq = devcheck::cast<T>(P.fq), fk = devcheck::cast<T>(P.fk);
  T loss = std::numeric_limits<T>::quiet_NaN();
  auto p = params<T>(P, q, k, fq, fk, &loss);
  transfer_loss_forward_cpu(p);
  TransferLossGradParams g;
  g.fwd = p;
  T dloss = static_cast<T>(dloss_v);
  g.dloss = &dloss;
  auto dfq = devcheck::poisoned<T>(fq.size()), dfk = devcheck::poisoned<T>(fk.size());
  g.dfq = dfq.data(); g.dfk = dfk.data();
  transfer_loss_backward_cpu(g);
  dfq_o = devcheck::to_d(dfq);
  dfk_o = devcheck::to_d(dfk);
  return loss;
}

double loss_only(const Problem& P) {
  double loss = NAN;
  auto p = params<double>(P, P.q, P.k, P.fq, P.fk, &loss);
  transfer_loss_forward_cpu(p);
  return loss;
}

// Straight from the formula with full T x T matrices (same clamping rule as the header).
double naive(const Problem& P, std::vector<double>& dfq, std::vector<double>& dfk) {
  const double eps = 1e-12;
  const int64_t T = P.T, d = P.d, F = P.F, N = P.B * P.H * P.T;
  dfq.assign(P.fq.size(), 0.0);
  dfk.assign(P.fk.size(), 0.0);
  double total = 0;
  for (int64_t b = 0; b < P.B; ++b)
    for (int64_t h = 0; h < P.H; ++h) {
      const int64_t hk = h / (P.H / P.Hkv);
      const double* q = &P.q[((b * P.H + h) * T) * d];
      const double* k = &P.k[((b * P.Hkv + hk) * T) * d];
      const double* fq = &P.fq[((b * P.H + h) * T) * F];
      const double* fk = &P.fk[((b * P.H + h) * T) * F];
      double* gq = &dfq[((b * P.H + h) * T) * F];
      double* gk = &dfk[((b * P.H + h) * T) * F];
      std::vector<double> a(T * T, 0.0), g(T * T, 0.0);
      for (int64_t n = 0; n < T; ++n) {
        double m = -INFINITY;
        std::vector<double> s(n + 1);
        for (int64_t i = 0; i <= n; ++i) {
          double acc = 0;
          for (int64_t e = 0; e < d; ++e) acc += q[n * d + e] * k[i * d + e];
          s[i] = acc * P.scale;
          m = std::max(m, s[i]);
        }
        double l = 0;
        for (int64_t i = 0; i <= n; ++i) l += std::exp(s[i] - m);
        double Z = 0;
        for (int64_t i = 0; i <= n; ++i) {
          a[n * T + i] = std::exp(s[i] - m) / l;
          double acc = 0;
          for (int64_t f = 0; f < F; ++f) acc += fq[n * F + f] * fk[i * F + f];
          g[n * T + i] = acc;
          Z += acc;
        }
        total += std::log(std::max(Z, eps));
        for (int64_t i = 0; i <= n; ++i) total -= a[n * T + i] * std::log(std::max(g[n * T + i], eps));
        // gradients of L_n
        for (int64_t i = 0; i <= n; ++i) {
          double coef = (Z >= eps ? 1.0 / Z : 0.0) - (g[n * T + i] >= eps ? a[n * T + i] / g[n * T + i] : 0.0);
          for (int64_t f = 0; f < F; ++f) {
            gq[n * F + f] += coef * fk[i * F + f] / N;
            gk[i * F + f] += coef * fq[n * F + f] / N;
          }
        }
      }
    }
  return total / N;
}

Problem random_problem(uint64_t seed, int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t d, int64_t F) {
  devcheck::Rng rng(seed);
  Problem P{B, H, Hkv, T, d, F, 1.0 / std::sqrt(double(d)), {}, {}, {}, {}};
  P.q = rng.normal(B * H * T * d);
  P.k = rng.normal(B * Hkv * T * d);
  // positive features (like a softmax / exp map): exp of a normal
  P.fq = rng.normal(B * H * T * F, 0.7);
  P.fk = rng.normal(B * H * T * F, 0.7);
  for (auto& x : P.fq) x = std::exp(x);
  for (auto& x : P.fk) x = std::exp(x);
  return P;
}

void check_fixture(const std::string& path) {
  std::printf("fixture %s\n", path.c_str());
  auto fx = dev::load_fixture(path);
  const auto& qs = fx.at("q").shape;
  const auto& ks = fx.at("k").shape;
  Problem P{qs[0], qs[1], ks[1], qs[2], qs[3], fx.at("fq").shape[3], 1.0 / std::sqrt(double(qs[3])),
            fx.at("q").data, fx.at("k").data, fx.at("fq").data, fx.at("fk").data};
  std::printf("  shapes: q [%lld,%lld,%lld,%lld], k kv_heads %lld, F %lld; dloss: %s\n", (long long)P.B, (long long)P.H,
              (long long)P.T, (long long)P.d, (long long)P.Hkv, (long long)P.F,
              fx.count("dloss") ? std::to_string(fx.at("dloss").data[0]).c_str() : "not in fixture, gradients are of loss itself (dloss = 1)");
  double dl = fx.count("dloss") ? fx.at("dloss").data[0] : 1.0;
  std::vector<double> dfq, dfk;
  double loss = run<double>(P, dl, dfq, dfk);
  const double ref = fx.at("loss").data[0];
  std::printf("  loss %.17g  ref %.17g\n", loss, ref);
  report("f64 loss", std::abs(loss - ref) / std::abs(ref), 1e-9);
  report("f64 dfq", devcheck::rel(dfq, fx.at("dfq").data), 1e-9);
  report("f64 dfk", devcheck::rel(dfk, fx.at("dfk").data), 1e-9);
  double loss32 = run<float>(P, dl, dfq, dfk);
  report("f32 loss", std::abs(loss32 - ref) / std::abs(ref), 1e-5);
  report("f32 dfq", devcheck::rel(dfq, fx.at("dfq").data), 1e-4);
  report("f32 dfk", devcheck::rel(dfk, fx.at("dfk").data), 1e-4);
}

void check_random(const char* name, Problem P, double dloss) {
  std::printf("random: %s (B %lld H %lld Hkv %lld T %lld d %lld F %lld, dloss %g)\n", name, (long long)P.B, (long long)P.H,
              (long long)P.Hkv, (long long)P.T, (long long)P.d, (long long)P.F, dloss);
  std::vector<double> dfq, dfk, nq, nk;
  double loss = run<double>(P, dloss, dfq, dfk);
  double ref = naive(P, nq, nk);
  for (auto& x : nq) x *= dloss;
  for (auto& x : nk) x *= dloss;
  report(std::string(name) + " loss vs naive", std::abs(loss - ref) / std::abs(ref), 1e-12);
  report(std::string(name) + " dfq vs naive", devcheck::rel(dfq, nq), 1e-12);
  report(std::string(name) + " dfk vs naive", devcheck::rel(dfk, nk), 1e-12);
  auto f = [&] { return dloss * loss_only(P); };
  report(std::string(name) + " dfq vs FD", devcheck::rel(dfq, devcheck::finite_diff(P.fq, f)), 1e-6);
  report(std::string(name) + " dfk vs FD", devcheck::rel(dfk, devcheck::finite_diff(P.fk, f)), 1e-6);
  std::vector<double> dfq32, dfk32;
  double loss32 = run<float>(P, dloss, dfq32, dfk32);
  report(std::string(name) + " f32 vs f64 (loss, dfq, dfk max)",
         std::max({std::abs(loss32 - loss) / std::abs(loss), devcheck::rel(dfq32, dfq), devcheck::rel(dfk32, dfk)}), 1e-5);
}

// Features with disjoint supports: some fq.fk are exactly 0, so the clamp is active.
void check_clamp() {
  std::printf("clamp: fq.fk = 0 for some pairs (relu-like features)\n");
  Problem P = random_problem(7, 1, 2, 1, 13, 4, 6);
  for (int64_t r = 0; r < P.B * P.H * P.T; ++r)
    for (int64_t f = 0; f < P.F; ++f) {
      if ((r % 3 == 0) != (f < 3)) P.fk[r * P.F + f] = 0.0;  // every third key lives on features 0..2, others on 3..5
      if (r % 2 == 0 && f < 3) P.fq[r * P.F + f] = 0.0;      // even queries see only features 3..5
    }
  std::vector<double> dfq, dfk, nq, nk;
  double loss = run<double>(P, 1.0, dfq, dfk);
  double ref = naive(P, nq, nk);
  std::printf("  loss %.6f (finite: %s)\n", loss, std::isfinite(loss) ? "yes" : "no");
  report("clamped loss vs naive", std::abs(loss - ref) / std::abs(ref), 1e-12);
  report("clamped dfq vs naive (finite)", devcheck::rel(dfq, nq), 1e-12);
  report("clamped dfk vs naive (finite)", devcheck::rel(dfk, nk), 1e-12);
}

void check_dtype_rejected() {
  std::printf("dtype rejection\n");
  for (DType t : {DType::BF16, DType::F16, DType::I32}) {
    TransferLossParams p;
    p.dtype = t;
    bool threw = false, threw2 = false;
    try { transfer_loss_forward_cpu(p); } catch (const std::invalid_argument&) { threw = true; }
    TransferLossGradParams g; g.fwd = p;
    try { transfer_loss_backward_cpu(g); } catch (const std::invalid_argument&) { threw2 = true; }
    report(std::string("invalid_argument for ") + dtype_name(t), threw && threw2 ? 0.0 : INFINITY, 0);
  }
}

int main(int argc, char** argv) {
  std::string root = argc > 1 ? argv[1] : "/work/shared/fixtures";
  try {
    check_fixture(root + "/hybrid/transfer-ce.safetensors");
    check_random("mha", random_problem(1, 2, 2, 2, 11, 5, 6), 1.0);
    check_random("gqa2", random_problem(2, 2, 4, 2, 9, 4, 7), 1.0);
    check_random("gqa4 dloss", random_problem(3, 1, 4, 1, 10, 3, 5), 2.5);
    check_clamp();
    check_dtype_rejected();
  } catch (const std::exception& e) {
    std::printf("exception: %s\n", e.what());
    return 2;
  }
  return devcheck::finish("transfer_loss_check");
}
