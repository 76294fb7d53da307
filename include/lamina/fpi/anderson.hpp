#pragma once
// Anderson acceleration (spec/fpi_dynalay.md §2; type II as in Bai et al.'s DEQ
// and torchdeq): with the last n ≤ m pairs (x_j, f(x_j)) of a sample and their
// residuals g_j = f(x_j) − x_j, solve the small least-squares problem
//   min_α ‖Σ α_j g_j‖² + λ' ‖α‖²  subject to  Σ α_j = 1
// through its bordered (n+1)×(n+1) system with Eigen's partial-pivot LU, and mix
//   x ← β Σ α_j f(x_j) + (1−β) Σ α_j x_j.
// λ' = λ · trace(GGᵀ)/n: the regulariser is relative to the residuals' scale, so
// it neither vanishes far from the solution nor swamps the Gram matrix near it
// (an absolute λ = 1e-4 dominates once ‖g‖² < 1e-4 and turns the step into an
// average of the history). A non-finite α (λ = 0, a singular system) falls back
// to a plain mixing step and restarts that sample's history.
//
// Cost per sample and iteration, besides the map itself: the Gram matrix GGᵀ is
// kept per sample and updated by the new residual's row (n dot products of
// the state width, not n²), and the bordered system lives in fixed-capacity
// matrices (m ≤ max_memory), so a step allocates nothing.
#include <Eigen/Dense>
#include <vector>

#include "lamina/core/eigen.hpp"
#include "lamina/fpi/options.hpp"

namespace lamina::fpi {

template <class T>
class Anderson {
 public:
  static constexpr index_t max_memory = SolverOptions::max_anderson_memory;

  void reset(index_t samples, index_t width, const SolverOptions& o) {
    w_ = width, m_ = o.m, lambda_ = T(o.lambda), beta_ = T(o.beta);
    X_.resize(Shape{samples * m_, width});
    F_.resize(Shape{samples * m_, width});
    G_.resize(Shape{samples * m_, width});
    gram_.resize(Shape{samples * m_, m_});
    count_.assign(std::size_t(samples), 0);
  }
  void step(index_t i, const T* x, const T* fx, T* out) {
    const index_t slot = count_[std::size_t(i)]++ % m_;
    const index_t n = std::min<index_t>(count_[std::size_t(i)], m_);
    auto X = rows(X_, i, n), F = rows(F_, i, n), G = rows(G_, i, n);
    X.row(slot) = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(x, w_);
    F.row(slot) = Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>>(fx, w_);
    G.row(slot) = F.row(slot) - X.row(slot);
    update_gram(i, slot, G);
    Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> next(out, w_);
    if (n == 1 || !weights(i, n)) {
      next = beta_ * F.row(slot) + (T(1) - beta_) * X.row(slot);
      if (n > 1) restart(i, slot);
      return;
    }
    const auto alpha = alpha_.head(n);
    next.noalias() = beta_ * (alpha.transpose() * F);
    if (beta_ != T(1)) next.noalias() += (T(1) - beta_) * (alpha.transpose() * X);
  }

 private:
  using Rows = Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
  using Small = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor, max_memory + 1, max_memory + 1>;
  using SmallVector = Eigen::Matrix<T, Eigen::Dynamic, 1, Eigen::ColMajor, max_memory + 1, 1>;

  Rows rows(Tensor<T>& t, index_t i, index_t n) {
    return Rows(t.data() + i * m_ * w_, n, w_, Eigen::OuterStride<>(w_));
  }
  Rows gram(index_t i, index_t n) { return Rows(gram_.data() + i * m_ * m_, n, n, Eigen::OuterStride<>(m_)); }
  /// Row and column `slot` of sample i's Gram matrix from its new residual.
  void update_gram(index_t i, index_t slot, const Rows& G) {
    auto K = gram(i, G.rows());
    for (index_t j = 0; j < G.rows(); ++j) K(slot, j) = K(j, slot) = G.row(slot).dot(G.row(j));
  }
  /// α (in alpha_) of the constrained least squares; false when it is not finite.
  bool weights(index_t i, index_t n) {
    const auto K = gram(i, n);
    H_.resize(n + 1, n + 1);
    H_(0, 0) = T(0);
    H_.row(0).tail(n).setOnes();
    H_.col(0).tail(n).setOnes();
    H_.bottomRightCorner(n, n) = K;
    const T reg = lambda_ * K.trace() / T(n);
    H_.bottomRightCorner(n, n).diagonal().array() += reg;
    rhs_.setZero(n + 1);
    rhs_(0) = T(1);
    lu_.compute(H_);
    alpha_ = lu_.solve(rhs_).tail(n);
    return alpha_.head(n).allFinite();
  }
  /// Keeps only the newest pair of sample i (moved to slot 0).
  void restart(index_t i, index_t slot) {
    for (Tensor<T>* t : {&X_, &F_, &G_}) {
      auto R = rows(*t, i, m_);
      R.row(0) = R.row(slot).eval();
    }
    auto K = gram(i, m_);
    K(0, 0) = K(slot, slot);
    count_[std::size_t(i)] = 1;
  }

  index_t w_ = 0, m_ = 1;
  T lambda_ = T(0), beta_ = T(1);
  Tensor<T> X_, F_, G_;  // [samples·m, width]: per sample a ring of m iterates, values, residuals
  Tensor<T> gram_;       // [samples·m, m]: per sample G Gᵀ of its ring
  std::vector<index_t> count_;
  Small H_;
  SmallVector rhs_, alpha_;
  Eigen::PartialPivLU<Small> lu_;
};

}  // namespace lamina::fpi
