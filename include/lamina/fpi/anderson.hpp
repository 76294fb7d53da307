#pragma once
// Anderson acceleration (spec/fpi_dynalay.md §2; type II as in Bai et al.'s DEQ
// and torchdeq): with the last n ≤ m values f(x_j) of a sample and their
// residuals g_j = f(x_j) − x_j, solve the small least-squares problem
//   min_α ‖Σ α_j g_j‖² + λ' ‖α‖²  subject to  Σ α_j = 1
// and mix  x ← β Σ α_j f(x_j) + (1−β) Σ α_j x_j,  where x_j = f(x_j) − g_j.
//
// The constrained problem is solved through its normal equations: with the Gram
// matrix K = GGᵀ + λ' I (symmetric positive definite for λ' > 0),
//   α = K⁻¹1 / (1ᵀK⁻¹1),
// one Cholesky factorisation (Eigen's LLT) of the n×n matrix, in double (K's
// condition number grows as the residuals shrink). The bordered (n+1)×(n+1)
// system of the same problem is indefinite and needs a pivoted LU: it is the
// reference the tests compare α against (fpi/reference.hpp).
// λ' = λ · ‖g_newest‖²: the regulariser is relative to the newest residual, so it
// neither vanishes far from the solution nor swamps the Gram entries of the
// recent residuals near it (an absolute λ = 1e-4 dominates once ‖g‖² < 1e-4, and
// one relative to the whole history, dominated by its oldest and largest
// residual, pulls α towards an average of the history). A failed factorisation
// or a non-finite α (λ = 0 with collinear residuals) falls back to a plain mixing
// step and restarts that sample's history.
//
// Cost per sample and iteration, besides the map: two rows written into the
// ring (f(x) and g), n dot products for the Gram row (the others are kept), an
// n×n Cholesky (n ≤ m), n axpys for the mix. The small matrices have a fixed
// capacity (m ≤ max_memory): nothing is allocated.
#include <Eigen/Dense>
#include <cmath>
#include <vector>

#include "lamina/core/eigen.hpp"
#include "lamina/fpi/options.hpp"

namespace lamina::fpi {


template <class T>
class Anderson {
 public:
  static constexpr index_t max_memory = SolverOptions::max_anderson_memory;

  void reset(index_t samples, index_t width, const SolverOptions& o) {
    w_ = width, m_ = o.m, lambda_ = o.lambda, beta_ = T(o.beta);
    F_.resize(Shape{samples * m_, width});
    G_.resize(Shape{samples * m_, width});
    gram_.resize(Shape{samples * m_, m_});
    count_.assign(std::size_t(samples), 0);
  }
  void step(index_t i, const T* x, const T* fx, T* out) {
    const index_t slot = count_[std::size_t(i)]++ % m_;
    const index_t n = std::min<index_t>(count_[std::size_t(i)], m_);
    T* f = ring(F_, i, slot);
    T* g = ring(G_, i, slot);
    for (index_t d = 0; d < w_; ++d) {
      f[d] = fx[d];
      g[d] = fx[d] - x[d];
    }
    update_gram(i, slot, n);
    if (n == 1 || !weights(i, n, slot)) {
      for (index_t d = 0; d < w_; ++d) out[d] = beta_ * fx[d] + (T(1) - beta_) * x[d];
      if (n > 1) restart(i, slot);
      return;
    }
    // out = Σ α_j (f_j − (1−β) g_j): β Σ α f + (1−β) Σ α x with x_j = f_j − g_j.
    const T keep = T(1) - beta_;
    vec(out).setZero();
    for (index_t j = 0; j < n; ++j) {
      const T a = T(alpha_(j));
      if (keep == T(0))
        vec(out) += a * cvec(ring(F_, i, j));
      else
        vec(out) += a * (cvec(ring(F_, i, j)) - keep * cvec(ring(G_, i, j)));
    }
  }

 private:
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> vec(T* p) const { return {p, w_}; }
  Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>> cvec(const T* p) const { return {p, w_}; }
  T* ring(Tensor<T>& t, index_t i, index_t slot) { return t.data() + (i * m_ + slot) * w_; }
  T* gram(index_t i) { return gram_.data() + i * m_ * m_; }
  /// Row and column `slot` of sample i's Gram matrix from its new residual.
  void update_gram(index_t i, index_t slot, index_t n) {
    T* K = gram(i);
    const auto gs = Eigen::Map<const ColVector<T>>(ring(G_, i, slot), w_);
    for (index_t j = 0; j < n; ++j)
      K[slot * m_ + j] = K[j * m_ + slot] = gs.dot(Eigen::Map<const ColVector<T>>(ring(G_, i, j), w_));
  }
  /// α = K⁻¹1 / (1ᵀK⁻¹1) of sample i into alpha_; false when K + λ'I is not
  /// numerically positive definite or α is not finite.
  bool weights(index_t i, index_t n, index_t slot) {
    const double reg = lambda_ * double(gram(i)[slot * m_ + slot]);
    switch (n) {  // fixed sizes: Eigen unrolls the factorisation (the common m ≤ 8)
      case 2: return solve_fixed<2>(gram(i), reg);
      case 3: return solve_fixed<3>(gram(i), reg);
      case 4: return solve_fixed<4>(gram(i), reg);
      case 5: return solve_fixed<5>(gram(i), reg);
      case 6: return solve_fixed<6>(gram(i), reg);
      case 7: return solve_fixed<7>(gram(i), reg);
      case 8: return solve_fixed<8>(gram(i), reg);
      default: return solve_small<Eigen::Dynamic>(gram(i), n, reg);
    }
  }
  template <int N>
  bool solve_fixed(const T* K, double reg) { return solve_small<N>(K, N, reg); }
  template <int N>
  bool solve_small(const T* K, index_t n, double reg) {
    using Matrix = Eigen::Matrix<double, N, N, Eigen::ColMajor, N == Eigen::Dynamic ? max_memory : N,
                                 N == Eigen::Dynamic ? max_memory : N>;
    const Eigen::Map<const RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>> Km(K, n, n, Eigen::OuterStride<>(m_));
    Matrix A = Km.template cast<double>();  // symmetric: row- or column-major alike
    A.diagonal().array() += reg;
    const Eigen::LLT<Eigen::Ref<Matrix>> llt(A);  // in place
    if (llt.info() != Eigen::Success) return false;
    alpha_.head(n) = llt.solve(Eigen::Matrix<double, N, 1>::Ones(n));
    const double sum = alpha_.head(n).sum();
    if (!std::isfinite(sum) || sum == 0) return false;
    alpha_.head(n) /= sum;
    return true;
  }
  /// Keeps only the newest pair of sample i (moved to slot 0).
  void restart(index_t i, index_t slot) {
    if (slot != 0)
      for (Tensor<T>* t : {&F_, &G_}) std::copy(ring(*t, i, slot), ring(*t, i, slot) + w_, ring(*t, i, 0));
    T* K = gram(i);
    K[0] = K[slot * m_ + slot];
    count_[std::size_t(i)] = 1;
  }

  index_t w_ = 0, m_ = 1;
  double lambda_ = 0;
  T beta_ = T(1);
  Tensor<T> F_, G_;  // [samples·m, width]: per sample a ring of m values f(x_j) and residuals g_j
  Tensor<T> gram_;   // [samples·m, m]: per sample G Gᵀ of its ring
  std::vector<index_t> count_;
  Eigen::Matrix<double, max_memory, 1> alpha_;
};

}  // namespace lamina::fpi
