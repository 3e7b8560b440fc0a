// Dev harness (not part of the addon) for the CPU hybrid-attention kernels.
// Build from the project root:
//   g++ -O2 -std=c++17 -I native -I . dev/cpu/hybrid_attention_check.cpp
//       native/ops/hybrid_attention/*.cpp native/core/parallel.cpp -lpthread -o /tmp/hac
// Run: /tmp/hac [fixture dir, default ../shared/fixtures/hybrid]
// 1. golden fixtures (F64, chunked and naive), 2. chunked vs naive random sweeps (F64, F32),
// 3. finite differences of the chunked backward (F64), 4. timing of the chunked F32 kernels.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "dev/common/fixture.h"
#include "ops/hybrid_attention/hybrid_attention.h"

using namespace ha;

struct Case {
  int64_t B = 1, H = 1, Hkv = 1, T = 8, d = 4, dv = 4, F = 4, w = 4, S = 4;
  HybridMode mode = HybridMode::Hybrid;
  WindowGeometry geom = WindowGeometry::Sliding;
  LambdaKind lam = LambdaKind::One;
  bool has_keep = false;
};

struct Data {
  std::vector<double> q, k, v, fq, fk, gamma, keep, dy;
};

struct Result {
  std::vector<double> y, c, dsw, dla, dq, dk, dv, dfq, dfk, dgamma;
};

static const char* mode_name(HybridMode m) {
  static const char* n[] = {"hybrid", "swa", "la", "la-full", "overlap", "sinks", "none"};
  return n[int(m)];
}

template <class T>
static std::vector<T> conv(const std::vector<double>& x) { return std::vector<T>(x.begin(), x.end()); }
template <class T>
static std::vector<double> back(const std::vector<T>& x) { return std::vector<double>(x.begin(), x.end()); }

template <class T>
static Result run(const Case& cs, const Data& D, bool naive, double* ms_fwd = nullptr, double* ms_bwd = nullptr) {
  using Acc = T;  // accum_dtype: f64 for f64, f32 for f32
  auto q = conv<T>(D.q), k = conv<T>(D.k), v = conv<T>(D.v), fq = conv<T>(D.fq), fk = conv<T>(D.fk), dy = conv<T>(D.dy);
  auto gamma = conv<Acc>(D.gamma), keep = conv<Acc>(D.keep);
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const int64_t rows = cs.B * cs.H * cs.T;
  std::vector<T> y(rows * cs.dv, nan), c(rows, nan), dsw(rows, nan), dla(rows, nan);
  std::vector<T> dq(rows * cs.d, nan), dk(cs.B * cs.Hkv * cs.T * cs.d, nan), dvv(cs.B * cs.Hkv * cs.T * cs.dv, nan);
  std::vector<T> dfq(rows * cs.F, nan), dfk(rows * cs.F, nan), dg(cs.H, nan);
  HybridAttentionParams p;
  p.dtype = sizeof(T) == 8 ? DType::F64 : DType::F32;
  p.batch = cs.B; p.heads = cs.H; p.kv_heads = cs.Hkv; p.seqlen = cs.T;
  p.head_dim = cs.d; p.value_dim = cs.dv; p.feature_dim = cs.F;
  p.window = cs.w; p.sinks = cs.S; p.mode = cs.mode; p.geometry = cs.geom; p.lambda_kind = cs.lam;
  p.q = q.data(); p.k = k.data(); p.v = v.data(); p.fq = fq.data(); p.fk = fk.data();
  p.gamma = gamma.data(); p.keep = cs.has_keep ? keep.data() : nullptr;
  p.y = y.data(); p.c = c.data(); p.den_swa = dsw.data(); p.den_la = dla.data();
  auto t0 = std::chrono::steady_clock::now();
  if (naive) hybrid_attention_forward_naive_cpu(p); else hybrid_attention_forward_cpu(p);
  auto t1 = std::chrono::steady_clock::now();
  HybridAttentionGradParams g;
  g.fwd = p;
  g.dy = dy.data(); g.dq = dq.data(); g.dk = dk.data(); g.dv = dvv.data(); g.dfq = dfq.data(); g.dfk = dfk.data();
  g.dgamma = dg.data();
  if (naive) hybrid_attention_backward_naive_cpu(g); else hybrid_attention_backward_cpu(g);
  auto t2 = std::chrono::steady_clock::now();
  if (ms_fwd) *ms_fwd = std::chrono::duration<double, std::milli>(t1 - t0).count();
  if (ms_bwd) *ms_bwd = std::chrono::duration<double, std::milli>(t2 - t1).count();
  Result r;
  r.y = back(y); r.c = back(c); r.dsw = back(dsw); r.dla = back(dla);
  r.dq = back(dq); r.dk = back(dk); r.dv = back(dvv); r.dfq = back(dfq); r.dfk = back(dfk); r.dgamma = back(dg);
  return r;
}

