#pragma once
// The FPI layer (spec/fpi_dynalay.md §1–3): the input is injected once,
// u = inject(x) (default Linear: u = x W_in + b_in), and the layer returns, per
// sample, the solution z* of z = f(z, u) found from z = 0 by the forward solver
// (§2), for any lamina::Cell f whose output has the state's shape (default
// TanhCell: tanh(z Ŵ + u), Ŵ spectrally normalised). Backward modes (§3):
//   implicit  solve w = Jᵀw + g with the same solvers (input-only products of
//             the cell), then one backward of the cell at z* with w;
//   phantom   backward through k damped steps z ← (1−τ) z + τ f(z) from z*;
//   one_step  w = g (Jacobian-free), one backward of the cell at z*;
//   unrolled  backward through every Picard step of the forward (the oracle).
// Module contract v2: a Cache per application, infer keeps nothing, backward
// adds into dx and the parameter gradients. The forward's per-sample report
// (iterations, residual, converged) is in Cache::report; infer's in
// last_report(), the implicit backward's adjoint solve in last_backward_report().
#include <span>
#include <string>
#include <vector>

#include "lamina/core/cell.hpp"
#include "lamina/core/module.hpp"
#include "lamina/core/rows.hpp"
#include "lamina/fpi/adjoint.hpp"
#include "lamina/fpi/cell.hpp"
#include "lamina/fpi/options.hpp"
#include "lamina/fpi/solve.hpp"
#include "lamina/fpi/unrolled.hpp"
#include "lamina/modules/linear.hpp"

namespace lamina {

template <Cell C, class Inject = Linear<typename C::value_type>>
class FpiLayer {
  static_assert(check_module<Inject>(), "lamina::FpiLayer: the injection must satisfy lamina::Module");

 public:
  using value_type = typename C::value_type;
  using T = value_type;
  struct Cache {
    typename Inject::Cache in;
    Tensor<T> u, z, fz;                     ///< injection, returned iterate z*, scratch f(z)
    typename C::Cache star;                 ///< the cell applied at z* (all modes but unrolled)
    std::vector<Tensor<T>> states;          ///< phantom: z_1 … z_{k−1}
    std::vector<typename C::Cache> steps;   ///< phantom: the cell applied at z_1 … z_{k−1}
    fpi::Tape<C> tape;                      ///< unrolled: every evaluation of the solve
    fpi::SolveReport report;                ///< the forward solve, per sample
    fpi::Options options;                   ///< the options this application ran with
    bool done = false;
  };

  FpiLayer(Inject inject, C cell, fpi::Options o = {}) : inject_(std::move(inject)), cell_(std::move(cell)) {
    set_options(o);
  }

  void set_options(const fpi::Options& o) {
    fpi::validate(o, "FpiLayer");
    o_ = o;
  }
  const fpi::Options& options() const noexcept { return o_; }
  Inject& injection() noexcept { return inject_; }
  C& cell() noexcept { return cell_; }
  const fpi::SolveReport& last_report() const noexcept { return infer_report_; }
  const fpi::SolveReport& last_backward_report() const noexcept { return backward_report_; }
  const fpi::AdjointMap<C>& last_adjoint() const noexcept { return adjoint_; }

  Shape output_shape(const Shape& x) const {
    const Shape s = inject_.output_shape(x);
    require<shape_error>(cell_.output_shape(s) == s, "FpiLayer", "cell output shape", s, cell_.output_shape(s));
    return s;
  }

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    c.done = false;
    const Shape s = output_shape(x.shape());
    require_shape(y, s, "FpiLayer", "y");
    c.u.resize(s);
    inject_.forward(x, c.u.view(), c.in, p);
    fpi::StepGuard guard(cell_, !p.recompute);
    c.z.resize(s);
    c.z.zero();
    c.options = o_;
    if (o_.backward.mode == fpi::BackwardMode::unrolled) {
      c.tape.clear(o_.forward.max_iter);
      fpi::SolverOptions whole = o_.forward;
      whole.block = 0;  // the tape's evaluation t is iteration t of every sample
      solver_.solve(fpi::RecordingMap<C>{cell_, c.u.cview(), c.tape}, c.z.view(), whole, c.report, "FpiLayer");
    } else {
      solver_.solve(row_map(c.u.cview()), c.z.view(), o_.forward, c.report, "FpiLayer");
      apply_at_star(c, p);
    }
    std::copy(c.z.data(), c.z.data() + c.z.size(), y.data());
    c.done = true;
  }

