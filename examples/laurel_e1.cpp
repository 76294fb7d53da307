// Experiment E1 (spec/experiments.md): LAUREL on the CIFAR-style ResNet, Fashion-MNIST.
// Variants: baseline; "+1 layer" (3 blocks per stage); RW; RW+LR (r = 4, 8);
// RW+LR+PA (k = 2, r = 4).
//
// Two phases:
//  1. Training: every (variant, seed) run trains from scratch and reports its
//     test accuracy and parameter counts (from the model itself). Each finished
//     run is recorded at once in <out>/runs.json (written atomically), and a
//     later invocation with the same settings skips the recorded runs, so the
//     full run (18 × 10 epochs, hours on 2 cores) can be spread over sessions.
//  2. Timing: all variants are built side by side and timed in interleaved
//     rounds on the same batches (training step and inference), so the ratios
//     to the baseline come from one process on one machine, whatever machines
//     the training runs used; the medians over rounds are reported.
// Writes runs.json, runs.csv, timing.csv, summary.json and
// accuracy_vs_params.svg; prints a table and whether each claim held.
//
// Data-parallel (built with MPI, lamina::mpi): `mpirun -np N laurel_e1 ...`
// trains each run on N processes, each on its shard of every batch (the same
// global batch size and schedule), gradients averaged after each backward;
// rank 0 alone prints, writes the files and runs the timing phase.
#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "common/svg_plot.hpp"
#include "lamina/lamina.hpp"
#ifdef LAMINA_WITH_MPI
#include "lamina/dist/mpi.hpp"
#endif

using namespace lamina;
using json = nlohmann::json;

