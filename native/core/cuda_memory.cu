#include <cuda_runtime.h>

#include <string>

#include "core/cuda_backend.h"
#include "core/cuda_memory.h"
#include "core/errors.h"

namespace ha {

CudaMemoryStats cuda_memory_stats(bool reset_peaks) {
  cuda_stream();  // initialises the backend (and its pool settings), or throws
  cudaMemPool_t pool = nullptr;
  cudaError_t e = cudaDeviceGetDefaultMemPool(&pool, 0);
  if (e != cudaSuccess) throw Error(ErrorCode::Device, std::string("memory pool: ") + cudaGetErrorString(e));
  auto get = [&](cudaMemPoolAttr a) {
    unsigned long long v = 0;
    cudaError_t err = cudaMemPoolGetAttribute(pool, a, &v);
    if (err != cudaSuccess) throw Error(ErrorCode::Device, std::string("memory pool attribute: ") + cudaGetErrorString(err));
    return static_cast<int64_t>(v);
  };
  CudaMemoryStats s;
  s.used = get(cudaMemPoolAttrUsedMemCurrent);
  s.used_peak = get(cudaMemPoolAttrUsedMemHigh);
  s.reserved = get(cudaMemPoolAttrReservedMemCurrent);
  s.reserved_peak = get(cudaMemPoolAttrReservedMemHigh);
  if (reset_peaks) {
    unsigned long long zero = 0;  // the only value these attributes accept: restart from the current level
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrUsedMemHigh, &zero);
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReservedMemHigh, &zero);
  }
  return s;
}

}  // namespace ha
