#include "core/device_queue.h"

#include <exception>

namespace ha {

DeviceQueue::DeviceQueue(Device device) : device_(device), worker_([this] { loop(); }) {}

DeviceQueue::~DeviceQueue() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void DeviceQueue::submit(Job job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void DeviceQueue::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_cv_.wait(lock, [this] { return jobs_.empty() && !busy_; });
}

void DeviceQueue::loop() {
  while (true) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping and nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
      busy_ = true;
    }
    std::shared_ptr<DeferredError> error;
    for (auto& in : job.inputs)
      if (in && in->error) { error = in->error; break; }
    if (!error && job.run) {
      try {
        job.run();
      } catch (const Error& e) {
        error = std::make_shared<DeferredError>(DeferredError{e.code, e.what(), e.argument});
      } catch (const std::bad_alloc&) {
        error = std::make_shared<DeferredError>(DeferredError{ErrorCode::OutOfMemory, "out of host memory inside a queued op"});
      } catch (const std::invalid_argument& e) {
        error = std::make_shared<DeferredError>(DeferredError{ErrorCode::InvalidArgument, e.what()});
      } catch (const std::exception& e) {
        error = std::make_shared<DeferredError>(DeferredError{ErrorCode::Kernel, e.what()});
      } catch (...) {
        error = std::make_shared<DeferredError>(DeferredError{ErrorCode::Kernel, "unknown failure inside a queued op"});
      }
    }
    if (error)
      for (auto& out : job.outputs)
        if (out) out->error = error;
    if (job.done) job.done(error);
    job = Job();  // release storages on the worker, in order
    {
      std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
    }
    idle_cv_.notify_all();
  }
}

DeviceQueue& queue_for(Device device) {
  // Leaked on purpose: workers must outlive static destruction order at process exit.
  static DeviceQueue* cpu = new DeviceQueue(Device::CPU);
  if (device == Device::CPU) return *cpu;
  static DeviceQueue* cuda = new DeviceQueue(Device::CUDA);
  return *cuda;
}

}  // namespace ha
