#pragma once
// SGD with momentum and Nesterov, as torch.optim.SGD (golden/core/README.md).
// Options: lr and weight_decay finite and >= 0, momentum in [0, 1), dampening
// in [0, 1], Nesterov only with momentum > 0 and dampening 0 (value_error).
//   d = g + wd·w (only where the parameter's decay flag is set)
//   buf = d at the first step, else momentum·buf + (1 − dampening)·d
//   d = d + momentum·buf (Nesterov) or buf;  w −= lr·d
#include <cmath>

#include "lamina/optim/optimizer.hpp"

namespace lamina::optim {

struct SgdOptions {
  double lr = 0.1;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

template <class T>
class SGD : public OptimizerBase<T> {
  using Base = OptimizerBase<T>;

 public:
  SGD(std::vector<ParamRef<T>> params, const SgdOptions& o) : Base("SGD", std::move(params), o.lr), o_(o) {
    require(o.momentum >= 0 && o.momentum < 1, "SGD", "momentum", "in [0, 1)", o.momentum);
    require(o.dampening >= 0 && o.dampening <= 1, "SGD", "dampening", "in [0, 1]", o.dampening);
    require(std::isfinite(o.weight_decay) && o.weight_decay >= 0, "SGD", "weight_decay", "finite and >= 0",
            o.weight_decay);
    require(!o.nesterov || (o.momentum > 0 && o.dampening == 0), "SGD", "nesterov",
            "momentum > 0 and dampening == 0", detail::text("momentum ", o.momentum, ", dampening ", o.dampening));
    if (o.momentum != 0) buf_ = this->make_state();
  }
  template <Module M>
  SGD(M& model, const SgdOptions& o) : SGD(trainable_parameters<T>(model), o) {}

  void step() {
    const T lr = T(this->lr_), mu = T(o_.momentum), damp = T(1 - o_.dampening);
    const bool first = this->t_ == 0;
    for (std::size_t k = 0; k < this->params_.size(); ++k) {
      const ParamRef<T>& p = this->params_[k];
      const T wd = p.decay ? T(o_.weight_decay) : T(0);
      T* w = p.value.data();
      const T* g = p.grad.data();
      const index_t n = p.value.size();
      if (o_.momentum == 0) {
        for (index_t i = 0; i < n; ++i) w[i] -= lr * (g[i] + wd * w[i]);
        continue;
      }
      T* b = buf_[k].data();
      for (index_t i = 0; i < n; ++i) {
        const T d = g[i] + wd * w[i];
        b[i] = first ? d : mu * b[i] + damp * d;
        w[i] -= lr * (o_.nesterov ? d + mu * b[i] : b[i]);
      }
    }
    ++this->t_;
  }

  const SgdOptions& options() const noexcept { return o_; }
  /// Momentum buffers, named "momentum.<parameter>".
  template <class F>
  void visit_state(F&& f) {
    for (std::size_t k = 0; k < buf_.size(); ++k)
      f(ParamRef<T>{"momentum." + this->params_[k].name, buf_[k].view(), View<T>{}, false, false});
  }

 private:
  SgdOptions o_;
  std::vector<Tensor<T>> buf_;
};

}  // namespace lamina::optim
