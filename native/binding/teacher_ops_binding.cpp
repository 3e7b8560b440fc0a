// Feature maps (SPEC sec. 3), the attention-weight transfer loss (sec. 4) and causal softmax
// attention (the teacher): forward and backward bindings.
#include "binding/args.h"
#include "binding/tensor_binding.h"
#include "ops/feature_map/feature_map.h"
#include "ops/softmax_attention/softmax_attention.h"
#include "ops/transfer_loss/transfer_loss.h"

namespace ha::binding {

namespace {

FeatureMapParams read_feature_map(OpCall& call) {
  const Napi::Object& a = call.args();
  FeatureMapParams p;
  p.dtype = dtype_prop(a);
  p.batch = int_prop(a, "batch");
  p.heads = int_prop(a, "heads");
  p.seqlen = int_prop(a, "seqlen");
  p.in_dim = int_prop(a, "inDim");
  p.proj_dim = int_prop(a, "projDim");
  int64_t kind = int_prop(a, "kind"), act = int_prop(a, "act");
  if (kind < 0 || kind > 2) throw Error(ErrorCode::InvalidArgument, "unknown feature map kind", "kind");
  if (act < 0 || act > 4) throw Error(ErrorCode::InvalidArgument, "unknown activation", "act");
  p.kind = static_cast<FeatureMapKind>(kind);
  p.act = static_cast<FeatureAct>(act);
  require_backend_dtype(call.device(), p.dtype, "x");
  int64_t rows = p.batch * p.heads * p.seqlen;
  p.x = call.in("x", p.dtype, rows * p.in_dim);
  if (p.kind != FeatureMapKind::EluRaw) {
    p.w = call.in("w", p.dtype, p.heads * p.in_dim * p.proj_dim);
    p.b = call.in("b", p.dtype, p.heads * p.proj_dim, true);
  }
  return p;
}

Napi::Value FeatureMapForward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    FeatureMapParams p = read_feature_map(call);
    p.phi = call.out("phi", p.dtype, p.batch * p.heads * p.seqlen * feature_map_out_dim(p));
    Device device = call.device();
    call.submit([p, device] { HA_DISPATCH(device, p, feature_map_forward_cpu, feature_map_forward_cuda); });
  });
}

Napi::Value FeatureMapBackward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    FeatureMapGradParams g;
    g.fwd = read_feature_map(call);
    const FeatureMapParams& p = g.fwd;
    int64_t rows = p.batch * p.heads * p.seqlen;
    g.dphi = call.in("dphi", p.dtype, rows * feature_map_out_dim(p));
    g.dx = call.out("dx", p.dtype, rows * p.in_dim);
    if (p.kind != FeatureMapKind::EluRaw) g.dw = call.out("dw", p.dtype, p.heads * p.in_dim * p.proj_dim);
    if (p.b) g.db = call.out("db", p.dtype, p.heads * p.proj_dim);
    Device device = call.device();
    call.submit([g, device] { HA_DISPATCH(device, g, feature_map_backward_cpu, feature_map_backward_cuda); });
  });
}

TransferLossParams read_transfer_loss(OpCall& call) {
  const Napi::Object& a = call.args();
  TransferLossParams p;
  p.dtype = dtype_prop(a);
  p.batch = int_prop(a, "batch");
  p.heads = int_prop(a, "heads");
  p.kv_heads = int_prop(a, "kvHeads");
  p.seqlen = int_prop(a, "seqlen");
  p.head_dim = int_prop(a, "headDim");
  p.feature_dim = int_prop(a, "featureDim");
  p.scale = number_prop(a, "scale");
  require_backend_dtype(call.device(), p.dtype, "q");
  int64_t rows = p.batch * p.heads * p.seqlen;
  p.q = call.in("q", p.dtype, rows * p.head_dim);
  p.k = call.in("k", p.dtype, p.batch * p.kv_heads * p.seqlen * p.head_dim);
  p.fq = call.in("fq", p.dtype, rows * p.feature_dim);
  p.fk = call.in("fk", p.dtype, rows * p.feature_dim);
  return p;
}

