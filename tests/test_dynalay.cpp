// DynaLay (spec/fpi_dynalay.md §4): the REINFORCE estimator on a bandit against
// the analytic gradient of the expected reward, masking to at most S steps,
// per-sample paths in a batch against each sample alone, central-difference
// gradient checks (double, pre-filled buffers) of the task path and the agent,
// FLOPs against a hand count, the checkpoint round trip with the agent and the
// baseline, the training phases, and errors of bad hyper-parameters.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <vector>

#include "lamina/dynalay/dynalay.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;
using namespace lamina::dynalay;
using Catch::Matchers::Contains;

namespace {

using Model = DynaLay<double>;
using Paths = std::vector<std::vector<index_t>>;

fpi::Options tight(fpi::BackwardMode mode = fpi::BackwardMode::implicit) {
  const fpi::Method m = mode == fpi::BackwardMode::unrolled ? fpi::Method::picard : fpi::Method::anderson;
  return {.forward = {.method = m, .tol = 1e-13, .max_iter = 300},
          .backward = {.mode = mode, .solver = {.method = m, .tol = 1e-13, .max_iter = 300}}};
}

Config small(fpi::Options o = tight()) {
  return {.in = 3, .width = 4, .classes = 2, .K = 2, .S = 3, .hidden = 5, .fpi = o};
}

Model make(std::uint64_t seed, Config c = small()) {
  Rng rng(seed);
  Model m(c, rng);
  m.set_training(false);  // no power-iteration updates: every application is the same map
  return m;
}

/// Every trainable gradient of a visitor, concatenated.
template <class V>
std::vector<double> grads(V&& visit) {
  std::vector<double> g;
  visit([&](const ParamRef<double>& p) {
    if (p.trainable) g.insert(g.end(), p.grad.data(), p.grad.data() + p.grad.size());
  });
  return g;
}
std::vector<double> model_grads(Model& m) {
  return grads([&](auto f) { m.visit_model(f, ""); });
}
std::vector<double> agent_grads(Model& m) {
  return grads([&](auto f) { m.visit_agent(f, ""); });
}
std::vector<double> all_values(Model& m) {
  std::vector<double> v;
  m.visit([&](const ParamRef<double>& p) { v.insert(v.end(), p.value.data(), p.value.data() + p.value.size()); }, "");
  return v;
}

Tensor<double> row(const Tensor<double>& t, index_t i) {
  const index_t w = t.dim(1);
  Tensor<double> r(Shape{1, w});
  std::copy(t.data() + i * w, t.data() + (i + 1) * w, r.data());
  return r;
}

double max_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(a[i] - b[i]));
  return d;
}

}  // namespace

TEST_CASE("REINFORCE on a bandit matches the analytic gradient of the expected reward", "[dynalay]") {
  const index_t K = 2;  // three actions, one step (s = 0 < S = 1: all allowed)
  const double logits[3] = {0.3, -0.4, 0.8}, r[3] = {1.0, 0.2, -0.5};
  double p[3];
  masked_softmax(logits, 0, 1, K, p);
  double J = 0;
  for (int j = 0; j < 3; ++j) J += p[j] * r[j];
  for (double b : {0.0, 0.35}) {  // a constant baseline leaves the expectation unchanged
    Rng rng(11);
    const int M = 200000;
    std::vector<double> sum(3, 0), sq(3, 0);
    for (int t = 0; t < M; ++t) {
      const index_t a = sample_action(p, K, rng);
      double g[3] = {0, 0, 0};
      add_reinforce_grad(p, K, a, r[a] - b, 0.0, 1.0, g);
      for (int j = 0; j < 3; ++j) sum[std::size_t(j)] += g[j], sq[std::size_t(j)] += g[j] * g[j];
    }
    for (int j = 0; j < 3; ++j) {
      const double mean = sum[std::size_t(j)] / M;
      const double se = std::sqrt((sq[std::size_t(j)] / M - mean * mean) / M);
      const double expected = -p[j] * (r[j] - J);  // the surrogate is a loss: −∇J
      INFO("baseline " << b << ", action " << j << ": estimate " << mean << ", analytic " << expected << ", se " << se);
      CHECK(std::abs(mean - expected) < 5 * se + 1e-12);
    }
  }
}

