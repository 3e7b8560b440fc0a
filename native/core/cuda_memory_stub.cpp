// CPU-only builds: no GPU memory to report.
#ifndef HA_WITH_CUDA
#include "core/cuda_memory.h"
#include "core/errors.h"

namespace ha {

CudaMemoryStats cuda_memory_stats(bool) { throw Error(ErrorCode::Device, "this build of hybrid-attention has no CUDA support", "device"); }

}  // namespace ha
#endif
