// Conv2d's Winograd F(2×2, 3×3) and F(4×4, 3×3) paths: the kernels
// (kernels/winograd.hpp, winograd4.hpp) against their scalar references on
// every tail length, and the module against a direct convolution in double on
// all image sizes 1..30 (partial tiles), channel counts 1..19 and 16/32/64,
// batches 1..5, forward, dx, dW and db added into pre-filled buffers; a
// gradient check in double.
#include <catch2/catch.hpp>

#include <cmath>
#include <utility>
#include <limits>
#include <vector>

#include "lamina/core/random.hpp"
#include "lamina/kernels/dispatch.hpp"
#include "lamina/modules/conv2d.hpp"
#include "support/gradcheck.hpp"

using namespace lamina;
namespace k = lamina::kernels;

namespace {
template <class T>
std::vector<T> randv(index_t n, std::uint64_t seed) {
  Rng r(seed);
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = T(r.uniform(-2, 2));
  return v;
}
double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}
/// max |a − b| / max |b| (b the double reference).
template <class T>
double rel_diff(const T* a, const std::vector<double>& b) {
  double d = 0;
  for (std::size_t i = 0; i < b.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  const double s = max_abs(b);
  return s == 0 ? d : d / s;
}

/// Direct 3×3, stride 1, padding 1 convolution and its gradients, in double.
struct Direct {
  index_t B, Ci, Co, H, W;
  double x(const std::vector<double>& v, index_t b, index_t c, index_t r, index_t q, index_t C) const {
    return r >= 0 && r < H && q >= 0 && q < W ? v[std::size_t(((b * C + c) * H + r) * W + q)] : 0.0;
  }
  std::vector<double> forward(const std::vector<double>& X, const std::vector<double>& w,
                              const std::vector<double>& bias) const {
    std::vector<double> y(std::size_t(B * Co * H * W));
    for (index_t b = 0; b < B; ++b)
      for (index_t o = 0; o < Co; ++o)
        for (index_t i = 0; i < H; ++i)
          for (index_t j = 0; j < W; ++j) {
            double s = bias.empty() ? 0.0 : bias[std::size_t(o)];
            for (index_t c = 0; c < Ci; ++c)
              for (index_t u = 0; u < 3; ++u)
                for (index_t v = 0; v < 3; ++v)
                  s += w[std::size_t(((o * Ci + c) * 3 + u) * 3 + v)] * x(X, b, c, i + u - 1, j + v - 1, Ci);
            y[std::size_t(((b * Co + o) * H + i) * W + j)] = s;
          }
    return y;
  }
  /// dx, dw, db (not added to anything).
  void backward(const std::vector<double>& X, const std::vector<double>& w, const std::vector<double>& G,
                std::vector<double>& dx, std::vector<double>& dw, std::vector<double>& db) const {
    dx.assign(std::size_t(B * Ci * H * W), 0.0), dw.assign(std::size_t(Co * Ci * 9), 0.0), db.assign(std::size_t(Co), 0.0);
    for (index_t b = 0; b < B; ++b)
      for (index_t o = 0; o < Co; ++o)
        for (index_t i = 0; i < H; ++i)
          for (index_t j = 0; j < W; ++j) {
            const double g = G[std::size_t(((b * Co + o) * H + i) * W + j)];
            db[std::size_t(o)] += g;
            for (index_t c = 0; c < Ci; ++c)
              for (index_t u = 0; u < 3; ++u)
                for (index_t v = 0; v < 3; ++v) {
                  const index_t r = i + u - 1, q = j + v - 1;
                  dw[std::size_t(((o * Ci + c) * 3 + u) * 3 + v)] += g * x(X, b, c, r, q, Ci);
                  if (r >= 0 && r < H && q >= 0 && q < W)
                    dx[std::size_t(((b * Ci + c) * H + r) * W + q)] += g * w[std::size_t(((o * Ci + c) * 3 + u) * 3 + v)];
                }
          }
  }
};

template <class T>
std::vector<double> to_double(const Tensor<T>& t) {
  return std::vector<double>(t.data(), t.data() + t.size());
}

/// One shape: Winograd forward, dx, dW, db against Direct; returns the largest
/// relative difference seen.
template <class T>
double compare(index_t B, index_t Ci, index_t Co, index_t H, index_t W, bool bias, double tol,
               Conv2dAlgorithm algo = Conv2dAlgorithm::winograd) {
  INFO("B " << B << " Cin " << Ci << " Cout " << Co << " H " << H << " W " << W << " bias " << bias << " algo "
            << int(algo));
  Rng rng(3);
  Conv2d<T> conv({.in_channels = Ci, .out_channels = Co, .padding = 1, .bias = bias, .algorithm = algo}, rng);
  const Direct d{B, Ci, Co, H, W};
  const auto xv = randv<T>(B * Ci * H * W, 11), gv = randv<T>(B * Co * H * W, 12);
  Tensor<T> x(Shape{B, Ci, H, W}), dy(Shape{B, Co, H, W}), y(Shape{B, Co, H, W}), dx(Shape{B, Ci, H, W}, T(0.25));
  std::copy(xv.begin(), xv.end(), x.data());
  std::copy(gv.begin(), gv.end(), dy.data());
  const std::vector<double> X(xv.begin(), xv.end()), G(gv.begin(), gv.end()), w = to_double(conv.weight());
  const std::vector<double> bv = bias ? to_double(conv.bias()) : std::vector<double>{};
  conv.forward(x.cview(), y.view());
  double worst = rel_diff(y.data(), d.forward(X, w, bv));
  CHECK(rel_diff(y.data(), d.forward(X, w, bv)) < tol);
  visit_parameters(conv, [](const ParamRef<T>& p) {
    for (T& v : p.grad.span()) v = T(-0.5);
  });
  conv.backward(dy.cview(), dx.view());
  std::vector<double> rdx, rdw, rdb;
  d.backward(X, w, G, rdx, rdw, rdb);
  const auto added = [](const Tensor<T>& t, double base) {
    std::vector<double> v = to_double(t);
    for (double& a : v) a -= base;
    return v;
  };
  const auto check = [&](const char* what, const std::vector<double>& got, const std::vector<double>& want) {
    const double r = rel_diff(got.data(), want);
    INFO(what << ": relative difference " << r);
    CHECK(r < tol);
    worst = std::max(worst, r);
  };
  check("dx", added(dx, 0.25), rdx);
  visit_parameters(conv, [&](const ParamRef<T>& p) {
    Tensor<T> g = Tensor<T>::copy_of(p.grad);
    check(p.name.c_str(), added(g, -0.5), p.name == "weight" ? rdw : rdb);
  });
  return worst;
}

// Tolerances, relative to the largest reference value: sums of up to 64·9
// products through Winograd's transforms (entries 0, ±½, ±1: a rounding
// growth of a few units) measured at most 5e-7 in float and 1e-14 in double
// over these shapes; the bounds leave 10× of margin and still fail on any
// wrong tap, tile or channel (an error of order 1e-2 or more).
template <class T>
constexpr double tol = std::is_same_v<T, float> ? 5e-6 : 1e-13;
// Tolerances of F(4×4), relative to the largest reference value: its transforms
// have entries up to 8 (Aᵀ) and down to 1/24 (G), so rounding grows more than
// in F(2×2); measured at most 7e-6 in float and 2e-14 in double over these
// shapes. The bounds still fail on any wrong tap, tile or channel.
template <class T>
constexpr double tol4 = std::is_same_v<T, float> ? 5e-5 : 1e-12;

/// max |a − b| over max |b| of n values.
template <class T>
double rel_max(const T* a, const T* b, index_t n) {
  double d = 0, m = 0;
  for (index_t i = 0; i < n; ++i) d = std::max(d, std::abs(double(a[i]) - double(b[i]))), m = std::max(m, std::abs(double(b[i])));
  return m == 0 ? d : d / m;
}

/// Both Winograd paths with their tolerances.
template <class T>
std::vector<std::pair<Conv2dAlgorithm, double>> paths() {
  return {{Conv2dAlgorithm::winograd, tol<T>}, {Conv2dAlgorithm::winograd4, tol4<T>}};
}
}  // namespace

