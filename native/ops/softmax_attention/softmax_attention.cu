// CUDA kernels of (causal) softmax attention (see softmax_attention.h), dtypes bf16, f16, f32.
//
// Fast path (bf16/f16, d == dv in {64, 128}, 16-byte aligned pointers): flash-attention-2 style
// tensor-core kernels (mma.sync m16n8k16, fp32 accumulation, ldmatrix, cp.async double buffering):
//   forward   grid (q tiles of 64 rows, B*H), 4 warps x 16 rows; online softmax in registers.
//   backward  (1) D_n = dy_n . y_n (fp32 scratch), (2) dk/dv: grid (key tiles of 64, B*Hkv), each
//             warp owns 16 keys and loops over every q head of its GQA group and every q tile,
//             accumulating dk, dv in registers (no atomics: the GQA sum is done in-block in a
//             fixed order), (3) dq: grid (q tiles of 64, B*H), recomputes P and dP per key tile.
//             Everything is deterministic (no atomics anywhere); the price of the separate dq
//             kernel is recomputing Q K^T and dO V^T once more (7 instead of 5 matmuls).
// Generic path (any dtype of bf16/f16/f32, any d, dv <= 256, any alignment): fp32 SIMT tiles with
//   the same decomposition (lane <-> key or lane <-> query row inside 32-wide chunks).
// lse is fp32 for every dtype. Scratch (the D vector) is stream-ordered (cudaMallocAsync).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "core/cuda_device.cuh"
#include "core/errors.h"
#include "core/mma_sm80.cuh"
#include "ops/softmax_attention/softmax_attention.h"

