// CUDA kernels of the feature maps (see feature_map.h), dtypes bf16, f16, f32; fp32 math.
//
// Forward (Hedgehog, T2R): grid (row tiles of kR rows, B*H); the tile's x rows go to shared
//   memory, each thread owns projection columns j and accumulates u[r][j] for the kR rows
//   (W_h read once per tile, coalesced along j); one warp per row then applies the activation
//   (softmax halves with warp max/sum reductions) and writes phi.
// Backward: (1) same tiling, recomputes u and act, forms du (fp32) per row, writes dx = du W^T,
//   and stores du to a stream-ordered fp32 scratch when dw/db are wanted; (2) dw/db partials:
//   grid (d/32, f/32, H * NC), each block sums x^T du over its fixed chunk of the B*T rows of
//   its head; (3) the NC partials are summed in chunk order. NC and the chunk boundaries depend
//   only on the sizes, so dw and db are bitwise deterministic (no atomics).
// EluRaw: elementwise.
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
#include "ops/feature_map/feature_map.h"

namespace ha {
namespace {

void fm_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw Error(ErrorCode::Device, std::string("feature_map CUDA (") + what + "): " + cudaGetErrorString(e));
}
void fm_check_launch(const char* what) { fm_check(cudaGetLastError(), what); }



constexpr int kNT = 256;  // threads per block
constexpr int kR = 16;    // rows per tile

struct FP {
  int B, H, T, d, f, out, kind, act;
  const void *x, *w, *b, *dphi;
  void *phi, *dx;
  float* du;  // scratch [B, H, T, f] or null
};

// Elementwise act of v = sign * u (Exp, Relu, Elu1, Identity; Softmax handled per row).
__device__ __forceinline__ float act_elem(int act, float v) {
  switch (act) {
    case 1: return __expf(v);
    case 2: return fmaxf(v, 0.f);
    case 3: return v > 0.f ? 1.f + v : __expf(v);
    default: return v;
  }
}
// d act(v) / dv given v and out = act(v).
__device__ __forceinline__ float act_deriv(int act, float v, float out) {
  switch (act) {
    case 1: return out;
    case 2: return v > 0.f ? 1.f : 0.f;
    case 3: return v > 0.f ? 1.f : out;
    default: return 1.f;
  }
}

// u[r][j] = b[j] + sum_k x[r][k] W[k][j] for the kR rows of the tile into shared Us (ld f).
template <class T>
__device__ __forceinline__ void project_tile(const FP& p, const float* Xs, float* Us, const T* w, const T* bias) {
  for (int j = threadIdx.x; j < p.f; j += blockDim.x) {
    float acc[kR];
    const float b0 = bias ? ldf(bias + j) : 0.f;
#pragma unroll
    for (int r = 0; r < kR; ++r) acc[r] = b0;
    for (int k = 0; k < p.d; ++k) {
      const float wk = ldf(w + (int64_t)k * p.f + j);
#pragma unroll
      for (int r = 0; r < kR; ++r) acc[r] += Xs[r * p.d + k] * wk;
    }
#pragma unroll
    for (int r = 0; r < kR; ++r) Us[r * p.f + j] = acc[r];
  }
}

template <class T>
__global__ void __launch_bounds__(kNT) fm_forward_kernel(FP p) {
  extern __shared__ float sm[];
  float* Xs = sm;              // kR x d
  float* Us = Xs + kR * p.d;   // kR x f
  const int bh = blockIdx.y, h = bh % p.H, t0 = blockIdx.x * kR;
  const int nr = min(kR, p.T - t0);
  const int64_t row0 = (int64_t)bh * p.T + t0;
  const T* x = static_cast<const T*>(p.x) + row0 * p.d;
  for (int i = threadIdx.x; i < kR * p.d; i += blockDim.x) Xs[i] = i < nr * p.d ? ldf(x + i) : 0.f;
  __syncthreads();
  project_tile<T>(p, Xs, Us, static_cast<const T*>(p.w) + (int64_t)h * p.d * p.f,
                  p.b ? static_cast<const T*>(p.b) + (int64_t)h * p.f : nullptr);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  T* phi = static_cast<T*>(p.phi) + row0 * p.out;
  for (int r = warp; r < nr; r += nw) {
    const float* u = Us + r * p.f;
    T* o = phi + (int64_t)r * p.out;
    if (p.kind == 1) {  // T2R
      for (int j = lane; j < p.f; j += 32) stf(o + j, fmaxf(u[j], 0.f));
    } else if (p.act == 0) {  // softmax halves
      float mp = -INFINITY, mn = -INFINITY;
      for (int j = lane; j < p.f; j += 32) { mp = fmaxf(mp, u[j]); mn = fmaxf(mn, -u[j]); }
      mp = warp_max(mp); mn = warp_max(mn);
      float sp = 0.f, sn = 0.f;
      for (int j = lane; j < p.f; j += 32) { sp += __expf(u[j] - mp); sn += __expf(-u[j] - mn); }
      sp = warp_sum(sp); sn = warp_sum(sn);
      const float ip = 1.f / sp, in = 1.f / sn;
      for (int j = lane; j < p.f; j += 32) {
        stf(o + j, __expf(u[j] - mp) * ip);
        stf(o + p.f + j, __expf(-u[j] - mn) * in);
      }
    } else {
      for (int j = lane; j < p.f; j += 32) {
        stf(o + j, act_elem(p.act, u[j]));
        stf(o + p.f + j, act_elem(p.act, -u[j]));
      }
    }
  }
}

template <class T>
__global__ void fm_elu_forward_kernel(const T* x, T* phi, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = ldf(x + i);
    stf(phi + i, v > 0.f ? 1.f + v : __expf(v));
  }
}
template <class T>
__global__ void fm_elu_backward_kernel(const T* x, const T* dphi, T* dx, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = ldf(x + i);
    stf(dx + i, ldf(dphi + i) * (v > 0.f ? 1.f : __expf(v)));
  }
}

