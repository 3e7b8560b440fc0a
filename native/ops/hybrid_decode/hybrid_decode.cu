// CUDA recurrent decode of hybrid attention: see hybrid_decode.h for the semantics, the state
// layout (shared byte for byte with the CPU) and the tensor layouts.
//
// Single-token steps (decode proper) on sm_90+ for sliding windows in modes hybrid, swa, la and
// none run, from 2 heads per SM, the PERSISTENT kernel (step3_kernel, further down): two blocks
// per SM walk the heads, a producer thread streaming each head's state through a ring of TMA
// bulk-copy stages while 8 consumer warps compute; with fewer heads the FUSED kernel
// (step2_kernel): a cluster of blocks per (sequence, q head), each owning rows of S and slots of
// the window, everything it reads in bulk brought into shared memory by TMA bulk copies issued
// first thing, partial results exchanged through distributed shared memory. Other single-token steps (terraced windows, modes la-full, overlap,
// sinks) run the SPLIT kernel: a cluster per head too, each block owning a column slice of S and
// recomputing the window's scores. Everything else (multi-token and ragged steps, the prefill
// with outputs, sm_80, dims neither takes) runs the general step kernel:
//
// General step kernel: one block per (sequence b, q head h), appending the sequence's n_b new
// tokens in order, exactly like the CPU's run_group does per token:
//   1. softmax branch: scores of the window (or sink) keys, max, exp, sum, weighted sum of v;
//   2. linear-attention branch: den = fq.z, num = fq^T S, fused with the fold of the tokens that
//      leave the window (S += fk_j v_j^T, z += fk_j) in ONE pass over S (read once, written once,
//      float4 accesses coalesced along dv); la-full / overlap add the window's fq.fk_i v_i;
//   3. y = (gamma_eff num_soft + lambda num_la) / den, statistics;
//   4. the token's feature key enters the head's fk ring.
// Keys/values of positions >= pos0 (this call's tokens) are read from the input tensors, older
// ones from the ring, which the blocks only READ: the ring slots a call overwrites never hold a
// token that the call still needs (a slot is reused after C positions, every read is within the
// last C positions), but the q heads of a GQA group share a kv ring, so the new keys/values are
// written by the last block of the sequence to finish (an atomic counter in header word 12,
// reset to 0 by that block), which also writes the sinks and the new position. S, z and the fk
// ring of head h are owned by block (b, h) and updated in place. One launch per step.
//
// Prefill: with outputs, the state is reset and the step kernel appends the T0 tokens (reading
// the prefill layout [B, H, T0, *]); without outputs, S and z are built in parallel as
// sum_{j in Lin(T0)} fk_j v_j^T (a reduction over tokens, blocks over (b, h, rows of F)), and the
// ring and sinks are copied.
#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/bulk_copy_sm90.cuh"
#include "core/cuda_device.cuh"
#include "core/mma_sm80.cuh"
#include "ops/hybrid_decode/hybrid_decode.h"

namespace ha {
namespace decode_cuda {

using ll = long long;

constexpr int kNT = 256;  // threads per block
constexpr int kKF = 8;    // fold tokens per pass over S (terraced folds w tokens at a block edge)
constexpr int kU = 8;     // rows of S loaded per thread before use (memory-level parallelism)

[[noreturn]] void fail(const std::string& m) { throw std::invalid_argument("hybrid_decode_cuda: " + m); }
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("hybrid_decode_cuda (") + what + "): " + cudaGetErrorString(e));
}
// Lets `kern` take `bytes` of dynamic shared memory (beyond the 48 KB default); max_carveout: as many
// blocks per SM as shared memory allows (the kernels whose speed is the bytes in flight).
template <class K>
void allow_smem(K* kern, size_t bytes, bool max_carveout = false) {
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), "smem attribute");
  if (max_carveout)
    check(cudaFuncSetAttribute(kern, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared),
          "carveout attribute");
}

// Kernel parameters (POD, by value).
struct DP {
  int B, H, Hkv, hpg, d, dv, F, w, C, NS;
  int mode, geom, affine, outputs;
  int ns, W;  // split kernel: blocks per head along dv, columns per block
  float scale;
  char* state;
  ll bytes;
  ll oS, oz, owk, owv, owfk, osk, osv;
  ll want[9];        // header words 3..11
  const ll* slots;   // device, may be null
  int packed;        // 1: step [N, nh, X]; 0: prefill [B, nh, T0, X]
  ll seqlen;         // prefill T0
  const ll* cu;      // device, may be null
  ll per_seq;
  const void *q, *k, *v, *fq, *fk;
  const float *gamma, *keep;
  void* y;
  float *c, *dsw, *dla;
};

constexpr int kHybrid = 0, kSwa = 1, kLa = 2, kLaFull = 3, kOverlap = 4, kSinks = 5, kNone = 6;


__device__ __forceinline__ ll row_start(const DP& p, int b) { return p.cu ? p.cu[b] : (ll)b * p.per_seq; }
__device__ __forceinline__ ll row_count(const DP& p, int b) {
  return p.packed ? (p.cu ? p.cu[b + 1] - p.cu[b] : p.per_seq) : p.seqlen;
}
// Row of (sequence b, head h of nh, new token t) in a token tensor.
__device__ __forceinline__ ll row_of(const DP& p, int b, int nh, int h, ll t) {
  return p.packed ? (row_start(p, b) + t) * nh + h : ((ll)b * nh + h) * p.seqlen + t;
}
__device__ __forceinline__ char* seq_state(const DP& p, int b) { return p.state + (p.slots ? p.slots[b] : (ll)b) * p.bytes; }

// Start of the window of position n (also the end of Lin(n)).
__device__ __forceinline__ ll geo_lo(const DP& p, ll n) {
  ll lo = p.geom == 0 ? n - p.w + 1 : (n / p.w - 1) * p.w;
  return lo > 0 ? lo : 0;
}

// Block-wide reductions (every thread gets the result); `red` holds 32 floats.
__device__ float block_sum(float x, float* red) {
  x = warp_sum(x);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[wid] = x;
  __syncthreads();
  float r = 0.f;
  for (int i = 0; i < (int)(blockDim.x >> 5); ++i) r += red[i];
  return r;
}
__device__ float block_max(float x, float* red) {
  x = warp_max(x);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) red[wid] = x;
  __syncthreads();
  float r = -INFINITY;
  for (int i = 0; i < (int)(blockDim.x >> 5); ++i) r = fmaxf(r, red[i]);
  return r;
}

// Pointers to the key / value of position i of kv head g, and the feature key of position i of q
// head h: this call's tokens (i >= pos0) from the inputs, older ones from the ring (or sinks).
template <class T>
struct Src {
  const DP& p;
  char* st;
  int b, g, h;
  ll pos0;
  __device__ const T* key(ll i, bool sink) const {
    if (i >= pos0) return (const T*)p.k + row_of(p, b, p.Hkv, g, i - pos0) * p.d;
    if (sink) return (const T*)(st + p.osk) + ((ll)g * p.NS + i) * p.d;
    return (const T*)(st + p.owk) + ((ll)g * p.C + i % p.C) * p.d;
  }
  __device__ const T* val(ll i, bool sink) const {
    if (i >= pos0) return (const T*)p.v + row_of(p, b, p.Hkv, g, i - pos0) * p.dv;
    if (sink) return (const T*)(st + p.osv) + ((ll)g * p.NS + i) * p.dv;
    return (const T*)(st + p.owv) + ((ll)g * p.C + i % p.C) * p.dv;
  }
  __device__ const T* fkey(ll i) const {
    if (i >= pos0) return (const T*)p.fk + row_of(p, b, p.H, h, i - pos0) * p.F;
    return (const T*)(st + p.owfk) + ((ll)h * p.C + i % p.C) * p.F;
  }
};

// out[a] = scale * dot(x (smem, n floats), src(first + a)) for a < cnt; one warp per key.
template <class T, class Get>
__device__ void dots(const float* x, int n, int cnt, float scale, Get get, float* out) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int a = wid; a < cnt; a += nw) {
    const T* row = get(a);
    float s = 0.f;
    for (int e = lane; e < n; e += 32) s += x[e] * ldf(row + e);
    s = warp_sum(s);
    if (lane == 0) out[a] = scale * s;
  }
}

// out[j] += sum_{a < cnt} wts[a] * row(a)[j], j < dv. part: KG * dv floats of scratch.
template <class T, class Get>
__device__ void weighted_rows(const float* wts, int cnt, int dv, Get get, float* part, float* out) {
  const int KG = max(1, (int)blockDim.x / dv);
  __syncthreads();
  for (int idx = threadIdx.x; idx < KG * dv; idx += blockDim.x) {
    const int gi = idx / dv, j = idx - gi * dv;
    float s = 0.f;
    for (int a = gi; a < cnt; a += KG) s += wts[a] * ldf(get(a) + j);
    part[gi * dv + j] = s;
  }
  __syncthreads();
  for (int j = threadIdx.x; j < dv; j += blockDim.x) {
    float s = out[j];
    for (int gi = 0; gi < KG; ++gi) s += part[gi * dv + j];
    out[j] = s;
  }
  __syncthreads();
}

__host__ __device__ inline int r4(int x) { return (x + 3) & ~3; }

// Shared memory plan (floats), identical on the host and the device.
struct Smem {
  int q, fq, sw, sa, acc, lan, part, sfk, sv, red, total;
  __host__ __device__ Smem(int d, int dv, int F, int C, int NS) {
    const int CW = max(C, NS) + 1;
    const int nq = dv % 4 == 0 ? dv / 4 : dv;
    const int RG = max(1, kNT / min(nq, kNT));
    const int KG = max(1, kNT / dv);
    const int NP = max(RG, KG);
    int o = 0;
    q = o; o += r4(d);
    fq = o; o += r4(F);
    sw = o; o += r4(CW);
    sa = o; o += r4(C + 1);
    acc = o; o += r4(dv);
    lan = o; o += r4(dv);
    part = o; o += NP * r4(dv);
    sfk = o; o += kKF * r4(F);
    sv = o; o += kKF * r4(dv);
    red = o; o += 32;
    total = o;
  }
};

// One pass over S of head h (F x dv fp32, row-major): lan[j] += sum_f fq[f] S_old[f, j] when
// do_la; S[f, j] += sum_{k < nfold} sfk[k][f] sv[k][j]. V = 4: float4 along dv (dv % 4 == 0).
template <int V>
__device__ void s_pass(float* S, int F, int dv, const float* fq, bool do_la, const float* sfk, int ldfk,
                       const float* sv, int ldv, int nfold, float* part, float* lan) {
  const int nq = dv / V;
  const int CQ = min(nq, (int)blockDim.x);
  const int RG = blockDim.x / CQ;
  const int tid = threadIdx.x;
  const int rg = tid / CQ, cs = tid - rg * CQ;
  const bool active = rg < RG;
  if (do_la) __syncthreads();
  if (active)
    for (int cq = cs; cq < nq; cq += CQ) {
      float la[V];
#pragma unroll
      for (int e = 0; e < V; ++e) la[e] = 0.f;
      for (int f0 = rg; f0 < F; f0 += RG * kU) {
        float x[kU][V];
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const int f = f0 + u * RG;
          if (f < F) {
            if constexpr (V == 4) {
              const float4 t = *reinterpret_cast<const float4*>(S + (ll)f * dv + cq * 4);
              x[u][0] = t.x; x[u][1] = t.y; x[u][2] = t.z; x[u][3] = t.w;
            } else {
              x[u][0] = S[(ll)f * dv + cq];
            }
          }
        }
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const int f = f0 + u * RG;
          if (f < F) {
            if (do_la) {
              const float a = fq[f];
#pragma unroll
              for (int e = 0; e < V; ++e) la[e] += a * x[u][e];
            }
            if (nfold > 0) {
              for (int kf = 0; kf < nfold; ++kf) {
                const float a = sfk[kf * ldfk + f];
                const float* vv = sv + kf * ldv + cq * V;
#pragma unroll
                for (int e = 0; e < V; ++e) x[u][e] += a * vv[e];
              }
              if constexpr (V == 4) {
                *reinterpret_cast<float4*>(S + (ll)f * dv + cq * 4) = make_float4(x[u][0], x[u][1], x[u][2], x[u][3]);
              } else {
                S[(ll)f * dv + cq] = x[u][0];
              }
            }
          }
        }
      }
      if (do_la) {
#pragma unroll
        for (int e = 0; e < V; ++e) part[rg * dv + cq * V + e] = la[e];
      }
    }
  if (do_la) {
    __syncthreads();
    for (int j = tid; j < dv; j += blockDim.x) {
      float s = lan[j];
      for (int r = 0; r < RG; ++r) s += part[r * dv + j];
      lan[j] = s;
    }
  }
  __syncthreads();
}

