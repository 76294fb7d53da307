#include <catch2/catch.hpp>

#include <array>
#include <span>

#include "lamina/core/stage.hpp"
#include "lamina/models/laurel_resnet.hpp"
#include "lamina/modules/activation.hpp"
#include "lamina/modules/conv2d.hpp"
#include "lamina/modules/gemma_laurel.hpp"
#include "lamina/modules/laurel.hpp"
#include "lamina/modules/linear.hpp"
#include "support/golden.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;

namespace {

// f(x) = F, a fixed tensor (the golden files give f(x) as an independent input);
// backward records dL/dF and sends nothing to x.
template <class T>
struct Given {
  using value_type = T;
  struct Cache {};
  Tensor<T> F, received;
  Shape output_shape(const Shape&) const { return F.shape(); }
  void forward(ConstView<T>, View<T> y, Cache&, Pass = {}) { std::copy(F.data(), F.data() + F.size(), y.data()); }
  void infer(ConstView<T>, View<T> y) { std::copy(F.data(), F.data() + F.size(), y.data()); }
  void backward(const Cache&, ConstView<T> dy, View<T>, Grad = {}) { received = Tensor<T>::copy_of(dy); }
  template <class Fn>
  void visit(Fn&&, const std::string&) {}
};

template <class T>
Tensor<T> prefilled(const Shape& s, std::uint64_t seed) {
  Rng rng(seed);
  Tensor<T> t(s);
  for (index_t i = 0; i < t.size(); ++i) t[i] = T(rng.uniform(-1, 1));
  return t;
}

// Sets every LAUREL parameter of m to random values (non-zero B, w, γ), so the
// gradient checks exercise every term.
template <class M>
void randomise_added(M& m, std::uint64_t seed, double scale = 0.5) {
  Rng rng(seed);
  visit_parameters(m, [&](const ParamRef<typename M::value_type>& p) {
    if (p.added)
      for (auto& v : p.value.span()) v = typename M::value_type(rng.uniform(-scale, scale));
  });
}

template <class T, class V>
void check_golden_case(const std::string& name) {
  INFO(name);
  const golden::Case c = golden::load(name);
  const index_t D = c.i("D");
  laurel::Options o;
  if (c.param.count("r")) o.rank = c.i("r");
  if (c.param.count("k")) o.history = c.i("k");
  Rng rng(1);
  Laurel<Given<T>, V> L(Given<T>{c.t("F").as<T>(), {}}, D, o, rng);
  const std::string low0 = c.has("A0") ? "0" : "";
  if constexpr (V::rw) L.w().assign(c.t("w").as<T>().cview());
  if constexpr (V::lr) {
    L.A().assign(c.t("A" + low0).as<T>().cview());
    L.B().assign(c.t("B" + low0).as<T>().cview());
  }
  const index_t npred = c.param.count("npred") ? c.i("npred") : 0;
  std::vector<Tensor<T>> xp;
  // The earlier streams x_{i-j} sit in blocks npred − j of a stage memory; L is block npred.
  StageMemory<T> memory;
  memory.reset(std::size_t(npred + 1), true);
  auto pred_block = [&](index_t j) { return std::size_t(npred - 1 - j); };
  if constexpr (V::pa) {
    L.gamma().assign(c.t("gamma").as<T>().cview());
    for (index_t j = 1; j <= o.history && c.has("A" + std::to_string(j)); ++j) {
      L.A_history(j).assign(c.t("A" + std::to_string(j)).as<T>().cview());
      L.B_history(j).assign(c.t("B" + std::to_string(j)).as<T>().cview());
    }
    for (index_t j = 0; j < npred; ++j) xp.push_back(c.t("xp" + std::to_string(j + 1)).as<T>());
    for (index_t j = 0; j < npred; ++j) {
      memory.publish(pred_block(j), memory_key::laurel_stream, xp[static_cast<std::size_t>(j)].cview());
      const Tensor<T> g0 = prefilled<T>(xp[static_cast<std::size_t>(j)].shape(), 100 + std::uint64_t(j));
      View<T> g = memory.grad(pred_block(j), memory_key::laurel_stream);
      std::copy(g0.data(), g0.data() + g0.size(), g.data());
    }
  }
  auto grad_of = [&](index_t j) { return memory.grad(pred_block(j), memory_key::laurel_stream); };

  const Tensor<T> x = c.t("x").as<T>(), G = c.t("G").as<T>();
  Tensor<T> y(L.output_shape(x.shape()));
  typename decltype(L)::Cache cache;
  if constexpr (V::pa) L.forward(x.cview(), y.view(), cache, BlockMemory<T>(memory, std::size_t(npred)));
  else L.forward(x.cview(), y.view(), cache);
  golden::check_close<T>("y", y.cview(), c.t("y"), golden::tol<T>());
  if constexpr (V::rw) {
    const auto& ab = c.t("alpha_beta").v;
    CHECK(double(L.alpha()[0]) == Approx(ab[0]).epsilon(golden::tol<T>()));
    CHECK(double(L.beta()[0]) == Approx(ab[1]).epsilon(golden::tol<T>()));
  }

  std::vector<Tensor<T>> dxp0;
  for (index_t j = 0; j < npred; ++j) dxp0.push_back(Tensor<T>::copy_of(ConstView<T>(grad_of(j))));
  Tensor<T> dx = prefilled<T>(x.shape(), 5);
  const Tensor<T> dx0 = Tensor<T>::copy_of(dx.cview());
  std::vector<Tensor<T>> before;
  std::uint64_t seed = 50;
  visit_parameters(L, [&](const ParamRef<T>& p) {
    Tensor<T> t = prefilled<T>(p.grad.shape(), seed++);
    std::copy(t.data(), t.data() + t.size(), p.grad.data());
    before.push_back(std::move(t));
  });
  L.backward(cache, G.cview(), dx.view());
  golden::check_added<T>("dx", dx.cview(), dx0, c.t("dx"), golden::tol<T>());
  golden::check_close<T>("dF", L.body().received.cview(), c.t("dF"), golden::tol<T>());
  for (index_t j = 0; j < npred; ++j)
    golden::check_added<T>("dxp" + std::to_string(j + 1), ConstView<T>(grad_of(j)),
                           dxp0[static_cast<std::size_t>(j)], c.t("dxp" + std::to_string(j + 1)), golden::tol<T>());
  std::size_t k = 0;
  visit_parameters(L, [&](const ParamRef<T>& p) {
    std::string key = "d" + p.name.substr(std::string("laurel.").size());
    if (!c.has(key)) key += "0";  // RW+LR+PA names the connection's own pair A0, B0
    golden::check_added<T>(p.name, p.grad, before[k++], c.t(key), golden::tol<T>());
  });
  CHECK(k == before.size());
}

using DenseF = Sequential<Linear<double>, Tanh<double>>;
DenseF dense_f(index_t D, Rng& rng) { return DenseF(Linear<double>(D, D, rng), Tanh<double>{}); }

}  // namespace

