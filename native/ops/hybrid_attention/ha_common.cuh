// Shared device-side pieces of the CUDA hybrid-attention kernels: kernel parameters, the
// per-mode index sets of SPEC sec. 2 (window [wlo(n), whi(n)], LA keys [0, m(n))), element
// loads/stores, warp reductions and the launch-check helper.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <stdexcept>
#include <string>

#include "core/cuda_device.cuh"
#include "ops/hybrid_attention/hybrid_attention.h"

namespace ha {
namespace cuda_detail {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("hybrid_attention CUDA (") + what + "): " + cudaGetErrorString(e));
}
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

// Kernel parameters (POD, passed by value).
struct KP {
  int B, H, Hkv, T, d, dv, F, w, S;
  int mode, geom, affine;
  int group;       // H / Hkv
  int Lseg, nseg;  // sequence-parallel segments of rows (or keys)
  float scale;
  const void *q, *k, *v, *fq, *fk;
  const float* gamma;
  const float* keep;
  const void* y;
  const void* dy;
  float *c, *den_swa, *den_la;
};

constexpr int kModeHybrid = 0, kModeSwa = 1, kModeLa = 2, kModeLaFull = 3, kModeOverlap = 4,
              kModeSinks = 5, kModeNone = 6;

__host__ __device__ inline bool mode_has_window(int mode) {
  return mode == kModeHybrid || mode == kModeSwa || mode == kModeOverlap || mode == kModeSinks;
}
__host__ __device__ inline bool mode_has_la(int mode) {
  return mode == kModeHybrid || mode == kModeLa || mode == kModeLaFull || mode == kModeOverlap;
}

// Start of the sliding/terraced window of row n (also the end of Lin(n) for hybrid / la).
__host__ __device__ inline int geo_lo(const KP& p, int n) {
  if (p.geom == 0) { int lo = n - p.w + 1; return lo > 0 ? lo : 0; }
  int lo = (n / p.w - 1) * p.w;
  return lo > 0 ? lo : 0;
}
// LA keys of row n are [0, m(n)); m is non-decreasing in n.
__host__ __device__ inline int la_end(const KP& p, int n) {
  switch (p.mode) {
    case kModeHybrid: case kModeLa: return geo_lo(p, n);
    case kModeLaFull: case kModeOverlap: return n + 1;
    default: return 0;
  }
}
// Window keys of row n are [wlo(n), whi(n)] (both non-decreasing in n).
__host__ __device__ inline int win_lo(const KP& p, int n) {
  if (p.mode == kModeSinks) return 0;
  if (p.mode == kModeHybrid || p.mode == kModeSwa || p.mode == kModeOverlap) return geo_lo(p, n);
  return n + 1;
}
__host__ __device__ inline int win_hi(const KP& p, int n) {
  if (p.mode == kModeSinks) return n < p.S - 1 ? n : p.S - 1;
  if (p.mode == kModeHybrid || p.mode == kModeSwa || p.mode == kModeOverlap) return n;
  return -1;
}
// Coefficient of the window branch (gamma_eff) and of the LA branch (lambda).
__device__ inline float coef_win(const KP& p, int b, int h) {
  // keep = 0 switches the softmax branch off in every mode (swa and sinks then output 0)
  if (p.mode == kModeSwa || p.mode == kModeSinks) return p.keep ? p.keep[b * p.H + h] : 1.f;
  if (p.mode == kModeHybrid || p.mode == kModeOverlap)
    return p.gamma[h] * (p.keep ? p.keep[b * p.H + h] : 1.f);
  return 0.f;
}
__device__ inline float coef_la(const KP& p, int h) {
  if (!mode_has_la(p.mode)) return 0.f;
  return p.affine ? 1.f - p.gamma[h] : 1.f;
}

// First n in [0, T] with m(n) >= x (T if none).
__device__ inline int first_row_la_ge(const KP& p, int x) {
  int lo = 0, hi = p.T;
  while (lo < hi) { int mid = (lo + hi) >> 1; if (la_end(p, mid) >= x) hi = mid; else lo = mid + 1; }
  return lo;
}
__device__ inline int first_row_whi_ge(const KP& p, int x) {
  int lo = 0, hi = p.T;
  while (lo < hi) { int mid = (lo + hi) >> 1; if (win_hi(p, mid) >= x) hi = mid; else lo = mid + 1; }
  return lo;
}
__device__ inline int first_row_wlo_gt(const KP& p, int x) {
  int lo = 0, hi = p.T;
  while (lo < hi) { int mid = (lo + hi) >> 1; if (win_lo(p, mid) > x) hi = mid; else lo = mid + 1; }
  return lo;
}



// Copy rows [row0, row0+nrows) x cols [col0, col0+ncols) of a row-major matrix (row stride ld)
// into shared fp32 (row stride sld); rows >= valid are zero-filled.
template <class T>
__device__ inline void load_tile(float* dst, int sld, const T* src, int64_t ld, int row0, int nrows,
                                 int valid, int col0, int ncols, int padcols = 0) {
  const int w = padcols > ncols ? padcols : ncols;  // columns [ncols, padcols) are zero-filled
  for (int idx = threadIdx.x; idx < nrows * w; idx += blockDim.x) {
    int r = idx / w, c = idx - r * w;
    dst[r * sld + c] = (r < valid && c < ncols) ? ldf(src + (int64_t)(row0 + r) * ld + col0 + c) : 0.f;
  }
}

// Launchers (generic SIMT path; fp32 math) -------------------------------------------------
void launch_forward_generic(const KP& p, DType dt, cudaStream_t st);
void launch_backward_generic(const KP& p, DType dt, void* dq, void* dk, void* dv, void* dfq,
                             void* dfk, float* dgamma, cudaStream_t st);
// Fast path (tensor cores): returns false when it does not apply.
bool fast_path_applies(const KP& p, DType dt);
bool launch_forward_fast(const KP& p, DType dt, cudaStream_t st);
bool launch_backward_fast(const KP& p, DType dt, void* dq, void* dk, void* dv, void* dfq, void* dfk,
                          float* dgamma, cudaStream_t st);

}  // namespace cuda_detail
}  // namespace ha

namespace ha {
namespace cuda_detail {
constexpr int kNT = 256;  // threads per block of the generic kernels
constexpr int kR = 16;    // rows per tile
constexpr int kKC = 32;   // keys per chunk
constexpr int kSL = 64;   // column slice (dv of the forward, F of the backward)

// Per (b, h, segment s): exclusive prefix over segments of sum_{j < m(s*Lseg)} fk_j v_j^T (F x dv)
// and sum fk_j (F), fp32, layout [B*H][nseg][F*dv + F]. `buf` must hold that many floats.
void launch_la_prefix_states(const KP& p, DType dt, float* buf, cudaStream_t st);
// Exclusive prefix (dir=+1, entries 0..nseg-2 valid) or suffix (dir=-1, entries 1..nseg-1 valid)
// over segments, in place.
void launch_segment_scan(float* buf, int BH, int nseg, int64_t per, int dir, cudaStream_t st);
}  // namespace cuda_detail
}  // namespace ha
