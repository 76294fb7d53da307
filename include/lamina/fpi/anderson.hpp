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
// one Cholesky factorisation of the n×n matrix, in double (K's condition number
// grows as the residuals shrink). The factorisations of up to 8 samples (the
// lanes of a vector of doubles) run together in kernels/spd_lanes.hpp: one small
// solve alone is a latency chain of square roots and divisions (Eigen's LLT:
// ~160 ns for n = 5, more than the map it accelerates), which the lanes share. The bordered (n+1)×(n+1)
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
// Cost per sample and iteration, besides the map: record() writes f(x) and g
// into the ring and takes the new Gram row in the residual pass the solver
// makes anyway (kernels/residual.hpp); then an n×n Cholesky (n ≤ m, shared by
// the lanes; n = 2 in closed form) and one weighted sum of n rows for the mix.
// On the E3 cells (64 wide) that is about a tenth of the map at m = 2 and two
// fifths at m = 5. The buffers are sized by reset(): nothing is allocated while
// iterating.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "lamina/core/eigen.hpp"
#include "lamina/fpi/options.hpp"
#include "lamina/fpi/residual.hpp"
#include "lamina/kernels/dispatch.hpp"

namespace lamina::fpi {


template <class T>
class Anderson {
 public:
  static constexpr index_t max_memory = SolverOptions::max_anderson_memory;
  static_assert(std::size_t(max_memory) <= kernels::residual_max_rows);

  void reset(index_t samples, index_t width, const SolverOptions& o) {
    w_ = width, m_ = o.m, lambda_ = o.lambda, beta_ = T(o.beta);
    F_.resize(Shape{samples * m_, width});
    G_.resize(Shape{samples * m_, width});
    gram_.resize(std::size_t(samples * m_ * m_));
    count_.assign(std::size_t(samples), 0);
    A_.resize(std::size_t(m_ * m_ * lanes_));
    b_.resize(std::size_t(m_ * lanes_));
  }
  /// Records sample i's new pair (x, fx = f(x)): (fx, g = fx − x) into its ring
  /// and g's row of the Gram matrix, in the pass that also gives the relative
  /// residual ‖g‖ / (‖fx‖ + 1e-9), which it returns (kernels/residual.hpp).
  double record(index_t i, const T* x, const T* fx) {
    const index_t slot = count_[std::size_t(i)]++ % m_;
    const index_t n = std::min<index_t>(count_[std::size_t(i)], m_);
    std::array<index_t, max_memory> col;  // the ring's other residuals, dotted with g
    std::size_t r = 0;
    for (index_t j = 0; j < n; ++j)
      if (j != slot) terms_[r] = ring(G_, i, j), col[r++] = j;
    double s[2 + max_memory];
    kernels::table<T>().residual_dots(x, fx, w_, terms_.data(), r, ring(F_, i, slot), ring(G_, i, slot), s);
    double* K = gram(i);
    K[slot * m_ + slot] = s[0];
    for (std::size_t q = 0; q < r; ++q) K[slot * m_ + col[q]] = K[col[q] * m_ + slot] = s[2 + q];
    return relative_residual(s);
  }
  /// The next iterate of each listed sample, whose newest pair record() holds:
  /// xa + k·w ← the Anderson step from its iterate xa + pos[k]·w and value
  /// fa + pos[k]·w (`width` values each; pos[k] ≥ k, rows packed in place). The
  /// small solves of up to `lanes_` samples run together (kernels/spd_lanes.hpp).
  void step_rows(std::span<const index_t> samples, std::span<const index_t> pos, T* xa, const T* fa) {
    for (std::size_t k0 = 0; k0 < samples.size(); k0 += std::size_t(lanes_)) {
      const index_t nb = std::min<index_t>(lanes_, index_t(samples.size() - k0));
      index_t nmax = 1;
      for (index_t l = 0; l < nb; ++l) {
        const index_t c = count_[std::size_t(samples[k0 + std::size_t(l)])];
        lane_[l] = {.slot = (c - 1) % m_, .n = std::min(c, m_)};
        nmax = std::max(nmax, lane_[l].n);
      }
      if (nmax == 2) solve_pairs(samples.subspan(k0, std::size_t(nb)));
      else if (nmax > 2) solve_lanes(samples.subspan(k0, std::size_t(nb)), nmax);
      for (index_t l = 0; l < nb; ++l) {
        const index_t k = index_t(k0) + l, i = samples[std::size_t(k)], p = pos[std::size_t(k)];
        mix(i, l, xa + p * w_, fa + p * w_, xa + k * w_);
      }
    }
  }