namespace {

const std::vector<std::string> all_variants = {"baseline", "plus1", "rw", "rw_lr4", "rw_lr8", "rw_lr_pa"};

struct Settings {
  long epochs, batch;
  double lr, momentum, wd;
  long train_images, test_images;
  int processes = 1;  ///< data-parallel ranks (recorded only when > 1: BN statistics are then per shard)
  json to_json() const {
    json j = {{"epochs", epochs}, {"batch", batch}, {"lr", lr}, {"momentum", momentum}, {"weight_decay", wd},
              {"train_images", train_images}, {"test_images", test_images}};
    if (processes > 1) j["processes"] = processes;
    return j;
  }
};

/// Builds the network of variant `v` (seeded by `rng`) and hands it to `fn`.
/// The same seed gives the same body weights in every variant (LAUREL's A is
/// column-orthogonal, drawn after the body).
template <class Fn>
void with_variant(const std::string& v, Rng& rng, Fn&& fn) {
  laurel::Options lo;
  lo.rank = 4, lo.history = 2;
  ResNetOptions ro;
  if (v == "baseline") {
    fn(make_resnet<float>(ro, rng));
  } else if (v == "plus1") {
    ro.blocks_per_stage = 3;
    fn(make_resnet<float>(ro, rng));
  } else if (v == "rw") {
    fn(make_laurel_resnet<float, laurel::RW>(ro, lo, rng));
  } else if (v == "rw_lr4" || v == "rw_lr8") {
    lo.rank = v == "rw_lr4" ? 4 : 8;
    fn(make_laurel_resnet<float, laurel::RW_LR>(ro, lo, rng));
  } else if (v == "rw_lr_pa") {
    fn(make_laurel_resnet<float, laurel::RW_LR_PA>(ro, lo, rng));
  } else {
    throw value_error("lamina::laurel_e1: --variants: expected baseline, plus1, rw, rw_lr4, rw_lr8 or rw_lr_pa, got " + v);
  }
}

// ---- phase 1: training ------------------------------------------------------

template <class Net>
json train_one(const std::string& label, Net& net, std::uint64_t seed, const Settings& s, const data::Dataset& train,
               const data::Dataset& test, const data::Normalization& norm, train::Progress& progress,
               dist::Communicator& comm) {
  // Same seed: same data order and augmentation in every variant. Each rank
  // takes its shard of every batch; one process is the unsharded loader.
  const data::Shard shard{comm.rank(), comm.size()};
  data::Loader<float> train_loader(train, s.batch, norm, true, data::Augmentation{2, true}, seed, shard);
  data::Loader<float> test_loader(test, 500, norm, false, {}, 1, shard);
  dist::broadcast_parameters(net, comm);
  std::optional<dist::GradientAllReduce<float>> sync;  // one process: the plain step, bit for bit as before
  if (comm.size() > 1) sync.emplace(net, comm);
  optim::SGD<float> opt(net, {s.lr, s.momentum, 0.0, s.wd, false});
  const double steps = double(train_loader.batches());
  const optim::CosineLR schedule(s.lr, double(s.epochs) * steps);
  SoftmaxCrossEntropy<float> loss;
  json epochs = json::array();
  train::EpochStats ev;
  double train_seconds = 0;
  for (long e = 0; e < s.epochs; ++e) {
    const std::string el = label + " epoch " + std::to_string(e + 1) + "/" + std::to_string(s.epochs);
    const auto st = train::train_epoch(net, loss, opt, train_loader, progress, el,
                                       [&](index_t step) { return schedule(double(e) * steps + double(step)); },
                                       {}, sync ? &*sync : nullptr);
    ev = train::evaluate(net, test_loader, &comm);  // rank 0's BN statistics on every rank first
    train_seconds += st.seconds;
    if (comm.is_root()) std::printf("  %s: train loss %.4f acc %.2f%% | test acc %.2f%% | %.1f s (%.0f images/s)\n", el.c_str(), st.loss,
                100 * st.accuracy, 100 * ev.accuracy, st.seconds, st.images_per_second);
    std::fflush(stdout);
    epochs.push_back({{"train_loss", st.loss}, {"train_accuracy", st.accuracy}, {"test_loss", ev.loss},
                      {"test_accuracy", ev.accuracy}, {"seconds", st.seconds}});
  }
  const ParameterCount pc = parameter_count(net);
  return {{"seed", seed}, {"test_accuracy", ev.accuracy}, {"params", pc.total}, {"added_params", pc.added},
          {"train_seconds", train_seconds}, {"threads", num_threads()}, {"processes", comm.size()}, {"epochs", epochs}};
}

/// runs.json: {"settings": ..., "runs": {variant: [run, ...]}}. Records made
/// with other settings are refused rather than mixed.
json load_records(const std::filesystem::path& file, const Settings& s, bool fresh) {
  json fresh_records = {{"settings", s.to_json()}, {"runs", json::object()}};
  if (fresh || !std::filesystem::exists(file)) return fresh_records;
  std::ifstream in(file);
  json j;
  try {
    in >> j;
  } catch (const json::exception& e) {
    throw io_error("lamina::laurel_e1: " + file.string() + " is not valid JSON (" + e.what() + "); use --fresh to start over");
  }
  if (j.value("settings", json()) != s.to_json())
    throw value_error("lamina::laurel_e1: " + file.string() + " holds runs made with settings " + j.value("settings", json()).dump() +
                      ", not " + s.to_json().dump() + "; use another --out, or --fresh to start over");
  return j;
}

bool recorded(const json& records, const std::string& v, std::uint64_t seed) {
  if (!records["runs"].contains(v)) return false;
  for (const json& r : records["runs"][v])
    if (r["seed"].get<std::uint64_t>() == seed) return true;
  return false;
}

// ---- phase 2: interleaved timing -------------------------------------------

struct Timed {
  std::string variant;
  std::function<double()> train_steps;  // seconds for the timing batches
  std::function<double()> infer;        // seconds for inference on the same batches
};

template <class Net>
Timed make_timed(const std::string& v, Net&& built, const std::vector<Tensor<float>>& xs,
                 const std::vector<std::vector<std::int32_t>>& labels) {
  struct State {
    Net net;
    optim::SGD<float> opt;
    SoftmaxCrossEntropy<float> loss;
    Tensor<float> y, dy, dx, yi;
    explicit State(Net&& n) : net(std::move(n)), opt(net, {0.01, 0.9, 0.0, 5e-4, false}) {}
  };
  auto st = std::make_shared<State>(std::move(built));
  using clock = std::chrono::steady_clock;
  auto steps = [st, &xs, &labels] {
    set_training(st->net, true);
    const auto t0 = clock::now();
    for (std::size_t i = 0; i < xs.size(); ++i)
      train::train_step(st->net, st->loss, st->opt, xs[i].cview(), labels[i], 0.0, st->y, st->dy, st->dx);
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  auto infer = [st, &xs] {
    set_training(st->net, false);
    const auto t0 = clock::now();
    for (const Tensor<float>& x : xs) {
      st->yi.resize(st->net.output_shape(x.shape()));
      st->net.infer(x.cview(), st->yi.view());
    }
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  return {v, steps, infer};
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / double(v.size());
}
double stdev(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size() - 1));
}

struct Timing {
  double ms_per_step, us_per_image, step_ratio, infer_ratio;
};

/// Rounds × (every variant: `steps` training steps, then inference on the
/// same batches), the variant order rotated each round; ratios to the
/// baseline per round, then medians. Needs "baseline" among the variants for
/// the ratios. Inference uses the training batch size: buffers shared by the
/// training and inference passes of a module are then never regrown (growing
/// a std::vector zero-fills, which would bill the reallocation to whichever
/// variant keeps fewer separate inference buffers).
std::map<std::string, Timing> time_variants(const std::vector<std::string>& variants, const data::Dataset& train,
                                            const data::Normalization& norm, long batch, long rounds, long steps,
                                            const std::filesystem::path& csv_path) {
  data::Loader<float> loader(train, batch, norm, true, data::Augmentation{2, true}, 1);
  loader.start_epoch();
  std::vector<Tensor<float>> xs(static_cast<std::size_t>(std::min<index_t>(steps, loader.batches())));
  std::vector<std::vector<std::int32_t>> labels(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) loader.batch(index_t(i), xs[i], labels[i]);

  std::vector<Timed> timed;
  for (const std::string& v : variants) {
    Rng rng(1);
    with_variant(v, rng, [&](auto&& net) { timed.push_back(make_timed(v, std::move(net), xs, labels)); });
  }
  for (Timed& t : timed) t.train_steps(), t.infer();  // warm-up: allocation, caches
  std::map<std::string, std::vector<double>> step_s, infer_s;
  std::ofstream csv(csv_path);
  csv << "round,variant,ms_per_step,infer_us_per_image\n";
  double images = 0;
  for (const Tensor<float>& x : xs) images += double(x.dim(0));
  std::fprintf(stderr, "timing: %ld rounds of %zu training steps and inference on the same %.0f images per variant\n",
               rounds, xs.size(), images);
  for (long r = 0; r < rounds; ++r) {
    for (std::size_t k = 0; k < timed.size(); ++k) {
      Timed& t = timed[(k + std::size_t(r)) % timed.size()];
      const double a = t.train_steps(), b = t.infer();
      step_s[t.variant].push_back(a), infer_s[t.variant].push_back(b);
      csv << r + 1 << ',' << t.variant << ',' << 1e3 * a / double(xs.size()) << ',' << 1e6 * b / images
          << '\n';
    }
    std::fprintf(stderr, "\rtiming: round %ld/%ld", r + 1, rounds);
  }
  std::fprintf(stderr, "\n");
  std::map<std::string, Timing> out;
  for (const std::string& v : variants) {
    std::vector<double> sr, ir;
    if (step_s.count("baseline"))
      for (std::size_t r = 0; r < step_s[v].size(); ++r) {
        sr.push_back(step_s[v][r] / step_s["baseline"][r]);
        ir.push_back(infer_s[v][r] / infer_s["baseline"][r]);
      }
    out[v] = {1e3 * median(step_s[v]) / double(xs.size()), 1e6 * median(infer_s[v]) / images, median(sr),
              median(ir)};
  }
  return out;
}

}  // namespace

