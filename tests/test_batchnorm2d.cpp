#include <catch2/catch.hpp>

#include "lamina/modules/activation.hpp"
#include "lamina/modules/batchnorm2d.hpp"
#include "support/golden.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;

namespace {
template <class T>
void check_backward(BatchNorm2d<T>& bn, const golden::Case& c, double tol) {
  const Tensor<T> dy = c.t("dy").as<T>();
  Tensor<T> dx(dy.shape(), T(0.75));
  const Tensor<T> dx0 = Tensor<T>::copy_of(dx.cview());
  bn.gamma();
  Tensor<T> g0(Shape{bn.channels()}, T(-2)), b0(Shape{bn.channels()}, T(3));
  std::vector<Tensor<T>> before;
  visit_parameters(bn, [&](const ParamRef<T>& p) {
    if (!p.trainable) return;
    for (T& v : p.grad.span()) v = T(-1.5);
    before.push_back(Tensor<T>::copy_of(p.grad));
  });
  bn.backward(dy.cview(), dx.view());
  golden::check_added<T>("dx", dx.cview(), dx0, c.t("dx"), tol);
  std::size_t k = 0;
  visit_parameters(bn, [&](const ParamRef<T>& p) {
    if (p.trainable) golden::check_added<T>(p.name, p.grad, before[k++], c.t(p.name == "weight" ? "dgamma" : "dbeta"), tol);
  });
}
}  // namespace

TEMPLATE_TEST_CASE("BatchNorm2d training mode matches the golden files", "[batchnorm][golden]", float, double) {
  using T = TestType;
  for (const char* name : {"core/batchnorm2d_train", "core/batchnorm2d_train_tiny"}) {
    const golden::Case c = golden::load(name);
    INFO(name);
    BatchNorm2d<T> bn(c.i("num_features"), c.p("eps"), c.p("momentum"));
    bn.gamma().assign(c.t("gamma").as<T>().cview());
    bn.beta().assign(c.t("beta").as<T>().cview());
    bn.running_mean().assign(c.t("running_mean").as<T>().cview());
    bn.running_var().assign(c.t("running_var").as<T>().cview());
    const Tensor<T> x = c.t("x").as<T>();
    Tensor<T> y(x.shape());
    bn.forward(x.cview(), y.view());
    golden::check_close<T>("y", y.cview(), c.t("y"), golden::tol<T>());
    golden::check_close<T>("running_mean", bn.running_mean().cview(), c.t("running_mean_out"), golden::tol<T>());
    golden::check_close<T>("running_var", bn.running_var().cview(), c.t("running_var_out"), golden::tol<T>());
    check_backward(bn, c, golden::tol<T>());
  }
}

TEMPLATE_TEST_CASE("BatchNorm2d evaluation mode matches the golden file", "[batchnorm][golden]", float, double) {
  using T = TestType;
  const golden::Case c = golden::load("core/batchnorm2d_eval");
  BatchNorm2d<T> bn(c.i("num_features"), c.p("eps"));
  bn.gamma().assign(c.t("gamma").as<T>().cview());
  bn.beta().assign(c.t("beta").as<T>().cview());
  bn.running_mean().assign(c.t("running_mean").as<T>().cview());
  bn.running_var().assign(c.t("running_var").as<T>().cview());
  const Tensor<T> x = c.t("x").as<T>();
  Tensor<T> y(x.shape()), y2(x.shape());
  bn.infer(x.cview(), y2.view());
  golden::check_close<T>("y (infer)", y2.cview(), c.t("y"), golden::tol<T>());
  set_training(bn, false);
  bn.forward(x.cview(), y.view());
  golden::check_close<T>("y", y.cview(), c.t("y"), golden::tol<T>());
  golden::check_close<T>("running_mean unchanged", bn.running_mean().cview(), c.t("running_mean"), golden::tol<T>() * 1e-2);
  check_backward(bn, c, golden::tol<T>());
}

