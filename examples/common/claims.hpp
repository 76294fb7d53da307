#pragma once
// The statistics rule every experiment uses to judge a paper's claim
// (spec/experiments.md): mean ± std over seeds and Welch's unequal-variance
// t-test between two groups of per-seed results.
//
//   t  = (mean_a − mean_b) / se,   se² = s_a²/n_a + s_b²/n_b   (s²: sample variance, n − 1)
//   df = se⁴ / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))   (Welch–Satterthwaite)
//   p_two = 2·P(T_df ≥ |t|),  p_greater = P(T_df ≥ t) (H1: a > b),  p_less = P(T_df ≤ t) (H1: a < b)
// with T_df Student's t (Boost.Math students_t, any real df > 0). These are the
// numbers of scipy.stats.ttest_ind(a, b, equal_var=False, alternative=...).
//
// Verdicts, at α = 0.05 unless told otherwise:
//  - "held": the one-sided test in the claimed direction is significant;
//  - "did not hold": the one-sided test in the opposite direction is significant;
//  - "not shown at this sample size": neither, or the test is undefined
//    (a group with n < 2, or both groups without variance, se = 0).
// A claim "a is at least b up to a margin δ" (non-inferiority) tests a against
// b − δ. A condition "a not shown to be worse than b" (E2's accuracy) is met
// only when the test is defined and a < b is not significant; it is not
// evidence of equality, and a report says so with the numbers.
#include <boost/math/distributions/students_t.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace examples::claims {

inline constexpr double default_alpha = 0.05;

struct Summary {
  std::size_t n = 0;
  double mean = std::numeric_limits<double>::quiet_NaN();
  double std = std::numeric_limits<double>::quiet_NaN();  ///< sample standard deviation (n − 1); NaN when n < 2
};

inline Summary summarize(const std::vector<double>& x) {
  Summary s;
  s.n = x.size();
  if (x.empty()) return s;
  double sum = 0;
  for (double v : x) sum += v;
  s.mean = sum / double(x.size());
  if (x.size() < 2) return s;
  double ss = 0;
  for (double v : x) ss += (v - s.mean) * (v - s.mean);
  s.std = std::sqrt(ss / double(x.size() - 1));
  return s;
}

/// Welch's t-test of a against b (the difference is mean_a − mean_b).
struct Welch {
  Summary a, b;
  double diff = std::numeric_limits<double>::quiet_NaN();
  double se = std::numeric_limits<double>::quiet_NaN();
  double t = std::numeric_limits<double>::quiet_NaN();
  double df = std::numeric_limits<double>::quiet_NaN();
  double p_two = std::numeric_limits<double>::quiet_NaN();
  double p_greater = std::numeric_limits<double>::quiet_NaN();  ///< H1: mean_a > mean_b
  double p_less = std::numeric_limits<double>::quiet_NaN();     ///< H1: mean_a < mean_b
  bool defined = false;
  std::string why;  ///< why the test is undefined (empty when defined)
};

inline Welch welch(const std::vector<double>& a, const std::vector<double>& b) {
  Welch w;
  w.a = summarize(a), w.b = summarize(b);
  w.diff = w.a.mean - w.b.mean;
  if (w.a.n < 2 || w.b.n < 2) {
    w.why = "n < 2 in a group (" + std::to_string(w.a.n) + " vs " + std::to_string(w.b.n) + " seeds)";
    return w;
  }
  const double va = w.a.std * w.a.std / double(w.a.n), vb = w.b.std * w.b.std / double(w.b.n);
  w.se = std::sqrt(va + vb);
  if (!(w.se > 0)) {
    w.why = "no variance in either group";
    return w;
  }
  if (!std::isfinite(w.se) || !std::isfinite(w.diff)) {
    w.why = "non-finite values";
    return w;
  }
  w.t = w.diff / w.se;
  w.df = (va + vb) * (va + vb) / (va * va / double(w.a.n - 1) + vb * vb / double(w.b.n - 1));
  const boost::math::students_t dist(w.df);
  w.p_less = boost::math::cdf(dist, w.t);
  w.p_greater = boost::math::cdf(boost::math::complement(dist, w.t));
  w.p_two = std::min(1.0, 2 * boost::math::cdf(boost::math::complement(dist, std::fabs(w.t))));
  w.defined = true;
  return w;
}

