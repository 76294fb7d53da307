#pragma once
// Vector exp for the softmax and KL kernels (spec/kernels.md "Speed": the exp
// is their compute bound).
//
// Float, generic: the maths of xsimd::exp (Cody–Waite reduction x = k ln2 + r,
// |r| ≤ ln2/2, Cephes degree-5 polynomial, then 2^k) with fewer instructions:
// k is rounded with the shift trick, the input is clamped once instead of
// selecting 0 / +Inf afterwards, and 2^k is applied as two exact factors
// 2^⌊k/2⌋ · 2^(k−⌊k/2⌋), so that results which underflow still round to 0 or
// a subnormal instead of wrapping the exponent field.
// Float, AVX-512: a table of 2^(j/16) held in one register. x = (16q + j) ln2/16
// + r with |r| ≤ ln2/32, so a degree-3 polynomial suffices; the table entry is
// one vpermps indexed by the low bits of the shift-trick k, and 2^q is one
// vscalefps. The shift constant 1.5·2^19 has an ulp of 1/16, so k − shift is
// q + j/16 itself and vscalefps, which takes the floor of its exponent, needs
// no rescaling multiply: 8 operations on the FMA pipes instead of 10 for the
// degree-5 form, which bound the softmax and KL row kernels.
// vexp_nonpos, for x ≤ 0 only, trades 2 ulp for speed: see there.
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
  if constexpr (detail::is_avx512<Arch>) {
    const __m512 table = _mm512_setr_ps(1.000000000e+00f, 1.044273734e+00f, 1.090507746e+00f, 1.138788581e+00f,
                                        1.189207077e+00f, 1.241857767e+00f, 1.296839595e+00f, 1.354255557e+00f,
                                        1.414213538e+00f, 1.476826191e+00f, 1.542210817e+00f, 1.610490322e+00f,
                                        1.681792855e+00f, 1.756252170e+00f, 1.834008098e+00f, 1.915206552e+00f);
    // The FMAs are intrinsics: a fused reduction is what keeps r exact, and
    // xsimd's fma/fnma are not always fused at -O1 (the sanitizer builds).
    const __m512 shift = _mm512_set1_ps(786432.0f);  // 1.5·2^19, ulp 1/16
    const __m512 k = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), shift);  // bits of k end in 16q + j
    const __m512 kq = _mm512_sub_ps(k, shift);                                         // q + j/16, exact
    __m512 r = _mm512_fnmadd_ps(kq, _mm512_set1_ps(0.693359375f), x);  // ln2 split as below
    r = _mm512_fnmadd_ps(kq, _mm512_set1_ps(-2.12194440e-4f), r);
    const __m512 t = _mm512_permutexvar_ps(_mm512_castps_si512(k), table);  // 2^(j/16): vpermps reads the low 4 bits
    const __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(1.0f / 6), r, _mm512_set1_ps(0.5f));
    const __m512 em1 = _mm512_mul_ps(_mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f)), r);  // e^r − 1, error < r⁴/24
    return _mm512_scalef_ps(_mm512_fmadd_ps(t, em1, t), kq);  // ·2^⌊kq⌋ = 2^q
  }
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
  const auto ki = xsimd::to_int(k);
  const auto k1 = ki >> 1;  // k ∈ [−150, 129]: both halves stay normal exponents
  return y * detail::pow2i<Arch>(k1) * detail::pow2i<Arch>(ki - k1);
}