template <class T, int V>
__global__ void __launch_bounds__(kNT) step_kernel(DP p) {
  extern __shared__ float4 smem4[];
  float* sm = reinterpret_cast<float*>(smem4);
  const Smem L(p.d, p.dv, p.F, p.C, p.NS);
  float *sq = sm + L.q, *sfq = sm + L.fq, *sw = sm + L.sw, *sa = sm + L.sa, *sacc = sm + L.acc, *slan = sm + L.lan;
  float *part = sm + L.part, *sfk = sm + L.sfk, *sv = sm + L.sv, *red = sm + L.red;
  __shared__ int s_bad, s_last;
  __shared__ ll s_pos;

  const int tid = threadIdx.x;
  const int b = blockIdx.x / p.H, h = blockIdx.x - b * p.H, g = h / p.hpg;
  const int d = p.d, dv = p.dv, F = p.F, C = p.C, NS = p.NS;
  char* st = seq_state(p, b);
  ll* hdr = reinterpret_cast<ll*>(st);
  if (tid == 0) {
    int bad = hdr[0] != kHybridDecodeMagic || hdr[1] != kHybridDecodeVersion || hdr[2] < 0;
    for (int i = 0; i < 9; ++i) bad |= hdr[3 + i] != p.want[i];
    s_bad = bad;
    s_pos = hdr[2];
  }
  __syncthreads();
  const ll nt = row_count(p, b);
  if (s_bad) {  // not a state of this config: leave it alone, poison this block's outputs
    if (p.outputs)
      for (ll t = 0; t < nt; ++t) {
        const ll r = row_of(p, b, p.H, h, t);
        if (p.y) for (int j = tid; j < dv; j += blockDim.x) stf((T*)p.y + r * dv + j, NAN);
        if (tid == 0) {
          if (p.c) p.c[r] = NAN;
          if (p.dsw) p.dsw[r] = NAN;
          if (p.dla) p.dla[r] = NAN;
        }
      }
    return;
  }
  const ll pos0 = s_pos;
  const Src<T> src{p, st, b, g, h, pos0};
  float* S = reinterpret_cast<float*>(st + p.oS) + (ll)h * F * dv;
  float* z = reinterpret_cast<float*>(st + p.oz) + (ll)h * F;
  T* wfk = reinterpret_cast<T*>(st + p.owfk) + (ll)h * C * F;

  const int mode = p.mode;
  const bool soft_win = mode == kHybrid || mode == kSwa || mode == kOverlap;
  const bool soft_sinks = mode == kSinks;
  const bool la_lin = mode == kHybrid || mode == kLa;
  const bool la_full = mode == kLaFull || mode == kOverlap;
  const bool outputs = p.outputs != 0;
  const bool do_la = outputs && (la_lin || la_full) && F > 0;

  float gam = 0.f, g_eff = 0.f, lam = 1.f;
  if (outputs && mode != kNone) {
    gam = p.gamma[h];
    // as the parallel form: swa and sinks drop gamma (it cancels), keep = 0 switches softmax off
    const float kp = p.keep ? p.keep[(ll)b * p.H + h] : 1.f;
    g_eff = (mode == kSwa || mode == kSinks) ? kp : gam * kp;
    lam = p.affine ? 1.f - gam : 1.f;
  }

  for (ll t = 0; t < nt; ++t) {
    const ll n = pos0 + t;
    const ll r = row_of(p, b, p.H, h, t);
    const ll lo = geo_lo(p, n);
    float c_out = 0.f, sum_e = 0.f, la_den = 0.f;
    if (outputs && mode != kNone) {
      for (int e = tid; e < d; e += blockDim.x) sq[e] = ldf((const T*)p.q + r * d + e);
      for (int e = tid; e < F; e += blockDim.x) sfq[e] = ldf((const T*)p.fq + r * F + e);
      for (int j = tid; j < dv; j += blockDim.x) { sacc[j] = 0.f; slan[j] = 0.f; }
      __syncthreads();
      // 1. softmax branch
      if ((soft_win || soft_sinks) && g_eff != 0.f) {  // keep = 0: softmax branch off (c = 0, den_swa = 0)
        const ll cnt_l = soft_win ? n - lo + 1 : min((ll)NS, n + 1);
        const int cnt = (int)cnt_l;
        const ll first = soft_win ? lo : 0;
        if (cnt > 0) {
          dots<T>(sq, d, cnt, p.scale, [&](int a) { return src.key(first + a, soft_sinks); }, sw);
          __syncthreads();
          float mx = -INFINITY;
          for (int a = tid; a < cnt; a += blockDim.x) mx = fmaxf(mx, sw[a]);
          mx = block_max(mx, red);
          float se = 0.f;
          for (int a = tid; a < cnt; a += blockDim.x) {
            const float e = expf(sw[a] - mx);
            sw[a] = e;
            se += e;
          }
          sum_e = block_sum(se, red);
          c_out = mx;
          weighted_rows<T>(sw, cnt, dv, [&](int a) { return src.val(first + a, soft_sinks); }, part, sacc);
        }
      }
      // 2a. linear attention: den from z (S is read in the fused pass below)
      if (do_la) {
        float x = 0.f;
        for (int f = tid; f < F; f += blockDim.x) x += sfq[f] * z[f];
        la_den = block_sum(x, red);
        if (la_full) {  // the window's tokens, with fk from the ring
          const int cnt = (int)(n - lo + 1);
          dots<T>(sfq, F, cnt, 1.f, [&](int a) { return src.fkey(lo + a); }, sa);
          __syncthreads();
          float x2 = 0.f;
          for (int a = tid; a < cnt; a += blockDim.x) x2 += sa[a];
          la_den += block_sum(x2, red);
          weighted_rows<T>(sa, cnt, dv, [&](int a) { return src.val(lo + a, false); }, part, slan);
        }
      }
    }
    // 2b. tokens of Lin(n + 1) \ Lin(n) fold into (S, z), fused with num_la = fq^T S_old
    ll j0 = 0, j1 = 0;
    if (F > 0) {
      const ll m = n + 1;
      if (p.geom == 0) {
        j0 = m - p.w;
        j1 = j0 >= 0 ? j0 + 1 : j0;
      } else if (m % p.w == 0 && m >= 2 * (ll)p.w) {
        j0 = m - 2 * (ll)p.w;
        j1 = m - p.w;
      }
    }
    bool la_pending = do_la;
    for (ll jc = j0; jc < j1 || la_pending; jc += kKF) {
      const int nfold = (int)max((ll)0, min((ll)kKF, j1 - jc));
      if (nfold == 0 && !la_pending) break;
      __syncthreads();
      const int ldfk = r4(F), ldv = r4(dv);
      for (int idx = tid; idx < nfold * F; idx += blockDim.x) {
        const int kf = idx / F, f = idx - kf * F;
        sfk[kf * ldfk + f] = ldf(src.fkey(jc + kf) + f);
      }
      for (int idx = tid; idx < nfold * dv; idx += blockDim.x) {
        const int kf = idx / dv, j = idx - kf * dv;
        sv[kf * ldv + j] = ldf(src.val(jc + kf, false) + j);
      }
      __syncthreads();
      s_pass<V>(S, F, dv, sfq, la_pending, sfk, ldfk, sv, ldv, nfold, part, slan);
      for (int f = tid; f < F; f += blockDim.x) {  // z after den read it (s_pass synchronised)
        float s = z[f];
        for (int kf = 0; kf < nfold; ++kf) s += sfk[kf * ldfk + f];
        if (nfold > 0) z[f] = s;
      }
      la_pending = false;
      if (nfold == 0) break;
    }
    __syncthreads();
    // 3. outputs
    if (outputs) {
      float dsw = 0.f, dla = 0.f;
      if (mode != kNone) {
        dsw = g_eff * sum_e;
        dla = lam * la_den;
      }
      const float den = dsw + dla;
      if (p.y) {
        T* yr = (T*)p.y + r * dv;
        if (mode != kNone && den != 0.f) {
          const float inv = 1.f / den;
          for (int j = tid; j < dv; j += blockDim.x) stf(yr + j, (g_eff * sacc[j] + lam * slan[j]) * inv);
        } else {
          for (int j = tid; j < dv; j += blockDim.x) stf(yr + j, 0.f);
        }
      }
      if (tid == 0) {
        if (p.c) p.c[r] = mode == kNone ? 0.f : c_out;
        if (p.dsw) p.dsw[r] = dsw;
        if (p.dla) p.dla[r] = dla;
      }
    }
    // 4. the token's feature key enters this head's ring (slot n % C held n - C, never read again)
    if (F > 0) {
      const T* src_fk = (const T*)p.fk + row_of(p, b, p.H, h, t) * F;
      T* dst = wfk + (n % C) * F;
      for (int f = tid; f < F; f += blockDim.x) dst[f] = src_fk[f];
    }
    __syncthreads();
  }

  // The last block of the sequence writes the shared kv ring, the sinks and the position.
  if (tid == 0) {
    __threadfence();
    const unsigned old = atomicInc(reinterpret_cast<unsigned*>(hdr + 12), (unsigned)(p.H - 1));
    s_last = old == (unsigned)(p.H - 1);
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const ll t0 = nt > C ? nt - C : 0;
  for (int gg = 0; gg < p.Hkv; ++gg) {
    T* wk = reinterpret_cast<T*>(st + p.owk) + (ll)gg * C * d;
    T* wv = reinterpret_cast<T*>(st + p.owv) + (ll)gg * C * dv;
    T* sk = reinterpret_cast<T*>(st + p.osk) + (ll)gg * NS * d;
    T* svv = reinterpret_cast<T*>(st + p.osv) + (ll)gg * NS * dv;
    for (ll t = 0; t < nt; ++t) {
      const ll n = pos0 + t;
      const bool ring = t >= t0, sink = n < NS;
      if (!ring && !sink) continue;
      const T* kn = (const T*)p.k + row_of(p, b, p.Hkv, gg, t) * d;
      const T* vn = (const T*)p.v + row_of(p, b, p.Hkv, gg, t) * dv;
      for (int e = tid; e < d; e += blockDim.x) {
        const T x = kn[e];
        if (ring) wk[(n % C) * d + e] = x;
        if (sink) sk[n * d + e] = x;
      }
      for (int e = tid; e < dv; e += blockDim.x) {
        const T x = vn[e];
        if (ring) wv[(n % C) * dv + e] = x;
        if (sink) svv[n * dv + e] = x;
      }
    }
  }
  if (tid == 0) hdr[2] = pos0 + nt;
}

// Single-token step, split along dv (terraced; la-full, overlap, sinks) ---------------------------
//
// One CLUSTER of `ns` blocks per (sequence b, q head h); block s owns the column slice
// [s W, (s + 1) W) of S (W = dv / ns) and computes y[slice] completely: the softmax scores are
// recomputed by every block of the cluster (the window's keys come from L2 after the first),
// the weights multiply only the slice of the values, num_la[slice] = fq^T S[:, slice], and the
// fold updates S[:, slice]. den = fq.z needs all of z, which one block then updates: a cluster
// barrier (arrive right after z was read, wait right before it is written) orders the reads
// before the write without stalling anyone. The slice of S is loaded into registers FIRST, so
// its HBM latency overlaps the header read and the whole softmax branch; each thread holds KR
// rows of one float4 column quad. Ring writes need no ordering within a single-token step (slot
// n % C is read by nobody: it holds position n - C, outside every window and fold of position
// n), so they are spread over the blocks; the header position is still written by the last
// block of the sequence (counter in header word 12). Clusters need sm_90; elsewhere (and for
// multi-token steps, dv or d not multiples of 4, or F too large for the registers) the general
// kernel above runs.
constexpr int kNT1 = 128;  // threads per block of the split kernel
constexpr int kVP = 4;     // value quads per thread prefetched before the softmax weights are known
// Tuning variants (HybridDecodeStepParams::variant): keys per warp whose loads are in flight
// together (KC; 16 = all of a 64-token window) and resident blocks per SM the registers must
// allow (MB): 0 and 2..5 = (16, 3): one round trip for the keys, 168 registers; 1 = (8, 4): two
// round trips, 128 registers (a few spills).

// Four consecutive elements: loaded raw (8 bytes for 16-bit types: half the registers while in
// flight) and converted to fp32 at use.
template <class T> struct Raw4 { using type = uint2; };
template <> struct Raw4<float> { using type = float4; };
template <class T> __device__ __forceinline__ typename Raw4<T>::type ldraw4(const T* p) {
  return *reinterpret_cast<const typename Raw4<T>::type*>(p);
}
template <class T> __device__ __forceinline__ float4 cvt4(const typename Raw4<T>::type& u);
template <> __device__ __forceinline__ float4 cvt4<float>(const float4& u) { return u; }
template <> __device__ __forceinline__ float4 cvt4<__nv_bfloat16>(const uint2& u) {
  const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
template <> __device__ __forceinline__ float4 cvt4<__half>(const uint2& u) {
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&u.x));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&u.y));
  return make_float4(a.x, a.y, b.x, b.y);
}
template <class T> __device__ __forceinline__ float4 ld4(const T* p) { return cvt4<T>(ldraw4(p)); }
__device__ __forceinline__ void fma4(float4& a, float w, const float4& x) {
  a.x += w * x.x; a.y += w * x.y; a.z += w * x.z; a.w += w * x.w;
}

// Split arrive / wait of the cluster barrier (sm_90+; never reached elsewhere: ns == 1 there).
__device__ __forceinline__ void cluster_arrive() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

// Shared memory plan of the split kernel (floats), identical on the host and the device.
struct Smem1 {
  int q, fq, z, sw, sa, ps, pf, pl, sfk, sv, total;
  __host__ __device__ Smem1(int d, int F, int W, int C, int NS) {
    const int CW = max(C, NS) + 1;
    int o = 0;
    q = o; o += r4(d);
    fq = o; o += r4(F);
    z = o; o += r4(F);
    sw = o; o += r4(CW);
    sa = o; o += r4(C + 1);
    ps = o; o += 4 * kNT1;  // partial sums: (key or row group) x W <= 4 kNT1 (W / 4 <= kNT1)
    pf = o; o += 4 * kNT1;
    pl = o; o += 4 * kNT1;
    sfk = o; o += kKF * r4(F);
    sv = o; o += kKF * W;
    total = o;
  }
};

