// CUDA kernels of the attention-weight transfer loss (see transfer_loss.h), dtypes bf16, f16,
// f32; fp32 math, no T x T storage.
//
// Row pass (forward, and the first step of the backward): grid (row tiles of 16, B*H), 4 warps x
//   4 rows; chunks of 32 keys in shared memory (lane <-> key) give s = scale q.k and g = fq.fk;
//   per row an online softmax accumulates l = sum exp(s - m), acc = sum exp(s - m) log max(g, eps)
//   and Z = sum g (= fq_n . z_n, the prefix sum never needs storing). Then
//     L_n = log max(Z, eps) - acc / l,   lse_n = m + log l,   invZ_n = [Z >= eps] / Z.
//   Forward: each block writes the sum of its rows' L_n to its own slot; one block then sums the
//   slots in index order (fixed tree, f64) and divides by B*H*T: deterministic.
//   Backward: lse_n and invZ_n go to fp32 scratch ([B*H*T] each).
// Backward, with c = dloss / (B H T) and W_ni = invZ_n - [g_ni >= eps] exp(s_ni - lse_n) / g_ni:
//   dfq_n = c sum_{i<=n} W_ni fk_i   (row tiles, lane <-> key, accumulators in registers)
//   dfk_i = c sum_{n>=i} W_ni fq_n   (key tiles, lane <-> row)
//   (the invZ_n fk_i terms sum to z_n / Z_n, as in the CPU version). No atomics.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include "core/cuda_device.cuh"
#include "core/errors.h"
#include "ops/transfer_loss/transfer_loss.h"

