// Experiment E3 (spec/experiments.md, fpi_dynalay.md §4–§5): DynaLay on
// Fashion-MNIST (images flattened to 784 inputs, no augmentation). Variants:
//   conventional  stem, K residual dense layers z + tanh(tanh(z A + a) B + b)
//                 (two D×D maps each, as an FPI layer's injection and cell), head;
//   static        the FPI model (stem, K FPI layers solved to tolerance, head),
//                 trained and evaluated on the static path (all K layers in order);
//   dynalay-λ     the same FPI model with the agent, λ_c = λ ∈ {0.1, 0.3, 1.0}.
// Training (AdamW, cosine per step within each phase):
//   conventional, static   --epochs epochs on the task loss;
//   dynalay                the three phases of dynalay::Trainer: warm-up
//                          (--epochs − --joint-epochs epochs, static and random
//                          paths), C_max calibrated on the static path, agent
//                          (--agent-epochs, REINFORCE, agent only), joint
//                          (--joint-epochs, model at --joint-lr and agent).
//                          The warm-up does not depend on λ_c: the first DynaLay
//                          run of a seed saves it (<out>/checkpoints) and the
//                          others start from it.
// Evaluation: greedy on the test set; per sample the FPI iterations, FLOPs
// (model.hpp's exact count), path, confidence (max softmax) and correctness.
// Each finished run is recorded at once in <out>/runs.json (resume as E1/E2).
// Claims (common/claims.hpp, Welch over seeds, α = 0.05):
//  (a) per λ_c: accuracy within 1 point of static, tested as non-inferiority
//      (dynalay against static − 1 point, one-sided "greater"), and mean
//      compute ≤ 60 % of static's (dynalay against 0.6 × static, "less"), in
//      FPI iterations (the spec's C) and, separately, in FLOPs;
//  (b) per λ_c: more FPI iterations on the test samples the model gets wrong
//      than on those it gets right (Welch over the samples of all seeds).
// --solver-figures: on the trained cells of the static seed-1 run, iterations
// and time to tolerance of Picard, Anderson and Broyden, and the backward time
// of each gradient mode against one forward solve (interleaved rounds).
#include <cxxopts.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "common/claims.hpp"
#include "common/cli.hpp"
#include "common/experiment.hpp"
#include "common/svg_plot.hpp"
#include "lamina/dynalay/dynalay.hpp"
#include "lamina/lamina.hpp"

#include <Eigen/Eigenvalues>  // after lamina: its first inclusion of the intrinsic headers silences GCC 12's false positives

using namespace lamina;
using examples::json;
namespace cl = examples::claims;
namespace dl = lamina::dynalay;

