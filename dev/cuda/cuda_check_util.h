// Shared helpers of the dev/cuda harnesses (llm.c style; not part of the addon): device buffers
// holding values rounded to a dtype (the host keeps the rounded values in f64 for the CPU
// reference), NaN poisoning, comparison, CUDA-event timing.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/errors.h"

namespace cu {

#define CU_CHECK(x)                                                                          \
  do {                                                                                       \
    cudaError_t e_ = (x);                                                                    \
    if (e_ != cudaSuccess) {                                                                 \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", #x, __FILE__, __LINE__,           \
                   cudaGetErrorString(e_));                                                  \
      std::exit(2);                                                                          \
    }                                                                                        \
  } while (0)

inline int& failures() { static int n = 0; return n; }
inline int& checks() { static int n = 0; return n; }

inline double round_to(double x, ha::DType t) {
  switch (t) {
    case ha::DType::BF16: return ha::bf16_to_f32(ha::f32_to_bf16(static_cast<float>(x)));
    case ha::DType::F16: return ha::f16_to_f32(ha::f32_to_f16(static_cast<float>(x)));
    case ha::DType::F32: return static_cast<float>(x);
    default: return x;
  }
}

// A device tensor of dtype `t`; `h` holds the host copy (rounded values) as f64.
struct Buf {
  ha::DType t = ha::DType::F32;
  size_t n = 0;
  void* d = nullptr;
  std::vector<double> h;
  Buf() = default;
  Buf(ha::DType t_, size_t n_) : t(t_), n(n_) {
    CU_CHECK(cudaMalloc(&d, std::max<size_t>(n, 1) * ha::dtype_size(t)));
    h.assign(n, 0.0);
  }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Buf(Buf&& o) noexcept { *this = std::move(o); }
  Buf& operator=(Buf&& o) noexcept {
    std::swap(t, o.t); std::swap(n, o.n); std::swap(d, o.d); std::swap(h, o.h);
    return *this;
  }
  ~Buf() { if (d) cudaFree(d); }
  size_t bytes() const { return n * ha::dtype_size(t); }
  // Rounds v to the dtype, keeps the rounded values, uploads.
  void set(const std::vector<double>& v) {
    h.resize(n);
    std::vector<unsigned char> raw(bytes());
    for (size_t i = 0; i < n; ++i) {
      const double x = round_to(v[i], t);
      h[i] = x;
      switch (t) {
        case ha::DType::BF16: { uint16_t u = ha::f32_to_bf16((float)x); std::memcpy(&raw[2 * i], &u, 2); break; }
        case ha::DType::F16: { uint16_t u = ha::f32_to_f16((float)x); std::memcpy(&raw[2 * i], &u, 2); break; }
        case ha::DType::F32: { float f = (float)x; std::memcpy(&raw[4 * i], &f, 4); break; }
        default: { std::memcpy(&raw[8 * i], &x, 8); break; }
      }
    }
    CU_CHECK(cudaMemcpy(d, raw.data(), bytes(), cudaMemcpyHostToDevice));
  }
  void poison() { CU_CHECK(cudaMemset(d, 0xFF, bytes())); }  // NaN in every float dtype
  std::vector<double> get() const {
    std::vector<unsigned char> raw(bytes());
    CU_CHECK(cudaMemcpy(raw.data(), d, bytes(), cudaMemcpyDeviceToHost));
    std::vector<double> out(n);
    for (size_t i = 0; i < n; ++i) {
      switch (t) {
        case ha::DType::BF16: { uint16_t u; std::memcpy(&u, &raw[2 * i], 2); out[i] = ha::bf16_to_f32(u); break; }
        case ha::DType::F16: { uint16_t u; std::memcpy(&u, &raw[2 * i], 2); out[i] = ha::f16_to_f32(u); break; }
        case ha::DType::F32: { float f; std::memcpy(&f, &raw[4 * i], 4); out[i] = f; break; }
        default: { std::memcpy(&out[i], &raw[8 * i], 8); break; }
      }
    }
    return out;
  }
};

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  std::vector<double> normal(size_t n, double sd = 1.0, double mean = 0.0) {
    std::normal_distribution<double> dist(mean, sd);
    std::vector<double> v(n);
    for (auto& x : v) x = dist(g);
    return v;
  }
  std::vector<double> uniform(size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> dist(lo, hi);
    std::vector<double> v(n);
    for (auto& x : v) x = dist(g);
    return v;
  }
};

// max |a - b| / max(max |b|, 1e-3); infinite if a has a non-finite value (an unwritten,
// poisoned element). The 1e-3 floor is the "small absolute term" of SPEC sec. 8: it only matters
// where the exact result is ~0 (e.g. T = 1, where dq = dk = 0 and the loss is 0).
inline double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 1e-3;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

// Relative error of just rounding the reference to the dtype (the floor any kernel has).
inline double round_floor(const std::vector<double>& ref, ha::DType t) {
  std::vector<double> r(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) r[i] = round_to(ref[i], t);
  return rel_err(r, ref);
}

inline void report(const std::string& what, double err, double tol, double floor_err = -1) {
  const bool ok = std::isfinite(err) && err <= tol;
  ++checks();
  if (!ok) ++failures();
  if (floor_err >= 0)
    std::printf("  %-52s rel %.2e (round floor %.1e, tol %.0e) %s\n", what.c_str(), err, floor_err, tol, ok ? "ok" : "FAIL");
  else
    std::printf("  %-52s rel %.2e (tol %.0e) %s\n", what.c_str(), err, tol, ok ? "ok" : "FAIL");
}

// Median time in ms of fn() over `reps` runs after `warm` warm-up runs (CUDA events).
inline double time_ms(const std::function<void()>& fn, int warm = 10, int reps = 50) {
  for (int i = 0; i < warm; ++i) fn();
  CU_CHECK(cudaDeviceSynchronize());
  std::vector<float> ts(reps);
  cudaEvent_t a, b;
  CU_CHECK(cudaEventCreate(&a));
  CU_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < reps; ++i) {
    CU_CHECK(cudaEventRecord(a));
    fn();
    CU_CHECK(cudaEventRecord(b));
    CU_CHECK(cudaEventSynchronize(b));
    CU_CHECK(cudaEventElapsedTime(&ts[i], a, b));
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ts.begin(), ts.end());
  return ts[reps / 2];
}

inline const char* dname(ha::DType t) { return ha::dtype_name(t); }

inline int finish(const char* name) {
  std::printf("%s: %d checks, %d failed -> %s\n", name, checks(), failures(), failures() ? "FAIL" : "PASS");
  return failures() ? 1 : 0;
}

}  // namespace cu

// Definition (header-only harness: each check binary includes this once).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
namespace cu {
__global__ void fill_random_kernel(void* p, int t, size_t n, uint64_t seed, float a) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    const float u = ((x >> 40) * (1.0f / 16777216.0f)) * 2.f - 1.f;
    const float v = u * a;
    if (t == (int)ha::DType::BF16) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else if (t == (int)ha::DType::F16) static_cast<__half*>(p)[i] = __float2half_rn(v);
    else static_cast<float*>(p)[i] = v;
  }
}
// Random fill on the device (timing-sized inputs; values ~ uniform(-a, a)).
inline void fill_random_device(void* p, ha::DType t, size_t n, uint64_t seed, float a) {
  fill_random_kernel<<<1024, 256>>>(p, (int)t, n, seed, a);
  CU_CHECK(cudaGetLastError());
}
}  // namespace cu