namespace ha {
namespace {

void tl_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(ErrorCode::Device, std::string("transfer_loss CUDA (") + what + "): " + cudaGetErrorString(e));
}
void tl_check_launch(const char* what) { tl_check(cudaGetLastError(), what); }



constexpr int kNT = 128;    // 4 warps
constexpr int kR = 16;      // rows (or keys) per block, 4 per warp
constexpr int kC = 32;      // keys (or rows) per chunk: lane <-> key
constexpr int kMaxF = 512;  // feature_dim limit (16 columns per lane)
constexpr int kFC = kMaxF / 32;
constexpr float kEps = 1e-12f;

struct TP {
  int B, H, Hkv, T, d, F, group;
  float scale;
  const void *q, *k, *fq, *fk;
  float* partial;      // forward: per-block loss sums
  float *lse, *invZ;   // backward scratch [B*H*T]
  const float* dloss;  // backward
  void *dfq, *dfk;
};

// out[r] = sum_e A[r * lda + e] * x[e] for r < 4 (A rows broadcast across the warp, x per lane).
__device__ __forceinline__ void dots4(const float* A, int lda, const float* x, int n, float (&out)[4]) {
  float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
#pragma unroll 4
  for (int e = 0; e < n; ++e) {
    const float xv = x[e];
    a0 += A[e] * xv;
    a1 += A[lda + e] * xv;
    a2 += A[2 * lda + e] * xv;
    a3 += A[3 * lda + e] * xv;
  }
  out[0] = a0; out[1] = a1; out[2] = a2; out[3] = a3;
}

template <class T>
__device__ __forceinline__ void g_load(float* dst, int ld, const T* src, int64_t srcld, int row0, int nrows, int Tn,
                                       int ncols) {
  for (int idx = threadIdx.x; idx < nrows * ncols; idx += blockDim.x) {
    const int r = idx / ncols, c = idx - r * ncols;
    const int row = row0 + r;
    dst[r * ld + c] = row < Tn ? ldf(src + (int64_t)row * srcld + c) : 0.f;
  }
}

// Row pass: loss partials (forward) or lse / invZ (backward).
template <class T, bool kBackward>
__global__ void __launch_bounds__(kNT) tl_rows_kernel(TP p) {
  extern __shared__ float sm[];
  const int d = p.d, F = p.F, ldk = d + 1, ldf_ = F + 1;
  float* Qs = sm;                 // kR x d
  float* FQs = Qs + kR * d;       // kR x F
  float* Ks = FQs + kR * F;       // kC x (d+1)
  float* FKs = Ks + kC * ldk;     // kC x (F+1)
  __shared__ float wsum[4];
  const int qt = blockIdx.x;
  const int bh = blockIdx.y, b = bh / p.H, h = bh - b * p.H, hk = h / p.group;
  const int Tn = p.T, q0 = qt * kR;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const T* q = static_cast<const T*>(p.q) + (int64_t)bh * Tn * d;
  const T* fq = static_cast<const T*>(p.fq) + (int64_t)bh * Tn * F;
  const T* k = static_cast<const T*>(p.k) + (int64_t)(b * p.Hkv + hk) * Tn * d;
  const T* fk = static_cast<const T*>(p.fk) + (int64_t)bh * Tn * F;
  g_load(Qs, d, q, d, q0, kR, Tn, d);
  g_load(FQs, F, fq, F, q0, kR, Tn, F);
  const int kend = min(Tn, q0 + kR);
  float m[4], l[4], acc[4], Z[4];
#pragma unroll
  for (int r = 0; r < 4; ++r) { m[r] = -INFINITY; l[r] = 0.f; acc[r] = 0.f; Z[r] = 0.f; }
  for (int k0 = 0; k0 < kend; k0 += kC) {
    __syncthreads();
    g_load(Ks, ldk, k, d, k0, kC, Tn, d);
    g_load(FKs, ldf_, fk, F, k0, kC, Tn, F);
    __syncthreads();
    const int key = k0 + lane;
    float sdv[4], gdv[4];
    dots4(Qs + w * 4 * d, d, Ks + lane * ldk, d, sdv);
    dots4(FQs + w * 4 * F, F, FKs + lane * ldf_, F, gdv);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int rl = w * 4 + r, row = q0 + rl;
      const float sd = sdv[r], gd = gdv[r];
      const bool valid = key < Tn && key <= row;
      const float s = valid ? sd * p.scale : -INFINITY;
      const float gv = valid ? gd : 0.f;
      const float lg = logf(fmaxf(gv, kEps));  // same log as log Z below (T = 1 gives exactly 0)
      const float mx = warp_max(s);
      const float mn = fmaxf(m[r], mx);
      const float ms = mn == -INFINITY ? 0.f : mn;
      const float alpha = __expf(m[r] - ms);
      const float e = __expf(s - ms);
      l[r] = l[r] * alpha + warp_sum(e);
      acc[r] = acc[r] * alpha + warp_sum(e * lg);
      Z[r] += warp_sum(gv);
      m[r] = mn;
    }
  }
  if (kBackward) {
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int row = q0 + w * 4 + r;
        if (row < Tn) {
          p.lse[(int64_t)bh * Tn + row] = m[r] + __logf(l[r]);
          p.invZ[(int64_t)bh * Tn + row] = Z[r] >= kEps ? 1.f / Z[r] : 0.f;
        }
      }
    }
  } else {
    float s = 0.f;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = q0 + w * 4 + r;
      if (row < Tn) s += logf(fmaxf(Z[r], kEps)) - acc[r] / l[r];
    }
    if (lane == 0) wsum[w] = s;
    __syncthreads();
    if (threadIdx.x == 0)
      p.partial[(int64_t)blockIdx.y * gridDim.x + blockIdx.x] = ((wsum[0] + wsum[1]) + wsum[2]) + wsum[3];
  }
}

// Ordered sum of the partials (one block, fixed strides and tree), mean over rows.
__global__ void tl_final_kernel(const float* partial, int64_t n, double inv_rows, float* loss) {
  __shared__ double red[256];
  double s = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int o = 128; o; o >>= 1) {
    if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = static_cast<float>(red[0] * inv_rows);
}

// d loss / d (fq . fk) of one (row, key) pair of the causal set, before the 1 / (B H T) factor:
// 1/Z_n - softmax weight / (fq . fk) (the second term only where fq . fk is counted, >= eps).
__device__ __forceinline__ float pair_weight(float sd, float gd, float scale, float lse, float inv_z) {
  float wv = inv_z;
  if (gd >= kEps) wv -= __expf(sd * scale - lse) / gd;
  return wv;
}

// acc[:] += sum_j w_j X[j][:] for the kC rows of X in shared memory, w_j held by lane j; the lane
// owns columns lane + 32 c.
__device__ __forceinline__ void add_weighted_rows(float (&acc)[kFC], float wv, const float* X, int ldx, int F, int lane) {
  for (int j = 0; j < kC; ++j) {
    const float wj = __shfl_sync(0xffffffffu, wv, j);
#pragma unroll
    for (int c = 0; c < kFC; ++c) {
      const int e = lane + 32 * c;
      if (e < F) acc[c] += wj * X[j * ldx + e];
    }
  }
}

