// CPU kernels of the elementwise basics (see elementwise.h).
#include "ops/elementwise/elementwise.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/parallel.h"

namespace ha {

namespace {

constexpr int64_t kMinPerThread = 1 << 15;
constexpr int64_t kColBlock = 256;

enum class Op { Add, Mul, Scale, Fill, Accumulate };

void check(DType t, int64_t n, const char* what) {
  if (t != DType::F64 && t != DType::F32)
    throw std::invalid_argument(std::string(what) + " cpu: unsupported dtype " + dtype_name(t));
  if (n < 0) throw std::invalid_argument(std::string(what) + ": negative size");
}

template <typename T, Op op>
void run(const ElementwiseParams& p) {
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* y = static_cast<T*>(p.y);
  const double alpha = p.alpha;
  parallel_for(p.n, kMinPerThread, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      double r;
      switch (op) {
        case Op::Add: r = static_cast<double>(a[i]) + alpha * static_cast<double>(b[i]); break;
        case Op::Mul: r = static_cast<double>(a[i]) * static_cast<double>(b[i]); break;
        case Op::Scale: r = alpha * static_cast<double>(a[i]); break;
        case Op::Fill: r = alpha; break;
        default: r = static_cast<double>(y[i]) + alpha * static_cast<double>(a[i]); break;
      }
      y[i] = static_cast<T>(r);
    }
  });
}

template <Op op>
void dispatch(const ElementwiseParams& p, const char* what, bool needs_a, bool needs_b) {
  check(p.dtype, p.n, what);
  if (p.n == 0) return;
  if (!p.y || (needs_a && !p.a) || (needs_b && !p.b)) throw std::invalid_argument(std::string(what) + ": null pointer");
  if (p.dtype == DType::F64) run<double, op>(p);
  else run<float, op>(p);
}

template <typename T>
void sum_rows_impl(const SumRowsParams& p) {
  const int64_t R = p.rows, C = p.cols;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const int64_t blocks = (C + kColBlock - 1) / kColBlock;
  parallel_for(blocks, std::max<int64_t>(1, kMinPerThread / std::max<int64_t>(1, R * kColBlock)), [&](int64_t b0, int64_t b1) {
    std::vector<double> acc(kColBlock);
    for (int64_t bl = b0; bl < b1; ++bl) {
      const int64_t j0 = bl * kColBlock, w = std::min(kColBlock, C - j0);
      for (int64_t j = 0; j < w; ++j) acc[j] = p.accumulate ? static_cast<double>(y[j0 + j]) : 0.0;
      for (int64_t i = 0; i < R; ++i) {
        const T* xr = x + i * C + j0;
        for (int64_t j = 0; j < w; ++j) acc[j] += static_cast<double>(xr[j]);
      }
      for (int64_t j = 0; j < w; ++j) y[j0 + j] = static_cast<T>(acc[j]);
    }
  });
}

}  // namespace

void add_cpu(const ElementwiseParams& p) { dispatch<Op::Add>(p, "add", true, true); }
void mul_cpu(const ElementwiseParams& p) { dispatch<Op::Mul>(p, "mul", true, true); }
void scale_cpu(const ElementwiseParams& p) { dispatch<Op::Scale>(p, "scale", true, false); }
void fill_cpu(const ElementwiseParams& p) { dispatch<Op::Fill>(p, "fill", false, false); }
void accumulate_cpu(const ElementwiseParams& p) { dispatch<Op::Accumulate>(p, "accumulate", true, false); }

void sum_rows_cpu(const SumRowsParams& p) {
  check(p.dtype, p.rows, "sum_rows");
  if (p.cols < 0) throw std::invalid_argument("sum_rows: negative size");
  if (p.cols == 0) return;
  if (!p.y || (p.rows > 0 && !p.x)) throw std::invalid_argument("sum_rows: null pointer");
  if (p.dtype == DType::F64) sum_rows_impl<double>(p);
  else sum_rows_impl<float>(p);
}

}  // namespace ha