template <class T, int KR, int KC, int MB>
__global__ void __launch_bounds__(kNT1, MB) step1_kernel(DP p) {
  constexpr int kKC = KC;
  extern __shared__ float4 smem4[];
  float* sm = reinterpret_cast<float*>(smem4);
  const int d = p.d, dv = p.dv, F = p.F, C = p.C, NS = p.NS, ns = p.ns, W = p.W;
  const Smem1 L(d, F, W, C, NS);
  float *sq = sm + L.q, *sfq = sm + L.fq, *sz = sm + L.z, *sw = sm + L.sw, *sa = sm + L.sa;
  float *ps = sm + L.ps, *pf = sm + L.pf, *pl = sm + L.pl;
  float *sfk = sm + L.sfk, *sv = sm + L.sv;
  __shared__ int s_bad;
  __shared__ ll s_hdr[12];

  const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
  const int s = blockIdx.x % ns;
  const int bh = blockIdx.x / ns;
  const int b = bh / p.H, h = bh - b * p.H, g = h / p.hpg;
  const int col0 = s * W;  // first column of this block's slice
  const int NQ = W / 4;    // column quads of the slice (<= kNT1)
  const int RG = kNT1 / NQ;
  const int cq = tid % NQ, rg = tid / NQ;
  const bool active = rg < RG;
  char* st = seq_state(p, b);
  ll* hdr = reinterpret_cast<ll*>(st);
  float* S = reinterpret_cast<float*>(st + p.oS) + (ll)h * F * dv + col0 + cq * 4;
  float* z = reinterpret_cast<float*>(st + p.oz) + (ll)h * F;

  // Latency: every global load is issued in a batch before the first use of any of them (a
  // store between two loads would keep the compiler from hoisting the second over it), so a
  // block waits about three memory round trips: (1) everything that does not depend on the
  // position, (2) fold sources, value prefetch and the first chunk of keys, (3) the rest of the
  // keys; the S pass then finds its slice in registers.
  // 1. the slice of S, the header, q, fq, z, gamma / keep and this block's ring-copy sources
  float4 x[KR];
#pragma unroll
  for (int u = 0; u < KR; ++u) {
    const int f = rg + u * RG;
    if (active && f < F) x[u] = *reinterpret_cast<const float4*>(S + (ll)f * dv);
  }
  const int mode = p.mode;
  const bool soft_win = mode == kHybrid || mode == kSwa || mode == kOverlap;
  const bool soft_sinks = mode == kSinks;
  const bool la_lin = mode == kHybrid || mode == kLa;
  const bool la_full = mode == kLaFull || mode == kOverlap;
  const bool outputs = p.outputs != 0;
  const bool live = outputs && mode != kNone;
  const bool do_la = live && (la_lin || la_full) && F > 0;
  const ll r = (ll)b * p.H + h;  // row of (b, h) in the packed single-token layout
  float gam = 0.f, kp = 1.f;
  if (live) {
    gam = p.gamma[h];
    if (p.keep) kp = p.keep[r];
  }
  const bool kv_writer = h % p.hpg == 0;  // the group's first q head copies the kv token
  const int ie = s * kNT1 + tid;          // fk / k element this thread copies (strided over splits)
  const T* fk_in = (const T*)p.fk + r * F;
  const T* k_in = (const T*)p.k + ((ll)b * p.Hkv + g) * d;
  const T* v_in = (const T*)p.v + ((ll)b * p.Hkv + g) * dv + col0;
  const bool c_fk = ie < F, c_k = kv_writer && ie < d, c_v = kv_writer && tid < W;
  T t_fk{}, t_k{}, t_v{};
  if (c_fk) t_fk = fk_in[ie];
  if (c_k) t_k = k_in[ie];
  if (c_v) t_v = v_in[tid];
  for (int e = tid; e < max(max(d, F), 12); e += kNT1) {  // header words 0..11 ride along
    float a1 = 0.f, a2 = 0.f, a3 = 0.f;
    ll a4 = 0;
    if (live && e < d) a1 = ldf((const T*)p.q + r * d + e);
    if (live && e < F) a2 = ldf((const T*)p.fq + r * F + e);
    if (e < F) a3 = z[e];
    if (e < 12) a4 = hdr[e];
    if (live && e < d) sq[e] = a1;
    if (live && e < F) sfq[e] = a2;
    if (e < F) sz[e] = a3;
    if (e < 12) s_hdr[e] = a4;
  }
  __syncthreads();
  if (tid == 0) {
    int bad = s_hdr[0] != kHybridDecodeMagic || s_hdr[1] != kHybridDecodeVersion || s_hdr[2] < 0;
    for (int i = 0; i < 9; ++i) bad |= s_hdr[3 + i] != p.want[i];
    s_bad = bad;
  }
  __syncthreads();
  if (s_bad) {  // not a state of this config: leave it alone, poison this block's outputs
    if (outputs) {
      if (p.y) for (int j = tid; j < W; j += kNT1) stf((T*)p.y + r * dv + col0 + j, NAN);
      if (tid == 0 && s == 0) {
        if (p.c) p.c[r] = NAN;
        if (p.dsw) p.dsw[r] = NAN;
        if (p.dla) p.dla[r] = NAN;
      }
    }
    return;  // every block of the cluster sees the same header: none waits at the barrier
  }
  if (ns > 1) cluster_arrive();  // this block's reads of z are complete (sz)
  const ll n = s_hdr[2];
  const Src<T> src{p, st, b, g, h, n};
  const ll lo = geo_lo(p, n);
  const float g_eff = live ? ((mode == kSwa || mode == kSinks) ? kp : gam * kp) : 0.f;
  const float lam = live && p.affine ? 1.f - gam : 1.f;

  // tokens of Lin(n + 1) \ Lin(n): the fold
  ll j0 = 0, j1 = 0;
  if (F > 0) {
    const ll m = n + 1;
    if (p.geom == 0) {
      j0 = m - p.w;
      j1 = j0 >= 0 ? j0 + 1 : j0;
    } else if (m % p.w == 0 && m >= 2 * (ll)p.w) {
      j0 = m - 2 * (ll)p.w;
      j1 = m - p.w;
    }
  }
  const int ldfk = r4(F);
  // fold item idx of a chunk starting at position jc: feature key element / value quad
  auto fold_fk = [&](ll jc, int idx) { return ldf(src.fkey(jc + idx / F) + idx % F); };
  auto fold_v = [&](ll jc, int idx) { return ld4(src.val(jc + idx / NQ, false) + col0 + (idx % NQ) * 4); };
  auto put_fk = [&](int idx, float a) { sfk[(idx / F) * ldfk + idx % F] = a; };
  auto put_v = [&](int idx, const float4& a) { *reinterpret_cast<float4*>(sv + (idx / NQ) * W + (idx % NQ) * 4) = a; };
  // the S pass as soon as the position is known: num_la[slice] = fq^T S_old[:, slice], then,
  // when one token folds (every step of the sliding window), S[:, slice] += fk_j v_j[slice]^T
  // from registers and the slice goes back to memory: x is dead before the softmax branch.
  // Several tokens (terraced block edges) fold after the outputs, through shared memory.
  const bool fold1 = j1 - j0 == 1 && F <= kNT1;
  float4 la4 = make_float4(0.f, 0.f, 0.f, 0.f);
  float zadd = 0.f;  // fk_j[tid]: z's share of the single-token fold
  {
    float fkr[KR];
    float4 vq = make_float4(0.f, 0.f, 0.f, 0.f);
    if (fold1) {
      const T* fkj = src.fkey(j0);
      if (active) vq = ld4(src.val(j0, false) + col0 + cq * 4);
#pragma unroll
      for (int u = 0; u < KR; ++u) {
        const int f = rg + u * RG;
        fkr[u] = active && f < F ? ldf(fkj + f) : 0.f;
      }
      if (tid < F) zadd = ldf(fkj + tid);
    }
    if (active) {
      if (do_la) {
#pragma unroll
        for (int u = 0; u < KR; ++u) {
          const int f = rg + u * RG;
          if (f < F) fma4(la4, sfq[f], x[u]);
        }
      }
      if (fold1) {
#pragma unroll
        for (int u = 0; u < KR; ++u) {
          const int f = rg + u * RG;
          if (f < F) {
            fma4(x[u], fkr[u], vq);
            *reinterpret_cast<float4*>(S + (ll)f * dv) = x[u];
          }
        }
      }
    }
  }

  // 2. softmax scores: one warp per key, float4 along d, keys in chunks of kKC per warp whose
  // loads are all in flight together; ring slots without 64-bit modulo in the loop
  const bool soft = live && (soft_win || soft_sinks) && g_eff != 0.f;
  const int cnt = soft ? (int)(soft_win ? n - lo + 1 : min((ll)NS, n + 1)) : 0;
  const ll first = soft_win ? lo : 0;
  const int slot0 = soft_win ? (int)(first % C) : 0;
  const T* kring = reinterpret_cast<const T*>(st + (soft_sinks ? p.osk : p.owk)) + (ll)g * (soft_sinks ? NS : C) * d;
  const T* vring = reinterpret_cast<const T*>(st + (soft_sinks ? p.osv : p.owv)) + (ll)g * (soft_sinks ? NS : C) * dv + col0;
  auto kslot = [&](int a) {  // ring (or sink) slot of window entry a, which is older than n
    if (soft_sinks) return a;
    const int sl = slot0 + a;
    return sl >= C ? sl - C : sl;
  };
  auto key_of = [&](int a) { return first + a >= n ? k_in : kring + (ll)kslot(a) * d; };
  auto val_of = [&](int a) { return first + a >= n ? v_in : vring + (ll)kslot(a) * dv; };
  const int KG = kNT1 / NQ;  // key groups of the weighted sums
  const int kg = tid / NQ;
  typename Raw4<T>::type vpre[kVP];
  if (soft) {
    // the first values of this thread's keys, before the weights are known
#pragma unroll
    for (int i = 0; i < kVP; ++i) {
      const int a = kg + i * KG;
      if (active && a < cnt) vpre[i] = ldraw4(val_of(a) + cq * 4);
    }
    const int e0 = lane * 4;
    const float4 qv = e0 < d ? make_float4(sq[e0], sq[e0 + 1], sq[e0 + 2], sq[e0 + 3]) : make_float4(0.f, 0.f, 0.f, 0.f);
    for (int a0 = wid; a0 < cnt; a0 += kKC * (kNT1 / 32)) {
      typename Raw4<T>::type kk[kKC];
#pragma unroll
      for (int i = 0; i < kKC; ++i) {
        const int a = a0 + i * (kNT1 / 32);
        if (a < cnt && e0 < d) kk[i] = ldraw4(key_of(a) + e0);
      }
#pragma unroll
      for (int i = 0; i < kKC; ++i) {  // loads all issued above: these only wait for their data
        const int a = a0 + i * (kNT1 / 32);
        float sc = 0.f;
        if (a < cnt) {
          if (e0 < d) {
            const float4 kf = cvt4<T>(kk[i]);
            sc = qv.x * kf.x + qv.y * kf.y + qv.z * kf.z + qv.w * kf.w;
          }
          for (int e = e0 + 128; e < d; e += 128) {  // d > 128
            const float4 k2 = ld4(key_of(a) + e);
            sc += sq[e] * k2.x + sq[e + 1] * k2.y + sq[e + 2] * k2.z + sq[e + 3] * k2.w;
          }
        }
        sc = warp_sum(sc);
        if (lane == 0 && a < cnt) sw[a] = p.scale * sc;
      }
    }
  }
  const int cnt_f = la_full && do_la ? (int)(n - lo + 1) : 0;
  for (int a = wid; a < cnt_f; a += kNT1 / 32) {
    const T* row = src.fkey(lo + a);
    float s2 = 0.f;
    for (int e = lane; e < F; e += 32) s2 += sfq[e] * ldf(row + e);
    s2 = warp_sum(s2);
    if (lane == 0) sa[a] = s2;
  }
  // LA denominator, every warp on its own (no block barrier)
  float la_den = 0.f;
  if (do_la) {
    float t = 0.f;
    for (int f = lane; f < F; f += 32) t += sfq[f] * sz[f];
    la_den = warp_sum(t);
  }
  __syncthreads();

  // 3. softmax max / sum (every warp redundantly), weighted values of the slice
  float c_out = 0.f, sum_e = 0.f;
  float4 acc4 = make_float4(0.f, 0.f, 0.f, 0.f);
  if (soft) {
    float mx = -INFINITY;
    for (int a = lane; a < cnt; a += 32) mx = fmaxf(mx, sw[a]);
    mx = warp_max(mx);
    float se = 0.f;
    for (int a = lane; a < cnt; a += 32) se += expf(sw[a] - mx);
    sum_e = warp_sum(se);
    c_out = mx;
    if (active) {
#pragma unroll
      for (int i = 0; i < kVP; ++i) {
        const int a = kg + i * KG;
        if (a < cnt) fma4(acc4, expf(sw[a] - mx), cvt4<T>(vpre[i]));
      }
      for (int a = kg + kVP * KG; a < cnt; a += KG) fma4(acc4, expf(sw[a] - mx), ld4(val_of(a) + cq * 4));
    }
  }
  float4 accf = make_float4(0.f, 0.f, 0.f, 0.f);
  if (active)
    for (int a = kg; a < cnt_f; a += KG) fma4(accf, sa[a], ld4(src.val(lo + a, false) + col0 + cq * 4));
  for (int a = 0; a < cnt_f; ++a) la_den += sa[a];  // the window's fq.fk, same order everywhere
  if (active) {
    *reinterpret_cast<float4*>(ps + kg * W + cq * 4) = acc4;
    *reinterpret_cast<float4*>(pf + kg * W + cq * 4) = accf;
    *reinterpret_cast<float4*>(pl + rg * W + cq * 4) = la4;
  }
  if (fold1 && tid < F) sz[tid] += zadd;  // every warp has read sz for den (barrier above)
  __syncthreads();

  // 4. outputs of the slice
  if (outputs) {
    float dsw = 0.f, dla = 0.f;
    if (live) {
      dsw = g_eff * sum_e;
      dla = lam * la_den;
    }
    const float den = dsw + dla;
    if (p.y) {
      T* yr = (T*)p.y + r * dv + col0;
      for (int j = tid; j < W; j += kNT1) {
        float num_s = 0.f, num_l = 0.f;
        for (int k2 = 0; k2 < KG; ++k2) num_s += ps[k2 * W + j];
        for (int k2 = 0; k2 < KG; ++k2) num_l += pf[k2 * W + j];
        for (int r2 = 0; r2 < RG; ++r2) num_l += pl[r2 * W + j];
        stf(yr + j, live && den != 0.f ? (g_eff * num_s + lam * num_l) / den : 0.f);
      }
    }
    if (tid == 0 && s == 0) {
      if (p.c) p.c[r] = live ? c_out : 0.f;
      if (p.dsw) p.dsw[r] = dsw;
      if (p.dla) p.dla[r] = dla;
    }
  }
  // several tokens fold (terraced block edges fold w tokens): S again, chunks through shared memory
  if (!fold1 && j1 > j0) {
    if (active)
#pragma unroll
      for (int u = 0; u < KR; ++u) {
        const int f = rg + u * RG;
        if (f < F) x[u] = *reinterpret_cast<const float4*>(S + (ll)f * dv);
      }
    for (ll jc = j0; jc < j1; jc += kKF) {
      const int nfold = (int)min((ll)kKF, j1 - jc);
      const int nf = nfold * F, nvq = nfold * NQ;
      __syncthreads();
      for (int idx = tid; idx < max(nf, nvq); idx += kNT1) {
        float a1 = 0.f;
        float4 a2 = make_float4(0.f, 0.f, 0.f, 0.f);
        if (idx < nf) a1 = fold_fk(jc, idx);
        if (idx < nvq) a2 = fold_v(jc, idx);
        if (idx < nf) put_fk(idx, a1);
        if (idx < nvq) put_v(idx, a2);
      }
      __syncthreads();
      if (active)
        for (int kf = 0; kf < nfold; ++kf) {
          const float4 vv = *reinterpret_cast<const float4*>(sv + kf * W + cq * 4);
#pragma unroll
          for (int u = 0; u < KR; ++u) {
            const int f = rg + u * RG;
            if (f < F) fma4(x[u], sfk[kf * ldfk + f], vv);
          }
        }
      for (int f = tid; f < F; f += kNT1) {  // z (shared copy), in the order of the general kernel
        float zz = sz[f];
        for (int kf = 0; kf < nfold; ++kf) zz += sfk[kf * ldfk + f];
        sz[f] = zz;
      }
    }
    if (active)
#pragma unroll
      for (int u = 0; u < KR; ++u) {
        const int f = rg + u * RG;
        if (f < F) *reinterpret_cast<float4*>(S + (ll)f * dv) = x[u];
      }
  }
  // 5. rings: the token's feature key (head h, spread over the splits), its key / value (kv head
  // g, by the blocks of the group's first q head) and the sinks; the first element of each was
  // loaded at the start, larger dims copy the rest here
  const ll slot = n % C;
  const bool sink = n < NS;
  T* wfk = reinterpret_cast<T*>(st + p.owfk) + ((ll)h * C + slot) * F;
  T* wk = reinterpret_cast<T*>(st + p.owk) + ((ll)g * C + slot) * d;
  T* wv = reinterpret_cast<T*>(st + p.owv) + ((ll)g * C + slot) * dv + col0;
  T* sk = reinterpret_cast<T*>(st + p.osk) + ((ll)g * NS + (sink ? n : 0)) * d;
  T* svv = reinterpret_cast<T*>(st + p.osv) + ((ll)g * NS + (sink ? n : 0)) * dv + col0;
  if (c_fk) wfk[ie] = t_fk;
  if (c_k) {
    wk[ie] = t_k;
    if (sink) sk[ie] = t_k;
  }
  if (c_v) {
    wv[tid] = t_v;
    if (sink) svv[tid] = t_v;
  }
  for (int e = ie + ns * kNT1; e < F; e += ns * kNT1) wfk[e] = fk_in[e];
  if (kv_writer) {
    for (int e = ie + ns * kNT1; e < d; e += ns * kNT1) {
      const T t = k_in[e];
      wk[e] = t;
      if (sink) sk[e] = t;
    }
    for (int e = tid + kNT1; e < W; e += kNT1) {
      const T t = v_in[e];
      wv[e] = t;
      if (sink) svv[e] = t;
    }
  }
  // 6. z, once every block of the cluster has read it
  if (ns > 1) cluster_wait();
  if (s == 0 && j1 > j0)
    for (int f = tid; f < F; f += kNT1) z[f] = sz[f];
  // the last block of the sequence advances the position
  __syncthreads();
  if (tid == 0) {
    __threadfence();
    const unsigned old = atomicInc(reinterpret_cast<unsigned*>(hdr + 12), (unsigned)(p.H * ns - 1));
    if (old == (unsigned)(p.H * ns - 1)) hdr[2] = n + 1;
  }
}

