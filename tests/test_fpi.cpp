// FPI layers (spec/fpi_dynalay.md §1–3): solvers on known maps, the golden
// fpi_tanh case, the backward modes against each other and against central
// differences (double, pre-filled gradient buffers), per-sample independence of
// a batch, and the errors of bad hyper-parameters.
#include <catch2/catch.hpp>

#include <Eigen/Dense>
#include <cmath>
#include <set>
#include <vector>

#include "lamina/fpi/fpi.hpp"
#include "lamina/fpi/reference.hpp"
#include "lamina/core/sequential.hpp"
#include "lamina/modules/conv2d.hpp"
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

TEST_CASE("fpi solvers: the batched steppers reproduce the plain single-sample reference", "[fpi][solver][reference]") {
  // f_i(z) = tanh(A z + b_i) with ‖A‖ = 0.95: nonlinear, slow for Picard. 19 samples with b_i
  // scaled by 0.05 … 0.95: they stop at different iterations, so the active rows change, and
  // Anderson's small solves run in several lane blocks, the last one partly filled.
  const index_t N = 19;
  Affine lin = random_affine(N, 12, -0.95, 0.95, 11);
  for (index_t i = 0; i < N; ++i) lin.B.row(i) *= 0.05 * double(i + 1);
  auto f = [&](ConstView<double> z, std::span<const index_t> rows, View<double> out) {
    lin(z, rows, out);
    for (index_t i = 0; i < out.size(); ++i) out.data()[i] = std::tanh(out.data()[i]);
  };
  for (Method m : {Method::picard, Method::anderson, Method::broyden}) {
    for (index_t mem : {2, 3, 5, 12})  // 2: the closed-form pairs; 12: past the fixed-size small solves
    for (double lambda : {1e-4, 0.3}) {  // 0.3: the regulariser's scale changes the iterates
      INFO("method " << fpi::name(m) << ", memory " << mem << ", lambda " << lambda);
      const fpi::SolverOptions o{.method = m, .tol = 1e-9, .max_iter = 300, .tau = 0.8, .m = mem, .lambda = lambda,
                                 .beta = 0.9, .broyden_memory = mem + 4};
      Tensor<double> z(Shape{N, 12});
      fpi::Solver<double> s;
      fpi::SolveReport r;
      s.solve(f, z.view(), o, r);
      for (index_t i = 0; i < N; ++i) {
        fpi::reference::Vec<double> zi = fpi::reference::Vec<double>::Zero(12);
        auto fi = [&](const fpi::reference::Vec<double>& v) {
          fpi::reference::Vec<double> out = lin.A * v + lin.B.row(i).transpose();
          return fpi::reference::Vec<double>(out.array().tanh());
        };
        const fpi::SampleReport ref = fpi::reference::solve<double>(fi, zi, o);
        const fpi::SampleReport& got = r.samples[std::size_t(i)];
        CHECK(got.converged == ref.converged);  // also where the reference does not converge (m = 3, λ = 0.3)
        CHECK(got.iterations == ref.iterations);
        CHECK(got.best == ref.best);
        for (index_t d = 0; d < 12; ++d) CHECK(z[i * 12 + d] == Approx(zi(d)).margin(1e-8));
      }
    }
  }
}

TEST_CASE("fpi solvers: solving the batch in blocks changes the map's calls, not the iterates or the reports",
          "[fpi][solver][block]") {
  // The 19 samples of the reference test stop at different iterations; blocks of 1, 4 and 7
  // leave partial last blocks. Every call's rows must lie in one block, ascending.
  const index_t N = 19, D = 12;
  Affine lin = random_affine(N, D, -0.95, 0.95, 11);
  for (index_t i = 0; i < N; ++i) lin.B.row(i) *= 0.05 * double(i + 1);
  index_t block = 0;
  bool rows_ok = true;
  auto f = [&](ConstView<double> z, std::span<const index_t> rows, View<double> out) {
    const index_t b = block == 0 ? 0 : rows.front() / block;
    for (std::size_t j = 0; j < rows.size(); ++j)
      rows_ok = rows_ok && (j == 0 || rows[j] > rows[j - 1]) && (block == 0 || rows[j] / block == b);
    lin(z, rows, out);
    for (index_t i = 0; i < out.size(); ++i) out.data()[i] = std::tanh(out.data()[i]);
  };
  for (Method m : {Method::picard, Method::anderson, Method::broyden}) {
    fpi::SolverOptions o{.method = m, .tol = 1e-9, .max_iter = 300, .tau = 0.8, .m = 3, .beta = 0.9, .block = 0};
    Tensor<double> whole(Shape{N, D}), z(Shape{N, D});
    fpi::Solver<double> s;
    fpi::SolveReport r0, r;
    s.solve(f, whole.view(), o, r0);
    for (index_t b : {1, 4, 7, 19, 64}) {
      INFO("method " << fpi::name(m) << ", block " << b);
      block = o.block = b;
      z.zero();
      s.solve(f, z.view(), o, r);
      CHECK(rows_ok);
      CHECK(r.evaluations == r0.evaluations);
      for (index_t i = 0; i < N; ++i) {
        const auto &a = r.samples[std::size_t(i)], &e = r0.samples[std::size_t(i)];
        CHECK(a.iterations == e.iterations);
        CHECK(a.best == e.best);
        CHECK(a.converged == e.converged);
        CHECK(a.residual == e.residual);
      }
      CHECK(std::equal(z.data(), z.data() + z.size(), whole.data()));
    }
  }
}

