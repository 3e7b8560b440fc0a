// CPU reference kernels of the feature maps (see feature_map.h). Accumulation in f64.
#include "ops/feature_map/feature_map.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace ha {

int64_t feature_map_out_dim(const FeatureMapParams& p) {
  switch (p.kind) {
    case FeatureMapKind::Hedgehog: return 2 * p.proj_dim;
    case FeatureMapKind::T2R: return p.proj_dim;
    case FeatureMapKind::EluRaw: return p.in_dim;
  }
  throw std::invalid_argument("feature_map: unknown kind");
}

namespace {

void check_params(const FeatureMapParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("feature_map cpu: unsupported dtype ") + dtype_name(p.dtype));
  if (p.batch < 0 || p.heads < 0 || p.seqlen < 0 || p.in_dim < 0 || p.proj_dim < 0)
    throw std::invalid_argument("feature_map: negative size");
  if (p.kind != FeatureMapKind::Hedgehog && p.kind != FeatureMapKind::T2R && p.kind != FeatureMapKind::EluRaw)
    throw std::invalid_argument("feature_map: unknown kind");
  if (p.kind == FeatureMapKind::Hedgehog) {
    switch (p.act) {
      case FeatureAct::Softmax: case FeatureAct::Exp: case FeatureAct::Relu:
      case FeatureAct::Elu1: case FeatureAct::Identity: break;
      default: throw std::invalid_argument("feature_map: unknown activation");
    }
  }
  if (!p.x) throw std::invalid_argument("feature_map: x is null");
  if (p.kind != FeatureMapKind::EluRaw && !p.w) throw std::invalid_argument("feature_map: w is null");
}

// act applied to one half: in[f] -> out[f] (double).
void act_forward(FeatureAct act, const double* u, double* out, int64_t f, double sign) {
  switch (act) {
    case FeatureAct::Softmax: {
      double m = -INFINITY;
      for (int64_t j = 0; j < f; ++j) m = std::max(m, sign * u[j]);
      double s = 0;
      for (int64_t j = 0; j < f; ++j) { out[j] = std::exp(sign * u[j] - m); s += out[j]; }
      double inv = 1.0 / s;
      for (int64_t j = 0; j < f; ++j) out[j] *= inv;
      break;
    }
    case FeatureAct::Exp:
      for (int64_t j = 0; j < f; ++j) out[j] = std::exp(sign * u[j]);
      break;
    case FeatureAct::Relu:
      for (int64_t j = 0; j < f; ++j) out[j] = std::max(sign * u[j], 0.0);
      break;
    case FeatureAct::Elu1:
      for (int64_t j = 0; j < f; ++j) { double v = sign * u[j]; out[j] = v > 0 ? 1.0 + v : std::exp(v); }
      break;
    case FeatureAct::Identity:
      for (int64_t j = 0; j < f; ++j) out[j] = sign * u[j];
      break;
  }
}

// Adds d(out)/d(u)^T g to du, where out = act(sign * u) was computed by act_forward.
void act_backward(FeatureAct act, const double* u, const double* out, const double* g, double* du,
                  int64_t f, double sign) {
  switch (act) {
    case FeatureAct::Softmax: {
      double dot = 0;
      for (int64_t j = 0; j < f; ++j) dot += out[j] * g[j];
      for (int64_t j = 0; j < f; ++j) du[j] += sign * out[j] * (g[j] - dot);
      break;
    }
    case FeatureAct::Exp:
      for (int64_t j = 0; j < f; ++j) du[j] += sign * out[j] * g[j];
      break;
    case FeatureAct::Relu:
      for (int64_t j = 0; j < f; ++j) du[j] += (sign * u[j] > 0) ? sign * g[j] : 0.0;
      break;
    case FeatureAct::Elu1:  // derivative 1 for v > 0, exp(v) = out otherwise
      for (int64_t j = 0; j < f; ++j) du[j] += sign * (sign * u[j] > 0 ? 1.0 : out[j]) * g[j];
      break;
    case FeatureAct::Identity:
      for (int64_t j = 0; j < f; ++j) du[j] += sign * g[j];
      break;
  }
}

// u = x W_h + b_h for one row (double).
template <typename T>
void project(const T* x, const T* w, const T* b, double* u, int64_t d, int64_t f) {
  for (int64_t j = 0; j < f; ++j) u[j] = b ? static_cast<double>(b[j]) : 0.0;
  for (int64_t k = 0; k < d; ++k) {
    const double xk = x[k];
    const T* wr = w + k * f;
    for (int64_t j = 0; j < f; ++j) u[j] += xk * static_cast<double>(wr[j]);
  }
}

template <typename T>
void forward_impl(const FeatureMapParams& p) {
  const int64_t H = p.heads, T_ = p.seqlen, d = p.in_dim, f = p.proj_dim;
  const int64_t out = feature_map_out_dim(p);
  const int64_t rows = p.batch * H * T_;
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.w);
  const T* b = static_cast<const T*>(p.b);
  T* phi = static_cast<T*>(p.phi);
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<double> u(std::max<int64_t>(f, 1)), o(std::max<int64_t>(2 * f, 1));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t h = (r / T_) % H;
      const T* xr = x + r * d;
      T* pr = phi + r * out;
      if (p.kind == FeatureMapKind::EluRaw) {
        for (int64_t k = 0; k < d; ++k) {
          double v = xr[k];
          pr[k] = static_cast<T>(v > 0 ? 1.0 + v : std::exp(v));
        }
        continue;
      }
      project(xr, w + h * d * f, b ? b + h * f : nullptr, u.data(), d, f);
      if (p.kind == FeatureMapKind::T2R) {
        for (int64_t j = 0; j < f; ++j) pr[j] = static_cast<T>(std::max(u[j], 0.0));
      } else {
        act_forward(p.act, u.data(), o.data(), f, 1.0);
        act_forward(p.act, u.data(), o.data() + f, f, -1.0);
        for (int64_t j = 0; j < 2 * f; ++j) pr[j] = static_cast<T>(o[j]);
      }
    }
  });
}