static double rel(const std::vector<double>& a, const std::vector<double>& b) {
  for (double x : a) if (!std::isfinite(x)) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) { num = std::max(num, std::abs(a[i] - b[i])); den = std::max(den, std::abs(b[i])); }
  if (den == 0) return num == 0 ? 0 : INFINITY;  // reference all zero: require exact zero
  return num / den;
}
static double absmax(const std::vector<double>& a) { double m = 0; for (double x : a) m = std::max(m, std::abs(x)); return m; }

static int g_fail = 0;

// Error normalised by max(max|ref|, floor). The sweeps use floor 0.1 (data and gradients are O(1)): a
// gradient that is zero analytically but not structurally (w = 1 dq, dgamma when gamma cancels,
// a single-key softmax) is rounding noise in both kernels. Structural zeros are checked exactly
// by structural_zeros().
static double rel_floor(const std::vector<double>& a, const std::vector<double>& b, double floor) {
  for (double x : a) if (!std::isfinite(x)) return INFINITY;
  double num = 0, den = floor;
  for (size_t i = 0; i < a.size(); ++i) { num = std::max(num, std::abs(a[i] - b[i])); den = std::max(den, std::abs(b[i])); }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return num / den;
}

static bool all_zero(const std::vector<double>& a) { for (double x : a) if (x != 0) return false; return true; }

// Outputs that cannot depend on anything in this mode must be exactly 0.
static bool structural_zeros(HybridMode m, const Result& r, std::string* why) {
  const bool win = m == HybridMode::Hybrid || m == HybridMode::Swa || m == HybridMode::Overlap || m == HybridMode::Sinks;
  const bool la = m == HybridMode::Hybrid || m == HybridMode::La || m == HybridMode::LaFull || m == HybridMode::Overlap;
  const bool gam = m == HybridMode::Hybrid || m == HybridMode::Overlap;
  bool ok = true;
  auto need = [&](bool cond, const std::vector<double>& x, const char* n) { if (cond && !all_zero(x)) { ok = false; *why += std::string(" ") + n; } };
  need(!win, r.dq, "dq"); need(!win, r.dk, "dk"); need(!win, r.c, "c"); need(!win, r.dsw, "den_swa");
  need(!la, r.dfq, "dfq"); need(!la, r.dfk, "dfk"); need(!la, r.dla, "den_la");
  need(!gam, r.dgamma, "dgamma"); need(m == HybridMode::None, r.y, "y"); need(m == HybridMode::None, r.dv, "dv");
  return ok;
}

