// Bindings of the Llama runtime's kernels (CPU and CUDA): matmul/linear, RMSNorm, RoPE, SwiGLU,
// embedding, cross-entropy (plain and chunked), AdamW, gradient norm/clipping, elementwise
// basics, the head transpose, GQA repeat-kv, sigmoid and normal random numbers. The TS wrappers
// (lib/ops/*.ts) validate first; these checks are the backstop.
#include <cstring>
#include <string>
#include <vector>

#include "binding/args.h"
#include "binding/tensor_binding.h"
#include "core/parallel.h"
#include "ops/adamw/adamw.h"
#include "ops/cross_entropy/cross_entropy.h"
#include "ops/elementwise/elementwise.h"
#include "ops/embedding/embedding.h"
#include "ops/matmul/matmul.h"
#include "ops/random/random.h"
#include "ops/repeat_kv/repeat_kv.h"
#include "ops/rms_norm/rms_norm.h"
#include "ops/rope/rope.h"
#include "ops/sigmoid/sigmoid.h"
#include "ops/swiglu/swiglu.h"
#include "ops/transpose/transpose.h"

namespace ha::binding {

namespace {

int64_t nonneg(const Napi::Object& a, const char* name) {
  int64_t v = int_prop(a, name);
  if (v < 0) throw Error(ErrorCode::InvalidArgument, std::string(name) + " must be >= 0", name);
  return v;
}

// dtype of an op with CPU and CUDA kernels: f64/f32 on the CPU, bf16/f16/f32 on CUDA.
DType backend_dtype(OpCall& call) {
  DType t = dtype_prop(call.args());
  require_backend_dtype(call.device(), t, "dtype");
  return t;
}


// ---------------------------------------------------------------- matmul / linear

// C = alpha op(A) op(B) (+ beta C when `c` is given, updated in place). A and B are packed per
// batch item, or shared by every item (sharedA / sharedB: stride 0).
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    MatmulParams p;
    p.dtype = backend_dtype(call);
    p.batch = nonneg(a, "batch");
    p.m = nonneg(a, "m");
    p.n = nonneg(a, "n");
    p.k = nonneg(a, "k");
    p.trans_a = bool_prop(a, "transA", false);
    p.trans_b = bool_prop(a, "transB", false);
    p.alpha = number_prop(a, "alpha");
    bool shared_a = bool_prop(a, "sharedA", false), shared_b = bool_prop(a, "sharedB", false);
    p.stride_a = shared_a ? 0 : -1;
    p.stride_b = shared_b ? 0 : -1;
    p.a = call.in("a", p.dtype, (shared_a ? 1 : p.batch) * p.m * p.k);
    p.b = call.in("b", p.dtype, (shared_b ? 1 : p.batch) * p.k * p.n);
    bool has_c = !a.Get("c").IsUndefined();
    if (has_c) {
      p.beta = number_prop(a, "beta");
      p.c = call.inout("c", p.dtype, p.batch * p.m * p.n);
    } else {
      p.c = call.out("c", p.dtype, p.batch * p.m * p.n);
    }
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, matmul_cpu, matmul_cuda); });
  });
}

// y [N, out] = x [N, in] W^T (W [out, in]) + bias [out].
Napi::Value Linear(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    MatmulParams p;
    p.dtype = backend_dtype(call);
    p.m = nonneg(a, "rows");
    p.k = nonneg(a, "inFeatures");
    p.n = nonneg(a, "outFeatures");
    p.trans_b = true;
    p.a = call.in("x", p.dtype, p.m * p.k);
    p.b = call.in("w", p.dtype, p.n * p.k);
    const void* bias = call.in("bias", p.dtype, p.n, true);
    p.c = call.out("y", p.dtype, p.m * p.n);
    call.submit([p, bias, dev = call.device()] {
  #ifdef HA_WITH_CUDA
      if (dev != Device::CPU) {
        matmul_cuda(p, cuda_stream());
        if (bias) broadcast_add_rows_cuda(p.dtype, p.m, p.n, bias, p.c, cuda_stream());
        return;
      }
  #endif
      matmul_cpu(p);
      if (!bias) return;
      ElementwiseParams e;
      e.dtype = p.dtype;
      e.n = p.n;
      e.a = bias;
      int64_t esize = dtype_size(p.dtype);
      for (int64_t r = 0; r < p.m; r++) {  // y_r += bias (a cheap pass next to the product)
        e.y = static_cast<char*>(p.c) + r * p.n * esize;
        accumulate_cpu(e);
      }
    });
  });
}

