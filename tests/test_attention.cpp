// Layer attention, KL redundancy and EBQM skipping (spec/layer_attention.md):
// the short-row kernels against their scalar references, every golden case of
// mrla_base_stage*, kl_redundancy_*, ebqm_* and beta_cdf, gradient checks of
// whole stages (pre-filled gradient buffers), skipping, checkpoints, the ELA
// schedule and the error messages.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "lamina/attention/ebqm.hpp"
#include "lamina/attention/ela.hpp"
#include "lamina/attention/layer_attention.hpp"
#include "lamina/attention/redundancy.hpp"
#include "lamina/io/checkpoint.hpp"
#include "lamina/lamina.hpp"
#include "lamina/models/ela_resnet.hpp"
#include "support/golden.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;
using attention::Variant;

namespace {

template <class T>
ConstView<T> reshaped(const Tensor<T>& t, Shape s) {
  REQUIRE(s.numel() == t.size());
  return ConstView<T>(t.data(), s);
}

template <class T>
std::vector<T> random_values(index_t n, std::uint64_t seed, double lo, double hi) {
  Rng rng(seed);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (T& x : v) x = T(rng.uniform(lo, hi));
  return v;
}
// Rows of probability vectors (some exact zeros).
template <class T>
std::vector<T> random_probs(index_t R, index_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<T> v(static_cast<std::size_t>(R * n));
  for (index_t r = 0; r < R; ++r) {
    double s = 0;
    for (index_t i = 0; i < n; ++i) s += double(v[std::size_t(r * n + i)] = rng.uniform() < 0.15 ? T(0) : T(rng.uniform()));
    for (index_t i = 0; i < n; ++i) v[std::size_t(r * n + i)] = s > 0 ? T(v[std::size_t(r * n + i)] / s) : T(1) / T(n);
  }
  return v;
}

template <class T>
void check_near(const std::vector<T>& got, const std::vector<T>& ref, double rel, double abs) {
  REQUIRE(got.size() == ref.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", reference " << ref[i]);
    if (std::isnan(ref[i])) CHECK(std::isnan(got[i]));
    else if (std::isinf(ref[i])) CHECK(got[i] == ref[i]);
    else CHECK(std::abs(double(got[i]) - double(ref[i])) <= abs + rel * std::abs(double(ref[i])));
  }
}

template <class T>
constexpr double kernel_rel() {
  return std::is_same_v<T, double> ? 1e-13 : 1e-5;
}

}  // namespace

// ---- short-row kernels ------------------------------------------------------------

TEMPLATE_TEST_CASE("Short-row kernels equal their scalar references on every tail length", "[attention][kernels]", float,
                   double) {
  using T = TestType;
  const auto& table = kernels::table<T>();
  constexpr index_t W = kernels::lanes<T>;
  for (index_t n : {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 40}) {
    for (index_t R = 0; R <= 3 * 16 + 1; ++R) {
      INFO("R = " << R << ", n = " << n << ", lanes " << W);
      const index_t N = R * n;
      auto a = random_values<T>(N, 100 + R * 41 + n, -30, 30);
      if (N > 2) a[std::size_t(N / 2)] = T(900), a[std::size_t(N - 1)] = -std::numeric_limits<T>::infinity();
      std::vector<T> p(a.size()), pr(a.size()), pd(a.size());
      kernels::ref::softmax_rows_short(a.data(), pr.data(), R, n);
      kernels::softmax_rows_short(a.data(), p.data(), R, n);
      table.softmax_rows_short(a.data(), pd.data(), R, n);
      check_near(p, pr, kernel_rel<T>(), 1e-7);
      check_near(pd, pr, kernel_rel<T>(), 1e-7);

      const auto dy = random_values<T>(N, 7 + R + n, -1, 1);
      auto da = random_values<T>(N, 9 + R, -1, 1), dar = da, dad = da;  // adds into pre-filled buffers
      kernels::ref::softmax_backward_rows_short(pr.data(), dy.data(), dar.data(), R, n);
      kernels::softmax_backward_rows_short(pr.data(), dy.data(), da.data(), R, n);
      table.softmax_backward_rows_short(pr.data(), dy.data(), dad.data(), R, n);
      check_near(da, dar, kernel_rel<T>(), 1e-6);
      check_near(dad, dar, kernel_rel<T>(), 1e-6);

      const auto P = random_probs<T>(R, n, 3 + R), Q = random_probs<T>(R, n, 5 + n);
      for (T eps : {T(0), T(1e-6)}) {
        std::vector<T> k(static_cast<std::size_t>(R)), kr(k.size()), kd(k.size());
        kernels::ref::kl_probs_rows_short(P.data(), Q.data(), kr.data(), R, n, eps);
        kernels::kl_probs_rows_short(P.data(), Q.data(), k.data(), R, n, eps);
        table.kl_probs_rows_short(P.data(), Q.data(), kd.data(), R, n, eps);
        check_near(k, kr, std::is_same_v<T, double> ? 1e-12 : 1e-4, std::is_same_v<T, double> ? 1e-12 : 1e-5);
        check_near(kd, kr, std::is_same_v<T, double> ? 1e-12 : 1e-4, std::is_same_v<T, double> ? 1e-12 : 1e-5);
      }
    }
  }
}

