// Internals shared by the CUDA GEMM's translation units (matmul.cu: dispatch, mma.sync and SIMT
// kernels; matmul_sm90.cu: the Hopper wgmma + TMA kernel). Not part of the op's interface.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "core/cuda_device.cuh"
#include "core/dtype.h"
#include "core/errors.h"

namespace ha {

inline void mm_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(ErrorCode::Device, std::string("matmul CUDA (") + what + "): " + cudaGetErrorString(e));
}

// Kernel arguments (POD, resolved leading dimensions and strides, all in elements).
struct GemmArgs {
  int64_t batch, m, n, k;
  int64_t lda, ldb, ldc;
  int64_t sa, sb, sc;
  float alpha, beta;
  const void* a;
  const void* b;
  void* c;
  int vec_c;  // C pairs (row, 2j), (row, 2j+1) may be stored as one 2-element vector
};

// Streaming multiprocessors of the current device (132 if it cannot be read).
int mm_sm_count();

// Hopper path (matmul_sm90.cu). True when the current device is cc 9.0, the cubin the runtime
// loaded for it is the sm_90a one (a fatbin for 80;90;90a may give a 9.0 card the plain sm_90
// cubin, which has no wgmma code) and the driver exports cuTensorMapEncodeTiled. Cached per device
// (the first answer needs a synchronous read; while `st` is capturing a graph it answers false).
bool gemm_sm90_available(cudaStream_t st);
// Runs C = alpha op(A) op(B) + beta C on the wgmma kernel for 16-bit A, B (dt BF16 or F16) and C
// in dt or f32 (c_f32). Returns false, having launched nothing, when the operands do not meet TMA's
// rules (16-byte aligned base, lda/ldb/strides multiples of 8, tensor map encoding accepted): the
// caller then uses the mma.sync kernel. Throws ha::Error on a launch failure.
bool gemm_sm90(const GemmArgs& g, DType dt, bool c_f32, bool ta, bool tb, cudaStream_t st);

// Stores two adjacent outputs (col, col + 1) of one row; `both` when col + 1 < N.
template <class TC>
__device__ __forceinline__ void store_pair(TC* c, float v0, float v1, bool both, bool vec, float beta) {
  if (beta != 0.f) {
    v0 += beta * tof(c[0]);
    if (both) v1 += beta * tof(c[1]);
  }
  if (both && vec) {
    if constexpr (std::is_same<TC, float>::value) {
      *reinterpret_cast<float2*>(c) = make_float2(v0, v1);
    } else if constexpr (std::is_same<TC, __nv_bfloat16>::value) {
      *reinterpret_cast<__nv_bfloat162*>(c) = __floats2bfloat162_rn(v0, v1);
    } else {
      *reinterpret_cast<__half2*>(c) = __floats2half2_rn(v0, v1);
    }
  } else {
    c[0] = fromf<TC>(v0);
    if (both) c[1] = fromf<TC>(v1);
  }
}

}  // namespace ha