namespace {

using Layer = FpiLayer<fpi::TanhCell<double>>;
static_assert(check_module<Layer>() && Module<FpiLayer<fpi::ReluCell<float>>>);
static_assert(Cell<fpi::TanhCell<double>> && Module<SpectralLinear<float>>);

template <class T>
void set_from(Tensor<T>& dst, const golden::Record& r) {
  REQUIRE(dst.shape() == r.lshape());
  dst.assign(r.as<T>().cview());
}

/// The golden layer: W_in, b_in, W from the file (W already spectrally scaled).
template <class T>
FpiLayer<fpi::TanhCell<T>> golden_layer(const golden::Case& g, fpi::Options o) {
  Rng rng(1);
  auto layer = make_tanh_fpi<T>(g.i("Din"), g.i("D"), rng, o);
  set_from(layer.injection().weight(), g.t("W_in"));
  Tensor<T>& b = layer.injection().bias();
  REQUIRE(b.size() == index_t(g.t("b_in").v.size()));
  for (index_t i = 0; i < b.size(); ++i) b[i] = T(g.t("b_in").v[std::size_t(i)]);
  set_from(layer.cell().f().weight(), g.t("W"));
  layer.cell().f().reset_estimate();
  return layer;
}

std::vector<std::vector<double>> gradients(auto& m) {
  std::vector<std::vector<double>> out;
  visit_parameters(m, [&](const auto& p) {
    if (p.trainable) out.emplace_back(p.grad.data(), p.grad.data() + p.grad.size());
  });
  return out;
}
void prefill(auto& m, std::uint64_t seed) {
  Rng rng(seed);
  visit_parameters(m, [&](const auto& p) {
    if (p.trainable)
      for (auto& v : p.grad.span()) v = decltype(+v)(rng.uniform(-1, 1));
  });
}

}  // namespace

TEST_CASE("fpi golden fpi_tanh: fixed point and exact implicit gradient, every solver, double and float",
          "[fpi][golden]") {
  const golden::Case g = golden::load("fpi_tanh");
  const index_t N = g.i("N");
  for (Method m : {Method::picard, Method::anderson, Method::broyden}) {
    INFO("forward and adjoint solver " << fpi::name(m));
    const fpi::SolverOptions fw{.method = m, .tol = 1e-14, .max_iter = 200};
    auto layer = golden_layer<double>(g, {.forward = fw, .backward = {.solver = {.method = m, .tol = 1e-14, .max_iter = 200}}});
    CHECK(layer.cell().f().sigma() <= g.p("spectral_norm") * (1 + 1e-12));
    Tensor<double> x = g.t("x").as<double>(), y(layer.output_shape(x.shape()));
    Layer::Cache c;
    layer.forward(x.cview(), y.view(), c);
    CHECK(layer.cell().f().scale() == 1.0);  // σ = 0.5 < κ = 0.9: W is used as given
    golden::check_close<double>("u", c.u.cview(), g.t("u"), 1e-12);
    golden::check_close<double>("z", y.cview(), g.t("z"), 1e-12);
    REQUIRE(c.report.size() == N);
    CHECK(c.report.all_converged());

    prefill(layer, 3);
    const auto before = gradients(layer);
    Tensor<double> dx = gradcheck::random_tensor(x.shape(), 4);
    const Tensor<double> dx0 = Tensor<double>::copy_of(dx.cview());
    const Tensor<double> dy = g.t("g").as<double>();
    layer.backward(c, dy.cview(), dx.view());
    CHECK(layer.last_backward_report().all_converged());
    const auto after = gradients(layer);  // inject.weight, inject.bias, cell.f.weight
    REQUIRE(after.size() == 3);
    auto added = [&](std::size_t k, const Shape& s) {
      Tensor<double> t(s);
      for (index_t i = 0; i < t.size(); ++i) t[i] = after[k][std::size_t(i)] - before[k][std::size_t(i)];
      return t;
    };
    golden::check_close<double>("dW_in", added(0, g.t("dW_in").lshape()).cview(), g.t("dW_in"), 1e-10);
    golden::check_close<double>("db_in", added(1, g.t("db_in").lshape()).cview(), g.t("db_in"), 1e-10);
    golden::check_close<double>("dW", added(2, g.t("dW").lshape()).cview(), g.t("dW"), 1e-10);
    golden::check_added<double>("dx", dx.cview(), dx0, g.t("dx"), 1e-10);
  }
  // float: the default solver at float-sized tolerances.
  auto lf = golden_layer<float>(g, {.forward = {.tol = 1e-6f}, .backward = {.solver = {.tol = 1e-6f}}});
  Tensor<float> xf = g.t("x").as<float>(), yf(lf.output_shape(xf.shape())), dxf(xf.shape());
  FpiLayer<fpi::TanhCell<float>>::Cache cf;
  lf.forward(xf.cview(), yf.view(), cf);
  golden::check_close<float>("z (float)", yf.cview(), g.t("z"), 5e-6);
  const Tensor<float> dyf = g.t("g").as<float>();
  lf.backward(cf, dyf.cview(), dxf.view());
  golden::check_close<float>("dx (float)", dxf.cview(), g.t("dx"), 5e-5);
}

