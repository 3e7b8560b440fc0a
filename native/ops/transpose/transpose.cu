// CUDA swap of axes 1 and 2 (see transpose.h): pure data movement, any element type. Each row of
// d3 elements moves as a unit; rows are split into the widest pieces (16, 8, 4 or 2 bytes) that
// divide the row length and the pointers' alignment, so bf16 rows of 64 or 128 move as int4.
#ifndef HA_WITH_CUDA
#define HA_WITH_CUDA 1
#endif
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "core/errors.h"
#include "ops/transpose/transpose.h"

namespace ha {
namespace {

struct alignas(8) Piece8 { uint32_t a, b; };
struct alignas(2) Piece2 { uint16_t a; };

// y[i0, i2, i1, :] = x[i0, i1, i2, :], rows of `pieces` units of V.
template <class V>
__global__ void transpose12_kernel(const V* __restrict__ x, V* __restrict__ y, int64_t d0, int64_t d1, int64_t d2, int64_t pieces) {
  const int64_t n = d0 * d1 * d2 * pieces;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    // i enumerates the OUTPUT in order (coalesced writes): [i0, i2, i1, piece]
    const int64_t c = i % pieces, r = i / pieces;
    const int64_t i1 = r % d1, r2 = r / d1, i2 = r2 % d2, i0 = r2 / d2;
    y[i] = x[((i0 * d1 + i1) * d2 + i2) * pieces + c];
  }
}

template <class V>
void launch(const Transpose12Params& p, int64_t row_bytes, cudaStream_t st) {
  const int64_t pieces = row_bytes / static_cast<int64_t>(sizeof(V));
  const int64_t n = p.d0 * p.d1 * p.d2 * pieces;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 65535LL * 16);
  transpose12_kernel<V><<<static_cast<unsigned>(std::max<int64_t>(blocks, 1)), threads, 0, st>>>(
      static_cast<const V*>(p.x), static_cast<V*>(p.y), p.d0, p.d1, p.d2, pieces);
}

}  // namespace

void transpose12_cuda(const Transpose12Params& p, void* stream) {
  if (p.d0 < 0 || p.d1 < 0 || p.d2 < 0 || p.d3 < 0) throw Error(ErrorCode::InvalidArgument, "transpose12: negative size", "x");
  const int64_t row_bytes = p.d3 * dtype_size(p.dtype);
  if (p.d0 * p.d1 * p.d2 * row_bytes == 0) return;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const auto addr = reinterpret_cast<uintptr_t>(p.x) | reinterpret_cast<uintptr_t>(p.y);
  auto fits = [&](int64_t b) { return row_bytes % b == 0 && addr % static_cast<uintptr_t>(b) == 0; };
  if (fits(16)) launch<int4>(p, row_bytes, st);
  else if (fits(8)) launch<Piece8>(p, row_bytes, st);
  else if (fits(4)) launch<uint32_t>(p, row_bytes, st);
  else launch<Piece2>(p, row_bytes, st);  // every element type is >= 2 bytes
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw Error(ErrorCode::Device, std::string("transpose12 CUDA launch: ") + cudaGetErrorString(e));
}

}  // namespace ha
