#include <catch2/catch.hpp>

#include "lamina/modules/conv2d.hpp"
#include "support/golden.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;

TEMPLATE_TEST_CASE("Conv2d matches the golden files", "[conv2d][golden]", float, double) {
  using T = TestType;
  for (const char* name : {"core/conv2d_k3_s1_p1", "core/conv2d_k3_s2_p1", "core/conv2d_k1_s2_p0",
                           "core/conv2d_k5_s1_p2_bias", "core/conv2d_rect_k3_s2_p1_bias"}) {
    const golden::Case c = golden::load(name);
    INFO(name);
    Rng rng(1);
    const bool bias = c.i("bias") != 0;
    Conv2d<T> conv({c.i("in_channels"), c.i("out_channels"), c.i("kernel_h"), c.i("kernel_w"), c.i("stride"),
                    c.i("padding"), bias},
                   rng);
    conv.weight().assign(c.t("W").as<T>().cview());
    if (bias) conv.bias().assign(c.t("b").as<T>().cview());
    const Tensor<T> x = c.t("x").as<T>(), dy = c.t("dy").as<T>();
    Tensor<T> y(conv.output_shape(x.shape()));
    conv.forward(x.cview(), y.view());
    golden::check_close<T>("y", y.cview(), c.t("y"), golden::tol<T>());
    Tensor<T> y2(y.shape());
    conv.infer(x.cview(), y2.view());
    golden::check_close<T>("y (infer)", y2.cview(), c.t("y"), golden::tol<T>());

    Tensor<T> dx(x.shape(), T(-0.5));
    const Tensor<T> dx0 = Tensor<T>::copy_of(dx.cview());
    std::vector<Tensor<T>> before;
    visit_parameters(conv, [&](const ParamRef<T>& p) {
      for (T& v : p.grad.span()) v = T(0.125);
      before.push_back(Tensor<T>::copy_of(p.grad));
    });
    conv.backward(dy.cview(), dx.view());
    golden::check_added<T>("dx", dx.cview(), dx0, c.t("dx"), golden::tol<T>());
    std::size_t k = 0;
    visit_parameters(conv, [&](const ParamRef<T>& p) {
      golden::check_added<T>(p.name, p.grad, before[k++], c.t(p.name == "weight" ? "dW" : "db"), golden::tol<T>());
    });
  }
}

TEST_CASE("Conv2d gradient check over kernels, strides, paddings", "[conv2d][gradcheck]") {
  struct Cfg {
    index_t cin, cout, kh, kw, s, p;
    bool bias;
    index_t H, W;
  };
  for (const Cfg& g : {Cfg{2, 3, 3, 3, 1, 1, false, 5, 6}, Cfg{2, 3, 3, 3, 2, 1, true, 7, 5},
                       Cfg{3, 2, 1, 1, 1, 0, true, 4, 4}, Cfg{3, 2, 1, 1, 2, 0, false, 5, 5},
                       Cfg{1, 2, 2, 3, 1, 2, true, 3, 4}, Cfg{2, 2, 5, 5, 3, 1, false, 6, 7}}) {
    INFO("cin " << g.cin << " cout " << g.cout << " k " << g.kh << "x" << g.kw << " s " << g.s << " p " << g.p);
    Rng rng(5);
    Conv2d<double> conv({g.cin, g.cout, g.kh, g.kw, g.s, g.p, g.bias}, rng);
    auto x = gradcheck::random_tensor({2, g.cin, g.H, g.W}, 17);
    gradcheck::check(conv, x);
  }
}

TEST_CASE("Conv2d rejects bad arguments", "[conv2d][errors]") {
  Rng rng(1);
  CHECK_THROWS_WITH(Conv2d<float>({3, 4, 3, 3, 0, 1, false}, rng), Catch::Contains("Conv2d: stride"));
  CHECK_THROWS_AS(Conv2d<float>({0, 4, 3, 3, 1, 1, false}, rng), value_error);
  CHECK_THROWS_AS(Conv2d<float>({3, 4, 3, 3, 1, -1, false}, rng), value_error);
  Conv2d<float> conv({3, 4, 3, 3, 1, 0, false}, rng);
  CHECK_THROWS_WITH(conv.output_shape(Shape{2, 2, 5, 5}), Catch::Contains("expected [B > 0, 3, H, W]"));
  CHECK_THROWS_AS(conv.output_shape(Shape{2, 3, 2, 5}), shape_error);  // smaller than the kernel
  CHECK_THROWS_AS(conv.output_shape(Shape{2, 3, 5}), shape_error);
  Tensor<float> x(Shape{1, 3, 5, 5}), y(Shape{1, 4, 5, 5});
  CHECK_THROWS_WITH(conv.forward(x.cview(), y.view()), Catch::Contains("y") && Catch::Contains("[1, 4, 3, 3]"));
}