// ---------------------------------------------------------------- RMSNorm

RmsNormParams read_rms_norm(OpCall& call) {
  const Napi::Object& a = call.args();
  RmsNormParams p;
  p.dtype = backend_dtype(call);
  p.rows = nonneg(a, "rows");
  p.dim = nonneg(a, "dim");
  p.eps = number_prop(a, "eps");
  p.x = call.in("x", p.dtype, p.rows * p.dim);
  p.w = call.in("w", p.dtype, p.dim);
  return p;
}

Napi::Value RmsNormForward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    RmsNormParams p = read_rms_norm(call);
    p.y = call.out("y", p.dtype, p.rows * p.dim);
    p.rstd = call.out("rstd", accum_dtype(p.dtype), p.rows);
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, rms_norm_forward_cpu, rms_norm_forward_cuda); });
  });
}

Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    RmsNormGradParams g;
    g.fwd = read_rms_norm(call);
    RmsNormParams& p = g.fwd;
    p.rstd = const_cast<void*>(call.in("rstd", accum_dtype(p.dtype), p.rows));
    g.dy = call.in("dy", p.dtype, p.rows * p.dim);
    g.dx = call.out("dx", p.dtype, p.rows * p.dim);
    if (!call.args().Get("dw").IsUndefined()) {  // accumulate into an existing gradient
      g.dw = call.inout("dw", p.dtype, p.dim);
      g.accumulate_dw = true;
    } else {
      g.dw = call.out("dw", p.dtype, p.dim);
    }
    call.submit([g, dev = call.device()] { HA_DISPATCH(dev, g, rms_norm_backward_cpu, rms_norm_backward_cuda); });
  });
}

// ---------------------------------------------------------------- RoPE

RopeParams read_rope(OpCall& call) {
  const Napi::Object& a = call.args();
  RopeParams p;
  p.dtype = backend_dtype(call);
  p.batch = nonneg(a, "batch");
  p.heads = nonneg(a, "heads");
  p.seqlen = nonneg(a, "seqlen");
  p.head_dim = nonneg(a, "headDim");
  if (p.head_dim % 2 != 0) throw Error(ErrorCode::InvalidArgument, "headDim must be even", "headDim");
  p.positions = static_cast<const int32_t*>(call.in("positions", DType::I32, p.batch * p.seqlen));
  p.inv_freq = static_cast<const double*>(call.in("invFreq", DType::F64, p.head_dim / 2));
  return p;
}

Napi::Value RopeForward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    RopeParams p = read_rope(call);
    int64_t n = p.batch * p.heads * p.seqlen * p.head_dim;
    p.x = call.in("x", p.dtype, n);
    p.y = call.out("y", p.dtype, n);
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, rope_forward_cpu, rope_forward_cuda); });
  });
}

Napi::Value RopeBackward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    RopeGradParams g;
    g.fwd = read_rope(call);
    int64_t n = g.fwd.batch * g.fwd.heads * g.fwd.seqlen * g.fwd.head_dim;
    g.dy = call.in("dy", g.fwd.dtype, n);
    g.dx = call.out("dx", g.fwd.dtype, n);
    call.submit([g, dev = call.device()] { HA_DISPATCH(dev, g, rope_backward_cpu, rope_backward_cuda); });
  });
}

// ---------------------------------------------------------------- SwiGLU

Napi::Value SwigluForward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    SwigluParams p;
    p.dtype = backend_dtype(call);
    p.n = nonneg(call.args(), "n");
    p.gate = call.in("gate", p.dtype, p.n);
    p.up = call.in("up", p.dtype, p.n);
    p.y = call.out("y", p.dtype, p.n);
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, swiglu_forward_cpu, swiglu_forward_cuda); });
  });
}

Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    SwigluGradParams g;
    g.fwd.dtype = backend_dtype(call);
    g.fwd.n = nonneg(call.args(), "n");
    g.fwd.gate = call.in("gate", g.fwd.dtype, g.fwd.n);
    g.fwd.up = call.in("up", g.fwd.dtype, g.fwd.n);
    g.dy = call.in("dy", g.fwd.dtype, g.fwd.n);
    g.dgate = call.out("dgate", g.fwd.dtype, g.fwd.n);
    g.dup = call.out("dup", g.fwd.dtype, g.fwd.n);
    call.submit([g, dev = call.device()] { HA_DISPATCH(dev, g, swiglu_backward_cpu, swiglu_backward_cuda); });
  });
}