namespace ha {
namespace {

void sa_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(ErrorCode::Device, std::string("softmax_attention CUDA (") + what + "): " + cudaGetErrorString(e));
}
void sa_check_launch(const char* what) { sa_check(cudaGetLastError(), what); }

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;


// Kernel parameters (POD).
struct KP {
  int B, H, Hkv, T, d, dv, group, causal;
  float scale;
  const void *q, *k, *v, *y, *dy;
  void *yo, *dq, *dk, *dv_;
  float* lse;        // forward output / backward input (fp32)
  const float* lsei; // backward input
  float* Dn;         // backward scratch [B*H*T]
};

// Tensor-core primitives (sm_80+): native/core/mma_sm80.cuh.
using mma::acc_to_a;
using mma::cp_async16;
using mma::cp_commit;
using mma::cp_wait;
using mma::ldsm_x4;
using mma::ldsm_x4_t;
using mma::mma16816;
using mma::store_acc_rows;

// Rows [row0, row0+NR) of a [T, D] 16-bit matrix into shared memory (row stride D+8 elements);
// rows >= T are zero-filled.
template <int NR, int D, class T>
__device__ __forceinline__ void load_rows_async(T* s, const T* g, int row0, int Tn) {
  constexpr int CPR = D / 8, LD = D + 8;
  for (int c = threadIdx.x; c < NR * CPR; c += blockDim.x) {
    const int r = c / CPR, cc = c - r * CPR;
    const int row = row0 + r;
    const bool ok = row < Tn;
    cp_async16(s + r * LD + cc * 8, g + (int64_t)(ok ? row : 0) * D + cc * 8, ok);
  }
}

// A fragment (16x16) of a row-major shared tile at (r0, c0); B fragments of two n-tiles.
template <int LD, class T>
__device__ __forceinline__ void ld_a(uint32_t (&a)[4], const T* s, int r0, int c0, int lane) {
  ldsm_x4(a, s + (r0 + (lane & 15)) * LD + c0 + (lane >> 4) * 8);
}
// B = M^T where M is stored row-major [n][k]: n-tiles n0, n0+8, k-step at k0.
// r[0], r[1]: b0, b1 of n-tile n0; r[2], r[3]: of n-tile n0+8.
template <int LD, class T>
__device__ __forceinline__ void ld_b_nk(uint32_t (&r)[4], const T* s, int n0, int k0, int lane) {
  const int i = lane >> 3;
  ldsm_x4(r, s + (n0 + (i >> 1) * 8 + (lane & 7)) * LD + k0 + (i & 1) * 8);
}
// B stored row-major [k][n]: same register meaning.
template <int LD, class T>
__device__ __forceinline__ void ld_b_kn(uint32_t (&r)[4], const T* s, int k0, int n0, int lane) {
  const int i = lane >> 3;
  ldsm_x4_t(r, s + (k0 + (i & 1) * 8 + (lane & 7)) * LD + n0 + (i >> 1) * 8);
}

// ------------------------------------------------------------------------------------------
// Fast forward.
template <class T, int D>
__global__ void __launch_bounds__(128) fwd_mma_kernel(KP p) {
  constexpr int BR = 64, BC = 64, LD = D + 8;
  extern __shared__ __align__(16) unsigned char smraw[];
  T* Qs = reinterpret_cast<T*>(smraw);
  T* Ks = Qs + BR * LD;      // 2 stages
  T* Vs = Ks + 2 * BC * LD;  // 2 stages
  const int qt = gridDim.x - 1 - blockIdx.x;  // heaviest causal tiles first
  const int bh = blockIdx.y, b = bh / p.H, h = bh - b * p.H, hk = h / p.group;
  const int Tn = p.T;
  const T* q = static_cast<const T*>(p.q) + (int64_t)bh * Tn * D;
  const T* k = static_cast<const T*>(p.k) + (int64_t)(b * p.Hkv + hk) * Tn * D;
  const T* v = static_cast<const T*>(p.v) + (int64_t)(b * p.Hkv + hk) * Tn * D;
  const int q0 = qt * BR;
  const int ntiles = (Tn + BC - 1) / BC;
  const int nkt = p.causal ? min(ntiles, (q0 + BR - 1) / BC + 1) : ntiles;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  const float sl2 = p.scale * kLog2e;

  load_rows_async<BR, D>(Qs, q, q0, Tn);
  load_rows_async<BC, D>(Ks, k, 0, Tn);
  load_rows_async<BC, D>(Vs, v, 0, Tn);
  cp_commit();

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  uint32_t qf[D / 16][4];
  const int row_a = q0 + w * 16 + g, row_b = row_a + 8;

  for (int j = 0; j < nkt; ++j) {
    if (j + 1 < nkt) {
      const int st = (j + 1) & 1;
      load_rows_async<BC, D>(Ks + st * BC * LD, k, (j + 1) * BC, Tn);
      load_rows_async<BC, D>(Vs + st * BC * LD, v, (j + 1) * BC, Tn);
    }
    cp_commit();
    cp_wait<1>();
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ld_a<LD>(qf[kk], Qs, w * 16, kk * 16, lane);
    }
    const T* Kt = Ks + (j & 1) * BC * LD;
    const T* Vt = Vs + (j & 1) * BC * LD;
    float s[BC / 8][4];
#pragma unroll
    for (int i = 0; i < BC / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int nn = 0; nn < BC / 16; ++nn) {
        uint32_t bf[4];
        ld_b_nk<LD>(bf, Kt, nn * 16, kk * 16, lane);
        mma16816<T>(s[2 * nn], qf[kk], bf[0], bf[1]);
        mma16816<T>(s[2 * nn + 1], qf[kk], bf[2], bf[3]);
      }
    }
    const int k0 = j * BC;
    const bool need_mask = (k0 + BC > Tn) || (p.causal && k0 + BC - 1 > q0);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * sl2;
        if (need_mask) {
          const int col = k0 + nt * 8 + 2 * t + (e & 1);
          const int row = (e >> 1) ? row_b : row_a;
          if (col >= Tn || (p.causal && col > row)) x = -INFINITY;
        }
        s[nt][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    }
    float alpha[2], msafe[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float mn = fmaxf(m[r], mx[r]);
      msafe[r] = mn == -INFINITY ? 0.f : mn;
      alpha[r] = exp2f(m[r] - msafe[r]);  // 0 when m = -inf
      m[r] = mn;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pe = exp2f(s[nt][e] - msafe[e >> 1]);
        s[nt][e] = pe;
        l[e >> 1] += pe;
      }
    }
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      o[i][0] *= alpha[0]; o[i][1] *= alpha[0];
      o[i][2] *= alpha[1]; o[i][3] *= alpha[1];
    }
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      uint32_t a[4];
      acc_to_a<T>(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int nn = 0; nn < D / 16; ++nn) {
        uint32_t bf[4];
        ld_b_kn<LD>(bf, Vt, kk * 16, nn * 16, lane);
        mma16816<T>(o[2 * nn], a, bf[0], bf[1]);
        mma16816<T>(o[2 * nn + 1], a, bf[2], bf[3]);
      }
    }
    __syncthreads();
  }
  cp_wait<0>();
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const float inv0 = l[0] > 0.f ? 1.f / l[0] : 0.f, inv1 = l[1] > 0.f ? 1.f / l[1] : 0.f;
  T* y = static_cast<T*>(p.yo) + (int64_t)bh * Tn * D;
  store_acc_rows<T>(y, D, row_a, row_b, Tn, o, inv0, inv1, t);
  if (p.lse && t == 0) {
    float* lse = p.lse + (int64_t)bh * Tn;
    if (row_a < Tn) lse[row_a] = l[0] > 0.f ? (m[0] + log2f(l[0])) * kLn2 : -INFINITY;
    if (row_b < Tn) lse[row_b] = l[1] > 0.f ? (m[1] + log2f(l[1])) * kLn2 : -INFINITY;
  }
}

