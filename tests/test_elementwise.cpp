#include <catch2/catch.hpp>

#include "lamina/core/sequential.hpp"
#include "lamina/modules/activation.hpp"
#include "lamina/modules/dropout.hpp"
#include "lamina/modules/pooling.hpp"
#include "support/golden.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;

template <class M>
void check_unary_golden(M& m, const golden::Case& c, double tol) {
  using T = typename M::value_type;
  const Tensor<T> x = c.t("x").as<T>(), dy = c.t("dy").as<T>();
  Tensor<T> y(m.output_shape(x.shape())), yi(y.shape());
  m.forward(x.cview(), y.view());
  golden::check_close<T>("y", y.cview(), c.t("y"), tol);
  m.infer(x.cview(), yi.view());
  golden::check_close<T>("y (infer)", yi.cview(), c.t("y"), tol);
  Tensor<T> dx(x.shape(), T(1));
  const Tensor<T> dx0 = Tensor<T>::copy_of(dx.cview());
  m.backward(dy.cview(), dx.view());
  golden::check_added<T>("dx", dx.cview(), dx0, c.t("dx"), tol);
}

TEST_CASE("ReLU, Tanh and GlobalAvgPool match the golden files (double)", "[elementwise][golden]") {
  ReLU<double> relu;
  check_unary_golden(relu, golden::load("core/relu"), 1e-10);
  Tanh<double> tanh_;
  check_unary_golden(tanh_, golden::load("core/tanh"), 1e-10);
  GlobalAvgPool<double> gap;
  check_unary_golden(gap, golden::load("core/gap"), 1e-10);
}

TEST_CASE("Tanh and GlobalAvgPool match the golden files (float)", "[elementwise][golden]") {
  Tanh<float> tanh_;
  check_unary_golden(tanh_, golden::load("core/tanh"), 1e-5);
  GlobalAvgPool<float> gap;
  check_unary_golden(gap, golden::load("core/gap"), 1e-5);
}

TEST_CASE("Element-wise modules pass the gradient check", "[elementwise][gradcheck]") {
  auto x = gradcheck::random_tensor({2, 3, 4, 5}, 23, -2, 2);
  ReLU<double> relu;
  gradcheck::check(relu, x);
  Tanh<double> t;
  gradcheck::check(t, x);
  GlobalAvgPool<double> gap;
  gradcheck::check(gap, x);
  Flatten<double> flat;
  gradcheck::check(flat, x);
  Dropout<double> drop(0.3, 99);
  Tensor<double> y(x.shape());
  drop.forward(x.cview(), y.view());
  drop.freeze_mask(true);
  gradcheck::check(drop, x);
}

TEST_CASE("Dropout keeps the expectation and is the identity in evaluation", "[dropout]") {
  Dropout<double> drop(0.25, 4);
  Tensor<double> x(Shape{100000}, 1.0), y(x.shape());
  drop.forward(x.cview(), y.view());
  double s = 0;
  index_t zeros = 0;
  for (index_t i = 0; i < y.size(); ++i) {
    s += y[i];
    zeros += y[i] == 0;
  }
  CHECK(s / double(y.size()) == Approx(1.0).epsilon(0.01));
  CHECK(double(zeros) / double(y.size()) == Approx(0.25).epsilon(0.03));
  set_training(drop, false);
  drop.forward(x.cview(), y.view());
  index_t changed = 0;
  for (index_t i = 0; i < y.size(); ++i) changed += y[i] != 1.0;
  CHECK(changed == 0);
  CHECK_THROWS_WITH(Dropout<float>(1.0), Catch::Contains("Dropout: p"));
  CHECK_THROWS_AS(Dropout<float>(-0.1), value_error);
}

TEST_CASE("Element-wise modules reject mismatched and empty tensors", "[elementwise][errors]") {
  ReLU<float> relu;
  Tensor<float> x(Shape{2, 3}), y(Shape{3, 2}), e(Shape{0, 3});
  CHECK_THROWS_WITH(relu.forward(x.cview(), y.view()), Catch::Contains("ReLU: y"));
  CHECK_THROWS_AS(relu.forward(e.cview(), e.view()), shape_error);
  Tanh<float> t;
  CHECK_THROWS_AS(t.backward(x.cview(), x.view()), shape_error);
  GlobalAvgPool<float> gap;
  CHECK_THROWS_WITH(gap.output_shape(Shape{2, 3}), Catch::Contains("GlobalAvgPool: x shape"));
  Flatten<float> flat;
  CHECK(flat.output_shape(Shape{2, 3, 4}) == Shape{2, 12});
}
