// Dev harness (not part of the addon): the CUDA recurrent decode against the CPU decode.
//   1. f32 states: the CPU prefill builds a random state, the same bytes go to the GPU, one CUDA
//      step and one CPU step run on them (single-token, multi-token, ragged); y, statistics and the
//      resulting state bytes (header and rings exact, S / z to float tolerance) are compared;
//      the GPU prefill (sequential and parallel build) must give the CPU prefill's state;
//   2. f32 / bf16 / f16: GPU prefill(T0) + steps vs the CPU f64 decode on the dtype-rounded
//      inputs, every mode, both geometries, GQA, keep, both lambdas;
//   3. --time (runs first): per-step time at H=32, d=F=dv=128, w=64, bf16, B in {1, 16, 64, 256},
//      for the automatic choice, the fused kernel at 2 and 4 splits (the previous default) and
//      the persistent kernel at 1 and 2
//      blocks per SM, launched and as a CUDA-graph replay; parts 1 and 2 check every kernel
//      variant at every split count (the persistent kernel also with more heads than blocks).
// --quick: a few fused- and persistent-kernel cases only (for compute-sanitizer).
// Build (from the repository root):
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80 \
//     -I native -I . dev/cuda/hybrid_decode_check.cu native/ops/hybrid_decode/hybrid_decode.cu \
//     native/ops/hybrid_decode/hybrid_decode_cpu.cpp native/core/parallel.cpp -lpthread -o build-dev/decode/hybrid_decode_check
// Run:   ./build-dev/decode/hybrid_decode_check [--time | --time-only | --quick]   (exit status 1 when a check fails)
#define HA_WITH_CUDA 1
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "ops/hybrid_decode/hybrid_decode.h"

using namespace ha;
#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { fprintf(stderr, "CUDA %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); exit(2); } } while (0)

static int g_fail = 0, g_checks = 0;
static int g_splits = 0;   // HybridDecodeStepParams::splits of the GPU steps (0 auto, -1 general kernel)
static int g_variant = 0;  // HybridDecodeStepParams::variant
static void expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) { ++g_fail; fprintf(stderr, "FAIL %s\n", what.c_str()); }
}

static double rnd(double x, DType t) {
  switch (t) {
    case DType::BF16: return bf16_to_f32(f32_to_bf16((float)x));
    case DType::F16: return f16_to_f32(f32_to_f16((float)x));
    case DType::F32: return (float)x;
    default: return x;
  }
}
// Element bytes of `v` in dtype t.
static std::vector<unsigned char> encode(const std::vector<double>& v, DType t) {
  std::vector<unsigned char> raw(v.size() * dtype_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == DType::BF16) { uint16_t u = f32_to_bf16((float)v[i]); memcpy(&raw[2 * i], &u, 2); }
    else if (t == DType::F16) { uint16_t u = f32_to_f16((float)v[i]); memcpy(&raw[2 * i], &u, 2); }
    else if (t == DType::F32) { float f = (float)v[i]; memcpy(&raw[4 * i], &f, 4); }
    else memcpy(&raw[8 * i], &v[i], 8);
  }
  return raw;
}
static std::vector<double> decode_raw(const void* p, size_t n, DType t) {
  std::vector<double> out(n);
  const unsigned char* b = (const unsigned char*)p;
  for (size_t i = 0; i < n; ++i) {
    if (t == DType::BF16) { uint16_t u; memcpy(&u, b + 2 * i, 2); out[i] = bf16_to_f32(u); }
    else if (t == DType::F16) { uint16_t u; memcpy(&u, b + 2 * i, 2); out[i] = f16_to_f32(u); }
    else if (t == DType::F32) { float f; memcpy(&f, b + 4 * i, 4); out[i] = f; }
    else memcpy(&out[i], b + 8 * i, 8);
  }
  return out;
}

struct Dev {
  void* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t bytes) : n(bytes) { CK(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~Dev() { cudaFree(p); }
  void up(const void* h, size_t bytes) { CK(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice)); }
  void down(void* h, size_t bytes) const { CK(cudaMemcpy(h, p, bytes, cudaMemcpyDeviceToHost)); }
  void poison() { CK(cudaMemset(p, 0xff, n)); }  // NaN in every float type
};