// ------------------------------------------------------------------------------------------
// D_n = dy_n . y_n (fp32), one warp per row.
template <class T>
__global__ void bwd_dot_kernel(KP p, int64_t rows) {
  const int64_t r = blockIdx.x * (int64_t)(blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const T* y = static_cast<const T*>(p.y) + r * p.dv;
  const T* dy = static_cast<const T*>(p.dy) + r * p.dv;
  float s = 0.f;
  for (int e = lane; e < p.dv; e += 32) s += ldf(y + e) * ldf(dy + e);
#pragma unroll
  for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (lane == 0) p.Dn[r] = s;
}

// Fast backward, dk and dv: each warp owns 16 keys; loops over (q head in group, q tile).
template <class T, int D, int BR>
__global__ void __launch_bounds__(128) bwd_dkdv_mma_kernel(KP p) {
  constexpr int BC = 64, LD = D + 8;
  extern __shared__ __align__(16) unsigned char smraw[];
  T* Ks = reinterpret_cast<T*>(smraw);
  T* Vs = Ks + BC * LD;
  T* Qs = Vs + BC * LD;        // 2 stages
  T* dOs = Qs + 2 * BR * LD;   // 2 stages
  float* Ls = reinterpret_cast<float*>(dOs + 2 * BR * LD);  // 2 stages x BR (lse * log2e)
  float* Dd = Ls + 2 * BR;                                   // 2 stages x BR
  const int kt = gridDim.x - 1 - blockIdx.x;
  const int bhk = blockIdx.y, b = bhk / p.Hkv, hk = bhk - b * p.Hkv;
  const int Tn = p.T;
  const int k0 = kt * BC;
  const T* k = static_cast<const T*>(p.k) + (int64_t)bhk * Tn * D;
  const T* v = static_cast<const T*>(p.v) + (int64_t)bhk * Tn * D;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  const float sl2 = p.scale * kLog2e;
  const int qt0 = p.causal ? k0 / BR : 0;
  const int nqt = (Tn + BR - 1) / BR;
  const int per_head = nqt - qt0;
  const int niter = per_head * p.group;

  auto issue = [&](int it, int st) {
    const int hh = hk * p.group + it / per_head;
    const int qt = qt0 + it % per_head;
    const int64_t bh = (int64_t)b * p.H + hh;
    load_rows_async<BR, D>(Qs + st * BR * LD, static_cast<const T*>(p.q) + bh * Tn * D, qt * BR, Tn);
    load_rows_async<BR, D>(dOs + st * BR * LD, static_cast<const T*>(p.dy) + bh * Tn * D, qt * BR, Tn);
    for (int i = tid; i < BR; i += blockDim.x) {
      const int row = qt * BR + i;
      Ls[st * BR + i] = row < Tn ? p.lsei[bh * Tn + row] * kLog2e : 0.f;
      Dd[st * BR + i] = row < Tn ? p.Dn[bh * Tn + row] : 0.f;
    }
  };

  load_rows_async<BC, D>(Ks, k, k0, Tn);
  load_rows_async<BC, D>(Vs, v, k0, Tn);
  if (niter > 0) issue(0, 0);
  cp_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.f;
  const int key_a = k0 + w * 16 + g, key_b = key_a + 8;

  for (int it = 0; it < niter; ++it) {
    if (it + 1 < niter) issue(it + 1, (it + 1) & 1);
    cp_commit();
    cp_wait<1>();
    __syncthreads();
    const int st = it & 1;
    const T* Qt = Qs + st * BR * LD;
    const T* dOt = dOs + st * BR * LD;
    const float* Lt = Ls + st * BR;
    const float* Dt = Dd + st * BR;
    const int qrow0 = (qt0 + it % per_head) * BR;
    // S^T = K Q^T and dP^T = V dO^T (16 keys x BR rows per warp)
    float s[BR / 8][4], dp[BR / 8][4];
#pragma unroll
    for (int i = 0; i < BR / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ka[4], va[4];
      ld_a<LD>(ka, Ks, w * 16, kk * 16, lane);
      ld_a<LD>(va, Vs, w * 16, kk * 16, lane);
#pragma unroll
      for (int nn = 0; nn < BR / 16; ++nn) {
        uint32_t bq[4], bo[4];
        ld_b_nk<LD>(bq, Qt, nn * 16, kk * 16, lane);
        ld_b_nk<LD>(bo, dOt, nn * 16, kk * 16, lane);
        mma16816<T>(s[2 * nn], ka, bq[0], bq[1]);
        mma16816<T>(s[2 * nn + 1], ka, bq[2], bq[3]);
        mma16816<T>(dp[2 * nn], va, bo[0], bo[1]);
        mma16816<T>(dp[2 * nn + 1], va, bo[2], bo[3]);
      }
    }
    const bool need_mask = (qrow0 + BR > Tn) || (k0 + BC > Tn) || (p.causal && qrow0 < k0 + BC - 1);
#pragma unroll
    for (int nt = 0; nt < BR / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int cl = nt * 8 + 2 * t + (e & 1);
        float pe = exp2f(s[nt][e] * sl2 - Lt[cl]);
        if (need_mask) {
          const int row = qrow0 + cl;
          const int key = (e >> 1) ? key_b : key_a;
          if (row >= Tn || key >= Tn || (p.causal && key > row)) pe = 0.f;
        }
        s[nt][e] = pe;
        dp[nt][e] = pe * (dp[nt][e] - Dt[cl]);
      }
    }
    // dV += P^T dO, dK += dS^T Q
#pragma unroll
    for (int kk = 0; kk < BR / 16; ++kk) {
      uint32_t pa[4], da[4];
      acc_to_a<T>(pa, s[2 * kk], s[2 * kk + 1]);
      acc_to_a<T>(da, dp[2 * kk], dp[2 * kk + 1]);
#pragma unroll
      for (int nn = 0; nn < D / 16; ++nn) {
        uint32_t bo[4], bq[4];
        ld_b_kn<LD>(bo, dOt, kk * 16, nn * 16, lane);
        ld_b_kn<LD>(bq, Qt, kk * 16, nn * 16, lane);
        mma16816<T>(dv[2 * nn], pa, bo[0], bo[1]);
        mma16816<T>(dv[2 * nn + 1], pa, bo[2], bo[3]);
        mma16816<T>(dk[2 * nn], da, bq[0], bq[1]);
        mma16816<T>(dk[2 * nn + 1], da, bq[2], bq[3]);
      }
    }
    __syncthreads();
  }
  cp_wait<0>();
  T* dkp = static_cast<T*>(p.dk) + (int64_t)bhk * Tn * D;
  T* dvp = static_cast<T*>(p.dv_) + (int64_t)bhk * Tn * D;
  const float sc = p.scale;
  store_acc_rows<T>(dkp, D, key_a, key_b, Tn, dk, sc, sc, t);
  store_acc_rows<T>(dvp, D, key_a, key_b, Tn, dv, 1.f, 1.f, t);
}

