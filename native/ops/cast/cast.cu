#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "core/errors.h"
#include "ops/cast/cast.h"

namespace ha {

namespace {
__device__ inline double load(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::I32: return static_cast<const int32_t*>(p)[i];
  }
  return 0;
}
__device__ inline void store(void* p, DType t, int64_t i, double x) {
  switch (t) {
    case DType::F64: static_cast<double*>(p)[i] = x; break;
    case DType::F32: static_cast<float*>(p)[i] = static_cast<float>(x); break;
    case DType::BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(x)); break;
    case DType::F16: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(x)); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(rint(x)); break;
  }
}
__global__ void cast_kernel(const void* src, DType st, void* dst, DType dt, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    store(dst, dt, i, load(src, st, i));
}
}  // namespace

void cast_cuda(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, void* stream) {
  if (n == 0) return;
  int64_t blocks = (n + 255) / 256;
  if (blocks > 65535 * 8) blocks = 65535 * 8;
  cast_kernel<<<static_cast<unsigned>(blocks), 256, 0, static_cast<cudaStream_t>(stream)>>>(src, src_dtype, dst, dst_dtype, n);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw Error(ErrorCode::Device, std::string("cast kernel launch: ") + cudaGetErrorString(err));
}

}  // namespace ha