static_assert(Module<Laurel<Linear<double>, laurel::RW>>);
static_assert(Module<Laurel<Linear<float>, laurel::RW_LR_PA, Linear<float>>>);
static_assert(UsesStageMemory<Laurel<Linear<double>, laurel::PA>> && !UsesStageMemory<Laurel<Linear<double>, laurel::RW_LR>>);
static_assert(UsesStageMemory<LaurelBasicBlock<float, laurel::RW_LR_PA>>);
static_assert(Module<LaurelResNet<float, laurel::RW>>);

TEMPLATE_TEST_CASE("LAUREL connections match the golden files", "[laurel][golden]", float, double) {
  using T = TestType;
  check_golden_case<T, laurel::RW>("laurel_rw");
  check_golden_case<T, laurel::LR>("laurel_lr");
  check_golden_case<T, laurel::RW_LR>("laurel_rw_lr");
  check_golden_case<T, laurel::PA>("laurel_pa_identity");
  check_golden_case<T, laurel::RW_LR_PA>("laurel_rw_lr_pa");
  check_golden_case<T, laurel::RW_LR_PA>("laurel_rw_lr_pa_partial");
}

TEST_CASE("LAUREL default initialisation matches the golden file", "[laurel][golden]") {
  const golden::Case c = golden::load("laurel_init");
  laurel::Options o;
  o.rank = c.i("r");
  Rng rng(1);
  Laurel<Identity<double>, laurel::LR> L(Identity<double>{}, c.i("D"), o, rng);
  golden::check_close<double>("A", L.A().cview(), c.t("A"), 1e-15);
  golden::check_close<double>("B", L.B().cview(), c.t("B"), 0);
  Tensor<double> AtA(Shape{o.rank, o.rank});
  for (index_t a = 0; a < o.rank; ++a)
    for (index_t b = 0; b < o.rank; ++b)
      for (index_t i = 0; i < c.i("D"); ++i) AtA[a * o.rank + b] += L.A()[i * o.rank + a] * L.A()[i * o.rank + b];
  golden::check_close<double>("AtA", AtA.cview(), c.t("AtA"), 1e-15);
}