template <typename T>
void backward_impl(const FeatureMapGradParams& g) {
  const FeatureMapParams& p = g.fwd;
  const int64_t B = p.batch, H = p.heads, T_ = p.seqlen, d = p.in_dim, f = p.proj_dim;
  const int64_t out = feature_map_out_dim(p);
  const T* x = static_cast<const T*>(p.x);
  const T* dphi = static_cast<const T*>(g.dphi);
  T* dx = static_cast<T*>(g.dx);

  if (p.kind == FeatureMapKind::EluRaw) {
    if (!dx) return;
    parallel_for(B * H * T_, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0 * d; i < r1 * d; ++i) {
        double v = x[i];
        dx[i] = static_cast<T>(static_cast<double>(dphi[i]) * (v > 0 ? 1.0 : std::exp(v)));
      }
    });
    return;
  }

  const T* w = static_cast<const T*>(p.w);
  const T* b = static_cast<const T*>(p.b);
  T* dw = static_cast<T*>(g.dw);
  T* db = b ? static_cast<T*>(g.db) : nullptr;

  // Per head: the B*T rows of that head are cut into `nchunks` fixed chunks (a function of the
  // sizes only); chunks run in parallel and write their dw/db partials into their own slot;
  // the slots are then summed in chunk order. Deterministic for any thread count.
  const int64_t rows = B * T_;
  const int64_t nchunks = std::max<int64_t>(1, std::min<int64_t>(16, rows / 64));
  const int64_t chunk = rows > 0 ? (rows + nchunks - 1) / nchunks : 0;
  std::vector<double> part_w(dw ? nchunks * d * f : 0), part_b(db ? nchunks * f : 0);

  for (int64_t h = 0; h < H; ++h) {
    const T* wh = w + h * d * f;
    const T* bh = b ? b + h * f : nullptr;
    std::fill(part_w.begin(), part_w.end(), 0.0);
    std::fill(part_b.begin(), part_b.end(), 0.0);
    parallel_for(nchunks, 1, [&](int64_t c0, int64_t c1) {
      std::vector<double> u(std::max<int64_t>(f, 1)), o(std::max<int64_t>(2 * f, 1)),
          gr(std::max<int64_t>(2 * f, 1)), du(std::max<int64_t>(f, 1));
      for (int64_t c = c0; c < c1; ++c) {
        double* pw = dw ? part_w.data() + c * d * f : nullptr;
        double* pb = db ? part_b.data() + c * f : nullptr;
        const int64_t e = std::min(rows, (c + 1) * chunk);
        for (int64_t rr = c * chunk; rr < e; ++rr) {
          const int64_t bi = rr / T_, t = rr % T_;
          const int64_t row = (bi * H + h) * T_ + t;
          const T* xr = x + row * d;
          const T* gp = dphi + row * out;
          project(xr, wh, bh, u.data(), d, f);
          std::fill(du.begin(), du.end(), 0.0);
          if (p.kind == FeatureMapKind::T2R) {
            for (int64_t j = 0; j < f; ++j) du[j] = u[j] > 0 ? static_cast<double>(gp[j]) : 0.0;
          } else {
            for (int64_t j = 0; j < 2 * f; ++j) gr[j] = gp[j];
            act_forward(p.act, u.data(), o.data(), f, 1.0);
            act_forward(p.act, u.data(), o.data() + f, f, -1.0);
            act_backward(p.act, u.data(), o.data(), gr.data(), du.data(), f, 1.0);
            act_backward(p.act, u.data(), o.data() + f, gr.data() + f, du.data(), f, -1.0);
          }
          for (int64_t k = 0; k < d; ++k) {
            const T* wr = wh + k * f;
            if (dx) {
              double s = 0;
              for (int64_t j = 0; j < f; ++j) s += static_cast<double>(wr[j]) * du[j];
              dx[row * d + k] = static_cast<T>(s);
            }
            if (pw) {
              const double xk = xr[k];
              double* pwr = pw + k * f;
              for (int64_t j = 0; j < f; ++j) pwr[j] += xk * du[j];
            }
          }
          if (pb) for (int64_t j = 0; j < f; ++j) pb[j] += du[j];
        }
      }
    });
    if (dw) {
      for (int64_t i = 0; i < d * f; ++i) {
        double s = 0;
        for (int64_t c = 0; c < nchunks; ++c) s += part_w[c * d * f + i];
        dw[h * d * f + i] = static_cast<T>(s);
      }
    }
    if (db) {
      for (int64_t j = 0; j < f; ++j) {
        double s = 0;
        for (int64_t c = 0; c < nchunks; ++c) s += part_b[c * f + j];
        db[h * f + j] = static_cast<T>(s);
      }
    }
  }
}

}  // namespace

void feature_map_forward_cpu(const FeatureMapParams& p) {
  check_params(p);
  if (!p.phi) throw std::invalid_argument("feature_map: phi is null");
  if (p.dtype == DType::F64) forward_impl<double>(p);
  else forward_impl<float>(p);
}

void feature_map_backward_cpu(const FeatureMapGradParams& g) {
  check_params(g.fwd);
  if (!g.dphi) throw std::invalid_argument("feature_map: dphi is null");
  if (g.fwd.dtype == DType::F64) backward_impl<double>(g);
  else backward_impl<float>(g);
}

}  // namespace ha
