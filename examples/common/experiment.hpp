#pragma once
// What the experiment programs (E1 laurel_e1, E2 ela_e2, E3 dynalay_e3) share:
//  - Settings: the training settings a run depends on, recorded with every
//    set of runs (plus the experiment's own fields in `extra`);
//  - Records: <out>/runs.json, {"settings": ..., "runs": {variant: [run, ...]}},
//    loaded on rank 0 and broadcast, refused when made with other settings,
//    rewritten atomically after every finished run, so a later invocation
//    skips the recorded runs (resume);
//  - train_run: one (variant, seed) run from scratch, SGD with momentum and a
//    per-step cosine schedule, a progress line during each epoch and a summary
//    line after it, data-parallel over a Communicator (rank 0 alone prints);
//  - time_interleaved: every variant timed in rounds on the same batches, the
//    order rotated each round, ratios to a reference variant per round, medians.
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
#include <string>
#include <vector>

#include "common/claims.hpp"
#include "lamina/lamina.hpp"

namespace examples {

using json = nlohmann::json;

/// Splits a comma-separated --variants list, every item one of `allowed`.
inline std::vector<std::string> parse_variants(const std::string& list, const std::vector<std::string>& allowed,
                                               const std::string& program) {
  std::string all;
  for (const std::string& a : allowed) all += (all.empty() ? "" : ",") + a;
  std::vector<std::string> out;
  std::string item;
  std::stringstream ss(list);
  while (std::getline(ss, item, ','))
    if (!item.empty()) {
      if (std::find(allowed.begin(), allowed.end(), item) == allowed.end())
        throw lamina::value_error("lamina::" + program + ": --variants: expected a subset of " + all + ", got " + item);
      if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    }
  if (out.empty()) throw lamina::value_error("lamina::" + program + ": --variants: no variant given");
  return out;
}

struct Settings {
  long epochs = 1, batch = 128;
  std::string optimizer = "sgd";  ///< recorded when not SGD (E3: "adamw", momentum = β1)
  double lr = 0.1, momentum = 0.9, wd = 5e-4;
  long train_images = 0, test_images = 0;
  int processes = 1;  ///< data-parallel ranks (recorded only when > 1: BN statistics are then per shard)
  json extra = json::object();  ///< the experiment's own settings (recorded when not empty)
  json to_json() const {
    json j = {{"epochs", epochs}, {"batch", batch}, {"lr", lr}, {"momentum", momentum}, {"weight_decay", wd},
              {"train_images", train_images}, {"test_images", test_images}};
    if (processes > 1) j["processes"] = processes;
    if (optimizer != "sgd") j["optimizer"] = optimizer;
    for (const auto& [k, v] : extra.items()) j[k] = v;
    return j;
  }
};

/// The counts every experiment validates the same way.
inline void validate(const std::string& program, long epochs, long seeds, long rounds, long timing_steps) {
  lamina::require(epochs > 0, program, "--epochs", "> 0", epochs);
  lamina::require(seeds > 0, program, "--seeds", "> 0", seeds);
  lamina::require(rounds >= 0, program, "--timing-rounds", ">= 0", rounds);
  lamina::require(timing_steps > 0, program, "--timing-steps", "> 0", timing_steps);
}

// ---- runs.json ----------------------------------------------------------------

class Records {
 public:
  /// Rank 0 reads `file` (other machines may not have it) and sends it to all ranks.
  Records(std::filesystem::path file, const Settings& s, bool fresh, const std::string& program,
          lamina::dist::Communicator& comm)
      : file_(std::move(file)), program_(program) {
    std::string text = comm.is_root() ? load(s, fresh).dump() : std::string();
    lamina::dist::broadcast(comm, text);
    j_ = json::parse(text);
  }
  const std::filesystem::path& file() const noexcept { return file_; }
  const json& runs() const { return j_["runs"]; }
  bool has(const std::string& v, std::uint64_t seed) const {
    if (!j_["runs"].contains(v)) return false;
    for (const json& r : j_["runs"][v])
      if (r["seed"].get<std::uint64_t>() == seed) return true;
    return false;
  }
  /// The (variant, seed) pairs of seeds 1..seeds not yet recorded, seed-major
  /// so that partial results already compare every variant.
  std::vector<std::pair<std::string, std::uint64_t>> todo(const std::vector<std::string>& variants, long seeds) const {
    std::vector<std::pair<std::string, std::uint64_t>> out;
    for (long k = 1; k <= seeds; ++k)
      for (const std::string& v : variants)
        if (!has(v, std::uint64_t(k))) out.emplace_back(v, std::uint64_t(k));
    return out;
  }
  /// Adds a finished run; rank 0 rewrites the file atomically.
  void add(const std::string& v, json run, bool root) {
    j_["runs"][v].push_back(std::move(run));
    if (root) lamina::io::write_file_atomically(file_, j_.dump(1) + "\n", ("lamina::" + program_).c_str());
  }
  /// The recorded runs of `v` with seed <= seeds, in seed order.
  std::vector<json> of(const std::string& v, long seeds) const {
    std::vector<json> out;
    if (j_["runs"].contains(v))
      for (const json& r : j_["runs"][v])
        if (r["seed"].get<long>() <= seeds) out.push_back(r);
    std::sort(out.begin(), out.end(), [](const json& a, const json& b) { return a["seed"] < b["seed"]; });
    return out;
  }
  /// One number of every recorded run of `v` (times `scale`).
  std::vector<double> values(const std::string& v, long seeds, const std::string& key, double scale = 1) const {
    std::vector<double> out;
    for (const json& r : of(v, seeds)) out.push_back(scale * r[key].get<double>());
    return out;
  }

