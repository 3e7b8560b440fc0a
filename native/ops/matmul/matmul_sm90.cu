// Hopper (sm_90a) path of the CUDA GEMM (see matmul.h): C_b = alpha op(A_b) op(B_b) + beta C_b for
// bf16/f16 A and B, fp32 accumulation, C in the operands' dtype or f32.
//
// Kernel: persistent, warp-specialised, one 128 x BN tile (BN = 256, or 128 when 256-wide tiles
// would leave SMs idle) per step, BK = 64.
//   warpgroup 0   producer: one thread issues the TMA loads of each k-tile into a ring of STAGES
//                 shared-memory stages (full/empty mbarrier pair per stage), registers given back
//                 with setmaxnreg.dec;
//   warpgroups 1-2 consumers: rows 0-63 / 64-127 of the tile, wgmma.mma_async m64nBNk16 with both
//                 operands read from shared memory through matrix descriptors, fp32 accumulators
//                 in registers (setmaxnreg.inc), one wgmma group kept in flight (the stage of
//                 k-tile kt-1 is released once kt's group is issued), epilogue straight from the
//                 accumulators to C (alpha, beta, bounds) while the producer already loads the
//                 next tile.
// Tiles are walked in groups of 16 tile-rows (L2 reuse of the B panel), batch items last.
//
// Operand layouts: every tile lands in shared memory with TMA's 128-byte swizzle, in 64-element
// (128-byte) wide boxes:
//   K-major (A as [M, K], B stored [N, K]): one box {64 k, rows}, rows of 128 bytes, 8-row groups
//     1024 bytes apart (descriptor SBO); the k16 steps advance the start address by 32 bytes
//     inside the swizzle atom.
//   MN-major (A stored [K, M], B as [K, N]): boxes {64 m|n, 64 k}, 8 KB each, k rows of 128
//     bytes; wgmma reads them with the transpose bit (16-bit types only), LBO = 8 KB between
//     64-wide MN chunks, SBO = 1024 bytes between 8-deep k groups; the k16 steps advance by 2 KB.
// TMA zero-fills what lies past M, N or K (padded leading dimensions included), so any size
// works; boxes wholly past M or N are not loaded (their rows/columns of the product are never
// stored). Batch items are the tensor maps' third dimension (stride 0: a one-item map).
//
// Requirements checked by the host side (else the caller falls back to the mma.sync kernel):
// 16-byte aligned A and B, lda, ldb and batch strides multiples of 8 elements, sizes < 2^31.
// The kernel body exists only in the sm_90a cubin (__CUDA_ARCH_FEAT_SM90_ALL); the host asks the
// loaded module whether it is that cubin (g_mm_sm90a_cubin) before launching.
#include <cuda.h>          // CUtensorMap and its enums only: libcuda is reached through cudart
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "core/bulk_copy_sm90.cuh"
#include "core/mma_sm80.cuh"
#include "ops/matmul/matmul_internal.cuh"

