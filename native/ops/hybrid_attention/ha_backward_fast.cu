// Tensor-core backward fast path (mma.sync m16n8k16, bf16/f16 operands, fp32 accumulators), for
// the cases the forward fast path takes (fast_path_applies). Same chunking as the forward: rows and
// keys in chunks of 64; the window and the recent LA keys of a row of chunk c lie in chunks c-1 and
// c, every key of chunks <= c-2 is an LA key of every row of chunk c. With P = gw e / den,
// dP = dy . v, D = dy . y, wa = gl / den (as the generic path, ha_backward.cu):
//   window: ds = P (dP - D) + [j = argmax_n] dc_n, dc_n = -sum_j P (dP - D); dq = scale ds K,
//           dk = scale ds^T Q, dv += P^T dY;
//   LA:     dA = wa (dP - D) on the LA set; dfq = dA FK + wa (R_c dy - z_c D) (R_c: forward state
//           of the keys of chunks <= c-2); dfk = dA^T FQ + Rr_c v - rz_c, dv += (wa A)^T dY + FK Rr_c
//           (Rr_c = sum over rows of chunks >= c+2 of fq (wa dy)^T, rz_c = sum fq wa D);
//   dgamma: dL/dgw_n = (den_la dy.U - gl A dy.N) / den^2, free of D (16-bit y), as the generic path.
// Kernels, in stream order:
//   0. (LA modes, >= 3 chunks) per-row prep: wa = lambda / den, wa D for the reverse walk, and D;
//   1. both LA state walks in one launch (fast_bwd_walk_kernel): the forward states R_c (the
//      forward's state pass) and the reverse states Rr_c, rz_c (a chunk walk from the end);
//      sequence-parallel like the forward's (segment sums + one scan first where B*H is small; the
//      main walk sized to one wave, see walk_split_bwd); bf16 states leave shared memory as one bulk
//      copy each;
//   2. row kernel, one CTA per (row chunk c, b*h): recomputes S (row max, first arg-max), dP, A over
//      the 128 keys of chunks c-1, c; writes dq, dfq, per-row {c, dc, D, argmax} and dgamma. Loads
//      overlap compute: S starts on Q, K while dY, V land; FK lands during dq, R_c during the
//      intra-chunk LA part;
//   3. key kernel, one CTA per (key chunk c, b*h): recomputes S^T, dP^T, A^T against the 128 rows
//      of chunks c, c+1; writes dk, dv (summed over GQA heads through fp32 atomics when H > Hkv)
//      and dfk.
// H200, bf16, B=4 H=32 T=2048 d=F=128 w=64: prep 0.05 ms, walks 0.15 ms, row 0.34 ms, key 0.45 ms
// (key kernel as at e086c2a, measured there: 0.449 ms, and 0.896 ms at B=1 T=16384).
// Nothing T x T is stored; all states are accumulated in fp32 and stored in bf16 like the forward's
// (f16 inputs: bf16 hi + lo parts, see state_parts).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>

#include "ops/hybrid_attention/ha_common.cuh"
#include "ops/hybrid_attention/ha_fast_mma.cuh"

namespace ha {
namespace cuda_detail {
namespace fast {

// A fragment (16 x 16 of a T matrix) times a bf16 B fragment: f16 operands are split exactly into
// bf16 hi + lo (two mma), bf16 ones go straight in.
template <class T>
__device__ __forceinline__ void mma_x_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    mma16816<__nv_bfloat16>(c, a, b0, b1);
  } else {
    uint32_t hi[4], lo[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) h2_split_bf2(a[i], hi[i], lo[i]);
    mma16816<__nv_bfloat16>(c, hi, b0, b1);
    mma16816<__nv_bfloat16>(c, lo, b0, b1);
  }
}

// f16 inputs: the inter-chunk states go as bf16 hi + lo parts (two passes over one shared-memory
// buffer): a single bf16 rounding of the states (2^-9) would be several times the f16 rounding.
template <class T>
__host__ __device__ constexpr int state_parts() { return std::is_same<T, __half>::value ? 2 : 1; }

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x;
}


// acc (16 rows x D) += X M, X the warp's 16 x 128 operand as 8 A fragments (keys of chunks c-1,
// c), M the 128 key rows x D in shared memory (row stride D + 8); 16-key tiles with !act[kt]
// skipped. The row kernel's dq = ds K and dfq = dA FK.
template <class T, int D>
__device__ __forceinline__ void add_frags_times_keys(float (&acc)[D / 8][4], const uint32_t (&x)[8][4], const T* M,
                                                     const bool (&act)[8], int lane) {
  constexpr int LDS = D + 8, ND = D / 8;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      if (!act[hh * 4 + kk]) continue;
      const T* krow = M + (hh * kC + kk * 16 + (lane & 15)) * LDS + (lane >> 4) * 8;
#pragma unroll
      for (int np = 0; np < ND / 2; ++np) {
        uint32_t kf[4];
        ldsm_x4_t(kf, smem_u32(krow + np * 16));
        mma16816<T>(acc[2 * np], x[hh * 4 + kk], kf[0], kf[1]);
        mma16816<T>(acc[2 * np + 1], x[hh * 4 + kk], kf[2], kf[3]);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------
// Row kernel. grid (nch, B*H), 128 threads; warp w owns rows 64c + 16w + [0, 16).
// Shared memory: B0 = Q, later FQ (64 rows); B1 = dY (64 rows); B2 = K, later FK (128 keys);
// B3 = V, later R_c (bf16, D rows). Key index kk in [0, 128) is key 64(c-1) + kk.
template <class T, int D>
__global__ void __launch_bounds__(128, 2) fast_bwd_row_kernel(KP p, const __nv_bfloat16* __restrict__ rec,
                                                              const __nv_bfloat16* __restrict__ rec_lo,
                                                              const float* __restrict__ Dp, float4* __restrict__ rowinfo,
                                                              T* __restrict__ dqp, T* __restrict__ dfqp, float* __restrict__ dgamma,
                                                              int so) {
  constexpr int LDS = D + 8, NT = 2 * kC / 8, ND = D / 8, KS = D / 16;
  extern __shared__ __align__(16) unsigned char smraw[];
  T* B0 = reinterpret_cast<T*>(smraw);
  T* B1 = B0 + kC * LDS;
  T* B2 = B1 + kC * LDS;
  T* B3 = B2 + 2 * kC * LDS;
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
  const T* y = (const T*)p.y + (int64_t)bh * T_ * D;
  const T* dy = (const T*)p.dy + (int64_t)bh * T_ * D;
  T* dq = dqp + (int64_t)bh * T_ * D;
  T* dfq = dfqp + (int64_t)bh * T_ * D;

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
  const bool inter = la && c >= 2 && nch >= 3;
  const bool la_any = a_act[0] || a_act[1];
  const bool any = win || la;

  // G0a: Q, K (S starts when they land), G0b: dY, V
  if (win) {
    load_rows<T, D>(B0, q, row0, kC, T_);
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
      if (s_act[hh]) load_rows<T, D>(B2 + hh * kC * LDS, k, key0 + hh * kC, kC, T_);
  }
  cp_commit();
  if (any) load_rows<T, D>(B1, dy, row0, kC, T_);
#pragma unroll
  for (int hh = 0; hh < 2; ++hh)
    if (v_act[hh]) load_rows<T, D>(B3 + hh * kC * LDS, v, key0 + hh * kC, kC, T_);
  cp_commit();

  const int na = row0 + warp * 16 + g, nb = na + 8;
  const bool va = na < T_, vb = nb < T_;
  const int64_t rb = (int64_t)bh * T_;
  const float den_a = va ? p.den_swa[rb + na] + p.den_la[rb + na] : 0.f;
  const float den_b = vb ? p.den_swa[rb + nb] + p.den_la[rb + nb] : 0.f;
  const float wa_a = la && den_a > 0.f ? gl / den_a : 0.f, wa_b = la && den_b > 0.f ? gl / den_b : 0.f;
  const float wb_a = win && den_a > 0.f ? gw / den_a : 0.f, wb_b = win && den_b > 0.f ? gw / den_b : 0.f;
  // 16-key tiles (key0 + 16 kt + [0, 16)) that some row of this warp reaches (exact): sk through its
  // window (S, E, ds, dq), ak as LA keys (A, dA, dfq), vk either (dP). Sliding w = 64: S and dq over
  // 5 tiles instead of 8, A and dfq over warp + 1 instead of 4 (H100: no faster, 0.34 ms at B=4: the
  // kernel waits on its loads; fewer instructions all the same).
  bool sk[8], ak[8], vk[8];
  {
    const int wlo_a = va && win ? win_lo(p, na) : INT_MAX, wlo_b = vb && win ? win_lo(p, nb) : INT_MAX;
    const int le_a = va && la ? la_end(p, na) : INT_MIN, le_b = vb && la ? la_end(p, nb) : INT_MIN;
#pragma unroll
    for (int kt = 0; kt < 8; ++kt) {
      const int k0 = key0 + kt * 16, k1 = k0 + 15;
      const bool ws = (wlo_a <= k1 && na >= k0) || (wlo_b <= k1 && nb >= k0);
      sk[kt] = s_act[kt / 4] && __any_sync(0xffffffffu, ws);
      ak[kt] = a_act[kt / 4] && __any_sync(0xffffffffu, le_a > k0 || le_b > k0);
      vk[kt] = sk[kt] || ak[kt];
    }
  }

  // ---- 0. D_n = dy_n . y_n (16-bit y, as the generic path): from the prep kernel where it ran (Dp,
  // [B*H][64 * nch]), else from global memory while G0 is in flight
  float Da = 0.f, Db = 0.f;
  if (Dp) {
    const float* Dr = Dp + (int64_t)bh * nch * kC + row0 + warp * 16;
    Da = Dr[g];
    Db = Dr[g + 8];
  } else if (any) {
#pragma unroll
    for (int r = 0; r < 16; ++r) {
      const int n = row0 + warp * 16 + r;
      float s = 0.f;
      if (n < T_) {
#pragma unroll
        for (int cc = lane; cc < D / 2; cc += 32) {
          const float2 yf = unpack2<T>(*reinterpret_cast<const uint32_t*>(y + (int64_t)n * D + 2 * cc));
          const float2 gf = unpack2<T>(*reinterpret_cast<const uint32_t*>(dy + (int64_t)n * D + 2 * cc));
          s += yf.x * gf.x + yf.y * gf.y;
        }
      }
      s = warp_sum(s);
      if (r == g) Da = s;
      if (r == g + 8) Db = s;
    }
  }

  cp_wait<1>();
  __syncthreads();

  // ---- 1. S = Q K^T, window mask, row max and first arg-max, E = exp(S - c)
  float pc[NT][4];
#pragma unroll
  for (int i = 0; i < NT; ++i) pc[i][0] = pc[i][1] = pc[i][2] = pc[i][3] = 0.f;
  float mx_a = 0.f, mx_b = 0.f, rA_a = 0.f, rA_b = 0.f;
  int arg_a = -1, arg_b = -1;
  if (win) {
    const T* Qw = B0 + warp * 16 * LDS;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t qa[4];
      ldsm_x4(qa, smem_u32(Qw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          if (!sk[hh * 4 + np]) continue;
          uint32_t kf[4];
          ldsm_x4(kf, smem_u32(B2 + (hh * kC + np * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 +
                               ((lane >> 3) & 1) * 8));
          mma16816<T>(pc[hh * 8 + np * 2], qa, kf[0], kf[1]);
          mma16816<T>(pc[hh * 8 + np * 2 + 1], qa, kf[2], kf[3]);
        }
      }
    }
    const int wlo_a = va ? win_lo(p, na) : INT_MAX, whi_a = va ? na : INT_MIN;
    const int wlo_b = vb ? win_lo(p, nb) : INT_MAX, whi_b = vb ? nb : INT_MIN;
    float ba = -INFINITY, bb = -INFINITY;
    int ia = INT_MAX, ib = INT_MAX;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      if (!sk[nt / 2]) continue;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int j = key0 + nt * 8 + 2 * t + e;
        float x = pc[nt][e] * p.scale;
        x = (j >= wlo_a && j <= whi_a) ? x : -INFINITY;
        pc[nt][e] = x;
        if (x > ba) { ba = x; ia = j; }
        float z = pc[nt][2 + e] * p.scale;
        z = (j >= wlo_b && j <= whi_b) ? z : -INFINITY;
        pc[nt][2 + e] = z;
        if (z > bb) { bb = z; ib = j; }
      }
    }
    // quad reduction of (max, first index)
#pragma unroll
    for (int o = 1; o <= 2; o <<= 1) {
      const float oa = __shfl_xor_sync(0xffffffffu, ba, o), ob = __shfl_xor_sync(0xffffffffu, bb, o);
      const int oia = __shfl_xor_sync(0xffffffffu, ia, o), oib = __shfl_xor_sync(0xffffffffu, ib, o);
      if (oa > ba || (oa == ba && oia < ia)) { ba = oa; ia = oia; }
      if (ob > bb || (ob == bb && oib < ib)) { bb = ob; ib = oib; }
    }
    mx_a = ba == -INFINITY ? 0.f : ba;
    mx_b = bb == -INFINITY ? 0.f : bb;
    arg_a = ba == -INFINITY ? -1 : ia;
    arg_b = bb == -INFINITY ? -1 : ib;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      if (!sk[nt / 2]) continue;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        pc[nt][e] = ex2_approx((pc[nt][e] - mx_a) * kLog2e);  // -inf (masked) -> 0
        pc[nt][2 + e] = ex2_approx((pc[nt][2 + e] - mx_b) * kLog2e);
        rA_a += pc[nt][e];
        rA_b += pc[nt][2 + e];
      }
    }
    rA_a = quad_sum(rA_a);
    rA_b = quad_sum(rA_b);
  }

  cp_wait<0>();
  __syncthreads();

  // ---- 2. dP = dY V^T over the keys either branch uses
  float dp[NT][4];
