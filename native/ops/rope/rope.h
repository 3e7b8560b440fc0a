// Rotary position embedding, Hugging Face Llama convention ("rotate_half": element i pairs with
// element i + D/2, not interleaved). Parameters in the style of flash-attention's flash.h.
//
// For x [B, H, T, D] (D even, h = D/2), position ids pos [B, T] (int32) and inv_freq [h] (f64,
// computed by the caller, e.g. 1 / theta^(2i/D) with any rope scaling applied):
//   a_i = pos[b, t] * inv_freq[i],  c = cos(a_i), s = sin(a_i)   (in f64)
//   y_i     = x_i c - x_{i+h} s
//   y_{i+h} = x_{i+h} c + x_i s
// i.e. HF's q * cos + rotate_half(q) * sin. The backward is the rotation by -a:
//   dx_i = dy_i c + dy_{i+h} s,   dx_{i+h} = dy_{i+h} c - dy_i s
//
// Element type `dtype` (f64 or f32, std::invalid_argument otherwise); arithmetic in f64.
// y may alias x (and dx may alias dy). q and k (different head counts) are two calls.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct RopeParams {
  DType dtype = DType::F32;
  int64_t batch = 0, heads = 0, seqlen = 0, head_dim = 0;

  const int32_t* positions = nullptr;  // [B, T]
  const double* inv_freq = nullptr;    // [D/2]
  const void* x = nullptr;             // [B, H, T, D]
  void* y = nullptr;                   // [B, H, T, D]
};

struct RopeGradParams {
  RopeParams fwd;            // sizes, positions, inv_freq (x and y are not used)
  const void* dy = nullptr;  // [B, H, T, D]
  void* dx = nullptr;        // [B, H, T, D]
};

void rope_forward_cpu(const RopeParams& p);
void rope_backward_cpu(const RopeGradParams& g);

#ifdef HA_WITH_CUDA
// CUDA kernels (rope.cu): dtype bf16, f16 or f32; positions and inv_freq on the device; angles
// and cos/sin in double, the rotation in float (16-bit) or double (f32).
void rope_forward_cuda(const RopeParams& p, void* stream);
void rope_backward_cuda(const RopeGradParams& g, void* stream);
#endif

}  // namespace ha