// ---------------------------------------------------------------- embedding

EmbeddingParams read_embedding(OpCall& call) {
  const Napi::Object& a = call.args();
  EmbeddingParams p;
  p.dtype = backend_dtype(call);
  p.num_ids = nonneg(a, "numIds");
  p.vocab = nonneg(a, "vocab");
  p.dim = nonneg(a, "dim");
  p.ids = static_cast<const int32_t*>(call.in("ids", DType::I32, p.num_ids));
  return p;
}

Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    EmbeddingParams p = read_embedding(call);
    p.weight = call.in("weight", p.dtype, p.vocab * p.dim);
    p.out = call.out("out", p.dtype, p.num_ids * p.dim);
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, embedding_forward_cpu, embedding_forward_cuda); });
  });
}

Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    EmbeddingGradParams g;
    g.fwd = read_embedding(call);
    const EmbeddingParams& p = g.fwd;
    g.dout = call.in("dout", p.dtype, p.num_ids * p.dim);
    if (!call.args().Get("dweight").IsUndefined()) {
      g.dweight = call.inout("dweight", p.dtype, p.vocab * p.dim);
      g.accumulate = true;
    } else {
      g.dweight = call.out("dweight", p.dtype, p.vocab * p.dim);
    }
    call.submit([g, dev = call.device()] { HA_DISPATCH(dev, g, embedding_backward_cpu, embedding_backward_cuda); });
  });
}

// ---------------------------------------------------------------- cross-entropy

CrossEntropyParams read_cross_entropy(OpCall& call) {
  const Napi::Object& a = call.args();
  CrossEntropyParams p;
  p.dtype = backend_dtype(call);
  p.rows = nonneg(a, "rows");
  p.vocab = nonneg(a, "vocab");
  p.ignore_index = static_cast<int32_t>(int_prop(a, "ignoreIndex"));
  p.normalizer = number_prop(a, "normalizer");
  p.logits = call.in("logits", p.dtype, p.rows * p.vocab);
  p.targets = static_cast<const int32_t*>(call.in("targets", DType::I32, p.rows));
  return p;
}

Napi::Value CrossEntropyForward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    CrossEntropyParams p = read_cross_entropy(call);
    p.loss = static_cast<double*>(call.out("loss", DType::F64, 1));
    p.lse = call.out("lse", accum_dtype(p.dtype), p.rows);
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, cross_entropy_forward_cpu, cross_entropy_forward_cuda); });
  });
}

Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    CrossEntropyGradParams g;
    g.fwd = read_cross_entropy(call);
    g.fwd.lse = const_cast<void*>(call.in("lse", accum_dtype(g.fwd.dtype), g.fwd.rows));
    g.dloss = number_prop(call.args(), "dloss");
    g.dlogits = call.out("dlogits", g.fwd.dtype, g.fwd.rows * g.fwd.vocab);
    call.submit([g, dev = call.device()] { HA_DISPATCH(dev, g, cross_entropy_backward_cpu, cross_entropy_backward_cuda); });
  });
}

ChunkedCrossEntropyParams read_chunked(OpCall& call) {
  const Napi::Object& a = call.args();
  ChunkedCrossEntropyParams p;
  p.dtype = backend_dtype(call);
  p.rows = nonneg(a, "rows");
  p.dim = nonneg(a, "dim");
  p.vocab = nonneg(a, "vocab");
  p.vocab_chunk = nonneg(a, "vocabChunk");
  p.ignore_index = static_cast<int32_t>(int_prop(a, "ignoreIndex"));
  p.normalizer = number_prop(a, "normalizer");
  p.hidden = call.in("hidden", p.dtype, p.rows * p.dim);
  p.weight = call.in("weight", p.dtype, p.vocab * p.dim);
  p.targets = static_cast<const int32_t*>(call.in("targets", DType::I32, p.rows));
  return p;
}

