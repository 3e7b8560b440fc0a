// CPU recurrent decode of hybrid attention: see hybrid_decode.h for the semantics, the state
// layout and the tensor layouts. Work is split over (sequence, kv head) pairs: a task owns the
// kv head's ring and the S, z, fk ring of the q heads that read it, so tasks never share memory.
// Each token costs O(H (C d + F dv)) with C the ring capacity: prefill is linear in T0.
#include "ops/hybrid_decode/hybrid_decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace ha {

namespace {

int64_t align_up(int64_t x) { return (x + kHybridDecodeAlign - 1) / kHybridDecodeAlign * kHybridDecodeAlign; }

void fail(const std::string& what) { throw std::invalid_argument("hybrid_decode: " + what); }

void validate_config(const HybridDecodeConfig& c) {
  if (c.dtype != DType::F64 && c.dtype != DType::F32) fail(std::string("dtype ") + dtype_name(c.dtype) + " not supported on the CPU (f64, f32)");
  if (c.heads < 1) fail("heads must be >= 1");
  if (c.kv_heads < 1) fail("kv_heads must be >= 1");
  if (c.heads % c.kv_heads != 0) fail("heads must be a multiple of kv_heads");
  if (c.head_dim < 1) fail("head_dim must be >= 1");
  if (c.value_dim < 1) fail("value_dim must be >= 1");
  if (c.feature_dim < 0) fail("feature_dim must be >= 0");
  if (c.window < 1) fail("window must be >= 1");
  if (c.sinks < 0) fail("sinks must be >= 0");
  if (c.geometry != WindowGeometry::Sliding && c.geometry != WindowGeometry::Terraced) fail("unknown window geometry");
}

void validate_mode(HybridMode m, LambdaKind l) {
  if (static_cast<int32_t>(m) < 0 || static_cast<int32_t>(m) > static_cast<int32_t>(HybridMode::None)) fail("unknown mode");
  if (l != LambdaKind::One && l != LambdaKind::Affine) fail("unknown lambda kind");
}

void write_header(const HybridDecodeConfig& c, int64_t* h, int64_t pos) {
  std::memset(h, 0, sizeof(int64_t) * kHybridDecodeHeaderWords);
  h[0] = kHybridDecodeMagic;
  h[1] = kHybridDecodeVersion;
  h[2] = pos;
  h[3] = static_cast<int64_t>(c.dtype);
  h[4] = c.heads;
  h[5] = c.kv_heads;
  h[6] = c.head_dim;
  h[7] = c.value_dim;
  h[8] = c.feature_dim;
  h[9] = c.window;
  h[10] = static_cast<int64_t>(c.geometry);
  h[11] = c.sinks;
}

void check_header(const HybridDecodeConfig& c, const int64_t* h) {
  if (h[0] != kHybridDecodeMagic) fail("state has no decode header (not initialised by prefill?)");
  if (h[1] != kHybridDecodeVersion) fail("state layout version " + std::to_string(h[1]) + " not supported");
  if (h[2] < 0) fail("state position is negative");
  const int64_t want[] = {static_cast<int64_t>(c.dtype), c.heads, c.kv_heads, c.head_dim, c.value_dim,
                          c.feature_dim, c.window, static_cast<int64_t>(c.geometry), c.sinks};
  const char* names[] = {"dtype", "heads", "kv_heads", "head_dim", "value_dim", "feature_dim", "window", "geometry", "sinks"};
  for (int i = 0; i < 9; ++i)
    if (h[3 + i] != want[i])
      fail(std::string("state was built with a different ") + names[i] + " (" + std::to_string(h[3 + i]) + " vs " + std::to_string(want[i]) + ")");
}

// Where the rows of one tensor live: prefill [B, nh, T, X] or packed [N, nh, X].
struct RowMap {
  bool packed = false;
  int64_t seqlen = 0;               // prefill T0
  const int64_t* cu = nullptr;      // packed, may be null
  int64_t per_seq = 1;              // packed without cu
  int64_t start(int64_t b) const { return cu ? cu[b] : b * per_seq; }
  int64_t count(int64_t b) const { return packed ? (cu ? cu[b + 1] - cu[b] : per_seq) : seqlen; }
  // row index of (sequence b, head h of nh, token t of the sequence's new tokens)
  int64_t row(int64_t b, int64_t nh, int64_t h, int64_t t) const {
    return packed ? (start(b) + t) * nh + h : (b * nh + h) * seqlen + t;
  }
};

template <typename T>
struct Job {
  HybridDecodeConfig cfg;
  HybridDecodeStateLayout L;
  HybridMode mode;
  LambdaKind lambda_kind;
  T scale;
  char* state;
  const int64_t* slots;
  const T* gamma;
  const T* keep;
  const T *q, *k, *v, *fq, *fk;
  T *y, *c, *den_swa, *den_la;
  bool outputs;
  RowMap rows;