namespace {

/// A tanh FPI layer whose raw W has spectral norm `sigma` (so with sigma > κ the normalisation acts).
Layer contraction_layer(index_t Din, index_t D, double sigma, fpi::Options o, std::uint64_t seed = 21) {
  Rng rng(seed);
  Layer layer = make_tanh_fpi<double>(Din, D, rng, o);
  Tensor<double>& W = layer.cell().f().weight();
  const Eigen::Map<RowMatrix<double>> Wm(W.data(), D, D);
  const double s = Eigen::JacobiSVD<Eigen::MatrixXd>(Wm).singularValues()(0);
  for (index_t i = 0; i < W.size(); ++i) W[i] *= sigma / s;
  layer.cell().f().reset_estimate();
  return layer;
}

struct Grads {
  std::vector<std::vector<double>> params;
  Tensor<double> dx;
};
/// Gradients of L = <y, dy> from zero buffers.
Grads layer_grads(Layer& layer, const Tensor<double>& x, const Tensor<double>& dy, Grad g = {}) {
  Layer::Cache c;
  Tensor<double> y(dy.shape());
  layer.forward(x.cview(), y.view(), c);
  zero_grad(layer);
  Grads out{{}, Tensor<double>(x.shape())};
  layer.backward(c, dy.cview(), out.dx.view(), g);
  out.params = gradients(layer);
  return out;
}
double max_diff(const Grads& a, const Grads& b) {
  double d = 0;
  for (index_t i = 0; i < a.dx.size(); ++i) d = std::max(d, std::abs(a.dx[i] - b.dx[i]));
  for (std::size_t k = 0; k < a.params.size(); ++k)
    for (std::size_t i = 0; i < a.params[k].size(); ++i) d = std::max(d, std::abs(a.params[k][i] - b.params[k][i]));
  return d;
}
double max_abs(const Grads& a) {
  Grads zero{a.params, Tensor<double>(a.dx.shape())};
  for (auto& p : zero.params) std::fill(p.begin(), p.end(), 0.0);
  return max_diff(a, zero);
}
fpi::Options with_mode(fpi::BackwardMode mode, Method m = Method::picard, double tol = 1e-10) {
  return {.forward = {.method = m, .tol = tol, .max_iter = 400},
          .backward = {.mode = mode, .solver = {.method = m, .tol = tol, .max_iter = 400}}};
}

}  // namespace

TEST_CASE("fpi backward: the implicit gradient matches the unrolled one to 1e-5 on a contraction", "[fpi][backward]") {
  const auto x = gradcheck::random_tensor({4, 5}, 31), dy = gradcheck::random_tensor({4, 6}, 32);
  for (double sigma : {0.6, 1.5}) {  // 1.5: through the spectral normalisation (‖Ŵ‖ = κ = 0.9)
    INFO("spectral norm of raw W " << sigma);
    Layer unrolled = contraction_layer(5, 6, sigma, with_mode(fpi::BackwardMode::unrolled, Method::picard, 1e-8));
    const Grads ref = layer_grads(unrolled, x, dy);
    for (Method m : {Method::picard, Method::anderson, Method::broyden}) {
      INFO("implicit with solver " << fpi::name(m));
      Layer implicit = contraction_layer(5, 6, sigma, with_mode(fpi::BackwardMode::implicit, m, 1e-8));
      const Grads got = layer_grads(implicit, x, dy);
      CHECK(implicit.last_backward_report().all_converged());
      CHECK(max_abs(ref) > 0.1);
      CHECK(max_diff(got, ref) < 1e-5 * std::max(1.0, max_abs(ref)));
    }
  }
}

