// hybridAttentionForward / hybridAttentionBackward: validate, allocate outputs, queue the kernel.
#include "binding/args.h"
#include "binding/tensor_binding.h"
#include "core/cuda_backend.h"
#include "ops/hybrid_attention/hybrid_attention.h"

namespace ha::binding {

namespace {

struct HybridShape {
  Device device;
  HybridAttentionParams p;
};

HybridShape read_hybrid_params(const Napi::Object& a) {
  HybridShape s;
  s.device = device_prop(a);
  HybridAttentionParams& p = s.p;
  p.dtype = dtype_prop(a);
  p.batch = int_prop(a, "batch");
  p.heads = int_prop(a, "heads");
  p.kv_heads = int_prop(a, "kvHeads");
  p.seqlen = int_prop(a, "seqlen");
  p.head_dim = int_prop(a, "headDim");
  p.value_dim = int_prop(a, "valueDim");
  p.feature_dim = int_prop(a, "featureDim");
  p.window = int_prop(a, "window");
  p.sinks = int_prop(a, "sinks");
  int64_t mode = int_prop(a, "mode"), geometry = int_prop(a, "geometry"), lambda = int_prop(a, "lambda");
  if (mode < 0 || mode > 6) throw Error(ErrorCode::InvalidArgument, "unknown mode", "mode");
  if (geometry < 0 || geometry > 1) throw Error(ErrorCode::InvalidArgument, "unknown geometry", "geometry");
  if (lambda < 0 || lambda > 1) throw Error(ErrorCode::InvalidArgument, "unknown lambda kind", "lambda");
  p.mode = static_cast<HybridMode>(mode);
  p.geometry = static_cast<WindowGeometry>(geometry);
  p.lambda_kind = static_cast<LambdaKind>(lambda);
  p.scale = number_prop(a, "scale");
  if (p.batch < 1 || p.heads < 1 || p.kv_heads < 1 || p.seqlen < 0 || p.head_dim < 1 || p.value_dim < 1 || p.feature_dim < 1)
    throw Error(ErrorCode::InvalidArgument, "sizes must be positive", "q");
  if (p.heads % p.kv_heads != 0) throw Error(ErrorCode::InvalidArgument, "heads must be a multiple of kv heads", "k");
  if (p.window < 1) throw Error(ErrorCode::InvalidArgument, "window must be >= 1", "window");
  if (p.sinks < 1) throw Error(ErrorCode::InvalidArgument, "sinks must be >= 1", "sinks");
  return s;
}

// Looks up and checks every forward input; keeps them alive in `held`.
void bind_hybrid_inputs(const Napi::Object& a, HybridShape& s, std::vector<StoragePtr>& held) {
  HybridAttentionParams& p = s.p;
  DType acc = accum_dtype(p.dtype);
  int64_t rows = p.batch * p.heads * p.seqlen, kv_rows = p.batch * p.kv_heads * p.seqlen;
  struct In { const char* name; const void** slot; DType dtype; int64_t numel; bool optional; };
  In ins[] = {
      {"q", &p.q, p.dtype, rows * p.head_dim, false},
      {"k", &p.k, p.dtype, kv_rows * p.head_dim, false},
      {"v", &p.v, p.dtype, kv_rows * p.value_dim, false},
      {"fq", &p.fq, p.dtype, rows * p.feature_dim, false},
      {"fk", &p.fk, p.dtype, rows * p.feature_dim, false},
      {"gamma", &p.gamma, acc, p.heads, false},
      {"keep", &p.keep, acc, p.batch * p.heads, true},
  };
  for (auto& in : ins) {
    StoragePtr t = tensor_prop(a, in.name, in.optional);
    expect_tensor(t, in.name, s.device, in.dtype, in.numel);
    *in.slot = t ? t->data() : nullptr;
    held.push_back(t);
  }
}

// Value checks that need the data: run on the worker (CPU tensors), before the kernel.
template <typename Acc>
void check_gamma_keep_values(const HybridAttentionParams& p) {
  const Acc* gamma = static_cast<const Acc*>(p.gamma);
  for (int64_t h = 0; h < p.heads; ++h)
    if (!(gamma[h] > 0 && gamma[h] < 1))
      throw Error(ErrorCode::InvalidArgument, "gamma[" + std::to_string(h) + "] = " + std::to_string(static_cast<double>(gamma[h])) + " is outside (0, 1)", "gamma");
  if (!p.keep) return;
  const Acc* keep = static_cast<const Acc*>(p.keep);
  for (int64_t i = 0; i < p.batch * p.heads; ++i)
    if (!(keep[i] == 0 || keep[i] == 1))
      throw Error(ErrorCode::InvalidArgument, "keep[" + std::to_string(i) + "] is not 0 or 1", "keep");
}

void check_values_cpu(const HybridAttentionParams& p) {
  if (p.dtype == DType::F64) check_gamma_keep_values<double>(p);
  else check_gamma_keep_values<float>(p);
}

void check_backend(const HybridShape& s) {
  if (s.device == Device::CPU) {
    if (s.p.dtype != DType::F64 && s.p.dtype != DType::F32)
      throw Error(ErrorCode::InvalidArgument, std::string("the CPU backend computes in f64 or f32, got ") + dtype_name(s.p.dtype) + " (cast first)", "q");
  } else {
#ifndef HA_WITH_CUDA
    throw Error(ErrorCode::Device, "this build has no CUDA support", "device");
#else
    if (s.p.dtype == DType::F64 || s.p.dtype == DType::I32)
      throw Error(ErrorCode::InvalidArgument, std::string("the CUDA backend computes in bf16, f16 or f32, got ") + dtype_name(s.p.dtype), "q");
#endif
  }
}

// `naive` selects the quadratic reference (tests only; CPU only).
Napi::Value RunForward(const Napi::CallbackInfo& info, bool naive) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = info[0].As<Napi::Object>();
  HybridShape s = read_hybrid_params(a);
  if (naive && s.device != Device::CPU) throw Error(ErrorCode::InvalidArgument, "the naive reference runs on cpu", "device");
  check_backend(s);
  std::vector<StoragePtr> inputs;
  bind_hybrid_inputs(a, s, inputs);
  HybridAttentionParams& p = s.p;
  DType acc = accum_dtype(p.dtype);
  int64_t rows = p.batch * p.heads * p.seqlen;
  StoragePtr y = allocate_output(s.device, p.dtype, rows * p.value_dim);
  StoragePtr c = allocate_output(s.device, acc, rows);
  StoragePtr den_swa = allocate_output(s.device, acc, rows);
  StoragePtr den_la = allocate_output(s.device, acc, rows);
  p.y = y->data();
  p.c = c->data();
  p.den_swa = den_swa->data();
  p.den_la = den_la->data();
  Device device = s.device;
  submit(device, inputs, {y, c, den_swa, den_la}, [p, device, naive] {
    if (device == Device::CPU) check_values_cpu(p);
    if (naive) hybrid_attention_forward_naive_cpu(p);
    else if (device == Device::CPU) hybrid_attention_forward_cpu(p);
#ifdef HA_WITH_CUDA
    else hybrid_attention_forward_cuda(p, cuda_stream());
#endif
  });
  return wrap_outputs(env, {{"y", y}, {"c", c}, {"denSwa", den_swa}, {"denLa", den_la}});
  HA_BINDING_CATCH(env)
}

Napi::Value RunBackward(const Napi::CallbackInfo& info, bool naive) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = info[0].As<Napi::Object>();
  HybridShape s = read_hybrid_params(a);
  if (naive && s.device != Device::CPU) throw Error(ErrorCode::InvalidArgument, "the naive reference runs on cpu", "device");
  check_backend(s);
  std::vector<StoragePtr> inputs;
  bind_hybrid_inputs(a, s, inputs);
  HybridAttentionGradParams g;
  g.fwd = s.p;
  HybridAttentionParams& p = g.fwd;
  DType acc = accum_dtype(p.dtype);
  int64_t rows = p.batch * p.heads * p.seqlen, kv_rows = p.batch * p.kv_heads * p.seqlen;
  struct Saved { const char* name; void** slot; DType dtype; int64_t numel; };
  Saved saved[] = {{"y", &p.y, p.dtype, rows * p.value_dim},
                   {"c", &p.c, acc, rows},
                   {"denSwa", &p.den_swa, acc, rows},
                   {"denLa", &p.den_la, acc, rows}};
  for (auto& sv : saved) {
    StoragePtr t = tensor_prop(a, sv.name);
    expect_tensor(t, sv.name, s.device, sv.dtype, sv.numel);
    *sv.slot = t->data();
    inputs.push_back(t);
  }
  StoragePtr dy = tensor_prop(a, "dy");
  expect_tensor(dy, "dy", s.device, p.dtype, rows * p.value_dim);
  inputs.push_back(dy);
  g.dy = dy->data();
  StoragePtr dq = allocate_output(s.device, p.dtype, rows * p.head_dim);
  StoragePtr dk = allocate_output(s.device, p.dtype, kv_rows * p.head_dim);
  StoragePtr dv = allocate_output(s.device, p.dtype, kv_rows * p.value_dim);
  StoragePtr dfq = allocate_output(s.device, p.dtype, rows * p.feature_dim);
  StoragePtr dfk = allocate_output(s.device, p.dtype, rows * p.feature_dim);
  StoragePtr dgamma = allocate_output(s.device, acc, p.heads);
  g.dq = dq->data();
  g.dk = dk->data();
  g.dv = dv->data();
  g.dfq = dfq->data();
  g.dfk = dfk->data();
  g.dgamma = dgamma->data();
  Device device = s.device;
  submit(device, inputs, {dq, dk, dv, dfq, dfk, dgamma}, [g, device, naive] {
    if (device == Device::CPU) check_values_cpu(g.fwd);
    if (naive) hybrid_attention_backward_naive_cpu(g);
    else if (device == Device::CPU) hybrid_attention_backward_cpu(g);
#ifdef HA_WITH_CUDA
    else hybrid_attention_backward_cuda(g, cuda_stream());
#endif
  });
  return wrap_outputs(env, {{"dq", dq}, {"dk", dk}, {"dv", dv}, {"dfq", dfq}, {"dfk", dfk}, {"dgamma", dgamma}});
  HA_BINDING_CATCH(env)
}

}  // namespace

void init_hybrid_attention_binding(Napi::Env env, Napi::Object exports) {
  exports.Set("hybridAttentionForward", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return RunForward(i, false); }));
  exports.Set("hybridAttentionBackward", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return RunBackward(i, false); }));
  exports.Set("hybridAttentionForwardNaive", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return RunForward(i, true); }));
  exports.Set("hybridAttentionBackwardNaive", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return RunBackward(i, true); }));
}

}  // namespace ha::binding