TEMPLATE_TEST_CASE("At init every LAUREL variant is exactly the plain residual", "[laurel]", float, double) {
  using T = TestType;
  Rng rng(3);
  Linear<T> f(6, 6, rng);
  const Tensor<T> x = prefilled<T>(Shape{5, 6}, 9);
  Tensor<T> ref(Shape{5, 6});
  Residual<Linear<T>>(f).forward(x.cview(), ref.view());
  auto same = [&](auto&& L) {
    Tensor<T> y(Shape{5, 6});
    L.forward(x.cview(), y.view());
    for (index_t i = 0; i < y.size(); ++i) REQUIRE(y[i] == ref[i]);  // bit for bit
  };
  laurel::Options o;
  same(Laurel<Linear<T>, laurel::RW>(f, 6, o, rng));
  same(Laurel<Linear<T>, laurel::LR>(f, 6, o, rng));
  same(Laurel<Linear<T>, laurel::RW_LR>(f, 6, o, rng));
  o.a_init = laurel::AInit::xavier_uniform;
  same(Laurel<Linear<T>, laurel::RW_LR>(f, 6, o, rng));
  o.per_channel = true;
  same(Laurel<Linear<T>, laurel::RW_LR>(f, 6, o, rng));
  o.bound = laurel::Bound::two_sigmoids;
  same(Laurel<Linear<T>, laurel::RW>(f, 6, o, rng));
  // PA inside a stage: identity h starts with γ = 0, low-rank h with B_j = 0.
  for (auto h : {laurel::History::identity, laurel::History::low_rank}) {
    laurel::Options op;
    op.h = h;
    Stage<Laurel<Linear<T>, laurel::PA>> pa;
    Stage<Residual<Linear<T>>> plain;
    for (int i = 0; i < 3; ++i) {
      Linear<T> fi(6, 6, rng);
      pa.push_back(Laurel<Linear<T>, laurel::PA>(fi, 6, op, rng));
      plain.push_back(Residual<Linear<T>>(fi));
    }
    Tensor<T> y(Shape{5, 6}), yp(Shape{5, 6});
    pa.forward(x.cview(), y.view());
    plain.forward(x.cview(), yp.view());
    for (index_t i = 0; i < y.size(); ++i) REQUIRE(y[i] == yp[i]);
  }
}

TEST_CASE("LAUREL RW and RW+LR pass the gradient check with every bounding option", "[laurel][gradcheck]") {
  for (auto bound : {laurel::Bound::softmax, laurel::Bound::sigmoid, laurel::Bound::two_sigmoids})
    for (bool per_channel : {false, true})
      for (auto a_init : {laurel::AInit::column_orthogonal, laurel::AInit::xavier_uniform}) {
        INFO("bound " << int(bound) << " per_channel " << per_channel << " a_init " << int(a_init));
        laurel::Options o;
        o.bound = bound, o.per_channel = per_channel, o.a_init = a_init, o.rank = 3;
        Rng rng(11);
        auto x = gradcheck::random_tensor({4, 7}, 2);
        Laurel<DenseF, laurel::RW> rw(dense_f(7, rng), 7, o, rng);
        randomise_added(rw, 1);
        gradcheck::check(rw, x);
        Laurel<DenseF, laurel::RW_LR> rwlr(dense_f(7, rng), 7, o, rng);
        randomise_added(rwlr, 2);
        gradcheck::check(rwlr, x);
      }
}

TEST_CASE("LAUREL LR passes the gradient check on dense rows and on images", "[laurel][gradcheck]") {
  laurel::Options o;
  o.rank = 2;
  Rng rng(12);
  auto x = gradcheck::random_tensor({2, 3, 5}, 3);  // rank 3: [B, T, D] rows
  Laurel<DenseF, laurel::LR> lr(dense_f(5, rng), 5, o, rng);
  randomise_added(lr, 3);
  gradcheck::check(lr, x);

  auto img = gradcheck::random_tensor({2, 4, 3, 3}, 4);
  Laurel<Conv2d<double>, laurel::RW_LR> conv(Conv2d<double>({4, 4, 3, 3, 1, 1, true}, rng), 4, o, rng);
  randomise_added(conv, 4);
  gradcheck::check(conv, img);
  o.per_channel = true;
  Laurel<Conv2d<double>, laurel::RW_LR> convc(Conv2d<double>({4, 4, 3, 3, 1, 1, true}, rng), 4, o, rng);
  randomise_added(convc, 5);
  gradcheck::check(convc, img);
}

