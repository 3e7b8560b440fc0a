// CUDA matrix product (see matmul.h): C_b = alpha op(A_b) op(B_b) + beta C_b, dtypes bf16, f16
// and f32, fp32 accumulation, output in the operands' dtype (or fp32 through gemm_cuda_ex).
//
// Dispatch: 16-bit operands meeting the alignment rules below go to the Hopper kernel
// (matmul_sm90.cu: TMA + wgmma, warp-specialised, persistent) when the device is cc 9.0 and the
// loaded cubin is the sm_90a one; otherwise (sm_80, plain sm_90 cubin, tensor-map refusal) to
// the mma.sync kernel of this file; f32 and unaligned operands to the SIMT kernel.
//
// Tensor-core path (bf16/f16): mma.sync m16n8k16 (fp32 accumulators in registers), ldmatrix
// (.trans for the operands stored K-major the "other" way), cp.async multi-stage pipeline
// (STAGES k-tiles of BK = 32 in flight), padded shared-memory rows (+8 elements: every ldmatrix
// phase hits 8 distinct 16-byte bank groups, no swizzle to get wrong). Every transpose
// combination is its own instantiation: A is kept in shared memory as stored ([BM][BK] for
// op(A) = A, [BK][BM] for A^T), same for B, and the fragments are read with ldmatrix or
// ldmatrix.trans accordingly. Two tile configurations:
//   big    128 x 256 x 32, 8 warps (2 x 4), warp tile 64 x 64, 4 stages (120 KB smem), 1 block/SM
//   small  128 x 128 x 32, 4 warps (2 x 2), warp tile 64 x 64, 4 stages (80 KB), 2 blocks/SM
// (small when the big tiles would not fill the machine). Blocks are rasterised in groups of 8
// tile-rows for L2 reuse; batch items go on grid.y. Edges: loads are predicated per 16-byte
// chunk (cp.async src-size: rows/columns past the matrix are zero-filled, a partial chunk is
// zero-padded), stores per element, so any M, N, K works on this path provided the 16-byte
// chunks are aligned: base pointers 16-byte aligned, lda, ldb and the batch strides multiples
// of 8 elements. Otherwise (and for f32) the SIMT path runs: 64 x 64 x 16 tiles, 4 x 4 outputs
// per thread, fp32 FMA (each 16-deep k-tile summed apart, then added to the running sum),
// bounds-checked scalar loads, any layout and alignment.
//
// C is read only when beta != 0. Deterministic: no atomics, no split-K.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "core/errors.h"
#include "core/mma_sm80.cuh"
#include "ops/matmul/matmul.h"
#include "ops/matmul/matmul_cuda.cuh"
#include "ops/matmul/matmul_internal.cuh"

