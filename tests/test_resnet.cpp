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
    REQUIRE(block.shortcut().is_identity() == (c.i("downsample") == 0));
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

namespace {
/// The block as the generic composites build it (no fusion), for comparison.
template <class T>
using ComposedBlock = Sequential<Residual<Sequential<Conv2d<T>, BatchNorm2d<T>, ReLU<T>, Conv2d<T>, BatchNorm2d<T>>, Shortcut<T>>, ReLU<T>>;
template <class T>
ComposedBlock<T> composed_block(index_t in, index_t out, index_t stride, Rng& rng) {
  Sequential<Conv2d<T>, BatchNorm2d<T>, ReLU<T>, Conv2d<T>, BatchNorm2d<T>> body(
      Conv2d<T>({in, out, 3, 3, stride, 1, false}, rng), BatchNorm2d<T>(out), ReLU<T>{},
      Conv2d<T>({out, out, 3, 3, 1, 1, false}, rng), BatchNorm2d<T>(out));
  body.set_names({"conv1", "bn1", "relu", "conv2", "bn2"});
  Residual<decltype(body), Shortcut<T>> res(std::move(body), Shortcut<T>(in, out, stride, rng));
  res.set_names("", "downsample.");
  ComposedBlock<T> block(std::move(res), ReLU<T>{});
  block.set_names({"", "relu_out"});
  return block;
}
template <class M>
std::map<std::string, std::vector<double>> tensors_of(M& m, bool grads) {
  std::map<std::string, std::vector<double>> out;
  visit_parameters(m, [&](const auto& p) {
    const auto& v = grads ? p.grad : p.value;
    if (!grads || p.trainable) out[p.name].assign(v.data(), v.data() + v.size());
  });
  return out;
}
}  // namespace

TEST_CASE("the fused BasicBlock equals the composition conv-BN-ReLU-conv-BN + shortcut, ReLU", "[resnet][compose]") {
  for (index_t stride : {1, 2}) {
    for (Grad g : {Grad{}, Grad{.params = false}, Grad{.input = false}}) {
      INFO("stride " << stride << " input " << g.input << " params " << g.params);
      Rng r1(9), r2(9);
      auto fused = make_basic_block<double>(3, stride == 1 ? 3 : 4, stride, r1);
      auto plain = composed_block<double>(3, stride == 1 ? 3 : 4, stride, r2);
      // Same draws, same names: the same parameters; gradients pre-filled alike.
      REQUIRE(tensors_of(fused, false) == tensors_of(plain, false));
      auto fill = [](const ParamRef<double>& p) { if (p.trainable) std::fill(p.grad.data(), p.grad.data() + p.grad.size(), 0.125); };
      visit_parameters(fused, fill);
      visit_parameters(plain, fill);
      const auto x = gradcheck::random_tensor({2, 3, 6, 6}, 12), dyr = gradcheck::random_tensor(fused.output_shape(x.shape()), 13);
      Tensor<double> yf(dyr.shape()), yp(dyr.shape()), dxf(x.shape(), 0.5), dxp(x.shape(), 0.5);
      fused.forward(x.cview(), yf.view());
      plain.forward(x.cview(), yp.view());
      for (index_t i = 0; i < yf.size(); ++i) REQUIRE(yf[i] == Approx(yp[i]).margin(1e-12));
      fused.backward(dyr.cview(), g.input ? dxf.view() : View<double>{}, g);
      plain.backward(dyr.cview(), g.input ? dxp.view() : View<double>{}, g);
      for (index_t i = 0; i < dxf.size(); ++i) REQUIRE(dxf[i] == Approx(dxp[i]).margin(1e-12));
      const auto gf = tensors_of(fused, true), gp = tensors_of(plain, true);
      for (const auto& [name, v] : gp)
        for (std::size_t i = 0; i < v.size(); ++i) REQUIRE(gf.at(name)[i] == Approx(v[i]).margin(1e-11));
      const auto after_f = tensors_of(fused, false), after_p = tensors_of(plain, false);  // running statistics
      for (const auto& [name, v] : after_p)
        for (std::size_t i = 0; i < v.size(); ++i) REQUIRE(after_f.at(name)[i] == Approx(v[i]).margin(1e-12));
      set_training(fused, false), set_training(plain, false);
      fused.infer(x.cview(), yf.view());
      plain.infer(x.cview(), yp.view());
      for (index_t i = 0; i < yf.size(); ++i) REQUIRE(yf[i] == Approx(yp[i]).margin(1e-12));
    }
  }
}