 private:
  json load(const Settings& s, bool fresh) const {
    json fresh_records = {{"settings", s.to_json()}, {"runs", json::object()}};
    if (fresh || !std::filesystem::exists(file_)) return fresh_records;
    std::ifstream in(file_);
    json j;
    try {
      in >> j;
    } catch (const json::exception& e) {
      throw lamina::io_error("lamina::" + program_ + ": " + file_.string() + " is not valid JSON (" + e.what() +
                             "); use --fresh to start over");
    }
    if (j.value("settings", json()) != s.to_json())
      throw lamina::value_error("lamina::" + program_ + ": " + file_.string() + " holds runs made with settings " +
                                j.value("settings", json()).dump() + ", not " + s.to_json().dump() +
                                "; use another --out, or --fresh to start over");
    return j;
  }

  std::filesystem::path file_;
  std::string program_;
  json j_;
};

// ---- training -------------------------------------------------------------------

struct RunData {
  const lamina::data::Dataset& train;
  const lamina::data::Dataset& test;
  const lamina::data::Normalization& norm;
};

/// Called after each epoch's evaluation with the epoch (from 0) and its
/// record, to add the experiment's own per-epoch fields.
using EpochHook = std::function<void(long epoch, json& record)>;

/// Trains `net` from scratch for s.epochs: the same seed gives the same data
/// order and augmentation in every variant; each rank takes its shard of every
/// batch (one process: the unsharded loader and the plain step).
template <class Net>
json train_run(const std::string& label, Net& net, std::uint64_t seed, const Settings& s, const RunData& d,
               lamina::train::Progress& progress, lamina::dist::Communicator& comm, const EpochHook& hook = {}) {
  using namespace lamina;
  const data::Shard shard{comm.rank(), comm.size()};
  data::Loader<float> train_loader(d.train, s.batch, d.norm, true, data::Augmentation{2, true}, seed, shard);
  data::Loader<float> test_loader(d.test, 500, d.norm, false, {}, 1, shard);
  dist::broadcast_parameters(net, comm);
  std::optional<dist::GradientAllReduce<float>> sync;
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
    const auto lr_at = [&](index_t step) { return schedule(double(e) * steps + double(step)); };
    const auto st = train::train_epoch(net, loss, opt, train_loader, progress, el, lr_at, train::TrainOptions{},
                                       sync ? &*sync : nullptr);
    ev = train::evaluate(net, test_loader, &comm);  // rank 0's BN statistics on every rank first
    train_seconds += st.seconds;
    if (comm.is_root())
      std::printf("  %s: train loss %.4f acc %.2f%% | test acc %.2f%% | %.1f s (%.0f images/s, %.1f ms/step)\n",
                  el.c_str(), st.loss, 100 * st.accuracy, 100 * ev.accuracy, st.seconds, st.images_per_second,
                  1e3 * st.seconds / steps);
    std::fflush(stdout);
    json rec = {{"train_loss", st.loss}, {"train_accuracy", st.accuracy}, {"test_loss", ev.loss},
                {"test_accuracy", ev.accuracy}, {"seconds", st.seconds}, {"steps", long(steps)}};
    if (hook) hook(e, rec);
    epochs.push_back(rec);
  }
  const ParameterCount pc = parameter_count(net);
  return {{"seed", seed}, {"test_accuracy", ev.accuracy}, {"params", pc.total}, {"added_params", pc.added},
          {"train_seconds", train_seconds}, {"seconds_per_epoch", train_seconds / double(s.epochs)},
          {"ms_per_step", 1e3 * train_seconds / (double(s.epochs) * steps)}, {"threads", num_threads()},
          {"processes", comm.size()}, {"epochs", epochs}};
}

