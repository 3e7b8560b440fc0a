// Fused forward (Hopper-sized shared memory, one CTA per SM) for the modes with an LA branch: the
// state walk runs inside the attention kernel, so R_c never goes to HBM. grid (segments, B*H),
// 256 threads (ha_forward_fast.cu's two-kernel path has the same maths in two steps):
//   warps 0-3 (attention): rows 64c + 16w + [0, 16) of chunk c: window S = Q K^T, masks, row
//     max, P = exp(S - c) (ex2.approx); A = FQ FK^T on the LA keys of chunks c-1|c that the
//     block's state does not hold; O = (coef P + A) V; then O += X, den_la += xden from the state
//     warps; normalise and write y and the statistics.
//   warps 4-7 (state): hold R^T (dv x F, fp32) in registers, warp s owning dv columns
//     [sD/4, (s+1)D/4). The accumulator layout of R^T = V^T FK is the mma B-fragment layout of R,
//     so FQ R is computed straight from the registers (rounded to bf16 as the two-kernel path
//     stores R_c) into X (fp32, chunk rows x dv), and fq . z (fp32, SIMT) into xden.
// Row-block states (FRAME): block mt (16 rows, attention warp mt) reads R_c plus chunk c-1's first
// mt 16-key tiles: the state warps take FQ_mt R, then add tile mt to R (the update they owe anyway,
// R_{c+1} = R_c + FK_{c-1}^T V_{c-1}, in four steps), so each attention warp works only on the 5
// key tiles [mt, mt + 4] its rows can see (176 mma per chunk for every warp; with the LA tiles of
// chunk c-1 left of the rows computed by the attention warps, warp 3 issued 272 and set the pace
// of its SM partition, which it shares with state warp 7: B=4 T=2048, H200, 0.178 -> 0.164 ms).
// This needs every key of those mt tiles to be an LA key of every row of block mt,
// m(64c + 16 mt) >= 64(c-1) + 16 mt, true wherever the 5-tile window frame holds: sliding windows
// w <= 64 (m(n) = n - w + 1), terraced w <= 32 (m(n) >= n - 2w + 1), la-full / overlap (m(n) = n + 1).
// Loads: each input row is loaded once per CTA. V and FK live in 3-slot rings (chunks c-1, c, and
// c+1 in flight); K and FQ share a pool of 4 tiles (K(m) in tile m % 4, FQ(m) in tile (m + 2) % 4)
// because FQ(c) is read by the state warps until their last block: FQ(c+1) goes into K(c-1)'s
// tile as soon as the attention warps are done with S (barrier kBarS), and each attention warp
// reloads its own Q rows right after its S. Only a block's X (kBarX + mt) makes an attention warp
// wait for the state warps. Barriers: 0 __syncthreads (chunk c landed, chunk c-1 done), kBarS
// (attention warps, 128), kBarX + mt (state warps arrive, attention warp mt syncs: 160), kBarZ
// (state warps, 128). Sequence-parallel segments when B*H is below the SM count: CTA s > 0 walks
// chunks [sG+1, (s+1)G+1) from R_{sG+1}: it adds the sub-segment sums of the chunks before it, or
// reads their prefix (run_fused).
#pragma once
#include <climits>
#include <cmath>

#include "ops/hybrid_attention/ha_common.cuh"
#include "ops/hybrid_attention/ha_fast_mma.cuh"

