#pragma once
// Vector exp for the softmax and KL kernels (spec/kernels.md "Speed": the exp
// is their compute bound).
//
// Same maths as xsimd::exp for float (Cody–Waite reduction x = k ln2 + r,
// |r| ≤ ln2/2, Cephes degree-5 polynomial, then 2^k) but fewer instructions:
// k is rounded with the shift trick, the input is clamped once instead of
// selecting 0 / +Inf afterwards, and on
// AVX-512 the scaling by 2^k is one vscalefps (which also rounds results in
// the subnormal range correctly). Elsewhere 2^k is applied as two exact
// factors 2^⌊k/2⌋ · 2^(k−⌊k/2⌋), so that results which underflow still round
// to 0 or a subnormal instead of wrapping the exponent field.
//
// Special values: exp(−Inf) = 0, exp(+Inf) = +Inf, exp(NaN) = NaN.
// Accuracy: within 2 ulp of the correctly rounded result over the whole float
// range (tests/test_kernels.cpp, "vexp"). Double uses xsimd::exp.
#include <cstdint>
#include <type_traits>

#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

namespace detail {
template <class Arch>
inline constexpr bool is_avx512 = std::is_base_of_v<xsimd::avx512f, Arch>;

/// 2^j for integer-valued float vectors j ∈ [−126, 127] (builds the exponent field).
template <class Arch>
batch<float, Arch> pow2i(const batch<std::int32_t, Arch>& j) noexcept {
  return xsimd::bitwise_cast<batch<float, Arch>>((j + batch<std::int32_t, Arch>(127)) << 23);
}
}  // namespace detail

/// e^x lane by lane (float).
template <class Arch>
batch<float, Arch> vexp(batch<float, Arch> x) noexcept {
  using V = batch<float, Arch>;
  // max(lo, x) and min(hi, x) return x when x is NaN (x86 max/min return their
  // second operand on NaN), so NaN passes through the clamp. Beyond the clamp
  // the result is already 0 (e^−104 < half the smallest subnormal) or +Inf.
  x = xsimd::min(V(88.8f), xsimd::max(V(-104.0f), x));
  // k = round(x / ln2) by the shift trick: adding 1.5·2^23 leaves the rounded
  // integer in the low mantissa bits (one FMA instead of a multiply and a round).
  const V shift(12582912.0f);
  const V k = xsimd::fma(x, V(1.44269504088896341f), shift) - shift;
  V r = xsimd::fnma(k, V(0.693359375f), x);  // ln2 split in a part exact in k·hi and the rest
  r = xsimd::fnma(k, V(-2.12194440e-4f), r);
  V y = V(1.3997796e-03f);
  y = xsimd::fma(y, r, V(8.3955629e-03f));
  y = xsimd::fma(y, r, V(4.1665401e-02f));
  y = xsimd::fma(y, r, V(1.6666277e-01f));
  y = xsimd::fma(y, r, V(5.0000000e-01f));
  y = xsimd::fma(y, r * r, r) + V(1.0f);
  if constexpr (detail::is_avx512<Arch>) {
    return _mm512_scalef_ps(y, k);
  } else {
    const auto ki = xsimd::to_int(k);
    const auto k1 = ki >> 1;  // k ∈ [−150, 129]: both halves stay normal exponents
    return y * detail::pow2i<Arch>(k1) * detail::pow2i<Arch>(ki - k1);
  }
}

/// e^x lane by lane (double: xsimd's, exact to about 1 ulp).
template <class Arch>
batch<double, Arch> vexp(const batch<double, Arch>& x) noexcept {
  return xsimd::exp(x);
}

/// y_i = e^{x_i} over an array (vector body, std::exp tail); y may alias x.
template <class Arch = default_arch, class T>
void vexp(const T* x, T* y, index_t n) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  index_t i = 0;
  for (; i + W <= n; i += W) vexp(V::load_unaligned(x + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = std::exp(x[i]);
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