// Fast backward, dq: 4 warps x 16 rows; loops over key tiles.
template <class T, int D>
__global__ void __launch_bounds__(128) bwd_dq_mma_kernel(KP p) {
  constexpr int BR = 64, BC = 64, LD = D + 8;
  extern __shared__ __align__(16) unsigned char smraw[];
  T* Qs = reinterpret_cast<T*>(smraw);
  T* dOs = Qs + BR * LD;
  T* Ks = dOs + BR * LD;     // 2 stages
  T* Vs = Ks + 2 * BC * LD;  // 2 stages
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / p.H, h = bh - b * p.H, hk = h / p.group;
  const int Tn = p.T;
  const T* q = static_cast<const T*>(p.q) + (int64_t)bh * Tn * D;
  const T* dy = static_cast<const T*>(p.dy) + (int64_t)bh * Tn * D;
  const T* k = static_cast<const T*>(p.k) + (int64_t)(b * p.Hkv + hk) * Tn * D;
  const T* v = static_cast<const T*>(p.v) + (int64_t)(b * p.Hkv + hk) * Tn * D;
  const int q0 = qt * BR;
  const int ntiles = (Tn + BC - 1) / BC;
  const int nkt = p.causal ? min(ntiles, (q0 + BR - 1) / BC + 1) : ntiles;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  const float sl2 = p.scale * kLog2e;
  const int row_a = q0 + w * 16 + g, row_b = row_a + 8;
  const float la = row_a < Tn ? p.lsei[(int64_t)bh * Tn + row_a] * kLog2e : 0.f;
  const float lb = row_b < Tn ? p.lsei[(int64_t)bh * Tn + row_b] * kLog2e : 0.f;
  const float Da = row_a < Tn ? p.Dn[(int64_t)bh * Tn + row_a] : 0.f;
  const float Db = row_b < Tn ? p.Dn[(int64_t)bh * Tn + row_b] : 0.f;

  load_rows_async<BR, D>(Qs, q, q0, Tn);
  load_rows_async<BR, D>(dOs, dy, q0, Tn);
  load_rows_async<BC, D>(Ks, k, 0, Tn);
  load_rows_async<BC, D>(Vs, v, 0, Tn);
  cp_commit();

  float dq[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; ++i) dq[i][0] = dq[i][1] = dq[i][2] = dq[i][3] = 0.f;
  uint32_t qf[D / 16][4];

  for (int j = 0; j < nkt; ++j) {
    if (j + 1 < nkt) {
      const int st = (j + 1) & 1;
      load_rows_async<BC, D>(Ks + st * BC * LD, k, (j + 1) * BC, Tn);
      load_rows_async<BC, D>(Vs + st * BC * LD, v, (j + 1) * BC, Tn);
    }
    cp_commit();
    cp_wait<1>();
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) ld_a<LD>(qf[kk], Qs, w * 16, kk * 16, lane);
    }
    const T* Kt = Ks + (j & 1) * BC * LD;
    const T* Vt = Vs + (j & 1) * BC * LD;
    float s[BC / 8][4], dp[BC / 8][4];
#pragma unroll
    for (int i = 0; i < BC / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t oa[4];
      ld_a<LD>(oa, dOs, w * 16, kk * 16, lane);
#pragma unroll
      for (int nn = 0; nn < BC / 16; ++nn) {
        uint32_t bk[4], bv[4];
        ld_b_nk<LD>(bk, Kt, nn * 16, kk * 16, lane);
        ld_b_nk<LD>(bv, Vt, nn * 16, kk * 16, lane);
        mma16816<T>(s[2 * nn], qf[kk], bk[0], bk[1]);
        mma16816<T>(s[2 * nn + 1], qf[kk], bk[2], bk[3]);
        mma16816<T>(dp[2 * nn], oa, bv[0], bv[1]);
        mma16816<T>(dp[2 * nn + 1], oa, bv[2], bv[3]);
      }
    }
    const int k0 = j * BC;
    const bool need_mask = (k0 + BC > Tn) || (p.causal && k0 + BC - 1 > q0);
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool hi = e >> 1;
        float pe = exp2f(s[nt][e] * sl2 - (hi ? lb : la));
        if (need_mask) {
          const int col = k0 + nt * 8 + 2 * t + (e & 1);
          const int row = hi ? row_b : row_a;
          if (col >= Tn || (p.causal && col > row)) pe = 0.f;
        }
        s[nt][e] = pe * (dp[nt][e] - (hi ? Db : Da));  // dS
      }
    }
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      uint32_t a[4];
      acc_to_a<T>(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int nn = 0; nn < D / 16; ++nn) {
        uint32_t bk[4];
        ld_b_kn<LD>(bk, Kt, kk * 16, nn * 16, lane);
        mma16816<T>(dq[2 * nn], a, bk[0], bk[1]);
        mma16816<T>(dq[2 * nn + 1], a, bk[2], bk[3]);
      }
    }
    __syncthreads();
  }
  cp_wait<0>();
  T* dqp = static_cast<T*>(p.dq) + (int64_t)bh * Tn * D;
  const float sc = p.scale;
  store_acc_rows<T>(dqp, D, row_a, row_b, Tn, dq, sc, sc, t);
}

