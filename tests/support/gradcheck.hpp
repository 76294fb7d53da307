#pragma once
// Central-difference gradient check in double (spec/conventions.md "Numerics"):
// step 1e-6, relative error < 1e-6 for the input and every parameter, with
// random non-zero values pre-filled into every gradient buffer, so a backward
// that overwrites instead of adding fails.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/core/random.hpp"

namespace gradcheck {

using lamina::index_t;
using lamina::Tensor;

struct Result {
  std::string name;
  double rel_error;
};

inline double rel_error(const std::vector<double>& a, const std::vector<double>& n) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - n[i]));
    scale = std::max({scale, std::abs(a[i]), std::abs(n[i])});
  }
  return scale == 0 ? diff : diff / scale;
}

/// Checks module m (double) at input x. `forward` runs the training forward; the
/// loss is L = <y, dy> for a fixed random dy. Returns the errors, one per tensor.
template <lamina::Module M>
std::vector<Result> run(M& m, Tensor<double>& x, std::uint64_t seed = 7, double step = 1e-6) {
  lamina::Rng rng(seed);
  const lamina::Shape ys = m.output_shape(x.shape());
  Tensor<double> y(ys), dy(ys);
  for (index_t i = 0; i < dy.size(); ++i) dy[i] = rng.uniform(-1, 1);

  auto loss = [&]() {
    m.forward(x.cview(), y.view());
    double l = 0;
    for (index_t i = 0; i < y.size(); ++i) l += y[i] * dy[i];
    return l;
  };

  // Pre-filled gradient buffers.
  Tensor<double> dx(x.shape());
  for (index_t i = 0; i < dx.size(); ++i) dx[i] = rng.uniform(-1, 1);
  const Tensor<double> dx0 = Tensor<double>::copy_of(dx.cview());
  std::vector<lamina::ParamRef<double>> params;
  lamina::visit_parameters(m, [&](const lamina::ParamRef<double>& p) {
    if (p.trainable) params.push_back(p);
  });
  std::vector<std::vector<double>> g0;
  for (auto& p : params) {
    for (double& v : p.grad.span()) v = rng.uniform(-1, 1);
    g0.emplace_back(p.grad.data(), p.grad.data() + p.grad.size());
  }

  loss();
  m.backward(dy.cview(), dx.view());

  auto numeric = [&](double* v, index_t n) {
    std::vector<double> g(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) {
      const double keep = v[i];
      v[i] = keep + step;
      const double lp = loss();
      v[i] = keep - step;
      const double lm = loss();
      v[i] = keep;
      g[static_cast<std::size_t>(i)] = (lp - lm) / (2 * step);
    }
    return g;
  };

  std::vector<Result> out;
  {
    std::vector<double> a(static_cast<std::size_t>(dx.size()));
    for (index_t i = 0; i < dx.size(); ++i) a[static_cast<std::size_t>(i)] = dx[i] - dx0[i];
    out.push_back({"input", rel_error(a, numeric(x.data(), x.size()))});
  }
  for (std::size_t k = 0; k < params.size(); ++k) {
    auto& p = params[k];
    std::vector<double> a(g0[k].size());
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = p.grad.data()[i] - g0[k][i];
    out.push_back({p.name, rel_error(a, numeric(p.value.data(), p.value.size()))});
  }
  return out;
}

/// REQUIREs every relative error below tol.
template <lamina::Module M>
void check(M& m, Tensor<double>& x, double tol = 1e-6, std::uint64_t seed = 7) {
  for (const Result& r : run(m, x, seed)) {
    INFO("gradient of " << r.name << ": relative error " << r.rel_error);
    CHECK(r.rel_error < tol);
  }
}

inline Tensor<double> random_tensor(lamina::Shape s, std::uint64_t seed, double lo = -1, double hi = 1) {
  lamina::Rng rng(seed);
  Tensor<double> t(s);
  for (index_t i = 0; i < t.size(); ++i) t[i] = rng.uniform(lo, hi);
  return t;
}

}  // namespace gradcheck
