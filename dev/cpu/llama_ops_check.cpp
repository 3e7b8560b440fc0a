// Dev harness for the Llama CPU ops (matmul, rms_norm, rope, swiglu, embedding, cross_entropy,
// adamw, elementwise): every op against a naive version written here, finite differences in f64
// for every backward, RoPE against HF's cat/rotate_half formula, chunked == unchunked
// cross-entropy, AdamW against a hand computation over 3 steps, matmul's 4 transpose combos and
// batched strides, bit-identical results for HYBRID_ATTENTION_CPU_THREADS=1 vs 2 (the binary
// re-runs itself), dtype rejection, matmul f32 timings. Build from the repository root:
//   g++ -O2 -std=c++17 -I/work/main/native -I/work/main dev/cpu/llama_ops_check.cpp
//       native/ops/{matmul,rms_norm,rope,swiglu,embedding,cross_entropy,adamw,elementwise}/*_cpu.cpp
//       native/core/parallel.cpp -lpthread -o /tmp/loc
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "core/parallel.h"
#include "dev/cpu/check_util.h"
#include "ops/adamw/adamw.h"
#include "ops/cross_entropy/cross_entropy.h"
#include "ops/elementwise/elementwise.h"
#include "ops/embedding/embedding.h"
#include "ops/matmul/matmul.h"
#include "ops/rms_norm/rms_norm.h"
#include "ops/rope/rope.h"
#include "ops/swiglu/swiglu.h"

using namespace ha;
using devcheck::cast;
using devcheck::finite_diff;
using devcheck::poisoned;
using devcheck::rel;
using devcheck::report;
using devcheck::to_d;
using Vec = std::vector<double>;

template <typename T>
DType dt() { return std::is_same<T, double>::value ? DType::F64 : DType::F32; }
template <typename T>
const char* tn() { return std::is_same<T, double>::value ? "f64" : "f32"; }
template <typename T>
double tol() { return std::is_same<T, double>::value ? 1e-12 : 2e-6; }

double dotv(const Vec& a, const Vec& b) { double s = 0; for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i]; return s; }
Vec round_to_f32(const Vec& v) { return to_d(cast<float>(v)); }
template <typename T>
Vec as_t(const Vec& v) { return to_d(cast<T>(v)); }  // the values the kernel sees in dtype T

// ------------------------------------------------------------------------------------ matmul
struct MM {
  int64_t batch, m, n, k;
  bool ta, tb;
  int64_t lda, ldb, ldc, sa, sb, sc;  // explicit layout (the harness always fills these)
};

// Naive C = alpha op(A) op(B) + beta C in f64.
Vec mm_naive(const MM& s, const Vec& A, const Vec& B, const Vec& C0, double alpha, double beta) {
  Vec C = C0;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t j = 0; j < s.n; ++j) {
        double acc = 0;
        for (int64_t q = 0; q < s.k; ++q) {
          const double a = s.ta ? A[b * s.sa + q * s.lda + i] : A[b * s.sa + i * s.lda + q];
          const double bb = s.tb ? B[b * s.sb + j * s.ldb + q] : B[b * s.sb + q * s.ldb + j];
          acc += a * bb;
        }
        double& c = C[b * s.sc + i * s.ldc + j];
        c = alpha * acc + (beta != 0 ? beta * c : 0.0);
      }
  return C;
}

template <typename T>
Vec mm_run(const MM& s, const Vec& A, const Vec& B, const Vec& C0, double alpha, double beta, bool poison = false) {
  auto a = cast<T>(A), b = cast<T>(B);
  auto c = poison ? poisoned<T>(C0.size()) : cast<T>(C0);
  MatmulParams p;
  p.dtype = dt<T>();
  p.batch = s.batch; p.m = s.m; p.n = s.n; p.k = s.k; p.trans_a = s.ta; p.trans_b = s.tb;
  p.alpha = alpha; p.beta = beta;
  p.a = a.data(); p.b = b.data(); p.c = c.data();
  p.lda = s.lda; p.ldb = s.ldb; p.ldc = s.ldc; p.stride_a = s.sa; p.stride_b = s.sb; p.stride_c = s.sc;
  matmul_cpu(p);
  return to_d(c);
}

MM mm_shape(int64_t batch, int64_t m, int64_t n, int64_t k, bool ta, bool tb, int64_t pad, bool share_b) {
  MM s{batch, m, n, k, ta, tb, 0, 0, 0, 0, 0, 0};
  s.lda = (ta ? m : k) + pad; s.ldb = (tb ? k : n) + pad; s.ldc = n + pad;
  s.sa = (ta ? k : m) * s.lda + pad; s.sb = share_b ? 0 : (tb ? n : k) * s.ldb; s.sc = m * s.ldc + 3;
  return s;
}
int64_t mm_size(int64_t batch, int64_t stride, int64_t rows, int64_t ld) { return (batch - 1) * stride + rows * ld + 1; }