TEST_CASE("The entropy bonus gradient matches central differences of -beta*H", "[dynalay]") {
  const index_t K = 3;
  double l[4] = {0.2, -1.1, 0.5, 0.05};
  const double beta = 0.7, h = 1e-6;
  for (index_t s : {index_t(0), index_t(2)}) {  // s = 2 = S: only "answer" allowed
    auto loss = [&]() {
      double p[4];
      masked_softmax(l, s, 2, K, p);
      return -beta * entropy(p, K);
    };
    double p[4], g[4] = {0, 0, 0, 0};
    masked_softmax(l, s, 2, K, p);
    add_reinforce_grad(p, K, K, 0.0, beta, 1.0, g);
    for (int j = 0; j < 4; ++j) {
      const double keep = l[j];
      l[j] = keep + h;
      const double lp = loss();
      l[j] = keep - h;
      const double lm = loss();
      l[j] = keep;
      CHECK(g[j] == Approx((lp - lm) / (2 * h)).margin(1e-8));
    }
  }
}

TEST_CASE("Masking: no sample ever takes more than S steps", "[dynalay]") {
  Rng draw(5);
  for (index_t S : {index_t(1), index_t(2), index_t(4)}) {
    for (int t = 0; t < 200; ++t) {  // random logits, masked softmax alone
      double l[4], p[4];
      for (double& v : l) v = draw.uniform(-20, 20);
      const index_t s = index_t(draw.uniform() * double(S + 1));
      masked_softmax(l, s, S, 3, p);
      for (int j = 0; j < 3; ++j)
        if (s >= S) CHECK(p[j] == 0);
      CHECK(sample_action(p, 3, draw) <= 3);
    }
    Config c = small();
    c.S = S, c.K = 1;
    Model m = make(17 + std::uint64_t(S), c);
    init::uniform(m.agent().second().weight().view(), -4, 4, draw);  // large, random logits
    m.agent().second().bias()[1] = -3;                                // prefer layers: reach the mask
    Model::Episode e;
    index_t longest = 0;
    for (int batch = 0; batch < 30; ++batch) {
      const auto x = gradcheck::random_tensor({7, 3}, 100 + std::uint64_t(batch), -2, 2);
      m.forward(x.cview(), e, Control::sample, true, &draw);
      for (std::size_t i = 0; i < e.samples.size(); ++i) {
        CHECK(index_t(e.samples[i].path.size()) <= S);
        CHECK(e.answer_step[i] == index_t(e.samples[i].path.size()));
        longest = std::max(longest, index_t(e.samples[i].path.size()));
      }
    }
    CHECK(longest == S);  // the mask was reached, so it was what stopped those samples
  }
}

TEST_CASE("A batch with different paths equals each sample run alone", "[dynalay]") {
  Model m = make(3);
  const auto x = gradcheck::random_tensor({5, 3}, 21, -1.5, 1.5);
  const auto G = gradcheck::random_tensor({5, 2}, 22);
  const Paths paths{{0, 1}, {}, {1, 1, 0}, {0}, {1, 0, 1}};
  const std::vector<double> adv{0.5, -1.0, 0.25, 2.0, -0.3};

  SECTION("forced paths: outputs, traces, task gradients") {
    Model::Episode e;
    zero_grad(m);
    m.forward(x.cview(), e, Control::forced, true, nullptr, paths);
    Tensor<double> dx(x.shape());
    m.backward_task(e, G.cview(), dx.view());
    const auto gb = model_grads(m);
    const Tensor<double> logits = Tensor<double>::copy_of(e.logits.cview());
    std::vector<double> gs(gb.size(), 0.0);
    for (index_t i = 0; i < 5; ++i) {
      zero_grad(m);
      const auto xi = row(x, i), gi = row(G, i);
      Model::Episode ei;
      m.forward(xi.cview(), ei, Control::forced, true, nullptr, Paths{paths[std::size_t(i)]});
      Tensor<double> dxi(xi.shape());
      m.backward_task(ei, gi.cview(), dxi.view());
      for (index_t k = 0; k < 2; ++k) CHECK(ei.logits[k] == Approx(logits[i * 2 + k]).epsilon(1e-12));
      for (index_t k = 0; k < 3; ++k) CHECK(dxi[k] == Approx(dx[i * 3 + k]).epsilon(1e-10).margin(1e-13));
      CHECK(ei.samples[0].path == paths[std::size_t(i)]);
      CHECK(ei.samples[0].iterations == e.samples[std::size_t(i)].iterations);
      CHECK(ei.samples[0].flops.total() == e.samples[std::size_t(i)].flops.total());
      const auto g = model_grads(m);
      for (std::size_t k = 0; k < g.size(); ++k) gs[k] += g[k];
    }
    CHECK(max_diff(gs, gb) < 1e-10);
  }
  SECTION("greedy agent: actions, outputs, policy gradients") {
    Rng w(80);  // large agent weights: greedy paths that differ between samples
    init::uniform(m.agent().first().weight().view(), -3, 3, w);
    init::uniform(m.agent().second().weight().view(), -3, 3, w);
    Model::Episode e;
    zero_grad(m);
    m.forward(x.cview(), e, Control::greedy, true);
    m.backward_policy(e, adv, 0.1, 1.0);
    const auto gb = agent_grads(m);
    std::vector<double> gs(gb.size(), 0.0);
    std::size_t distinct = 0;
    for (index_t i = 0; i < 5; ++i) {
      zero_grad(m);
      const auto xi = row(x, i);
      Model::Episode ei;
      m.forward(xi.cview(), ei, Control::greedy, true);
      m.backward_policy(ei, std::vector<double>{adv[std::size_t(i)]}, 0.1, 1.0);
      CHECK(ei.samples[0].path == e.samples[std::size_t(i)].path);
      for (index_t k = 0; k < 2; ++k) CHECK(ei.logits[k] == Approx(e.logits[i * 2 + k]).epsilon(1e-12));
      distinct += e.samples[std::size_t(i)].path != e.samples[0].path;
      const auto g = agent_grads(m);
      for (std::size_t k = 0; k < g.size(); ++k) gs[k] += g[k];
    }
    CHECK(max_diff(gs, gb) < 1e-10);
    INFO("samples whose greedy path differs from sample 0's: " << distinct);
    CHECK(distinct > 0);
  }
}

