#pragma once
// AdamW as torch.optim.AdamW (golden/core/README.md): decoupled decay
// w ← w·(1 − lr·wd) first (only where the decay flag is set), then
// w ← w − lr·m̂/(sqrt(v̂) + eps) with bias-corrected moments.
#include <cmath>

#include "lamina/optim/optimizer.hpp"

namespace lamina::optim {

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

template <class T>
class AdamW : public OptimizerBase<T> {
  using Base = OptimizerBase<T>;

 public:
  AdamW(std::vector<ParamRef<T>> params, const AdamWOptions& o) : Base("AdamW", std::move(params), o.lr), o_(o) {
    require(o.beta1 >= 0 && o.beta1 < 1, "AdamW", "beta1", "in [0, 1)", o.beta1);
    require(o.beta2 >= 0 && o.beta2 < 1, "AdamW", "beta2", "in [0, 1)", o.beta2);
    require(std::isfinite(o.eps) && o.eps > 0, "AdamW", "eps", "finite and > 0", o.eps);
    require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "AdamW", "weight_decay", "finite and >= 0",
            o.weight_decay);
    m_ = this->make_state();
    v_ = this->make_state();
  }
  template <Module M>
  AdamW(M& model, const AdamWOptions& o) : AdamW(trainable_parameters<T>(model), o) {}

  void step() {
    const index_t t = ++this->t_;
    const double lr = this->lr_;
    // 1 − β computed in double: in float, 1 − 0.999f is off by 5e-5 relative.
    const T b1 = T(o_.beta1), b2 = T(o_.beta2), c1 = T(1 - o_.beta1), c2 = T(1 - o_.beta2), eps = T(o_.eps);
    const T step = T(lr / (1 - std::pow(o_.beta1, double(t))));
    const T bc2 = T(std::sqrt(1 - std::pow(o_.beta2, double(t))));
    for (std::size_t k = 0; k < this->params_.size(); ++k) {
      const ParamRef<T>& p = this->params_[k];
      const T keep = p.decay ? T(1 - lr * o_.weight_decay) : T(1);
      T *w = p.value.data(), *m = m_[k].data(), *v = v_[k].data();
      const T* g = p.grad.data();
      for (index_t i = 0, n = p.value.size(); i < n; ++i) {
        w[i] *= keep;
        m[i] = b1 * m[i] + c1 * g[i];
        v[i] = b2 * v[i] + c2 * g[i] * g[i];
        w[i] -= step * m[i] / (std::sqrt(v[i]) / bc2 + eps);
      }
    }
  }

  const AdamWOptions& options() const noexcept { return o_; }
  /// Moments, named "exp_avg.<parameter>" and "exp_avg_sq.<parameter>".
  template <class F>
  void visit_state(F&& f) {
    for (std::size_t k = 0; k < m_.size(); ++k) {
      f(ParamRef<T>{"exp_avg." + this->params_[k].name, m_[k].view(), View<T>{}, false, false});
      f(ParamRef<T>{"exp_avg_sq." + this->params_[k].name, v_[k].view(), View<T>{}, false, false});
    }
  }

 private:
  AdamWOptions o_;
  std::vector<Tensor<T>> m_, v_;
};

}  // namespace lamina::optim