struct Problem {
  int B, H, Hkv, d, dv, F, w, NS;
  WindowGeometry geom;
  HybridMode mode;
  LambdaKind lam;
  bool keep;
};

// Token tensors of `rows` rows (host f64, rounded to dtype t).
struct Tokens {
  std::vector<double> q, k, v, fq, fk;
};
static Tokens make_tokens(const Problem& P, int64_t rows, DType t, std::mt19937& g) {
  std::normal_distribution<double> nd(0.0, 1.0);
  Tokens x;
  auto fill = [&](std::vector<double>& a, int64_t n, bool feat, int dim) {
    a.resize(n);
    for (int64_t r = 0; r < n / std::max(dim, 1); ++r) {
      double s = 0;
      for (int j = 0; j < dim; ++j) s += a[r * dim + j] = feat ? std::exp(nd(g)) : nd(g);
      for (int j = 0; j < dim; ++j) {
        if (feat) a[r * dim + j] /= s;
        a[r * dim + j] = rnd(a[r * dim + j], t);
      }
    }
  };
  fill(x.q, rows * P.H * P.d, false, P.d);
  fill(x.k, rows * P.Hkv * P.d, false, P.d);
  fill(x.v, rows * P.Hkv * P.dv, false, P.dv);
  fill(x.fq, rows * P.H * P.F, true, P.F);
  fill(x.fk, rows * P.H * P.F, true, P.F);
  return x;
}

static HybridDecodeConfig cfg_of(const Problem& P, DType t) {
  HybridDecodeConfig c;
  c.dtype = t; c.heads = P.H; c.kv_heads = P.Hkv; c.head_dim = P.d; c.value_dim = P.dv; c.feature_dim = P.F;
  c.window = P.w; c.sinks = P.NS; c.geometry = P.geom;
  return c;
}

struct Outs {
  std::vector<double> y, c, dsw, dla;
};

// Runs prefill (T0 tokens, [B,H,T0,*]) or a step (packed) on the CPU in f64 or f32, or on the GPU.
struct Runner {
  Problem P;
  DType t;
  bool gpu;
  HybridDecodeStateLayout L;
  std::vector<unsigned char> host_state;
  Dev* dev_state = nullptr;
  std::vector<double> gamma, keep;
  cudaStream_t st = nullptr;

  Runner(const Problem& P_, DType t_, bool gpu_, std::mt19937& g) : P(P_), t(t_), gpu(gpu_) {
    L = gpu ? hybrid_decode_state_layout_cuda(cfg_of(P, t)) : hybrid_decode_state_layout(cfg_of(P, t));
    if (gpu) dev_state = new Dev((size_t)L.bytes * P.B);
    else host_state.assign((size_t)L.bytes * P.B, 0xab);
    std::uniform_real_distribution<double> u(0.05, 0.95);
    gamma.resize(P.H);
    for (auto& x : gamma) x = u(g);
    if (P.keep) { keep.resize(P.B * P.H); for (int i = 0; i < P.B * P.H; ++i) keep[i] = i % 3 == 1 ? 0 : 1; }
  }
  ~Runner() { delete dev_state; }
  // Same gamma / keep as another runner.
  void share(const Runner& o) { gamma = o.gamma; keep = o.keep; }