// Worst relative error over y and the gradients (and the statistics when with_stats).
static double compare(const Result& a, const Result& b, bool with_stats, std::string* detail = nullptr, double floor = 0) {
  const char* names[] = {"y", "dq", "dk", "dv", "dfq", "dfk", "dgamma", "c", "den_swa", "den_la"};
  const std::vector<double>* A[] = {&a.y, &a.dq, &a.dk, &a.dv, &a.dfq, &a.dfk, &a.dgamma, &a.c, &a.dsw, &a.dla};
  const std::vector<double>* Bv[] = {&b.y, &b.dq, &b.dk, &b.dv, &b.dfq, &b.dfk, &b.dgamma, &b.c, &b.dsw, &b.dla};
  double worst = 0;
  for (int i = 0; i < (with_stats ? 10 : 7); ++i) {
    double e = floor > 0 ? rel_floor(*A[i], *Bv[i], floor) : rel(*A[i], *Bv[i]);
    worst = std::max(worst, e);
    if (detail) { char buf[64]; snprintf(buf, sizeof buf, " %s=%.1e", names[i], e); *detail += buf; }
  }
  return worst;
}

// ---------------------------------------------------------------- fixtures
static void fixtures(const std::string& dir) {
  const char* files[] = {"hybrid-sliding", "hybrid-terraced", "hybrid-ssd", "swa-sliding", "la-sliding",
                         "la-full-sliding", "overlap-sliding", "sinks-sliding", "none-sliding"};
  printf("== fixtures (F64, tolerance 1e-9 relative to max|ref|)\n");
  for (const char* name : files) {
    auto fx = dev::load_fixture(dir + "/" + name + ".safetensors");
    std::string s = name;
    Case cs;
    if (s.rfind("la-full", 0) == 0) cs.mode = HybridMode::LaFull;
    else if (s.rfind("la-", 0) == 0) cs.mode = HybridMode::La;
    else if (s.rfind("hybrid", 0) == 0) cs.mode = HybridMode::Hybrid;
    else if (s.rfind("swa", 0) == 0) cs.mode = HybridMode::Swa;
    else if (s.rfind("overlap", 0) == 0) cs.mode = HybridMode::Overlap;
    else if (s.rfind("sinks", 0) == 0) cs.mode = HybridMode::Sinks;
    else cs.mode = HybridMode::None;
    auto& q = fx["q"].shape; auto& k = fx["k"].shape; auto& v = fx["v"].shape; auto& f = fx["fq"].shape;
    cs.B = q[0]; cs.H = q[1]; cs.T = q[2]; cs.d = q[3]; cs.Hkv = k[1]; cs.dv = v[3]; cs.F = f[3];
    cs.w = int64_t(fx["meta"].data[0]); cs.S = int64_t(fx["meta"].data[1]);
    cs.geom = fx["meta"].data[2] == 0 ? WindowGeometry::Sliding : WindowGeometry::Terraced;
    Data D{fx["q"].data, fx["k"].data, fx["v"].data, fx["fq"].data, fx["fk"].data, fx["gamma"].data, {}, fx["dy"].data};
    cs.has_keep = fx.count("keep") > 0;
    if (cs.has_keep) D.keep = fx["keep"].data;
    Result ref;
    ref.y = fx["y"].data; ref.dq = fx["dq"].data; ref.dk = fx["dk"].data; ref.dv = fx["dv"].data;
    ref.dfq = fx["dfq"].data; ref.dfk = fx["dfk"].data; ref.dgamma = fx["dgamma"].data;
    for (int impl = 0; impl < 2; ++impl) {
      // lambda convention: find which kind reproduces dgamma (y and the other gradients only
      // depend on lambda through the la share, so both are checked in full)
      std::string best_detail;
      double best = INFINITY, lam_dg[2] = {0, 0};
      const char* best_lam = "";
      for (LambdaKind lk : {LambdaKind::One, LambdaKind::Affine}) {
        cs.lam = lk;
        Result r = run<double>(cs, D, impl == 1);
        std::string det;
        double e = compare(r, ref, false, &det);
        if (e < best) { best = e; best_detail = det; best_lam = lk == LambdaKind::One ? "lambda=1" : "lambda=1-gamma"; }
        if (impl == 0) lam_dg[lk == LambdaKind::One ? 0 : 1] = rel(r.dgamma, ref.dgamma);
      }
      bool ok = best <= 1e-9;
      if (!ok) ++g_fail;
      printf("  %-16s %-7s %s [%s] worst=%.2e%s\n", name, impl ? "naive" : "chunked", ok ? "ok  " : "FAIL", best_lam, best,
             best_detail.c_str());
      if (impl == 0) printf("  %-16s dgamma error with lambda=1: %.1e, with lambda=1-gamma: %.1e\n", name, lam_dg[0], lam_dg[1]);
    }
  }
}