TEMPLATE_TEST_CASE("Short-row softmax: NaN or +Inf poisons only its row, all -Inf gives NaN", "[attention][kernels]",
                   float, double) {
  using T = TestType;
  const index_t R = 2 * kernels::lanes<T> + 3, n = 4;
  auto a = random_values<T>(R * n, 11, -5, 5);
  a[std::size_t(1 * n + 2)] = std::numeric_limits<T>::quiet_NaN();
  a[std::size_t(4 * n + 0)] = std::numeric_limits<T>::infinity();
  for (index_t i = 0; i < n; ++i) a[std::size_t(6 * n + i)] = -std::numeric_limits<T>::infinity();
  std::vector<T> p(a.size());
  kernels::table<T>().softmax_rows_short(a.data(), p.data(), R, n);
  for (index_t r = 0; r < R; ++r) {
    INFO("row " << r);
    double s = 0;
    bool all_nan = true;
    for (index_t i = 0; i < n; ++i) s += double(p[std::size_t(r * n + i)]), all_nan = all_nan && std::isnan(p[std::size_t(r * n + i)]);
    if (r == 1 || r == 4 || r == 6) CHECK(all_nan);
    else CHECK(s == Approx(1).epsilon(1e-6));
  }
}

// ---- golden: one stage of MRLA-base --------------------------------------------------

namespace {

template <class T>
struct GoldenStage {
  golden::Case g;
  index_t B, C, H, W, T_, dh, G;
  std::vector<attention::LayerAttentionBranch<T>> branches;
  std::vector<Tensor<T>> X, LA;
  std::vector<typename attention::LayerAttentionBranch<T>::Cache> caches;
  StageMemory<T> memory;

  explicit GoldenStage(const std::string& file, bool monitor = false) : g(golden::load(file)) {
    B = g.i("B"), C = g.i("C"), H = g.i("H"), W = g.i("W"), T_ = g.i("T"), dh = g.i("d_h"), G = g.i("G");
    Rng rng(1);
    for (index_t t = 1; t <= T_; ++t) {
      const std::string s = std::to_string(t);
      branches.emplace_back(C, attention::BranchOptions{.head_dim = dh, .monitor = monitor}, rng);
      auto& b = branches.back();
      REQUIRE(b.kernel_size() == g.i("k"));
      REQUIRE(b.head_dim() * G == C);
      b.wq() = g.t("wq" + s).template as<T>();
      b.wk() = g.t("wk" + s).template as<T>();
      b.wv() = g.t("wdw" + s).template as<T>();
      X.push_back(g.t("X" + s).template as<T>());
      LA.emplace_back(X.back().shape());
    }
    caches.resize(std::size_t(T_));
  }
  void forward() {
    memory.reset(std::size_t(T_), true);
    for (std::size_t t = 0; t < std::size_t(T_); ++t)
      branches[t].forward(X[t].cview(), LA[t].view(), caches[t], BlockMemory<T>(memory, t));
  }
};

}  // namespace

TEMPLATE_TEST_CASE("MRLA-base stage matches golden mrla_base_stage (y, Q, K, V, A, LA)", "[attention][golden]", float,
                   double) {
  using T = TestType;
  GoldenStage<T> st("mrla_base_stage");
  st.forward();
  const double tol = std::is_same_v<T, double> ? 1e-10 : 5e-5;
  for (index_t t = 1; t <= st.T_; ++t) {
    const std::string s = std::to_string(t);
    const auto& c = st.caches[std::size_t(t - 1)];
    golden::check_close<T>("y" + s, c.y.cview(), st.g.t("y" + s), tol);
    golden::check_close<T>("Q" + s, c.Q.cview(), st.g.t("Q" + s), tol);
    golden::check_close<T>("K" + s, c.K.cview(), st.g.t("K" + s), tol);
    golden::check_close<T>("V" + s, c.V.cview(), st.g.t("V" + s), tol);
    golden::check_close<T>("A" + s, reshaped(c.A, st.g.t("A" + s).lshape()), st.g.t("A" + s), tol);
    golden::check_close<T>("LA" + s, st.LA[std::size_t(t - 1)].cview(), st.g.t("LA" + s), tol);
    CHECK(c.seen.size() == std::size_t(t - 1));
  }
}