namespace ha {
namespace {

// Tensor-core primitives (sm_80+): native/core/mma_sm80.cuh.
using mma::cp_commit;
using mma::cp_wait;
using mma::ldsm_x4;
using mma::ldsm_x4_t;
using mma::mma16816;
// 16-byte async copy of which the first `bytes` (0..16) come from g, the rest are zero-filled.
__device__ __forceinline__ void cp_async16(void* s, const void* g, int bytes) { mma::cp_async16_bytes(s, g, bytes); }

// Bytes of the 8-element chunk starting at index `i` of a row of `extent` elements.
__device__ __forceinline__ int chunk_bytes(int64_t i, int64_t extent) {
  const int64_t left = extent - i;
  return left >= 8 ? 16 : (left > 0 ? static_cast<int>(left) * 2 : 0);
}

template <int BM, int BN, int WARPS_M, int WARPS_N, int STAGES>
struct MmaConfig {
  static constexpr int kBM = BM, kBN = BN, kBK = 32, kStages = STAGES;
  static constexpr int kWarpsN = WARPS_N;
  static constexpr int kThreads = WARPS_M * WARPS_N * 32;
  static constexpr int kWM = BM / WARPS_M, kWN = BN / WARPS_N;
  static constexpr int kMinBlocks = kThreads >= 256 ? 1 : 2;
  static_assert(kWM % 16 == 0 && kWN % 16 == 0, "warp tile must be a multiple of 16 x 16");
};

template <bool TA, bool TB, class Cfg>
struct MmaSmem {
  static constexpr int BM = Cfg::kBM, BN = Cfg::kBN, BK = Cfg::kBK;
  static constexpr int A_ROWS = TA ? BK : BM, A_COLS = TA ? BM : BK, A_LD = A_COLS + 8;
  static constexpr int B_ROWS = TB ? BN : BK, B_COLS = TB ? BK : BN, B_LD = B_COLS + 8;
  static constexpr int A_STAGE = A_ROWS * A_LD, B_STAGE = B_ROWS * B_LD;  // elements
  static constexpr int BYTES = Cfg::kStages * (A_STAGE + B_STAGE) * 2;
};

// One (A tile, B tile) pair of k-tile `kt` into shared memory (async).
template <bool TA, bool TB, class Cfg, class T>
__device__ __forceinline__ void load_tiles(T* As, T* Bs, const T* A, const T* B, const GemmArgs& p, int64_t m0,
                                           int64_t n0, int kt, int tid) {
  using S = MmaSmem<TA, TB, Cfg>;
  constexpr int BM = Cfg::kBM, BN = Cfg::kBN, BK = Cfg::kBK, NT = Cfg::kThreads;
  const int64_t k0 = static_cast<int64_t>(kt) * BK;
  if constexpr (!TA) {  // A [M, K] row-major: tile [BM][BK], K contiguous
    constexpr int CPR = BK / 8;
#pragma unroll
    for (int c = tid; c < BM * CPR; c += NT) {
      const int r = c / CPR, cc = c % CPR;
      const int64_t gm = m0 + r, gk = k0 + cc * 8;
      const int bytes = gm < p.m ? chunk_bytes(gk, p.k) : 0;
      cp_async16(As + r * S::A_LD + cc * 8, bytes ? A + gm * p.lda + gk : A, bytes);
    }
  } else {  // A stored [K, M]: tile [BK][BM], M contiguous
    constexpr int CPR = BM / 8;
#pragma unroll
    for (int c = tid; c < BK * CPR; c += NT) {
      const int r = c / CPR, cc = c % CPR;
      const int64_t gk = k0 + r, gm = m0 + cc * 8;
      const int bytes = gk < p.k ? chunk_bytes(gm, p.m) : 0;
      cp_async16(As + r * S::A_LD + cc * 8, bytes ? A + gk * p.lda + gm : A, bytes);
    }
  }
  if constexpr (TB) {  // B stored [N, K]: tile [BN][BK], K contiguous
    constexpr int CPR = BK / 8;
#pragma unroll
    for (int c = tid; c < BN * CPR; c += NT) {
      const int r = c / CPR, cc = c % CPR;
      const int64_t gn = n0 + r, gk = k0 + cc * 8;
      const int bytes = gn < p.n ? chunk_bytes(gk, p.k) : 0;
      cp_async16(Bs + r * S::B_LD + cc * 8, bytes ? B + gn * p.ldb + gk : B, bytes);
    }
  } else {  // B [K, N] row-major: tile [BK][BN], N contiguous
    constexpr int CPR = BN / 8;
#pragma unroll
    for (int c = tid; c < BK * CPR; c += NT) {
      const int r = c / CPR, cc = c % CPR;
      const int64_t gk = k0 + r, gn = n0 + cc * 8;
      const int bytes = gk < p.k ? chunk_bytes(gn, p.n) : 0;
      cp_async16(Bs + r * S::B_LD + cc * 8, bytes ? B + gk * p.ldb + gn : B, bytes);
    }
  }
}

template <class T, class TC, bool TA, bool TB, class Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks) gemm_mma_kernel(GemmArgs p) {
  using S = MmaSmem<TA, TB, Cfg>;
  constexpr int BM = Cfg::kBM, BN = Cfg::kBN, BK = Cfg::kBK, STAGES = Cfg::kStages;
  constexpr int WM = Cfg::kWM, WN = Cfg::kWN, MI = WM / 16, NI = WN / 8;
  constexpr int GROUP_M = 8;
  extern __shared__ __align__(16) unsigned char smraw[];
  T* As = reinterpret_cast<T*>(smraw);
  T* Bs = As + STAGES * S::A_STAGE;

  // Grouped rasterisation: consecutive blocks walk GROUP_M tile-rows of one band of columns.
  const int tiles_m = static_cast<int>((p.m + BM - 1) / BM), tiles_n = static_cast<int>((p.n + BN - 1) / BN);
  const int pid = blockIdx.x;
  const int width = GROUP_M * tiles_n;
  const int first_m = (pid / width) * GROUP_M;
  const int gsz = min(tiles_m - first_m, GROUP_M);
  const int tm = first_m + (pid % width) % gsz, tn = (pid % width) / gsz;
  const int64_t m0 = static_cast<int64_t>(tm) * BM, n0 = static_cast<int64_t>(tn) * BN;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm0 = (warp / Cfg::kWarpsN) * WM, wn0 = (warp % Cfg::kWarpsN) * WN;
  const int ktiles = static_cast<int>((p.k + BK - 1) / BK);

  for (int64_t bz = blockIdx.y; bz < p.batch; bz += gridDim.y) {
    const T* A = static_cast<const T*>(p.a) + bz * p.sa;
    const T* B = static_cast<const T*>(p.b) + bz * p.sb;
    TC* C = static_cast<TC*>(p.c) + bz * p.sc;

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

    // Prologue: k-tiles 0 .. STAGES-2 in flight (one commit group each, empty past the end).
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < ktiles) load_tiles<TA, TB, Cfg>(As + s * S::A_STAGE, Bs + s * S::B_STAGE, A, B, p, m0, n0, s, tid);
      cp_commit();
    }

