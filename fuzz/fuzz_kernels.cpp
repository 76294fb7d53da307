// libFuzzer target: the SIMD kernel selected by LAMINA_FUZZ_KERNEL against its
// scalar reference and its documented non-finite rule, on arbitrary bytes read
// as floats: NaN and ±Inf reach every kernel (only magnitudes the float and
// double arithmetic cannot both represent are clamped). Each kernel runs for
// SSE2 and for the build's widest instruction set (xsimd::default_arch, e.g.
// AVX2 with -mavx2 -mfma, as scripts/fuzz.sh builds on a machine that has it).
// A disagreement prints "lamina-fuzz: mismatch: <what>" and aborts.
// Build and run: scripts/fuzz.sh (or see README "Fuzzing").
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <vector>

#include "lamina/kernels/depthwise_conv3x3.hpp"
#include "lamina/kernels/kl_divergence.hpp"
#include "lamina/kernels/softmax.hpp"
#include "lamina/kernels/weighted_aggregation.hpp"

namespace k = lamina::kernels;
using lamina::index_t;

namespace {
// Agreement of a float kernel with the double reference on the same inputs.
bool agree(double got, double ref, double rel, double abs) {
  if (std::isnan(ref)) return std::isnan(got);
  if (std::isinf(ref)) return got == ref || std::isnan(got);
  if (!std::isfinite(got)) return std::abs(ref) > 1e30;  // overflow near the float range
  return std::abs(got - ref) <= rel * std::abs(ref) + abs;
}
void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "lamina-fuzz: mismatch: %s\n", what);
  std::abort();
}
std::vector<float> floats(const std::uint8_t* d, std::size_t n) {
  std::vector<float> v(n / 4);
  if (!v.empty()) std::memcpy(v.data(), d, v.size() * 4);
  return v;
}
[[maybe_unused]] bool has_nan_or_pos_inf(const float* x, index_t n) {
  for (index_t i = 0; i < n; ++i)
    if (std::isnan(x[i]) || x[i] == INFINITY) return true;
  return false;
}
// Finite magnitudes above `cap` become ±cap; NaN and ±Inf are kept.
[[maybe_unused]] void clamp_finite(std::vector<float>& v, float cap) {
  for (float& x : v)
    if (std::isfinite(x) && std::abs(x) > cap) x = std::copysign(cap, x);
}

