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
// accuracy_vs_params.svg; prints a table and each claim's verdict by the rule
// of common/claims.hpp (Welch's t over seeds at α = 0.05: held, did not hold,
// or not shown at this sample size), with the numbers.
//
// Data-parallel (built with MPI, lamina::mpi): `mpirun -np N laurel_e1 ...`
// trains each run on N processes, each on its shard of every batch (the same
// global batch size and schedule), gradients averaged after each backward;
// rank 0 alone prints, writes the files and runs the timing phase.
#include <cxxopts.hpp>

#include <cstdio>
#include <filesystem>
#include <map>

#include "common/claims.hpp"
#include "common/cli.hpp"
#include "common/experiment.hpp"
#include "common/svg_plot.hpp"
#include "lamina/lamina.hpp"
#ifdef LAMINA_WITH_MPI
#include "lamina/dist/mpi.hpp"
#endif

using namespace lamina;
using examples::json;
namespace cl = examples::claims;

namespace {

const std::vector<std::string> all_variants = {"baseline", "plus1", "rw", "rw_lr4", "rw_lr8", "rw_lr_pa"};

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

struct Config {
  std::string data;
  long seeds, train_limit, test_limit, rounds, timing_steps, epochs, batch;
  double lr, margin;
  std::vector<std::string> variants;
  std::filesystem::path out;
  bool train_only, no_train, fresh;
};

cxxopts::Options make_cli() {
  cxxopts::Options cli("laurel_e1", "E1: LAUREL variants of the ResNet on Fashion-MNIST");
  examples::add_shared_options(cli, {.program = "laurel_e1",
                                     .variants = "baseline,plus1,rw,rw_lr4,rw_lr8,rw_lr_pa",
                                     .epochs = 1,
                                     .train_limit = 4096,
                                     .test_limit = 2000});
  cli.add_options()
    ("margin", "non-inferiority margin in accuracy points for the \"reaches\" and \">=\" claims (0: held only "
     "when significantly above)", cxxopts::value<double>()->default_value("0"));
  return cli;
}

Config configure(const cxxopts::ParseResult& a) {
  const bool full = a.count("full") > 0;
  auto pick = [&](const char* k, long quick, long whole) { return a.count(k) ? a[k].as<long>() : (full ? whole : quick); };
  Config c{a["data"].as<std::string>(), pick("seeds", 1, 3), pick("train-limit", 4096, 0), pick("test-limit", 2000, 0),
           pick("timing-rounds", 3, 7), a["timing-steps"].as<long>(), pick("epochs", 1, 10), a["batch"].as<long>(),
           a["lr"].as<double>(), a["margin"].as<double>(),
           examples::parse_variants(a["variants"].as<std::string>(), all_variants, "laurel_e1"),
           a.count("out") ? a["out"].as<std::string>() : full ? "results/laurel_e1_full" : "results/laurel_e1",
           a.count("train-only") > 0, a.count("no-train") > 0, a.count("fresh") > 0};
  examples::validate("laurel_e1", c.epochs, c.seeds, c.rounds, c.timing_steps);
  require(c.margin >= 0, "laurel_e1", "--margin", ">= 0", c.margin);
  if (a["threads"].as<int>() > 0) set_num_threads(a["threads"].as<int>());
  return c;
}

std::map<std::string, examples::Timing> time_variants(const Config& c, const examples::RunData& d) {
  const examples::TimingBatches b = examples::timing_batches(d.train, d.norm, c.batch, c.timing_steps);
  std::vector<examples::Timed> timed;
  for (const std::string& v : c.variants) {
    Rng rng(1);
    with_variant(v, rng, [&](auto&& net) { timed.push_back(examples::make_timed(v, std::move(net), b)); });
  }
  return examples::time_interleaved(timed, b, c.rounds, "baseline", c.out / "timing.csv");
}

// Parameter counts from the models themselves (every seed builds the same shapes).
ParameterCount count(const std::string& v) {
  Rng rng(1);
  ParameterCount pc;
  with_variant(v, rng, [&](auto&& net) { pc = parameter_count(net); });
  return pc;
}
index_t added(const std::string& v) {
  // "+1 layer" adds whole blocks: its added parameters are its excess over the baseline.
  return v == "plus1" ? count(v).total - count("baseline").total : count(v).added;
}

/// The paper's claims (spec/experiments.md E1) by the rule of common/claims.hpp.
void judge_claims(json& j, const Config& c, const examples::Records& rec, std::map<std::string, examples::Timing>& timing) {
  auto acc = [&](const std::string& v) { return rec.values(v, c.seeds, "test_accuracy", 100); };
  auto has = [&](const char* v) { return std::find(c.variants.begin(), c.variants.end(), v) != c.variants.end(); };
  char margin_text[32];
  std::snprintf(margin_text, sizeof margin_text, "%g", c.margin);
  const std::string margin = margin_text;
  if (has("baseline") && has("rw")) {
    const cl::Welch w = cl::welch(acc("rw"), acc("baseline"));
    const double ratio = timing.count("rw") ? timing["rw"].step_ratio : NAN;
    const cl::Verdict time = ratio == ratio ? cl::condition(ratio <= 1.01) : cl::Verdict::not_shown;
    char r[64];
    std::snprintf(r, sizeof r, "; step ratio %.3f (<= 1.01)", ratio);
    examples::report_claim(j, "rw", "RW gains accuracy for ~0 params at <= 1% step time",
                           cl::all_of({cl::judge(w, cl::Direction::greater), time}), "test acc % rw vs baseline: " + cl::format(w) + r,
                           {{"accuracy_test", examples::to_json(w)}, {"step_ratio", ratio}});
  }
  for (const char* lr : {"rw_lr4", "rw_lr8"})
    if (has("plus1") && has(lr)) {
      const cl::Welch w = cl::welch(acc(lr), cl::shifted(acc("plus1"), -c.margin));
      const double fewer = double(added("plus1")) / double(std::max<index_t>(1, added(lr)));
      char r[96];
      std::snprintf(r, sizeof r, "; %.1fx fewer added params (>= 2)", fewer);
      examples::report_claim(j, std::string(lr) + "_vs_plus1",
                             std::string(lr) + " reaches +1 layer accuracy (within " + margin + " points) with >= 2x fewer added params",
                             cl::all_of({cl::judge(w, cl::Direction::greater), cl::condition(fewer >= 2)}),
                             "test acc % " + std::string(lr) + " vs (+1 layer − margin): " + cl::format(w) + r,
                             {{"accuracy_test", examples::to_json(w)}, {"fewer_added_params", fewer}});
    }
  if (has("rw_lr_pa") && has("rw_lr4")) {
    const cl::Welch w = cl::welch(acc("rw_lr_pa"), cl::shifted(acc("rw_lr4"), -c.margin));
    examples::report_claim(j, "rw_lr_pa_vs_rw_lr", "RW+LR+PA >= RW+LR (r = 4) (within " + margin + " points)",
                           cl::judge(w, cl::Direction::greater), "test acc % rw_lr_pa vs (rw_lr4 − margin): " + cl::format(w),
                           {{"accuracy_test", examples::to_json(w)}});
  }
}

void summarize(const Config& c, const examples::Settings& s, const examples::Records& rec,
               std::map<std::string, examples::Timing>& timing) {
  const index_t base_params = count("baseline").total;
  std::ofstream csv(c.out / "runs.csv");
  csv << "variant,seed,test_accuracy,params,added_params,train_seconds\n";
  for (const std::string& v : c.variants)
    for (const json& r : rec.of(v, c.seeds))
      csv << v << ',' << r["seed"] << ',' << r["test_accuracy"] << ',' << r["params"] << ',' << added(v) << ','
          << r["train_seconds"] << '\n';
  json j = {{"experiment", "E1"}, {"settings", s.to_json()}, {"seeds", c.seeds}, {"threads", num_threads()},
            {"claims", json::object()}};
  j["timing"] = {{"rounds", c.rounds}, {"steps_per_round", c.timing_steps}, {"statistic", "median over rounds"}};
  std::printf("\n%-10s %6s %16s %14s %10s %12s %12s %12s\n", "variant", "runs", "test acc (%)", "added params", "added %",
              "ms/step", "step ratio", "infer ratio");
  std::vector<examples::Series> plot;
  for (const std::string& v : c.variants) {
    const cl::Summary acc = cl::summarize(rec.values(v, c.seeds, "test_accuracy", 100));
    const index_t add = added(v);
    const double pct = base_params > 0 ? 100.0 * double(add) / double(base_params) : NAN;
    const examples::Timing t = timing.count(v) ? timing[v] : examples::Timing{};
    std::printf("%-10s %6zu %9.2f ± %4s %14ld %9.3f%% %12.1f %12.3f %12.3f\n", v.c_str(), acc.n, acc.mean,
                cl::format_std(acc).c_str(),
                long(add), pct, t.ms_per_step, t.step_ratio, t.infer_ratio);
    j["variants"][v] = {{"runs", acc.n}, {"test_accuracy_mean", acc.mean}, {"test_accuracy_std", acc.n >= 2 ? json(acc.std) : json()},
                        {"accuracies", rec.values(v, c.seeds, "test_accuracy", 100)}, {"added_params", add},
                        {"added_percent", pct}, {"ms_per_step", t.ms_per_step}, {"infer_us_per_image", t.us_per_image},
                        {"step_time_ratio", t.step_ratio}, {"inference_latency_ratio", t.infer_ratio}};
    if (acc.n > 0) plot.push_back({v, {pct}, {acc.mean}});
  }
  judge_claims(j, c, rec, timing);
  io::write_file_atomically(c.out / "summary.json", j.dump(2) + "\n", "lamina::laurel_e1");
  examples::write_svg_chart((c.out / "accuracy_vs_params.svg").string(), "E1: LAUREL on Fashion-MNIST", "added parameters (%)",
                            "test accuracy (%)", plot);
  std::printf("results in %s (runs.json, runs.csv, timing.csv, summary.json, accuracy_vs_params.svg)\n", c.out.string().c_str());
}

}  // namespace

