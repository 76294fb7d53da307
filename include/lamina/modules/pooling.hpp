#pragma once
// Global average pooling [B, C, H, W] -> [B, C] and Flatten [B, ...] -> [B, prod].
#include <string>

#include "lamina/core/module.hpp"

namespace lamina {

template <class T>
class GlobalAvgPool {
 public:
  using value_type = T;
  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() == 4 && in.numel() > 0, "GlobalAvgPool", "x shape", "[B, C, H, W], non-empty",
                         in);
    return Shape{in[0], in[1]};
  }
  struct Cache {
    Shape x_shape;
    bool done = false;
  };
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass = {}) {
    c.done = false;
    infer(x, y);
    c.x_shape = x.shape();
    c.done = true;
  }
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "GlobalAvgPool", "x");
    require_shape(y, output_shape(x.shape()), "GlobalAvgPool", "y");
    const index_t BC = x.dim(0) * x.dim(1), HW = x.dim(2) * x.dim(3);
    const T* xp = x.data();
    T* yp = y.data();
    for (index_t k = 0; k < BC; ++k) {
      T s = 0;
      for (index_t i = 0; i < HW; ++i) s += xp[k * HW + i];
      yp[k] = s / T(HW);
    }
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.done, "GlobalAvgPool");
    const Shape& in = c.x_shape;
    require_shape(dy, output_shape(in), "GlobalAvgPool", "dy");
    require_input_grad(dx, in, g, "GlobalAvgPool");
    if (!g.input) return;
    const index_t BC = in[0] * in[1], HW = in[2] * in[3];
    const T* gp = dy.data();
    T* dxp = dx.data();
    for (index_t k = 0; k < BC; ++k) {
      const T g = gp[k] / T(HW);
      for (index_t i = 0; i < HW; ++i) dxp[k * HW + i] += g;
    }
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  Cache cache_;
};

template <class T>
class Flatten {
 public:
  using value_type = T;
  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() >= 1 && in.numel() > 0, "Flatten", "x shape", "[B, ...], non-empty", in);
    return Shape{in[0], in.numel() / in[0]};
  }
  struct Cache {
    Shape x_shape;
    bool done = false;
  };
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass = {}) {
    c.done = false;
    infer(x, y);
    c.x_shape = x.shape();
    c.done = true;
  }
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "Flatten", "x");
    require_shape(y, output_shape(x.shape()), "Flatten", "y");
    std::copy(x.data(), x.data() + x.size(), y.data());
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.done, "Flatten");
    require_shape(dy, output_shape(c.x_shape), "Flatten", "dy");
    require_input_grad(dx, c.x_shape, g, "Flatten");
    if (g.input) axpy(dx.data(), dy.data(), dy.size());
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  Cache cache_;
};

}  // namespace lamina