// ---------------------------------------------------------------- random data
static Data make_data(const Case& cs, std::mt19937_64& rng, double keep_zero_prob) {
  std::normal_distribution<double> N(0.0, 1.0);
  std::uniform_real_distribution<double> U(0.0, 1.0);
  Data D;
  auto fill = [&](std::vector<double>& x, int64_t n, double sd) { x.resize(n); for (auto& e : x) e = sd * N(rng); };
  fill(D.q, cs.B * cs.H * cs.T * cs.d, 1.5);
  fill(D.k, cs.B * cs.Hkv * cs.T * cs.d, 1.5);
  fill(D.v, cs.B * cs.Hkv * cs.T * cs.dv, 1.0);
  fill(D.dy, cs.B * cs.H * cs.T * cs.dv, 1.0);
  auto feat = [&](std::vector<double>& x) {  // non-negative, softmax-like scale
    x.resize(cs.B * cs.H * cs.T * cs.F);
    for (auto& e : x) e = std::exp(N(rng)) / double(cs.F);
  };
  feat(D.fq); feat(D.fk);
  D.gamma.resize(cs.H);
  for (auto& g : D.gamma) g = 0.05 + 0.9 * U(rng);
  D.keep.resize(cs.B * cs.H);
  for (auto& m : D.keep) m = U(rng) < keep_zero_prob ? 0.0 : 1.0;
  // round everything to f32 so that the f64 and f32 runs see identical inputs
  for (auto* x : {&D.q, &D.k, &D.v, &D.dy, &D.fq, &D.fk, &D.gamma}) for (auto& e : *x) e = double(float(e));
  return D;
}