// Backward pass 1: du (shared and scratch) and dx.
template <class T>
__global__ void __launch_bounds__(kNT) fm_backward_du_kernel(FP p) {
  extern __shared__ float sm[];
  float* Xs = sm;              // kR x d
  float* Us = Xs + kR * p.d;   // kR x f (u, then du)
  const int bh = blockIdx.y, h = bh % p.H, t0 = blockIdx.x * kR;
  const int nr = min(kR, p.T - t0);
  const int64_t row0 = (int64_t)bh * p.T + t0;
  const T* x = static_cast<const T*>(p.x) + row0 * p.d;
  const T* w = static_cast<const T*>(p.w) + (int64_t)h * p.d * p.f;
  for (int i = threadIdx.x; i < kR * p.d; i += blockDim.x) Xs[i] = i < nr * p.d ? ldf(x + i) : 0.f;
  __syncthreads();
  project_tile<T>(p, Xs, Us, w, p.b ? static_cast<const T*>(p.b) + (int64_t)h * p.f : nullptr);
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const T* dphi = static_cast<const T*>(p.dphi) + row0 * p.out;
  for (int r = warp; r < kR; r += nw) {
    float* u = Us + r * p.f;
    if (r >= nr) {  // padding rows: du = 0
      for (int j = lane; j < p.f; j += 32) u[j] = 0.f;
      continue;
    }
    const T* g = dphi + (int64_t)r * p.out;
    if (p.kind == 1) {
      for (int j = lane; j < p.f; j += 32) u[j] = u[j] > 0.f ? ldf(g + j) : 0.f;
    } else if (p.act == 0) {
      float mp = -INFINITY, mn = -INFINITY;
      for (int j = lane; j < p.f; j += 32) { mp = fmaxf(mp, u[j]); mn = fmaxf(mn, -u[j]); }
      mp = warp_max(mp); mn = warp_max(mn);
      float sp = 0.f, sn = 0.f;
      for (int j = lane; j < p.f; j += 32) { sp += __expf(u[j] - mp); sn += __expf(-u[j] - mn); }
      sp = warp_sum(sp); sn = warp_sum(sn);
      const float ip = 1.f / sp, in = 1.f / sn;
      float dp = 0.f, dn = 0.f;
      for (int j = lane; j < p.f; j += 32) {
        dp += __expf(u[j] - mp) * ip * ldf(g + j);
        dn += __expf(-u[j] - mn) * in * ldf(g + p.f + j);
      }
      dp = warp_sum(dp); dn = warp_sum(dn);
      for (int j = lane; j < p.f; j += 32) {
        const float op = __expf(u[j] - mp) * ip, on = __expf(-u[j] - mn) * in;
        u[j] = op * (ldf(g + j) - dp) - on * (ldf(g + p.f + j) - dn);
      }
    } else {
      for (int j = lane; j < p.f; j += 32) {
        const float v = u[j];
        const float op = act_elem(p.act, v), on = act_elem(p.act, -v);
        u[j] = act_deriv(p.act, v, op) * ldf(g + j) - act_deriv(p.act, -v, on) * ldf(g + p.f + j);
      }
    }
  }
  __syncthreads();
  if (p.du) {
    float* du = p.du + row0 * p.f;
    for (int i = threadIdx.x; i < nr * p.f; i += blockDim.x) du[i] = Us[i];
  }
  if (p.dx) {
    T* dx = static_cast<T*>(p.dx) + row0 * p.d;
    for (int k = threadIdx.x; k < p.d; k += blockDim.x) {
      float acc[kR];
#pragma unroll
      for (int r = 0; r < kR; ++r) acc[r] = 0.f;
      const T* wk = w + (int64_t)k * p.f;
      for (int j = 0; j < p.f; ++j) {
        const float wv = ldf(wk + j);
#pragma unroll
        for (int r = 0; r < kR; ++r) acc[r] += Us[r * p.f + j] * wv;
      }
#pragma unroll
      for (int r = 0; r < kR; ++r)
        if (r < nr) stf(dx + (int64_t)r * p.d + k, acc[r]);
    }
  }
}

