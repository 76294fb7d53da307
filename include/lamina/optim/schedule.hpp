#pragma once
// Learning-rate schedules, closed forms of PyTorch's (golden/core/README.md
// "Learning-rate schedules"). The argument is the epoch; a fractional epoch
// (step / steps_per_epoch) gives a per-step schedule. Every argument is
// checked (value_error): rates finite and >= 0, periods finite and > 0,
// eta_min in [0, base_lr], factors in their ranges.
#include <cmath>
#include <numbers>

#include "lamina/core/error.hpp"

namespace lamina::detail {
inline bool finite_nonneg(double v) noexcept { return std::isfinite(v) && v >= 0; }
}  // namespace lamina::detail

namespace lamina::optim {

/// StepLR: base·gamma^floor(e / step_size).
struct StepLR {
  double base_lr, gamma;
  long step_size;
  StepLR(double base, long step, double g) : base_lr(base), gamma(g), step_size(step) {
    require(detail::finite_nonneg(base), "StepLR", "base_lr", "finite and >= 0", base);
    require(step > 0, "StepLR", "step_size", "> 0", step);
    require(std::isfinite(g) && g > 0, "StepLR", "gamma", "finite and > 0", g);
  }
  double operator()(double e) const { return base_lr * std::pow(gamma, std::floor(e / double(step_size))); }
};

/// CosineAnnealingLR: eta_min + (base − eta_min)(1 + cos(π e / T_max))/2.
struct CosineLR {
  double base_lr, t_max, eta_min;
  CosineLR(double base, double tmax, double emin = 0) : base_lr(base), t_max(tmax), eta_min(emin) {
    require(detail::finite_nonneg(base), "CosineLR", "base_lr", "finite and >= 0", base);
    require(std::isfinite(tmax) && tmax > 0, "CosineLR", "T_max", "finite and > 0", tmax);
    require(emin >= 0 && emin <= base, "CosineLR", "eta_min", "in [0, base_lr]", emin);
  }
  double operator()(double e) const {
    return eta_min + (base_lr - eta_min) * (1 + std::cos(std::numbers::pi * e / t_max)) / 2;
  }
};

/// Linear warm-up from start_factor·base over `warmup` epochs, then cosine to
/// eta_min at `total` (PyTorch's SequentialLR of LinearLR and CosineAnnealingLR).
struct WarmupCosineLR {
  double base_lr, warmup, start_factor, total, eta_min;
  WarmupCosineLR(double base, double warm, double start, double tot, double emin = 0)
      : base_lr(base), warmup(warm), start_factor(start), total(tot), eta_min(emin) {
    require(detail::finite_nonneg(base), "WarmupCosineLR", "base_lr", "finite and >= 0", base);
    require(std::isfinite(tot) && tot > 0, "WarmupCosineLR", "total", "finite and > 0", tot);
    require(warm >= 0 && warm < tot, "WarmupCosineLR", "warmup", "in [0, total)", warm);
    require(start > 0 && start <= 1, "WarmupCosineLR", "start_factor", "in (0, 1]", start);
    require(emin >= 0 && emin <= base, "WarmupCosineLR", "eta_min", "in [0, base_lr]", emin);
  }
  double operator()(double e) const {
    if (e < warmup) return base_lr * (start_factor + (1 - start_factor) * e / warmup);
    return CosineLR(base_lr, total - warmup, eta_min)(e - warmup);
  }
};

}  // namespace lamina::optim