template <typename T>
void check_matmul(devcheck::Rng& rng) {
  struct Case { int64_t batch, m, n, k, pad; bool share; double alpha, beta; };
  const Case cases[] = {{1, 100, 530, 300, 0, false, 1.0, 0.0},  // several M, N and K blocks
                        {1, 7, 5, 3, 0, false, 0.7, 0.3},        // smaller than one micro-tile
                        {3, 37, 29, 41, 2, false, -1.3, 0.5},    // batched, padded rows
                        {2, 13, 19, 260, 1, true, 1.0, 1.0}};    // shared B (stride 0), K > KC
  for (const Case& c : cases)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        MM s = mm_shape(c.batch, c.m, c.n, c.k, ta, tb, c.pad, c.share);
        Vec A = as_t<T>(rng.normal(mm_size(c.batch, s.sa, ta ? c.k : c.m, s.lda)));
        Vec B = as_t<T>(rng.normal(mm_size(c.batch, std::max<int64_t>(s.sb, 1), tb ? c.n : c.k, s.ldb)));
        Vec C0 = as_t<T>(rng.normal(mm_size(c.batch, s.sc, c.m, s.ldc)));
        Vec ref = mm_naive(s, A, B, C0, c.alpha, c.beta);
        Vec got = mm_run<T>(s, A, B, C0, c.alpha, c.beta, c.beta == 0.0);
        if (c.beta == 0.0)  // C was NaN outside the written elements too: compare only those
          for (size_t i = 0; i < got.size(); ++i) if (std::isnan(got[i])) got[i] = ref[i] = 0;
        char name[160];
        std::snprintf(name, sizeof name, "matmul %s b%ld %ldx%ldx%ld %s%s a=%.1f b=%.1f%s%s", tn<T>(), (long)c.batch,
                      (long)c.m, (long)c.n, (long)c.k, ta ? "T" : "N", tb ? "T" : "N", c.alpha, c.beta,
                      c.pad ? " padded" : "", c.share ? " sharedB" : "");
        report(name, rel(got, ref), tol<T>());
      }
}

// Backward of C = A B (all 4 layouts): dA = dC B^T, dB = A^T dC as matmul calls, against finite
// differences of sum(C * dC).
void check_matmul_grad(devcheck::Rng& rng) {
  const int64_t M = 9, N = 7, K = 11;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      MM s = mm_shape(1, M, N, K, ta, tb, 0, false);
      Vec A = rng.normal(M * K), B = rng.normal(K * N), dC = rng.normal(M * N);
      auto f = [&] { return dotv(mm_run<double>(s, A, B, Vec(M * N, 0.0), 1.0, 0.0), dC); };
      Vec fdA = finite_diff(A, f), fdB = finite_diff(B, f);
      // dop(A) = dC B_op^T [M, K]; stored A^T needs dA^T = B_op dC^T = mm(B, dC) with matching layout.
      Vec dA(M * K), dB(K * N);
      MatmulParams p;
      p.dtype = DType::F64;
      if (!ta) {  // dA [M, K] = dC [M, N] op(B)^T
        p.m = M; p.n = K; p.k = N; p.a = dC.data(); p.b = B.data(); p.trans_a = false; p.trans_b = !tb;
      } else {    // dA^T [K, M] = op(B) [K, N] dC^T
        p.m = K; p.n = M; p.k = N; p.a = B.data(); p.b = dC.data(); p.trans_a = tb; p.trans_b = true;
      }
      p.c = dA.data();
      matmul_cpu(p);
      MatmulParams q;
      q.dtype = DType::F64;
      if (!tb) {  // dB [K, N] = op(A)^T dC
        q.m = K; q.n = N; q.k = M; q.a = A.data(); q.b = dC.data(); q.trans_a = !ta; q.trans_b = false;
      } else {    // dB^T [N, K] = dC^T op(A)
        q.m = N; q.n = K; q.k = M; q.a = dC.data(); q.b = A.data(); q.trans_a = true; q.trans_b = ta;
      }
      q.c = dB.data();
      matmul_cpu(q);
      std::string lay = std::string(ta ? "T" : "N") + (tb ? "T" : "N");
      report("matmul backward " + lay + " dA vs finite diff", rel(dA, fdA), 1e-8);
      report("matmul backward " + lay + " dB vs finite diff", rel(dB, fdB), 1e-8);
    }
}

// ---------------------------------------------------------------------------------- rms_norm
template <typename T>
void rms_run(int64_t R, int64_t D, double eps, const Vec& x, const Vec& w, const Vec& dy, Vec* y, Vec* rstd, Vec* dx, Vec* dw) {
  auto xt = cast<T>(x), wt = cast<T>(w), dyt = cast<T>(dy);
  auto yt = poisoned<T>(R * D), rt = poisoned<T>(R);
  RmsNormParams p;
  p.dtype = dt<T>(); p.rows = R; p.dim = D; p.eps = eps;
  p.x = xt.data(); p.w = wt.data(); p.y = yt.data(); p.rstd = rt.data();
  rms_norm_forward_cpu(p);
  if (y) *y = to_d(yt);
  if (rstd) *rstd = to_d(rt);
  if (!dx) return;
  auto dxt = poisoned<T>(R * D), dwt = poisoned<T>(D);
  RmsNormGradParams g;
  g.fwd = p; g.dy = dyt.data(); g.dx = dxt.data(); g.dw = dwt.data();
  rms_norm_backward_cpu(g);
  *dx = to_d(dxt);
  *dw = to_d(dwt);
}

template <typename T>
void check_rms_norm(devcheck::Rng& rng) {
  const int64_t R = 70, D = 48;  // R spans 3 dw row chunks
  const double eps = 1e-5;
  Vec x = as_t<T>(rng.normal(R * D, 2.0)), w = as_t<T>(rng.uniform(D, 0.5, 1.5)), dy = as_t<T>(rng.normal(R * D));
  Vec y, rstd, dx, dw;
  rms_run<T>(R, D, eps, x, w, dy, &y, &rstd, &dx, &dw);
  Vec yref(R * D), rref(R);
  for (int64_t r = 0; r < R; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += x[r * D + i] * x[r * D + i];
    rref[r] = 1.0 / std::sqrt(ss / D + eps);
    for (int64_t i = 0; i < D; ++i) yref[r * D + i] = x[r * D + i] * rref[r] * w[i];
  }
  report(std::string("rms_norm ") + tn<T>() + " y vs naive", rel(y, yref), tol<T>());
  report(std::string("rms_norm ") + tn<T>() + " rstd vs naive", rel(rstd, rref), tol<T>());
  if (std::is_same<T, double>::value) {
    auto f = [&] { Vec yy; rms_run<double>(R, D, eps, x, w, dy, &yy, nullptr, nullptr, nullptr); return dotv(yy, dy); };
    Vec fdx = finite_diff(x, f, 1e-5), fdw = finite_diff(w, f, 1e-5);  // |x| ~ 2: larger h, less roundoff
    report("rms_norm f64 dx vs finite diff", rel(dx, fdx), 1e-8);
    report("rms_norm f64 dw vs finite diff", rel(dw, fdw), 1e-8);
  } else {
    Vec dx64, dw64;
    rms_run<double>(R, D, eps, x, w, dy, nullptr, nullptr, &dx64, &dw64);
    report("rms_norm f32 dx vs f64 kernel", rel(dx, dx64), 1e-5);
    report("rms_norm f32 dw vs f64 kernel", rel(dw, dw64), 1e-5);
  }
}

