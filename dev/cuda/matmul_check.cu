// Dev harness for ops/matmul (CUDA), llm.c style: fresh random inputs over a sweep (all four
// transpose combinations; M, N, K on and off the 128/256/32 tiles, multiples of 8 and odd; padded
// leading dimensions with K not a multiple of 8 (the tensor-core path's partial 16-byte chunks);
// batched with per-item and shared (stride 0) operands; alpha/beta with C read back; fp32 output
// from 16-bit operands through gemm_cuda_ex; dtypes bf16/f16/f32), C poisoned with NaN before
// every run (beta = 0) and compared with the f64 CPU product of the same rounded inputs; then
// bf16 timings at 4096^3 and 8192 x 8192 x 4096 (nn, nt, tn), next to cuBLAS when built with
// -DWITH_CUBLAS. Build from the repository root:
//   nvcc -O3 -std=c++17 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=sm_80
//     -I/work/main/native -I/work/main dev/cuda/matmul_check.cu native/ops/matmul/matmul.cu
//     native/ops/matmul/matmul_cpu.cpp native/core/parallel.cpp -o build-dev/matmul_check
//     [-DWITH_CUBLAS -lcublas]
//
// Tolerance: max|gpu - ref| / max|ref| with ref = f64 on the rounded inputs: f32 <= 1e-5
// (fp32 FMA over K <= 1000), f16 <= 2e-3, bf16 <= 1e-2 (one rounding of C: 2^-9 relative, plus
// fp32 accumulation); the printed round floor is the error of merely rounding ref to the dtype.
#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "dev/cuda/cuda_check_util.h"
#include "ops/matmul/matmul.h"
#include "ops/matmul/matmul_cuda.cuh"
#ifdef WITH_CUBLAS
#include <cublas_v2.h>
#endif

using namespace ha;

struct Case {
  int64_t batch, m, n, k;
  bool ta, tb;
  int64_t pad;         // extra elements per row of A and B (lda = row + pad)
  bool shared_b;       // B stride 0
  double alpha, beta;  // beta != 0: C holds random values first
  bool c_f32;          // C in f32 from 16-bit operands
};

static void run_case(const Case& c, DType dt, uint64_t seed) {
  cu::Rng rng(seed);
  const int64_t ra = c.ta ? c.m : c.k, rb = c.tb ? c.k : c.n;  // stored row lengths
  const int64_t rows_a = c.ta ? c.k : c.m, rows_b = c.tb ? c.n : c.k;
  const int64_t lda = ra + c.pad, ldb = rb + c.pad;
  const int64_t sa = rows_a * lda, sb = c.shared_b ? 0 : rows_b * ldb, sc = c.m * c.n;
  const DType ct = c.c_f32 ? DType::F32 : dt;
  cu::Buf a(dt, c.batch * sa), b(dt, c.shared_b ? rows_b * ldb : c.batch * sb), out(ct, c.batch * sc);
  a.set(rng.normal(a.n));
  b.set(rng.normal(b.n));
  std::vector<double> c0(out.n, 0.0);
  if (c.beta != 0) {
    out.set(rng.normal(out.n));
    c0 = out.h;
  } else {
    out.poison();
  }
  MatmulParams p;
  p.dtype = dt;
  p.batch = c.batch; p.m = c.m; p.n = c.n; p.k = c.k;
  p.trans_a = c.ta; p.trans_b = c.tb;
  p.alpha = c.alpha; p.beta = c.beta;
  p.a = a.d; p.b = b.d; p.c = out.d;
  p.lda = lda; p.ldb = ldb;
  p.stride_a = sa; p.stride_b = sb;
  gemm_cuda_ex(p, ct, nullptr);
  CU_CHECK(cudaDeviceSynchronize());
  const std::vector<double> got = out.get();

  // f64 reference on the rounded inputs (the CPU kernel, f64, same layout).
  std::vector<double> ref = c0;
  MatmulParams q = p;
  q.dtype = DType::F64;
  q.a = a.h.data(); q.b = b.h.data(); q.c = ref.data();
  matmul_cpu(q);
  const double tol = dt == DType::F32 ? 1e-5 : dt == DType::F16 ? 2e-3 : 1e-2;
  char what[200];
  std::snprintf(what, sizeof what, "%s b%lld %lldx%lldx%lld %c%c pad%lld%s a%.1f b%.1f%s", cu::dname(dt), (long long)c.batch,
                (long long)c.m, (long long)c.n, (long long)c.k, c.ta ? 't' : 'n', c.tb ? 't' : 'n', (long long)c.pad,
                c.shared_b ? " sharedB" : "", c.alpha, c.beta, c.c_f32 ? " C=f32" : "");
  cu::report(what, cu::rel_err(got, ref), tol, cu::round_floor(ref, ct));
}

