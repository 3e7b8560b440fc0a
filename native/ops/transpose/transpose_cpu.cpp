#include <cstring>

#include "core/parallel.h"
#include "ops/transpose/transpose.h"

namespace ha {

void transpose12_cpu(const Transpose12Params& p) {
  const char* x = static_cast<const char*>(p.x);
  char* y = static_cast<char*>(p.y);
  const int64_t d1 = p.d1, d2 = p.d2, row = p.d3 * dtype_size(p.dtype);
  parallel_for(p.d0 * d1, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; r++) {
      const int64_t i0 = r / d1, i1 = r % d1;
      for (int64_t i2 = 0; i2 < d2; i2++)
        std::memcpy(y + ((i0 * d2 + i2) * d1 + i1) * row, x + ((i0 * d1 + i1) * d2 + i2) * row, static_cast<size_t>(row));
    }
  });
}

}  // namespace ha
