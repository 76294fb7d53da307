#pragma once
// Vector tanh for the Tanh activation (the cell of the FPI layers, spec
// fpi_dynalay.md §1: scalar libm tanh was a third of an E3 solve).
//
// The vector body is xsimd::tanh (for |x| < 0.625 an odd minimax polynomial,
// otherwise 1 − 2/(e^{2|x|} + 1) with the sign restored); the tail and the
// reference twin are std::tanh.
//
// Special values: tanh(±0) = ±0, tanh(±Inf) = ±1, tanh(NaN) = NaN; large |x|
// saturates to ±1 without overflow.
// Accuracy: within 2 ulp of tanh rounded from double over the float range, and
// within 4 ulp for double (tests/test_kernels.cpp, "vtanh").
#include <cmath>

#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {

namespace ref {
/// The reference: y_i = std::tanh(x_i).
template <class T>
void tanh(const T* x, T* y, index_t n) noexcept {
  for (index_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}
}  // namespace ref

inline namespace LAMINA_KERNELS_ISA_NS {

/// y_i = tanh(x_i) over an array (vector body, std::tanh tail); y may alias x.
template <class Arch = default_arch, class T>
void vtanh(const T* x, T* y, index_t n) noexcept {
  detail::map_array<Arch>(x, y, n, [](const batch<T, Arch>& v) { return xsimd::tanh(v); }, [](T v) { return std::tanh(v); });
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
