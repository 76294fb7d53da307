#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "lamina/core/random.hpp"
#include "lamina/kernels/dispatch.hpp"

using namespace lamina;
namespace k = lamina::kernels;

TEMPLATE_TEST_CASE("the kernel table agrees with the scalar references", "[kernels][dispatch]", float, double) {
  using T = TestType;
  const k::KernelTable<T>& tab = k::table<T>();
  INFO("kernels compiled for " << tab.isa);
#ifdef LAMINA_RUNTIME_DISPATCH
  // The widest ISA this CPU has among those compiled in.
  const auto a = xsimd::available_architectures();
  const char* expect = a.avx512bw ? "avx512bw" : a.fma3_avx2 ? "fma3+avx2" : "sse2";
  CHECK(std::strcmp(tab.isa, expect) == 0);
#else
  CHECK(std::strcmp(tab.isa, k::default_arch::name()) == 0);
#endif
  Rng rng(3);
  for (index_t n : {0, 1, 7, 16, 33, 100, 1000}) {
    std::vector<T> a(static_cast<std::size_t>(n)), b(a), p(a), r(a);
    for (auto& x : a) x = T(rng.uniform(-5, 5));
    for (auto& x : b) x = T(rng.uniform(-5, 5));
    tab.softmax(a.data(), p.data(), n);
    k::ref::softmax(a.data(), r.data(), n);
    for (index_t i = 0; i < n; ++i) REQUIRE(p[std::size_t(i)] == Approx(r[std::size_t(i)]).epsilon(1e-5));
    REQUIRE(tab.kl_logits(a.data(), b.data(), n) == Approx(k::ref::kl_logits(a.data(), b.data(), n)).epsilon(1e-5).margin(1e-6));
    tab.exp(a.data(), p.data(), n);
    for (index_t i = 0; i < n; ++i) REQUIRE(p[std::size_t(i)] == Approx(std::exp(a[std::size_t(i)])).epsilon(1e-6));
    tab.tanh(a.data(), p.data(), n);
    k::ref::tanh(a.data(), r.data(), n);
    for (index_t i = 0; i < n; ++i) REQUIRE(p[std::size_t(i)] == Approx(r[std::size_t(i)]).epsilon(1e-6));
    const T* vs[2] = {a.data(), b.data()};
    const T w[2] = {T(0.5), T(-2)};
    tab.weighted_sum(vs, w, 2, p.data(), n);
    for (index_t i = 0; i < n; ++i) REQUIRE(p[std::size_t(i)] == Approx(0.5 * a[std::size_t(i)] - 2 * b[std::size_t(i)]).epsilon(1e-5).margin(1e-6));
    double s[4], sr[4];
    tab.residual_dots(a.data(), b.data(), n, vs, 2, p.data(), r.data(), s);
    k::ref::residual_dots(a.data(), b.data(), n, vs, 2, nullptr, nullptr, sr);
    for (index_t i = 0; i < n; ++i) REQUIRE((p[std::size_t(i)] == b[std::size_t(i)] && r[std::size_t(i)] == b[std::size_t(i)] - a[std::size_t(i)]));
    for (int j = 0; j < 4; ++j) REQUIRE(s[j] == Approx(sr[j]).epsilon(1e-4).margin(1e-4 * double(n + 1)));
  }
  // BatchNorm over runs of small planes: every plane size to 67 (tails of every width, and planes shorter than a
  // vector), against the scalar references.
  std::vector<index_t> sizes;
  for (index_t n = 1; n <= 67; ++n) sizes.push_back(n);
  sizes.push_back(196);
  for (index_t n : sizes) {
    const k::BnRun d{17, n, 2, 1};  // 17 planes: the transposed reductions of 8 planes (AVX-512) and a rest
    const std::size_t N = std::size_t(17 * n);
    std::vector<T> x(N), y(N), dy(N), o(N), o2(N), dr(N), dr2(N), p(N), r(N);
    for (auto* v : {&x, &y, &dy, &o, &dr}) for (auto& e : *v) e = T(rng.uniform(-3, 3));
    o2 = o, dr2 = dr;
    const T K[2] = {x[0], x[std::size_t(n)]}, m[2] = {T(0.2), T(-0.1)}, a[2] = {T(1.5), T(0.7)}, b[2] = {T(-0.3), T(0.4)};
    const k::BnGrad<T> cf[2] = {{T(0.2), T(1.1), T(-0.2), T(0.3)}, {T(-0.1), T(0.9), T(0.1), T(-0.4)}};
    double s[34], sr[34];
    INFO("bn planes of " << n);
    tab.bn_sums_planes(x.data(), d, K, s);
    k::ref::bn_sums_planes(x.data(), d, K, sr);
    for (int j = 0; j < 34; ++j) REQUIRE(s[j] == Approx(sr[j]).epsilon(1e-5).margin(1e-5 * double(n)));
    tab.bn_grad_sums_planes(x.data(), y.data(), dy.data(), d, m, a, s);
    k::ref::bn_grad_sums_planes(x.data(), y.data(), dy.data(), d, m, a, sr);
    for (int j = 0; j < 34; ++j) REQUIRE(s[j] == Approx(sr[j]).epsilon(1e-5).margin(1e-4 * double(n)));
    tab.bn_apply_planes(x.data(), dy.data(), p.data(), d, m, a, b, true);
    k::ref::bn_apply_planes(x.data(), dy.data(), r.data(), d, m, a, b, true);
    for (std::size_t i = 0; i < N; ++i) REQUIRE(p[i] == Approx(r[i]).epsilon(1e-5).margin(1e-6));
    tab.bn_backward_planes(x.data(), y.data(), dy.data(), o.data(), dr.data(), d, cf);
    k::ref::bn_backward_planes(x.data(), y.data(), dy.data(), o2.data(), dr2.data(), d, cf);
    for (std::size_t i = 0; i < N; ++i) REQUIRE((o[i] == Approx(o2[i]).epsilon(1e-5).margin(1e-6) && dr[i] == dr2[i]));
  }
  // The small SPD solves: the table's lane count, diagonally dominant systems against the scalar twin.
  const index_t L = tab.spd_lanes, m = 4;
  std::vector<double> A(std::size_t(m * m * L)), b(std::size_t(m * L)), Ar, br;
  for (index_t r = 0; r < m; ++r)
    for (index_t l = 0; l < L; ++l) {
      b[std::size_t(r * L + l)] = rng.uniform(-1, 1);
      for (index_t c = 0; c <= r; ++c) A[std::size_t((r * m + c) * L + l)] = r == c ? 4 + double(l) : rng.uniform(-1, 1);
    }
  Ar = A, br = b;
  std::vector<std::uint8_t> ok(static_cast<std::size_t>(L)), okr(static_cast<std::size_t>(L));
  tab.spd_solve_lanes(A.data(), b.data(), m, ok.data());
  k::ref::spd_solve_lanes(Ar.data(), br.data(), m, L, okr.data());
  for (index_t i = 0; i < m * L; ++i) REQUIRE(b[std::size_t(i)] == Approx(br[std::size_t(i)]).epsilon(1e-12));
  for (index_t l = 0; l < L; ++l) REQUIRE(int(ok[std::size_t(l)]) == 1);
}