TEST_CASE("fpi backward: phantom, one-step and input-only products", "[fpi][backward]") {
  const auto x = gradcheck::random_tensor({3, 4}, 41), dy = gradcheck::random_tensor({3, 5}, 42);
  auto make = [](fpi::BackwardMode mode, index_t k = 5, double tau = 1.0) {
    fpi::Options o = with_mode(mode, Method::anderson, 1e-12);
    o.backward.k = k, o.backward.tau = tau;
    return contraction_layer(4, 5, 1.2, o, 43);
  };
  Layer implicit = make(fpi::BackwardMode::implicit), one = make(fpi::BackwardMode::one_step);
  const Grads gi = layer_grads(implicit, x, dy), g1 = layer_grads(one, x, dy);

  // One-step: the cell's backward at z* with w = g, by hand.
  {
    Layer::Cache c;
    Tensor<double> y(dy.shape()), fz(dy.shape()), du(dy.shape()), dx(x.shape());
    one.forward(x.cview(), y.view(), c);
    zero_grad(one);
    fpi::TanhCell<double>::Cache cc;
    one.cell().forward(c.z.cview(), c.u.cview(), fz.view(), cc);
    one.cell().backward(cc, dy.cview(), View<double>{}, du.view(), {.input = false});
    one.injection().backward(c.in, du.cview(), dx.view());
    const Grads manual{gradients(one), Tensor<double>::copy_of(dx.cview())};
    CHECK(max_diff(g1, manual) < 1e-14);
  }
  // Phantom with k = 1, τ = 1 is the one-step gradient; with many steps it tends to the implicit one.
  Layer p1 = make(fpi::BackwardMode::phantom, 1, 1.0);
  CHECK(max_diff(layer_grads(p1, x, dy), g1) < 1e-14);
  Layer p5 = make(fpi::BackwardMode::phantom, 5, 0.8), p80 = make(fpi::BackwardMode::phantom, 80, 0.8);
  const double e5 = max_diff(layer_grads(p5, x, dy), gi), e80 = max_diff(layer_grads(p80, x, dy), gi);
  INFO("phantom error k = 5: " << e5 << ", k = 80: " << e80 << ", one-step: " << max_diff(g1, gi));
  CHECK(e80 < 1e-9);
  CHECK(e5 > 1e3 * e80);
  CHECK(max_diff(g1, gi) > 1e-3);  // one-step is an approximation, not the exact gradient

  // An application is differentiated with the options it ran with, whatever they are now.
  {
    Layer p3 = make(fpi::BackwardMode::phantom, 3, 0.8);
    const Grads want = layer_grads(p3, x, dy);
    Layer::Cache c;
    Tensor<double> y(dy.shape()), dx(x.shape());
    p3.forward(x.cview(), y.view(), c);
    p3.set_options(with_mode(fpi::BackwardMode::implicit));
    zero_grad(p3);
    p3.backward(c, dy.cview(), dx.view());
    CHECK(max_diff(Grads{gradients(p3), Tensor<double>::copy_of(dx.cview())}, want) == 0.0);
  }

  // {.params = false}: the parameter gradients stay bit for bit, dx equals the full backward's.
  for (Layer* l : {&implicit, &one, &p5}) {
    Layer::Cache c;
    Tensor<double> y(dy.shape());
    l->forward(x.cview(), y.view(), c);
    prefill(*l, 44);
    const auto before = gradients(*l);
    Tensor<double> dx_only = gradcheck::random_tensor(x.shape(), 45), dx_full = Tensor<double>::copy_of(dx_only.cview());
    l->backward(c, dy.cview(), dx_only.view(), {.params = false});
    CHECK(gradients(*l) == before);
    l->backward(c, dy.cview(), dx_full.view());
    CHECK(gradients(*l) != before);
    for (index_t i = 0; i < dx_only.size(); ++i) CHECK(dx_only[i] == Approx(dx_full[i]).margin(1e-15));
  }
}