namespace {

const std::vector<std::string> all_variants = {"conventional", "static", "dynalay-0.1", "dynalay-0.3", "dynalay-1.0"};
constexpr index_t pixels = 784;

struct Config {
  std::string data;
  long seeds, train_limit, test_limit, epochs, agent_epochs, joint_epochs, batch, width, K, S, hidden, max_iter,
      calibrate_images, rounds;
  double lr, joint_lr, agent_lr, wd, tol, lambda_r, entropy, random_share;
  std::vector<std::string> variants;
  std::filesystem::path out;
  bool train_only, no_train, fresh, solver_figures;
  long figures_seed = 1;  ///< --solver-figures: the static run whose cells are measured
  long anderson_m = 2;    ///< Anderson's memory (spec default 5; 2 here: as few iterations on these cells, less work each)
  long solve_block = fpi::SolverOptions{}.block;  ///< samples solved together by the forward solves
};

bool is_dynalay(const std::string& v) { return v.rfind("dynalay-", 0) == 0; }
double lambda_of(const std::string& v) { return std::stod(v.substr(8)); }

dl::Config model_config(const Config& c) {
  dl::Config m{.in = pixels, .width = c.width, .classes = 10, .K = c.K, .S = c.S, .hidden = c.hidden};
  m.fpi.forward = {.method = fpi::Method::anderson, .tol = c.tol, .max_iter = c.max_iter, .m = c.anderson_m,
                   .block = c.solve_block};
  m.fpi.backward.solver.m = c.anderson_m;
  return m;
}

// ---- the conventional network ---------------------------------------------------

using DenseBlock = Residual<Sequential<Linear<float>, Tanh<float>, Linear<float>, Tanh<float>>>;
using Conventional = Sequential<Linear<float>, Tanh<float>, Stage<DenseBlock>, Linear<float>>;

Conventional make_conventional(const Config& c, Rng& rng) {
  Linear<float> stem(pixels, c.width, rng);
  Stage<DenseBlock> body;
  for (long k = 0; k < c.K; ++k) {
    Linear<float> a(c.width, c.width, rng), b(c.width, c.width, rng);
    using Body = Sequential<Linear<float>, Tanh<float>, Linear<float>, Tanh<float>>;
    body.push_back(DenseBlock(Body(std::move(a), Tanh<float>{}, std::move(b), Tanh<float>{})));
  }
  Linear<float> head(c.width, 10, rng);
  return Conventional(std::move(stem), Tanh<float>{}, std::move(body), std::move(head));
}
/// FLOPs per sample by model.hpp's rule (affine 2·in·out + out, tanh 1 per value).
index_t conventional_flops(const Config& c) {
  const index_t D = c.width;
  return dl::affine_flops(pixels, D) + D + c.K * (2 * dl::affine_flops(D, D) + 2 * D + D) + dl::affine_flops(D, 10);
}

template <class Fn>
index_t parameters_of(const std::vector<ParamRef<float>>& ps, Fn&& keep) {
  index_t n = 0;
  for (const auto& p : ps)
    if (p.trainable && keep(p.name)) n += p.value.size();
  return n;
}

// ---- command line -----------------------------------------------------------------

cxxopts::Options make_cli() {
  cxxopts::Options cli("dynalay_e3", "E3: DynaLay (FPI layers and an agent choosing them) on Fashion-MNIST");
  examples::add_shared_options(cli, {.program = "dynalay_e3",
                                     .variants = "conventional,static,dynalay-0.1,dynalay-0.3,dynalay-1.0",
                                     .epochs = 2,
                                     .train_limit = 4096,
                                     .test_limit = 2000,
                                     .epochs_note = "; --full: 15; model-training epochs, DynaLay's warm-up + joint"});
  cli.add_options()
    ("agent-epochs", "DynaLay agent-phase epochs (agent only; default 1, --full 5)", cxxopts::value<long>())
    ("joint-epochs", "DynaLay joint-phase epochs, part of --epochs (default 1, --full 5)", cxxopts::value<long>())
    ("joint-lr", "model learning rate in the joint phase", cxxopts::value<double>()->default_value("3e-4"))
    ("agent-lr", "agent learning rate (agent and joint phases)", cxxopts::value<double>()->default_value("3e-3"))
    ("weight-decay", "AdamW weight decay", cxxopts::value<double>()->default_value("1e-4"))
    ("width", "state width D", cxxopts::value<long>()->default_value("64"))
    ("K", "FPI layers (or dense layers)", cxxopts::value<long>()->default_value("3"))
    ("S", "most steps of an episode", cxxopts::value<long>()->default_value("4"))
    ("hidden", "agent hidden width", cxxopts::value<long>()->default_value("32"))
    ("tol", "FPI relative-residual tolerance (the spec's default)", cxxopts::value<double>()->default_value("1e-4"))
    ("max-iter", "FPI iterations per solve at most", cxxopts::value<long>()->default_value("30"))
    ("lambda-r", "repeat penalty λ_r", cxxopts::value<double>()->default_value("0.05"))
    ("entropy", "entropy bonus β", cxxopts::value<double>()->default_value("0.01"))
    ("random-share", "warm-up share of samples on a random path", cxxopts::value<double>()->default_value("0.5"))
    ("calibrate-images", "training images C_max is measured on", cxxopts::value<long>()->default_value("2000"))
    ("solver-figures", "solver and backward figures on the trained static cells of --out (the same "
                       "settings; --timing-rounds rounds, at --tol and --max-iter)")
    ("figures-seed", "--solver-figures: the seed of the static run whose checkpoint is measured",
     cxxopts::value<long>()->default_value("1"))
    ("anderson-m", "Anderson's memory m (forward and adjoint solves)", cxxopts::value<long>()->default_value("2"))
    ("solve-block", "samples the forward solves take together (0: the whole batch; the results do not depend on it)",
     cxxopts::value<long>()->default_value(std::to_string(fpi::SolverOptions{}.block)));
  return cli;
}

Config configure(const cxxopts::ParseResult& a) {
  const bool full = a.count("full") > 0;
  auto pick = [&](const char* k, long quick, long whole) { return a.count(k) ? a[k].as<long>() : (full ? whole : quick); };
  Config c{a["data"].as<std::string>(), pick("seeds", 1, 3), pick("train-limit", 4096, 0), pick("test-limit", 2000, 0),
           pick("epochs", 2, 15), pick("agent-epochs", 1, 5), pick("joint-epochs", 1, 5), a["batch"].as<long>(),
           a["width"].as<long>(), a["K"].as<long>(), a["S"].as<long>(), a["hidden"].as<long>(),
           a["max-iter"].as<long>(), a["calibrate-images"].as<long>(), pick("timing-rounds", 3, 7),
           a.count("lr") ? a["lr"].as<double>() : 1e-3, a["joint-lr"].as<double>(), a["agent-lr"].as<double>(),
           a["weight-decay"].as<double>(), a["tol"].as<double>(), a["lambda-r"].as<double>(),
           a["entropy"].as<double>(), a["random-share"].as<double>(),
           examples::parse_variants(a["variants"].as<std::string>(), all_variants, "dynalay_e3"),
           a.count("out") ? a["out"].as<std::string>() : full ? "results/dynalay_e3_tol1e-4" : "results/dynalay_e3",
           a.count("train-only") > 0, a.count("no-train") > 0, a.count("fresh") > 0, a.count("solver-figures") > 0};
  c.figures_seed = a["figures-seed"].as<long>();
  c.anderson_m = a["anderson-m"].as<long>();
  c.solve_block = a["solve-block"].as<long>();
  examples::validate("dynalay_e3", c.epochs, c.seeds, c.rounds, a["timing-steps"].as<long>());
  require(c.joint_epochs >= 0 && c.joint_epochs < c.epochs, "dynalay_e3", "--joint-epochs",
          detail::text("in [0, --epochs = ", c.epochs, ") (the warm-up needs an epoch)"), c.joint_epochs);
  require(c.agent_epochs >= 1, "dynalay_e3", "--agent-epochs", ">= 1", c.agent_epochs);
  require(c.calibrate_images >= 1, "dynalay_e3", "--calibrate-images", ">= 1", c.calibrate_images);
  dl::validate(model_config(c));  // width, K, S, hidden, tol, max_iter: the library's own errors
  dl::validate(dl::TrainOptions{.lambda_r = c.lambda_r, .entropy = c.entropy, .random_path_share = c.random_share});
  if (a["threads"].as<int>() > 0) set_num_threads(a["threads"].as<int>());
  return c;
}

examples::Settings settings_of(const Config& c, const data::Dataset& train, const data::Dataset& test) {
  examples::Settings s;
  s.optimizer = "adamw";
  s.epochs = c.epochs, s.batch = c.batch, s.lr = c.lr, s.momentum = 0.9, s.wd = c.wd;
  s.train_images = long(train.size()), s.test_images = long(test.size());
  s.extra = {{"model", {{"width", c.width}, {"K", c.K}, {"S", c.S}, {"agent_hidden", c.hidden}}},
             {"solver", {{"method", "anderson"}, {"tol", c.tol}, {"max_iter", c.max_iter}, {"backward", "implicit"}}},
             {"schedule", {{"conventional_and_static_epochs", c.epochs},
                           {"dynalay_warmup_epochs", c.epochs - c.joint_epochs},
                           {"dynalay_agent_epochs", c.agent_epochs},
                           {"dynalay_joint_epochs", c.joint_epochs},
                           {"lr_schedule", "cosine per step within each phase"}}},
             {"adamw", {{"beta1", 0.9}, {"beta2", 0.999}, {"joint_lr", c.joint_lr}, {"agent_lr", c.agent_lr}}},
             {"reward", {{"lambda_r", c.lambda_r}, {"entropy", c.entropy}, {"baseline_momentum", 0.9},
                         {"random_path_share", c.random_share}, {"c_max_calibration_images", c.calibrate_images}}},
             {"augmentation", "none (images flattened)"}};
  s.extra["solver"]["anderson_m"] = c.anderson_m;
  return s;
}

// ---- training -------------------------------------------------------------------------

/// x [N, 1, 28, 28] seen as [N, 784].
ConstView<float> flat(const Tensor<float>& x) { return x.cview().reshape(Shape{x.dim(0), pixels}); }

std::vector<ParamRef<float>> trainable(auto&& visit) {
  std::vector<ParamRef<float>> ps;
  visit([&](const ParamRef<float>& p) {
    if (p.trainable) ps.push_back(p);
  });
  return ps;
}

struct Phase {
  std::string label;
  long epochs;
};

/// `epochs` passes over the training set; step(x, labels, lr) returns {loss, accuracy} of the batch.
json train_epochs(const Phase& ph, data::Loader<float>& loader, double lr, train::Progress& progress,
                  const std::function<std::pair<double, double>(ConstView<float>, const std::vector<std::int32_t>&,
                                                                double)>& step,
                  const std::function<void(json&)>& more = {}) {
  const double steps = double(loader.batches());
  const optim::CosineLR schedule(lr, double(ph.epochs) * steps);
  json out = json::array();
  Tensor<float> x;
  std::vector<std::int32_t> y;
  for (long e = 0; e < ph.epochs; ++e) {
    const std::string el = ph.label + " epoch " + std::to_string(e + 1) + "/" + std::to_string(ph.epochs);
    loader.start_epoch();
    progress.start(el, loader.batches());
    double loss = 0, acc = 0, images = 0;
    json rec = json::object();
    for (index_t i = 0; i < loader.batches(); ++i) {
      loader.batch(i, x, y);
      const auto [l, a] = step(flat(x), y, schedule(double(e) * steps + double(i)));
      loss += l * double(y.size()), acc += a * double(y.size()), images += double(y.size());
      progress.update(i + 1, loss / images, acc / images, index_t(images));
    }
    progress.finish();
    const double secs = progress.elapsed();
    rec.update({{"train_loss", loss / images}, {"train_accuracy", acc / images}, {"seconds", secs}});
    if (more) more(rec);
    std::printf("  %s: train loss %.4f acc %.2f%% | %.1f s%s\n", el.c_str(), loss / images, 100 * acc / images, secs,
                rec.contains("note") ? rec["note"].get<std::string>().c_str() : "");
    std::fflush(stdout);
    out.push_back(rec);
  }
  return out;
}

json train_conventional(Conventional& net, const Config& c, data::Loader<float>& loader, train::Progress& progress,
                        const std::string& label) {
  optim::AdamW<float> opt(net, {.lr = c.lr, .weight_decay = c.wd});
  SoftmaxCrossEntropy<float> loss;
  Tensor<float> y, dy, dx;
  return train_epochs({label, c.epochs}, loader, c.lr, progress, [&](ConstView<float> x, const auto& labels, double lr) {
    const double l = double(train::train_step(net, loss, opt, x, labels, lr, y, dy, dx));
    return std::pair{l, double(loss.correct()) / double(labels.size())};
  });
}

/// One phase of dynalay::Trainer: the gradients cleared, the step, the optimisers applied.
json train_phase(dl::Trainer<float>& t, dl::Phase phase, const Phase& ph, double lr,
                 std::vector<optim::AdamW<float>*> opts, std::vector<double> lr_scale, data::Loader<float>& loader,
                 Rng& rng, train::Progress& progress) {
  double iters = 0, reward = 0, nc = 0, n = 0;
  return train_epochs(
      ph, loader, lr, progress,
      [&](ConstView<float> x, const auto& labels, double lr_now) {
        for (auto* o : opts) o->zero_grad();
        const dl::StepStats st = t.step(x, labels, phase, rng);
        for (std::size_t k = 0; k < opts.size(); ++k) {
          opts[k]->set_lr(lr_now * lr_scale[k]);
          opts[k]->step();
        }
        iters += st.mean_iterations * double(labels.size()), reward += st.reward * double(labels.size());
        nc += double(st.not_converged), n += double(labels.size());
        return std::pair{st.loss, st.accuracy};
      },
      [&](json& rec) {
        rec.update({{"phase", dl::name(phase)}, {"mean_iterations", iters / n}, {"mean_reward", reward / n},
                    {"not_converged_samples", nc}});
        char buf[128];
        std::snprintf(buf, sizeof buf, " | %.1f FPI iterations/sample, reward %.3f, %.0f not converged", iters / n,
                      reward / n, nc);
        rec["note"] = buf;
        iters = reward = nc = n = 0;
      });
}

// ---- evaluation ---------------------------------------------------------------------------

struct SampleResult {
  bool correct;
  double confidence, iterations, flops, agent_flops;
  std::vector<index_t> path;
};
struct SolveStats {
  long solves = 0, not_converged = 0, samples_not_converged = 0;
  std::vector<double> iterations, residuals;
};

double max_softmax(const float* l, index_t C) {
  const float m = *std::max_element(l, l + C);
  double z = 0;
  for (index_t k = 0; k < C; ++k) z += std::exp(double(l[k] - m));
  return 1 / z;
}
bool argmax_is(const float* l, index_t C, std::int32_t label) { return index_t(std::max_element(l, l + C) - l) == index_t(label); }

/// Greedy (or, for `static`, the static path) on the test set. A training
/// forward (no parameter changes: the spectral estimates are held) so that the
/// episode keeps every solve's report.
std::vector<SampleResult> evaluate_fpi(dl::DynaLay<float>& m, bool static_path, const data::Dataset& test,
                                       const data::Normalization& norm, SolveStats& ss) {
  m.set_training(false);
  data::Loader<float> loader(test, 500, norm);
  typename dl::DynaLay<float>::Episode e;
  std::vector<SampleResult> out;
  Tensor<float> x;
  std::vector<std::int32_t> y;
  const index_t C = 10, K = m.config().K;
  for (index_t b = 0; b < loader.batches(); ++b) {
    loader.batch(b, x, y);
    std::vector<index_t> all(static_cast<std::size_t>(K));
    for (index_t k = 0; k < K; ++k) all[std::size_t(k)] = k;
    const std::vector<std::vector<index_t>> paths(y.size(), all);
    m.forward(flat(x), e, static_path ? dl::Control::forced : dl::Control::greedy, true, nullptr,
              static_path ? std::span<const std::vector<index_t>>(paths) : std::span<const std::vector<index_t>>());
    for (std::size_t i = 0; i < y.size(); ++i) {
      const dl::SampleTrace& t = e.samples[i];
      const float* l = e.logits.data() + index_t(i) * C;
      out.push_back({argmax_is(l, C, y[i]), max_softmax(l, C), double(t.iterations), double(t.flops.model()),
                     double(t.flops.agent), t.path});
      ss.samples_not_converged += t.converged ? 0 : 1;
    }
    for (const auto& st : e.steps)
      for (const auto& g : st.groups)
        for (const fpi::SampleReport& r : g.cache.report.samples) {
          ++ss.solves;
          ss.not_converged += r.converged ? 0 : 1;
          ss.iterations.push_back(double(r.iterations));
          ss.residuals.push_back(r.residual);
        }
  }
  m.set_training(true);
  return out;
}

std::vector<SampleResult> evaluate_conventional(Conventional& net, const Config& c, const data::Dataset& test,
                                                const data::Normalization& norm) {
  set_training(net, false);
  data::Loader<float> loader(test, 500, norm);
  std::vector<SampleResult> out;
  Tensor<float> x, logits;
  std::vector<std::int32_t> y;
  for (index_t b = 0; b < loader.batches(); ++b) {
    loader.batch(b, x, y);
    logits.resize(Shape{x.dim(0), 10});
    net.infer(flat(x), logits.view());
    for (std::size_t i = 0; i < y.size(); ++i) {
      const float* l = logits.data() + index_t(i) * 10;
      out.push_back({argmax_is(l, 10, y[i]), max_softmax(l, 10), 0.0, double(conventional_flops(c)), 0.0, {}});
    }
  }
  return out;
}

json to_json(const dl::Distribution& d) {
  return {{"mean", d.mean}, {"median", d.median}, {"p95", d.p95}, {"max", d.max}};
}
std::vector<double> field(const std::vector<SampleResult>& r, double SampleResult::*f, int which = -1) {
  std::vector<double> v;  // which: -1 all, 0 wrong, 1 correct
  for (const SampleResult& s : r)
    if (which < 0 || int(s.correct) == which) v.push_back(s.*f);
  return v;
}

/// Counts of the FPI iterations per sample ("iterations": samples), of the correct and the wrong samples.
json iteration_histograms(const std::vector<SampleResult>& r) {
  std::map<long, long> h[2];
  for (const SampleResult& s : r) ++h[s.correct ? 1 : 0][long(s.iterations)];
  json j;
  for (int w = 0; w < 2; ++w) {
    json o = json::object();
    for (auto [k, n] : h[w]) o[std::to_string(k)] = n;
    j[w ? "correct" : "wrong"] = o;
  }
  return j;
}

/// actions[s][a]: samples that took action a (layer a, or answer = K) at step s.
json action_histogram(const std::vector<SampleResult>& r, const Config& c) {
  std::vector<std::vector<long>> h(std::size_t(c.S + 1), std::vector<long>(std::size_t(c.K + 1), 0));
  for (const SampleResult& s : r)
    for (std::size_t k = 0; k <= s.path.size() && k <= std::size_t(c.S); ++k)
      ++h[k][k < s.path.size() ? std::size_t(s.path[k]) : std::size_t(c.K)];
  return h;
}

/// Mean compute of the samples below and at-or-above the median confidence.
json by_confidence(const std::vector<SampleResult>& r) {
  std::vector<double> conf = field(r, &SampleResult::confidence);
  const double med = examples::median(conf);
  double it[2] = {0, 0}, fl[2] = {0, 0}, n[2] = {0, 0};
  for (const SampleResult& s : r) {
    const int hi = s.confidence >= med ? 1 : 0;
    it[hi] += s.iterations, fl[hi] += s.flops, ++n[hi];
  }
  return {{"median_confidence", med},
          {"low", {{"n", n[0]}, {"mean_iterations", it[0] / std::max(1.0, n[0])}, {"mean_flops", fl[0] / std::max(1.0, n[0])}}},
          {"high", {{"n", n[1]}, {"mean_iterations", it[1] / std::max(1.0, n[1])}, {"mean_flops", fl[1] / std::max(1.0, n[1])}}}};
}

json evaluation_json(const std::vector<SampleResult>& r, const SolveStats* ss, const Config& c) {
  double correct = 0;
  for (const SampleResult& s : r) correct += s.correct ? 1 : 0;
  json j = {{"test_accuracy", correct / double(r.size())},
            {"iterations", to_json(dl::distribution(field(r, &SampleResult::iterations)))},
            {"flops", to_json(dl::distribution(field(r, &SampleResult::flops)))},
            {"agent_flops_mean", dl::distribution(field(r, &SampleResult::agent_flops)).mean},
            {"mean_iterations", dl::distribution(field(r, &SampleResult::iterations)).mean},
            {"mean_flops", dl::distribution(field(r, &SampleResult::flops)).mean}};
  for (int w = 0; w < 2; ++w)
    j["compute_" + std::string(w ? "correct" : "wrong")] = {
        {"n", field(r, &SampleResult::iterations, w).size()},
        {"mean_iterations", dl::distribution(field(r, &SampleResult::iterations, w)).mean},
        {"mean_flops", dl::distribution(field(r, &SampleResult::flops, w)).mean}};
  j["compute_by_confidence"] = by_confidence(r);
  j["iteration_histograms"] = iteration_histograms(r);
  if (!ss) return j;
  j["action_histogram"] = action_histogram(r, c);
  j["solver"] = {{"solves", ss->solves}, {"not_converged_solves", ss->not_converged},
                 {"not_converged_samples", ss->samples_not_converged},
                 {"iterations_per_solve", to_json(dl::distribution(ss->iterations))},
                 {"residual", to_json(dl::distribution(ss->residuals))}};
  return j;
}

// ---- one run ------------------------------------------------------------------------------

std::filesystem::path checkpoint(const Config& c, const std::string& what, std::uint64_t seed) {
  return c.out / "checkpoints" / (what + "_seed" + std::to_string(seed) + ".bin");
}

/// C_max: the mean FPI iterations of the static path on the first training images.
double calibrate(dl::Trainer<float>& t, const Config& c, const examples::RunData& d) {
  data::Loader<float> loader(d.train, std::min<index_t>(c.calibrate_images, d.train.size()), d.norm);
  Tensor<float> x;
  std::vector<std::int32_t> y;
  loader.batch(0, x, y);
  return t.calibrate_c_max(flat(x));
}

json train_fpi(const std::string& label, const std::string& v, std::uint64_t seed, const Config& c,
               const examples::RunData& d, train::Progress& progress) {
  Rng rng(seed);
  dl::DynaLay<float> m(model_config(c), rng);
  const bool dyn = is_dynalay(v);
  dl::Trainer<float> t(m, {.lambda_c = dyn ? lambda_of(v) : 0.0, .lambda_r = c.lambda_r, .entropy = c.entropy,
                           .random_path_share = dyn ? c.random_share : 0.0});
  auto model_params = trainable([&](auto f) { m.visit_model(f, ""); });
  auto agent_params = trainable([&](auto f) { m.visit_agent(f, ""); });
  optim::AdamW<float> opt(model_params, {.lr = c.lr, .weight_decay = c.wd});
  data::Loader<float> loader(d.train, c.batch, d.norm, true, {}, seed);
  json run = {{"seed", seed}, {"epochs", json::array()}};
  auto add = [&](json e) {
    for (auto& x : e) run["epochs"].push_back(x);
  };
  const long warm = dyn ? c.epochs - c.joint_epochs : c.epochs;
  const auto warm_ckpt = checkpoint(c, dyn ? "warmup" : "static", seed);
  const auto t0 = std::chrono::steady_clock::now();
  if (dyn && std::filesystem::exists(warm_ckpt)) {
    dl::load_checkpoint(t, m, warm_ckpt);
    std::printf("  %s: warm-up loaded from %s (it does not depend on lambda_c)\n", label.c_str(), warm_ckpt.string().c_str());
    run["warmup_from_checkpoint"] = true;
  } else {
    add(train_phase(t, dl::Phase::warmup, {label + (dyn ? " warm-up" : ""), warm}, c.lr, {&opt}, {1.0}, loader, rng, progress));
    std::filesystem::create_directories(warm_ckpt.parent_path());
    dl::save_checkpoint(t, m, warm_ckpt);
  }
  if (dyn) {
    run["c_max"] = calibrate(t, c, d);
    std::printf("  %s: C_max = %.2f FPI iterations (static path, %ld training images)\n", label.c_str(),
                run["c_max"].get<double>(), long(std::min<index_t>(c.calibrate_images, d.train.size())));
    Rng prng(seed * 7919 + 1);  // the same after a loaded warm-up
    loader = data::Loader<float>(d.train, c.batch, d.norm, true, {}, seed + 1000);
    optim::AdamW<float> aopt(agent_params, {.lr = c.agent_lr, .weight_decay = 0.0});
    add(train_phase(t, dl::Phase::agent, {label + " agent", c.agent_epochs}, c.agent_lr, {&aopt}, {1.0}, loader, prng,
                    progress));
    if (c.joint_epochs > 0) {
      optim::AdamW<float> jopt(model_params, {.lr = c.joint_lr, .weight_decay = c.wd});
      add(train_phase(t, dl::Phase::joint, {label + " joint", c.joint_epochs}, c.joint_lr, {&jopt, &aopt},
                      {1.0, c.agent_lr / c.joint_lr}, loader, prng, progress));
    }
  }
  run["train_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  SolveStats ss;
  const auto res = evaluate_fpi(m, !dyn, d.test, d.norm, ss);
  run.update(evaluation_json(res, &ss, c));
  const auto all = trainable([&](auto f) { m.visit(f, ""); });
  run["params"] = parameters_of(all, [](const std::string& n) { return n.rfind("agent.", 0) != 0; });
  run["agent_params"] = parameters_of(all, [](const std::string& n) { return n.rfind("agent.", 0) == 0; });
  return run;
}

json train_variant(const std::string& label, const std::string& v, std::uint64_t seed, const Config& c,
                   const examples::RunData& d, train::Progress& progress) {
  json run;
  if (v == "conventional") {
    Rng rng(seed);
    Conventional net = make_conventional(c, rng);
    data::Loader<float> loader(d.train, c.batch, d.norm, true, {}, seed);
    const auto t0 = std::chrono::steady_clock::now();
    run = {{"seed", seed}, {"epochs", train_conventional(net, c, loader, progress, label)}};
    run["train_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    run.update(evaluation_json(evaluate_conventional(net, c, d.test, d.norm), nullptr, c));
    run["params"] = parameter_count(net).total;
    run["agent_params"] = 0;
  } else {
    run = train_fpi(label, v, seed, c, d, progress);
  }
  std::printf("  %s: test accuracy %.2f%%, %.2f FPI iterations and %.0f FLOPs per sample (mean)\n", label.c_str(),
              100 * run["test_accuracy"].get<double>(), run["mean_iterations"].get<double>(),
              run["mean_flops"].get<double>());
  return run;
}

// ---- solver figures on the trained cells -------------------------------------------------------

double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// The inputs of each layer along the static path for the first 500 test images.
std::vector<Tensor<float>> layer_inputs(dl::DynaLay<float>& m, const examples::RunData& d) {
  data::Loader<float> loader(d.test, std::min<index_t>(500, d.test.size()), d.norm);
  Tensor<float> x;
  std::vector<std::int32_t> y;
  loader.batch(0, x, y);
  const index_t N = x.dim(0), D = m.config().width;
  std::vector<Tensor<float>> in(std::size_t(m.config().K + 1), Tensor<float>(Shape{N, D}));
  Tensor<float> a(Shape{N, D});
  m.stem().infer(flat(x), a.view());
  Tanh<float>().infer(a.cview(), in[0].view());
  for (index_t k = 0; k < m.config().K; ++k) m.layer(k).infer(in[std::size_t(k)].cview(), in[std::size_t(k + 1)].view());
  in.pop_back();
  return in;
}

/// The Jacobian J = diag(1 − z*²) Ŵᵀ of a trained tanh cell at its fixed point z*
/// (f(z*) = z*), for the first `samples` rows of zs: its eigenvalues' spectral
/// radius ρ (the asymptotic Picard rate) and where they lie inside the disc of
/// radius ρ, and its norm ‖J‖₂. Picard's error after k steps is bounded by
/// ‖J^k‖, which for a non-normal J stays near ‖J‖^k long before ρ^k takes over.
json jacobian_spectrum(const Tensor<float>& weff, ConstView<float> zs, index_t samples) {
  const index_t D = weff.dim(0);
  const Eigen::MatrixXd Wt = lamina::as_matrix(weff.cview(), D, D).cast<double>().transpose();
  std::vector<double> rho, norm, fill, imag, left, right, second, sixth;
  for (index_t i = 0; i < std::min(samples, zs.dim(0)); ++i) {
    Eigen::MatrixXd J = Wt;
    for (index_t r = 0; r < D; ++r) J.row(r) *= 1.0 - double(zs.data()[i * D + r]) * double(zs.data()[i * D + r]);
    const Eigen::VectorXcd ev = Eigen::EigenSolver<Eigen::MatrixXd>(J, false).eigenvalues();
    const double r = ev.cwiseAbs().maxCoeff();
    std::vector<double> mags;
    for (index_t k = 0; k < ev.size(); ++k) mags.push_back(std::abs(ev(k)) / r);
    rho.push_back(r);
    norm.push_back(Eigen::JacobiSVD<Eigen::MatrixXd>(J).singularValues()(0));  // ‖J‖₂ ≫ ρ: far from normal
    fill.push_back(examples::median(mags));
    std::sort(mags.begin(), mags.end(), std::greater<>());
    second.push_back(mags[1]);  // the rate left once the dominant mode is removed
    sixth.push_back(mags[5]);   // ... once m = 5 modes are (the most a memory of 5 can remove)
    imag.push_back(ev.imag().cwiseAbs().maxCoeff() / r);
    left.push_back(ev.real().minCoeff() / r);
    right.push_back(ev.real().maxCoeff() / r);
  }
  return {{"samples", long(rho.size())}, {"spectral_radius", examples::median(rho)}, {"norm2", examples::median(norm)},
          {"median_abs_over_radius", examples::median(fill)}, {"second_abs_over_radius", examples::median(second)},
          {"sixth_abs_over_radius", examples::median(sixth)}, {"max_imag_over_radius", examples::median(imag)},
          {"min_real_over_radius", examples::median(left)}, {"max_real_over_radius", examples::median(right)},
          {"statistic", "median over samples"}};
}

/// Two-sided sign test: P(a count at least as far from n/2 as k) under Binomial(n, 1/2).
double sign_test(long k, long n) {
  const long tail = std::min(k, n - k);
  double p = 0;
  for (long j = 0; j <= tail; ++j) p += std::exp(std::lgamma(n + 1.0) - std::lgamma(j + 1.0) - std::lgamma(n - j + 1.0) - n * std::log(2.0));
  return std::min(1.0, 2 * p);
}

/// a / b per interleaved round (a and b timed in the same round): median, range,
/// the rounds where a was faster and the sign test of that count.
json paired_ratio(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  long faster = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) r.push_back(a[i] / b[i]), faster += a[i] < b[i];
  const auto [lo, hi] = std::minmax_element(r.begin(), r.end());
  return {{"median", examples::median(r)}, {"min", *lo}, {"max", *hi}, {"rounds", long(r.size())},
          {"rounds_faster", faster}, {"sign_test_p", sign_test(faster, long(r.size()))}};
}

std::string describe(const json& j) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "median %.3f (%.3f-%.3f), faster in %ld of %ld rounds, sign test p = %.2g",
                j["median"].get<double>(), j["min"].get<double>(), j["max"].get<double>(), j["rounds_faster"].get<long>(),
                j["rounds"].get<long>(), j["sign_test_p"].get<double>());
  return buf;
}

