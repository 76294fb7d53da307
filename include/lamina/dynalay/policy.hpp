#pragma once
// The DynaLay agent (spec/fpi_dynalay.md §4): a small MLP
//   logits = tanh(φ W1 + b1) W2 + b2   over K + 1 actions (0..K−1: apply FPI
// layer k; K: answer now), a softmax masked so that an episode ends by S steps
// (at step s = S only "answer" is allowed), sampling or greedy choice, and the
// REINFORCE estimator with an entropy bonus, written as the gradient of the
// surrogate loss  −A·log π(a) − β·H(π)  with respect to the logits:
//   ∂/∂l_j = −A (1[j = a] − p_j) + β p_j (log p_j + H)   (allowed j; 0 if masked).
// A moving-average baseline b ← μ b + (1 − μ) mean(R) gives A = R − b.
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/core/random.hpp"
#include "lamina/modules/activation.hpp"
#include "lamina/modules/linear.hpp"

namespace lamina::dynalay {

/// The policy MLP: a lamina::Module [N, F] → [N, K + 1].
template <class T>
class Policy {
 public:
  using value_type = T;
  struct Cache {
    typename Linear<T>::Cache l1, l2;
    typename Tanh<T>::Cache act;
    Tensor<T> a, h;  ///< pre-activation and hidden state, kept for backward
  };

  Policy(index_t features, index_t hidden, index_t actions, Rng& rng)
      : l1_(features, hidden, rng), l2_(hidden, actions, rng) {}

  index_t features() const noexcept { return l1_.in_features(); }
  index_t hidden() const noexcept { return l1_.out_features(); }
  index_t actions() const noexcept { return l2_.out_features(); }
  Linear<T>& first() noexcept { return l1_; }
  Linear<T>& second() noexcept { return l2_; }

  Shape output_shape(const Shape& x) const { return l2_.output_shape(l1_.output_shape(x)); }

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    const Shape hs = l1_.output_shape(x.shape());
    c.a.resize(hs), c.h.resize(hs);
    l1_.forward(x, c.a.view(), c.l1, p);
    act_.forward(c.a.cview(), c.h.view(), c.act, p);
    l2_.forward(c.h.cview(), y, c.l2, p);
  }
  void infer(ConstView<T> x, View<T> y) {
    const Shape hs = l1_.output_shape(x.shape());
    a_.resize(hs), h_.resize(hs);
    l1_.infer(x, a_.view());
    act_.infer(a_.cview(), h_.view());
    l2_.infer(h_.cview(), y);
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    dh_.resize(c.h.shape()), da_.resize(c.h.shape());
    dh_.zero(), da_.zero();
    l2_.backward(c.l2, dy, dh_.view(), {.input = true, .params = g.params});
    act_.backward(c.act, dh_.cview(), da_.view(), {.input = true, .params = g.params});
    l1_.backward(c.l1, da_.cview(), dx, g);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    l1_.visit(f, prefix + "l1.");
    l2_.visit(f, prefix + "l2.");
  }
  /// FLOPs of one row: two affine maps and the tanh.
  index_t flops_per_row() const noexcept {
    return 2 * features() * hidden() + hidden() + hidden() + 2 * hidden() * actions() + actions();
  }

 private:
  Linear<T> l1_, l2_;
  Tanh<T> act_;
  Tensor<T> a_, h_, dh_, da_;
  Cache cache_;
};

/// Actions allowed at step s of an episode with at most S steps: the K layers
/// while s < S, "answer" (action K) always.
inline bool allowed(index_t action, index_t s, index_t S, index_t K) noexcept {
  return action == K || (action >= 0 && action < K && s < S);
}

/// p = softmax of the allowed logits (row maximum subtracted), 0 for the others.
template <class T>
void masked_softmax(const T* logits, index_t s, index_t S, index_t K, T* p) {
  T m = -std::numeric_limits<T>::infinity();
  for (index_t j = 0; j <= K; ++j)
    if (allowed(j, s, S, K)) m = std::max(m, logits[j]);
  double z = 0;
  for (index_t j = 0; j <= K; ++j) z += allowed(j, s, S, K) ? std::exp(double(logits[j] - m)) : 0.0;
  for (index_t j = 0; j <= K; ++j) p[j] = allowed(j, s, S, K) ? T(std::exp(double(logits[j] - m)) / z) : T(0);
}

