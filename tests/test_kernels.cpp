// SIMD kernels against their scalar references (every tail length, unaligned
// starts, long rows, adversarial values), against tests/golden, and the
// accuracy bounds of spec/kernels.md.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "lamina/core/random.hpp"
#include "lamina/kernels/batchnorm.hpp"
#include "lamina/kernels/depthwise_conv3x3.hpp"
#include "lamina/kernels/exp.hpp"
#include "lamina/kernels/kl_divergence.hpp"
#include "lamina/kernels/log.hpp"
#include "lamina/kernels/residual.hpp"
#include "lamina/kernels/softmax.hpp"
#include "lamina/kernels/spd_lanes.hpp"
#include "lamina/kernels/tanh.hpp"
#include "lamina/kernels/weighted_aggregation.hpp"
#include "support/golden.hpp"

#include <Eigen/Cholesky>  // Eigen extras after lamina's headers (GCC 12 AVX-512 warnings)

using namespace lamina;
namespace k = lamina::kernels;

namespace {
constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan_ = std::numeric_limits<double>::quiet_NaN();

template <class T>
std::vector<T> randv(index_t n, std::uint64_t seed, double lo = -4, double hi = 4) {
  Rng r(seed);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = T(r.uniform(lo, hi));
  return v;
}
template <class T>
std::vector<T> random_probs(index_t n, std::uint64_t seed) {
  auto v = randv<T>(n, seed, 0, 1);
  T s = 0;
  for (T x : v) s += x;
  for (T& x : v) x /= s;
  return v;
}
// |a - b| <= rel·|b| + abs, NaN only where the reference is NaN.
template <class A, class B>
bool close(A a, B b, double rel, double abs = 0) {
  if (std::isnan(double(b))) return std::isnan(double(a));
  if (std::isinf(double(b))) return double(a) == double(b);
  return std::abs(double(a) - double(b)) <= rel * std::abs(double(b)) + abs;
}
// Max lanes over every type: lengths 0 .. 3 × the widest vector + 2.
template <class T>
index_t max_len() {
  return 3 * k::lanes<T> + 2;
}
}  // namespace

namespace {
// Distance in units in the last place between two finite floats of the same sign or zero.
std::int64_t ulps(float a, float b) {
  auto key = [](float x) {
    std::int32_t i;
    std::memcpy(&i, &x, sizeof i);
    return i < 0 ? std::int64_t(std::numeric_limits<std::int32_t>::min()) - i : std::int64_t(i);
  };
  return std::abs(key(a) - key(b));
}
}  // namespace

TEST_CASE("vexp is within 2 ulp of the correctly rounded exp over the float range", "[kernels][exp]") {
  std::vector<float> x;
  Rng rng(17);
  for (int i = 0; i < 200000; ++i) x.push_back(float(rng.uniform(-110, 90)));
  for (int i = 0; i < 20000; ++i) x.push_back(float(rng.uniform(-1, 1)));
  // Reduction boundaries (k ln2 ± ln2/2), the subnormal and overflow edges.
  for (int k = -150; k <= 128; ++k)
    for (double d : {-0.5, -0.4999, 0.0, 0.4999, 0.5}) x.push_back(float((k + d) * std::log(2.0)));
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.72f, 88.7228f, 88.73f, -87.33f, -87.34f, -103.27f, -103.28f, -103.97f, -104.0f, -104.1f})
    x.push_back(v);
  std::vector<float> y(x.size());
  k::vexp(x.data(), y.data(), index_t(x.size()));
  std::int64_t worst = 0;
  float at = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float ref = float(std::exp(double(x[i])));
    INFO("x " << x[i] << " vexp " << y[i] << " exp " << ref);
    if (std::isinf(ref)) {
      REQUIRE(y[i] == ref);
      continue;
    }
    REQUIRE(std::isfinite(y[i]));
    const std::int64_t u = ulps(y[i], ref);
    if (u > worst) worst = u, at = x[i];
  }
  INFO("worst " << worst << " ulp at x = " << at);
  CHECK(worst <= 2);

  // Special values, in the vector body (the first lanes) and the scalar tail.
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> s(std::size_t(k::lanes<float>) + 5, 1.0f), e(s.size());
  for (std::size_t off : {std::size_t(0), s.size() - 5}) {
    std::fill(s.begin(), s.end(), 1.0f);
    s[off] = -inf, s[off + 1] = inf, s[off + 2] = nan, s[off + 3] = -1000.0f, s[off + 4] = 1000.0f;
    k::vexp(s.data(), e.data(), index_t(s.size()));
    CHECK(e[off] == 0.0f);
    CHECK(e[off + 1] == inf);
    CHECK(std::isnan(e[off + 2]));
    CHECK(e[off + 3] == 0.0f);
    CHECK(e[off + 4] == inf);
  }
}

namespace {
// Distance in units in the last place, for float or double (sign-magnitude order).
template <class T>
std::int64_t ulp_distance(T a, T b) {
  using I = std::conditional_t<sizeof(T) == 4, std::int32_t, std::int64_t>;
  auto key = [](T x) {
    I i;
    std::memcpy(&i, &x, sizeof i);
    return i < 0 ? std::numeric_limits<I>::min() - i : i;
  };
  const I ka = key(a), kb = key(b);
  return ka > kb ? std::int64_t(ka - kb) : std::int64_t(kb - ka);
}
}  // namespace

TEMPLATE_TEST_CASE("vtanh matches tanh over the range, on every tail length, with special values", "[kernels][tanh]",
                   float, double) {
  using T = TestType;
  const std::int64_t bound = std::is_same_v<T, float> ? 2 : 4;
  std::vector<T> x;
  Rng rng(23);
  for (int i = 0; i < 100000; ++i) x.push_back(T(rng.uniform(-12, 12)));
  for (int i = 0; i < 20000; ++i) x.push_back(T(rng.uniform(-1, 1)));
  for (int i = 0; i < 5000; ++i) x.push_back(T(std::ldexp(rng.uniform(-1, 1), -int(rng.uniform(0, 120)))));
  for (double v : {0.625, -0.625, 0.6249999, 0.6250001, 9.0, 9.01, 20.0, 44.0, 1e-30, -1e-30, 1e30, -1e30})
    x.push_back(T(v));
  std::vector<T> y(x.size()), r(x.size());
  k::vtanh(x.data(), y.data(), index_t(x.size()));
  std::int64_t worst = 0;
  T at = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const T ref = std::is_same_v<T, float> ? T(std::tanh(double(x[i]))) : T(std::tanh((long double)x[i]));
    INFO("x " << x[i] << " vtanh " << y[i] << " tanh " << ref);
    REQUIRE(std::isfinite(y[i]));
    REQUIRE(std::abs(y[i]) <= T(1));
    const std::int64_t u = ulp_distance(y[i], ref);
    if (u > worst) worst = u, at = x[i];
  }
  INFO("worst " << worst << " ulp at x = " << at);
  CHECK(worst <= bound);

  // Every length (the vector body and the scalar tail), in place too, against the reference twin.
  for (index_t n = 0; n <= max_len<T>(); ++n) {
    auto v = randv<T>(n, std::uint64_t(100 + n), -6, 6);
    std::vector<T> got(std::size_t(n) + 1, T(7)), want(static_cast<std::size_t>(n));
    k::vtanh(v.data(), got.data(), n);
    k::ref::tanh(v.data(), want.data(), n);
    for (index_t i = 0; i < n; ++i) CHECK(ulp_distance(got[std::size_t(i)], want[std::size_t(i)]) <= bound + 1);
    CHECK(got[std::size_t(n)] == T(7));  // nothing written past n
    k::vtanh(v.data(), v.data(), n);
    for (index_t i = 0; i < n; ++i) CHECK(v[std::size_t(i)] == got[std::size_t(i)]);
  }

  // Special values in the vector body (the first lanes) and in the scalar tail.
  const T tinf = std::numeric_limits<T>::infinity(), tnan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> s(std::size_t(k::lanes<T>) + 6), e(s.size());
  for (std::size_t off : {std::size_t(0), s.size() - 6}) {
    std::fill(s.begin(), s.end(), T(0.5));
    s[off] = -tinf, s[off + 1] = tinf, s[off + 2] = tnan, s[off + 3] = T(-0.0), s[off + 4] = T(0), s[off + 5] = T(-1e4);
    k::vtanh(s.data(), e.data(), index_t(s.size()));
    CHECK(e[off] == T(-1));
    CHECK(e[off + 1] == T(1));
    CHECK(std::isnan(e[off + 2]));
    CHECK((e[off + 3] == T(0) && std::signbit(e[off + 3])));
    CHECK((e[off + 4] == T(0) && !std::signbit(e[off + 4])));
    CHECK(e[off + 5] == T(-1));
  }
}

TEST_CASE("vexp_nonpos is within 3e-7 + 3e-9|x| relative of exp on x <= 0", "[kernels][exp]") {
  using V = k::batch<float, k::default_arch>;
  constexpr std::size_t W = V::size;
  std::vector<float> x;
  Rng rng(29);
  for (int i = 0; i < 200000; ++i) x.push_back(float(rng.uniform(-110, 0)));
  for (int i = 0; i < 20000; ++i) x.push_back(float(rng.uniform(-1, 0)));
  // Both reductions' boundaries ((32q + j ± 1/2) ln2/32), the subnormal edge, zeros.
  for (int m = -4800; m <= 0; ++m)
    for (double d : {-0.5, -0.4999, 0.0, 0.4999}) x.push_back(float(std::min(0.0, (m + d) * std::log(2.0) / 32)));
  for (float v : {0.0f, -0.0f, -1e-30f, -87.33f, -87.34f, -103.27f, -103.28f, -103.97f, -104.0f, -104.1f, -1e6f})
    x.push_back(v);
  const float nan = std::numeric_limits<float>::quiet_NaN(), ninf = -std::numeric_limits<float>::infinity();
  x.push_back(ninf);
  x.push_back(nan);
  while (x.size() % W) x.push_back(-1.0f);
  std::vector<float> y(x.size());
  for (std::size_t i = 0; i < x.size(); i += W) k::vexp_nonpos(V::load_unaligned(x.data() + i)).store_unaligned(y.data() + i);
  double worst = 0;
  float at = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    INFO("x " << x[i] << " vexp_nonpos " << y[i]);
    if (std::isnan(x[i])) {
      CHECK(std::isnan(y[i]));
      continue;
    }
    const double ref = std::exp(double(x[i]));
    REQUIRE(std::isfinite(y[i]));
    REQUIRE(y[i] >= 0.0f);
    const double bound = 3e-7 + 3e-9 * std::min(std::abs(double(x[i])), 1e6);  // finite for x = −Inf (y must be 0)
    if (ref < 1.2e-38) {  // subnormal results: the bound plus one spacing 2^-149 (scalef rounds once more)
      CHECK(std::abs(double(y[i]) - ref) <= bound * ref + 1.41e-45);
      continue;
    }
    const double rel = std::abs(double(y[i]) - ref) / ref / bound;
    if (rel > worst) worst = rel, at = x[i];
  }
  INFO("worst error " << worst << " of the bound, at x = " << at);
  CHECK(worst <= 1.0);
}