#pragma unroll
  for (int i = 0; i < NT; ++i) dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.f;
  if (v_act[0] || v_act[1]) {
    const T* Gw = B1 + warp * 16 * LDS;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t ga[4];
      ldsm_x4(ga, smem_u32(Gw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          if (!vk[hh * 4 + np]) continue;
          uint32_t vf[4];
          ldsm_x4(vf, smem_u32(B3 + (hh * kC + np * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 +
                               ((lane >> 3) & 1) * 8));
          mma16816<T>(dp[hh * 8 + np * 2], ga, vf[0], vf[1]);
          mma16816<T>(dp[hh * 8 + np * 2 + 1], ga, vf[2], vf[3]);
        }
      }
    }
  }
  // ds = wb E (dP - D); dc = -sum ds; ds += dc at the arg-max; dy . U = sum E dP (for dgamma)
  float rU_a = 0.f, rU_b = 0.f, dc_a = 0.f, dc_b = 0.f;
  uint32_t dsp[8][4];
  if (win) {
    float rs_a = 0.f, rs_b = 0.f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      if (!sk[nt / 2]) continue;
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float ea = pc[nt][e], eb = pc[nt][2 + e];
        rU_a += ea * dp[nt][e];
        rU_b += eb * dp[nt][2 + e];
        const float sa = wb_a * ea * (dp[nt][e] - Da), sb = wb_b * eb * (dp[nt][2 + e] - Db);
        rs_a += sa;
        rs_b += sb;
        pc[nt][e] = sa;
        pc[nt][2 + e] = sb;
      }
    }
    rU_a = quad_sum(rU_a);
    rU_b = quad_sum(rU_b);
    dc_a = -quad_sum(rs_a);
    dc_b = -quad_sum(rs_b);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int j = key0 + nt * 8 + 2 * t + e;
        if (j == arg_a) pc[nt][e] += dc_a;
        if (j == arg_b) pc[nt][2 + e] += dc_b;
      }
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
      dsp[kk][0] = pack2<T>(pc[2 * kk][0], pc[2 * kk][1]);
      dsp[kk][1] = pack2<T>(pc[2 * kk][2], pc[2 * kk][3]);
      dsp[kk][2] = pack2<T>(pc[2 * kk + 1][0], pc[2 * kk + 1][1]);
      dsp[kk][3] = pack2<T>(pc[2 * kk + 1][2], pc[2 * kk + 1][3]);
    }
  }

  __syncthreads();  // every warp is done with Q (B0) and V (B3)
  // G1: FQ into B0, FK into B3 (in flight during dq)
  if (la_any || inter) load_rows<T, D>(B0, fq, row0, kC, T_);
