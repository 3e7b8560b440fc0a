// Dev harness for ops/matmul (CUDA), llm.c style: fresh random inputs over a sweep (all four
// transpose combinations; M, N, K on and off the 128/256/64/32 tiles, multiples of 8 and odd;
// padded leading dimensions with K not a multiple of 8 (partial 16-byte chunks / TMA boxes);
// batched with per-item and shared (stride 0) operands; alpha/beta with C read back; fp32 output
// from 16-bit operands through gemm_cuda_ex; dtypes bf16/f16/f32), C poisoned with NaN before
// every run (beta = 0) and compared with the f64 CPU product of the same rounded inputs. The
// sweep runs once per kernel path (auto: the Hopper wgmma kernel on an sm_90a build on cc 9.0,
// then mma.sync forced, then SIMT forced), plus multi-tile products that make the persistent
// Hopper kernel take several tiles per block. Then bf16 timings at 4096^3 and 8192 x 8192 x 4096
// (nn, nt, tn) of the auto path and of mma.sync, next to cuBLAS when libcublas.so can be opened
// at run time (dlopen: no cuBLAS headers or libraries are needed to build this). Build from the
// repository root (the same archs as the addon, so that the cubin choice is the addon's):
//   nvcc -O3 -std=c++17 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
//     -gencode arch=compute_90a,code=sm_90a -I/work/main/native -I/work/main
//     dev/cuda/matmul_check.cu native/ops/matmul/matmul.cu native/ops/matmul/matmul_sm90.cu
//     native/ops/matmul/matmul_cpu.cpp native/core/parallel.cpp -ldl -o build-dev/matmul_check
// Arguments: --no-timing skips the timings; --quick runs the auto path's sweep only.
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
#include <dlfcn.h>

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

// cuBLAS through dlopen (enum values of cublas_api.h / library_types.h).
struct Cublas {
  using Create = int (*)(void**);
  using GemmEx = int (*)(void*, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int, const void*,
                         void*, int, int, int, int);
  void* h = nullptr;
  GemmEx gemm = nullptr;
  Cublas() {
    void* lib = nullptr;
    for (const char* name : {"libcublas.so.13", "libcublas.so.12", "libcublas.so"})
      if ((lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL))) break;
    if (!lib) return;
    auto create = reinterpret_cast<Create>(dlsym(lib, "cublasCreate_v2"));
    gemm = reinterpret_cast<GemmEx>(dlsym(lib, "cublasGemmEx"));
    if (!create || !gemm || create(&h) != 0) gemm = nullptr;
  }
};

static void bench(int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  const DType dt = DType::BF16;
  cu::Buf a(dt, m * k), b(dt, k * n), c(dt, m * n);
  cu::fill_random_device(a.d, dt, a.n, 1, 1.f);
  cu::fill_random_device(b.d, dt, b.n, 2, 1.f);
  MatmulParams p;
  p.dtype = dt; p.m = m; p.n = n; p.k = k; p.trans_a = ta; p.trans_b = tb;
  p.a = a.d; p.b = b.d; p.c = c.d;
  const double fl = 2.0 * m * n * k;
  gemm_cuda_force_path(GemmPath::Auto);
  const double ms = cu::time_ms([&] { matmul_cuda(p, nullptr); }, 5, 30);
  const char* path = gemm_cuda_last_path();
  gemm_cuda_force_path(GemmPath::Mma);
  const double mma_ms = cu::time_ms([&] { matmul_cuda(p, nullptr); }, 3, 10);
  gemm_cuda_force_path(GemmPath::Auto);
  const double tf = fl / (ms * 1e-3) / 1e12;
  std::printf("  bf16 %lldx%lldx%lld %c%c: %s %.3f ms %.1f TFLOP/s | mma-sync %.1f TFLOP/s", (long long)m, (long long)n,
              (long long)k, ta ? 't' : 'n', tb ? 't' : 'n', path, ms, tf, fl / (mma_ms * 1e-3) / 1e12);
  static Cublas cb;
  if (cb.gemm) {
    const float one = 1.f, zero = 0.f;
    // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
    // CUBLAS_OP_N 0 / T 1, CUDA_R_16BF 14, CUBLAS_COMPUTE_32F 68, CUBLAS_GEMM_DEFAULT -1.
    auto fn = [&] {
      cb.gemm(cb.h, tb ? 1 : 0, ta ? 1 : 0, (int)n, (int)m, (int)k, &one, b.d, 14, tb ? (int)k : (int)n, a.d, 14,
              ta ? (int)m : (int)k, &zero, c.d, 14, (int)n, 68, -1);
    };
    const double cms = cu::time_ms(fn, 5, 30);
    const double ctf = fl / (cms * 1e-3) / 1e12;
    std::printf(" | cuBLAS %.3f ms %.1f TFLOP/s | ours/cuBLAS %.0f%%", cms, ctf, 100.0 * tf / ctf);
  } else {
    std::printf(" | cuBLAS not found");
  }
  std::printf("\n");
}

