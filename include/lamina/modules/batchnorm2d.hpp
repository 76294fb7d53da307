#pragma once
// BatchNorm2d over NCHW (golden/core/README.md "BatchNorm2d"): training mode
// normalises with the biased batch variance and updates the running variance
// with the unbiased one; `momentum` weights the new batch (PyTorch's meaning).
// Evaluation mode (set_training(false), or infer()) uses the running statistics.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/core/parallel.hpp"
#include "lamina/kernels/dispatch.hpp"

namespace lamina {

/// BatchNorm2d's settings (designated initialisers: `{.relu = true}`).
struct BatchNormOptions {
  double eps = 1e-5;
  double momentum = 0.1;
  /// y = relu(bn(x)) (or relu(bn(x) + r) with the residual overloads) in one
  /// pass; the backward takes the ReLU mask from y, which the cache then keeps
  /// a view of: y must stay unchanged until the last backward on that cache.
  bool relu = false;
};

template <class T>
class BatchNorm2d {
 public:
  using value_type = T;

  explicit BatchNorm2d(index_t channels, double eps = 1e-5, double momentum = 0.1)
      : BatchNorm2d(channels, BatchNormOptions{.eps = eps, .momentum = momentum}) {}
  BatchNorm2d(index_t channels, BatchNormOptions o) : C_(channels), eps_(o.eps), momentum_(o.momentum), relu_(o.relu) {
    require(channels > 0, "BatchNorm2d", "num_features", "> 0", channels);
    require(std::isfinite(eps_) && eps_ > 0, "BatchNorm2d", "eps", "finite and > 0", eps_);
    require(momentum_ >= 0 && momentum_ <= 1, "BatchNorm2d", "momentum", "in [0, 1]", momentum_);
    const Shape s{channels};
    gamma_ = Tensor<T>(s, T(1));
    beta_ = Tensor<T>(s);
    dgamma_ = Tensor<T>(s);
    dbeta_ = Tensor<T>(s);
    rmean_ = Tensor<T>(s);
    rvar_ = Tensor<T>(s, T(1));
  }

  index_t channels() const noexcept { return C_; }
  bool fused_relu() const noexcept { return relu_; }
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

  /// x̂ is recomputed in backward from x, mean and inv (kernels/batchnorm.hpp).
  struct Cache {
    ConstView<T> x;            ///< the input (kept alive by the caller)
    ConstView<T> y;            ///< the output, for the fused ReLU's mask (else empty)
    Tensor<T> mean, inv;       ///< per channel: the statistics used, 1/sqrt(var + eps)
    bool batch_stats = true, residual = false, done = false;
  };

  /// Training mode normalises with the batch statistics and updates the running
  /// ones, except when Pass{.recompute = true} re-runs an application.
  void forward(ConstView<T> x, View<T> y, Cache& cache, Pass p = {}) { run_forward(x, nullptr, y, cache, p); }
  /// y = bn(x) + r, then the ReLU if fused (the BasicBlock's residual sum).
  void forward(ConstView<T> x, ConstView<T> r, View<T> y, Cache& cache, Pass p = {}) {
    require_shape(r, x.shape(), "BatchNorm2d", "r");
    run_forward(x, r.data(), y, cache, p);
  }

  /// Evaluation-mode output (running statistics), keeps nothing.
  void infer(ConstView<T> x, View<T> y) { run_infer(x, nullptr, y); }
  void infer(ConstView<T> x, ConstView<T> r, View<T> y) {
    require_shape(r, x.shape(), "BatchNorm2d", "r");
    run_infer(x, r.data(), y);
  }

