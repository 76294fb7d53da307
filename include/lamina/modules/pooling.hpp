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
  void forward(ConstView<T> x, View<T> y) {
    infer(x, y);
    in_ = x.shape();
    has_cache_ = true;
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
  void backward(ConstView<T> dy, View<T> dx) {
    require<shape_error>(has_cache_, "GlobalAvgPool", "backward()", "a preceding forward()", "none");
    require_shape(dy, output_shape(in_), "GlobalAvgPool", "dy");
    require_shape(dx, in_, "GlobalAvgPool", "dx");
    const index_t BC = in_[0] * in_[1], HW = in_[2] * in_[3];
    const T* gp = dy.data();
    T* dxp = dx.data();
    for (index_t k = 0; k < BC; ++k) {
      const T g = gp[k] / T(HW);
      for (index_t i = 0; i < HW; ++i) dxp[k * HW + i] += g;
    }
  }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  Shape in_;
  bool has_cache_ = false;
};

template <class T>
class Flatten {
 public:
  using value_type = T;
  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() >= 1 && in.numel() > 0, "Flatten", "x shape", "[B, ...], non-empty", in);
    return Shape{in[0], in.numel() / in[0]};
  }
  void forward(ConstView<T> x, View<T> y) {
    infer(x, y);
    in_ = x.shape();
    has_cache_ = true;
  }
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "Flatten", "x");
    require_shape(y, output_shape(x.shape()), "Flatten", "y");
    std::copy(x.data(), x.data() + x.size(), y.data());
  }
  void backward(ConstView<T> dy, View<T> dx) {
    require<shape_error>(has_cache_, "Flatten", "backward()", "a preceding forward()", "none");
    require_shape(dy, output_shape(in_), "Flatten", "dy");
    require_shape(dx, in_, "Flatten", "dx");
    axpy(dx.data(), dy.data(), dy.size());
  }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  Shape in_;
  bool has_cache_ = false;
};

}  // namespace lamina