#pragma unroll
  for (int hh = 0; hh < 2; ++hh)
    if (a_act[hh]) load_rows<T, D>(B3 + hh * kC * LDS, fk, key0 + hh * kC, kC, T_);
  cp_commit();

  // ---- 3. dq = scale ds K
  {
    float o[ND][4];
#pragma unroll
    for (int i = 0; i < ND; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    if (win) add_frags_times_keys<T, D>(o, dsp, B2, sk, lane);
    __syncthreads();  // every warp is done with K (B2)
    if (so) {  // staged through B2 (this warp's 16 rows), then R_c goes there
      warp_store_tile<T, D>(dq, row0 + warp * 16, T_, B2 + warp * 16 * LDS, o, p.scale, lane);
      __syncthreads();
    } else {
#pragma unroll
      for (int nt = 0; nt < ND; ++nt) {
        const int col = nt * 8 + 2 * t;
        if (va) *reinterpret_cast<uint32_t*>(dq + (int64_t)na * D + col) = pack2<T>(o[nt][0] * p.scale, o[nt][1] * p.scale);
        if (vb) *reinterpret_cast<uint32_t*>(dq + (int64_t)nb * D + col) = pack2<T>(o[nt][2] * p.scale, o[nt][3] * p.scale);
      }
    }
  }

  // G2: R_c into B2 (bf16, D rows; in flight during the intra-chunk LA part)
  const __nv_bfloat16* Rs = reinterpret_cast<const __nv_bfloat16*>(B2);
  if (inter) {
    const __nv_bfloat16* R = rec + ((int64_t)bh * nch + c) * D * LDS;
    __nv_bfloat16* dst = reinterpret_cast<__nv_bfloat16*>(B2);
    for (int i = tid; i < D * LDS / 8; i += blockDim.x) cp_async16(smem_u32(dst + i * 8), R + i * 8, true);
  }
  cp_commit();
  cp_wait<1>();
  __syncthreads();  // FQ, FK have landed

  // ---- 4. A = FQ FK^T on the recent LA keys: dy . N (intra part), dA = wa (dP - D)
  const T* FK_ = B3;
  float gN_a = 0.f, gN_b = 0.f;
  uint32_t dap[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i) dap[i][0] = dap[i][1] = dap[i][2] = dap[i][3] = 0u;
  const T* FQw = B0 + warp * 16 * LDS;
  if (la_any) {
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
          if (!ak[hh * 4 + np]) continue;
          uint32_t kf[4];
          ldsm_x4(kf, smem_u32(FK_ + (hh * kC + np * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 +
                               ((lane >> 3) & 1) * 8));
          mma16816<T>(a[np * 2], fa, kf[0], kf[1]);
          mma16816<T>(a[np * 2 + 1], fa, kf[2], kf[3]);
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        if (!ak[hh * 4 + i / 2]) continue;  // (a stays 0: dA packs as 0)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int j = key0 + hh * kC + i * 8 + 2 * t + e;
          const bool ina = j < le_a, inb = j < le_b;
          gN_a += ina ? a[i][e] * dp[hh * 8 + i][e] : 0.f;
          gN_b += inb ? a[i][2 + e] * dp[hh * 8 + i][2 + e] : 0.f;
          a[i][e] = ina ? wa_a * (dp[hh * 8 + i][e] - Da) : 0.f;
          a[i][2 + e] = inb ? wa_b * (dp[hh * 8 + i][2 + e] - Db) : 0.f;
        }
      }
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        dap[hh * 4 + kk][0] = pack2<T>(a[2 * kk][0], a[2 * kk][1]);
        dap[hh * 4 + kk][1] = pack2<T>(a[2 * kk][2], a[2 * kk][3]);
        dap[hh * 4 + kk][2] = pack2<T>(a[2 * kk + 1][0], a[2 * kk + 1][1]);
        dap[hh * 4 + kk][3] = pack2<T>(a[2 * kk + 1][2], a[2 * kk + 1][3]);
      }
    }
  }

  // ---- 5. dfq = dA FK + wa (R_c dy - z_c D)
  {
    float f[ND][4];
#pragma unroll
    for (int i = 0; i < ND; ++i) f[i][0] = f[i][1] = f[i][2] = f[i][3] = 0.f;
    if (la_any) add_frags_times_keys<T, D>(f, dap, FK_, ak, lane);
    cp_wait<0>();
    __syncthreads();  // R_c has landed
    if (inter) {
      float r[ND][4];  // R_c dy
#pragma unroll
      for (int i = 0; i < ND; ++i) r[i][0] = r[i][1] = r[i][2] = r[i][3] = 0.f;
      const T* Gw = B1 + warp * 16 * LDS;
#pragma unroll 1
      for (int part = 0; part < state_parts<T>(); ++part) {
      if (part == 1) {
        __syncthreads();  // every warp is done with the hi part
        const __nv_bfloat16* R = rec_lo + ((int64_t)bh * nch + c) * D * LDS;
        __nv_bfloat16* dst = reinterpret_cast<__nv_bfloat16*>(B2);
        for (int i = tid; i < D * LDS / 8; i += blockDim.x) cp_async16(smem_u32(dst + i * 8), R + i * 8, true);
        cp_commit();
        cp_wait<0>();
        __syncthreads();
      }
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        uint32_t ga[4];
        ldsm_x4(ga, smem_u32(Gw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
        uint32_t hi[4], lo[4];
        if constexpr (!std::is_same<T, __nv_bfloat16>::value) {
#pragma unroll
          for (int i = 0; i < 4; ++i) h2_split_bf2(ga[i], hi[i], lo[i]);
        }
#pragma unroll
        for (int np = 0; np < ND / 2; ++np) {
          uint32_t rf[4];
          ldsm_x4(rf, smem_u32(Rs + (np * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 + ((lane >> 3) & 1) * 8));
          if constexpr (std::is_same<T, __nv_bfloat16>::value) {
            mma16816<__nv_bfloat16>(r[2 * np], ga, rf[0], rf[1]);
            mma16816<__nv_bfloat16>(r[2 * np + 1], ga, rf[2], rf[3]);
          } else {
            mma16816<__nv_bfloat16>(r[2 * np], hi, rf[0], rf[1]);
            mma16816<__nv_bfloat16>(r[2 * np], lo, rf[0], rf[1]);
            mma16816<__nv_bfloat16>(r[2 * np + 1], hi, rf[2], rf[3]);
            mma16816<__nv_bfloat16>(r[2 * np + 1], lo, rf[2], rf[3]);
          }
        }
      }
      }  // part
      // dy . N (inter part) = fq . (R_c dy); then scale, subtract z D and add
#pragma unroll
      for (int nt = 0; nt < ND; ++nt) {
        const int col = nt * 8 + 2 * t;
        const float2 qa2 = unpack2<T>(*reinterpret_cast<const uint32_t*>(FQw + g * LDS + col));
        const float2 qb2 = unpack2<T>(*reinterpret_cast<const uint32_t*>(FQw + (g + 8) * LDS + col));
        gN_a += qa2.x * r[nt][0] + qa2.y * r[nt][1];
        gN_b += qb2.x * r[nt][2] + qb2.y * r[nt][3];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float2 zz = unpack2<__nv_bfloat16>(*reinterpret_cast<const uint32_t*>(Rs + (col + e) * LDS + D));
          const float z = zz.x + zz.y;
          f[nt][e] += wa_a * (r[nt][e] - Da * z);
          f[nt][2 + e] += wa_b * (r[nt][2 + e] - Db * z);
        }
      }
    }
    if (so) {  // staged through this warp's own FQ rows (read for the last time above)
      warp_store_tile<T, D>(dfq, row0 + warp * 16, T_, B0 + warp * 16 * LDS, f, 1.f, lane);
    } else {
#pragma unroll
      for (int nt = 0; nt < ND; ++nt) {
        const int col = nt * 8 + 2 * t;
        if (va) *reinterpret_cast<uint32_t*>(dfq + (int64_t)na * D + col) = pack2<T>(f[nt][0], f[nt][1]);
        if (vb) *reinterpret_cast<uint32_t*>(dfq + (int64_t)nb * D + col) = pack2<T>(f[nt][2], f[nt][3]);
      }
    }
  }
  gN_a = quad_sum(gN_a);
  gN_b = quad_sum(gN_b);

  // ---- 6. per-row record for the key side, dgamma
  if (t == 0) {
    if (va) rowinfo[rb + na] = make_float4(mx_a, dc_a, Da, __int_as_float(arg_a));
    if (vb) rowinfo[rb + nb] = make_float4(mx_b, dc_b, Db, __int_as_float(arg_b));
  }
  if ((p.mode == kModeHybrid || p.mode == kModeOverlap) && win) {
    const float kp = p.keep ? p.keep[b * p.H + h] : 1.f;
    const float mult = kp + (p.affine ? gw / gl : 0.f);
    float contrib = 0.f;
    if (t == 0) {
      if (va && den_a > 0.f) contrib += (p.den_la[rb + na] * rU_a - gl * rA_a * gN_a) / (den_a * den_a) * mult;
      if (vb && den_b > 0.f) contrib += (p.den_la[rb + nb] * rU_b - gl * rA_b * gN_b) / (den_b * den_b) * mult;
    }
    contrib = warp_sum(contrib);
    if (lane == 0 && contrib != 0.f) atomicAdd(dgamma + h, contrib);
  }
}

// ------------------------------------------------------------------------------------------
// Reverse-walk inputs per row n of a [B*H][Tp] layout (Tp = 64 * chunks; zero for n >= T):
// wa_n = lambda / den_n and the z column of the reverse state's mma, 16-bit [hi, lo, 0 x 6] of
// wa_n D_n with D_n = dy_n . y_n (16-bit y, as the row kernel). grid (Tp / 32, B*H), 256 threads,
// 8 per row. Lets the reverse walk run before the row kernel and keeps its steps free of row math.
// Also D_n itself (Dbuf, same layout), which the row kernel then reads instead of y.
template <class T, int D>
__global__ void __launch_bounds__(256) fast_bwd_prep_kernel(KP p, int Tp, float* __restrict__ wab, T* __restrict__ zcb,
                                                            float* __restrict__ Dbuf) {
  const int bh = blockIdx.y, n = blockIdx.x * 32 + (threadIdx.x >> 3), l8 = threadIdx.x & 7;
  const float gl = coef_la(p, bh % p.H);
  const int64_t rb = (int64_t)bh * p.T;
  float acc = 0.f, den = 0.f;
  if (n < p.T) {
    const T* yr = (const T*)p.y + (rb + n) * D;
    const T* gr = (const T*)p.dy + (rb + n) * D;
#pragma unroll
    for (int e = l8 * 8; e < D; e += 64) {
      const uint4 ya = *reinterpret_cast<const uint4*>(yr + e), ga = *reinterpret_cast<const uint4*>(gr + e);
      const uint32_t* yw = reinterpret_cast<const uint32_t*>(&ya);
      const uint32_t* gw = reinterpret_cast<const uint32_t*>(&ga);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float2 yf = unpack2<T>(yw[q]), gf = unpack2<T>(gw[q]);
        acc += yf.x * gf.x + yf.y * gf.y;
      }
    }
    den = p.den_swa[rb + n] + p.den_la[rb + n];
  }
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  acc += __shfl_xor_sync(0xffffffffu, acc, 4);
  if (l8 == 0) {
    const float wa = den > 0.f ? gl / den : 0.f;
    const float zv = wa * acc;
    const float z1 = unpack2<T>(pack2<T>(zv, 0.f)).x;
    const int64_t o = (int64_t)bh * Tp + n;
    wab[o] = wa;
    Dbuf[o] = acc;
    *reinterpret_cast<uint4*>(zcb + o * 8) = make_uint4(pack2<T>(z1, zv - z1), 0u, 0u, 0u);
  }
}