static void sweep(uint64_t& seed) {
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
}

// A product captured into a CUDA graph and replayed (the tensor maps travel as kernel
// parameters of the graph node); checked against the CPU. The first capture of the process
// cannot ask which cubin is loaded and runs mma.sync; later ones take the auto path.
static void graph_case(uint64_t seed) {
  const int64_t m = 300, n = 520, k = 136;
  cu::Rng rng(seed);
  cu::Buf a(DType::BF16, m * k), b(DType::BF16, n * k), out(DType::BF16, m * n);
  a.set(rng.normal(a.n));
  b.set(rng.normal(b.n));
  out.poison();
  MatmulParams p;
  p.dtype = DType::BF16; p.m = m; p.n = n; p.k = k; p.trans_b = true;
  p.a = a.d; p.b = b.d; p.c = out.d;
  cudaStream_t st;
  CU_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CU_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  matmul_cuda(p, st);
  CU_CHECK(cudaStreamEndCapture(st, &graph));
  const char* path = gemm_cuda_last_path();
  CU_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CU_CHECK(cudaGraphLaunch(exec, st));
  CU_CHECK(cudaStreamSynchronize(st));
  const std::vector<double> got = out.get();
  std::vector<double> ref(out.n, 0.0);
  MatmulParams q = p;
  q.dtype = DType::F64;
  q.a = a.h.data(); q.b = b.h.data(); q.c = ref.data();
  matmul_cpu(q);
  cu::report(std::string("graph replay bf16 300x520x136 nt (") + path + ")", cu::rel_err(got, ref), 1e-2,
             cu::round_floor(ref, DType::BF16));
  CU_CHECK(cudaGraphExecDestroy(exec));
  CU_CHECK(cudaGraphDestroy(graph));
  CU_CHECK(cudaStreamDestroy(st));
}

int main(int argc, char** argv) {
  bool timing = true, quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--no-timing") timing = false;
    if (std::string(argv[i]) == "--quick") quick = true;
  }
  uint64_t seed = 1234;
  graph_case(seed++);  // first GEMM of the process, inside a capture
  {
    // Which kernel does the auto path pick for a plain bf16 product on this card and build?
    cu::Buf a(DType::BF16, 64 * 64), b(DType::BF16, 64 * 64), c(DType::BF16, 64 * 64);
    MatmulParams p;
    p.dtype = DType::BF16; p.m = p.n = p.k = 64; p.a = a.d; p.b = b.d; p.c = c.d;
    matmul_cuda(p, nullptr);
    CU_CHECK(cudaDeviceSynchronize());
    cudaDeviceProp prop;
    CU_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device %s (cc %d.%d, %d SMs): auto path for aligned bf16 = %s\n", prop.name, prop.major, prop.minor,
                prop.multiProcessorCount, gemm_cuda_last_path());
  }
  const struct { GemmPath path; const char* name; } paths[] = {{GemmPath::Auto, "auto"}, {GemmPath::Mma, "mma-sync forced"},
                                                                {GemmPath::Simt, "simt forced"}};
  for (const auto& pp : paths) {
    if (quick && pp.path != GemmPath::Auto) continue;
    std::printf("== path: %s\n", pp.name);
    gemm_cuda_force_path(pp.path);
    sweep(seed);
  }
  gemm_cuda_force_path(GemmPath::Auto);
  graph_case(seed++);  // the cubin question answered: the graph holds the auto path's kernel
  // Several tiles per block for the persistent kernel (2 x 12 x 9 tiles of 128 x 256), and a
  // 128-wide-tile case; every layout, bf16 and f16.
  std::printf("== multi-tile (auto)\n");
  for (DType dt : {DType::BF16, DType::F16})
    for (int l = 0; l < 4; ++l) {
      const bool ta = (l & 1) != 0, tb = (l & 2) != 0;
      run_case({2, 1536, 2304, 512, ta, tb, 0, false, 1.0, 0.0, false}, dt, seed++);
      run_case({3, 1000, 700, 200, ta, tb, 8, false, 1.0, 0.5, false}, dt, seed++);
    }
  if (timing) {
    std::printf("timing\n");
    for (int l = 0; l < 3; ++l) {
      const bool ta = l == 2, tb = l == 1;
      bench(4096, 4096, 4096, ta, tb);
      bench(8192, 8192, 4096, ta, tb);
    }
    // Linear-layer shapes with few rows (decode steps, small batches): y = x W^T.
    std::printf("timing, few rows (nt)\n");
    const int64_t few[][3] = {{1, 4096, 4096}, {8, 4096, 4096}, {64, 4096, 4096}, {256, 4096, 4096},
                              {1, 14336, 4096}, {1, 32000, 4096}, {1024, 4096, 4096}};
    for (auto& f : few) bench(f[0], f[1], f[2], false, true);
  }
  return cu::finish("matmul_check");
}
