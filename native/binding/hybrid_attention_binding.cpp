// hybridAttentionForward / hybridAttentionBackward: validate, allocate outputs, queue the kernel.
#include "binding/args.h"
#include "binding/tensor_binding.h"
#include "core/cuda_backend.h"
#include "ops/hybrid_attention/hybrid_attention.h"

namespace ha::binding {

namespace {

// Value checks that need the data: run on the worker (CPU tensors), before the kernel.
template <typename Acc>
void check_gamma_keep_values(const HybridAttentionParams& p) {
  const Acc* gamma = static_cast<const Acc*>(p.gamma);
  // gamma = 1 is allowed with lambda = 1 (inference-time hybridisation), not with 1 - gamma
  const bool allow_one = p.lambda_kind == LambdaKind::One;
  for (int64_t h = 0; h < p.heads; ++h)
    if (!(gamma[h] > 0 && (gamma[h] < 1 || (allow_one && gamma[h] == 1))))
      throw Error(ErrorCode::InvalidArgument, "gamma[" + std::to_string(h) + "] = " + std::to_string(static_cast<double>(gamma[h])) + " is outside " + (allow_one ? "(0, 1]" : "(0, 1) with lambda affine"), "gamma");
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


// Reads sizes and options, checks them, and binds every forward input through `call`.
HybridAttentionParams read_hybrid_params(OpCall& call, bool naive) {
  const Napi::Object& a = call.args();
  HybridAttentionParams p;
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
  if (naive && call.device() != Device::CPU) throw Error(ErrorCode::InvalidArgument, "the naive reference runs on cpu", "device");
  require_backend_dtype(call.device(), p.dtype, "q");

  DType acc = accum_dtype(p.dtype);
  int64_t rows = p.batch * p.heads * p.seqlen, kv_rows = p.batch * p.kv_heads * p.seqlen;
  p.q = call.in("q", p.dtype, rows * p.head_dim);
  p.k = call.in("k", p.dtype, kv_rows * p.head_dim);
  p.v = call.in("v", p.dtype, kv_rows * p.value_dim);
  p.fq = call.in("fq", p.dtype, rows * p.feature_dim);
  p.fk = call.in("fk", p.dtype, rows * p.feature_dim);
  p.gamma = call.in("gamma", acc, p.heads);
  p.keep = call.in("keep", acc, p.batch * p.heads, true);
  return p;
}

// `naive` selects the quadratic reference (tests only; CPU only).
Napi::Value RunForward(const Napi::CallbackInfo& info, bool naive) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  OpCall call(info[0].As<Napi::Object>());
  HybridAttentionParams p = read_hybrid_params(call, naive);
  DType acc = accum_dtype(p.dtype);
  int64_t rows = p.batch * p.heads * p.seqlen;
  p.y = call.out("y", p.dtype, rows * p.value_dim);
  p.c = call.out("c", acc, rows);
  p.den_swa = call.out("denSwa", acc, rows);
  p.den_la = call.out("denLa", acc, rows);
  Device device = call.device();
  call.submit([p, device, naive] {
    if (device == Device::CPU) check_values_cpu(p);
    if (naive) hybrid_attention_forward_naive_cpu(p);
    else HA_DISPATCH(device, p, hybrid_attention_forward_cpu, hybrid_attention_forward_cuda);
  });
  return call.result(env);
  HA_BINDING_CATCH(env)
}

Napi::Value RunBackward(const Napi::CallbackInfo& info, bool naive) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  OpCall call(info[0].As<Napi::Object>());
  HybridAttentionGradParams g;
  g.fwd = read_hybrid_params(call, naive);
  HybridAttentionParams& p = g.fwd;
  DType acc = accum_dtype(p.dtype);
  int64_t rows = p.batch * p.heads * p.seqlen, kv_rows = p.batch * p.kv_heads * p.seqlen;
  // the forward's outputs, read here
  p.y = const_cast<void*>(call.in("y", p.dtype, rows * p.value_dim));
  p.c = const_cast<void*>(call.in("c", acc, rows));
  p.den_swa = const_cast<void*>(call.in("denSwa", acc, rows));
  p.den_la = const_cast<void*>(call.in("denLa", acc, rows));
  g.dy = call.in("dy", p.dtype, rows * p.value_dim);
  g.dq = call.out("dq", p.dtype, rows * p.head_dim);
  g.dk = call.out("dk", p.dtype, kv_rows * p.head_dim);
  g.dv = call.out("dv", p.dtype, kv_rows * p.value_dim);
  g.dfq = call.out("dfq", p.dtype, rows * p.feature_dim);
  g.dfk = call.out("dfk", p.dtype, rows * p.feature_dim);
  g.dgamma = call.out("dgamma", acc, p.heads);
  Device device = call.device();
  call.submit([g, device, naive] {
    if (device == Device::CPU) check_values_cpu(g.fwd);
    if (naive) hybrid_attention_backward_naive_cpu(g);
    else HA_DISPATCH(device, g, hybrid_attention_backward_cpu, hybrid_attention_backward_cuda);
  });
  return call.result(env);
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
