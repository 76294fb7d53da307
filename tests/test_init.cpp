#include <catch2/catch.hpp>

#include <cmath>

#include "lamina/core/init.hpp"
#include "lamina/core/random.hpp"

using namespace lamina;

namespace {
struct Moments {
  double mean, stddev, lo, hi;
};
Moments moments(const Tensor<double>& t) {
  double s = 0, q = 0, lo = 1e300, hi = -1e300;
  for (double v : t.span()) {
    s += v;
    q += v * v;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  const double n = double(t.size()), m = s / n;
  return {m, std::sqrt(q / n - m * m), lo, hi};
}
// For n samples the sample std has relative standard error 1/sqrt(2n); allow 5 of them.
void check_std(const Tensor<double>& t, double expected) {
  const Moments m = moments(t);
  const double se = 1 / std::sqrt(2.0 * double(t.size()));
  INFO("std " << m.stddev << " expected " << expected);
  CHECK(std::abs(m.stddev / expected - 1) < 5 * se);
  CHECK(std::abs(m.mean) < 5 * expected / std::sqrt(double(t.size())));
}
}  // namespace

TEST_CASE("Initialisers follow the formulas of golden/core/README.md", "[init]") {
  Rng rng(123);
  // A large 3x3 conv 16 -> 16 weight (fans 144, 144), many copies for statistics.
  Tensor<double> conv(Shape{16 * 64, 16, 3, 3});
  const double fan = 16 * 9;
  // Fans come from [Cout, Cin, kh, kw]: here fan_in = 144 and fan_out = 1024·9.
  init::kaiming_normal(conv.view(), rng, init::Gain::relu, init::FanMode::fan_in);
  check_std(conv, std::sqrt(2.0 / fan));
  init::kaiming_uniform(conv.view(), rng, init::Gain::relu, init::FanMode::fan_in);
  const double a = std::sqrt(2.0) * std::sqrt(3.0 / fan);
  CHECK(moments(conv).hi <= a);
  CHECK(moments(conv).lo >= -a);
  check_std(conv, a / std::sqrt(3.0));

  Tensor<double> lin(Shape{64, 10 * 1000});  // Linear [in, out]: fan_in = rows
  init::xavier_normal(lin.view(), rng);
  check_std(lin, std::sqrt(2.0 / (64 + 10000)));
  init::xavier_uniform(lin.view(), rng, init::gain(init::Gain::tanh));
  const double b = (5.0 / 3.0) * std::sqrt(6.0 / (64 + 10000));
  CHECK(moments(lin).hi <= b);
  check_std(lin, b / std::sqrt(3.0));

  // The worked numbers of the README.
  CHECK(init::gain(init::Gain::relu) / std::sqrt(144.0) == Approx(0.11785113019775792));
  CHECK(std::sqrt(6.0 / (64 + 10)) == Approx(0.2847473987257497));
  CHECK(init::fans(Shape{64, 10}).in == 64);
  CHECK(init::fans(Shape{32, 16, 3, 3}).out == 288);
  CHECK_THROWS_WITH(init::fans(Shape{2, 3, 4}), Catch::Contains("init: weight rank"));
}

TEST_CASE("Rng is reproducible and well spread", "[init][random]") {
  Rng a(7), b(7), c(8);
  for (int i = 0; i < 100; ++i) REQUIRE(a() == b());
  CHECK(a() != c());
  Rng r(1);
  double s = 0, q = 0;
  const int n = 200000;
  index_t below_hits[5] = {};
  for (int i = 0; i < n; ++i) {
    const double z = r.normal();
    s += z;
    q += z * z;
    ++below_hits[r.below(5)];
  }
  CHECK(std::abs(s / n) < 0.01);
  CHECK(std::abs(q / n - 1) < 0.02);
  for (index_t h : below_hits) CHECK(std::abs(double(h) / n - 0.2) < 0.01);
}