namespace {
// z ↦ f(z, u) as a one-input Module of [z | u] (columns), so the gradient check covers dz, du and θ.
template <class C>
class PairOf {
 public:
  using value_type = double;
  using T = double;
  struct Cache {
    typename C::Cache cell;
    Tensor<T> z, u;
  };
  PairOf(C c, index_t D) : cell_(std::move(c)), D_(D) {}
  Shape output_shape(const Shape& s) const { return Shape{s[0], D_}; }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    split(x, c.z, c.u);
    cell_.forward(c.z.cview(), c.u.cview(), y, c.cell, p);
  }
  void infer(ConstView<T> x, View<T> y) {
    Cache c;
    forward(x, y, c);
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    Tensor<T> dz(c.z.shape()), du(c.u.shape());
    cell_.backward(c.cell, dy, dz.view(), du.view(), g);
    for (index_t i = 0; i < dz.dim(0); ++i)
      for (index_t d = 0; d < D_; ++d) dx(i, d) += dz[i * D_ + d], dx(i, D_ + d) += du[i * D_ + d];
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx) { backward(cache_, dy, dx); }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    cell_.visit(f, prefix);
  }
  C cell_;

 private:
  void split(ConstView<T> x, Tensor<T>& z, Tensor<T>& u) const {
    const index_t N = x.dim(0);
    z.resize(Shape{N, D_}), u.resize(Shape{N, D_});
    for (index_t i = 0; i < N; ++i)
      for (index_t d = 0; d < D_; ++d) z[i * D_ + d] = x(i, d), u[i * D_ + d] = x(i, D_ + d);
  }
  index_t D_;
  Cache cache_;
};
}  // namespace

TEST_CASE("fpi gradient checks: spectral linear map, the tanh and ReLU cells, the layer in exact modes",
          "[fpi][gradcheck]") {
  Rng rng(51);
  // SpectralLinear with σ > κ (the normalisation's own gradient term acts); evaluation mode keeps u, v fixed.
  SpectralLinear<double> lin(5, 4, rng);
  for (double& w : lin.weight().span()) w *= 4;
  lin.reset_estimate();
  REQUIRE(lin.scale() > 1.5);
  lin.set_training(false);
  auto x = gradcheck::random_tensor({3, 5}, 52);
  gradcheck::check(lin, x);

  auto tanh_cell = fpi::make_tanh_cell<double>(4, rng);
  for (double& w : tanh_cell.f().weight().span()) w *= 4;
  tanh_cell.f().reset_estimate();
  REQUIRE(tanh_cell.f().scale() > 1.5);
  set_training(tanh_cell, false);
  PairOf tp(std::move(tanh_cell), 4);
  auto zu = gradcheck::random_tensor({3, 8}, 53);
  gradcheck::check(tp, zu);
  PairOf rp(fpi::make_relu_cell<double>(4, rng), 4);
  set_training(rp.cell_, false);
  gradcheck::check(rp, zu);

  // The layer: implicit (solved to 1e-13) and unrolled (a fixed 40 steps: tol never met, so
  // the map is smooth) with the spectral normalisation acting.
  const auto xl = gradcheck::random_tensor({3, 4}, 54);
  Layer implicit = contraction_layer(4, 5, 2.0, with_mode(fpi::BackwardMode::implicit, Method::anderson, 1e-13));
  REQUIRE(implicit.cell().f().scale() > 2.0);
  set_training(implicit, false);
  auto xi = Tensor<double>::copy_of(xl.cview());
  gradcheck::check(implicit, xi);
  fpi::Options fixed = with_mode(fpi::BackwardMode::unrolled, Method::picard);
  fixed.forward.tol = 1e-300, fixed.forward.max_iter = 40, fixed.forward.tau = 0.9;
  Layer unrolled = contraction_layer(4, 5, 2.0, fixed);
  set_training(unrolled, false);
  auto xu = Tensor<double>::copy_of(xl.cview());
  gradcheck::check(unrolled, xu);
  CHECK(unrolled.cache().report.failed() == 3);  // reported, not hidden
}

TEST_CASE("fpi batch: samples that converge at different iterations give what each gives alone", "[fpi][batch]") {
  // Row scales from 0.01 to 3: small injections converge in few iterations, large ones take more.
  const index_t N = 6, Din = 4, D = 5;
  auto x = gradcheck::random_tensor({N, Din}, 61);
  const double scale[N] = {0.01, 3.0, 0.3, 1.0, 0.05, 2.0};
  for (index_t i = 0; i < N; ++i)
    for (index_t d = 0; d < Din; ++d) x[i * Din + d] *= scale[i];
  const auto dy = gradcheck::random_tensor({N, D}, 62);
  for (Method m : {Method::picard, Method::anderson, Method::broyden}) {
    for (auto mode : {fpi::BackwardMode::implicit, fpi::BackwardMode::phantom, fpi::BackwardMode::unrolled}) {
      if (mode == fpi::BackwardMode::unrolled && m != Method::picard) continue;
      INFO("solver " << fpi::name(m) << ", backward mode " << int(mode));
      fpi::Options o{.forward = {.method = m, .tol = 1e-6}, .backward = {.mode = mode, .solver = {.method = m}}};
      Layer layer = contraction_layer(Din, D, 1.3, o, 63);
      set_training(layer, false);
      Layer::Cache c;
      Tensor<double> y(Shape{N, D});
      layer.forward(x.cview(), y.view(), c);
      std::set<index_t> its;
      for (const auto& s : c.report.samples) its.insert(s.iterations);
      CHECK(its.size() >= 2);
      const Grads batch = layer_grads(layer, x, dy);
      Grads sum{batch.params, Tensor<double>(x.shape())};
      for (auto& p : sum.params) std::fill(p.begin(), p.end(), 0.0);
      for (index_t i = 0; i < N; ++i) {
        const auto xi = Tensor<double>::copy_of(x.cview().slice(i, 1)), dyi = Tensor<double>::copy_of(dy.cview().slice(i, 1));
        Layer::Cache ci;
        Tensor<double> yi(Shape{1, D});
        layer.forward(xi.cview(), yi.view(), ci);
        CHECK(ci.report.samples[0].iterations == c.report.samples[std::size_t(i)].iterations);
        CHECK(ci.report.samples[0].converged == c.report.samples[std::size_t(i)].converged);
        for (index_t d = 0; d < D; ++d) CHECK(yi[d] == Approx(y[i * D + d]).margin(1e-13));
        const Grads gi = layer_grads(layer, xi, dyi);
        for (index_t d = 0; d < Din; ++d) sum.dx[i * Din + d] = gi.dx[d];
        for (std::size_t k = 0; k < sum.params.size(); ++k)
          for (std::size_t j = 0; j < sum.params[k].size(); ++j) sum.params[k][j] += gi.params[k][j];
      }
      CHECK(max_diff(batch, sum) < 1e-12);
    }
  }
}

