// Small helpers shared by the dev/cpu harnesses (not part of the addon).
#pragma once
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "dev/common/fixture.h"

namespace devcheck {

inline int& failures() { static int n = 0; return n; }
inline int& checks() { static int n = 0; return n; }

// Records and prints one comparison; `err` is a relative error (max-abs-err / max-abs-ref).
inline void report(const std::string& what, double err, double tol) {
  bool ok = std::isfinite(err) && err <= tol;
  ++checks();
  if (!ok) ++failures();
  std::printf("  %-58s rel err %.3e  (tol %.0e)  %s\n", what.c_str(), err, tol, ok ? "ok" : "FAIL");
}

inline double rel(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  for (double x : a) if (!std::isfinite(x)) return INFINITY;
  return dev::max_rel_err(a.data(), b.data(), static_cast<int64_t>(a.size()));
}

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  std::vector<double> normal(size_t n, double sd = 1.0) {
    std::normal_distribution<double> d(0.0, sd);
    std::vector<double> v(n);
    for (auto& x : v) x = d(g);
    return v;
  }
  std::vector<double> uniform(size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> d(lo, hi);
    std::vector<double> v(n);
    for (auto& x : v) x = d(g);
    return v;
  }
};

template <typename T>
std::vector<T> cast(const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); }
template <typename T>
std::vector<double> to_d(const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); }

// Output buffer poisoned with NaN, so a kernel that forgets an element is caught.
template <typename T>
std::vector<T> poisoned(size_t n) { return std::vector<T>(n, std::numeric_limits<T>::quiet_NaN()); }

// Central finite differences of a scalar function of `x` (modified in place and restored).
inline std::vector<double> finite_diff(std::vector<double>& x, const std::function<double()>& f, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h; const double fp = f();
    x[i] = x0 - h; const double fm = f();
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

inline int finish(const char* name) {
  std::printf("%s: %d checks, %d failed -> %s\n", name, checks(), failures(), failures() ? "FAIL" : "PASS");
  return failures() ? 1 : 0;
}

}  // namespace devcheck
