#pragma once
// One interface for the forward and adjoint solvers (spec/fpi_dynalay.md §2).
//
//   Solver<T> s;
//   s.solve(f, z, options, report);
//
// f is a row map: f(z_rows, rows, out) evaluates the map for the listed samples,
// out[i] = f_{rows[i]}(z_rows[i]), with z_rows and out contiguous [rows.size(), ...]
// and rows ascending.
// z holds the initial iterate of every sample (its leading extent) and receives,
// per sample, the iterate of lowest relative residual ‖f(z) − z‖ / (‖f(z)‖ + 1e-9).
// A sample stops as soon as that residual is below tol (or is not finite, or
// max_iter evaluations are spent): converged samples are no longer passed to f.
// With SolverOptions::block > 0 the batch is solved in blocks of that many
// samples, one after another (buffers and Anderson's ring sized by the block);
// the samples are independent, so blocks change the cost, not the iterates.
// The report gives per sample the evaluations spent, the returned residual and
// the converged flag; non-convergence is reported, and thrown when asked.
#include <cmath>
#include <concepts>
#include <span>
#include <vector>

#include "lamina/core/rows.hpp"
#include "lamina/fpi/anderson.hpp"
#include "lamina/fpi/broyden.hpp"
#include "lamina/fpi/options.hpp"
#include "lamina/fpi/picard.hpp"
#include "lamina/fpi/report.hpp"
#include "lamina/fpi/residual.hpp"

namespace lamina::fpi {

template <class F, class T>
concept RowMap = std::invocable<F&, ConstView<T>, std::span<const index_t>, View<T>>;

template <class T>
class Solver {
 public:
  template <RowMap<T> F>
  void solve(F&& f, View<T> z, const SolverOptions& o, SolveReport& report, std::string_view module = "fpi::Solver") {
    validate(o, module, "solver");
    require_contiguous(z, module, "z");
    require<shape_error>(z.rank() >= 1 && z.dim(0) > 0, module, "z", "a non-empty batch", z.shape());
    switch (o.method) {
      case Method::picard: run(picard_, f, z, o, report); break;
      case Method::anderson: run(anderson_, f, z, o, report); break;
      case Method::broyden: run(broyden_, f, z, o, report); break;
    }
    enforce(report, o, module, "solve");
  }

 private:
  template <class Stepper, class F>
  void run(Stepper& st, F& f, View<T> z, const SolverOptions& o, SolveReport& r) {
    const index_t N = z.dim(0), w = z.size() / N;
    const index_t nb = o.block == 0 ? N : std::min(o.block, N);
    xa_.resize(with_rows(z.shape(), nb));
    fa_.resize(xa_.shape());
    r.samples.assign(std::size_t(N), SampleReport{});
    r.evaluations = 0;
    for (index_t b = 0; b < N; b += nb) run_block(st, f, z, b, std::min(nb, N - b), w, o, r);
  }
  /// Solves samples first … first + n − 1 together; the stepper and active_ see
  /// them as 0 … n − 1, the map and the report by their index in the batch.
  template <class Stepper, class F>
  void run_block(Stepper& st, F& f, View<T> z, index_t first, index_t n, index_t w, const SolverOptions& o,
                 SolveReport& r) {
    std::copy(z.data() + first * w, z.data() + (first + n) * w, xa_.data());  // every sample active, in order
    st.reset(n, w, o);
    first_ = first;
    active_.resize(std::size_t(n));
    for (index_t i = 0; i < n; ++i) active_[std::size_t(i)] = i;
    for (index_t it = 1; it <= o.max_iter && !active_.empty(); ++it) {
      evaluate(f, z.shape());
      r.evaluations += index_t(active_.size());
      next_.clear(), pos_.clear();
      for (std::size_t j = 0; j < active_.size(); ++j)
        if (advance(st, j, it, z, w, o, r)) next_.push_back(active_[j]), pos_.push_back(index_t(j));
      step(st, w);
      active_.swap(next_);
    }
  }
  /// fa_ = f(xa_) for the active samples, whose iterates are the first rows of xa_, in order.
  template <class F>
  void evaluate(F& f, const Shape& batch) {
    const Shape s = with_rows(batch, index_t(active_.size()));
    rows_.resize(active_.size());
    for (std::size_t j = 0; j < active_.size(); ++j) rows_[j] = first_ + active_[j];
    f(ConstView<T>(xa_.data(), s), std::span<const index_t>(rows_), View<T>(fa_.data(), s));
  }
  /// Residual bookkeeping of active_[j]; true when it goes on iterating.
  template <class Stepper>
  bool advance(Stepper& st, std::size_t j, index_t it, View<T> z, index_t w, const SolverOptions& o, SolveReport& r) {
    const index_t i = active_[j];  // in the block; first_ + i in the batch
    const T* xj = xa_.data() + index_t(j) * w;
    const T* fj = fa_.data() + index_t(j) * w;
    const double res = residual(st, i, xj, fj, w);
    SampleReport& s = r.samples[std::size_t(first_ + i)];
    s.iterations = it;
    if (res < s.residual || it == 1) {  // it == 1: the first iterate is returned even if not finite
      s.residual = res;
      s.best = it;
      std::copy(xj, xj + w, z.data() + (first_ + i) * w);
    }
    if (res < o.tol) {
      s.converged = true;
      return false;
    }
    return std::isfinite(res);  // diverged: stop spending work on it
  }
  /// The relative residual of sample i; a stepper with record() (Anderson) takes
  /// its history from the same pass.
  template <class Stepper>
  double residual(Stepper& st, index_t i, const T* x, const T* fx, index_t w) {
    if constexpr (requires { st.record(i, x, fx); }) return st.record(i, x, fx);
    else return relative_residual(x, fx, w);
  }
  /// xa_[k] ← the step from xa_[pos_[k]] and fa_[pos_[k]], for k = 0, 1, …: the
  /// samples going on are packed in place (pos_[k] ≥ k, so each row is read before
  /// it is overwritten; a stepper's out may be its x).
  template <class Stepper>
  void step(Stepper& st, index_t w) {
    if constexpr (requires { st.step_rows(next_, pos_, xa_.data(), fa_.data()); }) {
      st.step_rows(next_, pos_, xa_.data(), fa_.data());  // samples batched (Anderson's small solves)
    } else {
      for (std::size_t k = 0; k < next_.size(); ++k)
        st.step(next_[k], xa_.data() + pos_[k] * w, fa_.data() + pos_[k] * w, xa_.data() + index_t(k) * w);
    }
  }

  Picard<T> picard_;
  Anderson<T> anderson_;
  Broyden<T> broyden_;
  Tensor<T> xa_, fa_;  // the active samples' iterates and values, rows packed in the order of active_
  std::vector<index_t> active_, next_, pos_;  // active samples of the block, those going on, their rows in xa_/fa_
  std::vector<index_t> rows_;                 // active_ as indices in the batch (the map's rows)
  index_t first_ = 0;                         // the block's first sample in the batch
};

}  // namespace lamina::fpi
