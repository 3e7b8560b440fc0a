// Tensor lifecycle for JS: allocation, upload, asynchronous read-back, device copies, casts,
// live counters and device information.
#include <cstring>
#include <future>
#include <memory>
#include <vector>

#include "binding/args.h"
#include "binding/completion.h"
#include "binding/tensor_binding.h"
#include "core/cuda_memory.h"
#include "core/cuda_backend.h"
#include "ops/cast/cast.h"

namespace ha::binding {

namespace {

// empty({device, dtype, numel}) -> handle (contents undefined)
Napi::Value Empty(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = info[0].As<Napi::Object>();
  Device device = device_prop(a);
  DType dtype = dtype_prop(a);
  int64_t numel = int_prop(a, "numel");
  return NativeTensor::NewInstance(env, allocate_output(device, dtype, numel));
  HA_BINDING_CATCH(env)
}

// fromBytes({device, dtype, numel, data: ArrayBufferView}) -> handle
Napi::Value FromBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = info[0].As<Napi::Object>();
  Device device = device_prop(a);
  DType dtype = dtype_prop(a);
  int64_t numel = int_prop(a, "numel");
  Napi::Value data = a.Get("data");
  if (!data.IsTypedArray() && !data.IsDataView()) throw Error(ErrorCode::InvalidArgument, "data must be a typed array", "data");
  Napi::TypedArray view = data.As<Napi::TypedArray>();
  const uint8_t* src = static_cast<const uint8_t*>(view.ArrayBuffer().Data()) + view.ByteOffset();
  int64_t bytes = numel * dtype_size(dtype);
  if (static_cast<int64_t>(view.ByteLength()) != bytes)
    throw Error(ErrorCode::InvalidArgument, "data holds " + std::to_string(view.ByteLength()) + " bytes, expected " + std::to_string(bytes), "data");
  StoragePtr s = Storage::allocate(device, dtype, numel);
  if (device == Device::CPU) {
    if (bytes) std::memcpy(s->data(), src, bytes);  // fresh storage: no queued job can touch it yet
  } else {
    auto staging = std::make_shared<std::vector<uint8_t>>(src, src + bytes);
    submit(device, {}, {s}, [s, staging] { cuda_copy_to_device(s->data(), staging->data(), s->bytes()); });
  }
  return NativeTensor::NewInstance(env, s);
  HA_BINDING_CATCH(env)
}

// read(handle) -> Promise<ArrayBuffer> of the raw bytes, after every queued write finished.
Napi::Value Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = Napi::Object::New(env);
  a.Set("tensor", info[0]);
  StoragePtr s = tensor_prop(a, "tensor");
  auto host = std::make_shared<std::unique_ptr<uint8_t[]>>(new uint8_t[s->bytes() > 0 ? s->bytes() : 1]);
  int64_t bytes = s->bytes();
  return submit_promise(
      env, s->device(), {s},
      [s, host] {
        if (s->device() == Device::CPU) std::memcpy(host->get(), s->data(), s->bytes());
        else cuda_copy_to_host(host->get(), s->data(), s->bytes());
      },
      [host, bytes](Napi::Env env) -> Napi::Value {
        uint8_t* raw = host->release();
        return Napi::ArrayBuffer::New(env, raw, bytes, [](Napi::Env, void* p) { delete[] static_cast<uint8_t*>(p); });
      });
  HA_BINDING_CATCH(env)
}