// ------------------------------------------------------------------------------------------
// Both inter-chunk LA state walks in one launch; blockIdx.z = 0: reverse walk, 1: forward walk.
// List index i in [0, M), M = nch - 1; segment s walks i in [sG, min(M, (s+1)G)).
//   forward: chunk m = i; before adding it the state is R_{m+1} = sum over keys of chunks <= m-1 of
//     fk v^T, z = sum fk (z column of ones), stored bf16 with z hi/lo in columns D, D+1 (the
//     forward's format, read by the row kernel);
//   reverse: chunk m = nch-1-i; before adding it the state is Rr_{m-1} = sum over rows of chunks
//     >= m+1 of fq (wa dy)^T, rz = sum fq wa D (fp32, rzb), read by the key kernel.
// Both store the state for i >= 1 and skip the last add (nobody reads its result). D/16 warps; warp
// w owns state rows f in [16w, 16w + 16) in fp32 registers. Reverse: the A fragments (fq) are scaled
// by wa_n in registers; the z column (from fast_bwd_prep_kernel) holds wa_n D_n as exact 16-bit
// hi + lo against the unscaled fq, so rz keeps ~fp32 accuracy.
// NS stages keep NS - 1 chunks of loads in flight. BULK: bf16 states are written into shared memory
// and leave as one bulk copy each (sm_90; see kBulk).
// SUM: the segment's sum (fp32, [f*D + col] then z[f]) into part[z][bh][s] (nseg: entries per
// (z, bh)); the sums need no order, so they run over sub-segments: G chunks each, pm = 1;
// !SUM: start from part[z][bh][s * pm] (exclusive prefix over the sub-segments; zero for s = 0), or
// with `direct`, from the sum of the raw sub-segment sums part[z][bh][0 .. s * pm) (no scan pass:
// few segments; H100, B=1 T=16384: the scan was 24 us). f16 inputs: the
// states also go as bf16 residuals (rec_lo / rrec_lo, see state_parts).
template <class T, int D>
constexpr size_t walk_smem(int ns, bool bulk) {
  // stages, then (bf16 walks that store states through bulk copies) the staging copy of one state
  return (size_t)ns * (sizeof(T) * (2 * kC * (D + 8) + kC * 8) + sizeof(float) * kC) +
         (bulk && state_parts<T>() == 1 ? sizeof(__nv_bfloat16) * D * (D + 8) : 0);
}
template <class T, int D, bool SUM, int NS, bool BULK>
__global__ void __launch_bounds__(2 * D, 2) fast_bwd_walk_kernel(KP p, int M, int G, int nseg, int pm, int direct, int Tp, float* part,
                                                                const float* __restrict__ wab, const T* __restrict__ zcb,
                                                                __nv_bfloat16* rec, __nv_bfloat16* rec_lo,
                                                                __nv_bfloat16* rrec, __nv_bfloat16* rrec_lo,
                                                                float* rzb) {
  constexpr int LDS = D + 8, ND = D / 8;
  extern __shared__ __align__(16) unsigned char smraw[];
  T* As = reinterpret_cast<T*>(smraw);                     // NS stages x kC x LDS: fq (rev) / fk (fwd)
  T* Bs = As + NS * kC * LDS;                              // NS stages: dy (rev) / v (fwd)
  T* Zs = Bs + NS * kC * LDS;                              // NS stages x kC x 8: z column
  float* Ws = reinterpret_cast<float*>(Zs + NS * kC * 8);  // NS stages x kC: wa (rev)
  // bf16 states leave through shared memory as one 35 KB bulk copy each (sm_90): stored from the C
  // fragments (4 bytes per lane, 8 rows per instruction) they made the walks store-bound (H200,
  // B=4 T=2048: both walks 0.40 ms with fragment stores, 0.15 ms with bulk copies)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kBulk = BULK && !SUM && state_parts<T>() == 1;
#else
  constexpr bool kBulk = false;
#endif
  __nv_bfloat16* Ss = reinterpret_cast<__nv_bfloat16*>(Ws + NS * kC);  // D x LDS (kBulk)
  const bool rev = blockIdx.z == 0;
  const int s = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int T_ = p.T;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int nch = (T_ + kC - 1) / kC;
  const int i0 = s * G, i1 = min(M, i0 + G);
  const int64_t rb = (int64_t)bh * T_;
  const T* asrc = rev ? (const T*)p.fq + rb * D : (const T*)p.fk + rb * D;
  const T* bsrc = rev ? (const T*)p.dy + rb * D : (const T*)p.v + ((int64_t)b * p.Hkv + hk) * T_ * D;
  const int64_t per = (int64_t)D * D + D;
  const int f0 = warp * 16 + g;
  float* mypart = part + ((int64_t)(blockIdx.z * gridDim.y + bh) * nseg + (int64_t)s * pm) * per;

  if (!rev)  // forward: z column of ones (the reverse one is loaded with each chunk)
    for (int idx = tid; idx < NS * kC * 8; idx += blockDim.x) Zs[idx] = (idx & 7) == 0 ? (T)1.f : (T)0.f;
  float u[ND + 1][4];
#pragma unroll
  for (int i = 0; i <= ND; ++i) u[i][0] = u[i][1] = u[i][2] = u[i][3] = 0.f;
  if (!SUM && s > 0) {
    const int e0 = direct ? -s * pm : 0;  // entries [e0, 0) relative to mypart: the raw sums before s
#pragma unroll 1
    for (int e = e0; e < (direct ? 0 : 1); ++e) {
      const float* src = mypart + (int64_t)e * per;
#pragma unroll
      for (int nt = 0; nt < ND; ++nt) {
        const int col = nt * 8 + 2 * t;
        u[nt][0] += src[(int64_t)f0 * D + col];
        u[nt][1] += src[(int64_t)f0 * D + col + 1];
        u[nt][2] += src[(int64_t)(f0 + 8) * D + col];
        u[nt][3] += src[(int64_t)(f0 + 8) * D + col + 1];
      }
      if (t == 0) {
        u[ND][0] += src[(int64_t)D * D + f0];
        u[ND][2] += src[(int64_t)D * D + f0 + 8];
      }
    }
  }
  auto chunk = [&](int i) { return rev ? nch - 1 - i : i; };
  auto load = [&](int i, int stg) {
    const int r0 = chunk(i) * kC;
    load_rows<T, D>(As + stg * kC * LDS, asrc, r0, kC, T_);
    load_rows<T, D>(Bs + stg * kC * LDS, bsrc, r0, kC, T_);
    if (rev) {
      const int64_t o = (int64_t)bh * Tp + r0;  // rows < Tp: always in the buffer
      for (int x = tid; x < kC + kC / 4; x += blockDim.x) {
        if (x < kC) cp_async16(smem_u32(Zs + (stg * kC + x) * 8), zcb + (o + x) * 8, true);
        else cp_async16(smem_u32(Ws + stg * kC + (x - kC) * 4), wab + o + (x - kC) * 4, true);
      }
    }
  };
#pragma unroll
  for (int k = 0; k < NS - 1; ++k) {
    if (i0 + k < i1) load(i0 + k, k);
    cp_commit();
  }
  for (int i = i0; i < i1; ++i) {
    const int stg = (i - i0) % NS, m = chunk(i);
    cp_wait<NS - 2>();
    if constexpr (kBulk)
      if (tid == 0) bulk_wait_read0();  // the previous state's copy has left Ss
    __syncthreads();  // chunk i has landed; every warp is done with the stage of chunk i-1
    if (i + NS - 1 < i1) load(i + NS - 1, (i - i0 + NS - 1) % NS);
    cp_commit();
    if (!SUM) {
      if (i >= 1) {
        const int widx = rev ? m - 1 : m + 1;
        __nv_bfloat16* R = (rev ? rrec : rec) + ((int64_t)bh * nch + widx) * D * LDS;
        __nv_bfloat16* Rw = kBulk ? Ss : R;  // where this thread writes the state
#pragma unroll
        for (int nt = 0; nt < ND; ++nt) {
          const int col = nt * 8 + 2 * t;
          *reinterpret_cast<uint32_t*>(Rw + f0 * LDS + col) = pack2<__nv_bfloat16>(u[nt][0], u[nt][1]);
          *reinterpret_cast<uint32_t*>(Rw + (f0 + 8) * LDS + col) = pack2<__nv_bfloat16>(u[nt][2], u[nt][3]);
        }
        auto res = [](float x) { return x - __bfloat162float(__float2bfloat16_rn(x)); };
        __nv_bfloat16* L = nullptr;
        if constexpr (state_parts<T>() == 2) {
          L = (rev ? rrec_lo : rec_lo) + ((int64_t)bh * nch + widx) * D * LDS;
#pragma unroll
          for (int nt = 0; nt < ND; ++nt) {
            const int col = nt * 8 + 2 * t;
            *reinterpret_cast<uint32_t*>(L + f0 * LDS + col) = pack2<__nv_bfloat16>(res(u[nt][0]), res(u[nt][1]));
            *reinterpret_cast<uint32_t*>(L + (f0 + 8) * LDS + col) = pack2<__nv_bfloat16>(res(u[nt][2]), res(u[nt][3]));
          }
        }
        const float za = u[ND][0] + u[ND][1], zb = u[ND][2] + u[ND][3];  // zero for t > 0
        if (rev) {
          if (t == 0) {
            rzb[((int64_t)bh * nch + widx) * D + f0] = za;
            rzb[((int64_t)bh * nch + widx) * D + f0 + 8] = zb;
          }
          if constexpr (kBulk) {  // columns D.. of the copy: zeros (unread)
            *reinterpret_cast<uint32_t*>(Ss + f0 * LDS + D + 2 * t) = 0u;
            *reinterpret_cast<uint32_t*>(Ss + (f0 + 8) * LDS + D + 2 * t) = 0u;
          }
        } else {
          // z: hi in column D, lo in D + 1 (lanes t > 0 write zeros into D+2..D+7)
          const float ha_ = __bfloat162float(__float2bfloat16_rn(za)), hb_ = __bfloat162float(__float2bfloat16_rn(zb));
          const uint32_t wa_ = pack2<__nv_bfloat16>(ha_, za - ha_), wb_ = pack2<__nv_bfloat16>(hb_, zb - hb_);
          *reinterpret_cast<uint32_t*>(Rw + f0 * LDS + D + 2 * t) = wa_;
          *reinterpret_cast<uint32_t*>(Rw + (f0 + 8) * LDS + D + 2 * t) = wb_;
          if constexpr (state_parts<T>() == 2) {
            *reinterpret_cast<uint32_t*>(L + f0 * LDS + D + 2 * t) = wa_;
            *reinterpret_cast<uint32_t*>(L + (f0 + 8) * LDS + D + 2 * t) = wb_;
          }
        }
        if constexpr (kBulk) {
          fence_async_smem();
          __syncthreads();  // Ss complete
          if (tid == 0) bulk_s2g(R, smem_u32(Ss), (uint32_t)(sizeof(__nv_bfloat16) * D * LDS));
        }
      }
      if (i + 1 >= M) continue;  // the last state anyone reads is written
    }
    const T* Ast = As + stg * kC * LDS;
    const T* Bst = Bs + stg * kC * LDS;
    const T* Zst = Zs + stg * kC * 8;
    const float* Wst = Ws + stg * kC;
#pragma unroll
    for (int kk = 0; kk < kC / 16; ++kk) {
      uint32_t a[4], as[4];
      ldsm_x4_t(a, smem_u32(Ast + (kk * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + warp * 16 + ((lane >> 3) & 1) * 8));
      // fragment k index (chunk row): a[0], a[1] rows 2t, 2t+1; a[2], a[3] rows 2t+8, 2t+9
      if (rev) {
        const float2 w0 = *reinterpret_cast<const float2*>(Wst + kk * 16 + 2 * t);
        const float2 w1 = *reinterpret_cast<const float2*>(Wst + kk * 16 + 2 * t + 8);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const float2 w = r < 2 ? w0 : w1;
          const float2 x = unpack2<T>(a[r]);
          as[r] = pack2<T>(x.x * w.x, x.y * w.y);
        }
      } else {
#pragma unroll
        for (int r = 0; r < 4; ++r) as[r] = a[r];
      }
      const T* brow = Bst + (kk * 16 + (lane & 15)) * LDS;
#pragma unroll
      for (int np = 0; np < ND / 2; ++np) {
        uint32_t bf[4];
        ldsm_x4_t(bf, smem_u32(brow + np * 16 + (lane >> 4) * 8));
        mma16816<T>(u[2 * np], as, bf[0], bf[1]);
        mma16816<T>(u[2 * np + 1], as, bf[2], bf[3]);
      }
      uint32_t bz[2];
      ldsm_x2_t(bz, smem_u32(Zst + (kk * 16 + (lane & 15)) * 8));
      mma16816<T>(u[ND], a, bz[0], bz[1]);
    }
  }
  cp_wait<0>();
  if constexpr (kBulk)
    if (tid == 0) bulk_wait0();  // Ss is read and the states are written before the CTA exits
  if (SUM) {
#pragma unroll
    for (int nt = 0; nt < ND; ++nt) {
      const int col = nt * 8 + 2 * t;
      mypart[(int64_t)f0 * D + col] = u[nt][0];
      mypart[(int64_t)f0 * D + col + 1] = u[nt][1];
      mypart[(int64_t)(f0 + 8) * D + col] = u[nt][2];
      mypart[(int64_t)(f0 + 8) * D + col + 1] = u[nt][3];
    }
    if (t == 0) {
      mypart[(int64_t)D * D + f0] = u[ND][0] + u[ND][1];
      mypart[(int64_t)D * D + f0 + 8] = u[ND][2] + u[ND][3];
    }
  }
}

