// FPI layers (spec/fpi_dynalay.md §1–3): solvers on known maps, the golden
// fpi_tanh case, the backward modes against each other and against central
// differences (double, pre-filled gradient buffers), per-sample independence of
// a batch, and the errors of bad hyper-parameters.
#include <catch2/catch.hpp>

#include <Eigen/Dense>
#include <cmath>
#include <set>
#include <vector>

#include "lamina/fpi/solve.hpp"
#include "support/golden.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;
using fpi::Method;

namespace {

// ---- known maps ------------------------------------------------------------------------
// Per sample i an affine map f_i(z) = A z + b_i (row form: z Aᵀ + b_i), solution (I − A)⁻¹ b_i.
struct Affine {
  Eigen::MatrixXd A;
  Eigen::MatrixXd B;  // [N, D]: b_i per row
  void operator()(ConstView<double> z, std::span<const index_t> rows, View<double> out) const {
    for (std::size_t j = 0; j < rows.size(); ++j) {
      const Eigen::Map<const Eigen::VectorXd> zj(z.data() + index_t(j) * A.cols(), A.cols());
      Eigen::Map<Eigen::VectorXd>(out.data() + index_t(j) * A.cols(), A.cols()) = A * zj + B.row(rows[j]).transpose();
    }
  }
  Eigen::MatrixXd solution() const {
    const Eigen::MatrixXd I = Eigen::MatrixXd::Identity(A.rows(), A.cols());
    return (I - A).partialPivLu().solve(B.transpose()).transpose();
  }
};

/// A symmetric D×D matrix with eigenvalues spread evenly over [lo, hi].
Eigen::MatrixXd symmetric_with_spectrum(index_t D, double lo, double hi, std::uint64_t seed) {
  Rng rng(seed);
  Eigen::MatrixXd M(D, D);
  for (index_t i = 0; i < M.size(); ++i) M.data()[i] = rng.normal();
  const Eigen::MatrixXd Q = M.householderQr().householderQ();
  Eigen::VectorXd ev(D);
  for (index_t i = 0; i < D; ++i) ev(i) = lo + (hi - lo) * double(i) / double(D - 1);
  return Q * ev.asDiagonal() * Q.transpose();
}

Affine random_affine(index_t N, index_t D, double lo, double hi, std::uint64_t seed) {
  Rng rng(seed + 1);
  Affine f{symmetric_with_spectrum(D, lo, hi, seed), Eigen::MatrixXd(N, D)};
  for (index_t i = 0; i < f.B.size(); ++i) f.B.data()[i] = rng.uniform(-1, 1);
  return f;
}

fpi::SolveReport solve_affine(const Affine& f, const fpi::SolverOptions& o, Tensor<double>& z) {
  z = Tensor<double>(Shape{index_t(f.B.rows()), index_t(f.B.cols())});
  fpi::Solver<double> s;
  fpi::SolveReport r;
  s.solve(f, z.view(), o, r);
  return r;
}

}  // namespace

TEST_CASE("fpi solvers: Picard, Anderson and Broyden reach the known fixed point of contractions", "[fpi][solver]") {
  const Affine f = random_affine(5, 8, -0.6, 0.6, 1);
  const Eigen::MatrixXd exact = f.solution();
  for (Method m : {Method::picard, Method::anderson, Method::broyden}) {
    for (double tau : {1.0, 0.7}) {
      if (m != Method::picard && tau != 1.0) continue;
      INFO("method " << fpi::name(m) << ", tau " << tau);
      const fpi::SolverOptions o{.method = m, .tol = 1e-10, .max_iter = 200, .tau = tau};
      Tensor<double> z;
      const fpi::SolveReport r = solve_affine(f, o, z);
      REQUIRE(r.size() == 5);
      CHECK(r.all_converged());
      for (const auto& s : r.samples) {
        CHECK(s.residual < 1e-10);
        CHECK(s.iterations >= 2);
        CHECK(s.best == s.iterations);
      }
      double err = 0;
      for (index_t i = 0; i < 5; ++i)
        for (index_t d = 0; d < 8; ++d) err = std::max(err, std::abs(z[i * 8 + d] - exact(i, d)));
      CHECK(err < 1e-8);
      CHECK(r.evaluations == [&] { index_t t = 0; for (auto& s : r.samples) t += s.iterations; return t; }());
    }
  }
}

TEST_CASE("fpi solvers: a map without a fixed point is reported, never silent, and throws when asked",
          "[fpi][solver]") {
  // f(z) = −sign(z) (sign 0 = 1): |f_d(z) + ... | per entry |−sign(z_d) − z_d| ≥ 1, so the relative residual stays ≥ 1.
  auto f = [](ConstView<double> z, std::span<const index_t>, View<double> out) {
    for (index_t i = 0; i < z.size(); ++i) out.data()[i] = z.data()[i] < 0 ? 1.0 : -1.0;
  };
  for (Method m : {Method::picard, Method::anderson, Method::broyden}) {
    INFO("method " << fpi::name(m));
    Tensor<double> z(Shape{3, 4});
    fpi::Solver<double> s;
    fpi::SolveReport r;
    s.solve(f, z.view(), {.method = m, .max_iter = 17}, r);
    CHECK(r.failed() == 3);
    CHECK_FALSE(r.all_converged());
    for (const auto& sr : r.samples) {
      CHECK_FALSE(sr.converged);
      CHECK(sr.iterations == 17);
      CHECK(sr.residual >= 1.0 / 2);
    }
    CHECK_THROWS_WITH(s.solve(f, z.view(), {.method = m, .max_iter = 17, .throw_on_failure = true}, r),
                      Catch::Contains("fpi::Solver: solve: expected relative residual < 0.0001 within 17 iterations") &&
                          Catch::Contains("got 3 of 3 samples not converged"));
    CHECK_THROWS_AS(s.solve(f, z.view(), {.method = m, .max_iter = 17, .throw_on_failure = true}, r),
                    fpi::convergence_error);
  }
}

TEST_CASE("fpi solvers: Anderson and Broyden need far fewer iterations than Picard on an ill-conditioned contraction",
          "[fpi][solver]") {
  // Eigenvalues of A in [0, 0.99]: Picard contracts by 0.99 per step, I − A has condition number 100.
  const Affine f = random_affine(4, 32, 0.0, 0.99, 3);
  std::map<Method, fpi::SolveReport> r;
  for (Method m : {Method::picard, Method::anderson, Method::broyden}) {
    Tensor<double> z;
    r[m] = solve_affine(f, {.method = m, .tol = 1e-6, .max_iter = 3000}, z);
    INFO("method " << fpi::name(m) << ": max iterations " << r[m].max_iterations());
    CHECK(r[m].all_converged());
  }
  CHECK(r[Method::picard].max_iterations() > 500);
  CHECK(r[Method::anderson].max_iterations() * 5 < r[Method::picard].max_iterations());
  CHECK(r[Method::broyden].max_iterations() * 5 < r[Method::picard].max_iterations());
}

