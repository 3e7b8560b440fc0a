// Chunked LA state scan, first pass: per-segment state increments sum fk v^T and sum fk, then an
// exclusive prefix (or suffix) over segments, so that every segment of the output pass starts from
// its own state and small B*H still fills the GPU (sequence parallelism).
#include "ops/hybrid_attention/ha_common.cuh"
#include "ops/hybrid_attention/ha_generic_tiles.cuh"

namespace ha {
namespace cuda_detail {

// grid (nseg-1, B*H, ceil(dv/kSL)): keys [m(s*Lseg), m((s+1)*Lseg)) of segment s.
template <class T>
__global__ void __launch_bounds__(kNT) la_state_inc_kernel(KP p, float* buf) {
  extern __shared__ float sm[];
  const int s = blockIdx.x, bh = blockIdx.y, c0 = blockIdx.z * kSL;
  const int ncol = min(kSL, p.dv - c0);
  const int b = bh / p.H, h = bh % p.H, hk = h / p.group;
  const int ldf_ = p.F + 1, ldv = kSL + 1;
  float* St = sm;                   // F x kSL
  float* zt = St + p.F * kSL;       // F
  float* FK = zt + p.F;             // kKC x ldf_
  float* V = FK + kKC * ldf_;       // kKC x ldv
  const T* fk = (const T*)p.fk + (int64_t)bh * p.T * p.F;
  const T* v = (const T*)p.v + ((int64_t)b * p.Hkv + hk) * p.T * p.dv;
  for (int i = threadIdx.x; i < p.F * kSL + p.F; i += blockDim.x) sm[i] = 0.f;
  const int k0 = s == 0 ? 0 : la_end(p, s * p.Lseg), k1 = la_end(p, (s + 1) * p.Lseg);
  for (int kc = k0; kc < k1; kc += kKC) {
    __syncthreads();
    int nv = min(kKC, k1 - kc);
    load_tile(FK, ldf_, fk, p.F, kc, kKC, nv, 0, p.F);
    load_tile(V, ldv, v, p.dv, kc, kKC, nv, c0, ncol);
    __syncthreads();
    add_rank_chunk(St, kSL, p.F, V, ldv, FK, ldf_);
    if (blockIdx.z == 0) add_col_sums(zt, p.F, FK, ldf_);
  }
  __syncthreads();
  const int64_t per = (int64_t)p.F * p.dv + p.F;
  float* out = buf + ((int64_t)bh * p.nseg + s) * per;
  for (int idx = threadIdx.x; idx < p.F * ncol; idx += blockDim.x) {
    int f = idx / ncol, c = idx % ncol;
    out[(int64_t)f * p.dv + c0 + c] = St[f * kSL + c];
  }
  if (blockIdx.z == 0)
    for (int f = threadIdx.x; f < p.F; f += blockDim.x) out[(int64_t)p.F * p.dv + f] = zt[f];
}

// The loads of kScanBatch entries are issued before their stores (one memory round trip per batch,
// not per entry; H100, backward at B=1 H=32 T=16384: 61 -> 24 us).
constexpr int kScanBatch = 8;
__global__ void segment_scan_kernel(float* buf, int BH, int nseg, int64_t per, int dir) {
  int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  int bh = blockIdx.y;
  if (e >= per) return;
  float* base = buf + (int64_t)bh * nseg * per + e;
  float run = 0.f;
  // i: position in scan order (segment s = i, or nseg - 1 - i for dir < 0); the last sum is unused
  for (int i0 = 0; i0 < nseg; i0 += kScanBatch) {
    float x[kScanBatch];
#pragma unroll
    for (int u = 0; u < kScanBatch; ++u) {
      const int i = i0 + u, s = dir > 0 ? i : nseg - 1 - i;
      x[u] = i < nseg - 1 ? base[(int64_t)s * per] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kScanBatch; ++u) {
      const int i = i0 + u, s = dir > 0 ? i : nseg - 1 - i;
      if (i < nseg) base[(int64_t)s * per] = run;
      run += x[u];
    }
  }
}

void launch_segment_scan(float* buf, int BH, int nseg, int64_t per, int dir, cudaStream_t st) {
  dim3 grid((unsigned)((per + 255) / 256), BH);
  segment_scan_kernel<<<grid, 256, 0, st>>>(buf, BH, nseg, per, dir);
  check_launch("segment_scan");
}

template <class T>
static void la_prefix_t(const KP& p, float* buf, cudaStream_t st) {
  const int BH = p.B * p.H;
  const int64_t per = (int64_t)p.F * p.dv + p.F;
  if (p.nseg > 1) {
    size_t smem = sizeof(float) * ((size_t)p.F * kSL + p.F + kKC * (p.F + 1) + kKC * (kSL + 1));
    check(cudaFuncSetAttribute(la_state_inc_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
          "la_state_inc smem");
    dim3 grid(p.nseg - 1, BH, (p.dv + kSL - 1) / kSL);
    la_state_inc_kernel<T><<<grid, kNT, smem, st>>>(p, buf);
    check_launch("la_state_inc");
  }
  launch_segment_scan(buf, BH, p.nseg, per, +1, st);
}

void launch_la_prefix_states(const KP& p, DType dt, float* buf, cudaStream_t st) {
  switch (dt) {
    case DType::F32: la_prefix_t<float>(p, buf, st); break;
    case DType::BF16: la_prefix_t<__nv_bfloat16>(p, buf, st); break;
    case DType::F16: la_prefix_t<__half>(p, buf, st); break;
    default: throw std::runtime_error("hybrid_attention CUDA: unsupported dtype");
  }
}

}  // namespace cuda_detail
}  // namespace ha