namespace ha {

// 1 in the sm_90a cubin, 0 in every other one: tells the host which cubin the runtime loaded.
__device__ int g_mm_sm90a_cubin =
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    1;
#else
    0;
#endif

namespace {

constexpr int kBM = 128, kBK = 64, kThreads = 384;

template <int BN>
struct Sm90Cfg {
  static constexpr int kStages = BN == 256 ? 4 : 6;
  static constexpr uint32_t kABytes = kBM * kBK * 2, kBBytes = BN * kBK * 2;
  // stages, 1024 bytes to align the first one to the swizzle atom, 2 mbarriers per stage
  static constexpr int kSmem = kStages * (kABytes + kBBytes) + 1024 + 2 * kStages * 8;
};

struct Sm90Params {
  int64_t m, n, ldc, sc, tiles;
  int tiles_m, tiles_n, ktiles;
  int a_batched, b_batched;  // 0: the operand's map has one item (batch stride 0, or batch 1)
  float alpha, beta;
  void* c;
  int vec_c;
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Tile t -> (batch item, tile row, tile column), grouped rasterisation within a batch item.
__device__ __forceinline__ void tile_coord(int64_t t, const Sm90Params& p, int64_t& bz, int& tm, int& tn) {
  constexpr int kGroupM = 16;  // tile-rows per group: ~16 x 8 tiles of 128 x 256 in flight on 132 SMs
  const int64_t per = static_cast<int64_t>(p.tiles_m) * p.tiles_n;
  bz = t / per;
  const int r = static_cast<int>(t - bz * per);
  const int width = kGroupM * p.tiles_n;
  const int first_m = (r / width) * kGroupM;
  const int gsz = min(p.tiles_m - first_m, kGroupM);
  tm = first_m + (r % width) % gsz;
  tn = (r % width) / gsz;
}

// mbarriers: native/core/bulk_copy_sm90.cuh.
using ::ha::bulk::mbar_arrive;
using ::ha::bulk::mbar_expect_tx;
using ::ha::bulk::mbar_init;
using ::ha::bulk::mbar_wait;
using ::ha::mma::smem_u32;

// 3-d tiled TMA load (coordinates innermost first) completing on mbarrier `bar`.
__device__ __forceinline__ void tma_load(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}

// wgmma shared-memory matrix descriptor, 128-byte swizzle (layout type 1 in bits 62-63).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((lbo >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

#define HA_WG_REGS_128                                                                            \
  "{"                                                                                             \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                        \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "              \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "              \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "              \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "              \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "              \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "  \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127" \
  "}"
#define HA_WG_REGS_64                                                                \
  "{"                                                                                \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "           \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"   \
  "}"
#define HA_D4(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3])
#define HA_D16(i) HA_D4(i), HA_D4(i + 4), HA_D4(i + 8), HA_D4(i + 12)
#define HA_D64(i) HA_D16(i), HA_D16(i + 16), HA_D16(i + 32), HA_D16(i + 48)
// scale_d = 0 ignores the accumulators' old values (first k step of a tile).
#define HA_WGMMA_N256(TY)                                                                                         \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"                                                      \
               "wgmma.mma_async.sync.aligned.m64n256k16.f32." TY "." TY " " HA_WG_REGS_128                        \
               ", %128, %129, p, 1, 1, %131, %132;\n}\n"                                                          \
               : HA_D64(0), HA_D64(64)                                                                            \
               : "l"(da), "l"(db), "r"(scale_d), "n"(TA ? 1 : 0), "n"(TB ? 0 : 1))
#define HA_WGMMA_N128(TY)                                                                                         \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                       \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " " HA_WG_REGS_64                         \
               ", %64, %65, p, 1, 1, %67, %68;\n}\n"                                                              \
               : HA_D64(0)                                                                                        \
               : "l"(da), "l"(db), "r"(scale_d), "n"(TA ? 1 : 0), "n"(TB ? 0 : 1))