void solver_figures(const Config& c, const examples::RunData& d) {
  const auto path = checkpoint(c, "static", std::uint64_t(c.figures_seed));
  require(std::filesystem::exists(path), "dynalay_e3", "--solver-figures",
          lamina::detail::text("a recorded static seed-", c.figures_seed, " run (its checkpoint)"), path.string() + " missing");
  Rng rng(1);
  dl::DynaLay<float> m(model_config(c), rng);
  dl::Trainer<float> t(m);
  dl::load_checkpoint(t, m, path);
  m.set_training(false);
  const auto inputs = layer_inputs(m, d);
  const fpi::Method methods[] = {fpi::Method::picard, fpi::Method::anderson, fpi::Method::broyden};
  // implicit_picard: the implicit backward with Picard for the forward and the adjoint solve.
  const fpi::BackwardMode modes[] = {fpi::BackwardMode::implicit, fpi::BackwardMode::phantom, fpi::BackwardMode::one_step,
                                     fpi::BackwardMode::unrolled, fpi::BackwardMode::implicit};
  const char* mode_names[] = {"implicit", "phantom", "one_step", "unrolled", "implicit_picard"};
  auto picard_forward = [](std::size_t q) { return q >= 3; };  // unrolled requires it
  json out = {{"checkpoint", path.string()}, {"seed", c.figures_seed}, {"samples", inputs[0].dim(0)}, {"rounds", c.rounds},
              {"tol", c.tol}, {"max_iter", c.max_iter}, {"anderson_m", c.anderson_m},
              {"solve_block", c.solve_block}, {"layers", json::array()}};
  std::printf("\nsolver figures on the trained static seed-%ld cells (%ld test images, tol %g, Anderson m = %ld, blocks of "
              "%ld samples, %ld rounds, medians):\n", c.figures_seed, long(inputs[0].dim(0)), c.tol, c.anderson_m,
              c.solve_block, c.rounds);
  std::printf("%-6s %-9s %10s %8s %10s %10s | %-9s %12s %10s\n", "layer", "solver", "mean iter", "max", "not conv",
              "ms/solve", "backward", "ms", "x forward");
  for (index_t k = 0; k < c.K; ++k) {
    auto& l = m.layer(k);
    const ConstView<float> x = inputs[std::size_t(k)].cview();
    Tensor<float> y(Shape{x.dim(0), c.width}), dy(Shape{x.dim(0), c.width}), dx(Shape{x.dim(0), c.width});
    for (index_t i = 0; i < dy.size(); ++i) dy[i] = float(rng.normal()) / 10;
    const fpi::Options base = l.options();
    std::map<std::string, std::vector<double>> ms;
    std::map<std::string, fpi::SolveReport> reps;
    typename dl::DynaLay<float>::Layer::Cache cache;
    for (long r = 0; r <= c.rounds; ++r) {  // round 0: warm-up, not kept
      for (std::size_t j = 0; j < 3; ++j) {
        const fpi::Method me = methods[(j + std::size_t(r)) % 3];
        fpi::Options o = base;
        o.forward.method = me;
        l.set_options(o);
        const double s = seconds([&] { l.infer(x, y.view()); });
        if (r > 0) ms[fpi::name(me)].push_back(1e3 * s);
        reps[fpi::name(me)] = l.last_report();
      }
      for (std::size_t j = 0; j < 5; ++j) {
        const std::size_t q = (j + std::size_t(r)) % 5;
        fpi::Options o = base;
        o.backward.mode = modes[q];
        if (picard_forward(q)) o.forward.method = fpi::Method::picard;
        if (q == 4) o.backward.solver.method = fpi::Method::picard;
        l.set_options(o);
        l.forward(x, y.view(), cache, Pass{.recompute = true});
        dx.zero();
        const double s = seconds([&] { l.backward(cache, dy.cview(), dx.view(), {.input = true, .params = true}); });
        if (r > 0) ms[std::string("bw_") + mode_names[q]].push_back(1e3 * s);
        if (modes[q] == fpi::BackwardMode::implicit) reps[std::string("adjoint_") + mode_names[q]] = l.last_backward_report();
      }
    }
    l.set_options(base);
    json lj = {{"layer", k}, {"solvers", json::object()}, {"backward", json::object()}};
    for (fpi::Method me : methods) {
      const auto& rp = reps[fpi::name(me)];
      const double t_ms = examples::median(ms[fpi::name(me)]);
      lj["solvers"][fpi::name(me)] = {{"mean_iterations", rp.mean_iterations()}, {"max_iterations", rp.max_iterations()},
                                      {"not_converged", rp.failed()}, {"ms_per_solve", t_ms}};
      std::printf("%-6ld %-9s %10.2f %8ld %10ld %10.3f |\n", long(k), fpi::name(me), rp.mean_iterations(),
                  long(rp.max_iterations()), long(rp.failed()), t_ms);
    }
    l.set_options(base);
    l.infer(x, y.view());  // z* of every sample
    lj["jacobian_spectrum"] = jacobian_spectrum(l.cell().f().effective_weight(), y.cview(), 32);
    const json& sp = lj["jacobian_spectrum"];
    std::printf("%-6ld Jacobian at z* (32 samples, medians): spectral radius %.3f, norm %.3f; |lambda|/radius median %.2f, "
                "2nd %.2f, 6th %.2f; Re/radius %.2f..%.2f; max |Im|/radius %.2f\n",
                long(k), sp["spectral_radius"].get<double>(), sp["norm2"].get<double>(), sp["median_abs_over_radius"].get<double>(),
                sp["second_abs_over_radius"].get<double>(), sp["sixth_abs_over_radius"].get<double>(), sp["min_real_over_radius"].get<double>(), sp["max_real_over_radius"].get<double>(),
                sp["max_imag_over_radius"].get<double>());
    lj["anderson_over_picard"] = paired_ratio(ms["anderson"], ms["picard"]);
    std::printf("%-6ld anderson / picard time per round: %s\n", long(k), describe(lj["anderson_over_picard"]).c_str());
    for (std::size_t q = 0; q < 5; ++q) {
      const char* fwd = picard_forward(q) ? "picard" : "anderson";
      const double b = examples::median(ms[std::string("bw_") + mode_names[q]]);
      const double f = examples::median(ms[fwd]);
      lj["backward"][mode_names[q]] = {{"ms", b}, {"forward_ms", f}, {"ratio_to_forward", b / f}, {"forward_solver", fwd}};
      std::printf("%-6ld %-9s %10s %8s %10s %10s | %-15s %6.3f %10.2f\n", long(k), "", "", "", "", "", mode_names[q], b, b / f);
      if (modes[q] != fpi::BackwardMode::implicit) continue;
      const auto& adj = reps[std::string("adjoint_") + mode_names[q]];
      lj["backward"][mode_names[q]]["adjoint_mean_iterations"] = adj.mean_iterations();
      lj["backward"][mode_names[q]]["adjoint_not_converged"] = adj.failed();
    }
    out["layers"].push_back(lj);
  }
  std::printf("(backward ratio: to one forward solve of the layer, Anderson; unrolled and implicit_picard: to Picard)\n");
  io::write_file_atomically(c.out / "solver_figures.json", out.dump(2) + "\n", "lamina::dynalay_e3");
  std::printf("solver figures in %s\n", (c.out / "solver_figures.json").string().c_str());
}