TEST_CASE("vexp_nonpos_unclamped equals vexp_nonpos down to -9e4 and is never finite and wrong below", "[kernels][exp]") {
  using V = k::batch<float, k::default_arch>;
  constexpr std::size_t W = V::size;
  std::vector<float> x;
  Rng rng(31);
  for (int i = 0; i < 50000; ++i) x.push_back(float(rng.uniform(-110, 0)));
  for (int i = 0; i < 50000; ++i) x.push_back(-float(std::exp(rng.uniform(0, 70))));  // −1 … −2.5e30
  for (float v : {0.0f, -0.0f, -104.0f, -105.0f, -9e4f, -90852.0f, -90853.0f, -1e5f, -5.4e5f, -1e6f, -1e20f, -1e30f,
                  -std::numeric_limits<float>::max(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN()})
    x.push_back(v);
  while (x.size() % W) x.push_back(-1.0f);
  for (std::size_t i = 0; i < x.size(); i += W) {
    const V v = V::load_unaligned(x.data() + i);
    float fast[64], clamped[64];
    k::detail::vexp_nonpos_unclamped(v).store_unaligned(fast);
    k::vexp_nonpos(v).store_unaligned(clamped);
    for (std::size_t l = 0; l < W; ++l) {
      INFO("x " << x[i + l] << " unclamped " << fast[l] << " clamped " << clamped[l]);
      if (x[i + l] >= -9e4f) CHECK(std::memcmp(&fast[l], &clamped[l], sizeof(float)) == 0);
      else CHECK((fast[l] == 0.0f || !std::isfinite(fast[l])));  // the KL's non-finite check redoes such rows
    }
  }
}

TEST_CASE("fused KL from logits is exact for logits far below the rest (its fast path's fallback)", "[kernels][kl]") {
  // The cached path first runs without the −Inf clamp; huge negative logits make
  // that try non-finite and the clamped pass must then give the reference value.
  for (index_t n : {index_t(200), index_t(1024)})
    for (float low : {-1e5f, -1e20f, -1e30f, -std::numeric_limits<float>::max()})
      for (int side : {0, 1}) {
        INFO("n " << n << " low logit " << low << (side ? " in b" : " in a"));
        auto a = randv<float>(n, 41), b = randv<float>(n, 42);
        (side ? b : a)[7] = low;
        std::vector<double> ad(a.begin(), a.end()), bd(b.begin(), b.end());
        const double ref = k::ref::kl_logits(ad.data(), bd.data(), n);
        REQUIRE(std::isfinite(ref));
        CHECK(close(k::kl_logits(a.data(), b.data(), n), ref, 1e-5, 1e-6));
        const index_t R = 3;  // the matrix driver, with the row in the middle
        std::vector<float> am(static_cast<std::size_t>(R * n)), bm(am), kl(static_cast<std::size_t>(R));
        for (index_t r = 0; r < R; ++r) {
          std::copy(a.begin(), a.end(), am.begin() + r * n);
          std::copy(b.begin(), b.end(), bm.begin() + r * n);
        }
        k::kl_logits_rows(ConstView<float>(am.data(), Shape{R, n}), ConstView<float>(bm.data(), Shape{R, n}),
                          View<float>(kl.data(), Shape{R}));
        for (index_t r = 0; r < R; ++r) CHECK(close(kl[std::size_t(r)], ref, 1e-5, 1e-6));
      }
}

TEMPLATE_TEST_CASE("row kernels on matrices in cache and beyond L2 (prefetching, streamed stores) equal the reference", "[kernels][softmax][kl]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-14;
  // A few rows prefetch the next row; > 1 MiB per matrix also streams the
  // output. Odd widths and an output start one element past a vector
  // boundary exercise the streamed head and tail.
  for (index_t n : {index_t(1024), index_t(1000), index_t(3 * k::lanes<T> + 1)}) {
    const index_t many = index_t(1 << 21) / (n * index_t(sizeof(T))) + 3;
    for (index_t R : {index_t(5), many})
      for (index_t off : {0, 1}) {
        INFO("n " << n << " rows " << R << " offset " << off);
        auto a = randv<T>(R * n + off, std::uint64_t(n + off)), b = randv<T>(R * n + off, std::uint64_t(n + 7));
        a[std::size_t(off + 5)] = -T(inf);  // a masked entry
        std::vector<T> p(std::size_t(R * n + off), T(-7)), r(static_cast<std::size_t>(n));
        k::softmax_rows(ConstView<T>(a.data() + off, Shape{R, n}), View<T>(p.data() + off, Shape{R, n}));
        if (off) REQUIRE(p[0] == T(-7));  // nothing written before the matrix
        for (index_t row : {index_t(0), index_t(1), R / 2, R - 1}) {
          k::ref::softmax(a.data() + off + row * n, r.data(), n);
          for (index_t i = 0; i < n; ++i) REQUIRE(close(p[std::size_t(off + row * n + i)], r[std::size_t(i)], tol, 1e-30));
        }
        a[std::size_t(off + 5)] = T(0.5);  // KL of a −Inf logit is NaN (0·∞): tested with the adversarial values
        std::vector<T> kl(static_cast<std::size_t>(R));
        k::kl_logits_rows(ConstView<T>(a.data() + off, Shape{R, n}), ConstView<T>(b.data() + off, Shape{R, n}), View<T>(kl.data(), Shape{R}));
        for (index_t row : {index_t(0), index_t(1), R / 2, R - 1}) {
          const T ref = k::ref::kl_logits(a.data() + off + row * n, b.data() + off + row * n, n);
          REQUIRE(close(kl[std::size_t(row)], ref, 10 * tol, 10 * tol));
        }
      }
  }
}

TEMPLATE_TEST_CASE("softmax and log_softmax equal the reference at every tail length and offset", "[kernels][softmax]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-6 : 1e-14;
  for (index_t n = 0; n <= max_len<T>(); ++n)
    for (index_t off : {0, 1, 3}) {
      INFO("n " << n << " offset " << off);
      auto a = randv<T>(n + off, std::uint64_t(100 + n));
      std::vector<T> p(std::size_t(n + off), T(-7)), r(static_cast<std::size_t>(n)), lp(std::size_t(n + off)), lr(static_cast<std::size_t>(n));
      k::softmax(a.data() + off, p.data() + off, n);
      k::ref::softmax(a.data() + off, r.data(), n);
      k::log_softmax(a.data() + off, lp.data() + off, n);
      k::ref::log_softmax(a.data() + off, lr.data(), n);
      for (index_t i = 0; i < off; ++i) REQUIRE(p[std::size_t(i)] == T(-7));  // nothing written before the row
      for (index_t i = 0; i < n; ++i) {
        REQUIRE(close(p[std::size_t(off + i)], r[std::size_t(i)], tol, 1e-30));
        REQUIRE(close(lp[std::size_t(off + i)], lr[std::size_t(i)], tol, tol));
      }
    }
}

TEMPLATE_TEST_CASE("KL kernels equal the reference at every tail length and offset", "[kernels][kl]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (index_t n = 0; n <= max_len<T>(); ++n)
    for (index_t off : {0, 1}) {
      INFO("n " << n << " offset " << off);
      auto p = random_probs<T>(n + off, std::uint64_t(7 + n)), q = random_probs<T>(n + off, std::uint64_t(900 + n));
      if (n > 2) p[std::size_t(off + 1)] = 0;  // a zero term
      for (T eps : {T(0), T(1e-6)}) {
        const T got = k::kl_probs(p.data() + off, q.data() + off, n, eps), ref = k::ref::kl_probs(p.data() + off, q.data() + off, n, eps);
        REQUIRE(close(got, ref, tol, tol * 1e-3));
      }
      auto a = randv<T>(n + off, 3 * std::uint64_t(n)), b = randv<T>(n + off, 5 * std::uint64_t(n) + 1);
      REQUIRE(close(k::kl_logits(a.data() + off, b.data() + off, n), k::ref::kl_logits(a.data() + off, b.data() + off, n), tol, tol));
    }
}

TEMPLATE_TEST_CASE("weighted aggregation and its backward equal the reference", "[kernels][aggregation]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  for (index_t t : {1, 2, 5, 17})  // 17 > the kernel's 16 in-register accumulators
    for (index_t L = 0; L <= max_len<T>(); L += (t == 5 ? 1 : 7))
      for (index_t off : {0, 1}) {
        INFO("t " << t << " L " << L << " offset " << off);
        std::vector<std::vector<T>> v, dv, dv_ref;
        std::vector<const T*> vp;
        std::vector<T*> dvp, dvp_ref;
        for (index_t s = 0; s < t; ++s) {
          v.push_back(randv<T>(L + off, std::uint64_t(s * 31 + L)));
          dv.push_back(randv<T>(L + off, std::uint64_t(s * 37 + L)));
          dv_ref.push_back(dv.back());
        }
        for (index_t s = 0; s < t; ++s) {
          vp.push_back(v[std::size_t(s)].data() + off);
          dvp.push_back(dv[std::size_t(s)].data() + off);
          dvp_ref.push_back(dv_ref[std::size_t(s)].data() + off);
        }
        const auto w = randv<T>(t, 11), dout = randv<T>(L + off, 12);
        std::vector<T> o(std::size_t(L + off)), o_ref(std::size_t(L + off));
        k::weighted_sum<k::default_arch, T>(vp, w, o.data() + off, L);
        k::ref::weighted_sum<T>(vp, w, o_ref.data() + off, L);
        for (index_t i = off; i < L + off; ++i) REQUIRE(close(o[std::size_t(i)], o_ref[std::size_t(i)], tol, tol));
        std::vector<T> dw(std::size_t(t), T(0.5)), dw_ref(std::size_t(t), T(0.5));
        k::weighted_sum_backward<k::default_arch, T>(vp, w, dout.data() + off, dvp, dw, L);
        k::ref::weighted_sum_backward<T>(vp, w, dout.data() + off, dvp_ref, dw_ref, L);
        for (index_t s = 0; s < t; ++s) {
          REQUIRE(close(dw[std::size_t(s)], dw_ref[std::size_t(s)], tol, tol * std::sqrt(double(L + 1))));
          for (index_t i = 0; i < L + off; ++i) REQUIRE(close(dv[std::size_t(s)][std::size_t(i)], dv_ref[std::size_t(s)][std::size_t(i)], tol, tol));
        }
      }
}

TEMPLATE_TEST_CASE("aggregation backward assigns the marked gradients and adds into the others", "[kernels][aggregation]",
                   float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  const T garbage = std::numeric_limits<T>::quiet_NaN();  // an assigned buffer's old contents must not be read
  for (index_t t : {1, 3, 6})
    for (index_t L = 0; L <= max_len<T>(); L += 5) {
      INFO("t " << t << " L " << L);
      std::vector<std::vector<T>> v, dv, dv_ref;
      std::vector<const T*> vp;
      std::vector<T*> dvp, dvp_ref;
      std::vector<std::uint8_t> assign;
      for (index_t s = 0; s < t; ++s) {
        assign.push_back(std::uint8_t(s % 2 == 0));  // 0, 2, 4 assigned; 1, 3, 5 added into
        v.push_back(randv<T>(L, std::uint64_t(s * 31 + L)));
        dv.push_back(assign.back() ? std::vector<T>(std::size_t(L), garbage) : randv<T>(L, std::uint64_t(s * 37 + L)));
        dv_ref.push_back(dv.back());
      }
      for (index_t s = 0; s < t; ++s) {
        vp.push_back(v[std::size_t(s)].data());
        dvp.push_back(dv[std::size_t(s)].data());
        dvp_ref.push_back(dv_ref[std::size_t(s)].data());
      }
      const auto w = randv<T>(t, 11), dout = randv<T>(L, 12);
      std::vector<T> dw(std::size_t(t), T(0.5)), dw_ref(std::size_t(t), T(0.5));
      k::weighted_sum_backward<k::default_arch, T>(vp, w, dout.data(), dvp, dw, L, assign);
      k::ref::weighted_sum_backward<T>(vp, w, dout.data(), dvp_ref, dw_ref, L, assign);
      for (index_t s = 0; s < t; ++s) {
        REQUIRE(close(dw[std::size_t(s)], dw_ref[std::size_t(s)], tol, tol * std::sqrt(double(L + 1))));
        for (index_t i = 0; i < L; ++i) {
          const T got = dv[std::size_t(s)][std::size_t(i)];
          REQUIRE(close(got, dv_ref[std::size_t(s)][std::size_t(i)], tol, tol));
          if (assign[std::size_t(s)]) REQUIRE(got == w[std::size_t(s)] * dout[std::size_t(i)]);
        }
      }
    }
}

TEMPLATE_TEST_CASE("depthwise 3x3 convolution equals the reference for every width", "[kernels][depthwise]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  for (index_t W = 1; W <= 2 * k::lanes<T> + 3; ++W)
    for (index_t H : {1, 2, 5}) {
      INFO("H " << H << " W " << W);
      const index_t B = 2, C = 3, n = B * C * H * W;
      auto x = randv<T>(n, std::uint64_t(W * 10 + H)), w = randv<T>(C * 9, 3), dy = randv<T>(n, 4);
      std::vector<T> y(static_cast<std::size_t>(n)), yr(static_cast<std::size_t>(n));
      k::depthwise_conv3x3(x.data(), w.data(), y.data(), B, C, H, W);
      k::ref::depthwise_conv3x3(x.data(), w.data(), yr.data(), B, C, H, W);
      for (index_t i = 0; i < n; ++i) REQUIRE(close(y[std::size_t(i)], yr[std::size_t(i)], tol, tol));
      std::vector<T> dx(std::size_t(n), T(1)), dxr(dx), dw(std::size_t(C * 9), T(-1)), dwr(dw);
      k::depthwise_conv3x3_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), B, C, H, W);
      k::ref::depthwise_conv3x3_backward(x.data(), w.data(), dy.data(), dxr.data(), dwr.data(), B, C, H, W);
      for (index_t i = 0; i < n; ++i) REQUIRE(close(dx[std::size_t(i)], dxr[std::size_t(i)], tol, tol));
      for (index_t i = 0; i < C * 9; ++i) REQUIRE(close(dw[std::size_t(i)], dwr[std::size_t(i)], tol, 10 * tol));
    }
}