namespace detail {
/// vexp_nonpos without its clamp, for loops that check their sums afterwards
/// (kl_logits_cached): equal to vexp_nonpos for −9·10⁴ ≤ x ≤ 0; below that,
/// and for x = −Inf or NaN, the result is 0, +Inf or NaN, never a wrong finite
/// value, so a finite sum of these is exact and a non-finite one says "redo
/// with the clamp". (Finite x < −104 still give 0: vscalefps by 2^q, q ≤ −151.)
template <class Arch>
batch<float, Arch> vexp_nonpos_unclamped(batch<float, Arch> x) noexcept {
  if constexpr (is_avx512<Arch>) {
    const __m512 lo = _mm512_setr_ps(1.000000000e+00f, 1.021897197e+00f, 1.044273734e+00f, 1.067140460e+00f,
                                     1.090507746e+00f, 1.114386797e+00f, 1.138788581e+00f, 1.163724899e+00f,
                                     1.189207077e+00f, 1.215247393e+00f, 1.241857767e+00f, 1.269050956e+00f,
                                     1.296839595e+00f, 1.325236678e+00f, 1.354255557e+00f, 1.383909941e+00f);
    const __m512 hi = _mm512_setr_ps(1.414213538e+00f, 1.445180774e+00f, 1.476826191e+00f, 1.509164453e+00f,
                                     1.542210817e+00f, 1.575980902e+00f, 1.610490322e+00f, 1.645755529e+00f,
                                     1.681792855e+00f, 1.718619347e+00f, 1.756252170e+00f, 1.794709086e+00f,
                                     1.834008098e+00f, 1.874167681e+00f, 1.915206552e+00f, 1.957144141e+00f);
    // Intrinsic FMAs: the one-constant reduction is exact only if fused (see vexp).
    const __m512 shift = _mm512_set1_ps(393216.0f);  // 1.5·2^18, ulp 1/32
    const __m512 k = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), shift);  // bits of k end in 32q + j
    const __m512 kq = _mm512_sub_ps(k, shift);                                         // q + j/32, exact
    // kq·fl(ln2) is exact in the FMA; fl(ln2) = 32·fl(ln2/32) is within 2.8e-9 relative of ln2.
    const __m512 r = _mm512_fnmadd_ps(kq, _mm512_set1_ps(0.693147182464599609375f), x);
    const __m512 t = _mm512_permutex2var_ps(lo, _mm512_castps_si512(k), hi);  // 2^(j/32)
    const __m512 em1 =
        _mm512_mul_ps(_mm512_fmadd_ps(_mm512_set1_ps(0.4999999801f), r, _mm512_set1_ps(1.000014645f)), r);  // e^r − 1
    return _mm512_scalef_ps(_mm512_fmadd_ps(t, em1, t), kq);  // ·2^⌊kq⌋ = 2^q
  } else {
    return vexp(x);
  }
}
}  // namespace detail

/// e^x for x ≤ 0 lane by lane, for sums of exps of max-shifted logits (the
/// fused KL). On AVX-512: a 32-entry table of 2^(j/32) in two registers
/// (one vpermi2ps), a one-constant reduction, a degree-2 minimax polynomial,
/// and the shift trick on a 1/32 grid (as in vexp): 9 vector operations, 6 on
/// the FMA pipes. fl(ln2/32) is within 2.8e-9 relative of ln2/32, so
/// the reduction adds 2.8e-9·|x| relative error, and the polynomial 5.3e-8:
/// the relative error stays below 3e-7 + 3e-9·|x| (tests: "vexp_nonpos"),
/// which in a sum is outweighed by e^x. exp(−Inf) = 0, NaN → NaN; x > 0 is
/// not handled (no overflow path). Other instruction sets: vexp.
template <class Arch>
batch<float, Arch> vexp_nonpos(batch<float, Arch> x) noexcept {
  // max(lo, x) returns x for NaN (see vexp); −Inf and x < −104 give 0.
  return detail::vexp_nonpos_unclamped<Arch>(xsimd::max(batch<float, Arch>(-104.0f), x));
}

/// e^x lane by lane (double: xsimd's, exact to about 1 ulp).
template <class Arch>
batch<double, Arch> vexp(const batch<double, Arch>& x) noexcept {
  return xsimd::exp(x);
}
template <class Arch>
batch<double, Arch> vexp_nonpos(const batch<double, Arch>& x) noexcept {
  return xsimd::exp(x);
}
namespace detail {
template <class Arch>
batch<double, Arch> vexp_nonpos_unclamped(const batch<double, Arch>& x) noexcept {
  return xsimd::exp(x);
}
}  // namespace detail

/// y_i = e^{x_i} over an array (vector body, std::exp tail); y may alias x.
template <class Arch = default_arch, class T>
void vexp(const T* x, T* y, index_t n) noexcept {
  detail::map_array<Arch>(x, y, n, [](const batch<T, Arch>& v) { return vexp(v); }, [](T v) { return std::exp(v); });
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