// Rows row0 + 4w + r (r < 4, < Tn) of a [Tn, F] gradient: acc[r] scaled by cc.
template <class T>
__device__ __forceinline__ void store_grad_rows(T* dst, int row0, int w, int Tn, int F, const float (&acc)[4][kFC],
                                                float cc, int lane) {
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = row0 + w * 4 + r;
    if (row >= Tn) continue;
#pragma unroll
    for (int c = 0; c < kFC; ++c) {
      const int e = lane + 32 * c;
      if (e < F) stf(dst + (int64_t)row * F + e, acc[r][c] * cc);
    }
  }
}

// dfq: row tiles, lane <-> key.
template <class T>
__global__ void __launch_bounds__(kNT) tl_dfq_kernel(TP p) {
  extern __shared__ float sm[];
  const int d = p.d, F = p.F, ldk = d + 1, ldf_ = F + 1;
  float* Qs = sm;
  float* FQs = Qs + kR * d;
  float* Ks = FQs + kR * F;
  float* FKs = Ks + kC * ldk;
  const int qt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / p.H, h = bh - b * p.H, hk = h / p.group;
  const int Tn = p.T, q0 = qt * kR;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const T* q = static_cast<const T*>(p.q) + (int64_t)bh * Tn * d;
  const T* fq = static_cast<const T*>(p.fq) + (int64_t)bh * Tn * F;
  const T* k = static_cast<const T*>(p.k) + (int64_t)(b * p.Hkv + hk) * Tn * d;
  const T* fk = static_cast<const T*>(p.fk) + (int64_t)bh * Tn * F;
  g_load(Qs, d, q, d, q0, kR, Tn, d);
  g_load(FQs, F, fq, F, q0, kR, Tn, F);
  const int kend = min(Tn, q0 + kR);
  float L[4], IZ[4], a[4][kFC];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int row = q0 + w * 4 + r;
    L[r] = row < Tn ? p.lse[(int64_t)bh * Tn + row] : 0.f;
    IZ[r] = row < Tn ? p.invZ[(int64_t)bh * Tn + row] : 0.f;
#pragma unroll
    for (int c = 0; c < kFC; ++c) a[r][c] = 0.f;
  }
  for (int k0 = 0; k0 < kend; k0 += kC) {
    __syncthreads();
    g_load(Ks, ldk, k, d, k0, kC, Tn, d);
    g_load(FKs, ldf_, fk, F, k0, kC, Tn, F);
    __syncthreads();
    const int key = k0 + lane;
    float sdv[4], gdv[4];
    dots4(Qs + w * 4 * d, d, Ks + lane * ldk, d, sdv);
    dots4(FQs + w * 4 * F, F, FKs + lane * ldf_, F, gdv);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int rl = w * 4 + r, row = q0 + rl;
      const bool pair = key < Tn && key <= row && row < Tn;
      const float wv = pair ? pair_weight(sdv[r], gdv[r], p.scale, L[r], IZ[r]) : 0.f;
      add_weighted_rows(a[r], wv, FKs, ldf_, F, lane);
    }
  }
  const float cc = *p.dloss / (float)((double)p.B * p.H * Tn);
  store_grad_rows(static_cast<T*>(p.dfq) + (int64_t)bh * Tn * F, q0, w, Tn, F, a, cc, lane);
}

