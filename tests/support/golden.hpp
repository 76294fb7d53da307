#pragma once
// Reader of the golden files (tests/golden by default, LAMINA_GOLDEN_DIR; format in tests/golden/README.md) and comparison helpers.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "lamina/core/tensor.hpp"

namespace golden {

struct Record {
  std::vector<std::size_t> shape;
  std::vector<double> v;
  lamina::Shape lshape() const { return lamina::Shape::from(shape.begin(), shape.end()); }
  template <class T>
  lamina::Tensor<T> as() const {
    lamina::Tensor<T> t(lshape());
    for (std::size_t i = 0; i < v.size(); ++i) t[static_cast<lamina::index_t>(i)] = static_cast<T>(v[i]);
    return t;
  }
};

struct Case {
  std::string path;
  std::map<std::string, double> param;
  std::map<std::string, Record> tensor;
  double p(const std::string& name) const {
    auto it = param.find(name);
    if (it == param.end()) throw std::runtime_error(path + ": no param " + name);
    return it->second;
  }
  long i(const std::string& name) const { return std::lround(p(name)); }
  const Record& t(const std::string& name) const {
    auto it = tensor.find(name);
    if (it == tensor.end()) throw std::runtime_error(path + ": no tensor " + name);
    return it->second;
  }
  bool has(const std::string& name) const { return tensor.count(name) != 0; }
};

inline std::string dir() { return LAMINA_GOLDEN_DIR; }

inline Case load(const std::string& name) {
  const std::string path = dir() + "/" + name + ".txt";
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open golden file " + path);
  Case c;
  c.path = path;
  std::string line, word;
  Record* cur = nullptr;
  std::size_t need = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    if (need == 0) {
      ls >> word;
      if (word == "param") {
        std::string n, v;
        ls >> n >> v;
        c.param[n] = std::stod(v);
      } else if (word == "tensor") {
        std::string n;
        std::size_t nd;
        ls >> n >> nd;
        cur = &c.tensor[n];
        need = 1;
        cur->shape.resize(nd);
        for (auto& d : cur->shape) {
          ls >> d;
          need *= d;
        }
      } else {
        throw std::runtime_error("bad line in " + path + ": " + line);
      }
      continue;
    }
    std::string tok;
    while (ls >> tok) {
      cur->v.push_back(std::stod(tok));
      --need;
    }
  }
  if (need != 0) throw std::runtime_error("truncated tensor in " + path);
  return c;
}

/// max |got - ref| <= tol * max(1, max |ref|), with the shape checked too.
template <class T>
void check_close(const std::string& what, lamina::ConstView<T> got, const Record& ref, double tol) {
  INFO(what);
  REQUIRE(got.size() == static_cast<lamina::index_t>(ref.v.size()));
  REQUIRE(got.shape() == ref.lshape());
  double err = 0, scale = 1;
  for (std::size_t k = 0; k < ref.v.size(); ++k) {
    err = std::max(err, std::abs(double(got.data()[k]) - ref.v[k]));
    scale = std::max(scale, std::abs(ref.v[k]));
  }
  INFO("max abs error " << err << ", allowed " << tol * scale);
  CHECK(err <= tol * scale);
}

/// Compares after - before (a gradient added into a pre-filled buffer).
template <class T>
void check_added(const std::string& what, lamina::ConstView<T> after, const lamina::Tensor<T>& before,
                 const Record& ref, double tol) {
  lamina::Tensor<T> d(after.shape());
  for (lamina::index_t k = 0; k < d.size(); ++k) d[k] = after.data()[k] - before[k];
  check_close<T>(what, d.cview(), ref, tol);
}

template <class T>
constexpr double tol() {
  return std::is_same_v<T, double> ? 1e-10 : 1e-5;
}

}  // namespace golden
