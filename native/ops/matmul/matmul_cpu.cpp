// CPU matrix product (see matmul.h): packed f64 panels, MR x NR micro-kernel, f64 accumulator
// per block of C that lives across the whole K loop (so each element is one sequential f64 sum
// over k = 0..K-1, independent of blocking and thread count).
#include "ops/matmul/matmul.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HA_MATMUL_X86 1
#include <immintrin.h>
#endif

namespace ha {

namespace {

constexpr int64_t MR = 6, NR = 8;  // micro-tile (rows of A x columns of B)
constexpr int64_t MC = 96;         // rows of C per block (multiple of MR)
constexpr int64_t NC = 512;        // columns of C per block (multiple of NR)
constexpr int64_t KC = 256;        // depth of one packed panel

using Kernel = void (*)(int64_t kc, const double* a, const double* b, double* c);

// c[MR x NR] (row-major tile) += sum_k a[k][0..MR) (outer) b[k][0..NR)
#if defined(__GNUC__)
// Portable SIMD through GCC/Clang vector extensions (SSE2 on baseline x86-64, NEON on arm64).
typedef double v2d __attribute__((vector_size(16)));
void kernel_generic(int64_t kc, const double* a, const double* b, double* c) {
  constexpr int64_t NV = NR / 2;
  v2d acc[MR][NV];
  for (int64_t i = 0; i < MR; ++i)
    for (int64_t j = 0; j < NV; ++j) std::memcpy(&acc[i][j], c + i * NR + 2 * j, sizeof(v2d));
  for (int64_t k = 0; k < kc; ++k) {
    v2d bk[NV];
    std::memcpy(bk, b + k * NR, sizeof bk);
    for (int64_t i = 0; i < MR; ++i) {
      const double ai = a[k * MR + i];
      const v2d av = {ai, ai};
      for (int64_t j = 0; j < NV; ++j) acc[i][j] += av * bk[j];
    }
  }
  for (int64_t i = 0; i < MR; ++i)
    for (int64_t j = 0; j < NV; ++j) std::memcpy(c + i * NR + 2 * j, &acc[i][j], sizeof(v2d));
}
#else
void kernel_generic(int64_t kc, const double* a, const double* b, double* c) {
  double acc[MR * NR];
  for (int64_t i = 0; i < MR * NR; ++i) acc[i] = c[i];
  for (int64_t k = 0; k < kc; ++k) {
    const double* ak = a + k * MR;
    const double* bk = b + k * NR;
    for (int64_t i = 0; i < MR; ++i) {
      const double ai = ak[i];
      for (int64_t j = 0; j < NR; ++j) acc[i * NR + j] += ai * bk[j];
    }
  }
  for (int64_t i = 0; i < MR * NR; ++i) c[i] = acc[i];
}
#endif

#ifdef HA_MATMUL_X86
__attribute__((target("avx2,fma"))) void kernel_avx2(int64_t kc, const double* a, const double* b, double* c) {
  __m256d c00 = _mm256_loadu_pd(c + 0), c01 = _mm256_loadu_pd(c + 4);
  __m256d c10 = _mm256_loadu_pd(c + 8), c11 = _mm256_loadu_pd(c + 12);
  __m256d c20 = _mm256_loadu_pd(c + 16), c21 = _mm256_loadu_pd(c + 20);
  __m256d c30 = _mm256_loadu_pd(c + 24), c31 = _mm256_loadu_pd(c + 28);
  __m256d c40 = _mm256_loadu_pd(c + 32), c41 = _mm256_loadu_pd(c + 36);
  __m256d c50 = _mm256_loadu_pd(c + 40), c51 = _mm256_loadu_pd(c + 44);
  for (int64_t k = 0; k < kc; ++k) {
    const __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
    __m256d ai = _mm256_broadcast_sd(a + 0);
    c00 = _mm256_fmadd_pd(ai, b0, c00); c01 = _mm256_fmadd_pd(ai, b1, c01);
    ai = _mm256_broadcast_sd(a + 1);
    c10 = _mm256_fmadd_pd(ai, b0, c10); c11 = _mm256_fmadd_pd(ai, b1, c11);
    ai = _mm256_broadcast_sd(a + 2);
    c20 = _mm256_fmadd_pd(ai, b0, c20); c21 = _mm256_fmadd_pd(ai, b1, c21);
    ai = _mm256_broadcast_sd(a + 3);
    c30 = _mm256_fmadd_pd(ai, b0, c30); c31 = _mm256_fmadd_pd(ai, b1, c31);
    ai = _mm256_broadcast_sd(a + 4);
    c40 = _mm256_fmadd_pd(ai, b0, c40); c41 = _mm256_fmadd_pd(ai, b1, c41);
    ai = _mm256_broadcast_sd(a + 5);
    c50 = _mm256_fmadd_pd(ai, b0, c50); c51 = _mm256_fmadd_pd(ai, b1, c51);
    a += MR;
    b += NR;
  }
  _mm256_storeu_pd(c + 0, c00); _mm256_storeu_pd(c + 4, c01);
  _mm256_storeu_pd(c + 8, c10); _mm256_storeu_pd(c + 12, c11);
  _mm256_storeu_pd(c + 16, c20); _mm256_storeu_pd(c + 20, c21);
  _mm256_storeu_pd(c + 24, c30); _mm256_storeu_pd(c + 28, c31);
  _mm256_storeu_pd(c + 32, c40); _mm256_storeu_pd(c + 36, c41);
  _mm256_storeu_pd(c + 40, c50); _mm256_storeu_pd(c + 44, c51);
}
#endif

struct KernelChoice {
  Kernel fn;
  const char* name;
};

const KernelChoice& kernel_choice() {
  static const KernelChoice choice = [] {
#ifdef HA_MATMUL_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return KernelChoice{kernel_avx2, "avx2-fma"};
#endif
    return KernelChoice{kernel_generic, "generic"};
  }();
  return choice;
}

// Packs rows [i0, i0 + mc) x depth [p0, p0 + kc) of op(A) into MR-row strips: pa[s][k][r].
// Rows past m are zero.
template <typename T>
void pack_a(const T* a, int64_t lda, bool trans, int64_t m, int64_t i0, int64_t mc, int64_t p0, int64_t kc, double* pa) {
  const int64_t strips = (mc + MR - 1) / MR;
  for (int64_t s = 0; s < strips; ++s) {
    double* dst = pa + s * kc * MR;
    for (int64_t r = 0; r < MR; ++r) {
      const int64_t i = i0 + s * MR + r;
      if (i >= m || i >= i0 + mc) {
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + r] = 0.0;
      } else if (!trans) {
        const T* src = a + i * lda + p0;
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + r] = static_cast<double>(src[k]);
      } else {
        const T* src = a + p0 * lda + i;
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + r] = static_cast<double>(src[k * lda]);
      }
    }
  }
}