namespace {
// The depthwise backward in T against the reference in double: dx and dw within
// tol of the sum of the magnitudes of their terms (the reference run on |x|,
// |w|, |dy| and the magnitudes of the starting dx and dw), NaN only where the
// reference is NaN and an Inf equal to its Inf. dx and dw start non-zero: the
// kernel adds. Twice, so that the second call adds to the first.
template <class T>
void check_depthwise_backward(const std::vector<T>& x, const std::vector<T>& w, const std::vector<T>& dy,
                              const std::vector<T>& dx0, const std::vector<T>& dw0, index_t B, index_t C, index_t H,
                              index_t W, double tol) {
  const auto to_d = [](const std::vector<T>& v, bool mag) {
    std::vector<double> d(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) d[i] = mag ? std::abs(double(v[i])) : double(v[i]);
    return d;
  };
  std::vector<T> dx = dx0, dw = dw0;
  std::vector<double> dxr = to_d(dx0, false), dwr = to_d(dw0, false), dxm = to_d(dx0, true), dwm = to_d(dw0, true);
  const auto xd = to_d(x, false), wd = to_d(w, false), dyd = to_d(dy, false);
  const auto xm = to_d(x, true), wm = to_d(w, true), dym = to_d(dy, true);
  for (int call = 0; call < 2; ++call) {
    INFO("call " << call);
    k::depthwise_conv3x3_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), B, C, H, W);
    k::ref::depthwise_conv3x3_backward(xd.data(), wd.data(), dyd.data(), dxr.data(), dwr.data(), B, C, H, W);
    k::ref::depthwise_conv3x3_backward(xm.data(), wm.data(), dym.data(), dxm.data(), dwm.data(), B, C, H, W);
    for (std::size_t i = 0; i < dx.size(); ++i) {
      INFO("dx[" << i << "] = " << dx[i] << ", reference " << dxr[i]);
      REQUIRE(close(dx[i], dxr[i], 0, std::isfinite(dxm[i]) ? tol * dxm[i] : 0));
    }
    for (std::size_t i = 0; i < dw.size(); ++i) {
      INFO("dw[" << i << "] = " << dw[i] << ", reference " << dwr[i]);
      REQUIRE(close(dw[i], dwr[i], 0, std::isfinite(dwm[i]) ? tol * dwm[i] : 0));
    }
  }
}
}  // namespace

TEMPLATE_TEST_CASE("depthwise 3x3 backward equals the double reference on every H, W up to 20 and 28", "[kernels][depthwise]",
                   float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  std::vector<index_t> sizes;
  for (index_t n = 1; n <= 20; ++n) sizes.push_back(n);
  sizes.push_back(28);
  const index_t BC[][2] = {{1, 1}, {3, 2}, {2, 5}};
  for (index_t H : sizes)
    for (index_t W : sizes) {
      const auto [B, C] = BC[std::size_t(H * 7 + W) % 3];  // every shape with one of the batch/channel counts
      INFO("B " << B << " C " << C << " H " << H << " W " << W);
      const index_t n = B * C * H * W;
      const auto seed = std::uint64_t(H * 100 + W);
      check_depthwise_backward<T>(randv<T>(n, seed), randv<T>(C * 9, seed + 1), randv<T>(n, seed + 2),
                                  randv<T>(n, seed + 3), randv<T>(C * 9, seed + 4), B, C, H, W, tol);
    }
  // A few shapes with every batch/channel count, and channels to 17.
  for (index_t H : {index_t(1), index_t(7), index_t(28)})
    for (index_t W : {index_t(1), index_t(3), k::lanes<T> + 1, index_t(28)})
      for (const auto& bc : {std::array<index_t, 2>{1, 1}, {3, 2}, {2, 5}, {1, 17}, {4, 3}}) {
        const index_t B = bc[0], C = bc[1], n = B * C * H * W;
        INFO("B " << B << " C " << C << " H " << H << " W " << W);
        check_depthwise_backward<T>(randv<T>(n, 11), randv<T>(C * 9, 12), randv<T>(n, 13), randv<T>(n, 14),
                                    randv<T>(C * 9, 15), B, C, H, W, tol);
      }
}

TEMPLATE_TEST_CASE("depthwise 3x3 backward propagates NaN, Inf and -0 as the reference does", "[kernels][depthwise][adversarial]",
                   float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
  const T NaN = T(nan_), Inf = T(inf);
  const index_t B = 2, C = 2;
  for (index_t H : {index_t(1), index_t(2), index_t(5), index_t(28)})
    for (index_t W : {index_t(1), index_t(3), k::lanes<T> - 1, k::lanes<T> + 1, index_t(28)}) {
      const index_t HW = H * W, n = B * C * HW;
      // Corners, an edge, the centre and the last element of the last plane.
      const index_t spots[] = {0, W - 1, (H - 1) * W, HW - 1, (H / 2) * W, (H / 2) * W + W / 2, HW + W / 2, n - 1};
      for (T bad : {NaN, Inf, -Inf})
        for (index_t pos : spots)
          for (int where = 0; where < 4; ++where) {  // x, dy, the starting dx, the starting dw
            INFO("H " << H << " W " << W << " value " << bad << " at " << pos << " in " << where);
            auto x = randv<T>(n, 21), w = randv<T>(C * 9, 22), dy = randv<T>(n, 23), dx = randv<T>(n, 24),
                 dw = randv<T>(C * 9, 25);
            (where == 0 ? x : where == 1 ? dy : where == 2 ? dx : dw)[std::size_t(where == 3 ? pos % (C * 9) : pos)] = bad;
            check_depthwise_backward<T>(x, w, dy, dx, dw, B, C, H, W, tol);
          }
      // A non-finite weight meets the padding (0·Inf = NaN) in dx.
      for (T bad : {NaN, Inf})
        for (index_t tap = 0; tap < 9; ++tap) {
          INFO("H " << H << " W " << W << " weight " << bad << " at tap " << tap);
          auto w = randv<T>(C * 9, 26);
          w[std::size_t(9 + tap)] = bad;
          check_depthwise_backward<T>(randv<T>(n, 27), w, randv<T>(n, 28), randv<T>(n, 29), randv<T>(C * 9, 30), B, C,
                                      H, W, tol);
        }
      // Zeros of both signs only: every output is a sum of zeros, whose sign does
      // not depend on the order (−0 only when every term is −0), so it must be the reference's.
      for (int pattern = 0; pattern < 3; ++pattern) {
        INFO("H " << H << " W " << W << " zero pattern " << pattern);
        const auto sz = [&](index_t m, std::uint64_t seed) {
          auto v = randv<T>(m, seed);
          for (auto& e : v) e = pattern == 0 ? T(-0.0) : std::copysign(T(0), e);
          return v;
        };
        auto x = sz(n, 31), dy = sz(n, 32), dx = sz(n, 33), dw = sz(C * 9, 34), w = randv<T>(C * 9, 35);
        if (pattern == 2) w = sz(C * 9, 36);
        std::vector<T> dxr = dx, dwr = dw;
        k::depthwise_conv3x3_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), B, C, H, W);
        k::ref::depthwise_conv3x3_backward(x.data(), w.data(), dy.data(), dxr.data(), dwr.data(), B, C, H, W);
        for (std::size_t i = 0; i < dx.size(); ++i) {
          INFO("dx[" << i << "]");
          REQUIRE(dx[i] == T(0));
          REQUIRE(std::signbit(dx[i]) == std::signbit(dxr[i]));
        }
        for (std::size_t i = 0; i < dw.size(); ++i) {
          INFO("dw[" << i << "]");
          REQUIRE(dw[i] == T(0));
          REQUIRE(std::signbit(dw[i]) == std::signbit(dwr[i]));
        }
      }
    }
}

