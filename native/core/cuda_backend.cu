// CUDA runtime glue: one stream per process, stream-ordered allocation, copies, error mapping.
#include <cuda_runtime.h>

#include <mutex>
#include <string>

#include "core/cuda_backend.h"
#include "core/errors.h"

namespace ha {

namespace {

std::once_flag g_init_once;
cudaStream_t g_stream = nullptr;
std::string g_init_error;

[[noreturn]] void throw_cuda(cudaError_t err, const char* what) {
  cudaGetLastError();  // clear a sticky-free error so the process can go on
  ErrorCode code = err == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Device;
  throw Error(code, std::string(what) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

void ensure_init() {
  std::call_once(g_init_once, [] {
    int driver = 0;
    cudaDriverGetVersion(&driver);
    if (driver == 0) { g_init_error = "no NVIDIA driver found"; return; }
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) { g_init_error = std::string("no usable CUDA driver: ") + cudaGetErrorString(err); cudaGetLastError(); return; }
    if (count == 0) { g_init_error = "no CUDA device found"; return; }
    err = cudaSetDevice(0);
    if (err == cudaSuccess) err = cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking);
    if (err == cudaSuccess) {
      // Keep freed memory in the stream-ordered pool across synchronisations (the default
      // threshold of 0 returns it to the driver at every sync, and each op then remaps it).
      cudaMemPool_t pool = nullptr;
      if (cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) {
        uint64_t keep_all = UINT64_MAX;
        cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all);
      }
      cudaGetLastError();
    }
    if (err != cudaSuccess) { g_init_error = std::string("CUDA initialisation failed: ") + cudaGetErrorString(err); cudaGetLastError(); }
  });
  if (!g_init_error.empty()) throw Error(ErrorCode::Device, g_init_error, "device");
}

}  // namespace

CudaInfo cuda_info() {
  CudaInfo info;
  info.compiled = true;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaDriverGetVersion(&info.driver_version);
  try {
    ensure_init();
  } catch (const Error& e) {
    info.reason = e.what();
    return info;
  }
  cudaGetDeviceCount(&info.device_count);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    info.reason = "cudaGetDeviceProperties failed";
    cudaGetLastError();
    return info;
  }
  info.available = true;
  info.name = prop.name;
  info.major = prop.major;
  info.minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  info.total_memory = static_cast<int64_t>(total_b);
  info.free_memory = static_cast<int64_t>(free_b);
  return info;
}

void* cuda_stream() {
  ensure_init();
  return g_stream;
}

void* cuda_allocate(int64_t bytes) {
  ensure_init();
  void* p = nullptr;
  size_t size = bytes > 0 ? static_cast<size_t>(bytes) : 256;
  cudaError_t err = cudaMallocAsync(&p, size, g_stream);
  if (err == cudaErrorMemoryAllocation) {
    // The pool keeps freed memory (see ensure_init): hand it back to the driver once and retry.
    cudaGetLastError();
    cudaMemPool_t pool = nullptr;
    if (cudaStreamSynchronize(g_stream) == cudaSuccess && cudaDeviceGetDefaultMemPool(&pool, 0) == cudaSuccess) {
      cudaMemPoolTrimTo(pool, 0);
      err = cudaMallocAsync(&p, size, g_stream);
    }
  }
  if (err != cudaSuccess) {
    if (err == cudaErrorMemoryAllocation)
      { cudaGetLastError(); throw Error(ErrorCode::OutOfMemory, "out of GPU memory allocating " + std::to_string(bytes) + " bytes"); }
    throw_cuda(err, "cudaMallocAsync");
  }
  return p;
}

void cuda_release(void* p) {
  if (p && g_stream) {
    if (cudaFreeAsync(p, g_stream) != cudaSuccess) cudaGetLastError();
  }
}

void cuda_copy_to_device(void* dst, const void* src, int64_t bytes) {
  ensure_init();
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g_stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(g_stream);  // src is pageable host memory owned by the caller
  if (err != cudaSuccess) throw_cuda(err, "copy to device");
}

void cuda_copy_to_host(void* dst, const void* src, int64_t bytes) {
  ensure_init();
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g_stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(g_stream);
  if (err != cudaSuccess) throw_cuda(err, "copy to host");
}

void cuda_copy_device_to_device(void* dst, const void* src, int64_t bytes) {
  ensure_init();
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, g_stream);
  if (err != cudaSuccess) throw_cuda(err, "device copy");
}

void cuda_synchronize() {
  ensure_init();
  cudaError_t err = cudaStreamSynchronize(g_stream);
  if (err != cudaSuccess) throw_cuda(err, "stream synchronize");
}

void cuda_check(const char* what) {
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, what);
}

void* cuda_event_create() {
  ensure_init();
  cudaEvent_t e = nullptr;
  cudaError_t err = cudaEventCreate(&e);
  if (err != cudaSuccess) throw_cuda(err, "cudaEventCreate");
  return e;
}

void cuda_event_destroy(void* event) {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

void cuda_event_record(void* event) {
  cudaError_t err = cudaEventRecord(static_cast<cudaEvent_t>(event), g_stream);
  if (err != cudaSuccess) throw_cuda(err, "cudaEventRecord");
}

float cuda_event_elapsed_ms(void* start, void* end) {
  cudaError_t err = cudaEventSynchronize(static_cast<cudaEvent_t>(end));
  float ms = 0;
  if (err == cudaSuccess) err = cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end));
  if (err != cudaSuccess) throw_cuda(err, "cudaEventElapsedTime");
  return ms;
}

void* cuda_graph_capture(const std::function<void(void*)>& record) {
  ensure_init();
  cudaStream_t s = nullptr;
  cudaError_t err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  if (err != cudaSuccess) throw_cuda(err, "cudaStreamCreate (graph capture)");
  err = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
  if (err != cudaSuccess) {
    cudaStreamDestroy(s);
    throw_cuda(err, "cudaStreamBeginCapture");
  }
  cudaGraph_t graph = nullptr;
  try {
    record(s);
  } catch (...) {
    cudaStreamEndCapture(s, &graph);  // ends the (possibly invalidated) capture
    if (graph) cudaGraphDestroy(graph);
    cudaStreamDestroy(s);
    cudaGetLastError();
    throw;
  }
  err = cudaStreamEndCapture(s, &graph);
  cudaStreamDestroy(s);
  if (err != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    throw_cuda(err, "cudaStreamEndCapture (was the work capturable?)");
  }
  cudaGraphExec_t exec = nullptr;
  err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (err != cudaSuccess) throw_cuda(err, "cudaGraphInstantiate");
  return exec;
}

void cuda_graph_launch(void* exec) {
  ensure_init();
  cudaError_t err = cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), g_stream);
  if (err != cudaSuccess) throw_cuda(err, "cudaGraphLaunch");
}

void cuda_graph_destroy(void* exec) {
  if (exec && cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec)) != cudaSuccess) cudaGetLastError();
}

}  // namespace ha