 private:
  T* ring(Tensor<T>& t, index_t i, index_t slot) { return t.data() + (i * m_ + slot) * w_; }
  double* gram(index_t i) { return gram_.data() + i * m_ * m_; }
  struct Lane {
    index_t slot = 0, n = 1;  ///< ring slot of the newest pair, pairs in the ring
    bool ok = false;          ///< α solved and finite
  };
  /// α = K⁻¹1 / (1ᵀK⁻¹1) for the lanes of `samples` with n > 1, K = GGᵀ + λ'I in
  /// double: the lanes' systems padded to nmax with the identity (right-hand side
  /// 0 there, so α is 0 past n), solved together; b_ holds α, lane_[l].ok the outcome.
  void solve_lanes(std::span<const index_t> samples, index_t nmax) {
    const index_t L = lanes_;
    std::fill(A_.begin(), A_.begin() + nmax * nmax * L, 0.0);
    std::fill(b_.begin(), b_.begin() + nmax * L, 0.0);
    for (index_t l = 0; l < L; ++l) {
      const index_t n = l < index_t(samples.size()) ? lane_[l].n : 1;
      const double* K = n > 1 ? gram(samples[std::size_t(l)]) : nullptr;
      const double reg = n > 1 ? lambda_ * K[lane_[l].slot * m_ + lane_[l].slot] : 0.0;
      for (index_t r = 0; r < nmax; ++r) {
        A_[std::size_t((r * nmax + r) * L + l)] = 1;
        if (r >= n || n == 1) continue;
        for (index_t c = 0; c <= r; ++c) A_[std::size_t((r * nmax + c) * L + l)] = K[r * m_ + c];
        A_[std::size_t((r * nmax + r) * L + l)] += reg;
        b_[std::size_t(r * L + l)] = 1;
      }
    }
    kernels::table<T>().spd_solve_lanes(A_.data(), b_.data(), nmax, ok_.data());
    for (index_t l = 0; l < index_t(samples.size()); ++l) lane_[l].ok = lane_[l].n > 1 && ok_[std::size_t(l)] && normalise(l, nmax);
  }
  /// solve_lanes() when no lane holds more than two pairs, in closed form: with
  /// K = [[a, b], [b, c]] + λ'I, K⁻¹1 ∝ (c' − b, a' − b) and α = that / (a' + c' − 2b)
  /// (a' = a + λ', c' = c + λ'); K is positive definite iff a' > 0 and a'c' > b².
  void solve_pairs(std::span<const index_t> samples) {
    for (index_t l = 0; l < index_t(samples.size()); ++l) {
      Lane& ln = lane_[l];
      ln.ok = false;
      if (ln.n < 2) continue;
      const double* K = gram(samples[std::size_t(l)]);
      const double reg = lambda_ * K[ln.slot * m_ + ln.slot];
      const double a = K[0] + reg, b = K[1], c = K[m_ + 1] + reg, sum = a + c - 2 * b;
      if (!(a > 0 && a * c > b * b) || !std::isfinite(sum) || sum == 0) continue;
      b_[std::size_t(l)] = (c - b) / sum;
      b_[std::size_t(lanes_ + l)] = (a - b) / sum;
      ln.ok = true;
    }
  }
  /// α of lane l divided by its sum; false when the sum is zero or not finite.
  bool normalise(index_t l, index_t nmax) {
    double sum = 0;
    for (index_t r = 0; r < nmax; ++r) sum += b_[std::size_t(r * lanes_ + l)];
    if (!std::isfinite(sum) || sum == 0) return false;
    const double inv = 1 / sum;
    for (index_t r = 0; r < nmax; ++r) b_[std::size_t(r * lanes_ + l)] *= inv;
    return true;
  }
  /// out = Σ α_j (f_j − (1−β) g_j) = β Σ α f + (1−β) Σ α x with x_j = f_j − g_j; a
  /// plain mixing step when the ring holds one pair or α failed (then the ring
  /// restarts). out may be x.
  void mix(index_t i, index_t l, const T* x, const T* fx, T* out) {
    const Lane& ln = lane_[l];
    if (!ln.ok) {
      for (index_t d = 0; d < w_; ++d) out[d] = beta_ * fx[d] + (T(1) - beta_) * x[d];
      if (ln.n > 1) restart(i, ln.slot);
      return;
    }
    const T keep = T(1) - beta_;
    const index_t t = keep == T(0) ? ln.n : 2 * ln.n;  // the terms of Σ α f and, for β < 1, of −(1−β) Σ α g
    for (index_t j = 0; j < ln.n; ++j) {
      terms_[std::size_t(j)] = ring(F_, i, j);
      coef_[std::size_t(j)] = T(b_[std::size_t(j * lanes_ + l)]);
      if (t == ln.n) continue;
      terms_[std::size_t(ln.n + j)] = ring(G_, i, j);
      coef_[std::size_t(ln.n + j)] = -keep * coef_[std::size_t(j)];
    }
    kernels::table<T>().weighted_sum(terms_.data(), coef_.data(), std::size_t(t), out, w_);
  }
  /// Keeps only the newest pair of sample i (moved to slot 0).
  void restart(index_t i, index_t slot) {
    if (slot != 0)
      for (Tensor<T>* t : {&F_, &G_}) std::copy(ring(*t, i, slot), ring(*t, i, slot) + w_, ring(*t, i, 0));
    double* K = gram(i);
    K[0] = K[slot * m_ + slot];
    count_[std::size_t(i)] = 1;
  }

  index_t w_ = 0, m_ = 1;
  double lambda_ = 0;
  T beta_ = T(1);
  Tensor<T> F_, G_;  // [samples·m, width]: per sample a ring of m values f(x_j) and residuals g_j
  std::vector<double> gram_;  // [samples][m][m]: per sample G Gᵀ of its ring
  std::vector<index_t> count_;
  static constexpr index_t max_lanes = 16;
  const index_t lanes_ = kernels::table<T>().spd_lanes;  ///< samples per small-solve call
  std::array<Lane, max_lanes> lane_{};
  std::array<std::uint8_t, max_lanes> ok_{};
  std::vector<double> A_, b_;
  std::array<const T*, 2 * max_memory> terms_{};  // the mix's rows and weights
  std::array<T, 2 * max_memory> coef_{};  // lane-interleaved systems and right-hand sides (spd_lanes.hpp)
};

}  // namespace lamina::fpi
