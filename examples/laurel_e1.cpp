// Experiment E1 (spec/experiments.md): LAUREL on the CIFAR-style ResNet, Fashion-MNIST.
// Variants: baseline; "+1 layer" (3 blocks per stage); RW; RW+LR (r = 4, 8);
// RW+LR+PA (k = 2, r = 4). Per run: test accuracy, added parameters (from the
// model itself), training-step time and inference latency, both as ratios to the
// baseline of the same seed in the same process. Writes runs.csv, summary.json
// and accuracy_vs_params.svg; prints a table and whether each claim held.
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/svg_plot.hpp"
#include "lamina/lamina.hpp"

using namespace lamina;

namespace {

struct Settings {
  long epochs, batch;
  double lr, momentum, wd;
};
struct Run {
  std::string variant;
  std::uint64_t seed;
  double accuracy;
  ParameterCount params;
  double ms_per_step, infer_us_per_image;
};

template <class Net>
Run train_one(const std::string& name, Net net, std::uint64_t seed, const Settings& s, data::Loader<float>& train_loader,
              data::Loader<float>& test_loader, train::Progress& progress) {
  optim::SGD<float> opt(net, {s.lr, s.momentum, 0.0, s.wd, false});
  const double steps = double(train_loader.batches());
  const optim::CosineLR schedule(s.lr, double(s.epochs) * steps);
  SoftmaxCrossEntropy<float> loss;
  double last_epoch_seconds = 0;  // the step time of the last epoch: the first pays for allocation
  train::EpochStats ev;
  for (long e = 0; e < s.epochs; ++e) {
    const std::string label = name + " seed " + std::to_string(seed) + " epoch " + std::to_string(e + 1) + "/" + std::to_string(s.epochs);
    const auto st = train::train_epoch(net, loss, opt, train_loader, progress, label,
                                       [&](index_t step) { return schedule(double(e) * steps + double(step)); });
    last_epoch_seconds = st.seconds;
    ev = train::evaluate(net, test_loader);
    std::printf("  %s: train loss %.4f acc %.2f%% | test acc %.2f%% | %.1f s\n", label.c_str(), st.loss,
                100 * st.accuracy, 100 * ev.accuracy, st.seconds);
    std::fflush(stdout);
  }
  // Inference latency: a second evaluation pass, timed alone.
  const auto inf = train::evaluate(net, test_loader);
  return {name, seed, ev.accuracy, parameter_count(net), 1e3 * last_epoch_seconds / steps,
          1e6 * inf.seconds / double(inf.images)};
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / double(v.size());
}
double stdev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size() - 1));
}

}  // namespace