Napi::Value TransferLossForward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    TransferLossParams p = read_transfer_loss(call);
    p.loss = call.out("loss", accum_dtype(p.dtype), 1);
    Device device = call.device();
    call.submit([p, device] { HA_DISPATCH(device, p, transfer_loss_forward_cpu, transfer_loss_forward_cuda); });
  });
}

Napi::Value TransferLossBackward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    TransferLossGradParams g;
    g.fwd = read_transfer_loss(call);
    const TransferLossParams& p = g.fwd;
    int64_t rows = p.batch * p.heads * p.seqlen;
    g.dloss = call.in("dloss", accum_dtype(p.dtype), 1);
    g.dfq = call.out("dfq", p.dtype, rows * p.feature_dim);
    g.dfk = call.out("dfk", p.dtype, rows * p.feature_dim);
    Device device = call.device();
    call.submit([g, device] { HA_DISPATCH(device, g, transfer_loss_backward_cpu, transfer_loss_backward_cuda); });
  });
}

SoftmaxAttentionParams read_softmax_attention(OpCall& call) {
  const Napi::Object& a = call.args();
  SoftmaxAttentionParams p;
  p.dtype = dtype_prop(a);
  p.batch = int_prop(a, "batch");
  p.heads = int_prop(a, "heads");
  p.kv_heads = int_prop(a, "kvHeads");
  p.seqlen = int_prop(a, "seqlen");
  p.head_dim = int_prop(a, "headDim");
  p.value_dim = int_prop(a, "valueDim");
  p.scale = number_prop(a, "scale");
  p.causal = bool_prop(a, "causal", true);
  require_backend_dtype(call.device(), p.dtype, "q");
  int64_t kv_rows = p.batch * p.kv_heads * p.seqlen;
  p.q = call.in("q", p.dtype, p.batch * p.heads * p.seqlen * p.head_dim);
  p.k = call.in("k", p.dtype, kv_rows * p.head_dim);
  p.v = call.in("v", p.dtype, kv_rows * p.value_dim);
  return p;
}

Napi::Value SoftmaxAttentionForward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    SoftmaxAttentionParams p = read_softmax_attention(call);
    int64_t rows = p.batch * p.heads * p.seqlen;
    p.y = call.out("y", p.dtype, rows * p.value_dim);
    p.lse = call.out("lse", accum_dtype(p.dtype), rows);
    Device device = call.device();
    call.submit([p, device] { HA_DISPATCH(device, p, softmax_attention_forward_cpu, softmax_attention_forward_cuda); });
  });
}

Napi::Value SoftmaxAttentionBackward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    SoftmaxAttentionGradParams g;
    g.fwd = read_softmax_attention(call);
    SoftmaxAttentionParams& p = g.fwd;
    int64_t rows = p.batch * p.heads * p.seqlen, kv_rows = p.batch * p.kv_heads * p.seqlen;
    p.y = const_cast<void*>(call.in("y", p.dtype, rows * p.value_dim));
    p.lse = const_cast<void*>(call.in("lse", accum_dtype(p.dtype), rows));
    g.dy = call.in("dy", p.dtype, rows * p.value_dim);
    g.dq = call.out("dq", p.dtype, rows * p.head_dim);
    g.dk = call.out("dk", p.dtype, kv_rows * p.head_dim);
    g.dv = call.out("dv", p.dtype, kv_rows * p.value_dim);
    Device device = call.device();
    call.submit([g, device] { HA_DISPATCH(device, g, softmax_attention_backward_cpu, softmax_attention_backward_cuda); });
  });
}

}  // namespace

void init_teacher_ops_binding(Napi::Env env, Napi::Object exports) {
  exports.Set("featureMapForward", Napi::Function::New(env, FeatureMapForward));
  exports.Set("featureMapBackward", Napi::Function::New(env, FeatureMapBackward));
  exports.Set("transferLossForward", Napi::Function::New(env, TransferLossForward));
  exports.Set("transferLossBackward", Napi::Function::New(env, TransferLossBackward));
  exports.Set("softmaxAttentionForward", Napi::Function::New(env, SoftmaxAttentionForward));
  exports.Set("softmaxAttentionBackward", Napi::Function::New(env, SoftmaxAttentionBackward));
}

}  // namespace ha::binding
