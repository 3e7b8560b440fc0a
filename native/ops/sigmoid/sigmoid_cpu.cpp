#include <cmath>
#include <stdexcept>

#include "ops/sigmoid/sigmoid.h"

namespace ha {

namespace {
template <typename T>
void run(const SigmoidParams& p) {
  const T* x = static_cast<const T*>(p.x);
  const T* dy = static_cast<const T*>(p.dy);
  T* y = static_cast<T*>(p.y);
  for (int64_t i = 0; i < p.n; i++) {
    const double v = static_cast<double>(x[i]);
    y[i] = static_cast<T>(dy ? static_cast<double>(dy[i]) * v * (1.0 - v) : 1.0 / (1.0 + std::exp(-v)));
  }
}
}  // namespace

void sigmoid_cpu(const SigmoidParams& p) {
  if (p.dtype == DType::F64) run<double>(p);
  else if (p.dtype == DType::F32) run<float>(p);
  else throw std::invalid_argument("sigmoid_cpu: dtype must be f64 or f32");
}

}  // namespace ha
