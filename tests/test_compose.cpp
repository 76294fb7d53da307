#include <catch2/catch.hpp>

#include "lamina/core/sequential.hpp"
#include "lamina/core/stage.hpp"
#include "lamina/modules/activation.hpp"
#include "lamina/modules/linear.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;

// A type that is not a Module: the concept says so (a static_assert inside
// Sequential turns this into one readable line per missing member).
struct NotAModule {
  using value_type = double;
  void forward(ConstView<double>, View<double>) {}
};
static_assert(!Module<NotAModule>);
static_assert(Module<Linear<float>> && Module<ReLU<double>>);
static_assert(Module<Sequential<Linear<double>, Tanh<double>>>);
static_assert(Module<Residual<Linear<double>>>);
static_assert(Module<Stage<Residual<Linear<double>>>>);

TEST_CASE("Sequential, Residual and Stage compose and pass the gradient check", "[compose][gradcheck]") {
  Rng rng(4);
  using Block = Residual<Sequential<Linear<double>, Tanh<double>, Linear<double>>>;
  auto make_block = [&] { return Block(Sequential(Linear<double>(6, 5, rng), Tanh<double>{}, Linear<double>(5, 6, rng))); };
  Stage<Block> stage;
  for (int i = 0; i < 3; ++i) stage.push_back(make_block());
  Sequential<Linear<double>, Stage<Block>, Tanh<double>> net(Linear<double>(4, 6, rng), std::move(stage), Tanh<double>{});
  auto x = gradcheck::random_tensor({3, 4}, 31);
  gradcheck::check(net, x);

  std::vector<std::string> names;
  visit_parameters(net, [&](const ParamRef<double>& p) { names.push_back(p.name); });
  REQUIRE(names.size() == 2 + 3 * 4);
  CHECK(names[0] == "0.weight");
  CHECK(names[2] == "1.0.f.0.weight");
  CHECK(names.back() == "1.2.f.2.bias");
  CHECK(count_parameters(net) == (4 * 6 + 6) + 3 * ((6 * 5 + 5) + (5 * 6 + 6)));
}

TEST_CASE("infer() equals forward() and keeps the training cache intact", "[compose]") {
  Rng rng(9);
  Sequential<Linear<double>, ReLU<double>, Linear<double>> net(Linear<double>(3, 8, rng), ReLU<double>{},
                                                                Linear<double>(8, 2, rng));
  auto x = gradcheck::random_tensor({5, 3}, 1), x2 = gradcheck::random_tensor({7, 3}, 2);
  Tensor<double> y(Shape{5, 2}), yi(Shape{5, 2}), y2(Shape{7, 2});
  net.forward(x.cview(), y.view());
  net.infer(x2.cview(), y2.view());  // another batch in between must not disturb backward
  net.infer(x.cview(), yi.view());
  for (index_t i = 0; i < y.size(); ++i) CHECK(yi[i] == Approx(y[i]).epsilon(1e-14));
  Tensor<double> dy(Shape{5, 2}, 1.0), dx(Shape{5, 3}), dx_ref(Shape{5, 3});
  net.backward(dy.cview(), dx.view());
  // Same gradient as a fresh forward/backward.
  zero_grad(net);
  net.forward(x.cview(), y.view());
  net.backward(dy.cview(), dx_ref.view());
  for (index_t i = 0; i < dx.size(); ++i) CHECK(dx[i] == Approx(dx_ref[i]).epsilon(1e-14));
}

TEST_CASE("A tensor feeding two consumers receives the sum of their gradients", "[compose]") {
  // y = a(x) + b(x) written by hand with two modules sharing one input buffer.
  Rng rng(12);
  Linear<double> a(4, 3, rng), b(4, 3, rng);
  auto x = gradcheck::random_tensor({2, 4}, 5);
  Tensor<double> ya(Shape{2, 3}), yb(Shape{2, 3}), dy(Shape{2, 3}, 1.0), dx(Shape{2, 4});
  a.forward(x.cview(), ya.view());
  b.forward(x.cview(), yb.view());
  a.backward(dy.cview(), dx.view());
  b.backward(dy.cview(), dx.view());
  for (index_t n = 0; n < 2; ++n)
    for (index_t i = 0; i < 4; ++i) {
      double expect = 0;
      for (index_t o = 0; o < 3; ++o) expect += a.weight()[i * 3 + o] + b.weight()[i * 3 + o];
      CHECK(dx[n * 4 + i] == Approx(expect));
    }
}

TEST_CASE("A module applied repeatedly to its own output is differentiated by recomputation", "[compose]") {
  // z2 = f(f(z0)); d<z2, g>/dz0 through a single Tanh∘Linear cell, recomputing
  // each step's cache before its backward, as an FPI solver does.
  Rng rng(21);
  Sequential<Linear<double>, Tanh<double>> f(Linear<double>(3, 3, rng), Tanh<double>{});
  auto z0 = gradcheck::random_tensor({2, 3}, 3);
  Tensor<double> z1(Shape{2, 3}), z2(Shape{2, 3}), g(Shape{2, 3}, 1.0), g1(Shape{2, 3}), g0(Shape{2, 3});
  f.forward(z0.cview(), z1.view());
  f.forward(z1.cview(), z2.view());
  f.backward(g.cview(), g1.view());   // cache holds step 2
  f.forward(z0.cview(), z1.view());   // recompute step 1
  f.backward(g1.cview(), g0.view());
  auto L = [&](Tensor<double>& z) {
    Tensor<double> a(Shape{2, 3}), b(Shape{2, 3});
    f.infer(z.cview(), a.view());
    f.infer(a.cview(), b.view());
    double s = 0;
    for (double v : b.span()) s += v;
    return s;
  };
  for (index_t i = 0; i < z0.size(); ++i) {
    const double keep = z0[i];
    z0[i] = keep + 1e-6;
    const double lp = L(z0);
    z0[i] = keep - 1e-6;
    const double lm = L(z0);
    z0[i] = keep;
    CHECK(g0[i] == Approx((lp - lm) / 2e-6).epsilon(1e-7));
  }
}

TEST_CASE("Per-sample routing runs a module on a row slice of the batch", "[compose]") {
  Rng rng(2);
  Linear<double> lin(3, 2, rng);
  auto x = gradcheck::random_tensor({6, 3}, 8);
  Tensor<double> y_all(Shape{6, 2}), y_part(Shape{2, 2});
  lin.infer(x.cview(), y_all.view());
  lin.infer(x.cview().slice(3, 2), y_part.view());
  for (index_t r = 0; r < 2; ++r)
    for (index_t c = 0; c < 2; ++c) CHECK(y_part[r * 2 + c] == Approx(y_all[(3 + r) * 2 + c]));
}

TEST_CASE("Composites report shape errors with the module name", "[compose][errors]") {
  Rng rng(1);
  Sequential<Linear<double>, Linear<double>> bad(Linear<double>(3, 4, rng), Linear<double>(5, 2, rng));
  CHECK_THROWS_WITH(bad.output_shape(Shape{2, 3}), Catch::Contains("Linear: x shape: expected [..., 5]"));
  Residual<Linear<double>> res(Linear<double>(3, 4, rng));
  CHECK_THROWS_WITH(res.output_shape(Shape{2, 3}), Catch::Contains("Residual: branch output shapes"));
  Stage<Linear<double>> empty;
  CHECK_THROWS_WITH(empty.output_shape(Shape{2, 3}), Catch::Contains("Stage: blocks"));
}
