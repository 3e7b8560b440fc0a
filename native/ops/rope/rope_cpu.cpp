// CPU kernels of rotary position embedding (see rope.h).
#include "ops/rope/rope.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace ha {

namespace {

void check_params(const RopeParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("rope cpu: unsupported dtype ") + dtype_name(p.dtype));
  if (p.batch < 0 || p.heads < 0 || p.seqlen < 0 || p.head_dim < 0) throw std::invalid_argument("rope: negative size");
  if (p.head_dim % 2 != 0) throw std::invalid_argument("rope: head_dim must be even");
  if (!p.positions || !p.inv_freq) throw std::invalid_argument("rope: null positions or inv_freq");
}

// sign = +1: rotation by +a (forward), -1: by -a (backward).
template <typename T>
void rotate(const RopeParams& p, const void* src, void* dst, double sign) {
  const int64_t H = p.heads, T_ = p.seqlen, D = p.head_dim, h = D / 2;
  const T* x = static_cast<const T*>(src);
  T* y = static_cast<T*>(dst);
  // One unit per (b, t): cos/sin once, then every head.
  parallel_for(p.batch * T_, 4, [&](int64_t u0, int64_t u1) {
    std::vector<double> cs(h), sn(h);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / T_, t = u % T_;
      const double pos = static_cast<double>(p.positions[u]);
      for (int64_t i = 0; i < h; ++i) {
        const double a = pos * p.inv_freq[i];
        cs[i] = std::cos(a);
        sn[i] = sign * std::sin(a);
      }
      for (int64_t hd = 0; hd < H; ++hd) {
        const int64_t off = ((b * H + hd) * T_ + t) * D;
        const T* xr = x + off;
        T* yr = y + off;
        for (int64_t i = 0; i < h; ++i) {
          const double x1 = static_cast<double>(xr[i]), x2 = static_cast<double>(xr[i + h]);
          yr[i] = static_cast<T>(x1 * cs[i] - x2 * sn[i]);
          yr[i + h] = static_cast<T>(x2 * cs[i] + x1 * sn[i]);
        }
      }
    }
  });
}

}  // namespace

void rope_forward_cpu(const RopeParams& p) {
  check_params(p);
  if (!p.x || !p.y) throw std::invalid_argument("rope: null x or y");
  if (p.dtype == DType::F64) rotate<double>(p, p.x, p.y, 1.0);
  else rotate<float>(p, p.x, p.y, 1.0);
}

void rope_backward_cpu(const RopeGradParams& g) {
  check_params(g.fwd);
  if (!g.dy || !g.dx) throw std::invalid_argument("rope: null dy or dx");
  if (g.fwd.dtype == DType::F64) rotate<double>(g.fwd, g.dy, g.dx, -1.0);
  else rotate<float>(g.fwd, g.dy, g.dx, -1.0);
}

}  // namespace ha
