// Dev harness (not part of the addon): checks the recurrent decode (ops/hybrid_decode) against a
// naive O(T^2) parallel-form reference written here straight from SPEC sec. 2, and against the
// golden fixtures in /work/shared/fixtures/hybrid.
//
//   g++ -O2 -std=c++17 -I/work/main/native -I/work/main dev/cpu/hybrid_decode_check.cpp (continued)
//       native/ops/hybrid_decode/*.cpp native/core/parallel.cpp -lpthread -o /tmp/hdc  (then run /tmp/hdc)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "dev/common/fixture.h"
#include "ops/hybrid_decode/hybrid_decode.h"

using namespace ha;

// ------------------------------------------------------------------------------------------------
// Problem and naive reference (double)

struct Problem {
  int64_t B, H, Hkv, T, d, dv, F, w, sinks;
  WindowGeometry geom;
  HybridMode mode;
  LambdaKind lam;
  double scale;
  std::vector<double> q, k, v, fq, fk, gamma, keep;  // keep empty: none
};

struct Out {
  std::vector<double> y, c, dswa, dla;  // [B,H,T,dv], [B,H,T]
};

static bool in_win(const Problem& P, int64_t n, int64_t i) {
  if (i > n || i < 0) return false;
  if (P.geom == WindowGeometry::Sliding) return n - P.w < i;
  return i / P.w >= n / P.w - 1;
}
static bool in_lin(const Problem& P, int64_t n, int64_t j) {
  if (j < 0 || j > n) return false;
  if (P.geom == WindowGeometry::Sliding) return j <= n - P.w;
  return j / P.w < n / P.w - 1;
}

static Out reference(const Problem& P) {
  Out o;
  const int64_t B = P.B, H = P.H, T = P.T, d = P.d, dv = P.dv, F = P.F;
  o.y.assign(B * H * T * dv, 0);
  o.c.assign(B * H * T, 0);
  o.dswa.assign(B * H * T, 0);
  o.dla.assign(B * H * T, 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / P.Hkv);
      const double gam = P.gamma[h];
      const double kp = P.keep.empty() ? 1.0 : P.keep[b * H + h];
      const double geff = (P.mode == HybridMode::Swa || P.mode == HybridMode::Sinks) ? kp : gam * kp;  // gamma cancels there
      const double lam = P.lam == LambdaKind::One ? 1.0 : 1.0 - gam;
      for (int64_t n = 0; n < T; ++n) {
        const double* qn = &P.q[((b * H + h) * T + n) * d];
        const double* fqn = P.fq.data() + ((b * H + h) * T + n) * F;
        auto kv = [&](int64_t i) { return &P.k[((b * P.Hkv + g) * T + i) * d]; };
        auto vv = [&](int64_t i) { return &P.v[((b * P.Hkv + g) * T + i) * dv]; };
        auto fkv = [&](int64_t i) { return P.fk.data() + ((b * H + h) * T + i) * F; };
        std::vector<int64_t> A, L;
        for (int64_t i = 0; i <= n; ++i) {
          bool a = false, l = false;
          switch (P.mode) {
            case HybridMode::Hybrid: a = in_win(P, n, i); l = in_lin(P, n, i); break;
            case HybridMode::Swa: a = in_win(P, n, i); break;
            case HybridMode::La: l = in_lin(P, n, i); break;
            case HybridMode::LaFull: l = true; break;
            case HybridMode::Overlap: a = in_win(P, n, i); l = true; break;
            case HybridMode::Sinks: a = i <= std::min(P.sinks - 1, n); break;
            case HybridMode::None: break;
          }
          if (a && geff != 0) A.push_back(i);  // keep = 0: the softmax branch is off
          if (l) L.push_back(i);
        }
        std::vector<double> num(dv, 0.0);
        double c = 0, se = 0, sl = 0;
        if (!A.empty()) {
          c = -INFINITY;
          std::vector<double> s;
          for (int64_t i : A) {
            double x = 0;
            for (int64_t e = 0; e < d; ++e) x += qn[e] * kv(i)[e];
            s.push_back(x * P.scale);
            c = std::max(c, x * P.scale);
          }
          for (size_t a = 0; a < A.size(); ++a) {
            double e = std::exp(s[a] - c);
            se += e;
            for (int64_t j = 0; j < dv; ++j) num[j] += geff * e * vv(A[a])[j];
          }
        }
        for (int64_t i : L) {
          double a = 0;
          for (int64_t f = 0; f < F; ++f) a += fqn[f] * fkv(i)[f];
          sl += a;
          for (int64_t j = 0; j < dv; ++j) num[j] += lam * a * vv(i)[j];
        }
        const double den = geff * se + lam * sl;
        const int64_t r = (b * H + h) * T + n;
        for (int64_t j = 0; j < dv; ++j) o.y[r * dv + j] = den != 0 ? num[j] / den : 0.0;
        o.c[r] = c;
        o.dswa[r] = geff * se;
        o.dla[r] = lam * sl;
      }
    }
  return o;
}

