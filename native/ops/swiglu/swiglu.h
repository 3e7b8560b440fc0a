// SwiGLU gate of the Llama MLP: y = silu(gate) * up, silu(g) = g * sigmoid(g).
// Parameters in the style of flash-attention's flash.h: raw pointers and sizes.
//
// Elementwise over n elements (gate, up, y contiguous, same shape, e.g. [tokens, intermediate]):
//   y = silu(g) u
//   dgate = dy u sigmoid(g) (1 + g (1 - sigmoid(g))),   dup = dy silu(g)
// Element type `dtype` (f64 or f32, std::invalid_argument otherwise); arithmetic in f64.
// y may alias gate or up; dgate may alias gate or dy, dup may alias up or dy (each element is
// read before it is written), but dgate and dup must be distinct.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct SwigluParams {
  DType dtype = DType::F32;
  int64_t n = 0;

  const void* gate = nullptr;
  const void* up = nullptr;
  void* y = nullptr;
};

struct SwigluGradParams {
  SwigluParams fwd;          // gate, up (y is not used)
  const void* dy = nullptr;
  void* dgate = nullptr;
  void* dup = nullptr;
};

void swiglu_forward_cpu(const SwigluParams& p);
void swiglu_backward_cpu(const SwigluGradParams& g);

#ifdef HA_WITH_CUDA
// CUDA kernels (swiglu.cu): dtype bf16, f16 or f32; arithmetic in float (16-bit) or double (f32).
void swiglu_forward_cuda(const SwigluParams& p, void* stream);
void swiglu_backward_cuda(const SwigluGradParams& g, void* stream);
#endif

}  // namespace ha
