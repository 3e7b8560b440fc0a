// CUDA entry points of hybrid attention (SPEC sec. 2): validation, segment planning, dispatch to
// the tensor-core fast path where it applies and to the generic fp32 SIMT path otherwise.
// Every launch is checked; failures throw std::runtime_error with the CUDA error string.
#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include <cmath>

#include "ops/hybrid_attention/ha_common.cuh"
#include "ops/hybrid_attention/hybrid_attention.h"

namespace ha {
namespace {

using cuda_detail::KP;

void validate(const HybridAttentionParams& p) {
  auto fail = [](const std::string& m) { throw std::runtime_error("hybrid_attention_cuda: " + m); };
  if (p.dtype != DType::F32 && p.dtype != DType::BF16 && p.dtype != DType::F16)
    fail(std::string("unsupported dtype ") + dtype_name(p.dtype) + " (CUDA kernels take f32, bf16, f16)");
  if (p.batch < 0 || p.heads < 1 || p.kv_heads < 1 || p.seqlen < 0) fail("bad batch/heads/seqlen");
  if (p.heads % p.kv_heads != 0) fail("heads must be a multiple of kv_heads");
  if (p.head_dim < 1 || p.value_dim < 1 || p.feature_dim < 1) fail("head_dim, value_dim, feature_dim must be >= 1");
  if (p.head_dim > 256 || p.value_dim > 256 || p.feature_dim > 256) fail("head_dim, value_dim, feature_dim must be <= 256");
  if (p.window < 1) fail("window must be >= 1");
  if ((int)p.mode < 0 || (int)p.mode > 6) fail("bad mode");
  if ((int)p.geometry < 0 || (int)p.geometry > 1) fail("bad geometry");
  if (p.seqlen > (int64_t)1 << 30) fail("seqlen too large");
}

KP make_kp(const HybridAttentionParams& p) {
  KP k{};
  k.B = (int)p.batch; k.H = (int)p.heads; k.Hkv = (int)p.kv_heads; k.T = (int)p.seqlen;
  k.d = (int)p.head_dim; k.dv = (int)p.value_dim; k.F = (int)p.feature_dim;
  k.w = (int)std::min<int64_t>(p.window, (int64_t)1 << 30);
  k.S = (int)std::max<int64_t>(0, std::min<int64_t>(p.sinks, (int64_t)1 << 30));
  k.mode = (int)p.mode; k.geom = (int)p.geometry; k.affine = p.lambda_kind == LambdaKind::Affine ? 1 : 0;
  k.group = k.H / k.Hkv;
  k.scale = p.scale > 0.0 ? (float)p.scale : (float)(1.0 / std::sqrt((double)p.head_dim));
  k.q = p.q; k.k = p.k; k.v = p.v; k.fq = p.fq; k.fk = p.fk;
  k.gamma = (const float*)p.gamma; k.keep = (const float*)p.keep;
  k.y = p.y; k.c = (float*)p.c; k.den_swa = (float*)p.den_swa; k.den_la = (float*)p.den_la;
  // Segments: enough (b, h, segment) blocks to fill the GPU several times over.
  int dev = 0, sms = 132;
  if (cudaGetDevice(&dev) == cudaSuccess) {
    int v = 0;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && v > 0) sms = v;
  }
  const int64_t BH = std::max<int64_t>(1, (int64_t)k.B * k.H);
  int64_t want = (4LL * sms + BH - 1) / BH;
  int64_t L = (k.T + want - 1) / std::max<int64_t>(1, want);
  L = std::max<int64_t>(64, (L + 63) / 64 * 64);
  k.Lseg = (int)std::min<int64_t>(L, std::max<int64_t>(64, ((int64_t)k.T + 63) / 64 * 64));
  k.nseg = (int)std::max<int64_t>(1, (k.T + k.Lseg - 1) / k.Lseg);
  return k;
}

}  // namespace

void hybrid_attention_forward_cuda(const HybridAttentionParams& p, void* stream) {
  validate(p);
  if (!p.q || !p.k || !p.v || !p.fq || !p.fk || !p.gamma || !p.y || !p.c || !p.den_swa || !p.den_la)
    throw std::runtime_error("hybrid_attention_cuda: null input/output pointer");
  cudaStream_t st = (cudaStream_t)stream;
  KP k = make_kp(p);
  if (k.B == 0 || k.T == 0) return;
  const int64_t rows = (int64_t)k.B * k.H * k.T;
  if (p.mode == HybridMode::None) {
    cuda_detail::check(cudaMemsetAsync(p.y, 0, dtype_size(p.dtype) * rows * k.dv, st), "memset y");
    cuda_detail::check(cudaMemsetAsync(p.c, 0, 4 * rows, st), "memset c");
    cuda_detail::check(cudaMemsetAsync(p.den_swa, 0, 4 * rows, st), "memset den_swa");
    cuda_detail::check(cudaMemsetAsync(p.den_la, 0, 4 * rows, st), "memset den_la");
    return;
  }
  if (cuda_detail::launch_forward_fast(k, p.dtype, st)) return;
  cuda_detail::launch_forward_generic(k, p.dtype, st);
}

void hybrid_attention_backward_cuda(const HybridAttentionGradParams& g, void* stream) {
  const HybridAttentionParams& p = g.fwd;
  validate(p);
  if (!g.dq || !g.dk || !g.dv || !g.dfq || !g.dfk || !g.dgamma)
    throw std::runtime_error("hybrid_attention_cuda: null gradient pointer");
  cudaStream_t st = (cudaStream_t)stream;
  KP k = make_kp(p);
  if (k.T == 0 || k.B == 0) {
    cuda_detail::check(cudaMemsetAsync(g.dgamma, 0, 4 * k.H, st), "memset dgamma");
    return;
  }
  if (p.mode != HybridMode::None &&
      (!p.q || !p.k || !p.v || !p.fq || !p.fk || !p.gamma || !p.y || !g.dy || !p.den_swa || !p.den_la))
    throw std::runtime_error("hybrid_attention_cuda: null input pointer");
  k.dy = g.dy;
  if (p.mode != HybridMode::None &&
      cuda_detail::launch_backward_fast(k, p.dtype, g.dq, g.dk, g.dv, g.dfq, g.dfk, (float*)g.dgamma, st))
    return;
  cuda_detail::launch_backward_generic(k, p.dtype, g.dq, g.dk, g.dv, g.dfq, g.dfk, (float*)g.dgamma, st);
}

}  // namespace ha
