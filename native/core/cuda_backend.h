// The CUDA runtime as the rest of the library sees it. Implemented in cuda_backend.cu when built
// with CUDA, and by stubs in cuda_backend_stub.cpp otherwise, so no other file needs #ifdefs.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace ha {

struct CudaInfo {
  bool compiled = false;   // built with nvcc
  bool available = false;  // a usable device and driver
  std::string reason;      // why not, when unavailable
  std::string name;
  int device_count = 0;
  int major = 0, minor = 0;
  int sm_count = 0;
  int64_t total_memory = 0;
  int64_t free_memory = 0;
  int runtime_version = 0;
  int driver_version = 0;
};

CudaInfo cuda_info();

// Stream-ordered device memory on the library's stream; both throw ha::Error.
void* cuda_allocate(int64_t bytes);
void cuda_release(void* p);  // never throws; safe from any thread
void* cuda_stream();         // the library's cudaStream_t
void cuda_copy_to_device(void* dst, const void* src, int64_t bytes);    // synchronous w.r.t. src
void cuda_copy_to_host(void* dst, const void* src, int64_t bytes);      // waits for the stream
void cuda_copy_device_to_device(void* dst, const void* src, int64_t bytes);
void cuda_synchronize();     // waits for the stream; throws on a pending asynchronous error
void cuda_check(const char* what);  // throws ha::Error if the last launch failed

// Timing events on the library's stream (benchmarks): create, record (stream-ordered), and the
// milliseconds between two recorded events (waits for the later one).
void* cuda_event_create();
void cuda_event_destroy(void* event);
void cuda_event_record(void* event);
float cuda_event_elapsed_ms(void* start, void* end);

// CUDA graphs (a decode step replayed without host work): `record(stream)` enqueues kernels on a
// private stream under capture (thread-local mode: other threads keep using the library's stream
// meanwhile); the executable graph it returns is launched on the library's stream, in order with
// everything else. capture and launch throw ha::Error; destroy never throws (safe from any thread;
// a graph still running is freed when it completes).
void* cuda_graph_capture(const std::function<void(void* stream)>& record);
void cuda_graph_launch(void* exec);
void cuda_graph_destroy(void* exec);

}  // namespace ha