TEMPLATE_TEST_CASE("MRLA-base stage backward matches golden mrla_base_stage_grad, added into pre-filled buffers",
                   "[attention][golden]", float, double) {
  using T = TestType;
  GoldenStage<T> st("mrla_base_stage_grad");
  st.forward();
  const double tol = std::is_same_v<T, double> ? 1e-10 : 5e-5;
  std::vector<Tensor<T>> dX, dX0;
  std::vector<std::vector<Tensor<T>>> before(std::size_t(st.T_));
  for (index_t t = 0; t < st.T_; ++t) {
    auto r = gradcheck::random_tensor(st.X[std::size_t(t)].shape(), 50 + t);
    dX.emplace_back(r.shape());
    for (index_t i = 0; i < r.size(); ++i) dX.back()[i] = T(r[i]);
    dX0.push_back(Tensor<T>::copy_of(dX.back().cview()));
    Rng rng(60 + t);
    visit_parameters(st.branches[std::size_t(t)], [&](const ParamRef<T>& p) {
      for (T& v : p.grad.span()) v = T(rng.uniform(-1, 1));
      before[std::size_t(t)].push_back(Tensor<T>::copy_of(ConstView<T>(p.grad)));
    });
  }
  for (index_t t = st.T_; t-- > 0;) {
    const auto dLA = st.g.t("dLA" + std::to_string(t + 1)).template as<T>();
    st.branches[std::size_t(t)].backward(st.caches[std::size_t(t)], dLA.cview(), dX[std::size_t(t)].view());
  }
  for (index_t t = 0; t < st.T_; ++t) {
    const std::string s = std::to_string(t + 1);
    auto& b = st.branches[std::size_t(t)];
    golden::check_added<T>("dX" + s, dX[std::size_t(t)].cview(), dX0[std::size_t(t)], st.g.t("dX" + s), tol);
    int k = 0;
    visit_parameters(b, [&](const ParamRef<T>& p) {
      const char* names[] = {"dwq", "dwk", "dwdw"};
      golden::check_added<T>(names[k] + s, ConstView<T>(p.grad), before[std::size_t(t)][std::size_t(k)],
                             st.g.t(names[k] + s), tol);
      ++k;
    });
    CHECK(k == 3);
    golden::check_close<T>("dQ" + s, b.last_dQ().cview(), st.g.t("dQ" + s), tol);
    golden::check_close<T>("dK" + s, ConstView<T>(st.memory.grad(std::size_t(t), memory_key::attention_k)), st.g.t("dK" + s), tol);
    golden::check_close<T>("dA" + s, reshaped(b.last_dA(), st.g.t("dA" + s).lshape()), st.g.t("dA" + s), tol);
  }
}

// ---- golden: the redundancy measure --------------------------------------------------

TEMPLATE_TEST_CASE("KL redundancy matches golden kl_redundancy_* (default, symmetric, common support)",
                   "[attention][golden][redundancy]", float, double) {
  using T = TestType;
  for (const char* file : {"kl_redundancy_mrla", "kl_redundancy_synthetic"}) {
    INFO(file);
    const golden::Case g = golden::load(file);
    const index_t Tn = g.i("T"), R = g.i("B") * g.i("G");
    const double eps = g.p("eps"), tol = std::is_same_v<T, double> ? 1e-10 : 2e-5;
    attention::Redundancy<T> plain({.eps = eps}), sym({.eps = eps, .symmetric = true}),
        common({.eps = eps, .common_support = true});
    Tensor<T> d(Shape{R});
    for (index_t t = 2; t <= Tn; ++t) {
      INFO("t = " << t);
      const auto At = g.t("A" + std::to_string(t)).template as<T>(), Ap = g.t("A" + std::to_string(t - 1)).template as<T>();
      const ConstView<T> a = reshaped(At, Shape{R, t}), b = reshaped(Ap, Shape{R, t - 1});
      const auto row = [&](const char* name, index_t r) { return g.t(name).v[std::size_t((t - 2) * R + r)]; };
      const auto Dat = [&](const char* name) { return g.t(name).v[std::size_t(t - 2)]; };
      CHECK(double(plain(a, b, d.view())) == Approx(Dat("D")).margin(tol));
      for (index_t r = 0; r < R; ++r) CHECK(double(d[r]) == Approx(row("d", r)).margin(tol));
      CHECK(double(sym(a, b, d.view())) == Approx(Dat("D_sym")).margin(tol));
      for (index_t r = 0; r < R; ++r) CHECK(double(d[r]) == Approx((row("d", r) + row("d_rev", r)) / 2).margin(tol));
      CHECK(double(common(a, b, d.view())) == Approx(Dat("D_common")).margin(tol));
      for (index_t r = 0; r < R; ++r) CHECK(double(d[r]) == Approx(row("d_common", r)).margin(tol));
    }
  }
}

TEST_CASE("The monitor of an MRLA-base stage measures D_t of kl_redundancy_mrla during the forward",
          "[attention][golden][redundancy]") {
  GoldenStage<double> st("mrla_base_stage", /*monitor=*/true);
  st.forward();
  const golden::Case g = golden::load("kl_redundancy_mrla");
  CHECK(std::isnan(st.branches[0].last_redundancy()));  // the first block has no predecessor
  for (index_t t = 2; t <= st.T_; ++t)
    CHECK(st.branches[std::size_t(t - 1)].last_redundancy() == Approx(g.t("D").v[std::size_t(t - 2)]).margin(1e-12));
}

