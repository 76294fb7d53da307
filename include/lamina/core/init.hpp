#pragma once
// Weight initialisers (formulas of golden/core/README.md "Initialisers").
#include <cmath>
#include <string_view>

#include "lamina/core/random.hpp"
#include "lamina/core/tensor.hpp"

namespace lamina::init {

/// torch.nn.init.calculate_gain for the non-linearities lamina uses.
enum class Gain { linear, relu, tanh, sigmoid };
inline double gain(Gain g) {
  switch (g) {
    case Gain::relu: return std::sqrt(2.0);
    case Gain::tanh: return 5.0 / 3.0;
    default: return 1.0;
  }
}
enum class FanMode { fan_in, fan_out };

/// Fans of a weight: Linear [in, out] (lamina layout) or Conv2d [Cout, Cin, kh, kw].
struct Fans {
  double in, out;
};
inline Fans fans(const Shape& s) {
  if (s.rank() == 2) return {double(s[0]), double(s[1])};
  if (s.rank() == 4) {
    const double rf = double(s[2] * s[3]);
    return {double(s[1]) * rf, double(s[0]) * rf};
  }
  if (s.rank() == 1) return {double(s[0]), double(s[0])};
  throw value_error("lamina::init: weight rank: expected 1, 2 or 4, got " + std::to_string(s.rank()));
}

template <class T>
void uniform(View<T> w, double a, double b, Rng& rng) {
  for (T& v : w.span()) v = T(rng.uniform(a, b));
}
template <class T>
void normal(View<T> w, double mean, double stddev, Rng& rng) {
  for (T& v : w.span()) v = T(rng.normal(mean, stddev));
}
template <class T>
void kaiming_normal(View<T> w, Rng& rng, Gain g = Gain::relu, FanMode m = FanMode::fan_in) {
  const Fans f = fans(w.shape());
  normal(w, 0.0, gain(g) / std::sqrt(m == FanMode::fan_in ? f.in : f.out), rng);
}
template <class T>
void kaiming_uniform(View<T> w, Rng& rng, Gain g = Gain::relu, FanMode m = FanMode::fan_in) {
  const Fans f = fans(w.shape());
  const double a = gain(g) * std::sqrt(3.0 / (m == FanMode::fan_in ? f.in : f.out));
  uniform(w, -a, a, rng);
}
template <class T>
void xavier_normal(View<T> w, Rng& rng, double g = 1.0) {
  const Fans f = fans(w.shape());
  normal(w, 0.0, g * std::sqrt(2.0 / (f.in + f.out)), rng);
}
template <class T>
void xavier_uniform(View<T> w, Rng& rng, double g = 1.0) {
  const Fans f = fans(w.shape());
  const double a = g * std::sqrt(6.0 / (f.in + f.out));
  uniform(w, -a, a, rng);
}

}  // namespace lamina::init
