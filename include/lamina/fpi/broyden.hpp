#pragma once
// Broyden's ("good") method on g(x) = f(x) − x (spec/fpi_dynalay.md §2, option;
// as in Bai et al.'s DEQ): an inverse-Jacobian estimate H ≈ (∂g/∂x)⁻¹ starting
// from −I, kept in low-rank form H = −I + Σ_j u_j v_jᵀ, with the update
//   H ← H + (s − H y)(sᵀH) / (sᵀ H y),   s = x_t − x_{t−1},  y = g_t − g_{t−1},
// and the step x ← x − H g. The first step is a Picard step. At most
// `broyden_memory` pairs are kept per sample; when they are used up the sample
// restarts from H = −I (restarted Broyden: replacing the oldest pair instead
// breaks the secant structure and stalls on ill-conditioned problems). A step
// that is not finite falls back to a Picard step and restarts that sample.
#include <cmath>
#include <vector>

#include "lamina/core/eigen.hpp"
#include "lamina/fpi/options.hpp"

namespace lamina::fpi {

template <class T>
class Broyden {
 public:
  void reset(index_t samples, index_t width, const SolverOptions& o) {
    w_ = width, cap_ = o.broyden_memory;
    U_.resize(Shape{samples * cap_, width});
    V_.resize(Shape{samples * cap_, width});
    xprev_.resize(Shape{samples, width});
    gprev_.resize(Shape{samples, width});
    count_.assign(std::size_t(samples), -1);  // -1: no previous iterate
    for (ColVector<T>* v : {&g_, &s_, &y_, &Hy_, &sH_}) v->resize(width);
    c_.resize(cap_);
  }
  /// out = the Broyden step of sample i from x and fx = f(x); out may be x.
  void step(index_t i, const T* x, const T* fx, T* out) {
    const Vec xv(x, w_), fv(fx, w_);
    Out next(out, w_);
    g_ = fv - xv;
    MVec xp(xprev_.data() + i * w_, w_), gp(gprev_.data() + i * w_, w_);
    index_t& count = count_[std::size_t(i)];
    if (count >= 0) {
      s_ = xv - xp, y_ = g_ - gp;
      update(i);
    }
    if (count < 0) count = 0;
    const index_t n = count;
    auto U = rows(U_, i, n), V = rows(V_, i, n);
    xp = xv;  // before out is written: out may be x
    gp = g_;
    next = xp + g_;  // x − H g with H = −I ...
    if (n > 0) {  // ... + Σ u_j v_jᵀ
      c_.head(n).noalias() = V * g_;
      next.noalias() -= U.transpose() * c_.head(n);
    }
    if (!next.allFinite()) {
      next = fv;
      count = 0;
    }
  }

 private:
  using Vec = Eigen::Map<const ColVector<T>>;
  using MVec = Eigen::Map<ColVector<T>>;
  using Out = Eigen::Map<ColVector<T>>;
  using Rows = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
  Rows rows(Tensor<T>& t, index_t i, index_t n) {
    return Rows(t.data() + i * cap_ * w_, n, w_, Eigen::OuterStride<>(w_));
  }
  /// Adds the rank-one correction of sample i for the secant pair (s, y) = (s_, y_).
  void update(index_t i) {
    const ColVector<T>& s = s_;
    const ColVector<T>& y = y_;
    index_t& count = count_[std::size_t(i)];
    if (count == cap_) count = 0;  // memory used up: restart from H = −I with this pair
    auto U = rows(U_, i, count), V = rows(V_, i, count);
    Hy_ = -y;
    sH_ = -s;
    if (count > 0) {
      c_.head(count).noalias() = V * y;
      Hy_.noalias() += U.transpose() * c_.head(count);
      c_.head(count).noalias() = U * s;
      sH_.noalias() += V.transpose() * c_.head(count);
    }
    const T denom = s.dot(Hy_);
    if (!(std::abs(denom) > T(1e-30)) || !std::isfinite(denom)) return;
    auto all_u = rows(U_, i, cap_), all_v = rows(V_, i, cap_);
    all_u.row(count) = ((s - Hy_) / denom).transpose();
    all_v.row(count) = sH_.transpose();
    ++count;
  }

  index_t w_ = 0, cap_ = 1;
  Tensor<T> U_, V_, xprev_, gprev_;
  std::vector<index_t> count_;
  ColVector<T> g_, s_, y_, Hy_, sH_, c_;  // sized by reset(): a step allocates nothing
};

}  // namespace lamina::fpi