Napi::Value ChunkedCrossEntropyForward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    ChunkedCrossEntropyParams p = read_chunked(call);
    p.loss = static_cast<double*>(call.out("loss", DType::F64, 1));
    p.lse = call.out("lse", accum_dtype(p.dtype), p.rows);
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, chunked_cross_entropy_forward_cpu, chunked_cross_entropy_forward_cuda); });
  });
}

Napi::Value ChunkedCrossEntropyBackward(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    ChunkedCrossEntropyGradParams g;
    g.fwd = read_chunked(call);
    ChunkedCrossEntropyParams& p = g.fwd;
    p.lse = const_cast<void*>(call.in("lse", accum_dtype(p.dtype), p.rows));
    g.dloss = number_prop(a, "dloss");
    g.dhidden = call.out("dhidden", p.dtype, p.rows * p.dim);
    if (!a.Get("dweight").IsUndefined()) {  // tied embeddings / accumulation: add into it
      g.dweight = call.inout("dweight", p.dtype, p.vocab * p.dim);
      g.accumulate_dweight = true;
    } else {
      g.dweight = call.out("dweight", p.dtype, p.vocab * p.dim);
    }
    call.submit([g, dev = call.device()] { HA_DISPATCH(dev, g, chunked_cross_entropy_backward_cpu, chunked_cross_entropy_backward_cuda); });
  });
}

// ---------------------------------------------------------------- optimizer

Napi::Value AdamWStep(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    AdamWParams p;
    p.dtype = backend_dtype(call);
    p.n = nonneg(a, "n");
    p.lr = number_prop(a, "lr");
    p.beta1 = number_prop(a, "beta1");
    p.beta2 = number_prop(a, "beta2");
    p.eps = number_prop(a, "eps");
    p.weight_decay = number_prop(a, "weightDecay");
    p.step = int_prop(a, "step");
    if (p.step < 1) throw Error(ErrorCode::InvalidArgument, "step must be >= 1", "step");
    p.grad_scale = number_prop(a, "gradScale");
    p.grad = call.in("grad", p.dtype, p.n);
    p.param = call.inout("param", p.dtype, p.n);
    p.exp_avg = call.inout("expAvg", p.dtype, p.n);
    p.exp_avg_sq = call.inout("expAvgSq", p.dtype, p.n);
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, adamw_step_cpu, adamw_step_cuda); });
  });
}

// Global L2 norm of a list of tensors into a 1-element f64 tensor; with maxNorm >= 0 the tensors
// are clipped in place (torch.nn.utils.clip_grad_norm_).
Napi::Value GradNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HA_BINDING_TRY
  Napi::Object src = info[0].As<Napi::Object>();
  Napi::Value list = src.Get("tensors");
  if (!list.IsArray()) throw Error(ErrorCode::InvalidArgument, "tensors must be an array of tensors", "tensors");
  Napi::Array arr = list.As<Napi::Array>();
  // OpCall reads named properties: re-key the list as tensors[i] so errors name the element.
  Napi::Object args = Napi::Object::New(env);
  args.Set("device", src.Get("device"));
  std::vector<std::string> names(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    names[i] = "tensors[" + std::to_string(i) + "]";
    args.Set(names[i], arr.Get(i));
  }
  OpCall call(args);
  DType dtype = dtype_prop(src);
  require_backend_dtype(call.device(), dtype, "dtype");
  double max_norm = number_prop(src, "maxNorm");  // < 0: norm only
  std::vector<void*> data;
  std::vector<int64_t> sizes;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    StoragePtr t = tensor_prop(args, names[i].c_str());
    sizes.push_back(t->numel());
    data.push_back(max_norm >= 0 ? call.inout(names[i].c_str(), dtype, t->numel())
                                 : const_cast<void*>(call.in(names[i].c_str(), dtype, t->numel())));
  }
  double* norm = static_cast<double*>(call.out("norm", DType::F64, 1));
  call.submit([dtype, data, sizes, max_norm, norm, dev = call.device()] {
    TensorList l;
    l.dtype = dtype;
    l.count = static_cast<int64_t>(data.size());
    l.data = data.data();
    l.sizes = sizes.data();
#ifdef HA_WITH_CUDA
    if (dev != Device::CPU) {
      grad_norm_cuda(l, max_norm, norm, cuda_stream());
      return;
    }
#endif
    *norm = max_norm >= 0 ? clip_grad_norm_cpu(l, max_norm) : grad_norm_cpu(l);
  });
  return call.result(env);
  HA_BINDING_CATCH(env)
}

