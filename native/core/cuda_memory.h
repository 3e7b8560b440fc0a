// GPU memory statistics of the library's stream-ordered pool (the device's default
// cudaMemPool, which every tensor and kernel scratch buffer comes from): what is in use by
// allocations and what the pool holds from the driver, now and at the high-water mark since
// the last reset (like torch.cuda.max_memory_allocated / max_memory_reserved).
#pragma once
#include <cstdint>

namespace ha {

struct CudaMemoryStats {
  int64_t used = 0, used_peak = 0;          // bytes in live allocations
  int64_t reserved = 0, reserved_peak = 0;  // bytes the pool holds from the driver
};

// Throws ha::Error (Device) without a usable GPU. reset_peaks: the peaks restart from now.
CudaMemoryStats cuda_memory_stats(bool reset_peaks);

}  // namespace ha