static void bench(int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  const DType dt = DType::BF16;
  cu::Buf a(dt, m * k), b(dt, k * n), c(dt, m * n);
  cu::fill_random_device(a.d, dt, a.n, 1, 1.f);
  cu::fill_random_device(b.d, dt, b.n, 2, 1.f);
  MatmulParams p;
  p.dtype = dt; p.m = m; p.n = n; p.k = k; p.trans_a = ta; p.trans_b = tb;
  p.a = a.d; p.b = b.d; p.c = c.d;
  const double ms = cu::time_ms([&] { matmul_cuda(p, nullptr); }, 5, 30);
  const double tf = 2.0 * m * n * k / (ms * 1e-3) / 1e12;
  std::printf("  bf16 %lldx%lldx%lld %c%c: ours %.3f ms %.1f TFLOP/s", (long long)m, (long long)n, (long long)k, ta ? 't' : 'n',
              tb ? 't' : 'n', ms, tf);
#ifdef WITH_CUBLAS
  static cublasHandle_t h = nullptr;
  if (!h) cublasCreate(&h);
  const float one = 1.f, zero = 0.f;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  auto fn = [&] {
    cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, b.d, CUDA_R_16BF,
                 tb ? (int)k : (int)n, a.d, CUDA_R_16BF, ta ? (int)m : (int)k, &zero, c.d, CUDA_R_16BF, (int)n,
                 CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  };
  const double cms = cu::time_ms(fn, 5, 30);
  const double ctf = 2.0 * m * n * k / (cms * 1e-3) / 1e12;
  std::printf(" | cuBLAS %.3f ms %.1f TFLOP/s | ours/cuBLAS %.0f%%", cms, ctf, 100.0 * tf / ctf);
#endif
  std::printf("\n");
}

int main(int argc, char** argv) {
  const bool timing = !(argc > 1 && std::string(argv[1]) == "--no-timing");
  uint64_t seed = 1234;
  const int64_t shapes[][3] = {{128, 256, 64}, {256, 256, 32}, {200, 136, 72}, {77, 50, 33}, {1, 264, 40},
                               {130, 70, 1000}, {8, 8, 8}, {1656, 2808, 88}, {513, 1031, 257}};
  for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
    std::printf("%s\n", cu::dname(dt));
    for (auto& s : shapes)
      for (int l = 0; l < 4; ++l) run_case({1, s[0], s[1], s[2], (l & 1) != 0, (l & 2) != 0, 0, false, 1.0, 0.0, false}, dt, seed++);
    for (int l = 0; l < 4; ++l) {
      const bool ta = (l & 1) != 0, tb = (l & 2) != 0;
      run_case({1, 96, 104, 33, ta, tb, 8, false, 1.0, 0.0, false}, dt, seed++);   // padded ld, K % 8 != 0
      run_case({1, 37, 45, 64, ta, tb, 16, false, 1.0, 0.0, false}, dt, seed++);   // padded ld, M, N % 8 != 0
      run_case({3, 40, 72, 56, ta, tb, 0, true, 0.5, -1.5, false}, dt, seed++);    // batched, shared B, alpha/beta
      run_case({4, 136, 264, 48, ta, tb, 0, false, 1.0, 1.0, false}, dt, seed++);  // batched, accumulate
      if (dt != DType::F32) run_case({2, 130, 260, 96, ta, tb, 0, false, 1.0, 1.0, true}, dt, seed++);  // fp32 C
      run_case({1, 64, 64, 0, ta, tb, 0, false, 1.0, 0.5, false}, dt, seed++);     // K = 0: C = beta C
    }
  }
  if (timing) {
    std::printf("timing\n");
    for (int l = 0; l < 3; ++l) {
      const bool ta = l == 2, tb = l == 1;
      bench(4096, 4096, 4096, ta, tb);
      bench(8192, 8192, 4096, ta, tb);
    }
  }
  return cu::finish("matmul_check");
}
