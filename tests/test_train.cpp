#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "lamina/core/sequential.hpp"
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
  data::Loader<float> l(d, 4, {0.0f, 1.0f});
  train::Progress quiet(nullptr);
  const std::vector<float> w0(net.get<1>().weight().data(), net.get<1>().weight().data() + 72);
  CHECK_THROWS_AS(train::train_epoch(net, loss, opt, l, quiet, "epoch 1/1"), non_finite_error);
  CHECK_THROWS_WITH(train::train_epoch(net, loss, opt, l, quiet, "epoch 1/1"), Catch::Contains("step 1 of") && Catch::Contains("loss is nan"));
  const std::vector<float> w1(net.get<1>().weight().data(), net.get<1>().weight().data() + 72);
  CHECK(w0 == w1);  // no update applied the bad batch
}

TEST_CASE("Progress formats durations", "[train]") {
  CHECK(train::format_duration(75) == "01:15");
  CHECK(train::format_duration(3725) == "1:02:05");
  CHECK(train::format_duration(-1) == "--:--");
}