TEST_CASE("BatchNorm2d gradient check, training and evaluation", "[batchnorm][gradcheck]") {
  for (bool train : {true, false}) {
    INFO("training " << train);
    BatchNorm2d<double> bn(3);
    Rng rng(2);
    for (double& g : bn.gamma().span()) g = rng.uniform(0.5, 1.5);
    for (double& b : bn.beta().span()) b = rng.uniform(-0.5, 0.5);
    for (double& v : bn.running_var().span()) v = rng.uniform(0.5, 2);
    set_training(bn, train);
    auto x = gradcheck::random_tensor({2, 3, 3, 4}, 19, -2, 3);
    gradcheck::check(bn, x);
  }
}

TEST_CASE("BatchNorm2d rejects bad arguments", "[batchnorm][errors]") {
  CHECK_THROWS_WITH(BatchNorm2d<float>(0), Catch::Contains("BatchNorm2d: num_features"));
  CHECK_THROWS_AS(BatchNorm2d<float>(3, 0.0), value_error);
  CHECK_THROWS_AS(BatchNorm2d<float>(3, 1e-5, 1.5), value_error);
  BatchNorm2d<float> bn(3);
  Tensor<float> x(Shape{1, 3, 1, 1}), y(Shape{1, 3, 1, 1});
  CHECK_THROWS_WITH(bn.forward(x.cview(), y.view()), Catch::Contains("values per channel"));
  Tensor<float> x4(Shape{2, 4, 2, 2}), y4(Shape{2, 4, 2, 2});
  CHECK_THROWS_AS(bn.forward(x4.cview(), y4.view()), shape_error);
  CHECK_THROWS_AS(bn.backward(x4.cview(), y4.view()), shape_error);
}

// ---- One-pass statistics, fused ReLU and residual add (kernels/batchnorm.hpp) ----


namespace {
namespace kr = lamina::kernels::ref;

template <class T>
Tensor<T> random_as(Shape s, std::uint64_t seed, double lo, double hi) {
  const Tensor<double> d = gradcheck::random_tensor(s, seed, lo, hi);
  Tensor<T> t(s);
  for (index_t i = 0; i < t.size(); ++i) t[i] = T(d[i]);
  return t;
}
template <class T>
void require_close(ConstView<T> a, const std::vector<T>& b, double tol, const char* what) {
  INFO(what);
  for (index_t i = 0; i < a.size(); ++i)
    REQUIRE(std::abs(double(a.data()[i]) - double(b[std::size_t(i)])) <= tol * (1 + std::abs(double(b[std::size_t(i)]))));
}

/// BatchNorm2d (relu, residual or not, training or not) against the double
/// two-pass reference: y, running statistics, dx, dr, dγ, dβ (pre-filled).
template <class T>
void check_against_reference(Shape s, bool relu, bool residual, bool training, double tol) {
  const index_t B = s[0], C = s[1], HW = s[2] * s[3];
  BatchNorm2d<T> bn(C, {.eps = 1e-5, .momentum = 0.3, .relu = relu});
  Rng rng(5);
  for (T& g : bn.gamma().span()) g = T(rng.uniform(0.5, 1.5));
  for (T& b : bn.beta().span()) b = T(rng.uniform(-0.5, 0.5));
  for (T& v : bn.running_var().span()) v = T(rng.uniform(0.5, 2));
  for (T& m : bn.running_mean().span()) m = T(rng.uniform(-1, 1));
  set_training(bn, training);
  const Tensor<T> x = random_as<T>(s, 1, -2, 3), r = random_as<T>(s, 2, -1, 1), dy = random_as<T>(s, 3, -1, 1);
  const auto Cn = static_cast<std::size_t>(C);
  std::vector<double> mean(Cn), var(Cn);
  if (training) kr::bn_moments(x.data(), B, C, HW, mean.data(), var.data());
  else
    for (index_t c = 0; c < C; ++c) mean[std::size_t(c)] = double(bn.running_mean()[c]), var[std::size_t(c)] = double(bn.running_var()[c]);
  std::vector<T> rm(bn.running_mean().data(), bn.running_mean().data() + C), rv(bn.running_var().data(), bn.running_var().data() + C);
  for (index_t c = 0; c < C && training; ++c) {
    rm[std::size_t(c)] = T(0.7 * double(rm[std::size_t(c)]) + 0.3 * mean[std::size_t(c)]);
    rv[std::size_t(c)] = T(0.7 * double(rv[std::size_t(c)]) + 0.3 * var[std::size_t(c)] * double(B * HW) / double(B * HW - 1));
  }
  const kr::BnShape d{B, C, HW, 1e-5};
  std::vector<T> y_ref(std::size_t(x.size()));
  kr::bn_forward(x.data(), residual ? r.data() : nullptr, y_ref.data(), d, mean.data(), var.data(), bn.gamma().data(), bn.beta().data(), relu);
  Tensor<T> y(s), dx(s, T(0.25)), dr(s, T(-0.5));
  typename BatchNorm2d<T>::Cache cache;
  if (residual) bn.forward(x.cview(), r.cview(), y.view(), cache);
  else bn.forward(x.cview(), y.view(), cache);
  require_close<T>(y.cview(), y_ref, tol, "y");
  require_close<T>(bn.running_mean().cview(), rm, tol, "running_mean");
  require_close<T>(bn.running_var().cview(), rv, tol, "running_var");
  std::vector<T> dx_ref(std::size_t(x.size()), T(0.25)), dr_ref(std::size_t(x.size()), T(-0.5)), dg(std::size_t(C), T(1)), db(std::size_t(C), T(-1));
  visit_parameters(bn, [&](const ParamRef<T>& p) {
    if (p.trainable) std::fill(p.grad.data(), p.grad.data() + C, p.name == "weight" ? T(1) : T(-1));
  });
  kr::bn_backward_full(x.data(), relu ? y_ref.data() : nullptr, dy.data(), dx_ref.data(), residual ? dr_ref.data() : nullptr,
                       dg.data(), db.data(), d, mean.data(), var.data(), bn.gamma().data(), training);
  if (residual) bn.backward(cache, dy.cview(), dx.view(), dr.view());
  else bn.backward(cache, dy.cview(), dx.view());
  require_close<T>(dx.cview(), dx_ref, tol * 10, "dx");
  require_close<T>(dr.cview(), dr_ref, tol, "dr");
  visit_parameters(bn, [&](const ParamRef<T>& p) {
    if (p.trainable) require_close<T>(ConstView<T>(p.grad), p.name == "weight" ? dg : db, tol * double(B * HW), p.name.c_str());
  });
}
}  // namespace

