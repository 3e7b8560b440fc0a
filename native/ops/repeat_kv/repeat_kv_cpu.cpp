#include <cstring>
#include <stdexcept>

#include "core/parallel.h"
#include "ops/repeat_kv/repeat_kv.h"

namespace ha {

namespace {
template <typename T>
void run(const RepeatKvParams& p) {
  const T* src = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.y);
  const int64_t kv = p.kv_heads, groups = p.groups, inner = p.inner;
  parallel_for(p.outer * kv, 4, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; r++) {  // r = (o, j): kv head j of item o
      const int64_t o = r / kv, j = r % kv;
      if (!p.backward) {
        for (int64_t g = 0; g < groups; g++)
          std::memcpy(out + ((o * kv + j) * groups + g) * inner, src + r * inner, static_cast<size_t>(inner) * sizeof(T));
      } else {
        for (int64_t i = 0; i < inner; i++) {
          double acc = 0;
          for (int64_t g = 0; g < groups; g++) acc += static_cast<double>(src[((o * kv + j) * groups + g) * inner + i]);
          out[r * inner + i] = static_cast<T>(acc);
        }
      }
    }
  });
}
}  // namespace

void repeat_kv_cpu(const RepeatKvParams& p) {
  if (p.dtype == DType::F64) run<double>(p);
  else if (p.dtype == DType::F32) run<float>(p);
  else throw std::invalid_argument("repeat_kv_cpu: dtype must be f64 or f32");
}

}  // namespace ha
