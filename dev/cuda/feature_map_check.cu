// Dev harness for ops/feature_map (CUDA), llm.c style: every kind and activation, bias or not,
// T not a multiple of the row tile, d in {32, 64, 80, 128}, dtypes bf16/f16/f32; outputs
// poisoned with NaN before every run; phi, dx, dw, db compared with the f64 CPU reference on
// the same rounded inputs; dw/db bitwise determinism; bf16 timing at B=4, H=32, T=2048, d=f=128.
// Build from the repository root:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80
//     -I/work/main/native -I/work/main dev/cuda/feature_map_check.cu native/ops/feature_map/feature_map.cu
//     native/ops/feature_map/feature_map_cpu.cpp native/core/parallel.cpp -o build-dev/feature_map_check
//
// Tolerance (documented relative form of SPEC sec. 8): max|gpu - ref| / max|ref|; f32 1e-4;
// f16 3e-3 (phi) / 6e-3 (gradients); bf16 2e-2 (phi) / 4e-2 (gradients). The kernels compute in
// fp32 from the 16-bit inputs, so the error is the output rounding ("round floor") plus fp32
// accumulation.
#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "dev/cuda/cuda_check_util.h"
#include "ops/feature_map/feature_map.h"

using namespace ha;

struct Cfg { int B, H, T, d, f; FeatureMapKind kind; FeatureAct act; bool bias; };

static const char* act_name(FeatureMapKind k, FeatureAct a) {
  if (k == FeatureMapKind::T2R) return "t2r";
  if (k == FeatureMapKind::EluRaw) return "elu-raw";
  switch (a) {
    case FeatureAct::Softmax: return "hh-softmax";
    case FeatureAct::Exp: return "hh-exp";
    case FeatureAct::Relu: return "hh-relu";
    case FeatureAct::Elu1: return "hh-1+elu";
    default: return "hh-identity";
  }
}

static void run_case(const Cfg& c, DType dt, uint64_t seed) {
  cu::Rng rng(seed);
  FeatureMapParams p;
  p.dtype = dt; p.batch = c.B; p.heads = c.H; p.seqlen = c.T; p.in_dim = c.d; p.proj_dim = c.f;
  p.kind = c.kind; p.act = c.act;
  const int64_t out = feature_map_out_dim(p);
  const size_t nx = (size_t)c.B * c.H * c.T * c.d, nw = (size_t)c.H * c.d * c.f, nb = (size_t)c.H * c.f;
  const size_t np = (size_t)c.B * c.H * c.T * out;
  cu::Buf x(dt, nx), w(dt, nw), b(dt, nb), phi(dt, np), dphi(dt, np), dx(dt, nx), dw(dt, nw), db(dt, nb);
  x.set(rng.normal(nx, 1.0)); w.set(rng.normal(nw, 1.0 / std::sqrt((double)c.d))); b.set(rng.normal(nb, 0.3));
  dphi.set(rng.normal(np, 1.0));
  const bool has_w = c.kind != FeatureMapKind::EluRaw;
  p.x = x.d; p.w = has_w ? w.d : nullptr; p.b = (has_w && c.bias) ? b.d : nullptr; p.phi = phi.d;
  phi.poison();
  feature_map_forward_cuda(p, nullptr);
  CU_CHECK(cudaDeviceSynchronize());
  auto phig = phi.get();
  FeatureMapGradParams g;
  g.fwd = p; g.dphi = dphi.d; g.dx = dx.d; g.dw = has_w ? dw.d : nullptr; g.db = p.b ? db.d : nullptr;
  dx.poison(); dw.poison(); db.poison();
  feature_map_backward_cuda(g, nullptr);
  CU_CHECK(cudaDeviceSynchronize());
  auto dxg = dx.get(), dwg = dw.get(), dbg = db.get();
  dx.poison(); dw.poison(); db.poison();
  feature_map_backward_cuda(g, nullptr);
  CU_CHECK(cudaDeviceSynchronize());
  const bool same = dx.get() == dxg && (!has_w || dw.get() == dwg) && (!p.b || db.get() == dbg);

  std::vector<double> rphi(np), rdx(nx), rdw(nw), rdb(nb);
  FeatureMapParams r = p;
  r.dtype = DType::F64; r.x = x.h.data(); r.w = has_w ? w.h.data() : nullptr; r.b = p.b ? b.h.data() : nullptr;
  r.phi = rphi.data();
  feature_map_forward_cpu(r);
  FeatureMapGradParams rg;
  rg.fwd = r; rg.dphi = dphi.h.data(); rg.dx = rdx.data(); rg.dw = has_w ? rdw.data() : nullptr;
  rg.db = r.b ? rdb.data() : nullptr;
  feature_map_backward_cpu(rg);

  const bool f32 = dt == DType::F32, f16 = dt == DType::F16;
  const double to = f32 ? 1e-4 : f16 ? 3e-3 : 2e-2, tg = f32 ? 1e-4 : f16 ? 6e-3 : 4e-2;
  std::printf("%s %s B%d H%d T%d d%d f%d %s\n", cu::dname(dt), act_name(c.kind, c.act), c.B, c.H, c.T, c.d, c.f,
              c.bias ? "bias" : "no-bias");
  cu::report("phi", cu::rel_err(phig, rphi), to, cu::round_floor(rphi, dt));
  cu::report("dx", cu::rel_err(dxg, rdx), tg, cu::round_floor(rdx, dt));
  if (has_w) cu::report("dw", cu::rel_err(dwg, rdw), tg, cu::round_floor(rdw, dt));
  if (p.b) cu::report("db", cu::rel_err(dbg, rdb), tg, cu::round_floor(rdb, dt));
  cu::report("backward bitwise deterministic", same ? 0.0 : 1.0, 0.0);
}