// ------------------------------------------------------------------------------------------
// Generic SIMT path: 4 warps, fp32 shared tiles, d, dv <= 256 (lane handles columns lane+32c).
constexpr int GR = 16;   // query rows per block (4 per warp) / keys per block in dk/dv
constexpr int GKC = 32;  // keys (or query rows) per chunk: lane <-> key
constexpr int GMAXC = 8; // 256 / 32

template <class T>
__device__ __forceinline__ void g_load(float* dst, int ld, const T* src, int64_t srcld, int row0, int nrows,
                                       int Tn, int ncols) {
  for (int idx = threadIdx.x; idx < nrows * ncols; idx += blockDim.x) {
    const int r = idx / ncols, c = idx - r * ncols;
    const int row = row0 + r;
    dst[r * ld + c] = row < Tn ? ldf(src + (int64_t)row * srcld + c) : 0.f;
  }
}

template <class T>
__global__ void __launch_bounds__(128) fwd_generic_kernel(KP p) {
  extern __shared__ float gsm[];
  const int d = p.d, dv = p.dv, ldk = d + 1, ldv = dv + 1;
  float* Qs = gsm;               // GR x d
  float* Ks = Qs + GR * d;       // GKC x (d+1)
  float* Vs = Ks + GKC * ldk;    // GKC x (dv+1)
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / p.H, h = bh - b * p.H, hk = h / p.group;
  const int Tn = p.T, q0 = qt * GR;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const T* q = static_cast<const T*>(p.q) + (int64_t)bh * Tn * d;
  const T* k = static_cast<const T*>(p.k) + (int64_t)(b * p.Hkv + hk) * Tn * d;
  const T* v = static_cast<const T*>(p.v) + (int64_t)(b * p.Hkv + hk) * Tn * dv;
  g_load(Qs, d, q, d, q0, GR, Tn, d);
  const int kend = p.causal ? min(Tn, q0 + GR) : Tn;
  float o[4][GMAXC], m[4], l[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    m[r] = -INFINITY; l[r] = 0.f;
#pragma unroll
    for (int c = 0; c < GMAXC; ++c) o[r][c] = 0.f;
  }
  for (int k0 = 0; k0 < kend; k0 += GKC) {
    __syncthreads();
    g_load(Ks, ldk, k, d, k0, GKC, Tn, d);
    g_load(Vs, ldv, v, dv, k0, GKC, Tn, dv);
    __syncthreads();
    const int key = k0 + lane;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int rl = w * 4 + r, row = q0 + rl;
      float sdot = 0.f;
      for (int e = 0; e < d; ++e) sdot += Qs[rl * d + e] * Ks[lane * ldk + e];
      float x = sdot * p.scale;
      if (key >= Tn || (p.causal && key > row)) x = -INFINITY;
      float mx = x;
#pragma unroll
      for (int off = 16; off; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float mn = fmaxf(m[r], mx);
      const float ms = mn == -INFINITY ? 0.f : mn;
      const float alpha = __expf(m[r] - ms);
      const float pe = __expf(x - ms);
      float ps = pe;
#pragma unroll
      for (int off = 16; off; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
      l[r] = l[r] * alpha + ps;
      m[r] = mn;
#pragma unroll
      for (int c = 0; c < GMAXC; ++c) o[r][c] *= alpha;
      for (int j = 0; j < GKC; ++j) {
        const float pj = __shfl_sync(0xffffffffu, pe, j);
#pragma unroll
        for (int c = 0; c < GMAXC; ++c) {
          const int e = lane + 32 * c;
          if (e < dv) o[r][c] += pj * Vs[j * ldv + e];
        }
      }
    }
  }
  T* y = static_cast<T*>(p.yo) + (int64_t)bh * Tn * dv;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = q0 + w * 4 + r;
    if (row >= Tn) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
    for (int c = 0; c < GMAXC; ++c) {
      const int e = lane + 32 * c;
      if (e < dv) stf(y + (int64_t)row * dv + e, o[r][c] * inv);
    }
    if (p.lse && lane == 0) p.lse[(int64_t)bh * Tn + row] = l[r] > 0.f ? m[r] + logf(l[r]) : -INFINITY;
  }
}

