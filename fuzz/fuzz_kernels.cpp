// libFuzzer target: the SIMD kernel selected by LAMINA_FUZZ_KERNEL against its
// scalar reference on arbitrary bytes read as floats. Any disagreement beyond
// the documented accuracy (or a NaN where the reference has none) aborts.
// Build: cmake -DCMAKE_CXX_COMPILER=clang++ -DLAMINA_BUILD_FUZZERS=ON; run e.g.
//   build/fuzz/fuzz_softmax -max_total_time=60
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
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
void check(bool ok) {
  if (!ok) std::abort();
}
std::vector<float> floats(const std::uint8_t* d, std::size_t n) {
  std::vector<float> v(n / 4);
  if (!v.empty()) std::memcpy(v.data(), d, v.size() * 4);
  return v;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto v = floats(data, size);
  const index_t n = index_t(v.size());
  std::vector<double> vd(v.begin(), v.end());
#if LAMINA_FUZZ_KERNEL == 1  // softmax and log-softmax
  std::vector<float> p(v.size()), lp(v.size());
  std::vector<double> pr(v.size()), lpr(v.size());
  k::softmax(v.data(), p.data(), n);
  k::ref::softmax(vd.data(), pr.data(), n);
  k::log_softmax(v.data(), lp.data(), n);
  k::ref::log_softmax(vd.data(), lpr.data(), n);
  for (index_t i = 0; i < n; ++i) {
    check(agree(p[std::size_t(i)], pr[std::size_t(i)], 1e-4, 1e-30));
    check(agree(lp[std::size_t(i)], lpr[std::size_t(i)], 1e-4, 1e-4 * (1 + std::abs(lpr[std::size_t(i)]))));
  }
#elif LAMINA_FUZZ_KERNEL == 2  // KL from logits: first half a, second half b
  const index_t h = n / 2;
  // Logits beyond ±1e30 make exp-differences overflow differently in float and double.
  for (float& x : v) if (std::isfinite(x) && std::abs(x) > 1e30f) x = std::copysign(1e30f, x);
  std::vector<double> ad(v.begin(), v.begin() + h), bd(v.begin() + h, v.begin() + 2 * h);
  const double ref = k::ref::kl_logits(ad.data(), bd.data(), h);
  const float got = k::kl_logits(v.data(), v.data() + h, h);
  double scale = 1;
  for (index_t i = 0; i < 2 * h; ++i) scale = std::max(scale, std::abs(double(v[std::size_t(i)])));
  check(agree(got, ref, 1e-3, 1e-4 * scale));
#elif LAMINA_FUZZ_KERNEL == 3  // KL from probabilities: |x| normalised into two probability vectors
  const index_t h = n / 2;
  std::vector<float> p(static_cast<std::size_t>(h)), q(static_cast<std::size_t>(h));
  double sp = 0, sq = 0;
  for (index_t i = 0; i < h; ++i) {
    p[std::size_t(i)] = std::isfinite(v[std::size_t(i)]) ? std::min(std::abs(v[std::size_t(i)]), 1e20f) : 0.f;
    q[std::size_t(i)] = std::isfinite(v[std::size_t(h + i)]) ? std::min(std::abs(v[std::size_t(h + i)]), 1e20f) : 1.f;
    sp += p[std::size_t(i)];
    sq += q[std::size_t(i)];
  }
  if (sp <= 0 || sq <= 0) return 0;
  for (index_t i = 0; i < h; ++i) {
    p[std::size_t(i)] = float(p[std::size_t(i)] / sp);
    q[std::size_t(i)] = float(q[std::size_t(i)] / sq);
  }
  std::vector<double> pd(p.begin(), p.end()), qd(q.begin(), q.end());
  check(agree(k::kl_probs(p.data(), q.data(), h, 1e-6f), k::ref::kl_probs(pd.data(), qd.data(), h, 1e-6), 1e-4, 1e-5));
#elif LAMINA_FUZZ_KERNEL == 4  // weighted aggregation, t = 3, weights from the first 3 floats
  if (n < 3) return 0;
  const index_t L = (n - 3) / 3;
  for (float& x : v) if (!std::isfinite(x) || std::abs(x) > 1e15f) x = 1.0f;
  const float* vs[3] = {v.data() + 3, v.data() + 3 + L, v.data() + 3 + 2 * L};
  std::vector<float> o(static_cast<std::size_t>(L));
  k::weighted_sum<k::default_arch, float>(vs, std::span<const float>(v.data(), 3), o.data(), L);
  for (index_t i = 0; i < L; ++i) {
    double r = 0, mag = 0;
    for (int s = 0; s < 3; ++s) {
      r += double(v[std::size_t(s)]) * double(vs[s][i]);
      mag += std::abs(double(v[std::size_t(s)]) * double(vs[s][i]));
    }
    check(agree(o[std::size_t(i)], r, 0, 1e-6 * mag + 1e-30));
  }
#elif LAMINA_FUZZ_KERNEL == 5  // depthwise 3×3 on one [1, 1, H, W] plane with W = 13
  const index_t W = 13, H = (n - 9) / W;
  if (n < 9 || H < 1) return 0;
  for (float& x : v) if (!std::isfinite(x) || std::abs(x) > 1e15f) x = 0.5f;
  std::vector<float> y(std::size_t(H * W));
  std::vector<double> yr(std::size_t(H * W)), xd(v.begin() + 9, v.begin() + 9 + H * W), wd(v.begin(), v.begin() + 9);
  k::depthwise_conv3x3(v.data() + 9, v.data(), y.data(), 1, 1, H, W);
  k::ref::depthwise_conv3x3(xd.data(), wd.data(), yr.data(), 1, 1, H, W);
  double mag = 1e-30;
  for (double x : xd) mag = std::max(mag, std::abs(x));
  double wm = 0;
  for (double x : wd) wm += std::abs(x);
  for (index_t i = 0; i < H * W; ++i) check(agree(y[std::size_t(i)], yr[std::size_t(i)], 0, 1e-6 * mag * wm + 1e-30));
#else
#error "LAMINA_FUZZ_KERNEL must be 1..5"
#endif
  return 0;
}