  Outs call(const Tokens& x, int64_t rows, bool prefill, int64_t T0, const std::vector<int64_t>* cu, int64_t per_seq, bool outputs) {
    const DType acc = t == DType::F64 ? DType::F64 : DType::F32;
    auto make = [&](const std::vector<double>& v, DType dt) { return encode(v, dt); };
    std::vector<std::vector<unsigned char>> host = {make(x.q, t), make(x.k, t), make(x.v, t), make(x.fq, t), make(x.fk, t), make(gamma, acc), make(keep, acc)};
    const int64_t yn = rows * P.H * P.dv, sn = rows * P.H;
    std::vector<unsigned char> hy(yn * dtype_size(t)), hc(sn * dtype_size(acc)), hs(hc.size()), hl(hc.size());
    HybridDecodeStepParams sp;
    HybridDecodePrefillParams pp;
    HybridDecodeParams& p = prefill ? (HybridDecodeParams&)pp : (HybridDecodeParams&)sp;
    p.config = cfg_of(P, t);
    p.batch = P.B;
    p.mode = P.mode;
    p.lambda_kind = P.lam;
    std::vector<Dev*> bufs;
    if (gpu) {
      for (auto& h : host) { bufs.push_back(new Dev(h.size())); bufs.back()->up(h.data(), h.size()); }
      for (size_t n : {hy.size(), hc.size(), hs.size(), hl.size()}) { bufs.push_back(new Dev(n)); bufs.back()->poison(); }
      p.state = dev_state->p;
      p.q = bufs[0]->p; p.k = bufs[1]->p; p.v = bufs[2]->p; p.fq = bufs[3]->p; p.fk = bufs[4]->p;
      p.gamma = bufs[5]->p; p.keep = P.keep ? bufs[6]->p : nullptr;
      if (outputs) { p.y = bufs[7]->p; p.c = bufs[8]->p; p.den_swa = bufs[9]->p; p.den_la = bufs[10]->p; }
    } else {
      p.state = host_state.data();
      p.q = host[0].data(); p.k = host[1].data(); p.v = host[2].data(); p.fq = host[3].data(); p.fk = host[4].data();
      p.gamma = host[5].data(); p.keep = P.keep ? host[6].data() : nullptr;
      if (outputs) { p.y = hy.data(); p.c = hc.data(); p.den_swa = hs.data(); p.den_la = hl.data(); }
    }
    if (prefill) {
      pp.seqlen = T0;
      if (gpu) hybrid_decode_prefill_cuda(pp, st); else hybrid_decode_prefill_cpu(pp);
    } else {
      sp.cu_seqlens = cu ? cu->data() : nullptr;
      sp.tokens_per_seq = per_seq;
      sp.splits = g_splits;
      sp.variant = g_variant;
      if (gpu) hybrid_decode_step_cuda(sp, st); else hybrid_decode_step_cpu(sp);
    }
    if (gpu) {
      CK(cudaStreamSynchronize(st));
      CK(cudaGetLastError());
      if (outputs) { bufs[7]->down(hy.data(), hy.size()); bufs[8]->down(hc.data(), hc.size()); bufs[9]->down(hs.data(), hs.size()); bufs[10]->down(hl.data(), hl.size()); }
      for (auto* b : bufs) delete b;
    }
    Outs o;
    if (outputs) { o.y = decode_raw(hy.data(), yn, t); o.c = decode_raw(hc.data(), sn, acc); o.dsw = decode_raw(hs.data(), sn, acc); o.dla = decode_raw(hl.data(), sn, acc); }
    return o;
  }
  std::vector<unsigned char> state_bytes() {
    if (!gpu) return host_state;
    std::vector<unsigned char> h(dev_state->n);
    dev_state->down(h.data(), h.size());
    return h;
  }
  void set_state(const std::vector<unsigned char>& h) {
    if (gpu) dev_state->up(h.data(), h.size()); else host_state = h;
  }
};

static double max_err(const std::vector<double>& a, const std::vector<double>& b, double* maxref) {
  double m = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(a[i] - b[i]);
    m = std::isnan(d) ? INFINITY : std::max(m, d);
    r = std::max(r, std::fabs(b[i]));
  }
  if (maxref) *maxref = r;
  return m;
}
static double tol_of(DType t) { return t == DType::BF16 ? 3e-2 : t == DType::F16 ? 4e-3 : 2e-5; }

static void compare(const Outs& got, const Outs& ref, DType t, const std::string& tag) {
  const char* names[] = {"y", "c", "den_swa", "den_la"};
  const std::vector<double>* g[] = {&got.y, &got.c, &got.dsw, &got.dla};
  const std::vector<double>* r[] = {&ref.y, &ref.c, &ref.dsw, &ref.dla};
  for (int i = 0; i < 4; ++i) {
    double mr = 0;
    const double e = max_err(*g[i], *r[i], &mr);
    const double tol = tol_of(t) * std::max(1.0, mr);
    char buf[256];
    snprintf(buf, sizeof buf, "%s %s: err %.3e tol %.3e", tag.c_str(), names[i], e, tol);
    expect(e <= tol, buf);
  }
}

static const char* mode_name(HybridMode m) {
  static const char* n[] = {"hybrid", "swa", "la", "la-full", "overlap", "sinks", "none"};
  return n[(int)m];
}

