#include <cmath>
#include <stdexcept>

#include "core/parallel.h"
#include "ops/random/random.h"

namespace ha {

namespace {
template <typename T>
void run(const RandomNormalParams& p) {
  T* y = static_cast<T*>(p.y);
  const double two_pi = 6.283185307179586476925286766559;
  parallel_for(p.n, 4096, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
      double u1, u2;
      random_uniform_pair(p.seed, i, u1, u2);
      y[i] = static_cast<T>(p.mean + p.std * std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2));
    }
  });
}
}  // namespace

void random_normal_cpu(const RandomNormalParams& p) {
  if (p.dtype == DType::F64) run<double>(p);
  else if (p.dtype == DType::F32) run<float>(p);
  else throw std::invalid_argument("random_normal_cpu: dtype must be f64 or f32");
}

}  // namespace ha
