// Tensor-core forward fast path (mma.sync m16n8k16, bf16/f16 operands, fp32 accumulators).
// Applies to bf16/f16, d = dv = F in {64, 128}, modes hybrid/swa/la/la-full/overlap, sliding
// windows w <= 64 and terraced windows w <= 32 or w = 64, 16-byte aligned tensors; declines
// (returns false) otherwise and the generic path runs.
//
// Rows are cut into chunks of 64. For every row n of chunk c, the window and the LA keys that are
// not older than chunk c-1 lie in the 128 keys of chunks c-1 and c (this is what the window limits
// above guarantee), and every key of chunks <= c-2 is an LA key. So:
//   1. state pass: R_c = sum over keys of chunks <= c-2 of fk v^T (F x dv) and z_c = sum fk,
//      accumulated in fp32 (tensor cores), stored per chunk as bf16 [F][dv+8] with z in columns
//      dv (bf16 hi part) and dv+1 (bf16 lo part, z - hi) so that fq . z keeps ~16 bits;
//      sequence-parallel: per-segment sums, exclusive prefix over segments, then each segment walks
//      its chunks writing R_c.
//   2. main kernel, one CTA (4 warps x 16 rows) per (chunk, b*h):
//        S = Q K^T over the 128 keys, scale, window mask, exact row max c, P = exp(S - c);
//        A = FQ FK^T, masked to the LA set;
//        O = (coef_w P + A) V + FQ R_c;  den_swa = gamma_eff sum P, den_la = lambda (sum A + fq.z);
//        y = lambda-scaled O / (den_swa + den_la) (0 where the denominator is not > 0).
//      Statistics are written exactly as the generic path writes them.
// Modes with an LA branch run both steps fused in one kernel instead (fused_fwd_kernel,
// ha_forward_fused.cuh: the state stays on chip, R_c never goes to HBM) where the card has the
// shared memory (sm_90: 227 KB); swa and cards with less shared memory run the two kernels.
#include <algorithm>
#include <climits>
#include <cmath>
#include <mutex>

#include "ops/hybrid_attention/ha_common.cuh"
#include "ops/hybrid_attention/ha_fast_mma.cuh"
#include "ops/hybrid_attention/ha_forward_fused.cuh"