// ---- golden: EBQM ------------------------------------------------------------------

TEST_CASE("I_x(a, b) matches golden beta_cdf to 1e-12 absolute plus 1e-10 relative", "[attention][golden][ebqm]") {
  const golden::Case g = golden::load("beta_cdf");
  const auto &x = g.t("x").v, &a = g.t("a").v, &b = g.t("b").v, &I = g.t("I").v;
  REQUIRE(I.size() == x.size() * a.size() * b.size());
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    for (std::size_t j = 0; j < a.size(); ++j)
      for (std::size_t l = 0; l < b.size(); ++l) {
        const double ref = I[(i * a.size() + j) * b.size() + l], got = attention::incomplete_beta(a[j], b[l], x[i]);
        worst = std::max(worst, std::abs(got - ref) / (1e-12 + 1e-10 * std::abs(ref)));
      }
  INFO("largest error in units of (1e-12 + 1e-10 |ref|): " << worst);
  CHECK(worst <= 1);
}

TEST_CASE("Beta moment fit matches golden ebqm_moment_fit, fallback included", "[attention][golden][ebqm]") {
  const golden::Case g = golden::load("ebqm_moment_fit");
  const auto &mv = g.t("mv").v, &ab = g.t("ab").v, &fb = g.t("fallback").v;
  for (long r = 0; r < g.i("nrows"); ++r) {
    INFO("row " << r);
    const auto f = attention::fit_beta_moments(mv[std::size_t(2 * r)], mv[std::size_t(2 * r + 1)]);
    CHECK(f.fallback == (fb[std::size_t(r)] != 0));
    CHECK(f.a == Approx(ab[std::size_t(2 * r)]).epsilon(1e-12));
    CHECK(f.b == Approx(ab[std::size_t(2 * r + 1)]).epsilon(1e-12));
  }
}

namespace {
std::vector<index_t> ints(const golden::Record& r) {
  std::vector<index_t> v;
  for (double d : r.v) v.push_back(index_t(std::lround(d)));
  return v;
}
void check_decision(const golden::Case& g, const attention::EbqmResult& r, bool alt) {
  const std::string sfx = alt ? "_alt" : "";
  const auto dec = ints(g.t("decision" + sfx)), skip = ints(g.t("skip" + sfx)), cand = ints(g.t("cand"));
  REQUIRE(r.decision.size() == dec.size());
  for (std::size_t i = 0; i < dec.size(); ++i) {
    INFO("candidate " << i);
    CHECK(int(r.decision[i]) == dec[i]);
    CHECK(int(r.cand[i]) == cand[i]);
  }
  REQUIRE(r.skip.size() == skip.size());
  for (std::size_t b = 0; b < skip.size(); ++b) CHECK(int(r.skip[b]) == skip[b]);
  if (!r.degenerate) CHECK(r.cap == index_t(std::lround(g.t("cap" + sfx).v[0])));
}
}  // namespace

TEST_CASE("EBQM decisions match every golden ebqm_* case (both caps)", "[attention][golden][ebqm]") {
  for (const char* file : {"ebqm_realistic", "ebqm_ties", "ebqm_bimodal", "ebqm_all_equal", "ebqm_tiny_range",
                           "ebqm_one_candidate"}) {
    INFO(file);
    const golden::Case g = golden::load(file);
    const auto stage = ints(g.t("stage")), cand = ints(g.t("cand_block"));
    const auto& D = g.t("D").v;
    REQUIRE(index_t(stage.size()) == g.i("nblocks"));
    REQUIRE(index_t(D.size()) == g.i("ncand"));
    attention::EbqmOptions o{.q = g.p("q"), .rho = g.p("rho"), .hysteresis = g.i("h"), .clip = g.p("clip"),
                             .range_tol = g.p("range_tol")};
    const auto r = attention::ebqm_decide({.stage = stage, .cand_block = cand, .D = D}, o);
    CHECK(r.degenerate == (g.i("degenerate") == 1));
    if (!r.degenerate) {
      const double tol = 1e-10;
      for (std::size_t i = 0; i < D.size(); ++i) {
        CHECK(r.x[i] == Approx(g.t("x").v[i]).margin(tol));
        CHECK(r.u[i] == Approx(g.t("u").v[i]).margin(tol));
      }
      CHECK(r.m == Approx(g.t("m").v[0]).margin(tol));
      CHECK(r.v == Approx(g.t("v").v[0]).margin(tol));
      CHECK(r.fit.fallback == (g.t("fallback").v[0] != 0));
      CHECK(r.fit.a == Approx(g.t("a").v[0]).epsilon(1e-10));
      CHECK(r.fit.b == Approx(g.t("b").v[0]).epsilon(1e-10));
    } else {
      CHECK(r.u.empty());
    }
    check_decision(g, r, false);
    o.cap_over_flagged = true;
    check_decision(g, attention::ebqm_decide({.stage = stage, .cand_block = cand, .D = D}, o), true);
  }
}