TEST_CASE("float kernels stay within 1e-5 of the double reference on rows up to 1e6", "[kernels][accuracy]") {
  for (index_t n : {1000, 100000, 1000000}) {
    INFO("n " << n);
    const auto ad = randv<double>(n, 1, -10, 10), bd = randv<double>(n, 2, -10, 10);
    std::vector<float> af(ad.begin(), ad.end()), bf(bd.begin(), bd.end());
    // The double reference sees the float-rounded inputs, so only the kernel's error counts.
    std::vector<double> ar(af.begin(), af.end()), br(bf.begin(), bf.end());
    std::vector<float> p(static_cast<std::size_t>(n)), lp(static_cast<std::size_t>(n));
    std::vector<double> pr(static_cast<std::size_t>(n)), lpr(static_cast<std::size_t>(n));
    k::softmax(af.data(), p.data(), n);
    k::ref::softmax(ar.data(), pr.data(), n);
    k::log_softmax(af.data(), lp.data(), n);
    k::ref::log_softmax(ar.data(), lpr.data(), n);
    double worst = 0, worst_log = 0;
    for (index_t i = 0; i < n; ++i) {
      worst = std::max(worst, std::abs(p[std::size_t(i)] - pr[std::size_t(i)]) / pr[std::size_t(i)]);
      worst_log = std::max(worst_log, std::abs(lp[std::size_t(i)] - lpr[std::size_t(i)]) / std::max(1e-1, std::abs(lpr[std::size_t(i)])));
    }
    CHECK(worst < 1e-5);
    CHECK(worst_log < 1e-5);
    CHECK(close(k::kl_logits(af.data(), bf.data(), n), k::ref::kl_logits(ar.data(), br.data(), n), 1e-5, 1e-6));
    std::vector<float> pf(p), qf(static_cast<std::size_t>(n));
    k::softmax(bf.data(), qf.data(), n);
    std::vector<double> pd(pf.begin(), pf.end()), qd(qf.begin(), qf.end());
    CHECK(close(k::kl_probs(pf.data(), qf.data(), n, 1e-6f), k::ref::kl_probs(pd.data(), qd.data(), n, 1e-6), 1e-5, 1e-6));
    const float w[3] = {0.25f, -1.5f, 0.75f};
    const float* vs[3] = {af.data(), bf.data(), p.data()};
    std::vector<float> of(static_cast<std::size_t>(n)), dof(af);
    k::weighted_sum<k::default_arch, float>(vs, w, of.data(), n);
    double werr = 0;
    for (index_t i = 0; i < n; i += 7) {
      const double r = 0.25 * ar[std::size_t(i)] - 1.5 * br[std::size_t(i)] + 0.75 * double(p[std::size_t(i)]);
      werr = std::max(werr, std::abs(of[std::size_t(i)] - r) / std::max(1e-1, std::abs(r)));
    }
    CHECK(werr < 1e-5);
    std::vector<float> dw(3, 0.0f);
    std::vector<float> d0(static_cast<std::size_t>(n)), d1(d0), d2(d0);
    float* dvs[3] = {d0.data(), d1.data(), d2.data()};
    k::weighted_sum_backward<k::default_arch, float>(vs, w, dof.data(), dvs, dw, n);
    double dot = 0;  // <dout, v_0> = Σ a_i², exactly positive
    for (index_t i = 0; i < n; ++i) dot += ar[std::size_t(i)] * ar[std::size_t(i)];
    CHECK(close(dw[0], dot, 1e-5));
  }
}

TEST_CASE("fused KL from logits agrees with the two-step form when logits differ by 80 and more", "[kernels][kl]") {
  Rng r(5);
  for (int trial = 0; trial < 200; ++trial) {
    const index_t n = 1 + index_t(r.below(300));
    auto a = randv<double>(n, std::uint64_t(trial), -3, 3), b = randv<double>(n, std::uint64_t(trial + 1000), -3, 3);
    a[r.below(std::uint64_t(n))] += 80 + 40 * r.uniform();
    b[r.below(std::uint64_t(n))] -= 80 + 40 * r.uniform();
    if (trial % 3 == 0) b[r.below(std::uint64_t(n))] += 95;
    const double f = k::kl_logits(a.data(), b.data(), n), two = k::ref::kl_logits(a.data(), b.data(), n);
    INFO("trial " << trial << " n " << n << " fused " << f << " two-step " << two);
    REQUIRE(close(f, two, 1e-6, 1e-9));
  }
}

TEMPLATE_TEST_CASE("kernels on adversarial values follow their documented behaviour", "[kernels][adversarial]", float, double) {
  using T = TestType;
  const T big = std::numeric_limits<T>::max() / 4, tiny = std::numeric_limits<T>::denorm_min();
  const index_t n = 3 * k::lanes<T> + 1;
  auto run = [&](std::vector<T> a) {
    std::vector<T> p(a.size()), r(a.size()), lp(a.size()), lr(a.size());
    k::softmax(a.data(), p.data(), n);
    k::ref::softmax(a.data(), r.data(), n);
    k::log_softmax(a.data(), lp.data(), n);
    k::ref::log_softmax(a.data(), lr.data(), n);
    for (index_t i = 0; i < n; ++i) {
      INFO("i " << i << " a " << a[std::size_t(i)] << " p " << p[std::size_t(i)] << " ref " << r[std::size_t(i)]);
      REQUIRE(close(p[std::size_t(i)], r[std::size_t(i)], 1e-5, 1e-30));
      REQUIRE(close(lp[std::size_t(i)], lr[std::size_t(i)], 1e-5, 1e-5));
    }
    return p;
  };
  for (index_t pos : {index_t(0), n / 2, n - 1}) {  // in the vector body and in the tail
    INFO("special value at " << pos);
    std::vector<T> a(std::size_t(n), T(0.5));
    a[std::size_t(pos)] = big;  // huge: p = 1 there, 0 elsewhere
    auto p = run(a);
    CHECK(p[std::size_t(pos)] == T(1));
    a.assign(std::size_t(n), -big);
    a[std::size_t(pos)] = tiny;  // huge negatives underflow to exactly 0
    p = run(a);
    CHECK(p[std::size_t(pos)] == T(1));
    a.assign(std::size_t(n), T(-0.0));  // −0: uniform
    p = run(a);
    CHECK(p[0] == Approx(1.0 / double(n)));
    a.assign(std::size_t(n), T(1));
    a[std::size_t(pos)] = T(-inf);  // −Inf: probability 0, log-probability −Inf
    p = run(a);
    CHECK(p[std::size_t(pos)] == T(0));
    a[std::size_t(pos)] = T(inf);  // +Inf: NaN row
    p = run(a);
    CHECK(std::isnan(p[0]));
    a[std::size_t(pos)] = T(nan_);  // NaN: NaN row
    p = run(a);
    CHECK(std::isnan(p[std::size_t(n - 1 - pos)]));
  }
  // KL: q = 0 where p > 0 is +Inf; NaN propagates; p = 0 terms vanish.
  std::vector<T> p(std::size_t(n), T(1) / T(n)), q(p);
  q[std::size_t(n - 1)] = 0;
  CHECK(k::kl_probs(p.data(), q.data(), n) == T(inf));
  CHECK(std::isfinite(k::kl_probs(p.data(), q.data(), n, T(1e-6))));
  q = p;
  p[1] = T(nan_);
  CHECK(std::isnan(k::kl_probs(p.data(), q.data(), n)));
  for (index_t len : {n, index_t(200), index_t(70000)}) {  // tail, vector body, and the long-row (online) path
    INFO("KL from logits, length " << len);
    std::vector<T> a(std::size_t(len), T(0)), b(a);
    b[2] = T(-inf);  // q_2 = 0 where p_2 > 0
    CHECK(k::kl_logits(a.data(), b.data(), len) == T(inf));
    a[2] = T(nan_);
    CHECK(std::isnan(k::kl_logits(a.data(), b.data(), len)));
    a[2] = T(inf);
    CHECK(std::isnan(k::kl_logits(a.data(), b.data(), len)));
    std::vector<T> x(std::size_t(len), T(1)), y(x);
    x[5] = T(-inf);
    k::softmax(x.data(), y.data(), len);
    CHECK(y[5] == T(0));
    CHECK(y[0] == Approx(1.0 / double(len - 1)));
    x[std::size_t(len - 1)] = T(nan_);
    k::softmax(x.data(), y.data(), len);
    CHECK(std::isnan(y[0]));
  }
  CHECK(k::kl_logits(p.data(), q.data(), 0) == T(0));
}

namespace {
// Lengths that put a special value in the scalar tail, the vector body (4 and
// more vectors) and past the kernels' 4096-element blocks or cached-row limit.
template <class T>
std::vector<index_t> nonfinite_lengths() {
  return {index_t(3), 8 * k::lanes<T> + 3, index_t(5000), index_t(70000)};
}
template <class T>
bool all_nan(const std::vector<T>& v) {
  return std::all_of(v.begin(), v.end(), [](T x) { return std::isnan(x); });
}
}  // namespace

