#include "binding/args.h"

#include <cstdlib>
#include <cstring>

#include "binding/completion.h"
#include "core/cuda_backend.h"

namespace ha::binding {

namespace {
Napi::FunctionReference* g_tensor_ctor = nullptr;

bool poison_outputs() {
  static const bool on = [] {
    const char* v = std::getenv("HYBRID_ATTENTION_POISON");
    return v && std::strcmp(v, "0") != 0 && *v;
  }();
  return on;
}

// HYBRID_ATTENTION_CPU_EMULATE=bf16|f16: every f32 output of a CPU op is rounded (RNE) to that
// type after the kernel, emulating a naive low-precision computation op by op. Tests use it as
// the baseline of the SPEC tolerance rule for whole-model runs on CUDA (bf16 model vs f64).
DType emulated_cpu_rounding() {
  static const DType t = [] {
    const char* v = std::getenv("HYBRID_ATTENTION_CPU_EMULATE");
    if (v && std::strcmp(v, "bf16") == 0) return DType::BF16;
    if (v && std::strcmp(v, "f16") == 0) return DType::F16;
    return DType::F32;
  }();
  return t;
}

void round_f32_outputs(const std::vector<StoragePtr>& outs, DType to) {
  for (const auto& s : outs) {
    if (s->dtype() != DType::F32) continue;
    float* x = static_cast<float*>(s->data());
    for (int64_t i = 0; i < s->numel(); ++i)
      x[i] = to == DType::BF16 ? bf16_to_f32(f32_to_bf16(x[i])) : f16_to_f32(f32_to_f16(x[i]));
  }
}
}  // namespace

void NativeTensor::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function fn = DefineClass(env, "NativeTensor",
                                  {InstanceMethod("dispose", &NativeTensor::Dispose),
                                   InstanceAccessor("disposed", &NativeTensor::Disposed, nullptr)});
  g_tensor_ctor = new Napi::FunctionReference(Napi::Persistent(fn));
  exports.Set("NativeTensor", fn);
}

NativeTensor::NativeTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeTensor>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw make_js_error(info.Env(), ErrorCode::InvalidArgument, "NativeTensor is created by the library, not by user code");
  auto* holder = info[0].As<Napi::External<StoragePtr>>().Data();
  storage_ = *holder;
}

Napi::Object NativeTensor::NewInstance(Napi::Env env, StoragePtr storage) {
  StoragePtr holder = std::move(storage);
  Napi::External<StoragePtr> ext = Napi::External<StoragePtr>::New(env, &holder);
  return g_tensor_ctor->New({ext});
}

bool NativeTensor::IsInstance(Napi::Value value) {
  return value.IsObject() && value.As<Napi::Object>().InstanceOf(g_tensor_ctor->Value());
}

Napi::Value NativeTensor::Dispose(const Napi::CallbackInfo& info) {
  storage_.reset();
  return info.Env().Undefined();
}

Napi::Value NativeTensor::Disposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), storage_ == nullptr);
}

Napi::Error make_js_error(Napi::Env env, ErrorCode code, const std::string& message, const std::string& argument) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, error_code_name(code)));
  if (!argument.empty()) err.Set("argument", Napi::String::New(env, argument));
  return err;
}

StoragePtr tensor_prop(const Napi::Object& obj, const char* name, bool optional) {
  Napi::Value v = obj.Get(name);
  if (v.IsUndefined() || v.IsNull()) {
    if (optional) return nullptr;
    throw Error(ErrorCode::InvalidArgument, std::string(name) + " is required", name);
  }
  if (!NativeTensor::IsInstance(v)) throw Error(ErrorCode::InvalidArgument, std::string(name) + " must be a tensor", name);
  StoragePtr s = Napi::ObjectWrap<NativeTensor>::Unwrap(v.As<Napi::Object>())->storage();
  if (!s) throw Error(ErrorCode::Disposed, std::string(name) + " was disposed", name);
  return s;
}

int64_t int_prop(const Napi::Object& obj, const char* name) {
  Napi::Value v = obj.Get(name);
  if (!v.IsNumber()) throw Error(ErrorCode::InvalidArgument, std::string(name) + " must be a number", name);
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d))) throw Error(ErrorCode::InvalidArgument, std::string(name) + " must be an integer", name);
  return static_cast<int64_t>(d);
}

double number_prop(const Napi::Object& obj, const char* name) {
  Napi::Value v = obj.Get(name);
  if (!v.IsNumber()) throw Error(ErrorCode::InvalidArgument, std::string(name) + " must be a number", name);
  return v.As<Napi::Number>().DoubleValue();
}

bool bool_prop(const Napi::Object& obj, const char* name, bool fallback) {
  Napi::Value v = obj.Get(name);
  if (v.IsUndefined()) return fallback;
  return v.ToBoolean().Value();
}

Device device_prop(const Napi::Object& obj, const char* name) {
  int64_t d = int_prop(obj, name);
  if (d != 0 && d != 1) throw Error(ErrorCode::InvalidArgument, "unknown device code", name);
  return static_cast<Device>(d);
}

