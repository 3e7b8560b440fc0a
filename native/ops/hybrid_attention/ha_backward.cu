// Generic backward (any d, dv, F <= 256, every mode, both geometries), by recomputation with no
// T x T storage. With P_ni = gw e_ni / den_n (e = exp(s - c)), dP_ni = dy_n . v_i, D_n = dy_n . y_n:
//   window: ds_ni = P_ni (dP_ni - D_n) + [i = argmax_n] dc_n,  dc_n = -sum_i P_ni (dP_ni - D_n)
//           (the max c_n does not cancel), dv_i += P_ni dy_n, dq = scale ds k, dk = scale ds^T q;
//   LA:     with gh_n = gl dy_n / den_n and rho_n = gh_n . y_n,
//           dfq_n = S_n gh_n - z_n rho_n      (forward state scan, S_n = sum_{j<m(n)} fk_j v_j^T)
//           dfk_j = R_j v_j - r_j, dv_j += R_j^T fk_j   (reverse scan, R_j = sum_{m(n)>j} fq_n gh_n^T)
//   dgamma: by homogeneity of y in (gw, gl): dL/dgw_n = -dc_n / gw, dL/dgl_n = dc_n / gl, so
//           dgamma = sum_n (-dc_n/gw) (keep + [affine] gw / gl)   (hybrid, overlap; else 0).
#include <cmath>

#include "ops/hybrid_attention/ha_common.cuh"
#include "ops/hybrid_attention/ha_generic_tiles.cuh"

