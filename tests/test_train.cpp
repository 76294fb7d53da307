#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "lamina/core/sequential.hpp"
#include "lamina/io/checkpoint.hpp"
#include "lamina/models/resnet.hpp"
#include "lamina/optim/sgd.hpp"
#include "lamina/train/trainer.hpp"

using namespace lamina;

namespace {
// Two separable classes: bright top half vs bright bottom half, plus noise.
data::Dataset toy(index_t n, std::uint64_t seed) {
  data::Dataset d;
  d.num_classes = 2;
  d.images = Tensor<float>(Shape{n, 1, 6, 6});
  Rng rng(seed);
  for (index_t i = 0; i < n; ++i) {
    const int y = int(i % 2);
    d.labels.push_back(y);
    for (index_t r = 0; r < 6; ++r)
      for (index_t c = 0; c < 6; ++c)
        d.images[i * 36 + r * 6 + c] = float(((r < 3) == (y == 0) ? 0.8 : 0.2) + 0.1 * rng.normal());
  }
  return d;
}
}  // namespace

TEST_CASE("A small ResNet learns a separable toy problem", "[train]") {
  const data::Dataset train = toy(64, 1), test = toy(32, 2);
  Rng rng(5);
  auto net = make_resnet<float>({1, {4, 4, 8}, 1, 2}, rng);
  optim::SGD<float> opt(net, {0.05, 0.9, 0.0, 5e-4, true});
  SoftmaxCrossEntropy<float> loss;
  data::Loader<float> tl(train, 16, data::statistics(train), true, {1, true}, 3), el(test, 16, data::statistics(train));
  train::Progress quiet(nullptr);
  std::vector<train::EpochRecord> hist;
  for (index_t e = 0; e < 6; ++e) {
    auto st = train::train_epoch(net, loss, opt, tl, quiet, "epoch");
    hist.push_back({e, opt.lr(), st, train::evaluate(net, el)});
  }
  CHECK(hist.back().train.loss < hist.front().train.loss);
  CHECK(hist.back().test.accuracy >= 0.9);
  const auto csv = std::filesystem::temp_directory_path() / "lamina_hist.csv";
  train::write_csv(csv.string(), hist);
  std::ifstream in(csv);
  std::string header, line;
  std::getline(in, header);
  CHECK(header.rfind("epoch,lr,train_loss", 0) == 0);
  index_t rows = 0;
  while (std::getline(in, line)) ++rows;
  CHECK(rows == 6);
  std::filesystem::remove(csv);
}

TEST_CASE("A non-finite loss stops training with a clear error", "[train][errors]") {
  data::Dataset d = toy(8, 3);
  d.images[5] = std::numeric_limits<float>::quiet_NaN();
  Rng rng(5);
  Sequential<Flatten<float>, Linear<float>> net(Flatten<float>{}, Linear<float>(36, 2, rng));
  optim::SGD<float> opt(net, {0.1});
  SoftmaxCrossEntropy<float> loss;
  data::Loader<float> l(d, 4, {0.0f, 1.0f}, false, {}, 1, data::Check::labels_only);
  train::Progress quiet(nullptr);
  const std::vector<float> w0(net.get<1>().weight().data(), net.get<1>().weight().data() + 72);
  CHECK_THROWS_AS(train::train_epoch(net, loss, opt, l, quiet, "epoch 1/1"), non_finite_error);
  CHECK_THROWS_WITH(train::train_epoch(net, loss, opt, l, quiet, "epoch 1/1"), Catch::Contains("step 1 of") && Catch::Contains("loss is nan"));
  const std::vector<float> w1(net.get<1>().weight().data(), net.get<1>().weight().data() + 72);
  CHECK(w0 == w1);  // no update applied the bad batch
}

