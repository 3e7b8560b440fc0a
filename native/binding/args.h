// Argument plumbing shared by the bindings: native tensor handles, typed JS errors, checks.
// Every check runs on the JS thread before any work is queued.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "core/cuda_backend.h"
#include "core/device_queue.h"
#include "core/errors.h"
#include "core/storage.h"

namespace ha::binding {

// JS handle over a Storage. dispose() drops the reference; the GC finalizer is the safety net.
class NativeTensor : public Napi::ObjectWrap<NativeTensor> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  static Napi::Object NewInstance(Napi::Env env, StoragePtr storage);
  static bool IsInstance(Napi::Value value);
  explicit NativeTensor(const Napi::CallbackInfo& info);
  StoragePtr storage() const { return storage_; }

 private:
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  StoragePtr storage_;
};

Napi::Error make_js_error(Napi::Env env, ErrorCode code, const std::string& message, const std::string& argument = "");

// Property readers on a params object; each throws ha::Error naming the property.
StoragePtr tensor_prop(const Napi::Object& obj, const char* name, bool optional = false);
int64_t int_prop(const Napi::Object& obj, const char* name);
double number_prop(const Napi::Object& obj, const char* name);
bool bool_prop(const Napi::Object& obj, const char* name, bool fallback);
Device device_prop(const Napi::Object& obj, const char* name = "device");
DType dtype_prop(const Napi::Object& obj, const char* name = "dtype");

// Defence in depth behind the TS validation: a wrong size must never reach a kernel.
void expect_tensor(const StoragePtr& t, const char* name, Device device, DType dtype, int64_t numel);

// Allocates an op output (poisoned with NaN bytes when HYBRID_ATTENTION_POISON=1, so an
// element a kernel forgets to write shows up in tests).
StoragePtr allocate_output(Device device, DType dtype, int64_t numel);

// Queues `run` on the device's worker; errors flow to `outputs`.
void submit(Device device, std::vector<StoragePtr> inputs, std::vector<StoragePtr> outputs, std::function<void()> run);

// Queues `run` on the device's worker and returns a promise settled on the JS thread: resolved
// with make_result(env) after `run`, rejected with the typed error if it (or an input) failed.
Napi::Promise submit_promise(Napi::Env env, Device device, std::vector<StoragePtr> inputs, std::function<void()> run,
                             std::function<Napi::Value(Napi::Env)> make_result);

Napi::Object wrap_outputs(Napi::Env env, const std::vector<std::pair<const char*, StoragePtr>>& outputs);

// One op call: reads the device from the params object, checks and holds inputs, allocates
// outputs, queues the kernel and returns the outputs as handles.
class OpCall {
 public:
  explicit OpCall(const Napi::Object& args) : args_(args), device_(device_prop(args)) {}
  Device device() const { return device_; }
  const Napi::Object& args() const { return args_; }
  // Checked input; null when optional and absent.
  const void* in(const char* name, DType dtype, int64_t numel, bool optional = false);
  void* out(const char* name, DType dtype, int64_t numel);
  // Checked tensor the op updates in place (optimizer state, accumulated gradients): ordered
  // like an input, and a failure marks it like an output. Not returned by result().
  void* inout(const char* name, DType dtype, int64_t numel);
  void submit(std::function<void()> run);
  Napi::Object result(Napi::Env env) const;

 private:
  Napi::Object args_;
  Device device_;
  std::vector<StoragePtr> inputs_;
  std::vector<std::pair<const char*, StoragePtr>> outputs_;
  std::vector<StoragePtr> updated_;
};

// Throws NotImplemented for ops that have no kernel on `device` yet, and checks the CPU dtypes.
void require_cpu_float(const OpCall& call, DType dtype, const char* op);

// The dtypes each backend computes in: f64/f32 on the CPU, bf16/f16/f32 on CUDA.
void require_backend_dtype(Device device, DType dtype, const char* argument);

// Runs the CPU or the CUDA kernel of an op (inside a queued job).
#ifdef HA_WITH_CUDA
#define HA_DISPATCH(device, params, cpu_fn, cuda_fn) \
  ((device) == ::ha::Device::CPU ? cpu_fn(params) : cuda_fn(params, ::ha::cuda_stream()))
#else
#define HA_DISPATCH(device, params, cpu_fn, cuda_fn) cpu_fn(params)
#endif

}  // namespace ha::binding


// Converts native exceptions into typed JS errors at the binding boundary.
#define HA_BINDING_TRY try {
#define HA_BINDING_CATCH(env)                                                                   \
  }                                                                                            \
  catch (const ha::Error& e) {                                                                 \
    throw ha::binding::make_js_error(env, e.code, e.what(), e.argument);                        \
  }                                                                                            \
  catch (const std::bad_alloc&) {                                                              \
    throw ha::binding::make_js_error(env, ha::ErrorCode::OutOfMemory, "out of host memory");  \
  }                                                                                            \
  catch (const std::invalid_argument& e) {                                                     \
    throw ha::binding::make_js_error(env, ha::ErrorCode::InvalidArgument, e.what());           \
  }

namespace ha::binding {

// The shape of every op binding: parse the call from info[0], let `body` check inputs, declare
// outputs and submit the kernel, return the outputs as handles; native errors become typed JS
// errors.
template <class Body>
Napi::Value op_binding(const Napi::CallbackInfo& info, Body&& body) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  OpCall call(info[0].As<Napi::Object>());
  body(call);
  return call.result(env);
  HA_BINDING_CATCH(env)
}

}  // namespace ha::binding