TEST_CASE("fpi cost: converged samples stop costing work, forward and adjoint", "[fpi][batch]") {
  const index_t N = 8, D = 6;
  auto x = gradcheck::random_tensor({N, 3}, 71);
  for (index_t i = 0; i < N; ++i)
    for (index_t d = 0; d < 3; ++d) x[i * 3 + d] *= i < 6 ? 8.0 : 0.01;  // six saturated (fast) samples, two slow ones
  Layer layer = contraction_layer(3, D, 0.95, with_mode(fpi::BackwardMode::implicit, Method::picard, 1e-8), 72);
  Layer::Cache c;
  Tensor<double> y(Shape{N, D}), dx(x.shape());
  layer.forward(x.cview(), y.view(), c);
  index_t total = 0;
  for (const auto& s : c.report.samples) total += s.iterations;
  CHECK(c.report.evaluations == total);
  INFO("iterations: fast " << c.report.samples[0].iterations << ", slow " << c.report.samples[7].iterations);
  CHECK(c.report.samples[0].iterations + 5 < c.report.samples[7].iterations);
  CHECK(c.report.evaluations < N * c.report.max_iterations());
  const auto dy = gradcheck::random_tensor({N, D}, 73);
  layer.backward(c, dy.cview(), dx.view());
  const auto& adj = layer.last_backward_report();
  CHECK(adj.all_converged());
  // Products run on at most twice the active rows, plus re-applications of at most one batch.
  CHECK(layer.last_adjoint().product_rows() <= 2 * adj.evaluations);
  CHECK(layer.last_adjoint().product_rows() < N * adj.max_iterations());
  CHECK(layer.last_adjoint().reapplied_rows() <= N);
}

TEST_CASE("fpi spectral normalisation: the power iteration kept across steps finds σ, Ŵ has norm κ", "[fpi][spectral]") {
  Rng rng(81);
  SpectralLinear<double> lin(6, 6, rng, {.kappa = 0.9, .init_iterations = 1});
  for (double& w : lin.weight().span()) w *= 5;
  const Eigen::Map<const RowMatrix<double>> W(lin.weight().data(), 6, 6);
  const double sigma = Eigen::JacobiSVD<Eigen::MatrixXd>(W).singularValues()(0);
  auto norm_eff = [&] {
    const Eigen::Map<const RowMatrix<double>> E(lin.effective_weight().data(), 6, 6);
    return Eigen::JacobiSVD<Eigen::MatrixXd>(E).singularValues()(0);
  };
  lin.begin_step(true);
  lin.end_step();
  const double first = std::abs(lin.sigma() - sigma);
  for (int step = 0; step < 200; ++step) lin.begin_step(true), lin.end_step();
  CHECK(std::abs(lin.sigma() - sigma) < 1e-9 * sigma);
  CHECK(std::abs(lin.sigma() - sigma) < first);
  CHECK(norm_eff() == Approx(0.9).epsilon(1e-9));
  // Evaluation mode: no update; recomputing a forward does not update either.
  const std::vector<double> u0(lin.effective_weight().data(), lin.effective_weight().data() + 36);
  lin.set_training(false);
  lin.begin_step(true), lin.end_step();
  CHECK(std::vector<double>(lin.effective_weight().data(), lin.effective_weight().data() + 36) == u0);
  // Off, or a small W: Ŵ = W.
  SpectralLinear<double> off(4, 4, rng, {.enabled = false});
  for (double& w : off.weight().span()) w *= 10;
  off.begin_step(true), off.end_step();
  CHECK(off.scale() == 1.0);
  for (index_t i = 0; i < 16; ++i) CHECK(off.effective_weight()[i] == off.weight()[i]);
  // In the layer, a training forward runs one power iteration; infer and recomputation run none.
  Layer layer = contraction_layer(3, 4, 3.0, {}, 82);
  auto u_of = [&] {
    std::vector<double> u;
    visit_parameters(layer, [&](const ParamRef<double>& p) {
      if (p.name == "cell.f.spectral_u") u.assign(p.value.data(), p.value.data() + p.value.size());
    });
    REQUIRE(u.size() == 4);
    return u;
  };
  auto x = gradcheck::random_tensor({2, 3}, 83);
  Tensor<double> y(Shape{2, 4}), yi(Shape{2, 4});
  for (double& w : layer.cell().f().weight().span()) w *= 1.01;  // the kept u is no longer exact
  Layer::Cache c;
  const auto a = u_of();
  layer.infer(x.cview(), yi.view());
  CHECK(u_of() == a);
  layer.forward(x.cview(), y.view(), c);
  const auto b = u_of();
  CHECK(b != a);
  layer.forward(x.cview(), y.view(), c, {.recompute = true});
  CHECK(u_of() == b);
  layer.infer(x.cview(), yi.view());
  for (index_t i = 0; i < y.size(); ++i) CHECK(yi[i] == Approx(y[i]).margin(1e-12));
  CHECK(layer.last_report().all_converged());
}