  char* seq_state(int64_t b) const { return state + (slots ? slots[b] : b) * L.bytes; }
};

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Processes the new tokens of sequence b for kv head g and its q heads.
template <typename T>
void run_group(const Job<T>& J, int64_t b, int64_t g, int64_t pos0) {
  const HybridDecodeConfig& cf = J.cfg;
  const int64_t H = cf.heads, Hkv = cf.kv_heads, d = cf.head_dim, dv = cf.value_dim, F = cf.feature_dim;
  const int64_t w = cf.window, C = J.L.capacity, NS = cf.sinks;
  const bool terraced = cf.geometry == WindowGeometry::Terraced;
  const int64_t hpg = H / Hkv, h0 = g * hpg;

  char* st = J.seq_state(b);
  T* S_all = reinterpret_cast<T*>(st + J.L.S);
  T* z_all = reinterpret_cast<T*>(st + J.L.z);
  T* wk = reinterpret_cast<T*>(st + J.L.win_k) + g * C * d;
  T* wv = reinterpret_cast<T*>(st + J.L.win_v) + g * C * dv;
  T* wfk_all = reinterpret_cast<T*>(st + J.L.win_fk);
  T* sk = reinterpret_cast<T*>(st + J.L.sink_k) + g * NS * d;
  T* sv = reinterpret_cast<T*>(st + J.L.sink_v) + g * NS * dv;

  const HybridMode mode = J.mode;
  const bool soft_win = mode == HybridMode::Hybrid || mode == HybridMode::Swa || mode == HybridMode::Overlap;
  const bool soft_sinks = mode == HybridMode::Sinks;
  const bool la_lin = mode == HybridMode::Hybrid || mode == HybridMode::La;
  const bool la_full = mode == HybridMode::LaFull || mode == HybridMode::Overlap;

  std::vector<T> sbuf(std::max<int64_t>(C, NS) + 1), acc(dv), la_num(dv);

  const int64_t nt = J.rows.count(b);
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t n = pos0 + t;
    const int64_t slot = n % C;
    // 1. the new token joins the ring (and the sinks)
    const T* kn = J.k + J.rows.row(b, Hkv, g, t) * d;
    const T* vn = J.v + J.rows.row(b, Hkv, g, t) * dv;
    std::memcpy(wk + slot * d, kn, sizeof(T) * d);
    std::memcpy(wv + slot * dv, vn, sizeof(T) * dv);
    if (F > 0)
      for (int64_t h = h0; h < h0 + hpg; ++h)
        std::memcpy(wfk_all + (h * C + slot) * F, J.fk + J.rows.row(b, H, h, t) * F, sizeof(T) * F);
    if (n < NS) {
      std::memcpy(sk + n * d, kn, sizeof(T) * d);
      std::memcpy(sv + n * dv, vn, sizeof(T) * dv);
    }

    // 2. outputs of the q heads of this group
    if (J.outputs) {
      const int64_t lo = terraced ? std::max<int64_t>(0, (n / w - 1) * w) : std::max<int64_t>(0, n - w + 1);
      for (int64_t h = h0; h < h0 + hpg; ++h) {
        const int64_t r = J.rows.row(b, H, h, t);
        T* yr = J.y ? J.y + r * dv : nullptr;
        T c_out = 0, dswa_out = 0, dla_out = 0;
        if (mode != HybridMode::None) {
          const T gam = J.gamma[h];
          // swa and sinks are plain softmaxes (gamma cancels; the parallel form reports their
          // den_swa without it); keep = 0 switches the softmax branch off in every mode
          const T kp = J.keep ? J.keep[b * H + h] : T(1);
          const T g_eff = (mode == HybridMode::Swa || mode == HybridMode::Sinks) ? kp : gam * kp;
          const T lam = J.lambda_kind == LambdaKind::Affine ? T(1) - gam : T(1);
          const T* qn = J.q + r * d;
          const T* fqn = F > 0 ? J.fq + r * F : nullptr;
          std::fill(acc.begin(), acc.end(), T(0));
          std::fill(la_num.begin(), la_num.end(), T(0));
          T sum_e = 0, la_den = 0;
          // softmax branch
          if ((soft_win || soft_sinks) && g_eff != 0) {  // keep = 0: softmax branch off (c = 0, den_swa = 0)
            const int64_t cnt = soft_win ? n - lo + 1 : std::min<int64_t>(NS, n + 1);
            if (cnt > 0) {
              T mx = -INFINITY;
              for (int64_t a = 0; a < cnt; ++a) {
                const T* ki = soft_win ? wk + ((lo + a) % C) * d : sk + a * d;
                sbuf[a] = J.scale * dot(qn, ki, d);
                mx = std::max(mx, sbuf[a]);
              }
              c_out = mx;
              for (int64_t a = 0; a < cnt; ++a) {
                const T e = std::exp(sbuf[a] - mx);
                sum_e += e;
                const T* vi = soft_win ? wv + ((lo + a) % C) * dv : sv + a * dv;
                for (int64_t j = 0; j < dv; ++j) acc[j] += e * vi[j];
              }
            }
          }
          // linear-attention branch: Lin(n) from (S, z), plus the window for the full prefix
          if ((la_lin || la_full) && F > 0) {
            const T* S = S_all + h * F * dv;
            const T* z = z_all + h * F;
            la_den = dot(fqn, z, F);
            for (int64_t f = 0; f < F; ++f) {
              const T a = fqn[f];
              const T* Sf = S + f * dv;
              for (int64_t j = 0; j < dv; ++j) la_num[j] += a * Sf[j];
            }
            if (la_full) {
              const T* wfk = wfk_all + h * C * F;
              for (int64_t i = lo; i <= n; ++i) {
                const int64_t s = i % C;
                const T a = dot(fqn, wfk + s * F, F);
                la_den += a;
                const T* vi = wv + s * dv;
                for (int64_t j = 0; j < dv; ++j) la_num[j] += a * vi[j];
              }
            }
          }
          dswa_out = g_eff * sum_e;
          dla_out = lam * la_den;
          const T den = dswa_out + dla_out;
          if (yr) {
            if (den != T(0)) {
              const T inv = T(1) / den;
              for (int64_t j = 0; j < dv; ++j) yr[j] = (g_eff * acc[j] + lam * la_num[j]) * inv;
            } else {
              std::fill(yr, yr + dv, T(0));
            }
          }
        } else if (yr) {
          std::fill(yr, yr + dv, T(0));
        }
        if (J.c) J.c[r] = c_out;
        if (J.den_swa) J.den_swa[r] = dswa_out;
        if (J.den_la) J.den_la[r] = dla_out;
      }
    }

    // 3. tokens of Lin(n + 1) \ Lin(n) move from the ring into (S, z)
    if (F > 0) {
      int64_t j0 = 0, j1 = 0;
      const int64_t m = n + 1;
      if (!terraced) {
        j0 = m - w;
        j1 = j0 >= 0 ? j0 + 1 : j0;
      } else if (m % w == 0 && m >= 2 * w) {
        j0 = m - 2 * w;
        j1 = m - w;
      }
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t s = j % C;
        const T* vj = wv + s * dv;
        for (int64_t h = h0; h < h0 + hpg; ++h) {
          const T* fkj = wfk_all + (h * C + s) * F;
          T* S = S_all + h * F * dv;
          T* z = z_all + h * F;
          for (int64_t f = 0; f < F; ++f) {
            const T a = fkj[f];
            z[f] += a;
            T* Sf = S + f * dv;
            for (int64_t i = 0; i < dv; ++i) Sf[i] += a * vj[i];
          }
        }
      }
    }
  }
}

