#pragma once
// Element-wise activations (golden/core/README.md "ReLU", "Tanh").
#include <cmath>
#include <string>

#include "lamina/core/module.hpp"
#include "lamina/core/parallel.hpp"
#include "lamina/kernels/dispatch.hpp"

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

/// y = max(x, 0); subgradient 0 at x = 0 (PyTorch's convention). NaN stays NaN
/// (as PyTorch's), so a non-finite activation is never hidden.
template <class T>
class ReLU {
 public:
  using value_type = T;
  struct Cache {
    ConstView<T> x;
  };
  Shape output_shape(const Shape& in) const {
    require_non_empty(in, "ReLU");
    return in;
  }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass = {}) {
    c.x = {};
    infer(x, y);
    c.x = x;
  }
  void infer(ConstView<T> x, View<T> y) {
    detail::Elementwise<T>::check("ReLU", x, y);
    const T* xp = x.data();
    T* yp = y.data();
    const index_t n = x.size();
    for_each_large(n, [=](index_t i) { yp[i] = xp[i] < T(0) ? T(0) : xp[i]; });
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.x.data() != nullptr, "ReLU");
    require_shape(dy, c.x.shape(), "ReLU", "dy");
    require_input_grad(dx, c.x.shape(), g, "ReLU");
    if (!g.input) return;
    const T* xp = c.x.data();
    const T* gp = dy.data();
    T* dxp = dx.data();
    const index_t n = dy.size();
    // dy loaded whatever the sign, so that the select vectorises (a load only
    // where x > 0 kept GCC 12 to a scalar loop with a branch per element).
    for_each_large(n, [=](index_t i) {
      const T g = gp[i];
      dxp[i] += xp[i] > T(0) ? g : T(0);
    });
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  Cache cache_;
};

/// y = tanh(x); dx = dy (1 − y²), from the kept output as PyTorch does.
template <class T>
class Tanh {
 public:
  using value_type = T;
  struct Cache {
    Tensor<T> y;  ///< the output (a copy: y may be overwritten after forward)
    bool done = false;
  };
  Shape output_shape(const Shape& in) const {
    require_non_empty(in, "Tanh");
    return in;
  }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass = {}) {
    c.done = false;
    infer(x, y);
    c.y.resize(y.shape());
    std::copy(y.data(), y.data() + y.size(), c.y.data());
    c.done = true;
  }
  void infer(ConstView<T> x, View<T> y) {
    detail::Elementwise<T>::check("Tanh", x, y);
    const T* xp = x.data();
    T* yp = y.data();
    kernels::table<T>().tanh(xp, yp, x.size());  // kernels/tanh.hpp
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.done, "Tanh");
    require_shape(dy, c.y.shape(), "Tanh", "dy");
    require_input_grad(dx, c.y.shape(), g, "Tanh");
    if (!g.input) return;
    const T* yp = c.y.data();
    const T* gp = dy.data();
    T* dxp = dx.data();
    for (index_t i = 0, n = dy.size(); i < n; ++i) dxp[i] += gp[i] * (T(1) - yp[i] * yp[i]);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  Cache cache_;
};

}  // namespace lamina