// dfk: key tiles (4 keys per warp), chunks of 32 rows n >= key (lane <-> row).
template <class T>
__global__ void __launch_bounds__(kNT) tl_dfk_kernel(TP p) {
  extern __shared__ float sm[];
  const int d = p.d, F = p.F, ldq = d + 1, ldf_ = F + 1;
  float* Ks = sm;                 // kR x d
  float* FKs = Ks + kR * d;       // kR x F
  float* Qs = FKs + kR * F;       // kC x (d+1)
  float* FQs = Qs + kC * ldq;     // kC x (F+1)
  float* Ls = FQs + kC * ldf_;    // kC
  float* IZs = Ls + kC;           // kC
  const int kt = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / p.H, h = bh - b * p.H, hk = h / p.group;
  const int Tn = p.T, k0 = kt * kR;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const T* q = static_cast<const T*>(p.q) + (int64_t)bh * Tn * d;
  const T* fq = static_cast<const T*>(p.fq) + (int64_t)bh * Tn * F;
  const T* k = static_cast<const T*>(p.k) + (int64_t)(b * p.Hkv + hk) * Tn * d;
  const T* fk = static_cast<const T*>(p.fk) + (int64_t)bh * Tn * F;
  g_load(Ks, d, k, d, k0, kR, Tn, d);
  g_load(FKs, F, fk, F, k0, kR, Tn, F);
  float a[4][kFC];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int c = 0; c < kFC; ++c) a[r][c] = 0.f;
  for (int r0 = (k0 / kC) * kC; r0 < Tn; r0 += kC) {
    __syncthreads();
    g_load(Qs, ldq, q, d, r0, kC, Tn, d);
    g_load(FQs, ldf_, fq, F, r0, kC, Tn, F);
    if (threadIdx.x < kC) {
      const int row = r0 + threadIdx.x;
      Ls[threadIdx.x] = row < Tn ? p.lse[(int64_t)bh * Tn + row] : 0.f;
      IZs[threadIdx.x] = row < Tn ? p.invZ[(int64_t)bh * Tn + row] : 0.f;
    }
    __syncthreads();
    const int row = r0 + lane;
    float sdv[4], gdv[4];
    dots4(Ks + w * 4 * d, d, Qs + lane * ldq, d, sdv);
    dots4(FKs + w * 4 * F, F, FQs + lane * ldf_, F, gdv);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int kl = w * 4 + r, key = k0 + kl;
      const bool pair = key < Tn && row < Tn && key <= row;
      const float wv = pair ? pair_weight(sdv[r], gdv[r], p.scale, Ls[lane], IZs[lane]) : 0.f;
      add_weighted_rows(a[r], wv, FQs, ldf_, F, lane);
    }
  }
  const float cc = *p.dloss / (float)((double)p.B * p.H * Tn);
  store_grad_rows(static_cast<T*>(p.dfk) + (int64_t)bh * Tn * F, k0, w, Tn, F, a, cc, lane);
}

void validate(const TransferLossParams& p) {
  if (p.dtype != DType::BF16 && p.dtype != DType::F16 && p.dtype != DType::F32)
    throw Error(ErrorCode::InvalidArgument, std::string("transfer_loss cuda: unsupported dtype ") + dtype_name(p.dtype), "dtype");
  if (p.batch < 0 || p.heads < 0 || p.kv_heads < 0 || p.seqlen < 0 || p.head_dim < 0 || p.feature_dim < 0)
    throw Error(ErrorCode::InvalidArgument, "transfer_loss: negative size");
  if (p.kv_heads <= 0 || p.heads % p.kv_heads != 0)
    throw Error(ErrorCode::InvalidArgument, "transfer_loss: heads must be a positive multiple of kv_heads", "kv_heads");
  if (p.head_dim > 256 || p.feature_dim > kMaxF)
    throw Error(ErrorCode::InvalidArgument, "transfer_loss cuda: head_dim must be <= 256 and feature_dim <= 512");
  if (p.batch * p.heads > 65535) throw Error(ErrorCode::InvalidArgument, "transfer_loss cuda: batch * heads > 65535");
  if (!p.q || !p.k || !p.fq || !p.fk) throw Error(ErrorCode::InvalidArgument, "transfer_loss: null input");
}

TP make_tp(const TransferLossParams& p) {
  TP t{};
  t.B = (int)p.batch; t.H = (int)p.heads; t.Hkv = (int)p.kv_heads; t.T = (int)p.seqlen;
  t.d = (int)p.head_dim; t.F = (int)p.feature_dim; t.group = t.H / t.Hkv;
  t.scale = (float)(p.scale != 0.0 ? p.scale : 1.0 / std::sqrt((double)p.head_dim));
  t.q = p.q; t.k = p.k; t.fq = p.fq; t.fk = p.fk;
  return t;
}

size_t tile_smem(const TP& t, int extra) {
  return sizeof(float) * ((size_t)kR * (t.d + t.F) + (size_t)kC * (t.d + 1 + t.F + 1) + extra);
}

