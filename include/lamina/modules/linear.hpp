#pragma once
// Linear layer in row form y = x W + b, W is [in, out] (spec/conventions.md).
// Any input whose last extent is `in` is read as [N, in] (N = product of the rest).
#include "lamina/core/eigen_core.hpp"
#include <string>

#include "lamina/core/eigen.hpp"
#include "lamina/core/init.hpp"
#include "lamina/core/module.hpp"

namespace lamina {

template <class T>
class Linear {
 public:
  using value_type = T;

  /// PyTorch's default init: W, b ~ U(-1/sqrt(in), 1/sqrt(in)).
  Linear(index_t in, index_t out, Rng& rng, bool bias = true) : in_(in), out_(out), bias_(bias) {
    require(in > 0, "Linear", "in_features", "> 0", in);
    require(out > 0, "Linear", "out_features", "> 0", out);
    W_ = Tensor<T>(Shape{in, out});
    dW_ = Tensor<T>(Shape{in, out});
    b_ = Tensor<T>(Shape{bias ? out : 0});
    db_ = Tensor<T>(Shape{bias ? out : 0});
    const double a = 1.0 / std::sqrt(double(in));
    init::uniform(W_.view(), -a, a, rng);
    if (bias) init::uniform(b_.view(), -a, a, rng);
  }

  index_t in_features() const noexcept { return in_; }
  index_t out_features() const noexcept { return out_; }
  bool has_bias() const noexcept { return bias_; }
  Tensor<T>& weight() noexcept { return W_; }
  Tensor<T>& bias() noexcept { return b_; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() >= 1 && in.cols() == in_ && in.numel() > 0, "Linear", "x shape",
                         detail::text("[..., ", in_, "] and non-empty"), in);
    std::array<index_t, max_rank> d{};
    for (int i = 0; i < in.rank(); ++i) d[static_cast<std::size_t>(i)] = in[i];
    d[static_cast<std::size_t>(in.rank() - 1)] = out_;
    return Shape::from(d.begin(), d.begin() + in.rank());
  }

  struct Cache {
    ConstView<T> x;  ///< the input, until backward
  };

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass = {}) {
    c.x = {};
    infer(x, y);
    c.x = x;
  }
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "Linear", "x");
    require_shape(y, output_shape(x.shape()), "Linear", "y");
    auto Y = as_matrix(y);
    Y.noalias() = as_matrix(x) * as_matrix(W_.cview());
    if (bias_) Y.rowwise() += as_vector(b_.cview()).transpose();
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.x.data() != nullptr, "Linear");
    require_shape(dy, output_shape(c.x.shape()), "Linear", "dy");
    require_input_grad(dx, c.x.shape(), g, "Linear");
    const auto G = as_matrix(dy);
    if (g.params) {
      as_matrix(dW_.view()).noalias() += as_matrix(c.x).transpose() * G;
      if (bias_) as_vector(db_.view()).noalias() += G.colwise().sum().transpose();
    }
    if (g.input) as_matrix(dx).noalias() += G * as_matrix(W_.cview()).transpose();
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    f(ParamRef<T>{prefix + "weight", W_.view(), dW_.view(), true, true});
    if (bias_) f(ParamRef<T>{prefix + "bias", b_.view(), db_.view(), true, true});
  }

 private:
  index_t in_, out_;
  bool bias_;
  Tensor<T> W_, dW_, b_, db_;
  Cache cache_;
};

}  // namespace lamina