// Sequence b's rows of a prefill tensor [B, nh, T, X] for tokens [t0, t1), packed [B*(t1-t0), nh, X].
static std::vector<double> pack(const std::vector<double>& x, int B, int nh, int64_t T, int X, int64_t t0, int64_t t1) {
  const int64_t n = t1 - t0;
  std::vector<double> out((size_t)B * n * nh * X);
  for (int b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int h = 0; h < nh; ++h)
        for (int j = 0; j < X; ++j) out[(((b * n) + t - t0) * nh + h) * X + j] = x[(((int64_t)b * nh + h) * T + t) * X + j];
  return out;
}
static std::vector<double> prefix(const std::vector<double>& x, int B, int nh, int64_t T, int X, int64_t t0) {
  std::vector<double> out((size_t)B * nh * t0 * X);
  for (int bh = 0; bh < B * nh; ++bh)
    for (int64_t i = 0; i < t0 * X; ++i) out[bh * t0 * X + i] = x[bh * T * X + i];
  return out;
}
static Tokens slice(const Tokens& all, const Problem& P, int64_t T, int64_t t0, int64_t t1, bool packed) {
  Tokens s;
  auto f = [&](const std::vector<double>& x, int nh, int X) { return packed ? pack(x, P.B, nh, T, X, t0, t1) : prefix(x, P.B, nh, T, X, t1); };
  s.q = f(all.q, P.H, P.d); s.k = f(all.k, P.Hkv, P.d); s.v = f(all.v, P.Hkv, P.dv); s.fq = f(all.fq, P.H, P.F); s.fk = f(all.fk, P.H, P.F);
  return s;
}

// Part 1: the same f32 state bytes, one CUDA step vs one CPU step.
static void check_same_state(const Problem& P, std::mt19937& g) {
  const int64_t T0 = 2 * P.w + 3, T = T0 + 6;
  const Tokens all = make_tokens(P, (int64_t)P.B * T, DType::F32, g);  // [B, nh, T, X] view
  Runner cpu(P, DType::F32, false, g), gpu(P, DType::F32, true, g);
  gpu.share(cpu);
  const std::string tag = std::string("same-state splits=") + std::to_string(g_splits) + " variant=" + std::to_string(g_variant) + " " + mode_name(P.mode) + (P.geom == WindowGeometry::Terraced ? " terraced" : " sliding") +
                          " w=" + std::to_string(P.w);
  // the GPU prefill (sequential with outputs, and the parallel build) equals the CPU prefill
  const Tokens pre = slice(all, P, T, 0, T0, false);
  Outs rc = cpu.call(pre, P.B * T0, true, T0, nullptr, 1, true);
  Outs rg = gpu.call(pre, P.B * T0, true, T0, nullptr, 1, true);
  compare(rg, rc, DType::F32, tag + " prefill");
  auto same_state = [&](const std::vector<unsigned char>& a, const std::vector<unsigned char>& b, const std::string& what) {
    const HybridDecodeStateLayout& L = cpu.L;
    for (int s = 0; s < P.B; ++s) {
      const unsigned char* x = a.data() + s * L.bytes;
      const unsigned char* y = b.data() + s * L.bytes;
      expect(memcmp(x, y, 128) == 0, what + ": header");
      expect(memcmp(x + L.win_k, y + L.win_k, L.bytes - L.win_k) == 0, what + ": rings and sinks");
      const size_t nf = (L.win_k - L.S) / 4;
      std::vector<double> sa = decode_raw(x + L.S, nf, DType::F32), sb = decode_raw(y + L.S, nf, DType::F32);
      double mr = 0;
      const double e = max_err(sa, sb, &mr);
      expect(e <= 1e-5 * std::max(1.0, mr), what + ": S, z (err " + std::to_string(e) + ")");
    }
  };
  same_state(gpu.state_bytes(), cpu.state_bytes(), tag + " prefill state");
  {
    Runner par(P, DType::F32, true, g);
    par.share(cpu);
    par.call(pre, P.B * T0, true, T0, nullptr, 1, false);
    same_state(par.state_bytes(), cpu.state_bytes(), tag + " parallel-build state");
  }
  // from the CPU's bytes: single-token, multi-token and ragged steps
  gpu.set_state(cpu.state_bytes());
  const Tokens one = slice(all, P, T, T0, T0 + 1, true);
  compare(gpu.call(one, P.B, false, 0, nullptr, 1, true), cpu.call(one, P.B, false, 0, nullptr, 1, true), DType::F32, tag + " step");
  same_state(gpu.state_bytes(), cpu.state_bytes(), tag + " after step");
  const Tokens three = slice(all, P, T, T0 + 1, T0 + 4, true);
  compare(gpu.call(three, P.B * 3, false, 0, nullptr, 3, true), cpu.call(three, P.B * 3, false, 0, nullptr, 3, true), DType::F32, tag + " 3-token step");
  same_state(gpu.state_bytes(), cpu.state_bytes(), tag + " after 3-token step");
  if (P.B >= 2) {  // ragged: sequence 0 one token, the others two
    std::vector<int64_t> cu(P.B + 1, 0);
    for (int b = 0; b < P.B; ++b) cu[b + 1] = cu[b] + (b == 0 ? 1 : 2);
    Tokens r;
    const Tokens two = slice(all, P, T, T0 + 4, T0 + 6, true);  // [B*2, nh, X]
    auto pick = [&](const std::vector<double>& x, int nh, int X, std::vector<double>& out) {
      for (int b = 0; b < P.B; ++b)
        for (int i = 0; i < (b == 0 ? 1 : 2); ++i)
          out.insert(out.end(), x.begin() + ((b * 2 + i) * nh) * X, x.begin() + ((b * 2 + i + 1) * nh) * X);
    };
    pick(two.q, P.H, P.d, r.q); pick(two.k, P.Hkv, P.d, r.k); pick(two.v, P.Hkv, P.dv, r.v); pick(two.fq, P.H, P.F, r.fq); pick(two.fk, P.H, P.F, r.fk);
    compare(gpu.call(r, cu.back(), false, 0, &cu, 1, true), cpu.call(r, cu.back(), false, 0, &cu, 1, true), DType::F32, tag + " ragged step");
    same_state(gpu.state_bytes(), cpu.state_bytes(), tag + " after ragged step");
  }
}