TEST_CASE("EBQM edge cases: two candidates, equal minima, hysteresis, non-finite D", "[attention][ebqm]") {
  const std::vector<index_t> stage{0, 0, 0, 1, 1, 1, 1};
  SECTION("two candidates map to the two clip ends, symmetric u, nothing flagged at q = 0.3") {
    const std::vector<index_t> cand{1, 2};
    const std::vector<double> D{0.02, 0.05};
    const auto r = attention::ebqm_decide({.stage = stage, .cand_block = cand, .D = D});
    REQUIRE_FALSE(r.degenerate);
    CHECK(r.x[0] == 1e-3);
    CHECK(r.x[1] == 1 - 1e-3);
    CHECK(r.fit.a == Approx(r.fit.b).epsilon(1e-12));
    CHECK(r.u[0] + r.u[1] == Approx(1).epsilon(1e-12));
    CHECK(r.u[0] > 0.3);
    CHECK(std::count(r.skip.begin(), r.skip.end(), 1) == 0);
  }
  SECTION("three equal minima: visited by block index, the middle one adjacent") {
    const std::vector<index_t> one_stage(8, 0), cand{1, 2, 3, 4, 5, 6, 7};
    const std::vector<double> D{0.01, 0.01, 0.5, 0.01, 0.5, 0.6, 0.6};
    const auto r = attention::ebqm_decide({.stage = one_stage, .cand_block = cand, .D = D}, {.rho = 1.0});
    INFO("u = " << r.u[0] << ", " << r.u[2] << ", " << r.u[4] << ", " << r.u[6]);
    REQUIRE(r.cand == std::vector<char>{1, 1, 0, 1, 0, 0, 0});
    CHECK(r.u[0] == r.u[1]);
    CHECK(r.u[1] == r.u[3]);
    CHECK(r.decision[0] == attention::Decision::skipped);
    CHECK(r.decision[1] == attention::Decision::adjacent);
    CHECK(r.decision[3] == attention::Decision::skipped);
    CHECK(r.skip == std::vector<char>{0, 1, 0, 0, 1, 0, 0, 0});
  }
  SECTION("hysteresis h = 2: the first flagged decision waits, the second skips") {
    const std::vector<index_t> cand{1, 2, 4, 5, 6};
    const std::vector<double> D{0.01, 0.3, 0.4, 0.6, 0.9};
    std::vector<index_t> streak(stage.size());
    const attention::EbqmOptions o{.hysteresis = 2};
    auto r = attention::ebqm_decide({.stage = stage, .cand_block = cand, .D = D, .streak = streak}, o);
    CHECK(r.decision[0] == attention::Decision::waiting);
    CHECK(std::count(r.skip.begin(), r.skip.end(), 1) == 0);
    CHECK(streak[1] == 1);
    r = attention::ebqm_decide({.stage = stage, .cand_block = cand, .D = D, .streak = streak}, o);
    CHECK(r.decision[0] == attention::Decision::skipped);
    CHECK(r.skip[1] == 1);
  }
  SECTION("NaN or Inf in D names the block") {
    const std::vector<index_t> cand{1, 2, 4, 5, 6};
    for (double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
      const std::vector<double> D{0.01, 0.3, bad, 0.6, 0.9};
      CHECK_THROWS_AS(attention::ebqm_decide({.stage = stage, .cand_block = cand, .D = D}), value_error);
      CHECK_THROWS_WITH(attention::ebqm_decide({.stage = stage, .cand_block = cand, .D = D}),
                        Catch::Contains("EBQM: D of block 4: expected a finite value"));
    }
  }
}

TEST_CASE("EBQM and layer-attention options are checked with clear errors", "[attention][errors]") {
  Rng rng(3);
  using Branch = attention::LayerAttentionBranch<double>;
  CHECK_THROWS_WITH(Branch(12, {.head_dim = 5}, rng),
                    Catch::Contains("LayerAttention: head_dim d_h: expected a divisor of C = 12, got 5"));
  CHECK_THROWS_AS(Branch(12, {.head_dim = 5}, rng), value_error);
  CHECK_THROWS_WITH(Branch(8, {.variant = Variant::light, .monitor = true}, rng), Catch::Contains("monitor"));
  CHECK(Branch(64, {}, rng).head_dim() == 32);
  CHECK(Branch(16, {}, rng).head_dim() == 16);
  for (double q : {0.0, 1.0, -0.5, std::numeric_limits<double>::quiet_NaN()})
    CHECK_THROWS_WITH(attention::validate(attention::EbqmOptions{.q = q}), Catch::Contains("EBQM: q: expected in (0, 1)"));
  for (double rho : {-0.1, 1.5})
    CHECK_THROWS_WITH(attention::validate(attention::EbqmOptions{.rho = rho}),
                      Catch::Contains("EBQM: rho: expected in [0, 1], got " + std::to_string(rho).substr(0, 3)));
  CHECK_THROWS_WITH(attention::validate(attention::EbqmOptions{.hysteresis = 0}),
                    Catch::Contains("EBQM: hysteresis h: expected >= 1, got 0"));
  CHECK_THROWS_WITH(attention::ElaSchedule<double>({.ebqm = {.q = 2}}), Catch::Contains("EBQM: q"));
  CHECK_THROWS_WITH(attention::Redundancy<double>({.eps = 0}), Catch::Contains("RedundancyOptions: eps"));
  CHECK(attention::eca_kernel_size(16) == 3);
  CHECK(attention::eca_kernel_size(64) == 3);
  CHECK(attention::eca_kernel_size(128) == 5);
  CHECK(attention::eca_kernel_size(256) == 5);
  Branch b(8, {.head_dim = 4}, rng);
  Tensor<double> x(Shape{2, 6, 3, 3}), y(Shape{2, 6, 3, 3});
  CHECK_THROWS_WITH(b.forward(x.cview(), y.view()), Catch::Contains("LayerAttention: X shape: expected [B, 8, H, W]"));
}

