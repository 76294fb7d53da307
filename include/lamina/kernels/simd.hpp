#pragma once
// Shared pieces of lamina's SIMD kernels (spec/kernels.md). Every kernel is a
// template on the xsimd architecture `Arch` (default: the build target's best,
// xsimd::default_arch) with a vector body and a scalar tail, and has a plain
// scalar reference in namespace `ref` beside it.
#include "lamina/core/eigen_core.hpp"  // LAMINA_INTRINSIC_HEADERS_BEGIN/END (GCC 12 false positives)

LAMINA_INTRINSIC_HEADERS_BEGIN
#include <xsimd/xsimd.hpp>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
LAMINA_INTRINSIC_HEADERS_END

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

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

/// Asks for the lines of [p, p + m) (m elements, a compile-time vector block)
/// to be brought towards the cache: the same block of the next row of a
/// row-wise kernel, fetched while the current one is computed.
template <index_t m, class T>
void prefetch_block(const T* p) noexcept {
  const char* c = reinterpret_cast<const char*>(p);
  for (index_t b = 0; b < m * index_t(sizeof(T)); b += 64) __builtin_prefetch(c + b);
}

/// Stores v at p without first reading p's line into the cache (a
/// non-temporal store), for output that goes to memory and is not read again
/// soon. p must be aligned to the vector width. Other ISAs store normally.
template <class Arch, class T>
void stream_store(T* p, const batch<T, Arch>& v) noexcept {
#if defined(__x86_64__) || defined(__i386__)
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
    if constexpr (std::is_same_v<T, float>) _mm512_stream_ps(p, v);
    else _mm512_stream_pd(p, v);
    return;
  } else if constexpr (std::is_base_of_v<xsimd::avx, Arch>) {
    if constexpr (std::is_same_v<T, float>) _mm256_stream_ps(p, v);
    else _mm256_stream_pd(p, v);
    return;
  } else if constexpr (std::is_base_of_v<xsimd::sse2, Arch>) {
    if constexpr (std::is_same_v<T, float>) _mm_stream_ps(p, v);
    else _mm_stream_pd(p, v);
    return;
  }
#endif
  v.store_aligned(p);
}

/// Orders the non-temporal stores before any later store (they are weakly
/// ordered), so that other threads see the data once the kernel returns.
template <class Arch>
void stream_fence() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  if constexpr (std::is_base_of_v<xsimd::sse2, Arch> || std::is_base_of_v<xsimd::avx, Arch> ||
                std::is_base_of_v<xsimd::avx512f, Arch>)
    _mm_sfence();
#endif
}

/// y_i = f(x_i) over an array: vf on whole vectors, sf on the scalar tail; y may alias x.
template <class Arch, class T, class VF, class SF>
void map_array(const T* x, T* y, index_t n, VF vf, SF sf) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  index_t i = 0;
  for (; i + W <= n; i += W) vf(V::load_unaligned(x + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = sf(x[i]);
}

/// How a row kernel treats the memory around its row (set by the row-wise
/// drivers, softmax_rows and kl_logits_rows).
enum class Rows {
  one,       ///< a row on its own
  cached,    ///< the next rows follow contiguously: prefetch the row after next during the exp pass
  streamed,  ///< as cached, and the output goes to memory: non-temporal stores (the driver fences)
};

/// The mode for a row-wise kernel over `total` elements in rows of n: prefetch
/// ahead when a row is short enough to fetch whole (≤ 16 KiB), and
/// stream the output when the data cannot stay in L2 (about 1 MiB).
template <class T>
constexpr Rows rows_mode(index_t total, index_t n) noexcept {
  if (n * index_t(sizeof(T)) > 16384) return Rows::one;
  return total * index_t(sizeof(T)) > (index_t(1) << 20) ? Rows::streamed : Rows::cached;
}

/// The running maximum starts at the lowest finite value, not −∞: then a −∞
/// input gives exp(−∞ − m) = 0 instead of exp(−∞ + ∞) = NaN.
template <class T>
inline constexpr T lowest = std::numeric_limits<T>::lowest();

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