// copyTo(handle, device) -> handle on `device`, ordered after pending writes of the source.
Napi::Value CopyTo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = info[0].As<Napi::Object>();
  StoragePtr src = tensor_prop(a, "tensor");
  Device dst_device = device_prop(a);
  StoragePtr dst = Storage::allocate(dst_device, src->dtype(), src->numel());
  if (src->device() == dst_device) {
    submit(dst_device, {src}, {dst}, [src, dst] {
      if (dst->device() == Device::CPU) std::memcpy(dst->data(), src->data(), src->bytes());
      else cuda_copy_device_to_device(dst->data(), src->data(), src->bytes());
    });
  } else {
    // Two queues: the source's worker stages the bytes on the host, the destination's worker
    // waits for them. The source never waits on the destination, so this cannot deadlock.
    auto staged = std::make_shared<std::promise<std::shared_ptr<DeferredError>>>();
    auto host = std::make_shared<std::vector<uint8_t>>(src->bytes());
    Job first;
    first.inputs = {src};
    first.run = [src, host] {
      if (src->device() == Device::CPU) std::memcpy(host->data(), src->data(), src->bytes());
      else cuda_copy_to_host(host->data(), src->data(), src->bytes());
    };
    first.done = [staged](const std::shared_ptr<DeferredError>& e) { staged->set_value(e); };
    auto ready = staged->get_future().share();
    queue_for(src->device()).submit(std::move(first));
    Job second;
    second.outputs = {dst};
    second.run = [dst, host, ready] {
      auto err = ready.get();
      if (err) throw Error(err->code, err->message, err->argument);
      if (dst->device() == Device::CPU) std::memcpy(dst->data(), host->data(), dst->bytes());
      else cuda_copy_to_device(dst->data(), host->data(), dst->bytes());
    };
    queue_for(dst_device).submit(std::move(second));
  }
  return NativeTensor::NewInstance(env, dst);
  HA_BINDING_CATCH(env)
}

// cast({tensor, dtype}) -> handle with the same device and shape.
Napi::Value Cast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = info[0].As<Napi::Object>();
  StoragePtr src = tensor_prop(a, "tensor");
  DType dtype = dtype_prop(a);
  StoragePtr dst = allocate_output(src->device(), dtype, src->numel());
  submit(src->device(), {src}, {dst}, [src, dst] {
    if (src->device() == Device::CPU) {
      cast_cpu(src->data(), src->dtype(), dst->data(), dst->dtype(), src->numel());
    } else {
#ifdef HA_WITH_CUDA
      cast_cuda(src->data(), src->dtype(), dst->data(), dst->dtype(), src->numel(), cuda_stream());
#endif
    }
  });
  return NativeTensor::NewInstance(env, dst);
  HA_BINDING_CATCH(env)
}

// synchronize(device) -> Promise<void> once every op queued so far has run.
Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = info[0].As<Napi::Object>();
  Device device = device_prop(a);
  return submit_promise(
      env, device, {}, [device] { if (device == Device::CUDA) cuda_synchronize(); },
      [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  HA_BINDING_CATCH(env)
}

Napi::Value LiveCounters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = info[0].As<Napi::Object>();
  auto c = live_counters(device_prop(a));
  Napi::Object o = Napi::Object::New(env);
  o.Set("tensors", Napi::Number::New(env, static_cast<double>(c.tensors)));
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(c.bytes)));
  return o;
  HA_BINDING_CATCH(env)
}

// { used, usedPeak, reserved, reservedPeak } bytes of the CUDA pool; { reset: true } restarts the peaks.
Napi::Value CudaMemoryStatsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  bool reset = info.Length() > 0 && info[0].IsObject() && bool_prop(info[0].As<Napi::Object>(), "reset", false);
  CudaMemoryStats s = cuda_memory_stats(reset);
  Napi::Object o = Napi::Object::New(env);
  o.Set("used", Napi::Number::New(env, static_cast<double>(s.used)));
  o.Set("usedPeak", Napi::Number::New(env, static_cast<double>(s.used_peak)));
  o.Set("reserved", Napi::Number::New(env, static_cast<double>(s.reserved)));
  o.Set("reservedPeak", Napi::Number::New(env, static_cast<double>(s.reserved_peak)));
  return o;
  HA_BINDING_CATCH(env)
}