// ---- whole stages: gradients, skipping, inference, checkpoints --------------------

namespace {
template <class T>
using ConvTanh = Sequential<Conv2d<T>, Tanh<T>>;
template <class T>
using LAConv = LayerAttention<ConvTanh<T>>;

template <class T>
Stage<LAConv<T>> conv_stage(index_t n, index_t C, const attention::Options& o, std::uint64_t seed) {
  Rng rng(seed);
  Stage<LAConv<T>> s;
  for (index_t i = 0; i < n; ++i) {
    s.push_back(LAConv<T>(ConvTanh<T>(Conv2d<T>({C, C, 3, 3, 1, 1, false}, rng), Tanh<T>{}), C, o, rng));
    auto& bn = s[std::size_t(i)].bn();  // non-trivial BN affine parameters
    for (index_t c = 0; c < C; ++c) bn.gamma()[c] = T(rng.uniform(0.5, 1.5)), bn.beta()[c] = T(rng.uniform(-0.3, 0.3));
    if (o.branch.variant == Variant::light)
      for (index_t c = 0; c < C; ++c) s[std::size_t(i)].branch().lambda()[c] = T(rng.uniform(0.3, 1.2));
  }
  return s;
}
}  // namespace

TEST_CASE("A 4-block layer-attention stage passes the gradient check (base and light, one block skipped)",
          "[attention][gradcheck]") {
  for (Variant v : {Variant::base, Variant::light})
    for (bool relu : {false, true}) {
      INFO("light " << (v == Variant::light) << ", relu " << relu);
      auto stage = conv_stage<double>(4, 8, {.branch = {.variant = v, .head_dim = 4}, .relu = relu}, 21);
      stage[2].set_skipped(true);
      auto x = gradcheck::random_tensor({2, 8, 3, 3}, 22);
      gradcheck::check(stage, x);
    }
}

TEST_CASE("Layer attention wraps any block: BasicBlocks with a projection shortcut, gradient-checked",
          "[attention][gradcheck]") {
  Rng rng(31);
  using LB = LayerAttention<BasicBlock<double>>;
  Stage<LB> stage;
  stage.push_back(LB(make_basic_block<double>(3, 4, 2, rng), 4, {.branch = {.head_dim = 2}}, rng));
  for (int i = 0; i < 2; ++i) stage.push_back(LB(make_basic_block<double>(4, 4, 1, rng), 4, {.branch = {.head_dim = 2}}, rng));
  auto x = gradcheck::random_tensor({2, 3, 6, 6}, 32);
  gradcheck::check(stage, x);
}

TEST_CASE("A skipped block computes no Q, K, V nor retrieval, publishes nothing, and infer applies the skip",
          "[attention][skip]") {
  for (Variant v : {Variant::base, Variant::light}) {
    INFO("light " << (v == Variant::light));
    auto stage = conv_stage<double>(4, 8, {.branch = {.variant = v, .head_dim = 4}}, 41);
    stage[2].set_skipped(true);
    auto x = gradcheck::random_tensor({2, 8, 3, 3}, 42);
    Tensor<double> y(x.shape());
    Stage<LAConv<double>>::Cache c;
    stage.forward(x.cview(), y.view(), c);
    CHECK(stage[0].branch().computed() == 1);
    CHECK(stage[2].branch().computed() == 0);
    CHECK(stage[3].branch().computed() == 1);
    CHECK_FALSE(c.memory.active(2));
    if (v == Variant::base) CHECK(c.blocks[3].branch.seen == std::vector<std::size_t>{0, 1});
    else CHECK(c.blocks[3].branch.seen == std::vector<std::size_t>{1});
    const auto& c2 = c.blocks[2];
    for (index_t i = 0; i < c2.X.size(); ++i) REQUIRE(c.out[2][i] == c2.X[i]);  // out_t = X_t

    set_training(stage, false);
    Tensor<double> yf(x.shape()), yi(x.shape());
    stage.forward(x.cview(), yf.view(), c);
    stage.infer(x.cview(), yi.view());
    CHECK(stage[2].branch().computed() == 0);
    CHECK(stage[1].branch().computed() == 3);
    for (index_t i = 0; i < y.size(); ++i) CHECK(yi[i] == Approx(yf[i]).margin(1e-13));
  }
}