TEMPLATE_TEST_CASE("winograd kernels match their references on every tail", "[conv2d][winograd][kernels]", float,
                   double) {
  using T = TestType;
  const auto& kt = k::table<T>();
  const index_t L = kt.winograd_nr / k::winograd_nv;
  for (index_t n = 1; n <= 3 * L + 2; ++n) {
    INFO("n " << n << " isa " << kt.isa);
    const index_t pitch = 5, ps = n + 2 * pitch + 2 * L, es = n + L;
    const auto P = randv<T>(8 * ps, 1);
    std::vector<T> a(std::size_t(16 * es), T(7)), b(a);
    kt.winograd_input(P.data(), ps, pitch, n, a.data(), es);
    k::ref::winograd_input(P.data(), ps, pitch, n, b.data(), es);
    for (index_t e = 0; e < 16; ++e)
      for (index_t q = 0; q < n; ++q) CHECK(a[std::size_t(e * es + q)] == b[std::size_t(e * es + q)]);
    std::vector<T> y1(std::size_t(4 * ps)), y2(y1.size());
    kt.winograd_output(a.data(), es, n, y1.data(), ps);
    k::ref::winograd_output(a.data(), es, n, y2.data(), ps);
    for (index_t e = 0; e < 4; ++e)
      for (index_t q = 0; q < n; ++q) CHECK(y1[std::size_t(e * ps + q)] == y2[std::size_t(e * ps + q)]);
    kt.winograd_output_grad(P.data(), ps, n, a.data(), es);
    k::ref::winograd_output_grad(P.data(), ps, n, b.data(), es);
    for (index_t e = 0; e < 16; ++e)
      for (index_t q = 0; q < n; ++q) CHECK(a[std::size_t(e * es + q)] == b[std::size_t(e * es + q)]);
  }
  for (index_t M : {k::winograd_mr, 2 * k::winograd_mr})
    for (index_t N : {kt.winograd_nr, 3 * kt.winograd_nr})
      for (index_t K : {index_t(1), index_t(7), index_t(64)}) {
        INFO("M " << M << " N " << N << " K " << K);
        const index_t ld = N + 3;
        const auto A = randv<T>(K * M, 2), B = randv<T>(K * ld, 3);
        std::vector<T> c1(std::size_t(M * ld), T(9)), c2(c1);
        kt.winograd_gemm(A.data(), B.data(), c1.data(), M, N, K, ld, ld);
        k::ref::winograd_gemm(A.data(), B.data(), c2.data(), M, N, K, ld, ld);
        for (index_t i = 0; i < M * ld; ++i)
          CHECK(std::abs(double(c1[std::size_t(i)]) - double(c2[std::size_t(i)])) <= tol<T> * 4 * double(K));
      }
  for (index_t M : {index_t(4), index_t(8)})
    for (index_t N : {index_t(4), index_t(12)})
      for (index_t K : {L, 5 * L}) {
        INFO("nt M " << M << " N " << N << " K " << K);
        const index_t ld = K + 1;
        const auto A = randv<T>(M * ld, 4), B = randv<T>(N * ld, 5);
        std::vector<T> c1(std::size_t(M * N), T(1)), c2(c1);
        kt.winograd_gemm_nt(A.data(), B.data(), c1.data(), M, N, K, ld);
        k::ref::winograd_gemm_nt(A.data(), B.data(), c2.data(), M, N, K, ld);
        for (index_t i = 0; i < M * N; ++i)
          CHECK(std::abs(double(c1[std::size_t(i)]) - double(c2[std::size_t(i)])) <= tol<T> * 4 * double(K));
      }
}