  void infer(ConstView<T> x, View<T> y) {
    const Shape s = output_shape(x.shape());
    require_shape(y, s, "FpiLayer", "y");
    u_.resize(s);
    inject_.infer(x, u_.view());
    fpi::StepGuard guard(cell_, false);
    fill_zero(y.data(), y.size());
    solver_.solve(row_map(u_.cview()), y, o_.forward, infer_report_, "FpiLayer");
  }

  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.done, "FpiLayer");
    require_shape(dy, c.z.shape(), "FpiLayer", "dy");
    if (!g.input && !g.params) return;
    fpi::StepGuard guard(cell_, false);
    du_.resize(c.z.shape());
    du_.zero();
    switch (c.options.backward.mode) {
      case fpi::BackwardMode::implicit: implicit(c, dy, g.params); break;
      case fpi::BackwardMode::phantom: phantom(c, dy, g.params); break;
      case fpi::BackwardMode::one_step: close(c, dy, g.params); break;
      case fpi::BackwardMode::unrolled:
        unrolled_.run(cell_, c.tape, c.report, c.options.forward.tau, dy, du_.view(), g.params);
        break;
    }
    inject_.backward(c.in, du_.cview(), dx, g);
  }

  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }
  const Cache& cache() const noexcept { return cache_; }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    inject_.visit(f, prefix + "inject.");
    cell_.visit(f, prefix + "cell.");
  }
  void set_training(bool on) {
    lamina::set_training(inject_, on);
    lamina::set_training(cell_, on);
  }

 private:
  /// The forward map for Solver: f(z_rows) = cell(z_rows, u[rows]), evaluated with infer.
  auto row_map(ConstView<T> u) {
    return [this, u](ConstView<T> z, std::span<const index_t> rows, View<T> out) {
      const index_t n = index_t(rows.size());
      if (rows.back() - rows.front() + 1 == n) return cell_.infer(z, u.slice(rows.front(), n), out);  // ascending
      ua_.resize(z.shape());
      gather_rows(u, rows, ua_.view());
      cell_.infer(z, ua_.cview(), out);
    };
  }
  /// The cell applied at z* (and, for phantom, at the k − 1 damped steps after it).
  void apply_at_star(Cache& c, Pass p) {
    c.fz.resize(c.z.shape());
    cell_.forward(c.z.cview(), c.u.cview(), c.fz.view(), c.star, p);
    if (c.options.backward.mode != fpi::BackwardMode::phantom) return;
    const index_t k = c.options.backward.k;
    const T tau = T(c.options.backward.tau);
    c.states.resize(std::size_t(k - 1));
    c.steps.resize(std::size_t(k - 1));
    const Tensor<T>* prev = &c.z;
    for (index_t t = 0; t + 1 < k; ++t) {
      Tensor<T>& zt = c.states[std::size_t(t)];
      zt.resize(c.z.shape());
      for (index_t i = 0; i < zt.size(); ++i) zt[i] = (T(1) - tau) * (*prev)[i] + tau * c.fz[i];
      cell_.forward(zt.cview(), c.u.cview(), c.fz.view(), c.steps[std::size_t(t)], p);
      prev = &zt;
    }
  }
  /// One backward of the cell at z* with w: du and (when asked) the parameters.
  void close(const Cache& c, ConstView<T> w, bool params) {
    cell_.backward(c.star, w, View<T>{}, du_.view(), {.input = false, .params = params});
  }
  void implicit(const Cache& c, ConstView<T> dy, bool params) {
    w_.resize(dy.shape());
    std::copy(dy.data(), dy.data() + dy.size(), w_.data());  // w₀ = g
    adjoint_.bind(cell_, c.star, c.z.cview(), c.u.cview(), dy);
    adjoint_solver_.solve(adjoint_, w_.view(), c.options.backward.solver, backward_report_, "FpiLayer backward");
    close(c, w_.cview(), params);
  }
  /// a ← (1−τ) a + τ J_tᵀ a through steps k … 1; du, θ get τ ∂f/∂(u, θ)ᵀ a.
  void phantom(const Cache& c, ConstView<T> dy, bool params) {
    const index_t k = c.options.backward.k;
    const T tau = T(c.options.backward.tau);
    a_.resize(dy.shape()), seed_.resize(dy.shape()), da_.resize(dy.shape());
    std::copy(dy.data(), dy.data() + dy.size(), a_.data());
    for (index_t t = k; t >= 1; --t) {
      for (index_t i = 0; i < a_.size(); ++i) seed_[i] = tau * a_[i], da_[i] = (T(1) - tau) * a_[i];
      const auto& app = t == 1 ? c.star : c.steps[std::size_t(t - 2)];
      cell_.backward(app, seed_.cview(), t > 1 ? da_.view() : View<T>{}, du_.view(), {.input = t > 1, .params = params});
      std::swap(a_, da_);
    }
  }

  Inject inject_;
  C cell_;
  fpi::Options o_;
  fpi::Solver<T> solver_, adjoint_solver_;
  fpi::AdjointMap<C> adjoint_;
  fpi::UnrolledBackward<C> unrolled_;
  fpi::SolveReport infer_report_, backward_report_;
  Tensor<T> u_, ua_, du_, w_, a_, seed_, da_;
  Cache cache_;
};

/// The default dense FPI layer: u = x W_in + b_in, z* = tanh(z* Ŵ + u), Ŵ spectrally normalised.
template <class T>
FpiLayer<fpi::TanhCell<T>> make_tanh_fpi(index_t in, index_t D, Rng& rng, fpi::Options o = {}, SpectralOptions s = {}) {
  Linear<T> inject(in, D, rng);
  return FpiLayer<fpi::TanhCell<T>>(std::move(inject), fpi::make_tanh_cell<T>(D, rng, s), o);
}

}  // namespace lamina