// Fused single-token step (the fast path: sliding window, modes hybrid / swa / la / none) ---------
//
// Again one cluster of `ns` blocks per (sequence b, q head h), but no block repeats another's
// work: block s owns rows [s rc, (s+1) rc) of S and z and ring slots [s kc, (s+1) kc) of the
// window (the last block also the new token), and computes over them the partial softmax max,
// sum and weighted values (all of dv), the partial LA numerator fq^T S_old (all of dv) and
// denominator fq.z, and the fold of its rows. The partials meet through distributed shared
// memory (flash-decoding style) and block s finishes columns [s W, (s+1) W) of y.
// Latency: everything a block reads in bulk is independent of the position: its rows of S and
// its ring slots, valid or not, come into shared memory through TMA bulk copies issued first
// thing (no registers held while they are in flight: 50-100 KB per block, 4 blocks per SM at
// 2 splits); the position (header, read alongside) only decides which slots are masked out and
// which token folds, whose fk row and value (0.5 KB) are the single dependent load. So a block
// waits about two memory round trips in all, with the whole of its data in flight in the first.
// Stale slots are skipped, never multiplied by 0 (they may hold anything). The slot a step
// overwrites (n % C, position n - C) is outside the window and the fold: a copy of the ring by
// another head of the GQA group that races with the write reads only bytes that are masked out.
// Terraced block edges fold w tokens and la-full / overlap / sinks read the fk ring or the sinks:
// those run the split kernel above.
// Measured (H200, bf16, H = 32, d = F = dv = 128, w = 64): ~2.5 TB/s at B = 64..256, 2 blocks
// per head. The speed follows the bytes in flight per SM (4 blocks x 48 KB at 2 splits; 4
// splits, register-bound to 4 blocks of 24 KB, and a persistent two-stage variant, 2 blocks with
// one 48 KB stage each in flight, were 35-60% slower), not the count of dependent round trips.
constexpr int kNT2 = 128;  // threads per block of the fused kernel

__host__ __device__ inline int a16(int x) { return (x + 15) & ~15; }

// Shared memory plan of the fused kernel (byte offsets, 16-byte aligned sections: what the bulk
// copies need; no more, so that 4 blocks fit an SM at 2 splits and 8 at 4). `nst` stages of what
// the bulk copies fill (S rows, keys, values, their mbarrier), `stg` bytes apart; then the rest.
struct Smem2 {
  int rc, kc;  // rows of S / z and ring slots per block
  int S, K, V, bar, stg;  // within a stage
  int q, fq, z, fk, vj, sw, pS, pL, acc, la, sc, hdr, total;
  __host__ __device__ Smem2(int F, int d, int dv, int C, int E, int ns, int nst) {
    rc = (F + ns - 1) / ns;
    kc = (C + ns - 1) / ns;
    const int G = kNT2 / max(1, dv / 4);
    int o = 0;
    S = o; o += a16(rc * dv * 4);
    // the keys (+ the new token's, last block) are dead once the scores are: the partial sums
    // of the weighted values and of fq^T S reuse their space
    K = o; o += a16(max((kc + 1) * d * E, 2 * G * dv * 4));
    pS = K;
    pL = K + G * dv * 4;
    V = o; o += a16((kc + 1) * dv * E);
    bar = o; o += a16(8);
    stg = o;
    o = nst * stg;
    q = o; o += a16(d * 4);
    fq = o; o += a16(rc * 4);
    z = o; o += a16(rc * 4);
    fk = o; o += a16(rc * 4);
    vj = o; o += a16(dv * 4);
    sw = o; o += a16((kc + 1) * 4);
    acc = o; o += a16(dv * 4);  // read by the other blocks of the cluster: acc, la, sc
    la = o; o += a16(dv * 4);
    sc = o; o += a16(4 * 4);
    hdr = o; o += a16(12 * 8);
    total = o;
  }
};

// TMA bulk copies and mbarriers: native/core/bulk_copy_sm90.cuh.
using ::ha::bulk::bulk_g2s;
using ::ha::bulk::mbar_arrive;
using ::ha::bulk::mbar_expect_tx;
using ::ha::bulk::mbar_init;
using ::ha::bulk::mbar_wait;
using ::ha::mma::smem_u32;

// The arithmetic of one head in the fused kernels, once its bulk data are in shared memory and
// the rest in `a`: scores, the partial softmax and LA sums, the fold of this block's rows of S and
// z, then the partials of the cluster's blocks combined into this block's columns of y and the
// statistics. Ends with the cluster's blocks past the exchange but possibly still reading one
// another's partials: the caller's barrier closes it.
template <class T>
struct FusedHead {
  float *sS, *sq, *sfq, *sz, *sfk, *svj, *sw, *pS, *pL, *pacc, *pla, *psc;
  T *sK, *sV;
  float *Sg, *zg;        // this block's rows of S and z in the state
  ll n, r;               // position, row of (b, h) in the outputs
  float g_eff, lam, f1, v1;  // f1 / v1: the fold's fk row / value element of this thread (tid)
  int s, ns, r0, nr, k0, nk, W, c0;
  bool live, outputs, soft_mode, do_la, new_kv;
};