TEMPLATE_TEST_CASE("Conv2d winograd matches a direct convolution on every image size", "[conv2d][winograd]", float,
                   double) {
  using T = TestType;
  for (const auto& [algo, tl] : paths<T>()) {
    double worst = 0;
    for (index_t H = 1; H <= 30; ++H)
      for (index_t W : {H, index_t(31 - H)})
        worst = std::max(worst, compare<T>(1 + H % 3, 2 + H % 4, 3 + W % 3, H, W, H % 2 == 0, tl, algo));
    INFO("algorithm " << int(algo) << " worst " << worst);
    CHECK(worst < tl);
  }
}

TEMPLATE_TEST_CASE("Conv2d winograd matches a direct convolution on every channel count", "[conv2d][winograd]", float,
                   double) {
  using T = TestType;
  for (const auto& [algo, tl] : paths<T>()) {
    double worst = 0;
    for (index_t c = 1; c <= 19; ++c)
      worst = std::max(worst, compare<T>(1 + c % 5, c, 20 - c, 5 + c % 4, 3 + c % 6, c % 3 == 0, tl, algo));
    for (index_t c : {16, 32, 64})
      for (index_t S : {7, 14})
        for (index_t B : {1, 5}) worst = std::max(worst, compare<T>(B, c, c, S, S, B == 5, tl, algo));
    worst = std::max(worst, compare<T>(3, 16, 64, 9, 8, true, tl, algo));
    worst = std::max(worst, compare<T>(3, 64, 16, 8, 9, false, tl, algo));
    // Several chunks of images (chunks of unequal size) in the weight gradient too.
    worst = std::max(worst, compare<T>(7, 64, 64, 28, 27, true, tl, algo));
    INFO("algorithm " << int(algo) << " worst " << worst);
    CHECK(worst < tl);
  }
}

