#include "core/storage.h"

#include <cstdlib>
#include <new>

#include "core/cuda_backend.h"

namespace ha {

namespace {
std::atomic<int64_t> g_live_tensors[2];
std::atomic<int64_t> g_live_bytes[2];
constexpr size_t kCpuAlignment = 64;
}  // namespace

std::shared_ptr<Storage> Storage::allocate(Device device, DType dtype, int64_t numel) {
  if (numel < 0) throw Error(ErrorCode::InvalidArgument, "negative element count");
  int64_t bytes = numel * dtype_size(dtype);
  void* p = nullptr;
  if (device == Device::CPU) {
    size_t rounded = ((static_cast<size_t>(bytes) + kCpuAlignment - 1) / kCpuAlignment) * kCpuAlignment;
    if (rounded == 0) rounded = kCpuAlignment;
    p = std::aligned_alloc(kCpuAlignment, rounded);
    if (!p) throw Error(ErrorCode::OutOfMemory, "out of host memory allocating " + std::to_string(bytes) + " bytes");
  } else {
    p = cuda_allocate(bytes);  // throws OutOfMemory / Device errors
  }
  int idx = static_cast<int>(device);
  g_live_tensors[idx].fetch_add(1);
  g_live_bytes[idx].fetch_add(bytes);
  return std::shared_ptr<Storage>(new Storage(device, dtype, numel, bytes, p));
}

Storage::~Storage() {
  int idx = static_cast<int>(device_);
  g_live_tensors[idx].fetch_sub(1);
  g_live_bytes[idx].fetch_sub(bytes_);
  if (device_ == Device::CPU) {
    std::free(data_);
  } else {
    cuda_release(data_);
  }
}

LiveCounters live_counters(Device d) {
  int idx = static_cast<int>(d);
  return {g_live_tensors[idx].load(), g_live_bytes[idx].load()};
}

}  // namespace ha