namespace {
template <class M>
std::vector<ParamRef<float>> trainable_parameters_of(M& m) {
  return optim::trainable_parameters<float>(m);
}
template <class M>
std::vector<float> values_of(M& m, bool trainable) {
  std::vector<float> v;
  visit_parameters(m, [&](const ParamRef<float>& p) {
    if (p.trainable == trainable) v.insert(v.end(), p.value.data(), p.value.data() + p.value.size());
  });
  return v;
}
template <class M>
bool all_finite(M& m) {
  bool ok = true;
  visit_parameters(m, [&](const ParamRef<float>& p) {
    for (float x : p.value.span()) ok = ok && std::isfinite(x);
  });
  return ok;
}
std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
// Identity whose backward adds NaN into its one parameter's gradient: a finite
// loss with a non-finite gradient.
struct PoisonGrad {
  using value_type = float;
  struct Cache {};
  Tensor<float> w{Shape{3}}, dw{Shape{3}};
  Shape output_shape(Shape in) const { return in; }
  void forward(ConstView<float> x, View<float> y, Cache&, Pass = {}) { std::copy(x.data(), x.data() + x.size(), y.data()); }
  void infer(ConstView<float> x, View<float> y) { std::copy(x.data(), x.data() + x.size(), y.data()); }
  void backward(const Cache&, ConstView<float> dy, View<float> dx, Grad g = {}) {
    if (g.input) axpy(dx.data(), dy.data(), dy.size());
    if (g.params) dw[1] += std::numeric_limits<float>::quiet_NaN();
  }
  Cache c;
  void forward(ConstView<float> x, View<float> y) { forward(x, y, c); }
  void backward(ConstView<float> dy, View<float> dx, Grad g = {}) { backward(c, dy, dx, g); }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    f(ParamRef<float>{prefix + "poison", w.view(), dw.view(), true, true});
  }
};
}  // namespace

TEST_CASE("A ResNet (with ReLU) stops at the first non-finite batch, parameters and statistics as before it", "[train][errors]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (float bad : {nan, inf, -inf})
    for (index_t sample : {index_t(0), index_t(13)}) {  // in the first batch, and in the fourth
      INFO("value " << bad << " in sample " << sample);
      data::Dataset d = toy(16, 3);
      d.images[sample * 36 + 20] = bad;
      Rng rng(5);
      auto net = make_resnet<float>({1, {4, 4, 8}, 1, 2}, rng);
      optim::SGD<float> opt(net, {0.05, 0.9});
      SoftmaxCrossEntropy<float> loss;
      data::Loader<float> l(d, 4, {0.5f, 0.25f}, false, {}, 1, data::Check::labels_only);
      train::Progress quiet(nullptr);
      const auto p0 = values_of(net, true), b0 = values_of(net, false);
      try {
        train::train_epoch(net, loss, opt, l, quiet, "epoch 2/3", {}, {.epoch = 2});
        FAIL("no non_finite_error");
      } catch (const non_finite_error& e) {
        const std::string m = e.what();
        CHECK_THAT(m, Catch::Contains("epoch 2/3: epoch 2, step " + std::to_string(sample / 4 + 1) + " of 4: loss is nan"));
        CHECK_THAT(m, Catch::Contains("before the update"));
      }
      CHECK(all_finite(net));
      if (sample < 4) {  // nothing was applied: the model is exactly as it started
        CHECK(values_of(net, true) == p0);
        CHECK(values_of(net, false) == b0);
      }
      // The loader's own check finds the value first.
      CHECK_THROWS_WITH(data::Loader<float>(d, 4, {0.5f, 0.25f}), Catch::Contains("sample " + std::to_string(sample)));
    }
}

TEST_CASE("A finite loss with a non-finite gradient stops before the update, naming the tensor", "[train][errors]") {
  data::Dataset d = toy(8, 3);
  Rng rng(5);
  Sequential<Flatten<float>, Linear<float>, PoisonGrad> net(Flatten<float>{}, Linear<float>(36, 2, rng), PoisonGrad{});
  optim::SGD<float> opt(net, {0.1});
  SoftmaxCrossEntropy<float> loss;
  data::Loader<float> l(d, 4, {0.0f, 1.0f});
  train::Progress quiet(nullptr);
  const auto p0 = values_of(net, true);
  CHECK_THROWS_WITH(train::train_epoch(net, loss, opt, l, quiet, "epoch 1/1"),
                    Catch::Contains("step 1 of 2: gradient of 2.poison is nan at index 1"));
  CHECK(values_of(net, true) == p0);
}