namespace ha {
namespace cuda_detail {

struct BW {  // per-row workspace of the backward, [B*H*T] each
  float* D;     // dy . y
  float* wa;    // gl / den  (0 where den == 0)
  float* wb;    // gw / den
  float* cmax;  // recomputed window max
  float* dc;    // dL/dc_n
  int* arg;     // argmax key of the window
  float* gN;    // dy . N (LA numerator), fp32; lets dc and dgamma avoid D = dy . y (16-bit y)
};

// Per row: D, wa, wb.  One warp per row.
template <class T>
__global__ void bwd_prep_kernel(KP p, BW w) {
  int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  int lane = threadIdx.x & 31;
  if (row >= (int64_t)p.B * p.H * p.T) return;
  int bh = (int)(row / p.T), b = bh / p.H, h = bh % p.H;
  const T* dy = (const T*)p.dy + row * p.dv;
  const T* y = (const T*)p.y + row * p.dv;
  float a = 0.f;
  for (int c = lane; c < p.dv; c += 32) a += ldf(dy + c) * ldf(y + c);
  a = warp_sum(a);
  if (lane == 0) {
    float den = p.den_swa[row] + p.den_la[row];
    w.D[row] = a;
    w.wa[row] = den > 0.f ? coef_la(p, h) / den : 0.f;
    w.wb[row] = den > 0.f ? coef_win(p, b, h) / den : 0.f;
    w.dc[row] = 0.f;
    w.arg[row] = -1;
    w.cmax[row] = 0.f;
    w.gN[row] = 0.f;
  }
}

constexpr int kMaxPT = kR * 256 / kNT;  // 16: per-thread accumulators for a kR x 256 tile

// Window part, row side: dq, dc_n, argmax, dgamma.  grid (ceil(T/kR), B*H).
template <class T>
__global__ void __launch_bounds__(kNT) bwd_win_q_kernel(KP p, BW w, T* dq, float* dgamma) {
  extern __shared__ float sm[];
  const int bh = blockIdx.y, b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int r0 = blockIdx.x * kR, nr = min(kR, p.T - r0);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ldd = p.d + 1, ldv = p.dv + 1;
  float* Qs = sm;               // kR x ldd
  float* Gs = Qs + kR * ldd;    // kR x ldv
  float* Ks = Gs + kR * ldv;    // kKC x ldd
  float* Vs = Ks + kKC * ldd;   // kKC x ldv
  float* Ps = Vs + kKC * ldv;   // kR x kKC
  float* Pd = Ps + kR * kKC;    // kR x kKC
  float* rowm = Pd + 2 * kR * kKC;  // kR   (Pd holds e and e*dP: 2 x kR x kKC)
  float* rows = rowm + kR;      // kR
  float* rowU = rows + kR;      // kR: dy . U  (U = sum e v)
  float* rowA = rowU + kR;      // kR: A = sum e
  int* rarg = (int*)(rowA + kR);
  const T* q = (const T*)p.q + (int64_t)bh * p.T * p.d;
  const T* k = (const T*)p.k + ((int64_t)b * p.Hkv + hk) * p.T * p.d;
  const T* v = (const T*)p.v + ((int64_t)b * p.Hkv + hk) * p.T * p.dv;
  const T* dy = (const T*)p.dy + (int64_t)bh * p.T * p.dv;
  const float gw = coef_win(p, b, h), gl = coef_la(p, h);
  const int64_t rb = (int64_t)bh * p.T + r0;

  load_tile(Qs, ldd, q, p.d, r0, kR, nr, 0, p.d);
  load_tile(Gs, ldv, dy, p.dv, r0, kR, nr, 0, p.dv);
  if (tid < kR) { rowm[tid] = -INFINITY; rows[tid] = 0.f; rowU[tid] = 0.f; rowA[tid] = 0.f; rarg[tid] = -1; }
  const int klo = win_lo(p, r0), khi = win_hi(p, r0 + nr - 1);
  // pass 1: max and arg-max (first index on ties)
  for (int kc = klo; kc <= khi; kc += kKC) {
    __syncthreads();
    const int nv = min(kKC, khi + 1 - kc);
    load_tile(Ks, ldd, k, p.d, kc, kKC, nv, 0, p.d);
    __syncthreads();
    window_scores(Ps, p, Qs, ldd, Ks, ldd, r0, nr, kc, nv);
    __syncthreads();
    for (int r = warp; r < kR; r += kNT / 32) {
      float s = Ps[r * kKC + lane];
      float mx = warp_max(s);
      unsigned ball = __ballot_sync(0xffffffffu, s == mx && mx != -INFINITY);
      if (lane == 0 && ball && mx > rowm[r]) { rowm[r] = mx; rarg[r] = kc + __ffs(ball) - 1; }
    }
  }
  float dqa[kMaxPT];
#pragma unroll
  for (int i = 0; i < kMaxPT; ++i) dqa[i] = 0.f;
  // pass 2: ds, row sums, dq
  for (int kc = klo; kc <= khi; kc += kKC) {
    __syncthreads();
    const int nv = min(kKC, khi + 1 - kc);
    load_tile(Ks, ldd, k, p.d, kc, kKC, nv, 0, p.d);
    load_tile(Vs, ldv, v, p.dv, kc, kKC, nv, 0, p.dv);
    __syncthreads();
    for (int idx = tid; idx < kR * kKC; idx += kNT) {
      int r = idx / kKC, kk = idx % kKC, n = r0 + r, j = kc + kk;
      float ds = 0.f;
      if (r < nr && kk < nv && j >= win_lo(p, n) && j <= win_hi(p, n)) {
        const float a = dot_f32(Qs + r * ldd, Ks + kk * ldd, p.d), g = dot_f32(Gs + r * ldv, Vs + kk * ldv, p.dv);
        float e = expf(a * p.scale - rowm[r]);
        ds = w.wb[rb + r] * e * (g - w.D[rb + r]);
        Pd[idx] = e;
        Pd[kR * kKC + idx] = e * g;
      } else {
        Pd[idx] = 0.f;
        Pd[kR * kKC + idx] = 0.f;
      }
      Ps[idx] = ds;
    }
    __syncthreads();
    for (int r = warp; r < kR; r += kNT / 32) {
      float a = warp_sum(Pd[r * kKC + lane]);
      float u = warp_sum(Pd[kR * kKC + r * kKC + lane]);
      float t = warp_sum(Ps[r * kKC + lane]);
      if (lane == 0) { rowA[r] += a; rowU[r] += u; rows[r] += t; }
    }
#pragma unroll
    for (int i = 0; i < kMaxPT; ++i) {
      int idx = tid + i * kNT;
      if (idx < kR * p.d) {
        int r = idx / p.d, e = idx % p.d;
        float a = dqa[i];
        for (int kk = 0; kk < kKC; ++kk) a += Ps[r * kKC + kk] * Ks[kk * ldd + e];
        dqa[i] = a;
      }
    }
  }
  __syncthreads();
  // dc_n = -sum_i ds_ni (D-based, so that sum_i ds_total = 0 holds exactly as in autograd);
  // dgamma uses dL/dgw_n = gl (Z gU - A gN) / den^2 instead, free of D = dy . y (16-bit y)
  float dgw_exact = 0.f;
  if (tid < nr) {
    float den = p.den_swa[rb + tid] + p.den_la[rb + tid];
    if (den > 0.f && gw > 0.f)
      dgw_exact = (p.den_la[rb + tid] * rowU[tid] - gl * rowA[tid] * w.gN[rb + tid]) / (den * den);
  }
  T* dqb = dq + (int64_t)bh * p.T * p.d;
#pragma unroll
  for (int i = 0; i < kMaxPT; ++i) {
    int idx = tid + i * kNT;
    if (idx < kR * p.d) {
      int r = idx / p.d, e = idx % p.d;
      if (r < nr) {
        float dc = -rows[r];
        float extra = rarg[r] >= 0 ? dc * ldf(k + (int64_t)rarg[r] * p.d + e) : 0.f;
        stf(dqb + (int64_t)(r0 + r) * p.d + e, (dqa[i] + extra) * p.scale);
      }
    }
  }
  float contrib = 0.f;
  if (tid < nr) {
    float dc = -rows[tid];
    w.dc[rb + tid] = dc;
    w.arg[rb + tid] = rarg[tid];
    w.cmax[rb + tid] = rowm[tid];
    if (p.mode == kModeHybrid || p.mode == kModeOverlap) {
      float keep = p.keep ? p.keep[b * p.H + h] : 1.f;
      contrib = dgw_exact * (keep + (p.affine ? gw / gl : 0.f));
    }
  }
  if (warp == 0) {
    contrib = warp_sum(contrib);
    if (lane == 0 && contrib != 0.f) atomicAdd(dgamma + h, contrib);
  }
}

// Window part, key side: dk, dv (fp32 accumulators, atomics over GQA heads). grid (ceil(T/kR), B*H).
template <class T>
__global__ void __launch_bounds__(kNT) bwd_win_kv_kernel(KP p, BW w, float* dk, float* dv) {
  extern __shared__ float sm[];
  const int bh = blockIdx.y, b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int j0 = blockIdx.x * kR, nk = min(kR, p.T - j0);
  const int tid = threadIdx.x;
  const int ldd = p.d + 1, ldv = p.dv + 1;
  float* Ks = sm;               // kR x ldd
  float* Vs = Ks + kR * ldd;    // kR x ldv
  float* Qs = Vs + kR * ldv;    // kKC x ldd
  float* Gs = Qs + kKC * ldd;   // kKC x ldv
  float* Pm = Gs + kKC * ldv;   // kKC x kR
  float* Dm = Pm + kKC * kR;    // kKC x kR
  const T* q = (const T*)p.q + (int64_t)bh * p.T * p.d;
  const T* k = (const T*)p.k + ((int64_t)b * p.Hkv + hk) * p.T * p.d;
  const T* v = (const T*)p.v + ((int64_t)b * p.Hkv + hk) * p.T * p.dv;
  const T* dy = (const T*)p.dy + (int64_t)bh * p.T * p.dv;
  const int64_t rb = (int64_t)bh * p.T;
  const int na = first_row_whi_ge(p, j0), nb = first_row_wlo_gt(p, j0 + nk - 1);
  if (na >= nb) return;
  load_tile(Ks, ldd, k, p.d, j0, kR, nk, 0, p.d);
  load_tile(Vs, ldv, v, p.dv, j0, kR, nk, 0, p.dv);
  float dka[kMaxPT], dva[kMaxPT];
#pragma unroll
  for (int i = 0; i < kMaxPT; ++i) dka[i] = dva[i] = 0.f;
  for (int rc = na; rc < nb; rc += kKC) {
    __syncthreads();
    const int nv = min(kKC, nb - rc);
    load_tile(Qs, ldd, q, p.d, rc, kKC, nv, 0, p.d);
    load_tile(Gs, ldv, dy, p.dv, rc, kKC, nv, 0, p.dv);
    __syncthreads();
    for (int idx = tid; idx < kKC * kR; idx += kNT) {
      int rr = idx / kR, kk = idx % kR, n = rc + rr, j = j0 + kk;
      float P = 0.f, ds = 0.f;
      if (rr < nv && kk < nk && j >= win_lo(p, n) && j <= win_hi(p, n)) {
        const float a = dot_f32(Qs + rr * ldd, Ks + kk * ldd, p.d), g = dot_f32(Gs + rr * ldv, Vs + kk * ldv, p.dv);
        P = w.wb[rb + n] * expf(a * p.scale - w.cmax[rb + n]);
        ds = P * (g - w.D[rb + n]) + (w.arg[rb + n] == j ? w.dc[rb + n] : 0.f);
      }
      Pm[idx] = P;
      Dm[idx] = ds;
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kMaxPT; ++i) {
      int idx = tid + i * kNT;
      if (idx < kR * p.d) {
        int kk = idx / p.d, e = idx % p.d;
        float a = dka[i];
        for (int rr = 0; rr < kKC; ++rr) a += Dm[rr * kR + kk] * Qs[rr * ldd + e];
        dka[i] = a;
      }
      if (idx < kR * p.dv) {
        int kk = idx / p.dv, e = idx % p.dv;
        float a = dva[i];
        for (int rr = 0; rr < kKC; ++rr) a += Pm[rr * kR + kk] * Gs[rr * ldv + e];
        dva[i] = a;
      }
    }
  }
  const int64_t kb = ((int64_t)b * p.Hkv + hk) * p.T + j0;
#pragma unroll
  for (int i = 0; i < kMaxPT; ++i) {
    int idx = tid + i * kNT;
    if (idx < kR * p.d) {
      int kk = idx / p.d, e = idx % p.d;
      if (kk < nk) atomicAdd(dk + (kb + kk) * p.d + e, dka[i] * p.scale);
    }
    if (idx < kR * p.dv) {
      int kk = idx / p.dv, e = idx % p.dv;
      if (kk < nk) atomicAdd(dv + (kb + kk) * p.dv + e, dva[i]);
    }
  }
}

// LA part, row side: dfq.  grid (nseg, B*H, ceil(F/kSL)); state S (F slice x dv) in shared memory.
template <class T>
__global__ void __launch_bounds__(kNT) bwd_la_q_kernel(KP p, BW w, const float* init, T* dfq) {
  extern __shared__ float sm[];
  const int seg = blockIdx.x, bh = blockIdx.y, f0 = blockIdx.z * kSL;
  const int nf = min(kSL, p.F - f0);
  const int b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ldv = p.dv + 1, lds = kSL + 1;
  float* St = sm;                 // dv x lds  (transposed: St[c][f])
  float* zt = St + p.dv * lds;    // kSL
  float* Gh = zt + kSL;           // kR x ldv
  float* Vs = Gh + kR * ldv;      // kKC x ldv
  float* FK = Vs + kKC * ldv;     // kKC x lds
  float* Ps = FK + kKC * lds;     // kR x kKC
  float* rho = Ps + kR * kKC;     // kR
  float* rgn = rho + kR;          // kR: partial fq . (S gh) over this F slice
  const T* fk = (const T*)p.fk + (int64_t)bh * p.T * p.F;
  const T* fq = (const T*)p.fq + (int64_t)bh * p.T * p.F;
  const float gl = coef_la(p, h);
  const T* v = (const T*)p.v + ((int64_t)b * p.Hkv + hk) * p.T * p.dv;
  const T* dy = (const T*)p.dy + (int64_t)bh * p.T * p.dv;
  T* out = dfq + (int64_t)bh * p.T * p.F;
  const int64_t rb = (int64_t)bh * p.T;
  {
    const float* src = init + ((int64_t)bh * p.nseg + seg) * ((int64_t)p.F * p.dv + p.F);
    load_state_slice(St, lds, p.dv, src, 1, p.dv, f0, nf, zt, kSL, src + (int64_t)p.F * p.dv, f0, nf);
  }
  const int rs = seg * p.Lseg, re = min(p.T, rs + p.Lseg);
  constexpr int RPT = kR * kSL / kNT;
  for (int r0 = rs; r0 < re; r0 += kR) {
    const int nr = min(kR, re - r0);
    __syncthreads();
    load_scaled_dy(Gh, ldv, rho, kR, nr, dy, p.dv, w.wa, w.D, rb, r0);
    if (tid < kR) rgn[tid] = 0.f;
    __syncthreads();
    float acc[RPT];
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      int idx = tid + i * kNT, r = idx / kSL, f = idx % kSL;
      float a = -zt[f] * rho[r];
      for (int c = 0; c < p.dv; ++c) a += St[c * lds + f] * Gh[r * ldv + c];
      acc[i] = a;
    }
    const int mlo = r0 == 0 ? 0 : la_end(p, r0), mhi = la_end(p, r0 + nr - 1);
    for (int kc = mlo; kc < mhi; kc += kKC) {
      __syncthreads();
      const int nv = min(kKC, mhi - kc);
      load_tile(Vs, ldv, v, p.dv, kc, kKC, nv, 0, p.dv);
      load_tile(FK, lds, fk, p.F, kc, kKC, nv, f0, nf);
      __syncthreads();
      for (int idx = tid; idx < kR * kKC; idx += kNT) {
        int r = idx / kKC, kk = idx % kKC, j = kc + kk;
        float a = 0.f;
        if (r < nr && j < la_end(p, r0 + r)) a = dot_f32(Gh + r * ldv, Vs + kk * ldv, p.dv) - rho[r];
        Ps[idx] = a;
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < RPT; ++i) {
        int idx = tid + i * kNT, r = idx / kSL, f = idx % kSL;
        float a = acc[i];
        for (int kk = 0; kk < kKC; ++kk) a += Ps[r * kKC + kk] * FK[kk * lds + f];
        acc[i] = a;
      }
    }
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      int idx = tid + i * kNT, r = idx / kSL, f = idx % kSL;
      if (r < nr && f < nf) {
        stf(out + (int64_t)(r0 + r) * p.F + f0 + f, acc[i]);
        atomicAdd(rgn + r, acc[i] * ldf(fq + (int64_t)(r0 + r) * p.F + f0 + f));
      }
    }
    __syncthreads();
    // dy . N = (den / gl) fq . dfq + D Z   (the D terms cancel exactly: same D in rho)
    if (tid < nr) {
      const int64_t row = rb + r0 + tid;
      float den = p.den_swa[row] + p.den_la[row];
      if (den > 0.f && gl > 0.f) {
        float v = rgn[tid] * den / gl;
        if (blockIdx.z == 0) v += w.D[row] * p.den_la[row] / gl;
        atomicAdd(w.gN + row, v);
      }
    }
    if (r0 + kR < re) {
      const int mn = la_end(p, r0 + kR);
      for (int kc = mlo; kc < mn; kc += kKC) {
        __syncthreads();
        const int nv = min(kKC, mn - kc);
        load_tile(Vs, ldv, v, p.dv, kc, kKC, nv, 0, p.dv);
        load_tile(FK, lds, fk, p.F, kc, kKC, nv, f0, nf);
        __syncthreads();
        add_rank_chunk(St, lds, p.dv, FK, lds, Vs, ldv);
        add_col_sums(zt, kSL, FK, lds);
      }
    }
  }
  (void)lane; (void)warp;
}

