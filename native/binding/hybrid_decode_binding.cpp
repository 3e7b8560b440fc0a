// Recurrent decode bindings: state size, prefill, ragged steps, and restoring a saved state.
#include <cstring>
#include <memory>
#include <vector>

#include "binding/args.h"
#include "binding/tensor_binding.h"
#include "ops/hybrid_decode/hybrid_decode.h"

namespace ha::binding {

namespace {

// Layout of a state: the CPU's for f64 / f32, the CUDA one for bf16 / f16 (f32 is identical in both).
HybridDecodeStateLayout state_layout(const HybridDecodeConfig& c) {
  if (c.dtype == DType::BF16 || c.dtype == DType::F16) {
#ifdef HA_WITH_CUDA
    return hybrid_decode_state_layout_cuda(c);
#else
    throw Error(ErrorCode::Device, std::string(dtype_name(c.dtype)) + " decode states need the CUDA build", "dtype");
#endif
  }
  return hybrid_decode_state_layout(c);
}

// Position in a host copy of a state (validates its header against the config).
int64_t host_state_position(const HybridDecodeConfig& c, const void* host) {
#ifdef HA_WITH_CUDA
  if (c.dtype == DType::BF16 || c.dtype == DType::F16) return hybrid_decode_state_position_cuda(c, host);
#endif
  return hybrid_decode_state_position(c, host);
}

HybridDecodeConfig read_config(const Napi::Object& a) {
  HybridDecodeConfig c;
  c.dtype = dtype_prop(a);
  c.heads = int_prop(a, "heads");
  c.kv_heads = int_prop(a, "kvHeads");
  c.head_dim = int_prop(a, "headDim");
  c.value_dim = int_prop(a, "valueDim");
  c.feature_dim = int_prop(a, "featureDim");
  c.window = int_prop(a, "window");
  c.sinks = int_prop(a, "sinks");
  int64_t geometry = int_prop(a, "geometry");
  if (geometry < 0 || geometry > 1) throw Error(ErrorCode::InvalidArgument, "unknown geometry", "geometry");
  c.geometry = static_cast<WindowGeometry>(geometry);
  if (c.window < 1) throw Error(ErrorCode::InvalidArgument, "window must be >= 1", "window");
  state_layout(c);  // validates the rest (throws invalid_argument)
  return c;
}

Napi::Value StateBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  return Napi::Number::New(env, static_cast<double>(state_layout(read_config(info[0].As<Napi::Object>())).bytes));
  HA_BINDING_CATCH(env)
}

// Fills the parts shared by prefill and step; `tokens` = rows of the token tensors per head.
void read_common(OpCall& call, HybridDecodeParams& p, int64_t tokens, bool outputs) {
  const Napi::Object& a = call.args();
  p.config = read_config(a);
  require_backend_dtype(call.device(), p.config.dtype, "dtype");
  p.batch = int_prop(a, "batch");
  int64_t mode = int_prop(a, "mode"), lambda = int_prop(a, "lambda");
  if (mode < 0 || mode > 6) throw Error(ErrorCode::InvalidArgument, "unknown mode", "mode");
  if (lambda < 0 || lambda > 1) throw Error(ErrorCode::InvalidArgument, "unknown lambda kind", "lambda");
  p.mode = static_cast<HybridMode>(mode);
  p.lambda_kind = static_cast<LambdaKind>(lambda);
  p.scale = number_prop(a, "scale");
  const HybridDecodeConfig& c = p.config;
  DType acc = accum_dtype(c.dtype);
  int64_t bytes = state_layout(c).bytes;
  StoragePtr state = tensor_prop(a, "state");
  if (state->bytes() != p.batch * bytes)
    throw Error(ErrorCode::InvalidArgument, "state holds " + std::to_string(state->bytes()) + " bytes, expected " + std::to_string(p.batch * bytes), "state");
  // the state is read and written in place: an input of the job, never reallocated
  p.state = const_cast<void*>(call.in("state", state->dtype(), state->numel()));
  p.k = call.in("k", c.dtype, tokens * c.kv_heads * c.head_dim);
  p.v = call.in("v", c.dtype, tokens * c.kv_heads * c.value_dim);
  p.fk = call.in("fk", c.dtype, tokens * c.heads * c.feature_dim);
  if (outputs) {
    p.q = call.in("q", c.dtype, tokens * c.heads * c.head_dim);
    p.fq = call.in("fq", c.dtype, tokens * c.heads * c.feature_dim);
    p.gamma = call.in("gamma", acc, c.heads);
    p.keep = call.in("keep", acc, p.batch * c.heads, true);
    p.y = call.out("y", c.dtype, tokens * c.heads * c.value_dim);
    p.c = call.out("c", acc, tokens * c.heads);
    p.den_swa = call.out("denSwa", acc, tokens * c.heads);
    p.den_la = call.out("denLa", acc, tokens * c.heads);
  }
}

Napi::Value Prefill(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    HybridDecodePrefillParams p;
    p.seqlen = int_prop(call.args(), "seqlen");
    if (p.seqlen < 0) throw Error(ErrorCode::InvalidArgument, "seqlen must be >= 0", "seqlen");
    int64_t batch = int_prop(call.args(), "batch");
    read_common(call, p, batch * p.seqlen, bool_prop(call.args(), "outputs", true));
    Device device = call.device();
    call.submit([p, device] { HA_DISPATCH(device, p, hybrid_decode_prefill_cpu, hybrid_decode_prefill_cuda); });
  });
}