/// An action drawn from p (K + 1 probabilities); masked actions have p = 0 and are never drawn.
template <class T>
index_t sample_action(const T* p, index_t K, Rng& rng) {
  const double u = rng.uniform();
  double c = 0;
  index_t last = K;
  for (index_t j = 0; j <= K; ++j) {
    if (p[j] <= 0) continue;
    c += double(p[j]);
    last = j;
    if (u < c) return j;
  }
  return last;  // rounding: u ≥ the computed total
}

/// The most probable action (lowest index on ties).
template <class T>
index_t greedy_action(const T* p, index_t K) noexcept {
  index_t a = 0;
  for (index_t j = 1; j <= K; ++j)
    if (p[j] > p[a]) a = j;
  return a;
}

/// H(p) = −Σ p log p over the non-zero entries.
template <class T>
double entropy(const T* p, index_t K) noexcept {
  double h = 0;
  for (index_t j = 0; j <= K; ++j)
    if (p[j] > 0) h -= double(p[j]) * std::log(double(p[j]));
  return h;
}

/// Adds scale · ∂(−A log p_a − β H(p))/∂logits into dl (the header's formula).
template <class T>
void add_reinforce_grad(const T* p, index_t K, index_t a, double advantage, double beta, double scale, T* dl) {
  const double h = entropy(p, K);
  for (index_t j = 0; j <= K; ++j) {
    if (p[j] <= 0) continue;
    const double pj = double(p[j]);
    const double g = -advantage * ((j == a ? 1.0 : 0.0) - pj) + beta * pj * (std::log(pj) + h);
    dl[j] += T(scale * g);
  }
}

/// Gumbel-softmax (straight-through, the option of §4 Training): with
/// g_j ~ Gumbel(0, 1) on the allowed actions, a = argmax(l + g) is an exact draw
/// from π, and y = softmax((l + g)/τ) its relaxation. The chosen action's output
/// is multiplied by the gate ŷ = y_a / sg(y_a) (value 1: the forward is
/// unchanged), so a loss L reaches the logits as
///   ∂L/∂l_j = ∂L/∂ŷ · (1[j = a] − y_j) / τ.
/// gumbel_action writes y into soft and returns a.
template <class T>
index_t gumbel_action(const T* logits, index_t s, index_t S, index_t K, double tau, Rng& rng, T* soft) {
  std::vector<double> v(static_cast<std::size_t>(K + 1), 0.0);
  index_t a = K;
  double m = -std::numeric_limits<double>::infinity();
  for (index_t j = 0; j <= K; ++j) {
    if (!allowed(j, s, S, K)) continue;
    const double u = (double(rng() >> 11) + 0.5) * 0x1.0p-53;  // in (0, 1)
    v[std::size_t(j)] = double(logits[j]) - std::log(-std::log(u));
    if (v[std::size_t(j)] > m) m = v[std::size_t(j)], a = j;
  }
  double z = 0;
  for (index_t j = 0; j <= K; ++j) z += allowed(j, s, S, K) ? std::exp((v[std::size_t(j)] - m) / tau) : 0.0;
  for (index_t j = 0; j <= K; ++j) soft[j] = allowed(j, s, S, K) ? T(std::exp((v[std::size_t(j)] - m) / tau) / z) : T(0);
  return a;
}

/// Adds gate · (1[j = a] − y_j) / τ into dl (the straight-through gradient above).
template <class T>
void add_gumbel_grad(const T* soft, index_t K, index_t a, double gate, double tau, T* dl) {
  for (index_t j = 0; j <= K; ++j)
    if (soft[j] > 0) dl[j] += T(gate * ((j == a ? 1.0 : 0.0) - double(soft[j])) / tau);
}

/// The moving-average baseline; its state [value, initialised] is a checkpointed buffer.
template <class T>
class MovingBaseline {
 public:
  explicit MovingBaseline(double momentum = 0.9) : state_(Shape{2}) {
    require(momentum >= 0 && momentum < 1, "MovingBaseline", "momentum", "in [0, 1)", momentum);
    momentum_ = momentum;
  }
  double value() const noexcept { return double(state_[0]); }
  bool initialised() const noexcept { return state_[1] != T(0); }
  /// b ← mean the first time, then b ← μ b + (1 − μ) mean.
  void update(double mean) noexcept {
    state_[0] = initialised() ? T(momentum_ * value() + (1 - momentum_) * mean) : T(mean);
    state_[1] = T(1);
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    f(ParamRef<T>{prefix + "state", state_.view(), View<T>{}, false, false});
  }

 private:
  Tensor<T> state_;
  double momentum_ = 0.9;
};

}  // namespace lamina::dynalay
