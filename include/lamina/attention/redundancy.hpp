#pragma once
// The redundancy measure of ELA (spec/layer_attention.md §4): for a block t with
// attention A_t [R, t] (R = B·G rows) and the previous attending block's
// A_{t-1} [R, t−1],
//   P = (A + ε)/(1 + t ε) on A_t and on A_{t-1} padded with a zero for block t,
//   d_t[r] = KL(P_t ‖ P_{t-1}),   D_t = mean over the R rows (batch and heads).
// Options: symmetric, (KL(P_t‖P_{t-1}) + KL(P_{t-1}‖P_t))/2; common support,
// both restricted to s = 1..t−1 and mapped v ↦ (v + ε)/(Σ_{s<t} v_s + (t−1)ε)
// (golden/README.md open points 5 and 6). A statistic: no gradient. The KL
// goes through kernels::kl_probs_rows_short (vectorised across the short rows).
// Per epoch, D_t is averaged over that epoch's steps (RedundancyMeter).
#include <cmath>
#include <limits>
#include <vector>

#include "lamina/kernels/dispatch.hpp"

namespace lamina::attention {

struct RedundancyOptions {
  double eps = 1e-6;            ///< smoothing ε (> 0)
  bool symmetric = false;       ///< (KL(P_t‖P_{t−1}) + KL(P_{t−1}‖P_t)) / 2
  bool common_support = false;  ///< compare on s = 1..t−1 only
};

inline void validate(const RedundancyOptions& o) {
  require(o.eps > 0 && std::isfinite(o.eps), "RedundancyOptions", "eps", "a finite value > 0", o.eps);
}

/// Computes d [R] and returns D_t = mean(d). Scratch buffers come from `work`
/// (kept by the caller so that a training loop allocates once).
template <class T>
class Redundancy {
 public:
  explicit Redundancy(const RedundancyOptions& o = {}) : o_(o) { validate(o); }
  const RedundancyOptions& options() const noexcept { return o_; }

  /// At [R, t], Aprev [R, t−1], t ≥ 2; d [R].
  T operator()(ConstView<T> At, ConstView<T> Aprev, View<T> d) {
    check(At, Aprev, d);
    const index_t R = At.dim(0), t = At.dim(1);
    if (o_.common_support) common_rows(At.data(), Aprev.data(), R, t);
    else padded_rows(At.data(), Aprev.data(), R, t);
    const index_t n = o_.common_support ? t - 1 : t;
    const T eps = o_.common_support ? T(0) : T(o_.eps);
    const auto& k = kernels::table<T>();
    k.kl_probs_rows_short(p_.data(), q_.data(), d.data(), R, n, eps);
    if (o_.symmetric) {
      rev_.resize(static_cast<std::size_t>(R));
      k.kl_probs_rows_short(q_.data(), p_.data(), rev_.data(), R, n, eps);
      for (index_t r = 0; r < R; ++r) d.data()[r] = (d.data()[r] + rev_[std::size_t(r)]) / T(2);
    }
    double s = 0;
    for (index_t r = 0; r < R; ++r) s += double(d.data()[r]);
    return T(s / double(R));
  }

 private:
  void check(ConstView<T> At, ConstView<T> Aprev, View<T> d) const {
    require<shape_error>(At.rank() == 2 && At.dim(1) >= 2, "Redundancy", "A_t shape", "[R, t] with t >= 2", At.shape());
    const Shape ps{At.dim(0), At.dim(1) - 1};
    require<shape_error>(Aprev.shape() == ps, "Redundancy", "A_{t-1} shape", ps, Aprev.shape());
    require<shape_error>(d.size() == At.dim(0), "Redundancy", "d size", At.dim(0), d.size());
    require_contiguous(At, "Redundancy", "A_t");
    require_contiguous(Aprev, "Redundancy", "A_{t-1}");
    require_contiguous(d, "Redundancy", "d");
  }
  // p = A_t, q = [A_{t-1}, 0]; the kernel smooths both.
  void padded_rows(const T* a, const T* b, index_t R, index_t t) {
    p_.assign(a, a + R * t);
    q_.resize(static_cast<std::size_t>(R * t));
    for (index_t r = 0; r < R; ++r) {
      std::copy(b + r * (t - 1), b + (r + 1) * (t - 1), q_.data() + r * t);
      q_[std::size_t(r * t + t - 1)] = T(0);
    }
  }
  // Both restricted to s < t and renormalised in one step: (v + ε)/(Σv + (t−1)ε).
  void common_rows(const T* a, const T* b, index_t R, index_t t) {
    const index_t n = t - 1;
    p_.resize(static_cast<std::size_t>(R * n));
    q_.resize(p_.size());
    const T e = T(o_.eps);
    auto map = [&](const T* v, T* out) {
      T s = 0;
      for (index_t i = 0; i < n; ++i) s += v[i];
      const T z = s + T(n) * e;
      for (index_t i = 0; i < n; ++i) out[i] = (v[i] + e) / z;
    };
    for (index_t r = 0; r < R; ++r) {
      map(a + r * t, p_.data() + r * n);
      map(b + r * n, q_.data() + r * n);
    }
  }

  RedundancyOptions o_;
  std::vector<T> p_, q_, rev_;
};

/// D_t averaged over the steps of one epoch.
struct RedundancyMeter {
  double sum = 0;
  index_t steps = 0;
  void add(double D) noexcept {
    sum += D;
    ++steps;
  }
  /// The epoch's mean; NaN when nothing was measured.
  double mean() const noexcept { return steps ? sum / double(steps) : std::numeric_limits<double>::quiet_NaN(); }
  void reset() noexcept { sum = 0, steps = 0; }
};

}  // namespace lamina::attention