/// Runs `train(label, variant, seed)` (which returns the run's record) for every
/// run not yet recorded, recording each at once; prints what is left and the ETA.
inline void train_missing(Records& rec, const std::vector<std::string>& variants, long seeds, bool train_nothing,
                          lamina::dist::Communicator& comm,
                          const std::function<json(const std::string&, const std::string&, std::uint64_t)>& train) {
  auto todo = rec.todo(variants, seeds);
  const long total = seeds * long(variants.size());
  if (comm.is_root())
    std::printf("%ld of %ld runs already recorded in %s; %zu to train\n", total - long(todo.size()), total,
                rec.file().string().c_str(), train_nothing ? std::size_t(0) : todo.size());
  if (train_nothing) todo.clear();
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < todo.size(); ++i) {
    const std::string& v = todo[i].first;
    const std::uint64_t seed = todo[i].second;
    const std::string label =
        "[" + std::to_string(i + 1) + "/" + std::to_string(todo.size()) + "] " + v + " seed " + std::to_string(seed);
    rec.add(v, train(label, v, seed), comm.is_root());
    if (!comm.is_root()) continue;
    const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("  recorded %s seed %llu in %s; %zu run(s) left, ETA %s\n", v.c_str(),
                static_cast<unsigned long long>(seed), rec.file().string().c_str(), todo.size() - i - 1,
                lamina::train::format_duration(spent / double(i + 1) * double(todo.size() - i - 1)).c_str());
    std::fflush(stdout);
  }
  comm.barrier();
}

// ---- interleaved timing ------------------------------------------------------------

inline double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct TimingBatches {
  std::vector<lamina::Tensor<float>> xs;
  std::vector<std::vector<std::int32_t>> labels;
  double images = 0;
};

/// The first `steps` training batches of seed 1 (augmented as in training).
inline TimingBatches timing_batches(const lamina::data::Dataset& train, const lamina::data::Normalization& norm,
                                    long batch, long steps) {
  lamina::data::Loader<float> loader(train, batch, norm, true, lamina::data::Augmentation{2, true}, 1);
  loader.start_epoch();
  TimingBatches b;
  b.xs.resize(static_cast<std::size_t>(std::min<lamina::index_t>(steps, loader.batches())));
  b.labels.resize(b.xs.size());
  for (std::size_t i = 0; i < b.xs.size(); ++i) {
    loader.batch(lamina::index_t(i), b.xs[i], b.labels[i]);
    b.images += double(b.xs[i].dim(0));
  }
  return b;
}

struct Timed {
  std::string variant;
  std::function<double()> train_steps;  ///< seconds for the timing batches
  std::function<double()> infer;        ///< seconds for inference on the same batches
};

