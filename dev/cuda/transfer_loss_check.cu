// Dev harness for ops/transfer_loss (CUDA), llm.c style: GQA 1/2/4, T not a multiple of the
// tiles, d in {32, 64, 80, 128}, F in {8, 64, 128, 160, 256}, sparse (relu-like) features that
// trigger the 1e-12 clamps, dtypes bf16/f16/f32; outputs poisoned before every run; loss, dfq,
// dfk compared with the f64 CPU reference on the same rounded inputs; bitwise determinism of
// loss and gradients; bf16 timing at B=4, H=32, T=2048, d=128, F=256. Build from the repo root:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80
//     -I/work/main/native -I/work/main dev/cuda/transfer_loss_check.cu native/ops/transfer_loss/transfer_loss.cu
//     native/ops/transfer_loss/transfer_loss_cpu.cpp native/core/parallel.cpp -o build-dev/transfer_loss_check
//
// Tolerance (documented relative form of SPEC sec. 8): the kernels read 16-bit inputs and compute
// in fp32; the reference uses the same rounded inputs, so the loss (an f32 scalar) must match to
// 1e-4 relative for every dtype; gradients are stored in the dtype: f32 2e-4, f16 4e-3, bf16 3e-2
// (max|gpu - ref| / max|ref|; "round floor" = error of rounding the f64 gradient to the dtype).
#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "dev/cuda/cuda_check_util.h"
#include "ops/transfer_loss/transfer_loss.h"

using namespace ha;

struct Cfg { int B, H, Hkv, T, d, F; bool sparse; };

static void run_case(const Cfg& c, DType dt, uint64_t seed) {
  cu::Rng rng(seed);
  const size_t nq = (size_t)c.B * c.H * c.T * c.d, nk = (size_t)c.B * c.Hkv * c.T * c.d;
  const size_t nf = (size_t)c.B * c.H * c.T * c.F;
  cu::Buf q(dt, nq), k(dt, nk), fq(dt, nf), fk(dt, nf), dfq(dt, nf), dfk(dt, nf);
  cu::Buf loss(DType::F32, 1), dloss(DType::F32, 1);
  q.set(rng.normal(nq, 1.5)); k.set(rng.normal(nk, 1.0));
  auto feat = [&](size_t n) {
    auto v = rng.uniform(n, c.sparse ? -1.0 : 0.02, 1.0);
    for (auto& x : v) x = std::max(x, 0.0);
    return v;
  };
  fq.set(feat(nf)); fk.set(feat(nf));
  dloss.set({1.7});
  TransferLossParams p;
  p.dtype = dt; p.batch = c.B; p.heads = c.H; p.kv_heads = c.Hkv; p.seqlen = c.T; p.head_dim = c.d; p.feature_dim = c.F;
  p.q = q.d; p.k = k.d; p.fq = fq.d; p.fk = fk.d; p.loss = loss.d;
  loss.poison();
  transfer_loss_forward_cuda(p, nullptr);
  CU_CHECK(cudaDeviceSynchronize());
  const double lg = loss.get()[0];
  loss.poison();
  transfer_loss_forward_cuda(p, nullptr);
  CU_CHECK(cudaDeviceSynchronize());
  const bool same_loss = loss.get()[0] == lg;
  TransferLossGradParams g;
  g.fwd = p; g.dloss = dloss.d; g.dfq = dfq.d; g.dfk = dfk.d;
  dfq.poison(); dfk.poison();
  transfer_loss_backward_cuda(g, nullptr);
  CU_CHECK(cudaDeviceSynchronize());
  auto dfqg = dfq.get(), dfkg = dfk.get();
  dfq.poison(); dfk.poison();
  transfer_loss_backward_cuda(g, nullptr);
  CU_CHECK(cudaDeviceSynchronize());
  const bool same = same_loss && dfq.get() == dfqg && dfk.get() == dfkg;

  double rl = 0, rdl = dloss.h[0];
  std::vector<double> rdfq(nf), rdfk(nf);
  TransferLossParams r = p;
  r.dtype = DType::F64; r.q = q.h.data(); r.k = k.h.data(); r.fq = fq.h.data(); r.fk = fk.h.data(); r.loss = &rl;
  transfer_loss_forward_cpu(r);
  TransferLossGradParams rg;
  rg.fwd = r; rg.dloss = &rdl; rg.dfq = rdfq.data(); rg.dfk = rdfk.data();
  transfer_loss_backward_cpu(rg);

  const bool f32 = dt == DType::F32, f16 = dt == DType::F16;
  const double tg = f32 ? 2e-4 : f16 ? 4e-3 : 3e-2;
  std::printf("%s B%d H%d Hkv%d T%d d%d F%d%s (loss gpu %.6f ref %.6f)\n", cu::dname(dt), c.B, c.H, c.Hkv, c.T, c.d, c.F,
              c.sparse ? " sparse" : "", lg, rl);
  cu::report("loss", std::isfinite(lg) ? std::abs(lg - rl) / std::max(std::abs(rl), 1e-3) : INFINITY, 1e-4);
  cu::report("dfq", cu::rel_err(dfqg, rdfq), tg, cu::round_floor(rdfq, dt));
  cu::report("dfk", cu::rel_err(dfkg, rdfk), tg, cu::round_floor(rdfk, dt));
  cu::report("loss and gradients bitwise deterministic", same ? 0.0 : 1.0, 0.0);
}