TEST_CASE("Gradient check of the task path (central differences, pre-filled buffers)", "[dynalay]") {
  for (auto mode : {fpi::BackwardMode::unrolled, fpi::BackwardMode::implicit}) {
    Model m = make(9, small(tight(mode)));
    auto x = gradcheck::random_tensor({4, 3}, 31, -1.5, 1.5);
    const auto G = gradcheck::random_tensor({4, 2}, 32);
    const Paths paths{{1, 0}, {0, 0, 1}, {}, {1}};
    Model::Episode e;
    auto loss = [&]() {
      m.forward(x.cview(), e, Control::forced, true, nullptr, paths);
      double l = 0;
      for (index_t i = 0; i < G.size(); ++i) l += e.logits[i] * G[i];
      return l;
    };
    Rng rng(4);
    std::vector<ParamRef<double>> params;
    m.visit_model([&](const ParamRef<double>& p) { if (p.trainable) params.push_back(p); }, "");
    std::vector<std::vector<double>> g0;
    for (auto& p : params) {
      for (double& v : p.grad.span()) v = rng.uniform(-1, 1);
      g0.emplace_back(p.grad.data(), p.grad.data() + p.grad.size());
    }
    Tensor<double> dx = gradcheck::random_tensor(x.shape(), 5);
    const Tensor<double> dx0 = Tensor<double>::copy_of(dx.cview());
    loss();
    m.backward_task(e, G.cview(), dx.view());
    auto numeric = [&](double* v, index_t n) {
      std::vector<double> g(static_cast<std::size_t>(n));
      for (index_t i = 0; i < n; ++i) {
        const double keep = v[i];
        v[i] = keep + 1e-6;
        const double lp = loss();
        v[i] = keep - 1e-6;
        const double lm = loss();
        v[i] = keep;
        g[std::size_t(i)] = (lp - lm) / 2e-6;
      }
      return g;
    };
    const double tol = mode == fpi::BackwardMode::unrolled ? 1e-6 : 1e-5;
    std::vector<double> a(std::size_t(dx.size()));
    for (index_t i = 0; i < dx.size(); ++i) a[std::size_t(i)] = dx[i] - dx0[i];
    INFO("mode " << int(mode));
    CHECK(gradcheck::rel_error(a, numeric(x.data(), x.size())) < tol);
    for (std::size_t k = 0; k < params.size(); ++k) {
      std::vector<double> d(g0[k].size());
      for (std::size_t i = 0; i < d.size(); ++i) d[i] = params[k].grad.data()[i] - g0[k][i];
      const double err = gradcheck::rel_error(d, numeric(params[k].value.data(), params[k].value.size()));
      INFO(params[k].name << ": relative error " << err);
      CHECK(err < tol);
    }
  }
}

