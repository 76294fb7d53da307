#pragma once
// Plain single-sample solvers (spec/fpi_dynalay.md §2): the textbook form of the
// three methods, one sample at a time, with a history list for Anderson and a
// dense inverse-Jacobian matrix for Broyden. They define what the batched
// steppers of solve.hpp (ring buffers, low-rank Broyden, per-sample stopping
// inside a batch) must reproduce, and are used by the tests for that. Not for
// production use: the Broyden matrix is w×w.
#include <Eigen/Dense>
#include <cmath>
#include <deque>

#include "lamina/core/eigen.hpp"
#include "lamina/fpi/options.hpp"
#include "lamina/fpi/report.hpp"

namespace lamina::fpi::reference {

template <class T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

/// Anderson: the last m pairs, oldest first; x ← β Σα f + (1−β) Σα x.
template <class T>
struct AndersonHistory {
  std::deque<Vec<T>> X, F;
  Vec<T> next(const Vec<T>& x, const Vec<T>& fx, const SolverOptions& o) {
    X.push_back(x), F.push_back(fx);
    if (index_t(X.size()) > o.m) X.pop_front(), F.pop_front();
    const index_t n = index_t(X.size()), w = x.size();
    if (n == 1) return T(o.beta) * fx + (T(1) - T(o.beta)) * x;
    Mat<T> G(w, n), A = Mat<T>::Zero(n + 1, n + 1);
    for (index_t j = 0; j < n; ++j) G.col(j) = F[std::size_t(j)] - X[std::size_t(j)];
    A.bottomRightCorner(n, n) = G.transpose() * G;
    const T reg = T(o.lambda) * G.col(n - 1).squaredNorm();  // relative to the newest residual
    for (index_t j = 1; j <= n; ++j) A(0, j) = A(j, 0) = T(1), A(j, j) += reg;
    Vec<T> rhs = Vec<T>::Zero(n + 1);
    rhs(0) = T(1);
    const Vec<T> alpha = A.partialPivLu().solve(rhs).tail(n);
    Vec<T> mixed = Vec<T>::Zero(w), plain = Vec<T>::Zero(w);
    for (index_t j = 0; j < n; ++j) mixed += alpha(j) * F[std::size_t(j)], plain += alpha(j) * X[std::size_t(j)];
    return T(o.beta) * mixed + (T(1) - T(o.beta)) * plain;
  }
};

/// Broyden: a dense H ≈ (∂g/∂x)⁻¹ from −I, restarted after broyden_memory updates; x ← x − H g.
template <class T>
struct BroydenState {
  Mat<T> H;
  Vec<T> xprev, gprev;
  index_t updates = 0;
  Vec<T> next(const Vec<T>& x, const Vec<T>& g, const SolverOptions& o) {
    const bool first = H.size() == 0;
    if (first || updates == o.broyden_memory) H = -Mat<T>::Identity(x.size(), x.size()), updates = 0;
    if (!first) {
      const Vec<T> s = x - xprev, y = g - gprev, Hy = H * y;
      const Eigen::Matrix<T, 1, Eigen::Dynamic> sH = s.transpose() * H;
      const T denom = s.dot(Hy);
      if (std::abs(denom) > T(1e-30)) H += (s - Hy) * sH / denom, ++updates;
    }
    xprev = x, gprev = g;
    return x - H * g;
  }
};

/// Solves z = f(z) from the given z (f: Vec → Vec); z receives the lowest-residual iterate.
template <class T, class F>
SampleReport solve(F&& f, Vec<T>& z, const SolverOptions& o) {
  SampleReport r;
  Vec<T> x = z;
  AndersonHistory<T> anderson;
  BroydenState<T> broyden;
  for (index_t it = 1; it <= o.max_iter; ++it) {
    const Vec<T> fx = f(x);
    const double res = double((fx - x).norm()) / (double(fx.norm()) + 1e-9);
    r.iterations = it;
    if (res < r.residual || it == 1) r.residual = res, r.best = it, z = x;
    if (res < o.tol) {
      r.converged = true;
      return r;
    }
    if (!std::isfinite(res)) return r;
    if (o.method == Method::picard) x = (T(1) - T(o.tau)) * x + T(o.tau) * fx;
    if (o.method == Method::anderson) x = anderson.next(x, fx, o);
    if (o.method == Method::broyden) x = broyden.next(x, Vec<T>(fx - x), o);
  }
  return r;
}

}  // namespace lamina::fpi::reference