/// A variant to time: the network is moved into shared state; `prepare` (if
/// given) is applied to it once it has its final address (e.g. a skip set).
template <class Net>
Timed make_timed(const std::string& v, Net&& built, const TimingBatches& b,
                 const std::function<void(Net&)>& prepare = {}) {
  using namespace lamina;
  struct State {
    Net net;
    optim::SGD<float> opt;
    SoftmaxCrossEntropy<float> loss;
    Tensor<float> y, dy, dx, yi;
    explicit State(Net&& n) : net(std::move(n)), opt(net, {0.01, 0.9, 0.0, 5e-4, false}) {}
  };
  auto st = std::make_shared<State>(std::move(built));
  if (prepare) prepare(st->net);
  using clock = std::chrono::steady_clock;
  auto steps = [st, &b] {
    set_training(st->net, true);
    const auto t0 = clock::now();
    for (std::size_t i = 0; i < b.xs.size(); ++i)
      train::train_step(st->net, st->loss, st->opt, b.xs[i].cview(), b.labels[i], 0.0, st->y, st->dy, st->dx);
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  auto infer = [st, &b] {
    set_training(st->net, false);
    const auto t0 = clock::now();
    for (const Tensor<float>& x : b.xs) {
      st->yi.resize(st->net.output_shape(x.shape()));
      st->net.infer(x.cview(), st->yi.view());
    }
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  return {v, steps, infer};
}

struct Timing {
  double ms_per_step = NAN, us_per_image = NAN, step_ratio = NAN, infer_ratio = NAN;
};

/// Rounds × (every variant: the training steps, then inference on the same
/// batches), the order rotated each round; per-round ratios to `reference`
/// (when it is timed), then medians over rounds. Writes one CSV row per
/// (round, variant). Inference uses the training batch size: buffers shared
/// by the training and inference passes are then never regrown.
inline std::map<std::string, Timing> time_interleaved(std::vector<Timed>& timed, const TimingBatches& b, long rounds,
                                                      const std::string& reference,
                                                      const std::filesystem::path& csv_path) {
  for (Timed& t : timed) t.train_steps(), t.infer();  // warm-up: allocation, caches
  std::map<std::string, std::vector<double>> step_s, infer_s;
  std::ofstream csv(csv_path);
  csv << "round,variant,ms_per_step,infer_us_per_image\n";
  const double n = double(b.xs.size());
  std::fprintf(stderr, "timing: %ld rounds of %zu training steps and inference on the same %.0f images per variant\n",
               rounds, b.xs.size(), b.images);
  for (long r = 0; r < rounds; ++r) {
    for (std::size_t k = 0; k < timed.size(); ++k) {
      Timed& t = timed[(k + std::size_t(r)) % timed.size()];
      const double a = t.train_steps(), i = t.infer();
      step_s[t.variant].push_back(a), infer_s[t.variant].push_back(i);
      csv << r + 1 << ',' << t.variant << ',' << 1e3 * a / n << ',' << 1e6 * i / b.images << '\n';
    }
    std::fprintf(stderr, "\rtiming: round %ld/%ld", r + 1, rounds);
  }
  std::fprintf(stderr, "\n");
  std::map<std::string, Timing> out;
  for (const Timed& t : timed) {
    const std::string& v = t.variant;
    std::vector<double> sr, ir;
    if (step_s.count(reference))
      for (std::size_t r = 0; r < step_s[v].size(); ++r) {
        sr.push_back(step_s[v][r] / step_s[reference][r]);
        ir.push_back(infer_s[v][r] / infer_s[reference][r]);
      }
    out[v] = {1e3 * median(step_s[v]) / n, 1e6 * median(infer_s[v]) / b.images, median(sr), median(ir)};
  }
  return out;
}

// ---- claims ---------------------------------------------------------------------------

inline json to_json(const claims::Summary& s) {
  return {{"n", s.n}, {"mean", s.mean}, {"std", s.n >= 2 ? json(s.std) : json()}};
}
inline json to_json(const claims::Welch& w) {
  json j = {{"a", to_json(w.a)}, {"b", to_json(w.b)}, {"diff", w.diff}, {"defined", w.defined}};
  if (w.defined)
    j.update({{"t", w.t}, {"df", w.df}, {"p_two_sided", w.p_two}, {"p_greater", w.p_greater}, {"p_less", w.p_less}});
  else
    j["why_no_test"] = w.why;
  return j;
}

/// Prints "claim <text>: <verdict> (<numbers>)" and stores it in summary["claims"][key].
inline void report_claim(json& summary, const std::string& key, const std::string& text, claims::Verdict v,
                         const std::string& numbers, json detail = json::object()) {
  std::printf("claim %s: %s\n    (%s)\n", text.c_str(), claims::to_string(v), numbers.c_str());
  detail["claim"] = text, detail["verdict"] = claims::to_string(v), detail["numbers"] = numbers;
  summary["claims"][key] = detail;
}

}  // namespace examples