template <class K>
void set_smem(K kernel, size_t bytes, const char* what) {
  int dev = 0, optin = 0;
  tl_check(cudaGetDevice(&dev), "cudaGetDevice");
  tl_check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "device attribute");
  if (bytes > (size_t)optin)
    throw Error(ErrorCode::InvalidArgument, "transfer_loss cuda: head_dim + feature_dim too large for shared memory");
  tl_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), what);
}

template <class T>
void forward_t(const TransferLossParams& p, cudaStream_t st) {
  TP t = make_tp(p);
  dim3 grid((t.T + kR - 1) / kR, (unsigned)(t.B * t.H));
  const int64_t nblocks = (int64_t)grid.x * grid.y;
  float* partial = nullptr;
  tl_check(cudaMallocAsync(reinterpret_cast<void**>(&partial), sizeof(float) * nblocks, st), "scratch allocation");
  t.partial = partial;
  try {
    const size_t smem = tile_smem(t, 0);
    set_smem(tl_rows_kernel<T, false>, smem, "forward smem attribute");
    tl_rows_kernel<T, false><<<grid, kNT, smem, st>>>(t);
    tl_check_launch("forward kernel launch");
    tl_final_kernel<<<1, 256, 0, st>>>(partial, nblocks, 1.0 / ((double)t.B * t.H * t.T), static_cast<float*>(p.loss));
    tl_check_launch("forward final reduction launch");
  } catch (...) {
    cudaFreeAsync(partial, st);
    throw;
  }
  tl_check(cudaFreeAsync(partial, st), "scratch release");
}

template <class T>
void backward_t(const TransferLossGradParams& g, cudaStream_t st) {
  const TransferLossParams& p = g.fwd;
  TP t = make_tp(p);
  t.dloss = static_cast<const float*>(g.dloss);
  t.dfq = g.dfq;
  t.dfk = g.dfk;
  const int64_t rows = (int64_t)t.B * t.H * t.T;
  float* scratch = nullptr;
  tl_check(cudaMallocAsync(reinterpret_cast<void**>(&scratch), sizeof(float) * 2 * rows, st), "scratch allocation");
  t.lse = scratch;
  t.invZ = scratch + rows;
  try {
    dim3 grid((t.T + kR - 1) / kR, (unsigned)(t.B * t.H));
    const size_t smem = tile_smem(t, 0);
    set_smem(tl_rows_kernel<T, true>, smem, "backward stats smem attribute");
    tl_rows_kernel<T, true><<<grid, kNT, smem, st>>>(t);
    tl_check_launch("backward stats kernel launch");
    set_smem(tl_dfq_kernel<T>, smem, "backward dfq smem attribute");
    tl_dfq_kernel<T><<<grid, kNT, smem, st>>>(t);
    tl_check_launch("backward dfq kernel launch");
    const size_t smem2 = tile_smem(t, 2 * kC);
    set_smem(tl_dfk_kernel<T>, smem2, "backward dfk smem attribute");
    tl_dfk_kernel<T><<<grid, kNT, smem2, st>>>(t);
    tl_check_launch("backward dfk kernel launch");
  } catch (...) {
    cudaFreeAsync(scratch, st);
    throw;
  }
  tl_check(cudaFreeAsync(scratch, st), "scratch release");
}

}  // namespace

void transfer_loss_forward_cuda(const TransferLossParams& p, void* stream) {
  validate(p);
  if (!p.loss) throw Error(ErrorCode::InvalidArgument, "transfer_loss: loss is null", "loss");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (p.batch * p.heads * p.seqlen == 0) {
    tl_check(cudaMemsetAsync(p.loss, 0, sizeof(float), st), "memset");
    return;
  }
  switch (p.dtype) {
    case DType::BF16: forward_t<__nv_bfloat16>(p, st); break;
    case DType::F16: forward_t<__half>(p, st); break;
    default: forward_t<float>(p, st); break;
  }
}

void transfer_loss_backward_cuda(const TransferLossGradParams& g, void* stream) {
  validate(g.fwd);
  if (!g.dloss || !g.dfq || !g.dfk) throw Error(ErrorCode::InvalidArgument, "transfer_loss: null gradient pointer");
  if (g.fwd.batch * g.fwd.heads * g.fwd.seqlen == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (g.fwd.dtype) {
    case DType::BF16: backward_t<__nv_bfloat16>(g, st); break;
    case DType::F16: backward_t<__half>(g, st); break;
    default: backward_t<float>(g, st); break;
  }
}

}  // namespace ha