// Reverse-state increments: per key segment s >= 1, rows n with m(n) in [s*Lseg, (s+1)*Lseg):
// sum fq_n gh_n^T (F slice x dv) and sum fq_n rho_n. grid (nseg-1, B*H, ceil(F/kSL)), blockIdx.x+1 = s.
template <class T>
__global__ void __launch_bounds__(kNT) bwd_la_inc2_kernel(KP p, BW w, float* buf) {
  extern __shared__ float sm[];
  const int s = blockIdx.x + 1, bh = blockIdx.y, f0 = blockIdx.z * kSL;
  const int nf = min(kSL, p.F - f0);
  const int tid = threadIdx.x;
  const int ldv = p.dv + 1, lds = kSL + 1;
  float* Rt = sm;               // dv x lds
  float* rz = Rt + p.dv * lds;  // kSL
  float* FQ = rz + kSL;         // kKC x lds
  float* Gh = FQ + kKC * lds;   // kKC x ldv
  float* rho = Gh + kKC * ldv;  // kKC
  const T* fq = (const T*)p.fq + (int64_t)bh * p.T * p.F;
  const T* dy = (const T*)p.dy + (int64_t)bh * p.T * p.dv;
  const int64_t rb = (int64_t)bh * p.T;
  for (int i = tid; i < p.dv * lds + kSL; i += kNT) sm[i] = 0.f;
  const int na = first_row_la_ge(p, s * p.Lseg);
  const int nb = (s == p.nseg - 1) ? p.T : first_row_la_ge(p, (s + 1) * p.Lseg);
  for (int rc = na; rc < nb; rc += kKC) {
    __syncthreads();
    const int nv = min(kKC, nb - rc);
    load_tile(FQ, lds, fq, p.F, rc, kKC, nv, f0, nf);
    load_scaled_dy(Gh, ldv, rho, kKC, nv, dy, p.dv, w.wa, w.D, rb, rc);
    __syncthreads();
    add_rank_chunk(Rt, lds, p.dv, FQ, lds, Gh, ldv);
    add_col_sums(rz, kSL, FQ, lds, rho);
  }
  __syncthreads();
  const int64_t per = (int64_t)p.F * p.dv + p.F;
  float* o = buf + ((int64_t)bh * p.nseg + s) * per;
  for (int idx = tid; idx < p.dv * nf; idx += kNT) {
    int c = idx / nf, f = idx % nf;
    o[(int64_t)(f0 + f) * p.dv + c] = Rt[c * lds + f];
  }
  for (int f = tid; f < nf; f += kNT) o[(int64_t)p.F * p.dv + f0 + f] = rz[f];
}

