#pragma once
// EBQM, "Enhanced Beta Quantile Mapping": which retrievals to skip
// (spec/layer_attention.md §5; golden/README.md open points 7–11).
//  1. x = clip((D − min D)/(max D − min D), 1e-3, 1 − 1e-3); if max D − min D
//     < 1e-12 nothing is computed and nothing is skipped.
//  2. Beta(a, b) by moments (population variance), fallback a = b = 1 when
//     v ≤ 0 or v ≥ m(1 − m).
//  3. u = I_x(a, b), the regularised incomplete beta: Boost.Math's ibeta
//     (header-only, Debian's libboost-math-dev), accurate to a few ulp over the
//     whole (a, b, x) range, tails included, where a hand-written continued
//     fraction would need its own validation of the tails and of large a, b.
//  4. flagged: u < q.
//  5. guards, visiting the flagged blocks by increasing u (ties: lower block
//     first): first of its stage, then a neighbour already skipped, then the
//     cap floor(ρ · #eligible blocks) (option: floor(ρ · (#flagged + #skipped
//     before))), then hysteresis (flagged in h consecutive decisions).
// Blocks are numbered in network order; stage[b] is block b's stage id.
#include <boost/math/special_functions/beta.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

#include "lamina/core/error.hpp"
#include "lamina/core/tensor.hpp"