Napi::Value Step(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    HybridDecodeStepParams p;
    int64_t batch = int_prop(a, "batch");
    auto cu = std::make_shared<std::vector<int64_t>>();
    int64_t tokens = 0;
    Napi::Value cuv = a.Get("cuSeqlens");
    if (cuv.IsArray()) {
      Napi::Array arr = cuv.As<Napi::Array>();
      if (static_cast<int64_t>(arr.Length()) != batch + 1) throw Error(ErrorCode::InvalidArgument, "cuSeqlens needs batch + 1 entries", "cuSeqlens");
      for (uint32_t i = 0; i < arr.Length(); ++i) {
        Napi::Value x = arr.Get(i);
        if (!x.IsNumber()) throw Error(ErrorCode::InvalidArgument, "cuSeqlens must hold integers", "cuSeqlens");
        cu->push_back(x.As<Napi::Number>().Int64Value());
        if (i == 0 ? cu->back() != 0 : cu->back() <= (*cu)[i - 1])
          throw Error(ErrorCode::InvalidArgument, "cuSeqlens must start at 0 and grow by >= 1 per sequence", "cuSeqlens");
      }
      tokens = cu->back();
    } else {
      p.tokens_per_seq = int_prop(a, "tokensPerSeq");
      if (p.tokens_per_seq < 1) throw Error(ErrorCode::InvalidArgument, "tokensPerSeq must be >= 1", "tokensPerSeq");
      tokens = batch * p.tokens_per_seq;
    }
    read_common(call, p, tokens, true);
    Device device = call.device();
    call.submit([p, cu, device]() mutable {
      if (!cu->empty()) p.cu_seqlens = cu->data();  // a host array on both backends
      HA_DISPATCH(device, p, hybrid_decode_step_cpu, hybrid_decode_step_cuda);
    });
  });
}

// writeState({state, slot, data, ...config}): checks a saved state's header against the config
// on the JS thread, then copies it into slot `slot` in queue order.
Napi::Value WriteState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object a = info[0].As<Napi::Object>();
  HybridDecodeConfig c = read_config(a);
  int64_t bytes = state_layout(c).bytes;
  StoragePtr state = tensor_prop(a, "state");
  int64_t slot = int_prop(a, "slot");
  if (slot < 0 || (slot + 1) * bytes > state->bytes()) throw Error(ErrorCode::InvalidArgument, "slot out of range", "slot");
  Napi::Value data = a.Get("data");
  if (!data.IsTypedArray()) throw Error(ErrorCode::InvalidArgument, "data must be a Uint8Array", "data");
  Napi::TypedArray view = data.As<Napi::TypedArray>();
  if (static_cast<int64_t>(view.ByteLength()) != bytes)
    throw Error(ErrorCode::InvalidArgument, "saved state has " + std::to_string(view.ByteLength()) + " bytes, this configuration needs " + std::to_string(bytes), "data");
  const uint8_t* src = static_cast<const uint8_t*>(view.ArrayBuffer().Data()) + view.ByteOffset();
  auto copy = std::make_shared<std::vector<uint8_t>>(src, src + bytes);
  // 8-byte aligned copy for the header check
  try {
    host_state_position(c, copy->data());
  } catch (const std::invalid_argument& e) {
    throw Error(ErrorCode::InvalidArgument, std::string("saved state does not match: ") + e.what(), "data");
  }
  const Device device = state->device();
  submit(device, {state}, {}, [state, copy, slot, bytes, device] {
    uint8_t* dst = static_cast<uint8_t*>(state->data()) + slot * bytes;
    if (device == Device::CPU) std::memcpy(dst, copy->data(), bytes);
    else cuda_copy_to_device(dst, copy->data(), bytes);  // stream-ordered, waits for the source
  });
  return env.Undefined();
  HA_BINDING_CATCH(env)
}

