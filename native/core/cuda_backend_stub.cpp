// CPU-only builds: the CUDA entry points report that CUDA was not compiled in.
#ifndef HA_WITH_CUDA
#include "core/cuda_backend.h"
#include "core/errors.h"

namespace ha {

CudaInfo cuda_info() {
  CudaInfo info;
  info.reason = "built without CUDA (nvcc was not found at install time)";
  return info;
}

namespace {
[[noreturn]] void no_cuda() { throw Error(ErrorCode::Device, "this build of hybrid-attention has no CUDA support", "device"); }
}  // namespace

void* cuda_allocate(int64_t) { no_cuda(); }
void cuda_release(void*) {}
void* cuda_stream() { return nullptr; }
void cuda_copy_to_device(void*, const void*, int64_t) { no_cuda(); }
void cuda_copy_to_host(void*, const void*, int64_t) { no_cuda(); }
void cuda_copy_device_to_device(void*, const void*, int64_t) { no_cuda(); }
void cuda_synchronize() {}
void cuda_check(const char*) {}
void* cuda_event_create() { no_cuda(); }
void cuda_event_destroy(void*) {}
void cuda_event_record(void*) { no_cuda(); }
float cuda_event_elapsed_ms(void*, void*) { no_cuda(); }
void* cuda_graph_capture(const std::function<void(void*)>&) { no_cuda(); }
void cuda_graph_launch(void*) { no_cuda(); }
void cuda_graph_destroy(void*) {}

}  // namespace ha
#endif
