// Recurrent decode of hybrid attention (SPEC sec. 2 and 7): a fixed-size state per sequence
// (linear-attention sums over the tokens that have left the window, plus the window's keys and
// values as a ring buffer, plus the attention-sink tokens), a prefill that builds it, and a step
// that appends tokens to a ragged batch of sequences. Parameters in the style of flash-attention's
// flash.h: raw pointers and sizes, no framework types. Modes, geometries and lambda kinds are the
// parallel form's (ops/hybrid_attention/hybrid_attention.h); every mode gives the same y and
// statistics as the parallel form: parallel(T) == prefill(T0) + steps up to T, to float tolerance.
//
// ---------------------------------------------------------------------------------------------
// Semantics (one q head h of sequence b, token at 0-based position n):
//   gamma_eff = gamma[h] * keep[b, h]   (keep null: 1; modes swa and sinks: keep[b, h] alone,
//                                        as in the parallel form)  lambda = 1 or 1 - gamma[h] (Affine)
//   soft set  A(n): Win(n) for hybrid / swa / overlap, {i <= min(sinks-1, n)} for sinks, else {}
//   LA set    L(n): Lin(n) for hybrid / la, {j <= n} for la-full / overlap, else {}
//   c   = max_{A} s_ni (0 when A is empty)     s_ni = scale * q_n . k_i
//   num = gamma_eff * sum_A exp(s - c) v_i + lambda * sum_L (fq_n . fk_j) v_j
//   den = gamma_eff * sum_A exp(s - c)     + lambda * sum_L (fq_n . fk_j)
//   y   = num / den, or 0 where den == 0.  Mode none: y = 0 and all statistics 0.
//   Statistics: c, den_swa = gamma_eff * sum_A exp(s - c), den_la = lambda * sum_L fq.fk.
// For swa and sinks the gamma_eff factor cancels in y unless it is 0 (keep = 0), which gives
// y = 0 (the softmax branch is switched off and nothing else is left).
//
// ---------------------------------------------------------------------------------------------
// State. One contiguous buffer per sequence, hybrid_decode_state_bytes(config) bytes; a batch of
// states is one allocation of `num_slots * bytes` and a call addresses sequence b of the batch
// at slot slots[b] (slots null: slot b), so sequences can live anywhere in a slot pool
// (continuous batching). Sections, each starting at a 64-byte aligned offset given by
// hybrid_decode_state_layout(config) (E = element type `dtype`, A = accum_dtype(dtype)):
//
//   header  int64[16]   [0] magic 0x44425948 ("HYBD")  [1] layout version (1)
//                       [2] pos = tokens seen          [3] dtype
//                       [4] heads [5] kv_heads [6] head_dim [7] value_dim [8] feature_dim
//                       [9] window [10] geometry [11] sinks [12..15] 0
//   S       A[H, F, dv]      sum_{j in Lin(pos)} fk_j v_j^T   (per q head)
//   z       A[H, F]          sum_{j in Lin(pos)} fk_j         (per q head)
//   win_k   E[Hkv, C, d]     keys of the last min(pos, C) tokens; token i lives in slot i % C
//   win_v   E[Hkv, C, dv]    values, same slots
//   win_fk  E[H, C, F]       feature keys of the same tokens, per q head
//   sink_k  E[Hkv, sinks, d] keys of tokens 0 .. min(pos, sinks)-1 (slot = position)
//   sink_v  E[Hkv, sinks, dv]
//
// with C = window (sliding) or 2 * window (terraced: the previous and the current block of w).
// Invariant after every call: S, z cover exactly Lin(pos) (the LA set of the next token), and
// every token of Win(pos) other than pos itself is in the ring. The state does not depend on the
// mode, on gamma, lambda or keep: one state serves every mode (e.g. evaluate hybrid and swa
// from the same prefix). The bytes are position independent (no pointers), so a state can be
// saved, restored, copied between slots or mirrored on the GPU as is. Every call checks the
// header against its config and throws std::invalid_argument on a mismatch (or an
// uninitialised buffer); prefill writes the header.
//
// ---------------------------------------------------------------------------------------------
// Layouts of the token tensors (contiguous, row-major, element type `dtype`; gamma, keep and the
// statistics have the accumulator type accum_dtype(dtype); GQA: q head h reads kv head
// h / (H / Hkv); fq, fk are per q head):
//   prefill (like HybridAttentionParams, T0 = seqlen):
//     q [B, H, T0, d]  k [B, Hkv, T0, d]  v [B, Hkv, T0, dv]  fq, fk [B, H, T0, F]
//     y [B, H, T0, dv]  c, den_swa, den_la [B, H, T0]
//   step (packed ragged batch, token-major as in flash-attention's varlen API; N tokens in all,
//   sequence b owns packed rows cu_seqlens[b] .. cu_seqlens[b+1]-1, its new positions
//   pos_b .. pos_b + n_b - 1 in order):
//     q [N, H, d]  k [N, Hkv, d]  v [N, Hkv, dv]  fq, fk [N, H, F]
//     y [N, H, dv]  c, den_swa, den_la [N, H]
//   cu_seqlens null: every sequence appends `tokens_per_seq` tokens (N = B * tokens_per_seq);
//   with tokens_per_seq = 1 the layout is also [B, H, 1, d], the parallel form's with T = 1.
//   gamma [H], keep [B, H] (indexed by the batch entry b, not by the slot; null = all 1).
// Dtypes: F64 and F32 on the CPU. Accumulation (S, z, softmax sums) in the accumulator type.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "ops/hybrid_attention/hybrid_attention.h"