int run(int argc, char** argv, dist::Communicator& comm) {
  const bool root = comm.is_root();
  cxxopts::Options cli = make_cli();
  const auto a = cli.parse(argc, argv);
  if (a.count("help")) {
    if (root) std::puts(cli.help().c_str());
    return 0;
  }
  const Config c = configure(a);
  if (root) std::filesystem::create_directories(c.out);
  const data::Dataset train = data::load_fashion_mnist(c.data, "train", c.train_limit);
  const data::Dataset test = data::load_fashion_mnist(c.data, "test", c.test_limit);
  const data::Normalization norm = data::statistics(train);
  const examples::RunData d{train, test, norm};
  examples::Settings s;
  s.epochs = c.epochs, s.batch = c.batch, s.lr = c.lr, s.train_images = long(train.size()), s.test_images = long(test.size());
  s.processes = comm.size();
  require(s.batch >= comm.size(), "laurel_e1", "--batch", detail::text(">= the number of processes, ", comm.size()), s.batch);
  if (root)
    std::printf("E1 LAUREL on Fashion-MNIST: %ld train / %ld test images, %ld epochs, %ld seed(s), batch %ld, "
                "%d process(es) x %d threads\n",
                s.train_images, s.test_images, s.epochs, c.seeds, s.batch, comm.size(), num_threads());

  // Phase 1: the runs not yet recorded. Phase 2 (rank 0): timing and summary.
  examples::Records rec(c.out / "runs.json", s, c.fresh, "laurel_e1", comm);
  train::Progress progress;
  examples::train_missing(rec, c.variants, c.seeds, c.no_train, comm, [&](const std::string& label, const std::string& v, std::uint64_t seed) {
    json run;
    Rng rng(seed);
    with_variant(v, rng, [&](auto&& net) { run = examples::train_run(label, net, seed, s, d, progress, comm); });
    return run;
  });
  if (c.train_only || !root) return 0;
  std::map<std::string, examples::Timing> timing;
  if (c.rounds > 0) timing = time_variants(c, d);
  summarize(c, s, rec, timing);
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
