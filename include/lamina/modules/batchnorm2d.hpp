#pragma once
// BatchNorm2d over NCHW (golden/core/README.md "BatchNorm2d"): training mode
// normalises with the biased batch variance and updates the running variance
// with the unbiased one; `momentum` weights the new batch (PyTorch's meaning).
// Evaluation mode (set_training(false), or infer()) uses the running statistics.
#include <cmath>
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/core/parallel.hpp"

namespace lamina {

template <class T>
class BatchNorm2d {
 public:
  using value_type = T;

  explicit BatchNorm2d(index_t channels, double eps = 1e-5, double momentum = 0.1)
      : C_(channels), eps_(eps), momentum_(momentum) {
    require(channels > 0, "BatchNorm2d", "num_features", "> 0", channels);
    require(std::isfinite(eps) && eps > 0, "BatchNorm2d", "eps", "finite and > 0", eps);
    require(momentum >= 0 && momentum <= 1, "BatchNorm2d", "momentum", "in [0, 1]", momentum);
    const Shape s{channels};
    gamma_ = Tensor<T>(s, T(1));
    beta_ = Tensor<T>(s);
    dgamma_ = Tensor<T>(s);
    dbeta_ = Tensor<T>(s);
    rmean_ = Tensor<T>(s);
    rvar_ = Tensor<T>(s, T(1));
  }

  index_t channels() const noexcept { return C_; }
  Tensor<T>& gamma() noexcept { return gamma_; }
  Tensor<T>& beta() noexcept { return beta_; }
  Tensor<T>& running_mean() noexcept { return rmean_; }
  Tensor<T>& running_var() noexcept { return rvar_; }
  bool training() const noexcept { return training_; }
  void set_training(bool on) noexcept { training_ = on; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() == 4 && in[1] == C_ && in.numel() > 0, "BatchNorm2d", "x shape",
                         detail::text("[B, ", C_, ", H, W], non-empty"), in);
    return in;
  }

  struct Cache {
    Tensor<T> xhat;   ///< normalised input
    Tensor<T> scale;  ///< 1/sqrt(var + eps) per channel
    bool batch_stats = true, done = false;
  };

  /// Training mode normalises with the batch statistics and updates the running
  /// ones, except when Pass{.recompute = true} re-runs an application.
  void forward(ConstView<T> x, View<T> y, Cache& cache, Pass p = {}) {
    require_contiguous(x, "BatchNorm2d", "x");
    require_shape(y, output_shape(x.shape()), "BatchNorm2d", "y");
    const index_t B = x.dim(0), HW = x.dim(2) * x.dim(3), n = B * HW;
    cache.done = false;
    cache.xhat.resize(x.shape());
    cache.scale.resize(Shape{C_});
    cache.batch_stats = training_;
    if (training_)
      require(n > 1, "BatchNorm2d", "values per channel in training", "> 1", n);
    const bool update = training_ && !p.recompute;
    const T* xp = x.data();
    T* yp = y.data();
    T* hp = cache.xhat.data();
    T* scale = cache.scale.data();
    LAMINA_PARALLEL_FOR
    for (index_t c = 0; c < C_; ++c) {
      double mean, var;
      if (training_) {
        double s = 0;
        for (index_t b = 0; b < B; ++b) {
          const T* p = xp + (b * C_ + c) * HW;
          for (index_t i = 0; i < HW; ++i) s += double(p[i]);
        }
        mean = s / double(n);
        double q = 0;  // two-pass variance: no cancellation for large means
        for (index_t b = 0; b < B; ++b) {
          const T* p = xp + (b * C_ + c) * HW;
          for (index_t i = 0; i < HW; ++i) {
            const double d = double(p[i]) - mean;
            q += d * d;
          }
        }
        var = q / double(n);
        if (update) {
          rmean_[c] = T((1 - momentum_) * double(rmean_[c]) + momentum_ * mean);
          rvar_[c] = T((1 - momentum_) * double(rvar_[c]) + momentum_ * var * double(n) / double(n - 1));
        }
      } else {
        mean = double(rmean_[c]);
        var = double(rvar_[c]);
      }
      const T inv = T(1.0 / std::sqrt(var + eps_)), m = T(mean), g = gamma_[c], be = beta_[c];
      scale[c] = inv;
      for (index_t b = 0; b < B; ++b) {
        const index_t off = (b * C_ + c) * HW;
        for (index_t i = 0; i < HW; ++i) {
          const T h = (xp[off + i] - m) * inv;
          hp[off + i] = h;
          yp[off + i] = g * h + be;
        }
      }
    }
    cache.done = true;
  }