// ---- summary -------------------------------------------------------------------------------------

/// Every sample's iterations of the runs of v, correct (1) or wrong (0), from the histograms.
std::vector<double> pooled_iterations(const examples::Records& rec, const std::string& v, long seeds, int correct) {
  std::vector<double> out;
  for (const json& r : rec.of(v, seeds))
    for (const auto& [k, n] : r["iteration_histograms"][correct ? "correct" : "wrong"].items())
      out.insert(out.end(), std::size_t(n.get<long>()), std::stod(k));
  return out;
}

void judge(json& j, const Config& c, const examples::Records& rec) {
  if (rec.of("static", c.seeds).empty()) return;
  const auto acc_s = rec.values("static", c.seeds, "test_accuracy", 100);
  for (const std::string& v : c.variants) {
    if (!is_dynalay(v) || rec.of(v, c.seeds).empty()) continue;
    const auto acc = cl::welch(rec.values(v, c.seeds, "test_accuracy", 100), cl::shifted(acc_s, -1.0));
    for (const char* unit : {"mean_iterations", "mean_flops"}) {
      const auto comp = cl::welch(rec.values(v, c.seeds, unit), cl::scaled(rec.values("static", c.seeds, unit), 0.6));
      const bool it = std::string(unit) == "mean_iterations";
      examples::report_claim(
          j, "a_" + v + (it ? "_iterations" : "_flops"),
          v + " within 1 point of static's accuracy at <= 60% of its mean " + (it ? "FPI iterations" : "FLOPs") +
              " per sample",
          cl::all_of({cl::judge(acc, cl::Direction::greater), cl::judge(comp, cl::Direction::less)}),
          "test acc % " + v + " vs static - 1: " + cl::format(acc) + "; " + unit + " " + v + " vs 0.6 x static: " +
              cl::format(comp, 1),
          {{"accuracy_test", examples::to_json(acc)}, {"compute_test", examples::to_json(comp)}});
    }
    const auto wrong = pooled_iterations(rec, v, c.seeds, 0), right = pooled_iterations(rec, v, c.seeds, 1);
    const auto hard = cl::welch(wrong, right);
    examples::report_claim(j, "b_" + v, v + " spends more FPI iterations on the test samples it gets wrong than on those it gets right",
                           cl::judge(hard, cl::Direction::greater),
                           "iterations per sample, wrong vs right (samples of all seeds): " + cl::format(hard),
                           {{"test", examples::to_json(hard)}});
  }
}

