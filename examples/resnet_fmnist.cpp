// Trains the E1 baseline ResNet (spec/experiments.md) on Fashion-MNIST.
// Default: a short demo (a subset, one epoch). --full: the whole recipe
// (60k images, 10 epochs, SGD 0.1 momentum 0.9, wd 5e-4, cosine, batch 128,
// random crop with padding 2 and horizontal flip).
// Writes <out>/history.csv, <out>/summary.json, <out>/accuracy.svg and a checkpoint.
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "common/svg_plot.hpp"
#include "lamina/lamina.hpp"

using namespace lamina;

int main(int argc, char** argv) try {
  cxxopts::Options cli("resnet_fmnist", "Train the E1 baseline ResNet on Fashion-MNIST");
  cli.add_options()
    ("data", "Fashion-MNIST folder", cxxopts::value<std::string>()->default_value(data::default_fashion_mnist_dir().string()))
    ("full", "the full run: all 60k training images, 10 epochs")
    ("epochs", "epochs (default 1, or 10 with --full)", cxxopts::value<long>())
    ("train-limit", "use the first N training images (0 = all; default 10000, or all with --full)", cxxopts::value<long>())
    ("test-limit", "use the first N test images (0 = all)", cxxopts::value<long>()->default_value("0"))
    ("batch", "batch size", cxxopts::value<long>()->default_value("128"))
    ("lr", "base learning rate (cosine schedule per step)", cxxopts::value<double>()->default_value("0.1"))
    ("momentum", "SGD momentum", cxxopts::value<double>()->default_value("0.9"))
    ("wd", "weight decay", cxxopts::value<double>()->default_value("5e-4"))
    ("blocks", "BasicBlocks per stage", cxxopts::value<long>()->default_value("2"))
    ("no-augment", "disable random crop and flip")
    ("threads", "threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
    ("seed", "random seed", cxxopts::value<std::uint64_t>()->default_value("1"))
    ("out", "output folder", cxxopts::value<std::string>()->default_value("results/resnet_fmnist"))
    ("h,help", "show this help");
  const auto a = cli.parse(argc, argv);
  if (a.count("help")) {
    std::puts(cli.help().c_str());
    return 0;
  }
  const bool full = a.count("full") > 0;
  const long epochs = a.count("epochs") ? a["epochs"].as<long>() : (full ? 10 : 1);
  const long train_limit = a.count("train-limit") ? a["train-limit"].as<long>() : (full ? 0 : 10000);
  const long batch = a["batch"].as<long>();
  require(epochs > 0, "resnet_fmnist", "--epochs", "> 0", epochs);
  if (a["threads"].as<int>() > 0) set_num_threads(a["threads"].as<int>());
  const std::filesystem::path out = a["out"].as<std::string>();
  std::filesystem::create_directories(out);

  const auto dir = a["data"].as<std::string>();
  const data::Dataset train = data::load_fashion_mnist(dir, "train", train_limit);
  const data::Dataset test = data::load_fashion_mnist(dir, "test", a["test-limit"].as<long>());
  const data::Normalization norm = data::statistics(train);
  const data::Augmentation aug = a.count("no-augment") ? data::Augmentation{} : data::Augmentation{2, true};
  const std::uint64_t seed = a["seed"].as<std::uint64_t>();
  data::Loader<float> train_loader(train, batch, norm, true, aug, seed), test_loader(test, 500, norm);

  Rng rng(seed);
  auto net = make_resnet<float>({1, {16, 32, 64}, a["blocks"].as<long>(), 10}, rng);
  optim::SGD<float> opt(net, {a["lr"].as<double>(), a["momentum"].as<double>(), 0.0, a["wd"].as<double>(), false});
  const double steps_per_epoch = double(train_loader.batches());
  const optim::CosineLR schedule(a["lr"].as<double>(), double(epochs) * steps_per_epoch);
  SoftmaxCrossEntropy<float> loss;

  std::printf("ResNet (%ld blocks/stage, %ld parameters) on Fashion-MNIST: %ld train / %ld test images, %ld epochs, "
              "batch %ld, %d threads\n",
              a["blocks"].as<long>(), long(count_parameters(net)), long(train.size()), long(test.size()), epochs, batch,
              num_threads());
  train::Progress progress;
  std::vector<train::EpochRecord> history;
  for (long e = 0; e < epochs; ++e) {
    const std::string label = "epoch " + std::to_string(e + 1) + "/" + std::to_string(epochs);
    const auto st = train::train_epoch(net, loss, opt, train_loader, progress, label, [&](index_t step) {
      return schedule(double(e) * steps_per_epoch + double(step));
    });
    const auto ev = train::evaluate(net, test_loader);
    history.push_back({e + 1, opt.lr(), st, ev});
    std::printf("epoch %ld: train loss %.4f acc %.2f%% | test loss %.4f acc %.2f%% | %.1f s, %.0f img/s\n", e + 1,
                st.loss, 100 * st.accuracy, ev.loss, 100 * ev.accuracy, st.seconds, st.images_per_second);
    std::fflush(stdout);  // one line per epoch even when stdout is a file
    train::write_csv((out / "history.csv").string(), history);
  }

  io::save_checkpoint(net, out / "model.lck");
  nlohmann::json j;
  j["model"] = "resnet_fmnist";
  j["parameters"] = count_parameters(net);
  j["epochs"] = epochs;
  j["train_images"] = train.size();
  j["test_images"] = test.size();
  j["threads"] = num_threads();
  j["test_accuracy"] = history.back().test.accuracy;
  j["test_loss"] = history.back().test.loss;
  double secs = 0;
  for (auto& h : history) secs += h.train.seconds;
  j["train_seconds"] = secs;
  for (auto& h : history)
    j["history"].push_back({{"epoch", h.epoch}, {"train_loss", h.train.loss}, {"train_accuracy", h.train.accuracy},
                            {"test_loss", h.test.loss}, {"test_accuracy", h.test.accuracy},
                            {"images_per_second", h.train.images_per_second}});
  std::ofstream(out / "summary.json") << j.dump(2) << "\n";
  examples::Series tr{"train", {}, {}}, te{"test", {}, {}};
  for (auto& h : history) {
    tr.x.push_back(double(h.epoch));
    tr.y.push_back(100 * h.train.accuracy);
    te.x.push_back(double(h.epoch));
    te.y.push_back(100 * h.test.accuracy);
  }
  examples::write_svg_chart((out / "accuracy.svg").string(), "ResNet on Fashion-MNIST", "epoch", "accuracy (%)", {tr, te});
  std::printf("final test accuracy %.2f%%; results in %s (history.csv, summary.json, accuracy.svg, model.lck)\n",
              100 * history.back().test.accuracy, out.string().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "resnet_fmnist: %s\n", e.what());
  return 1;
}
