#include <cmath>

#include "core/parallel.h"
#include "ops/cast/cast.h"

namespace ha {

namespace {
inline double load(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F64: return static_cast<const double*>(p)[i];
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::I32: return static_cast<const int32_t*>(p)[i];
  }
  return 0;
}
inline void store(void* p, DType t, int64_t i, double x) {
  switch (t) {
    case DType::F64: static_cast<double*>(p)[i] = x; break;
    case DType::F32: static_cast<float*>(p)[i] = static_cast<float>(x); break;
    // Round once from f64 would differ from PyTorch's f32 path only in double-rounding corner
    // cases; going through f32 matches torch's .to(bfloat16) of an f32 tensor.
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(static_cast<float>(x)); break;
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(static_cast<float>(x)); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(std::nearbyint(x)); break;
  }
}
}  // namespace

void cast_cpu(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) store(dst, dst_dtype, i, load(src, src_dtype, i));
  });
}

}  // namespace ha
