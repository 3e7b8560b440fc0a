// Small warp-level tensor-core helpers for the hybrid-attention fast path (sm_80+): cp.async,
// ldmatrix and mma.sync m16n8k16 (bf16 / f16 operands, fp32 accumulators), plus what the
// forward and backward fast paths share (chunk size, row loads, workspace pool, SM count).
// Fragment layouts (g = lane / 4, t = lane % 4):
//   A 16x16 row-major: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B 16x8 ("col"):    b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C 16x8 fp32:       c0,c1 = C[g][2t, 2t+1], c2,c3 = C[g+8][2t, 2t+1]
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <type_traits>

#include "ops/hybrid_attention/ha_common.cuh"

namespace ha {
namespace cuda_detail {
namespace fast {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

// 16-byte async copy global -> shared; zero-fills the destination when !valid (nothing is read).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  int sz = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(sz) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x2_t(uint32_t (&r)[2], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(addr));
}

template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}
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

// Bulk (TMA engine) copy shared -> global, sm_90+: `bytes` a multiple of 16, both addresses 16-byte
// aligned. Every writer of the source runs fence_async_smem() before the barrier after which one
// thread issues the copy; the source may be rewritten after bulk_wait_read0() (by that thread, then
// a barrier), and the CTA must not exit before bulk_wait0(). No-ops below sm_90 (callers check).
__device__ __forceinline__ void fence_async_smem() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_s2g(void* gdst, uint32_t ssrc, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(gdst), "r"(ssrc), "r"(bytes) : "memory");
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_wait_read0() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_wait0() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

constexpr int kC = 64;  // rows (and keys) per chunk

// Rows [r0, r0 + nrows) of a row-major [*, D] matrix into shared memory (row stride D + 8),
// zero-filling rows outside [0, T).
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

inline bool aligned16(const void* x) { return ((uintptr_t)x & 15) == 0; }

}  // namespace fast
}  // namespace cuda_detail
}  // namespace ha