// -------------------------------------------------------------------------------------- rope
struct RopeCase { int64_t B, H, T, D; std::vector<int32_t> pos; std::vector<double> inv; };

RopeCase rope_case(int64_t B, int64_t H, int64_t T, int64_t D) {
  RopeCase c{B, H, T, D, {}, {}};
  for (int64_t i = 0; i < D / 2; ++i) c.inv.push_back(1.0 / std::pow(500000.0, 2.0 * i / D));  // Llama 3 theta
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) c.pos.push_back(static_cast<int32_t>(b == 0 ? t : 1000 + 7 * t));  // offsets
  return c;
}

template <typename T>
Vec rope_run(const RopeCase& c, const Vec& x, bool backward, bool in_place = false) {
  auto xt = cast<T>(x);
  auto yt = poisoned<T>(x.size());
  RopeParams p;
  p.dtype = dt<T>(); p.batch = c.B; p.heads = c.H; p.seqlen = c.T; p.head_dim = c.D;
  p.positions = c.pos.data(); p.inv_freq = c.inv.data();
  T* out = in_place ? xt.data() : yt.data();
  if (!backward) {
    p.x = xt.data(); p.y = out;
    rope_forward_cpu(p);
  } else {
    RopeGradParams g;
    g.fwd = p; g.dy = xt.data(); g.dx = out;
    rope_backward_cpu(g);
  }
  return to_d(in_place ? xt : yt);
}

// HF: freqs = pos * inv_freq; emb = cat(freqs, freqs); y = x * cos(emb) + rotate_half(x) * sin(emb),
// rotate_half(x) = cat(-x[D/2:], x[:D/2]).
Vec rope_hf(const RopeCase& c, const Vec& x) {
  Vec y(x.size());
  const int64_t D = c.D, h = D / 2;
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t hd = 0; hd < c.H; ++hd)
      for (int64_t t = 0; t < c.T; ++t) {
        const double* xr = x.data() + ((b * c.H + hd) * c.T + t) * D;
        double* yr = y.data() + ((b * c.H + hd) * c.T + t) * D;
        Vec emb(D), rot(D);
        for (int64_t i = 0; i < D; ++i) emb[i] = c.pos[b * c.T + t] * c.inv[i % h];
        for (int64_t i = 0; i < D; ++i) rot[i] = i < h ? -xr[i + h] : xr[i - h];
        for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * std::cos(emb[i]) + rot[i] * std::sin(emb[i]);
      }
  return y;
}

template <typename T>
void check_rope(devcheck::Rng& rng) {
  RopeCase c = rope_case(2, 3, 5, 16);
  Vec x = as_t<T>(rng.normal(c.B * c.H * c.T * c.D)), dy = as_t<T>(rng.normal(x.size()));
  Vec y = rope_run<T>(c, x, false);
  report(std::string("rope ") + tn<T>() + " forward vs HF rotate_half formula", rel(y, rope_hf(c, x)), tol<T>());
  report(std::string("rope ") + tn<T>() + " forward in place", rel(rope_run<T>(c, x, false, true), y), 0.0);
  report(std::string("rope ") + tn<T>() + " backward(forward(x)) == x", rel(rope_run<T>(c, as_t<T>(y), true), x), 1e-6);
  if (std::is_same<T, double>::value) {
    Vec dx = rope_run<double>(c, dy, true);
    auto f = [&] { return dotv(rope_run<double>(c, x, false), dy); };
    report("rope f64 backward vs finite diff", rel(dx, finite_diff(x, f)), 1e-8);
  }
}

// ------------------------------------------------------------------------------------ swiglu
template <typename T>
void swiglu_run(const Vec& gate, const Vec& up, const Vec& dy, Vec* y, Vec* dg, Vec* du) {
  auto gt = cast<T>(gate), ut = cast<T>(up), dyt = cast<T>(dy);
  auto yt = poisoned<T>(gate.size());
  SwigluParams p;
  p.dtype = dt<T>(); p.n = static_cast<int64_t>(gate.size()); p.gate = gt.data(); p.up = ut.data(); p.y = yt.data();
  swiglu_forward_cpu(p);
  if (y) *y = to_d(yt);
  if (!dg) return;
  auto dgt = poisoned<T>(gate.size()), dut = poisoned<T>(gate.size());
  SwigluGradParams g;
  g.fwd = p; g.dy = dyt.data(); g.dgate = dgt.data(); g.dup = dut.data();
  swiglu_backward_cpu(g);
  *dg = to_d(dgt);
  *du = to_d(dut);
}

