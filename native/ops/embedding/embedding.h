// Token embedding lookup (Llama's embed_tokens). Parameters in the style of flash-attention's
// flash.h: raw pointers and sizes, no framework types.
//
//   out[n, :] = weight[ids[n], :]          ids [N] int32, weight [V, D], out [N, D]
// Backward (scatter-add): dweight[v, :] (+)= sum_{n : ids[n] = v} dout[n, :]
//
// Element type `dtype` (f64 or f32, std::invalid_argument otherwise). An id outside [0, V)
// throws std::out_of_range naming the position (checked before anything is written). The
// backward groups positions by id (stable), so each row of dweight is summed by one thread in
// f64 in position order: no races, bit-identical for any thread count. Rows of dweight no id
// touches are zeroed (accumulate = false) or left as they are (accumulate = true).
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct EmbeddingParams {
  DType dtype = DType::F32;
  int64_t num_ids = 0, vocab = 0, dim = 0;

  const int32_t* ids = nullptr;  // [N]
  const void* weight = nullptr;  // [V, D]
  void* out = nullptr;           // [N, D]
};

struct EmbeddingGradParams {
  EmbeddingParams fwd;         // sizes and ids (weight and out are not used)
  const void* dout = nullptr;  // [N, D]
  void* dweight = nullptr;     // [V, D]
  bool accumulate = false;     // dweight += (tied embeddings, gradient accumulation)
};

void embedding_forward_cpu(const EmbeddingParams& p);
void embedding_backward_cpu(const EmbeddingGradParams& g);

#ifdef HA_WITH_CUDA
// CUDA kernels (embedding.cu): dtype bf16, f16 or f32, ids on the device. Both copy the ids to
// the host (one stream synchronisation) to throw the CPU's std::out_of_range before writing
// anything; the backward sorts positions by id there and sums each row of dweight in one block
// in position order (deterministic, no atomics).
void embedding_forward_cuda(const EmbeddingParams& p, void* stream);
void embedding_backward_cuda(const EmbeddingGradParams& g, void* stream);
#endif

}  // namespace ha
