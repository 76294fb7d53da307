#pragma once
// RMSNorm over the last extent of dense rows [..., D]:
//   y = x / sqrt(mean(x²) + eps) ⊙ w,   w learned (ones at init) or absent.
// Used by the Gemma 3n form of LAUREL (spec/laurel.md "Gemma 3n form").
#include <Eigen/Core>

#include <cmath>
#include <string>

#include "lamina/core/eigen.hpp"
#include "lamina/core/module.hpp"

namespace lamina {

template <class T>
class RMSNorm {
 public:
  using value_type = T;

  explicit RMSNorm(index_t D, double eps = 1e-6, bool gain = true) : D_(D), eps_(eps), gain_(gain) {
    require(D > 0, "RMSNorm", "D", "> 0", D);
    require(eps > 0, "RMSNorm", "eps", "> 0", eps);
    w_ = Tensor<T>(Shape{gain ? D : 0}, T(1));
    dw_ = Tensor<T>(w_.shape());
  }
  Tensor<T>& weight() noexcept { return w_; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() >= 1 && in.cols() == D_, "RMSNorm", "x shape", detail::concat("[..., ", D_, "]"), in);
    return in;
  }
  void forward(ConstView<T> x, View<T> y) {
    apply(x, y, true);
    x_ = x;
  }
  void infer(ConstView<T> x, View<T> y) { apply(x, y, false); }
  // With x̂ = x·r: dw += Σ_n dy ⊙ x̂; dx += r (g − x̂ mean(g ⊙ x̂)), g = dy ⊙ w.
  void backward(ConstView<T> dy, View<T> dx) {
    require<shape_error>(x_.data() != nullptr, "RMSNorm", "backward()", "a preceding forward()", "none");
    require_shape(dy, x_.shape(), "RMSNorm", "dy");
    require_shape(dx, x_.shape(), "RMSNorm", "dx");
    const index_t N = x_.shape().rows();
    for (index_t n = 0; n < N; ++n) {
      const T* xr = x_.data() + n * D_;
      const T* gr = dy.data() + n * D_;
      T* dxr = dx.data() + n * D_;
      const double r = double(rinv_[n]);
      double m = 0;
      for (index_t d = 0; d < D_; ++d) {
        const double g = double(gr[d]) * (gain_ ? double(w_[d]) : 1.0);
        m += g * double(xr[d]) * r;
        if (gain_) dw_[d] += T(double(gr[d]) * double(xr[d]) * r);
      }
      m /= double(D_);
      for (index_t d = 0; d < D_; ++d) {
        const double g = double(gr[d]) * (gain_ ? double(w_[d]) : 1.0);
        dxr[d] += T(r * (g - double(xr[d]) * r * m));
      }
    }
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    if (gain_) f(ParamRef<T>{prefix + "weight", w_.view(), dw_.view(), false, true});
  }

 private:
  void apply(ConstView<T> x, View<T> y, bool keep) {
    require_contiguous(x, "RMSNorm", "x");
    require_shape(y, output_shape(x.shape()), "RMSNorm", "y");
    const index_t N = x.shape().rows();
    if (keep) rinv_.resize(Shape{N});
    for (index_t n = 0; n < N; ++n) {
      const T* xr = x.data() + n * D_;
      T* yr = y.data() + n * D_;
      double ss = 0;
      for (index_t d = 0; d < D_; ++d) ss += double(xr[d]) * double(xr[d]);
      const T r = T(1 / std::sqrt(ss / double(D_) + eps_));
      if (keep) rinv_[n] = r;
      for (index_t d = 0; d < D_; ++d) yr[d] = xr[d] * r * (gain_ ? w_[d] : T(1));
    }
  }

  index_t D_;
  double eps_;
  bool gain_;
  Tensor<T> w_, dw_, rinv_;
  ConstView<T> x_;
};

}  // namespace lamina
