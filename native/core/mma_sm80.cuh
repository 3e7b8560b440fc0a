// Warp-level tensor-core primitives shared by every mma.sync kernel (sm_80+): cp.async copies,
// ldmatrix loads and mma.sync m16n8k16 with bf16 / f16 operands and fp32 accumulators. One copy
// here so that the attention, teacher and GEMM kernels cannot drift apart in these asm blocks.
// Fragment layouts (g = lane / 4, t = lane % 4):
//   A 16x16 row-major: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
//   B 16x8 ("col"):    b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]
//   C 16x8 fp32:       c0,c1 = C[g][2t, 2t+1], c2,c3 = C[g+8][2t, 2t+1]
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace ha {
namespace mma {

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16-byte async copy global -> shared of which the first `src_bytes` (0..16) come from `src`, the
// rest zero-filled (0: nothing is read, the destination is zeroed).
__device__ __forceinline__ void cp_async16_bytes(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async16_bytes(void* dst, const void* src, int src_bytes) {
  cp_async16_bytes(smem_u32(dst), src, src_bytes);
}
// Whole 16 bytes when `valid`, zero-fill otherwise.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  cp_async16_bytes(dst, src, valid ? 16 : 0);
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  cp_async16_bytes(smem_u32(dst), src, valid ? 16 : 0);
}
// Whole 16 bytes, no zero-fill operand (rows known to be in range).
__device__ __forceinline__ void cp_async16_full(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
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
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* p) { ldsm_x4(r, smem_u32(p)); }
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void* p) { ldsm_x4_t(r, smem_u32(p)); }

// c += a b with 16-bit operands of type T (__nv_bfloat16 or __half).
template <class T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  static_assert(std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value, "16-bit operands");
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

// Two floats -> one register of two T (round to nearest even).
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

// Two fp32 accumulator tiles (16x8 each, columns 0-7 and 8-15 of a 16x16 block) -> the A fragment
// of that 16x16 block in T: how P = softmax(S) feeds the next mma without leaving registers.
template <class T>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack2<T>(lo[0], lo[1]);
  a[1] = pack2<T>(lo[2], lo[3]);
  a[2] = pack2<T>(hi[0], hi[1]);
  a[3] = pack2<T>(hi[2], hi[3]);
}

// Stores the 16 x (8 ND) accumulator block of one warp (rows row_a = r0 + g and row_b = row_a + 8,
// columns 8 nt + 2t, +1 of a row-major [*, ld] matrix) scaled per row, skipping rows >= n_rows.
template <class T, int ND>
__device__ __forceinline__ void store_acc_rows(T* base, int64_t ld, int row_a, int row_b, int n_rows,
                                               const float (&acc)[ND][4], float scale_a, float scale_b, int t) {
#pragma unroll
  for (int nt = 0; nt < ND; ++nt) {
    const int c = nt * 8 + 2 * t;
    if (row_a < n_rows)
      *reinterpret_cast<uint32_t*>(base + row_a * ld + c) = pack2<T>(acc[nt][0] * scale_a, acc[nt][1] * scale_a);
    if (row_b < n_rows)
      *reinterpret_cast<uint32_t*>(base + row_b * ld + c) = pack2<T>(acc[nt][2] * scale_b, acc[nt][3] * scale_b);
  }
}

}  // namespace mma
}  // namespace ha
