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

/// Solves z = f(z) from the given z (f: Vec → Vec); z receives the lowest-residual iterate.
template <class T, class F>
SampleReport solve(F&& f, Vec<T>& z, const SolverOptions& o) {
  const index_t w = z.size();
  SampleReport r;
  Vec<T> x = z;
  std::deque<Vec<T>> X, Fx;                                  // Anderson history, oldest first
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> H;        // Broyden inverse Jacobian
  Vec<T> xprev, gprev;
  index_t updates = 0;
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
    const Vec<T> g = fx - x;
    if (o.method == Method::picard) {
      x = (T(1) - T(o.tau)) * x + T(o.tau) * fx;
    } else if (o.method == Method::anderson) {
      X.push_back(x), Fx.push_back(fx);
      if (index_t(X.size()) > o.m) X.pop_front(), Fx.pop_front();
      const index_t n = index_t(X.size());
      Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> G(w, n), A = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>::Zero(n + 1, n + 1);
      for (index_t j = 0; j < n; ++j) G.col(j) = Fx[std::size_t(j)] - X[std::size_t(j)];
      A.bottomRightCorner(n, n) = G.transpose() * G;
      const T reg = T(o.lambda) * A.bottomRightCorner(n, n).trace() / T(n);
      for (index_t j = 1; j <= n; ++j) A(0, j) = A(j, 0) = T(1), A(j, j) += reg;
      Vec<T> rhs = Vec<T>::Zero(n + 1);
      rhs(0) = T(1);
      const Vec<T> alpha = A.partialPivLu().solve(rhs).tail(n);
      Vec<T> mixed = Vec<T>::Zero(w), plain = Vec<T>::Zero(w);
      for (index_t j = 0; j < n; ++j) mixed += alpha(j) * Fx[std::size_t(j)], plain += alpha(j) * X[std::size_t(j)];
      x = n == 1 ? Vec<T>(T(o.beta) * fx + (T(1) - T(o.beta)) * x) : Vec<T>(T(o.beta) * mixed + (T(1) - T(o.beta)) * plain);
    } else {
      if (it == 1 || updates == o.broyden_memory) H = -Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>::Identity(w, w), updates = 0;
      if (it > 1) {
        const Vec<T> s = x - xprev, y = g - gprev, Hy = H * y;
        const Eigen::Matrix<T, 1, Eigen::Dynamic> sH = s.transpose() * H;
        const T denom = s.dot(Hy);
        if (std::abs(denom) > T(1e-30)) H += (s - Hy) * sH / denom, ++updates;
      }
      xprev = x, gprev = g;
      x = x - H * g;
    }
  }
  return r;
}

}  // namespace lamina::fpi::reference
