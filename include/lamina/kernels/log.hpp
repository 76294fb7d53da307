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

#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

/// log x lane by lane (float).
template <class Arch>
batch<float, Arch> vlog(batch<float, Arch> x) noexcept {
  using V = batch<float, Arch>;
  using I = batch<std::int32_t, Arch>;
  const auto sub = x < V(std::numeric_limits<float>::min());  // subnormal, zero or negative
  const V xs = xsimd::select(sub, x * V(8388608.0f), x);     // ·2^23: subnormals become normal
  const I bits = xsimd::bitwise_cast<I>(xs);
  // m ∈ [1, 2) from the mantissa; e the unbiased exponent (−23 for scaled subnormals).
  V m = xsimd::bitwise_cast<V>((bits & I(0x007fffff)) | I(0x3f800000));
  V e = xsimd::to_float((bits >> 23) - I(127)) - xsimd::select(sub, V(23.0f), V(0.0f));
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
  V y = xsimd::fma(p * f, z, xsimd::fma(e, V(-2.12194440e-4f), V(-0.5f) * z));  // f³P − f²/2 + e·lo
  y = xsimd::fma(e, V(0.693359375f), f + y);
  // Specials: the bit path gives finite garbage for x ≤ 0, +Inf and NaN.
  const V inf(std::numeric_limits<float>::infinity());
  y = xsimd::select(x < inf, y, x);  // +Inf → +Inf, NaN → NaN
  y = xsimd::select(x == V(0.0f), -inf, y);
  return xsimd::select(x < V(0.0f), V(std::numeric_limits<float>::quiet_NaN()), y);
}

/// log x lane by lane (double: xsimd's).
template <class Arch>
batch<double, Arch> vlog(const batch<double, Arch>& x) noexcept {
  return xsimd::log(x);
}

/// y_i = log x_i over an array (vector body, std::log tail); y may alias x.
template <class Arch = default_arch, class T>
void vlog(const T* x, T* y, index_t n) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  index_t i = 0;
  for (; i + W <= n; i += W) vlog(V::load_unaligned(x + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = std::log(x[i]);
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
