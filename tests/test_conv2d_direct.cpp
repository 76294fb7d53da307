// Conv2d's direct 3×3 path (stride 1 or 2, padding 1): the kernels
// (kernels/conv3x3_direct.hpp) against their scalar references on every tail,
// and the module against a nested-loop convolution in double on odd and even
// image sizes, channel counts 1..19 and the E1 shapes, batches 1..5 (short
// chunks), forward, dx, dW and db added into pre-filled buffers; a gradient
// check in double; the automatic choice.
#include <catch2/catch.hpp>

#include <cmath>
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
/// max |a − b| / max |b| (b the double reference).
template <class T>
double rel_diff(const T* a, const std::vector<double>& b) {
  double d = 0, s = 0;
  for (std::size_t i = 0; i < b.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i])), s = std::max(s, std::abs(b[i]));
  return s == 0 ? d : d / s;
}

/// Nested-loop 3×3, padding 1, stride s convolution and its gradients, in double.
struct Reference {
  index_t B, Ci, Co, H, W, s;
  index_t Ho() const { return (H - 1) / s + 1; }
  index_t Wo() const { return (W - 1) / s + 1; }
  template <class F>
  void each(F&& f) const {  // f(b, o, i, j, c, u, v, input index or -1)
    for (index_t b = 0; b < B; ++b)
      for (index_t o = 0; o < Co; ++o)
        for (index_t i = 0; i < Ho(); ++i)
          for (index_t j = 0; j < Wo(); ++j)
            for (index_t c = 0; c < Ci; ++c)
              for (index_t u = 0; u < 3; ++u)
                for (index_t v = 0; v < 3; ++v) {
                  const index_t r = i * s - 1 + u, q = j * s - 1 + v;
                  const bool in = r >= 0 && r < H && q >= 0 && q < W;
                  f(b, o, i, j, c, u, v, in ? ((b * Ci + c) * H + r) * W + q : index_t(-1));
                }
  }
  index_t y_at(index_t b, index_t o, index_t i, index_t j) const { return ((b * Co + o) * Ho() + i) * Wo() + j; }
  index_t w_at(index_t o, index_t c, index_t u, index_t v) const { return ((o * Ci + c) * 3 + u) * 3 + v; }
  std::vector<double> forward(const std::vector<double>& X, const std::vector<double>& w,
                              const std::vector<double>& bias) const {
    std::vector<double> y(std::size_t(B * Co * Ho() * Wo()));
    for (index_t b = 0; b < B; ++b)
      for (index_t o = 0; o < Co; ++o)
        for (index_t p = 0; p < Ho() * Wo(); ++p) y[std::size_t((b * Co + o) * Ho() * Wo() + p)] = bias.empty() ? 0 : bias[std::size_t(o)];
    each([&](index_t b, index_t o, index_t i, index_t j, index_t c, index_t u, index_t v, index_t x) {
      if (x >= 0) y[std::size_t(y_at(b, o, i, j))] += w[std::size_t(w_at(o, c, u, v))] * X[std::size_t(x)];
    });
    return y;
  }
  void backward(const std::vector<double>& X, const std::vector<double>& w, const std::vector<double>& G,
                std::vector<double>& dx, std::vector<double>& dw, std::vector<double>& db) const {
    dx.assign(X.size(), 0.0), dw.assign(w.size(), 0.0), db.assign(std::size_t(Co), 0.0);
    for (index_t b = 0; b < B; ++b)
      for (index_t o = 0; o < Co; ++o)
        for (index_t p = 0; p < Ho() * Wo(); ++p) db[std::size_t(o)] += G[std::size_t((b * Co + o) * Ho() * Wo() + p)];
    each([&](index_t b, index_t o, index_t i, index_t j, index_t c, index_t u, index_t v, index_t x) {
      if (x < 0) return;
      const double g = G[std::size_t(y_at(b, o, i, j))];
      dw[std::size_t(w_at(o, c, u, v))] += g * X[std::size_t(x)];
      dx[std::size_t(x)] += g * w[std::size_t(w_at(o, c, u, v))];
    });
  }
};