// One m64 x BN x k16 product. The immediates: trans-a = 1 for A stored [K, M] (M-major);
// trans-b = 1 for B stored [K, N] (N-major), i.e. op(B) not transposed in our row-major terms.
template <bool BF, bool TA, bool TB, int BN>
__device__ __forceinline__ void wgmma_tile(float* d, uint64_t da, uint64_t db, int scale_d) {
  if constexpr (BN == 256) {
    if constexpr (BF) HA_WGMMA_N256("bf16");
    else HA_WGMMA_N256("f16");
  } else {
    if constexpr (BF) HA_WGMMA_N128("bf16");
    else HA_WGMMA_N128("f16");
  }
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <class T, class TC, bool TA, bool TB, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_sm90_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b, Sm90Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = Sm90Cfg<BN>;
  constexpr int STAGES = Cfg::kStages;
  constexpr uint32_t A_BYTES = Cfg::kABytes, B_BYTES = Cfg::kBBytes;
  constexpr bool BF = std::is_same<T, __nv_bfloat16>::value;
  extern __shared__ unsigned char smraw[];
  const uint32_t base = (smem_u32(smraw) + 1023u) & ~1023u;  // swizzle atoms are 1024-byte aligned
  const uint32_t sa0 = base, sb0 = base + STAGES * A_BYTES, bars = sb0 + STAGES * B_BYTES;
  auto full = [&](uint32_t s) { return bars + 8 * s; };
  auto empty = [&](uint32_t s) { return bars + 8 * (STAGES + s); };
  const int wg = threadIdx.x / 128;

  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      mbar_init(full(s), 1);        // the producer's arrive.expect_tx (+ the TMA bytes)
      mbar_init(empty(s), 2 * 128);  // every consumer thread, once its wgmma reads are done
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncthreads();

  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (threadIdx.x != 0) return;
    uint32_t it = 0;  // k-tiles loaded so far: stage it % STAGES, round it / STAGES
    for (int64_t t = blockIdx.x; t < p.tiles; t += gridDim.x) {
      int64_t bz;
      int tm, tn;
      tile_coord(t, p, bz, tm, tn);
      const int m0 = tm * kBM, n0 = tn * BN;
      const int ba = p.a_batched ? static_cast<int>(bz) : 0, bb = p.b_batched ? static_cast<int>(bz) : 0;
      // Boxes wholly past M (A stored [K, M]) or N (B stored [K, N]) are skipped.
      const int a_boxes = TA ? (p.m - m0 > 64 ? 2 : 1) : 1;
      const int b_boxes = TB ? 1 : static_cast<int>(min(static_cast<int64_t>((p.n - n0 + 63) / 64), static_cast<int64_t>(BN / 64)));
      const uint32_t bytes = (TA ? a_boxes * 8192u : A_BYTES) + (TB ? B_BYTES : b_boxes * 8192u);
      for (int kt = 0; kt < p.ktiles; ++kt, ++it) {
        const uint32_t s = it % STAGES, round = it / STAGES;
        mbar_wait(empty(s), (round & 1) ^ 1);  // a fresh barrier passes parity 1 at once
        mbar_expect_tx(full(s), bytes);
        const int k0 = kt * kBK;
        const uint32_t sa = sa0 + s * A_BYTES, sb = sb0 + s * B_BYTES;
        if constexpr (TA) {
          for (int j = 0; j < a_boxes; ++j) tma_load(sa + j * 8192u, &map_a, full(s), m0 + 64 * j, k0, ba);
        } else {
          tma_load(sa, &map_a, full(s), k0, m0, ba);
        }
        if constexpr (TB) {
          tma_load(sb, &map_b, full(s), k0, n0, bb);
        } else {
          for (int j = 0; j < b_boxes; ++j) tma_load(sb + j * 8192u, &map_b, full(s), n0 + 64 * j, k0, bb);
        }
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int c = wg - 1;  // this consumer's rows of the tile: 64c .. 64c + 63
  const int tid = threadIdx.x - 128 * wg, warp = tid / 32, lane = tid % 32;
  float d[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; ++i) d[i] = 0.f;
  uint32_t it = 0;
  for (int64_t t = blockIdx.x; t < p.tiles; t += gridDim.x) {
    int64_t bz;
    int tm, tn;
    tile_coord(t, p, bz, tm, tn);
    for (int kt = 0; kt < p.ktiles; ++kt, ++it) {
      const uint32_t s = it % STAGES;
      mbar_wait(full(s), (it / STAGES) & 1);
      wgmma_fence();
      // The consumer's 64 rows start 8 KB into the A stage in both layouts (64 rows of 128 bytes,
      // or the second 64-wide M box).
      const uint32_t sa = sa0 + s * A_BYTES + c * 8192u, sb = sb0 + s * B_BYTES;
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        const uint64_t da = TA ? smem_desc(sa + kk * 2048u, 8192u, 1024u) : smem_desc(sa + kk * 32u, 16u, 1024u);
        const uint64_t db = TB ? smem_desc(sb + kk * 32u, 16u, 1024u) : smem_desc(sb + kk * 2048u, 8192u, 1024u);
        wgmma_tile<BF, TA, TB, BN>(d, da, db, (kt > 0 || kk > 0) ? 1 : 0);
      }
      wgmma_commit();
      wgmma_wait<1>();  // k-tile kt-1's products are done: its stage may be refilled
      if (kt > 0) mbar_arrive(empty((it - 1) % STAGES));
    }
    wgmma_wait<0>();
    mbar_arrive(empty((it - 1) % STAGES));
    // The accumulators were written by the async proxy: pin the reads below after the wait.
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) asm volatile("" : "+f"(d[i])::"memory");

    // Accumulator fragment (as mma.sync's, repeated over BN / 8 column blocks): d[4j + 2h + e] is
    // row 16 warp + lane / 4 + 8h, column 8j + 2 (lane % 4) + e of this consumer's 64 x BN block.
    TC* C = static_cast<TC*>(p.c) + bz * p.sc;
    const int64_t m0 = static_cast<int64_t>(tm) * kBM + 64 * c + 16 * warp + lane / 4;
    const int64_t n0 = static_cast<int64_t>(tn) * BN + 2 * (lane & 3);
    const bool vec = p.vec_c != 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t row = m0 + 8 * h;
      if (row >= p.m) continue;
      TC* crow = C + row * p.ldc;
#pragma unroll
      for (int j = 0; j < BN / 8; ++j) {
        const int64_t col = n0 + 8 * j;
        if (col >= p.n) continue;
        store_pair<TC>(crow + col, p.alpha * d[4 * j + 2 * h], p.alpha * d[4 * j + 2 * h + 1], col + 1 < p.n, vec, p.beta);
      }
    }
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// ------------------------------------------------------------------------------------------
// Host side.

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      f = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// 3-d map {inner, outer, items} of 16-bit elements (row length ld, item stride `stride`, both
// in elements), box {64, box_outer, 1}, 128-byte swizzle, zero fill out of bounds.
bool encode(CUtensorMap* map, DType dt, const void* ptr, int64_t inner, int64_t outer, int64_t ld, int64_t items,
            int64_t stride, int box_outer) {
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(inner), static_cast<cuuint64_t>(outer), static_cast<cuuint64_t>(items)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(ld) * 2, static_cast<cuuint64_t>(stride) * 2};
  const cuuint32_t box[3] = {64, static_cast<cuuint32_t>(box_outer), 1};
  const cuuint32_t estr[3] = {1, 1, 1};
  const CUresult r = encode_fn()(map, dt == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 3,
                                 const_cast<void*>(ptr), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

template <class T, class TC, bool TA, bool TB, int BN>
void launch(const CUtensorMap& ma, const CUtensorMap& mb, const Sm90Params& p, cudaStream_t st) {
  auto kernel = gemm_sm90_kernel<T, TC, TA, TB, BN>;
  static bool configured = false;  // the attribute is per function; setting it twice is harmless
  if (!configured) {
    mm_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Sm90Cfg<BN>::kSmem),
             "sm90 shared memory limit");
    configured = true;
  }
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(p.tiles, mm_sm_count()));
  kernel<<<grid, kThreads, Sm90Cfg<BN>::kSmem, st>>>(ma, mb, p);
  mm_check(cudaGetLastError(), "sm90 kernel launch");
}

