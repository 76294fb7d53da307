#pragma once
// The unrolled backward (spec/fpi_dynalay.md §3, the oracle): the forward runs
// damped Picard through Solver with a recording row map, so that every
// evaluation t keeps its rows R_t, inputs X_t, injections and cell application;
// the backward differentiates through every step,
//   Ā_t = [b_i = t] g_i + [i ∈ R_{t+1}] ((1−τ) Ā_{t+1} + τ J_tᵀ Ā_{t+1}),
// with b_i the evaluation whose input sample i returns (the lowest residual), and
// adds τ ∂f/∂u ᵀ Ā_{t+1} into du and τ ∂f/∂θ ᵀ Ā_{t+1} into the parameters.
// Exact for the truncated solve; memory grows with the iterations (small problems).
#include <span>
#include <vector>

#include "lamina/core/cell.hpp"
#include "lamina/core/rows.hpp"
#include "lamina/fpi/report.hpp"

namespace lamina::fpi {

template <Cell C>
struct Tape {
  using T = typename C::value_type;
  struct Step {
    std::vector<index_t> rows;
    Tensor<T> x, u;  ///< the evaluation's inputs (the application keeps views of them)
    typename C::Cache cell;
  };
  std::vector<Step> steps;  ///< reserved up front: a Step never moves once recorded
  index_t used = 0;

  void clear(index_t max_steps) {
    if (index_t(steps.size()) < max_steps) {
      std::vector<Step> fresh(static_cast<std::size_t>(max_steps));
      steps.swap(fresh);
    }
    used = 0;
  }
};

/// The row map of the recorded forward: f(x_rows) = cell(x_rows, u[rows]) kept on the tape.
template <Cell C>
struct RecordingMap {
  using T = typename C::value_type;
  C& cell;
  ConstView<T> u;
  Tape<C>& tape;

  void operator()(ConstView<T> x, std::span<const index_t> rows, View<T> out) {
    auto& s = tape.steps[std::size_t(tape.used++)];
    s.rows.assign(rows.begin(), rows.end());
    s.x.resize(x.shape());
    s.u.resize(x.shape());
    std::copy(x.data(), x.data() + x.size(), s.x.data());
    gather_rows(u, rows, s.u.view());
    cell.forward(s.x.cview(), s.u.cview(), out, s.cell);
  }
};

/// Backward through the tape: adds into du (all rows) and, with g.params, the cell's parameters.
template <Cell C>
class UnrolledBackward {
 public:
  using T = typename C::value_type;

  void run(C& cell, const Tape<C>& tape, const SolveReport& report, double tau, ConstView<T> dy, View<T> du,
           bool params) {
    const index_t N = dy.dim(0), w = dy.size() / N;
    A_.resize(Shape{N, w});
    fill_zero(A_.data(), A_.size());
    for (index_t t = tape.used; t >= 1; --t) {
      if (t < tape.used) step(cell, tape, t, T(tau), du, w, params);
      for (index_t i = 0; i < N; ++i)
        if (report.samples[std::size_t(i)].best == t) axpy(A_.data() + i * w, dy.data() + i * w, w);
    }
  }

 private:
  /// Ā over R_t from Ā over R_{t+1} (evaluation t, 1-based).
  void step(C& cell, const Tape<C>& tape, index_t t, T tau, View<T> du, index_t w, bool params) {
    const auto& s = tape.steps[std::size_t(t - 1)];
    const auto& next = tape.steps[std::size_t(t)].rows;  // R_{t+1} ⊆ R_t, both ascending
    const Shape sh = s.x.shape();
    seed_.resize(sh), dz_.resize(sh), du_.resize(sh);
    fill_zero(seed_.data(), seed_.size());
    fill_zero(dz_.data(), dz_.size());
    fill_zero(du_.data(), du_.size());
    for (std::size_t j = 0, p = 0; j < next.size(); ++j) {
      while (s.rows[p] != next[j]) ++p;
      const T* a = A_.data() + next[j] * w;
      for (index_t k = 0; k < w; ++k) {
        seed_.data()[index_t(p) * w + k] = tau * a[k];
        dz_.data()[index_t(p) * w + k] = (T(1) - tau) * a[k];
      }
    }
    cell.backward(s.cell, seed_.cview(), dz_.view(), du_.view(), {.input = true, .params = params});
    const Shape flat{index_t(s.rows.size()), w};
    scatter_rows(dz_.cview().reshape(flat), s.rows, A_.view());
    scatter_add_rows(du_.cview().reshape(flat), s.rows, du.reshape(A_.shape()));
  }

  Tensor<T> A_, seed_, dz_, du_;
};

}  // namespace lamina::fpi
