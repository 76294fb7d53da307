// Experiment E2 (spec/experiments.md, layer_attention.md): layer attention on
// the E1 ResNet with n = 4 BasicBlocks per stage, Fashion-MNIST. Variants:
// none (no layer attention), mrla_base, ela (MRLA-base + KL redundancy monitor
// + EBQM skipping on the ELA schedule), mrla_light.
//
// Two phases, as E1:
//  1. Training: every (variant, seed) run trains from scratch; each finished
//     run is recorded at once in <out>/runs.json (written atomically) with its
//     test accuracy, parameters, training time (total, per epoch, per step)
//     and, for ELA, each block's D_t and u_t per epoch and the skip set after
//     every epoch. A later invocation with the same settings skips the
//     recorded runs (resume).
//  2. Timing: the variants side by side in one process, timed in interleaved
//     rounds on the same batches; ELA with the skip set its seed-1 run ended
//     with. The time spent in layer attention is a variant's step time minus
//     the network without it (same round); ratios are to MRLA-base.
// The claim (ELA trains in ≤ 0.75× MRLA-base's time at accuracy not shown to be
// worse) is judged by common/claims.hpp: Welch's t over seeds at α = 0.05.
// Writes runs.json, runs.csv, dt.csv, timing.csv, summary.json, dt_over_epochs.svg
// and time_vs_accuracy.svg; prints a table and the verdict with its numbers.
//
// Data-parallel (built with MPI): `mpirun -np N ela_e2 ...`; rank 0's D_t
// epoch means are sent to every rank before each EBQM decision, so all ranks
// skip the same blocks; rank 0 alone prints, writes and times.
#include <cxxopts.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>

#include "common/claims.hpp"
#include "common/cli.hpp"
#include "common/experiment.hpp"
#include "common/svg_plot.hpp"
#include "lamina/lamina.hpp"
#include "lamina/models/ela_resnet.hpp"
#ifdef LAMINA_WITH_MPI
#include "lamina/dist/mpi.hpp"
#endif

using namespace lamina;
using examples::json;
namespace cl = examples::claims;
namespace at = lamina::attention;

