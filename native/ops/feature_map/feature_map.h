// Feature maps phi (SPEC sec. 3) for linear attention. Parameters in the style of
// flash-attention's flash.h: raw pointers and sizes, no framework types.
//
// Kinds (u = x W_h + b_h, W_h per head, d x f; b optional):
//   Hedgehog  phi(x) = [act(u), act(-u)]            out dim 2f   (act: see FeatureAct)
//   T2R       phi(x) = relu(u)                      out dim f    (`act` is ignored)
//   EluRaw    phi(x) = elu(x) + 1 on the raw x      out dim d    (no parameters; w, b, proj_dim
//                                                                and `act` are ignored)
// Activations of the Hedgehog map, applied to each half separately:
//   Softmax   softmax over the f features of the half (default)
//   Exp       exp(.) elementwise (not normalised: the key's normaliser does not cancel)
//   Relu      max(., 0); the derivative at 0 is taken as 0 (as torch.relu)
//   Elu1      1 + elu(.) = (. > 0 ? 1 + . : exp(.))
//   Identity  .
// No clamping happens here: SPEC sec. 3 clamps at 1e-12 only where a log is taken, which is the
// transfer loss' business (ops/transfer_loss).
//
// Layouts (all contiguous, row-major), element type `dtype` (f64 or f32) for every tensor:
//   x [B, H, T, d]   w [H, d, f]   b [H, f] (may be null)   phi [B, H, T, out]
// with out = feature_map_out_dim(p). Accumulation is in f64.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

enum class FeatureMapKind : int32_t { Hedgehog = 0, T2R = 1, EluRaw = 2 };
enum class FeatureAct : int32_t { Softmax = 0, Exp = 1, Relu = 2, Elu1 = 3, Identity = 4 };

struct FeatureMapParams {
  DType dtype = DType::F32;
  int64_t batch = 0, heads = 0, seqlen = 0;
  int64_t in_dim = 0;    // d
  int64_t proj_dim = 0;  // f (unused by EluRaw)
  FeatureMapKind kind = FeatureMapKind::Hedgehog;
  FeatureAct act = FeatureAct::Softmax;  // Hedgehog only

  const void* x = nullptr;  // [B, H, T, d]
  const void* w = nullptr;  // [H, d, f]   (Hedgehog, T2R)
  const void* b = nullptr;  // [H, f] or null (no bias)
  void* phi = nullptr;      // [B, H, T, out]
};

struct FeatureMapGradParams {
  FeatureMapParams fwd;       // the forward's inputs (phi is not read: the backward recomputes u)
  const void* dphi = nullptr; // [B, H, T, out]
  void* dx = nullptr;         // [B, H, T, d]; may be null (not wanted)
  void* dw = nullptr;         // [H, d, f]; null for EluRaw, may be null when not wanted
  void* db = nullptr;         // [H, f]; null when there is no bias (ignored then)
};

// Output feature dimension: Hedgehog 2f, T2R f, EluRaw d.
int64_t feature_map_out_dim(const FeatureMapParams& p);

// CPU kernels, dtype f64 or f32 (std::invalid_argument otherwise).
// The backward overwrites dx, dw, db (no accumulation into existing contents). dw and db are
// sums over (batch, time); they are reduced from per-chunk partials in a fixed order, with chunk
// boundaries depending only on the sizes, so the result does not depend on the thread count.
void feature_map_forward_cpu(const FeatureMapParams& p);
void feature_map_backward_cpu(const FeatureMapGradParams& p);

#ifdef HA_WITH_CUDA
// CUDA kernels (feature_map.cu): dtype bf16, f16 or f32 (fp32 math); in_dim, proj_dim <= 4096
// (and kR * (in_dim + proj_dim) floats within the device's shared memory). The backward
// overwrites dx, dw, db; dw and db are reduced from per-chunk partials in chunk order (no
// atomics, bitwise deterministic) using stream-ordered scratch. `stream` is a cudaStream_t.
// Errors throw ha::Error (ErrorCode::Device for CUDA failures).
void feature_map_forward_cuda(const FeatureMapParams& p, void* stream);
void feature_map_backward_cuda(const FeatureMapGradParams& p, void* stream);
#endif

}  // namespace ha
