#pragma once
// Shared pieces of lamina's SIMD kernels (spec/kernels.md). Every kernel is a
// template on the xsimd architecture `Arch` (default: the build target's best,
// xsimd::default_arch) with a vector body and a scalar tail, and has a plain
// scalar reference in namespace `ref` beside it.
#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include "lamina/core/tensor.hpp"

// The kernels live in an inline namespace named after the instruction set the
// translation unit is compiled for. Runtime dispatch compiles them once per ISA
// (src/dispatch_<isa>.cpp); distinct names keep the linker from merging an
// AVX-512 instantiation into code that must run on SSE2.
#ifndef LAMINA_KERNELS_ISA_NS
#define LAMINA_KERNELS_ISA_NS build_target
#endif

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

using default_arch = xsimd::default_arch;

template <class T, class Arch>
using batch = xsimd::batch<T, Arch>;

/// Widest vector length (in T) of the architecture.
template <class T, class Arch = default_arch>
inline constexpr index_t lanes = index_t(batch<T, Arch>::size);

namespace detail {
/// Largest lane of a vector (once per row: a store and a scalar scan).
template <class T, class Arch>
T hmax(const batch<T, Arch>& v) noexcept {
  alignas(64) T buf[batch<T, Arch>::size];
  v.store_aligned(buf);
  T m = buf[0];
  for (std::size_t i = 1; i < batch<T, Arch>::size; ++i) m = buf[i] > m || std::isnan(buf[i]) ? buf[i] : m;
  return m;
}

/// Asks for the n elements at p to be brought towards the cache (the next row
/// of a row-wise kernel, fetched while the current one is computed).
template <class T>
void prefetch(const T* p, index_t n) noexcept {
  const char* c = reinterpret_cast<const char*>(p);
  for (index_t b = 0; b < n * index_t(sizeof(T)); b += 64) __builtin_prefetch(c + b);
}

/// Whether a row-wise kernel over `total` elements in rows of n should prefetch
/// the next row: only when the data cannot sit in L2 (about 1 MiB) and a row is
/// short enough to fetch whole.
template <class T>
constexpr bool beyond_l2(index_t total, index_t n) noexcept {
  return total * index_t(sizeof(T)) > (index_t(1) << 20) && n * index_t(sizeof(T)) <= 16384;
}

/// The running maximum starts at the lowest finite value, not −∞: then a −∞
/// input gives exp(−∞ − m) = 0 instead of exp(−∞ + ∞) = NaN.
template <class T>
inline constexpr T lowest = std::numeric_limits<T>::lowest();

/// Online (max, scaled sum) of exp: the state of one accumulator.
template <class V>
struct OnlineSum {
  V m, s;
  /// Adds exp(x − m) to s, raising m (and rescaling s) when x exceeds it.
  void add(const V& x) noexcept {
    if (xsimd::any(x > m)) {
      const V nm = xsimd::max(m, x);
      s *= xsimd::exp(m - nm);
      m = nm;
    }
    s += xsimd::exp(x - m);
  }
};

/// Merges (m2, s2) into (m1, s1) for scalars: s = s1 e^{m1−M} + s2 e^{m2−M}.
template <class T>
void merge(T& m1, T& s1, T m2, T s2) noexcept {
  const T M = std::max(m1, m2);
  if (std::isnan(m2)) {
    m1 = m2;
    s1 = m2;
    return;
  }
  s1 = s1 * std::exp(m1 - M) + s2 * std::exp(m2 - M);
  m1 = M;
}
}  // namespace detail

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
