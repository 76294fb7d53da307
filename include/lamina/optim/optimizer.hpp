#pragma once
// What SGD and AdamW share: the list of trainable parameters of a model, the
// learning rate, and named state tensors (for checkpoints).
#include <cmath>
#include <string>
#include <vector>

#include "lamina/core/module.hpp"

namespace lamina::optim {

template <class T>
std::vector<ParamRef<T>> trainable_parameters(auto& model) {
  std::vector<ParamRef<T>> ps;
  visit_parameters(model, [&](const ParamRef<T>& p) {
    if (p.trainable) ps.push_back(p);
  });
  return ps;
}

template <class T>
class OptimizerBase {
 public:
  double lr() const noexcept { return lr_; }
  void set_lr(double lr) {
    require(std::isfinite(lr) && lr >= 0, name_, "lr", "finite and >= 0", lr);
    lr_ = lr;
  }
  const std::vector<ParamRef<T>>& parameters() const noexcept { return params_; }
  void zero_grad() {
    for (auto& p : params_) std::fill(p.grad.data(), p.grad.data() + p.grad.size(), T(0));
  }
  index_t steps() const noexcept { return t_; }

 protected:
  OptimizerBase(const char* name, std::vector<ParamRef<T>> params, double lr) : name_(name), params_(std::move(params)) {
    set_lr(lr);
    for (auto& p : params_)
      require<shape_error>(p.grad.size() == p.value.size(), name_, detail::text("gradient of ", p.name), p.value.shape(),
                           p.grad.shape());
  }
  /// One state tensor per parameter, zero-initialised.
  std::vector<Tensor<T>> make_state() const {
    std::vector<Tensor<T>> s;
    for (auto& p : params_) s.emplace_back(p.value.shape());
    return s;
  }
  const char* name_;
  std::vector<ParamRef<T>> params_;
  double lr_ = 0;
  index_t t_ = 0;
};

}  // namespace lamina::optim