template <class T>
__global__ void __launch_bounds__(128) bwd_dq_generic_kernel(KP p) {
  extern __shared__ float gsm[];
  const int d = p.d, dv = p.dv, ldk = d + 1, ldv = dv + 1;
  float* Qs = gsm;               // GR x d
  float* dOs = Qs + GR * d;      // GR x dv
  float* Ks = dOs + GR * dv;     // GKC x (d+1)
  float* Vs = Ks + GKC * ldk;    // GKC x (dv+1)
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / p.H, h = bh - b * p.H, hk = h / p.group;
  const int Tn = p.T, q0 = qt * GR;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const T* q = static_cast<const T*>(p.q) + (int64_t)bh * Tn * d;
  const T* dy = static_cast<const T*>(p.dy) + (int64_t)bh * Tn * dv;
  const T* k = static_cast<const T*>(p.k) + (int64_t)(b * p.Hkv + hk) * Tn * d;
  const T* v = static_cast<const T*>(p.v) + (int64_t)(b * p.Hkv + hk) * Tn * dv;
  g_load(Qs, d, q, d, q0, GR, Tn, d);
  g_load(dOs, dv, dy, dv, q0, GR, Tn, dv);
  const int kend = p.causal ? min(Tn, q0 + GR) : Tn;
  float acc[4][GMAXC], L[4], Dr[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = q0 + w * 4 + r;
    L[r] = row < Tn ? p.lsei[(int64_t)bh * Tn + row] : 0.f;
    Dr[r] = row < Tn ? p.Dn[(int64_t)bh * Tn + row] : 0.f;
#pragma unroll
    for (int c = 0; c < GMAXC; ++c) acc[r][c] = 0.f;
  }
  for (int k0 = 0; k0 < kend; k0 += GKC) {
    __syncthreads();
    g_load(Ks, ldk, k, d, k0, GKC, Tn, d);
    g_load(Vs, ldv, v, dv, k0, GKC, Tn, dv);
    __syncthreads();
    const int key = k0 + lane;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int rl = w * 4 + r, row = q0 + rl;
      float sdot = 0.f, pdot = 0.f;
      for (int e = 0; e < d; ++e) sdot += Qs[rl * d + e] * Ks[lane * ldk + e];
      for (int e = 0; e < dv; ++e) pdot += dOs[rl * dv + e] * Vs[lane * ldv + e];
      float pe = __expf(sdot * p.scale - L[r]);
      if (key >= Tn || row >= Tn || (p.causal && key > row)) pe = 0.f;
      const float ds = pe * (pdot - Dr[r]);
      for (int j = 0; j < GKC; ++j) {
        const float dj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
        for (int c = 0; c < GMAXC; ++c) {
          const int e = lane + 32 * c;
          if (e < d) acc[r][c] += dj * Ks[j * ldk + e];
        }
      }
    }
  }
  T* dq = static_cast<T*>(p.dq) + (int64_t)bh * Tn * d;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = q0 + w * 4 + r;
    if (row >= Tn) continue;
#pragma unroll
    for (int c = 0; c < GMAXC; ++c) {
      const int e = lane + 32 * c;
      if (e < d) stf(dq + (int64_t)row * d + e, acc[r][c] * p.scale);
    }
  }
}

// Block owns GR keys (4 per warp); chunks of GKC query rows (lane <-> row) over the GQA group.
template <class T>
__global__ void __launch_bounds__(128) bwd_dkdv_generic_kernel(KP p) {
  extern __shared__ float gsm[];
  const int d = p.d, dv = p.dv, ldq = d + 1, ldo = dv + 1;
  float* Ks = gsm;               // GR x d
  float* Vs = Ks + GR * d;       // GR x dv
  float* Qs = Vs + GR * dv;      // GKC x (d+1)
  float* dOs = Qs + GKC * ldq;   // GKC x (dv+1)
  float* Ls = dOs + GKC * ldo;   // GKC
  float* Ds = Ls + GKC;          // GKC
  const int kt = gridDim.x - 1 - blockIdx.x;
  const int bhk = blockIdx.y, b = bhk / p.Hkv, hk = bhk - b * p.Hkv;
  const int Tn = p.T, k0 = kt * GR;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const T* k = static_cast<const T*>(p.k) + (int64_t)bhk * Tn * d;
  const T* v = static_cast<const T*>(p.v) + (int64_t)bhk * Tn * dv;
  g_load(Ks, d, k, d, k0, GR, Tn, d);
  g_load(Vs, dv, v, dv, k0, GR, Tn, dv);
  float ak[4][GMAXC], av[4][GMAXC];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < GMAXC; ++c) ak[r][c] = av[r][c] = 0.f;
  const int rstart = p.causal ? (k0 / GKC) * GKC : 0;
  for (int hh = hk * p.group; hh < (hk + 1) * p.group; ++hh) {
    const int64_t bh = (int64_t)b * p.H + hh;
    const T* q = static_cast<const T*>(p.q) + bh * Tn * d;
    const T* dy = static_cast<const T*>(p.dy) + bh * Tn * dv;
    for (int r0 = rstart; r0 < Tn; r0 += GKC) {
      __syncthreads();
      g_load(Qs, ldq, q, d, r0, GKC, Tn, d);
      g_load(dOs, ldo, dy, dv, r0, GKC, Tn, dv);
      if (threadIdx.x < GKC) {
        const int row = r0 + threadIdx.x;
        Ls[threadIdx.x] = row < Tn ? p.lsei[bh * Tn + row] : 0.f;
        Ds[threadIdx.x] = row < Tn ? p.Dn[bh * Tn + row] : 0.f;
      }
      __syncthreads();
      const int row = r0 + lane;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int kl = w * 4 + r, key = k0 + kl;
        float sdot = 0.f, pdot = 0.f;
        for (int e = 0; e < d; ++e) sdot += Ks[kl * d + e] * Qs[lane * ldq + e];
        for (int e = 0; e < dv; ++e) pdot += Vs[kl * dv + e] * dOs[lane * ldo + e];
        float pe = __expf(sdot * p.scale - Ls[lane]);
        if (key >= Tn || row >= Tn || (p.causal && key > row)) pe = 0.f;
        const float ds = pe * (pdot - Ds[lane]);
        for (int j = 0; j < GKC; ++j) {
          const float pj = __shfl_sync(0xffffffffu, pe, j);
          const float dj = __shfl_sync(0xffffffffu, ds, j);
#pragma unroll
          for (int c = 0; c < GMAXC; ++c) {
            const int e = lane + 32 * c;
            if (e < dv) av[r][c] += pj * dOs[j * ldo + e];
            if (e < d) ak[r][c] += dj * Qs[j * ldq + e];
          }
        }
      }
    }
  }
  T* dkp = static_cast<T*>(p.dk) + (int64_t)bhk * Tn * d;
  T* dvp = static_cast<T*>(p.dv_) + (int64_t)bhk * Tn * dv;
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int key = k0 + w * 4 + r;
    if (key >= Tn) continue;