template <typename T>
void check_swiglu(devcheck::Rng& rng) {
  const int64_t n = 300;
  Vec gate = as_t<T>(rng.normal(n, 3.0)), up = as_t<T>(rng.normal(n)), dy = as_t<T>(rng.normal(n));
  gate[0] = -40; gate[1] = 40;  // saturated sigmoid, both sides
  Vec y, dg, du;
  swiglu_run<T>(gate, up, dy, &y, &dg, &du);
  Vec yref(n);
  for (int64_t i = 0; i < n; ++i) yref[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
  report(std::string("swiglu ") + tn<T>() + " y vs naive", rel(y, yref), tol<T>());
  if (std::is_same<T, double>::value) {
    auto f = [&] { Vec yy; swiglu_run<double>(gate, up, dy, &yy, nullptr, nullptr); return dotv(yy, dy); };
    report("swiglu f64 dgate vs finite diff", rel(dg, finite_diff(gate, f)), 1e-8);
    report("swiglu f64 dup vs finite diff", rel(du, finite_diff(up, f)), 1e-8);
  } else {
    Vec dg64, du64;
    swiglu_run<double>(gate, up, dy, nullptr, &dg64, &du64);
    report("swiglu f32 dgate, dup vs f64 kernel", std::max(rel(dg, dg64), rel(du, du64)), 1e-6);
  }
}

// --------------------------------------------------------------------------------- embedding
template <typename T>
Vec emb_forward(const std::vector<int32_t>& ids, int64_t V, int64_t D, const Vec& w) {
  auto wt = cast<T>(w);
  auto out = poisoned<T>(ids.size() * D);
  EmbeddingParams p;
  p.dtype = dt<T>(); p.num_ids = static_cast<int64_t>(ids.size()); p.vocab = V; p.dim = D;
  p.ids = ids.data(); p.weight = wt.data(); p.out = out.data();
  embedding_forward_cpu(p);
  return to_d(out);
}

template <typename T>
Vec emb_backward(const std::vector<int32_t>& ids, int64_t V, int64_t D, const Vec& dout, const Vec* init) {
  auto dt_ = cast<T>(dout);
  auto dw = init ? cast<T>(*init) : poisoned<T>(V * D);
  EmbeddingGradParams g;
  g.fwd.dtype = dt<T>(); g.fwd.num_ids = static_cast<int64_t>(ids.size()); g.fwd.vocab = V; g.fwd.dim = D; g.fwd.ids = ids.data();
  g.dout = dt_.data(); g.dweight = dw.data(); g.accumulate = init != nullptr;
  embedding_backward_cpu(g);
  return to_d(dw);
}

template <typename T>
void check_embedding(devcheck::Rng& rng) {
  const int64_t V = 600, D = 12;
  std::vector<int32_t> ids;
  for (int i = 0; i < 50; ++i) ids.push_back(static_cast<int32_t>((i * 37) % 23 + (i % 5 == 0 ? 590 : 0)));  // repeats
  Vec w = as_t<T>(rng.normal(V * D)), dout = as_t<T>(rng.normal(ids.size() * D)), init = as_t<T>(rng.normal(V * D));
  Vec ref(ids.size() * D);
  for (size_t n = 0; n < ids.size(); ++n)
    for (int64_t i = 0; i < D; ++i) ref[n * D + i] = w[ids[n] * D + i];
  report(std::string("embedding ") + tn<T>() + " forward vs naive", rel(emb_forward<T>(ids, V, D, w), ref), 0.0);
  Vec dref(V * D, 0.0), dacc = init;
  for (size_t n = 0; n < ids.size(); ++n)
    for (int64_t i = 0; i < D; ++i) dref[ids[n] * D + i] += dout[n * D + i];
  for (int64_t i = 0; i < V * D; ++i) dacc[i] += dref[i];
  report(std::string("embedding ") + tn<T>() + " backward vs naive scatter-add", rel(emb_backward<T>(ids, V, D, dout, nullptr), dref), tol<T>());
  report(std::string("embedding ") + tn<T>() + " backward accumulate", rel(emb_backward<T>(ids, V, D, dout, &init), dacc), tol<T>());
  if (std::is_same<T, double>::value) {
    auto f = [&] { return dotv(emb_forward<double>(ids, V, D, w), dout); };
    report("embedding f64 backward vs finite diff", rel(emb_backward<double>(ids, V, D, dout, nullptr), finite_diff(w, f)), 1e-8);
    std::vector<int32_t> bad = {1, 2, 600, 3};
    bool threw = false;
    try { emb_forward<double>(bad, V, D, w); } catch (const std::out_of_range& e) {
      threw = std::string(e.what()).find("position 2") != std::string::npos;
      std::printf("  (out-of-range message: \"%s\")\n", e.what());
    }
    report("embedding out-of-range id -> std::out_of_range naming position", threw ? 0.0 : INFINITY, 0.0);
  }
}

// ----------------------------------------------------------------------------- cross_entropy
struct CEOut { double loss = 0; Vec lse, dlogits; int64_t count = 0; };

template <typename T>
CEOut ce_run(int64_t N, int64_t V, const Vec& logits, const std::vector<int32_t>& tg, double normalizer, double dloss, bool grad) {
  auto z = cast<T>(logits);
  auto lse = poisoned<T>(N);
  CEOut o;
  CrossEntropyParams p;
  p.dtype = dt<T>(); p.rows = N; p.vocab = V; p.normalizer = normalizer;
  p.logits = z.data(); p.targets = tg.data(); p.lse = lse.data(); p.loss = &o.loss; p.count = &o.count;
  cross_entropy_forward_cpu(p);
  o.lse = to_d(lse);
  if (grad) {
    CrossEntropyGradParams g;
    g.fwd = p; g.dloss = dloss; g.dlogits = z.data();  // in place
    cross_entropy_backward_cpu(g);
    o.dlogits = to_d(z);
  }
  return o;
}

struct CCEOut { double loss = 0; Vec lse, dh, dw; };

template <typename T>
CCEOut cce_run(int64_t N, int64_t D, int64_t V, int64_t chunk, const Vec& h, const Vec& w, const std::vector<int32_t>& tg,
               double normalizer, double dloss, bool grad, const Vec* dh0 = nullptr, const Vec* dw0 = nullptr) {
  auto ht = cast<T>(h), wt = cast<T>(w);
  auto lse = poisoned<T>(N);
  CCEOut o;
  ChunkedCrossEntropyParams p;
  p.dtype = dt<T>(); p.rows = N; p.dim = D; p.vocab = V; p.vocab_chunk = chunk; p.normalizer = normalizer;
  p.hidden = ht.data(); p.weight = wt.data(); p.targets = tg.data(); p.lse = lse.data(); p.loss = &o.loss;
  chunked_cross_entropy_forward_cpu(p);
  o.lse = to_d(lse);
  if (grad) {
    auto dh = dh0 ? cast<T>(*dh0) : poisoned<T>(N * D);
    auto dw = dw0 ? cast<T>(*dw0) : poisoned<T>(V * D);
    ChunkedCrossEntropyGradParams g;
    g.fwd = p; g.dloss = dloss; g.dhidden = dh.data(); g.dweight = dw.data();
    g.accumulate_dhidden = dh0 != nullptr; g.accumulate_dweight = dw0 != nullptr;
    chunked_cross_entropy_backward_cpu(g);
    o.dh = to_d(dh);
    o.dw = to_d(dw);
  }
  return o;
}

template <typename T>
void check_cross_entropy(devcheck::Rng& rng) {
  const int64_t N = 11, V = 37, D = 6;
  std::vector<int32_t> tg;
  for (int64_t n = 0; n < N; ++n) tg.push_back(n % 4 == 3 ? -100 : static_cast<int32_t>((n * 13 + 5) % V));
  tg[0] = 0; tg[1] = V - 1;  // edges of the vocabulary
  Vec z = as_t<T>(rng.normal(N * V, 3.0));
  const std::string t = tn<T>();
  // naive
  double sum = 0; int64_t cnt = 0;
  Vec lref(N), dref(N * V, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(z[n * V + j]);
    lref[n] = std::log(s);
    if (tg[n] == -100) continue;
    sum += lref[n] - z[n * V + tg[n]]; ++cnt;
  }
  const double dloss = 0.7;
  for (int64_t n = 0; n < N; ++n)
    if (tg[n] != -100)
      for (int64_t j = 0; j < V; ++j) dref[n * V + j] = (std::exp(z[n * V + j] - lref[n]) - (j == tg[n])) * dloss / cnt;
  CEOut o = ce_run<T>(N, V, z, tg, 0.0, dloss, true);
  report("cross_entropy " + t + " loss vs naive (mean over counted rows)", std::abs(o.loss - sum / cnt) / std::abs(sum / cnt), tol<T>());
  report("cross_entropy " + t + " count", o.count == cnt ? 0.0 : INFINITY, 0.0);
  report("cross_entropy " + t + " lse vs naive", rel(o.lse, lref), tol<T>());
  report("cross_entropy " + t + " dlogits vs naive (in place)", rel(o.dlogits, dref), tol<T>() * 2);
  CEOut on = ce_run<T>(N, V, z, tg, 20.0, 1.0, false);
  report("cross_entropy " + t + " normalizer 20", std::abs(on.loss - sum / 20) / std::abs(sum / 20), tol<T>());
  if (std::is_same<T, double>::value) {
    auto f = [&] { return ce_run<double>(N, V, z, tg, 0.0, 1.0, false).loss * dloss; };
    report("cross_entropy f64 dlogits vs finite diff", rel(o.dlogits, finite_diff(z, f, 1e-5)), 1e-8);
    std::vector<int32_t> all_ignored(N, -100);
    CEOut oi = ce_run<double>(N, V, z, all_ignored, 0.0, 1.0, true);
    double mx = 0; for (double v : oi.dlogits) mx = std::max(mx, std::abs(v));
    report("cross_entropy all ignored: loss NaN (as torch), dlogits 0", std::isnan(oi.loss) && mx == 0 ? 0.0 : INFINITY, 0.0);
    std::vector<int32_t> bad = tg; bad[5] = static_cast<int32_t>(V);
    bool threw = false;
    try { ce_run<double>(N, V, z, bad, 0.0, 1.0, false); } catch (const std::out_of_range& e) {
      threw = std::string(e.what()).find("row 5") != std::string::npos;
    }
    report("cross_entropy bad target -> std::out_of_range naming row", threw ? 0.0 : INFINITY, 0.0);
  }
  // chunked == unchunked: logits = h W^T through matmul, dh = dz W, dW = dz^T h
  Vec h = as_t<T>(rng.normal(N * D)), w = as_t<T>(rng.normal(V * D));
  Vec zz(N * V);
  {
    auto ht = cast<T>(h), wt = cast<T>(w);
    std::vector<T> zt(N * V);
    MatmulParams mm; mm.dtype = dt<T>(); mm.m = N; mm.n = V; mm.k = D; mm.trans_b = true;
    mm.a = ht.data(); mm.b = wt.data(); mm.c = zt.data();
    matmul_cpu(mm);
    zz = to_d(zt);
  }
  CEOut u = ce_run<T>(N, V, zz, tg, 0.0, dloss, true);
  Vec dh_ref(N * D, 0.0), dw_ref(V * D, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < V; ++j)
      for (int64_t e = 0; e < D; ++e) {
        dh_ref[n * D + e] += u.dlogits[n * V + j] * w[j * D + e];
        dw_ref[j * D + e] += u.dlogits[n * V + j] * h[n * D + e];
      }
  for (int64_t chunk : {5, 16, 37, 0}) {
    CCEOut c = cce_run<T>(N, D, V, chunk, h, w, tg, 0.0, dloss, true);
    const std::string name = "chunked cross_entropy " + t + " chunk " + std::to_string(chunk) + " ";
    report(name + "loss == unchunked", std::abs(c.loss - u.loss) / std::abs(u.loss), tol<T>());
    report(name + "lse == unchunked", rel(c.lse, u.lse), tol<T>());
    report(name + "dhidden == unchunked dz W", rel(c.dh, dh_ref), tol<T>() * 4);
    report(name + "dweight == unchunked dz^T h", rel(c.dw, dw_ref), tol<T>() * 4);
  }
  {
    Vec dh0 = as_t<T>(rng.normal(N * D)), dw0 = as_t<T>(rng.normal(V * D));
    CCEOut c = cce_run<T>(N, D, V, 8, h, w, tg, 0.0, dloss, true, &dh0, &dw0);
    Vec eh = dh_ref, ew = dw_ref;
    for (size_t i = 0; i < eh.size(); ++i) eh[i] += dh0[i];
    for (size_t i = 0; i < ew.size(); ++i) ew[i] += dw0[i];
    report("chunked cross_entropy " + t + " accumulate dhidden, dweight", std::max(rel(c.dh, eh), rel(c.dw, ew)), tol<T>() * 4);
  }
  if (std::is_same<T, double>::value) {
    CCEOut c = cce_run<double>(N, D, V, 8, h, w, tg, 0.0, dloss, true);
    auto f = [&] { return cce_run<double>(N, D, V, 8, h, w, tg, 0.0, 1.0, false).loss * dloss; };
    report("chunked cross_entropy f64 dhidden vs finite diff", rel(c.dh, finite_diff(h, f)), 1e-8);
    report("chunked cross_entropy f64 dweight vs finite diff", rel(c.dw, finite_diff(w, f)), 1e-8);
  }
}

// ------------------------------------------------------------------------------------- adamw
template <typename T>
void check_adamw(devcheck::Rng& rng) {
  const int64_t n = 1000;
  const double lr = 3e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1;
  Vec p0 = as_t<T>(rng.normal(n)), grads[3] = {as_t<T>(rng.normal(n)), as_t<T>(rng.normal(n, 0.1)), as_t<T>(rng.normal(n, 10))};
  auto pt = cast<T>(p0);
  std::vector<T> mt(n, T(0)), vt(n, T(0));
  // hand computation, PyTorch's order: p *= 1 - lr wd; m.lerp_(g, 1 - b1); v = b2 v + (1 - b2) g^2;
  // p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps); the state rounded to T after every step.
  Vec P = p0, M(n, 0.0), Vv(n, 0.0);
  double worst = 0;
  for (int s = 1; s <= 3; ++s) {
    const double gs = s == 2 ? 0.5 : 1.0;  // step 2 folds in a clipping coefficient
    auto gt = cast<T>(grads[s - 1]);
    AdamWParams a;
    a.dtype = dt<T>(); a.n = n; a.param = pt.data(); a.grad = gt.data(); a.exp_avg = mt.data(); a.exp_avg_sq = vt.data();
    a.lr = lr; a.beta1 = b1; a.beta2 = b2; a.eps = eps; a.weight_decay = wd; a.step = s; a.grad_scale = gs;
    adamw_step_cpu(a);
    const double bc1 = 1 - std::pow(b1, s), bc2 = 1 - std::pow(b2, s);
    for (int64_t i = 0; i < n; ++i) {
      const double g = gs * grads[s - 1][i];
      P[i] *= 1 - lr * wd;
      M[i] = M[i] + (g - M[i]) * (1 - b1);
      Vv[i] = Vv[i] * b2 + (1 - b2) * g * g;
      P[i] -= (lr / bc1) * M[i] / (std::sqrt(Vv[i]) / std::sqrt(bc2) + eps);
      P[i] = static_cast<T>(P[i]); M[i] = static_cast<T>(M[i]); Vv[i] = static_cast<T>(Vv[i]);
    }
    Vec upd_got(n), upd_ref(n);
    for (int64_t i = 0; i < n; ++i) { upd_got[i] = pt[i] - p0[i]; upd_ref[i] = P[i] - p0[i]; }
    worst = std::max({worst, rel(to_d(pt), P), rel(to_d(mt), M), rel(to_d(vt), Vv)});
  }
  report(std::string("adamw ") + tn<T>() + " 3 steps vs hand computation (p, m, v)", worst, tol<T>());
  // grad norm and clipping over several tensors
  Vec g1 = as_t<T>(rng.normal(70000)), g2 = as_t<T>(rng.normal(5)), g3 = as_t<T>(rng.normal(40000, 3.0));
  auto t1 = cast<T>(g1), t2 = cast<T>(g2), t3 = cast<T>(g3);
  void* ptrs[] = {t1.data(), t2.data(), t3.data()};
  int64_t sizes[] = {70000, 5, 40000};
  TensorList tl; tl.dtype = dt<T>(); tl.count = 3; tl.data = ptrs; tl.sizes = sizes;
  const double ref = std::sqrt(dotv(g1, g1) + dotv(g2, g2) + dotv(g3, g3));
  report(std::string("grad_norm ") + tn<T>() + " vs naive", std::abs(grad_norm_cpu(tl) - ref) / ref, 1e-12);
  const double max_norm = ref / 4;
  const double got = clip_grad_norm_cpu(tl, max_norm);
  const double coef = max_norm / (ref + 1e-6);
  Vec e1 = g1; for (auto& v : e1) v *= coef;
  report(std::string("clip_grad_norm ") + tn<T>() + " returns norm, scales", std::max(std::abs(got - ref) / ref, rel(to_d(t1), e1)), tol<T>());
  report(std::string("clip_grad_norm ") + tn<T>() + " norm after clip", std::abs(grad_norm_cpu(tl) - max_norm) / max_norm, 1e-5);
}

// ------------------------------------------------------------------------------- elementwise
template <typename T>
void check_elementwise(devcheck::Rng& rng) {
  const int64_t n = 100000;
  Vec a = as_t<T>(rng.normal(n)), b = as_t<T>(rng.normal(n)), y0 = as_t<T>(rng.normal(n));
  auto at = cast<T>(a), bt = cast<T>(b);
  const std::string t = tn<T>();
  auto go = [&](void (*fn)(const ElementwiseParams&), double alpha, const Vec& init) {
    auto yt = cast<T>(init);
    ElementwiseParams p; p.dtype = dt<T>(); p.n = n; p.a = at.data(); p.b = bt.data(); p.y = yt.data(); p.alpha = alpha;
    fn(p);
    return to_d(yt);
  };
  Vec r(n);
  for (int64_t i = 0; i < n; ++i) r[i] = static_cast<T>(a[i] - 0.5 * b[i]);
  report("add " + t + " (alpha -0.5)", rel(go(add_cpu, -0.5, y0), r), 0.0);
  for (int64_t i = 0; i < n; ++i) r[i] = static_cast<T>(a[i] * b[i]);
  report("mul " + t, rel(go(mul_cpu, 1.0, y0), r), 0.0);
  for (int64_t i = 0; i < n; ++i) r[i] = static_cast<T>(3.0 * a[i]);
  report("scale " + t, rel(go(scale_cpu, 3.0, y0), r), 0.0);
  report("fill " + t, rel(go(fill_cpu, 2.5, y0), Vec(n, 2.5)), 0.0);
  for (int64_t i = 0; i < n; ++i) r[i] = static_cast<T>(y0[i] + a[i]);
  report("accumulate " + t, rel(go(accumulate_cpu, 1.0, y0), r), 0.0);
  { // in place: y aliases a
    auto yt = cast<T>(a);
    ElementwiseParams p; p.dtype = dt<T>(); p.n = n; p.a = yt.data(); p.b = bt.data(); p.y = yt.data(); p.alpha = 1.0;
    add_cpu(p);
    for (int64_t i = 0; i < n; ++i) r[i] = static_cast<T>(a[i] + b[i]);
    report("add " + t + " in place", rel(to_d(yt), r), 0.0);
  }
  const int64_t R = 333, C = 517;
  Vec x = as_t<T>(rng.normal(R * C)), s0 = as_t<T>(rng.normal(C)), sref(C, 0.0);
  for (int64_t i = 0; i < R; ++i) for (int64_t j = 0; j < C; ++j) sref[j] += x[i * C + j];
  for (int acc = 0; acc < 2; ++acc) {
    auto xt = cast<T>(x);
    auto yt = acc ? cast<T>(s0) : poisoned<T>(C);
    SumRowsParams p; p.dtype = dt<T>(); p.rows = R; p.cols = C; p.x = xt.data(); p.y = yt.data(); p.accumulate = acc;
    sum_rows_cpu(p);
    Vec e = sref;
    if (acc) for (int64_t j = 0; j < C; ++j) e[j] += s0[j];
    report("sum_rows " + t + (acc ? " accumulate" : ""), rel(to_d(yt), e), tol<T>());
  }
}

// ---------------------------------------------------------------------- dtype rejection
void check_rejection() {
  int ok = 0, total = 0;
  auto expect = [&](const std::function<void()>& f) {
    ++total;
    try { f(); } catch (const std::invalid_argument&) { ++ok; }
  };
  float buf[64] = {0};
  int32_t ids[4] = {0, 0, 0, 0};
  double inv[4] = {1, 1, 1, 1};
  double loss;
  expect([&] { MatmulParams p; p.dtype = DType::BF16; p.m = p.n = p.k = 2; p.a = p.b = buf; p.c = buf; matmul_cpu(p); });
  expect([&] { RmsNormParams p; p.dtype = DType::F16; p.rows = 1; p.dim = 2; p.x = p.w = buf; p.y = buf; rms_norm_forward_cpu(p); });
  expect([&] { RopeParams p; p.dtype = DType::BF16; p.batch = p.heads = p.seqlen = 1; p.head_dim = 2; p.positions = ids; p.inv_freq = inv; p.x = buf; p.y = buf; rope_forward_cpu(p); });
  expect([&] { SwigluParams p; p.dtype = DType::I32; p.n = 2; p.gate = p.up = buf; p.y = buf; swiglu_forward_cpu(p); });
  expect([&] { EmbeddingParams p; p.dtype = DType::BF16; p.num_ids = 1; p.vocab = 2; p.dim = 2; p.ids = ids; p.weight = buf; p.out = buf; embedding_forward_cpu(p); });
  expect([&] { CrossEntropyParams p; p.dtype = DType::F16; p.rows = 1; p.vocab = 2; p.logits = buf; p.targets = ids; p.loss = &loss; cross_entropy_forward_cpu(p); });
  expect([&] { AdamWParams p; p.dtype = DType::BF16; p.n = 2; p.param = buf; p.grad = p.exp_avg = p.exp_avg_sq = buf; adamw_step_cpu(p); });
  expect([&] { ElementwiseParams p; p.dtype = DType::BF16; p.n = 2; p.a = p.b = buf; p.y = buf; add_cpu(p); });
  report("bf16/f16/i32 rejected with std::invalid_argument (" + std::to_string(ok) + "/" + std::to_string(total) + ")",
         ok == total ? 0.0 : INFINITY, 0.0);
}

// ------------------------------------------------------------------ determinism (child mode)
// Runs every reducing op on fixed data and writes the raw result bytes to `path`.
template <typename T>
void det_outputs(std::vector<char>& out) {
  devcheck::Rng rng(99);
  auto put = [&](const Vec& v) { auto t = cast<T>(v); out.insert(out.end(), reinterpret_cast<char*>(t.data()), reinterpret_cast<char*>(t.data() + t.size())); };
  auto putd = [&](double d) { out.insert(out.end(), reinterpret_cast<char*>(&d), reinterpret_cast<char*>(&d) + 8); };
  { MM s = mm_shape(2, 203, 611, 290, false, true, 0, false);
    Vec A = rng.normal(2 * s.sa), B = rng.normal(2 * s.sb), C0 = rng.normal(2 * s.sc);
    put(mm_run<T>(s, A, B, C0, 1.0, 0.5));
    s = mm_shape(1, 300, 200, 700, true, false, 0, false);
    put(mm_run<T>(s, rng.normal(700 * 300), rng.normal(700 * 200), Vec(300 * 200, 0.0), 1.0, 0.0)); }
  { const int64_t R = 1000, D = 96; Vec y, r, dx, dw;
    rms_run<T>(R, D, 1e-5, rng.normal(R * D), rng.uniform(D, 0.5, 1.5), rng.normal(R * D), &y, &r, &dx, &dw);
    put(y); put(r); put(dx); put(dw); }
  { std::vector<int32_t> ids; for (int i = 0; i < 5000; ++i) ids.push_back((i * 7919) % 301);
    put(emb_backward<T>(ids, 1000, 16, rng.normal(5000 * 16), nullptr)); }
  { const int64_t N = 300, D = 64, V = 1000; std::vector<int32_t> tg; for (int n = 0; n < N; ++n) tg.push_back(n % 9 == 0 ? -100 : (n * 31) % V);
    CCEOut c = cce_run<T>(N, D, V, 256, rng.normal(N * D), rng.normal(V * D, 0.2), tg, 0.0, 1.0, true);
    putd(c.loss); put(c.lse); put(c.dh); put(c.dw);
    CEOut u = ce_run<T>(N, V, rng.normal(N * V), tg, 0.0, 1.0, true);
    putd(u.loss); put(u.dlogits); }
  { Vec g1 = rng.normal(300000), g2 = rng.normal(1000);
    auto t1 = cast<T>(g1), t2 = cast<T>(g2); void* ptrs[] = {t1.data(), t2.data()}; int64_t sizes[] = {300000, 1000};
    TensorList tl; tl.dtype = dt<T>(); tl.count = 2; tl.data = ptrs; tl.sizes = sizes;
    putd(grad_norm_cpu(tl)); }
  { const int64_t R = 3000, C = 700; auto xt = cast<T>(rng.normal(R * C)); std::vector<T> y(C);
    SumRowsParams p; p.dtype = dt<T>(); p.rows = R; p.cols = C; p.x = xt.data(); p.y = y.data(); sum_rows_cpu(p); put(to_d(y)); }
}

int child(const char* path) {
  std::vector<char> out;
  det_outputs<double>(out);
  det_outputs<float>(out);
  std::ofstream(path, std::ios::binary).write(out.data(), out.size());
  return 0;
}

void check_determinism(const char* self) {
  std::vector<char> res[2];
  for (int t = 1; t <= 2; ++t) {
    const std::string path = "/tmp/llama_ops_check_det_" + std::to_string(t) + ".bin";
    const std::string cmd = "HYBRID_ATTENTION_CPU_THREADS=" + std::to_string(t) + " '" + self + "' --det-child " + path;
    if (std::system(cmd.c_str()) != 0) { report("determinism child run failed", INFINITY, 0.0); return; }
    std::ifstream f(path, std::ios::binary);
    res[t - 1].assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    std::remove(path.c_str());
  }
  const bool same = !res[0].empty() && res[0] == res[1];
  report("threads 1 vs 2 bit-identical (" + std::to_string(res[0].size()) + " bytes: matmul, rms_norm, embedding, CE, norm, sum_rows)",
         same ? 0.0 : INFINITY, 0.0);
}

// ----------------------------------------------------------------------------------- timing
template <typename T>
void time_matmul(int64_t n, bool ta, bool tb) {
  devcheck::Rng rng(5);
  auto a = cast<T>(rng.normal(n * n)), b = cast<T>(rng.normal(n * n));
  std::vector<T> c(n * n);
  MatmulParams p; p.dtype = dt<T>(); p.m = p.n = p.k = n; p.trans_a = ta; p.trans_b = tb; p.a = a.data(); p.b = b.data(); p.c = c.data();
  matmul_cpu(p);
  double best = 1e30;
  for (int r = 0; r < 10; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    matmul_cpu(p);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::printf("  matmul %s %ld^3 %s%s: %8.3f ms  %6.1f GFLOP/s  (%d threads, kernel %s)\n", tn<T>(), (long)n, ta ? "T" : "N",
              tb ? "T" : "N", best * 1e3, 2.0 * n * n * n / best / 1e9, cpu_thread_count(), matmul_cpu_kernel_name());
}

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--det-child") return child(argv[2]);
  devcheck::Rng rng(1234);
  std::printf("matmul\n");
  check_matmul<double>(rng); check_matmul<float>(rng); check_matmul_grad(rng);
  std::printf("rms_norm\n");
  check_rms_norm<double>(rng); check_rms_norm<float>(rng);
  std::printf("rope\n");
  check_rope<double>(rng); check_rope<float>(rng);
  std::printf("swiglu\n");
  check_swiglu<double>(rng); check_swiglu<float>(rng);
  std::printf("embedding\n");
  check_embedding<double>(rng); check_embedding<float>(rng);
  std::printf("cross_entropy\n");
  check_cross_entropy<double>(rng); check_cross_entropy<float>(rng);
  std::printf("adamw\n");
  check_adamw<double>(rng); check_adamw<float>(rng);
  std::printf("elementwise\n");
  check_elementwise<double>(rng); check_elementwise<float>(rng);
  std::printf("dtypes, determinism\n");
  check_rejection();
  check_determinism(argv[0]);
  std::printf("timings\n");
  time_matmul<float>(512, false, false); time_matmul<float>(1024, false, false);
  time_matmul<float>(1024, false, true); time_matmul<float>(1024, true, false);
  time_matmul<double>(1024, false, false);
  return devcheck::finish("llama_ops_check");
}
