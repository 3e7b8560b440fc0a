// Counter-based normal random numbers (weight initialisation, synthesised checkpoints): element i
// of a stream depends only on (seed, i), so the CPU and CUDA give the same values (up to the
// last bit of log/cos) and any slice can be generated independently, in parallel, on the device
// that holds the tensor - an 8B-parameter model is synthesised without a host round trip.
//
//   x = seed + (i + 1) * 0x9E3779B97F4A7C15;  z1 = mix64(x), z2 = mix64(x ^ 0xD1B54A32D192ED03)
//   u1 = ((z1 >> 11) + 1) / 2^53 in (0, 1],  u2 = (z2 >> 11) / 2^53 in [0, 1)
//   y_i = mean + std * sqrt(-2 ln u1) cos(2 pi u2)          (Box-Muller, in f64)
// mix64 is splitmix64's finaliser. y is rounded once to `dtype`.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ha {

struct RandomNormalParams {
  DType dtype = DType::F32;  // f64/f32 on the CPU; bf16/f16/f32 on CUDA
  int64_t n = 0;
  uint64_t seed = 0;
  double mean = 0.0, std = 1.0;
  void* y = nullptr;
};

void random_normal_cpu(const RandomNormalParams& p);

#ifdef HA_WITH_CUDA
void random_normal_cuda(const RandomNormalParams& p, void* stream);
#endif

// The generator itself, shared by both backends.
#ifdef __CUDACC__
#define HA_HOST_DEVICE __host__ __device__
#else
#define HA_HOST_DEVICE
#endif
HA_HOST_DEVICE inline uint64_t random_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
HA_HOST_DEVICE inline void random_uniform_pair(uint64_t seed, int64_t i, double& u1, double& u2) {
  const uint64_t x = seed + static_cast<uint64_t>(i + 1) * 0x9E3779B97F4A7C15ULL;
  const uint64_t z1 = random_mix64(x), z2 = random_mix64(x ^ 0xD1B54A32D192ED03ULL);
  u1 = static_cast<double>((z1 >> 11) + 1) * 0x1.0p-53;
  u2 = static_cast<double>(z2 >> 11) * 0x1.0p-53;
}
#undef HA_HOST_DEVICE

}  // namespace ha