namespace lamina::attention {

struct EbqmOptions {
  double q = 0.3;                 ///< flag threshold on u, in (0, 1)
  double rho = 0.5;               ///< cap fraction, in [0, 1]
  index_t hysteresis = 1;         ///< h ≥ 1 consecutive flagged decisions before a skip
  bool cap_over_flagged = false;  ///< cap counted over the flagged blocks (plus those skipped before)
  double clip = 1e-3;             ///< x is clipped to [clip, 1 − clip]
  double range_tol = 1e-12;       ///< max D − min D below this: skip nothing
};

inline void validate(const EbqmOptions& o) {
  require(o.q > 0 && o.q < 1, "EBQM", "q", "in (0, 1)", o.q);
  require(o.rho >= 0 && o.rho <= 1, "EBQM", "rho", "in [0, 1]", o.rho);
  require(o.hysteresis >= 1, "EBQM", "hysteresis h", ">= 1", o.hysteresis);
  require(o.clip > 0 && o.clip < 0.5, "EBQM", "clip", "in (0, 0.5)", o.clip);
  require(o.range_tol >= 0, "EBQM", "range_tol", ">= 0", o.range_tol);
}

struct BetaFit {
  double a = 1, b = 1;
  bool fallback = true;
};
/// Step 2 on given moments.
inline BetaFit fit_beta_moments(double m, double v) {
  if (!(v > 0) || !(v < m * (1 - m))) return {};
  const double c = m * (1 - m) / v - 1;
  return {m * c, (1 - m) * c, false};
}

/// I_x(a, b), a, b > 0, x ∈ [0, 1].
inline double incomplete_beta(double a, double b, double x) {
  require(a > 0 && std::isfinite(a), "incomplete_beta", "a", "a finite value > 0", a);
  require(b > 0 && std::isfinite(b), "incomplete_beta", "b", "a finite value > 0", b);
  require(x >= 0 && x <= 1, "incomplete_beta", "x", "in [0, 1]", x);
  return boost::math::ibeta(a, b, x);
}

/// Decision codes (the golden files' numbering, plus waiting for hysteresis).
enum class Decision : int { none = 0, skipped = 1, first_of_stage = 2, adjacent = 3, cap = 4, waiting = 5 };

struct EbqmInput {
  std::span<const index_t> stage;       ///< [nblocks] stage id of each block
  std::span<const index_t> cand_block;  ///< [ncand] block of each D, increasing
  std::span<const double> D;            ///< [ncand]
  std::span<const char> skipped = {};   ///< [nblocks] skip set before this decision (empty: none)
  std::span<index_t> streak = {};       ///< [nblocks] flagged-decision streaks, updated (empty: h must be 1)
};

struct EbqmResult {
  bool degenerate = false;
  std::vector<double> x, u;  ///< empty when degenerate
  double m = std::numeric_limits<double>::quiet_NaN(), v = std::numeric_limits<double>::quiet_NaN();
  BetaFit fit;
  std::vector<char> cand;          ///< [ncand] u < q
  std::vector<Decision> decision;  ///< [ncand]
  std::vector<char> skip;          ///< [nblocks] skip set after the decision
  index_t cap = 0;
};

namespace detail {
inline bool first_of_stage(std::span<const index_t> stage, index_t b) {
  return b == 0 || stage[std::size_t(b)] != stage[std::size_t(b - 1)];
}
inline void check_input(const EbqmInput& in, const EbqmOptions& o) {
  validate(o);
  const auto nb = index_t(in.stage.size());
  require<shape_error>(in.D.size() == in.cand_block.size(), "EBQM", "D size", in.cand_block.size(), in.D.size());
  require<shape_error>(in.skipped.empty() || index_t(in.skipped.size()) == nb, "EBQM", "skipped size", nb, in.skipped.size());
  require<shape_error>(in.streak.empty() || index_t(in.streak.size()) == nb, "EBQM", "streak size", nb, in.streak.size());
  require(o.hysteresis == 1 || !in.streak.empty(), "EBQM", "streak", "per-block counters when h > 1", "none");
  for (std::size_t i = 0; i < in.D.size(); ++i) {
    const index_t b = in.cand_block[i];
    require<shape_error>(b >= 0 && b < nb && (i == 0 || b > in.cand_block[i - 1]), "EBQM",
                         lamina::detail::text("cand_block[", i, "]"), "increasing block indices in [0, nblocks)", b);
    require(std::isfinite(in.D[i]), "EBQM", lamina::detail::text("D of block ", b), "a finite value", in.D[i]);
  }
}
// Steps 1–4: x, the fit, u and the flags.
inline void map_to_quantiles(const EbqmInput& in, const EbqmOptions& o, EbqmResult& r) {
  const auto [lo, hi] = std::minmax_element(in.D.begin(), in.D.end());
  const std::size_t n = in.D.size();
  if (n == 0 || *hi - *lo < o.range_tol) {
    r.degenerate = true;
    return;
  }
  r.x.resize(n), r.u.resize(n);
  for (std::size_t i = 0; i < n; ++i) r.x[i] = std::clamp((in.D[i] - *lo) / (*hi - *lo), o.clip, 1 - o.clip);
  r.m = std::accumulate(r.x.begin(), r.x.end(), 0.0) / double(n);
  double v = 0;
  for (double xi : r.x) v += (xi - r.m) * (xi - r.m);
  r.v = v / double(n);
  r.fit = fit_beta_moments(r.m, r.v);
  for (std::size_t i = 0; i < n; ++i) {
    r.u[i] = incomplete_beta(r.fit.a, r.fit.b, r.x[i]);
    r.cand[i] = r.u[i] < o.q;
  }
}
inline Decision guard(const EbqmInput& in, const EbqmOptions& o, const EbqmResult& r, index_t b, index_t nskip) {
  const auto nb = index_t(in.stage.size());
  if (first_of_stage(in.stage, b)) return Decision::first_of_stage;
  if ((b > 0 && r.skip[std::size_t(b - 1)]) || (b + 1 < nb && r.skip[std::size_t(b + 1)])) return Decision::adjacent;
  if (nskip >= r.cap) return Decision::cap;
  if (!in.streak.empty() && in.streak[std::size_t(b)] < o.hysteresis) return Decision::waiting;
  return Decision::skipped;
}
}  // namespace detail

/// One EBQM decision.
inline EbqmResult ebqm_decide(const EbqmInput& in, const EbqmOptions& o = {}) {
  detail::check_input(in, o);
  const std::size_t n = in.D.size(), nb = in.stage.size();
  EbqmResult r;
  r.cand.assign(n, 0);
  r.decision.assign(n, Decision::none);
  r.skip.assign(nb, 0);
  index_t nskip = 0, eligible = 0;
  for (std::size_t b = 0; b < nb; ++b) {
    if (!in.skipped.empty() && in.skipped[b]) r.skip[b] = 1, ++nskip;
    eligible += !detail::first_of_stage(in.stage, index_t(b));
  }
  detail::map_to_quantiles(in, o, r);
  for (std::size_t i = 0; i < n && !in.streak.empty(); ++i) {
    index_t& s = in.streak[std::size_t(in.cand_block[i])];
    s = r.cand[i] ? s + 1 : 0;
  }
  if (r.degenerate) return r;
  const auto flagged = index_t(std::count(r.cand.begin(), r.cand.end(), 1));
  r.cap = index_t(std::floor(o.rho * double(o.cap_over_flagged ? flagged + nskip : eligible)));
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < n; ++i)
    if (r.cand[i]) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return r.u[a] < r.u[b]; });
  for (std::size_t i : order) {
    const index_t b = in.cand_block[i];
    r.decision[i] = detail::guard(in, o, r, b, nskip);
    if (r.decision[i] == Decision::skipped) r.skip[std::size_t(b)] = 1, ++nskip;
  }
  return r;
}

}  // namespace lamina::attention