TEST_CASE("Conv2d winograd gradient check", "[conv2d][winograd][gradcheck]") {
  for (const auto& [ci, co, H, W, bias] : {std::tuple{2, 3, 5, 6, false}, std::tuple{3, 2, 4, 4, true},
                                            std::tuple{1, 1, 1, 1, true}, std::tuple{2, 2, 9, 3, false}})
    for (const auto algo : {Conv2dAlgorithm::winograd, Conv2dAlgorithm::winograd4}) {
      INFO("cin " << ci << " cout " << co << " H " << H << " W " << W << " algorithm " << int(algo));
      Rng rng(5);
      Conv2d<double> conv({.in_channels = ci, .out_channels = co, .padding = 1, .bias = bias, .algorithm = algo}, rng);
      auto x = gradcheck::random_tensor({3, ci, H, W}, 17);
      gradcheck::check(conv, x);
    }
}

TEST_CASE("Conv2d winograd: forced only where it applies; the automatic choice", "[conv2d][winograd][errors]") {
  Rng rng(1);
  for (const auto algo : {Conv2dAlgorithm::winograd, Conv2dAlgorithm::winograd4}) {
    CHECK_THROWS_WITH(Conv2d<float>({.in_channels = 2, .out_channels = 2, .stride = 2, .padding = 1, .algorithm = algo},
                                    rng),
                      Catch::Contains("Conv2d: algorithm") && Catch::Contains("stride 2"));
    CHECK_THROWS_AS(Conv2d<float>({.kernel_h = 1, .kernel_w = 1, .algorithm = algo}, rng), value_error);
  }
  // automatic and im2col give the same result to rounding on a 3×3 same convolution.
  Conv2d<float> a({.in_channels = 3, .out_channels = 4, .padding = 1}, rng);
  Conv2d<float> b({.in_channels = 3, .out_channels = 4, .padding = 1, .algorithm = Conv2dAlgorithm::im2col}, rng);
  b.weight().assign(a.weight().cview());
  const auto xv = randv<float>(2 * 3 * 9 * 9, 8);
  Tensor<float> x(Shape{2, 3, 9, 9}), y1(Shape{2, 4, 9, 9}), y2(y1.shape());
  std::copy(xv.begin(), xv.end(), x.data());
  a.infer(x.cview(), y1.view());
  b.infer(x.cview(), y2.view());
  for (index_t i = 0; i < y1.size(); ++i) CHECK(std::abs(y1[i] - y2[i]) <= 1e-5f * (1 + std::abs(y2[i])));
}

TEMPLATE_TEST_CASE("winograd4 transforms match their references on every tail", "[conv2d][winograd4][kernels]", float,
                   double) {
  using T = TestType;
  const auto& kt = k::table<T>();
  const index_t L = kt.winograd_nr / k::winograd_nv;
  // The factored transforms round differently from the matrix products.
  const double tol = 64 * double(std::numeric_limits<T>::epsilon());
  for (index_t n = 1; n <= 3 * L + 2; ++n) {
    INFO("n " << n << " isa " << kt.isa);
    const index_t pitch = 5, ps = n + 2 * pitch + 2 * L, es = n + L;
    const auto P = randv<T>(32 * ps, 1);
    std::vector<T> a(std::size_t(36 * es), T(7)), b(a);
    kt.winograd4_input(P.data(), ps, pitch, n, a.data(), es);
    k::ref::winograd4_input(P.data(), ps, pitch, n, b.data(), es);
    for (index_t e = 0; e < 36; ++e) CHECK(rel_max(a.data() + e * es, b.data() + e * es, n) <= tol);
    std::vector<T> y1(std::size_t(16 * ps)), y2(y1.size());
    kt.winograd4_output(b.data(), es, n, y1.data(), ps);
    k::ref::winograd4_output(b.data(), es, n, y2.data(), ps);
    for (index_t e = 0; e < 16; ++e) CHECK(rel_max(y1.data() + e * ps, y2.data() + e * ps, n) <= tol);
    kt.winograd4_output_grad(P.data(), ps, n, a.data(), es);
    k::ref::winograd4_output_grad(P.data(), ps, n, b.data(), es);
    for (index_t e = 0; e < 36; ++e) CHECK(rel_max(a.data() + e * es, b.data() + e * es, n) <= tol);
    // Past the n tiles only the vector slack is written: the next row's start is untouched.
    CHECK(a[std::size_t(es - 1)] == T(7));
  }
  // A non-finite input reaches the tiles that read it, and no other tile.
  const index_t n = L + 3, pitch = 5, ps = n + 2 * pitch + 2 * L, es = n + L;
  std::vector<T> P(std::size_t(32 * ps), T(1)), V(std::size_t(36 * es));
  P[std::size_t(k::winograd4_array(0, 0) * ps + 2)] = std::numeric_limits<T>::quiet_NaN();
  kt.winograd4_input(P.data(), ps, pitch, n, V.data(), es);
  CHECK(std::isnan(V[2]));
  CHECK(std::isfinite(V[1]));
  CHECK(std::isfinite(V[3]));
}
