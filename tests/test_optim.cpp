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