TEST_CASE("Huge inputs or a learning rate of 1e30 never end an epoch with non-finite parameters", "[train][errors]") {
  const auto dir = std::filesystem::temp_directory_path() / ("lamina_train_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto ckpt = dir / "last_good.lck";
  for (int c = 0; c < 3; ++c) {
    INFO("case " << c);
    data::Dataset d = toy(16, 3);
    if (c == 0) d.images[20] = 3e38f;
    if (c == 1) std::fill(d.images.data(), d.images.data() + 36, 3e38f);
    Rng rng(5);
    auto net = make_resnet<float>({1, {4, 4, 8}, 1, 2}, rng);
    optim::SGD<float> opt(net, {c == 2 ? 1e30 : 0.05, 0.9});
    SoftmaxCrossEntropy<float> loss;
    data::Loader<float> l(d, 4, {0.5f, 0.25f});
    train::Progress quiet(nullptr);
    io::save_checkpoint(net, ckpt);
    const std::string saved = file_bytes(ckpt);
    bool threw = false;
    try {
      for (int e = 0; e < 3; ++e) {
        train::train_epoch(net, loss, opt, l, quiet, "epoch", {}, {.epoch = e + 1});
        REQUIRE(all_finite(net));  // a finished epoch leaves only finite state
        io::save_checkpoint(net, ckpt);
      }
    } catch (const non_finite_error& e) {
      threw = true;
      CHECK_THAT(std::string(e.what()), Catch::Contains("step") && Catch::Contains("epoch"));
      if (c == 2) CHECK_THAT(std::string(e.what()), Catch::Contains("epoch 1, step"));
    }
    if (c == 2) {
      CHECK(threw);  // lr 1e30 overflows the parameters
      CHECK(file_bytes(ckpt) == saved);  // the last good checkpoint is untouched
      auto again = make_resnet<float>({1, {4, 4, 8}, 1, 2}, rng);
      io::load_checkpoint(again, ckpt);
      CHECK(all_finite(again));
    }
  }
  std::filesystem::remove_all(dir);
}

namespace {
// SGD whose update overflows one weight (what lr 1e38 does to a large gradient).
struct OverflowingSgd : optim::SGD<float> {
  using optim::SGD<float>::SGD;
  void step() {
    optim::SGD<float>::step();
    if (steps() == 2) parameters()[3].value.data()[5] = std::numeric_limits<float>::infinity();
  }
};
}  // namespace

TEST_CASE("An update that makes a parameter non-finite stops training at once, naming it", "[train][errors]") {
  for (auto mode : {train::OnNonFinite::stop, train::OnNonFinite::skip}) {
    data::Dataset d = toy(16, 3);
    Rng rng(5);
    auto net = make_resnet<float>({1, {4, 4, 8}, 1, 2}, rng);
    OverflowingSgd opt(trainable_parameters_of(net), {.lr = 0.05});
    SoftmaxCrossEntropy<float> loss;
    data::Loader<float> l(d, 4, {0.5f, 0.25f});
    train::Progress quiet(nullptr);
    const std::string name = opt.parameters()[3].name;
    CHECK_THROWS_WITH(train::train_epoch(net, loss, opt, l, quiet, "epoch 1/1", {}, {.on_non_finite = mode}),
                      Catch::Contains("step 2 of 4: parameter " + name + " is inf at index 5; after the update"));
  }
}

TEST_CASE("OnNonFinite::skip drops bad batches, counts and reports them", "[train][errors]") {
  data::Dataset d = toy(16, 3);
  d.images[5 * 36 + 7] = std::numeric_limits<float>::quiet_NaN();      // batch 2
  d.images[14 * 36 + 1] = -std::numeric_limits<float>::infinity();     // batch 4
  Rng rng(5);
  auto net = make_resnet<float>({1, {4, 4, 8}, 1, 2}, rng);
  optim::SGD<float> opt(net, {0.05, 0.9});
  SoftmaxCrossEntropy<float> loss;
  data::Loader<float> l(d, 4, {0.5f, 0.25f}, false, {}, 1, data::Check::labels_only);
  train::Progress quiet(nullptr);
  const auto st = train::train_epoch(net, loss, opt, l, quiet, "epoch 1/1", {}, {.on_non_finite = train::OnNonFinite::skip});
  CHECK(st.skipped == 2);
  CHECK(st.images == 8);
  CHECK(std::isfinite(st.loss));
  CHECK_THAT(st.first_skipped, Catch::Contains("step 2 of 4: loss is nan"));
  CHECK(all_finite(net));
  CHECK(opt.steps() == 2);
  // A clean data set skips nothing.
  data::Dataset clean = toy(16, 3);
  data::Loader<float> lc(clean, 4, {0.5f, 0.25f});
  const auto sc = train::train_epoch(net, loss, opt, lc, quiet, "epoch 2/2", {}, {.on_non_finite = train::OnNonFinite::skip});
  CHECK(sc.skipped == 0);
  CHECK(sc.images == 16);
}

TEST_CASE("Progress formats durations", "[train]") {
  CHECK(train::format_duration(75) == "01:15");
  CHECK(train::format_duration(3725) == "1:02:05");
  CHECK(train::format_duration(-1) == "--:--");
}