// ------------------------------------------------------------------------------------------------
// Decode driver: per-sequence prefill lengths, then a schedule of steps (per-sequence counts, 0 =
// not in that call). Sequences live at shuffled slots of a pool; halfway through the schedule
// every state is saved as bytes, its slot poisoned, and restored at another slot.

struct Schedule {
  std::vector<int64_t> T0;                     // [B]
  std::vector<std::vector<int64_t>> steps;     // each [B]
  bool use_cu = true;                          // false: common tokens_per_seq (all counts equal)
};

template <typename T>
static Out run_decode(const Problem& P, const Schedule& sch) {
  const int64_t B = P.B, H = P.H, Hkv = P.Hkv, Tt = P.T, d = P.d, dv = P.dv, F = P.F;
  HybridDecodeConfig cfg;
  cfg.dtype = std::is_same<T, double>::value ? DType::F64 : DType::F32;
  cfg.heads = H; cfg.kv_heads = Hkv; cfg.head_dim = d; cfg.value_dim = dv; cfg.feature_dim = F;
  cfg.window = P.w; cfg.sinks = P.sinks; cfg.geometry = P.geom;
  const int64_t bytes = hybrid_decode_state_bytes(cfg);
  const int64_t nslots = 2 * B + 1;
  std::vector<char> pool(nslots * bytes, char(0xAB));
  std::vector<int64_t> slot_of(B);
  for (int64_t b = 0; b < B; ++b) slot_of[b] = (b * 5 + 2) % nslots;  // distinct (nslots odd, coprime 5 unless 5 | nslots)
  if (nslots % 5 == 0) for (int64_t b = 0; b < B; ++b) slot_of[b] = nslots - 1 - b;

  std::vector<T> gamma(P.gamma.begin(), P.gamma.end()), keep_all(P.keep.begin(), P.keep.end());
  Out o;
  const double NaN = std::numeric_limits<double>::quiet_NaN();
  o.y.assign(B * H * Tt * dv, NaN);
  o.c.assign(B * H * Tt, NaN);
  o.dswa.assign(B * H * Tt, NaN);
  o.dla.assign(B * H * Tt, NaN);
  std::vector<int64_t> pos(B, 0);

  auto fill_common = [&](HybridDecodeParams& p) {
    p.config = cfg; p.mode = P.mode; p.lambda_kind = P.lam; p.scale = P.scale;
    p.state = pool.data(); p.gamma = gamma.data();
  };
  auto poison = [](std::vector<T>& x) { std::fill(x.begin(), x.end(), std::numeric_limits<T>::quiet_NaN()); };

  // prefill, grouped by T0
  std::vector<int64_t> t0s = sch.T0;
  std::sort(t0s.begin(), t0s.end());
  t0s.erase(std::unique(t0s.begin(), t0s.end()), t0s.end());
  for (int64_t T0 : t0s) {
    std::vector<int64_t> bs;
    for (int64_t b = 0; b < B; ++b) if (sch.T0[b] == T0) bs.push_back(b);
    const int64_t Bg = bs.size();
    std::vector<T> q(Bg * H * T0 * d), k(Bg * Hkv * T0 * d), v(Bg * Hkv * T0 * dv), fq(Bg * H * T0 * F), fk(Bg * H * T0 * F);
    std::vector<T> y(Bg * H * T0 * dv), c(Bg * H * T0), ds(Bg * H * T0), dl(Bg * H * T0), keep(Bg * H);
    std::vector<int64_t> slots(Bg);
    for (int64_t i = 0; i < Bg; ++i) {
      const int64_t b = bs[i];
      slots[i] = slot_of[b];
      for (int64_t h = 0; h < H; ++h) {
        keep[i * H + h] = P.keep.empty() ? T(1) : T(P.keep[b * H + h]);
        for (int64_t t = 0; t < T0; ++t) {
          for (int64_t e = 0; e < d; ++e) q[((i * H + h) * T0 + t) * d + e] = T(P.q[((b * H + h) * Tt + t) * d + e]);
          for (int64_t e = 0; e < F; ++e) {
            fq[((i * H + h) * T0 + t) * F + e] = T(P.fq[((b * H + h) * Tt + t) * F + e]);
            fk[((i * H + h) * T0 + t) * F + e] = T(P.fk[((b * H + h) * Tt + t) * F + e]);
          }
        }
      }
      for (int64_t g = 0; g < Hkv; ++g)
        for (int64_t t = 0; t < T0; ++t) {
          for (int64_t e = 0; e < d; ++e) k[((i * Hkv + g) * T0 + t) * d + e] = T(P.k[((b * Hkv + g) * Tt + t) * d + e]);
          for (int64_t e = 0; e < dv; ++e) v[((i * Hkv + g) * T0 + t) * dv + e] = T(P.v[((b * Hkv + g) * Tt + t) * dv + e]);
        }
    }
    poison(y); poison(c); poison(ds); poison(dl);
    HybridDecodePrefillParams p;
    fill_common(p);
    p.batch = Bg; p.slots = slots.data(); p.seqlen = T0;
    p.keep = P.keep.empty() ? nullptr : keep.data();
    p.q = q.data(); p.k = k.data(); p.v = v.data(); p.fq = fq.data(); p.fk = fk.data();
    p.y = y.data(); p.c = c.data(); p.den_swa = ds.data(); p.den_la = dl.data();
    hybrid_decode_prefill_cpu(p);
    for (int64_t i = 0; i < Bg; ++i) {
      const int64_t b = bs[i];
      for (int64_t h = 0; h < H; ++h)
        for (int64_t t = 0; t < T0; ++t) {
          const int64_t r = (b * H + h) * Tt + t, ri = (i * H + h) * T0 + t;
          for (int64_t j = 0; j < dv; ++j) o.y[r * dv + j] = y[ri * dv + j];
          o.c[r] = c[ri]; o.dswa[r] = ds[ri]; o.dla[r] = dl[ri];
        }
      pos[b] = T0;
    }
  }

  for (size_t s = 0; s < sch.steps.size(); ++s) {
    if (s == sch.steps.size() / 2) {  // save every state as bytes, poison the pool, restore elsewhere
      std::vector<std::vector<char>> saved(B);
      for (int64_t b = 0; b < B; ++b)
        saved[b].assign(pool.begin() + slot_of[b] * bytes, pool.begin() + (slot_of[b] + 1) * bytes);
      std::fill(pool.begin(), pool.end(), char(0x5A));
      for (int64_t b = 0; b < B; ++b) {
        slot_of[b] = nslots - 1 - slot_of[b];
        std::memcpy(pool.data() + slot_of[b] * bytes, saved[b].data(), bytes);
      }
    }
    const auto& cnt = sch.steps[s];
    std::vector<int64_t> bs, cu{0};
    for (int64_t b = 0; b < B; ++b)
      if (cnt[b] > 0) { bs.push_back(b); cu.push_back(cu.back() + cnt[b]); }
    const int64_t Bg = bs.size(), N = cu.back();
    if (Bg == 0) continue;
    std::vector<T> q(N * H * d), k(N * Hkv * d), v(N * Hkv * dv), fq(N * H * F), fk(N * H * F);
    std::vector<T> y(N * H * dv), c(N * H), ds(N * H), dl(N * H), keep(Bg * H);
    std::vector<int64_t> slots(Bg);
    for (int64_t i = 0; i < Bg; ++i) {
      const int64_t b = bs[i];
      slots[i] = slot_of[b];
      for (int64_t h = 0; h < H; ++h) keep[i * H + h] = P.keep.empty() ? T(1) : T(P.keep[b * H + h]);
      for (int64_t t = 0; t < cnt[b]; ++t) {
        const int64_t n = pos[b] + t, row = cu[i] + t;
        for (int64_t h = 0; h < H; ++h) {
          for (int64_t e = 0; e < d; ++e) q[(row * H + h) * d + e] = T(P.q[((b * H + h) * Tt + n) * d + e]);
          for (int64_t e = 0; e < F; ++e) {
            fq[(row * H + h) * F + e] = T(P.fq[((b * H + h) * Tt + n) * F + e]);
            fk[(row * H + h) * F + e] = T(P.fk[((b * H + h) * Tt + n) * F + e]);
          }
        }
        for (int64_t g = 0; g < Hkv; ++g) {
          for (int64_t e = 0; e < d; ++e) k[(row * Hkv + g) * d + e] = T(P.k[((b * Hkv + g) * Tt + n) * d + e]);
          for (int64_t e = 0; e < dv; ++e) v[(row * Hkv + g) * dv + e] = T(P.v[((b * Hkv + g) * Tt + n) * dv + e]);
        }
      }
    }
    poison(y); poison(c); poison(ds); poison(dl);
    HybridDecodeStepParams p;
    fill_common(p);
    p.batch = Bg; p.slots = slots.data();
    if (sch.use_cu) p.cu_seqlens = cu.data();
    else p.tokens_per_seq = cnt[bs[0]];
    p.keep = P.keep.empty() ? nullptr : keep.data();
    p.q = q.data(); p.k = k.data(); p.v = v.data(); p.fq = fq.data(); p.fk = fk.data();
    p.y = y.data(); p.c = c.data(); p.den_swa = ds.data(); p.den_la = dl.data();
    hybrid_decode_step_cpu(p);
    for (int64_t i = 0; i < Bg; ++i) {
      const int64_t b = bs[i];
      for (int64_t t = 0; t < cnt[b]; ++t) {
        const int64_t n = pos[b] + t, row = cu[i] + t;
        for (int64_t h = 0; h < H; ++h) {
          const int64_t r = (b * H + h) * Tt + n;
          for (int64_t j = 0; j < dv; ++j) o.y[r * dv + j] = y[(row * H + h) * dv + j];
          o.c[r] = c[row * H + h]; o.dswa[r] = ds[row * H + h]; o.dla[r] = dl[row * H + h];
        }
      }
      pos[b] += cnt[b];
    }
  }
  for (int64_t b = 0; b < B; ++b) {
    const int64_t got = hybrid_decode_state_position(cfg, pool.data() + slot_of[b] * bytes);
    if (got != pos[b]) throw std::runtime_error("state position " + std::to_string(got) + " != " + std::to_string(pos[b]));
  }
  return o;
}

