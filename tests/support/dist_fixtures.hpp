#pragma once
// Small models and data shared by the data-parallel tests (test_dist.cpp,
// dist/test_dist_mpi.cpp).
#include <cmath>
#include <vector>

#include "lamina/lamina.hpp"

namespace lamina::test {

/// Images [n, 1, 6, 6] of 3 classes (a bright band at rows 0-1, 2-3 or 4-5) plus noise.
inline data::Dataset bands(index_t n, std::uint64_t seed) {
  data::Dataset d;
  d.num_classes = 3;
  d.images = Tensor<float>(Shape{n, 1, 6, 6});
  Rng rng(seed);
  for (index_t i = 0; i < n; ++i) {
    const int y = int(i % 3);
    d.labels.push_back(y);
    for (index_t r = 0; r < 6; ++r)
      for (index_t c = 0; c < 6; ++c) d.images[i * 36 + r * 6 + c] = float((r / 2 == y ? 0.8 : 0.2) + 0.1 * rng.normal());
  }
  return d;
}

using Mlp = Sequential<Flatten<float>, Linear<float>, Tanh<float>, Linear<float>>;
inline Mlp make_mlp(std::uint64_t seed) {
  Rng rng(seed);
  return Mlp(Flatten<float>{}, Linear<float>(36, 8, rng), Tanh<float>{}, Linear<float>(8, 3, rng));
}

using BnNet = Sequential<Conv2d<float>, BatchNorm2d<float>, ReLU<float>, GlobalAvgPool<float>, Flatten<float>, Linear<float>>;
inline BnNet make_bn_net(std::uint64_t seed) {
  Rng rng(seed);
  return BnNet(Conv2d<float>({.in_channels = 1, .out_channels = 4, .padding = 1}, rng), BatchNorm2d<float>(4),
               ReLU<float>{}, GlobalAvgPool<float>{}, Flatten<float>{}, Linear<float>(4, 3, rng));
}

/// Every parameter and buffer of a model, concatenated.
template <class M>
std::vector<float> state(M& m) {
  std::vector<float> v;
  visit_parameters(m, [&](const ParamRef<float>& p) { v.insert(v.end(), p.value.data(), p.value.data() + p.value.size()); });
  return v;
}
/// Every gradient (of the trainable parameters), concatenated.
template <class M>
std::vector<float> grads(M& m) {
  std::vector<float> v;
  visit_parameters(m, [&](const ParamRef<float>& p) {
    if (p.trainable) v.insert(v.end(), p.grad.data(), p.grad.data() + p.grad.size());
  });
  return v;
}
/// Largest |a - b| / (1 + |b|); infinity when the sizes differ.
inline double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]) / (1 + std::abs(double(b[i]))));
  return d;
}

/// Rows [first, first + count) of a batch and their labels.
inline void slice(const Tensor<float>& x, const std::vector<std::int32_t>& y, index_t first, index_t count,
                  Tensor<float>& xs, std::vector<std::int32_t>& ys) {
  const index_t per = x.size() / x.dim(0);
  xs.resize(Shape{count, x.dim(1), x.dim(2), x.dim(3)});
  std::copy(x.data() + first * per, x.data() + (first + count) * per, xs.data());
  ys.assign(y.begin() + first, y.begin() + first + count);
}

}  // namespace lamina::test