  void backward(const Cache& cache, ConstView<T> dy, View<T> dx, Grad g = {}) {
    backward_scaled(cache, dy, T(1), dx, g);
  }
  /// backward(s·dy, dx) without forming s·dy (core/module.hpp ScaledBackward).
  void backward_scaled(const Cache& cache, ConstView<T> dy, T s, View<T> dx, Grad g = {}) {
    require<shape_error>(!cache.residual, "BatchNorm2d", "backward()", "backward(c, dy, dx, dr) after forward(x, r, y)",
                         "backward without dr");
    run_backward(cache, dy, s, dx, nullptr, g);
  }
  /// The residual form: dr += ∂L/∂r (dy, masked by the fused ReLU) when
  /// g.input and dr has data (View{}: r's gradient is not wanted).
  void backward(const Cache& cache, ConstView<T> dy, View<T> dx, View<T> dr, Grad g = {}) {
    require<shape_error>(cache.residual, "BatchNorm2d", "backward()", "a preceding forward(x, r, y)", "forward(x, y)");
    const bool with_dr = g.input && dr.data() != nullptr;
    if (with_dr) require_shape(dr, cache.x.shape(), "BatchNorm2d", "dr");
    run_backward(cache, dy, T(1), dx, with_dr ? dr.data() : nullptr, g);
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
  /// The planes of x: P = B·C runs of HW values, plane p of channel p % C.
  struct Planes {
    index_t B, C, HW;
    index_t count() const noexcept { return B * C; }
    index_t channel(index_t p) const noexcept { return p % C; }
    /// The kernels take the planes in runs of about run_values values (one
    /// call each, and the unit of the threads' static shares); small planes in
    /// multiples of 16, so that every run starts on a 64-byte line when x does.
    static constexpr index_t run_values = 4096;
    index_t per_run() const noexcept {
      const index_t k = run_values / HW;
      return k >= 16 ? k / 16 * 16 : std::max<index_t>(1, k);
    }
    index_t runs() const noexcept { return (count() + per_run() - 1) / per_run(); }
    /// Run j: its planes, and the offset of its first plane (in values, as in planes).
    kernels::BnRun run(index_t j) const noexcept {
      const index_t q = j * per_run();
      return {std::min(per_run(), count() - q), HW, C, q % C};
    }
    index_t offset(index_t j) const noexcept { return j * per_run() * HW; }
  };
  Planes planes_of(const Shape& s) const { return {s[0], C_, s[2] * s[3]}; }

  void run_forward(ConstView<T> x, const T* r, View<T> y, Cache& cache, Pass p) {
    require_contiguous(x, "BatchNorm2d", "x");
    require_shape(y, output_shape(x.shape()), "BatchNorm2d", "y");
    const Planes pl = planes_of(x.shape());
    const index_t n = pl.B * pl.HW;
    cache.done = false;
    cache.mean.resize(Shape{C_});
    cache.inv.resize(Shape{C_});
    cache.batch_stats = training_;
    cache.residual = r != nullptr;
    if (training_) {
      require(n > 1, "BatchNorm2d", "values per channel in training", "> 1", n);
      batch_statistics(x.data(), pl, cache, !p.recompute);
    } else {
      for (index_t c = 0; c < C_; ++c) {
        cache.mean[c] = rmean_[c];
        cache.inv[c] = T(1.0 / std::sqrt(double(rvar_[c]) + eps_));
      }
    }
    apply(x.data(), r, y.data(), pl, cache.mean.data(), cache.inv.data());
    cache.x = x;
    cache.y = relu_ ? ConstView<T>(y) : ConstView<T>{};
    cache.done = true;
  }

  /// Per-channel mean and 1/σ from one pass of shifted sums over the planes
  /// (kernels/batchnorm.hpp), threaded over runs of planes; updates the running
  /// statistics when `update`.
  void batch_statistics(const T* x, const Planes& pl, Cache& cache, bool update) {
    const auto bn_sums = kernels::table<T>().bn_sums_planes;
    sums_.resize(std::size_t(2 * pl.count()));
    shift_.resize(std::size_t(C_));
    for (index_t c = 0; c < C_; ++c) shift_[std::size_t(c)] = x[c * pl.HW];  // K: the channel's first value
    double* s = sums_.data();
    const T* K = shift_.data();
    parallel_for(pl.runs(), [&](index_t j) { bn_sums(x + pl.offset(j), pl.run(j), K, s + 2 * j * pl.per_run()); });
    const double n = double(pl.B * pl.HW);
    const double* tot = channel_totals(s, pl);
    for (index_t c = 0; c < C_; ++c) {
      const double s1 = tot[2 * c], s2 = tot[2 * c + 1];
      const double m0 = double(x[c * pl.HW]) + s1 / n, v = (s2 - s1 * (s1 / n)) / n;
      // A NaN or Inf in the channel: NaN statistics (kernels/batchnorm.hpp).
      const bool finite = !std::isnan(s1) && !std::isnan(s2) && std::isfinite(m0);
      const double mean = finite ? m0 : std::numeric_limits<double>::quiet_NaN(), var = v < 0 ? 0.0 : v;  // NaN stays
      cache.mean[c] = T(mean);
      cache.inv[c] = finite ? T(1.0 / std::sqrt(var + eps_)) : std::numeric_limits<T>::quiet_NaN();
      if (update) {
        rmean_[c] = T((1 - momentum_) * double(rmean_[c]) + momentum_ * mean);
        rvar_[c] = T((1 - momentum_) * double(rvar_[c]) + momentum_ * var * n / (n - 1));
      }
    }
  }

  /// The per-plane sums s (2 per plane) added per channel, batch after batch
  /// (the order of the former per-channel loop, but independent sums side by side).
  const double* channel_totals(const double* s, const Planes& pl) {
    totals_.assign(std::size_t(2 * C_), 0.0);
    double* t = totals_.data();
    for (index_t b = 0; b < pl.B; ++b)
      for (index_t j = 0; j < 2 * C_; ++j) t[j] += s[2 * b * C_ + j];
    return t;
  }

  /// y = γ·(x − mean)·inv + β (+ r) (ReLU), threaded over runs of planes.
  void apply(const T* x, const T* r, T* y, const Planes& pl, const T* mean, const T* inv) {
    const auto bn_apply = kernels::table<T>().bn_apply_planes;
    const bool relu = relu_;
    scale_.resize(std::size_t(C_));
    for (index_t c = 0; c < C_; ++c) scale_[std::size_t(c)] = gamma_[c] * inv[c];
    const T *a = scale_.data(), *b = beta_.data();
    parallel_for(pl.runs(), [&](index_t j) {
      const index_t off = pl.offset(j);
      bn_apply(x + off, r ? r + off : nullptr, y + off, pl.run(j), mean, a, b, relu);
    });
  }

  void run_infer(ConstView<T> x, const T* r, View<T> y) {
    require_contiguous(x, "BatchNorm2d", "x");
    require_shape(y, output_shape(x.shape()), "BatchNorm2d", "y");
    infer_mean_.resize(Shape{C_});
    infer_inv_.resize(Shape{C_});
    for (index_t c = 0; c < C_; ++c) {
      infer_mean_[c] = rmean_[c];
      infer_inv_[c] = T(1.0 / std::sqrt(double(rvar_[c]) + eps_));
    }
    apply(x.data(), r, y.data(), planes_of(x.shape()), infer_mean_.data(), infer_inv_.data());
  }

  void run_backward(const Cache& cache, ConstView<T> dy, T s, View<T> dx, T* dr, Grad g) {
    require_forward(cache.done, "BatchNorm2d");
    require_shape(dy, cache.x.shape(), "BatchNorm2d", "dy");
    require_input_grad(dx, cache.x.shape(), g, "BatchNorm2d");
    const Planes pl = planes_of(dy.shape());
    const auto& k = kernels::table<T>();
    const T *xp = cache.x.data(), *yp = cache.y.data(), *gp = dy.data(), *mean = cache.mean.data(),
            *inv = cache.inv.data();
    sums_.resize(std::size_t(2 * pl.count()));
    double* sp = sums_.data();
    parallel_for(pl.runs(), [&](index_t j) {
      const index_t off = pl.offset(j);
      k.bn_grad_sums_planes(xp + off, yp ? yp + off : nullptr, gp + off, pl.run(j), mean, inv, sp + 2 * j * pl.per_run());
    });
    coef_.resize(std::size_t(C_));
    const double n = double(pl.B * pl.HW);
    const double* tot = channel_totals(sp, pl);
    for (index_t c = 0; c < C_; ++c) {
      const double sg = tot[2 * c], sgh = tot[2 * c + 1];
      if (g.params) {
        dbeta_[c] += T(double(s) * sg);
        dgamma_[c] += T(double(s) * sgh);
      }
      // dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂)) with batch statistics; γ/σ · dy with running ones.
      const T kc = gamma_[c] * inv[c] * s;
      const bool bs = cache.batch_stats;
      coef_[std::size_t(c)] = {.mean = mean[c], .k = kc, .c0 = bs ? -kc * T(sg / n) : T(0),
                               .c1 = bs ? -kc * T(sgh / n) * inv[c] : T(0)};
    }
    if (!g.input) return;
    T* dxp = dx.data();
    const kernels::BnGrad<T>* cf = coef_.data();
    parallel_for(pl.runs(), [&](index_t j) {
      const index_t off = pl.offset(j);
      k.bn_backward_planes(xp + off, yp ? yp + off : nullptr, gp + off, dxp + off, dr ? dr + off : nullptr, pl.run(j), cf);
    });
  }

  index_t C_;
  double eps_, momentum_;
  bool relu_ = false;
  bool training_ = true;
  Tensor<T> gamma_, beta_, dgamma_, dbeta_, rmean_, rvar_;
  Tensor<T> infer_mean_, infer_inv_;          ///< infer's statistics (scratch)
  std::vector<double> sums_, totals_;         ///< per-plane sums, their per-channel totals (scratch)
  std::vector<kernels::BnGrad<T>> coef_;      ///< per-channel dx coefficients (scratch)
  std::vector<T> shift_, scale_;              ///< per channel: the sums' shift K, γ·inv (scratch)
  Cache cache_;
};

}  // namespace lamina