    for (int kt = 0; kt < ktiles; ++kt) {
      // Groups committed so far: STAGES-1+kt; at most STAGES-2 pending => k-tile kt has landed.
      cp_wait<STAGES - 2>();
      __syncthreads();  // its bytes are visible to all, and everyone is done with k-tile kt-1
      {
        const int nk = kt + STAGES - 1;  // refills the stage k-tile kt-1 used
        if (nk < ktiles) {
          const int st = nk % STAGES;
          load_tiles<TA, TB, Cfg>(As + st * S::A_STAGE, Bs + st * S::B_STAGE, A, B, p, m0, n0, nk, tid);
        }
        cp_commit();
      }
      const T* At = As + (kt % STAGES) * S::A_STAGE;
      const T* Bt = Bs + (kt % STAGES) * S::B_STAGE;
#pragma unroll
      for (int kk = 0; kk < BK; kk += 16) {
        uint32_t af[MI][4];
        uint32_t bfr[NI / 2][4];
        const int i8 = lane >> 3;
#pragma unroll
        for (int mi = 0; mi < MI; ++mi) {
          const int r0 = wm0 + mi * 16;
          if constexpr (!TA) {
            // matrices: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
            ldsm_x4(af[mi], At + (r0 + (lane & 15)) * S::A_LD + kk + (lane >> 4) * 8);
          } else {
            // stored [k][m]: lanes of matrix i point at k rows kk + (i>>1)*8 + 0..7, m columns r0 + (i&1)*8
            ldsm_x4_t(af[mi], At + (kk + (i8 >> 1) * 8 + (lane & 7)) * S::A_LD + r0 + (i8 & 1) * 8);
          }
        }
#pragma unroll
        for (int nj = 0; nj < NI / 2; ++nj) {
          const int c0 = wn0 + nj * 16;
          // r[0], r[1]: b0, b1 of n-tile c0; r[2], r[3]: of n-tile c0 + 8
          if constexpr (TB) {
            ldsm_x4(bfr[nj], Bt + (c0 + (i8 >> 1) * 8 + (lane & 7)) * S::B_LD + kk + (i8 & 1) * 8);
          } else {
            ldsm_x4_t(bfr[nj], Bt + (kk + (i8 & 1) * 8 + (lane & 7)) * S::B_LD + c0 + (i8 >> 1) * 8);
          }
        }
#pragma unroll
        for (int mi = 0; mi < MI; ++mi)
#pragma unroll
          for (int nj = 0; nj < NI / 2; ++nj) {
            mma16816<T>(acc[mi][2 * nj], af[mi], bfr[nj][0], bfr[nj][1]);
            mma16816<T>(acc[mi][2 * nj + 1], af[mi], bfr[nj][2], bfr[nj][3]);
          }
      }
    }
    cp_wait<0>();  // only empty groups can be pending here; drain them before smem is reused