namespace ha {
namespace cuda_detail {
namespace fast {

// ------------------------------------------------------------------------------------------
// State pass. grid (segments, B*H), D/16 warps; warp w owns state rows f in [16w, 16w + 16).
// Chunks m in [s*G, min(M, (s+1)*G)) are added in order (M = nch - 1: the last chunk is never
// needed). SUM: write the segment's sum (fp32, layout [f*D + col] then z[f]) to part[bh][s].
// !SUM: start from part[bh][s] (exclusive prefix over segments; zero for s = 0) and, before adding
// chunk m, write R_{m+1} (for m + 1 >= 2). NS stages of FK and V (NS - 1 chunks in flight): the
// sums (3 stages) are a pure stream of FK and V, two CTAs per SM (registers).
template <class T, int D, bool SUM, int NS = 2>
__global__ void __launch_bounds__(2 * D) fast_state_kernel(int T_, int H, int Hkv, int group, int M, int G,
                                                          int nseg, const T* __restrict__ fkp,
                                                          const T* __restrict__ vp, float* part,
                                                          __nv_bfloat16* rec) {
  constexpr int LDS = D + 8, ND = D / 8;
  extern __shared__ __align__(16) unsigned char smraw[];
  T* FKs = reinterpret_cast<T*>(smraw);  // NS stages x kC x LDS
  T* Vs = FKs + NS * kC * LDS;           // NS stages x kC x LDS (column D = 1: z comes out of the mma)
  const int s = blockIdx.x, bh = blockIdx.y;
  const int b = bh / H, h = bh % H, hk = h / group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int nch = (T_ + kC - 1) / kC;
  const int m0 = s * G, m1 = min(M, m0 + G);
  const T* fk = fkp + (int64_t)bh * T_ * D;
  const T* v = vp + ((int64_t)b * Hkv + hk) * T_ * D;
  const int64_t per = (int64_t)D * D + D;
  const int f0 = warp * 16 + g;

  for (int i = tid; i < NS * kC * 8; i += blockDim.x) {
    const int r = i >> 3, cc = i & 7;
    Vs[r * LDS + D + cc] = cc == 0 ? (T)1.f : (T)0.f;
  }
  float u[ND + 1][4];
#pragma unroll
  for (int i = 0; i <= ND; ++i) u[i][0] = u[i][1] = u[i][2] = u[i][3] = 0.f;
  if (!SUM && s > 0) {
    const float* src = part + ((int64_t)bh * nseg + s) * per;
#pragma unroll
    for (int nt = 0; nt < ND; ++nt) {
      const int col = nt * 8 + 2 * t;
      u[nt][0] = src[(int64_t)f0 * D + col];
      u[nt][1] = src[(int64_t)f0 * D + col + 1];
      u[nt][2] = src[(int64_t)(f0 + 8) * D + col];
      u[nt][3] = src[(int64_t)(f0 + 8) * D + col + 1];
    }
    if (t == 0) {
      u[ND][0] = src[(int64_t)D * D + f0];
      u[ND][2] = src[(int64_t)D * D + f0 + 8];
    }
  }
#pragma unroll
  for (int i = 0; i < NS - 1; ++i) {
    if (m0 + i < m1) {
      load_rows<T, D>(FKs + i * kC * LDS, fk, (m0 + i) * kC, kC, T_);
      load_rows<T, D>(Vs + i * kC * LDS, v, (m0 + i) * kC, kC, T_);
    }
    cp_commit();
  }
  for (int m = m0; m < m1; ++m) {
    const int st = (m - m0) % NS;
    cp_wait<NS - 2>();
    __syncthreads();  // chunk m has landed; every warp is done with chunk m-1's stage
    if (m + NS - 1 < m1) {
      const int sn = (m - m0 + NS - 1) % NS;
      load_rows<T, D>(FKs + sn * kC * LDS, fk, (m + NS - 1) * kC, kC, T_);
      load_rows<T, D>(Vs + sn * kC * LDS, v, (m + NS - 1) * kC, kC, T_);
    }
    cp_commit();
    if (!SUM) {
      if (m + 1 >= 2) {
        __nv_bfloat16* R = rec + ((int64_t)bh * nch + (m + 1)) * D * LDS;
#pragma unroll
        for (int nt = 0; nt < ND; ++nt) {
          const int col = nt * 8 + 2 * t;
          *reinterpret_cast<uint32_t*>(R + f0 * LDS + col) = pack2<__nv_bfloat16>(u[nt][0], u[nt][1]);
          *reinterpret_cast<uint32_t*>(R + (f0 + 8) * LDS + col) = pack2<__nv_bfloat16>(u[nt][2], u[nt][3]);
        }
        // z: hi in column D, lo in D + 1 (lanes t > 0 hold zero columns D+2.. and write zeros)
        const __nv_bfloat16 ha_ = __float2bfloat16_rn(u[ND][0]), hb_ = __float2bfloat16_rn(u[ND][2]);
        const float la_ = u[ND][0] - __bfloat162float(ha_), lb_ = u[ND][2] - __bfloat162float(hb_);
        *reinterpret_cast<uint32_t*>(R + f0 * LDS + D + 2 * t) = pack2<__nv_bfloat16>(__bfloat162float(ha_), la_);
        *reinterpret_cast<uint32_t*>(R + (f0 + 8) * LDS + D + 2 * t) =
            pack2<__nv_bfloat16>(__bfloat162float(hb_), lb_);
      }
      if (m + 1 >= M) continue;  // R_M is the last one anyone reads
    }
    const T* FK = FKs + st * kC * LDS;
    const T* V = Vs + st * kC * LDS;
#pragma unroll
    for (int kk = 0; kk < kC / 16; ++kk) {
      uint32_t a[4];
      ldsm_x4_t(a, smem_u32(FK + (kk * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + warp * 16 + ((lane >> 3) & 1) * 8));
      const T* vrow = V + (kk * 16 + (lane & 15)) * LDS;
#pragma unroll
      for (int np = 0; np < ND / 2; ++np) {
        uint32_t bf[4];
        ldsm_x4_t(bf, smem_u32(vrow + np * 16 + (lane >> 4) * 8));
        mma16816<T>(u[2 * np], a, bf[0], bf[1]);
        mma16816<T>(u[2 * np + 1], a, bf[2], bf[3]);
      }
      uint32_t bz[2];
      ldsm_x2_t(bz, smem_u32(vrow + D));
      mma16816<T>(u[ND], a, bz[0], bz[1]);
    }
  }
  cp_wait<0>();
  if (SUM) {
    float* dst = part + ((int64_t)bh * nseg + s) * per;
#pragma unroll
    for (int nt = 0; nt < ND; ++nt) {
      const int col = nt * 8 + 2 * t;
      dst[(int64_t)f0 * D + col] = u[nt][0];
      dst[(int64_t)f0 * D + col + 1] = u[nt][1];
      dst[(int64_t)(f0 + 8) * D + col] = u[nt][2];
      dst[(int64_t)(f0 + 8) * D + col + 1] = u[nt][3];
    }
    if (t == 0) {
      dst[(int64_t)D * D + f0] = u[ND][0];
      dst[(int64_t)D * D + f0 + 8] = u[ND][2];
    }
  }
}

// ------------------------------------------------------------------------------------------
// Main kernel. grid (nch, B*H), 128 threads; warp w owns rows 64c + 16w + [0, 16).
// Shared memory: B0 = Q (rows 0..63) | FQ (rows 64..127); B1 = K (128 keys), later V;
// B2 = FK (128 keys), later R_c (bf16, D rows). Key index kk in [0,128) is key 64(c-1) + kk;
// half 0 = previous chunk, half 1 = current chunk.
template <class T, int D>
__global__ void __launch_bounds__(128, 2) fast_fwd_kernel(KP p, const __nv_bfloat16* __restrict__ rec) {
  constexpr int LDS = D + 8, NT = 2 * kC / 8, ND = D / 8, KS = D / 16;
  extern __shared__ __align__(16) unsigned char smraw[];
  T* B0 = reinterpret_cast<T*>(smraw);
  T* B1 = B0 + 2 * kC * LDS;
  T* B2 = B1 + 2 * kC * LDS;
  const int c = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int T_ = p.T;
  const int row0 = c * kC, key0 = row0 - kC;
  const int nch = (T_ + kC - 1) / kC;
  const T* q = (const T*)p.q + (int64_t)bh * T_ * D;
  const T* k = (const T*)p.k + ((int64_t)b * p.Hkv + hk) * T_ * D;
  const T* v = (const T*)p.v + ((int64_t)b * p.Hkv + hk) * T_ * D;
  const T* fq = (const T*)p.fq + (int64_t)bh * T_ * D;
  const T* fk = (const T*)p.fk + (int64_t)bh * T_ * D;
  T* y = (T*)p.y + (int64_t)bh * T_ * D;

  const float gw = coef_win(p, b, h), gl = coef_la(p, h);
  const bool win = mode_has_window(p.mode) && gw > 0.f;
  const bool la = mode_has_la(p.mode) && gl != 0.f;
  const int rlast = min(T_, row0 + kC) - 1;
  bool s_act[2], a_act[2], v_act[2];
  s_act[0] = win && c > 0 && win_lo(p, row0) < row0;
  s_act[1] = win;
  a_act[0] = la && c > 0 && la_end(p, rlast) > key0;
  a_act[1] = la && la_end(p, rlast) > row0;
  v_act[0] = s_act[0] || a_act[0];
  v_act[1] = s_act[1] || a_act[1];
  const bool inter = la && c >= 2 && c < nch && nch >= 3;
  const bool la_any = a_act[0] || a_act[1];

  // G0: Q, K
  if (win) {
    load_rows<T, D>(B0, q, row0, kC, T_);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
      if (s_act[hh]) load_rows<T, D>(B1 + hh * kC * LDS, k, key0 + hh * kC, kC, T_);
  }
  cp_commit();
  // G1: FQ, FK
  if (la_any || inter) load_rows<T, D>(B0 + kC * LDS, fq, row0, kC, T_);
#pragma unroll
  for (int hh = 0; hh < 2; ++hh)
    if (a_act[hh]) load_rows<T, D>(B2 + hh * kC * LDS, fk, key0 + hh * kC, kC, T_);
  cp_commit();

  const int na = row0 + warp * 16 + g, nb = na + 8;
  const bool va = na < T_, vb = nb < T_;
  // P enters the combined weights with gamma_eff / lambda when LA is on: num = lambda * O then
  const float cw = la ? gw / gl : gw;
  const float oscale = la ? gl : 1.f;

  float pc[NT][4];
#pragma unroll
  for (int i = 0; i < NT; ++i) pc[i][0] = pc[i][1] = pc[i][2] = pc[i][3] = 0.f;
  float mx_a = 0.f, mx_b = 0.f, sw_a = 0.f, sw_b = 0.f, sl_a = 0.f, sl_b = 0.f;

  cp_wait<1>();
  __syncthreads();
  // ---- 1. window: S = Q K^T, mask, row max, P = exp(S - c)
  if (win) {
    const T* Qw = B0 + warp * 16 * LDS;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t qa[4];
      ldsm_x4(qa, smem_u32(Qw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        if (!s_act[hh]) continue;
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t kf[4];
          ldsm_x4(kf, smem_u32(B1 + (hh * kC + np * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 +
                               ((lane >> 3) & 1) * 8));
          mma16816<T>(pc[hh * 8 + np * 2], qa, kf[0], kf[1]);
          mma16816<T>(pc[hh * 8 + np * 2 + 1], qa, kf[2], kf[3]);
        }
      }
    }
    window_softmax<false>(pc, p, key0, t, na, nb, va, vb, cw, [&](int nt) { return s_act[nt / 8]; }, mx_a, mx_b, sw_a,
                          sw_b);
  }

  cp_wait<0>();
  __syncthreads();  // every warp is done with K: V may overwrite it
  // G2: V
#pragma unroll
  for (int hh = 0; hh < 2; ++hh)
    if (v_act[hh]) load_rows<T, D>(B1 + hh * kC * LDS, v, key0 + hh * kC, kC, T_);
  cp_commit();

  // ---- 2. LA inside chunks c-1, c: A = FQ FK^T masked to j < la_end(n)
  if (la_any) {
    const T* FQw = B0 + (kC + warp * 16) * LDS;
    const int le_a = va ? la_end(p, na) : INT_MIN, le_b = vb ? la_end(p, nb) : INT_MIN;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      if (!a_act[hh]) continue;
      float a[8][4];
#pragma unroll
      for (int i = 0; i < 8; ++i) a[i][0] = a[i][1] = a[i][2] = a[i][3] = 0.f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        uint32_t fa[4];
        ldsm_x4(fa, smem_u32(FQw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t kf[4];
          ldsm_x4(kf, smem_u32(B2 + (hh * kC + np * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 +
                               ((lane >> 3) & 1) * 8));
          mma16816<T>(a[np * 2], fa, kf[0], kf[1]);
          mma16816<T>(a[np * 2 + 1], fa, kf[2], kf[3]);
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = key0 + hh * kC + i * 8 + 2 * t + e;
          const float xa = j < le_a ? a[i][e] : 0.f, xb = j < le_b ? a[i][2 + e] : 0.f;
          sl_a += xa;
          sl_b += xb;
          pc[hh * 8 + i][e] += xa;
          pc[hh * 8 + i][2 + e] += xb;
        }
      }
    }
    sl_a += __shfl_xor_sync(0xffffffffu, sl_a, 1);
    sl_a += __shfl_xor_sync(0xffffffffu, sl_a, 2);
    sl_b += __shfl_xor_sync(0xffffffffu, sl_b, 1);
    sl_b += __shfl_xor_sync(0xffffffffu, sl_b, 2);
  }

  cp_wait<0>();
  __syncthreads();  // V has landed; every warp is done with FK: R_c may overwrite it
  // G3: R_c
  if (inter) {
    const __nv_bfloat16* R = rec + ((int64_t)bh * nch + c) * D * LDS;
    __nv_bfloat16* dst = reinterpret_cast<__nv_bfloat16*>(B2);
    for (int i = tid; i < D * LDS / 8; i += blockDim.x) cp_async16(smem_u32(dst + i * 8), R + i * 8, true);
  }
  cp_commit();

  // ---- 3. O = (coef P + A) V
  float o[ND][4];
#pragma unroll
  for (int i = 0; i < ND; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    if (!v_act[hh]) continue;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const int n0 = hh * 8 + kk * 2;
      uint32_t pa[4];
      pa[0] = pack2<T>(pc[n0][0], pc[n0][1]);
      pa[1] = pack2<T>(pc[n0][2], pc[n0][3]);
      pa[2] = pack2<T>(pc[n0 + 1][0], pc[n0 + 1][1]);
      pa[3] = pack2<T>(pc[n0 + 1][2], pc[n0 + 1][3]);
      const T* vrow = B1 + (hh * kC + kk * 16 + (lane & 15)) * LDS + (lane >> 4) * 8;
#pragma unroll
      for (int np = 0; np < ND / 2; ++np) {
        uint32_t vf[4];
        ldsm_x4_t(vf, smem_u32(vrow + np * 16));
        mma16816<T>(o[2 * np], pa, vf[0], vf[1]);
        mma16816<T>(o[2 * np + 1], pa, vf[2], vf[3]);
      }
    }
  }

  // ---- 4. inter-chunk LA: O += FQ R_c, den_la += fq . z
  if (inter) {
    cp_wait<0>();
    __syncthreads();
    const T* FQw = B0 + (kC + warp * 16) * LDS;
    const __nv_bfloat16* Rs = reinterpret_cast<const __nv_bfloat16*>(B2);
    float oz[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t fa[4], flo[4];
      ldsm_x4(fa, smem_u32(FQw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
      if constexpr (!std::is_same<T, __nv_bfloat16>::value) {
        // f16 fq = bf16 hi + bf16 lo exactly; the lo part only enters fq . z (den_la stays fp32-accurate)
#pragma unroll
        for (int i = 0; i < 4; ++i) h2_split_bf2(fa[i], fa[i], flo[i]);
      }
      const __nv_bfloat16* rrow = Rs + (ks * 16 + (lane & 15)) * LDS;
#pragma unroll
      for (int np = 0; np < ND / 2; ++np) {
        uint32_t sf[4];
        ldsm_x4_t(sf, smem_u32(rrow + np * 16 + (lane >> 4) * 8));
        mma16816<__nv_bfloat16>(o[2 * np], fa, sf[0], sf[1]);
        mma16816<__nv_bfloat16>(o[2 * np + 1], fa, sf[2], sf[3]);
      }
      uint32_t zf[2];
      ldsm_x2_t(zf, smem_u32(rrow + D));
      mma16816<__nv_bfloat16>(oz, fa, zf[0], zf[1]);
      if constexpr (!std::is_same<T, __nv_bfloat16>::value) mma16816<__nv_bfloat16>(oz, flo, zf[0], zf[1]);
    }
    // columns D (hi) and D+1 (lo) sit with the t == 0 lane of each quad
    const float za = __shfl_sync(0xffffffffu, oz[0] + oz[1], lane & ~3);
    const float zb = __shfl_sync(0xffffffffu, oz[2] + oz[3], lane & ~3);
    sl_a += za;
    sl_b += zb;
  }

  // ---- 5. normalise, write y (staged through this warp's own Q rows) and the statistics
  const float dsw_a = win ? gw * sw_a : 0.f, dsw_b = win ? gw * sw_b : 0.f;
  const float dla_a = la ? gl * sl_a : 0.f, dla_b = la ? gl * sl_b : 0.f;
  const float den_a = dsw_a + dla_a, den_b = dsw_b + dla_b;
  const float ia = den_a > 0.f ? oscale / den_a : 0.f, ib = den_b > 0.f ? oscale / den_b : 0.f;
  // y staged through rows only this warp ever read (its Q rows)
  warp_store_tile<T, D>(y, row0 + warp * 16, T_, B0 + warp * 16 * LDS, o, ia, ib, lane);
  write_row_stats(p, (int64_t)bh * T_, t, na, nb, va, vb, win ? mx_a : 0.f, win ? mx_b : 0.f, dsw_a, dsw_b, dla_a, dla_b);
}

#ifdef HA_FAST_TIMING
}  // namespace fast
int g_fast_timing = 0;   // dev builds only: print a per-kernel breakdown of the next calls
int g_fast_seg_mult = 4;  // dev builds only: state segments target g_fast_seg_mult * SMs blocks
                          // (0: one segment, also for the fused kernel)
int g_fast_fused = 1;     // dev builds only: 0 = the two-kernel path also where the fused kernel applies
namespace fast {
#endif

// Number of state-walk segments wanted for M chunks. One walker per (b, h) once B*H covers half the
// SMs: the walk is latency-bound, two walkers share an SM at no loss, and the per-segment sums +
// scan are pure overhead there (H200, B=4 H=32 T=2048, B*H = 128 on 132 SMs: 0.39 ms with one
// segment, 0.57 ms with 5). Below that, about seg_mult * SMs blocks (B=1 H=32 T=16384: 17
// segments, 0.96 ms, beat one, 1.47 ms).
inline int state_segments(int BH) {
#ifdef HA_FAST_TIMING
  const int seg_mult = g_fast_seg_mult;
#else
  const int seg_mult = 4;
#endif
  if (seg_mult <= 0) return 1;
  // (dev timing builds: a seg_mult other than 4 forces its segment count, to compare settings)
  if (seg_mult == 4 && 2 * BH >= sm_count()) return 1;
  return (seg_mult * sm_count() + BH - 1) / BH;
}

// State pass: R_c for chunks c in [2, nch) (bf16 [F][dv+8], z hi/lo in columns dv, dv+1) into a
// workspace buffer from the pool; returns it (the caller frees it on `st`), or nullptr where no row
// reads an inter-chunk state. `mid`, when given, is recorded after the segment sums and scan.
template <class T, int D>
__nv_bfloat16* fast_states(const KP& p, cudaStream_t st, cudaEvent_t mid) {
  constexpr int LDS = D + 8;
  const int BH = p.B * p.H;
  const int nch = (p.T + kC - 1) / kC;
  if (!(mode_has_la(p.mode) && nch >= 3)) {
    if (mid) check(cudaEventRecord(mid, st), "timing event");
    return nullptr;
  }
  __nv_bfloat16* rec = nullptr;
  float* part = nullptr;
  const int M = nch - 1;  // chunks 0 .. nch-2 feed R_2 .. R_{nch-1}
  const int want = state_segments(BH);
  int G = (M + std::max(1, want) - 1) / std::max(1, want);
  G = std::max(2, G);
  const int nseg = (M + G - 1) / G;
  const int64_t per = (int64_t)D * D + D;
  ws_alloc(&rec, sizeof(__nv_bfloat16) * (size_t)BH * nch * D * LDS, st);
  const size_t smem = sizeof(T) * 4 * kC * LDS;
  if (nseg > 1) {
    ws_alloc(&part, sizeof(float) * (size_t)BH * nseg * per, st);
    check(cudaFuncSetAttribute(fast_state_kernel<T, D, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
          "fast state smem");
    fast_state_kernel<T, D, true><<<dim3(nseg - 1, BH), 2 * D, smem, st>>>(
        p.T, p.H, p.Hkv, p.group, M, G, nseg, (const T*)p.fk, (const T*)p.v, part, rec);
    check_launch("fast_state_sum");
    launch_segment_scan(part, BH, nseg, per, +1, st);
  }
  if (mid) check(cudaEventRecord(mid, st), "timing event");
  check(cudaFuncSetAttribute(fast_state_kernel<T, D, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
        "fast state smem");
  fast_state_kernel<T, D, false><<<dim3(nseg, BH), 2 * D, smem, st>>>(
      p.T, p.H, p.Hkv, p.group, M, G, nseg, (const T*)p.fk, (const T*)p.v, part, rec);
  check_launch("fast_state_walk");
  if (part) check(cudaFreeAsync(part, st), "fast workspace free");
  return rec;
}

template <class T, int D>
void run_fast(const KP& p, cudaStream_t st) {
  cudaEvent_t ev[4] = {};
#ifdef HA_FAST_TIMING
  if (g_fast_timing) for (auto& e : ev) check(cudaEventCreate(&e), "timing event");
  if (ev[0]) check(cudaEventRecord(ev[0], st), "timing event");
#endif
  constexpr int LDS = D + 8;
  const int BH = p.B * p.H;
  const int nch = (p.T + kC - 1) / kC;
  __nv_bfloat16* rec = fast_states<T, D>(p, st, ev[1]);
  if (ev[2]) check(cudaEventRecord(ev[2], st), "timing event");
  const size_t smem = sizeof(T) * 3 * 2 * kC * LDS;
  check(cudaFuncSetAttribute(fast_fwd_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
        "fast fwd smem");
  check(cudaFuncSetAttribute(fast_fwd_kernel<T, D>, cudaFuncAttributePreferredSharedMemoryCarveout,
                            (int)cudaSharedmemCarveoutMaxShared),
        "fast fwd carveout");
  fast_fwd_kernel<T, D><<<dim3(nch, BH), 128, smem, st>>>(p, rec);
  check_launch("fast_fwd");
#ifdef HA_FAST_TIMING
  if (g_fast_timing) {
    check(cudaEventRecord(ev[3], st), "timing event");
    check(cudaEventSynchronize(ev[3]), "timing event");
    float a = 0, b = 0, c = 0;
    cudaEventElapsedTime(&a, ev[0], ev[1]);
    cudaEventElapsedTime(&b, ev[1], ev[2]);
    cudaEventElapsedTime(&c, ev[2], ev[3]);
    printf("  fast breakdown (seg_mult %d): alloc+state sums+scan %.3f ms, state walk %.3f ms, main %.3f ms\n", g_fast_seg_mult, a, b, c);
    for (auto& e : ev) cudaEventDestroy(e);
  }
#endif
  if (rec) check(cudaFreeAsync(rec, st), "fast workspace free");
}

// Largest dynamic shared memory one block may opt into (227 KB on sm_90, less on sm_80/86/89).
inline int max_smem_optin() {
  static int v = -1;
  if (v < 0) {
    int dev = 0, x = 0;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&x, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess)
      v = x;
    else { cudaGetLastError(); v = 0; }
  }
  return v;
}

// Prefix of the sub-segment sums for the fused kernel's segments: part[bh][s] = sum of
// sub[bh][i] for i < s k (s = 1 .. nseg-1; segment s walks from R_{sG+1} = part[s], G = k Gs).
// The k loads of a segment are issued together (one memory round trip per segment, not per entry).
constexpr int kMaxSub = 8;
constexpr int kDirectSums = 16;  // sub-segment sums per head up to which the fused CTAs add their own prefix
__global__ void segment_prefix_kernel(const float* __restrict__ sub, float* __restrict__ part, int nseg, int k, int64_t per) {
  const int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int bh = blockIdx.y;
  if (e >= per) return;
  const float* src = sub + (int64_t)bh * (nseg - 1) * k * per + e;
  float* dst = part + (int64_t)bh * nseg * per + e;
  float run = 0.f;
  for (int s = 1; s < nseg; ++s) {
    float x[kMaxSub];
#pragma unroll
    for (int u = 0; u < kMaxSub; ++u) x[u] = u < k ? src[((int64_t)(s - 1) * k + u) * per] : 0.f;
#pragma unroll
    for (int u = 0; u < kMaxSub; ++u) run += x[u];
    dst[(int64_t)s * per] = run;
  }
}

#ifdef HA_FAST_TIMING
}  // namespace fast
int g_fast_fused_want = 0, g_fast_sub_k = 0;  // dev builds only: force the fused segment count / sums per segment
namespace fast {
#endif

template <class T, int D, bool FRAME>
void launch_fused(const KP& p, int G, int nseg, int nent, int kk, const float* part, cudaStream_t st) {
  constexpr size_t smem = fused_fwd_smem_bytes<T, D>();
  check(cudaFuncSetAttribute(fused_fwd_kernel<T, D, FRAME>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
        "fused fwd smem");
  fused_fwd_kernel<T, D, FRAME><<<dim3(nseg, p.B * p.H), 256, smem, st>>>(p, G, nseg, nent, kk, part);
  check_launch("fused_fwd");
}

// Fused forward for the modes with an LA branch, where the card has the shared memory for it;
// returns false otherwise (the two-kernel path runs). One CTA per SM: with B*H below the SM
// count, floor(SMs / B*H) segments per head so that every SM walks one. Their starting states:
// sums over sub-segments of Gs chunks (k per segment, about two sum blocks per SM instead of one
// block per segment on a quarter of the SMs), which the segments' CTAs add up themselves (or, with
// many segments, a prefix pass). H100, B=1 T=16384: sums 106 us (2 stages, k = 4: 1.45 waves) ->
// 100 us (3 stages, k = 2; forcing 3 blocks per SM spills, 122 us), prefix pass (15 us) gone:
// forward 0.535 -> 0.51 ms; what is left is the re-read of 3/4 of FK and V (61% of HBM).
template <class T, int D>
bool run_fused(const KP& p, cudaStream_t st) {
  constexpr int LDS = D + 8;
  constexpr size_t smem = fused_fwd_smem_bytes<T, D>();
  if (!mode_has_la(p.mode) || (int64_t)smem > max_smem_optin()) return false;
  int want = 0;
#ifdef HA_FAST_TIMING
  if (!g_fast_fused) return false;
  if (g_fast_seg_mult == 0) want = 1;
  if (g_fast_fused_want > 0) want = g_fast_fused_want;
#endif
  const int BH = p.B * p.H;
  const int nch = (p.T + kC - 1) / kC, M = nch - 1;
  if (want == 0) want = std::max(1, sm_count() / BH);
  int G = std::max(1, M), nseg = 1, k = 1, Gs = G;
  if (want > 1 && M >= 4) {
    G = std::max(2, (M + want - 1) / want);
    nseg = (M + G - 1) / G;
    if (nseg > 1) {
      // about 2 sum blocks per SM (registers: 95 a thread), at least 4 chunks per block
      k = std::min(kMaxSub, std::max(1, 2 * sm_count() / ((nseg - 1) * BH)));
      k = std::max(1, std::min(k, G / 4));
#ifdef HA_FAST_TIMING
      if (g_fast_sub_k > 0) k = std::min(kMaxSub, g_fast_sub_k);
#endif
      Gs = (G + k - 1) / k;
      G = Gs * k;
      nseg = (M + G - 1) / G;
      if (nseg < 2) k = 1, Gs = G;
    }
  }
  // the 5-tile frame holds for sliding windows and terraced ones with w <= 32
  const bool frame = p.geom == 0 || p.w <= kC / 2;
  cudaEvent_t ev[3] = {};
#ifdef HA_FAST_TIMING
  if (g_fast_timing) for (auto& e : ev) check(cudaEventCreate(&e), "timing event");
  if (ev[0]) check(cudaEventRecord(ev[0], st), "timing event");
#endif
  float* part = nullptr;
  float* sub = nullptr;
  int nent = 1, kk = 0;  // (see fused_fwd_kernel: entries per head, sums per segment or 0 = prefixed)
  if (nseg > 1) {
    // sums of the (nseg - 1) k sub-segments of Gs chunks (sub-segment i: chunks [i Gs, (i+1) Gs)),
    // streamed through 3 stages; segment s starts from the sum of the first s k
    const int64_t per = (int64_t)D * D + D;
    const int nsub = (nseg - 1) * k;
    ws_alloc(&sub, sizeof(float) * (size_t)BH * nsub * per, st);
    const size_t ssm = sizeof(T) * 2 * 3 * kC * LDS;
    check(cudaFuncSetAttribute(fast_state_kernel<T, D, true, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)ssm),
          "fast state smem");
    fast_state_kernel<T, D, true, 3><<<dim3(nsub, BH), 2 * D, ssm, st>>>(
        p.T, p.H, p.Hkv, p.group, M, Gs, nsub, (const T*)p.fk, (const T*)p.v, sub, nullptr);
    check_launch("fast_state_sum");
    if (nsub <= kDirectSums) {
      // few: each segment's CTA adds its s k sums itself (H100, B=1 T=16384: the prefix pass was 15 us)
      part = sub, nent = nsub, kk = k;
    } else {
      ws_alloc(&part, sizeof(float) * (size_t)BH * nseg * per, st);
      segment_prefix_kernel<<<dim3((unsigned)((per + 255) / 256), BH), 256, 0, st>>>(sub, part, nseg, k, per);
      check_launch("segment_prefix");
      nent = nseg, kk = 0;
    }
  }
  if (ev[1]) check(cudaEventRecord(ev[1], st), "timing event");
  if (frame) launch_fused<T, D, true>(p, G, nseg, nent, kk, part, st);
  else launch_fused<T, D, false>(p, G, nseg, nent, kk, part, st);
#ifdef HA_FAST_TIMING
  if (g_fast_timing) {
    check(cudaEventRecord(ev[2], st), "timing event");
    check(cudaEventSynchronize(ev[2]), "timing event");
    float a = 0, b = 0;
    cudaEventElapsedTime(&a, ev[0], ev[1]);
    cudaEventElapsedTime(&b, ev[1], ev[2]);
    printf("  fused breakdown (%d segments of %d chunks, %d sums each): alloc+state sums+prefix %.3f ms, fused kernel %.3f ms\n",
           nseg, G, k, a, b);
    for (auto& e : ev) cudaEventDestroy(e);
  }
#endif
  if (part && part != sub) check(cudaFreeAsync(part, st), "fast workspace free");
  if (sub) check(cudaFreeAsync(sub, st), "fast workspace free");
  return true;
}

template <class T, int D>
void run_forward(const KP& p, cudaStream_t st) {
  if (!run_fused<T, D>(p, st)) run_fast<T, D>(p, st);
}

}  // namespace fast

// Where the fast path applies (forward and backward): bf16/f16, d = dv = F in {64, 128}, modes
// hybrid/swa/la/la-full/overlap, windows whose rows of chunk c only see keys of chunks c-1 and c.
bool fast_path_applies(const KP& p, DType dt) {
  if (dt != DType::BF16 && dt != DType::F16) return false;
  if (p.d != p.dv || p.d != p.F || (p.d != 128 && p.d != 64)) return false;
  if (!(p.mode == kModeHybrid || p.mode == kModeSwa || p.mode == kModeLa || p.mode == kModeLaFull ||
        p.mode == kModeOverlap))
    return false;
  // window and the recent LA keys of every row of chunk c must lie in chunks c-1 and c
  if (p.w < 1) return false;
  if (p.geom == 0 ? p.w > fast::kC : !(p.w <= fast::kC / 2 || p.w == fast::kC)) return false;
  if (p.B < 1 || p.T < 1 || (int64_t)p.B * p.H > 65535) return false;
  for (const void* x : {p.q, p.k, p.v, p.fq, p.fk, (const void*)p.y})
    if (!fast::aligned16(x)) return false;
  return true;
}

bool launch_forward_fast(const KP& p, DType dt, cudaStream_t st) {
  if (!fast_path_applies(p, dt)) return false;
  if (dt == DType::BF16) {
    if (p.d == 128) fast::run_forward<__nv_bfloat16, 128>(p, st);
    else fast::run_forward<__nv_bfloat16, 64>(p, st);
  } else {
    if (p.d == 128) fast::run_forward<__half, 128>(p, st);
    else fast::run_forward<__half, 64>(p, st);
  }
  return true;
}

}  // namespace cuda_detail
}  // namespace ha