namespace ha {

struct HybridDecodeConfig {
  DType dtype = DType::F32;
  int64_t heads = 0, kv_heads = 0;
  int64_t head_dim = 0, value_dim = 0, feature_dim = 0;  // feature_dim may be 0 (no LA at all)
  int64_t window = 64;                                   // >= 1
  int64_t sinks = 8;                                     // tokens kept for mode sinks, >= 0
  WindowGeometry geometry = WindowGeometry::Sliding;
};

// Byte offsets of the sections of one sequence's state (see above), and its total size.
struct HybridDecodeStateLayout {
  int64_t capacity = 0;  // C: ring slots per kv head
  int64_t header = 0, S = 0, z = 0, win_k = 0, win_v = 0, win_fk = 0, sink_k = 0, sink_v = 0;
  int64_t bytes = 0;  // per sequence, a multiple of 64
};

constexpr int64_t kHybridDecodeMagic = 0x44425948;  // "HYBD"
constexpr int64_t kHybridDecodeVersion = 1;
constexpr int64_t kHybridDecodeHeaderWords = 16;
constexpr int64_t kHybridDecodeAlign = 64;

// Throws std::invalid_argument on an invalid config (window < 1, heads % kv_heads != 0, ...).
HybridDecodeStateLayout hybrid_decode_state_layout(const HybridDecodeConfig& cfg);
int64_t hybrid_decode_state_bytes(const HybridDecodeConfig& cfg);
// Tokens seen by the state at `state` (reads the header; validates it against cfg).
int64_t hybrid_decode_state_position(const HybridDecodeConfig& cfg, const void* state);

struct HybridDecodeParams {
  HybridDecodeConfig config;
  int64_t batch = 0;  // B: sequences in this call
  HybridMode mode = HybridMode::Hybrid;
  LambdaKind lambda_kind = LambdaKind::One;
  double scale = 0.0;  // softmax scale, 1/sqrt(head_dim) when 0

  void* state = nullptr;            // base of the slot pool
  const int64_t* slots = nullptr;   // [B] distinct slot indices, or null: slot b

  const void* gamma = nullptr;  // [H] accum dtype (required when y is produced)
  const void* keep = nullptr;   // [B, H] accum dtype, may be null

  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* fq = nullptr;
  const void* fk = nullptr;

