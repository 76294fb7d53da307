#include <catch2/catch.hpp>

#include <map>

#include "lamina/models/resnet.hpp"
#include "support/golden.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;

TEMPLATE_TEST_CASE("BasicBlock matches the golden files (training mode)", "[resnet][golden]", float, double) {
  using T = TestType;
  for (const char* name : {"core/basic_block_s1", "core/basic_block_s2"}) {
    const golden::Case c = golden::load(name);
    INFO(name);
    Rng rng(1);
    auto block = make_basic_block<T>(c.i("in_channels"), c.i("out_channels"), c.i("stride"), rng);
    REQUIRE(block.template get<0>().shortcut().is_identity() == (c.i("downsample") == 0));
    // Load every parameter and buffer by its PyTorch state_dict name.
    std::map<std::string, Tensor<T>> grads_before;
    visit_parameters(block, [&](const ParamRef<T>& p) {
      Tensor<T> v = c.t(p.name).template as<T>();
      std::copy(v.data(), v.data() + v.size(), p.value.data());
      if (p.trainable) {
        for (T& g : p.grad.span()) g = T(0.375);
        grads_before.emplace(p.name, Tensor<T>::copy_of(p.grad));
      }
    });
    REQUIRE(grads_before.size() == (c.i("downsample") ? 9u : 6u));
    const Tensor<T> x = c.t("x").template as<T>(), dy = c.t("dy").template as<T>();
    Tensor<T> y(block.output_shape(x.shape()));
    block.forward(x.cview(), y.view());
    golden::check_close<T>("y", y.cview(), c.t("y"), golden::tol<T>());
    Tensor<T> dx(x.shape(), T(1));
    const Tensor<T> dx0 = Tensor<T>::copy_of(dx.cview());
    block.backward(dy.cview(), dx.view());
    golden::check_added<T>("dx", dx.cview(), dx0, c.t("dx"), golden::tol<T>());
    visit_parameters(block, [&](const ParamRef<T>& p) {
      if (p.trainable) golden::check_added<T>("grad." + p.name, p.grad, grads_before.at(p.name), c.t("grad." + p.name), golden::tol<T>());
      else golden::check_close<T>("after." + p.name, p.value, c.t("after." + p.name), golden::tol<T>());
    });
  }
}

TEST_CASE("BasicBlock with projection passes the gradient check", "[resnet][gradcheck]") {
  Rng rng(6);
  auto block = make_basic_block<double>(2, 3, 2, rng);
  auto x = gradcheck::random_tensor({2, 2, 5, 5}, 40);
  gradcheck::check(block, x);
}

TEST_CASE("The E1 baseline ResNet has the spec's size and shapes", "[resnet]") {
  Rng rng(1);
  auto net = make_resnet<float>({}, rng);
  CHECK(net.output_shape(Shape{3, 1, 28, 28}) == Shape{3, 10});
  const index_t n = count_parameters(net);
  INFO("parameters " << n);
  CHECK(n > 170000);
  CHECK(n < 180000);  // spec/experiments.md: 175k
  std::vector<std::string> names;
  visit_parameters(net, [&](const ParamRef<float>& p) { names.push_back(p.name); });
  CHECK(std::find(names.begin(), names.end(), "layer2.0.downsample.0.weight") != names.end());
  CHECK(std::find(names.begin(), names.end(), "layer1.1.conv2.weight") != names.end());
  CHECK(std::find(names.begin(), names.end(), "fc.bias") != names.end());
  CHECK_THROWS_WITH(make_resnet<float>({1, {16, 32, 64}, 0, 10}, rng), Catch::Contains("blocks_per_stage"));
}

TEST_CASE("A tiny ResNet passes the gradient check end to end", "[resnet][gradcheck]") {
  Rng rng(3);
  auto net = make_resnet<double>({1, {2, 3, 4}, 1, 3}, rng);
  auto x = gradcheck::random_tensor({2, 1, 6, 6}, 41);
  gradcheck::check(net, x);
}