// ---------------------------------------------------------------- elementwise

// op: 0 add (y = a + alpha b), 1 mul, 2 scale (y = alpha a), 3 fill (y = alpha).
Napi::Value Elementwise(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    ElementwiseParams p;
    p.dtype = backend_dtype(call);
    p.n = nonneg(a, "n");
    p.alpha = number_prop(a, "alpha");
    int64_t op = int_prop(a, "op");
    if (op < 0 || op > 3) throw Error(ErrorCode::InvalidArgument, "unknown elementwise op", "op");
    if (op != 3) p.a = call.in("a", p.dtype, p.n);
    if (op < 2) p.b = call.in("b", p.dtype, p.n);
    p.y = call.out("y", p.dtype, p.n);
    call.submit([p, op, dev = call.device()] {
  #ifdef HA_WITH_CUDA
      if (dev != Device::CPU) {
        switch (op) {
          case 0: add_cuda(p, cuda_stream()); break;
          case 1: mul_cuda(p, cuda_stream()); break;
          case 2: scale_cuda(p, cuda_stream()); break;
          default: fill_cuda(p, cuda_stream()); break;
        }
        return;
      }
  #endif
      switch (op) {
        case 0: add_cpu(p); break;
        case 1: mul_cpu(p); break;
        case 2: scale_cpu(p); break;
        default: fill_cpu(p); break;
      }
    });
  });
}

// y += alpha a, in place on y. With alpha = 0 and a absent, y = 0 (zeroing a gradient).
Napi::Value Accumulate(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    ElementwiseParams p;
    p.dtype = backend_dtype(call);
    p.n = nonneg(a, "n");
    p.alpha = number_prop(a, "alpha");
    p.a = call.in("a", p.dtype, p.n);
    p.y = call.inout("y", p.dtype, p.n);
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, accumulate_cpu, accumulate_cuda); });
  });
}

// Overwrites y with a (same size and dtype): a copy into existing storage, e.g. loading state.
Napi::Value CopyInto(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    DType dtype = dtype_prop(call.args());
    int64_t n = nonneg(call.args(), "n");
    const void* src = call.in("a", dtype, n);
    void* dst = call.inout("y", dtype, n);
    int64_t bytes = n * dtype_size(dtype);
    call.submit([src, dst, bytes, dev = call.device()] {
  #ifdef HA_WITH_CUDA
      if (dev != Device::CPU) {
        cuda_copy_device_to_device(dst, src, bytes);
        return;
      }
  #endif
      std::memcpy(dst, src, static_cast<size_t>(bytes));
    });
  });
}

Napi::Value SumRows(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    SumRowsParams p;
    p.dtype = backend_dtype(call);
    p.rows = nonneg(a, "rows");
    p.cols = nonneg(a, "cols");
    p.x = call.in("x", p.dtype, p.rows * p.cols);
    if (!a.Get("y").IsUndefined()) {
      p.y = call.inout("y", p.dtype, p.cols);
      p.accumulate = true;
    } else {
      p.y = call.out("y", p.dtype, p.cols);
    }
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, sum_rows_cpu, sum_rows_cuda); });
  });
}

// [d0, d1, d2, d3] -> [d0, d2, d1, d3]: moves heads between [B, T, H, D] (projections) and
// [B, H, T, D] (attention kernels). Pure data movement, any dtype.
Napi::Value Transpose12(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    DType dtype = dtype_prop(a);
    int64_t d0 = nonneg(a, "d0"), d1 = nonneg(a, "d1"), d2 = nonneg(a, "d2"), d3 = nonneg(a, "d3");
    int64_t n = d0 * d1 * d2 * d3;
    Transpose12Params p{dtype, d0, d1, d2, d3, call.in("x", dtype, n), call.out("y", dtype, n)};
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, transpose12_cpu, transpose12_cuda); });
  });
}

// ---------------------------------------------------------------- GQA repeat-kv, sigmoid