  void* y = nullptr;        // may be null in prefill (then q, fq, gamma may be null too)
  void* c = nullptr;        // statistics, each may be null (not written)
  void* den_swa = nullptr;
  void* den_la = nullptr;
};

struct HybridDecodePrefillParams : HybridDecodeParams {
  int64_t seqlen = 0;  // T0 >= 0, the same for every sequence of the call
};

struct HybridDecodeStepParams : HybridDecodeParams {
  const int64_t* cu_seqlens = nullptr;  // [B + 1], cu[0] = 0, every count >= 1; or null
  int64_t tokens_per_seq = 1;           // used when cu_seqlens is null, >= 1
  // CUDA single-token steps (one token per sequence): thread blocks per head (the cluster of the
  // fused or the split kernel; blocks per SM for variant 4); 0 = automatic, -1 = the general
  // kernel, k > 0 = k (an error where nothing can run). For the dev harness and tests; the CPU
  // ignores it.
  int64_t splits = 0;
  // Kernel variant, for the dev harness and tests: 0 = automatic (where they run: sm_90+, sliding
  // window, modes hybrid / swa / la / none, the persistent kernel from 2 heads per SM and the
  // fused kernel, one head per cluster, below; else the split kernel), 1 and 2 = the split
  // kernel's two tunings, 3 = the fused kernel, 4 = the persistent kernel at `splits` blocks per
  // SM (3 and 4 fall back to the fused / split kernel where they cannot run).
  int64_t variant = 0;
};

// Resets the B states (pos = 0, sums 0) and feeds them T0 tokens; writes y / statistics for
// those tokens when the pointers are set (equal to the parallel form's first T0 rows).
void hybrid_decode_prefill_cpu(const HybridDecodePrefillParams& p);
// Appends n_b >= 1 tokens to each of the B states (ragged positions), writing y and statistics.
void hybrid_decode_step_cpu(const HybridDecodeStepParams& p);

#ifdef HA_WITH_CUDA
// ---------------------------------------------------------------------------------------------
// CUDA decode (hybrid_decode.cu). Element dtypes f32, bf16, f16; S, z, gamma, keep and the
// statistics are fp32. The state layout is the one above, byte for byte (a state moves between
// the CPU and the GPU as bytes; only f32 states can continue on the CPU). `state` and the token
// tensors are device pointers; `slots` and `cu_seqlens` are HOST arrays (as on the CPU), copied
// to the device once per call into a stream-ordered buffer: with both null a step is exactly one
// kernel launch, no host synchronisation, no allocation, capturable in a CUDA graph (the binding's
// captureStep does so). Single-token steps on sm_90+, sliding windows in modes hybrid / swa / la /
// none: the persistent kernel (blocks streaming heads through a TMA stage ring) from 2 heads per
// SM, else the fused kernel (a thread block cluster per head); the other modes and the terraced
// geometry: the split kernel (hybrid_decode.cu); everything else the general per-head kernel. Header word 12 is used as a counter inside a call and is 0 again when the call ends.
// A state whose header does not match the config (e.g. never prefilled) cannot be detected on
// the host without a synchronisation: the kernel leaves it untouched and writes NaN to y and to
// the statistics of its rows.
// Layout for f32 / bf16 / f16 (the CPU's hybrid_decode_state_layout takes f64 / f32 only);
// throws std::invalid_argument on an invalid config.
HybridDecodeStateLayout hybrid_decode_state_layout_cuda(const HybridDecodeConfig& cfg);
// Position stored in a HOST copy of a state's header, validated against cfg (dtypes f32, bf16,
// f16); throws std::invalid_argument on a mismatch.
int64_t hybrid_decode_state_position_cuda(const HybridDecodeConfig& cfg, const void* host_state);
// Prefill: with y, c, den_swa and den_la all null the state is built in parallel (S = FK^T V over
// Lin(T0) as a reduction over tokens, the ring copied); otherwise the T0 tokens are appended in
// order by the step kernel, writing their outputs. `stream` is a cudaStream_t.
void hybrid_decode_prefill_cuda(const HybridDecodePrefillParams& p, void* stream);
void hybrid_decode_step_cuda(const HybridDecodeStepParams& p, void* stream);
#endif

}  // namespace ha
