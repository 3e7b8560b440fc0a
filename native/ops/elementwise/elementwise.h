// Elementwise basics of the Llama forward/backward runtime: residual adds, gradient
// accumulation, scaling, fills, and reducing over leading rows. Parameters in the style of
// flash-attention's flash.h: raw pointers and sizes.
//
//   add_cpu:        y = a + alpha * b
//   mul_cpu:        y = a * b
//   scale_cpu:      y = alpha * a
//   fill_cpu:       y = alpha
//   accumulate_cpu: y += alpha * a          (dst += src for alpha = 1)
//   sum_rows_cpu:   y[j] (+)= sum_i x[i, j]  over x [rows, cols] -> y [cols]
// Element type `dtype` (f64 or f32, std::invalid_argument otherwise) for every operand;
// arithmetic in f64. y may alias a or b. sum_rows sums each column in row order in f64
// (bit-identical for any thread count).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct ElementwiseParams {
  DType dtype = DType::F32;
  int64_t n = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* y = nullptr;
  double alpha = 1.0;
};

void add_cpu(const ElementwiseParams& p);
void mul_cpu(const ElementwiseParams& p);
void scale_cpu(const ElementwiseParams& p);
void fill_cpu(const ElementwiseParams& p);
void accumulate_cpu(const ElementwiseParams& p);

struct SumRowsParams {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  const void* x = nullptr;  // [rows, cols]
  void* y = nullptr;        // [cols]
  bool accumulate = false;  // y += instead of y =
};

void sum_rows_cpu(const SumRowsParams& p);

#ifdef HA_WITH_CUDA
// CUDA kernels (elementwise.cu): dtype bf16, f16 or f32; arithmetic in float (16-bit) or double
// (f32); sum_rows sums in double over fixed row chunks added in order (deterministic).
void add_cuda(const ElementwiseParams& p, void* stream);
void mul_cuda(const ElementwiseParams& p, void* stream);
void scale_cuda(const ElementwiseParams& p, void* stream);
void fill_cuda(const ElementwiseParams& p, void* stream);
void accumulate_cuda(const ElementwiseParams& p, void* stream);
void sum_rows_cuda(const SumRowsParams& p, void* stream);
// y[r, :] += bias for r in [0, rows) (a linear layer's bias), y [rows, cols], bias [cols].
void broadcast_add_rows_cuda(DType dtype, int64_t rows, int64_t cols, const void* bias, void* y, void* stream);
#endif

}  // namespace ha