TEST_CASE("A 3-deep PA stack gives earlier streams the gradient of every later block", "[laurel][gradcheck]") {
  for (auto h : {laurel::History::identity, laurel::History::low_rank}) {
    INFO("low-rank h " << (h == laurel::History::low_rank));
    laurel::Options o;
    o.h = h, o.history = 2, o.rank = 2;
    Rng rng(13);
    Stage<Laurel<DenseF, laurel::PA>> stack;
    for (int i = 0; i < 3; ++i) stack.push_back(Laurel<DenseF, laurel::PA>(dense_f(5, rng), 5, o, rng));
    randomise_added(stack, 6);
    auto x = gradcheck::random_tensor({3, 5}, 5);
    gradcheck::check(stack, x);
  }
  // RW+LR+PA with k = 3 in a 4-deep stack (the first blocks see fewer
  // predecessors), per-channel α, β.
  laurel::Options o;
  o.history = 3, o.rank = 2, o.per_channel = true;
  Rng rng(14);
  Stage<Laurel<DenseF, laurel::RW_LR_PA>> stack;
  for (int i = 0; i < 4; ++i) stack.push_back(Laurel<DenseF, laurel::RW_LR_PA>(dense_f(4, rng), 4, o, rng));
  randomise_added(stack, 7);
  auto x = gradcheck::random_tensor({3, 4}, 6);
  gradcheck::check(stack, x);
}

TEST_CASE("LAUREL image blocks with projection shortcuts pass the gradient check", "[laurel][gradcheck]") {
  // Two blocks of the E1 kind: the first changes width and stride through its
  // projection, whose output is the stream that the second block's PA reads.
  laurel::Options o;
  o.rank = 2, o.history = 2;
  Rng rng(15);
  Stage<LaurelBasicBlock<double, laurel::RW_LR_PA>> stage;
  stage.push_back(make_laurel_basic_block<double, laurel::RW_LR_PA>(2, 3, 2, o, rng));
  stage.push_back(make_laurel_basic_block<double, laurel::RW_LR_PA>(3, 3, 1, o, rng));
  randomise_added(stage, 8);
  auto x = gradcheck::random_tensor({2, 2, 4, 4}, 7);
  gradcheck::check(stage, x);

  std::vector<std::string> names;
  visit_parameters(stage, [&](const ParamRef<double>& p) {
    if (p.added) names.push_back(p.name);
  });
  CHECK(names.front() == "0.laurel.w");
  CHECK(std::find(names.begin(), names.end(), "1.laurel.B2") != names.end());
}

