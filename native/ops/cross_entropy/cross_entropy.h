// Next-token cross-entropy of the Llama lm_head. Parameters in the style of flash-attention's
// flash.h: raw pointers and sizes, no framework types.
//
// Rows are already aligned with their targets (the caller shifts: target[n] = ids[n + 1], the
// last position and padding get ignore_index). Over the rows with target != ignore_index:
//   lse_n = log sum_j exp(z_nj),   loss = sum_n (lse_n - z_n,target[n]) / norm
// norm = normalizer if > 0, else the number of counted rows (PyTorch's reduction="mean"; with
// no counted row that is 0/0 = NaN, as in PyTorch). normalizer > 0 gives HF's
// sum / num_items_in_batch for gradient accumulation.
// Backward: dz_nj = (softmax(z_n)_j - [j = target[n]]) * dloss / norm; ignored rows get 0.
//
// Element type `dtype` (f64 or f32, std::invalid_argument otherwise) for logits, hidden,
// weight and gradients; lse [N] has the accumulator type accum_dtype(dtype). Arithmetic in
// f64; loss is summed over rows in row order (deterministic). A target that is neither
// ignore_index nor in [0, V) throws std::out_of_range naming the row.
//
// Chunked variant (fused with the lm_head, logits = hidden weight^T): takes hidden [N, D] and
// weight [V, D], walks the vocabulary in chunks of `vocab_chunk` rows of weight and never holds
// more than N x vocab_chunk logits. The forward keeps an online (max, sum) per row; the backward
// recomputes each chunk's logits from lse and adds dz_chunk weight_chunk into dhidden and
// dz_chunk^T hidden into the chunk's rows of dweight (matmul_cpu, f64 accumulation).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct CrossEntropyParams {
  DType dtype = DType::F32;
  int64_t rows = 0, vocab = 0;
  int32_t ignore_index = -100;
  double normalizer = 0.0;  // 0: number of counted rows

  const void* logits = nullptr;      // [N, V]
  const int32_t* targets = nullptr;  // [N]
  void* lse = nullptr;               // [N], accumulator dtype; may be null for a forward-only call
  double* loss = nullptr;            // scalar out
  int64_t* count = nullptr;          // optional out: number of counted rows
};

struct CrossEntropyGradParams {
  CrossEntropyParams fwd;       // logits, targets and the forward's lse (read only)
  double dloss = 1.0;           // gradient of the loss
  void* dlogits = nullptr;      // [N, V]; may alias fwd.logits (in-place backward)
};

void cross_entropy_forward_cpu(const CrossEntropyParams& p);
void cross_entropy_backward_cpu(const CrossEntropyGradParams& g);

struct ChunkedCrossEntropyParams {
  DType dtype = DType::F32;
  int64_t rows = 0, dim = 0, vocab = 0;
  int64_t vocab_chunk = 0;  // 0: 4096
  int32_t ignore_index = -100;
  double normalizer = 0.0;  // 0: number of counted rows

  const void* hidden = nullptr;      // [N, D]
  const void* weight = nullptr;      // [V, D] (lm_head.weight)
  const int32_t* targets = nullptr;  // [N]
  void* lse = nullptr;               // [N], accumulator dtype; needed by the backward
  double* loss = nullptr;            // scalar out (may be null in the backward)
  int64_t* count = nullptr;          // optional out
};

struct ChunkedCrossEntropyGradParams {
  ChunkedCrossEntropyParams fwd;  // hidden, weight, targets and the forward's lse (read only)
  double dloss = 1.0;
  void* dhidden = nullptr;        // [N, D]; may be null (not wanted)
  void* dweight = nullptr;        // [V, D]; may be null (not wanted)
  bool accumulate_dhidden = false, accumulate_dweight = false;  // += instead of =
};

void chunked_cross_entropy_forward_cpu(const ChunkedCrossEntropyParams& p);
void chunked_cross_entropy_backward_cpu(const ChunkedCrossEntropyGradParams& g);

#ifdef HA_WITH_CUDA
// CUDA kernels (cross_entropy.cu): dtype bf16, f16 or f32; lse f32; `loss` (and `count` when
// set) are device pointers. Targets are copied to the host once per call (one stream
// synchronisation) to throw the CPU's std::out_of_range and count the rows. The chunked variant
// runs the lm_head products on matmul_cuda's GEMM; for 16-bit dtypes dhidden is accumulated
// over the chunks in fp32 and rounded once. Deterministic (no atomics).
void cross_entropy_forward_cuda(const CrossEntropyParams& p, void* stream);
void cross_entropy_backward_cuda(const CrossEntropyGradParams& g, void* stream);
void chunked_cross_entropy_forward_cuda(const ChunkedCrossEntropyParams& p, void* stream);
void chunked_cross_entropy_backward_cuda(const ChunkedCrossEntropyGradParams& g, void* stream);
#endif

}  // namespace ha