Napi::Value CudaInfoJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CudaInfo c = cuda_info();
  Napi::Object o = Napi::Object::New(env);
  o.Set("compiled", c.compiled);
  o.Set("available", c.available);
  o.Set("reason", c.reason);
  o.Set("name", c.name);
  o.Set("deviceCount", c.device_count);
  o.Set("computeCapability", std::to_string(c.major) + "." + std::to_string(c.minor));
  o.Set("smCount", c.sm_count);
  o.Set("totalMemory", static_cast<double>(c.total_memory));
  o.Set("freeMemory", static_cast<double>(c.free_memory));
  o.Set("runtimeVersion", c.runtime_version);
  o.Set("driverVersion", c.driver_version);
  return o;
}


// GPU timing for benchmarks: eventTimeline(n) creates n events; recordEvent(timeline, i) records
// event i on the stream in queue order; elapsed(timeline) resolves with the n-1 intervals (ms).
struct Timeline {
  std::vector<void*> events;
  ~Timeline() { for (void* e : events) cuda_event_destroy(e); }
};

Napi::Value EventTimeline(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  int64_t n = info[0].As<Napi::Number>().Int64Value();
  if (n < 2 || n > 100000) throw Error(ErrorCode::InvalidArgument, "timeline needs 2..100000 events", "n");
  auto timeline = std::make_shared<Timeline>();
  for (int64_t i = 0; i < n; ++i) timeline->events.push_back(cuda_event_create());
  auto* holder = new std::shared_ptr<Timeline>(timeline);
  return Napi::External<std::shared_ptr<Timeline>>::New(env, holder, [](Napi::Env, std::shared_ptr<Timeline>* p) { delete p; });
  HA_BINDING_CATCH(env)
}

Napi::Value RecordEvent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  auto timeline = *info[0].As<Napi::External<std::shared_ptr<Timeline>>>().Data();
  int64_t i = info[1].As<Napi::Number>().Int64Value();
  if (i < 0 || i >= static_cast<int64_t>(timeline->events.size())) throw Error(ErrorCode::InvalidArgument, "event index out of range", "i");
  submit(Device::CUDA, {}, {}, [timeline, i] { cuda_event_record(timeline->events[i]); });
  return env.Undefined();
  HA_BINDING_CATCH(env)
}

Napi::Value Elapsed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  auto timeline = *info[0].As<Napi::External<std::shared_ptr<Timeline>>>().Data();
  auto result = std::make_shared<std::vector<float>>();
  return submit_promise(
      env, Device::CUDA, {},
      [timeline, result] {
        for (size_t i = 1; i < timeline->events.size(); ++i)
          result->push_back(cuda_event_elapsed_ms(timeline->events[i - 1], timeline->events[i]));
      },
      [result](Napi::Env env) -> Napi::Value {
        Napi::Array arr = Napi::Array::New(env, result->size());
        for (size_t i = 0; i < result->size(); ++i) arr.Set(i, Napi::Number::New(env, (*result)[i]));
        return arr;
      });
  HA_BINDING_CATCH(env)
}

}  // namespace

void init_tensor_binding(Napi::Env env, Napi::Object exports) {
  NativeTensor::Init(env, exports);
  exports.Set("empty", Napi::Function::New(env, Empty));
  exports.Set("fromBytes", Napi::Function::New(env, FromBytes));
  exports.Set("read", Napi::Function::New(env, Read));
  exports.Set("copyTo", Napi::Function::New(env, CopyTo));
  exports.Set("cast", Napi::Function::New(env, Cast));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("liveCounters", Napi::Function::New(env, LiveCounters));
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfoJs));
  exports.Set("cudaMemoryStats", Napi::Function::New(env, CudaMemoryStatsJs));
  exports.Set("eventTimeline", Napi::Function::New(env, EventTimeline));
  exports.Set("recordEvent", Napi::Function::New(env, RecordEvent));
  exports.Set("elapsed", Napi::Function::New(env, Elapsed));
}

}  // namespace ha::binding