#if LAMINA_FUZZ_KERNEL == 1  // softmax and log-softmax
template <class Arch>
void run(std::vector<float> v) {
  const index_t n = index_t(v.size());
  std::vector<double> vd(v.begin(), v.end());
  std::vector<float> p(v.size()), lp(v.size());
  std::vector<double> pr(v.size()), lpr(v.size());
  k::softmax<Arch>(v.data(), p.data(), n);
  k::ref::softmax(vd.data(), pr.data(), n);
  k::log_softmax<Arch>(v.data(), lp.data(), n);
  k::ref::log_softmax(vd.data(), lpr.data(), n);
  // Documented: NaN or +Inf anywhere, or all entries −Inf, make the whole row NaN.
  const bool all_neg_inf = std::all_of(v.begin(), v.end(), [](float x) { return x == -INFINITY; });
  const bool nan_row = has_nan_or_pos_inf(v.data(), n) || all_neg_inf;
  for (index_t i = 0; i < n; ++i) {
    const std::size_t j = std::size_t(i);
    check(!nan_row || (std::isnan(p[j]) && std::isnan(lp[j])), "softmax: NaN, +Inf or all -Inf must give a NaN row");
    if (v[j] == -INFINITY && !nan_row) check(p[j] == 0 && lp[j] == -INFINITY, "softmax: -Inf must give p = 0");
    check(agree(p[j], pr[j], 1e-4, 1e-30), "softmax against ref::softmax");
    check(agree(lp[j], lpr[j], 1e-4, 1e-4 * (1 + std::abs(lpr[j]))), "log_softmax against ref::log_softmax");
  }
}
#elif LAMINA_FUZZ_KERNEL == 2  // KL from logits: first half a, second half b
template <class Arch>
void run(std::vector<float> v) {
  const index_t h = index_t(v.size()) / 2;
  // Logits beyond ±1e30 make exp-differences overflow differently in float and double.
  clamp_finite(v, 1e30f);
  std::vector<double> ad(v.begin(), v.begin() + h), bd(v.begin() + h, v.begin() + 2 * h);
  const double ref = k::ref::kl_logits(ad.data(), bd.data(), h);
  const float got = k::kl_logits<Arch>(v.data(), v.data() + h, h);
  if (has_nan_or_pos_inf(v.data(), 2 * h)) check(std::isnan(got), "kl_logits: NaN or +Inf must give NaN");
  double scale = 1;
  for (index_t i = 0; i < 2 * h; ++i)
    if (std::isfinite(v[std::size_t(i)])) scale = std::max(scale, std::abs(double(v[std::size_t(i)])));
  check(agree(got, ref, 1e-3, 1e-4 * scale), "kl_logits against ref::kl_logits");
}
#elif LAMINA_FUZZ_KERNEL == 3  // KL from probabilities: |x| normalised into two probability vectors
// Finite |x| (at most 1e20) normalised by the finite sum; NaN and +Inf stay.
std::vector<float> probabilities(const float* x, index_t n) {
  std::vector<float> p(static_cast<std::size_t>(n));
  double s = 0;
  for (index_t i = 0; i < n; ++i) {
    const float a = std::abs(x[i]);
    p[std::size_t(i)] = std::isfinite(a) ? std::min(a, 1e20f) : a;
    if (std::isfinite(a)) s += p[std::size_t(i)];
  }
  if (s > 0)
    for (float& a : p)
      if (std::isfinite(a)) a = float(a / s);
  return p;
}
template <class Arch>
void run(std::vector<float> v) {
  const index_t h = index_t(v.size()) / 2;
  const std::vector<float> p = probabilities(v.data(), h), q = probabilities(v.data() + h, h);
  std::vector<double> pd(p.begin(), p.end()), qd(q.begin(), q.end());
  for (float eps : {0.0f, 1e-6f}) {
    bool nan_rule = false;  // documented: NaN in p, or in q where p + eps != 0
    double mag = 0;
    for (index_t i = 0; i < h; ++i) {
      const double a = pd[std::size_t(i)] + eps, b = qd[std::size_t(i)] + eps;
      nan_rule = nan_rule || std::isnan(a) || (a != 0 && std::isnan(b));
      if (a != 0 && std::isfinite(a * (std::log(a) - std::log(b)))) mag += std::abs(a * (std::log(a) - std::log(b)));
    }
    const float got = k::kl_probs<Arch>(p.data(), q.data(), h, eps);
    if (nan_rule) check(std::isnan(got), "kl_probs: a NaN in p (or in q where p > 0) must give NaN");
    check(agree(got, k::ref::kl_probs(pd.data(), qd.data(), h, double(eps)), 1e-4, 1e-5 * (1 + mag)),
          "kl_probs against ref::kl_probs");
  }
}
#elif LAMINA_FUZZ_KERNEL == 4  // weighted aggregation, t = 3, weights from the first 3 floats
template <class Arch>
void run(std::vector<float> v) {
  const index_t n = index_t(v.size());
  if (n < 3) return;
  const index_t L = (n - 3) / 3;
  clamp_finite(v, 1e15f);
  const float* vs[3] = {v.data() + 3, v.data() + 3 + L, v.data() + 3 + 2 * L};
  std::vector<float> o(static_cast<std::size_t>(L));
  k::weighted_sum<Arch, float>(vs, std::span<const float>(v.data(), 3), o.data(), L);
  for (index_t i = 0; i < L; ++i) {
    double r = 0, mag = 0;
    for (int s = 0; s < 3; ++s) {
      const double t = double(v[std::size_t(s)]) * double(vs[s][i]);
      r += t;
      if (std::isfinite(t)) mag += std::abs(t);
    }
    check(agree(o[std::size_t(i)], r, 0, 1e-6 * mag + 1e-30), "weighted_sum against the double sum");
  }
}
#elif LAMINA_FUZZ_KERNEL == 5  // depthwise 3×3 on one [1, 1, H, W] plane with W = 13
template <class Arch>
void run(std::vector<float> v) {
  const index_t n = index_t(v.size()), W = 13, H = (n - 9) / W;
  if (n < 9 || H < 1) return;
  clamp_finite(v, 1e15f);
  std::vector<float> y(std::size_t(H * W));
  std::vector<double> yr(std::size_t(H * W)), xd(v.begin() + 9, v.begin() + 9 + H * W), wd(v.begin(), v.begin() + 9);
  k::depthwise_conv3x3<Arch>(v.data() + 9, v.data(), y.data(), 1, 1, H, W);
  k::ref::depthwise_conv3x3(xd.data(), wd.data(), yr.data(), 1, 1, H, W);
  double mag = 1e-30, wm = 0;
  for (double x : xd)
    if (std::isfinite(x)) mag = std::max(mag, std::abs(x));
  for (double x : wd)
    if (std::isfinite(x)) wm += std::abs(x);
  for (index_t i = 0; i < H * W; ++i)
    check(agree(y[std::size_t(i)], yr[std::size_t(i)], 0, 1e-6 * mag * wm + 1e-30), "depthwise_conv3x3 against ref");
}
#else
#error "LAMINA_FUZZ_KERNEL must be 1..5"
#endif
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::vector<float> v = floats(data, size);
  run<xsimd::sse2>(v);
  if constexpr (!std::is_same_v<k::default_arch, xsimd::sse2>) run<k::default_arch>(v);
  return 0;
}