template <class T>
std::vector<double> to_double(const Tensor<T>& t) {
  return std::vector<double>(t.data(), t.data() + t.size());
}

/// One shape through the forced direct path against Reference; returns the
/// largest relative difference seen.
template <class T>
double compare(index_t B, index_t Ci, index_t Co, index_t H, index_t W, index_t s, bool bias, double tol,
               Conv2dAlgorithm alg = Conv2dAlgorithm::direct) {
  INFO("B " << B << " Cin " << Ci << " Cout " << Co << " H " << H << " W " << W << " stride " << s << " bias " << bias);
  Rng rng(3);
  Conv2d<T> conv({.in_channels = Ci, .out_channels = Co, .stride = s, .padding = 1, .bias = bias, .algorithm = alg},
                 rng);
  const Reference d{B, Ci, Co, H, W, s};
  const Shape ys{B, Co, d.Ho(), d.Wo()};
  REQUIRE(conv.output_shape(Shape{B, Ci, H, W}) == ys);
  const auto xv = randv<T>(B * Ci * H * W, 11), gv = randv<T>(ys.numel(), 12);
  Tensor<T> x(Shape{B, Ci, H, W}), dy(ys), y(ys, T(5)), dx(x.shape(), T(0.25));
  std::copy(xv.begin(), xv.end(), x.data());
  std::copy(gv.begin(), gv.end(), dy.data());
  const std::vector<double> X(xv.begin(), xv.end()), G(gv.begin(), gv.end()), w = to_double(conv.weight());
  const std::vector<double> bv = bias ? to_double(conv.bias()) : std::vector<double>{};
  double worst = 0;
  const auto check = [&](const char* what, const std::vector<double>& got, const std::vector<double>& want) {
    const double r = rel_diff(got.data(), want);
    INFO(what << ": relative difference " << r);
    CHECK(r < tol);
    worst = std::max(worst, r);
  };
  conv.forward(x.cview(), y.view());
  check("y", to_double(y), d.forward(X, w, bv));
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
  check("dx", added(dx, 0.25), rdx);
  visit_parameters(conv, [&](const ParamRef<T>& p) {
    Tensor<T> g = Tensor<T>::copy_of(p.grad);
    check(p.name.c_str(), added(g, -0.5), p.name == "weight" ? rdw : rdb);
  });
  return worst;
}

// Tolerances relative to the largest reference value: plain sums of up to
// 64·9 products (dW: up to 5·28² per entry); measured below 1e-6 in float and
// 1e-15 in double; any wrong tap, phase or channel gives 1e-2 or more.
template <class T>
constexpr double tol = std::is_same_v<T, float> ? 1e-5 : 1e-13;
}  // namespace