    // Epilogue: accumulator (row g / g+8, cols 2t, 2t+1) of each 16 x 8 tile straight to C.
    const int g = lane >> 2, t4 = lane & 3;
    const bool vec = p.vec_c != 0;
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t row = m0 + wm0 + mi * 16 + g + h * 8;
        if (row >= p.m) continue;
        TC* crow = C + row * p.ldc;
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          const int64_t col = n0 + wn0 + ni * 8 + 2 * t4;
          if (col >= p.n) continue;
          store_pair<TC>(crow + col, p.alpha * acc[mi][ni][2 * h], p.alpha * acc[mi][ni][2 * h + 1], col + 1 < p.n, vec,
                         p.beta);
        }
      }
    }
    __syncthreads();  // the next batch item's prologue overwrites shared memory
  }
}

// ------------------------------------------------------------------------------------------
// SIMT path: any dtype, layout, alignment and size.
constexpr int kSimtBM = 64, kSimtBN = 64, kSimtBK = 16, kSimtThreads = 256;

template <class T, class TC>
__global__ void __launch_bounds__(kSimtThreads) gemm_simt_kernel(GemmArgs p, int ta, int tb) {
  __shared__ float As[kSimtBK][kSimtBM + 4];
  __shared__ float Bs[kSimtBK][kSimtBN + 4];
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kSimtBM, n0 = static_cast<int64_t>(blockIdx.z) * kSimtBN;
  for (int64_t bz = blockIdx.y; bz < p.batch; bz += gridDim.y) {
    const T* A = static_cast<const T*>(p.a) + bz * p.sa;
    const T* B = static_cast<const T*>(p.b) + bz * p.sb;
    TC* C = static_cast<TC*>(p.c) + bz * p.sc;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
    for (int64_t k0 = 0; k0 < p.k; k0 += kSimtBK) {
      // Index decomposition follows the stored layout so that neighbouring threads read
      // neighbouring addresses.
      for (int i = tid; i < kSimtBM * kSimtBK; i += kSimtThreads) {
        int mm, kk;
        if (ta) { kk = i / kSimtBM; mm = i % kSimtBM; }
        else { mm = i / kSimtBK; kk = i % kSimtBK; }
        const int64_t gm = m0 + mm, gk = k0 + kk;
        float v = 0.f;
        if (gm < p.m && gk < p.k) v = tof(ta ? A[gk * p.lda + gm] : A[gm * p.lda + gk]);
        As[kk][mm] = v;
      }
      for (int i = tid; i < kSimtBN * kSimtBK; i += kSimtThreads) {
        int nn, kk;
        if (tb) { nn = i / kSimtBK; kk = i % kSimtBK; }
        else { kk = i / kSimtBN; nn = i % kSimtBN; }
        const int64_t gn = n0 + nn, gk = k0 + kk;
        float v = 0.f;
        if (gn < p.n && gk < p.k) v = tof(tb ? B[gn * p.ldb + gk] : B[gk * p.ldb + gn]);
        Bs[kk][nn] = v;
      }
      __syncthreads();
      float part[4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) part[i][j] = 0.f;
#pragma unroll
      for (int kk = 0; kk < kSimtBK; ++kk) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = As[kk][ty * 4 + i];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx * 4 + j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) part[i][j] = fmaf(a[i], b[j], part[i][j]);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += part[i][j];
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = m0 + ty * 4 + i;
      if (row >= p.m) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t col = n0 + tx * 4 + j;
        if (col >= p.n) continue;
        TC* c = C + row * p.ldc + col;
        float v = p.alpha * acc[i][j];
        if (p.beta != 0.f) v += p.beta * tof(*c);
        *c = fromf<TC>(v);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Host side.

using BigCfg = MmaConfig<128, 256, 2, 4, 4>;
using SmallCfg = MmaConfig<128, 128, 2, 2, 4>;

unsigned batch_grid(int64_t batch) { return static_cast<unsigned>(std::min<int64_t>(batch, 65535)); }

template <class T, class TC, bool TA, bool TB, class Cfg>
void launch_mma(const GemmArgs& g, cudaStream_t st) {
  using S = MmaSmem<TA, TB, Cfg>;
  auto kernel = gemm_mma_kernel<T, TC, TA, TB, Cfg>;
  static bool configured = false;  // the attribute is per function; setting it twice is harmless
  if (!configured) {
    mm_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, S::BYTES), "shared memory limit");
    configured = true;
  }
  const int64_t tiles = ((g.m + Cfg::kBM - 1) / Cfg::kBM) * ((g.n + Cfg::kBN - 1) / Cfg::kBN);
  if (tiles > 0x7fffffff) throw Error(ErrorCode::InvalidArgument, "matmul CUDA: too many tiles");
  dim3 grid(static_cast<unsigned>(tiles), batch_grid(g.batch));
  kernel<<<grid, Cfg::kThreads, S::BYTES, st>>>(g);
  mm_check(cudaGetLastError(), "tensor-core kernel launch");
}