TEST_CASE("A checkpoint keeps the skip set; the loaded model infers with it", "[attention][skip][checkpoint]") {
  const auto path = std::filesystem::temp_directory_path() / "lamina_test_attention.ckpt";
  auto a = conv_stage<double>(4, 8, {.branch = {.head_dim = 4}}, 51);
  a[1].set_skipped(true);
  a[3].set_skipped(true);
  a[2].control().streak[0] = 2;
  io::save_checkpoint(a, path);
  auto b = conv_stage<double>(4, 8, {.branch = {.head_dim = 4}}, 52);
  io::load_checkpoint(b, path);
  std::filesystem::remove(path);
  for (std::size_t i = 0; i < 4; ++i) CHECK(b[i].skipped() == a[i].skipped());
  CHECK(b[2].control().streak[0] == 2);
  set_training(a, false);
  set_training(b, false);
  auto x = gradcheck::random_tensor({2, 8, 3, 3}, 53);
  Tensor<double> ya(x.shape()), yb(x.shape());
  a.infer(x.cview(), ya.view());
  b.infer(x.cview(), yb.view());
  for (index_t i = 0; i < ya.size(); ++i) CHECK(yb[i] == ya[i]);
  CHECK(b[1].branch().computed() == 0);
  CHECK(b[2].branch().computed() == 1);
}

TEST_CASE("The ELA schedule: warm-up, decisions on epoch means of D, skips stay, the golden decision",
          "[attention][ebqm][schedule]") {
  const golden::Case g = golden::load("ebqm_realistic");
  const auto stage = ints(g.t("stage")), cand = ints(g.t("cand_block")), skip = ints(g.t("skip"));
  std::vector<attention::Control<double>> blocks(stage.size());
  attention::ElaSchedule<double> ela({.epochs = 20, .ebqm = {.q = g.p("q"), .rho = g.p("rho")}});
  for (std::size_t b = 0; b < stage.size(); ++b) ela.add(stage[b], blocks[b]);
  CHECK(ela.warmup() == 2);
  CHECK(attention::ElaSchedule<double>({.epochs = 5}).warmup() == 1);
  auto feed = [&] {  // two steps per epoch whose mean is the golden D
    for (std::size_t i = 0; i < cand.size(); ++i) {
      auto& m = blocks[std::size_t(cand[i])].meter;
      if (blocks[std::size_t(cand[i])].skipped()) continue;  // a skipped block is not measured
      m.add(g.t("D").v[i] * 0.5), m.add(g.t("D").v[i] * 1.5);
    }
  };
  feed();
  auto rec = ela.end_epoch(0);
  CHECK_FALSE(rec.decided);
  CHECK(std::count(rec.skip.begin(), rec.skip.end(), 1) == 0);
  CHECK(blocks[std::size_t(cand[0])].meter.steps == 0);  // meters cleared each epoch
  feed();
  rec = ela.end_epoch(1);
  REQUIRE(rec.decided);
  for (std::size_t b = 0; b < stage.size(); ++b) CHECK(int(rec.skip[b]) == skip[b]);
  for (std::size_t i = 0; i < cand.size(); ++i) CHECK(rec.u[std::size_t(cand[i])] == Approx(g.t("u").v[i]).margin(1e-10));
  CHECK(std::isnan(rec.D[0]));
  feed();
  rec = ela.end_epoch(2);
  for (std::size_t b = 0; b < stage.size(); ++b)
    if (skip[b]) CHECK(rec.skip[b] == 1);  // once skipped, always skipped
  for (std::size_t b = 0; b < stage.size(); ++b)
    if (skip[b]) CHECK(std::isnan(rec.u[b]));  // and no longer a candidate
}

TEST_CASE("A monitored stage feeds the block meters; skipped blocks are not measured", "[attention][redundancy]") {
  auto stage = conv_stage<double>(4, 8, {.branch = {.head_dim = 4, .monitor = true}}, 61);
  stage[2].set_skipped(true);
  auto x = gradcheck::random_tensor({2, 8, 3, 3}, 62);
  Tensor<double> y(x.shape());
  Stage<LAConv<double>>::Cache c;
  for (int step = 0; step < 3; ++step) stage.forward(x.cview(), y.view(), c);
  const double d1 = stage[1].branch().last_redundancy();
  stage.forward(x.cview(), y.view(), c, {.recompute = true});  // a recomputation is not a step
  CHECK(stage[0].control().meter.steps == 0);
  CHECK(stage[1].control().meter.steps == 3);
  CHECK(stage[2].control().meter.steps == 0);
  CHECK(stage[3].control().meter.steps == 3);  // against block 1, the previous attending block
  CHECK(stage[3].control().meter.mean() >= 0);
  attention::ElaSchedule<double> ela({.epochs = 1});
  ela.add_stage(0, stage);
  const auto rec = ela.end_epoch(0);
  CHECK(rec.D[1] == Approx(d1).epsilon(1e-12));
  CHECK(rec.skip[2] == 1);
}