TEMPLATE_TEST_CASE("direct conv kernels match their references on every tail", "[conv2d][direct][kernels]", float,
                   double) {
  using T = TestType;
  const auto& kt = k::table<T>();
  const index_t L = kt.conv_nr / k::conv_nv;
  const auto src = randv<T>(4096, 1);
  for (index_t M : {k::conv_mr, 3 * k::conv_mr})
    for (index_t N : {kt.conv_nr, 3 * kt.conv_nr})
      for (index_t K : {index_t(1), index_t(9), index_t(37)}) {
        INFO("M " << M << " N " << N << " K " << K << " isa " << kt.isa);
        const auto A = randv<T>(K * M, 2);
        std::vector<index_t> off(static_cast<std::size_t>(K));
        for (index_t i = 0; i < K; ++i) off[std::size_t(i)] = (i * 37 + 5) % 1000;
        const index_t ldc = N + 3;
        std::vector<T> c1(std::size_t(M * ldc), T(9)), c2(c1);
        kt.conv_gemm(A.data(), src.data(), off.data(), c1.data(), M, N, K, ldc);
        k::ref::conv_gemm(A.data(), src.data(), off.data(), c2.data(), M, N, K, ldc);
        for (index_t i = 0; i < M * ldc; ++i)
          CHECK(std::abs(double(c1[std::size_t(i)]) - double(c2[std::size_t(i)])) <= tol<T> * 4 * double(K));
      }
  for (index_t M : {k::conv_mr, 2 * k::conv_mr})
    for (index_t N : {L, 2 * L, kt.conv_nr, kt.conv_nr + 2 * L})
      for (index_t Q : {index_t(1), index_t(7), 5 * L + 3}) {
        INFO("tn M " << M << " N " << N << " Q " << Q);
        const index_t ldb = N + 1, ldc = N + 2;
        const auto B = randv<T>(Q * ldb, 4);
        std::vector<index_t> off(static_cast<std::size_t>(M));
        for (index_t i = 0; i < M; ++i) off[std::size_t(i)] = (i * 53 + 3) % 2000;
        std::vector<T> c1(std::size_t(M * ldc), T(1)), c2(c1);
        kt.conv_gemm_tn(src.data(), off.data(), B.data(), ldb, c1.data(), M, N, Q, ldc);
        k::ref::conv_gemm_tn(src.data(), off.data(), B.data(), ldb, c2.data(), M, N, Q, ldc);
        for (index_t i = 0; i < M * ldc; ++i)
          CHECK(std::abs(double(c1[std::size_t(i)]) - double(c2[std::size_t(i)])) <= tol<T> * 4 * double(Q));
      }
  // The row helpers on every row length up to three vectors and more, with
  // sentinels around each row: nothing past a row is read into or written.
  const T guard = T(-77);
  for (index_t n = 1; n <= 6 * L + 1; ++n) {
    INFO("rows n " << n);
    const index_t R = 3, ldi = n + 5, ldo = n + 3;
    const auto in = randv<T>(R * ldi, 6);
    std::vector<T> e1(std::size_t(R * ldo + 1), guard), o1(e1), e2(e1), o2(e1);
    kt.conv_split2(in.data(), ldi, R, n, e1.data(), o1.data(), ldo);
    k::ref::conv_split2(in.data(), ldi, R, n, e2.data(), o2.data(), ldo);
    CHECK(e1 == e2);
    CHECK(o1 == o2);
    std::vector<T> y1(std::size_t(R * ldo + 1), guard), y2(y1);
    kt.conv_copy_rows(in.data(), ldi, R, n, y1.data(), ldo, T(0.5));
    k::ref::conv_copy_rows(in.data(), ldi, R, n, y2.data(), ldo, T(0.5));
    CHECK(y1 == y2);
    std::vector<T> d1(std::size_t(R * ldi + 1), guard), d2(d1);
    kt.conv_merge2_add(e2.data(), o2.data(), ldo, R, n, d1.data(), ldi);
    k::ref::conv_merge2_add(e2.data(), o2.data(), ldo, R, n, d2.data(), ldi);
    CHECK(d1 == d2);
    // merge2 of split2 adds each value back where it came from.
    for (index_t r = 0; r < R; ++r)
      for (index_t q = 0; q < n; ++q) CHECK(d1[std::size_t(r * ldi + q)] == guard + in[std::size_t(r * ldi + q)]);
    CHECK(d1.back() == guard);
  }
}

TEMPLATE_TEST_CASE("Conv2d direct matches a nested-loop convolution on every image size", "[conv2d][direct]", float,
                   double) {
  using T = TestType;
  double worst = 0;
  for (index_t s : {1, 2})
    for (index_t H = 1; H <= 30; ++H)
      for (index_t W : {H, index_t(31 - H)})
        worst = std::max(worst, compare<T>(1 + H % 3, 1 + H % 4, 3 + W % 3, H, W, s, H % 2 == 0, tol<T>));
  CHECK(worst < tol<T>);
}