template <typename T>
void run(const Job<T>& J, int64_t batch, int64_t total_tokens) {
  const HybridDecodeConfig& cf = J.cfg;
  std::vector<int64_t> pos0(batch);
  for (int64_t b = 0; b < batch; ++b) pos0[b] = reinterpret_cast<const int64_t*>(J.seq_state(b))[2];
  const int64_t tasks = batch * cf.kv_heads;
  // rough cost of a task, to keep small calls on one thread
  const int64_t per_token = (cf.heads / cf.kv_heads) * (J.L.capacity * (cf.head_dim + cf.value_dim) + cf.feature_dim * cf.value_dim * 2) + 1;
  const int64_t per_task = std::max<int64_t>(1, total_tokens / std::max<int64_t>(1, batch)) * per_token;
  const int64_t min_per_thread = std::max<int64_t>(1, (int64_t(1) << 16) / per_task);
  parallel_for(tasks, min_per_thread, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) run_group<T>(J, i / cf.kv_heads, i % cf.kv_heads, pos0[i / cf.kv_heads]);
  });
  for (int64_t b = 0; b < batch; ++b) reinterpret_cast<int64_t*>(J.seq_state(b))[2] = pos0[b] + J.rows.count(b);
}

template <typename T>
Job<T> make_job(const HybridDecodeParams& p, const HybridDecodeStateLayout& L, const RowMap& rows) {
  Job<T> J;
  J.cfg = p.config;
  J.L = L;
  J.mode = p.mode;
  J.lambda_kind = p.lambda_kind;
  J.scale = static_cast<T>(p.scale != 0.0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(p.config.head_dim)));
  J.state = static_cast<char*>(p.state);
  J.slots = p.slots;
  J.gamma = static_cast<const T*>(p.gamma);
  J.keep = static_cast<const T*>(p.keep);
  J.q = static_cast<const T*>(p.q);
  J.k = static_cast<const T*>(p.k);
  J.v = static_cast<const T*>(p.v);
  J.fq = static_cast<const T*>(p.fq);
  J.fk = static_cast<const T*>(p.fk);
  J.y = static_cast<T*>(p.y);
  J.c = static_cast<T*>(p.c);
  J.den_swa = static_cast<T*>(p.den_swa);
  J.den_la = static_cast<T*>(p.den_la);
  J.outputs = p.y || p.c || p.den_swa || p.den_la;
  J.rows = rows;
  return J;
}