// ------------------------------------------------------------------------------------------
// Key kernel. grid (nch, B*H), 128 threads; warp w owns keys 64c + 16w + [0, 16); rows are those of
// chunks c (half 0) and c+1 (half 1), in tiles of 16. Shared memory: KS, VS, FKS (64 keys), then a
// row stage QS, GS, FQS (64 rows of one half; QS..GS later hold Rr_c), then per-row scalars.
// ACC: GQA, dk and dv are added into fp32 buffers (atomics over the heads of a group).
template <class T, int D, bool ACC>
__global__ void __launch_bounds__(128, 2) fast_bwd_key_kernel(KP p, const __nv_bfloat16* __restrict__ rrec,
                                                              const __nv_bfloat16* __restrict__ rrec_lo,
                                                              const float* __restrict__ rzb,
                                                              const float4* __restrict__ rowinfo, T* __restrict__ dkp,
                                                              T* __restrict__ dvp, T* __restrict__ dfkp,
                                                              float* __restrict__ dkacc, float* __restrict__ dvacc, int so) {
  constexpr int LDS = D + 8, ND = D / 8, KS = D / 16;
  extern __shared__ __align__(16) unsigned char smraw[];
  T* KSm = reinterpret_cast<T*>(smraw);
  T* VSm = KSm + kC * LDS;
  T* FKS = VSm + kC * LDS;
  T* QS = FKS + kC * LDS;
  T* GS = QS + kC * LDS;
  T* FQS = GS + kC * LDS;
  float* cm = reinterpret_cast<float*>(FQS + kC * LDS);  // 2kC each
  float* wbv = cm + 2 * kC;
  float* wav = wbv + 2 * kC;
  float* Dv = wav + 2 * kC;
  float* dcv = Dv + 2 * kC;
  int* argv = reinterpret_cast<int*>(dcv + 2 * kC);
  int* wlo = argv + 2 * kC;
  int* lae = wlo + 2 * kC;
  const int c = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int T_ = p.T;
  const int key0 = c * kC;
  const int nch = (T_ + kC - 1) / kC;
  const T* q = (const T*)p.q + (int64_t)bh * T_ * D;
  const T* k = (const T*)p.k + ((int64_t)b * p.Hkv + hk) * T_ * D;
  const T* v = (const T*)p.v + ((int64_t)b * p.Hkv + hk) * T_ * D;
  const T* fq = (const T*)p.fq + (int64_t)bh * T_ * D;
  const T* fk = (const T*)p.fk + (int64_t)bh * T_ * D;
  const T* dy = (const T*)p.dy + (int64_t)bh * T_ * D;
  const int64_t kvb = ((int64_t)b * p.Hkv + hk) * T_;
  const int64_t rb = (int64_t)bh * T_;

  const float gw = coef_win(p, b, h), gl = coef_la(p, h);
  const bool win = mode_has_window(p.mode) && gw > 0.f;
  const bool la = mode_has_la(p.mode) && gl != 0.f;
  const bool h1 = c + 1 < nch;
  bool sh[2], lh[2], rh[2];
  sh[0] = win;
  sh[1] = win && h1 && win_lo(p, key0 + kC) < key0 + kC;
  lh[0] = la && la_end(p, min(T_, key0 + kC) - 1) > key0;
  lh[1] = la && h1 && la_end(p, min(T_, key0 + 2 * kC) - 1) > key0;
  rh[0] = sh[0] || lh[0];
  rh[1] = sh[1] || lh[1];
  const bool inter = la && c + 2 <= nch - 1;
  const bool sany = sh[0] || sh[1], lany = lh[0] || lh[1];

  if (sany) load_rows<T, D>(KSm, k, key0, kC, T_);
  if (rh[0] || rh[1] || inter) load_rows<T, D>(VSm, v, key0, kC, T_);
  if (lany || inter) load_rows<T, D>(FKS, fk, key0, kC, T_);
  auto load_half = [&](int hh) {
    const int r0 = key0 + hh * kC;
    if (sh[hh]) load_rows<T, D>(QS, q, r0, kC, T_);
    load_rows<T, D>(GS, dy, r0, kC, T_);
    if (lh[hh]) load_rows<T, D>(FQS, fq, r0, kC, T_);
  };
  int loaded = rh[0] ? 0 : (rh[1] ? 1 : -1);
  if (loaded >= 0) load_half(loaded);
  cp_commit();
  {
    const int i = tid;  // 128 threads, 2kC rows
    const int n = key0 + i;
    if (n < T_) {
      const float4 ri = rowinfo[rb + n];
      const float den = p.den_swa[rb + n] + p.den_la[rb + n];
      cm[i] = ri.x;
      dcv[i] = ri.y;
      Dv[i] = ri.z;
      argv[i] = win ? __float_as_int(ri.w) : -1;
      wbv[i] = win && den > 0.f ? gw / den : 0.f;
      wav[i] = la && den > 0.f ? gl / den : 0.f;
      wlo[i] = win ? win_lo(p, n) : INT_MAX;
      lae[i] = la ? la_end(p, n) : INT_MIN;
    } else {
      cm[i] = 0.f; dcv[i] = 0.f; Dv[i] = 0.f; argv[i] = -1; wbv[i] = 0.f; wav[i] = 0.f;
      wlo[i] = INT_MAX; lae[i] = INT_MIN;
    }
  }

  const int ja = key0 + warp * 16 + g, jb = ja + 8;  // this lane's keys (rows of the C fragments)
  const T* Kw = KSm + warp * 16 * LDS;
  const T* Vw = VSm + warp * 16 * LDS;
  const T* FKw = FKS + warp * 16 * LDS;
  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int i = 0; i < ND; ++i) dk[i][0] = dk[i][1] = dk[i][2] = dk[i][3] = dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.f;
  uint32_t dAr[8][4];