TEST_CASE("Gradient check of the agent: the policy module and the REINFORCE surrogate", "[dynalay]") {
  Model m = make(13);
  auto feats = gradcheck::random_tensor({3, m.feature_size()}, 41);
  gradcheck::check(m.agent(), feats);

  // The surrogate Σ_steps Σ_rows scale·(−A log π(a) − β H) with the episode's actions.
  m.agent().second().bias()[2] = -1.0;
  const auto x = gradcheck::random_tensor({4, 3}, 42, -1.5, 1.5);
  const std::vector<double> adv{0.7, -0.2, 1.3, -0.9};
  const double beta = 0.05, scale = 0.25;
  Model::Episode e;
  m.forward(x.cview(), e, Control::greedy, true);
  std::vector<std::vector<index_t>> actions;
  for (const auto& st : e.steps) actions.push_back(st.actions);
  auto loss = [&]() {
    m.forward(x.cview(), e, Control::greedy, true);
    double l = 0;
    for (std::size_t s = 0; s < e.steps.size(); ++s) {
      const auto& st = e.steps[s];
      REQUIRE(st.actions == actions[s]);
      if (!st.evaluated) continue;
      for (std::size_t j = 0; j < st.rows.size(); ++j) {
        const double* p = st.probs.data() + index_t(j) * 3;
        l += scale * (-adv[std::size_t(st.rows[j])] * std::log(p[st.actions[j]]) - beta * entropy(p, 2));
      }
    }
    return l;
  };
  Rng rng(6);
  std::vector<ParamRef<double>> params;
  m.visit_agent([&](const ParamRef<double>& p) { params.push_back(p); }, "");
  std::vector<std::vector<double>> g0;
  for (auto& p : params) {
    for (double& v : p.grad.span()) v = rng.uniform(-1, 1);
    g0.emplace_back(p.grad.data(), p.grad.data() + p.grad.size());
  }
  loss();
  m.backward_policy(e, adv, beta, scale);
  for (std::size_t k = 0; k < params.size(); ++k) {
    double* v = params[k].value.data();
    std::vector<double> a(g0[k].size()), n(g0[k].size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      a[i] = params[k].grad.data()[i] - g0[k][i];
      const double keep = v[i];
      v[i] = keep + 1e-6;
      const double lp = loss();
      v[i] = keep - 1e-6;
      const double lm = loss();
      v[i] = keep;
      n[i] = (lp - lm) / 2e-6;
    }
    const double err = gradcheck::rel_error(a, n);
    INFO(params[k].name << ": relative error " << err);
    CHECK(err < 1e-6);
  }
}

TEST_CASE("FLOPs per sample against a hand count", "[dynalay]") {
  // in 3, width 4, classes 2, K 2, S 3, hidden 5; features F = 4 + 4 + 3 = 11.
  Model m = make(23);
  CHECK(m.feature_size() == 11);
  CHECK(m.cell_flops() == 40);    // 2·4·4 (z Ŵ) + 4 (+ u) + 4 (tanh)
  CHECK(m.inject_flops() == 36);  // 2·4·4 + 4
  const auto x = gradcheck::random_tensor({1, 3}, 51);
  Model::Episode e;
  m.forward(x.cview(), e, Control::forced, false, nullptr, Paths{{0, 1}});
  // The same path by hand: z0 = tanh(x W_s + b_s), then layer 0, then layer 1.
  Tensor<double> a(Shape{1, 4}), z0(Shape{1, 4}), z1(Shape{1, 4}), z2(Shape{1, 4});
  m.stem().infer(x.cview(), a.view());
  for (index_t k = 0; k < 4; ++k) z0[k] = std::tanh(a[k]);
  m.layer(0).infer(z0.cview(), z1.view());
  const index_t it0 = m.layer(0).last_report().samples[0].iterations;
  m.layer(1).infer(z1.cview(), z2.view());
  const index_t it1 = m.layer(1).last_report().samples[0].iterations;
  const Flops& f = e.samples[0].flops;
  CHECK(e.samples[0].iterations == it0 + it1);
  CHECK(f.stem == 2 * 3 * 4 + 4 + 4);
  CHECK(f.inject == 2 * 36);
  CHECK(f.fpi == 40 * (it0 + it1));
  CHECK(f.head == 2 * 4 * 2 + 2);
  CHECK(f.agent == 0);  // forced: the agent is not evaluated
  for (index_t k = 0; k < 4; ++k) CHECK(e.zf[k] == Approx(z2[k]).epsilon(1e-12));

  m.forward(x.cview(), e, Control::greedy, false);
  const auto len = index_t(e.samples[0].path.size());
  const index_t decisions = len < 3 ? len + 1 : len;  // at s = S the mask decides
  CHECK(e.samples[0].flops.agent == decisions * ((2 * 4 * 2 + 2) + (2 * 11 * 5 + 5 + 5 + 2 * 5 * 3 + 3)));
}