void plots(const Config& c, const examples::Records& rec) {
  std::vector<examples::Series> pts;
  for (const std::string& v : c.variants) {
    examples::Series s{v, {}, {}, true};
    for (const json& r : rec.of(v, c.seeds))
      s.x.push_back(r["mean_flops"].get<double>() / 1e6), s.y.push_back(100 * r["test_accuracy"].get<double>());
    if (!s.x.empty()) pts.push_back(s);
  }
  examples::write_svg_chart((c.out / "accuracy_vs_compute.svg").string(),
                            "E3: accuracy against compute (one point per variant and seed)",
                            "mean model MFLOPs per test sample", "test accuracy (%)", pts);
  for (const std::string& v : c.variants) {
    const auto runs = rec.of(v, c.seeds);
    if (runs.empty() || !runs.front().contains("action_histogram")) continue;
    const json& h = runs.front()["action_histogram"];
    std::vector<examples::Series> series;
    for (long a = 0; a <= c.K; ++a) {
      examples::Series s{a < c.K ? "layer " + std::to_string(a) : "answer", {}, {}, false};
      for (std::size_t st = 0; st < h.size(); ++st) s.x.push_back(double(st)), s.y.push_back(h[st][std::size_t(a)].get<double>());
      series.push_back(s);
    }
    examples::write_svg_chart((c.out / ("actions_" + v + ".svg")).string(),
                              "E3: actions per step, " + v + " (seed " + runs.front()["seed"].dump() + ", test set)",
                              "step s", "test samples", series);
  }
}