TEST_CASE("LAUREL reads NCHW images in place: same result as the dense rows", "[laurel]") {
  // The large case has enough elements for the threaded per-image path.
  const auto dims = GENERATE(std::array<index_t, 4>{2, 5, 3, 2}, std::array<index_t, 4>{8, 16, 24, 24});
  const index_t B = dims[0], C = dims[1], H = dims[2], W = dims[3], HW = H * W;
  laurel::Options o;
  o.rank = 2, o.history = 1, o.per_channel = true;
  Rng rng(16);
  const Tensor<double> x = prefilled<double>(Shape{B, C, H, W}, 1), F = prefilled<double>(Shape{B, C, H, W}, 2),
                       xp = prefilled<double>(Shape{B, C, H, W}, 3), G = prefilled<double>(Shape{B, C, H, W}, 4);
  auto rows = [&](const Tensor<double>& t) {  // [B, C, H, W] -> [B·H·W, C]
    Tensor<double> r(Shape{B * HW, C});
    for (index_t b = 0; b < B; ++b)
      for (index_t c = 0; c < C; ++c)
        for (index_t p = 0; p < HW; ++p) r[(b * HW + p) * C + c] = t[(b * C + c) * HW + p];
    return r;
  };
  using L = Laurel<Given<double>, laurel::RW_LR_PA>;
  L img(Given<double>{F, {}}, C, o, rng), dense(Given<double>{rows(F), {}}, C, o, rng);
  randomise_added(img, 9);
  randomise_added(dense, 9);
  auto run = [&](L& l, const Tensor<double>& xi, const Tensor<double>& xpi, const Tensor<double>& Gi) {
    StageMemory<double> memory;  // xpi is block 0's stream, l is block 1
    memory.reset(2, true);
    memory.publish(0, memory_key::laurel_stream, xpi.cview());
    Tensor<double> y(xi.shape()), dx(xi.shape());
    L::Cache cache;
    l.forward(xi.cview(), y.view(), cache, BlockMemory<double>(memory, 1));
    l.backward(cache, Gi.cview(), dx.view());
    return std::array<Tensor<double>, 3>{y, dx, Tensor<double>::copy_of(memory.grad(0, memory_key::laurel_stream))};
  };
  auto a = run(img, x, xp, G), b = run(dense, rows(x), rows(xp), rows(G));
  for (int t = 0; t < 3; ++t) {
    const Tensor<double> ar = rows(a[static_cast<std::size_t>(t)]);
    for (index_t i = 0; i < ar.size(); ++i) REQUIRE(ar[i] == Approx(b[static_cast<std::size_t>(t)][i]).margin(1e-12));
  }
  std::vector<Tensor<double>> ga, gb;
  visit_parameters(img, [&](const ParamRef<double>& p) { ga.push_back(Tensor<double>::copy_of(p.grad)); });
  visit_parameters(dense, [&](const ParamRef<double>& p) { gb.push_back(Tensor<double>::copy_of(p.grad)); });
  REQUIRE(ga.size() == gb.size());
  for (std::size_t k = 0; k < ga.size(); ++k)
    for (index_t i = 0; i < ga[k].size(); ++i) REQUIRE(ga[k][i] == Approx(gb[k][i]).epsilon(1e-11).margin(1e-11));
}

TEST_CASE("LAUREL infer() equals forward() in a PA stage", "[laurel]") {
  laurel::Options o;
  o.history = 2, o.rank = 3;
  Rng rng(17);
  Stage<LaurelBasicBlock<double, laurel::RW_LR_PA>> stage;
  stage.push_back(make_laurel_basic_block<double, laurel::RW_LR_PA>(2, 4, 2, o, rng));
  for (int i = 0; i < 2; ++i) stage.push_back(make_laurel_basic_block<double, laurel::RW_LR_PA>(4, 4, 1, o, rng));
  randomise_added(stage, 10);
  set_training(stage, false);  // BatchNorm uses running statistics in both passes
  auto x = gradcheck::random_tensor({2, 2, 6, 6}, 8);
  Tensor<double> y(stage.output_shape(x.shape())), yi(y.shape());
  stage.forward(x.cview(), y.view());
  stage.infer(x.cview(), yi.view());
  for (index_t i = 0; i < y.size(); ++i) REQUIRE(yi[i] == Approx(y[i]).margin(1e-14));
}

TEST_CASE("LAUREL parameter counts follow the spec's table", "[laurel]") {
  const index_t D = 16, r = 4, k = 2;
  laurel::Options o;
  o.rank = r, o.history = k;
  Rng rng(18);
  auto added = [](auto&& m) { return parameter_count(m).added; };
  CHECK(added(Laurel<Identity<float>, laurel::RW>(Identity<float>{}, D, o, rng)) == 2);
  CHECK(added(Laurel<Identity<float>, laurel::LR>(Identity<float>{}, D, o, rng)) == 2 * r * D);
  CHECK(added(Laurel<Identity<float>, laurel::PA>(Identity<float>{}, D, o, rng)) == k);
  CHECK(added(Laurel<Identity<float>, laurel::RW_LR>(Identity<float>{}, D, o, rng)) == 2 * r * D + 2);
  CHECK(added(Laurel<Identity<float>, laurel::RW_LR_PA>(Identity<float>{}, D, o, rng)) == 2 * r * D * (k + 1) + k + 2);
  o.h = laurel::History::low_rank;
  CHECK(added(Laurel<Identity<float>, laurel::PA>(Identity<float>{}, D, o, rng)) == k + 2 * r * D * k);
  o.per_channel = true;
  CHECK(added(Laurel<Identity<float>, laurel::RW>(Identity<float>{}, D, o, rng)) == 2 * D);

  // The E1 network reports its added parameters itself.
  ResNetOptions ro;
  Rng r1(1), r2(1);
  auto base = make_resnet<float>(ro, r1);
  laurel::Options lo;
  lo.rank = 4;
  auto net = make_laurel_resnet<float, laurel::RW_LR>(ro, lo, r2);
  const ParameterCount pc = parameter_count(net);
  CHECK(pc.base() == count_parameters(base));
  CHECK(pc.added == 2 * (2 + 2 * 4 * 16) + 2 * (2 + 2 * 4 * 32) + 2 * (2 + 2 * 4 * 64));
  CHECK(pc.added_percent() == Approx(100.0 * double(pc.added) / double(pc.base())));
}