int run(int argc, char** argv, dist::Communicator& comm) {
  const bool root = comm.is_root();
  cxxopts::Options cli("laurel_e1", "E1: LAUREL variants of the ResNet on Fashion-MNIST");
  cli.add_options()
    ("data", "Fashion-MNIST folder", cxxopts::value<std::string>()->default_value(data::default_fashion_mnist_dir().string()))
    ("full", "the full run: all images, 10 epochs, 3 seeds, 7 timing rounds")
    ("epochs", "epochs (default 1, or 10 with --full)", cxxopts::value<long>())
    ("seeds", "seeds per variant (default 1, or 3 with --full)", cxxopts::value<long>())
    ("train-limit", "first N training images (0 = all; default 4096, or all with --full)", cxxopts::value<long>())
    ("test-limit", "first N test images (0 = all; default 2000, or all with --full)", cxxopts::value<long>())
    ("variants", "comma-separated subset of: baseline,plus1,rw,rw_lr4,rw_lr8,rw_lr_pa",
     cxxopts::value<std::string>()->default_value("baseline,plus1,rw,rw_lr4,rw_lr8,rw_lr_pa"))
    ("batch", "batch size", cxxopts::value<long>()->default_value("128"))
    ("lr", "base learning rate (cosine per step)", cxxopts::value<double>()->default_value("0.1"))
    ("threads", "threads (0 = all cores)", cxxopts::value<int>()->default_value("0"))
    ("timing-rounds", "interleaved timing rounds (0 = no timing; default 3, or 7 with --full)", cxxopts::value<long>())
    ("timing-steps", "training steps per variant and round", cxxopts::value<long>()->default_value("10"))
    ("train-only", "train the runs not yet recorded, then stop (no timing, no summary)")
    ("no-train", "train nothing: time the variants and summarise the runs already recorded")
    ("fresh", "ignore the runs already recorded in <out>/runs.json")
    ("out", "output folder (default results/laurel_e1, or results/laurel_e1_full with --full: the recorded full run, resumed)",
     cxxopts::value<std::string>())
    ("h,help", "show this help");
  const auto a = cli.parse(argc, argv);
  if (a.count("help")) {
    if (!root) return 0;
    std::puts(cli.help().c_str());
    return 0;
  }
  const bool full = a.count("full") > 0;
  const long seeds = a.count("seeds") ? a["seeds"].as<long>() : (full ? 3 : 1);
  const long train_limit = a.count("train-limit") ? a["train-limit"].as<long>() : (full ? 0 : 4096);
  const long test_limit = a.count("test-limit") ? a["test-limit"].as<long>() : (full ? 0 : 2000);
  const long rounds = a.count("timing-rounds") ? a["timing-rounds"].as<long>() : (full ? 7 : 3);
  const long timing_steps = a["timing-steps"].as<long>();
  const long epochs = a.count("epochs") ? a["epochs"].as<long>() : (full ? 10 : 1);
  require(epochs > 0, "laurel_e1", "--epochs", "> 0", epochs);
  require(seeds > 0, "laurel_e1", "--seeds", "> 0", seeds);
  require(rounds >= 0, "laurel_e1", "--timing-rounds", ">= 0", rounds);
  require(timing_steps > 0, "laurel_e1", "--timing-steps", "> 0", timing_steps);
  if (a["threads"].as<int>() > 0) set_num_threads(a["threads"].as<int>());
  std::vector<std::string> variants;
  {
    std::string item;
    std::stringstream ss(a["variants"].as<std::string>());
    while (std::getline(ss, item, ','))
      if (!item.empty()) {
        if (std::find(all_variants.begin(), all_variants.end(), item) == all_variants.end())
          throw value_error("lamina::laurel_e1: --variants: expected baseline, plus1, rw, rw_lr4, rw_lr8 or rw_lr_pa, got " + item);
        variants.push_back(item);
      }
  }
  const std::filesystem::path out = a.count("out") ? a["out"].as<std::string>() : full ? "results/laurel_e1_full" : "results/laurel_e1";
  if (root) std::filesystem::create_directories(out);

  const auto dir = a["data"].as<std::string>();
  const data::Dataset train = data::load_fashion_mnist(dir, "train", train_limit);
  const data::Dataset test = data::load_fashion_mnist(dir, "test", test_limit);
  const data::Normalization norm = data::statistics(train);
  const Settings s{epochs, a["batch"].as<long>(), a["lr"].as<double>(), 0.9, 5e-4, long(train.size()), long(test.size()),
                   comm.size()};
  require(s.batch >= comm.size(), "laurel_e1", "--batch", detail::text(">= the number of processes, ", comm.size()), s.batch);
  if (root)
    std::printf("E1 LAUREL on Fashion-MNIST: %ld train / %ld test images, %ld epochs, %ld seed(s), batch %ld, "
                "%d process(es) x %d threads\n",
                s.train_images, s.test_images, s.epochs, seeds, s.batch, comm.size(), num_threads());

  // Phase 1: the runs not yet recorded, seed-major so that partial results
  // already compare every variant.
  const std::filesystem::path records_file = out / "runs.json";
  // Rank 0 reads the records (other machines may not have the file) and sends them to all.
  std::string records_text = root ? load_records(records_file, s, a.count("fresh") > 0).dump() : std::string();
  dist::broadcast(comm, records_text);
  json records = json::parse(records_text);
  std::vector<std::pair<std::string, std::uint64_t>> todo;
  for (long k = 0; k < seeds; ++k)
    for (const std::string& v : variants)
      if (!recorded(records, v, std::uint64_t(k + 1))) todo.emplace_back(v, std::uint64_t(k + 1));
  const long total_runs = seeds * long(variants.size());
  if (root) std::printf("%ld of %ld runs already recorded in %s; %zu to train\n", total_runs - long(todo.size()), total_runs,
              records_file.string().c_str(), a.count("no-train") ? std::size_t(0) : todo.size());
  train::Progress progress;
  const auto t_start = std::chrono::steady_clock::now();
  if (a.count("no-train")) todo.clear();
  for (std::size_t i = 0; i < todo.size(); ++i) {
    // Named copies, not structured bindings: clang 14 cannot capture those in a lambda.
    const std::string& v = todo[i].first;
    const auto seed = todo[i].second;
    const std::string label = "[" + std::to_string(i + 1) + "/" + std::to_string(todo.size()) + "] " + v + " seed " + std::to_string(seed);
    Rng rng(seed);
    with_variant(v, rng, [&](auto&& net) {
      records["runs"][v].push_back(train_one(label, net, seed, s, train, test, norm, progress, comm));
    });
    if (!root) continue;
    io::write_file_atomically(records_file, records.dump(1) + "\n", "lamina::laurel_e1");
    const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::printf("  recorded %s seed %llu in %s; %zu run(s) left, ETA %s\n", v.c_str(), static_cast<unsigned long long>(seed),
                records_file.string().c_str(), todo.size() - i - 1,
                train::format_duration(spent / double(i + 1) * double(todo.size() - i - 1)).c_str());
    std::fflush(stdout);
  }
  comm.barrier();
  if (a.count("train-only") || !root) return 0;  // timing and summary: rank 0 alone

  // Phase 2: timing, then the table from every recorded run of the variants.
  std::map<std::string, Timing> timing;
  if (rounds > 0)
    timing = time_variants(variants, train, norm, s.batch, rounds, timing_steps, out / "timing.csv");
  const json& runs = records["runs"];
  auto accs = [&](const std::string& v) {
    std::vector<double> acc;
    if (runs.contains(v))
      for (const json& r : runs[v])
        if (r["seed"].get<long>() <= seeds) acc.push_back(100 * r["test_accuracy"].get<double>());
    return acc;
  };
  // Parameter counts from the models themselves (every seed builds the same shapes).
  auto count = [](const std::string& v) {
    Rng rng(1);
    ParameterCount pc;
    with_variant(v, rng, [&](auto&& net) { pc = parameter_count(net); });
    return pc;
  };
  const index_t base_params = count("baseline").total;
  auto added = [&](const std::string& v) -> index_t {
    const ParameterCount pc = count(v);
    // "+1 layer" adds whole blocks: its added parameters are its excess over the baseline.
    return v == "plus1" ? pc.total - base_params : pc.added;
  };
  std::ofstream csv(out / "runs.csv");
  csv << "variant,seed,test_accuracy,params,added_params,train_seconds\n";
  for (const std::string& v : variants)
    if (runs.contains(v))
      for (const json& r : runs[v])
        csv << v << ',' << r["seed"] << ',' << r["test_accuracy"] << ',' << r["params"] << ',' << added(v) << ','
            << r["train_seconds"] << '\n';

  json j;
  j["experiment"] = "E1";
  j["settings"] = s.to_json();
  j["seeds"] = seeds, j["threads"] = num_threads();
  j["timing"] = {{"rounds", rounds}, {"steps_per_round", timing_steps}, {"statistic", "median over rounds"}};
  std::printf("\n%-10s %6s %16s %14s %10s %12s %12s %12s\n", "variant", "runs", "test acc (%)", "added params", "added %",
              "ms/step", "step ratio", "infer ratio");
  std::vector<examples::Series> plot;
  std::map<std::string, double> acc_mean;
  for (const std::string& v : variants) {
    const auto acc = accs(v);
    const index_t add = added(v);
    const double pct = base_params > 0 ? 100.0 * double(add) / double(base_params) : NAN;
    const Timing t = timing.count(v) ? timing[v] : Timing{NAN, NAN, NAN, NAN};
    acc_mean[v] = mean(acc);
    std::printf("%-10s %6zu %9.2f ± %4.2f %14ld %9.3f%% %12.1f %12.3f %12.3f\n", v.c_str(), acc.size(), mean(acc),
                stdev(acc), long(add), pct, t.ms_per_step, t.step_ratio, t.infer_ratio);
    j["variants"][v] = {{"runs", acc.size()}, {"test_accuracy_mean", mean(acc)}, {"test_accuracy_std", stdev(acc)},
                        {"accuracies", acc}, {"added_params", add}, {"added_percent", pct},
                        {"ms_per_step", t.ms_per_step}, {"infer_us_per_image", t.us_per_image},
                        {"step_time_ratio", t.step_ratio}, {"inference_latency_ratio", t.infer_ratio}};
    if (!acc.empty()) plot.push_back({v, {pct}, {mean(acc)}});
  }

  // The paper's claims (spec/experiments.md E1), judged on the means; only
  // when every variant involved has all its seeds.
  auto complete = [&](const char* v) { return long(accs(v).size()) == seeds; };
  auto verdict = [](bool held) { return held ? "held" : "did not hold"; };
  if (complete("baseline") && complete("rw")) {
    const double ratio = timing.count("rw") ? timing["rw"].step_ratio : NAN;
    const bool held = acc_mean["rw"] > acc_mean["baseline"] && ratio <= 1.01;
    std::printf("claim RW gains accuracy for ~0 params at <= 1%% step time: %s (%+.2f points, step ratio %.3f)\n",
                verdict(held), acc_mean["rw"] - acc_mean["baseline"], ratio);
    j["claims"]["rw"] = held;
  }
  for (const char* lr : {"rw_lr4", "rw_lr8"})
    if (complete("plus1") && complete(lr)) {
      const double fewer = double(added("plus1")) / double(std::max<index_t>(1, added(lr)));
      const bool held = acc_mean[lr] >= acc_mean["plus1"] && fewer >= 2;
      std::printf("claim %s reaches +1 layer accuracy with >= 2x fewer added params: %s (%+.2f points, %.1fx fewer)\n", lr,
                  verdict(held), acc_mean[lr] - acc_mean["plus1"], fewer);
      j["claims"][std::string(lr) + "_vs_plus1"] = held;
    }
  if (complete("rw_lr_pa") && complete("rw_lr4")) {
    const bool held = acc_mean["rw_lr_pa"] >= acc_mean["rw_lr4"];
    std::printf("claim RW+LR+PA >= RW+LR (r = 4): %s (%+.2f points)\n", verdict(held),
                acc_mean["rw_lr_pa"] - acc_mean["rw_lr4"]);
    j["claims"]["rw_lr_pa_vs_rw_lr"] = held;
  }
  if (!j.contains("claims"))
    std::printf("no claim judged: each needs all %ld seed(s) of the variants it compares (see the runs column)\n", seeds);
  io::write_file_atomically(out / "summary.json", j.dump(2) + "\n", "lamina::laurel_e1");
  examples::write_svg_chart((out / "accuracy_vs_params.svg").string(), "E1: LAUREL on Fashion-MNIST", "added parameters (%)",
                            "test accuracy (%)", plot);
  std::printf("results in %s (runs.json, runs.csv, timing.csv, summary.json, accuracy_vs_params.svg)\n", out.string().c_str());
  return 0;
}

int main(int argc, char** argv) {
#ifdef LAMINA_WITH_MPI
  dist::MpiEnvironment mpi(argc, argv);  // a singleton without mpirun
  dist::MpiCommunicator comm;
#else
  dist::LocalCommunicator comm;
#endif
  try {
    // Several processes: an error on one rank aborts the job with its message.
    return dist::run_or_abort(comm, [&] { return run(argc, argv, comm); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "laurel_e1: %s\n", e.what());
    return 1;
  }
}