// CUDA-graph decode steps. captureStep(args like step, tokensPerSeq only) records one step of the
// state with these exact tensors into a graph and returns {graph, y, c, denSwa, denLa}: the
// outputs are allocated once and overwritten by every replay; the graph holds every storage it
// reads or writes, so they live as long as it does. replay(graph) queues one launch (each
// replay advances every sequence by tokensPerSeq tokens, reading the input tensors as they are
// then); disposeGraph(graph) lets it go (the GC finalizer is the safety net).
struct DecodeGraph {
  void* exec = nullptr;
  std::vector<StoragePtr> inputs;   // state (updated in place), tokens, gamma, keep
  std::vector<StoragePtr> outputs;  // y, c, denSwa, denLa
  ~DecodeGraph() { cuda_graph_destroy(exec); }
};
using GraphHolder = std::shared_ptr<DecodeGraph>;

GraphHolder& graph_arg(const Napi::Value& v) {
  if (!v.IsExternal()) throw Error(ErrorCode::InvalidArgument, "not a decode step graph", "graph");
  GraphHolder& g = *v.As<Napi::External<GraphHolder>>().Data();
  if (!g) throw Error(ErrorCode::Disposed, "the decode step graph was disposed", "graph");
  return g;
}

Napi::Value CaptureStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  OpCall call(info[0].As<Napi::Object>());
  const Napi::Object& a = call.args();
  if (call.device() != Device::CUDA)
    throw Error(ErrorCode::NotImplemented, "CUDA-graph capture of a decode step needs device 'cuda' (on the CPU, call step())", "device");
  if (a.Get("cuSeqlens").IsArray())
    throw Error(ErrorCode::InvalidArgument, "a captured step takes tokensPerSeq, not cuSeqlens (a host array copied at every call cannot be replayed)", "cuSeqlens");
  HybridDecodeStepParams p;
  const int64_t batch = int_prop(a, "batch");
  p.tokens_per_seq = int_prop(a, "tokensPerSeq");
  if (p.tokens_per_seq < 1) throw Error(ErrorCode::InvalidArgument, "tokensPerSeq must be >= 1", "tokensPerSeq");
  read_common(call, p, batch * p.tokens_per_seq, true);
  auto graph = std::make_shared<DecodeGraph>();
  for (const char* name : {"state", "q", "k", "v", "fq", "fk", "gamma", "keep"})
    if (StoragePtr t = tensor_prop(a, name, true)) graph->inputs.push_back(t);
  Napi::Object out = call.result(env);
  for (const char* name : {"y", "c", "denSwa", "denLa"})
    graph->outputs.push_back(Napi::ObjectWrap<NativeTensor>::Unwrap(out.Get(name).As<Napi::Object>())->storage());
#ifdef HA_WITH_CUDA
  // validates like step() (std::invalid_argument -> InvalidArgumentError) and records the launch
  graph->exec = cuda_graph_capture([&p](void* stream) { hybrid_decode_step_cuda(p, stream); });
#endif
  auto* holder = new GraphHolder(graph);
  out.Set("graph", Napi::External<GraphHolder>::New(env, holder, [](Napi::Env, GraphHolder* h) { delete h; }));
  return out;
  HA_BINDING_CATCH(env)
}

Napi::Value ReplayGraph(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  GraphHolder graph = graph_arg(info[0]);
  submit(Device::CUDA, graph->inputs, graph->outputs, [graph] { cuda_graph_launch(graph->exec); });
  return env.Undefined();
  HA_BINDING_CATCH(env)
}

Napi::Value DisposeGraph(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  if (info[0].IsExternal()) info[0].As<Napi::External<GraphHolder>>().Data()->reset();  // queued replays keep their own reference
  return env.Undefined();
  HA_BINDING_CATCH(env)
}

}  // namespace

void init_hybrid_decode_binding(Napi::Env env, Napi::Object exports) {
  exports.Set("decodeStateBytes", Napi::Function::New(env, StateBytes));
  exports.Set("decodePrefill", Napi::Function::New(env, Prefill));
  exports.Set("decodeStep", Napi::Function::New(env, Step));
  exports.Set("decodeWriteState", Napi::Function::New(env, WriteState));
  exports.Set("decodeCaptureStep", Napi::Function::New(env, CaptureStep));
  exports.Set("decodeReplayGraph", Napi::Function::New(env, ReplayGraph));
  exports.Set("decodeDisposeGraph", Napi::Function::New(env, DisposeGraph));
}

}  // namespace ha::binding