template <class T, class TC, int BN>
void launch_layout(bool ta, bool tb, const CUtensorMap& ma, const CUtensorMap& mb, const Sm90Params& p, cudaStream_t st) {
  if (!ta && !tb) launch<T, TC, false, false, BN>(ma, mb, p, st);
  else if (!ta && tb) launch<T, TC, false, true, BN>(ma, mb, p, st);
  else if (ta && !tb) launch<T, TC, true, false, BN>(ma, mb, p, st);
  else launch<T, TC, true, true, BN>(ma, mb, p, st);
}

template <class T, int BN>
void launch_c(bool c_f32, bool ta, bool tb, const CUtensorMap& ma, const CUtensorMap& mb, const Sm90Params& p,
              cudaStream_t st) {
  if (c_f32) launch_layout<T, float, BN>(ta, tb, ma, mb, p, st);
  else launch_layout<T, T, BN>(ta, tb, ma, mb, p, st);
}

}  // namespace

bool gemm_sm90_available(cudaStream_t st) {
  static std::atomic<int> state[64];  // per device: 0 unknown, 1 no, 2 yes
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  if (dev >= 0 && dev < 64 && state[dev].load() != 0) return state[dev].load() == 2;
  // The probe below is a synchronous copy, illegal while `st` is being captured into a CUDA
  // graph: such a first call takes the mma.sync kernel and leaves the question open.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(st, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone) {
    cudaGetLastError();
    return false;
  }
  bool ok = false;
  int major = 0, minor = 0, cubin = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess && major == 9 && minor == 0 &&
      encode_fn() != nullptr && cudaMemcpyFromSymbol(&cubin, g_mm_sm90a_cubin, sizeof(int)) == cudaSuccess)
    ok = cubin == 1;
  cudaGetLastError();  // a failed probe must not leave an error behind
  if (dev >= 0 && dev < 64) state[dev].store(ok ? 2 : 1);
  return ok;
}