// LA part, key side: dfk and the LA share of dv.  grid (nseg, B*H, ceil(F/kSL)), reverse scan.
template <class T>
__global__ void __launch_bounds__(kNT) bwd_la_k_kernel(KP p, BW w, const float* init, T* dfk, float* dvacc) {
  extern __shared__ float sm[];
  const int seg = blockIdx.x, bh = blockIdx.y, f0 = blockIdx.z * kSL;
  const int nf = min(kSL, p.F - f0);
  const int b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int tid = threadIdx.x;
  const int ldv = p.dv + 1, lds = kSL + 1;
  float* Rt = sm;                // dv x lds (Rt[c][f] = R[f][c])
  float* rz = Rt + p.dv * lds;   // kSL
  float* FKt = rz + kSL;         // kR x lds
  float* Vt = FKt + kR * lds;    // kR x ldv
  float* FQ = Vt + kR * ldv;     // kKC x lds
  float* Gh = FQ + kKC * lds;    // kKC x ldv
  float* rho = Gh + kKC * ldv;   // kKC
  float* Um = rho + kKC;         // kKC x kR
  float* Am = Um + kKC * kR;     // kKC x kR
  const T* fq = (const T*)p.fq + (int64_t)bh * p.T * p.F;
  const T* fk = (const T*)p.fk + (int64_t)bh * p.T * p.F;
  const T* v = (const T*)p.v + ((int64_t)b * p.Hkv + hk) * p.T * p.dv;
  const T* dy = (const T*)p.dy + (int64_t)bh * p.T * p.dv;
  T* outk = dfk + (int64_t)bh * p.T * p.F;
  const int64_t rb = (int64_t)bh * p.T;
  const int64_t kvb = ((int64_t)b * p.Hkv + hk) * p.T;
  {
    const float* src = init + ((int64_t)bh * p.nseg + seg) * ((int64_t)p.F * p.dv + p.F);
    load_state_slice(Rt, lds, p.dv, src, 1, p.dv, f0, nf, rz, kSL, src + (int64_t)p.F * p.dv, f0, nf);
  }
  const int ks = seg * p.Lseg, ke = min(p.T, ks + p.Lseg);
  const int ntile = (ke - ks + kR - 1) / kR;
  constexpr int RPT = kR * kSL / kNT;
  auto load_rows = [&](int rc, int nv) {
    load_tile(FQ, lds, fq, p.F, rc, kKC, nv, f0, nf, kSL);
    load_scaled_dy(Gh, ldv, rho, kKC, nv, dy, p.dv, w.wa, w.D, rb, rc);
  };
  for (int t = ntile - 1; t >= 0; --t) {
    const int j0 = ks + t * kR, nk = min(kR, ke - j0);
    __syncthreads();
    load_tile(FKt, lds, fk, p.F, j0, kR, nk, f0, nf, kSL);
    load_tile(Vt, ldv, v, p.dv, j0, kR, nk, 0, p.dv);
    __syncthreads();
    float dfa[RPT], dva[kMaxPT];
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      int idx = tid + i * kNT, r = idx / kSL, f = idx % kSL;
      float a = -rz[f];
      for (int c = 0; c < p.dv; ++c) a += Rt[c * lds + f] * Vt[r * ldv + c];
      dfa[i] = a;
    }
#pragma unroll
    for (int i = 0; i < kMaxPT; ++i) {
      int idx = tid + i * kNT;
      float a = 0.f;
      if (idx < kR * p.dv) {
        int r = idx / p.dv, c = idx % p.dv;
        for (int f = 0; f < kSL; ++f) a += Rt[c * lds + f] * FKt[r * lds + f];
      }
      dva[i] = a;
    }
    // rows with m(n) > j0 not yet in the state; at the sequence end every row with m(n) >= T
    // (la-full / overlap: m(T-1) = T) belongs here too.
    const int na = first_row_la_ge(p, j0 + 1), nb = j0 + nk >= p.T ? p.T : first_row_la_ge(p, j0 + nk);
    for (int rc = na; rc < nb; rc += kKC) {
      __syncthreads();
      const int nv = min(kKC, nb - rc);
      load_rows(rc, nv);
      __syncthreads();
      for (int idx = tid; idx < kKC * kR; idx += kNT) {
        int rr = idx / kR, kk = idx % kR, j = j0 + kk;
        float u = 0.f, a = 0.f;
        if (rr < nv && kk < nk && la_end(p, rc + rr) > j) {
          u = dot_f32(Gh + rr * ldv, Vt + kk * ldv, p.dv) - rho[rr];
          a = dot_f32(FQ + rr * lds, FKt + kk * lds, kSL);
        }
        Um[idx] = u;
        Am[idx] = a;
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < RPT; ++i) {
        int idx = tid + i * kNT, r = idx / kSL, f = idx % kSL;
        float a = dfa[i];
        for (int rr = 0; rr < kKC; ++rr) a += Um[rr * kR + r] * FQ[rr * lds + f];
        dfa[i] = a;
      }
#pragma unroll
      for (int i = 0; i < kMaxPT; ++i) {
        int idx = tid + i * kNT;
        if (idx < kR * p.dv) {
          int r = idx / p.dv, c = idx % p.dv;
          float a = dva[i];
          for (int rr = 0; rr < kKC; ++rr) a += Am[rr * kR + r] * Gh[rr * ldv + c];
          dva[i] = a;
        }
      }
    }
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
      int idx = tid + i * kNT, r = idx / kSL, f = idx % kSL;
      if (r < nk && f < nf) stf(outk + (int64_t)(j0 + r) * p.F + f0 + f, dfa[i]);
    }
