// What the hybrid-attention fast paths (forward and backward) share: the warp-level tensor-core
// primitives (from native/core), f16/bf16 splitting, chunk size, row loads, workspace pool, SM count.
// (fragment layouts: native/core/mma_sm80.cuh)
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <type_traits>

#include "core/bulk_copy_sm90.cuh"
#include "core/mma_sm80.cuh"
#include "ops/hybrid_attention/ha_common.cuh"

namespace ha {
namespace cuda_detail {
namespace fast {

// mma.sync / ldmatrix / cp.async primitives (native/core/mma_sm80.cuh) and the sm_90 bulk copies
// (native/core/bulk_copy_sm90.cuh), under the names the fast-path kernels use.
using ::ha::mma::cp_async16;
using ::ha::mma::cp_async16_full;
using ::ha::mma::cp_commit;
using ::ha::mma::cp_wait;
using ::ha::mma::ldsm_x2_t;
using ::ha::mma::ldsm_x4;
using ::ha::mma::ldsm_x4_t;
using ::ha::mma::mma16816;
using ::ha::mma::pack2;
using ::ha::mma::smem_u32;
using ::ha::bulk::bulk_s2g;
using ::ha::bulk::bulk_wait0;
using ::ha::bulk::bulk_wait_read0;
using ::ha::bulk::fence_async_smem;

// f16x2 -> bf16x2 (used where an f16 operand meets the bf16 LA state)
__device__ __forceinline__ uint32_t h2_to_bf2(uint32_t x) {
  __half2 h = *reinterpret_cast<__half2*>(&x);
  float2 f = __half22float2(h);
  return pack2<__nv_bfloat16>(f.x, f.y);
}

// f16x2 -> bf16x2 hi and lo with hi + lo == x exactly (f16 has 11 significant bits)
__device__ __forceinline__ void h2_split_bf2(uint32_t x, uint32_t& hi, uint32_t& lo) {
  __half2 h = *reinterpret_cast<__half2*>(&x);
  float2 f = __half22float2(h);
  __nv_bfloat162 bh = __floats2bfloat162_rn(f.x, f.y);
  float2 fh = __bfloat1622float2(bh);
  hi = *reinterpret_cast<uint32_t*>(&bh);
  lo = pack2<__nv_bfloat16>(f.x - fh.x, f.y - fh.y);
}


__device__ __forceinline__ float2 unpack2f(uint32_t x, __nv_bfloat16*) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&x));
}
__device__ __forceinline__ float2 unpack2f(uint32_t x, __half*) { return __half22float2(*reinterpret_cast<__half2*>(&x)); }
// 16-bit pair -> two floats
template <class T>
__device__ __forceinline__ float2 unpack2(uint32_t x) { return unpack2f(x, (T*)nullptr); }


constexpr int kC = 64;  // rows (and keys) per chunk

// Rows [r0, r0 + nrows) of a row-major [*, D] matrix into shared memory (row stride D + 8),
// zero-filling rows outside [0, T). (The backward's row kernel ran 30-50% slower on an H100 with
// load_chunk_rows' addressing here, for reasons not found; the key kernel 1-3% faster.)
template <class T, int D>
__device__ __forceinline__ void load_rows(T* dst, const T* src, int r0, int nrows, int T_) {
  constexpr int CPR = D / 8;  // 16-byte pieces per row
  for (int i = threadIdx.x; i < nrows * CPR; i += blockDim.x) {
    const int r = i / CPR, cc = i - r * CPR, gr = r0 + r;
    const bool ok = gr >= 0 && gr < T_;
    const T* s = ok ? src + (int64_t)gr * D + cc * 8 : src;
    cp_async16(smem_u32(dst + r * (D + 8) + cc * 8), s, ok);
  }
}

// One chunk (kC rows from r0) by NTHR threads (thread index tid), for the fused forward: each
// thread keeps one 16-byte column piece and walks rows NTHR / (D / 8) apart at immediate offsets;
// rows in range (every chunk but the first and the last) skip the per-row checks. load_rows'
// flat index arithmetic cost ~20 instructions per cp.async there: 28% of the fused kernel's
// issued instructions (H100, ncu); with this, 0.186 -> 0.177 ms at B=4 T=2048.
// ROWS < kC: a part of a chunk (a warp's 16 rows).
template <class T, int D, int NTHR, int ROWS = kC>
__device__ __forceinline__ void load_chunk_rows(T* dst, const T* src, int r0, int T_, int tid) {
  constexpr int CPR = D / 8, STEP = NTHR / CPR, ITER = ROWS / STEP;
  static_assert(NTHR % CPR == 0 && ROWS % STEP == 0, "thread count must tile the rows");
  const int rr = tid / CPR, cc = tid - rr * CPR;
  const uint32_t d = smem_u32(dst + rr * (D + 8) + cc * 8);
  if (r0 >= 0 && r0 + ROWS <= T_) {
    const T* s = src + (int64_t)(r0 + rr) * D + cc * 8;
#pragma unroll
    for (int k = 0; k < ITER; ++k) cp_async16_full(d + (uint32_t)(k * STEP * (D + 8) * sizeof(T)), s + (int64_t)k * STEP * D);
  } else {
#pragma unroll
    for (int k = 0; k < ITER; ++k) {
      const int gr = r0 + rr + k * STEP;
      const bool ok = gr >= 0 && gr < T_;
      cp_async16(d + (uint32_t)(k * STEP * (D + 8) * sizeof(T)), ok ? src + (int64_t)gr * D + cc * 8 : src, ok);
    }
  }
}