void summarize(const Config& c, const examples::Settings& s, const examples::Records& rec) {
  json j = {{"experiment", "E3"}, {"settings", s.to_json()}, {"seeds", c.seeds}, {"claims", json::object()}};
  std::ofstream csv(c.out / "runs.csv");
  csv << "variant,seed,test_accuracy,params,agent_params,iter_mean,iter_median,iter_p95,flops_mean,flops_median,flops_p95,"
         "iter_correct,iter_wrong,iter_low_conf,iter_high_conf,not_converged_solves,train_seconds\n";
  std::printf("\n%-13s %4s %14s %7s %6s %22s %28s %15s %15s %7s\n", "variant", "runs", "test acc (%)", "params", "agent",
              "FPI iter mean/med/p95", "kFLOPs mean/med/p95", "iter right/wrong", "iter hi/lo conf", "not conv");
  for (const std::string& v : c.variants) {
    const auto runs = rec.of(v, c.seeds);
    if (runs.empty()) continue;
    const cl::Summary acc = cl::summarize(rec.values(v, c.seeds, "test_accuracy", 100));
    auto mean_of = [&](auto&& get) {
      double t = 0;
      for (const json& r : runs) t += get(r);
      return t / double(runs.size());
    };
    auto m = [&](const char* a, const char* b) { return mean_of([&](const json& r) { return r[a][b].get<double>(); }); };
    auto cm = [&](const char* a, const char* b) {
      return mean_of([&](const json& r) { return r["compute_by_confidence"][a][b].get<double>(); });
    };
    const double nc = mean_of([](const json& r) { return r.contains("solver") ? r["solver"]["not_converged_solves"].get<double>() : 0.0; });
    std::printf("%-13s %4zu %7.2f ± %4s %7ld %6ld %6.2f/%6.1f/%6.1f %8.1f/%8.1f/%8.1f %7.2f/%7.2f %7.2f/%7.2f %7.0f\n",
                v.c_str(), acc.n, acc.mean, cl::format_std(acc).c_str(), runs.front()["params"].get<long>(),
                runs.front()["agent_params"].get<long>(), m("iterations", "mean"), m("iterations", "median"),
                m("iterations", "p95"), m("flops", "mean") / 1e3, m("flops", "median") / 1e3, m("flops", "p95") / 1e3,
                m("compute_correct", "mean_iterations"), m("compute_wrong", "mean_iterations"),
                cm("high", "mean_iterations"), cm("low", "mean_iterations"), nc);
    j["variants"][v] = {{"runs", acc.n}, {"test_accuracy", examples::to_json(acc)},
                        {"accuracies", rec.values(v, c.seeds, "test_accuracy", 100)},
                        {"params", runs.front()["params"]}, {"agent_params", runs.front()["agent_params"]},
                        {"mean_iterations", examples::to_json(cl::summarize(rec.values(v, c.seeds, "mean_iterations")))},
                        {"mean_flops", examples::to_json(cl::summarize(rec.values(v, c.seeds, "mean_flops")))},
                        {"iterations_median", m("iterations", "median")}, {"iterations_p95", m("iterations", "p95")},
                        {"flops_median", m("flops", "median")}, {"flops_p95", m("flops", "p95")},
                        {"iterations_correct", m("compute_correct", "mean_iterations")},
                        {"iterations_wrong", m("compute_wrong", "mean_iterations")},
                        {"iterations_high_confidence", cm("high", "mean_iterations")},
                        {"iterations_low_confidence", cm("low", "mean_iterations")}, {"not_converged_solves", nc}};
    for (const json& r : runs)
      csv << v << ',' << r["seed"] << ',' << r["test_accuracy"] << ',' << r["params"] << ',' << r["agent_params"] << ','
          << r["iterations"]["mean"] << ',' << r["iterations"]["median"] << ',' << r["iterations"]["p95"] << ','
          << r["flops"]["mean"] << ',' << r["flops"]["median"] << ',' << r["flops"]["p95"] << ','
          << r["compute_correct"]["mean_iterations"] << ',' << r["compute_wrong"]["mean_iterations"] << ','
          << r["compute_by_confidence"]["low"]["mean_iterations"] << ','
          << r["compute_by_confidence"]["high"]["mean_iterations"] << ','
          << (r.contains("solver") ? r["solver"]["not_converged_solves"] : json(0)) << ',' << r["train_seconds"] << '\n';
  }
  std::printf("(means over seeds; params: model without the agent; iter: FPI iterations per test sample; hi/lo conf: "
              "at or above / below the run's median max-softmax)\n");
  judge(j, c, rec);
  io::write_file_atomically(c.out / "summary.json", j.dump(2) + "\n", "lamina::dynalay_e3");
  plots(c, rec);
  std::printf("results in %s (runs.json, runs.csv, summary.json, accuracy_vs_compute.svg, actions_<variant>.svg)\n",
              c.out.string().c_str());
}