TEMPLATE_TEST_CASE("BatchNorm2d equals the two-pass double reference on every plane length, with each fusion",
                   "[batchnorm][reference]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-11;
  for (index_t B : {1, 2, 5})
    for (index_t C : {1, 3})
      for (index_t HW = 1; HW <= 67; ++HW) {
        if (B * HW < 2) continue;
        INFO("B " << B << " C " << C << " HW " << HW);
        for (int f = 0; f < 6; ++f) check_against_reference<T>(Shape{B, C, 1, HW}, f % 2 == 1, f / 2 % 2 == 1, f < 4, tol);
      }
}

TEST_CASE("one-pass statistics in float stay exact for a large mean/std ratio and a constant channel", "[batchnorm][accuracy]") {
  // 1000 + N(0, 1) (mean/std 1000; a naive Σx² − (Σx)²/n in float loses every digit of the variance).
  const Shape s{8, 3, 14, 14};
  Tensor<float> x(s);
  Rng rng(11);
  for (index_t i = 0; i < x.size(); ++i) x[i] = float(1000 + rng.normal(0, 1));
  for (index_t b = 0; b < 8; ++b)  // channel 2 constant: variance 0
    for (index_t i = 0; i < 196; ++i) x[(b * 3 + 2) * 196 + i] = 1000.5f;
  BatchNorm2d<float> bn(3, {.momentum = 1.0});
  bn.beta().fill(0.25f);
  Tensor<float> y(s);
  bn.forward(x.cview(), y.view());
  std::vector<double> mean(3), var(3);
  kr::bn_moments(x.data(), 8, 3, 196, mean.data(), var.data());
  const double n = 8 * 196;
  for (int c = 0; c < 2; ++c) {
    INFO("channel " << c);
    CHECK(double(bn.running_mean()[c]) == Approx(mean[std::size_t(c)]).margin(1e-4));  // ≤ 1 ulp of 1000
    CHECK(double(bn.running_var()[c]) == Approx(var[std::size_t(c)] * n / (n - 1)).epsilon(1e-5));
  }
  CHECK(bn.running_mean()[2] == 1000.5f);
  CHECK(bn.running_var()[2] == 0.0f);
  for (index_t b = 0; b < 8; ++b) CHECK(y[(b * 3 + 2) * 196 + 17] == 0.25f);  // x̂ = 0 exactly: y = β
  std::vector<float> y_ref(std::size_t(x.size()));
  kr::bn_forward(x.data(), static_cast<const float*>(nullptr), y_ref.data(), {8, 3, 196, 1e-5}, mean.data(), var.data(),
                 bn.gamma().data(), bn.beta().data(), false);
  require_close<float>(y.cview(), y_ref, 2e-4, "y");  // x − mean: an ulp of 1000 (6e-5) over σ = 1
}

