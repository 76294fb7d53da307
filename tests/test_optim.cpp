#include <catch2/catch.hpp>

#include "lamina/optim/adamw.hpp"
#include "lamina/optim/schedule.hpp"
#include "lamina/optim/sgd.hpp"
#include "support/golden.hpp"

using namespace lamina;

namespace {
// Two parameters p (decay on) and q (decay off), as in the golden optimizer files.
template <class T>
struct Params {
  Tensor<T> p, q, gp, gq;
  explicit Params(const golden::Case& c)
      : p(c.t("p_step0").as<T>()), q(c.t("q_step0").as<T>()), gp(p.shape()), gq(q.shape()) {}
  std::vector<ParamRef<T>> refs() {
    return {ParamRef<T>{"p", p.view(), gp.view(), true, true}, ParamRef<T>{"q", q.view(), gq.view(), false, true}};
  }
};

template <class T, class Opt, class StateCheck>
void run_golden(const golden::Case& c, Params<T>& ps, Opt& opt, StateCheck&& state) {
  REQUIRE(c.p("weight_decay_q") == 0);
  for (long t = 1; t <= c.i("steps"); ++t) {
    const std::string s = std::to_string(t);
    ps.gp.assign(c.t("p_grad" + s).template as<T>().cview());
    ps.gq.assign(c.t("q_grad" + s).template as<T>().cview());
    opt.step();
    golden::check_close<T>("p_step" + s, ps.p.cview(), c.t("p_step" + s), golden::tol<T>());
    golden::check_close<T>("q_step" + s, ps.q.cview(), c.t("q_step" + s), golden::tol<T>());
    state(s);
  }
}
}  // namespace

TEMPLATE_TEST_CASE("SGD with momentum and Nesterov matches torch.optim.SGD", "[optim][golden]", float, double) {
  using T = TestType;
  for (const char* name : {"core/sgd_momentum", "core/sgd_nesterov"}) {
    const golden::Case c = golden::load(name);
    INFO(name);
    Params<T> ps(c);
    optim::SGD<T> opt(ps.refs(), {c.p("lr"), c.p("momentum"), c.p("dampening"), c.p("weight_decay"), c.i("nesterov") != 0});
    run_golden<T>(c, ps, opt, [&](const std::string& s) {
      std::map<std::string, Tensor<T>> st;
      opt.visit_state([&](const ParamRef<T>& r) { st.emplace(r.name, Tensor<T>::copy_of(r.value)); });
      golden::check_close<T>("p_buf" + s, st.at("momentum.p").cview(), c.t("p_buf" + s), golden::tol<T>());
      golden::check_close<T>("q_buf" + s, st.at("momentum.q").cview(), c.t("q_buf" + s), golden::tol<T>());
    });
  }
}

TEMPLATE_TEST_CASE("AdamW matches torch.optim.AdamW", "[optim][golden]", float, double) {
  using T = TestType;
  const golden::Case c = golden::load("core/adamw");
  Params<T> ps(c);
  optim::AdamW<T> opt(ps.refs(), {c.p("lr"), c.p("beta1"), c.p("beta2"), c.p("eps"), c.p("weight_decay")});
  run_golden<T>(c, ps, opt, [&](const std::string& s) {
    std::map<std::string, Tensor<T>> st;
    opt.visit_state([&](const ParamRef<T>& r) { st.emplace(r.name, Tensor<T>::copy_of(r.value)); });
    golden::check_close<T>("p_m" + s, st.at("exp_avg.p").cview(), c.t("p_m" + s), golden::tol<T>());
    golden::check_close<T>("q_v" + s, st.at("exp_avg_sq.q").cview(), c.t("q_v" + s), golden::tol<T>());
  });
}

TEST_CASE("Learning-rate schedules match PyTorch's", "[optim][golden]") {
  const golden::Case cos = golden::load("core/lr_cosine"), warm = golden::load("core/lr_warmup_cosine"),
                     step = golden::load("core/lr_step");
  optim::CosineLR c(cos.p("base_lr"), cos.p("T_max"), cos.p("eta_min"));
  optim::WarmupCosineLR w(warm.p("base_lr"), warm.p("warmup_epochs"), warm.p("start_factor"), warm.p("total_epochs"),
                          warm.p("eta_min"));
  optim::StepLR s(step.p("base_lr"), step.i("step_size"), step.p("gamma"));
  auto check = [](const golden::Case& g, auto&& f) {
    const auto& lr = g.t("lr").v;
    REQUIRE(lr.size() == std::size_t(g.i("epochs")));
    for (std::size_t e = 0; e < lr.size(); ++e) {
      INFO(g.path << " epoch " << e);
      CHECK(std::abs(f(double(e)) - lr[e]) <= 1e-12);
    }
  };
  check(cos, c);
  check(warm, w);
  check(step, s);
}