TEST_CASE("Checkpoint round trip holds the agent and the baseline", "[dynalay]") {
  const auto path = std::filesystem::temp_directory_path() / "lamina_test_dynalay.ck";
  Model a = make(31), b = make(32);
  Trainer<double> ta(a), tb(b);
  Rng rng(8);
  const auto x = gradcheck::random_tensor({6, 3}, 61);
  const std::vector<std::int32_t> y{0, 1, 1, 0, 1, 0};
  ta.step(x.cview(), y, Phase::agent, rng);
  REQUIRE(ta.baseline().initialised());
  save_checkpoint(ta, a, path);
  CHECK(all_values(a) != all_values(b));
  load_checkpoint(tb, b, path);
  CHECK(all_values(a) == all_values(b));
  CHECK(tb.baseline().initialised());
  CHECK(tb.baseline().value() == ta.baseline().value());
  Model::Episode ea, eb;
  a.forward(x.cview(), ea, Control::greedy, false);
  b.forward(x.cview(), eb, Control::greedy, false);
  for (std::size_t i = 0; i < 6; ++i) CHECK(ea.samples[i].path == eb.samples[i].path);
  for (index_t i = 0; i < ea.logits.size(); ++i) CHECK(ea.logits[i] == eb.logits[i]);

  Config other = small();
  other.K = 3;
  Model c = make(33, other);
  Trainer<double> tc(c);
  const auto before = all_values(c);
  CHECK_THROWS_AS(load_checkpoint(tc, c, path), error);
  CHECK(all_values(c) == before);
  std::filesystem::remove(path);
}

TEST_CASE("Training phases: what each one trains", "[dynalay]") {
  Model m = make(41);
  m.set_training(true);
  Trainer<double> t(m, {.lambda_c = 0.3, .lambda_r = 0.05, .entropy = 0.01});
  Rng rng(9);
  const auto x = gradcheck::random_tensor({8, 3}, 71);
  const std::vector<std::int32_t> y{0, 1, 1, 0, 1, 0, 0, 1};
  auto nonzero = [](const std::vector<double>& g) {
    return std::any_of(g.begin(), g.end(), [](double v) { return v != 0; });
  };
  const Schedule sched{.warmup = 2, .agent = 3, .joint = 1};
  CHECK(phase_at(sched, 0) == Phase::warmup);
  CHECK(phase_at(sched, 2) == Phase::agent);
  CHECK(phase_at(sched, 5) == Phase::joint);
  CHECK(phase_at(sched, 6) == Phase::done);
  for (Phase p : {Phase::warmup, Phase::agent, Phase::joint}) {
    zero_grad(m);
    const StepStats s = t.step(x.cview(), y, p, rng);
    INFO("phase " << name(p));
    CHECK(std::isfinite(s.loss));
    CHECK(s.mean_iterations > 0);
    CHECK(nonzero(model_grads(m)) == (p != Phase::agent));
    CHECK(nonzero(agent_grads(m)) == (p != Phase::warmup));
  }
  CHECK(reward(true, 30, 60, 2, t.options()) == Approx(1 - 0.3 * 0.5 - 0.05 * 2));
  CHECK(t.c_max() == double(2 * 300));
  Model::Episode st;
  m.forward(x.cview(), st, Control::forced, false, nullptr, Paths(8, std::vector<index_t>{0, 1}));
  double mean = 0;
  for (const auto& s : st.samples) mean += double(s.iterations) / 8;
  CHECK(t.calibrate_c_max(x.cview()) == Approx(mean));
  CHECK(t.c_max() == Approx(mean));
  CHECK(mean < 2 * 300);
  CHECK_THROWS_WITH(t.step(x.cview(), y, Phase::done, rng), Contains("phase"));
}

