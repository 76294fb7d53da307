#pragma once
// The default FPI cells (spec/fpi_dynalay.md §1) and the step hooks of a cell.
//   TanhCell<T> = tanh(z Ŵ + u), ReluCell<T> = ReLU(z Ŵ + u), Ŵ spectrally
//   normalised (SpectralLinear, κ = 0.9 by default).
// Any lamina::Cell whose output has the state's shape may be the cell of an FPI
// layer. The solver evaluates it with infer() while iterating and once with
// forward() at the returned iterate, so it must be a deterministic map applied
// to each sample on its own (no batch statistics, no random draws).
//
// begin_step(cell, update) / end_step(cell) bracket one solve: a part that has
// begin_step(bool) (SpectralLinear) updates its estimate when `update` and holds
// its map fixed until end_step(); the hooks reach into Injected's f() and g().
#include "lamina/core/cell.hpp"
#include "lamina/fpi/spectral_linear.hpp"
#include "lamina/modules/activation.hpp"

namespace lamina::fpi {

template <class C>
void begin_step(C& c, bool update) {
  if constexpr (requires { c.begin_step(update); }) {
    c.begin_step(update);
  } else if constexpr (requires { c.f(); c.g(); }) {
    begin_step(c.f(), update);
    begin_step(c.g(), update);
  }
}
template <class C>
void end_step(C& c) noexcept {
  if constexpr (requires { c.end_step(); }) {
    c.end_step();
  } else if constexpr (requires { c.f(); c.g(); }) {
    end_step(c.f());
    end_step(c.g());
  }
}

/// Holds a cell's map fixed for the lifetime of the guard.
template <class C>
class StepGuard {
 public:
  StepGuard(C& c, bool update) : c_(c) { begin_step(c_, update); }
  ~StepGuard() { end_step(c_); }
  StepGuard(const StepGuard&) = delete;
  StepGuard& operator=(const StepGuard&) = delete;

 private:
  C& c_;
};

template <class T>
using TanhCell = Injected<SpectralLinear<T>, Tanh<T>>;
template <class T>
using ReluCell = Injected<SpectralLinear<T>, ReLU<T>>;

template <class T>
TanhCell<T> make_tanh_cell(index_t D, Rng& rng, SpectralOptions o = {}) {
  return TanhCell<T>(SpectralLinear<T>(D, D, rng, o), Tanh<T>{});
}
template <class T>
ReluCell<T> make_relu_cell(index_t D, Rng& rng, SpectralOptions o = {}) {
  return ReluCell<T>(SpectralLinear<T>(D, D, rng, o), ReLU<T>{});
}

}  // namespace lamina::fpi
