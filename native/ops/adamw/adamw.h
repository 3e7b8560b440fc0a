// AdamW optimizer step and global gradient-norm clipping on (fp32) master parameters.
// Parameters in the style of flash-attention's flash.h: raw pointers and sizes.
//
// adamw_step_cpu, PyTorch torch.optim.AdamW semantics (amsgrad = maximize = False), with
// g = grad_scale * grad and t = step (the step count after this update, 1 on the first call):
//   p <- p (1 - lr wd)                                   (decoupled weight decay)
//   m <- beta1 m + (1 - beta1) g,   v <- beta2 v + (1 - beta2) g^2
//   p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// In place on param, exp_avg (m), exp_avg_sq (v); arithmetic in f64, stored in `dtype`
// (f32 or f64, std::invalid_argument otherwise). grad_scale folds a clipping coefficient or a
// loss-scale inverse in without another pass over the gradients.
//
// grad_norm_cpu: global L2 norm over several tensors, sqrt(sum_k sum_i g_ki^2), in f64; summed
// in fixed chunks of elements whose partials are added in order (bit-identical for any thread
// count). clip_grad_norm_cpu = torch.nn.utils.clip_grad_norm_: norm, then if
// max_norm / (norm + 1e-6) < 1 every tensor is scaled by it in place; returns the norm (before
// clipping). scale_tensors_cpu multiplies every tensor by s in place.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct AdamWParams {
  DType dtype = DType::F32;
  int64_t n = 0;

  void* param = nullptr;       // [n]
  const void* grad = nullptr;  // [n]
  void* exp_avg = nullptr;     // [n]  m
  void* exp_avg_sq = nullptr;  // [n]  v

  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
  int64_t step = 1;          // t >= 1, after this update
  double grad_scale = 1.0;   // g = grad_scale * grad
};

void adamw_step_cpu(const AdamWParams& p);

// A list of tensors of one dtype: data[k] holds sizes[k] elements.
struct TensorList {
  DType dtype = DType::F32;
  int64_t count = 0;
  void* const* data = nullptr;
  const int64_t* sizes = nullptr;
};

double grad_norm_cpu(const TensorList& t);
void scale_tensors_cpu(const TensorList& t, double s);
double clip_grad_norm_cpu(const TensorList& t, double max_norm);

#ifdef HA_WITH_CUDA
// CUDA kernels (adamw.cu): dtype f32 (master weights and moments; bf16/f16 also accepted),
// arithmetic in double. grad_norm_cuda writes the global norm to the device double `norm`
// (deterministic fixed-chunk sums) and, with max_norm >= 0, clips every tensor in place as
// clip_grad_norm_cpu does, reading the norm on the device (no host synchronisation). The
// TensorList's data are device pointers (the list itself is host memory).
void adamw_step_cuda(const AdamWParams& p, void* stream);
void grad_norm_cuda(const TensorList& t, double max_norm, double* norm, void* stream);
void scale_tensors_cuda(const TensorList& t, double s, void* stream);
#endif

}  // namespace ha
