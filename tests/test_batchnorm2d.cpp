#include <catch2/catch.hpp>

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