// max abs err / max abs ref; NaN anywhere -> inf
static double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 1e-300;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

struct Errs { double y = 0, c = 0, dswa = 0, dla = 0; double max() const { return std::max({y, c, dswa, dla}); } };
static Errs compare(const Out& a, const Out& r) {
  return {rel_err(a.y, r.y), rel_err(a.c, r.c), rel_err(a.dswa, r.dswa), rel_err(a.dla, r.dla)};
}

// ------------------------------------------------------------------------------------------------

static Problem make_problem(std::mt19937_64& rng, int64_t B, int64_t H, int64_t Hkv, int64_t T, int64_t d, int64_t dv, int64_t F,
                            int64_t w, int64_t sinks, WindowGeometry geom, HybridMode mode, LambdaKind lam, bool with_keep, bool f32) {
  Problem P{B, H, Hkv, T, d, dv, F, w, sinks, geom, mode, lam, 1.0 / std::sqrt(double(d)), {}, {}, {}, {}, {}, {}, {}};
  std::normal_distribution<double> N(0, 1);
  std::uniform_real_distribution<double> U(0, 1);
  auto round = [&](double x) { return f32 ? double(float(x)) : x; };
  auto gen = [&](std::vector<double>& x, int64_t n, bool pos, double sc) {
    x.resize(n);
    for (auto& e : x) e = round(pos ? std::exp(0.7 * N(rng)) * 0.3 : sc * N(rng));
  };
  gen(P.q, B * H * T * d, false, 1.5);
  gen(P.k, B * Hkv * T * d, false, 1.5);
  gen(P.v, B * Hkv * T * dv, false, 1.0);
  gen(P.fq, B * H * T * F, true, 1.0);
  gen(P.fk, B * H * T * F, true, 1.0);
  P.gamma.resize(H);
  for (auto& g : P.gamma) g = round(0.05 + 0.9 * U(rng));
  if (with_keep) {
    P.keep.resize(B * H);
    for (int64_t i = 0; i < B * H; ++i) P.keep[i] = (i % 3 == 1) ? 0.0 : 1.0;
  }
  return P;
}

