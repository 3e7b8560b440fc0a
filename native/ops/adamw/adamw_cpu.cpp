// CPU kernels of the AdamW step and gradient-norm clipping (see adamw.h).
#include "ops/adamw/adamw.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace ha {

namespace {

constexpr int64_t kNormChunk = 1 << 15;  // elements per norm partial (fixed: thread-count independent)

void check_dtype(DType t, const char* what) {
  if (t != DType::F64 && t != DType::F32)
    throw std::invalid_argument(std::string(what) + " cpu: unsupported dtype " + dtype_name(t));
}

template <typename T>
void adamw_impl(const AdamWParams& p) {
  T* param = static_cast<T*>(p.param);
  const T* grad = static_cast<const T*>(p.grad);
  T* m = static_cast<T*>(p.exp_avg);
  T* v = static_cast<T*>(p.exp_avg_sq);
  const double t = static_cast<double>(p.step);
  const double bc1 = 1.0 - std::pow(p.beta1, t), bc2_sqrt = std::sqrt(1.0 - std::pow(p.beta2, t));
  const double decay = 1.0 - p.lr * p.weight_decay, step_size = p.lr / bc1;
  const double b1 = p.beta1, b2 = p.beta2, eps = p.eps, gs = p.grad_scale;
  parallel_for(p.n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const double g = gs * static_cast<double>(grad[i]);
      const double mi = b1 * static_cast<double>(m[i]) + (1.0 - b1) * g;
      const double vi = b2 * static_cast<double>(v[i]) + (1.0 - b2) * g * g;
      const double denom = std::sqrt(vi) / bc2_sqrt + eps;
      param[i] = static_cast<T>(static_cast<double>(param[i]) * decay - step_size * mi / denom);
      m[i] = static_cast<T>(mi);
      v[i] = static_cast<T>(vi);
    }
  });
}

void check_list(const TensorList& t) {
  check_dtype(t.dtype, "grad_norm");
  if (t.count < 0) throw std::invalid_argument("grad_norm: negative count");
  if (t.count > 0 && (!t.data || !t.sizes)) throw std::invalid_argument("grad_norm: null list");
  for (int64_t k = 0; k < t.count; ++k) {
    if (t.sizes[k] < 0) throw std::invalid_argument("grad_norm: negative size");
    if (t.sizes[k] > 0 && !t.data[k]) throw std::invalid_argument("grad_norm: null tensor");
  }
}

template <typename T>
double sum_squares(const TensorList& t) {
  struct Chunk { int64_t tensor, begin, end; };
  std::vector<Chunk> chunks;
  for (int64_t k = 0; k < t.count; ++k)
    for (int64_t b = 0; b < t.sizes[k]; b += kNormChunk) chunks.push_back({k, b, std::min(t.sizes[k], b + kNormChunk)});
  std::vector<double> part(chunks.size(), 0.0);
  parallel_for(static_cast<int64_t>(chunks.size()), 4, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const T* x = static_cast<const T*>(t.data[chunks[c].tensor]);
      double s = 0;
      for (int64_t i = chunks[c].begin; i < chunks[c].end; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
      part[c] = s;
    }
  });
  double s = 0;
  for (double v : part) s += v;
  return s;
}

template <typename T>
void scale_impl(const TensorList& t, double s) {
  for (int64_t k = 0; k < t.count; ++k) {
    T* x = static_cast<T*>(t.data[k]);
    parallel_for(t.sizes[k], 1 << 15, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) x[i] = static_cast<T>(static_cast<double>(x[i]) * s);
    });
  }
}

}  // namespace

void adamw_step_cpu(const AdamWParams& p) {
  check_dtype(p.dtype, "adamw");
  if (p.n < 0) throw std::invalid_argument("adamw: negative size");
  if (p.step < 1) throw std::invalid_argument("adamw: step must be >= 1");
  if (p.n > 0 && (!p.param || !p.grad || !p.exp_avg || !p.exp_avg_sq)) throw std::invalid_argument("adamw: null pointer");
  if (p.dtype == DType::F64) adamw_impl<double>(p);
  else adamw_impl<float>(p);
}

double grad_norm_cpu(const TensorList& t) {
  check_list(t);
  return std::sqrt(t.dtype == DType::F64 ? sum_squares<double>(t) : sum_squares<float>(t));
}

void scale_tensors_cpu(const TensorList& t, double s) {
  check_list(t);
  if (t.dtype == DType::F64) scale_impl<double>(t, s);
  else scale_impl<float>(t, s);
}

double clip_grad_norm_cpu(const TensorList& t, double max_norm) {
  const double norm = grad_norm_cpu(t);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_tensors_cpu(t, coef);
  return norm;
}

}  // namespace ha