// Backward pass 2: per (head, chunk) partials of dw = x^T du (32 x 32 tiles) and db = sum du.
template <class T>
__global__ void __launch_bounds__(kNT) fm_dw_partial_kernel(FP p, int NC, int64_t chunk, float* pw, float* pb) {
  __shared__ float Xs[32][33];
  __shared__ float Ds[32][33];
  const int k0 = blockIdx.x * 32, j0 = blockIdx.y * 32;
  const int h = blockIdx.z / NC, c = blockIdx.z % NC;
  const int64_t rows = (int64_t)p.B * p.T;
  const int64_t r_begin = c * chunk, r_end = min(rows, (c + 1) * chunk);
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;  // 8 rows of 4 outputs: k = ty + 8i
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  float bacc = 0.f;
  const bool do_b = pb && blockIdx.x == 0;
  const T* x = static_cast<const T*>(p.x);
  for (int64_t r0 = r_begin; r0 < r_end; r0 += 32) {
    for (int i = threadIdx.x; i < 32 * 32; i += blockDim.x) {
      const int rr = i >> 5, cc = i & 31;
      const int64_t gr = r0 + rr;
      float xv = 0.f, dv = 0.f;
      if (gr < r_end) {
        const int64_t b = gr / p.T, t = gr % p.T;
        const int64_t row = (b * p.H + h) * p.T + t;
        if (k0 + cc < p.d) xv = ldf(x + row * p.d + k0 + cc);
        if (j0 + cc < p.f) dv = p.du[row * p.f + j0 + cc];
      }
      Xs[rr][cc] = xv;
      Ds[rr][cc] = dv;
    }
    __syncthreads();
#pragma unroll 8
    for (int rr = 0; rr < 32; ++rr) {
      const float dj = Ds[rr][tx];
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] += Xs[rr][ty + 8 * i] * dj;
    }
    if (do_b && ty == 0)
      for (int rr = 0; rr < 32; ++rr) bacc += Ds[rr][tx];
    __syncthreads();
  }
  const int64_t slot = (int64_t)h * NC + c;
  if (j0 + tx < p.f) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int k = k0 + ty + 8 * i;
      if (k < p.d) pw[(slot * p.d + k) * p.f + j0 + tx] = acc[i];
    }
    if (do_b && ty == 0) pb[slot * p.f + j0 + tx] = bacc;
  }
}

// Backward pass 3: ordered sum of the NC partials.
template <class T>
__global__ void fm_reduce_kernel(const float* part, int NC, int64_t per, int H, T* out) {
  const int64_t n = (int64_t)H * per;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t h = i / per, e = i % per;
    float s = 0.f;
    for (int c = 0; c < NC; ++c) s += part[(h * NC + c) * per + e];
    stf(out + i, s);
  }
}

