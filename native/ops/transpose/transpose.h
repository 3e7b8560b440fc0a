// Swap of axes 1 and 2 of a 4-d tensor: x [d0, d1, d2, d3] -> y [d0, d2, d1, d3] (e.g. the
// projections' [B, T, H, D] to attention's [B, H, T, D] and back). Any element type: rows of d3
// elements are moved as bytes.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct Transpose12Params {
  DType dtype = DType::F32;
  int64_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
  const void* x = nullptr;
  void* y = nullptr;
};

void transpose12_cpu(const Transpose12Params& p);

#ifdef HA_WITH_CUDA
// CUDA (transpose.cu): any dtype; coalesced writes, rows moved in 16/8/4/2-byte pieces.
void transpose12_cuda(const Transpose12Params& p, void* stream);
#endif

}  // namespace ha