TEST_CASE("Optimizers honour the per-parameter decay flag and reject bad options", "[optim][errors]") {
  Tensor<double> a(Shape{2}, 1.0), b(Shape{2}, 1.0), ga(Shape{2}), gb(Shape{2});
  std::vector<ParamRef<double>> refs{{"a", a.view(), ga.view(), true, true}, {"b", b.view(), gb.view(), false, true}};
  optim::SGD<double> sgd(refs, {0.1, 0.0, 0.0, 0.5, false});
  sgd.step();  // zero gradient: only decay moves a
  CHECK(a[0] == Approx(1 - 0.1 * 0.5));
  CHECK(b[0] == 1.0);
  optim::AdamW<double> adam(refs, {0.1, 0.9, 0.999, 1e-8, 0.5});
  adam.step();
  CHECK(a[0] == Approx((1 - 0.1 * 0.5) * (1 - 0.1 * 0.5)));
  CHECK(b[0] == 1.0);
  CHECK_THROWS_WITH(optim::SGD<double>(refs, {0.1, 0.0, 0.0, 0.0, true}), Catch::Contains("SGD: nesterov"));
  CHECK_THROWS_AS(optim::SGD<double>(refs, {-0.1}), value_error);
  CHECK_THROWS_WITH(optim::AdamW<double>(refs, {1e-3, 1.0}), Catch::Contains("AdamW: beta1"));
  CHECK_THROWS_AS(optim::AdamW<double>(refs, {1e-3, 0.9, 0.999, 0.0}), value_error);
  CHECK_THROWS_AS(optim::CosineLR(0.1, 0), value_error);
  CHECK_THROWS_AS(optim::StepLR(0.1, 0, 0.1), value_error);
  CHECK_THROWS_AS(optim::WarmupCosineLR(0.1, 10, 0.1, 10), value_error);
}

namespace {
constexpr double nan_v = std::numeric_limits<double>::quiet_NaN(), inf_v = std::numeric_limits<double>::infinity();
// Each value of `bad` given to `make` throws value_error naming "<who>: <what>"; each of `good` builds.
template <class Make>
void check_option(const char* who, const char* what, std::initializer_list<double> bad, std::initializer_list<double> good,
                  Make&& make) {
  const std::string name = std::string(who) + ": " + what;
  for (double v : bad) {
    INFO(name << " = " << v);
    CHECK_THROWS_AS(make(v), value_error);
    CHECK_THROWS_WITH(make(v), Catch::Contains(name));
  }
  for (double v : good) {
    INFO(name << " = " << v);
    CHECK_NOTHROW(make(v));
  }
}
}  // namespace

