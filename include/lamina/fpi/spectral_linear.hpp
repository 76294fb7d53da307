#pragma once
// y = x Ŵ with Ŵ = W / max(1, σ̂(W)/κ) (spec/fpi_dynalay.md §1): the linear map of
// the default FPI cell, spectrally normalised so that z ↦ tanh(z Ŵ + u) is a
// contraction (‖Ŵ‖₂ ≤ κ < 1, tanh is 1-Lipschitz). σ̂ = uᵀ W v comes from a power
// iteration whose vectors u [in], v [out] are kept across steps (buffers, so a
// checkpoint holds them), as PyTorch's spectral_norm: one iteration per training
// forward of the FPI layer (begin_step(true)), none in evaluation mode. The
// gradient treats u, v as constants: with G = ∂L/∂Ŵ and s = max(1, σ̂/κ),
//   ∂L/∂W = G / s − [σ̂ > κ] (<G, Ŵ> / σ̂) u vᵀ.
// Between begin_step() and end_step() Ŵ is held fixed (the map must not change
// during a solve); outside them every forward recomputes Ŵ from W, so a change
// of W is always seen.
#include <cmath>
#include <string>

#include "lamina/core/eigen.hpp"
#include "lamina/core/init.hpp"
#include "lamina/core/module.hpp"
#include "lamina/core/random.hpp"

namespace lamina {

struct SpectralOptions {
  double kappa = 0.9;           ///< bound on the spectral norm of Ŵ, > 0
  bool enabled = true;          ///< false: Ŵ = W
  index_t power_iterations = 1; ///< per training step, ≥ 1
  index_t init_iterations = 15; ///< at construction (and reset_estimate()), ≥ 1
};

template <class T>
class SpectralLinear {
 public:
  using value_type = T;
  struct Cache {
    ConstView<T> x;
  };

  /// W ~ U(−1/√in, 1/√in) (PyTorch's Linear init), no bias.
  SpectralLinear(index_t in, index_t out, Rng& rng, SpectralOptions o = {}) : in_(in), out_(out), o_(o) {
    require(in > 0, "SpectralLinear", "in_features", "> 0", in);
    require(out > 0, "SpectralLinear", "out_features", "> 0", out);
    require(o.kappa > 0, "SpectralLinear", "kappa", "> 0", o.kappa);
    require(o.power_iterations >= 1, "SpectralLinear", "power_iterations", ">= 1", o.power_iterations);
    require(o.init_iterations >= 1, "SpectralLinear", "init_iterations", ">= 1", o.init_iterations);
    W_ = Tensor<T>(Shape{in, out}), dW_ = Tensor<T>(Shape{in, out}), Weff_ = Tensor<T>(Shape{in, out});
    u_ = Tensor<T>(Shape{in}), v_ = Tensor<T>(Shape{out}), Wv_ = Tensor<T>(Shape{in});
    const double a = 1.0 / std::sqrt(double(in));
    init::uniform(W_.view(), -a, a, rng);
    for (index_t i = 0; i < in; ++i) u_[i] = T(rng.normal());
    as_vector(u_.view()).normalize();
    reset_estimate();
  }

  Tensor<T>& weight() noexcept { return W_; }
  const Tensor<T>& weight() const noexcept { return W_; }
  /// Ŵ as last computed.
  const Tensor<T>& effective_weight() const noexcept { return Weff_; }
  double sigma() const noexcept { return sigma_; }  ///< σ̂ = uᵀ W v
  double scale() const noexcept { return scale_; }  ///< max(1, σ̂/κ), 1 when disabled
  const SpectralOptions& options() const noexcept { return o_; }

  /// Re-runs init_iterations power iterations (after W was set from outside).
  void reset_estimate() {
    for (index_t k = 0; k < o_.init_iterations; ++k) power_step();
    refresh();
  }
  /// Start of a solve: one power-iteration update when `update` and training, then Ŵ held.
  void begin_step(bool update) {
    if (update && training_ && o_.enabled)
      for (index_t k = 0; k < o_.power_iterations; ++k) power_step();
    refresh();
    held_ = true;
  }
  void end_step() noexcept { held_ = false; }
  void set_training(bool on) noexcept { training_ = on; }

  Shape output_shape(const Shape& s) const {
    require<shape_error>(s.rank() >= 1 && s.cols() == in_ && s.numel() > 0, "SpectralLinear", "x shape",
                         detail::text("[..., ", in_, "] and non-empty"), s);
    std::array<index_t, max_rank> d{};
    for (int i = 0; i < s.rank(); ++i) d[std::size_t(i)] = s[i];
    d[std::size_t(s.rank() - 1)] = out_;
    return Shape::from(d.begin(), d.begin() + s.rank());
  }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass = {}) {
    c.x = {};
    infer(x, y);
    c.x = x;
  }
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "SpectralLinear", "x");
    require_shape(y, output_shape(x.shape()), "SpectralLinear", "y");
    if (!held_) refresh();
    as_matrix(y).noalias() = as_matrix(x) * as_matrix(Weff_.cview());
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.x.data() != nullptr, "SpectralLinear");
    require_shape(dy, output_shape(c.x.shape()), "SpectralLinear", "dy");
    require_input_grad(dx, c.x.shape(), g, "SpectralLinear");
    const auto G = as_matrix(dy);
    if (g.params) add_weight_grad(as_matrix(c.x), G);
    if (g.input) as_matrix(dx).noalias() += G * as_matrix(Weff_.cview()).transpose();
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    f(ParamRef<T>{prefix + "weight", W_.view(), dW_.view(), true, true});
    f(ParamRef<T>{prefix + "spectral_u", u_.view(), View<T>{}, false, false});
    f(ParamRef<T>{prefix + "spectral_v", v_.view(), View<T>{}, false, false});
  }

 private:
  /// v ← Wᵀu/‖·‖, u ← W v/‖·‖.
  void power_step() {
    const auto W = as_matrix(W_.cview());
    auto u = as_vector(u_.view());
    auto v = as_vector(v_.view());
    v.noalias() = W.transpose() * u;
    v /= std::max(v.norm(), T(1e-30));
    u.noalias() = W * v;
    u /= std::max(u.norm(), T(1e-30));
  }
  /// σ̂, the scale and Ŵ from the current W.
  void refresh() {
    const auto W = as_matrix(W_.cview());
    as_vector(Wv_.view()).noalias() = W * as_vector(v_.cview());  // a member: no temporary per call
    sigma_ = double(as_vector(u_.cview()).dot(as_vector(Wv_.cview())));
    scale_ = o_.enabled ? std::max(1.0, sigma_ / o_.kappa) : 1.0;
    as_matrix(Weff_.view()) = W / T(scale_);
  }
  template <class X, class Gm>
  void add_weight_grad(const X& x, const Gm& G) {
    auto dW = as_matrix(dW_.view());
    RowMatrix<T> GW = x.transpose() * G;  // ∂L/∂Ŵ
    dW.noalias() += GW / T(scale_);
    if (scale_ > 1.0) {
      const T coef = (GW.cwiseProduct(as_matrix(Weff_.cview()))).sum() / T(sigma_);
      dW.noalias() -= coef * (as_vector(u_.cview()) * as_vector(v_.cview()).transpose());
    }
  }

  index_t in_, out_;
  SpectralOptions o_;
  Tensor<T> W_, dW_, Weff_, u_, v_, Wv_;
  double sigma_ = 0, scale_ = 1;
  bool held_ = false, training_ = true;
  Cache cache_;
};

}  // namespace lamina