static void timing(DType dt) {
  const int B = 4, H = 32, T = 2048, d = 128, F = 256;
  const size_t nq = (size_t)B * H * T * d, nf = (size_t)B * H * T * F, es = dtype_size(dt);
  void *q, *k, *fq, *fk, *dfq, *dfk;
  float *loss, *dloss;
  CU_CHECK(cudaMalloc(&q, nq * es)); CU_CHECK(cudaMalloc(&k, nq * es));
  for (void** x : {&fq, &fk, &dfq, &dfk}) CU_CHECK(cudaMalloc(x, nf * es));
  CU_CHECK(cudaMalloc(&loss, 4)); CU_CHECK(cudaMalloc(&dloss, 4));
  cu::fill_random_device(q, dt, nq, 21, 2.f); cu::fill_random_device(k, dt, nq, 22, 2.f);
  cu::fill_random_device(fq, dt, nf, 23, 1.f); cu::fill_random_device(fk, dt, nf, 24, 1.f);
  cu::fill_random_device(dloss, DType::F32, 1, 25, 1.f);
  TransferLossParams p;
  p.dtype = dt; p.batch = B; p.heads = H; p.kv_heads = H; p.seqlen = T; p.head_dim = d; p.feature_dim = F;
  p.q = q; p.k = k; p.fq = fq; p.fk = fk; p.loss = loss;
  TransferLossGradParams g;
  g.fwd = p; g.dloss = dloss; g.dfq = dfq; g.dfk = dfk;
  const double tf = cu::time_ms([&] { transfer_loss_forward_cuda(p, nullptr); }, 3, 50);
  const double tb = cu::time_ms([&] { transfer_loss_backward_cuda(g, nullptr); }, 3, 50);
  // Causal pair count T^2/2; forward: s and g (2(d+F) per pair); backward: stats pass + dfq
  // and dfk passes (each s, g and a 2F update): 2(d+F) + 2 (2(d+F) + 2F) per pair.
  const double pairs = (double)B * H * T * T / 2.0;
  const double ff = pairs * 2.0 * (d + F), fb = pairs * (2.0 * (d + F) + 2.0 * (2.0 * (d + F) + 2.0 * F));
  std::printf("TIMING %s B=%d H=%d T=%d d=%d F=%d (fp32 SIMT): forward %.3f ms (%.1f TFLOP/s), backward %.3f ms (%.1f TFLOP/s)\n",
              cu::dname(dt), B, H, T, d, F, tf, ff / tf * 1e-9, tb, fb / tb * 1e-9);
  for (void* x : {q, k, fq, fk, dfq, dfk}) cudaFree(x);
  cudaFree(loss); cudaFree(dloss);
}

int main() {
  cudaDeviceProp prop;
  CU_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  const Cfg cfgs[] = {
      {2, 4, 4, 100, 64, 128, false}, {1, 4, 2, 130, 128, 256, false}, {2, 8, 2, 77, 32, 64, false},
      {1, 4, 1, 90, 80, 160, false},  {1, 2, 2, 120, 64, 8, true},     {1, 2, 1, 1, 64, 64, false},
  };
  uint64_t seed = 999;
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
  return cu::finish("transfer_loss_check");
}