TEST_CASE("Every optimizer option is checked for negative, NaN, infinite and out-of-range values", "[optim][errors]") {
  Tensor<double> a(Shape{2}, 1.0), ga(Shape{2});
  const std::vector<ParamRef<double>> refs{{"a", a.view(), ga.view(), true, true}};
  auto sgd = [&](optim::SgdOptions o) { return optim::SGD<double>(refs, o); };
  check_option("SGD", "lr", {-1, -1e-300, nan_v, inf_v, -inf_v}, {0, 1e-3, 10},
               [&](double v) { return sgd({.lr = v}); });
  check_option("SGD", "momentum", {-0.1, 1, 1.5, nan_v, inf_v, -inf_v}, {0, 0.9, 0.999},
               [&](double v) { return sgd({.momentum = v}); });
  check_option("SGD", "dampening", {-0.1, 1.01, nan_v, inf_v, -inf_v}, {0, 0.5, 1},
               [&](double v) { return sgd({.momentum = 0.9, .dampening = v}); });
  check_option("SGD", "weight_decay", {-1e-4, nan_v, inf_v, -inf_v}, {0, 5e-4},
               [&](double v) { return sgd({.weight_decay = v}); });
  check_option("SGD", "nesterov", {0.0}, {0.9}, [&](double m) { return sgd({.momentum = m, .nesterov = true}); });
  check_option("SGD", "nesterov", {0.1, 1}, {0}, [&](double d) { return sgd({.momentum = 0.9, .dampening = d, .nesterov = true}); });

  auto adamw = [&](optim::AdamWOptions o) { return optim::AdamW<double>(refs, o); };
  check_option("AdamW", "lr", {-1, nan_v, inf_v, -inf_v}, {0, 1e-3}, [&](double v) { return adamw({.lr = v}); });
  check_option("AdamW", "beta1", {-0.1, 1, 2, nan_v, inf_v}, {0, 0.9}, [&](double v) { return adamw({.beta1 = v}); });
  check_option("AdamW", "beta2", {-0.1, 1, nan_v, inf_v}, {0, 0.999}, [&](double v) { return adamw({.beta2 = v}); });
  check_option("AdamW", "eps", {0, -1e-8, nan_v, inf_v, -inf_v}, {1e-8, 1}, [&](double v) { return adamw({.eps = v}); });
  check_option("AdamW", "weight_decay", {-1, nan_v, inf_v}, {0, 1e-2}, [&](double v) { return adamw({.weight_decay = v}); });

  // set_lr checks the same domain and leaves the rate unchanged on error.
  optim::SGD<double> s(refs, {.lr = 0.1});
  optim::AdamW<double> w(refs, {.lr = 0.01});
  for (double v : {-1.0, nan_v, inf_v, -inf_v}) {
    CHECK_THROWS_WITH(s.set_lr(v), Catch::Contains("SGD: lr"));
    CHECK_THROWS_WITH(w.set_lr(v), Catch::Contains("AdamW: lr"));
  }
  CHECK(s.lr() == 0.1);
  CHECK(w.lr() == 0.01);
}

TEST_CASE("Every schedule argument is checked for negative, zero, NaN and infinite values", "[optim][errors]") {
  check_option("StepLR", "base_lr", {-0.1, nan_v, inf_v}, {0, 0.1}, [](double v) { return optim::StepLR(v, 10, 0.1); });
  check_option("StepLR", "step_size", {0, -3}, {1, 30}, [](double v) { return optim::StepLR(0.1, long(v), 0.1); });
  check_option("StepLR", "gamma", {0, -0.5, nan_v, inf_v}, {0.1, 1, 2}, [](double v) { return optim::StepLR(0.1, 10, v); });
  check_option("CosineLR", "base_lr", {-0.1, nan_v, inf_v}, {0, 0.1}, [](double v) { return optim::CosineLR(v, 10); });
  check_option("CosineLR", "T_max", {0, -1, nan_v, inf_v}, {0.5, 100}, [](double v) { return optim::CosineLR(0.1, v); });
  check_option("CosineLR", "eta_min", {-1e-3, 0.2, nan_v, inf_v}, {0, 0.05, 0.1},
               [](double v) { return optim::CosineLR(0.1, 10, v); });
  check_option("WarmupCosineLR", "base_lr", {-0.1, nan_v, inf_v}, {0, 0.1},
               [](double v) { return optim::WarmupCosineLR(v, 1, 0.1, 10); });
  check_option("WarmupCosineLR", "total", {0, -10, nan_v, inf_v}, {2, 100},
               [](double v) { return optim::WarmupCosineLR(0.1, 1, 0.1, v); });
  check_option("WarmupCosineLR", "warmup", {-1, 10, 11, nan_v, inf_v}, {0, 5, 9.5},
               [](double v) { return optim::WarmupCosineLR(0.1, v, 0.1, 10); });
  check_option("WarmupCosineLR", "start_factor", {0, -0.1, 1.1, nan_v, inf_v}, {0.01, 1},
               [](double v) { return optim::WarmupCosineLR(0.1, 1, v, 10); });
  check_option("WarmupCosineLR", "eta_min", {-1e-3, 0.2, nan_v, inf_v}, {0, 0.1},
               [](double v) { return optim::WarmupCosineLR(0.1, 1, 0.1, 10, v); });
  // Every accepted schedule gives finite, non-negative rates.
  const optim::WarmupCosineLR wc(0.1, 2, 0.1, 10, 0.01);
  for (double e = 0; e <= 10; e += 0.25) CHECK((std::isfinite(wc(e)) && wc(e) >= 0));
}