static void sweeps() {
  printf("== random sweeps: chunked vs naive (F64 tol 1e-10, F32 chunked vs F64 naive tol 2e-4, both relative to max(max|ref|, 0.1); structural zeros exact)\n");
  std::mt19937_64 rng(1234);
  struct Shape { int64_t B, H, Hkv, T, d, dv, F, w; };
  const Shape shapes[] = {
      {2, 2, 2, 37, 8, 8, 8, 5},    // T not a multiple of w
      {1, 4, 2, 23, 6, 5, 10, 1},   // w = 1, GQA 2, F != d, dv != d
      {2, 4, 1, 19, 4, 7, 3, 19},   // w = T, GQA 4
      {1, 2, 1, 17, 5, 3, 6, 40},   // w > T
      {1, 4, 4, 64, 16, 12, 24, 8}, // T a multiple of w
      {1, 4, 1, 50, 8, 16, 8, 7},   // GQA 4
      {2, 2, 1, 3, 4, 4, 4, 2},     // tiny T
  };
  int count = 0;
  double worst64 = 0, worst32 = 0;
  std::string worst32_at;
  for (const Shape& sh : shapes)
    for (int mode = 0; mode <= 6; ++mode)
      for (int geom = 0; geom < 2; ++geom)
        for (int lam = 0; lam < 2; ++lam)
          for (int keep = 0; keep < 2; ++keep) {
            Case cs;
            cs.B = sh.B; cs.H = sh.H; cs.Hkv = sh.Hkv; cs.T = sh.T; cs.d = sh.d; cs.dv = sh.dv; cs.F = sh.F; cs.w = sh.w;
            cs.S = (mode == 5) ? int64_t(1 + (count % 6)) : 4;  // sinks: S in 1..6 (also S > T for tiny T)
            cs.mode = HybridMode(mode);
            cs.geom = WindowGeometry(geom);
            cs.lam = LambdaKind(lam);
            cs.has_keep = keep == 1;
            Data D = make_data(cs, rng, 0.4);
            if (cs.has_keep && cs.B * cs.H >= 2) { D.keep[0] = 0.0; D.keep[1] = 1.0; }  // always one 0 and one 1
            Result n64 = run<double>(cs, D, true);
            Result c64 = run<double>(cs, D, false);
            Result c32 = run<float>(cs, D, false);
            Result n32 = run<float>(cs, D, true);
            std::string d64, d32;
            double e64 = compare(c64, n64, true, &d64, 0.1);
            double e32 = compare(c32, n64, true, &d32, 0.1);
            double en32 = compare(n32, n64, true, nullptr, 0.1);
            std::string zwhy;
            bool zeros = structural_zeros(cs.mode, c64, &zwhy) & structural_zeros(cs.mode, c32, &zwhy) &
                         structural_zeros(cs.mode, n64, &zwhy);
            if (!zeros) d64 += " | not exactly zero:" + zwhy;
            worst64 = std::max(worst64, e64);
            if (e32 > worst32) {
              worst32 = e32;
              char buf[160];
              snprintf(buf, sizeof buf, "%s %s lam=%d keep=%d T%ld w%ld:", mode_name(cs.mode), geom ? "terraced" : "sliding", lam, keep,
                       (long)cs.T, (long)cs.w);
              worst32_at = buf + d32;
            }
            ++count;
            bool ok = zeros && e64 <= 1e-10 && e32 <= 2e-4;
            if (!ok) {
              ++g_fail;
              printf("  FAIL %s %s lam=%d keep=%d B%ld H%ld/%ld T%ld d%ld dv%ld F%ld w%ld S%ld\n    f64:%s\n    f32:%s (naive f32 %.1e)\n",
                     mode_name(cs.mode), geom ? "terraced" : "sliding", lam, keep, (long)cs.B, (long)cs.H, (long)cs.Hkv,
                     (long)cs.T, (long)cs.d, (long)cs.dv, (long)cs.F, (long)cs.w, (long)cs.S, d64.c_str(), d32.c_str(), en32);
            }
          }
  printf("  %d configurations: worst F64 chunked-vs-naive %.2e, worst F32 chunked-vs-F64 %.2e\n", count, worst64, worst32);
  printf("  worst F32 case: %s\n", worst32_at.c_str());
}

// ---------------------------------------------------------------- finite differences
static void finite_differences() {
  printf("== finite differences of the chunked F64 backward (central, eps 1e-6, tol 1e-6)\n");
  std::mt19937_64 rng(99);
  struct FD { HybridMode mode; WindowGeometry geom; LambdaKind lam; bool keep; };
  const FD cases[] = {
      {HybridMode::Hybrid, WindowGeometry::Sliding, LambdaKind::One, false},
      {HybridMode::Hybrid, WindowGeometry::Terraced, LambdaKind::One, false},
      {HybridMode::Hybrid, WindowGeometry::Terraced, LambdaKind::Affine, true},
      {HybridMode::Overlap, WindowGeometry::Sliding, LambdaKind::Affine, false},
  };
  for (const FD& fc : cases) {
    Case cs;
    cs.B = 1; cs.H = 2; cs.Hkv = 1; cs.T = 11; cs.d = 4; cs.dv = 3; cs.F = 5; cs.w = 3;
    cs.mode = fc.mode; cs.geom = fc.geom; cs.lam = fc.lam; cs.has_keep = fc.keep;
    Data D = make_data(cs, rng, 0.0);
    if (fc.keep) D.keep = {1.0, 0.0};
    Result an = run<double>(cs, D, false);
    auto loss = [&](const Data& X) {
      Result r = run<double>(cs, X, false);
      double L = 0;
      for (size_t i = 0; i < r.y.size(); ++i) L += r.y[i] * X.dy[i];
      return L;
    };
    const double eps = 1e-6;
    double worst = 0;
    std::string detail;
    auto check = [&](const char* name, std::vector<double> Data::*field, const std::vector<double>& grad) {
      std::vector<double> fd(grad.size());
      for (size_t i = 0; i < grad.size(); ++i) {
        Data P = D, M = D;
        (P.*field)[i] += eps; (M.*field)[i] -= eps;
        fd[i] = (loss(P) - loss(M)) / (2 * eps);
      }
      double e = rel(grad, fd);
      worst = std::max(worst, e);
      char buf[64]; snprintf(buf, sizeof buf, " %s=%.1e", name, e); detail += buf;
    };
    check("dq", &Data::q, an.dq); check("dk", &Data::k, an.dk); check("dv", &Data::v, an.dv);
    check("dfq", &Data::fq, an.dfq); check("dfk", &Data::fk, an.dfk); check("dgamma", &Data::gamma, an.dgamma);
    bool ok = worst <= 1e-6;
    if (!ok) ++g_fail;
    printf("  %-7s %-8s %-14s keep=%d %s worst=%.2e%s\n", mode_name(fc.mode), fc.geom == WindowGeometry::Sliding ? "sliding" : "terraced",
           fc.lam == LambdaKind::One ? "lambda=1" : "lambda=1-gamma", int(fc.keep), ok ? "ok  " : "FAIL", worst, detail.c_str());
  }
}