TEST_CASE("fpi errors: bad hyper-parameters and shapes name the module, the argument, expected and actual",
          "[fpi][errors]") {
  Rng rng(91);
  auto make = [&](fpi::Options o) { return make_tanh_fpi<double>(3, 4, rng, o); };
  CHECK_THROWS_WITH(make({.forward = {.m = 0}}), "lamina::FpiLayer: forward.m: expected >= 1, got 0");
  CHECK_THROWS_WITH(make({.forward = {.m = 33}}), "lamina::FpiLayer: forward.m: expected <= 32, got 33");
  CHECK_THROWS_WITH(make({.forward = {.tol = 0}}), "lamina::FpiLayer: forward.tol: expected > 0, got 0");
  CHECK_THROWS_WITH(make({.forward = {.tol = -1e-3}}), "lamina::FpiLayer: forward.tol: expected > 0, got -0.001");
  CHECK_THROWS_WITH(make({.forward = {.max_iter = 0}}), "lamina::FpiLayer: forward.max_iter: expected >= 1, got 0");
  CHECK_THROWS_WITH(make({.forward = {.tau = 1.5}}), "lamina::FpiLayer: forward.tau: expected in (0, 1], got 1.5");
  CHECK_THROWS_WITH(make({.forward = {.beta = 0}}), "lamina::FpiLayer: forward.beta: expected in (0, 1], got 0");
  CHECK_THROWS_WITH(make({.forward = {.lambda = -1}}), "lamina::FpiLayer: forward.lambda: expected >= 0, got -1");
  CHECK_THROWS_WITH(make({.backward = {.solver = {.tol = 0}}}),
                    "lamina::FpiLayer: backward.solver.tol: expected > 0, got 0");
  CHECK_THROWS_WITH(make({.backward = {.k = 0}}), "lamina::FpiLayer: backward.k: expected >= 1, got 0");
  CHECK_THROWS_WITH(make({.backward = {.mode = fpi::BackwardMode::unrolled}}),
                    Catch::Contains("FpiLayer: forward.method with backward.mode unrolled: expected picard") &&
                        Catch::Contains("got anderson"));
  CHECK_THROWS_AS(make({.forward = {.m = 0}}), value_error);
  CHECK_THROWS_WITH(make_tanh_fpi<double>(3, 4, rng, {}, {.kappa = 0}), "lamina::SpectralLinear: kappa: expected > 0, got 0");
  CHECK_THROWS_WITH(make_tanh_fpi<double>(3, 4, rng, {}, {.kappa = -0.5}),
                    "lamina::SpectralLinear: kappa: expected > 0, got -0.5");
  auto layer = make({});
  CHECK_THROWS_WITH(layer.set_options({.forward = {.max_iter = -2}}),
                    "lamina::FpiLayer: forward.max_iter: expected >= 1, got -2");
  fpi::Solver<double> s;
  fpi::SolveReport r;
  Tensor<double> z(Shape{2, 3});
  auto id = [](ConstView<double> a, std::span<const index_t>, View<double> b) { std::copy(a.data(), a.data() + a.size(), b.data()); };
  CHECK_THROWS_WITH(s.solve(id, z.view(), {.m = 0}, r), "lamina::fpi::Solver: solver.m: expected >= 1, got 0");
  CHECK_THROWS_WITH(s.solve(id, z.view(), {.block = -1}, r),
                    "lamina::fpi::Solver: solver.block: expected >= 0 (0: the whole batch), got -1");
  // Shapes and order of calls.
  Tensor<double> x(Shape{2, 5}), y(Shape{2, 4});
  CHECK_THROWS_AS(layer.forward(x.cview(), y.view()), shape_error);
  Layer::Cache fresh;
  Tensor<double> dy(Shape{2, 4}), dx(Shape{2, 3});
  CHECK_THROWS_WITH(layer.backward(fresh, dy.cview(), dx.view()),
                    Catch::Contains("FpiLayer: backward(): expected a preceding forward()"));
  // A forward that throws (non-convergence when asked to throw) leaves the cache unusable.
  auto strict = make({.forward = {.tol = 1e-300, .max_iter = 3, .throw_on_failure = true}});
  Tensor<double> x3 = gradcheck::random_tensor({2, 3}, 92);
  Layer::Cache c;
  CHECK_THROWS_AS(strict.forward(x3.cview(), y.view(), c), fpi::convergence_error);
  CHECK_THROWS_WITH(strict.forward(x3.cview(), y.view(), c), Catch::Contains("lamina::FpiLayer: solve: expected relative residual"));
  CHECK_THROWS_WITH(strict.backward(c, dy.cview(), dx.view()), Catch::Contains("expected a preceding forward()"));
}