DType dtype_prop(const Napi::Object& obj, const char* name) {
  int64_t d = int_prop(obj, name);
  if (d < 0 || d > 4) throw Error(ErrorCode::InvalidArgument, "unknown dtype code", name);
  return static_cast<DType>(d);
}

void expect_tensor(const StoragePtr& t, const char* name, Device device, DType dtype, int64_t numel) {
  if (!t) return;
  if (t->device() != device)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + " is on " + device_name(t->device()) + ", expected " + device_name(device), name);
  if (t->dtype() != dtype)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + " has dtype " + dtype_name(t->dtype()) + ", expected " + dtype_name(dtype), name);
  if (t->numel() != numel)
    throw Error(ErrorCode::InvalidArgument, std::string(name) + " has " + std::to_string(t->numel()) + " elements, expected " + std::to_string(numel), name);
}

StoragePtr allocate_output(Device device, DType dtype, int64_t numel) {
  StoragePtr s = Storage::allocate(device, dtype, numel);
  if (poison_outputs() && s->bytes() > 0) {
    if (device == Device::CPU) std::memset(s->data(), 0xff, s->bytes());
    else {
      std::vector<unsigned char> nan_bytes(s->bytes(), 0xff);
      cuda_copy_to_device(s->data(), nan_bytes.data(), s->bytes());
    }
  }
  return s;
}

void submit(Device device, std::vector<StoragePtr> inputs, std::vector<StoragePtr> outputs, std::function<void()> run) {
  Job job;
  job.inputs = std::move(inputs);
  job.outputs = std::move(outputs);
  job.run = std::move(run);
  queue_for(device).submit(std::move(job));
}

Napi::Promise submit_promise(Napi::Env env, Device device, std::vector<StoragePtr> inputs, std::function<void()> run,
                             std::function<Napi::Value(Napi::Env)> make_result) {
  auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
  completion_begin(env);
  Job job;
  job.inputs = std::move(inputs);
  job.run = std::move(run);
  job.done = [deferred, make_result = std::move(make_result)](const std::shared_ptr<DeferredError>& error) {
    completion_post([deferred, make_result, error](Napi::Env env) {
      if (error) deferred->Reject(make_js_error(env, error->code, error->message, error->argument).Value());
      else deferred->Resolve(make_result(env));
    });
  };
  queue_for(device).submit(std::move(job));
  return deferred->Promise();
}

Napi::Object wrap_outputs(Napi::Env env, const std::vector<std::pair<const char*, StoragePtr>>& outputs) {
  Napi::Object o = Napi::Object::New(env);
  for (auto& [name, s] : outputs) o.Set(name, NativeTensor::NewInstance(env, s));
  return o;
}

const void* OpCall::in(const char* name, DType dtype, int64_t numel, bool optional) {
  StoragePtr t = tensor_prop(args_, name, optional);
  if (!t) return nullptr;
  expect_tensor(t, name, device_, dtype, numel);
  inputs_.push_back(t);
  return t->data();
}

void* OpCall::out(const char* name, DType dtype, int64_t numel) {
  StoragePtr t = allocate_output(device_, dtype, numel);
  outputs_.emplace_back(name, t);
  return t->data();
}

void* OpCall::inout(const char* name, DType dtype, int64_t numel) {
  StoragePtr t = tensor_prop(args_, name);
  expect_tensor(t, name, device_, dtype, numel);
  inputs_.push_back(t);
  updated_.push_back(t);
  return t->data();
}

void OpCall::submit(std::function<void()> run) {
  std::vector<StoragePtr> outs = updated_;
  for (auto& o : outputs_) outs.push_back(o.second);
  const DType emulate = emulated_cpu_rounding();
  if (device_ == Device::CPU && emulate != DType::F32)
    run = [run = std::move(run), outs, emulate] {
      run();
      round_f32_outputs(outs, emulate);
    };
  binding::submit(device_, inputs_, outs, std::move(run));
}

Napi::Object OpCall::result(Napi::Env env) const { return wrap_outputs(env, outputs_); }

void require_backend_dtype(Device device, DType dtype, const char* argument) {
  if (device == Device::CPU) {
    if (dtype != DType::F64 && dtype != DType::F32)
      throw Error(ErrorCode::InvalidArgument, std::string("the CPU backend computes in f64 or f32, got ") + dtype_name(dtype) + " (cast first)", argument);
    return;
  }
#ifndef HA_WITH_CUDA
  throw Error(ErrorCode::Device, "this build has no CUDA support", "device");
#else
  if (dtype == DType::F64 || dtype == DType::I32)
    throw Error(ErrorCode::InvalidArgument, std::string("the CUDA backend computes in bf16, f16 or f32, got ") + dtype_name(dtype), argument);
#endif
}

void require_cpu_float(const OpCall& call, DType dtype, const char* op) {
  if (call.device() != Device::CPU)
    throw Error(ErrorCode::NotImplemented, std::string(op) + " has no CUDA kernel yet: run it on the cpu", "device");
  if (dtype != DType::F64 && dtype != DType::F32)
    throw Error(ErrorCode::InvalidArgument, std::string("the CPU backend computes in f64 or f32, got ") + dtype_name(dtype) + " (cast first)", "dtype");
}

}  // namespace ha::binding