void validate(const FeatureMapParams& p) {
  if (p.dtype != DType::BF16 && p.dtype != DType::F16 && p.dtype != DType::F32)
    throw Error(ErrorCode::InvalidArgument, std::string("feature_map cuda: unsupported dtype ") + dtype_name(p.dtype), "dtype");
  if (p.batch < 0 || p.heads < 0 || p.seqlen < 0 || p.in_dim < 0 || p.proj_dim < 0)
    throw Error(ErrorCode::InvalidArgument, "feature_map: negative size");
  if (p.kind != FeatureMapKind::Hedgehog && p.kind != FeatureMapKind::T2R && p.kind != FeatureMapKind::EluRaw)
    throw Error(ErrorCode::InvalidArgument, "feature_map: unknown kind", "kind");
  if (p.kind == FeatureMapKind::Hedgehog && (static_cast<int>(p.act) < 0 || static_cast<int>(p.act) > 4))
    throw Error(ErrorCode::InvalidArgument, "feature_map: unknown activation", "act");
  if (!p.x) throw Error(ErrorCode::InvalidArgument, "feature_map: x is null", "x");
  if (p.kind != FeatureMapKind::EluRaw) {
    if (!p.w) throw Error(ErrorCode::InvalidArgument, "feature_map: w is null", "w");
    if (p.in_dim > 4096 || p.proj_dim > 4096)
      throw Error(ErrorCode::InvalidArgument, "feature_map cuda: in_dim and proj_dim must be <= 4096");
    if (p.batch * p.heads > 65535) throw Error(ErrorCode::InvalidArgument, "feature_map cuda: batch * heads > 65535");
  }
}

FP make_fp(const FeatureMapParams& p) {
  FP k{};
  k.B = (int)p.batch; k.H = (int)p.heads; k.T = (int)p.seqlen; k.d = (int)p.in_dim; k.f = (int)p.proj_dim;
  k.out = (int)feature_map_out_dim(p); k.kind = (int)p.kind; k.act = (int)p.act;
  k.x = p.x; k.w = p.w; k.b = p.b; k.phi = p.phi;
  return k;
}

size_t tile_smem(const FP& k) { return sizeof(float) * (size_t)kR * (k.d + k.f); }

template <class K>
void set_smem(K kernel, size_t bytes, const char* what) {
  int dev = 0, optin = 0;
  fm_check(cudaGetDevice(&dev), "cudaGetDevice");
  fm_check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "device attribute");
  if (bytes > (size_t)optin)
    throw Error(ErrorCode::InvalidArgument, "feature_map cuda: in_dim + proj_dim too large for shared memory");
  fm_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), what);
}

unsigned ew_blocks(int64_t n) { return (unsigned)std::max<int64_t>(1, std::min<int64_t>((n + 255) / 256, 65535 * 4)); }

template <class T>
void forward_t(const FeatureMapParams& p, cudaStream_t st) {
  if (p.kind == FeatureMapKind::EluRaw) {
    const int64_t n = p.batch * p.heads * p.seqlen * p.in_dim;
    fm_elu_forward_kernel<T><<<ew_blocks(n), 256, 0, st>>>(static_cast<const T*>(p.x), static_cast<T*>(p.phi), n);
    fm_check_launch("elu forward kernel launch");
    return;
  }
  FP k = make_fp(p);
  const size_t smem = tile_smem(k);
  set_smem(fm_forward_kernel<T>, smem, "forward smem attribute");
  dim3 grid((k.T + kR - 1) / kR, (unsigned)(k.B * k.H));
  fm_forward_kernel<T><<<grid, kNT, smem, st>>>(k);
  fm_check_launch("forward kernel launch");
}