template <class T>
__device__ __forceinline__ void fused_head(const DP& p, const FusedHead<T>& a) {
  float *sS = a.sS, *sq = a.sq, *sfq = a.sfq, *sz = a.sz, *sfk = a.sfk, *svj = a.svj, *sw = a.sw;
  float *pS = a.pS, *pL = a.pL, *pacc = a.pacc, *pla = a.pla, *psc = a.psc, *Sg = a.Sg, *zg = a.zg;
  const T *sK = a.sK, *sV = a.sV;
  const ll n = a.n, r = a.r;
  const float g_eff = a.g_eff, lam = a.lam, f1 = a.f1, v1 = a.v1;
  const int s = a.s, ns = a.ns, nr = a.nr, k0 = a.k0, nk = a.nk, W = a.W, c0 = a.c0;
  const bool live = a.live, outputs = a.outputs, soft_mode = a.soft_mode, do_la = a.do_la, new_kv = a.new_kv;
  const int d = p.d, dv = p.dv, F = p.F, C = p.C;
  const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
  const bool fold = F > 0 && n + 1 - p.w >= 0;

  // 3. scores of this block's valid slots: 8 lanes per key, 4 keys per warp at a time (each
  // group of 8 starts at its own 32-element block of the row: no bank conflicts at d % 32 == 0)
  const bool soft = soft_mode && g_eff != 0.f;  // keep = 0: softmax branch off (c = 0, den_swa = 0)
  const int nkk = nk + (new_kv ? 1 : 0);
  if (soft) {
    // slot sl holds position n - 1 - md, md = (n - 1 - sl) mod C; in Win(n) iff md <= lim
    const int lim = (int)min(n - 1, (ll)p.w - 2);
    const int nm = n >= 1 ? (int)((n - 1) % C) : 0;
    const int sub = lane & 7, kq = lane >> 3;
    const int nb = d / 32;
    const bool rot = d % 32 == 0;
    for (int a0 = wid * 4; a0 < nkk; a0 += kNT2 / 8) {
      const int a = a0 + kq;
      bool valid = a < nkk;
      if (valid && a < nk) {
        int md = nm - (k0 + a);
        if (md < 0) md += C;
        valid = md <= lim;
      }
      float x = 0.f;
      if (valid) {
        const T* row = sK + (ll)a * d;
        if (rot) {
          for (int i = 0; i < nb; ++i) {
            int blk = i + kq;
            blk = blk >= nb ? blk % nb : blk;
            const int e = blk * 32 + sub * 4;
            const float4 kf = ld4(row + e), qf = *reinterpret_cast<const float4*>(sq + e);
            x += qf.x * kf.x + qf.y * kf.y + qf.z * kf.z + qf.w * kf.w;
          }
        } else {
          for (int e = sub * 4; e < d; e += 32) {
            const float4 kf = ld4(row + e), qf = *reinterpret_cast<const float4*>(sq + e);
            x += qf.x * kf.x + qf.y * kf.y + qf.z * kf.z + qf.w * kf.w;
          }
        }
      }
      x += __shfl_xor_sync(0xffffffffu, x, 1);
      x += __shfl_xor_sync(0xffffffffu, x, 2);
      x += __shfl_xor_sync(0xffffffffu, x, 4);
      if (sub == 0 && a < nkk) sw[a] = valid ? x * p.scale : -INFINITY;
    }
  }
  if (fold) {  // the fold's loads had the scores' time to land
    if (tid < nr) sfk[tid] = f1;
    if (tid < dv) svj[tid] = v1;
  }
  if (wid == kNT2 / 32 - 1) {
    float x = 0.f;
    if (do_la)
      for (int f = lane; f < nr; f += 32) x += sfq[f] * sz[f];
    x = warp_sum(x);
    if (lane == 0) psc[2] = x;
  }
  __syncthreads();

  // 4. partial softmax (every warp the same max and sum), weighted values, fq^T S_old, the fold
  float m = -INFINITY, l = 0.f;
  if (soft) {
    for (int a = lane; a < nkk; a += 32) m = fmaxf(m, sw[a]);
    m = warp_max(m);
    if (m != -INFINITY) {
      for (int a = lane; a < nkk; a += 32)
        if (sw[a] != -INFINITY) l += expf(sw[a] - m);
      l = warp_sum(l);
    }
  }
  const int NQ = dv / 4, G = kNT2 / NQ;
  const int cq = tid % NQ, grp = tid / NQ;
  const bool active = grp < G;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f), la4 = acc;
  if (active) {
    if (m != -INFINITY)
      for (int a = grp; a < nkk; a += G) {
        const float sa = sw[a];
        if (sa != -INFINITY) fma4(acc, expf(sa - m), ld4(sV + (ll)a * dv + cq * 4));
      }
    if (do_la || fold) {
      const float4 vq = fold ? *reinterpret_cast<const float4*>(svj + cq * 4) : make_float4(0.f, 0.f, 0.f, 0.f);
      for (int f = grp; f < nr; f += G) {
        float4 x = *reinterpret_cast<const float4*>(sS + f * dv + cq * 4);
        if (do_la) fma4(la4, sfq[f], x);
        if (fold) {
          fma4(x, sfk[f], vq);
          __stcs(reinterpret_cast<float4*>(Sg + (ll)f * dv + cq * 4), x);
        }
      }
    }
    *reinterpret_cast<float4*>(pS + grp * dv + cq * 4) = acc;
    *reinterpret_cast<float4*>(pL + grp * dv + cq * 4) = la4;
  }
  if (fold)
    for (int f = tid; f < nr; f += kNT2) zg[f] = sz[f] + sfk[f];
  if (tid == 0) {
    psc[0] = m;
    psc[1] = l;
  }
  __syncthreads();
  for (int j = tid; j < dv; j += kNT2) {
    float a1 = 0.f, a2 = 0.f;
    for (int k2 = 0; k2 < G; ++k2) {
      a1 += pS[k2 * dv + j];
      a2 += pL[k2 * dv + j];
    }
    pacc[j] = a1;
    pla[j] = a2;
  }
  if (ns > 1) {
    cluster_arrive();
    cluster_wait();
  } else {
    __syncthreads();
  }

  // 5. the partials of the cluster's blocks meet: this block's columns of y, the statistics
  if (outputs) {
    // the partials of block q2 through generic addresses of its shared memory (ordinary loads,
    // which the compiler batches)
    auto rk = [&](const float* a, int q2) -> const float* {
      return ns > 1 ? cooperative_groups::this_cluster().map_shared_rank(a, (unsigned)q2) : a;
    };
    float M = -INFINITY;
#pragma unroll
    for (int q2 = 0; q2 < 8; ++q2)
      if (q2 < ns) M = fmaxf(M, rk(psc, q2)[0]);
    // every block's weight exp(m_q - M); sums over the blocks in the same order everywhere
    float Ls = 0.f, Dl = 0.f, nsum = 0.f, nlin = 0.f;
    const int j = c0 + tid;
    const bool has_j = tid < W;
#pragma unroll
    for (int q2 = 0; q2 < 8; ++q2)
      if (q2 < ns) {
        const float* sc2 = rk(psc, q2);
        const float mq = sc2[0];
        const float eq = mq == -INFINITY ? 0.f : expf(mq - M);
        Ls += eq * sc2[1];
        Dl += sc2[2];
        if (has_j) {
          nsum += eq * rk(pacc, q2)[j];
          nlin += rk(pla, q2)[j];
        }
      }
    const float dsw = live ? g_eff * Ls : 0.f, dla = live ? lam * Dl : 0.f;
    const float den = dsw + dla;
    if (p.y) {
      T* yr = (T*)p.y + r * dv;
      if (has_j) stf(yr + j, live && den != 0.f ? (g_eff * nsum + lam * nlin) / den : 0.f);
      for (int j2 = j + kNT2; j2 < c0 + W; j2 += kNT2) {  // dv > 128 ns
        float a1 = 0.f, a2 = 0.f;
        for (int q2 = 0; q2 < ns; ++q2) {
          const float mq = rk(psc, q2)[0];
          a1 += (mq == -INFINITY ? 0.f : expf(mq - M)) * rk(pacc, q2)[j2];
          a2 += rk(pla, q2)[j2];
        }
        stf(yr + j2, live && den != 0.f ? (g_eff * a1 + lam * a2) / den : 0.f);
      }
    }
    if (tid == 0 && s == 0) {
      if (p.c) p.c[r] = soft ? M : 0.f;
      if (p.dsw) p.dsw[r] = dsw;
      if (p.dla) p.dla[r] = dla;
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kNT2, 4) step2_kernel(DP p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ float4 smem4[];
  unsigned char* sm = reinterpret_cast<unsigned char*>(smem4);  // 16-byte aligned
  const int d = p.d, dv = p.dv, F = p.F, C = p.C, ns = p.ns;
  const Smem2 L(F, d, dv, C, (int)sizeof(T), ns, 1);
  float *sq = reinterpret_cast<float*>(sm + L.q), *sfq = reinterpret_cast<float*>(sm + L.fq);
  float *sz = reinterpret_cast<float*>(sm + L.z), *sfk = reinterpret_cast<float*>(sm + L.fk);
  float *svj = reinterpret_cast<float*>(sm + L.vj), *sw = reinterpret_cast<float*>(sm + L.sw);
  float *pacc = reinterpret_cast<float*>(sm + L.acc), *pla = reinterpret_cast<float*>(sm + L.la);
  float* psc = reinterpret_cast<float*>(sm + L.sc);
  ll* shdr = reinterpret_cast<ll*>(sm + L.hdr);

  const int tid = threadIdx.x;
  const int s = blockIdx.x % ns, it = blockIdx.x / ns;  // cluster rank = blockIdx.x % ns (1-d clusters)
  const int r0 = s * L.rc, nr = max(0, min(L.rc, F - r0));
  const int k0 = s * L.kc, nk = max(0, min(L.kc, C - k0));
  const bool last = s == ns - 1;
  const int W = dv / ns, c0 = s * W;  // this block's columns of y

  const int mode = p.mode;
  const bool outputs = p.outputs != 0;
  const bool live = outputs && mode != kNone;
  const bool soft_mode = live && (mode == kHybrid || mode == kSwa);
  const bool do_la = live && (mode == kHybrid || mode == kLa) && F > 0;

  // 1. bulk copies of everything of head `it` that does not depend on the position, into stage k
  auto issue = [&](int it, int k) {
    const int b = it / p.H, h = it - b * p.H, g = h / p.hpg;
    const char* st = seq_state(p, b);
    unsigned char* base = sm + k * L.stg;
    const uint32_t bar = smem_u32(base + L.bar);
    const uint32_t bS = (uint32_t)(nr * dv * 4);
    const uint32_t bK = soft_mode ? (uint32_t)(nk * d * sizeof(T)) : 0u, bV = soft_mode ? (uint32_t)(nk * dv * sizeof(T)) : 0u;
    mbar_expect_tx(bar, bS + bK + bV);
    if (bS) bulk_g2s(smem_u32(base + L.S), reinterpret_cast<const float*>(st + p.oS) + ((ll)h * F + r0) * dv, bS, bar);
    if (bK) bulk_g2s(smem_u32(base + L.K), reinterpret_cast<const T*>(st + p.owk) + ((ll)g * C + k0) * d, bK, bar);
    if (bV) bulk_g2s(smem_u32(base + L.V), reinterpret_cast<const T*>(st + p.owv) + ((ll)g * C + k0) * dv, bV, bar);
  };
  if (tid == 0) {
    mbar_init(smem_u32(sm + L.bar), 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    ::ha::bulk::fence_async_smem();
    issue(it, 0);
  }
  const int stage = 0;
  const uint32_t parity = 0;
  unsigned char* sbase = sm + stage * L.stg;
  float* sS = reinterpret_cast<float*>(sbase + L.S);
  T* sK = reinterpret_cast<T*>(sbase + L.K);
  T* sV = reinterpret_cast<T*>(sbase + L.V);
  float *pS = reinterpret_cast<float*>(sm + stage * L.stg + L.pS), *pL = reinterpret_cast<float*>(sm + stage * L.stg + L.pL);
  const uint32_t bar = smem_u32(sbase + L.bar);
  const int b = it / p.H, h = it - b * p.H, g = h / p.hpg;
  char* st = seq_state(p, b);
  ll* hdr = reinterpret_cast<ll*>(st);
  float* Sg = reinterpret_cast<float*>(st + p.oS) + ((ll)h * F + r0) * dv;
  float* zg = reinterpret_cast<float*>(st + p.oz) + (ll)h * F + r0;
  const T* vring = reinterpret_cast<const T*>(st + p.owv) + (ll)g * C * dv;
  const T* fkring = reinterpret_cast<const T*>(st + p.owfk) + (ll)h * C * F;

  // the header, q, this block's rows of fq and z, gamma / keep, the new token
  const ll r = (ll)b * p.H + h;  // row of (b, h) in the packed single-token layout
  float gam = 0.f, kp = 1.f;
  if (live) {
    gam = p.gamma[h];
    if (p.keep) kp = p.keep[r];
  }
  const bool kv_writer = h % p.hpg == 0;  // the group's first q head copies the kv token
  const int ie = s * kNT2 + tid;           // fk / k / v element this thread copies into the rings
  const T* fk_in = (const T*)p.fk + r * F;
  const T* k_in = (const T*)p.k + ((ll)b * p.Hkv + g) * d;
  const T* v_in = (const T*)p.v + ((ll)b * p.Hkv + g) * dv;
  const bool c_fk = ie < F, c_k = kv_writer && ie < d, c_v = kv_writer && ie < dv;
  T t_fk{}, t_k{}, t_v{};
  if (c_fk) t_fk = fk_in[ie];
  if (c_k) t_k = k_in[ie];
  if (c_v) t_v = v_in[ie];
  const bool new_kv = soft_mode && last;  // the new token is the last block's extra key
  for (int e = tid; e < max(max(d, dv), max(nr, 12)); e += kNT2) {
    float a1 = 0.f, a2 = 0.f, a3 = 0.f;
    T a5{}, a6{};
    ll a4 = 0;
    if (live && e < d) a1 = ldf((const T*)p.q + r * d + e);
    if (do_la && e < nr) a2 = ldf((const T*)p.fq + r * F + r0 + e);
    if (e < nr) a3 = zg[e];
    if (e < 12) a4 = hdr[e];
    if (new_kv && e < d) a5 = k_in[e];
    if (new_kv && e < dv) a6 = v_in[e];
    if (e < d) sq[e] = a1;
    if (e < nr) { sfq[e] = a2; sz[e] = a3; }
    if (e < 12) shdr[e] = a4;
    if (new_kv && e < d) sK[(ll)nk * d + e] = a5;
    if (new_kv && e < dv) sV[(ll)nk * dv + e] = a6;
  }
  __syncthreads();
  int bad = shdr[0] != kHybridDecodeMagic || shdr[1] != kHybridDecodeVersion || shdr[2] < 0;
  for (int i = 0; i < 9; ++i) bad |= shdr[3 + i] != p.want[i];
  if (bad) {  // not a state of this config: leave it alone, poison this block's outputs
    mbar_wait(bar, parity);  // the copies land before the stage is reused or the block leaves
    if (outputs) {
      if (p.y) for (int j = tid; j < W; j += kNT2) stf((T*)p.y + r * dv + c0 + j, NAN);
      if (tid == 0 && s == 0) {
        if (p.c) p.c[r] = NAN;
        if (p.dsw) p.dsw[r] = NAN;
        if (p.dla) p.dla[r] = NAN;
      }
    }
    return;  // every block of the cluster sees the same header: none waits at a barrier
  }
  const ll n = shdr[2];
  // The last block of the sequence to have read the header advances the position, right away:
  // nobody reads it again in this call, and a counter at the end would wait for the block's
  // stores to drain (the fence) on its critical path.
  if (tid == 0) {
    __threadfence();
    const unsigned old = atomicInc(reinterpret_cast<unsigned*>(hdr + 12), (unsigned)(p.H * ns - 1));
    if (old == (unsigned)(p.H * ns - 1)) hdr[2] = n + 1;
  }
  const ll j0 = n + 1 - p.w;                          // Lin(n + 1) \ Lin(n) = {j0} when j0 >= 0
  const bool fold = F > 0 && j0 >= 0;
  const float g_eff = live ? (mode == kSwa ? kp : gam * kp) : 0.f;
  const float lam = live && p.affine ? 1.f - gam : 1.f;

  // 2. the fold's fk rows and value (w = 1: the new token itself), held until the copies land
  float f1 = 0.f, v1 = 0.f;
  if (fold) {
    const T* fsrc = j0 >= n ? fk_in : fkring + (j0 % C) * F;
    const T* vsrc = j0 >= n ? v_in : vring + (j0 % C) * dv;
    if (tid < nr) f1 = ldf(fsrc + r0 + tid);
    if (tid < dv) v1 = ldf(vsrc + tid);
    for (int e = tid + kNT2; e < max(nr, dv); e += kNT2) {
      if (e < nr) sfk[e] = ldf(fsrc + r0 + e);
      if (e < dv) svj[e] = ldf(vsrc + e);
    }
  }
  // the new token enters the rings (slot n % C held n - C: outside every window and fold of n)
  {
    const ll slot = n % C;
    const bool sink = n < p.NS;
    T* wfk = reinterpret_cast<T*>(st + p.owfk) + ((ll)h * C + slot) * F;
    T* wk = reinterpret_cast<T*>(st + p.owk) + ((ll)g * C + slot) * d;
    T* wv = reinterpret_cast<T*>(st + p.owv) + ((ll)g * C + slot) * dv;
    T* sk = reinterpret_cast<T*>(st + p.osk) + ((ll)g * p.NS + (sink ? n : 0)) * d;
    T* svv = reinterpret_cast<T*>(st + p.osv) + ((ll)g * p.NS + (sink ? n : 0)) * dv;
    if (c_fk) wfk[ie] = t_fk;
    if (c_k) {
      wk[ie] = t_k;
      if (sink) sk[ie] = t_k;
    }
    if (c_v) {
      wv[ie] = t_v;
      if (sink) svv[ie] = t_v;
    }
    for (int e = ie + ns * kNT2; e < F; e += ns * kNT2) wfk[e] = fk_in[e];
    if (kv_writer) {
      for (int e = ie + ns * kNT2; e < d; e += ns * kNT2) {
        const T t = k_in[e];
        wk[e] = t;
        if (sink) sk[e] = t;
      }
      for (int e = ie + ns * kNT2; e < dv; e += ns * kNT2) {
        const T t = v_in[e];
        wv[e] = t;
        if (sink) svv[e] = t;
      }
    }
  }
  mbar_wait(bar, parity);

  FusedHead<T> fh;
  fh.sS = sS; fh.sq = sq; fh.sfq = sfq; fh.sz = sz; fh.sfk = sfk; fh.svj = svj; fh.sw = sw;
  fh.pS = pS; fh.pL = pL; fh.pacc = pacc; fh.pla = pla; fh.psc = psc; fh.sK = sK; fh.sV = sV;
  fh.Sg = Sg; fh.zg = zg; fh.n = n; fh.r = r; fh.g_eff = g_eff; fh.lam = lam; fh.f1 = f1; fh.v1 = v1;
  fh.s = s; fh.ns = ns; fh.r0 = r0; fh.nr = nr; fh.k0 = k0; fh.nk = nk; fh.W = W; fh.c0 = c0;
  fh.live = live; fh.outputs = outputs; fh.soft_mode = soft_mode; fh.do_la = do_la; fh.new_kv = new_kv;
  fused_head<T>(p, fh);  // 3. - 5.
  // 6. no block leaves while another may still read its shared memory
  if (ns > 1) {
    cluster_arrive();
    cluster_wait();
  }
#endif
}

// Persistent fused single-token step (step3_kernel: the same cases as the fused kernel) ---------
//
// The fused kernel above keeps a block's bytes in flight only until they land: a block loads its
// 48 KB, computes, stores and leaves, and an SM's four blocks are in flight only part of their
// life (~52% of HBM at B = 64..256). This one streams instead: a persistent block per SM (or a
// few) walks heads b * H + h = blockIdx.x, + gridDim.x, ... with ONE block per head (no cluster,
// no exchange), through a ring of `nst` stages of ~19 KB (as many as shared memory holds). A
// producer thread (warp 0) fills the stages by TMA bulk copies as soon as the consumers free them,
// running heads ahead; the 8 consumer warps take each head's chunks in order:
//   chunk 0   the head area (q, fq, z, the new token's k / v / fk, the fold's fk row and value)
//             + the K ring: scores, den_la, the fold of z, the new token into the rings;
//   chunk 1   the V ring (softmax modes): weighted values;
//   chunks 2+ rows of S: fq^T S_old and the fold S += fk_j0 v_j0^T, stored from registers.
// The position is known to the producer (it reads the header one head ahead, with gamma and keep,
// and hands it to the consumers with the stage), so the fold's fk row and value come by TMA with
// the rest. The last head of a sequence to count
// its header read (atomic counter in header word 12, as in the other kernels) advances the
// position; the producer checks the counter's old value one head later, so it never waits on it.
// Races: as in the fused kernel (the ring slot a step overwrites is masked out everywhere).
// Measured (H200, bf16, H = 32, d = F = dv = 128, w = 64, graph replay): B = 256 0.360 ms = 79%
// of 4.8 TB/s, B = 64 0.100 ms = 71% (fused kernel: 0.540 / 0.141 ms). Two blocks per SM (5
// stages each) beat one (11 stages) by 15%: a block's consumers wait at its head boundaries
// (chunk 0's barrier, the output barrier), the other block's keep the SM busy.
constexpr int kCW3 = 8;                // consumer warps
constexpr int kNC3 = 32 * kCW3;        // consumer threads
constexpr int kNT3 = kNC3 + 32;        // + the producer warp
constexpr int kMaxSt3 = 24;            // stages at most

// Shared memory plan (byte offsets, 16-byte aligned): `nst` stages of `stg` bytes (chunk 0's
// head area + K ring; the V ring; or `rs` rows of S), their full / empty mbarriers, then the
// consumers' scratch.
struct Smem3 {
  int q, fq, z, kn, vn, fkn, fkj, vj, K;  // head area (chunk 0), within a stage
  int stg, rs, nst, full, empty, info;
  int sw, sfq, sfkj, svj, svn, part, red, total;
  __host__ __device__ Smem3(int F, int d, int dv, int C, int E, int nst_) {
    int o = 0;
    q = o; o += a16(d * E);
    fq = o; o += a16(F * E);
    z = o; o += a16(F * 4);
    kn = o; o += a16(d * E);
    vn = o; o += a16(dv * E);
    fkn = o; o += a16(F * E);
    fkj = o; o += a16(F * E);
    vj = o; o += a16(dv * E);
    K = o; o += a16(C * d * E);
    stg = max(max(o, a16(C * dv * E)), dv * 4);
    rs = stg / (dv * 4);
    nst = nst_;
    o = nst * stg;
    full = o; o += nst * 8;
    empty = o; o += nst * 8;
    info = o; o += nst * 32;  // per stage, chunk 0: position (int64), flags, gamma, keep, state pointer (the producer's stores)
    o = a16(o);
    const int G = kNC3 / max(1, dv / 4);
    sw = o; o += a16((C + 1) * 4);
    sfq = o; o += a16(F * 4);
    sfkj = o; o += a16(F * 4);
    svj = o; o += a16(dv * 4);
    svn = o; o += a16(dv * 4);
    part = o; o += a16(G * dv * 4);
    red = o; o += 16;
    total = o;
  }
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;\n" ::"r"(kNC3) : "memory"); }
#endif

template <class T>
__global__ void __launch_bounds__(kNT3, 2) step3_kernel(DP p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ float4 smem4[];
  unsigned char* sm = reinterpret_cast<unsigned char*>(smem4);
  constexpr int E = (int)sizeof(T);
  const int d = p.d, dv = p.dv, F = p.F, C = p.C;
  const Smem3 L(F, d, dv, C, E, p.ns);
  const int tid = threadIdx.x;
  const ll items = (ll)p.B * p.H;
  const int mode = p.mode;
  const bool outputs = p.outputs != 0;
  const bool live = outputs && mode != kNone;
  const bool soft_mode = live && (mode == kHybrid || mode == kSwa);
  const bool do_la = live && (mode == kHybrid || mode == kLa) && F > 0;
  const int nSc = F > 0 ? (F + L.rs - 1) / L.rs : 0;  // chunks of S (when S is read at all)
  const uint32_t full0 = smem_u32(sm + L.full), empty0 = smem_u32(sm + L.empty);
  if (tid == 0) {
    for (int i = 0; i < L.nst; ++i) {
      mbar_init(full0 + 8 * i, 1);
      mbar_init(empty0 + 8 * i, kCW3);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    ::ha::bulk::fence_async_smem();
  }
  __syncthreads();  // the last block-wide barrier: the producer warp's idle lanes leave below
  int s = 0;
  uint32_t ph = 0;
  auto next = [&]() {
    if (++s == L.nst) {
      s = 0;
      ph ^= 1;
    }
  };

  if (tid < 32) {
    // ---- producer ----
    if (tid != 0) return;
    // header words, gamma, keep and state of a head
    auto fetch = [&](ll i, ll* hv, float& ga, float& ke, char*& stp) {
      const int b = (int)(i / p.H), h = (int)(i - (ll)b * p.H);
      stp = seq_state(p, b);
      const longlong2* h2 = reinterpret_cast<const longlong2*>(stp);
#pragma unroll
      for (int j = 0; j < 6; ++j) {
        const longlong2 x = __ldcg(h2 + j);
        hv[2 * j] = x.x;
        hv[2 * j + 1] = x.y;
      }
      ga = live ? __ldg(p.gamma + h) : 0.f;
      ke = live && p.keep ? __ldg(p.keep + i) : 1.f;
    };
    ll it = blockIdx.x;
    if (it >= items) return;
    ll hv[12];
    float gam, kp;
    char* st;
    fetch(it, hv, gam, kp, st);
    unsigned pend_old = 0;
    ll* pend_hdr = nullptr;
    ll pend_n = 0;
    for (; it < items; it += gridDim.x) {
      // the next head's header in flight while this one's copies go out
      const ll nx = it + gridDim.x;
      ll nv[12];
      float ngam = 0.f, nkp = 1.f;
      char* nst_ = st;
#pragma unroll
      for (int j = 0; j < 12; ++j) nv[j] = 0;
      if (nx < items) fetch(nx, nv, ngam, nkp, nst_);

      const int b = (int)(it / p.H), h = (int)(it - (ll)b * p.H), g = h / p.hpg;
      ll* hdr = reinterpret_cast<ll*>(st);
      const ll n = hv[2];
      int bad = hv[0] != kHybridDecodeMagic || hv[1] != kHybridDecodeVersion || n < 0;
#pragma unroll
      for (int i = 0; i < 9; ++i) bad |= hv[3 + i] != p.want[i];
      const ll na = bad ? 0 : n;
      const ll j0 = na + 1 - p.w;
      const bool fold = !bad && F > 0 && j0 >= 0;
      // position bookkeeping: the previous head's count has had a head's time to return
      if (pend_hdr && pend_old == (unsigned)(p.H - 1)) pend_hdr[2] = pend_n + 1;
      pend_hdr = nullptr;
      if (!bad) {  // counted after its header read (n is in a register already)
        pend_old = atomicInc(reinterpret_cast<unsigned*>(hdr + 12), (unsigned)(p.H - 1));
        pend_hdr = hdr;
        pend_n = n;
      }
      const T* k_in = (const T*)p.k + ((ll)b * p.Hkv + g) * d;
      const T* v_in = (const T*)p.v + ((ll)b * p.Hkv + g) * dv;
      const T* fk_in = F > 0 ? (const T*)p.fk + it * F : nullptr;

      // chunk 0: the head area and the K ring
      {
        mbar_wait(empty0 + 8 * s, ph ^ 1);
        unsigned char* base = sm + s * L.stg;
        unsigned char* info = sm + L.info + s * 32;
        *reinterpret_cast<ll*>(info) = na;
        *reinterpret_cast<int*>(info + 8) = bad | (fold ? 2 : 0);
        *reinterpret_cast<float*>(info + 12) = gam;
        *reinterpret_cast<float*>(info + 16) = kp;
        *reinterpret_cast<char**>(info + 24) = st;
        const uint32_t bq = soft_mode ? d * E : 0, bK = soft_mode ? C * d * E : 0;
        const uint32_t bfq = do_la ? F * E : 0, bz = F * 4, bfkn = F * E;
        const uint32_t bfkj = fold ? F * E : 0, bvj = fold ? dv * E : 0;
        const uint32_t bar = full0 + 8 * s;
        mbar_expect_tx(bar, bq + bK + bfq + bz + (uint32_t)(d * E) + (uint32_t)(dv * E) + bfkn + bfkj + bvj);  // release: the stores above
        if (bq) bulk_g2s(smem_u32(base + L.q), (const T*)p.q + it * d, bq, bar);
        if (bfq) bulk_g2s(smem_u32(base + L.fq), (const T*)p.fq + it * F, bfq, bar);
        if (bz) bulk_g2s(smem_u32(base + L.z), reinterpret_cast<const float*>(st + p.oz) + (ll)h * F, bz, bar);
        bulk_g2s(smem_u32(base + L.kn), k_in, d * E, bar);
        bulk_g2s(smem_u32(base + L.vn), v_in, dv * E, bar);
        if (bfkn) bulk_g2s(smem_u32(base + L.fkn), fk_in, bfkn, bar);
        if (fold) {
          const T* fsrc = j0 >= n ? fk_in : reinterpret_cast<const T*>(st + p.owfk) + ((ll)h * C + j0 % C) * F;
          const T* vsrc = j0 >= n ? v_in : reinterpret_cast<const T*>(st + p.owv) + ((ll)g * C + j0 % C) * dv;
          bulk_g2s(smem_u32(base + L.fkj), fsrc, bfkj, bar);
          bulk_g2s(smem_u32(base + L.vj), vsrc, bvj, bar);
        }
        if (bK) bulk_g2s(smem_u32(base + L.K), reinterpret_cast<const T*>(st + p.owk) + (ll)g * C * d, bK, bar);
        next();
      }
      // chunk 1: the V ring
      if (soft_mode) {
        mbar_wait(empty0 + 8 * s, ph ^ 1);
        const uint32_t bar = full0 + 8 * s, bytes = C * dv * E;
        mbar_expect_tx(bar, bytes);
        bulk_g2s(smem_u32(sm + s * L.stg), reinterpret_cast<const T*>(st + p.owv) + (ll)g * C * dv, bytes, bar);
        next();
      }
      // chunks of S
      if (F > 0 && (do_la || fold))
        for (int c = 0; c < nSc; ++c) {
          const int f0 = c * L.rs, nr = min(L.rs, F - f0);
          mbar_wait(empty0 + 8 * s, ph ^ 1);
          const uint32_t bar = full0 + 8 * s, bytes = nr * dv * 4;
          mbar_expect_tx(bar, bytes);
          bulk_g2s(smem_u32(sm + s * L.stg), reinterpret_cast<const float*>(st + p.oS) + ((ll)h * F + f0) * dv, bytes, bar);
          next();
        }
#pragma unroll
      for (int j = 0; j < 12; ++j) hv[j] = nv[j];
      gam = ngam;
      kp = nkp;
      st = nst_;
    }
    if (pend_hdr && pend_old == (unsigned)(p.H - 1)) pend_hdr[2] = pend_n + 1;
    return;
  }

  // ---- consumers ----
  const int ct = tid - 32, cw = ct >> 5, lane = tid & 31;
  float* sw = reinterpret_cast<float*>(sm + L.sw);
  float* sfq = reinterpret_cast<float*>(sm + L.sfq);
  float* sfkj = reinterpret_cast<float*>(sm + L.sfkj);
  float* svj = reinterpret_cast<float*>(sm + L.svj);
  float* svn = reinterpret_cast<float*>(sm + L.svn);
  float* part = reinterpret_cast<float*>(sm + L.part);
  float* red = reinterpret_cast<float*>(sm + L.red);
  const int NQ = dv / 4, G = kNC3 / NQ;
  const int cq = ct % NQ, grp = ct / NQ;
  const bool active = grp < G;
  for (ll it = blockIdx.x; it < items; it += gridDim.x) {
    const int h = (int)(it % p.H), g = h / p.hpg;
    // chunk 0
    mbar_wait(full0 + 8 * s, ph);
    const unsigned char* base = sm + s * L.stg;
    const unsigned char* info = sm + L.info + s * 32;
    char* st = *reinterpret_cast<char* const*>(info + 24);  // the sequence's state (no slots lookup here)
    const ll n = *reinterpret_cast<const ll*>(info);
    const int flags = *reinterpret_cast<const int*>(info + 8);
    const float gam = *reinterpret_cast<const float*>(info + 12);
    const float kp = *reinterpret_cast<const float*>(info + 16);
    const bool bad = flags & 1, fold = (flags & 2) != 0;
    const float g_eff = live ? (mode == kSwa ? kp : gam * kp) : 0.f;
    const float lam = live && p.affine ? 1.f - gam : 1.f;
    const bool soft = !bad && soft_mode && g_eff != 0.f;  // keep = 0: softmax branch off
    const bool la = !bad && do_la;
    if (!bad) {
      const T* fq_a = reinterpret_cast<const T*>(base + L.fq);
      const float* z_a = reinterpret_cast<const float*>(base + L.z);
      const T* fkj_a = reinterpret_cast<const T*>(base + L.fkj);
      for (int e = ct; e < max(F, dv); e += kNC3) {
        if (e < F) {
          if (la) sfq[e] = ldf(fq_a + e);
          if (fold) sfkj[e] = ldf(fkj_a + e);
        }
        if (e < dv) {
          if (fold) svj[e] = ldf(reinterpret_cast<const T*>(base + L.vj) + e);
          if (soft) svn[e] = ldf(reinterpret_cast<const T*>(base + L.vn) + e);
        }
      }
      // scores of the valid ring slots and the new key (index C): 8 lanes per key, 4 keys per warp
      if (soft) {
        const int lim = (int)min(n - 1, (ll)p.w - 2);  // slot sl holds n - 1 - md, md = (n - 1 - sl) mod C
        const int nm = n >= 1 ? (int)((n - 1) % C) : 0;
        const int sub = lane & 7, kq = lane >> 3;
        const int nb = d / 32;
        const bool rot = d % 32 == 0;
        const T* Ks = reinterpret_cast<const T*>(base + L.K);
        const T* kn = reinterpret_cast<const T*>(base + L.kn);
        const T* qa = reinterpret_cast<const T*>(base + L.q);
        for (int a0 = cw * 4; a0 <= C; a0 += kCW3 * 4) {
          const int a = a0 + kq;
          bool valid = a <= C;
          if (valid && a < C) {
            int md = nm - a;
            if (md < 0) md += C;
            valid = md <= lim;
          }
          float x = 0.f;
          if (valid) {
            const T* row = a < C ? Ks + (ll)a * d : kn;
            if (rot) {
              for (int i = 0; i < nb; ++i) {
                int blk = i + kq;
                blk = blk >= nb ? blk % nb : blk;
                const int e = blk * 32 + sub * 4;
                const float4 kf = ld4(row + e), qf = ld4(qa + e);
                x += qf.x * kf.x + qf.y * kf.y + qf.z * kf.z + qf.w * kf.w;
              }
            } else {
              for (int e = sub * 4; e < d; e += 32) {
                const float4 kf = ld4(row + e), qf = ld4(qa + e);
                x += qf.x * kf.x + qf.y * kf.y + qf.z * kf.z + qf.w * kf.w;
              }
            }
          }
          x += __shfl_xor_sync(0xffffffffu, x, 1);
          x += __shfl_xor_sync(0xffffffffu, x, 2);
          x += __shfl_xor_sync(0xffffffffu, x, 4);
          if (sub == 0 && a <= C) sw[a] = valid ? x * p.scale : -INFINITY;
        }
      }
      if (cw == kCW3 - 1) {  // den_la = fq . z
        float x = 0.f;
        if (la)
          for (int f = lane; f < F; f += 32) x += ldf(fq_a + f) * z_a[f];
        x = warp_sum(x);
        if (lane == 0) red[0] = x;
      }
      if (fold) {
        float* zg = reinterpret_cast<float*>(st + p.oz) + (ll)h * F;
        for (int f = ct; f < F; f += kNC3) zg[f] = z_a[f] + ldf(fkj_a + f);
      }
      // the new token enters the rings (slot n % C held n - C: outside every window and fold)
      {
        const ll slot = n % C;
        const bool sink = n < p.NS;
        const int qF = F * E / 16, qd = d * E / 16, qv = dv * E / 16;
        uint4* wfk = reinterpret_cast<uint4*>(st + p.owfk + ((ll)h * C + slot) * F * E);
        const uint4* fkn = reinterpret_cast<const uint4*>(base + L.fkn);
        for (int e = ct; e < qF; e += kNC3) wfk[e] = fkn[e];
        if (h % p.hpg == 0) {  // the group's first q head writes the kv token
          uint4* wk = reinterpret_cast<uint4*>(st + p.owk + ((ll)g * C + slot) * d * E);
          uint4* wv = reinterpret_cast<uint4*>(st + p.owv + ((ll)g * C + slot) * dv * E);
          const uint4* kn = reinterpret_cast<const uint4*>(base + L.kn);
          const uint4* vn = reinterpret_cast<const uint4*>(base + L.vn);
          for (int e = ct; e < qd; e += kNC3) wk[e] = kn[e];
          for (int e = ct; e < qv; e += kNC3) wv[e] = vn[e];
          if (sink) {
            uint4* sk = reinterpret_cast<uint4*>(st + p.osk + ((ll)g * p.NS + n) * d * E);
            uint4* sv = reinterpret_cast<uint4*>(st + p.osv + ((ll)g * p.NS + n) * dv * E);
            for (int e = ct; e < qd; e += kNC3) sk[e] = kn[e];
            for (int e = ct; e < qv; e += kNC3) sv[e] = vn[e];
          }
        }
      }
    }
    consumers_sync();
    if (lane == 0) mbar_arrive(empty0 + 8 * s);
    next();
    float m = -INFINITY, l = 0.f;
    if (soft) {
      for (int a = lane; a <= C; a += 32) m = fmaxf(m, sw[a]);
      m = warp_max(m);
      for (int a = lane; a <= C; a += 32)
        if (sw[a] != -INFINITY) l += expf(sw[a] - m);
      l = warp_sum(l);
    }
    const float dla_raw = la ? red[0] : 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f), la4 = acc;
    // chunk 1: weighted values
    if (soft_mode) {
      mbar_wait(full0 + 8 * s, ph);
      const T* Vs = reinterpret_cast<const T*>(sm + s * L.stg);
      if (soft && active)
        for (int a = grp; a <= C; a += G) {
          const float sa = sw[a];
          if (sa != -INFINITY)
            fma4(acc, expf(sa - m), a < C ? ld4(Vs + (ll)a * dv + cq * 4) : *reinterpret_cast<const float4*>(svn + cq * 4));
        }
      __syncwarp();
      if (lane == 0) mbar_arrive(empty0 + 8 * s);
      next();
    }
    // chunks of S: fq^T S_old and the fold
    if (F > 0 && (do_la || fold)) {
      const float4 vq = fold ? *reinterpret_cast<const float4*>(svj + cq * 4) : make_float4(0.f, 0.f, 0.f, 0.f);
      float* Sg = reinterpret_cast<float*>(st + p.oS) + (ll)h * F * dv;
      for (int c = 0; c < nSc; ++c) {
        mbar_wait(full0 + 8 * s, ph);
        const float* Ss = reinterpret_cast<const float*>(sm + s * L.stg);
        const int f0 = c * L.rs, nr = min(L.rs, F - f0);
        if (active && (la || fold))
          for (int f = grp; f < nr; f += G) {
            float4 x = *reinterpret_cast<const float4*>(Ss + f * dv + cq * 4);
            if (la) fma4(la4, sfq[f0 + f], x);
            if (fold) {
              fma4(x, sfkj[f0 + f], vq);
              __stcs(reinterpret_cast<float4*>(Sg + (ll)(f0 + f) * dv + cq * 4), x);
            }
          }
        __syncwarp();
        if (lane == 0) mbar_arrive(empty0 + 8 * s);
        next();
      }
    }
    // y = (gamma_eff num_soft + lambda num_la) / den, the statistics
    if (active) {
      float4 o;
      o.x = g_eff * acc.x + lam * la4.x;
      o.y = g_eff * acc.y + lam * la4.y;
      o.z = g_eff * acc.z + lam * la4.z;
      o.w = g_eff * acc.w + lam * la4.w;
      *reinterpret_cast<float4*>(part + grp * dv + cq * 4) = o;
    }
    consumers_sync();
    if (outputs) {
      const float dsw = live && !bad ? g_eff * l : 0.f, dla = live && !bad ? lam * dla_raw : 0.f;
      const float den = dsw + dla;
      if (p.y) {
        T* yr = (T*)p.y + it * dv;
        for (int j = ct; j < dv; j += kNC3) {
          float a1 = 0.f;
          for (int k2 = 0; k2 < G; ++k2) a1 += part[k2 * dv + j];
          stf(yr + j, bad ? NAN : live && den != 0.f ? a1 / den : 0.f);
        }
      }
      if (ct == 0) {
        if (p.c) p.c[it] = bad ? NAN : soft ? m : 0.f;
        if (p.dsw) p.dsw[it] = bad ? NAN : dsw;
        if (p.dla) p.dla[it] = bad ? NAN : dla;
      }
    }
  }
#endif
}

// Prefill without outputs ------------------------------------------------------------------------

// Zeroes the states of the batch and writes their headers with position `pos`.
__global__ void init_kernel(DP p, ll pos) {
  char* st = seq_state(p, blockIdx.x);
  int4* w = reinterpret_cast<int4*>(st);
  const ll n16 = p.bytes / 16;
  for (ll i = threadIdx.x; i < n16; i += blockDim.x) w[i] = make_int4(0, 0, 0, 0);
  __syncthreads();
  if (threadIdx.x == 0) {
    ll* hdr = reinterpret_cast<ll*>(st);
    hdr[0] = kHybridDecodeMagic;
    hdr[1] = kHybridDecodeVersion;
    hdr[2] = pos;
    for (int i = 0; i < 9; ++i) hdr[3 + i] = p.want[i];
  }
}

constexpr int kBI = 16;  // (f, j) items per thread in build_kernel
constexpr int kBJ = 32;  // tokens per shared-memory chunk

// S[f0 .. f0+FT) = sum_{j < J} fk_j[f] v_j^T, z likewise; block (b*H + h, tile of FT rows).
template <class T>
__global__ void __launch_bounds__(kNT) build_kernel(DP p, ll J, int FT) {
  extern __shared__ float4 smem4[];
  float* sfk = reinterpret_cast<float*>(smem4);  // [kBJ][FT]
  float* sv = sfk + kBJ * FT;                     // [kBJ][dv]
  const int b = blockIdx.x / p.H, h = blockIdx.x - b * p.H, g = h / p.hpg;
  const int f0 = blockIdx.y * FT, dv = p.dv, F = p.F;
  const int rows = min(FT, F - f0);
  char* st = seq_state(p, b);
  float acc[kBI];
  int fr[kBI], jc[kBI];
#pragma unroll
  for (int k = 0; k < kBI; ++k) {
    const int idx = threadIdx.x + k * kNT;
    fr[k] = idx / dv;
    jc[k] = idx - fr[k] * dv;
    acc[k] = 0.f;
  }
  float zacc = 0.f;
  const T* fk = (const T*)p.fk + ((ll)b * p.H + h) * p.seqlen * F;
  const T* v = (const T*)p.v + ((ll)b * p.Hkv + g) * p.seqlen * dv;
  for (ll j0 = 0; j0 < J; j0 += kBJ) {
    const int nj = (int)min((ll)kBJ, J - j0);
    __syncthreads();
    for (int idx = threadIdx.x; idx < kBJ * FT; idx += kNT) {
      const int jj = idx / FT, f = idx - jj * FT;
      sfk[idx] = (jj < nj && f < rows) ? ldf(fk + (j0 + jj) * F + f0 + f) : 0.f;
    }
    for (int idx = threadIdx.x; idx < kBJ * dv; idx += kNT) {
      const int jj = idx / dv, j = idx - jj * dv;
      sv[idx] = jj < nj ? ldf(v + (j0 + jj) * dv + j) : 0.f;
    }
    __syncthreads();
    for (int jj = 0; jj < nj; ++jj) {
#pragma unroll
      for (int k = 0; k < kBI; ++k)
        if (fr[k] < rows) acc[k] += sfk[jj * FT + fr[k]] * sv[jj * dv + jc[k]];
      if ((int)threadIdx.x < rows) zacc += sfk[jj * FT + threadIdx.x];
    }
  }
  float* S = reinterpret_cast<float*>(st + p.oS) + (ll)h * F * dv;
  float* z = reinterpret_cast<float*>(st + p.oz) + (ll)h * F;
#pragma unroll
  for (int k = 0; k < kBI; ++k)
    if (fr[k] < rows) S[(ll)(f0 + fr[k]) * dv + jc[k]] = acc[k];
  if ((int)threadIdx.x < rows) z[f0 + threadIdx.x] = zacc;
}

// Ring and sinks of a prefill of T0 tokens: block (b, kv head) for k / v, (b, Hkv + q head) for fk.
template <class T>
__global__ void ring_kernel(DP p, ll T0) {
  const int b = blockIdx.x, y = blockIdx.y;
  char* st = seq_state(p, b);
  const ll first = T0 > p.C ? T0 - p.C : 0;
  if (y < p.Hkv) {
    const int g = y;
    const T* k = (const T*)p.k + ((ll)b * p.Hkv + g) * T0 * p.d;
    const T* v = (const T*)p.v + ((ll)b * p.Hkv + g) * T0 * p.dv;
    T* wk = reinterpret_cast<T*>(st + p.owk) + (ll)g * p.C * p.d;
    T* wv = reinterpret_cast<T*>(st + p.owv) + (ll)g * p.C * p.dv;
    T* sk = reinterpret_cast<T*>(st + p.osk) + (ll)g * p.NS * p.d;
    T* sv = reinterpret_cast<T*>(st + p.osv) + (ll)g * p.NS * p.dv;
    for (ll idx = threadIdx.x; idx < (T0 - first) * p.d; idx += blockDim.x) {
      const ll n = first + idx / p.d, e = idx % p.d;
      wk[(n % p.C) * p.d + e] = k[n * p.d + e];
    }
    for (ll idx = threadIdx.x; idx < (T0 - first) * p.dv; idx += blockDim.x) {
      const ll n = first + idx / p.dv, e = idx % p.dv;
      wv[(n % p.C) * p.dv + e] = v[n * p.dv + e];
    }
    const ll ns = min((ll)p.NS, T0);
    for (ll idx = threadIdx.x; idx < ns * p.d; idx += blockDim.x) sk[idx] = k[idx];
    for (ll idx = threadIdx.x; idx < ns * p.dv; idx += blockDim.x) sv[idx] = v[idx];
  } else if (p.F > 0) {
    const int h = y - p.Hkv;
    const T* fk = (const T*)p.fk + ((ll)b * p.H + h) * T0 * p.F;
    T* wfk = reinterpret_cast<T*>(st + p.owfk) + (ll)h * p.C * p.F;
    for (ll idx = threadIdx.x; idx < (T0 - first) * p.F; idx += blockDim.x) {
      const ll n = first + idx / p.F, e = idx % p.F;
      wfk[(n % p.C) * p.F + e] = fk[n * p.F + e];
    }
  }
}

// Host side ----------------------------------------------------------------------------------------

ll align_up(ll x) { return (x + kHybridDecodeAlign - 1) / kHybridDecodeAlign * kHybridDecodeAlign; }

void validate_config(const HybridDecodeConfig& c) {
  if (c.dtype != DType::F32 && c.dtype != DType::BF16 && c.dtype != DType::F16)
    fail(std::string("dtype ") + dtype_name(c.dtype) + " not supported on CUDA (f32, bf16, f16)");
  if (c.heads < 1) fail("heads must be >= 1");
  if (c.kv_heads < 1) fail("kv_heads must be >= 1");
  if (c.heads % c.kv_heads != 0) fail("heads must be a multiple of kv_heads");
  if (c.head_dim < 1) fail("head_dim must be >= 1");
  if (c.value_dim < 1) fail("value_dim must be >= 1");
  if (c.feature_dim < 0) fail("feature_dim must be >= 0");
  if (c.window < 1) fail("window must be >= 1");
  if (c.sinks < 0) fail("sinks must be >= 0");
  if (c.geometry != WindowGeometry::Sliding && c.geometry != WindowGeometry::Terraced) fail("unknown window geometry");
}

// Same algorithm as the CPU's hybrid_decode_state_layout (f32 states are byte-identical).
HybridDecodeStateLayout layout_of(const HybridDecodeConfig& c) {
  validate_config(c);
  const ll E = dtype_size(c.dtype), A = 4;
  HybridDecodeStateLayout L;
  L.capacity = c.geometry == WindowGeometry::Terraced ? 2 * c.window : c.window;
  const ll C = L.capacity;
  ll off = 0;
  auto take = [&](ll bytes) { ll o = off; off = align_up(off + bytes); return o; };
  L.header = take(kHybridDecodeHeaderWords * 8);
  L.S = take(A * c.heads * c.feature_dim * c.value_dim);
  L.z = take(A * c.heads * c.feature_dim);
  L.win_k = take(E * c.kv_heads * C * c.head_dim);
  L.win_v = take(E * c.kv_heads * C * c.value_dim);
  L.win_fk = take(E * c.heads * C * c.feature_dim);
  L.sink_k = take(E * c.kv_heads * c.sinks * c.head_dim);
  L.sink_v = take(E * c.kv_heads * c.sinks * c.value_dim);
  L.bytes = off;
  return L;
}

DP make_dp(const HybridDecodeParams& p, const HybridDecodeStateLayout& L) {
  const HybridDecodeConfig& c = p.config;
  if (c.heads > (1 << 20) || c.head_dim > (1 << 20) || c.value_dim > (1 << 20) || c.feature_dim > (1 << 20) ||
      L.capacity > (1 << 24) || c.sinks > (1 << 24))
    fail("sizes too large");
  DP k{};
  k.B = (int)p.batch; k.H = (int)c.heads; k.Hkv = (int)c.kv_heads; k.hpg = k.H / k.Hkv;
  k.d = (int)c.head_dim; k.dv = (int)c.value_dim; k.F = (int)c.feature_dim;
  k.w = (int)std::min<int64_t>(c.window, 1 << 24); k.C = (int)L.capacity; k.NS = (int)c.sinks;
  k.mode = (int)p.mode; k.geom = (int)c.geometry; k.affine = p.lambda_kind == LambdaKind::Affine;
  k.scale = (float)(p.scale != 0.0 ? p.scale : 1.0 / std::sqrt((double)c.head_dim));
  k.state = (char*)p.state; k.bytes = L.bytes;
  k.oS = L.S; k.oz = L.z; k.owk = L.win_k; k.owv = L.win_v; k.owfk = L.win_fk; k.osk = L.sink_k; k.osv = L.sink_v;
  const ll want[9] = {(ll)c.dtype, c.heads, c.kv_heads, c.head_dim, c.value_dim, c.feature_dim, c.window, (ll)c.geometry, c.sinks};
  for (int i = 0; i < 9; ++i) k.want[i] = want[i];
  k.q = p.q; k.k = p.k; k.v = p.v; k.fq = p.fq; k.fk = p.fk;
  k.gamma = (const float*)p.gamma; k.keep = (const float*)p.keep;
  k.y = p.y; k.c = (float*)p.c; k.dsw = (float*)p.den_swa; k.dla = (float*)p.den_la;
  k.outputs = (p.y || p.c || p.den_swa || p.den_la) ? 1 : 0;
  return k;
}

HybridDecodeStateLayout validate_common(const HybridDecodeParams& p, bool have_tokens) {
  HybridDecodeStateLayout L = layout_of(p.config);
  if ((int)p.mode < 0 || (int)p.mode > 6) fail("unknown mode");
  if (p.lambda_kind != LambdaKind::One && p.lambda_kind != LambdaKind::Affine) fail("unknown lambda kind");
  if (p.batch < 0) fail("batch must be >= 0");
  if (p.batch > (1 << 24)) fail("batch too large");
  if (!std::isfinite(p.scale)) fail("scale must be finite");
  if (p.batch == 0) return L;
  if (!p.state) fail("state is null");
  if (p.slots) {
    std::vector<int64_t> s(p.slots, p.slots + p.batch);
    std::sort(s.begin(), s.end());
    if (s[0] < 0) fail("slots must be >= 0");
    if (std::adjacent_find(s.begin(), s.end()) != s.end()) fail("slots must be distinct");
  }
  if (have_tokens) {
    if (!p.k || !p.v) fail("k and v are required");
    if (p.config.feature_dim > 0 && !p.fk) fail("fk is required (feature_dim > 0)");
    if (p.y || p.c || p.den_swa || p.den_la) {
      if (!p.q) fail("q is required for outputs");
      if (!p.gamma) fail("gamma is required for outputs");
      if (p.config.feature_dim > 0 && !p.fq) fail("fq is required for outputs (feature_dim > 0)");
    }
  }
  return L;
}

// Copies the host arrays [slots (B) | cu (B + 1)] into one stream-ordered device buffer.
struct DeviceIndex {
  ll* buf = nullptr;
  cudaStream_t st;
  DeviceIndex(const int64_t* slots, const int64_t* cu, int64_t B, cudaStream_t s, DP& k) : st(s) {
    if (!slots && !cu) return;
    std::vector<ll> host;
    if (slots) host.insert(host.end(), slots, slots + B);
    if (cu) host.insert(host.end(), cu, cu + B + 1);
    check(cudaMallocAsync(reinterpret_cast<void**>(&buf), host.size() * sizeof(ll), st), "allocate index");
    // pageable source: returns once the host data has been staged
    check(cudaMemcpyAsync(buf, host.data(), host.size() * sizeof(ll), cudaMemcpyHostToDevice, st), "copy index");
    k.slots = slots ? buf : nullptr;
    k.cu = cu ? buf + (slots ? B : 0) : nullptr;
  }
  ~DeviceIndex() {
    if (buf) cudaFreeAsync(buf, st);
  }
};

template <class T, int V>
void launch_step_t(const DP& k, cudaStream_t st) {
  const Smem L(k.d, k.dv, k.F, k.C, k.NS);
  const size_t bytes = (size_t)L.total * sizeof(float);
  int dev = 0, optin = 48 * 1024;
  check(cudaGetDevice(&dev), "get device");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "shared memory limit");
  if (bytes > (size_t)optin)
    fail("window / sinks / dims too large for shared memory (" + std::to_string(bytes) + " bytes needed)");
  allow_smem(step_kernel<T, V>, bytes);
  step_kernel<T, V><<<(unsigned)((ll)k.B * k.H), kNT, bytes, st>>>(k);
  check(cudaGetLastError(), "step kernel");
}

void launch_step(const DP& k, DType dt, cudaStream_t st) {
  const bool vec = k.dv % 4 == 0;
  switch (dt) {
    case DType::F32: vec ? launch_step_t<float, 4>(k, st) : launch_step_t<float, 1>(k, st); break;
    case DType::BF16: vec ? launch_step_t<__nv_bfloat16, 4>(k, st) : launch_step_t<__nv_bfloat16, 1>(k, st); break;
    case DType::F16: vec ? launch_step_t<__half, 4>(k, st) : launch_step_t<__half, 1>(k, st); break;
    default: fail("unsupported dtype");
  }
}

// Split kernel: the device facts the choice depends on.
struct Caps {
  int major = 0, sms = 1, optin = 48 * 1024, per_sm = 48 * 1024;
};
Caps device_caps() {
  Caps c;
  int dev = 0;
  check(cudaGetDevice(&dev), "get device");
  check(cudaDeviceGetAttribute(&c.major, cudaDevAttrComputeCapabilityMajor, dev), "compute capability");
  check(cudaDeviceGetAttribute(&c.sms, cudaDevAttrMultiProcessorCount, dev), "SM count");
  check(cudaDeviceGetAttribute(&c.optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "shared memory limit");
  check(cudaDeviceGetAttribute(&c.per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev), "shared memory per SM");
  return c;
}

// Rows of S per thread (a template bucket) for ns splits, or 0 when the split kernel cannot run.
int split_rows(const DP& k, int ns, const Caps& c) {
  if (ns < 1 || ns > 8 || (ns > 1 && c.major < 9)) return 0;  // clusters: sm_90+
  if (k.dv % ns != 0 || k.d % 4 != 0) return 0;
  const int W = k.dv / ns;
  if (W % 4 != 0 || W / 4 > kNT1) return 0;
  const int RG = kNT1 / (W / 4);
  const int R = (k.F + RG - 1) / RG;
  const int KR = R <= 4 ? 4 : R <= 8 ? 8 : R <= 16 ? 16 : 0;
  if (!KR) return 0;
  const Smem1 L(k.d, k.F, W, k.C, k.NS);
  if ((size_t)L.total * sizeof(float) > (size_t)c.optin) return 0;
  return KR;
}

// Blocks per head: about 64 columns each, more while the grid has fewer than two blocks per SM
// (small batches: latency); `forced` > 0 overrides. Measured on an H200 (bf16, H = 32,
// d = F = dv = 128, w = 64): 2 splits beat 4 by 14-21% at B = 16..256 (every block recomputes
// the window's scores), 8 splits are best at B = 1.
int choose_splits(const DP& k, int forced, const Caps& c) {
  if (forced > 0) return split_rows(k, forced, c) ? forced : 0;
  int ns = std::max(1, std::min(8, k.dv / 64));
  while (ns > 1 && !split_rows(k, ns, c)) ns /= 2;
  if (!split_rows(k, ns, c)) return 0;
  while (ns < 8 && (ll)k.B * k.H * ns < 2LL * c.sms && split_rows(k, 2 * ns, c)) ns *= 2;
  return ns;
}

template <class T, int KR, int KC, int MB>
void launch_step1_t(const DP& k, const Caps& c, cudaStream_t st) {
  const Smem1 L(k.d, k.F, k.W, k.C, k.NS);
  const size_t bytes = (size_t)L.total * sizeof(float);
  allow_smem(step1_kernel<T, KR, KC, MB>, bytes);
  (void)c;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)((ll)k.B * k.H * k.ns));
  cfg.blockDim = dim3(kNT1);
  cfg.dynamicSmemBytes = bytes;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = (unsigned)k.ns;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = k.ns > 1 ? 1 : 0;
  check(cudaLaunchKernelEx(&cfg, step1_kernel<T, KR, KC, MB>, k), "step kernel (split)");
}

template <class T, int KC, int MB>
void launch_step1_kr(const DP& k, int KR, const Caps& c, cudaStream_t st) {
  switch (KR) {
    case 4: launch_step1_t<T, 4, KC, MB>(k, c, st); break;
    case 8: launch_step1_t<T, 8, KC, MB>(k, c, st); break;
    default: launch_step1_t<T, 16, KC, MB>(k, c, st); break;
  }
}

template <class T>
void launch_step1_v(const DP& k, int KR, int variant, const Caps& c, cudaStream_t st) {
  if (variant == 1) launch_step1_kr<T, 8, 4>(k, KR, c, st);
  else launch_step1_kr<T, 16, 3>(k, KR, c, st);
}

void launch_step1(const DP& k, int KR, int variant, DType dt, const Caps& c, cudaStream_t st) {
  switch (dt) {
    case DType::F32: launch_step1_v<float>(k, KR, variant, c, st); break;
    case DType::BF16: launch_step1_v<__nv_bfloat16>(k, KR, variant, c, st); break;
    case DType::F16: launch_step1_v<__half>(k, KR, variant, c, st); break;
    default: fail("unsupported dtype");
  }
}

// Fused kernel: dynamic shared memory bytes for ns blocks per head, or 0 where it cannot run.
size_t fused_bytes(const DP& k, int ns, int E, const Caps& c) {
  if (c.major < 9 || ns < 1 || ns > 8) return 0;
  if (k.geom != 0 || !(k.mode == kHybrid || k.mode == kSwa || k.mode == kLa || k.mode == kNone)) return 0;
  if (k.d % 4 || (k.d * E) % 16 || k.dv % 4 || (k.dv * E) % 16 || k.dv / 4 > kNT2 || k.dv % ns) return 0;
  if ((ll)k.B * k.H * ns >= (1LL << 31)) return 0;
  const int total = Smem2(k.F, k.d, k.dv, k.C, E, ns, 1).total;
  return (size_t)total <= (size_t)c.optin ? (size_t)total : 0;
}

// Blocks per head of the fused kernels: 2, doubled while twice the grid still fits the SMs
// (small batches: latency). Measured on an H200 (bf16, H = 32, d = F = dv = 128, w = 64,
// one head per cluster): 2 beat 1 by 2-6% and 4 by 40-60% at B = 16..256 (4 leave the
// registers 4 blocks per SM: half the bytes in flight); at B = 1, 4 beat 2 and 8 by 3-8%.
// One head per cluster: a persistent two-stage variant (a cluster walking several heads, fetching
// the next head's data during the current one) measured 35-50% slower on an H200 at B = 16..256
// (two resident blocks per SM with one stage each in flight, against four blocks per SM with all
// of their copies in flight), so it did not ship; the persistent kernel (step3_kernel) streams
// through a deeper ring of smaller stages instead and takes over from 2 heads per SM.
int choose_fused(const DP& k, int E, const Caps& c) {
  int ns = fused_bytes(k, 2, E, c) ? 2 : 1;
  while (ns < 8 && (ll)k.B * k.H * 2 * ns <= c.sms && fused_bytes(k, 2 * ns, E, c)) ns *= 2;
  while (ns > 1 && !fused_bytes(k, ns, E, c)) ns /= 2;
  return fused_bytes(k, ns, E, c) ? ns : 0;
}

template <class T>
void launch_fused_t(const DP& k, size_t bytes, cudaStream_t st) {
  void (*kern)(DP) = step2_kernel<T>;
  allow_smem(kern, bytes, true);  // the bytes in flight are what sets the speed
  const ll clusters = (ll)k.B * k.H;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)(clusters * k.ns));
  cfg.blockDim = dim3(kNT2);
  cfg.dynamicSmemBytes = bytes;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = (unsigned)k.ns;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = k.ns > 1 ? 1 : 0;
  check(cudaLaunchKernelEx(&cfg, kern, k), "step kernel (fused)");
}

