// CPU kernels of the SwiGLU gate (see swiglu.h).
#include "ops/swiglu/swiglu.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "core/parallel.h"

namespace ha {

namespace {

void check_params(const SwigluParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("swiglu cpu: unsupported dtype ") + dtype_name(p.dtype));
  if (p.n < 0) throw std::invalid_argument("swiglu: negative size");
  if (!p.gate || !p.up) throw std::invalid_argument("swiglu: null input");
}

inline double sigmoid(double g) {
  if (g >= 0) return 1.0 / (1.0 + std::exp(-g));
  const double e = std::exp(g);
  return e / (1.0 + e);
}

template <typename T>
void forward_impl(const SwigluParams& p) {
  const T* gate = static_cast<const T*>(p.gate);
  const T* up = static_cast<const T*>(p.up);
  T* y = static_cast<T*>(p.y);
  parallel_for(p.n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const double g = static_cast<double>(gate[i]);
      y[i] = static_cast<T>(g * sigmoid(g) * static_cast<double>(up[i]));
    }
  });
}

template <typename T>
void backward_impl(const SwigluGradParams& gp) {
  const T* gate = static_cast<const T*>(gp.fwd.gate);
  const T* up = static_cast<const T*>(gp.fwd.up);
  const T* dy = static_cast<const T*>(gp.dy);
  T* dgate = static_cast<T*>(gp.dgate);
  T* dup = static_cast<T*>(gp.dup);
  parallel_for(gp.fwd.n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const double g = static_cast<double>(gate[i]), u = static_cast<double>(up[i]), d = static_cast<double>(dy[i]);
      const double s = sigmoid(g);
      const double dg = d * u * s * (1.0 + g * (1.0 - s));
      const double du = d * g * s;
      dgate[i] = static_cast<T>(dg);
      dup[i] = static_cast<T>(du);
    }
  });
}

}  // namespace

void swiglu_forward_cpu(const SwigluParams& p) {
  check_params(p);
  if (!p.y) throw std::invalid_argument("swiglu: y is null");
  if (p.dtype == DType::F64) forward_impl<double>(p);
  else forward_impl<float>(p);
}

void swiglu_backward_cpu(const SwigluGradParams& g) {
  check_params(g.fwd);
  if (!g.dy || !g.dgate || !g.dup) throw std::invalid_argument("swiglu: null gradient pointer");
  if (g.dgate == g.dup) throw std::invalid_argument("swiglu: dgate and dup must be distinct");
  if (g.fwd.dtype == DType::F64) backward_impl<double>(g);
  else backward_impl<float>(g);
}

}  // namespace ha