TEST_CASE("Bad DynaLay hyper-parameters throw clear errors", "[dynalay]") {
  Rng rng(1);
  auto bad_config = [&](Config c) { Model m(c, rng); };
  Config c = small();
  c.S = 0;
  CHECK_THROWS_WITH(bad_config(c), Contains("DynaLay") && Contains("S") && Contains(">= 1") && Contains("got 0"));
  c = small(), c.K = 0;
  CHECK_THROWS_WITH(bad_config(c), Contains("DynaLay") && Contains("K: expected >= 1, got 0"));
  c = small(), c.K = 3, c.S = 2;
  CHECK_THROWS_WITH(bad_config(c), Contains("S: expected >= K = 3") && Contains("got 2"));
  c = small(), c.hidden = 0;
  CHECK_THROWS_WITH(bad_config(c), Contains("hidden: expected >= 1, got 0"));
  c = small(), c.classes = 1;
  CHECK_THROWS_WITH(bad_config(c), Contains("classes: expected >= 2, got 1"));
  c = small(), c.fpi.forward.tol = 0;
  CHECK_THROWS_WITH(bad_config(c), Contains("DynaLay") && Contains("forward.tol"));

  Model m = make(2);
  auto bad_train = [&](TrainOptions o) { Trainer<double> t(m, o); };
  CHECK_THROWS_WITH(bad_train({.lambda_c = -0.1}), Contains("DynaLay: lambda_c: expected finite and >= 0, got -0.1"));
  CHECK_THROWS_WITH(bad_train({.lambda_r = NAN}), Contains("lambda_r") && Contains("nan"));
  CHECK_THROWS_WITH(bad_train({.entropy = -1}), Contains("entropy"));
  CHECK_THROWS_WITH(bad_train({.baseline_momentum = 1}), Contains("baseline_momentum: expected in [0, 1), got 1"));
  CHECK_THROWS_WITH(bad_train({.random_path_share = 2}), Contains("random_path_share"));
  CHECK_THROWS_WITH(phase_at({.warmup = -1}, 0), Contains("schedule.warmup"));

  Model::Episode e;
  const auto x = gradcheck::random_tensor({2, 3}, 3);
  CHECK_THROWS_WITH(m.forward(x.cview(), e, Control::forced, true, nullptr, Paths{{0}, {0, 2}}),
                    Contains("paths[1][1]: expected a layer in [0, 2), got 2"));
  CHECK_THROWS_WITH(m.forward(x.cview(), e, Control::forced, true, nullptr, Paths{{0}, {0, 1, 0, 1}}),
                    Contains("paths[1] length: expected <= S = 3, got 4"));
  CHECK_THROWS_WITH(m.forward(x.cview(), e, Control::sample, true), Contains("rng"));
  const auto wrong = gradcheck::random_tensor({2, 4}, 3);
  CHECK_THROWS_AS(m.forward(wrong.cview(), e, Control::greedy, true), shape_error);
  m.forward(x.cview(), e, Control::greedy, false);
  const auto G = gradcheck::random_tensor({2, 2}, 4);
  CHECK_THROWS_WITH(m.backward_task(e, G.cview(), View<double>{}, {.input = false}), Contains("training forward"));
}

TEST_CASE("Compute report: distribution and action histogram", "[dynalay]") {
  const Distribution d = distribution({5, 1, 3, 2, 4, 100, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19});
  CHECK(d.mean == Approx((190.0 + 100) / 20));  // 1 + … + 19 = 190
  CHECK(d.median == 10.5);  // sorted: 1..19 without 20, then 100
  CHECK(d.p95 == 19);       // the 19th smallest of 20
  CHECK(d.max == 100);
  std::vector<SampleTrace> t(3);
  t[0].path = {0, 1}, t[0].iterations = 10, t[0].flops.fpi = 400;
  t[1].path = {}, t[1].iterations = 0;
  t[2].path = {1, 1, 1}, t[2].iterations = 30, t[2].flops.fpi = 1200;
  const ComputeReport r = compute_report(t, 2, 3);
  CHECK(r.layer_uses == std::vector<index_t>{1, 4});
  CHECK(r.answers_at == std::vector<index_t>{1, 0, 1, 1});
  CHECK(r.iterations.median == 10);
  CHECK(r.flops.mean == Approx(1600.0 / 3));
}

