#pragma once
// The residual pass of a fixed-point solve (spec/fpi_dynalay.md §2), one sample:
// with x the iterate and fx = f(x) (w values each),
//   g = fx − x,   s[0] = ‖g‖²,   s[1] = ‖fx‖²,   s[2 + j] = <g, rows[j]>  (j < n),
// optionally storing fx into f and g into g. Picard needs s[0] and s[1] (the
// relative residual ‖g‖ / (‖fx‖ + 1e-9)); Anderson (fpi/anderson.hpp) also
// writes the pair (fx, g) into its ring and the new Gram row against the ring's
// other residuals, all in the one pass over x and fx that the residual reads
// anyway, instead of four (residual, copy into the ring, one pass per dot).
//
// Sums run in T, in two vector accumulators per sum (float over a 64-wide row:
// relative error ~1e-7, as the Eigen dot products this replaced), and are
// returned in double. f and g are both null (nothing stored) or both not null;
// neither may alias x, fx or a row. NaN/Inf propagate into the sums as in the arithmetic.
#include <array>
#include <cstddef>
#include <type_traits>

#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {

/// Rows residual_dots() takes at most (Anderson's largest memory, fpi/options.hpp).
inline constexpr std::size_t residual_max_rows = 32;

namespace ref {
/// The reference: the same sums, one element at a time, accumulated in double.
template <class T>
void residual_dots(const T* x, const T* fx, index_t w, const T* const* rows, std::size_t n, std::type_identity_t<T>* f, std::type_identity_t<T>* g,
                   double* s) noexcept {
  for (std::size_t j = 0; j < n + 2; ++j) s[j] = 0;
  for (index_t d = 0; d < w; ++d) {
    const T gd = fx[d] - x[d];
    if (f) f[d] = fx[d], g[d] = gd;
    s[0] += double(gd) * double(gd);
    s[1] += double(fx[d]) * double(fx[d]);
    for (std::size_t j = 0; j < n; ++j) s[2 + j] += double(gd) * double(rows[j][d]);
  }
}
}  // namespace ref

inline namespace LAMINA_KERNELS_ISA_NS {

namespace detail {
/// residual_dots with N rows (N = 0 … 4 known at compile time, so that every sum
/// stays in a register; N = dynamic_rows: n rows, the sums in an array).
inline constexpr std::size_t dynamic_rows = ~std::size_t(0);
template <class Arch, std::size_t N, class T>
void residual_pass(const T* x, const T* fx, index_t w, const T* const* rows, std::size_t n, std::type_identity_t<T>* f, std::type_identity_t<T>* g,
                   double* s) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  constexpr std::size_t R = N == dynamic_rows ? residual_max_rows : N;
  const std::size_t nr = N == dynamic_rows ? n : N;
  std::array<V, R + 1> acc;  // + 1: no zero-sized array
  for (std::size_t j = 0; j < nr; ++j) acc[j] = V(T(0));
  V gg0(T(0)), gg1(T(0)), ff0(T(0)), ff1(T(0));
  auto lane = [&](index_t at, V& gg, V& ff) {
    const V fv = V::load_unaligned(fx + at), gv = fv - V::load_unaligned(x + at);
    if (f) fv.store_unaligned(f + at), gv.store_unaligned(g + at);
    gg = xsimd::fma(gv, gv, gg);
    ff = xsimd::fma(fv, fv, ff);
    for (std::size_t j = 0; j < nr; ++j) acc[j] = xsimd::fma(gv, V::load_unaligned(rows[j] + at), acc[j]);
  };
  index_t d = 0;
  for (; d + 2 * W <= w; d += 2 * W) lane(d, gg0, ff0), lane(d + W, gg1, ff1);
  if (d + W <= w) lane(d, gg0, ff0), d += W;
  T tg = 0, tf = 0;
  std::array<T, R + 1> tr{};
  for (; d < w; ++d) {  // scalar tail
    const T gd = fx[d] - x[d];
    if (f) f[d] = fx[d], g[d] = gd;
    tg += gd * gd;
    tf += fx[d] * fx[d];
    for (std::size_t j = 0; j < nr; ++j) tr[j] += gd * rows[j][d];
  }
  s[0] = double(xsimd::hadd(gg0 + gg1) + tg);
  s[1] = double(xsimd::hadd(ff0 + ff1) + tf);
  for (std::size_t j = 0; j < nr; ++j) s[2 + j] = double(xsimd::hadd(acc[j]) + tr[j]);
}
}  // namespace detail

/// g = fx − x; s[0] = ‖g‖², s[1] = ‖fx‖², s[2 + j] = <g, rows[j]> for j < n ≤
/// residual_max_rows; fx copied into f and g into g when f is not null (then g
/// must not be null either).
template <class Arch = default_arch, class T>
void residual_dots(const T* x, const T* fx, index_t w, const T* const* rows, std::size_t n, std::type_identity_t<T>* f, std::type_identity_t<T>* g,
                   double* s) noexcept {
  switch (n) {
    case 0: return detail::residual_pass<Arch, 0>(x, fx, w, rows, n, f, g, s);
    case 1: return detail::residual_pass<Arch, 1>(x, fx, w, rows, n, f, g, s);
    case 2: return detail::residual_pass<Arch, 2>(x, fx, w, rows, n, f, g, s);
    case 3: return detail::residual_pass<Arch, 3>(x, fx, w, rows, n, f, g, s);
    case 4: return detail::residual_pass<Arch, 4>(x, fx, w, rows, n, f, g, s);
    default: return detail::residual_pass<Arch, detail::dynamic_rows>(x, fx, w, rows, n, f, g, s);
  }
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
