// Hopper (sm_90+) bulk-copy primitives shared by the TMA kernels (the GEMM, the decode step, the
// hybrid-attention fast path): mbarriers with transaction counts, 1-d bulk copies in both
// directions and the async-proxy fence. One copy here so the asm blocks cannot drift apart.
// Below sm_90 every function compiles to nothing (callers check the device before launching the
// kernels that use them).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ha {
namespace bulk {

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define HA_BULK_SM90 1
#else
#define HA_BULK_SM90 0
#endif

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
#if HA_BULK_SM90
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}
// Arrives on `bar` and adds `bytes` to the transaction count the phase waits for.
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
#if HA_BULK_SM90
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#if HA_BULK_SM90
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Spins until the phase of parity `parity` of `bar` has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if HA_BULK_SM90
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
#endif
}

// 1-d bulk copy global -> this block's shared memory, completing on mbarrier `bar`.
__device__ __forceinline__ void bulk_g2s(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
#if HA_BULK_SM90
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
#endif
}

// Bulk copy shared -> global: `bytes` a multiple of 16, both addresses 16-byte aligned. Every
// writer of the source runs fence_async_smem() before the barrier after which one thread issues
// the copy; the source may be rewritten after bulk_wait_read0() (by that thread, then a barrier),
// and the CTA must not exit before bulk_wait0().
__device__ __forceinline__ void fence_async_smem() {
#if HA_BULK_SM90
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_s2g(void* gdst, uint32_t ssrc, uint32_t bytes) {
#if HA_BULK_SM90
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(gdst), "r"(ssrc), "r"(bytes) : "memory");
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_wait_read0() {
#if HA_BULK_SM90
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void bulk_wait0() {
#if HA_BULK_SM90
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

#undef HA_BULK_SM90

}  // namespace bulk
}  // namespace ha