#pragma unroll
    for (int i = 0; i < kMaxPT; ++i) {
      int idx = tid + i * kNT;
      if (idx < kR * p.dv) {
        int r = idx / p.dv, c = idx % p.dv;
        if (r < nk) atomicAdd(dvacc + (kvb + j0 + r) * p.dv + c, dva[i]);
      }
    }
    // add rows with m(n) in [j0, j0+nk) to the reverse state
    if (t > 0) {
      const int ua = first_row_la_ge(p, j0), ub = j0 + nk >= p.T ? p.T : first_row_la_ge(p, j0 + nk);
      for (int rc = ua; rc < ub; rc += kKC) {
        __syncthreads();
        const int nv = min(kKC, ub - rc);
        load_rows(rc, nv);
        __syncthreads();
        add_rank_chunk(Rt, lds, p.dv, FQ, lds, Gh, ldv);
        add_col_sums(rz, kSL, FQ, lds, rho);
      }
    }
  }
}

template <class T>
__global__ void convert_kernel(const float* src, T* dst, int64_t n) {
  int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) stf(dst + i, src[i]);
}

template <class K>
static void set_smem(K kern, size_t smem, const char* what) {
  check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), what);
}

template <class T>
static void bwd_generic_t(const KP& p, DType dt, void* dq, void* dk, void* dv, void* dfq, void* dfk,
                          float* dgamma, cudaStream_t st) {
  const int BH = p.B * p.H;
  const int64_t rows = (int64_t)BH * p.T;
  const int64_t nk = (int64_t)p.B * p.Hkv * p.T;
  const size_t es = sizeof(T);
  check(cudaMemsetAsync(dgamma, 0, sizeof(float) * p.H, st), "memset dgamma");
  const bool win = mode_has_window(p.mode), la = mode_has_la(p.mode);
  if (!win) check(cudaMemsetAsync(dq, 0, es * rows * p.d, st), "memset dq");
  if (!la) {
    check(cudaMemsetAsync(dfq, 0, es * rows * p.F, st), "memset dfq");
    check(cudaMemsetAsync(dfk, 0, es * rows * p.F, st), "memset dfk");
  }
  if (!win && !la) {
    check(cudaMemsetAsync(dk, 0, es * nk * p.d, st), "memset dk");
    check(cudaMemsetAsync(dv, 0, es * nk * p.dv, st), "memset dv");
    return;
  }
  // workspace: row scalars, fp32 dk/dv accumulators (unless f32), LA states
  const bool f32 = std::is_same<T, float>::value;
  size_t off = 0;
  auto take = [&](size_t bytes) { size_t o = off; off += (bytes + 255) / 256 * 256; return o; };
  size_t oD = take(4 * rows), oA = take(4 * rows), oB = take(4 * rows), oC = take(4 * rows),
         oDC = take(4 * rows), oG = take(4 * rows), oN = take(4 * rows);
  size_t oK = f32 ? 0 : take(4 * nk * p.d), oV = f32 ? 0 : take(4 * nk * p.dv);
  const int64_t per = (int64_t)p.F * p.dv + p.F;
  size_t oS = la ? take(4 * (size_t)BH * p.nseg * per) : 0;
  char* ws = nullptr;
  check(cudaMallocAsync((void**)&ws, off, st), "workspace alloc");
  BW w{(float*)(ws + oD), (float*)(ws + oA), (float*)(ws + oB), (float*)(ws + oC), (float*)(ws + oDC), (int*)(ws + oG),
       (float*)(ws + oN)};
  float* dkacc = f32 ? (float*)dk : (float*)(ws + oK);
  float* dvacc = f32 ? (float*)dv : (float*)(ws + oV);
  check(cudaMemsetAsync(dkacc, 0, 4 * nk * p.d, st), "memset dk acc");
  check(cudaMemsetAsync(dvacc, 0, 4 * nk * p.dv, st), "memset dv acc");

  bwd_prep_kernel<T><<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(p, w);
  check_launch("bwd_prep");
  if (la) {
    float* S = (float*)(ws + oS);
    launch_la_prefix_states(p, dt, S, st);
    const int ldv = p.dv + 1, lds = kSL + 1;
    size_t smq = sizeof(float) * ((size_t)p.dv * lds + kSL + kR * ldv + kKC * ldv + kKC * lds + kR * kKC + 2 * kR);
    set_smem(bwd_la_q_kernel<T>, smq, "bwd_la_q smem");
    dim3 g(p.nseg, BH, (p.F + kSL - 1) / kSL);
    bwd_la_q_kernel<T><<<g, kNT, smq, st>>>(p, w, S, (T*)dfq);
    check_launch("bwd_la_q");
  }
  // window kernels after bwd_la_q: bwd_win_q reads dy . N (w.gN)
  if (win) {
    const int ldd = p.d + 1, ldv = p.dv + 1;
    size_t smq = sizeof(float) * ((size_t)kR * ldd + kR * ldv + kKC * ldd + kKC * ldv + 3 * kR * kKC + 5 * kR);
    set_smem(bwd_win_q_kernel<T>, smq, "bwd_win_q smem");
    dim3 g((p.T + kR - 1) / kR, BH);
    bwd_win_q_kernel<T><<<g, kNT, smq, st>>>(p, w, (T*)dq, dgamma);
    check_launch("bwd_win_q");
    size_t smk = sizeof(float) * ((size_t)kR * ldd + kR * ldv + kKC * ldd + kKC * ldv + 2 * kR * kKC);
    set_smem(bwd_win_kv_kernel<T>, smk, "bwd_win_kv smem");
    bwd_win_kv_kernel<T><<<g, kNT, smk, st>>>(p, w, dkacc, dvacc);
    check_launch("bwd_win_kv");
  }
  if (la) {
    float* S = (float*)(ws + oS);
    const int ldv = p.dv + 1, lds = kSL + 1;
    dim3 g(p.nseg, BH, (p.F + kSL - 1) / kSL);
    // reuse S for the reverse states (stream order: bwd_la_q is done with it)
    if (p.nseg > 1) {
      size_t smi = sizeof(float) * ((size_t)p.dv * lds + kSL + kKC * lds + kKC * ldv + kKC);
      set_smem(bwd_la_inc2_kernel<T>, smi, "bwd_la_inc2 smem");
      dim3 gi(p.nseg - 1, BH, (p.F + kSL - 1) / kSL);
      bwd_la_inc2_kernel<T><<<gi, kNT, smi, st>>>(p, w, S);
      check_launch("bwd_la_inc2");
    }
    launch_segment_scan(S, BH, p.nseg, per, -1, st);
    size_t smk = sizeof(float) * ((size_t)p.dv * lds + kSL + kR * lds + kR * ldv + kKC * lds + kKC * ldv + kKC +
                                  2 * kKC * kR);
    set_smem(bwd_la_k_kernel<T>, smk, "bwd_la_k smem");
    bwd_la_k_kernel<T><<<g, kNT, smk, st>>>(p, w, S, (T*)dfk, dvacc);
    check_launch("bwd_la_k");
  }
  if (!f32) {
    int64_t n1 = nk * p.d, n2 = nk * p.dv;
    convert_kernel<T><<<(unsigned)((n1 + 255) / 256), 256, 0, st>>>(dkacc, (T*)dk, n1);
    check_launch("convert dk");
    convert_kernel<T><<<(unsigned)((n2 + 255) / 256), 256, 0, st>>>(dvacc, (T*)dv, n2);
    check_launch("convert dv");
  }
  check(cudaFreeAsync(ws, st), "workspace free");
}

void launch_backward_generic(const KP& p, DType dt, void* dq, void* dk, void* dv, void* dfq, void* dfk,
                             float* dgamma, cudaStream_t st) {
  switch (dt) {
    case DType::F32: bwd_generic_t<float>(p, dt, dq, dk, dv, dfq, dfk, dgamma, st); break;
    case DType::BF16: bwd_generic_t<__nv_bfloat16>(p, dt, dq, dk, dv, dfq, dfk, dgamma, st); break;
    case DType::F16: bwd_generic_t<__half>(p, dt, dq, dk, dv, dfq, dfk, dgamma, st); break;
    default: throw std::runtime_error("hybrid_attention CUDA: unsupported dtype");
  }
}

}  // namespace cuda_detail
}  // namespace ha