// Packs depth [p0, p0 + kc) x columns [j0, j0 + nc) of op(B) into NR-column strips: pb[s][k][c].
template <typename T>
void pack_b(const T* b, int64_t ldb, bool trans, int64_t n, int64_t j0, int64_t nc, int64_t p0, int64_t kc, double* pb) {
  const int64_t strips = (nc + NR - 1) / NR;
  for (int64_t s = 0; s < strips; ++s) {
    double* dst = pb + s * kc * NR;
    const int64_t jb = j0 + s * NR;
    const int64_t valid = std::max<int64_t>(0, std::min<int64_t>({NR, n - jb, j0 + nc - jb}));
    if (!trans) {
      for (int64_t k = 0; k < kc; ++k) {
        const T* src = b + (p0 + k) * ldb + jb;
        double* d = dst + k * NR;
        int64_t c = 0;
        for (; c < valid; ++c) d[c] = static_cast<double>(src[c]);
        for (; c < NR; ++c) d[c] = 0.0;
      }
    } else {
      for (int64_t c = 0; c < NR; ++c) {
        if (c >= valid) {
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + c] = 0.0;
        } else {
          const T* src = b + (jb + c) * ldb + p0;
          for (int64_t k = 0; k < kc; ++k) dst[k * NR + c] = static_cast<double>(src[k]);
        }
      }
    }
  }
}