// Checks shared by prefill and step; returns the layout.
HybridDecodeStateLayout validate_common(const HybridDecodeParams& p, bool have_tokens) {
  HybridDecodeStateLayout L = hybrid_decode_state_layout(p.config);
  validate_mode(p.mode, p.lambda_kind);
  if (p.batch < 0) fail("batch must be >= 0");
  if (!std::isfinite(p.scale)) fail("scale must be finite");
  if (p.batch == 0) return L;
  if (!p.state) fail("state is null");
  if (p.slots) {
    std::vector<int64_t> s(p.slots, p.slots + p.batch);
    std::sort(s.begin(), s.end());
    if (s[0] < 0) fail("slots must be >= 0");
    if (std::adjacent_find(s.begin(), s.end()) != s.end()) fail("slots must be distinct");
  }
  if (have_tokens) {
    if (!p.k || !p.v) fail("k and v are required");
    if (p.config.feature_dim > 0 && !p.fk) fail("fk is required (feature_dim > 0)");
    const bool outputs = p.y || p.c || p.den_swa || p.den_la;
    if (outputs) {
      if (!p.q) fail("q is required for outputs");
      if (!p.gamma) fail("gamma is required for outputs");
      if (p.config.feature_dim > 0 && !p.fq) fail("fq is required for outputs (feature_dim > 0)");
    }
  }
  return L;
}

}  // namespace

