// GQA repeat-kv: kv heads repeated to the q heads that share them, so per-q-head feature maps
// can run on keys. Parameters in the style of flash-attention's flash.h.
//
// Forward: x [outer, kv_heads, inner] -> y [outer, kv_heads * groups, inner]; head h of y is kv
// head h / groups of x. Backward: dy [outer, kv_heads * groups, inner] -> dx [outer, kv_heads,
// inner], each group summed in order (f64 accumulation, deterministic).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct RepeatKvParams {
  DType dtype = DType::F32;  // f64 or f32 on the CPU
  int64_t outer = 0, kv_heads = 0, groups = 1, inner = 0;
  bool backward = false;    // false: x small -> y big; true: x big (dy) -> y small (dx)
  const void* x = nullptr;
  void* y = nullptr;
};

void repeat_kv_cpu(const RepeatKvParams& p);

#ifdef HA_WITH_CUDA
// CUDA (repeat_kv.cu): bf16, f16 or f32; the backward sums each group in order.
void repeat_kv_cuda(const RepeatKvParams& p, void* stream);
#endif

}  // namespace ha