namespace ha {
namespace cuda_detail {
namespace fast {

constexpr int kBarS = 1, kBarX = 2, kBarZ = 6;

template <class T, int D>
constexpr size_t fused_fwd_smem_bytes() {
  // K/FQ pool (4 tiles) + V, FK rings (3 each) + Q (16-bit, row stride D + 8), X (fp32, stride
  // D + 8), xden, the z of the four row blocks
  return sizeof(T) * 11 * kC * (D + 8) + sizeof(float) * ((size_t)kC * (D + 8) + kC + 4 * D);
}

// !FRAME (terraced w = 64, whose window reaches back to the start of chunk c-1): the attention
// warps work on the tiles [0, w + 4] of chunks c-1|c, every block reads R_c, and chunk c-1 is added
// to R after the last block.
template <class T, int D, bool FRAME>
__global__ void __launch_bounds__(256, 1) fused_fwd_kernel(KP p, int G, int nseg, int nent, int kk,
                                                              const float* __restrict__ part) {
  constexpr int LDS = D + 8, TILE = kC * LDS, ND = D / 8, KS = D / 16;
  constexpr int XLD = D + 8;    // fp32 row stride of X: float2 accesses of a half-warp hit 32 banks
  constexpr int I0 = FRAME ? 0 : -3;  // tiles kt = warp + i, i in [I0, 5) (kt >= 0)
  constexpr int NPC = 2 * (5 - I0);   // 8-key accumulator tiles
  constexpr int SMT = D / 64;   // state warp: m-tiles (16 dv columns) of R^T
  constexpr int SNO = D / 32;   // state warp: 8-column n-tiles of FQ R
  extern __shared__ __align__(16) unsigned char smraw[];
  T* Pool = reinterpret_cast<T*>(smraw);
  T* Vs = Pool + 4 * TILE;
  T* FKs = Vs + 3 * TILE;
  T* Qs = FKs + 3 * TILE;
  float* X = reinterpret_cast<float*>(Qs + TILE);
  float* xden = X + kC * XLD;
  float* zb = xden + kC;  // [4][D]: z of row block mt = z_c + fk sums of chunk c-1's tiles < mt
  const int s = blockIdx.x, bh = blockIdx.y;
  const int b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
  const int T_ = p.T;
  const int nch = (T_ + kC - 1) / kC;
  const int lo = s == 0 ? 0 : s * G + 1, hi = s == nseg - 1 ? nch : (s + 1) * G + 1;
  const T* q = (const T*)p.q + (int64_t)bh * T_ * D;
  const T* k = (const T*)p.k + ((int64_t)b * p.Hkv + hk) * T_ * D;
  const T* v = (const T*)p.v + ((int64_t)b * p.Hkv + hk) * T_ * D;
  const T* fq = (const T*)p.fq + (int64_t)bh * T_ * D;
  const T* fk = (const T*)p.fk + (int64_t)bh * T_ * D;
  T* y = (T*)p.y + (int64_t)bh * T_ * D;

  const float gw = coef_win(p, b, h), gl = coef_la(p, h);
  const bool win = mode_has_window(p.mode) && gw > 0.f;
  const bool la = mode_has_la(p.mode) && gl != 0.f;
  auto kslot = [](int m) { return (m + 4) & 3; };   // pool tile of K(m), m >= -1
  auto fqslot = [](int m) { return (m + 2) & 3; };  // pool tile of FQ(m)
  auto rslot = [](int m) { return (m + 3) % 3; };   // ring slot of V(m), FK(m)
  using All = std::integral_constant<int, 256>;
  using Half = std::integral_constant<int, 128>;
  auto load_kvf = [&](int m, int i0, auto nthr) {
    constexpr int N = decltype(nthr)::value;
    if (win) load_chunk_rows<T, D, N>(Pool + kslot(m) * TILE, k, m * kC, T_, i0);
    load_chunk_rows<T, D, N>(Vs + rslot(m) * TILE, v, m * kC, T_, i0);
    load_chunk_rows<T, D, N>(FKs + rslot(m) * TILE, fk, m * kC, T_, i0);
  };
  load_kvf(lo - 1, tid, All{});  // (chunk -1 = zeros)
  load_kvf(lo, tid, All{});
  if (win) load_chunk_rows<T, D, 256>(Qs, q, lo * kC, T_, tid);
  load_chunk_rows<T, D, 256>(Pool + fqslot(lo) * TILE, fq, lo * kC, T_, tid);
  cp_commit();

  if (warp < 4) {
    // ================= attention warps: rows 64c + 16 warp + [0, 16) =================
    const float cw = la ? gw / gl : gw;  // P enters with gamma_eff / lambda when LA is on
    const float oscale = la ? gl : 1.f;
    for (int c = lo; c < hi; ++c) {
      cp_wait<0>();
      __syncthreads();  // chunk c landed; everyone is done with chunk c-1
      const int row0 = c * kC, key0 = row0 - kC;
      const T* Kh[2] = {Pool + kslot(c - 1) * TILE, Pool + kslot(c) * TILE};
      const T* Vh[2] = {Vs + rslot(c - 1) * TILE, Vs + rslot(c) * TILE};
      const T* Fh[2] = {FKs + rslot(c - 1) * TILE, FKs + rslot(c) * TILE};
      const int na = row0 + warp * 16 + g, nb = na + 8;
      const bool va = na < T_, vb = nb < T_;
      // tile i in [I0, 5): keys key0 + 16 (warp + i) + [0, 16); P / A in pc[2(i - I0)], pc[2(i - I0) + 1]
      float pc[NPC][4];
#pragma unroll
      for (int i = 0; i < NPC; ++i) pc[i][0] = pc[i][1] = pc[i][2] = pc[i][3] = 0.f;
      float mx_a = 0.f, mx_b = 0.f, sw_a = 0.f, sw_b = 0.f, sl_a = 0.f, sl_b = 0.f;
      auto ktile = [&](const T* const (&hb)[2], int kt) { return (kt < 4 ? hb[0] : hb[1]) + (kt & 3) * 16 * LDS; };
      const int le_rel = la ? la_end(p, row0 + warp * 16 + 15) - key0 : INT_MIN;  // A keys of the warp: kl < le_rel
      // ---- 1. window: S = Q K^T over the frame, mask, row max, P = exp(S - c)
      if (win) {
        const T* Qw = Qs + warp * 16 * LDS;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
          uint32_t qa[4];
          ldsm_x4(qa, smem_u32(Qw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
#pragma unroll
          for (int i = I0; i < 5; ++i) {
            if (!FRAME && warp + i < 0) continue;  // warp-uniform (FRAME: i >= 0)
            uint32_t kf[4];
            ldsm_x4(kf, smem_u32(ktile(Kh, warp + i) + ((lane & 7) + (lane >> 4) * 8) * LDS + ks * 16 + ((lane >> 3) & 1) * 8));
            mma16816<T>(pc[(i - I0) * 2], qa, kf[0], kf[1]);
            mma16816<T>(pc[(i - I0) * 2 + 1], qa, kf[2], kf[3]);
          }
        }
        // this warp's Q rows are read: fetch chunk c+1's (the other warps' rows are theirs)
        __syncwarp();
        if (c + 1 < hi) load_chunk_rows<T, D, 32, 16>(Qs + warp * 16 * LDS, q, (c + 1) * kC + warp * 16, T_, lane);
      }
      // every attention warp is done with K(c-1): its tile takes FQ(c+1), a quarter per warp
      named_bar_sync(kBarS, 128);
      if (c + 1 < hi)
        load_chunk_rows<T, D, 32, 16>(Pool + fqslot(c + 1) * TILE + warp * 16 * LDS, fq, (c + 1) * kC + warp * 16, T_, lane);
      cp_commit();
      if (win)
        window_softmax<true>(pc, p, key0 + (warp + I0) * 16, t, na, nb, va, vb, cw, [](int) { return true; }, mx_a, mx_b,
                             sw_a, sw_b);
      // ---- 2. LA keys of the tiles: A = FQ FK^T over those left of le_rel, masked to j < m(n)
      //      (FRAME: the LA keys left of the frame are in the block's state, step 4)
      if (le_rel > (warp + I0) * 16) {
        const T* FQw = Pool + fqslot(c) * TILE + warp * 16 * LDS;
        const int le_a = va ? la_end(p, na) : INT_MIN, le_b = vb ? la_end(p, nb) : INT_MIN;
        uint32_t fa[KS][4];
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) ldsm_x4(fa[ks], smem_u32(FQw + (lane & 15) * LDS + ks * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int i = I0; i < 5; ++i) {
          const int kt = warp + i;
          if ((!FRAME && kt < 0) || kt * 16 >= le_rel) continue;  // warp-uniform
          float a0[4] = {0.f, 0.f, 0.f, 0.f}, a1[4] = {0.f, 0.f, 0.f, 0.f};
          const T* fb = ktile(Fh, kt) + ((lane & 7) + (lane >> 4) * 8) * LDS + ((lane >> 3) & 1) * 8;
#pragma unroll
          for (int ks = 0; ks < KS; ++ks) {
            uint32_t kf[4];
            ldsm_x4(kf, smem_u32(fb + ks * 16));
            mma16816<T>(a0, fa[ks], kf[0], kf[1]);
            mma16816<T>(a1, fa[ks], kf[2], kf[3]);
          }
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int j0 = key0 + kt * 16 + 2 * t + e, j1 = j0 + 8;
            const float x0 = j0 < le_a ? a0[e] : 0.f, y0 = j0 < le_b ? a0[2 + e] : 0.f;
            const float x1 = j1 < le_a ? a1[e] : 0.f, y1 = j1 < le_b ? a1[2 + e] : 0.f;
            sl_a += x0 + x1;
            sl_b += y0 + y1;
            pc[2 * (i - I0)][e] += x0;
            pc[2 * (i - I0)][2 + e] += y0;
            pc[2 * (i - I0) + 1][e] += x1;
            pc[2 * (i - I0) + 1][2 + e] += y1;
          }
        }
        sl_a += __shfl_xor_sync(0xffffffffu, sl_a, 1);
        sl_a += __shfl_xor_sync(0xffffffffu, sl_a, 2);
        sl_b += __shfl_xor_sync(0xffffffffu, sl_b, 1);
        sl_b += __shfl_xor_sync(0xffffffffu, sl_b, 2);
      }
      // ---- 3. O = (coef P + A) V over the frame's tiles
      float o[ND][4];
#pragma unroll
      for (int i = 0; i < ND; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
#pragma unroll
      for (int i = I0; i < 5; ++i) {
        const int kt = warp + i;
        if ((!FRAME && kt < 0) || !(win || kt * 16 < le_rel)) continue;  // warp-uniform
        const int n0 = 2 * (i - I0);
        uint32_t pa[4];
        pa[0] = pack2<T>(pc[n0][0], pc[n0][1]);
        pa[1] = pack2<T>(pc[n0][2], pc[n0][3]);
        pa[2] = pack2<T>(pc[n0 + 1][0], pc[n0 + 1][1]);
        pa[3] = pack2<T>(pc[n0 + 1][2], pc[n0 + 1][3]);
        const T* vrow = ktile(Vh, kt) + (lane & 15) * LDS + (lane >> 4) * 8;
#pragma unroll
        for (int np = 0; np < ND / 2; ++np) {
          uint32_t vf[4];
          ldsm_x4_t(vf, smem_u32(vrow + np * 16));
          mma16816<T>(o[2 * np], pa, vf[0], vf[1]);
          mma16816<T>(o[2 * np + 1], pa, vf[2], vf[3]);
        }
      }
      // ---- 4. the block's state (from the state warps): O += FQ R, den_la += fq . z
      float* Xa = X + (warp * 16 + g) * XLD;
      if (la) {
        named_bar_sync(kBarX + warp, 160);
#pragma unroll
        for (int nt = 0; nt < ND; ++nt) {
          const float2 xa = *reinterpret_cast<const float2*>(Xa + nt * 8 + 2 * t);
          const float2 xb = *reinterpret_cast<const float2*>(Xa + 8 * XLD + nt * 8 + 2 * t);
          o[nt][0] += xa.x;
          o[nt][1] += xa.y;
          o[nt][2] += xb.x;
          o[nt][3] += xb.y;
        }
        sl_a += xden[warp * 16 + g];
        sl_b += xden[warp * 16 + g + 8];
      }
      // ---- 5. normalise, write y (staged through this warp's own rows of X) and the statistics
      const float dsw_a = win ? gw * sw_a : 0.f, dsw_b = win ? gw * sw_b : 0.f;
      const float dla_a = la ? gl * sl_a : 0.f, dla_b = la ? gl * sl_b : 0.f;
      const float den_a = dsw_a + dla_a, den_b = dsw_b + dla_b;
      const float ia = den_a > 0.f ? oscale / den_a : 0.f, ib = den_b > 0.f ? oscale / den_b : 0.f;
      // y staged through this warp's own rows of X (16-bit, row stride 2 XLD elements)
      warp_store_tile<T, D, 2 * XLD>(y, row0 + warp * 16, T_, reinterpret_cast<T*>(X + warp * 16 * XLD), o, ia, ib, lane);
      write_row_stats(p, (int64_t)bh * T_, t, na, nb, va, vb, win ? mx_a : 0.f, win ? mx_b : 0.f, dsw_a, dsw_b, dla_a, dla_b);
    }
  } else {
    // ================= state warps: R^T (dv x F, fp32) in registers, dv columns [cb, cb + D/4) =================
    const int ws = warp - 4, sid = tid - 128, cb = ws * (D / 4);
    float r[SMT][ND][4];  // R^T: rows (dv) cb + 16 mt + g (+8), columns (f) 8 nt + 2t (+1)
    float zr = 0.f;       // z[sid] (sid < D)
#pragma unroll
    for (int mt = 0; mt < SMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < ND; ++nt) r[mt][nt][0] = r[mt][nt][1] = r[mt][nt][2] = r[mt][nt][3] = 0.f;
    if (s > 0) {
      // R_{lo} = the sum of the chunks before chunk lo - 1 (fp32 [f*D + col] then z[f]), from nent
      // entries per head: kk > 0: the first s kk sub-segment sums, added here (few segments: no
      // prefix pass); kk = 0: entry s holds the prefix already
      const int64_t per = (int64_t)D * D + D;
      const int e0 = kk > 0 ? 0 : s, e1 = kk > 0 ? s * kk : s + 1;
#pragma unroll 1
      for (int e = e0; e < e1; ++e) {
        const float* src = part + ((int64_t)bh * nent + e) * per;
#pragma unroll
        for (int mt = 0; mt < SMT; ++mt)
#pragma unroll
          for (int nt = 0; nt < ND; ++nt) {
            const int col = cb + mt * 16 + g, f = nt * 8 + 2 * t;
            r[mt][nt][0] += src[(int64_t)f * D + col];
            r[mt][nt][1] += src[(int64_t)(f + 1) * D + col];
            r[mt][nt][2] += src[(int64_t)f * D + col + 8];
            r[mt][nt][3] += src[(int64_t)(f + 1) * D + col + 8];
          }
        if (sid < D) zr += src[(int64_t)D * D + sid];
      }
    }
    for (int c = lo; c < hi; ++c) {
      cp_wait<0>();
      __syncthreads();
      if (c + 1 < hi) load_kvf(c + 1, sid, Half{});
      cp_commit();
      if (!la) continue;
      const T* FKp = FKs + rslot(c - 1) * TILE;  // chunk c-1 (zeros for c = 0)
      const T* Vp = Vs + rslot(c - 1) * TILE;
      const T* FQc = Pool + fqslot(c) * TILE;
      // R += FK^T V over the 16 keys of chunk c-1's tile mt
      auto add_tile = [&](int mt) {
        uint32_t a[SMT][4];
#pragma unroll
        for (int m2 = 0; m2 < SMT; ++m2)
          ldsm_x4_t(a[m2], smem_u32(Vp + (mt * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + cb + m2 * 16 + ((lane >> 3) & 1) * 8));
        const T* frow = FKp + (mt * 16 + (lane & 15)) * LDS + (lane >> 4) * 8;
#pragma unroll
        for (int np = 0; np < ND / 2; ++np) {
          uint32_t bf[4];
          ldsm_x4_t(bf, smem_u32(frow + np * 16));
#pragma unroll
          for (int m2 = 0; m2 < SMT; ++m2) {
            mma16816<T>(r[m2][2 * np], a[m2], bf[0], bf[1]);
            mma16816<T>(r[m2][2 * np + 1], a[m2], bf[2], bf[3]);
          }
        }
      };
      // z of each row block (!FRAME: z_c for all); zr becomes z_{c+1}
      if (sid < D) {
        float z = zr;
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) {
          zb[mt * D + sid] = FRAME ? z : zr;
          float zsum = 0.f;
#pragma unroll
          for (int j = 0; j < 16; ++j) zsum += ldf(FKp + (mt * 16 + j) * LDS + sid);
          z += zsum;
        }
        zr = z;
      }
      named_bar_sync(kBarZ, 128);
      // fq . z (fp32): two threads per row
      {
        const int row = sid >> 1, half = sid & 1;
        const T* fr = FQc + row * LDS + half * (D / 2);
        const float* zz = zb + (row >> 4) * D + half * (D / 2);
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < D / 2; i += 8) {
          const uint4 u = *reinterpret_cast<const uint4*>(fr + i);
          const float4 z0 = *reinterpret_cast<const float4*>(zz + i), z1 = *reinterpret_cast<const float4*>(zz + i + 4);
          const float2 f0 = unpack2<T>(u.x), f1 = unpack2<T>(u.y), f2 = unpack2<T>(u.z), f3 = unpack2<T>(u.w);
          acc += f0.x * z0.x + f0.y * z0.y + f1.x * z0.z + f1.y * z0.w + f2.x * z1.x + f2.y * z1.y + f3.x * z1.z + f3.y * z1.w;
        }
        acc += __shfl_xor_sync(0xffffffffu, acc, 1);
        if (half == 0) xden[row] = acc;
      }
#pragma unroll
      for (int mt = 0; mt < kC / 16; ++mt) {
        // FQ R for rows 16 mt + g (+8), columns cb + 8j + 2t (+1), into X
        float ol[SNO][4];
#pragma unroll
        for (int j = 0; j < SNO; ++j) ol[j][0] = ol[j][1] = ol[j][2] = ol[j][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
          uint32_t fa[4];
          ldsm_x4(fa, smem_u32(FQc + (mt * 16 + (lane & 15)) * LDS + ks * 16 + (lane >> 4) * 8));
          // f16 fq meets the bf16 state as bf16 (as the two-kernel path's hi part)
          if constexpr (!std::is_same<T, __nv_bfloat16>::value)
#pragma unroll
            for (int i = 0; i < 4; ++i) fa[i] = h2_to_bf2(fa[i]);
#pragma unroll
          for (int j = 0; j < SNO; ++j) {
            const int m2 = j >> 1, e = (j & 1) * 2;
            const uint32_t b0 = pack2<__nv_bfloat16>(r[m2][2 * ks][e], r[m2][2 * ks][e + 1]);
            const uint32_t b1 = pack2<__nv_bfloat16>(r[m2][2 * ks + 1][e], r[m2][2 * ks + 1][e + 1]);
            mma16816<__nv_bfloat16>(ol[j], fa, b0, b1);
          }
        }
#pragma unroll
        for (int j = 0; j < SNO; ++j) {
          float* xr = X + (mt * 16 + g) * XLD + cb + j * 8 + 2 * t;
          *reinterpret_cast<float2*>(xr) = make_float2(ol[j][0], ol[j][1]);
          *reinterpret_cast<float2*>(xr + 8 * XLD) = make_float2(ol[j][2], ol[j][3]);
        }
        named_bar_arrive(kBarX + mt, 160);  // block mt's X and xden are in place
        // FRAME: R += chunk c-1's tile mt (the next block's state; after the last block: R_{c+1})
        if constexpr (FRAME) {
          if (c >= 1 && (mt < 3 || c + 1 < hi)) add_tile(mt);
        }
      }
      if constexpr (!FRAME) {
        if (c >= 1 && c + 1 < hi)
#pragma unroll
          for (int mt = 0; mt < kC / 16; ++mt) add_tile(mt);
      }
    }
  }
  cp_wait<0>();
}

}  // namespace fast
}  // namespace cuda_detail
}  // namespace ha