HybridDecodeStateLayout hybrid_decode_state_layout(const HybridDecodeConfig& c) {
  validate_config(c);
  const int64_t E = dtype_size(c.dtype), A = dtype_size(accum_dtype(c.dtype));
  HybridDecodeStateLayout L;
  L.capacity = c.geometry == WindowGeometry::Terraced ? 2 * c.window : c.window;
  const int64_t C = L.capacity;
  int64_t off = 0;
  auto take = [&](int64_t bytes) { int64_t o = off; off = align_up(off + bytes); return o; };
  L.header = take(kHybridDecodeHeaderWords * 8);
  L.S = take(A * c.heads * c.feature_dim * c.value_dim);
  L.z = take(A * c.heads * c.feature_dim);
  L.win_k = take(E * c.kv_heads * C * c.head_dim);
  L.win_v = take(E * c.kv_heads * C * c.value_dim);
  L.win_fk = take(E * c.heads * C * c.feature_dim);
  L.sink_k = take(E * c.kv_heads * c.sinks * c.head_dim);
  L.sink_v = take(E * c.kv_heads * c.sinks * c.value_dim);
  L.bytes = off;
  return L;
}

int64_t hybrid_decode_state_bytes(const HybridDecodeConfig& c) { return hybrid_decode_state_layout(c).bytes; }

int64_t hybrid_decode_state_position(const HybridDecodeConfig& c, const void* state) {
  validate_config(c);
  if (!state) fail("state is null");
  const int64_t* h = static_cast<const int64_t*>(state);
  check_header(c, h);
  return h[2];
}

void hybrid_decode_prefill_cpu(const HybridDecodePrefillParams& p) {
  if (p.seqlen < 0) fail("seqlen must be >= 0");
  HybridDecodeStateLayout L = validate_common(p, p.seqlen > 0);
  if (p.batch == 0) return;
  RowMap rows;
  rows.packed = false;
  rows.seqlen = p.seqlen;
  for (int64_t b = 0; b < p.batch; ++b) {
    char* st = static_cast<char*>(p.state) + (p.slots ? p.slots[b] : b) * L.bytes;
    std::memset(st, 0, L.bytes);
    write_header(p.config, reinterpret_cast<int64_t*>(st), 0);
  }
  if (p.seqlen == 0) return;
  if (p.config.dtype == DType::F64) run<double>(make_job<double>(p, L, rows), p.batch, p.batch * p.seqlen);
  else run<float>(make_job<float>(p, L, rows), p.batch, p.batch * p.seqlen);
}

void hybrid_decode_step_cpu(const HybridDecodeStepParams& p) {
  HybridDecodeStateLayout L = validate_common(p, true);
  if (p.batch == 0) return;
  RowMap rows;
  rows.packed = true;
  rows.cu = p.cu_seqlens;
  rows.per_seq = p.tokens_per_seq;
  int64_t total = 0;
  if (p.cu_seqlens) {
    if (p.cu_seqlens[0] != 0) fail("cu_seqlens[0] must be 0");
    for (int64_t b = 0; b < p.batch; ++b)
      if (p.cu_seqlens[b + 1] - p.cu_seqlens[b] < 1) fail("every sequence must append at least one token (cu_seqlens strictly increasing)");
    total = p.cu_seqlens[p.batch];
  } else {
    if (p.tokens_per_seq < 1) fail("tokens_per_seq must be >= 1");
    total = p.batch * p.tokens_per_seq;
  }
  for (int64_t b = 0; b < p.batch; ++b) {
    const char* st = static_cast<const char*>(p.state) + (p.slots ? p.slots[b] : b) * L.bytes;
    check_header(p.config, reinterpret_cast<const int64_t*>(st));
  }
  if (p.config.dtype == DType::F64) run<double>(make_job<double>(p, L, rows), p.batch, total);
  else run<float>(make_job<float>(p, L, rows), p.batch, total);
}

}  // namespace ha
