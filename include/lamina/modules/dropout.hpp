#pragma once
// Inverted dropout: in training y = x·m/(1−p) with m ~ Bernoulli(1−p); the
// identity in evaluation mode and in infer().
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/core/random.hpp"

namespace lamina {

template <class T>
class Dropout {
 public:
  using value_type = T;

  explicit Dropout(double p, std::uint64_t seed = 0x5eed) : p_(p), rng_(seed) {
    require(p >= 0 && p < 1, "Dropout", "p", "in [0, 1)", p);
  }
  double p() const noexcept { return p_; }
  bool training() const noexcept { return training_; }
  void set_training(bool on) noexcept { training_ = on; }
  /// Keep the current mask for the following forwards (gradient checks).
  void freeze_mask(bool on) noexcept { frozen_ = on; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.numel() > 0, "Dropout", "x shape", "a non-empty tensor", in);
    return in;
  }
  void forward(ConstView<T> x, View<T> y) {
    require_contiguous(x, "Dropout", "x");
    require_shape(y, output_shape(x.shape()), "Dropout", "y");
    const index_t n = x.size();
    if (!frozen_ || mask_.size() != n) {
      mask_.resize(x.shape());
      const T keep = training_ ? T(1.0 / (1.0 - p_)) : T(1);
      for (index_t i = 0; i < n; ++i) mask_[i] = (!training_ || rng_.uniform() >= p_) ? keep : T(0);
    }
    for (index_t i = 0; i < n; ++i) y.data()[i] = x.data()[i] * mask_[i];
  }
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "Dropout", "x");
    require_shape(y, output_shape(x.shape()), "Dropout", "y");
    std::copy(x.data(), x.data() + x.size(), y.data());
  }
  void backward(ConstView<T> dy, View<T> dx) {
    require<shape_error>(mask_.size() > 0, "Dropout", "backward()", "a preceding forward()", "none");
    require_shape(dy, mask_.shape(), "Dropout", "dy");
    require_shape(dx, mask_.shape(), "Dropout", "dx");
    for (index_t i = 0, n = dy.size(); i < n; ++i) dx.data()[i] += dy.data()[i] * mask_[i];
  }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  double p_;
  Rng rng_;
  bool training_ = true, frozen_ = false;
  Tensor<T> mask_;
};

}  // namespace lamina