template <class T, class TC, bool TA, bool TB>
void launch_mma_pick(const GemmArgs& g, cudaStream_t st) {
  const int64_t big_tiles = ((g.m + 127) / 128) * ((g.n + 255) / 256) * g.batch;
  if (big_tiles >= mm_sm_count()) launch_mma<T, TC, TA, TB, BigCfg>(g, st);
  else launch_mma<T, TC, TA, TB, SmallCfg>(g, st);
}

template <class T, class TC>
void launch_simt(const GemmArgs& g, bool ta, bool tb, cudaStream_t st) {
  const int64_t gm = (g.m + kSimtBM - 1) / kSimtBM, gn = (g.n + kSimtBN - 1) / kSimtBN;
  if (gm > 0x7fffffff || gn > 65535) throw Error(ErrorCode::InvalidArgument, "matmul CUDA: matrix too large for the generic path");
  dim3 grid(static_cast<unsigned>(gm), batch_grid(g.batch), static_cast<unsigned>(gn));
  gemm_simt_kernel<T, TC><<<grid, kSimtThreads, 0, st>>>(g, ta ? 1 : 0, tb ? 1 : 0);
  mm_check(cudaGetLastError(), "generic kernel launch");
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

std::atomic<int> g_force_path{0};  // GemmPath, set by dev harnesses
std::atomic<int> g_last_path{0};   // 1 sm90, 2 mma, 3 simt

template <class T, class TC>
void run_gemm(const GemmArgs& g, bool ta, bool tb, cudaStream_t st) {
  const GemmPath force = static_cast<GemmPath>(g_force_path.load(std::memory_order_relaxed));
  bool fast = false;
  if constexpr (!std::is_same<T, float>::value) {
    auto stride_ok = [&](int64_t s) { return g.batch <= 1 || s % 8 == 0; };
    fast = force != GemmPath::Simt && g.k > 0 && aligned16(g.a) && aligned16(g.b) && g.lda % 8 == 0 &&
           g.ldb % 8 == 0 && stride_ok(g.sa) && stride_ok(g.sb);
  }
  if (!fast) {
    g_last_path.store(3, std::memory_order_relaxed);
    return launch_simt<T, TC>(g, ta, tb, st);
  }
  if constexpr (!std::is_same<T, float>::value) {
    // Hopper: wgmma + TMA kernel (matmul_sm90.cu) when the sm_90a code is loaded; it declines
    // (returns false) operands TMA cannot describe.
    constexpr DType dt = std::is_same<T, __nv_bfloat16>::value ? DType::BF16 : DType::F16;
    if (force != GemmPath::Mma && gemm_sm90_available(st) && gemm_sm90(g, dt, std::is_same<TC, float>::value, ta, tb, st)) {
      g_last_path.store(1, std::memory_order_relaxed);
      return;
    }
    g_last_path.store(2, std::memory_order_relaxed);
    if (!ta && !tb) launch_mma_pick<T, TC, false, false>(g, st);
    else if (!ta && tb) launch_mma_pick<T, TC, false, true>(g, st);
    else if (ta && !tb) launch_mma_pick<T, TC, true, false>(g, st);
    else launch_mma_pick<T, TC, true, true>(g, st);
  }
}

}  // namespace