void launch_fused(const DP& k, size_t bytes, DType dt, cudaStream_t st) {
  switch (dt) {
    case DType::F32: launch_fused_t<float>(k, bytes, st); break;
    case DType::BF16: launch_fused_t<__nv_bfloat16>(k, bytes, st); break;
    case DType::F16: launch_fused_t<__half>(k, bytes, st); break;
    default: fail("unsupported dtype");
  }
}

// Automatic choice of the persistent kernel: from kPersistMinPerSm heads per SM, at kPersistBps
// blocks per SM. Measured on an H200 (bf16, H = 32, d = F = dv = 128, w = 64, graph replay; the
// fused kernel at 2 / 4 splits in brackets): B = 256 0.360 ms at 2 blocks per SM, 0.422 at 1,
// 0.414 at 3 (0.540); B = 64 0.100 / 0.116 / 0.109 (0.141); B = 16 0.027 / 0.035 / 0.029 (0.036);
// B = 1 0.0123 (0.0117 at 4 splits: the fused kernel stays below 2 heads per SM).
constexpr int kPersistMinPerSm = 2, kPersistBps = 2;

// Persistent kernel: dynamic shared memory bytes for `bps` blocks per SM (and in *nst the stages
// that fit), or 0 where it cannot run (the bulk copies need 16-byte rows and addresses).
size_t persist_bytes(const DP& k, int bps, int E, const Caps& c, int* nst) {
  if (c.major < 9 || bps < 1 || bps > 4) return 0;
  if (k.geom != 0 || !(k.mode == kHybrid || k.mode == kSwa || k.mode == kLa || k.mode == kNone)) return 0;
  if (k.d % 4 || k.dv % 4 || (k.d * E) % 16 || (k.dv * E) % 16 || (k.F * E) % 16 || k.dv / 4 > kNC3) return 0;
  for (const void* ptr : {(const void*)k.state, k.q, k.k, k.v, k.fq, k.fk})
    if (reinterpret_cast<uintptr_t>(ptr) % 16) return 0;
  const int budget = std::min(c.optin, c.per_sm / bps - 1024);  // 1 KB per block reserved
  int n = kMaxSt3;
  while (n >= 2 && Smem3(k.F, k.d, k.dv, k.C, E, n).total > budget) --n;
  if (n < 2) return 0;
  *nst = n;
  return (size_t)Smem3(k.F, k.d, k.dv, k.C, E, n).total;
}