TEMPLATE_TEST_CASE("Conv2d direct matches a nested-loop convolution on every channel count", "[conv2d][direct]", float,
                   double) {
  using T = TestType;
  double worst = 0;
  for (index_t s : {1, 2})
    for (index_t c = 1; c <= 19; ++c) worst = std::max(worst, compare<T>(1 + c % 5, c, 20 - c, 5 + c % 4, 3 + c % 6, s, c % 3 == 0, tol<T>));
  // The E1 shapes (stride 2 at 28² and 14², the stem), batch 1 and a short last chunk.
  for (index_t B : {1, 5}) {
    worst = std::max(worst, compare<T>(B, 16, 32, 28, 28, 2, B == 5, tol<T>));
    worst = std::max(worst, compare<T>(B, 32, 64, 14, 14, 2, B == 1, tol<T>));
    worst = std::max(worst, compare<T>(B, 1, 16, 28, 28, 1, B == 5, tol<T>, Conv2dAlgorithm::automatic));
  }
  worst = std::max(worst, compare<T>(37, 16, 32, 13, 15, 2, true, tol<T>));  // many chunks
  worst = std::max(worst, compare<T>(3, 64, 16, 9, 8, 2, false, tol<T>));
  CHECK(worst < tol<T>);
}

TEST_CASE("Conv2d direct gradient check", "[conv2d][direct][gradcheck]") {
  for (const auto& [ci, co, H, W, s, bias] :
       {std::tuple{2, 3, 5, 6, 2, false}, std::tuple{3, 2, 4, 4, 2, true}, std::tuple{1, 1, 1, 1, 2, true},
        std::tuple{2, 2, 7, 3, 2, false}, std::tuple{1, 4, 5, 6, 1, true}, std::tuple{9, 2, 4, 3, 1, false}}) {
    INFO("cin " << ci << " cout " << co << " H " << H << " W " << W << " stride " << s);
    Rng rng(5);
    Conv2d<double> conv({.in_channels = ci, .out_channels = co, .stride = s, .padding = 1, .bias = bias,
                         .algorithm = Conv2dAlgorithm::direct},
                        rng);
    auto x = gradcheck::random_tensor({3, ci, H, W}, 17);
    gradcheck::check(conv, x);
  }
}

TEST_CASE("Conv2d direct: forced only where it applies; the automatic choice", "[conv2d][direct][errors]") {
  Rng rng(1);
  CHECK_THROWS_WITH(Conv2d<float>({.in_channels = 2, .out_channels = 2, .stride = 3, .padding = 1,
                                   .algorithm = Conv2dAlgorithm::direct},
                                  rng),
                    Catch::Contains("Conv2d: algorithm") && Catch::Contains("stride 3"));
  CHECK_THROWS_AS(Conv2d<float>({.padding = 0, .algorithm = Conv2dAlgorithm::direct}, rng), value_error);
  // automatic (direct) and the per-image im2col agree to rounding on a stride-2 convolution.
  for (index_t s : {1, 2}) {
    Conv2d<float> a({.in_channels = s == 1 ? 1 : 3, .out_channels = 4, .stride = s, .padding = 1}, rng);
    Conv2d<float> b({.in_channels = s == 1 ? 1 : 3, .out_channels = 4, .stride = s, .padding = 1,
                     .algorithm = Conv2dAlgorithm::im2col_per_image},
                    rng);
    b.weight().assign(a.weight().cview());
    const index_t ci = a.options().in_channels;
    const auto xv = randv<float>(2 * ci * 9 * 9, 8);
    Tensor<float> x(Shape{2, ci, 9, 9}), y1(a.output_shape(x.shape())), y2(y1.shape());
    std::copy(xv.begin(), xv.end(), x.data());
    a.infer(x.cview(), y1.view());
    b.infer(x.cview(), y2.view());
    for (index_t i = 0; i < y1.size(); ++i) CHECK(std::abs(y1[i] - y2[i]) <= 1e-5f * (1 + std::abs(y2[i])));
  }
}