template <typename T>
void matmul_impl(const MatmulParams& p) {
  const int64_t M = p.m, N = p.n, K = p.k;
  const int64_t lda = p.lda ? p.lda : (p.trans_a ? M : K);
  const int64_t ldb = p.ldb ? p.ldb : (p.trans_b ? K : N);
  const int64_t ldc = p.ldc ? p.ldc : N;
  const int64_t sa = p.stride_a >= 0 ? p.stride_a : (p.trans_a ? K : M) * lda;
  const int64_t sb = p.stride_b >= 0 ? p.stride_b : (p.trans_b ? N : K) * ldb;
  const int64_t sc = p.stride_c >= 0 ? p.stride_c : M * ldc;
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);
  T* C = static_cast<T*>(p.c);
  const double alpha = p.alpha, beta = p.beta;
  const Kernel kernel = kernel_choice().fn;

  const int64_t mblocks = (M + MC - 1) / MC, nblocks = (N + NC - 1) / NC;
  const int64_t tasks = p.batch * nblocks * mblocks;
  // Small products stay on the calling thread (starting threads costs more than they save).
  const double flops = 2.0 * static_cast<double>(M) * N * std::max<int64_t>(K, 1) * p.batch;
  const int64_t min_per_thread = flops < 4e6 ? tasks : 1;
  const int64_t mc_max = std::min(MC, (M + MR - 1) / MR * MR);
  const int64_t nc_max = std::min(NC, (N + NR - 1) / NR * NR);
  const int64_t kc_max = std::max<int64_t>(1, std::min(KC, K));

  parallel_for(tasks, min_per_thread, [&](int64_t t0, int64_t t1) {
    std::vector<double> pa(mc_max * kc_max), pb(nc_max * kc_max), acc(mc_max * nc_max);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t ib = t % mblocks, jb = (t / mblocks) % nblocks, bi = t / (mblocks * nblocks);
      const int64_t i0 = ib * MC, j0 = jb * NC;
      const int64_t mc = std::min(MC, M - i0), nc = std::min(NC, N - j0);
      const int64_t ms = (mc + MR - 1) / MR, ns = (nc + NR - 1) / NR;
      const T* a = A + bi * sa;
      const T* b = B + bi * sb;
      T* c = C + bi * sc;
      std::fill(acc.begin(), acc.begin() + ms * ns * MR * NR, 0.0);
      for (int64_t p0 = 0; p0 < K; p0 += KC) {
        const int64_t kc = std::min(KC, K - p0);
        pack_a(a, lda, p.trans_a, M, i0, mc, p0, kc, pa.data());
        pack_b(b, ldb, p.trans_b, N, j0, nc, p0, kc, pb.data());
        for (int64_t js = 0; js < ns; ++js)
          for (int64_t is = 0; is < ms; ++is)
            kernel(kc, pa.data() + is * kc * MR, pb.data() + js * kc * NR, acc.data() + (is * ns + js) * MR * NR);
      }
      for (int64_t i = 0; i < mc; ++i) {
        const int64_t is = i / MR, r = i % MR;
        T* crow = c + (i0 + i) * ldc + j0;
        for (int64_t js = 0; js < ns; ++js) {
          const double* tile = acc.data() + (is * ns + js) * MR * NR + r * NR;
          const int64_t cols = std::min(NR, nc - js * NR);
          T* cj = crow + js * NR;
          if (beta == 0.0) {
            for (int64_t j = 0; j < cols; ++j) cj[j] = static_cast<T>(alpha * tile[j]);
          } else {
            for (int64_t j = 0; j < cols; ++j) cj[j] = static_cast<T>(alpha * tile[j] + beta * static_cast<double>(cj[j]));
          }
        }
      }
    }
  });
}

}  // namespace

const char* matmul_cpu_kernel_name() { return kernel_choice().name; }

void matmul_cpu(const MatmulParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("matmul cpu: unsupported dtype ") + dtype_name(p.dtype));
  if (p.batch < 0 || p.m < 0 || p.n < 0 || p.k < 0) throw std::invalid_argument("matmul: negative size");
  if (p.batch == 0 || p.m == 0 || p.n == 0) return;
  if (!p.c || (p.k > 0 && (!p.a || !p.b))) throw std::invalid_argument("matmul: null pointer");
  const int64_t ra = p.trans_a ? p.m : p.k, rb = p.trans_b ? p.k : p.n;  // stored row lengths
  if ((p.lda && p.lda < ra) || (p.ldb && p.ldb < rb) || (p.ldc && p.ldc < p.n) || p.lda < 0 || p.ldb < 0 || p.ldc < 0)
    throw std::invalid_argument("matmul: leading dimension smaller than the row length");
  if (p.stride_a < -1 || p.stride_b < -1 || p.stride_c < -1) throw std::invalid_argument("matmul: bad batch stride");
  if (p.batch > 1 && p.stride_c == 0) throw std::invalid_argument("matmul: batched C cannot be shared (stride_c = 0)");
  if (p.dtype == DType::F64) matmul_impl<double>(p);
  else matmul_impl<float>(p);
}

}  // namespace ha