// Part 2: GPU prefill(T0) + single steps in dtype t vs the CPU f64 decode of the rounded inputs.
static void check_sequence(const Problem& P, DType t, int64_t T, int64_t T0, std::mt19937& g) {
  const Tokens all = make_tokens(P, (int64_t)P.B * T, t, g);
  Runner ref(P, DType::F64, false, g), gpu(P, t, true, g);
  gpu.share(ref);
  Outs want = ref.call(all, P.B * T, true, T, nullptr, 1, true);  // [B, H, T, *]
  Outs got;
  got.y.assign(want.y.size(), NAN); got.c.assign(want.c.size(), NAN); got.dsw = got.c; got.dla = got.c;
  const Tokens pre = slice(all, P, T, 0, T0, false);
  Outs o = gpu.call(pre, P.B * T0, true, T0, nullptr, 1, true);
  for (int bh = 0; bh < P.B * P.H; ++bh)
    for (int64_t i = 0; i < T0; ++i) {
      for (int j = 0; j < P.dv; ++j) got.y[(bh * T + i) * P.dv + j] = o.y[(bh * T0 + i) * P.dv + j];
      got.c[bh * T + i] = o.c[bh * T0 + i]; got.dsw[bh * T + i] = o.dsw[bh * T0 + i]; got.dla[bh * T + i] = o.dla[bh * T0 + i];
    }
  for (int64_t n = T0; n < T; ++n) {
    Outs s = gpu.call(slice(all, P, T, n, n + 1, true), P.B, false, 0, nullptr, 1, true);
    for (int b = 0; b < P.B; ++b)
      for (int h = 0; h < P.H; ++h) {
        const int64_t dst = ((int64_t)b * P.H + h) * T + n, src = b * P.H + h;
        for (int j = 0; j < P.dv; ++j) got.y[dst * P.dv + j] = s.y[src * P.dv + j];
        got.c[dst] = s.c[src]; got.dsw[dst] = s.dsw[src]; got.dla[dst] = s.dla[src];
      }
  }
  compare(got, want, t, std::string("splits=") + std::to_string(g_splits) + " " + dtype_name(t) + " " + mode_name(P.mode) + (P.geom == WindowGeometry::Terraced ? " terraced" : " sliding") +
                            " w=" + std::to_string(P.w) + " T0=" + std::to_string(T0) + " H=" + std::to_string(P.H) + "/" + std::to_string(P.Hkv));
}

