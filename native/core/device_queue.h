// In-order work queue per device: a worker thread runs jobs in submission order, so ops return
// to JS at once and heavy work never blocks the event loop. For the GPU the worker only
// enqueues kernels on the library's CUDA stream (and waits for it where a read needs to).
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "core/storage.h"

namespace ha {

// A job reads `inputs` and writes `outputs`. If an input carries a deferred error the job is
// skipped and the error flows to the outputs; if the job throws, its error is stored on them.
// Either way the error surfaces at the next read of an output, never as a crash.
struct Job {
  std::vector<StoragePtr> inputs;
  std::vector<StoragePtr> outputs;
  std::function<void()> run;
  // Called (on the worker) after run or after the error was recorded; used by reads.
  std::function<void(const std::shared_ptr<DeferredError>&)> done;
};

class DeviceQueue {
 public:
  explicit DeviceQueue(Device device);
  ~DeviceQueue();
  void submit(Job job);
  // Blocks the caller until every job submitted before returned (tests, shutdown).
  void drain();
  Device device() const { return device_; }

 private:
  void loop();
  Device device_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<Job> jobs_;
  bool stopping_ = false;
  bool busy_ = false;
  std::thread worker_;
};

DeviceQueue& queue_for(Device device);

}  // namespace ha
