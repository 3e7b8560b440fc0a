// Block-wide fp32 tile steps shared by the generic (SIMT) hybrid-attention kernels: the forward,
// the backward and the segment-state pass all walk the same LA state and window scores, in
// layouts that differ only by which index is the fast one. Every function is called by the whole
// block (threads stride over the elements) and touches shared memory only; the caller syncs.
#pragma once
#include "ops/hybrid_attention/ha_common.cuh"

namespace ha {
namespace cuda_detail {

__device__ __forceinline__ float dot_f32(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int e = 0; e < n; ++e) s += a[e] * b[e];
  return s;
}

// M[o * ldm + i] += sum_{kk < kKC} X[kk * ldx + i] * Y[kk * ldy + o] for o < n_outer, i < kSL:
// a rank-kKC update of a state slice (rows of X and Y are the kKC keys or rows of a chunk).
__device__ __forceinline__ void add_rank_chunk(float* M, int ldm, int n_outer, const float* X, int ldx, const float* Y,
                                               int ldy) {
  for (int idx = threadIdx.x; idx < n_outer * kSL; idx += blockDim.x) {
    const int o = idx / kSL, i = idx % kSL;
    float a = M[o * ldm + i];
#pragma unroll 8
    for (int kk = 0; kk < kKC; ++kk) a += X[kk * ldx + i] * Y[kk * ldy + o];
    M[o * ldm + i] = a;
  }
}

// z[i] += sum_{kk < kKC} X[kk * ldx + i] * (wt ? wt[kk] : 1) for i < n: the normaliser state.
__device__ __forceinline__ void add_col_sums(float* z, int n, const float* X, int ldx, const float* wt = nullptr) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    float a = z[i];
    for (int kk = 0; kk < kKC; ++kk) a += X[kk * ldx + i] * (wt ? wt[kk] : 1.f);
    z[i] = a;
  }
}

// A state slice out of a [F*dv + F] fp32 state (layout of launch_la_prefix_states) into shared
// memory: M[o * ldm + i] = S[o * so + (i0 + i) * si] for i < n_valid (0 for n_valid <= i < kSL),
// o < n_outer; and z[i] = zsrc[z0 + i] for i < nz_valid (0 up to nz).
__device__ __forceinline__ void load_state_slice(float* M, int ldm, int n_outer, const float* S, int64_t so, int64_t si,
                                                 int i0, int n_valid, float* z, int nz, const float* zsrc, int z0,
                                                 int nz_valid) {
  for (int idx = threadIdx.x; idx < n_outer * kSL; idx += blockDim.x) {
    const int o = idx / kSL, i = idx % kSL;
    M[o * ldm + i] = i < n_valid ? S[o * so + (int64_t)(i0 + i) * si] : 0.f;
  }
  for (int i = threadIdx.x; i < nz; i += blockDim.x) z[i] = i < nz_valid ? zsrc[z0 + i] : 0.f;
}

// Window scores of a tile: Ps[r * kKC + kk] = scale q_n . k_j for rows n = r0 + r (r < nr) and keys
// j = kc + kk (kk < nv) inside n's window, -inf elsewhere.
__device__ __forceinline__ void window_scores(float* Ps, const KP& p, const float* Qs, int ldq, const float* Ks, int ldk,
                                              int r0, int nr, int kc, int nv) {
  for (int idx = threadIdx.x; idx < kR * kKC; idx += blockDim.x) {
    const int r = idx / kKC, kk = idx % kKC, n = r0 + r, j = kc + kk;
    float s = -INFINITY;
    if (r < nr && kk < nv && j >= win_lo(p, n) && j <= win_hi(p, n)) s = dot_f32(Qs + r * ldq, Ks + kk * ldk, p.d) * p.scale;
    Ps[idx] = s;
  }
}

// LA gradient inputs of rows n = n0 + r (r < nrows, zero beyond nv): Gh[r][c] = wa_n dy_n[c] and
// rho[r] = wa_n D_n (wa = gl / den, D = dy . y).
template <class T>
__device__ __forceinline__ void load_scaled_dy(float* Gh, int ldg, float* rho, int nrows, int nv, const T* dy, int dv,
                                               const float* wa, const float* D, int64_t row_base, int n0) {
  for (int idx = threadIdx.x; idx < nrows * dv; idx += blockDim.x) {
    const int r = idx / dv, c = idx % dv;
    Gh[r * ldg + c] = r < nv ? wa[row_base + n0 + r] * ldf(dy + (int64_t)(n0 + r) * dv + c) : 0.f;
  }
  for (int r = threadIdx.x; r < nrows; r += blockDim.x)
    rho[r] = r < nv ? wa[row_base + n0 + r] * D[row_base + n0 + r] : 0.f;
}

}  // namespace cuda_detail
}  // namespace ha
