#include <catch2/catch.hpp>

#include "lamina/modules/linear.hpp"
#include "support/golden.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;

TEMPLATE_TEST_CASE("Linear matches the golden files", "[linear][golden]", float, double) {
  using T = TestType;
  for (const char* name : {"core/linear", "core/linear_single"}) {
    const golden::Case c = golden::load(name);
    INFO(name);
    Rng rng(1);
    Linear<T> lin(c.i("in_features"), c.i("out_features"), rng);
    lin.weight().assign(c.t("W").as<T>().cview());
    lin.bias().assign(c.t("b").as<T>().cview());
    const Tensor<T> x = c.t("x").as<T>(), dy = c.t("dy").as<T>();
    Tensor<T> y(lin.output_shape(x.shape()));
    lin.forward(x.cview(), y.view());
    golden::check_close<T>("y", y.cview(), c.t("y"), golden::tol<T>());

    // Pre-filled gradient buffers: backward must add.
    Tensor<T> dx(x.shape(), T(0.25));
    const Tensor<T> dx0 = Tensor<T>::copy_of(dx.cview());
    std::vector<Tensor<T>> before;
    visit_parameters(lin, [&](const ParamRef<T>& p) {
      p.grad.span()[0] = T(3);
      for (T& v : p.grad.span()) v = T(0.5);
      before.push_back(Tensor<T>::copy_of(p.grad));
    });
    lin.backward(dy.cview(), dx.view());
    golden::check_added<T>("dx", dx.cview(), dx0, c.t("dx"), golden::tol<T>());
    std::size_t k = 0;
    visit_parameters(lin, [&](const ParamRef<T>& p) {
      golden::check_added<T>(p.name, p.grad, before[k++], c.t(p.name == "weight" ? "dW" : "db"), golden::tol<T>());
    });
  }
}

TEST_CASE("Linear gradient check, with and without bias, rank-3 input", "[linear][gradcheck]") {
  for (bool bias : {true, false}) {
    Rng rng(3);
    Linear<double> lin(5, 4, rng, bias);
    auto x = gradcheck::random_tensor({2, 3, 5}, 11);
    gradcheck::check(lin, x);
  }
}

TEST_CASE("Linear rejects bad arguments with a clear message", "[linear][errors]") {
  Rng rng(1);
  CHECK_THROWS_WITH(Linear<float>(0, 3, rng), Catch::Contains("Linear") && Catch::Contains("in_features"));
  CHECK_THROWS_AS(Linear<float>(3, -1, rng), value_error);
  Linear<float> lin(4, 2, rng);
  Tensor<float> x(Shape{3, 5}), y(Shape{3, 2});
  CHECK_THROWS_WITH(lin.forward(x.cview(), y.view()),
                    Catch::Contains("lamina::Linear: x shape: expected [..., 4]") && Catch::Contains("got [3, 5]"));
  Tensor<float> x2(Shape{3, 4}), ybad(Shape{3, 3});
  CHECK_THROWS_AS(lin.forward(x2.cview(), ybad.view()), shape_error);
  Tensor<float> empty(Shape{0, 4}), yempty(Shape{0, 2});
  CHECK_THROWS_AS(lin.forward(empty.cview(), yempty.view()), shape_error);
  Linear<float> fresh(4, 2, rng);
  Tensor<float> dy(Shape{3, 2}), dx(Shape{3, 4});
  CHECK_THROWS_WITH(fresh.backward(dy.cview(), dx.view()), Catch::Contains("forward"));
}
