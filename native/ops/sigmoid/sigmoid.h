// Logistic sigmoid, the map from gamma logits to gamma (SPEC sec. 2: gamma = sigmoid(w_h)).
// Forward: y = 1 / (1 + exp(-x)). Backward: dx = dy * y * (1 - y), from the forward's output y.
// Arithmetic in f64.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct SigmoidParams {
  DType dtype = DType::F32;  // f64 or f32 on the CPU
  int64_t n = 0;
  const void* x = nullptr;   // forward: x; backward: the forward's output y
  const void* dy = nullptr;  // null: forward
  void* y = nullptr;         // forward: y; backward: dx
};

void sigmoid_cpu(const SigmoidParams& p);

#ifdef HA_WITH_CUDA
// CUDA (sigmoid.cu): bf16, f16 or f32; arithmetic in float (16-bit) or double (f32).
void sigmoid_cuda(const SigmoidParams& p, void* stream);
#endif

}  // namespace ha