TEST_CASE("An input-only backward of a stage leaves every parameter gradient unchanged and gives the full dx",
          "[attention][contract]") {
  for (Variant v : {Variant::base, Variant::light}) {
    auto stage = conv_stage<double>(3, 8, {.branch = {.variant = v, .head_dim = 4}}, 81);
    auto x = gradcheck::random_tensor({2, 8, 3, 3}, 82), dy = gradcheck::random_tensor({2, 8, 3, 3}, 83);
    Tensor<double> y(x.shape()), dx1(x.shape()), dx2(x.shape());
    Stage<LAConv<double>>::Cache c;
    stage.forward(x.cview(), y.view(), c);
    Rng rng(84);
    std::vector<std::vector<double>> before;
    visit_parameters(stage, [&](const ParamRef<double>& p) {
      if (!p.trainable) return;
      for (double& g : p.grad.span()) g = rng.uniform(-1, 1);
      before.emplace_back(p.grad.data(), p.grad.data() + p.grad.size());
    });
    stage.backward(c, dy.cview(), dx1.view(), {.params = false});
    std::size_t k = 0;
    visit_parameters(stage, [&](const ParamRef<double>& p) {
      if (p.trainable) CHECK(std::equal(p.grad.data(), p.grad.data() + p.grad.size(), before[k++].begin()));
    });
    stage.backward(c, dy.cview(), dx2.view());  // repeatable on the same cache
    for (index_t i = 0; i < dx1.size(); ++i) CHECK(dx1[i] == Approx(dx2[i]).margin(1e-14));
  }
}

TEST_CASE("The E2 network with layer attention: gradient check, parameter names, ELA registration",
          "[attention][model][gradcheck]") {
  const ResNetOptions o{.in_channels = 1, .widths = {2, 4, 4}, .blocks_per_stage = 2, .num_classes = 3};
  Rng rng(71);
  auto net = make_ela_resnet<double>(o, attention::Method::mrla_base, rng, {.branch = {.head_dim = 2}});
  auto x = gradcheck::random_tensor({2, 1, 5, 5}, 72);
  gradcheck::check(net, x);
  std::vector<std::string> names;
  visit_parameters(net, [&](const ParamRef<double>& p) { names.push_back(p.name); });
  for (const char* n : {"layer1.0.la.q.weight", "layer2.1.la.v.weight", "layer3.1.la.bn.weight", "layer3.1.la.skip",
                        "layer1.0.conv1.weight"})
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  CHECK_THROWS_WITH(attention::options_of(attention::Method::none), Catch::Contains("ElaResNet: method"));

  for (auto m : {attention::Method::ela, attention::Method::mrla_light}) {
    Rng r2(73);
    auto n2 = make_ela_resnet<double>(o, m, r2, {.branch = {.head_dim = 2}});
    attention::ElaSchedule<double> ela({.epochs = 1});
    add_stages(ela, n2);
    CHECK(ela.size() == 6);
    Tensor<double> y(Shape{2, 3}), dx(x.shape());
    n2.forward(x.cview(), y.view());
    n2.backward(gradcheck::random_tensor({2, 3}, 74).cview(), dx.view());
    const auto rec = ela.end_epoch(0);
    const bool monitored = m == attention::Method::ela;
    CHECK(std::isnan(rec.D[0]));  // first block of stage 0
    CHECK(std::isnan(rec.D[2]));  // first block of stage 1
    CHECK(std::isnan(rec.D[1]) != monitored);
    CHECK(std::isnan(rec.D[5]) != monitored);
  }
}

TEST_CASE("The README's layer-attention snippet compiles and runs", "[attention][model]") {
  Rng rng(91);
  auto net = make_ela_resnet<float>({.blocks_per_stage = 4}, attention::Method::ela, rng);
  attention::ElaSchedule<float> ela({.epochs = 10, .ebqm = {.q = 0.3, .rho = 0.5}});
  add_stages(ela, net);
  Tensor<float> x(Shape{2, 1, 28, 28}, 0.5f), y(Shape{2, 10});
  net.forward(x.cview(), y.view());
  attention::EpochRecord rec = ela.end_epoch(0);
  CHECK(rec.decided);  // warm-up max(1, 10 / 10) = 1 epoch
  CHECK(rec.D.size() == 12);
  CHECK(std::isnan(rec.D[4]));  // first block of the second stage
  CHECK(rec.D[5] >= 0);
}
