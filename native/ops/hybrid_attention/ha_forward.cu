// Generic forward (any d, dv, F <= 256, any window, every mode): fp32 SIMT tiles.
// grid (nseg, B*H, ceil(dv/kSL)); each block walks its segment of rows in tiles of kR rows:
//   window part: online softmax over the tile's window keys (exact max c_n kept);
//   LA part: inter-chunk fq . S (state in fp32 shared memory) + intra-chunk masked fq fk^T;
//   one shared normaliser; statistics written by the blocks of column slice 0.
#include <cmath>

#include "ops/hybrid_attention/ha_common.cuh"
#include "ops/hybrid_attention/ha_generic_tiles.cuh"

namespace ha {
namespace cuda_detail {

constexpr int kRPT = kR * kSL / kNT;  // output elements per thread (4)

template <class T>
__global__ void __launch_bounds__(kNT) fwd_generic_kernel(KP p, const float* init) {
  extern __shared__ float sm[];
  const int seg = blockIdx.x, bh = blockIdx.y, c0 = blockIdx.z * kSL;
  const int ncol = min(kSL, p.dv - c0);
  const int b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ldd = p.d + 1, ldf_ = p.F + 1, ldv = kSL + 1;
  const int ldk = ldd > ldf_ ? ldd : ldf_;
  float* Qs = sm;                   // kR x ldd
  float* FQs = Qs + kR * ldd;       // kR x ldf_
  float* KB = FQs + kR * ldf_;      // kKC x ldk
  float* Vs = KB + kKC * ldk;       // kKC x ldv
  float* St = Vs + kKC * ldv;       // F x kSL
  float* zt = St + p.F * kSL;       // F
  float* Ps = zt + p.F;             // kR x kKC
  float* rowm = Ps + kR * kKC;      // kR
  float* rowl = rowm + kR;
  float* rowa = rowl + kR;
  float* rowZ = rowa + kR;

  const T* q = (const T*)p.q + (int64_t)bh * p.T * p.d;
  const T* k = (const T*)p.k + ((int64_t)b * p.Hkv + hk) * p.T * p.d;
  const T* v = (const T*)p.v + ((int64_t)b * p.Hkv + hk) * p.T * p.dv;
  const T* fq = (const T*)p.fq + (int64_t)bh * p.T * p.F;
  const T* fk = (const T*)p.fk + (int64_t)bh * p.T * p.F;
  T* y = (T*)p.y + (int64_t)bh * p.T * p.dv;
  const float gw = coef_win(p, b, h), gl = coef_la(p, h);
  const bool win = mode_has_window(p.mode) && gw > 0.f;
  const bool la = mode_has_la(p.mode);

  if (la) {
    const int64_t per = (int64_t)p.F * p.dv + p.F;
    const float* src = init + ((int64_t)bh * p.nseg + seg) * per;
    load_state_slice(St, kSL, p.F, src, p.dv, 1, c0, ncol, zt, p.F, src + (int64_t)p.F * p.dv, 0, p.F);
  }
  const int rs = seg * p.Lseg, re = min(p.T, rs + p.Lseg);
  for (int r0 = rs; r0 < re; r0 += kR) {
    const int nr = min(kR, re - r0);
    float accW[kRPT], accL[kRPT];
#pragma unroll
    for (int i = 0; i < kRPT; ++i) accW[i] = accL[i] = 0.f;
    __syncthreads();
    if (tid < kR) { rowm[tid] = -INFINITY; rowl[tid] = 0.f; rowZ[tid] = 0.f; rowa[tid] = 1.f; }
    if (win) {
      load_tile(Qs, ldd, q, p.d, r0, kR, nr, 0, p.d);
      const int klo = win_lo(p, r0), khi = win_hi(p, r0 + nr - 1);
      for (int kc = klo; kc <= khi; kc += kKC) {
        __syncthreads();
        const int nv = min(kKC, khi + 1 - kc);
        load_tile(KB, ldk, k, p.d, kc, kKC, nv, 0, p.d);
        load_tile(Vs, ldv, v, p.dv, kc, kKC, nv, c0, ncol);
        __syncthreads();
        window_scores(Ps, p, Qs, ldd, KB, ldk, r0, nr, kc, nv);
        __syncthreads();
        for (int r = warp; r < kR; r += kNT / 32) {
          float s = Ps[r * kKC + lane];
          float mx = warp_max(s);
          float mold = rowm[r], mnew = fmaxf(mold, mx);
          float pe = (mnew == -INFINITY || s == -INFINITY) ? 0.f : expf(s - mnew);
          float sum = warp_sum(pe);
          Ps[r * kKC + lane] = pe;
          __syncwarp();  // every lane has read rowm[r] before lane 0 rewrites it
          if (lane == 0) {
            float alpha = (mnew == -INFINITY || mold == -INFINITY) ? (mnew == -INFINITY ? 1.f : 0.f)
                                                                    : expf(mold - mnew);
            rowl[r] = rowl[r] * alpha + sum;
            rowm[r] = mnew;
            rowa[r] = alpha;
          }
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kRPT; ++i) {
          int idx = tid + i * kNT, r = idx / kSL, c = idx % kSL;
          float a = accW[i] * rowa[r];
          for (int kk = 0; kk < kKC; ++kk) a += Ps[r * kKC + kk] * Vs[kk * ldv + c];
          accW[i] = a;
        }
      }
    }
    if (la) {
      __syncthreads();
      load_tile(FQs, ldf_, fq, p.F, r0, kR, nr, 0, p.F);
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kRPT; ++i) {
        int idx = tid + i * kNT, r = idx / kSL, c = idx % kSL;
        float a = 0.f;
        for (int f = 0; f < p.F; ++f) a += FQs[r * ldf_ + f] * St[f * kSL + c];
        accL[i] = a;
      }
      for (int r = warp; r < kR; r += kNT / 32) {
        float a = 0.f;
        for (int f = lane; f < p.F; f += 32) a += FQs[r * ldf_ + f] * zt[f];
        a = warp_sum(a);
        if (lane == 0) rowZ[r] = a;
      }
      // state = sum_{j < mlo}; row 0 starts from the empty state even where m(0) = 1 (la-full, overlap)
      const int mlo = r0 == 0 ? 0 : la_end(p, r0), mhi = la_end(p, r0 + nr - 1);
      for (int kc = mlo; kc < mhi; kc += kKC) {
        __syncthreads();
        const int nv = min(kKC, mhi - kc);
        load_tile(KB, ldk, fk, p.F, kc, kKC, nv, 0, p.F);
        load_tile(Vs, ldv, v, p.dv, kc, kKC, nv, c0, ncol);
        __syncthreads();
        for (int idx = tid; idx < kR * kKC; idx += kNT) {
          int r = idx / kKC, kk = idx % kKC, j = kc + kk;
          float a = 0.f;
          if (r < nr && j < la_end(p, r0 + r)) a = dot_f32(FQs + r * ldf_, KB + kk * ldk, p.F);
          Ps[idx] = a;
        }
        __syncthreads();
        for (int r = warp; r < kR; r += kNT / 32) {
          float a = warp_sum(Ps[r * kKC + lane]);
          if (lane == 0) rowZ[r] += a;
        }
#pragma unroll
        for (int i = 0; i < kRPT; ++i) {
          int idx = tid + i * kNT, r = idx / kSL, c = idx % kSL;
          float a = accL[i];
          for (int kk = 0; kk < kKC; ++kk) a += Ps[r * kKC + kk] * Vs[kk * ldv + c];
          accL[i] = a;
        }
      }
      // advance the state to the next tile's first row
      if (r0 + kR < re) {
        const int mn = la_end(p, r0 + kR);
        for (int kc = mlo; kc < mn; kc += kKC) {
          __syncthreads();
          const int nv = min(kKC, mn - kc);
          load_tile(KB, ldk, fk, p.F, kc, kKC, nv, 0, p.F);
          load_tile(Vs, ldv, v, p.dv, kc, kKC, nv, c0, ncol);
          __syncthreads();
          add_rank_chunk(St, kSL, p.F, Vs, ldv, KB, ldk);
          add_col_sums(zt, p.F, KB, ldk);
        }
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kRPT; ++i) {
      int idx = tid + i * kNT, r = idx / kSL, c = idx % kSL;
      if (r < nr && c < ncol) {
        float den = gw * rowl[r] + gl * rowZ[r];
        float out = den > 0.f ? (gw * accW[i] + gl * accL[i]) / den : 0.f;
        stf(y + (int64_t)(r0 + r) * p.dv + c0 + c, out);
      }
    }
    if (blockIdx.z == 0 && tid < nr) {
      int64_t o = (int64_t)bh * p.T + r0 + tid;
      p.c[o] = win ? rowm[tid] : 0.f;
      p.den_swa[o] = win ? gw * rowl[tid] : 0.f;
      p.den_la[o] = la ? gl * rowZ[tid] : 0.f;
    }
  }
}

template <class T>
static void fwd_generic_t(const KP& p, cudaStream_t st) {
  const int BH = p.B * p.H;
  float* init = nullptr;
  const bool la = mode_has_la(p.mode);
  if (la) {
    size_t bytes = sizeof(float) * (size_t)BH * p.nseg * ((size_t)p.F * p.dv + p.F);
    check(cudaMallocAsync((void**)&init, bytes, st), "workspace alloc");
    launch_la_prefix_states(p, sizeof(T) == 4 ? DType::F32 : (std::is_same<T, __half>::value ? DType::F16 : DType::BF16),
                            init, st);
  }
  const int ldd = p.d + 1, ldf_ = p.F + 1, ldk = ldd > ldf_ ? ldd : ldf_;
  size_t smem = sizeof(float) * ((size_t)kR * ldd + kR * ldf_ + kKC * ldk + kKC * (kSL + 1) +
                                 (size_t)p.F * kSL + p.F + kR * kKC + 4 * kR);
  check(cudaFuncSetAttribute(fwd_generic_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
        "fwd_generic smem");
  dim3 grid(p.nseg, BH, (p.dv + kSL - 1) / kSL);
  fwd_generic_kernel<T><<<grid, kNT, smem, st>>>(p, init);
  check_launch("fwd_generic");
  if (init) check(cudaFreeAsync(init, st), "workspace free");
}

void launch_forward_generic(const KP& p, DType dt, cudaStream_t st) {
  switch (dt) {
    case DType::F32: fwd_generic_t<float>(p, st); break;
    case DType::BF16: fwd_generic_t<__nv_bfloat16>(p, st); break;
    case DType::F16: fwd_generic_t<__half>(p, st); break;
    default: throw std::runtime_error("hybrid_attention CUDA: unsupported dtype");
  }
}

}  // namespace cuda_detail
}  // namespace ha