TEMPLATE_TEST_CASE("every documented non-finite rule holds in the tail, the vector body and long rows", "[kernels][adversarial]", float, double) {
  using T = TestType;
  const T NaN = T(nan_), Inf = T(inf);
  for (index_t n : nonfinite_lengths<T>())
    for (index_t pos : {index_t(0), n / 2, n - 1}) {
      INFO("length " << n << ", special value at " << pos);
      const std::size_t at = std::size_t(pos);
      std::vector<T> a(std::size_t(n), T(0.25)), p(a.size()), lp(a.size());
      // softmax / log_softmax: NaN or +Inf make the whole row NaN.
      for (T bad : {NaN, Inf}) {
        a[at] = bad;
        k::softmax(a.data(), p.data(), n);
        k::log_softmax(a.data(), lp.data(), n);
        CHECK(all_nan(p));
        CHECK(all_nan(lp));
      }
      // −Inf: p = 0 and log p = −Inf there, the rest a finite distribution.
      a[at] = -Inf;
      k::softmax(a.data(), p.data(), n);
      k::log_softmax(a.data(), lp.data(), n);
      CHECK(p[at] == T(0));
      CHECK(lp[at] == -Inf);
      CHECK(p[std::size_t(n - 1 - pos == pos ? (pos + 1) % n : n - 1 - pos)] == Approx(1.0 / double(n - 1)));
      // All −Inf: NaN.
      std::vector<T> m(a.size(), -Inf);
      k::softmax(m.data(), p.data(), n);
      CHECK(all_nan(p));

      // KL from logits: NaN or +Inf in either row gives NaN; b = −Inf where p > 0 gives +Inf.
      std::vector<T> la(a.size(), T(0.5)), lb(a.size(), T(-0.25));
      for (T bad : {NaN, Inf})
        for (int side = 0; side < 2; ++side) {
          std::vector<T> x = la, y = lb;
          (side ? y : x)[at] = bad;
          CHECK(std::isnan(k::kl_logits(x.data(), y.data(), n)));
        }
      lb[at] = -Inf;
      CHECK(k::kl_logits(la.data(), lb.data(), n) == Inf);

      // KL from probabilities.
      std::vector<T> pp(a.size(), T(1) / T(n)), qq(pp);
      for (T eps : {T(0), T(1e-6)}) {
        std::vector<T> x = pp, y = qq;
        x[at] = NaN;  // NaN in p
        CHECK(std::isnan(k::kl_probs(x.data(), y.data(), n, eps)));
        CHECK(std::isnan(k::ref::kl_probs(x.data(), y.data(), n, eps)));
        x = pp;
        y[at] = NaN;  // NaN in q where p > 0
        CHECK(std::isnan(k::kl_probs(x.data(), y.data(), n, eps)));
        y = qq;
        y[at] = T(0);  // q = 0 where p > 0: +Inf without smoothing, finite with it
        const T kl0 = k::kl_probs(x.data(), y.data(), n, eps);
        CHECK((eps == T(0) ? kl0 == Inf : std::isfinite(kl0)));
      }
      std::vector<T> x = pp, y = qq;
      x[at] = T(0);  // p = 0: the term counts 0, whatever q is (ε = 0)
      for (T qv : {T(0), NaN, Inf, T(0.5)}) {
        y[at] = qv;
        const T got = k::kl_probs(x.data(), y.data(), n), ref = k::ref::kl_probs(x.data(), y.data(), n);
        CHECK(std::isfinite(got));
        CHECK(close(got, ref, 1e-4, 1e-6));
      }
    }
}

TEMPLATE_TEST_CASE("aggregation and depthwise propagate NaN and Inf as the arithmetic does", "[kernels][adversarial]", float, double) {
  using T = TestType;
  const T NaN = T(nan_), Inf = T(inf);
  for (index_t L : {index_t(3), 8 * k::lanes<T> + 3})
    for (index_t pos : {index_t(0), L / 2, L - 1})
      for (T bad : {NaN, Inf, -Inf}) {
        INFO("L " << L << " at " << pos << " value " << bad);
        std::vector<std::vector<T>> v = {randv<T>(L, 1), randv<T>(L, 2), randv<T>(L, 3)};
        v[1][std::size_t(pos)] = bad;
        const std::vector<const T*> vp = {v[0].data(), v[1].data(), v[2].data()};
        for (const std::vector<T>& w : {std::vector<T>{0.5, -1, 2}, std::vector<T>{0.5, 0, 2}}) {  // 0·Inf = NaN
          std::vector<T> o(static_cast<std::size_t>(L)), r(static_cast<std::size_t>(L));
          k::weighted_sum<k::default_arch, T>(vp, w, o.data(), L);
          k::ref::weighted_sum<T>(vp, w, r.data(), L);
          for (index_t i = 0; i < L; ++i) REQUIRE(close(o[std::size_t(i)], r[std::size_t(i)], 1e-5, 1e-5));
          CHECK(!std::isfinite(o[std::size_t(pos)]));
          CHECK(std::isnan(o[std::size_t(pos)]) == (std::isnan(bad) || w[1] == T(0)));
        }
      }
  for (index_t W : {index_t(3), 2 * k::lanes<T> + 3})
    for (T bad : {NaN, Inf}) {
      const index_t H = 4, n = H * W;
      auto x = randv<T>(n, 5), w = randv<T>(9, 6);
      x[std::size_t(n / 2)] = bad;
      std::vector<T> y(static_cast<std::size_t>(n)), yr(static_cast<std::size_t>(n));
      k::depthwise_conv3x3(x.data(), w.data(), y.data(), 1, 1, H, W);
      k::ref::depthwise_conv3x3(x.data(), w.data(), yr.data(), 1, 1, H, W);
      index_t nonfinite = 0;
      for (index_t i = 0; i < n; ++i) {
        REQUIRE(close(y[std::size_t(i)], yr[std::size_t(i)], 1e-5, 1e-5));
        nonfinite += !std::isfinite(y[std::size_t(i)]);
      }
      CHECK(nonfinite >= 4);  // the value reaches its 3x3 neighbourhood (>= 4 cells even at a corner)
      // A non-finite weight: every output, the zero-padded borders included, and the backward.
      x = randv<T>(n, 5);
      for (index_t tap : {index_t(0), index_t(4), index_t(8)}) {
        auto wb = w;
        wb[std::size_t(tap)] = bad;
        k::depthwise_conv3x3(x.data(), wb.data(), y.data(), 1, 1, H, W);
        k::ref::depthwise_conv3x3(x.data(), wb.data(), yr.data(), 1, 1, H, W);
        for (index_t i = 0; i < n; ++i) REQUIRE(close(y[std::size_t(i)], yr[std::size_t(i)], 1e-5, 1e-5));
        CHECK(std::isnan(y[0]) == (std::isnan(bad) || tap == 0));  // corner: tap 0 reads the padding
        auto dy = randv<T>(n, 7);
        dy[std::size_t(n - 1)] = bad;
        std::vector<T> dx(static_cast<std::size_t>(n), T(0)), dxr(dx), dw(9, T(0)), dwr(dw);
        k::depthwise_conv3x3_backward(x.data(), wb.data(), dy.data(), dx.data(), dw.data(), 1, 1, H, W);
        k::ref::depthwise_conv3x3_backward(x.data(), wb.data(), dy.data(), dxr.data(), dwr.data(), 1, 1, H, W);
        for (index_t i = 0; i < n; ++i) REQUIRE(close(dx[std::size_t(i)], dxr[std::size_t(i)], 1e-5, 1e-5));
        for (index_t i = 0; i < 9; ++i) REQUIRE(close(dw[std::size_t(i)], dwr[std::size_t(i)], 1e-5, 1e-5 * double(n)));
      }
    }
}

TEMPLATE_TEST_CASE("kernels match the golden files", "[kernels][golden]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, double> ? 1e-10 : 1e-5;
  for (const char* name : {"softmax_rows", "log_softmax_rows", "softmax_rows_n1"}) {
    const golden::Case c = golden::load(name);
    INFO(name);
    const auto a = c.t("logits").as<T>(), dy = c.t("dy").as<T>();
    Tensor<T> out(a.shape());
    if (c.has("p")) {
      k::softmax_rows(a.cview(), out.view());
      golden::check_close<T>("p", out.cview(), c.t("p"), tol);
      Tensor<T> da(a.shape(), T(0.5));
      const Tensor<T> da0 = Tensor<T>::copy_of(da.cview());
      for (index_t r = 0; r < a.dim(0); ++r)
        k::softmax_backward(out.data() + r * a.dim(1), dy.data() + r * a.dim(1), da.data() + r * a.dim(1), a.dim(1));
      golden::check_added<T>("dlogits", da.cview(), da0, c.t(c.has("dlogits") ? "dlogits" : "dlogits_softmax"), tol);
    }
    if (c.has("logp")) {
      k::log_softmax_rows(a.cview(), out.view());
      golden::check_close<T>("logp", out.cview(), c.t("logp"), tol);
      Tensor<T> da(a.shape(), T(0.5));
      const Tensor<T> da0 = Tensor<T>::copy_of(da.cview());
      for (index_t r = 0; r < a.dim(0); ++r)
        k::log_softmax_backward(out.data() + r * a.dim(1), dy.data() + r * a.dim(1), da.data() + r * a.dim(1), a.dim(1));
      golden::check_added<T>("dlogits", da.cview(), da0, c.t(c.has("dlogits") ? "dlogits" : "dlogits_log_softmax"), tol);
    }
  }
  for (const char* name : {"kl_probs", "kl_probs_zeros"}) {
    const golden::Case c = golden::load(name);
    INFO(name);
    const auto p = c.t("p").as<T>(), q = c.t("q").as<T>();
    Tensor<T> kl(Shape{p.dim(0)});
    k::kl_probs_rows(p.cview(), q.cview(), kl.view());
    golden::check_close<T>("kl_eps0", kl.cview(), c.t("kl_eps0"), tol);
    k::kl_probs_rows(p.cview(), q.cview(), kl.view(), T(c.p("eps")));
    golden::check_close<T>("kl_eps", kl.cview(), c.t("kl_eps"), tol);
  }
  {
    const golden::Case c = golden::load("kl_logits");
    const auto a = c.t("a").as<T>(), b = c.t("b").as<T>();
    Tensor<T> kl(Shape{a.dim(0)});
    k::kl_logits_rows(a.cview(), b.cview(), kl.view());
    // Rows 1 and 6 are (near) zero by construction: an absolute tolerance (README).
    const auto& ref = c.t("kl").v;
    const double lse_scale = std::is_same_v<T, double> ? 1e-12 : 2e-5;
    for (index_t r = 0; r < a.dim(0); ++r) {
      INFO("row " << r << " got " << kl[r] << " ref " << ref[std::size_t(r)]);
      CHECK(close(kl[r], ref[std::size_t(r)], tol, lse_scale * 1000));
    }
  }
  {
    const golden::Case c = golden::load("weighted_aggregation");
    const index_t t = c.i("t"), L = c.i("L");
    const auto v = c.t("v").as<T>(), w = c.t("w").as<T>(), dout = c.t("do").as<T>();
    std::vector<const T*> vp;
    for (index_t s = 0; s < t; ++s) vp.push_back(v.data() + s * L);
    Tensor<T> o(Shape{L});
    k::weighted_sum<k::default_arch, T>(vp, w.span(), o.data(), L);
    golden::check_close<T>("o", o.cview(), c.t("o"), tol);
    Tensor<T> dv(v.shape(), T(0.25)), dw(w.shape(), T(-0.5));
    const Tensor<T> dv0 = Tensor<T>::copy_of(dv.cview()), dw0 = Tensor<T>::copy_of(dw.cview());
    std::vector<T*> dvp;
    for (index_t s = 0; s < t; ++s) dvp.push_back(dv.data() + s * L);
    k::weighted_sum_backward<k::default_arch, T>(vp, w.span(), dout.data(), dvp, dw.span(), L);
    golden::check_added<T>("dv", dv.cview(), dv0, c.t("dv"), tol);
    golden::check_added<T>("dw", dw.cview(), dw0, c.t("dw"), tol);
  }
  {
    const golden::Case c = golden::load("weighted_aggregation_batched");
    const index_t t = c.i("t"), R = c.i("B") * c.i("G"), L = c.i("L");
    const auto V = c.t("V").as<T>(), A = c.t("A").as<T>(), dO = c.t("dO").as<T>();
    std::vector<ConstView<T>> vs;
    for (index_t s = 0; s < t; ++s) vs.emplace_back(V.data() + s * R * L, Shape{R, L});
    Tensor<T> O(Shape{R, L});
    const ConstView<T> A2(A.data(), Shape{R, t});
    k::aggregate<k::default_arch, T>(vs, A2, O.view());
    golden::check_close<T>("O", ConstView<T>(O.data(), c.t("O").lshape()), c.t("O"), tol);
    Tensor<T> dV(V.shape(), T(1)), dA(A.shape(), T(2));
    const Tensor<T> dV0 = Tensor<T>::copy_of(dV.cview()), dA0 = Tensor<T>::copy_of(dA.cview());
    std::vector<View<T>> dvs;
    for (index_t s = 0; s < t; ++s) dvs.emplace_back(dV.data() + s * R * L, Shape{R, L});
    k::aggregate_backward<k::default_arch, T>(vs, A2, ConstView<T>(dO.data(), Shape{R, L}), dvs, View<T>(dA.data(), Shape{R, t}));
    golden::check_added<T>("dV", dV.cview(), dV0, c.t("dV"), tol);
    golden::check_added<T>("dA", dA.cview(), dA0, c.t("dA"), tol);
  }
  {
    const golden::Case c = golden::load("depthwise_conv3x3");
    const auto x = c.t("x").as<T>(), w = c.t("weight").as<T>(), dy = c.t("dy").as<T>();
    Tensor<T> y(x.shape());
    k::depthwise_conv3x3(x.cview(), w.cview(), y.view());
    golden::check_close<T>("y", y.cview(), c.t("y"), tol);
    Tensor<T> dx(x.shape(), T(0.5)), dw(w.shape(), T(0.5));
    const Tensor<T> dx0 = Tensor<T>::copy_of(dx.cview()), dw0 = Tensor<T>::copy_of(dw.cview());
    k::depthwise_conv3x3_backward(x.cview(), w.cview(), dy.cview(), dx.view(), dw.view());
    golden::check_added<T>("dx", dx.cview(), dx0, c.t("dx"), tol);
    golden::check_added<T>("dweight", dw.cview(), dw0, c.t("dweight"), tol);
  }
}