#pragma unroll
  for (int i = 0; i < 8; ++i) dAr[i][0] = dAr[i][1] = dAr[i][2] = dAr[i][3] = 0u;

  // ---- phase 1: dk, dv over the rows of both halves; dA^T kept in registers
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    if (!rh[hh]) continue;
    if (hh != loaded) {
      __syncthreads();  // every warp is done with the other half's rows
      load_half(hh);
      cp_commit();
      loaded = hh;
    }
    cp_wait<0>();
    __syncthreads();
#pragma unroll
    for (int rt = 0; rt < 4; ++rt) {
      const int rl0 = hh * kC + rt * 16;  // local row index (0..127) of the tile's first row
      // skip what no row of this 16 x 16 tile reaches (exact, from the per-row scalars): S and dk
      // where no key is in a row's window or is its arg-max, A where none is an LA key, the whole
      // tile where neither (rows of chunk c below the warp's keys: 6 of the 16 warp tiles of half 0)
      bool sact = sh[hh], lact = lh[hh];
      {
        const int kmin = key0 + warp * 16, kmax = kmin + 15;
        const int rl = rl0 + (lane & 15), n = key0 + rl, am = argv[rl];
        const bool wy = (wlo[rl] <= kmax && n >= kmin) || (am >= kmin && am <= kmax);
        sact = sact && __any_sync(0xffffffffu, wy);
        lact = lact && __any_sync(0xffffffffu, lae[rl] > kmin);
        if (!sact && !lact) continue;
      }
      const T* Qt = QS + rt * 16 * LDS;
      const T* Gt = GS + rt * 16 * LDS;
      const T* Ft = FQS + rt * 16 * LDS;
      float s[2][4] = {}, dp[2][4] = {}, a[2][4] = {};
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const int bo = ((lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 + ((lane >> 3) & 1) * 8;
        const int ao = (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8;
        uint32_t af[4], bfr[4];
        if (sact) {
          ldsm_x4(af, smem_u32(Kw + ao));
          ldsm_x4(bfr, smem_u32(Qt + bo));
          mma16816<T>(s[0], af, bfr[0], bfr[1]);
          mma16816<T>(s[1], af, bfr[2], bfr[3]);
        }
        ldsm_x4(af, smem_u32(Vw + ao));
        ldsm_x4(bfr, smem_u32(Gt + bo));
        mma16816<T>(dp[0], af, bfr[0], bfr[1]);
        mma16816<T>(dp[1], af, bfr[2], bfr[3]);
        if (lact) {
          ldsm_x4(af, smem_u32(FKw + ao));
          ldsm_x4(bfr, smem_u32(Ft + bo));
          mma16816<T>(a[0], af, bfr[0], bfr[1]);
          mma16816<T>(a[1], af, bfr[2], bfr[3]);
        }
      }
      // C element [nt][hr*2 + e]: key (hr ? jb : ja), local row rl0 + nt*8 + 2t + e
      float wv[2][4], ds[2][4];
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int rl = rl0 + nt * 8 + 2 * t + e, n = key0 + rl, j = hr ? jb : ja, ci = hr * 2 + e;
            const float dpv = dp[nt][ci] - Dv[rl];
            float P = 0.f, dsv = 0.f, lw = 0.f, da = 0.f;
            if (sact) {
              if (j >= wlo[rl] && j <= n) {
                P = wbv[rl] * ex2_approx((s[nt][ci] * p.scale - cm[rl]) * kLog2e);  // (as the row kernel: 1 at its max)
                dsv = P * dpv;
              }
              if (argv[rl] == j) dsv += dcv[rl];
            }
            if (lact && j < lae[rl]) {
              lw = wav[rl] * a[nt][ci];
              da = wav[rl] * dpv;
            }
            wv[nt][ci] = P + lw;
            ds[nt][ci] = dsv;
            a[nt][ci] = da;
          }
      uint32_t wf[4], sf[4];
      wf[0] = pack2<T>(wv[0][0], wv[0][1]);
      wf[1] = pack2<T>(wv[0][2], wv[0][3]);
      wf[2] = pack2<T>(wv[1][0], wv[1][1]);
      wf[3] = pack2<T>(wv[1][2], wv[1][3]);
      sf[0] = pack2<T>(ds[0][0], ds[0][1]);
      sf[1] = pack2<T>(ds[0][2], ds[0][3]);
      sf[2] = pack2<T>(ds[1][0], ds[1][1]);
      sf[3] = pack2<T>(ds[1][2], ds[1][3]);
      dAr[hh * 4 + rt][0] = pack2<T>(a[0][0], a[0][1]);
      dAr[hh * 4 + rt][1] = pack2<T>(a[0][2], a[0][3]);
      dAr[hh * 4 + rt][2] = pack2<T>(a[1][0], a[1][1]);
      dAr[hh * 4 + rt][3] = pack2<T>(a[1][2], a[1][3]);
      const T* grow = Gt + (lane & 15) * LDS + (lane >> 4) * 8;
      const T* qrow = Qt + (lane & 15) * LDS + (lane >> 4) * 8;
#pragma unroll
      for (int np = 0; np < ND / 2; ++np) {
        uint32_t bfr[4];
        ldsm_x4_t(bfr, smem_u32(grow + np * 16));
        mma16816<T>(dv[2 * np], wf, bfr[0], bfr[1]);
        mma16816<T>(dv[2 * np + 1], wf, bfr[2], bfr[3]);
        if (sact) {
          ldsm_x4_t(bfr, smem_u32(qrow + np * 16));
          mma16816<T>(dk[2 * np], sf, bfr[0], bfr[1]);
          mma16816<T>(dk[2 * np + 1], sf, bfr[2], bfr[3]);
        }
      }
    }
  }

  // ---- inter-chunk LA: Rr_c into QS..GS; dv += FK Rr_c
  const __nv_bfloat16* Rs = reinterpret_cast<const __nv_bfloat16*>(QS);
  auto load_rr = [&](int part) {
    __syncthreads();  // every warp is done with QS, GS (rows, or the other part)
    const __nv_bfloat16* R = (part ? rrec_lo : rrec) + ((int64_t)bh * nch + c) * D * LDS;
    __nv_bfloat16* dst = reinterpret_cast<__nv_bfloat16*>(QS);
    for (int i = tid; i < D * LDS / 8; i += blockDim.x) cp_async16(smem_u32(dst + i * 8), R + i * 8, true);
    cp_commit();
    cp_wait<0>();
    __syncthreads();
  };
  if (inter) {
#pragma unroll 1
    for (int part = 0; part < state_parts<T>(); ++part) {
    load_rr(part);
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t af[4];
      ldsm_x4(af, smem_u32(FKw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
      const __nv_bfloat16* rrow = Rs + (ks * 16 + (lane & 15)) * LDS + (lane >> 4) * 8;
#pragma unroll
      for (int np = 0; np < ND / 2; ++np) {
        uint32_t bfr[4];
        ldsm_x4_t(bfr, smem_u32(rrow + np * 16));
        mma_x_bf16<T>(dv[2 * np], af, bfr[0], bfr[1]);
        mma_x_bf16<T>(dv[2 * np + 1], af, bfr[2], bfr[3]);
      }
    }
    }  // part
  }
  // write dk, dv (staged: through this warp's own K and FK rows, which it has read for the last time)
  const bool oka = ja < T_, okb = jb < T_;
  if (!ACC && so) {
    warp_store_tile<T, D>(dkp + kvb * D, key0 + warp * 16, T_, KSm + warp * 16 * LDS, dk, p.scale, lane);
    warp_store_tile<T, D>(dvp + kvb * D, key0 + warp * 16, T_, FKS + warp * 16 * LDS, dv, 1.f, lane);
  } else {
#pragma unroll
    for (int nt = 0; nt < ND; ++nt) {
      const int col = nt * 8 + 2 * t;
      if constexpr (ACC) {
        if (oka) {
          atomicAdd(dkacc + (kvb + ja) * D + col, dk[nt][0] * p.scale);
          atomicAdd(dkacc + (kvb + ja) * D + col + 1, dk[nt][1] * p.scale);
          atomicAdd(dvacc + (kvb + ja) * D + col, dv[nt][0]);
          atomicAdd(dvacc + (kvb + ja) * D + col + 1, dv[nt][1]);
        }
        if (okb) {
          atomicAdd(dkacc + (kvb + jb) * D + col, dk[nt][2] * p.scale);
          atomicAdd(dkacc + (kvb + jb) * D + col + 1, dk[nt][3] * p.scale);
          atomicAdd(dvacc + (kvb + jb) * D + col, dv[nt][2]);
          atomicAdd(dvacc + (kvb + jb) * D + col + 1, dv[nt][3]);
        }
      } else {
        if (oka) {
          *reinterpret_cast<uint32_t*>(dkp + (kvb + ja) * D + col) = pack2<T>(dk[nt][0] * p.scale, dk[nt][1] * p.scale);
          *reinterpret_cast<uint32_t*>(dvp + (kvb + ja) * D + col) = pack2<T>(dv[nt][0], dv[nt][1]);
        }
        if (okb) {
          *reinterpret_cast<uint32_t*>(dkp + (kvb + jb) * D + col) = pack2<T>(dk[nt][2] * p.scale, dk[nt][3] * p.scale);
          *reinterpret_cast<uint32_t*>(dvp + (kvb + jb) * D + col) = pack2<T>(dv[nt][2], dv[nt][3]);
        }
      }
    }
  }

  // ---- phase 2: dfk = V Rr_c^T - rz_c + dA^T FQ (reusing dv's registers)
#pragma unroll
  for (int i = 0; i < ND; ++i) dv[i][0] = dv[i][1] = dv[i][2] = dv[i][3] = 0.f;
  if (inter) {
#pragma unroll 1
    for (int part = state_parts<T>() - 1; part >= 0; --part) {  // the last part loaded is resident
    if (part != state_parts<T>() - 1) load_rr(part);
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      uint32_t af[4];
      ldsm_x4(af, smem_u32(Vw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
#pragma unroll
      for (int np = 0; np < ND / 2; ++np) {
        uint32_t bfr[4];
        ldsm_x4(bfr, smem_u32(Rs + (np * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 + ((lane >> 3) & 1) * 8));
        mma_x_bf16<T>(dv[2 * np], af, bfr[0], bfr[1]);
        mma_x_bf16<T>(dv[2 * np + 1], af, bfr[2], bfr[3]);
      }
    }
    }  // part
    const float* rz = rzb + ((int64_t)bh * nch + c) * D;
#pragma unroll
    for (int nt = 0; nt < ND; ++nt) {
      const int col = nt * 8 + 2 * t;
      const float z0 = rz[col], z1 = rz[col + 1];
      dv[nt][0] -= z0;
      dv[nt][1] -= z1;
      dv[nt][2] -= z0;
      dv[nt][3] -= z1;
    }
  }
  if (loaded >= 0) {
#pragma unroll
    for (int pass = 0; pass < 2; ++pass) {
      const int hh = pass == 0 ? loaded : 1 - loaded;
      if (!lh[hh]) continue;
      if (pass == 1) {
        __syncthreads();  // every warp is done with FQS
        load_rows<T, D>(FQS, fq, key0 + hh * kC, kC, T_);
        cp_commit();
        cp_wait<0>();
        __syncthreads();
      }
#pragma unroll
      for (int rt = 0; rt < 4; ++rt) {
        uint32_t af[4];  // (selects, so that dAr stays in registers: hh is not a compile-time index)
#pragma unroll
        for (int i = 0; i < 4; ++i) af[i] = hh ? dAr[4 + rt][i] : dAr[rt][i];
        const T* frow = FQS + (rt * 16 + (lane & 15)) * LDS + (lane >> 4) * 8;
#pragma unroll
        for (int np = 0; np < ND / 2; ++np) {
          uint32_t bfr[4];
          ldsm_x4_t(bfr, smem_u32(frow + np * 16));
          mma16816<T>(dv[2 * np], af, bfr[0], bfr[1]);
          mma16816<T>(dv[2 * np + 1], af, bfr[2], bfr[3]);
        }
      }
    }
  }
  T* dfk = dfkp + rb * D;
  if (so) {
    warp_store_tile<T, D>(dfk, key0 + warp * 16, T_, KSm + warp * 16 * LDS, dv, 1.f, lane);
  } else {
#pragma unroll
    for (int nt = 0; nt < ND; ++nt) {
      const int col = nt * 8 + 2 * t;
      if (oka) *reinterpret_cast<uint32_t*>(dfk + (int64_t)ja * D + col) = pack2<T>(dv[nt][0], dv[nt][1]);
      if (okb) *reinterpret_cast<uint32_t*>(dfk + (int64_t)jb * D + col) = pack2<T>(dv[nt][2], dv[nt][3]);
    }
  }
}

template <class T>
__global__ void fast_convert_kernel(const float* __restrict__ src, T* __restrict__ dst, int64_t n2) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n2) {
    const float2 x = reinterpret_cast<const float2*>(src)[i];
    reinterpret_cast<uint32_t*>(dst)[i] = pack2<T>(x.x, x.y);
  }
}