bool gemm_sm90(const GemmArgs& g, DType dt, bool c_f32, bool ta, bool tb, cudaStream_t st) {
  if (dt != DType::BF16 && dt != DType::F16) return false;
  const int64_t lim = 0x7fffffff;
  auto al16 = [](const void* q) { return (reinterpret_cast<uintptr_t>(q) & 15u) == 0; };
  if (g.k <= 0 || g.m > lim || g.n > lim || g.k > lim || g.batch > lim || !al16(g.a) || !al16(g.b) || g.lda % 8 ||
      g.ldb % 8 || (g.batch > 1 && (g.sa % 8 || g.sb % 8)))
    return false;
  // 256-wide tiles unless they would leave a third of the SMs idle.
  const int64_t tiles256 = ((g.m + 127) / 128) * ((g.n + 255) / 256) * g.batch;
  const int bn = tiles256 * 3 >= 2 * static_cast<int64_t>(mm_sm_count()) ? 256 : 128;

  Sm90Params p{};
  p.m = g.m;
  p.n = g.n;
  p.ldc = g.ldc;
  p.sc = g.sc;
  p.tiles_m = static_cast<int>((g.m + kBM - 1) / kBM);
  p.tiles_n = static_cast<int>((g.n + bn - 1) / bn);
  p.ktiles = static_cast<int>((g.k + kBK - 1) / kBK);
  p.tiles = static_cast<int64_t>(p.tiles_m) * p.tiles_n * g.batch;
  p.a_batched = g.batch > 1 && g.sa != 0;
  p.b_batched = g.batch > 1 && g.sb != 0;
  p.alpha = g.alpha;
  p.beta = g.beta;
  p.c = g.c;
  p.vec_c = g.vec_c;

  // A: [M, K] (K-major) or stored [K, M]; B: stored [N, K] (K-major) or [K, N]. A one-item map
  // gets its own size as the (unused) item stride.
  const int64_t a_inner = ta ? g.m : g.k, a_outer = ta ? g.k : g.m;
  const int64_t b_inner = tb ? g.k : g.n, b_outer = tb ? g.n : g.k;
  CUtensorMap ma, mb;
  if (!encode(&ma, dt, g.a, a_inner, a_outer, g.lda, p.a_batched ? g.batch : 1, p.a_batched ? g.sa : a_outer * g.lda,
              ta ? 64 : kBM) ||
      !encode(&mb, dt, g.b, b_inner, b_outer, g.ldb, p.b_batched ? g.batch : 1, p.b_batched ? g.sb : b_outer * g.ldb,
              tb ? bn : 64))
    return false;

  if (dt == DType::BF16) {
    if (bn == 256) launch_c<__nv_bfloat16, 256>(c_f32, ta, tb, ma, mb, p, st);
    else launch_c<__nv_bfloat16, 128>(c_f32, ta, tb, ma, mb, p, st);
  } else {
    if (bn == 256) launch_c<__half, 256>(c_f32, ta, tb, ma, mb, p, st);
    else launch_c<__half, 128>(c_f32, ta, tb, ma, mb, p, st);
  }
  return true;
}

}  // namespace ha
