// Device memory owned by tensors. A Storage is shared by the JS handle and by every queued job
// that reads or writes it, so memory outlives a dispose() that races queued work.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "core/dtype.h"
#include "core/errors.h"

namespace ha {

enum class Device : int32_t { CPU = 0, CUDA = 1 };
inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

struct DeferredError {
  ErrorCode code;
  std::string message;
  std::string argument;
};

class Storage {
 public:
  static std::shared_ptr<Storage> allocate(Device device, DType dtype, int64_t numel);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return numel_; }
  int64_t bytes() const { return bytes_; }
  void* data() const { return data_; }

  // Set by the device worker when the job that should have written this storage failed;
  // read only on that worker (reads and dependent jobs run there), so no lock is needed.
  std::shared_ptr<DeferredError> error;

 private:
  Storage(Device d, DType t, int64_t n, int64_t b, void* p) : device_(d), dtype_(t), numel_(n), bytes_(b), data_(p) {}
  Device device_;
  DType dtype_;
  int64_t numel_;
  int64_t bytes_;
  void* data_;
};

using StoragePtr = std::shared_ptr<Storage>;

struct LiveCounters {
  int64_t tensors;
  int64_t bytes;
};
LiveCounters live_counters(Device d);

}  // namespace ha