TEST_CASE("LAUREL rejects bad hyper-parameters and shapes with clear errors", "[laurel][errors]") {
  Rng rng(19);
  laurel::Options o;
  auto make = [&](laurel::Options op, index_t D = 8) { return Laurel<Identity<double>, laurel::RW_LR_PA>(Identity<double>{}, D, op, rng); };
  o.rank = 0;
  CHECK_THROWS_WITH(make(o), Catch::Contains("Laurel: rank r: expected >= 1, got 0"));
  o.rank = 9;
  CHECK_THROWS_WITH(make(o), Catch::Contains("rank r: expected <= D = 8, got 9"));
  o.rank = 4, o.history = 0;
  CHECK_THROWS_WITH(make(o), Catch::Contains("history k: expected >= 1, got 0"));
  CHECK_THROWS_AS(make(laurel::Options{}, 0), value_error);
  laurel::Options pc;
  pc.per_channel = true;
  CHECK_THROWS_WITH((Laurel<Identity<double>, laurel::LR>(Identity<double>{}, 8, pc, rng)),
                    Catch::Contains("per_channel: expected a variant with RW"));

  auto L = make(laurel::Options{});
  Tensor<double> x(Shape{3, 7}), y(Shape{3, 7});
  CHECK_THROWS_WITH(L.forward(x.cview(), y.view()), Catch::Contains("stream width D (channels): expected 8, got 7"));
  Tensor<double> x8(Shape{3, 8}), y8(Shape{3, 8}), y_bad(Shape{2, 8});
  CHECK_THROWS_WITH(L.backward(y8.cview(), x8.view()), Catch::Contains("backward(): expected a preceding forward()"));
  CHECK_THROWS_AS(L.forward(x8.cview(), y_bad.view()), shape_error);
  StageMemory<double> memory;
  memory.reset(2, true);
  Tensor<double> other(Shape{4, 8});
  memory.publish(0, memory_key::laurel_stream, other.cview());
  decltype(L)::Cache cache;
  CHECK_THROWS_WITH(L.forward(x8.cview(), y8.view(), cache, BlockMemory<double>(memory, 1)),
                    Catch::Contains("earlier stream x_{i-j} shape: expected [3, 8], got [4, 8]"));
  Tensor<double> v(Shape{8});
  CHECK_THROWS_AS(L.forward(v.cview(), v.view()), shape_error);
}