int run(int argc, char** argv) {
  cxxopts::Options cli = make_cli();
  const auto a = cli.parse(argc, argv);
  if (a.count("help")) {
    std::puts(cli.help().c_str());
    return 0;
  }
  const Config c = configure(a);
  std::filesystem::create_directories(c.out);
  const data::Dataset train = data::load_fashion_mnist(c.data, "train", c.train_limit);
  const data::Dataset test = data::load_fashion_mnist(c.data, "test", c.test_limit);
  const data::Normalization norm = data::statistics(train);
  const examples::RunData d{train, test, norm};
  if (c.solver_figures) {
    solver_figures(c, d);
    return 0;
  }
  const examples::Settings s = settings_of(c, train, test);
  {
    Rng rng(1);
    Conventional conv = make_conventional(c, rng);
    dl::DynaLay<float> m(model_config(c), rng);
    const auto all = trainable([&](auto f) { m.visit(f, ""); });
    std::printf("E3 DynaLay on Fashion-MNIST: %ld train / %ld test images, K = %ld, S = %ld, D = %ld; %ld epochs "
                "(DynaLay: %ld warm-up + %ld agent + %ld joint), %ld seed(s), batch %ld, %d threads\n"
                "parameters: conventional %ld, FPI model %ld (+ agent %ld)\n",
                s.train_images, s.test_images, c.K, c.S, c.width, c.epochs, c.epochs - c.joint_epochs, c.agent_epochs,
                c.joint_epochs, c.seeds, c.batch, num_threads(), long(parameter_count(conv).total),
                long(parameters_of(all, [](const std::string& n) { return n.rfind("agent.", 0) != 0; })),
                long(parameters_of(all, [](const std::string& n) { return n.rfind("agent.", 0) == 0; })));
    std::fflush(stdout);
  }
  dist::LocalCommunicator comm;
  examples::Records rec(c.out / "runs.json", s, c.fresh, "dynalay_e3", comm);
  train::Progress progress;
  examples::train_missing(rec, c.variants, c.seeds, c.no_train, comm,
                          [&](const std::string& label, const std::string& v, std::uint64_t seed) {
                            return train_variant(label, v, seed, c, d, progress);
                          });
  if (!c.train_only) summarize(c, s, rec);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dynalay_e3: %s\n", e.what());
    return 1;
  }
}
