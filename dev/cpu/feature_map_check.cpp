// Dev harness for ops/feature_map (CPU): golden fixture, finite differences for every kind and
// activation, f32 vs f64, dtype rejection. Build from the repository root:
//   g++ -O2 -std=c++17 -I/work/main/native -I/work/main dev/cpu/feature_map_check.cpp
//       native/ops/feature_map/feature_map_cpu.cpp native/core/parallel.cpp -lpthread
#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "dev/cpu/check_util.h"
#include "ops/feature_map/feature_map.h"

using namespace ha;
using devcheck::report;

struct Problem {
  int64_t B, H, T, d, f;
  FeatureMapKind kind;
  FeatureAct act;
  bool bias;
  std::vector<double> x, w, b, dphi;
  int64_t out() const {
    return kind == FeatureMapKind::Hedgehog ? 2 * f : kind == FeatureMapKind::T2R ? f : d;
  }
};

template <typename T>
FeatureMapParams params(const Problem& P, const std::vector<T>& x, const std::vector<T>& w, const std::vector<T>& b, std::vector<T>& phi) {
  FeatureMapParams p;
  p.dtype = std::is_same<T, double>::value ? DType::F64 : DType::F32;
  p.batch = P.B; p.heads = P.H; p.seqlen = P.T; p.in_dim = P.d; p.proj_dim = P.f;
  p.kind = P.kind; p.act = P.act;
  p.x = x.data();
  p.w = P.kind == FeatureMapKind::EluRaw ? nullptr : w.data();
  p.b = (P.bias && P.kind != FeatureMapKind::EluRaw) ? b.data() : nullptr;
  p.phi = phi.data();
  return p;
}

template <typename T>
void run(const Problem& P, std::vector<double>& phi_o, std::vector<double>& dx_o, std::vector<double>& dw_o, std::vector<double>& db_o) {
  auto x = devcheck::cast<T>(P.x), w = devcheck::cast<T>(P.w), b = devcheck::cast<T>(P.b), dphi = devcheck::cast<T>(P.dphi);
  auto phi = devcheck::poisoned<T>(P.B * P.H * P.T * P.out());
  auto p = params<T>(P, x, w, b, phi);
  if (feature_map_out_dim(p) != P.out()) throw std::runtime_error("out dim mismatch");
  feature_map_forward_cpu(p);
  FeatureMapGradParams g;
  g.fwd = p;
  g.dphi = dphi.data();
  auto dx = devcheck::poisoned<T>(x.size()), dw = devcheck::poisoned<T>(w.size()), db = devcheck::poisoned<T>(b.size());
  g.dx = dx.data();
  g.dw = P.kind == FeatureMapKind::EluRaw ? nullptr : dw.data();
  g.db = p.b ? db.data() : nullptr;
  feature_map_backward_cpu(g);
  phi_o = devcheck::to_d(phi);
  dx_o = devcheck::to_d(dx);
  dw_o = g.dw ? devcheck::to_d(dw) : std::vector<double>();
  db_o = g.db ? devcheck::to_d(db) : std::vector<double>();
}

double objective(const Problem& P) {  // sum(phi * dphi) in f64
  std::vector<double> phi = devcheck::poisoned<double>(P.B * P.H * P.T * P.out());
  auto p = params<double>(P, P.x, P.w, P.b, phi);
  feature_map_forward_cpu(p);
  double s = 0;
  for (size_t i = 0; i < phi.size(); ++i) s += phi[i] * P.dphi[i];
  return s;
}

void check_fixture(const std::string& path) {
  std::printf("fixture %s\n", path.c_str());
  auto fx = dev::load_fixture(path);
  Problem P;
  const auto& xs = fx.at("x").shape;
  P.B = xs[0]; P.H = xs[1]; P.T = xs[2]; P.d = xs[3]; P.f = fx.at("w").shape[2];
  P.kind = FeatureMapKind::Hedgehog; P.act = FeatureAct::Softmax; P.bias = true;
  P.x = fx.at("x").data; P.w = fx.at("w").data; P.b = fx.at("b").data; P.dphi = fx.at("dphi").data;
  std::vector<double> phi, dx, dw, db;
  run<double>(P, phi, dx, dw, db);
  report("f64 phi", devcheck::rel(phi, fx.at("phi").data), 1e-9);
  report("f64 dx", devcheck::rel(dx, fx.at("dx").data), 1e-9);
  report("f64 dw", devcheck::rel(dw, fx.at("dw").data), 1e-9);
  report("f64 db", devcheck::rel(db, fx.at("db").data), 1e-9);
  run<float>(P, phi, dx, dw, db);
  report("f32 phi", devcheck::rel(phi, fx.at("phi").data), 1e-5);
  report("f32 dx", devcheck::rel(dx, fx.at("dx").data), 1e-5);
  report("f32 dw", devcheck::rel(dw, fx.at("dw").data), 1e-5);
  report("f32 db", devcheck::rel(db, fx.at("db").data), 1e-5);
}