// Workspace pool: a private stream-ordered pool that keeps up to 1 GiB reserved across
// synchronisations (the default pool's release threshold is 0, so every call would map its
// 100+ MB workspace afresh: measured ~0.2-0.3 ms per forward on an H200). Falls back to
// cudaMallocAsync where pools are unsupported.
inline cudaMemPool_t workspace_pool() {
  static std::mutex mu;
  static cudaMemPool_t pools[64] = {};
  static bool tried[64] = {};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) { cudaGetLastError(); return nullptr; }
  std::lock_guard<std::mutex> lock(mu);
  if (!tried[dev]) {
    tried[dev] = true;
    int sup = 0;
    if (cudaDeviceGetAttribute(&sup, cudaDevAttrMemoryPoolsSupported, dev) == cudaSuccess && sup) {
      cudaMemPoolProps pr{};
      pr.allocType = cudaMemAllocationTypePinned;
      pr.handleTypes = cudaMemHandleTypeNone;
      pr.location.type = cudaMemLocationTypeDevice;
      pr.location.id = dev;
      if (cudaMemPoolCreate(&pools[dev], &pr) == cudaSuccess) {
        uint64_t thr = 1ull << 30;
        cudaMemPoolSetAttribute(pools[dev], cudaMemPoolAttrReleaseThreshold, &thr);
      } else {
        pools[dev] = nullptr;
      }
    }
    cudaGetLastError();
  }
  return pools[dev];
}
template <class P>
inline void ws_alloc(P** ptr, size_t bytes, cudaStream_t st) {
  cudaMemPool_t pool = workspace_pool();
  if (pool) check(cudaMallocFromPoolAsync((void**)ptr, bytes, pool, st), "fast workspace alloc");
  else check(cudaMallocAsync((void**)ptr, bytes, st), "fast workspace alloc");
}

inline int sm_count() {
  static int sms = 0;
  if (sms == 0) {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && v > 0)
      sms = v;
    else
      sms = 132;
  }
  return sms;
}

// Named barriers (id 0 is __syncthreads): bar.sync waits for n threads of the CTA (a multiple of
// 32); bar.arrive counts towards n without waiting (the producer side of a handoff).
__device__ __forceinline__ void named_bar_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void named_bar_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

// 2^x by the MUFU unit (one instruction; expf is ~8): softmax weights are taken as
// ex2(s log2 e - c log2 e), forward and backward alike
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
constexpr float kLog2e = 1.4426950408889634f;

// A warp's 16 x D tile of fp32 C fragments (rows r0 + [0, 16) of dst; rows g scaled by sc_a, rows
// g + 8 by sc_b) stored as T through the warp's own shared rows stg (row stride SLD elements):
// 16-byte row stores instead of 4-byte fragment stores that touch 8 rows per instruction (H200,
// B=4 T=2048: key kernel 0.51 -> 0.45 ms, row kernel 0.50 -> 0.48 ms for dfq alone). Rows >= T_
// are skipped. The warp must be done with stg.
template <class T, int D, int SLD = D + 8>
__device__ __forceinline__ void warp_store_tile(T* dst, int r0, int T_, T* stg, const float (&o)[D / 8][4], float sc_a,
                                                float sc_b, int lane) {
  constexpr int CPR = D / 8;
  const int g = lane >> 2, t = lane & 3;
  __syncwarp();
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) {
    const int col = nt * 8 + 2 * t;
    *reinterpret_cast<uint32_t*>(stg + g * SLD + col) = pack2<T>(o[nt][0] * sc_a, o[nt][1] * sc_a);
    *reinterpret_cast<uint32_t*>(stg + (g + 8) * SLD + col) = pack2<T>(o[nt][2] * sc_b, o[nt][3] * sc_b);
  }
  __syncwarp();