// ---------------------------------------------------------------- timing
static void timing() {
  Case cs;
  cs.B = 1; cs.H = 4; cs.Hkv = 4; cs.T = 4096; cs.d = 64; cs.dv = 64; cs.F = 64; cs.w = 64;
  std::mt19937_64 rng(7);
  for (WindowGeometry geom : {WindowGeometry::Sliding, WindowGeometry::Terraced}) {
    cs.geom = geom;
    Data D = make_data(cs, rng, 0.0);
    double bf = INFINITY, bb = INFINITY, bt = INFINITY;
    for (int rep = 0; rep < 5; ++rep) {
      double f, b;
      Result r = run<float>(cs, D, false, &f, &b);
      bf = std::min(bf, f); bb = std::min(bb, b); bt = std::min(bt, f + b);
      if (absmax(r.y) == 0) ++g_fail;
    }
    printf("== timing: chunked F32 hybrid %s B=1 H=4 T=4096 d=F=dv=64 w=64 (best of 5): forward %.1f ms, backward %.1f ms, total %.1f ms\n",
           geom == WindowGeometry::Sliding ? "sliding" : "terraced", bf, bb, bt);
  }
}

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "../shared/fixtures/hybrid";
  try {
    {  // unsupported dtypes must throw std::invalid_argument, for every entry point
      HybridAttentionParams p;
      p.dtype = DType::BF16; p.batch = 1; p.heads = 1; p.kv_heads = 1; p.seqlen = 1; p.head_dim = 1; p.value_dim = 1; p.feature_dim = 1;
      HybridAttentionGradParams g;
      g.fwd = p;
      int thrown = 0;
      try { hybrid_attention_forward_cpu(p); } catch (const std::invalid_argument&) { ++thrown; }
      try { hybrid_attention_backward_cpu(g); } catch (const std::invalid_argument&) { ++thrown; }
      try { hybrid_attention_forward_naive_cpu(p); } catch (const std::invalid_argument&) { ++thrown; }
      try { hybrid_attention_backward_naive_cpu(g); } catch (const std::invalid_argument&) { ++thrown; }
      printf("== bf16 rejected with std::invalid_argument by %d/4 entry points %s\n", thrown, thrown == 4 ? "ok" : "FAIL");
      if (thrown != 4) ++g_fail;
    }
    fixtures(dir);
    sweeps();
    finite_differences();
    timing();
  } catch (const std::exception& e) {
    printf("exception: %s\n", e.what());
    return 2;
  }
  printf(g_fail ? "FAILED: %d check(s)\n" : "all checks passed\n", g_fail);
  return g_fail ? 1 : 0;
}