void check_fd(FeatureMapKind kind, FeatureAct act, bool bias, const std::string& name, uint64_t seed) {
  std::printf("finite differences: %s\n", name.c_str());
  devcheck::Rng rng(seed);
  Problem P{2, 2, 7, 6, 5, kind, act, bias, {}, {}, {}, {}};
  P.x = rng.normal(P.B * P.H * P.T * P.d);
  P.w = rng.normal(P.H * P.d * P.f, 0.5);
  P.b = rng.normal(P.H * P.f, 0.5);
  P.dphi = rng.normal(P.B * P.H * P.T * P.out());
  std::vector<double> phi, dx, dw, db;
  run<double>(P, phi, dx, dw, db);
  auto f = [&] { return objective(P); };
  report(name + " dx vs FD", devcheck::rel(dx, devcheck::finite_diff(P.x, f)), 1e-6);
  if (kind != FeatureMapKind::EluRaw) report(name + " dw vs FD", devcheck::rel(dw, devcheck::finite_diff(P.w, f)), 1e-6);
  if (bias && kind != FeatureMapKind::EluRaw) report(name + " db vs FD", devcheck::rel(db, devcheck::finite_diff(P.b, f)), 1e-6);
  std::vector<double> phi32, dx32, dw32, db32;
  run<float>(P, phi32, dx32, dw32, db32);
  report(name + " f32 vs f64 (phi, dx, dw, db max)",
         std::max({devcheck::rel(phi32, phi), devcheck::rel(dx32, dx), devcheck::rel(dw32, dw), devcheck::rel(db32, db)}), 1e-5);
}

// Many rows per head (several reduction chunks, both threads): directional finite differences
// of dw, db, and the sum of per-batch-element backward calls (other chunking) as a cross-check.
void check_large() {
  std::printf("large problem (chunked dw/db reduction)\n");
  devcheck::Rng rng(99);
  Problem P{3, 2, 333, 8, 6, FeatureMapKind::Hedgehog, FeatureAct::Softmax, true, {}, {}, {}, {}};
  P.x = rng.normal(P.B * P.H * P.T * P.d);
  P.w = rng.normal(P.H * P.d * P.f, 0.5);
  P.b = rng.normal(P.H * P.f, 0.5);
  P.dphi = rng.normal(P.B * P.H * P.T * P.out());
  std::vector<double> phi, dx, dw, db;
  run<double>(P, phi, dx, dw, db);
  auto directional = [&](std::vector<double>& param, const std::vector<double>& grad) {
    auto dir = rng.normal(param.size());
    const double h = 1e-6;
    auto base = param;
    for (size_t i = 0; i < param.size(); ++i) param[i] = base[i] + h * dir[i];
    double fp = objective(P);
    for (size_t i = 0; i < param.size(); ++i) param[i] = base[i] - h * dir[i];
    double fm = objective(P);
    param = base;
    double fd = (fp - fm) / (2 * h), an = 0;
    for (size_t i = 0; i < grad.size(); ++i) an += grad[i] * dir[i];
    return std::abs(fd - an) / std::abs(an);
  };
  report("dw directional FD", directional(P.w, dw), 1e-6);
  report("db directional FD", directional(P.b, db), 1e-6);
  std::vector<double> sw(dw.size(), 0.0), sb(db.size(), 0.0), dxs;
  for (int64_t b = 0; b < P.B; ++b) {
    Problem Q = P;
    Q.B = 1;
    const int64_t nx = P.H * P.T * P.d, np = P.H * P.T * P.out();
    Q.x.assign(P.x.begin() + b * nx, P.x.begin() + (b + 1) * nx);
    Q.dphi.assign(P.dphi.begin() + b * np, P.dphi.begin() + (b + 1) * np);
    std::vector<double> phi1, dx1, dw1, db1;
    run<double>(Q, phi1, dx1, dw1, db1);
    for (size_t i = 0; i < sw.size(); ++i) sw[i] += dw1[i];
    for (size_t i = 0; i < sb.size(); ++i) sb[i] += db1[i];
    dxs.insert(dxs.end(), dx1.begin(), dx1.end());
  }
  report("dw == sum of per-batch dw", devcheck::rel(dw, sw), 1e-13);
  report("db == sum of per-batch db", devcheck::rel(db, sb), 1e-13);
  report("dx == per-batch dx", devcheck::rel(dx, dxs), 0);
}

void check_dtype_rejected() {
  std::printf("dtype rejection\n");
  for (DType t : {DType::BF16, DType::F16, DType::I32}) {
    FeatureMapParams p;
    p.dtype = t;
    bool threw = false;
    try { feature_map_forward_cpu(p); } catch (const std::invalid_argument&) { threw = true; }
    FeatureMapGradParams g; g.fwd = p;
    bool threw2 = false;
    try { feature_map_backward_cpu(g); } catch (const std::invalid_argument&) { threw2 = true; }
    report(std::string("invalid_argument for ") + dtype_name(t), threw && threw2 ? 0.0 : INFINITY, 0);
  }
}

int main(int argc, char** argv) {
  std::string root = argc > 1 ? argv[1] : "/work/shared/fixtures";
  try {
    check_fixture(root + "/hybrid/featuremap-hedgehog.safetensors");
    const std::pair<FeatureAct, const char*> acts[] = {{FeatureAct::Softmax, "softmax"}, {FeatureAct::Exp, "exp"},
        {FeatureAct::Relu, "relu"}, {FeatureAct::Elu1, "1+elu"}, {FeatureAct::Identity, "identity"}};
    uint64_t seed = 1;
    for (auto& a : acts)
      for (bool bias : {false, true})
        check_fd(FeatureMapKind::Hedgehog, a.first, bias, std::string("hedgehog ") + a.second + (bias ? " +bias" : " nobias"), seed++);
    check_fd(FeatureMapKind::T2R, FeatureAct::Softmax, false, "t2r nobias", seed++);
    check_fd(FeatureMapKind::T2R, FeatureAct::Softmax, true, "t2r +bias", seed++);
    check_fd(FeatureMapKind::EluRaw, FeatureAct::Softmax, false, "elu+1 raw", seed++);
    check_large();
    check_dtype_rejected();
  } catch (const std::exception& e) {
    std::printf("exception: %s\n", e.what());
    return 2;
  }
  return devcheck::finish("feature_map_check");
}
