#pragma once
// Vector natural log for the KL-from-probabilities kernel (spec/kernels.md
// "Speed": like the exp of the softmax, the log is its compute bound).
//
// Float: the maths of Cephes logf with only vector integer and FMA operations
// (no table, no gather): x = m·2^e from the bit fields, m moved to
// [√½, √2) (f = m − 1 ∈ [−0.29, 0.41]), log(1 + f) = f − f²/2 + f³·P(f) with
// Cephes' degree-8 P, and e·ln2 added in two parts (ln2 = 0.693359375 −
// 2.12194440e-4, the first exact in e·hi). Subnormal inputs are scaled by 2^23
// first (one compare and select), so the whole float range is covered.
//
// Special values: log(+0) = log(−0) = −Inf, log(+Inf) = +Inf, log(x < 0) = NaN,
// log(NaN) = NaN.
// Accuracy: within 2 ulp of the correctly rounded result over all positive
// floats (tests/test_kernels.cpp, "vlog", a sweep of every 61st float and
// [0.5, 2] whole). Double uses xsimd::log.
#include <cstdint>
#include <limits>

#include "lamina/kernels/exp.hpp"  // detail::is_avx512

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

namespace detail {
/// log x for positive normal floats only (no subnormal, zero, Inf or NaN
/// handling): the core of vlog, used alone where the caller has checked the
/// range (kl_probs). AVX-512 takes m ∈ [1, 2) and e with vgetmantps and
/// vgetexpps; other ISAs from the bit fields.
template <class Arch>
[[gnu::always_inline]] inline batch<float, Arch> vlog_normal(const batch<float, Arch>& x) noexcept {
  using V = batch<float, Arch>;
  using I = batch<std::int32_t, Arch>;
  V m, e;
  if constexpr (is_avx512<Arch>) {
    m = _mm512_getmant_ps(x, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
    e = _mm512_getexp_ps(x);
  } else {
    const I bits = xsimd::bitwise_cast<I>(x);
    m = xsimd::bitwise_cast<V>((bits & I(0x007fffff)) | I(0x3f800000));
    e = xsimd::to_float((bits >> 23) - I(127));
  }
  const auto big = m > V(1.41421356237f);  // m ∈ [√2, 2): halve it
  m = xsimd::select(big, m * V(0.5f), m);
  e = xsimd::select(big, e + V(1.0f), e);
  const V f = m - V(1.0f), z = f * f;
  V p = V(7.0376836292e-2f);
  p = xsimd::fma(p, f, V(-1.1514610310e-1f));
  p = xsimd::fma(p, f, V(1.1676998740e-1f));
  p = xsimd::fma(p, f, V(-1.2420140846e-1f));
  p = xsimd::fma(p, f, V(1.4249322787e-1f));
  p = xsimd::fma(p, f, V(-1.6668057665e-1f));
  p = xsimd::fma(p, f, V(2.0000714765e-1f));
  p = xsimd::fma(p, f, V(-2.4999993993e-1f));
  p = xsimd::fma(p, f, V(3.3333331174e-1f));
  const V y = xsimd::fma(p * f, z, xsimd::fma(e, V(-2.12194440e-4f), V(-0.5f) * z));  // f³P − f²/2 + e·lo
  return xsimd::fma(e, V(0.693359375f), f + y);
}
}  // namespace detail

/// log x lane by lane (float). Always inlined: as a call, its constants are
/// reloaded and the caller's vectors spilled around it (perf: half the time of
/// kl_probs).
template <class Arch>
[[gnu::always_inline]] inline batch<float, Arch> vlog(batch<float, Arch> x) noexcept {
  using V = batch<float, Arch>;
  const auto sub = x < V(std::numeric_limits<float>::min());  // subnormal, zero or negative
  V y = detail::vlog_normal<Arch>(xsimd::select(sub, x * V(8388608.0f), x));  // ·2^23: subnormals become normal
  y = xsimd::select(sub, y - V(15.9423851528f), y);                             // − 23 ln2
  // Specials: the core gives finite garbage for x ≤ 0, +Inf and NaN.
  const V inf(std::numeric_limits<float>::infinity());
  y = xsimd::select(x < inf, y, x);  // +Inf → +Inf, NaN → NaN
  y = xsimd::select(x == V(0.0f), -inf, y);
  return xsimd::select(x < V(0.0f), V(std::numeric_limits<float>::quiet_NaN()), y);
}

namespace detail {
template <class Arch>
batch<double, Arch> vlog_normal(const batch<double, Arch>& x) noexcept {
  return xsimd::log(x);
}
}  // namespace detail

/// log x lane by lane (double: xsimd's).
template <class Arch>
batch<double, Arch> vlog(const batch<double, Arch>& x) noexcept {
  return xsimd::log(x);
}

/// y_i = log x_i over an array (vector body, std::log tail); y may alias x.
template <class Arch = default_arch, class T>
void vlog(const T* x, T* y, index_t n) noexcept {
  detail::map_array<Arch>(x, y, n, [](const batch<T, Arch>& v) { return vlog(v); }, [](T v) { return std::log(v); });
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