template <class T>
void launch_persist_t(const DP& k, size_t bytes, int bps, const Caps& c, cudaStream_t st) {
  void (*kern)(DP) = step3_kernel<T>;
  allow_smem(kern, bytes, true);
  const ll items = (ll)k.B * k.H;
  const ll grid = std::min<ll>(items, (ll)c.sms * bps);
  step3_kernel<T><<<(unsigned)grid, kNT3, bytes, st>>>(k);
  check(cudaGetLastError(), "step kernel (persistent)");
}

void launch_persist(const DP& k, size_t bytes, int bps, DType dt, const Caps& c, cudaStream_t st) {
  switch (dt) {
    case DType::F32: launch_persist_t<float>(k, bytes, bps, c, st); break;
    case DType::BF16: launch_persist_t<__nv_bfloat16>(k, bytes, bps, c, st); break;
    case DType::F16: launch_persist_t<__half>(k, bytes, bps, c, st); break;
    default: fail("unsupported dtype");
  }
}

template <class T>
void launch_build_t(const DP& k, ll T0, ll J, cudaStream_t st) {
  if (k.F > 0 && J > 0) {
    const int FT = std::max(1, std::min(std::min(k.F, kNT * kBI / k.dv), kNT));
    if ((ll)k.dv > (ll)kNT * kBI) fail("value_dim too large for the parallel prefill");
    const size_t bytes = (size_t)kBJ * (FT + k.dv) * sizeof(float);
    allow_smem(build_kernel<T>, bytes);
    dim3 grid((unsigned)((ll)k.B * k.H), (unsigned)((k.F + FT - 1) / FT));
    build_kernel<T><<<grid, kNT, bytes, st>>>(k, J, FT);
    check(cudaGetLastError(), "build kernel");
  }
  if (T0 > 0) {
    ring_kernel<T><<<dim3((unsigned)k.B, (unsigned)(k.Hkv + k.H)), kNT, 0, st>>>(k, T0);
    check(cudaGetLastError(), "ring kernel");
  }
}

}  // namespace decode_cuda