TEST_CASE("BatchNorm2d gives NaN statistics for a channel with NaN or Inf, and leaves the others", "[batchnorm][adversarial]") {
  for (float v : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    Tensor<float> x = random_as<float>({2, 2, 3, 3}, 4, -1, 1), y(Shape{2, 2, 3, 3});
    x[9 + 4] = v;  // channel 1
    BatchNorm2d<float> bn(2);
    bn.forward(x.cview(), y.view());
    for (index_t b = 0; b < 2; ++b)
      for (index_t i = 0; i < 9; ++i) {
        CHECK(std::isfinite(y[(b * 2) * 9 + i]));
        CHECK(std::isnan(y[(b * 2 + 1) * 9 + i]));
      }
    CHECK(std::isnan(bn.running_mean()[1]));
    CHECK(std::isfinite(bn.running_var()[0]));
  }
}

namespace {
/// relu(bn(x) + r) with r a parameter (its gradient is dr), for the gradient check.
struct BnAddRelu {
  using value_type = double;
  struct Cache {
    BatchNorm2d<double>::Cache bn;
  };
  BatchNorm2d<double> bn;
  Tensor<double> r, dr;
  Shape output_shape(const Shape& s) const { return bn.output_shape(s); }
  void forward(ConstView<double> x, View<double> y, Cache& c, Pass p = {}) { bn.forward(x, r.cview(), y, c.bn, p); }
  void infer(ConstView<double> x, View<double> y) { bn.infer(x, r.cview(), y); }
  void backward(const Cache& c, ConstView<double> dy, View<double> dx, Grad g = {}) { bn.backward(c.bn, dy, dx, dr.view(), g); }
  void forward(ConstView<double> x, View<double> y) { forward(x, y, cache); }
  void backward(ConstView<double> dy, View<double> dx, Grad g = {}) { backward(cache, dy, dx, g); }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    bn.visit(f, prefix);
    f(ParamRef<double>{prefix + "r", r.view(), dr.view(), false, true});
  }
  Cache cache;
};

/// x with every value of a channel in ±{1, 2, 3, 4, 5, 6}·0.1 (a permutation
/// per channel): mean 0, so x̂ = ±k·0.1/σ is never within 0.1/σ of 0 and
/// central differences never cross a ReLU kink; r stays within ±0.03/σ.
Tensor<double> kink_free(Shape s, std::uint64_t seed) {
  Tensor<double> x(s);
  Rng rng(seed);
  const index_t C = s[1], HW = s[2] * s[3];
  for (index_t c = 0; c < C; ++c) {
    std::vector<double> v;
    for (index_t i = 0; i < s[0] * HW; ++i) v.push_back(0.1 * double(i / 2 % 6 + 1) * (i % 2 ? 1 : -1));
    for (std::size_t i = v.size() - 1; i > 0; --i) std::swap(v[i], v[std::size_t(rng.uniform(0, double(i + 1))) % (i + 1)]);
    for (index_t b = 0; b < s[0]; ++b)
      for (index_t i = 0; i < HW; ++i) x[(b * C + c) * HW + i] = v[std::size_t(b * HW + i)];
  }
  return x;
}
}  // namespace