TEST_CASE("DynaLay in float: greedy inference and a training step of each phase", "[dynalay]") {
  Rng rng(12);
  DynaLay<float> m({.in = 3, .width = 4, .classes = 2, .K = 2, .S = 3, .hidden = 5}, rng);
  Trainer<float> t(m);
  Tensor<float> x(Shape{6, 3});
  for (index_t i = 0; i < x.size(); ++i) x[i] = float(rng.uniform(-1, 1));
  const std::vector<std::int32_t> y{0, 1, 1, 0, 1, 0};
  for (Phase p : {Phase::warmup, Phase::agent, Phase::joint}) CHECK(std::isfinite(t.step(x.cview(), y, p, rng).loss));
  Tensor<float> logits(Shape{6, 2});
  DynaLay<float>::Episode e;
  m.infer(x.cview(), logits.view(), e);
  for (index_t i = 0; i < logits.size(); ++i) CHECK(logits[i] == e.logits[i]);
  for (const auto& s : e.samples) CHECK(index_t(s.path.size()) <= 3);
}

TEST_CASE("Gumbel-max draws follow the policy; the relaxation is masked", "[dynalay]") {
  const double l[3] = {0.5, -0.7, 0.1};
  double p[3], y[3];
  masked_softmax(l, 0, 1, 2, p);
  Rng rng(19);
  const int M = 100000;
  std::vector<int> count(3, 0);
  for (int t = 0; t < M; ++t) {
    const index_t a = gumbel_action(l, 0, 1, 2, 0.5, rng, y);
    ++count[std::size_t(a)];
    CHECK(y[0] + y[1] + y[2] == Approx(1.0));
    CHECK(y[a] == *std::max_element(y, y + 3));
  }
  for (int j = 0; j < 3; ++j) {
    const double f = double(count[std::size_t(j)]) / M, se = std::sqrt(p[j] * (1 - p[j]) / M);
    INFO("action " << j << ": frequency " << f << ", probability " << p[j]);
    CHECK(std::abs(f - p[j]) < 5 * se);
  }
  CHECK(gumbel_action(l, 1, 1, 2, 0.5, rng, y) == 2);  // s = S: only "answer"
  CHECK(y[0] == 0);
  CHECK(y[1] == 0);
  CHECK(y[2] == 1);
}

TEST_CASE("Gumbel straight-through gradient of the agent against central differences", "[dynalay]") {
  Config c = small();
  c.gumbel_tau = 0.7;
  Model m = make(27, c);
  m.agent().second().bias()[2] = -1.0;
  const auto x = gradcheck::random_tensor({5, 3}, 81, -1.5, 1.5);
  const auto G = gradcheck::random_tensor({5, 2}, 82);
  const double c_cost = 0.01, r_cost = 0.05, scale = 0.2;
  Model::Episode e;
  auto run = [&]() {
    Rng noise(3);  // the same Gumbel noise in every run
    m.forward(x.cview(), e, Control::gumbel, true, &noise);
  };
  run();
  zero_grad(m);
  m.backward_task(e, G.cview(), View<double>{}, {.input = false, .params = false});
  CHECK(max_diff(model_grads(m), std::vector<double>(model_grads(m).size(), 0.0)) == 0);
  const auto gates = m.gate_gradients();
  // An answer's gate is ∂L/∂ŷ with the head's input ŷ·z: <G_i, z_i W_h>.
  std::size_t answers = 0, layers = 0;
  for (std::size_t s = 0; s < e.steps.size(); ++s)
    for (std::size_t j = 0; j < e.steps[s].rows.size(); ++j) {
      if (e.steps[s].actions[j] != 2) {
        ++layers;
        continue;
      }
      const index_t i = e.steps[s].rows[j];
      double expect = 0;
      for (index_t k = 0; k < 2; ++k) expect += G[i * 2 + k] * (e.logits[i * 2 + k] - m.head().bias()[k]);
      CHECK(gates[s][j] == Approx(expect).epsilon(1e-12));
      ++answers;
    }
  CHECK(answers == 5);
  CHECK(layers > 0);
  std::vector<std::vector<index_t>> actions;
  for (const auto& st : e.steps) actions.push_back(st.actions);
  // Surrogate with the gates held: Σ (gate + scale·penalty) · log y_a (∂ŷ = ∂ log y_a at ŷ = 1).
  auto surrogate = [&]() {
    run();
    double l = 0;
    for (std::size_t s = 0; s < e.steps.size(); ++s) {
      const auto& st = e.steps[s];
      REQUIRE(st.actions == actions[s]);
      if (!st.evaluated) continue;
      for (std::size_t j = 0; j < st.rows.size(); ++j) {
        const index_t a = st.actions[j];
        const auto& path = e.samples[std::size_t(st.rows[j])].path;
        const double rep = s >= 1 && a < 2 && path[s] == path[s - 1] ? 1 : 0;
        const double pen = a < 2 ? c_cost * double(st.iterations[j]) + r_cost * rep : 0.0;
        l += (gates[s][j] + scale * pen) * std::log(st.soft[index_t(j) * 3 + a]);
      }
    }
    return l;
  };
  Rng rng(6);
  std::vector<ParamRef<double>> params;
  m.visit_agent([&](const ParamRef<double>& p) { params.push_back(p); }, "");
  std::vector<std::vector<double>> g0;
  for (auto& p : params) {
    for (double& v : p.grad.span()) v = rng.uniform(-1, 1);
    g0.emplace_back(p.grad.data(), p.grad.data() + p.grad.size());
  }
  m.backward_gumbel(e, c_cost, r_cost, 0.0, scale);
  for (std::size_t k = 0; k < params.size(); ++k) {
    double* v = params[k].value.data();
    std::vector<double> a(g0[k].size()), n(g0[k].size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      a[i] = params[k].grad.data()[i] - g0[k][i];
      const double keep = v[i];
      v[i] = keep + 1e-6;
      const double lp = surrogate();
      v[i] = keep - 1e-6;
      const double lm = surrogate();
      v[i] = keep;
      n[i] = (lp - lm) / 2e-6;
    }
    const double err = gradcheck::rel_error(a, n);
    INFO(params[k].name << ": relative error " << err);
    CHECK(err < 1e-6);
  }
  Model::Episode other;
  m.forward(x.cview(), other, Control::greedy, true);
  CHECK_THROWS_WITH(m.backward_gumbel(other, c_cost, r_cost, 0.0, scale), Contains("Control::gumbel"));
}