TEST_CASE("fpi any cell: a convolutional cell tanh(conv(z) + u) on image states, injected by a convolution",
          "[fpi][gradcheck]") {
  using ConvCell = Injected<Conv2d<double>, Tanh<double>>;
  static_assert(Cell<ConvCell>);
  Rng rng(101);
  Conv2d<double> inject({.in_channels = 2, .out_channels = 3, .padding = 1, .bias = true}, rng);
  Conv2d<double> conv({.in_channels = 3, .out_channels = 3, .padding = 1}, rng);
  visit_parameters(conv, [](const ParamRef<double>& p) {
    for (double& w : p.value.span()) w *= 0.5;  // a contraction: ‖conv‖ < 1
  });
  for (auto mode : {fpi::BackwardMode::implicit, fpi::BackwardMode::unrolled}) {
    INFO("backward mode " << int(mode));
    fpi::Options o = with_mode(mode, mode == fpi::BackwardMode::unrolled ? Method::picard : Method::anderson, 1e-13);
    if (mode == fpi::BackwardMode::unrolled) o.forward.tol = 1e-300, o.forward.max_iter = 25;
    FpiLayer<ConvCell, Conv2d<double>> layer(inject, ConvCell(conv, Tanh<double>{}), o);
    auto x = gradcheck::random_tensor({2, 2, 4, 4}, 102);
    REQUIRE(layer.output_shape(x.shape()) == Shape{2, 3, 4, 4});
    gradcheck::check(layer, x);
    if (mode == fpi::BackwardMode::implicit) {
      CHECK(layer.cache().report.all_converged());
      CHECK(layer.cache().report.max_iterations() < 60);
    }
  }
}

TEST_CASE("fpi any module: a one-input module M becomes the cell M(z) + u through Injected<M, Identity>",
          "[fpi][gradcheck]") {
  using Mlp = Sequential<Linear<double>, Tanh<double>, Linear<double>>;
  using MlpCell = Injected<Mlp, Identity<double>>;
  static_assert(Cell<MlpCell>);
  Rng rng(111);
  Mlp mlp(Linear<double>(4, 7, rng), Tanh<double>{}, Linear<double>(7, 4, rng));
  visit_parameters(mlp, [](const ParamRef<double>& p) {
    for (double& w : p.value.span()) w *= 0.6;  // Lipschitz constant below 1
  });
  FpiLayer<MlpCell> layer(Linear<double>(3, 4, rng), MlpCell(mlp, Identity<double>{}),
                          with_mode(fpi::BackwardMode::implicit, Method::broyden, 1e-13));
  auto x = gradcheck::random_tensor({5, 3}, 112);
  gradcheck::check(layer, x);
  CHECK(layer.cache().report.all_converged());
  // The returned state is the fixed point of z = mlp(z) + u.
  Tensor<double> y(Shape{5, 4}), u(Shape{5, 4}), fz(Shape{5, 4});
  layer.infer(x.cview(), y.view());
  layer.injection().infer(x.cview(), u.view());
  layer.cell().infer(y.cview(), u.cview(), fz.view());
  for (index_t i = 0; i < y.size(); ++i) CHECK(fz[i] == Approx(y[i]).margin(1e-11));
}