template <class T>
void backward_t(const FeatureMapGradParams& g, cudaStream_t st) {
  const FeatureMapParams& p = g.fwd;
  if (p.kind == FeatureMapKind::EluRaw) {
    if (!g.dx) return;
    const int64_t n = p.batch * p.heads * p.seqlen * p.in_dim;
    fm_elu_backward_kernel<T><<<ew_blocks(n), 256, 0, st>>>(static_cast<const T*>(p.x), static_cast<const T*>(g.dphi),
                                                            static_cast<T*>(g.dx), n);
    fm_check_launch("elu backward kernel launch");
    return;
  }
  FP k = make_fp(p);
  k.dphi = g.dphi;
  k.dx = g.dx;
  void* dw = g.dw;
  void* db = p.b ? g.db : nullptr;
  const bool want_w = dw || db;
  if (!k.dx && !want_w) return;
  const int64_t rows = p.batch * p.seqlen;
  const int NC = (int)std::max<int64_t>(1, std::min<int64_t>(64, rows / 256));
  const int64_t chunk = (rows + NC - 1) / NC;
  float *du = nullptr, *pw = nullptr, *pb = nullptr;
  const size_t du_n = (size_t)(p.batch * p.heads * p.seqlen * p.proj_dim);
  const size_t pw_n = (size_t)(p.heads * NC * p.in_dim * p.proj_dim), pb_n = (size_t)(p.heads * NC * p.proj_dim);
  auto release = [&] {
    if (du) cudaFreeAsync(du, st);
    if (pw) cudaFreeAsync(pw, st);
    if (pb) cudaFreeAsync(pb, st);
  };
  try {
    if (want_w) {
      fm_check(cudaMallocAsync(reinterpret_cast<void**>(&du), std::max<size_t>(du_n, 1) * sizeof(float), st), "scratch allocation");
      if (dw) fm_check(cudaMallocAsync(reinterpret_cast<void**>(&pw), std::max<size_t>(pw_n, 1) * sizeof(float), st), "scratch allocation");
      if (db) fm_check(cudaMallocAsync(reinterpret_cast<void**>(&pb), std::max<size_t>(pb_n, 1) * sizeof(float), st), "scratch allocation");
    }
    k.du = du;
    if (rows > 0 && k.H > 0) {
      const size_t smem = tile_smem(k);
      set_smem(fm_backward_du_kernel<T>, smem, "backward smem attribute");
      dim3 grid((k.T + kR - 1) / kR, (unsigned)(k.B * k.H));
      fm_backward_du_kernel<T><<<grid, kNT, smem, st>>>(k);
      fm_check_launch("backward du/dx kernel launch");
    }
    if (want_w && k.H > 0 && k.f > 0) {
      if (rows > 0 && (pw || pb)) {
        dim3 grid(pw ? (unsigned)((k.d + 31) / 32) : 1u, (unsigned)((k.f + 31) / 32), (unsigned)(k.H * NC));
        if (grid.x == 0) grid.x = 1;
        fm_dw_partial_kernel<T><<<grid, kNT, 0, st>>>(k, NC, chunk, pw ? pw : nullptr, pb);
        fm_check_launch("backward dw partial kernel launch");
      }
      if (rows == 0) {  // empty sums
        if (pw) fm_check(cudaMemsetAsync(pw, 0, pw_n * sizeof(float), st), "memset");
        if (pb) fm_check(cudaMemsetAsync(pb, 0, pb_n * sizeof(float), st), "memset");
      }
      if (dw && k.d > 0) {
        const int64_t per = (int64_t)k.d * k.f;
        fm_reduce_kernel<T><<<ew_blocks(k.H * per), 256, 0, st>>>(pw, NC, per, k.H, static_cast<T*>(dw));
        fm_check_launch("backward dw reduce kernel launch");
      }
      if (db) {
        fm_reduce_kernel<T><<<ew_blocks((int64_t)k.H * k.f), 256, 0, st>>>(pb, NC, k.f, k.H, static_cast<T*>(db));
        fm_check_launch("backward db reduce kernel launch");
      }
    }
  } catch (...) {
    release();
    throw;
  }
  release();
}

}  // namespace

void feature_map_forward_cuda(const FeatureMapParams& p, void* stream) {
  validate(p);
  if (!p.phi) throw Error(ErrorCode::InvalidArgument, "feature_map: phi is null", "phi");
  if (p.batch * p.heads * p.seqlen == 0 || feature_map_out_dim(p) == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (p.dtype) {
    case DType::BF16: forward_t<__nv_bfloat16>(p, st); break;
    case DType::F16: forward_t<__half>(p, st); break;
    default: forward_t<float>(p, st); break;
  }
}

void feature_map_backward_cuda(const FeatureMapGradParams& g, void* stream) {
  validate(g.fwd);
  if (!g.dphi) throw Error(ErrorCode::InvalidArgument, "feature_map: dphi is null", "dphi");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (g.fwd.dtype) {
    case DType::BF16: backward_t<__nv_bfloat16>(g, st); break;
    case DType::F16: backward_t<__half>(g, st); break;
    default: backward_t<float>(g, st); break;
  }
}

}  // namespace ha
