#include <catch2/catch.hpp>

#include "lamina/core/random.hpp"
#include "lamina/modules/softmax_cross_entropy.hpp"
#include "support/golden.hpp"

using namespace lamina;

TEMPLATE_TEST_CASE("SoftmaxCrossEntropy matches the golden files", "[loss][golden]", float, double) {
  using T = TestType;
  for (const char* name : {"core/softmax_cross_entropy", "core/softmax_cross_entropy_smooth",
                           "core/softmax_cross_entropy_extreme"}) {
    const golden::Case c = golden::load(name);
    INFO(name);
    SoftmaxCrossEntropy<T> ce(c.p("label_smoothing"));
    const Tensor<T> z = c.t("logits").as<T>();
    REQUIRE(z.dim(1) == c.i("num_classes"));
    std::vector<std::int32_t> labels;
    for (double v : c.t("labels").v) labels.push_back(static_cast<std::int32_t>(v));
    const T loss = ce.forward(z.cview(), labels);
    const double ref = c.t("loss").v[0];
    CHECK(std::abs(double(loss) - ref) <= golden::tol<T>() * std::max(1.0, std::abs(ref)));
    golden::check_close<T>("probs", ce.probabilities().cview(), c.t("probs"), golden::tol<T>());
    Tensor<T> dz(z.shape(), T(2));
    const Tensor<T> dz0 = Tensor<T>::copy_of(dz.cview());
    ce.backward(dz.view());
    golden::check_added<T>("dlogits", dz.cview(), dz0, c.t("dlogits"), golden::tol<T>());
  }
}

TEST_CASE("SoftmaxCrossEntropy gradient check with label smoothing", "[loss][gradcheck]") {
  Rng rng(8);
  Tensor<double> z(Shape{4, 5});
  for (double& v : z.span()) v = rng.uniform(-3, 3);
  std::vector<std::int32_t> labels{0, 4, 2, 2};
  SoftmaxCrossEntropy<double> ce(0.1);
  ce.forward(z.cview(), labels);
  Tensor<double> g(z.shape(), 0.5);
  ce.backward(g.view());
  double worst = 0;
  for (index_t i = 0; i < z.size(); ++i) {
    const double keep = z[i];
    z[i] = keep + 1e-6;
    const double lp = ce.forward(z.cview(), labels);
    z[i] = keep - 1e-6;
    const double lm = ce.forward(z.cview(), labels);
    z[i] = keep;
    const double num = (lp - lm) / 2e-6;
    worst = std::max(worst, std::abs((g[i] - 0.5) - num) / std::max(1e-3, std::abs(num)));
  }
  CHECK(worst < 1e-6);
}

TEST_CASE("SoftmaxCrossEntropy rejects bad labels and shapes", "[loss][errors]") {
  SoftmaxCrossEntropy<float> ce;
  Tensor<float> z(Shape{2, 3});
  std::vector<std::int32_t> bad{0, 3}, shortl{1};
  CHECK_THROWS_WITH(ce.forward(z.cview(), bad), Catch::Contains("labels[1]") && Catch::Contains("in [0, 3)"));
  CHECK_THROWS_AS(ce.forward(z.cview(), shortl), shape_error);
  CHECK_THROWS_AS(SoftmaxCrossEntropy<float>(1.5), value_error);
  Tensor<float> g(Shape{2, 3});
  SoftmaxCrossEntropy<float> fresh;
  CHECK_THROWS_WITH(fresh.backward(g.view()), Catch::Contains("forward"));
}
