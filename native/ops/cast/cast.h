// Element-type conversion (f64/f32/bf16/f16/i32), the op behind Tensor.cast().
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

void cast_cpu(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);
#ifdef HA_WITH_CUDA
void cast_cuda(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, void* stream);
#endif

}  // namespace ha