static const char* mode_name(HybridMode m) {
  static const char* n[] = {"hybrid", "swa", "la", "la-full", "overlap", "sinks", "none"};
  return n[int(m)];
}

static int failures = 0;

int main() {
  std::mt19937_64 rng(1234);
  const HybridMode modes[] = {HybridMode::Hybrid, HybridMode::Swa, HybridMode::La, HybridMode::LaFull,
                              HybridMode::Overlap, HybridMode::Sinks, HybridMode::None};
  const double tol64 = 1e-10, tol32 = 2e-5;

  // 1. prefill(T0) + single steps == parallel, every mode x geometry x w x GQA x T0 x dtype
  {
    double worst64 = 0, worst32 = 0;
    int cases = 0;
    for (int f32 = 0; f32 < 2; ++f32)
      for (HybridMode mode : modes)
        for (int gi = 0; gi < 2; ++gi)
          for (int64_t w : {1, 4, 16})
            for (int64_t gqa : {1, 2}) {
              const WindowGeometry geom = gi ? WindowGeometry::Terraced : WindowGeometry::Sliding;
              const int64_t T = 3 * w + 9, H = 4, Hkv = H / gqa;
              const LambdaKind lam = (w == 4) ? LambdaKind::Affine : LambdaKind::One;
              Problem P = make_problem(rng, 2, H, Hkv, T, 8, 6, 10, w, 3, geom, mode, lam, /*keep*/ true, f32);
              Out ref = reference(P);
              std::vector<int64_t> t0s = {0, 1, w - 1, w, int64_t(rng() % T)};
              for (int64_t T0 : t0s) {
                Schedule sch;
                sch.T0.assign(P.B, T0);
                sch.use_cu = (T0 % 2 == 0);
                for (int64_t n = T0; n < T; ++n) sch.steps.push_back(std::vector<int64_t>(P.B, 1));
                Errs e = f32 ? compare(run_decode<float>(P, sch), ref) : compare(run_decode<double>(P, sch), ref);
                const double tol = f32 ? tol32 : tol64;
                (f32 ? worst32 : worst64) = std::max(f32 ? worst32 : worst64, e.max());
                ++cases;
                if (!(e.max() <= tol)) {
                  ++failures;
                  std::printf("FAIL single-step %s %s %s w=%ld gqa=%ld T0=%ld: y %.2e c %.2e dswa %.2e dla %.2e\n", f32 ? "f32" : "f64",
                              mode_name(mode), gi ? "terraced" : "sliding", (long)w, (long)gqa, (long)T0, e.y, e.c, e.dswa, e.dla);
                }
              }
            }
    std::printf("[single steps] %d cases (7 modes x 2 geometries x w{1,4,16} x gqa{1,2} x T0{0,1,w-1,w,rand} x {f64,f32}, keep mask, F=10 dv=6 d=8)\n"
                "   worst rel err f64 %.3e (tol %.0e)   f32 %.3e (tol %.0e)\n", cases, worst64, tol64, worst32, tol32);
  }

  // 1b. feature_dim = 0 (no LA features at all; fq, fk null): every mode, both geometries
  {
    double worst = 0;
    int cases = 0;
    for (HybridMode mode : modes)
      for (int gi = 0; gi < 2; ++gi) {
        Problem P = make_problem(rng, 2, 4, 2, 30, 8, 6, 0, 4, 3, gi ? WindowGeometry::Terraced : WindowGeometry::Sliding, mode,
                                 LambdaKind::One, true, false);
        Schedule sch;
        sch.T0.assign(P.B, 5);
        for (int64_t n = 5; n < P.T; ++n) sch.steps.push_back(std::vector<int64_t>(P.B, 1));
        Errs e = compare(run_decode<double>(P, sch), reference(P));
        worst = std::max(worst, e.max());
        ++cases;
        if (!(e.max() <= tol64)) { ++failures; std::printf("FAIL F=0 %s %d: %.2e\n", mode_name(mode), gi, e.max()); }
      }
    std::printf("[feature_dim 0] %d cases, worst rel err f64 %.3e\n", cases, worst);
  }

  // 1c. long sequence (f32 accumulation drift of S, z): T = 1500, w = 64, prefill 100 + steps
  {
    double worst64 = 0, worst32 = 0;
    for (HybridMode mode : {HybridMode::Hybrid, HybridMode::LaFull, HybridMode::Overlap})
      for (int gi = 0; gi < 2; ++gi)
        for (int f32 = 0; f32 < 2; ++f32) {
          Problem P = make_problem(rng, 1, 2, 1, 1500, 16, 16, 32, 64, 8, gi ? WindowGeometry::Terraced : WindowGeometry::Sliding,
                                   mode, LambdaKind::One, false, f32);
          Schedule sch;
          sch.T0.assign(1, 100);
          for (int64_t n = 100; n < P.T; ++n) sch.steps.push_back({1});
          Errs e = compare(f32 ? run_decode<float>(P, sch) : run_decode<double>(P, sch), reference(P));
          (f32 ? worst32 : worst64) = std::max(f32 ? worst32 : worst64, e.max());
          if (!(e.max() <= (f32 ? tol32 : tol64))) { ++failures; std::printf("FAIL long %s %d f32=%d: %.2e\n", mode_name(mode), gi, f32, e.max()); }
        }
    std::printf("[long T=1500 w=64, hybrid/la-full/overlap x 2 geometries] worst rel err f64 %.3e   f32 %.3e\n", worst64, worst32);
  }

  // 2. ragged batches + multi-token continuation steps
  {
    double worst64 = 0, worst32 = 0;
    int cases = 0;
    for (int f32 = 0; f32 < 2; ++f32)
      for (HybridMode mode : modes)
        for (int gi = 0; gi < 2; ++gi)
          for (int64_t w : {1, 4, 16}) {
            const WindowGeometry geom = gi ? WindowGeometry::Terraced : WindowGeometry::Sliding;
            const int64_t B = 4, H = 4, Hkv = 2, T = 3 * w + 17;
            Problem P = make_problem(rng, B, H, Hkv, T, 8, 5, 12, w, 4, geom, mode, LambdaKind::Affine, true, f32);
            Out ref = reference(P);
            // (a) ragged: different prefill lengths, random counts 0..4 per sequence per step
            {
              Schedule sch;
              for (int64_t b = 0; b < B; ++b) sch.T0.push_back(b == 0 ? 0 : int64_t(rng() % (T / 2)));
              std::vector<int64_t> pos = sch.T0;
              while (true) {
                std::vector<int64_t> cnt(B, 0);
                bool any = false;
                for (int64_t b = 0; b < B; ++b) {
                  int64_t left = T - pos[b];
                  if (left <= 0) continue;
                  cnt[b] = std::min<int64_t>(left, rng() % 5);
                  if (rng() % 3 == 0) cnt[b] = std::min<int64_t>(left, 1);
                  pos[b] += cnt[b];
                  any = any || cnt[b] > 0;
                }
                if (!any) { bool done = true; for (int64_t b = 0; b < B; ++b) done = done && pos[b] == T; if (done) break; continue; }
                sch.steps.push_back(cnt);
              }
              Errs e = f32 ? compare(run_decode<float>(P, sch), ref) : compare(run_decode<double>(P, sch), ref);
              (f32 ? worst32 : worst64) = std::max(f32 ? worst32 : worst64, e.max());
              ++cases;
              if (!(e.max() <= (f32 ? tol32 : tol64))) {
                ++failures;
                std::printf("FAIL ragged %s %s %s w=%ld: y %.2e c %.2e dswa %.2e dla %.2e\n", f32 ? "f32" : "f64", mode_name(mode),
                            gi ? "terraced" : "sliding", (long)w, e.y, e.c, e.dswa, e.dla);
              }
            }
            // (b) common multi-token chunks (tokens_per_seq = k, no cu_seqlens), then a ragged tail
            for (int64_t chunk : {int64_t(2), int64_t(5), w + 3}) {
              Schedule sch;
              const int64_t T0 = w;
              sch.T0.assign(B, T0);
              int64_t p = T0;
              while (p + chunk <= T) { sch.steps.push_back(std::vector<int64_t>(B, chunk)); p += chunk; }
              if (p < T) sch.steps.push_back(std::vector<int64_t>(B, T - p));
              sch.use_cu = false;
              Errs e = f32 ? compare(run_decode<float>(P, sch), ref) : compare(run_decode<double>(P, sch), ref);
              (f32 ? worst32 : worst64) = std::max(f32 ? worst32 : worst64, e.max());
              ++cases;
              if (!(e.max() <= (f32 ? tol32 : tol64))) {
                ++failures;
                std::printf("FAIL chunked %s %s %s w=%ld chunk=%ld: y %.2e c %.2e dswa %.2e dla %.2e\n", f32 ? "f32" : "f64", mode_name(mode),
                            gi ? "terraced" : "sliding", (long)w, (long)chunk, e.y, e.c, e.dswa, e.dla);
              }
            }
            // (c) full prefill with y (T0 = T), no steps
            {
              Schedule sch;
              sch.T0.assign(B, T);
              Errs e = f32 ? compare(run_decode<float>(P, sch), ref) : compare(run_decode<double>(P, sch), ref);
              (f32 ? worst32 : worst64) = std::max(f32 ? worst32 : worst64, e.max());
              ++cases;
              if (!(e.max() <= (f32 ? tol32 : tol64))) {
                ++failures;
                std::printf("FAIL prefill-all %s %s %s w=%ld: %.2e\n", f32 ? "f32" : "f64", mode_name(mode), gi ? "terraced" : "sliding", (long)w, e.max());
              }
            }
          }
    std::printf("[ragged / multi-token / full prefill] %d cases (B=4, GQA 2, affine lambda, keep mask; ragged counts 0..4 with 4 sequences at different positions, chunks {2,5,w+3})\n"
                "   worst rel err f64 %.3e   f32 %.3e\n", cases, worst64, worst32);
  }

  // 3. golden fixtures: y of each fixture from prefill(0) + T single steps, and from prefill(T)
  {
    const char* names[] = {"hybrid-sliding", "hybrid-ssd", "hybrid-terraced", "la-full-sliding", "la-sliding",
                           "none-sliding", "overlap-sliding", "sinks-sliding", "swa-sliding"};
    const HybridMode fm[] = {HybridMode::Hybrid, HybridMode::Hybrid, HybridMode::Hybrid, HybridMode::LaFull, HybridMode::La,
                             HybridMode::None, HybridMode::Overlap, HybridMode::Sinks, HybridMode::Swa};
    for (int i = 0; i < 9; ++i) {
      auto fx = dev::load_fixture(std::string("/work/shared/fixtures/hybrid/") + names[i] + ".safetensors");
      const auto& sh = fx["q"].shape;
      Problem P{sh[0], sh[1], fx["k"].shape[1], sh[2], sh[3], fx["v"].shape[3], fx["fq"].shape[3],
                int64_t(fx["meta"].data[0]), int64_t(fx["meta"].data[1]),
                fx["meta"].data[2] != 0 ? WindowGeometry::Terraced : WindowGeometry::Sliding, fm[i], LambdaKind::One,
                1.0 / std::sqrt(double(sh[3])), fx["q"].data, fx["k"].data, fx["v"].data, fx["fq"].data, fx["fk"].data,
                fx["gamma"].data, fx.count("keep") ? fx["keep"].data : std::vector<double>{}};
      Schedule s1;
      s1.T0.assign(P.B, 0);
      for (int64_t n = 0; n < P.T; ++n) s1.steps.push_back(std::vector<int64_t>(P.B, 1));
      Schedule s2;
      s2.T0.assign(P.B, P.T);
      const double e1 = rel_err(run_decode<double>(P, s1).y, fx["y"].data);
      const double e2 = rel_err(run_decode<double>(P, s2).y, fx["y"].data);
      const double e3 = rel_err(run_decode<float>(P, s1).y, fx["y"].data);
      const double er = rel_err(reference(P).y, fx["y"].data);
      const bool ok = e1 <= tol64 && e2 <= tol64 && e3 <= tol32 && er <= tol64;
      if (!ok) ++failures;
      std::printf("[fixture %-16s] T=%ld w=%ld: steps f64 %.2e  prefill f64 %.2e  steps f32 %.2e  (naive ref %.2e) %s\n", names[i],
                  (long)P.T, (long)P.w, e1, e2, e3, er, ok ? "ok" : "FAIL");
    }
  }

  // 4. invalid inputs throw std::invalid_argument
  {
    int thrown = 0, expected = 0;
    auto expect_throw = [&](const char* what, auto fn) {
      ++expected;
      try { fn(); std::printf("FAIL no throw: %s\n", what); ++failures; }
      catch (const std::invalid_argument&) { ++thrown; }
      catch (...) { std::printf("FAIL wrong exception: %s\n", what); ++failures; }
    };
    HybridDecodeConfig cfg;
    cfg.dtype = DType::F64; cfg.heads = 4; cfg.kv_heads = 2; cfg.head_dim = 8; cfg.value_dim = 4; cfg.feature_dim = 6; cfg.window = 4; cfg.sinks = 2;
    auto bad = [&](auto mut) { HybridDecodeConfig c = cfg; mut(c); return c; };
    expect_throw("window 0", [&] { hybrid_decode_state_bytes(bad([](HybridDecodeConfig& c) { c.window = 0; })); });
    expect_throw("heads % kv", [&] { hybrid_decode_state_bytes(bad([](HybridDecodeConfig& c) { c.kv_heads = 3; })); });
    expect_throw("bf16 on cpu", [&] { hybrid_decode_state_bytes(bad([](HybridDecodeConfig& c) { c.dtype = DType::BF16; })); });
    expect_throw("sinks < 0", [&] { hybrid_decode_state_bytes(bad([](HybridDecodeConfig& c) { c.sinks = -1; })); });
    const int64_t bytes = hybrid_decode_state_bytes(cfg);
    std::vector<char> pool(3 * bytes, 0);
    std::vector<double> x(1000, 0.5), g(4, 0.5);
    HybridDecodePrefillParams pp;
    pp.config = cfg; pp.batch = 2; pp.state = pool.data(); pp.seqlen = 3;
    pp.k = x.data(); pp.v = x.data(); pp.fk = x.data();
    hybrid_decode_prefill_cpu(pp);  // state-only prefill (no q, fq, gamma needed)
    HybridDecodeStepParams sp;
    sp.config = cfg; sp.batch = 2; sp.state = pool.data(); sp.gamma = g.data();
    sp.q = sp.k = sp.v = sp.fq = sp.fk = x.data(); sp.y = x.data() + 500;
    hybrid_decode_step_cpu(sp);  // fine
    expect_throw("seqlen < 0", [&] { auto p = pp; p.seqlen = -1; hybrid_decode_prefill_cpu(p); });
    expect_throw("prefill y without q", [&] { auto p = pp; p.y = x.data() + 500; p.gamma = g.data(); hybrid_decode_prefill_cpu(p); });
    expect_throw("step config mismatch (window)", [&] { auto p = sp; p.config.window = 5; p.state = pool.data(); hybrid_decode_step_cpu(p); });
    expect_throw("step config mismatch (feature_dim)", [&] { auto p = sp; p.config.feature_dim = 3; hybrid_decode_step_cpu(p); });
    expect_throw("uninitialised state", [&] { auto p = sp; std::vector<int64_t> sl{2}; p.batch = 1; p.slots = sl.data(); hybrid_decode_step_cpu(p); });
    expect_throw("duplicate slots", [&] { auto p = sp; std::vector<int64_t> sl{1, 1}; p.slots = sl.data(); hybrid_decode_step_cpu(p); });
    expect_throw("cu_seqlens zero count", [&] { auto p = sp; std::vector<int64_t> cu{0, 1, 1}; p.cu_seqlens = cu.data(); hybrid_decode_step_cpu(p); });
    expect_throw("tokens_per_seq 0", [&] { auto p = sp; p.tokens_per_seq = 0; hybrid_decode_step_cpu(p); });
    expect_throw("step without gamma", [&] { auto p = sp; p.gamma = nullptr; hybrid_decode_step_cpu(p); });
    expect_throw("step without k", [&] { auto p = sp; p.k = nullptr; hybrid_decode_step_cpu(p); });
    expect_throw("bad mode", [&] { auto p = sp; p.mode = static_cast<HybridMode>(9); hybrid_decode_step_cpu(p); });
    std::printf("[invalid inputs] %d/%d threw std::invalid_argument; position after prefill(3)+step = %ld\n", thrown, expected,
                (long)hybrid_decode_state_position(cfg, pool.data()));
    HybridDecodeStateLayout L = hybrid_decode_state_layout(cfg);
    std::printf("[layout] H=4 Hkv=2 d=8 dv=4 F=6 w=4 sinks=2 f64: header %ld S %ld z %ld win_k %ld win_v %ld win_fk %ld sink_k %ld sink_v %ld bytes %ld\n",
                (long)L.header, (long)L.S, (long)L.z, (long)L.win_k, (long)L.win_v, (long)L.win_fk, (long)L.sink_k, (long)L.sink_v, (long)L.bytes);
  }

  std::printf(failures ? "\n%d FAILURES\n" : "\nALL OK\n", failures);
  return failures ? 1 : 0;
}