// Forward: x [outer, kvHeads, inner] -> y [outer, kvHeads * groups, inner], head h reads kv head
// h / groups (GQA: q head h uses kv head h / groups). Backward (`backward`: true): dy
// [outer, kvHeads * groups, inner] -> dx [outer, kvHeads, inner], summing each group in order.
Napi::Value RepeatKv(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    DType dtype = backend_dtype(call);
    int64_t outer = nonneg(a, "outer"), kv = nonneg(a, "kvHeads"), groups = nonneg(a, "groups"), inner = nonneg(a, "inner");
    if (groups < 1) throw Error(ErrorCode::InvalidArgument, "groups must be >= 1", "groups");
    bool backward = bool_prop(a, "backward", false);
    int64_t small = outer * kv * inner, big = small * groups;
    const void* x = call.in("x", dtype, backward ? big : small);
    void* y = call.out("y", dtype, backward ? small : big);
    RepeatKvParams p{dtype, outer, kv, groups, inner, backward, x, y};
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, repeat_kv_cpu, repeat_kv_cuda); });
  });
}

// Forward: y = 1 / (1 + exp(-x)). Backward (with `dy`; x is then the forward's output y):
// dx = dy * y * (1 - y). Arithmetic in f64.
Napi::Value Sigmoid(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    DType dtype = backend_dtype(call);
    int64_t n = nonneg(a, "n");
    const void* x = call.in("x", dtype, n);
    const void* dy = call.in("dy", dtype, n, true);
    void* y = call.out("y", dtype, n);
    SigmoidParams p{dtype, n, x, dy, y};
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, sigmoid_cpu, sigmoid_cuda); });
  });
}

// ---------------------------------------------------------------- random normal

// y = mean + std * N(0, 1), element i a function of (seed, i) only (see random.h).
Napi::Value RandomNormal(const Napi::CallbackInfo& info) {
  return op_binding(info, [&](OpCall& call) {
    const Napi::Object& a = call.args();
    RandomNormalParams p;
    p.dtype = backend_dtype(call);
    p.n = nonneg(a, "n");
    p.seed = static_cast<uint64_t>(nonneg(a, "seed"));
    p.mean = number_prop(a, "mean");
    p.std = number_prop(a, "std");
    p.y = call.out("y", p.dtype, p.n);
    call.submit([p, dev = call.device()] { HA_DISPATCH(dev, p, random_normal_cpu, random_normal_cuda); });
  });
}

}  // namespace

void init_llama_ops_binding(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("linear", Napi::Function::New(env, Linear));
  exports.Set("rmsNormForward", Napi::Function::New(env, RmsNormForward));
  exports.Set("rmsNormBackward", Napi::Function::New(env, RmsNormBackward));
  exports.Set("ropeForward", Napi::Function::New(env, RopeForward));
  exports.Set("ropeBackward", Napi::Function::New(env, RopeBackward));
  exports.Set("swigluForward", Napi::Function::New(env, SwigluForward));
  exports.Set("swigluBackward", Napi::Function::New(env, SwigluBackward));
  exports.Set("embeddingForward", Napi::Function::New(env, EmbeddingForward));
  exports.Set("embeddingBackward", Napi::Function::New(env, EmbeddingBackward));
  exports.Set("crossEntropyForward", Napi::Function::New(env, CrossEntropyForward));
  exports.Set("crossEntropyBackward", Napi::Function::New(env, CrossEntropyBackward));
  exports.Set("chunkedCrossEntropyForward", Napi::Function::New(env, ChunkedCrossEntropyForward));
  exports.Set("chunkedCrossEntropyBackward", Napi::Function::New(env, ChunkedCrossEntropyBackward));
  exports.Set("adamwStep", Napi::Function::New(env, AdamWStep));
  exports.Set("gradNorm", Napi::Function::New(env, GradNorm));
  exports.Set("elementwise", Napi::Function::New(env, Elementwise));
  exports.Set("accumulate", Napi::Function::New(env, Accumulate));
  exports.Set("copyInto", Napi::Function::New(env, CopyInto));
  exports.Set("sumRows", Napi::Function::New(env, SumRows));
  exports.Set("transpose12", Napi::Function::New(env, Transpose12));
  exports.Set("repeatKv", Napi::Function::New(env, RepeatKv));
  exports.Set("sigmoid", Napi::Function::New(env, Sigmoid));
  exports.Set("randomNormal", Napi::Function::New(env, RandomNormal));
}

}  // namespace ha::binding