TEST_CASE("seeded randomized properties of the kernels", "[kernels][property]") {
  Rng r(20261124);
  for (int trial = 0; trial < 300; ++trial) {
    const index_t n = 1 + index_t(r.below(200));
    const double scale = std::pow(10.0, r.uniform(-3, 3));
    auto a = randv<float>(n, r(), -scale, scale), b = randv<float>(n, r(), -scale, scale);
    std::vector<float> p(static_cast<std::size_t>(n)), q(static_cast<std::size_t>(n));
    k::softmax(a.data(), p.data(), n);
    k::softmax(b.data(), q.data(), n);
    double s = 0;
    for (float v : p) {
      REQUIRE(v >= 0.0f);
      s += v;
    }
    INFO("trial " << trial << " n " << n << " scale " << scale);
    REQUIRE(s == Approx(1.0).epsilon(1e-5));  // a probability vector
    REQUIRE(k::kl_logits(a.data(), b.data(), n) >= -1e-5f * float(n));  // Gibbs' inequality (up to rounding)
    REQUIRE(std::abs(k::kl_logits(a.data(), a.data(), n)) <= 1e-5f);     // KL(p‖p) = 0
    std::vector<float> shifted(a);
    for (float& v : shifted) v += 3.0f;
    REQUIRE(k::kl_logits(shifted.data(), a.data(), n) == Approx(0).margin(1e-4));  // shift invariance
    REQUIRE(k::kl_probs(p.data(), q.data(), n, 1e-6f) >= -1e-5f);
  }
}

TEST_CASE("kernel entry points reject mismatched views", "[kernels][errors]") {
  Tensor<float> a(Shape{2, 5}), b(Shape{2, 4}), out(Shape{3});
  CHECK_THROWS_WITH(k::softmax_rows(a.cview(), b.view()), Catch::Contains("softmax_rows: p shape"));
  CHECK_THROWS_AS(k::kl_logits_rows(a.cview(), a.cview(), out.view()), shape_error);
  CHECK_THROWS_WITH(k::kl_probs_rows(a.cview(), a.cview(), View<float>(out.data(), Shape{2}), -1.0f), Catch::Contains("eps"));
  Tensor<float> x(Shape{1, 2, 3, 3}), w(Shape{3, 1, 3, 3}), y(Shape{1, 2, 3, 3});
  CHECK_THROWS_WITH(k::depthwise_conv3x3(x.cview(), w.cview(), y.view()), Catch::Contains("weight shape: expected [2, 1, 3, 3]"));
  std::vector<ConstView<float>> vs{a.cview()};
  Tensor<float> A(Shape{2, 2});
  CHECK_THROWS_WITH((k::aggregate<k::default_arch, float>(vs, A.cview(), a.view())), Catch::Contains("aggregate: A shape"));
}

namespace {
/// |a − b| ≤ tol·(1 + scale), per element.
template <class T>
void require_near(const std::vector<T>& a, const std::vector<T>& b, double tol, const char* what) {
  INFO(what);
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(std::abs(double(a[i]) - double(b[i])) <= tol * (1 + std::abs(double(b[i]))));
}
template <class T>
std::vector<T> with_nonpositive(std::vector<T> y) {  // exact zeros and negatives for the ReLU mask
  for (std::size_t i = 0; i < y.size(); i += 3) y[i] = i % 2 ? T(0) : -y[i] * y[i];
  return y;
}
}  // namespace

TEMPLATE_TEST_CASE("batchnorm kernels equal the reference at every tail length and offset", "[kernels][batchnorm]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 4e-6 : 1e-13;
  std::vector<index_t> lengths;
  for (index_t n = 1; n <= 67; ++n) lengths.push_back(n);
  for (index_t n : {k::bn_block - 1, k::bn_block + 17, 3 * k::bn_block + 5}) lengths.push_back(n);
  const k::BnGrad<T> cf{.mean = T(0.3), .k = T(1.7), .c0 = T(-0.2), .c1 = T(0.45)};
  for (index_t n : lengths)
    for (index_t off : {0, 1}) {
      INFO("n " << n << " offset " << off);
      const auto x = randv<T>(n + off, std::uint64_t(n), -3, 5), r = randv<T>(n + off, 7), dy = randv<T>(n + off, 8);
      const auto y = with_nonpositive(randv<T>(n + off, 9));
      double s[2], t[2];
      k::bn_sums(x.data() + off, n, T(0.7), s);
      k::ref::bn_sums(x.data() + off, n, T(0.7), t);
      REQUIRE(s[0] == Approx(t[0]).epsilon(tol).margin(tol * double(n)));
      REQUIRE(s[1] == Approx(t[1]).epsilon(tol));
      for (const T* yp : {static_cast<const T*>(nullptr), y.data() + off}) {
        k::bn_grad_sums(x.data() + off, yp, dy.data() + off, n, T(0.3), T(1.3), s);
        k::ref::bn_grad_sums(x.data() + off, yp, dy.data() + off, n, T(0.3), T(1.3), t);
        REQUIRE(s[0] == Approx(t[0]).margin(tol * double(n)));
        REQUIRE(s[1] == Approx(t[1]).margin(tol * 8 * double(n)));
        for (bool with_r : {false, true}) {
          std::vector<T> dx = randv<T>(n + off, 10), dx2 = dx, dr = randv<T>(n + off, 11), dr2 = dr;
          k::bn_backward(x.data() + off, yp, dy.data() + off, dx.data() + off, with_r ? dr.data() + off : nullptr, n, cf);
          k::ref::bn_backward(x.data() + off, yp, dy.data() + off, dx2.data() + off, with_r ? dr2.data() + off : nullptr, n, cf);
          require_near(dx, dx2, tol, "dx");
          require_near(dr, dr2, tol, "dr");
        }
      }
      for (bool relu : {false, true})
        for (const T* rp : {static_cast<const T*>(nullptr), r.data() + off}) {
          std::vector<T> a(x.size()), b(x.size());
          k::bn_apply(x.data() + off, rp, a.data() + off, n, T(0.9), T(1.4), T(-0.3), relu);
          k::ref::bn_apply(x.data() + off, rp, b.data() + off, n, T(0.9), T(1.4), T(-0.3), relu);
          require_near(a, b, tol, "y");
        }
    }
}

TEMPLATE_TEST_CASE("batchnorm kernels propagate NaN and Inf as documented, in the body and the tail", "[kernels][batchnorm][adversarial]", float, double) {
  using T = TestType;
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf_t = std::numeric_limits<T>::infinity();
  for (index_t n : {index_t(5), index_t(67), k::bn_block + 3})
    for (index_t at : {index_t(0), n - 1}) {
      INFO("n " << n << " special value at " << at);
      for (T v : {nan, inf_t, -inf_t}) {
        auto x = randv<T>(n, 1);
        x[std::size_t(at)] = v;
        double s[2];
        k::bn_sums(x.data(), n, T(0), s);
        REQUIRE(!std::isfinite(s[0]));  // NaN, or ±Inf: the statistics are not finite
        REQUIRE(!std::isfinite(s[1]));
        std::vector<T> y(x.size());
        k::bn_apply(x.data(), static_cast<const T*>(nullptr), y.data(), n, T(0), T(1), T(0), true);
        if (std::isnan(v)) REQUIRE(std::isnan(y[std::size_t(at)]));  // the ReLU passes NaN
        else REQUIRE(y[std::size_t(at)] == (v > 0 ? v : T(0)));
        k::bn_apply(x.data(), static_cast<const T*>(nullptr), y.data(), n, T(0), T(-1), T(0), false);
        if (std::isnan(v)) REQUIRE(std::isnan(y[std::size_t(at)]));
        else REQUIRE(y[std::size_t(at)] == -v);
      }
      // The mask [y > 0] drops a NaN output's gradient; dr gets the masked dy.
      auto yv = randv<T>(n, 2, 0.5, 1), dy = randv<T>(n, 3), x = randv<T>(n, 4);
      yv[std::size_t(at)] = nan;
      std::vector<T> dx(x.size(), T(0)), dr(x.size(), T(0));
      k::bn_backward(x.data(), yv.data(), dy.data(), dx.data(), dr.data(), n, k::BnGrad<T>{T(0), T(2), T(0), T(0)});
      REQUIRE(dx[std::size_t(at)] == T(0));
      REQUIRE(dr[std::size_t(at)] == T(0));
      REQUIRE(dr[std::size_t((at + 1) % n)] == dy[std::size_t((at + 1) % n)]);
    }
}