int main(int argc, char** argv) try {
  cxxopts::Options cli("laurel_e1", "E1: LAUREL variants of the ResNet on Fashion-MNIST");
  cli.add_options()
    ("data", "Fashion-MNIST folder", cxxopts::value<std::string>()->default_value(data::default_fashion_mnist_dir().string()))
    ("full", "the full run: all images, 10 epochs, 3 seeds")
    ("epochs", "epochs (default 1, or 10 with --full)", cxxopts::value<long>())
    ("seeds", "seeds per variant (default 1, or 3 with --full)", cxxopts::value<long>())
    ("train-limit", "first N training images (0 = all; default 4096, or all with --full)", cxxopts::value<long>())
    ("test-limit", "first N test images (0 = all; default 2000, or all with --full)", cxxopts::value<long>())
    ("variants", "comma-separated subset of: baseline,plus1,rw,rw_lr4,rw_lr8,rw_lr_pa",
     cxxopts::value<std::string>()->default_value("baseline,plus1,rw,rw_lr4,rw_lr8,rw_lr_pa"))
    ("batch", "batch size", cxxopts::value<long>()->default_value("128"))
    ("lr", "base learning rate (cosine per step)", cxxopts::value<double>()->default_value("0.1"))
    ("threads", "threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
    ("out", "output folder", cxxopts::value<std::string>()->default_value("results/laurel_e1"))
    ("h,help", "show this help");
  const auto a = cli.parse(argc, argv);
  if (a.count("help")) {
    std::puts(cli.help().c_str());
    return 0;
  }
  const bool full = a.count("full") > 0;
  Settings s{a.count("epochs") ? a["epochs"].as<long>() : (full ? 10 : 1), a["batch"].as<long>(), a["lr"].as<double>(), 0.9, 5e-4};
  const long seeds = a.count("seeds") ? a["seeds"].as<long>() : (full ? 3 : 1);
  const long train_limit = a.count("train-limit") ? a["train-limit"].as<long>() : (full ? 0 : 4096);
  const long test_limit = a.count("test-limit") ? a["test-limit"].as<long>() : (full ? 0 : 2000);
  require(s.epochs > 0, "laurel_e1", "--epochs", "> 0", s.epochs);
  require(seeds > 0, "laurel_e1", "--seeds", "> 0", seeds);
  if (a["threads"].as<int>() > 0) set_num_threads(a["threads"].as<int>());
  std::vector<std::string> variants;
  {
    std::string list = a["variants"].as<std::string>(), item;
    std::stringstream ss(list);
    while (std::getline(ss, item, ','))
      if (!item.empty()) variants.push_back(item);
  }
  const std::filesystem::path out = a["out"].as<std::string>();
  std::filesystem::create_directories(out);

  const auto dir = a["data"].as<std::string>();
  const data::Dataset train = data::load_fashion_mnist(dir, "train", train_limit);
  const data::Dataset test = data::load_fashion_mnist(dir, "test", test_limit);
  const data::Normalization norm = data::statistics(train);
  std::printf("E1 LAUREL on Fashion-MNIST: %ld train / %ld test images, %ld epochs, %ld seed(s), batch %ld, %d threads\n",
              long(train.size()), long(test.size()), s.epochs, seeds, s.batch, num_threads());

  train::Progress progress;
  std::vector<Run> runs;
  for (long k = 0; k < seeds; ++k) {
    const std::uint64_t seed = std::uint64_t(k + 1);
    for (const std::string& v : variants) {
      // Same seed: same data order and augmentation, and (column-orthogonal A)
      // the same body weights as the baseline.
      data::Loader<float> train_loader(train, s.batch, norm, true, data::Augmentation{2, true}, seed), test_loader(test, 500, norm);
      Rng rng(seed);
      laurel::Options lo;
      lo.rank = 4, lo.history = 2;
      ResNetOptions ro;
      if (v == "baseline") {
        runs.push_back(train_one(v, make_resnet<float>(ro, rng), seed, s, train_loader, test_loader, progress));
      } else if (v == "plus1") {
        ro.blocks_per_stage = 3;
        runs.push_back(train_one(v, make_resnet<float>(ro, rng), seed, s, train_loader, test_loader, progress));
      } else if (v == "rw") {
        runs.push_back(train_one(v, make_laurel_resnet<float, laurel::RW>(ro, lo, rng), seed, s, train_loader, test_loader, progress));
      } else if (v == "rw_lr4" || v == "rw_lr8") {
        lo.rank = v == "rw_lr4" ? 4 : 8;
        runs.push_back(train_one(v, make_laurel_resnet<float, laurel::RW_LR>(ro, lo, rng), seed, s, train_loader, test_loader, progress));
      } else if (v == "rw_lr_pa") {
        runs.push_back(train_one(v, make_laurel_resnet<float, laurel::RW_LR_PA>(ro, lo, rng), seed, s, train_loader, test_loader, progress));
      } else {
        throw value_error("lamina::laurel_e1: --variants: expected baseline, plus1, rw, rw_lr4, rw_lr8 or rw_lr_pa, got " + v);
      }
    }
  }

  // Ratios to the baseline of the same seed; added parameters of "+1 layer"
  // are its excess over the baseline.
  std::map<std::uint64_t, const Run*> base;
  for (const Run& r : runs)
    if (r.variant == "baseline") base[r.seed] = &r;
  struct Agg {
    std::vector<double> acc, step_ratio, infer_ratio;
    index_t added = 0;
    double added_pct = 0;
  };
  std::map<std::string, Agg> agg;
  std::ofstream csv(out / "runs.csv");
  csv << "variant,seed,test_accuracy,params,added_params,added_percent,ms_per_step,infer_us_per_image,step_ratio,infer_ratio\n";
  for (const Run& r : runs) {
    Agg& g = agg[r.variant];
    index_t added = r.params.added;
    double pct = r.params.added_percent();
    if (r.variant == "plus1" && base.count(r.seed)) {
      added = r.params.total - base[r.seed]->params.total;
      pct = 100.0 * double(added) / double(base[r.seed]->params.total);
    }
    const double sr = base.count(r.seed) ? r.ms_per_step / base[r.seed]->ms_per_step : NAN;
    const double ir = base.count(r.seed) ? r.infer_us_per_image / base[r.seed]->infer_us_per_image : NAN;
    g.acc.push_back(100 * r.accuracy), g.step_ratio.push_back(sr), g.infer_ratio.push_back(ir);
    g.added = added, g.added_pct = pct;
    csv << r.variant << ',' << r.seed << ',' << r.accuracy << ',' << r.params.total << ',' << added << ',' << pct << ','
        << r.ms_per_step << ',' << r.infer_us_per_image << ',' << sr << ',' << ir << '\n';
  }

  nlohmann::json j;
  j["experiment"] = "E1";
  j["epochs"] = s.epochs, j["seeds"] = seeds, j["train_images"] = train.size(), j["test_images"] = test.size();
  j["threads"] = num_threads();
  std::printf("\n%-10s %16s %14s %10s %12s %12s\n", "variant", "test acc (%)", "added params", "added %", "step ratio",
              "infer ratio");
  std::vector<examples::Series> plot;
  for (const std::string& v : variants) {
    const Agg& g = agg[v];
    std::printf("%-10s %9.2f ± %4.2f %14ld %9.3f%% %12.3f %12.3f\n", v.c_str(), mean(g.acc), stdev(g.acc), long(g.added),
                g.added_pct, mean(g.step_ratio), mean(g.infer_ratio));
    j["variants"][v] = {{"test_accuracy_mean", mean(g.acc)}, {"test_accuracy_std", stdev(g.acc)}, {"added_params", g.added},
                        {"added_percent", g.added_pct}, {"step_time_ratio", mean(g.step_ratio)},
                        {"inference_latency_ratio", mean(g.infer_ratio)}, {"accuracies", g.acc}};
    plot.push_back({v, {g.added_pct}, {mean(g.acc)}});
  }

  // The paper's claims (spec/experiments.md E1), judged on the means.
  auto has = [&](const char* v) { return agg.count(v) > 0; };
  if (has("baseline") && has("rw")) {
    const bool held = mean(agg["rw"].acc) > mean(agg["baseline"].acc) && mean(agg["rw"].step_ratio) <= 1.01;
    std::printf("claim RW gains accuracy for ~0 params at <= 1%% step time: %s (%+.2f points, step ratio %.3f)\n",
                held ? "held" : "did not hold", mean(agg["rw"].acc) - mean(agg["baseline"].acc), mean(agg["rw"].step_ratio));
    j["claims"]["rw"] = held;
  }
  for (const char* lr : {"rw_lr4", "rw_lr8"})
    if (has("plus1") && has(lr)) {
      const double fewer = double(agg["plus1"].added) / double(std::max<index_t>(1, agg[lr].added));
      const bool held = mean(agg[lr].acc) >= mean(agg["plus1"].acc) && fewer >= 2;
      std::printf("claim %s reaches +1 layer accuracy with >= 2x fewer added params: %s (%+.2f points, %.1fx fewer)\n", lr,
                  held ? "held" : "did not hold", mean(agg[lr].acc) - mean(agg["plus1"].acc), fewer);
      j["claims"][std::string(lr) + "_vs_plus1"] = held;
    }
  if (has("rw_lr_pa") && has("rw_lr4")) {
    const bool held = mean(agg["rw_lr_pa"].acc) >= mean(agg["rw_lr4"].acc);
    std::printf("claim RW+LR+PA >= RW+LR (r = 4): %s (%+.2f points)\n", held ? "held" : "did not hold",
                mean(agg["rw_lr_pa"].acc) - mean(agg["rw_lr4"].acc));
    j["claims"]["rw_lr_pa_vs_rw_lr"] = held;
  }
  std::ofstream(out / "summary.json") << j.dump(2) << "\n";
  examples::write_svg_chart((out / "accuracy_vs_params.svg").string(), "E1: LAUREL on Fashion-MNIST", "added parameters (%)",
                            "test accuracy (%)", plot);
  std::printf("results in %s (runs.csv, summary.json, accuracy_vs_params.svg)\n", out.string().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "laurel_e1: %s\n", e.what());
  return 1;
}