/// b · k for every value (e.g. "a ≤ 0.75 b": test a against scaled(b, 0.75)).
inline std::vector<double> scaled(std::vector<double> b, double k) {
  for (double& v : b) v *= k;
  return b;
}
/// b + d for every value (non-inferiority margins: a against shifted(b, −δ)).
inline std::vector<double> shifted(std::vector<double> b, double d) {
  for (double& v : b) v += d;
  return b;
}

enum class Verdict { held, not_shown, did_not_hold };
enum class Direction { greater, less };  ///< the claim: mean_a > mean_b, or mean_a < mean_b

inline const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::held: return "held";
    case Verdict::did_not_hold: return "did not hold";
    case Verdict::not_shown: break;
  }
  return "not shown at this sample size";
}

inline Verdict judge(const Welch& w, Direction claim, double alpha = default_alpha) {
  if (!w.defined) return Verdict::not_shown;
  const double p_claim = claim == Direction::greater ? w.p_greater : w.p_less;
  const double p_opposite = claim == Direction::greater ? w.p_less : w.p_greater;
  if (p_claim < alpha) return Verdict::held;
  if (p_opposite < alpha) return Verdict::did_not_hold;
  return Verdict::not_shown;
}

/// A compound claim (every part must hold): "did not hold" when any part did
/// not, "held" when all did, otherwise "not shown".
inline Verdict all_of(std::initializer_list<Verdict> parts) {
  bool all = true;
  for (Verdict v : parts) {
    if (v == Verdict::did_not_hold) return Verdict::did_not_hold;
    all = all && v == Verdict::held;
  }
  return all ? Verdict::held : Verdict::not_shown;
}

/// A measured condition without seeds (e.g. a median timing ratio): held or not.
inline Verdict condition(bool met) { return met ? Verdict::held : Verdict::did_not_hold; }

/// The condition "a not shown to be worse than b" (lower is worse): met when
/// the test is defined and a < b is not significant.
inline bool not_shown_worse(const Welch& w, double alpha = default_alpha) { return w.defined && !(w.p_less < alpha); }

/// "mean ± std (n = …)", std omitted when n < 2.
inline std::string format(const Summary& s, int decimals = 2) {
  char buf[96];
  if (s.n >= 2)
    std::snprintf(buf, sizeof buf, "%.*f ± %.*f (n = %zu)", decimals, s.mean, decimals, s.std, s.n);
  else
    std::snprintf(buf, sizeof buf, "%.*f (n = %zu)", decimals, s.mean, s.n);
  return buf;
}

/// The std alone for a table column: "-" when n < 2.
inline std::string format_std(const Summary& s, int decimals = 2) {
  if (s.n < 2) return "-";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, s.std);
  return buf;
}

/// The test's numbers for a report line.
inline std::string format(const Welch& w, int decimals = 2) {
  std::string s = format(w.a, decimals) + " vs " + format(w.b, decimals);
  char buf[160];
  if (w.defined)
    std::snprintf(buf, sizeof buf, ", diff %+.*f, Welch t = %.3f, df = %.2f, p(two-sided) = %.4f, p(a>b) = %.4f, p(a<b) = %.4f",
                  decimals, w.diff, w.t, w.df, w.p_two, w.p_greater, w.p_less);
  else
    std::snprintf(buf, sizeof buf, ", diff %+.*f, no test: %s", decimals, w.diff, w.why.c_str());
  return s + buf;
}

}  // namespace examples::claims
