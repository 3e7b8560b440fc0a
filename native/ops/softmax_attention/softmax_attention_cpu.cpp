// CPU reference kernels of (causal) softmax attention (see softmax_attention.h).
#include "ops/softmax_attention/softmax_attention.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace ha {

namespace {

void check_params(const SoftmaxAttentionParams& p) {
  if (p.dtype != DType::F64 && p.dtype != DType::F32)
    throw std::invalid_argument(std::string("softmax_attention cpu: unsupported dtype ") + dtype_name(p.dtype));
  if (p.batch < 0 || p.heads < 0 || p.kv_heads < 0 || p.seqlen < 0 || p.head_dim < 0 || p.value_dim < 0)
    throw std::invalid_argument("softmax_attention: negative size");
  if (p.kv_heads <= 0 || p.heads % p.kv_heads != 0)
    throw std::invalid_argument("softmax_attention: heads must be a positive multiple of kv_heads");
  if (!p.q || !p.k || !p.v) throw std::invalid_argument("softmax_attention: null input");
}

double effective_scale(const SoftmaxAttentionParams& p) {
  return p.scale != 0.0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(p.head_dim));
}

template <typename T>
double dot(const T* a, const T* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

template <typename T>
void forward_impl(const SoftmaxAttentionParams& p) {
  const int64_t H = p.heads, Hkv = p.kv_heads, T_ = p.seqlen, d = p.head_dim, dv = p.value_dim;
  const int64_t group = H / Hkv;
  const double scale = effective_scale(p);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  T* y = static_cast<T*>(p.y);
  T* lse = static_cast<T*>(p.lse);  // accumulator dtype == T for f64 and f32
  parallel_for(p.batch * H * T_, 8, [&](int64_t r0, int64_t r1) {
    std::vector<double> acc(std::max<int64_t>(dv, 1));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r % T_, bh = r / T_, b = bh / H, h = bh % H;
      const int64_t kvoff = (b * Hkv + h / group) * T_;
      const T* qn = q + r * d;
      const int64_t end = p.causal ? n + 1 : T_;
      double m = -INFINITY, l = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t i = 0; i < end; ++i) {
        const double s = scale * dot(qn, k + (kvoff + i) * d, d);
        if (s > m) {
          const double c = std::exp(m - s);
          l *= c;
          for (int64_t e = 0; e < dv; ++e) acc[e] *= c;
          m = s;
        }
        const double w = std::exp(s - m);
        l += w;
        const T* vi = v + (kvoff + i) * dv;
        for (int64_t e = 0; e < dv; ++e) acc[e] += w * static_cast<double>(vi[e]);
      }
      // A row is empty only for T = 0 (not reached) or a non-causal call with no keys.
      const double inv = l > 0 ? 1.0 / l : 0.0;
      for (int64_t e = 0; e < dv; ++e) y[r * dv + e] = static_cast<T>(acc[e] * inv);
      if (lse) lse[r] = static_cast<T>(l > 0 ? m + std::log(l) : -INFINITY);
    }
  });
}

// For one (b, kv head): loops over the q heads of the group and their rows n; dq_n is owned by
// the row, dk and dv are accumulated in f64 buffers of the kv head.
//   p_ni = exp(s_ni - lse_n),  dp_ni = dy_n . v_i,  ds_ni = p_ni (dp_ni - D_n),  D_n = dy_n . y_n
//   dq_n = scale sum_i ds_ni k_i,  dk_i = scale sum_n ds_ni q_n,  dv_i = sum_n p_ni dy_n
template <typename T>
void backward_impl(const SoftmaxAttentionGradParams& g) {
  const SoftmaxAttentionParams& p = g.fwd;
  const int64_t H = p.heads, Hkv = p.kv_heads, T_ = p.seqlen, d = p.head_dim, dv = p.value_dim;
  const int64_t group = H / Hkv;
  const double scale = effective_scale(p);
  const T* q = static_cast<const T*>(p.q);
  const T* k = static_cast<const T*>(p.k);
  const T* v = static_cast<const T*>(p.v);
  const T* y = static_cast<const T*>(p.y);
  const T* lse = static_cast<const T*>(p.lse);
  const T* dy = static_cast<const T*>(g.dy);
  T* dq = static_cast<T*>(g.dq);
  T* dk = static_cast<T*>(g.dk);
  T* dvp = static_cast<T*>(g.dv);
  parallel_for(p.batch * Hkv, 1, [&](int64_t u0, int64_t u1) {
    std::vector<double> dk_acc(T_ * d), dv_acc(T_ * dv), dq_acc(std::max<int64_t>(d, 1));
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / Hkv, hk = u % Hkv;
      const int64_t kvoff = u * T_;
      std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
      std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        const int64_t qoff = (b * H + h) * T_;
        for (int64_t n = 0; n < T_; ++n) {
          const int64_t r = qoff + n;
          const T* qn = q + r * d;
          const T* dyn = dy + r * dv;
          const double Dn = dot(dyn, y + r * dv, dv);
          const double ln = static_cast<double>(lse[r]);
          const int64_t end = p.causal ? n + 1 : T_;
          std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
          for (int64_t i = 0; i < end; ++i) {
            const T* ki = k + (kvoff + i) * d;
            const T* vi = v + (kvoff + i) * dv;
            const double pni = std::exp(scale * dot(qn, ki, d) - ln);
            const double ds = pni * (dot(dyn, vi, dv) - Dn) * scale;
            double* dki = dk_acc.data() + i * d;
            for (int64_t e = 0; e < d; ++e) {
              dq_acc[e] += ds * static_cast<double>(ki[e]);
              dki[e] += ds * static_cast<double>(qn[e]);
            }
            double* dvi = dv_acc.data() + i * dv;
            for (int64_t e = 0; e < dv; ++e) dvi[e] += pni * static_cast<double>(dyn[e]);
          }
          for (int64_t e = 0; e < d; ++e) dq[r * d + e] = static_cast<T>(dq_acc[e]);
        }
      }
      for (int64_t j = 0; j < T_ * d; ++j) dk[kvoff * d + j] = static_cast<T>(dk_acc[j]);
      for (int64_t j = 0; j < T_ * dv; ++j) dvp[kvoff * dv + j] = static_cast<T>(dv_acc[j]);
    }
  });
}

}  // namespace

void softmax_attention_forward_cpu(const SoftmaxAttentionParams& p) {
  check_params(p);
  if (!p.y) throw std::invalid_argument("softmax_attention: y is null");
  if (p.dtype == DType::F64) forward_impl<double>(p);
  else forward_impl<float>(p);
}

void softmax_attention_backward_cpu(const SoftmaxAttentionGradParams& g) {
  check_params(g.fwd);
  if (!g.fwd.y || !g.fwd.lse) throw std::invalid_argument("softmax_attention backward: needs the forward's y and lse");
  if (!g.dy || !g.dq || !g.dk || !g.dv) throw std::invalid_argument("softmax_attention: null gradient pointer");
  if (g.fwd.dtype == DType::F64) backward_impl<double>(g);
  else backward_impl<float>(g);
}

}  // namespace ha
