#pragma once
// Element-wise activations (golden/core/README.md "ReLU", "Tanh").
#include <cmath>
#include <string>

#include "lamina/core/module.hpp"
#include "lamina/core/parallel.hpp"

namespace lamina {

namespace detail {
/// Shared shape checks and plumbing of shape-preserving element-wise modules.
template <class T>
struct Elementwise {
  static void check(std::string_view name, ConstView<T> x, const View<T>& y) {
    require_contiguous(x, name, "x");
    require<shape_error>(x.size() > 0, name, "x", "a non-empty tensor", x.shape());
    require_shape(y, x.shape(), name, "y");
  }
};
}  // namespace detail

/// y = max(x, 0); subgradient 0 at x = 0 (PyTorch's convention).
template <class T>
class ReLU {
 public:
  using value_type = T;
  Shape output_shape(const Shape& in) const { return in; }
  void forward(ConstView<T> x, View<T> y) {
    infer(x, y);
    x_ = x;
  }
  void infer(ConstView<T> x, View<T> y) {
    detail::Elementwise<T>::check("ReLU", x, y);
    const T* xp = x.data();
    T* yp = y.data();
    const index_t n = x.size();
    LAMINA_PARALLEL_FOR_LARGE(n)
    for (index_t i = 0; i < n; ++i) yp[i] = xp[i] > T(0) ? xp[i] : T(0);
  }
  void backward(ConstView<T> dy, View<T> dx) {
    require<shape_error>(x_.data() != nullptr, "ReLU", "backward()", "a preceding forward()", "none");
    require_shape(dy, x_.shape(), "ReLU", "dy");
    require_shape(dx, x_.shape(), "ReLU", "dx");
    const T* xp = x_.data();
    const T* gp = dy.data();
    T* dxp = dx.data();
    const index_t n = dy.size();
    LAMINA_PARALLEL_FOR_LARGE(n)
    for (index_t i = 0; i < n; ++i) dxp[i] += xp[i] > T(0) ? gp[i] : T(0);
  }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  ConstView<T> x_;
};

/// y = tanh(x); dx = dy (1 − y²), from the kept output as PyTorch does.
template <class T>
class Tanh {
 public:
  using value_type = T;
  Shape output_shape(const Shape& in) const { return in; }
  void forward(ConstView<T> x, View<T> y) {
    infer(x, y);
    y_ = Tensor<T>::copy_of(y);
  }
  void infer(ConstView<T> x, View<T> y) {
    detail::Elementwise<T>::check("Tanh", x, y);
    const T* xp = x.data();
    T* yp = y.data();
    for (index_t i = 0, n = x.size(); i < n; ++i) yp[i] = std::tanh(xp[i]);
  }
  void backward(ConstView<T> dy, View<T> dx) {
    require<shape_error>(y_.size() > 0, "Tanh", "backward()", "a preceding forward()", "none");
    require_shape(dy, y_.shape(), "Tanh", "dy");
    require_shape(dx, y_.shape(), "Tanh", "dx");
    const T* yp = y_.data();
    const T* gp = dy.data();
    T* dxp = dx.data();
    for (index_t i = 0, n = dy.size(); i < n; ++i) dxp[i] += gp[i] * (T(1) - yp[i] * yp[i]);
  }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  Tensor<T> y_;
};

}  // namespace lamina