using namespace decode_cuda;

HybridDecodeStateLayout hybrid_decode_state_layout_cuda(const HybridDecodeConfig& cfg) { return layout_of(cfg); }

int64_t hybrid_decode_state_position_cuda(const HybridDecodeConfig& c, const void* host_state) {
  validate_config(c);
  if (!host_state) fail("state is null");
  int64_t h[kHybridDecodeHeaderWords];
  std::memcpy(h, host_state, sizeof(h));
  if (h[0] != kHybridDecodeMagic) fail("state has no decode header (not initialised by prefill?)");
  if (h[1] != kHybridDecodeVersion) fail("state layout version " + std::to_string(h[1]) + " not supported");
  if (h[2] < 0) fail("state position is negative");
  const int64_t want[] = {(int64_t)c.dtype, c.heads, c.kv_heads, c.head_dim, c.value_dim, c.feature_dim, c.window, (int64_t)c.geometry, c.sinks};
  const char* names[] = {"dtype", "heads", "kv_heads", "head_dim", "value_dim", "feature_dim", "window", "geometry", "sinks"};
  for (int i = 0; i < 9; ++i)
    if (h[3 + i] != want[i])
      fail(std::string("state was built with a different ") + names[i] + " (" + std::to_string(h[3 + i]) + " vs " + std::to_string(want[i]) + ")");
  return h[2];
}

void hybrid_decode_prefill_cuda(const HybridDecodePrefillParams& p, void* stream) {
  if (p.seqlen < 0) fail("seqlen must be >= 0");
  const HybridDecodeStateLayout L = validate_common(p, p.seqlen > 0);
  if (p.batch == 0) return;
  cudaStream_t st = (cudaStream_t)stream;
  DP k = make_dp(p, L);
  k.packed = 0;
  k.seqlen = p.seqlen;
  DeviceIndex index(p.slots, nullptr, p.batch, st, k);
  const bool parallel = !k.outputs;
  init_kernel<<<(unsigned)k.B, kNT, 0, st>>>(k, parallel ? p.seqlen : 0);
  check(cudaGetLastError(), "init kernel");
  if (p.seqlen == 0) return;
  if (parallel) {
    // Lin(T0): positions j < geo_lo(T0)
    const ll T0 = p.seqlen, w = k.w;
    const ll J = std::max<ll>(0, k.geom == 0 ? T0 - w + 1 : (T0 / w - 1) * w);
    switch (p.config.dtype) {
      case DType::F32: launch_build_t<float>(k, T0, J, st); break;
      case DType::BF16: launch_build_t<__nv_bfloat16>(k, T0, J, st); break;
      case DType::F16: launch_build_t<__half>(k, T0, J, st); break;
      default: fail("unsupported dtype");
    }
  } else {
    launch_step(k, p.config.dtype, st);
  }
}

void hybrid_decode_step_cuda(const HybridDecodeStepParams& p, void* stream) {
  const HybridDecodeStateLayout L = validate_common(p, true);
  if (p.batch == 0) return;
  if (p.cu_seqlens) {
    if (p.cu_seqlens[0] != 0) fail("cu_seqlens[0] must be 0");
    for (int64_t b = 0; b < p.batch; ++b)
      if (p.cu_seqlens[b + 1] - p.cu_seqlens[b] < 1) fail("every sequence must append at least one token (cu_seqlens strictly increasing)");
  } else if (p.tokens_per_seq < 1) {
    fail("tokens_per_seq must be >= 1");
  }
  cudaStream_t st = (cudaStream_t)stream;
  DP k = make_dp(p, L);
  k.packed = 1;
  k.per_seq = p.tokens_per_seq;
  // one token per sequence (cu_seqlens all ones is the same packed layout): the split kernel
  const bool single = p.cu_seqlens ? p.cu_seqlens[p.batch] == p.batch : p.tokens_per_seq == 1;
  if (single && p.splits >= 0) {
    const Caps caps = device_caps();
    // the persistent kernel: variant 4 (`splits` blocks per SM), or automatic for large batches
    if (p.variant == 4 || (p.variant == 0 && p.splits == 0 && (ll)k.B * k.H >= kPersistMinPerSm * caps.sms)) {
      const int E = (int)dtype_size(p.config.dtype);
      const int bps = p.variant == 4 && p.splits > 0 ? (int)p.splits : kPersistBps;
      int nst = 0;
      const size_t bytes = persist_bytes(k, bps, E, caps, &nst);
      if (bytes) {
        k.ns = nst;
        k.per_seq = 1;
        DeviceIndex index(p.slots, nullptr, p.batch, st, k);
        launch_persist(k, bytes, bps, p.config.dtype, caps, st);
        return;
      }
    }
    if (p.variant == 0 || p.variant == 3 || p.variant == 4) {  // the fused kernel where it runs
      const int E = (int)dtype_size(p.config.dtype);
      const int ns = p.splits > 0 ? (fused_bytes(k, (int)p.splits, E, caps) ? (int)p.splits : 0) : choose_fused(k, E, caps);
      if (ns > 0) {
        k.ns = ns;
        k.W = k.dv / ns;
        k.per_seq = 1;
        DeviceIndex index(p.slots, nullptr, p.batch, st, k);
        launch_fused(k, fused_bytes(k, ns, E, caps), p.config.dtype, st);
        return;
      }
    }
    const int ns = choose_splits(k, (int)p.splits, caps);
    if (ns > 0) {
      k.ns = ns;
      k.W = k.dv / ns;
      k.per_seq = 1;
      DeviceIndex index(p.slots, nullptr, p.batch, st, k);
      launch_step1(k, split_rows(k, ns, caps), (int)p.variant, p.config.dtype, caps, st);
      return;
    }
    if (p.splits > 0) fail("splits = " + std::to_string(p.splits) + " cannot run for this configuration / device");
  }
  DeviceIndex index(p.slots, p.cu_seqlens, p.batch, st, k);
  launch_step(k, p.config.dtype, st);
}

}  // namespace ha
