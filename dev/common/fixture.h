// Minimal safetensors reader for dev harnesses (not part of the addon): loads F64/F32/I32
// tensors of a fixture file into std::vector<double>. Assumes the well-formed files in
// ../shared/fixtures; the library's real reader (lib/io) validates properly.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace dev {

struct FixtureTensor {
  std::vector<int64_t> shape;
  std::vector<double> data;
  int64_t numel() const { int64_t n = 1; for (auto s : shape) n *= s; return n; }
};

inline std::map<std::string, FixtureTensor> load_fixture(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string header(n, '\0');
  f.read(&header[0], n);
  std::vector<char> body((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::map<std::string, FixtureTensor> out;
  size_t pos = 0;
  while (true) {
    size_t q1 = header.find('"', pos);
    if (q1 == std::string::npos) break;
    size_t q2 = header.find('"', q1 + 1);
    std::string name = header.substr(q1 + 1, q2 - q1 - 1);
    size_t brace = header.find('{', q2);
    size_t close = header.find('}', brace);
    std::string body_json = header.substr(brace, close - brace + 1);
    pos = close + 1;
    if (name == "__metadata__") continue;
    auto field = [&](const char* key) {
      size_t k = body_json.find(std::string("\"") + key + "\"");
      size_t colon = body_json.find(':', k);
      return body_json.substr(colon + 1);
    };
    std::string dtype = field("dtype");
    dtype = dtype.substr(dtype.find('"') + 1);
    dtype = dtype.substr(0, dtype.find('"'));
    auto parse_list = [](std::string s) {
      std::vector<int64_t> v;
      s = s.substr(s.find('[') + 1);
      s = s.substr(0, s.find(']'));
      std::stringstream ss(s);
      std::string item;
      while (std::getline(ss, item, ',')) if (item.find_first_not_of(" ") != std::string::npos) v.push_back(std::stoll(item));
      return v;
    };
    FixtureTensor t;
    t.shape = parse_list(field("shape"));
    auto offs = parse_list(field("data_offsets"));
    int64_t count = t.numel();
    t.data.resize(count);
    const char* src = body.data() + offs[0];
    for (int64_t i = 0; i < count; ++i) {
      if (dtype == "F64") { double x; std::memcpy(&x, src + 8 * i, 8); t.data[i] = x; }
      else if (dtype == "F32") { float x; std::memcpy(&x, src + 4 * i, 4); t.data[i] = x; }
      else if (dtype == "I32") { int32_t x; std::memcpy(&x, src + 4 * i, 4); t.data[i] = x; }
      else throw std::runtime_error("fixture dtype " + dtype + " not supported by dev reader");
    }
    out[name] = std::move(t);
  }
  return out;
}

// max_i |a_i - b_i| / (max_i |b_i| + tiny): the relative error the tests use.
inline double max_rel_err(const double* a, const double* b, int64_t n) {
  double num = 0, den = 1e-300;
  for (int64_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(a[i] - b[i]));
    den = std::max(den, std::abs(b[i]));
  }
  return num / den;
}

}  // namespace dev