#ifdef HA_FAST_TIMING
}  // namespace fast
extern int g_fast_timing;
int g_bwd_bulk = 1;       // dev builds only: 0 = the walks store states with per-lane stores
int g_bwd_stage_out = 1;  // dev builds only: 0 = row/key kernels store outputs from the fragments
int g_bwd_seg_mult = -1;  // dev builds only: state-walk segments (see walk_split_bwd; 2 = the earlier rule)
int g_bwd_nseg = 0, g_bwd_sub_p = 0;  // dev builds only: force the walk's segments / sum sub-segments
namespace fast {
#endif

// State-walk segmentation: the main walk's segment count nseg (G chunks each) and the sub-segments
// per segment P of the segment-sum pass (G / P chunks each; the sums need no order).
// Default: the main walk fits one wave (2 CTAs per SM, 2 directions: nseg = SMs / (B*H); one walker
// per (b, h) once B*H covers half the SMs; H200, B=1 H=32 T=16384: nseg 9 -> 4, the third, nearly
// empty wave of the main walk and the second wave of the sum pass go), and P minimises the sum
// pass's waves x (steps + a per-wave cost of ~28 steps, from the measured sum-pass times).
// Dev builds: g_bwd_seg_mult > 0 takes the earlier rule (about seg_mult * SMs blocks per direction,
// P = 1), 0 one segment; g_bwd_nseg / g_bwd_sub_p (> 0) force the segment count / P.
constexpr int kDirectSumsBwd = 16;  // raw segment sums per walk up to which it adds its own prefix
struct WalkSplit {
  int nseg, G, P;
};
static WalkSplit walk_split_bwd(int BH, int M) {
#ifdef HA_FAST_TIMING
  const int seg_mult = g_bwd_seg_mult, force_n = g_bwd_nseg, force_p = g_bwd_sub_p;
#else
  constexpr int seg_mult = -1, force_n = 0, force_p = 0;
#endif
  const int sms = sm_count(), slots = 2 * sms;
  auto finish = [&](int want, int P) {
    const int G0 = std::max(2, (M + std::max(1, want) - 1) / std::max(1, want));
    const int Gs = (G0 + P - 1) / P;
    WalkSplit w{0, std::max(2, Gs * P), P};
    w.nseg = (M + w.G - 1) / w.G;
    if (w.nseg <= 1) w.P = 1;
    return w;
  };
  int want;
  if (force_n > 0) want = force_n;
  else if (seg_mult == 0) want = 1;
  else if (seg_mult > 0) want = seg_mult == 2 && 2 * BH >= sms ? 1 : (seg_mult * sms + BH - 1) / BH;
  else want = std::max(1, slots / (2 * BH));
  if (force_p > 0) return finish(want, force_p);
  WalkSplit best = finish(want, 1);
  if (best.nseg <= 1 || seg_mult > 0) return best;
  const int G1 = best.G;
  int64_t best_cost = INT64_MAX;
  for (int P = 1; P <= 16 && P <= G1; ++P) {
    const WalkSplit w = finish(want, P);
    const int64_t ctas = 2LL * BH * (w.nseg - 1) * w.P;
    const int64_t cost = (ctas + slots - 1) / slots * (w.G / w.P + 28);
    if (cost < best_cost) { best_cost = cost; best = w; }
  }
  return best;
}

template <class T, int D>
void run_bwd_fast(const KP& p, DType dt, T* dq, T* dk, T* dv, T* dfq, T* dfk, float* dgamma, cudaStream_t st) {
  constexpr int LDS = D + 8;
  const int BH = p.B * p.H;
  const int nch = (p.T + kC - 1) / kC;
  const int64_t rows = (int64_t)BH * p.T;
  const int64_t nkv = (int64_t)p.B * p.Hkv * p.T;
  cudaEvent_t ev[5] = {};
#ifdef HA_FAST_TIMING
  if (g_fast_timing) for (auto& e : ev) check(cudaEventCreate(&e), "timing event");
#endif
  auto mark = [&](int i) { if (ev[i]) check(cudaEventRecord(ev[i], st), "timing event"); };
#ifdef HA_FAST_TIMING
  const bool bulk = g_bwd_bulk != 0;
  const int so = g_bwd_stage_out != 0;
#else
  constexpr bool bulk = true;
  constexpr int so = 1;
#endif
  mark(0);
  [[maybe_unused]] int dbg_nseg = 1, dbg_p = 1;  // (timing printout)
  check(cudaMemsetAsync(dgamma, 0, sizeof(float) * p.H, st), "memset dgamma");
  float4* rowinfo = nullptr;
  ws_alloc(&rowinfo, sizeof(float4) * (size_t)rows, st);
  // 1. both state walks, one launch (segment sums + one scan over both first where B*H is small)
  __nv_bfloat16 *rec = nullptr, *rec_lo = nullptr, *rrec = nullptr, *rrec_lo = nullptr;
  float *rz = nullptr, *wab = nullptr, *Dbuf = nullptr;
  T* zcb = nullptr;
  const bool inter = mode_has_la(p.mode) && nch >= 3;
  if (inter) {
    const size_t sbytes = sizeof(__nv_bfloat16) * (size_t)BH * nch * D * LDS;
    ws_alloc(&rec, sbytes, st);
    ws_alloc(&rrec, sbytes, st);
    if (state_parts<T>() == 2) {
      ws_alloc(&rec_lo, sbytes, st);
      ws_alloc(&rrec_lo, sbytes, st);
    }
    ws_alloc(&rz, sizeof(float) * (size_t)BH * nch * D, st);
    const int Tp = nch * kC;
    ws_alloc(&wab, sizeof(float) * (size_t)BH * Tp, st);
    ws_alloc(&zcb, sizeof(T) * 8 * (size_t)BH * Tp, st);
    ws_alloc(&Dbuf, sizeof(float) * (size_t)BH * Tp, st);
    fast_bwd_prep_kernel<T, D><<<dim3(Tp / 32, BH), 256, 0, st>>>(p, Tp, wab, zcb, Dbuf);
    check_launch("fast_bwd_prep");
    const int M = nch - 1;
    const WalkSplit ws = walk_split_bwd(BH, M);
    const int nseg = ws.nseg, G = ws.G, P = ws.P;
    dbg_nseg = nseg;
    dbg_p = P;
    const int nsub = (nseg - 1) * P + 1;  // prefix entries per (direction, b*h): the sub-segments' and the total
    const int64_t per = (int64_t)D * D + D;
    float* part = nullptr;
    int direct = 0;  // the walk adds the raw segment sums itself (see fast_bwd_walk_kernel)
    auto walk = [&](auto kern, int nsg, int g, int pm, bool bk) {
      const size_t smem = walk_smem<T, D>(2, bk);
      check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), "fast bwd walk smem");
      kern<<<dim3(nsg, BH, 2), 2 * D, smem, st>>>(p, M, g, nsub, pm, direct, Tp, part, wab, zcb, rec, rec_lo, rrec, rrec_lo, rz);
      check_launch("fast_bwd_walk");
    };
    // (2 stages: 3 measured no faster on an H200, and the state copy needs the shared memory)
    if (nseg > 1) {
      ws_alloc(&part, sizeof(float) * 2 * (size_t)BH * nsub * per, st);
      walk(fast_bwd_walk_kernel<T, D, true, 2, false>, nsub - 1, G / P, 1, false);
      direct = nsub - 1 <= kDirectSumsBwd;
      if (!direct) launch_segment_scan(part, 2 * BH, nsub, per, +1, st);
    }
    mark(1);
    if (bulk) walk(fast_bwd_walk_kernel<T, D, false, 2, true>, nseg, G, P, true);
    else walk(fast_bwd_walk_kernel<T, D, false, 2, false>, nseg, G, P, false);
    if (part) check(cudaFreeAsync(part, st), "fast workspace free");
  } else {
    mark(1);
  }
  mark(2);
  // 2. row kernel
  {
    const size_t smem = sizeof(T) * 6 * kC * LDS;
    check(cudaFuncSetAttribute(fast_bwd_row_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
          "fast bwd row smem");
    fast_bwd_row_kernel<T, D><<<dim3(nch, BH), 128, smem, st>>>(p, rec, rec_lo, Dbuf, rowinfo, dq, dfq, dgamma, so);
    check_launch("fast_bwd_row");
  }
  mark(3);
  // 3. key kernel
  {
    const size_t smem = sizeof(T) * 6 * kC * LDS + sizeof(float) * 8 * 2 * kC;
    if (p.group == 1) {
      check(cudaFuncSetAttribute(fast_bwd_key_kernel<T, D, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
            "fast bwd key smem");
      fast_bwd_key_kernel<T, D, false><<<dim3(nch, BH), 128, smem, st>>>(p, rrec, rrec_lo, rz, rowinfo, dk, dv, dfk, nullptr, nullptr, so);
      check_launch("fast_bwd_key");
    } else {
      float* acc = nullptr;
      ws_alloc(&acc, sizeof(float) * 2 * (size_t)nkv * D, st);
      check(cudaMemsetAsync(acc, 0, sizeof(float) * 2 * (size_t)nkv * D, st), "memset dk/dv acc");
      check(cudaFuncSetAttribute(fast_bwd_key_kernel<T, D, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
            "fast bwd key smem");
      fast_bwd_key_kernel<T, D, true><<<dim3(nch, BH), 128, smem, st>>>(p, rrec, rrec_lo, rz, rowinfo, dk, dv, dfk, acc,
                                                                         acc + (size_t)nkv * D, so);
      check_launch("fast_bwd_key");
      const int64_t n2 = nkv * D / 2;
      fast_convert_kernel<T><<<(unsigned)((n2 + 255) / 256), 256, 0, st>>>(acc, dk, n2);
      check_launch("fast convert dk");
      fast_convert_kernel<T><<<(unsigned)((n2 + 255) / 256), 256, 0, st>>>(acc + (size_t)nkv * D, dv, n2);
      check_launch("fast convert dv");
      check(cudaFreeAsync(acc, st), "fast workspace free");
    }
  }
  mark(4);
#ifdef HA_FAST_TIMING
  if (ev[0]) {
    check(cudaEventSynchronize(ev[4]), "timing event");
    float a[4] = {};
    for (int i = 0; i < 4; ++i) cudaEventElapsedTime(&a[i], ev[i], ev[i + 1]);
    printf("  fast bwd breakdown (bulk %d, stage_out %d, seg_mult %d, nseg %d, P %d): alloc+prep+walk sums+scan %.3f ms, state walks (fwd+rev, one launch) %.3f ms, row kernel %.3f ms, key kernel %.3f ms\n",
           g_bwd_bulk, g_bwd_stage_out, g_bwd_seg_mult, dbg_nseg, dbg_p, a[0], a[1], a[2], a[3]);
    for (auto& e : ev) cudaEventDestroy(e);
  }
#endif
  for (void* x : {(void*)rz, (void*)wab, (void*)zcb, (void*)Dbuf, (void*)rec, (void*)rec_lo, (void*)rrec, (void*)rrec_lo})
    if (x) check(cudaFreeAsync(x, st), "fast workspace free");
  check(cudaFreeAsync(rowinfo, st), "fast workspace free");
}

}  // namespace fast

bool launch_backward_fast(const KP& p, DType dt, void* dq, void* dk, void* dv, void* dfq, void* dfk, float* dgamma,
                          cudaStream_t st) {
  if (!fast_path_applies(p, dt)) return false;
  for (const void* x : {p.dy, (const void*)dq, (const void*)dk, (const void*)dv, (const void*)dfq, (const void*)dfk})
    if (!fast::aligned16(x)) return false;
  if (dt == DType::BF16) {
    using T = __nv_bfloat16;
    if (p.d == 128) fast::run_bwd_fast<T, 128>(p, dt, (T*)dq, (T*)dk, (T*)dv, (T*)dfq, (T*)dfk, dgamma, st);
    else fast::run_bwd_fast<T, 64>(p, dt, (T*)dq, (T*)dk, (T*)dv, (T*)dfq, (T*)dfk, dgamma, st);
  } else {
    using T = __half;
    if (p.d == 128) fast::run_bwd_fast<T, 128>(p, dt, (T*)dq, (T*)dk, (T*)dv, (T*)dfq, (T*)dfk, dgamma, st);
    else fast::run_bwd_fast<T, 64>(p, dt, (T*)dq, (T*)dk, (T*)dv, (T*)dfq, (T*)dfk, dgamma, st);
  }
  return true;
}

}  // namespace cuda_detail
}  // namespace ha