static void timing(DType dt) {
  const int B = 4, H = 32, T = 2048, d = 128, f = 128;
  FeatureMapParams p;
  p.dtype = dt; p.batch = B; p.heads = H; p.seqlen = T; p.in_dim = d; p.proj_dim = f;
  p.kind = FeatureMapKind::Hedgehog; p.act = FeatureAct::Softmax;
  const size_t nx = (size_t)B * H * T * d, np = (size_t)B * H * T * 2 * f, nw = (size_t)H * d * f, nb = (size_t)H * f;
  const size_t es = dtype_size(dt);
  void *x, *w, *b, *phi, *dphi, *dx, *dw, *db;
  CU_CHECK(cudaMalloc(&x, nx * es)); CU_CHECK(cudaMalloc(&dx, nx * es));
  CU_CHECK(cudaMalloc(&phi, np * es)); CU_CHECK(cudaMalloc(&dphi, np * es));
  CU_CHECK(cudaMalloc(&w, nw * es)); CU_CHECK(cudaMalloc(&dw, nw * es));
  CU_CHECK(cudaMalloc(&b, nb * es)); CU_CHECK(cudaMalloc(&db, nb * es));
  cu::fill_random_device(x, dt, nx, 11, 1.f); cu::fill_random_device(w, dt, nw, 12, 0.1f);
  cu::fill_random_device(b, dt, nb, 13, 0.1f); cu::fill_random_device(dphi, dt, np, 14, 1.f);
  p.x = x; p.w = w; p.b = b; p.phi = phi;
  FeatureMapGradParams g;
  g.fwd = p; g.dphi = dphi; g.dx = dx; g.dw = dw; g.db = db;
  const double tf = cu::time_ms([&] { feature_map_forward_cuda(p, nullptr); });
  const double tb = cu::time_ms([&] { feature_map_backward_cuda(g, nullptr); });
  const double ff = 2.0 * B * H * (double)T * d * f, fb = 2.0 * ff;
  const double bf = (double)(nx + np) * es, bb = (double)(2 * nx + np) * es;
  std::printf("TIMING %s hedgehog-softmax B=%d H=%d T=%d d=%d f=%d: forward %.3f ms (%.1f TFLOP/s, %.0f GB/s), "
              "backward (dx, dw, db) %.3f ms (%.1f TFLOP/s, %.0f GB/s)\n",
              cu::dname(dt), B, H, T, d, f, tf, ff / tf * 1e-9, bf / tf * 1e-6, tb, fb / tb * 1e-9, bb / tb * 1e-6);
  for (void* q : {x, w, b, phi, dphi, dx, dw, db}) cudaFree(q);
}

int main() {
  cudaDeviceProp prop;
  CU_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  const Cfg cfgs[] = {
      {2, 2, 100, 64, 64, FeatureMapKind::Hedgehog, FeatureAct::Softmax, true},
      {1, 3, 77, 128, 64, FeatureMapKind::Hedgehog, FeatureAct::Softmax, false},
      {1, 2, 130, 128, 128, FeatureMapKind::Hedgehog, FeatureAct::Softmax, true},
      {2, 2, 50, 32, 32, FeatureMapKind::Hedgehog, FeatureAct::Exp, true},
      {1, 2, 90, 80, 80, FeatureMapKind::Hedgehog, FeatureAct::Relu, false},
      {1, 2, 65, 64, 32, FeatureMapKind::Hedgehog, FeatureAct::Elu1, true},
      {1, 2, 40, 64, 64, FeatureMapKind::Hedgehog, FeatureAct::Identity, true},
      {1, 2, 99, 128, 128, FeatureMapKind::T2R, FeatureAct::Softmax, true},
      {2, 2, 33, 80, 0, FeatureMapKind::EluRaw, FeatureAct::Softmax, false},
      {2, 2, 700, 64, 64, FeatureMapKind::Hedgehog, FeatureAct::Softmax, true},
  };
  uint64_t seed = 77;
  for (DType dt : {DType::BF16, DType::F16, DType::F32})
    for (const Cfg& c : cfgs) {
      try {
        run_case(c, dt, seed++);
      } catch (const ha::Error& e) {
        std::printf("  ha::Error: %s\n", e.what());
        ++cu::failures();
      }
    }
  if (!std::getenv("HA_CHECK_NOTIME")) timing(DType::BF16);
  return cu::finish("feature_map_check");
}