TEST_CASE("Training with the Gumbel-softmax option", "[dynalay]") {
  Model m = make(43);
  Trainer<double> t(m, {.gumbel = true});
  Rng rng(10);
  const auto x = gradcheck::random_tensor({8, 3}, 72);
  const std::vector<std::int32_t> y{0, 1, 1, 0, 1, 0, 0, 1};
  auto nonzero = [](const std::vector<double>& g) {
    return std::any_of(g.begin(), g.end(), [](double v) { return v != 0; });
  };
  for (Phase p : {Phase::agent, Phase::joint}) {
    zero_grad(m);
    const StepStats s = t.step(x.cview(), y, p, rng);
    INFO("phase " << name(p));
    CHECK(std::isfinite(s.loss));
    CHECK(nonzero(model_grads(m)) == (p == Phase::joint));
    CHECK(nonzero(agent_grads(m)));
  }
  Config c = small();
  c.gumbel_tau = 0;
  CHECK_THROWS_WITH(Model(c, rng), Contains("DynaLay: gumbel_tau: expected finite and > 0, got 0"));
}

TEST_CASE("REINFORCE end to end: a large compute penalty teaches the agent to answer early", "[dynalay]") {
  Model m = make(51);
  Trainer<double> t(m, {.lambda_c = 1.0, .lambda_r = 0.0, .entropy = 0.0, .baseline_momentum = 0.8});
  const auto x = gradcheck::random_tensor({32, 3}, 91, -1.5, 1.5);
  std::vector<std::int32_t> y(32);
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = std::int32_t(i % 2);
  t.calibrate_c_max(x.cview());
  Rng rng(12);
  auto mean_steps = [&]() {
    Model::Episode e;
    double steps = 0;
    for (int r = 0; r < 10; ++r) {
      m.forward(x.cview(), e, Control::sample, false, &rng);
      for (const auto& s : e.samples) steps += double(s.path.size()) / (32.0 * 10);
    }
    return steps;
  };
  const double before = mean_steps();
  for (int it = 0; it < 150; ++it) {
    zero_grad(m);
    t.step(x.cview(), y, Phase::agent, rng);
    m.visit_agent([](const ParamRef<double>& p) {
      for (index_t i = 0; i < p.value.size(); ++i) p.value.data()[i] -= 0.5 * p.grad.data()[i];
    }, "");
  }
  const double after = mean_steps();
  INFO("mean FPI steps per sample: before " << before << ", after " << after);
  CHECK(before > 1.0);
  CHECK(after < 0.3 * before);
}
