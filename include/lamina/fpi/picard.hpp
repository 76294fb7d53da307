#pragma once
// Damped Picard step (spec/fpi_dynalay.md §2): z ← (1−τ) z + τ f(z), default τ = 1.
// A stepper of solve.hpp: reset() once per solve, step() once per sample and iteration.
#include "lamina/core/tensor.hpp"
#include "lamina/fpi/options.hpp"

namespace lamina::fpi {

template <class T>
class Picard {
 public:
  void reset(index_t /*samples*/, index_t width, const SolverOptions& o) {
    w_ = width;
    tau_ = T(o.tau);
  }
  /// out = (1−τ) x + τ fx for one sample (x, fx, out: `width` values each; out may be x).
  void step(index_t /*sample*/, const T* x, const T* fx, T* out) const noexcept {
    const T keep = T(1) - tau_;
    for (index_t d = 0; d < w_; ++d) out[d] = keep * x[d] + tau_ * fx[d];
  }

 private:
  index_t w_ = 0;
  T tau_ = T(1);
};

}  // namespace lamina::fpi