int mm_sm_count() {
  static int count = [] {
    int dev = 0, n = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
      cudaGetLastError();
      return 132;
    }
    return n;
  }();
  return count;
}

void gemm_cuda_force_path(GemmPath path) { g_force_path.store(static_cast<int>(path)); }

const char* gemm_cuda_last_path() {
  switch (g_last_path.load()) {
    case 1: return "sm90-wgmma";
    case 2: return "mma-sync";
    case 3: return "simt";
    default: return "none";
  }
}

void gemm_cuda_ex(const MatmulParams& p, DType c_dtype, void* stream) {
  if (p.dtype != DType::F32 && p.dtype != DType::BF16 && p.dtype != DType::F16)
    throw std::invalid_argument(std::string("matmul cuda: unsupported dtype ") + dtype_name(p.dtype));
  if (c_dtype != p.dtype && c_dtype != DType::F32)
    throw std::invalid_argument("matmul cuda: the output dtype must be the operands' or f32");
  if (p.batch < 0 || p.m < 0 || p.n < 0 || p.k < 0) throw std::invalid_argument("matmul: negative size");
  if (p.batch == 0 || p.m == 0 || p.n == 0) return;
  if (!p.c || (p.k > 0 && (!p.a || !p.b))) throw std::invalid_argument("matmul: null pointer");
  const int64_t ra = p.trans_a ? p.m : p.k, rb = p.trans_b ? p.k : p.n;
  if ((p.lda && p.lda < ra) || (p.ldb && p.ldb < rb) || (p.ldc && p.ldc < p.n) || p.lda < 0 || p.ldb < 0 || p.ldc < 0)
    throw std::invalid_argument("matmul: leading dimension smaller than the row length");
  if (p.stride_a < -1 || p.stride_b < -1 || p.stride_c < -1) throw std::invalid_argument("matmul: bad batch stride");
  if (p.batch > 1 && p.stride_c == 0) throw std::invalid_argument("matmul: batched C cannot be shared (stride_c = 0)");

  GemmArgs g{};
  g.batch = p.batch;
  g.m = p.m;
  g.n = p.n;
  g.k = p.k;
  g.lda = p.lda ? p.lda : ra;
  g.ldb = p.ldb ? p.ldb : rb;
  g.ldc = p.ldc ? p.ldc : p.n;
  g.sa = p.stride_a >= 0 ? p.stride_a : (p.trans_a ? p.k : p.m) * g.lda;
  g.sb = p.stride_b >= 0 ? p.stride_b : (p.trans_b ? p.n : p.k) * g.ldb;
  g.sc = p.stride_c >= 0 ? p.stride_c : p.m * g.ldc;
  g.alpha = static_cast<float>(p.alpha);
  g.beta = static_cast<float>(p.beta);
  g.a = p.a;
  g.b = p.b;
  g.c = p.c;
  const int64_t csize = c_dtype == DType::F32 ? 4 : 2;
  g.vec_c = (g.ldc % 2 == 0 && (g.batch <= 1 || g.sc % 2 == 0) &&
             (reinterpret_cast<uintptr_t>(p.c) % static_cast<uintptr_t>(2 * csize)) == 0)
                ? 1
                : 0;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const bool ta = p.trans_a, tb = p.trans_b;
  switch (p.dtype) {
    case DType::BF16:
      if (c_dtype == DType::F32) run_gemm<__nv_bfloat16, float>(g, ta, tb, st);
      else run_gemm<__nv_bfloat16, __nv_bfloat16>(g, ta, tb, st);
      break;
    case DType::F16:
      if (c_dtype == DType::F32) run_gemm<__half, float>(g, ta, tb, st);
      else run_gemm<__half, __half>(g, ta, tb, st);
      break;
    default: run_gemm<float, float>(g, ta, tb, st); break;
  }
}

void matmul_cuda(const MatmulParams& p, void* stream) { gemm_cuda_ex(p, p.dtype, stream); }

}  // namespace ha
