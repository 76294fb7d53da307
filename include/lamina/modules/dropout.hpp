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
  /// One mask for all following forwards (gradient checks).
  void freeze_mask(bool on) noexcept { frozen_ = on; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.numel() > 0, "Dropout", "x shape", "a non-empty tensor", in);
    return in;
  }
  struct Cache {
    Tensor<T> mask;  ///< 0 or 1/(1 − p) per element (1 in evaluation mode)
    bool done = false;
  };

  /// With Pass{.recompute = true} the mask of c is reused (no new draw).
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    require_contiguous(x, "Dropout", "x");
    require_shape(y, output_shape(x.shape()), "Dropout", "y");
    const index_t n = x.size();
    if (p.recompute) {
      require<shape_error>(c.done && c.mask.shape() == x.shape(), "Dropout", "forward(recompute)",
                           detail::text("the cache of the application it repeats (mask ", x.shape(), ")"),
                           "a cache without that mask");
    } else {
      c.done = false;
      if (!frozen_) {
        draw_mask(x.shape(), c.mask);
      } else {  // one mask for every forward (gradient checks)
        if (frozen_mask_.size() != n) draw_mask(x.shape(), frozen_mask_);
        c.mask = frozen_mask_;
      }
    }
    for (index_t i = 0; i < n; ++i) y.data()[i] = x.data()[i] * c.mask[i];
    c.done = true;
  }
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "Dropout", "x");
    require_shape(y, output_shape(x.shape()), "Dropout", "y");
    std::copy(x.data(), x.data() + x.size(), y.data());
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.done, "Dropout");
    require_shape(dy, c.mask.shape(), "Dropout", "dy");
    require_input_grad(dx, c.mask.shape(), g, "Dropout");
    if (!g.input) return;
    for (index_t i = 0, n = dy.size(); i < n; ++i) dx.data()[i] += dy.data()[i] * c.mask[i];
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  void draw_mask(const Shape& s, Tensor<T>& mask) {
    mask.resize(s);
    const T keep = training_ ? T(1.0 / (1.0 - p_)) : T(1);
    for (index_t i = 0, n = s.numel(); i < n; ++i) mask[i] = (!training_ || rng_.uniform() >= p_) ? keep : T(0);
  }

  double p_;
  Rng rng_;
  bool training_ = true, frozen_ = false;
  Tensor<T> frozen_mask_;
  Cache cache_;
};

}  // namespace lamina