namespace {

const std::vector<std::string> all_variants = {"none", "mrla_base", "ela", "mrla_light"};

struct Config {
  std::string data;
  long seeds, train_limit, test_limit, rounds, timing_steps, epochs, batch, blocks, warmup;
  double lr, q, rho;
  std::vector<std::string> variants;
  std::filesystem::path out;
  bool train_only, no_train, fresh;
};

at::Method method_of(const std::string& v) {
  if (v == "none") return at::Method::none;
  if (v == "mrla_base") return at::Method::mrla_base;
  if (v == "ela") return at::Method::ela;
  if (v == "mrla_light") return at::Method::mrla_light;
  throw value_error("lamina::ela_e2: --variants: expected none, mrla_base, ela or mrla_light, got " + v);
}

/// Builds the network of variant `v` and hands it to `fn`.
template <class Fn>
void with_variant(const std::string& v, const Config& c, Rng& rng, Fn&& fn) {
  ResNetOptions ro;
  ro.blocks_per_stage = c.blocks;
  const at::Method m = method_of(v);
  if (m == at::Method::none)
    fn(make_resnet<float>(ro, rng));
  else
    fn(make_ela_resnet<float>(ro, m, rng));
}

at::ScheduleOptions schedule_options(const Config& c) {
  at::ScheduleOptions o;
  o.epochs = c.epochs, o.warmup = c.warmup;
  o.ebqm.q = c.q, o.ebqm.rho = c.rho;
  return o;
}

/// "s1.b2": stage 1, block 2 (1-based), in network order.
std::vector<std::string> block_names(const Config& c) {
  std::vector<std::string> out;
  for (int s = 1; s <= 3; ++s)
    for (long b = 1; b <= c.blocks; ++b) {
      char name[32];
      std::snprintf(name, sizeof name, "s%d.b%ld", s, b);
      out.emplace_back(name);
    }
  return out;
}

cxxopts::Options make_cli() {
  cxxopts::Options cli("ela_e2", "E2: layer attention (MRLA-base, ELA, MRLA-light) on the ResNet, Fashion-MNIST");
  examples::add_shared_options(cli, {.program = "ela_e2",
                                     .variants = "none,mrla_base,ela,mrla_light",
                                     .epochs = 2,
                                     .train_limit = 2048,
                                     .test_limit = 1000,
                                     .epochs_note = "; ELA decides after the warm-up"});
  cli.add_options()
    ("blocks", "BasicBlocks per stage (n)", cxxopts::value<long>()->default_value("4"))
    ("warmup", "ELA warm-up epochs w (0 = max(1, epochs / 10))", cxxopts::value<long>()->default_value("0"))
    ("q", "EBQM threshold q on u_t", cxxopts::value<double>()->default_value("0.3"))
    ("rho", "EBQM cap: at most floor(rho x eligible blocks) skipped", cxxopts::value<double>()->default_value("0.5"));
  return cli;
}

Config configure(const cxxopts::ParseResult& a) {
  const bool full = a.count("full") > 0;
  auto pick = [&](const char* k, long quick, long whole) { return a.count(k) ? a[k].as<long>() : (full ? whole : quick); };
  Config c{a["data"].as<std::string>(), pick("seeds", 1, 3), pick("train-limit", 2048, 0), pick("test-limit", 1000, 0),
           pick("timing-rounds", 3, 7), a["timing-steps"].as<long>(), pick("epochs", 2, 10), a["batch"].as<long>(),
           a["blocks"].as<long>(), a["warmup"].as<long>(), a["lr"].as<double>(), a["q"].as<double>(),
           a["rho"].as<double>(), examples::parse_variants(a["variants"].as<std::string>(), all_variants, "ela_e2"),
           a.count("out") ? a["out"].as<std::string>() : full ? "results/ela_e2_full" : "results/ela_e2",
           a.count("train-only") > 0, a.count("no-train") > 0, a.count("fresh") > 0};
  examples::validate("ela_e2", c.epochs, c.seeds, c.rounds, c.timing_steps);
  require(c.blocks >= 2, "ela_e2", "--blocks", ">= 2 (a stage needs an eligible block)", c.blocks);
  require(c.warmup >= 0, "ela_e2", "--warmup", ">= 0", c.warmup);
  at::ElaSchedule<float> check(schedule_options(c));  // q, rho: the library's own errors
  if (a["threads"].as<int>() > 0) set_num_threads(a["threads"].as<int>());
  return c;
}

examples::Settings settings_of(const Config& c, const data::Dataset& train, const data::Dataset& test, int processes) {
  examples::Settings s;
  s.epochs = c.epochs, s.batch = c.batch, s.lr = c.lr, s.train_images = long(train.size());
  s.test_images = long(test.size()), s.processes = processes;
  s.extra = {{"blocks_per_stage", c.blocks}, {"ela", {{"q", c.q}, {"rho", c.rho}, {"warmup", c.warmup}}}};
  return s;
}

// ---- phase 1: training ------------------------------------------------------

/// Rank 0's epoch means of D_t on every rank, so that every rank decides alike.
void share_meters(const std::vector<at::Control<float>*>& ctl, dist::Communicator& comm) {
  if (comm.size() == 1) return;
  std::vector<double> v;
  for (const auto* c : ctl) v.push_back(c->meter.sum), v.push_back(double(c->meter.steps));
  comm.broadcast(std::span<double>(v));
  for (std::size_t i = 0; i < ctl.size(); ++i) ctl[i]->meter.sum = v[2 * i], ctl[i]->meter.steps = index_t(v[2 * i + 1]);
}

json nan_safe(const std::vector<double>& v) {
  json j = json::array();
  for (double x : v) j.push_back(std::isfinite(x) ? json(x) : json());
  return j;
}

/// The ELA run's epoch hook: the schedule's record (D_t, u_t, skip set) into the epoch's record.
examples::EpochHook ela_hook(at::ElaSchedule<float>& sch, std::vector<at::Control<float>*>& ctl,
                             dist::Communicator& comm) {
  return [&sch, &ctl, &comm](long e, json& rec) {
    share_meters(ctl, comm);
    const at::EpochRecord r = sch.end_epoch(e);
    std::vector<int> skip(r.skip.begin(), r.skip.end());
    rec["decided"] = r.decided, rec["D"] = nan_safe(r.D), rec["u"] = nan_safe(r.u), rec["skip"] = skip;
    if (!comm.is_root()) return;
    long n = 0;
    for (int k : skip) n += k;
    std::printf("    ELA after epoch %ld: %s, %ld of %zu retrievals skipped from now on\n", e + 1,
                r.decided ? "EBQM decided" : "warm-up", n, skip.size());
  };
}

/// Skipped retrievals over the training run: block-steps skipped / all block-steps.
double skipped_fraction(const json& run) {
  double skipped = 0, all = 0, prev = 0;
  for (const json& e : run["epochs"]) {
    const double blocks = e.contains("skip") ? double(e["skip"].size()) : 0;
    skipped += prev, all += blocks;
    prev = 0;
    if (e.contains("skip"))
      for (const json& k : e["skip"]) prev += k.get<double>();
  }
  return all > 0 ? skipped / all : 0;
}

json train_variant(const std::string& label, const std::string& v, std::uint64_t seed, const Config& c,
                   const examples::Settings& s, const examples::RunData& d, train::Progress& progress,
                   dist::Communicator& comm) {
  json run;
  Rng rng(seed);
  with_variant(v, c, rng, [&](auto&& net) {
    using Net = std::decay_t<decltype(net)>;
    if constexpr (std::is_same_v<Net, ElaResNet<float>>) {
      if (v == "ela") {
        at::ElaSchedule<float> sch(schedule_options(c));
        add_stages(sch, net);
        std::vector<at::Control<float>*> ctl;
        for (auto* st : {&net.template get<resnet_stage_index(0)>(), &net.template get<resnet_stage_index(1)>(), &net.template get<resnet_stage_index(2)>()})
          for (auto& b : *st) ctl.push_back(&b.control());
        run = examples::train_run(label, net, seed, s, d, progress, comm, ela_hook(sch, ctl, comm));
        run["warmup_epochs"] = sch.warmup();
        run["skipped_fraction"] = skipped_fraction(run);
        return;
      }
    }
    run = examples::train_run(label, net, seed, s, d, progress, comm);
  });
  run["blocks"] = block_names(c);
  return run;
}

// ---- phase 2: timing ----------------------------------------------------------

/// The skip set the lowest-seed ELA run ended with (empty: none recorded).
std::vector<int> final_skip_set(const examples::Records& rec, long seeds) {
  const auto runs = rec.of("ela", seeds);
  if (runs.empty() || runs.front()["epochs"].empty()) return {};
  return runs.front()["epochs"].back()["skip"].get<std::vector<int>>();
}

std::map<std::string, examples::Timing> time_variants(const Config& c, const examples::RunData& d,
                                                      const std::vector<int>& skip) {
  const examples::TimingBatches b = examples::timing_batches(d.train, d.norm, c.batch, c.timing_steps);
  std::vector<examples::Timed> timed;
  for (const std::string& v : c.variants) {
    Rng rng(1);
    with_variant(v, c, rng, [&](auto&& net) {
      using Net = std::decay_t<decltype(net)>;
      std::function<void(Net&)> prepare;
      if constexpr (std::is_same_v<Net, ElaResNet<float>>)
        if (v == "ela")
          prepare = [&skip](Net& n) {
            std::size_t k = 0;
            for (auto* st : {&n.template get<resnet_stage_index(0)>(), &n.template get<resnet_stage_index(1)>(), &n.template get<resnet_stage_index(2)>()})
              for (auto& blk : *st) {
                blk.set_skipped(k < skip.size() && skip[k] != 0);
                ++k;
              }
          };
      timed.push_back(examples::make_timed(v, std::move(net), b, prepare));
    });
  }
  return examples::time_interleaved(timed, b, c.rounds, "mrla_base", c.out / "timing.csv");
}

// ---- summary --------------------------------------------------------------------

index_t params_of(const std::string& v, const Config& c) {
  Rng rng(1);
  index_t n = 0;
  with_variant(v, c, rng, [&](auto&& net) { n = parameter_count(net).total; });
  return n;
}

void write_csvs(const Config& c, const examples::Records& rec) {
  std::ofstream runs(c.out / "runs.csv"), dt(c.out / "dt.csv");
  runs << "variant,seed,test_accuracy,params,train_seconds,seconds_per_epoch,ms_per_step,skipped_fraction\n";
  dt << "variant,seed,epoch,block,D,u,skipped_after\n";
  const auto names = block_names(c);
  for (const std::string& v : c.variants)
    for (const json& r : rec.of(v, c.seeds)) {
      runs << v << ',' << r["seed"] << ',' << r["test_accuracy"] << ',' << r["params"] << ',' << r["train_seconds"] << ','
           << r["seconds_per_epoch"] << ',' << r["ms_per_step"] << ',' << r.value("skipped_fraction", 0.0) << '\n';
      long e = 0;
      for (const json& ep : r["epochs"]) {
        ++e;
        if (!ep.contains("D")) continue;
        for (std::size_t k = 0; k < names.size(); ++k)
          dt << v << ',' << r["seed"] << ',' << e << ',' << names[k] << ',' << (ep["D"][k].is_null() ? "" : ep["D"][k].dump())
             << ',' << (ep["u"][k].is_null() ? "" : ep["u"][k].dump()) << ',' << ep["skip"][k] << '\n';
      }
    }
}

/// D_t over epochs of the lowest-seed ELA run, one series per eligible block.
void plot_dt(const Config& c, const examples::Records& rec) {
  const auto runs = rec.of("ela", c.seeds);
  if (runs.empty()) return;
  const auto names = block_names(c);
  std::vector<examples::Series> series;
  for (std::size_t k = 0; k < names.size(); ++k) {
    examples::Series s{names[k], {}, {}, false};
    long e = 0;
    for (const json& ep : runs.front()["epochs"]) {
      ++e;
      if (ep.contains("D") && !ep["D"][k].is_null()) s.x.push_back(double(e)), s.y.push_back(ep["D"][k].get<double>());
    }
    if (!s.x.empty()) series.push_back(s);
  }
  examples::write_svg_chart((c.out / "dt_over_epochs.svg").string(), "E2: ELA redundancy D_t per block (seed 1)", "epoch",
                            "D_t (epoch mean)", series);
}

struct Row {
  cl::Summary acc, secs;
  double ms_step_train, skipped;
  examples::Timing t;
  double attention_ms;  ///< step time minus the network without layer attention (same rounds)
};

Row row_of(const std::string& v, const Config& c, const examples::Records& rec, std::map<std::string, examples::Timing>& timing) {
  Row r{cl::summarize(rec.values(v, c.seeds, "test_accuracy", 100)), cl::summarize(rec.values(v, c.seeds, "seconds_per_epoch")),
        cl::summarize(rec.values(v, c.seeds, "ms_per_step")).mean, NAN, timing.count(v) ? timing[v] : examples::Timing{}, NAN};
  if (v == "ela") {
    std::vector<double> f;
    for (const json& run : rec.of(v, c.seeds)) f.push_back(run.value("skipped_fraction", 0.0));
    r.skipped = cl::summarize(f).mean;
  }
  if (timing.count("none")) r.attention_ms = r.t.ms_per_step - timing["none"].ms_per_step;
  return r;
}

void judge_claim(json& j, const Config& c, const examples::Records& rec, std::map<std::string, Row>& rows,
                 const std::vector<int>& skip) {
  if (!rows.count("ela") || !rows.count("mrla_base")) return;
  const cl::Welch time = cl::welch(rec.values("ela", c.seeds, "train_seconds"),
                                   cl::scaled(rec.values("mrla_base", c.seeds, "train_seconds"), 0.75));
  const cl::Welch acc = cl::welch(rec.values("ela", c.seeds, "test_accuracy", 100),
                                  rec.values("mrla_base", c.seeds, "test_accuracy", 100));
  const cl::Verdict acc_v = !acc.defined           ? cl::Verdict::not_shown
                            : cl::not_shown_worse(acc) ? cl::Verdict::held
                                                       : cl::Verdict::did_not_hold;
  examples::report_claim(j, "ela_time_vs_mrla_base", "ELA trains in <= 0.75x MRLA-base's time at accuracy not shown to be worse",
                         cl::all_of({cl::judge(time, cl::Direction::less), acc_v}),
                         "training seconds ela vs 0.75 x mrla_base: " + cl::format(time, 1) +
                             "; test acc % ela vs mrla_base: " + cl::format(acc),
                         {{"time_test", examples::to_json(time)}, {"accuracy_test", examples::to_json(acc)}});
  // What the skips can save at most: the attention branch's share of the step, the part skipped.
  if (!rows.count("none") || !(rows["mrla_base"].attention_ms == rows["mrla_base"].attention_ms)) {
    std::printf("  (the attention-branch share needs the interleaved timing of none, mrla_base and ela)\n");
    return;
  }
  const Row& base = rows["mrla_base"];
  const Row& ela = rows["ela"];
  long k = 0;
  for (int s : skip) k += s;
  const double share = base.attention_ms / base.t.ms_per_step;
  const double att_ratio = ela.attention_ms / base.attention_ms;
  const double final_frac = skip.empty() ? NAN : double(k) / double(skip.size());
  std::printf("  layer attention is %.1f%% of MRLA-base's step (interleaved timing); ELA skipped %.1f%% of the retrievals "
              "over training and %ld of %zu blocks at the end; with that final skip set the step ratio is %.3f and the "
              "attention-branch time ratio %.3f; skipping every retrieval of the final fraction would save at most "
              "%.1f%% of the step (0.75x needs 25%%)\n",
              100 * share, 100 * ela.skipped, k, skip.size(), ela.t.step_ratio, att_ratio, 100 * share * final_frac);
  j["analysis"] = {{"attention_share_of_mrla_base_step", share}, {"ela_attention_time_ratio", att_ratio},
                   {"ela_step_ratio_final_skip_set", ela.t.step_ratio}, {"skipped_fraction_over_training", ela.skipped},
                   {"final_skip_set", skip}, {"final_skipped_fraction", final_frac},
                   {"max_saving_of_step_final_skip_set", share * final_frac}};
}

void summarize(const Config& c, const examples::Settings& s, const examples::Records& rec,
               std::map<std::string, examples::Timing>& timing, const std::vector<int>& skip) {
  write_csvs(c, rec);
  plot_dt(c, rec);
  json j = {{"experiment", "E2"}, {"settings", s.to_json()}, {"seeds", c.seeds}, {"threads", num_threads()},
            {"blocks", block_names(c)}, {"claims", json::object()}};
  j["timing"] = {{"rounds", c.rounds}, {"steps_per_round", c.timing_steps}, {"statistic", "median over rounds"},
                 {"reference", "mrla_base"}, {"ela_skip_set", skip}};
  std::printf("\n%-10s %4s %15s %8s %15s %10s %9s %9s %10s %9s\n", "variant", "runs", "test acc (%)", "params",
              "s/epoch (train)", "ms/step", "timed ms", "ratio", "attn ms", "skipped");
  std::map<std::string, Row> rows;
  std::vector<examples::Series> plot;
  for (const std::string& v : c.variants) {
    const Row r = rows[v] = row_of(v, c, rec, timing);
    const index_t params = params_of(v, c);
    std::printf("%-10s %4zu %8.2f ± %4s %8ld %8.1f ± %4s %10.1f %9.1f %9.3f %10.1f %8.1f%%\n", v.c_str(), r.acc.n,
                r.acc.mean, cl::format_std(r.acc, 2).c_str(), long(params), r.secs.mean, cl::format_std(r.secs, 1).c_str(), r.ms_step_train, r.t.ms_per_step,
                r.t.step_ratio, r.attention_ms, 100 * (r.skipped == r.skipped ? r.skipped : 0.0));
    j["variants"][v] = {{"runs", r.acc.n}, {"test_accuracy", examples::to_json(r.acc)},
                        {"accuracies", rec.values(v, c.seeds, "test_accuracy", 100)}, {"params", params},
                        {"seconds_per_epoch", examples::to_json(r.secs)}, {"train_ms_per_step", r.ms_step_train},
                        {"timed_ms_per_step", r.t.ms_per_step}, {"step_ratio_to_mrla_base", r.t.step_ratio},
                        {"infer_us_per_image", r.t.us_per_image}, {"infer_ratio_to_mrla_base", r.t.infer_ratio},
                        {"attention_ms_per_step", r.attention_ms}, {"skipped_fraction", r.skipped == r.skipped ? json(r.skipped) : json()}};
    if (r.acc.n > 0) plot.push_back({v, {r.secs.mean}, {r.acc.mean}, true});
  }
  std::printf("(s/epoch and ms/step: the training runs; timed ms, ratio (to mrla_base) and attn ms (minus none): interleaved timing)\n");
  judge_claim(j, c, rec, rows, skip);
  io::write_file_atomically(c.out / "summary.json", j.dump(2) + "\n", "lamina::ela_e2");
  examples::write_svg_chart((c.out / "time_vs_accuracy.svg").string(), "E2: layer attention on Fashion-MNIST",
                            "training seconds per epoch", "test accuracy (%)", plot);
  std::printf("results in %s (runs.json, runs.csv, dt.csv, timing.csv, summary.json, dt_over_epochs.svg, time_vs_accuracy.svg)\n",
              c.out.string().c_str());
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
  const examples::Settings s = settings_of(c, train, test, comm.size());
  require(s.batch >= comm.size(), "ela_e2", "--batch", detail::text(">= the number of processes, ", comm.size()), s.batch);
  if (root)
    std::printf("E2 layer attention on Fashion-MNIST: %ld blocks per stage, %ld train / %ld test images, %ld epochs, "
                "%ld seed(s), batch %ld, %d process(es) x %d threads\n",
                c.blocks, s.train_images, s.test_images, s.epochs, c.seeds, s.batch, comm.size(), num_threads());

  examples::Records rec(c.out / "runs.json", s, c.fresh, "ela_e2", comm);
  train::Progress progress;
  examples::train_missing(rec, c.variants, c.seeds, c.no_train, comm,
                          [&](const std::string& label, const std::string& v, std::uint64_t seed) {
                            return train_variant(label, v, seed, c, s, d, progress, comm);
                          });
  if (c.train_only || !root) return 0;
  const std::vector<int> skip = final_skip_set(rec, c.seeds);
  std::map<std::string, examples::Timing> timing;
  if (c.rounds > 0) timing = time_variants(c, d, skip);
  summarize(c, s, rec, timing, skip);
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
    std::fprintf(stderr, "ela_e2: %s\n", e.what());
    return 1;
  }
}