// Median of `runs` per-step CUDA-event intervals of fn (events between back-to-back launches).
template <class Fn>
static float median_ms(Fn fn, int runs, cudaStream_t st) {
  std::vector<cudaEvent_t> ev(runs + 1);
  for (auto& e : ev) CK(cudaEventCreate(&e));
  CK(cudaEventRecord(ev[0], st));
  for (int i = 0; i < runs; ++i) { fn(); CK(cudaEventRecord(ev[i + 1], st)); }
  CK(cudaEventSynchronize(ev[runs]));
  std::vector<float> t(runs);
  for (int i = 0; i < runs; ++i) CK(cudaEventElapsedTime(&t[i], ev[i], ev[i + 1]));
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(t.begin(), t.end());
  return t[runs / 2];
}

static void time_steps() {
  Problem P{1, 32, 32, 128, 128, 128, 64, 8, WindowGeometry::Sliding, HybridMode::Hybrid, LambdaKind::One, false};
  std::mt19937 g(5);
  int dev = 0, bus = 0, clk = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaDeviceGetAttribute(&bus, cudaDevAttrGlobalMemoryBusWidth, dev));
  CK(cudaDeviceGetAttribute(&clk, cudaDevAttrMemoryClockRate, dev));
  // compulsory bytes per sequence and step: bench/decode.ts decodeStepBytes
  const double E = 2, H = 32, F = 128, dv = 128, d = 128, w = 64;
  const double seq_bytes = 2 * H * F * dv * 4 + 2 * H * F * 4 + H * (w - 1) * (d + dv) * E + H * F * E + (H * (d + dv) + H * F) * E +
                           (H * d + H * (d + dv) + 2 * H * F) * E + H * dv * E + 3 * H * 4;
  printf("time: compulsory bytes per sequence-step %.0f\n", seq_bytes);
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  for (int B : {1, 16, 64, 256}) {
    P.B = B;
    Runner r(P, DType::BF16, true, g);
    const Tokens pre = make_tokens(P, (int64_t)B * 128, DType::BF16, g);
    r.call(pre, B * 128, true, 128, nullptr, 1, false);
    const Tokens one = make_tokens(P, B, DType::BF16, g);
    HybridDecodeStepParams sp;
    sp.config = cfg_of(P, DType::BF16);
    sp.batch = B;
    std::vector<Dev*> bufs;
    auto up = [&](const std::vector<double>& v, DType t) { auto h = encode(v, t); bufs.push_back(new Dev(h.size())); bufs.back()->up(h.data(), h.size()); return bufs.back()->p; };
    sp.state = r.dev_state->p;
    sp.q = up(one.q, DType::BF16); sp.k = up(one.k, DType::BF16); sp.v = up(one.v, DType::BF16); sp.fq = up(one.fq, DType::BF16); sp.fk = up(one.fk, DType::BF16);
    sp.gamma = up(r.gamma, DType::F32);
    bufs.push_back(new Dev((size_t)B * 32 * 128 * 2)); sp.y = bufs.back()->p;
    bufs.push_back(new Dev((size_t)B * 32 * 4)); sp.c = bufs.back()->p;
    bufs.push_back(new Dev((size_t)B * 32 * 4)); sp.den_swa = bufs.back()->p;
    bufs.push_back(new Dev((size_t)B * 32 * 4)); sp.den_la = bufs.back()->p;
    // variant * 100 + splits: 0 = the automatic choice now, 30k = the fused kernel at k splits
    // (302 at B >= 16 and 304 at B = 1 were the automatic choice before), 40k = the persistent
    // kernel at k blocks per SM (402 is the automatic choice from 2 heads per SM)
    for (int vs : {0, 302, 304, 401, 402}) {
      const int splits = vs < 0 ? vs : vs % 100, variant = vs < 0 ? 0 : vs / 100;
      sp.splits = splits;
      sp.variant = variant;
      try {
        for (int i = 0; i < 10; ++i) hybrid_decode_step_cuda(sp, st);
      } catch (const std::exception& e) {
        printf("time B=%3d variant=%d splits=%2d: not runnable (%s)\n", B, variant, splits, e.what());
        continue;
      }
      const float ms = median_ms([&] { hybrid_decode_step_cuda(sp, st); }, 200, st);
      // the same step captured in a CUDA graph (no launch overhead)
      cudaGraph_t graph;
      cudaGraphExec_t exec;
      CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      hybrid_decode_step_cuda(sp, st);
      CK(cudaStreamEndCapture(st, &graph));
      CK(cudaGraphInstantiate(&exec, graph, 0));
      for (int i = 0; i < 10; ++i) CK(cudaGraphLaunch(exec, st));
      const float gms = median_ms([&] { CK(cudaGraphLaunch(exec, st)); }, 200, st);
      CK(cudaStreamSynchronize(st));
      CK(cudaGetLastError());
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      printf("time B=%3d variant=%d splits=%2d: %.4f ms per step (%.1f GB/s), graph replay %.4f ms (%.1f GB/s)\n", B, variant, splits, ms,
             B * seq_bytes / (ms * 1e-3) / 1e9, gms, B * seq_bytes / (gms * 1e-3) / 1e9);
    }
    for (auto* b : bufs) delete b;
  }
  cudaStreamDestroy(st);
}

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);  // lines reach a log even if the process dies
  bool timing = false;
  bool checks = true;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--time")) timing = true;
    if (!strcmp(argv[i], "--time-only")) timing = true, checks = false;
    if (!strcmp(argv[i], "--no-time")) timing = false;
    if (!strcmp(argv[i], "--quick")) quick = true;  // a few fused-kernel cases (for compute-sanitizer)
  }
  int dev = 0;
  cudaDeviceProp prop;
  CK(cudaGetDevice(&dev));
  CK(cudaGetDeviceProperties(&prop, dev));
  printf("device: %s\n", prop.name);
  if (timing) time_steps();  // first: the numbers even when the checks below run long
  if (!checks) return 0;
  // f32 layouts agree with the CPU's
  {
    Problem P{1, 6, 2, 24, 20, 12, 5, 3, WindowGeometry::Terraced, HybridMode::Hybrid, LambdaKind::One, false};
    const auto a = hybrid_decode_state_layout(cfg_of(P, DType::F32)), b = hybrid_decode_state_layout_cuda(cfg_of(P, DType::F32));
    expect(memcmp(&a, &b, sizeof a) == 0, "f32 layouts of the CPU and CUDA agree");
  }
  std::mt19937 g(1234);
  const HybridMode modes[] = {HybridMode::Hybrid, HybridMode::Swa, HybridMode::La, HybridMode::LaFull, HybridMode::Overlap, HybridMode::Sinks, HybridMode::None};
  // the split kernel at every split count and tuning variant, and the general kernel, on the same states
  // variant 0: automatic (the fused kernel where it runs: sliding; hybrid, swa, la, none; else
  // the split kernel); 1, 2: the split kernel's two tunings; 3: the fused kernel; splits -1: the
  // general kernel
  for (int variant : {0, 1, 2, 3, 4})
  for (int splits : {-1, 1, 2, 4, 8}) {
    if (variant > 0 && splits == -1) continue;
    if (variant == 4 && splits > 2) continue;  // persistent: blocks per SM
    if (quick && !(variant >= 3 && (splits == 1 || splits == 2))) continue;
    g_splits = splits;
    g_variant = variant;
    for (auto geom : {WindowGeometry::Sliding, WindowGeometry::Terraced})
      for (auto mode : modes) {
        Problem P{3, 4, 2, 32, 32, 16, 4, 3, geom, mode, mode == HybridMode::Overlap ? LambdaKind::Affine : LambdaKind::One, true};
        check_same_state(P, g);
      }
    if (splits != 1) {  // dv = F = 128 in one block needs more rows per thread than the split kernel holds
      Problem Big{2, 4, 2, 128, 128, 128, 16, 8, WindowGeometry::Terraced, HybridMode::Hybrid, LambdaKind::One, true};
      check_same_state(Big, g);
    }
    if (splits != 1 || variant == 0 || variant >= 3)  // sliding, the fused kernel's shapes (and w = 64)
      for (auto mode : {HybridMode::Hybrid, HybridMode::Swa, HybridMode::La, HybridMode::None}) {
        Problem BigS{2, 4, 2, 128, 128, 128, 16, 8, WindowGeometry::Sliding, mode, LambdaKind::Affine, true};
        check_same_state(BigS, g);
        Problem BigW{1, 2, 1, 128, 128, 128, 64, 8, WindowGeometry::Sliding, mode, LambdaKind::One, false};
        check_same_state(BigW, g);
      }
    // the fused kernel over whole sequences (positions from 0, partial windows, w = 1) at this split count
    if ((variant == 0 || variant >= 3) && splits > 0)
      for (DType t : {DType::F32, DType::BF16})
        for (auto mode : {HybridMode::Hybrid, HybridMode::Swa, HybridMode::La, HybridMode::None})
          for (int w : {1, 8}) {
            Problem P{2, 4, 2, 32, 32, 16, w, 3, WindowGeometry::Sliding, mode, mode == HybridMode::La ? LambdaKind::Affine : LambdaKind::One, true};
            for (int64_t T0 : {0, 5}) check_sequence(P, t, 24, T0, g);
          }
    // the persistent kernel with more heads than blocks (each block walks several heads and its
    // stage ring wraps; the position counter spans blocks)
    if (variant == 4) {
      for (auto mode : {HybridMode::Hybrid, HybridMode::Swa, HybridMode::La, HybridMode::None}) {
        Problem Many{300, 8, 2, 32, 32, 16, 8, 3, WindowGeometry::Sliding, mode, mode == HybridMode::La ? LambdaKind::Affine : LambdaKind::One, true};
        check_same_state(Many, g);
        for (DType t : {DType::F32, DType::BF16}) check_sequence(Many, t, 20, 5, g);
      }
      Problem ManyBig{48, 8, 4, 128, 128, 128, 64, 8, WindowGeometry::Sliding, HybridMode::Hybrid, LambdaKind::One, true};
      check_same_state(ManyBig, g);
    }
    printf("sweep variant=%d splits=%d: %d checks, %d failures\n", variant, splits, g_checks, g_fail);
  }
  g_splits = 0;
  g_variant = 0;
  // the automatic choice with many heads (the persistent kernel from 2 heads per SM)
  for (auto mode : {HybridMode::Hybrid, HybridMode::La}) {
    Problem Many{300, 8, 2, 32, 32, 16, 8, 3, WindowGeometry::Sliding, mode, LambdaKind::Affine, true};
    check_same_state(Many, g);
    check_sequence(Many, DType::BF16, 20, 5, g);
  }
  {
    Problem ManyBig{48, 8, 4, 128, 128, 128, 64, 8, WindowGeometry::Sliding, HybridMode::Swa, LambdaKind::One, true};
    check_same_state(ManyBig, g);
  }
  printf("automatic, many heads: %d checks, %d failures\n", g_checks, g_fail);
  if (quick) {
    printf("%d checks, %d failures\n", g_checks, g_fail);
    return g_fail ? 1 : 0;
  }
  for (auto geom : {WindowGeometry::Sliding, WindowGeometry::Terraced})
    for (auto mode : modes)
      for (int w : {1, 4, 16}) {
        Problem P{3, 4, 2, 32, 32, 16, w, 3, geom, mode, mode == HybridMode::Overlap ? LambdaKind::Affine : LambdaKind::One, true};
        check_same_state(P, g);
        Problem Q{1, 3, 1, 24, 18, 10, w, 4, geom, mode, LambdaKind::One, false};  // dv % 4 != 0
        check_same_state(Q, g);
      }
  for (DType t : {DType::F32, DType::BF16, DType::F16})
    for (auto geom : {WindowGeometry::Sliding, WindowGeometry::Terraced})
      for (auto mode : modes) {
        Problem P{2, 4, 2, 32, 32, 16, 8, 3, geom, mode, mode == HybridMode::Overlap ? LambdaKind::Affine : LambdaKind::One, true};
        for (int64_t T0 : {0, 1, 7, 8, 13}) check_sequence(P, t, 40, T0, g);
        Problem Big{1, 2, 2, 128, 128, 128, 64, 8, geom, mode, LambdaKind::One, false};
        check_sequence(Big, t, 150, 63, g);
      }
  printf("%d checks, %d failures\n", g_checks, g_fail);
  return g_fail ? 1 : 0;
}