namespace {
/// NaN where the reference is NaN, ±Inf where it is, else |a − b| ≤ tol·(1 + |b|).
template <class T>
bool bn_close(double a, double b, double tol) {
  if (std::isnan(b)) return std::isnan(a);
  if (std::isinf(b)) return a == b;
  return std::abs(a - b) <= tol * (1 + std::abs(b));
}
/// The plane-run kernels against their references (and the references
/// against the single-plane ones) on one run of P planes of n values.
template <class T>
void check_bn_planes(const std::vector<T>& x, const std::vector<T>& r, const std::vector<T>& dy,
                     const std::vector<T>& y, k::BnRun d, index_t off, double tol) {
  const std::size_t N = std::size_t(d.P * d.n + off), C = std::size_t(d.C);
  std::vector<T> K(C), m(C), a(C), b(C), mean(C), inv(C);
  std::vector<k::BnGrad<T>> cf(C);
  for (std::size_t c = 0; c < C; ++c) {
    K[c] = x[std::size_t(off) + c % std::size_t(d.n)];
    m[c] = T(0.9) + T(c) / 8, a[c] = T(1.4) - T(c) / 4, b[c] = T(-0.3) * T(c);
    mean[c] = T(0.3) - T(c) / 16, inv[c] = T(1.3) + T(c) / 8;
    cf[c] = {.mean = mean[c], .k = T(1.7) - T(c) / 8, .c0 = T(-0.2) + T(c) / 32, .c1 = T(0.45)};
  }
  const std::size_t S = std::size_t(2 * d.P);
  std::vector<double> s(S), t(S), u(S);
  k::bn_sums_planes(x.data() + off, d, K.data(), s.data());
  k::ref::bn_sums_planes(x.data() + off, d, K.data(), t.data());
  for (index_t q = 0, c = d.c0 % d.C; q < d.P; ++q, c = (c + 1) % d.C)
    k::ref::bn_sums(x.data() + off + q * d.n, d.n, K[std::size_t(c)], u.data() + 2 * q);
  for (std::size_t i = 0; i < S; ++i) {
    INFO("sums, plane " << i / 2 << " term " << i % 2 << ": " << s[i] << " vs " << t[i]);
    REQUIRE((t[i] == u[i] || (std::isnan(t[i]) && std::isnan(u[i]))));
    REQUIRE(bn_close<T>(s[i], t[i], tol * double(d.n)));
  }
  for (const T* yp : {static_cast<const T*>(nullptr), y.data() + off}) {
    k::bn_grad_sums_planes(x.data() + off, yp, dy.data() + off, d, mean.data(), inv.data(), s.data());
    k::ref::bn_grad_sums_planes(x.data() + off, yp, dy.data() + off, d, mean.data(), inv.data(), t.data());
    for (std::size_t i = 0; i < S; ++i) {
      INFO("grad sums, mask " << (yp != nullptr) << ", plane " << i / 2 << " term " << i % 2 << ": " << s[i] << " vs " << t[i]);
      REQUIRE(bn_close<T>(s[i], t[i], tol * 8 * double(d.n)));
    }
    for (bool with_r : {false, true}) {
      std::vector<T> dx = randv<T>(index_t(N), 10), dx2 = dx, dr = randv<T>(index_t(N), 11), dr2 = dr;
      k::bn_backward_planes(x.data() + off, yp, dy.data() + off, dx.data() + off, with_r ? dr.data() + off : nullptr, d, cf.data());
      k::ref::bn_backward_planes(x.data() + off, yp, dy.data() + off, dx2.data() + off, with_r ? dr2.data() + off : nullptr, d,
                                 cf.data());
      for (std::size_t i = 0; i < N; ++i) {
        INFO("backward, mask " << (yp != nullptr) << " dr " << with_r << ", element " << i);
        REQUIRE(bn_close<T>(dx[i], dx2[i], tol));
        REQUIRE(bn_close<T>(dr[i], dr2[i], tol));
      }
    }
  }
  for (bool relu : {false, true})
    for (const T* rp : {static_cast<const T*>(nullptr), r.data() + off}) {
      std::vector<T> ya(N, T(7)), yb(N, T(7)), yc(x);  // yc: in place (y = x)
      k::bn_apply_planes(x.data() + off, rp, ya.data() + off, d, m.data(), a.data(), b.data(), relu);
      k::ref::bn_apply_planes(x.data() + off, rp, yb.data() + off, d, m.data(), a.data(), b.data(), relu);
      k::bn_apply_planes(yc.data() + off, rp, yc.data() + off, d, m.data(), a.data(), b.data(), relu);
      for (std::size_t i = 0; i < N; ++i) {
        INFO("apply, relu " << relu << " r " << (rp != nullptr) << ", element " << i);
        REQUIRE(bn_close<T>(ya[i], yb[i], tol));
        if (i >= std::size_t(off)) REQUIRE((ya[i] == yc[i] || (std::isnan(ya[i]) && std::isnan(yc[i]))));
        if (relu) REQUIRE(!(ya[i] < T(0)));
      }
    }
}
}  // namespace

TEMPLATE_TEST_CASE("batchnorm plane-run kernels equal the reference at every plane size, count and channel phase",
                   "[kernels][batchnorm]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 4e-6 : 1e-13;
  std::vector<index_t> sizes;
  for (index_t n = 1; n <= 67; ++n) sizes.push_back(n);
  for (index_t n : {index_t(196), index_t(784), k::bn_block - 1, k::bn_block + 17}) sizes.push_back(n);
  for (index_t n : sizes)
    for (index_t P : {1, 2, 3, 7, 8, 17})
      for (index_t C : {1, 3})
        for (index_t off : {0, 1}) {
          if (n > 784 && (P > 2 || C > 1)) continue;
          const index_t N = P * n + off;
          const auto x = randv<T>(N, std::uint64_t(n * 8 + P), -3, 5), r = randv<T>(N, 7), dy = randv<T>(N, 8);
          const auto y = with_nonpositive(randv<T>(N, 9));
          for (index_t c0 : {index_t(0), C - 1, C + 1}) {
            INFO("n " << n << " planes " << P << " channels " << C << " first channel " << c0 << " offset " << off);
            check_bn_planes(x, r, dy, y, k::BnRun{P, n, C, c0}, off, tol);
          }
        }
}

TEMPLATE_TEST_CASE("batchnorm plane-run kernels on adversarial values: NaN, Inf, -0 and large offsets",
                   "[kernels][batchnorm][adversarial]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 4e-6 : 1e-13;
  const T nan = std::numeric_limits<T>::quiet_NaN(), inf_t = std::numeric_limits<T>::infinity();
  for (index_t n : {index_t(1), index_t(5), index_t(16), index_t(17), index_t(49), index_t(67), k::bn_block + 3}) {
    const index_t P = 3;
    // One special value in the middle plane: at its start, its end and in the overlapped last vector.
    for (index_t at : {index_t(0), n / 2, n - 1, std::max<index_t>(0, n - 9)})
      for (T v : {nan, inf_t, -inf_t, T(-0.0)}) {
        INFO("n " << n << " special value " << v << " at " << at);
        auto x = randv<T>(P * n, 1), y = with_nonpositive(randv<T>(P * n, 2)), dy = randv<T>(P * n, 3), r = randv<T>(P * n, 4);
        x[std::size_t(n + at)] = v;
        y[std::size_t(n + at)] = v;
        dy[std::size_t(n + at)] = v;
        check_bn_planes(x, r, dy, y, k::BnRun{P, n, 2, 1}, 0, tol);
        // The other planes' statistics stay finite (nothing is read across planes).
        std::vector<double> s(std::size_t(2 * P));
        const T K[2] = {T(0.5), T(-0.5)};
        k::bn_sums_planes(x.data(), k::BnRun{P, n, 2, 0}, K, s.data());
        REQUIRE(std::isfinite(s[0]));
        REQUIRE(std::isfinite(s[1]));
        REQUIRE(std::isfinite(s[4]));
        REQUIRE(std::isfinite(s[5]));
        if (v != 0) REQUIRE(!std::isfinite(s[2]));
        if (v != 0) REQUIRE(!std::isfinite(s[3]));
      }
    // Large offsets: 1000 + U(-1, 1) shifted by the channel's first value, as BatchNorm2d does.
    auto x = randv<T>(P * n, 5, 999, 1001);
    const auto r = randv<T>(P * n, 6), dy = randv<T>(P * n, 7), y = with_nonpositive(randv<T>(P * n, 8));
    INFO("large offsets, n " << n);
    check_bn_planes(x, r, dy, y, k::BnRun{P, n, 1, 0}, 0, tol);
  }
}

TEST_CASE("vlog is within 2 ulp of the correctly rounded log over all positive floats", "[kernels][log]") {
  std::vector<float> x;
  for (std::uint32_t b = 1; b < 0x7f800000u; b += 61) {  // every 61st positive float, subnormals included
    float v;
    std::memcpy(&v, &b, sizeof v);
    x.push_back(v);
  }
  for (std::uint32_t b = 0x3f000000u; b <= 0x40000000u; ++b) {  // [0.5, 2] whole: the reduction's edges, log ≈ 0
    float v;
    std::memcpy(&v, &b, sizeof v);
    x.push_back(v);
  }
  for (float v : {std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(),
                  1.41421356f, 1.41421366f, 0.70710677f})
    x.push_back(v);
  std::vector<float> y(x.size());
  k::vlog(x.data(), y.data(), index_t(x.size()));
  std::int64_t worst = 0;
  float at = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float ref = float(std::log(double(x[i])));
    const std::int64_t u = ulps(y[i], ref);
    if (u > worst) worst = u, at = x[i];
  }
  INFO("worst " << worst << " ulp at x = " << at);
  CHECK(worst <= 2);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> s(std::size_t(k::lanes<float>) + 5, 1.0f), l(s.size());
  for (std::size_t off : {std::size_t(0), s.size() - 5}) {  // the vector body and the scalar tail
    std::fill(s.begin(), s.end(), 1.0f);
    s[off] = 0.0f, s[off + 1] = -0.0f, s[off + 2] = inf, s[off + 3] = nan, s[off + 4] = -1.0f;
    k::vlog(s.data(), l.data(), index_t(s.size()));
    CHECK(l[off] == -inf);
    CHECK(l[off + 1] == -inf);
    CHECK(l[off + 2] == inf);
    CHECK(std::isnan(l[off + 3]));
    CHECK(std::isnan(l[off + 4]));
    CHECK(l[(off + 5) % s.size()] == 0.0f);
  }
}