#pragma unroll
  for (int i = lane; i < 16 * CPR; i += 32) {
    const int r = i / CPR, cc = i - r * CPR, n = r0 + r;
    if (n < T_) *reinterpret_cast<uint4*>(dst + (int64_t)n * D + cc * 8) = *reinterpret_cast<const uint4*>(stg + r * SLD + cc * 8);
  }
  __syncwarp();
}
// (one scale for all 16 rows, staging stride D + 8)
template <class T, int D>
__device__ __forceinline__ void warp_store_tile(T* dst, int r0, int T_, T* stg, const float (&o)[D / 8][4], float sc, int lane) {
  warp_store_tile<T, D, D + 8>(dst, r0, T_, stg, o, sc, sc, lane);
}

// The forward's statistics of rows na (row g of a warp's 16) and nb (g + 8), written by the quad's
// t == 0 lane: c (the window's row max), den_swa, den_la.
__device__ __forceinline__ void write_row_stats(const KP& p, int64_t base, int t, int na, int nb, bool va, bool vb,
                                                float c_a, float c_b, float sw_a, float sw_b, float la_a, float la_b) {
  if (t != 0) return;
  if (va) {
    p.c[base + na] = c_a;
    p.den_swa[base + na] = sw_a;
    p.den_la[base + na] = la_a;
  }
  if (vb) {
    p.c[base + nb] = c_b;
    p.den_swa[base + nb] = sw_b;
    p.den_la[base + nb] = la_b;
  }
}

// Window softmax on a warp's S = Q K^T accumulators (the forward's main and fused kernels): NPC
// 8-key tiles, lane t holding keys j0 + 8 nt + 2t + e of rows na (elements e) and nb (2 + e);
// tiles with !act(nt) are left alone. Masks to the rows' windows [wlo, n] (rows >= T see none),
// takes the row max c (0 for a row with no window key), and leaves cw * exp(S - c) in pc with the
// row sums of exp(S - c) in sw_a, sw_b (quad-reduced). EX2: exp as 2^(x log2 e - c log2 e)
// (ex2.approx) instead of expf.
template <bool EX2, int NPC, class Act>
__device__ __forceinline__ void window_softmax(float (&pc)[NPC][4], const KP& p, int j0, int t, int na, int nb, bool va,
                                               bool vb, float cw, Act act, float& mx_a, float& mx_b, float& sw_a,
                                               float& sw_b) {
  const int wlo_a = va ? win_lo(p, na) : INT_MAX, whi_a = va ? na : INT_MIN;
  const int wlo_b = vb ? win_lo(p, nb) : INT_MAX, whi_b = vb ? nb : INT_MIN;
  float ma = -INFINITY, mb = -INFINITY;
#pragma unroll
  for (int nt = 0; nt < NPC; ++nt) {
    if (!act(nt)) continue;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int j = j0 + nt * 8 + 2 * t + e;
      float x = pc[nt][e] * p.scale;
      x = (j >= wlo_a && j <= whi_a) ? x : -INFINITY;
      pc[nt][e] = x;
      ma = fmaxf(ma, x);
      float z = pc[nt][2 + e] * p.scale;
      z = (j >= wlo_b && j <= whi_b) ? z : -INFINITY;
      pc[nt][2 + e] = z;
      mb = fmaxf(mb, z);
    }
  }
  ma = fmaxf(ma, __shfl_xor_sync(0xffffffffu, ma, 1));
  ma = fmaxf(ma, __shfl_xor_sync(0xffffffffu, ma, 2));
  mb = fmaxf(mb, __shfl_xor_sync(0xffffffffu, mb, 1));
  mb = fmaxf(mb, __shfl_xor_sync(0xffffffffu, mb, 2));
  mx_a = ma == -INFINITY ? 0.f : ma;
  mx_b = mb == -INFINITY ? 0.f : mb;
  const float ma2 = mx_a * kLog2e, mb2 = mx_b * kLog2e;
#pragma unroll
  for (int nt = 0; nt < NPC; ++nt) {
    if (!act(nt)) continue;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float pa, pb;
      if constexpr (EX2) {
        pa = ex2_approx(fmaf(pc[nt][e], kLog2e, -ma2));  // -inf (masked) -> 0
        pb = ex2_approx(fmaf(pc[nt][2 + e], kLog2e, -mb2));
      } else {
        pa = expf(pc[nt][e] - mx_a);
        pb = expf(pc[nt][2 + e] - mx_b);
      }
      sw_a += pa;
      sw_b += pb;
      pc[nt][e] = cw * pa;
      pc[nt][2 + e] = cw * pb;
    }
  }
  sw_a += __shfl_xor_sync(0xffffffffu, sw_a, 1);
  sw_a += __shfl_xor_sync(0xffffffffu, sw_a, 2);
  sw_b += __shfl_xor_sync(0xffffffffu, sw_b, 1);
  sw_b += __shfl_xor_sync(0xffffffffu, sw_b, 2);
}

inline bool aligned16(const void* x) { return ((uintptr_t)x & 15) == 0; }

}  // namespace fast
}  // namespace cuda_detail
}  // namespace ha
