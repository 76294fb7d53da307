// The experiments' claim rule (examples/common/claims.hpp): Welch's t-test
// against SciPy 1.10 (scipy.stats.ttest_ind(a, b, equal_var=False) and its
// alternative='greater'/'less'; df from the Welch–Satterthwaite formula
// computed in NumPy), the verdicts, and the edge cases.
#include <catch2/catch.hpp>

#include "../examples/common/claims.hpp"

namespace cl = examples::claims;

namespace {
struct Ref {
  std::vector<double> a, b;
  double t, df, p_two, p_greater, p_less;
};
// Each row printed by SciPy: t, df, p two-sided, p greater, p less.
const std::vector<Ref> refs = {
    {{92.1, 92.4, 91.9}, {91.8, 92.0, 91.7}, 1.7650452162436387, 3.297560975609738, 0.16739651175345366,
     0.08369825587672683, 0.9163017441232731},
    {{1.0, 2.0, 3.0, 4.0}, {2.5, 2.7}, -0.15309310892394878, 3.14030155890621, 0.8876372619058631,
     0.5561813690470685, 0.44381863095293156},
    {{10.0, 10.5, 9.8, 10.2, 10.1}, {7.0, 8.5, 7.7}, 5.321104209233555, 2.2897982895119133, 0.02487083056844566,
     0.01243541528422283, 0.9875645847157772},
    // a without variance: df = n_b − 1 = 2.
    {{5.0, 5.0, 5.0}, {4.0, 4.5, 4.2}, 5.276561879022921, 2.0, 0.034090791198641515, 0.017045395599320758,
     0.9829546044006793},
};
}  // namespace

TEST_CASE("summarize: mean and sample std") {
  const cl::Summary s = cl::summarize({1, 2, 3, 4});
  CHECK(s.n == 4);
  CHECK(s.mean == Approx(2.5));
  CHECK(s.std == Approx(std::sqrt(5.0 / 3.0)));  // Σ(x − 2.5)² = 5, over n − 1 = 3
  CHECK(std::isnan(cl::summarize({7}).std));
  CHECK(cl::summarize({7}).mean == 7);
  CHECK(cl::summarize({}).n == 0);
}

TEST_CASE("welch matches SciPy's ttest_ind(equal_var=False)") {
  for (const Ref& r : refs) {
    const cl::Welch w = cl::welch(r.a, r.b);
    REQUIRE(w.defined);
    CHECK(w.t == Approx(r.t).epsilon(1e-12));
    CHECK(w.df == Approx(r.df).epsilon(1e-12));
    CHECK(w.p_two == Approx(r.p_two).epsilon(1e-10));
    CHECK(w.p_greater == Approx(r.p_greater).epsilon(1e-10));
    CHECK(w.p_less == Approx(r.p_less).epsilon(1e-10));
    // Swapping the groups negates t and swaps the one-sided p-values.
    const cl::Welch s = cl::welch(r.b, r.a);
    CHECK(s.t == Approx(-r.t).epsilon(1e-12));
    CHECK(s.p_greater == Approx(r.p_less).epsilon(1e-10));
  }
}

TEST_CASE("verdicts at alpha = 0.05") {
  // p_greater 0.0124 (row 3): a > b held; a < b did not hold.
  const cl::Welch sig = cl::welch(refs[2].a, refs[2].b);
  CHECK(cl::judge(sig, cl::Direction::greater) == cl::Verdict::held);
  CHECK(cl::judge(sig, cl::Direction::less) == cl::Verdict::did_not_hold);
  CHECK(cl::judge(sig, cl::Direction::greater, 0.01) == cl::Verdict::not_shown);
  // p_greater 0.084 (row 1, the E1 kind of small difference): not shown either way.
  const cl::Welch weak = cl::welch(refs[0].a, refs[0].b);
  CHECK(cl::judge(weak, cl::Direction::greater) == cl::Verdict::not_shown);
  CHECK(cl::judge(weak, cl::Direction::less) == cl::Verdict::not_shown);
  CHECK(cl::not_shown_worse(weak));
  CHECK_FALSE(cl::not_shown_worse(cl::welch(refs[2].b, refs[2].a)));
  CHECK(std::string(cl::to_string(cl::Verdict::not_shown)) == "not shown at this sample size");
}

TEST_CASE("edge cases: n < 2 and no variance give no test") {
  const cl::Welch one = cl::welch({92.5}, {92.1});  // one seed: never "held"
  CHECK_FALSE(one.defined);
  CHECK(one.diff == Approx(0.4));
  CHECK(one.why.find("n < 2") != std::string::npos);
  CHECK(cl::judge(one, cl::Direction::greater) == cl::Verdict::not_shown);
  CHECK_FALSE(cl::not_shown_worse(one));
  CHECK_FALSE(cl::welch({}, {1, 2}).defined);
  const cl::Welch flat = cl::welch({3, 3, 3}, {2, 2});
  CHECK_FALSE(flat.defined);
  CHECK(flat.why == "no variance in either group");
  CHECK(cl::judge(flat, cl::Direction::greater) == cl::Verdict::not_shown);
  CHECK(cl::format(one).find("no test") != std::string::npos);
}

TEST_CASE("scaled, shifted and compound claims") {
  // a ≤ 0.75 b: a against 0.75 b; 0.75 · {8, 8.2, 7.9} = {6, 6.15, 5.925}.
  const std::vector<double> b = {8, 8.2, 7.9};
  const cl::Welch w = cl::welch({5.0, 5.1, 4.9}, cl::scaled(b, 0.75));
  CHECK(w.b.mean == Approx(0.75 * cl::summarize(b).mean));
  CHECK(cl::judge(w, cl::Direction::less) == cl::Verdict::held);
  CHECK(cl::shifted({1, 2}, -0.5) == std::vector<double>{0.5, 1.5});
  using V = cl::Verdict;
  CHECK(cl::all_of({V::held, V::held}) == V::held);
  CHECK(cl::all_of({V::held, V::not_shown}) == V::not_shown);
  CHECK(cl::all_of({V::not_shown, V::did_not_hold}) == V::did_not_hold);
  CHECK(cl::condition(false) == V::did_not_hold);
}

TEST_CASE("format: numbers, and no std for one seed") {
  CHECK(cl::format_std(cl::summarize({1, 2, 3, 4})) == "1.29");
  CHECK(cl::format_std(cl::summarize({5})) == "-");
  CHECK(cl::format(cl::summarize({5})) == "5.00 (n = 1)");
  CHECK(cl::format(cl::welch(refs[2].a, refs[2].b)).find("df = 2.29") != std::string::npos);
}