TEST_CASE("RMSNorm and the Gemma 3n normalised LR block pass the gradient check", "[laurel][gemma][gradcheck]") {
  Rng rng(20);
  RMSNorm<double> norm(6);
  randomise_added(norm, 1);  // no added parameters: stays at the ones gain
  for (auto& v : norm.weight().span()) v = rng.uniform(0.5, 1.5);
  auto x = gradcheck::random_tensor({4, 6}, 9);
  gradcheck::check(norm, x);

  GemmaLaurel<Linear<double>> block(Linear<double>(6, 6, rng), 6, 2, rng);
  gradcheck::check(block, x);
  // L, R and the LR branch's norm gain are the added parameters: 2rD + D.
  CHECK(parameter_count(block).added == 2 * 2 * 6 + 6);

  // h = (x + post_norm(inner(u)) + u + RMSNorm_w((u L) R)) / sqrt 2, by hand.
  Tensor<double> y(Shape{4, 6});
  block.infer(x.cview(), y.view());
  auto rms = [](const double* v, index_t D, index_t d) {
    double ss = 0;
    for (index_t i = 0; i < D; ++i) ss += v[i] * v[i];
    return v[d] / std::sqrt(ss / double(D) + 1e-6);
  };
  for (index_t n = 0; n < 4; ++n) {
    std::vector<double> u(6), a(6), v(6, 0.0), t(2, 0.0);
    for (index_t d = 0; d < 6; ++d) u[std::size_t(d)] = rms(x.data() + n * 6, 6, d);
    Tensor<double> ut(Shape{1, 6}), at(Shape{1, 6});
    std::copy(u.begin(), u.end(), ut.data());
    block.inner().infer(ut.cview(), at.view());
    for (index_t k = 0; k < 2; ++k)
      for (index_t d = 0; d < 6; ++d) t[std::size_t(k)] += u[std::size_t(d)] * block.low_rank().A()[d * 2 + k];
    for (index_t d = 0; d < 6; ++d)
      for (index_t k = 0; k < 2; ++k) v[std::size_t(d)] += t[std::size_t(k)] * block.low_rank().B()[k * 6 + d];
    for (index_t d = 0; d < 6; ++d) {
      const double h = (x[n * 6 + d] + rms(at.data(), 6, d) + u[std::size_t(d)] + rms(v.data(), 6, d)) / std::sqrt(2.0);
      CHECK(y[n * 6 + d] == Approx(h).margin(1e-12));
    }
  }
  Tensor<double> bad(Shape{4, 5}), ybad(Shape{4, 5});
  CHECK_THROWS_WITH(block.forward(bad.cview(), ybad.view()), Catch::Contains("GemmaLaurel: x shape: expected [N, 6], got [4, 5]"));
}

TEST_CASE("The README's LAUREL snippet compiles and runs", "[laurel]") {
  Rng rng(21);
  laurel::Options o;  o.rank = 4;  o.history = 2;
  Stage<Laurel<Sequential<Linear<float>, Tanh<float>>, laurel::RW_LR_PA>> stack;
  for (int i = 0; i < 4; ++i)
    stack.push_back({Sequential(Linear<float>(16, 16, rng), Tanh<float>{}), 16, o, rng});
  auto net = make_laurel_resnet<float, laurel::RW_LR>({}, o, rng);
  ParameterCount pc = parameter_count(net);
  CHECK(pc.added > 0);
  Tensor<float> x(Shape{3, 16}, 0.5f), y(Shape{3, 16}), dx(Shape{3, 16});
  stack.forward(x.cview(), y.view());
  stack.backward(y.cview(), dx.view());
  CHECK(std::isfinite(dx[0]));
}

TEST_CASE("backward_scaled(dy, s) equals backward(s·dy) for BatchNorm2d and Sequentials ending in one", "[laurel][compose]") {
  static_assert(ScaledBackward<BatchNorm2d<double>> && ScaledBackward<BasicBlockBody<double>>);
  static_assert(!ScaledBackward<Linear<double>> && !ScaledBackward<Sequential<BatchNorm2d<double>, ReLU<double>>>);
  Rng rng(22);
  for (bool training : {true, false}) {
    auto a = make_basic_block_body<double>(2, 3, 1, rng);
    auto b = a;
    set_training(a, training), set_training(b, training);
    const auto x = gradcheck::random_tensor({2, 2, 4, 4}, 3), dy = gradcheck::random_tensor({2, 3, 4, 4}, 4);
    Tensor<double> y(dy.shape()), dxa = gradcheck::random_tensor(x.shape(), 5), dxb = Tensor<double>::copy_of(dxa.cview()),
                   sdy = Tensor<double>::copy_of(dy.cview());
    for (auto& v : sdy.span()) v *= 0.37;
    typename decltype(a)::Cache ca, cb;
    a.forward(x.cview(), y.view(), ca);
    b.forward(x.cview(), y.view(), cb);
    a.backward_scaled(ca, dy.cview(), 0.37, dxa.view());
    b.backward(cb, sdy.cview(), dxb.view());
    for (index_t i = 0; i < dxa.size(); ++i) REQUIRE(dxa[i] == Approx(dxb[i]).margin(1e-13));
    std::vector<double> ga, gb;
    visit_parameters(a, [&](const ParamRef<double>& p) { if (p.trainable) ga.insert(ga.end(), p.grad.data(), p.grad.data() + p.grad.size()); });
    visit_parameters(b, [&](const ParamRef<double>& p) { if (p.trainable) gb.insert(gb.end(), p.grad.data(), p.grad.data() + p.grad.size()); });
    for (std::size_t i = 0; i < ga.size(); ++i) REQUIRE(ga[i] == Approx(gb[i]).margin(1e-12));
  }
}