#pragma unroll
    for (int c = 0; c < GMAXC; ++c) {
      const int e = lane + 32 * c;
      if (e < d) stf(dkp + (int64_t)key * d + e, ak[r][c] * p.scale);
      if (e < dv) stf(dvp + (int64_t)key * dv + e, av[r][c]);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Host side.
void validate(const SoftmaxAttentionParams& p) {
  if (p.dtype != DType::BF16 && p.dtype != DType::F16 && p.dtype != DType::F32)
    throw Error(ErrorCode::InvalidArgument, std::string("softmax_attention cuda: unsupported dtype ") + dtype_name(p.dtype), "dtype");
  if (p.batch < 0 || p.heads < 0 || p.kv_heads < 0 || p.seqlen < 0 || p.head_dim < 0 || p.value_dim < 0)
    throw Error(ErrorCode::InvalidArgument, "softmax_attention: negative size");
  if (p.kv_heads <= 0 || p.heads % p.kv_heads != 0)
    throw Error(ErrorCode::InvalidArgument, "softmax_attention: heads must be a positive multiple of kv_heads", "kv_heads");
  if (p.head_dim > 256 || p.value_dim > 256 || p.head_dim < 1 || p.value_dim < 1)
    throw Error(ErrorCode::InvalidArgument, "softmax_attention cuda: head_dim and value_dim must be in [1, 256]", "head_dim");
  if (p.seqlen > (int64_t(1) << 30) || p.batch * p.heads > 65535)
    throw Error(ErrorCode::InvalidArgument, "softmax_attention cuda: sizes too large");
  if (!p.q || !p.k || !p.v) throw Error(ErrorCode::InvalidArgument, "softmax_attention: null input");
}

KP make_kp(const SoftmaxAttentionParams& p) {
  KP k{};
  k.B = (int)p.batch; k.H = (int)p.heads; k.Hkv = (int)p.kv_heads; k.T = (int)p.seqlen;
  k.d = (int)p.head_dim; k.dv = (int)p.value_dim; k.group = k.H / k.Hkv; k.causal = p.causal ? 1 : 0;
  k.scale = (float)(p.scale != 0.0 ? p.scale : 1.0 / std::sqrt((double)p.head_dim));
  k.q = p.q; k.k = p.k; k.v = p.v;
  return k;
}

bool aligned16(const void* x) { return (reinterpret_cast<uintptr_t>(x) & 15) == 0; }

bool use_fast(const SoftmaxAttentionParams& p, std::initializer_list<const void*> ptrs) {
  if (p.dtype != DType::BF16 && p.dtype != DType::F16) return false;
  if (p.head_dim != p.value_dim || (p.head_dim != 64 && p.head_dim != 128)) return false;
  for (const void* x : ptrs)
    if (!aligned16(x)) return false;
  return true;
}

template <class K>
void set_smem(K kernel, size_t bytes, const char* what) {
  sa_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), what);
}

template <class T, int D>
void launch_fwd_fast(const KP& k, int64_t BH, cudaStream_t st) {
  constexpr int LD = D + 8;
  const size_t smem = (size_t)(64 + 4 * 64) * LD * sizeof(T);
  set_smem(fwd_mma_kernel<T, D>, smem, "forward smem attribute");
  dim3 grid((k.T + 63) / 64, (unsigned)BH);
  fwd_mma_kernel<T, D><<<grid, 128, smem, st>>>(k);
  sa_check_launch("forward kernel launch");
}

template <class T, int D>
void launch_bwd_fast(const KP& k, cudaStream_t st) {
  constexpr int LD = D + 8;
  constexpr int BR = D == 128 ? 32 : 64;
  {
    const size_t smem = (size_t)(2 * 64 + 4 * BR) * LD * sizeof(T) + 4 * BR * sizeof(float);
    set_smem(bwd_dkdv_mma_kernel<T, D, BR>, smem, "backward dk/dv smem attribute");
    dim3 grid((k.T + 63) / 64, (unsigned)(k.B * k.Hkv));
    bwd_dkdv_mma_kernel<T, D, BR><<<grid, 128, smem, st>>>(k);
    sa_check_launch("backward dk/dv kernel launch");
  }
  {
    const size_t smem = (size_t)(2 * 64 + 4 * 64) * LD * sizeof(T);
    set_smem(bwd_dq_mma_kernel<T, D>, smem, "backward dq smem attribute");
    dim3 grid((k.T + 63) / 64, (unsigned)(k.B * k.H));
    bwd_dq_mma_kernel<T, D><<<grid, 128, smem, st>>>(k);
    sa_check_launch("backward dq kernel launch");
  }
}

