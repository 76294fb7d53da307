#pragma once
// RMSNorm over the last extent of dense rows [..., D]:
//   y = x / sqrt(mean(x²) + eps) ⊙ w,   w learned (ones at init) or absent.
// Used by the Gemma 3n form of LAUREL (spec/laurel.md "Gemma 3n form").
#include "lamina/core/eigen_core.hpp"

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
    require(std::isfinite(eps) && eps > 0, "RMSNorm", "eps", "finite and > 0", eps);
    w_ = Tensor<T>(Shape{gain ? D : 0}, T(1));
    dw_ = Tensor<T>(w_.shape());
  }
  Tensor<T>& weight() noexcept { return w_; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() >= 1 && in.cols() == D_, "RMSNorm", "x shape", detail::text("[..., ", D_, "]"), in);
    require_non_empty(in, "RMSNorm");
    return in;
  }
  struct Cache {
    ConstView<T> x;
    Tensor<T> rinv;  ///< 1/rms per row
  };

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass = {}) {
    c.x = {};
    apply(x, y, &c.rinv);
    c.x = x;
  }
  void infer(ConstView<T> x, View<T> y) { apply(x, y, nullptr); }
  // With x̂ = x·r: dw += Σ_n dy ⊙ x̂; dx += r (g − x̂ mean(g ⊙ x̂)), g = dy ⊙ w.
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad want = {}) {
    require_forward(c.x.data() != nullptr, "RMSNorm");
    require_shape(dy, c.x.shape(), "RMSNorm", "dy");
    require_input_grad(dx, c.x.shape(), want, "RMSNorm");
    const index_t N = c.x.shape().rows();
    const bool dw = gain_ && want.params;
    for (index_t n = 0; n < N; ++n) {
      const T* xr = c.x.data() + n * D_;
      const T* gr = dy.data() + n * D_;
      const double r = double(c.rinv[n]);
      double m = 0;
      for (index_t d = 0; d < D_; ++d) {
        const double g = double(gr[d]) * (gain_ ? double(w_[d]) : 1.0);
        m += g * double(xr[d]) * r;
        if (dw) dw_[d] += T(double(gr[d]) * double(xr[d]) * r);
      }
      if (!want.input) continue;
      m /= double(D_);
      T* dxr = dx.data() + n * D_;
      for (index_t d = 0; d < D_; ++d) {
        const double g = double(gr[d]) * (gain_ ? double(w_[d]) : 1.0);
        dxr[d] += T(r * (g - double(xr[d]) * r * m));
      }
    }
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    if (gain_) f(ParamRef<T>{prefix + "weight", w_.view(), dw_.view(), false, true});
  }

 private:
  // y = x r w; keeps r per row in *rinv when given.
  void apply(ConstView<T> x, View<T> y, Tensor<T>* rinv) {
    require_contiguous(x, "RMSNorm", "x");
    require_shape(y, output_shape(x.shape()), "RMSNorm", "y");
    const index_t N = x.shape().rows();
    if (rinv) rinv->resize(Shape{N});
    for (index_t n = 0; n < N; ++n) {
      const T* xr = x.data() + n * D_;
      T* yr = y.data() + n * D_;
      double ss = 0;
      for (index_t d = 0; d < D_; ++d) ss += double(xr[d]) * double(xr[d]);
      const T r = T(1 / std::sqrt(ss / double(D_) + eps_));
      if (rinv) (*rinv)[n] = r;
      for (index_t d = 0; d < D_; ++d) yr[d] = xr[d] * r * (gain_ ? w_[d] : T(1));
    }
  }

  index_t D_;
  double eps_;
  bool gain_;
  Tensor<T> w_, dw_;
  Cache cache_;
};

}  // namespace lamina