TEST_CASE("kl_probs (one log of p/q) stays within 2e-6 relative of the double reference, also where p/q leaves the float range",
          "[kernels][kl][accuracy]") {
  // Tolerance: the float terms are each within a few ulp; the sum of n = 4096
  // positive and negative terms is compared relative to Σ|term| (2e-6).
  for (int mode = 0; mode < 3; ++mode) {
    INFO("mode " << mode);
    const index_t n = 4096;
    auto p = randv<float>(n, 31, 1e-4, 1e-3), q = randv<float>(n, 32, 1e-4, 1e-3);
    if (mode == 1)  // ratios beyond the float range in some lanes: the two-log fallback
      for (index_t i = 0; i < n; i += 37) q[std::size_t(i)] = 1e-44f, p[std::size_t(i + 1)] = 1e-44f;
    if (mode == 2)  // zeros in p (terms 0) and in q (+Inf)
      for (index_t i = 0; i < n; i += 29) p[std::size_t(i)] = 0.0f;
    std::vector<double> pd(p.begin(), p.end()), qd(q.begin(), q.end());
    for (float eps : {0.0f, 1e-6f}) {
      double scale = 0;
      for (index_t i = 0; i < n; ++i) {
        const double a = pd[std::size_t(i)] + double(eps), b = qd[std::size_t(i)] + double(eps);
        if (a > 0) scale += std::abs(a * (std::log(a) - std::log(b)));
      }
      const double ref = k::ref::kl_probs(pd.data(), qd.data(), n, double(eps));
      const float got = k::kl_probs(p.data(), q.data(), n, eps);
      INFO("eps " << eps << " kl " << got << " reference " << ref);
      CHECK(std::abs(double(got) - ref) <= 2e-6 * scale / (1 + double(n) * double(eps)));
    }
  }
}

namespace {
/// Lane-interleaved SPD systems (spd_lanes.hpp layout): lane l is G Gᵀ + 0.1 I with
/// G random n×(n+2), scaled by 10^(l mod 7 − 3); b random.
void spd_systems(index_t n, index_t L, std::uint64_t seed, std::vector<double>& A, std::vector<double>& b) {
  Rng rng(seed);
  A.assign(std::size_t(n * n * L), -99.0);  // the upper triangle must not be read
  b.resize(std::size_t(n * L));
  for (index_t l = 0; l < L; ++l) {
    Eigen::MatrixXd G(n, n + 2);
    for (index_t i = 0; i < G.size(); ++i) G.data()[i] = rng.normal();
    const Eigen::MatrixXd K = std::pow(10.0, double(l % 7) - 3) * (G * G.transpose() + 0.1 * Eigen::MatrixXd::Identity(n, n));
    for (index_t r = 0; r < n; ++r) {
      b[std::size_t(r * L + l)] = rng.uniform(-1, 1);
      for (index_t c = 0; c <= r; ++c) A[std::size_t((r * n + c) * L + l)] = K(r, c);
    }
  }
}
}  // namespace

TEST_CASE("spd_solve_lanes equals its scalar twin and Eigen's LLT for every size, and flags bad lanes", "[kernels][spd]") {
  const index_t L = k::lanes<double>;
  for (index_t n = 1; n <= 12; ++n) {
    INFO("n " << n);
    std::vector<double> A, b;
    spd_systems(n, L, std::uint64_t(40 + n), A, b);
    std::vector<double> Ar = A, br = b;
    std::vector<std::uint8_t> ok(std::size_t(L), 7), okr(std::size_t(L), 7);
    k::spd_solve_lanes(A.data(), b.data(), n, ok.data());
    k::ref::spd_solve_lanes(Ar.data(), br.data(), n, L, okr.data());
    for (index_t l = 0; l < L; ++l) {
      CHECK(int(ok[std::size_t(l)]) == 1);
      CHECK(int(okr[std::size_t(l)]) == 1);
      Eigen::MatrixXd K(n, n);
      Eigen::VectorXd rhs(n);
      std::vector<double> A0, b0;
      spd_systems(n, L, std::uint64_t(40 + n), A0, b0);
      for (index_t r = 0; r < n; ++r) {
        rhs(r) = b0[std::size_t(r * L + l)];
        for (index_t c = 0; c <= r; ++c) K(r, c) = K(c, r) = A0[std::size_t((r * n + c) * L + l)];
      }
      const Eigen::LLT<Eigen::MatrixXd> llt(K);
      REQUIRE(llt.info() == Eigen::Success);
      const Eigen::VectorXd x = llt.solve(rhs);
      const Eigen::MatrixXd Lf = llt.matrixL();
      for (index_t r = 0; r < n; ++r) {
        const double tol = 1e-9 * x.cwiseAbs().maxCoeff();
        CHECK(std::abs(b[std::size_t(r * L + l)] - x(r)) <= tol);
        CHECK(std::abs(br[std::size_t(r * L + l)] - x(r)) <= tol);
        for (index_t c = 0; c < r; ++c)
          CHECK(std::abs(A[std::size_t((r * n + c) * L + l)] - Lf(r, c)) <= 1e-12 * Lf.cwiseAbs().maxCoeff());
        CHECK(A[std::size_t((r * n + r) * L + l)] == Approx(1 / Lf(r, r)).epsilon(1e-12));  // the reciprocal pivot
        for (index_t c = r + 1; c < n; ++c) CHECK(A[std::size_t((r * n + c) * L + l)] == -99.0);  // untouched
      }
    }
  }
  // A singular lane, an indefinite one and a NaN one are flagged; the other lanes are unaffected.
  const index_t n = 5;
  std::vector<double> A, b;
  spd_systems(n, L, 77, A, b);
  const std::vector<double> A0 = A, b0 = b;
  for (index_t r = 0; r < n; ++r)
    for (index_t c = 0; c <= r; ++c) A[std::size_t((r * n + c) * L + 0)] = 1.0;  // rank one
  A[std::size_t((2 * n + 2) * L + 1 % L)] = -5.0;                                 // a negative diagonal entry
  A[std::size_t((3 * n + 1) * L + (L - 1))] = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> Ar = A, br = b;
  std::vector<std::uint8_t> ok(static_cast<std::size_t>(L)), okr(static_cast<std::size_t>(L));
  k::spd_solve_lanes(A.data(), b.data(), n, ok.data());
  k::ref::spd_solve_lanes(Ar.data(), br.data(), n, L, okr.data());
  CHECK(int(ok[0]) == 0);
  CHECK(int(ok[std::size_t(1 % L)]) == 0);
  CHECK(int(ok[std::size_t(L - 1)]) == 0);
  CHECK(int(okr[0]) == 0);
  CHECK(int(okr[std::size_t(L - 1)]) == 0);
  for (index_t l = 2; l + 1 < L; ++l) {  // lanes 2 … L−2 (on 8 lanes): untouched systems, same solutions as alone
    std::vector<double> A1 = A0, b1 = b0;
    std::vector<std::uint8_t> ok1(static_cast<std::size_t>(L));
    k::spd_solve_lanes(A1.data(), b1.data(), n, ok1.data());
    CHECK(int(ok[std::size_t(l)]) == 1);
    for (index_t r = 0; r < n; ++r) CHECK(b[std::size_t(r * L + l)] == b1[std::size_t(r * L + l)]);
  }
}

TEMPLATE_TEST_CASE("residual_dots equals its reference for every width and row count, and propagates NaN and Inf",
                   "[kernels][residual][adversarial]", float, double) {
  using T = TestType;
  const T tinf = std::numeric_limits<T>::infinity(), tnan = std::numeric_limits<T>::quiet_NaN();
  const double eps = std::numeric_limits<T>::epsilon();
  // Rows 0 … 4 take the fixed-count bodies, 5, 9 and 32 the general one.
  for (std::size_t n : {0, 1, 2, 3, 4, 5, 9, 32})
    for (index_t w = 0; w <= 4 * index_t(k::lanes<T>) + 3; ++w)
      for (bool store : {false, true}) {
        INFO("rows " << n << ", width " << w << ", store " << store);
        const auto x = randv<T>(w, 7 + std::uint64_t(w)), fx = randv<T>(w, 900 + std::uint64_t(w));
        std::vector<std::vector<T>> rows;
        std::vector<const T*> ptr;
        for (std::size_t j = 0; j < n; ++j) rows.push_back(randv<T>(w, 5000 + 31 * j + std::uint64_t(w)));
        for (const auto& r : rows) ptr.push_back(r.data());
        std::vector<T> f(std::size_t(w) + 1, T(9)), g(f), fr(f), gr(f);
        std::vector<double> s(n + 2, -1), sr(n + 2, -1);
        k::residual_dots(x.data(), fx.data(), w, ptr.data(), n, store ? f.data() : nullptr, store ? g.data() : nullptr, s.data());
        k::ref::residual_dots(x.data(), fx.data(), w, ptr.data(), n, store ? fr.data() : nullptr, store ? gr.data() : nullptr, sr.data());
        CHECK(f == fr);  // stored exactly (or left alone), nothing written past w
        CHECK(g == gr);
        // Sums of w terms of magnitude ≤ 64 in T: |error| ≤ w·eps·Σ|terms| ≤ w·eps·64·w.
        for (std::size_t j = 0; j < n + 2; ++j) CHECK(std::abs(s[j] - sr[j]) <= 64.0 * double(w * w + 1) * eps);
      }
  // Special values, in the vector body (element 0) and in the scalar tail (the last element).
  const index_t w = 2 * index_t(k::lanes<T>) + 3;
  for (index_t at : {index_t(0), w - 1}) {
    INFO("special value at " << at);
    std::vector<T> x(std::size_t(w), T(0.25)), fx(x), row(x);
    const T* rows[1] = {row.data()};
    double s[3];
    x[std::size_t(at)] = tnan;  // g = NaN there: ‖g‖² and the dot are NaN, ‖fx‖² is not
    k::residual_dots(x.data(), fx.data(), w, rows, 1, nullptr, nullptr, s);
    CHECK(std::isnan(s[0]));
    CHECK(s[1] == Approx(0.0625 * double(w)));
    CHECK(std::isnan(s[2]));
    x[std::size_t(at)] = T(0.25), fx[std::size_t(at)] = tinf;  // g = fx = Inf: both squared norms are Inf
    k::residual_dots(x.data(), fx.data(), w, rows, 1, nullptr, nullptr, s);
    CHECK(s[0] == inf);
    CHECK(s[1] == inf);
    CHECK(s[2] == inf);
    fx[std::size_t(at)] = T(0.25), x[std::size_t(at)] = T(-0.0);  // signed zeros change nothing
    k::residual_dots(x.data(), fx.data(), w, rows, 1, nullptr, nullptr, s);
    CHECK(s[0] == Approx(0.0625));
  }
}