TEST_CASE("BatchNorm2d with fused ReLU, and with fused residual add + ReLU, passes the gradient check", "[batchnorm][gradcheck]") {
  const Shape s{2, 3, 2, 3};  // 12 values per channel: each of ±0.1..±0.6 once
  for (bool train : {true, false}) {
    INFO("training " << train);
    BatchNorm2d<double> bn(3, {.relu = true});
    set_training(bn, train);
    bn.running_var().fill(0.04);  // evaluation: x̂ = x/0.2, away from 0 as in training
    auto x = kink_free(s, 3);
    gradcheck::check(bn, x);
    BnAddRelu m{BatchNorm2d<double>(3, {.relu = true}), gradcheck::random_tensor(s, 4, -0.03, 0.03), Tensor<double>(s), {}};
    set_training(m.bn, train);
    m.bn.running_var().fill(0.04);
    auto x2 = kink_free(s, 5);
    gradcheck::check(m, x2);
  }
}

TEMPLATE_TEST_CASE("fused BatchNorm2d equals the composition BN → (+ r) → ReLU forward, backward and infer",
                   "[batchnorm][compose]", float, double) {
  using T = TestType;
  const Shape s{3, 4, 5, 7};
  const Tensor<T> x = random_as<T>(s, 6, -2, 2), r = random_as<T>(s, 7, -1, 1), dy = random_as<T>(s, 8, -1, 1);
  for (bool residual : {false, true}) {
    INFO("residual " << residual);
    BatchNorm2d<T> fused(4, {.relu = true}), plain(4);
    ReLU<T> relu;
    Tensor<T> yf(s), t(s), yp(s), dxf(s, T(0.5)), dxp(s, T(0.5)), drf(s, T(0.25)), drp(s, T(0.25)), dt(s);
    typename BatchNorm2d<T>::Cache cf, cp;
    typename ReLU<T>::Cache cr;
    residual ? fused.forward(x.cview(), r.cview(), yf.view(), cf) : fused.forward(x.cview(), yf.view(), cf);
    plain.forward(x.cview(), t.view(), cp);
    if (residual) axpy(t.data(), r.data(), t.size());
    relu.forward(t.cview(), yp.view(), cr);
    for (index_t i = 0; i < x.size(); ++i) REQUIRE(yf[i] == Approx(yp[i]).margin(1e-6));
    residual ? fused.backward(cf, dy.cview(), dxf.view(), drf.view()) : fused.backward(cf, dy.cview(), dxf.view());
    relu.backward(cr, dy.cview(), dt.view());
    plain.backward(cp, dt.cview(), dxp.view());
    if (residual) axpy(drp.data(), dt.data(), dt.size());
    for (index_t i = 0; i < x.size(); ++i) {
      REQUIRE(dxf[i] == Approx(dxp[i]).margin(1e-5));
      REQUIRE(drf[i] == Approx(drp[i]).margin(1e-6));
    }
    for (index_t c = 0; c < 4; ++c) {
      CHECK(fused.running_mean()[c] == Approx(plain.running_mean()[c]).margin(1e-6));
      CHECK(fused.running_var()[c] == Approx(plain.running_var()[c]).margin(1e-6));
    }
    residual ? fused.infer(x.cview(), r.cview(), yf.view()) : fused.infer(x.cview(), yf.view());
    plain.infer(x.cview(), t.view());
    if (residual) axpy(t.data(), r.data(), t.size());
    relu.infer(t.cview(), yp.view());
    for (index_t i = 0; i < x.size(); ++i) REQUIRE(yf[i] == Approx(yp[i]).margin(1e-6));
  }
}

TEST_CASE("BatchNorm2d's residual forms check their arguments", "[batchnorm][errors]") {
  BatchNorm2d<float> bn(2, {.relu = true});
  Tensor<float> x(Shape{2, 2, 2, 2}, 1.0f), r(Shape{2, 2, 2, 3}), y(Shape{2, 2, 2, 2}), dx(Shape{2, 2, 2, 2});
  BatchNorm2d<float>::Cache c;
  CHECK_THROWS_WITH(bn.forward(x.cview(), r.cview(), y.view(), c), Catch::Contains("BatchNorm2d: r"));
  bn.forward(x.cview(), y.view(), c);
  CHECK_THROWS_WITH(bn.backward(c, y.cview(), dx.view(), dx.view()), Catch::Contains("forward(x, r, y)"));
}