  /// Evaluation-mode output (running statistics), keeps nothing.
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "BatchNorm2d", "x");
    require_shape(y, output_shape(x.shape()), "BatchNorm2d", "y");
    const index_t B = x.dim(0), HW = x.dim(2) * x.dim(3);
    const T* xp = x.data();
    T* yp = y.data();
    LAMINA_PARALLEL_FOR
    for (index_t c = 0; c < C_; ++c) {
      const T inv = T(1.0 / std::sqrt(double(rvar_[c]) + eps_));
      const T a = gamma_[c] * inv, s = beta_[c] - rmean_[c] * a;
      for (index_t b = 0; b < B; ++b) {
        const index_t off = (b * C_ + c) * HW;
        for (index_t i = 0; i < HW; ++i) yp[off + i] = a * xp[off + i] + s;
      }
    }
  }

  void backward(const Cache& cache, ConstView<T> dy, View<T> dx, Grad g = {}) {
    backward_scaled(cache, dy, T(1), dx, g);
  }
  /// backward(s·dy, dx) without forming s·dy (core/module.hpp ScaledBackward).
  void backward_scaled(const Cache& cache, ConstView<T> dy, T s, View<T> dx, Grad g = {}) {
    require_forward(cache.done, "BatchNorm2d");
    require_shape(dy, cache.xhat.shape(), "BatchNorm2d", "dy");
    require_input_grad(dx, cache.xhat.shape(), g, "BatchNorm2d");
    const index_t B = dy.dim(0), HW = dy.dim(2) * dy.dim(3), n = B * HW;
    const T* gp = dy.data();
    const T* hp = cache.xhat.data();
    const T* scale = cache.scale.data();
    const bool batch_stats = cache.batch_stats;
    T* dxp = dx.data();
    LAMINA_PARALLEL_FOR
    for (index_t c = 0; c < C_; ++c) {
      double sg = 0, sgh = 0;
      for (index_t b = 0; b < B; ++b) {
        const index_t off = (b * C_ + c) * HW;
        for (index_t i = 0; i < HW; ++i) {
          sg += double(gp[off + i]);
          sgh += double(gp[off + i]) * double(hp[off + i]);
        }
      }
      if (g.params) {
        dbeta_[c] += T(double(s) * sg);
        dgamma_[c] += T(double(s) * sgh);
      }
      if (!g.input) continue;
      const T k = gamma_[c] * scale[c] * s;
      if (batch_stats) {  // dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂))
        const T mg = T(sg / double(n)), mgh = T(sgh / double(n));
        for (index_t b = 0; b < B; ++b) {
          const index_t off = (b * C_ + c) * HW;
          for (index_t i = 0; i < HW; ++i) dxp[off + i] += k * (gp[off + i] - mg - hp[off + i] * mgh);
        }
      } else {  // running statistics are constants
        for (index_t b = 0; b < B; ++b) {
          const index_t off = (b * C_ + c) * HW;
          for (index_t i = 0; i < HW; ++i) dxp[off + i] += k * gp[off + i];
        }
      }
    }
  }

  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    f(ParamRef<T>{prefix + "weight", gamma_.view(), dgamma_.view(), true, true});
    f(ParamRef<T>{prefix + "bias", beta_.view(), dbeta_.view(), true, true});
    f(ParamRef<T>{prefix + "running_mean", rmean_.view(), View<T>{}, false, false});
    f(ParamRef<T>{prefix + "running_var", rvar_.view(), View<T>{}, false, false});
  }

 private:
  index_t C_;
  double eps_, momentum_;
  bool training_ = true;
  Tensor<T> gamma_, beta_, dgamma_, dbeta_, rmean_, rvar_;
  Cache cache_;
};

}  // namespace lamina