template <class T>
void launch_fwd_generic(const KP& k, int64_t BH, cudaStream_t st) {
  const size_t smem = sizeof(float) * ((size_t)GR * k.d + (size_t)GKC * (k.d + 1) + (size_t)GKC * (k.dv + 1));
  set_smem(fwd_generic_kernel<T>, smem, "forward (generic) smem attribute");
  dim3 grid((k.T + GR - 1) / GR, (unsigned)BH);
  fwd_generic_kernel<T><<<grid, 128, smem, st>>>(k);
  sa_check_launch("forward (generic) kernel launch");
}

template <class T>
void launch_bwd_generic(const KP& k, cudaStream_t st) {
  {
    const size_t smem = sizeof(float) * ((size_t)GR * (k.d + k.dv) + (size_t)GKC * (k.d + 1) + (size_t)GKC * (k.dv + 1));
    set_smem(bwd_dq_generic_kernel<T>, smem, "backward dq (generic) smem attribute");
    dim3 grid((k.T + GR - 1) / GR, (unsigned)(k.B * k.H));
    bwd_dq_generic_kernel<T><<<grid, 128, smem, st>>>(k);
    sa_check_launch("backward dq (generic) kernel launch");
  }
  {
    const size_t smem = sizeof(float) * ((size_t)GR * (k.d + k.dv) + (size_t)GKC * (k.d + 1) + (size_t)GKC * (k.dv + 1) + 2 * GKC);
    set_smem(bwd_dkdv_generic_kernel<T>, smem, "backward dk/dv (generic) smem attribute");
    dim3 grid((k.T + GR - 1) / GR, (unsigned)(k.B * k.Hkv));
    bwd_dkdv_generic_kernel<T><<<grid, 128, smem, st>>>(k);
    sa_check_launch("backward dk/dv (generic) kernel launch");
  }
}

template <class T>
void forward_t(const SoftmaxAttentionParams& p, cudaStream_t st) {
  KP k = make_kp(p);
  k.yo = p.y;
  k.lse = static_cast<float*>(p.lse);
  const int64_t BH = p.batch * p.heads;
  if constexpr (!std::is_same<T, float>::value) {
    if (use_fast(p, {p.q, p.k, p.v, p.y})) {
      if (p.head_dim == 64) launch_fwd_fast<T, 64>(k, BH, st);
      else launch_fwd_fast<T, 128>(k, BH, st);
      return;
    }
  }
  launch_fwd_generic<T>(k, BH, st);
}

template <class T>
void backward_t(const SoftmaxAttentionGradParams& g, cudaStream_t st) {
  const SoftmaxAttentionParams& p = g.fwd;
  KP k = make_kp(p);
  k.y = p.y; k.dy = g.dy; k.dq = g.dq; k.dk = g.dk; k.dv_ = g.dv;
  k.lsei = static_cast<const float*>(p.lse);
  const int64_t rows = p.batch * p.heads * p.seqlen;
  float* Dn = nullptr;
  sa_check(cudaMallocAsync(reinterpret_cast<void**>(&Dn), sizeof(float) * (size_t)rows, st), "scratch allocation");
  k.Dn = Dn;
  try {
    bwd_dot_kernel<T><<<(unsigned)((rows + 7) / 8), 256, 0, st>>>(k, rows);
    sa_check_launch("backward dy.y kernel launch");
    bool done = false;
    if constexpr (!std::is_same<T, float>::value) {
      if (use_fast(p, {p.q, p.k, p.v, g.dy, g.dq, g.dk, g.dv})) {
        if (p.head_dim == 64) launch_bwd_fast<T, 64>(k, st);
        else launch_bwd_fast<T, 128>(k, st);
        done = true;
      }
    }
    if (!done) launch_bwd_generic<T>(k, st);
  } catch (...) {
    cudaFreeAsync(Dn, st);
    throw;
  }
  sa_check(cudaFreeAsync(Dn, st), "scratch release");
}

}  // namespace

void softmax_attention_forward_cuda(const SoftmaxAttentionParams& p, void* stream) {
  validate(p);
  if (!p.y) throw Error(ErrorCode::InvalidArgument, "softmax_attention: y is null", "y");
  if (p.batch == 0 || p.heads == 0 || p.seqlen == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::BF16: forward_t<__nv_bfloat16>(p, st); break;
    case DType::F16: forward_t<__half>(p, st); break;
    default: forward_t<float>(p, st); break;
  }
}

void softmax_attention_backward_cuda(const SoftmaxAttentionGradParams& g, void* stream) {
  const SoftmaxAttentionParams& p = g.fwd;
  validate(p);
  if (!p.y || !p.lse) throw Error(ErrorCode::InvalidArgument, "softmax_attention backward: needs the forward's y and lse");
  if (!g.dy || !g.dq || !g.dk || !g.dv) throw Error(ErrorCode::InvalidArgument, "softmax_attention: null gradient pointer");
  if (p.batch == 0 || p.heads == 0 || p.seqlen == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::BF16: backward_t<__nv_bfloat16>(g, st); break;
    case DType::F16: backward_t<__half>(g, st); break;
    default: backward_t<float>(g, st); break;
  }
}

}  // namespace ha
