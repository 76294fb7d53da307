#pragma once
// Many small symmetric positive definite solves at once, one system per SIMD
// lane: the Gram systems of Anderson acceleration (fpi/anderson.hpp, spec
// fpi_dynalay.md §2), one per sample of a batch.
//
// One n×n Cholesky solve is a chain of dependent square roots and divisions:
// Eigen's LLT takes ~160 ns for n = 5 here, more than the 64-wide cell
// evaluation Anderson is meant to save. Eigen has no batched small solver, so
// this kernel interleaves L = batch<double>::size independent systems across
// the lanes (8 with AVX-512) and pays that latency once per L systems.
//
// Layout (lane-interleaved, L = lanes<double, Arch>): A[(r·n + c)·L + l] is
// entry (r, c) of system l; only the lower triangle (c ≤ r) is read, and it is
// overwritten by the Cholesky factor L_f, its diagonal by the reciprocals
// 1 / (L_f)_jj (the solves multiply instead of dividing). b[r·L + l] is the right-hand side of
// system l, overwritten by the solution x = A⁻¹ b. ok[l] becomes 0 when system
// l is not numerically positive definite (a pivot ≤ 0 or NaN; its x is then
// unspecified, the caller falls back) and 1 otherwise. Lanes without a system
// should hold one that is positive definite (e.g. the identity), so that they
// stay finite. The reference twin is the same algorithm lane by lane; the tests
// also compare both with Eigen's LLT (which lets a NaN pivot through, where this
// kernel reports it: ok is compared on finite systems only).
#include <cstdint>

#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {

namespace ref {
/// The reference: the same Cholesky solve, one lane at a time, in scalar code.
inline void spd_solve_lanes(double* A, double* b, index_t n, index_t L, std::uint8_t* ok) noexcept {
  for (index_t l = 0; l < L; ++l) {
    const auto a = [A, n, L, l](index_t r, index_t c) -> double& { return A[(r * n + c) * L + l]; };
    const auto x = [b, L, l](index_t r) -> double& { return b[r * L + l]; };
    bool good = true;
    for (index_t j = 0; j < n; ++j) {
      double d = a(j, j);
      for (index_t k = 0; k < j; ++k) d -= a(j, k) * a(j, k);
      good = good && d > 0;
      const double pivot = std::sqrt(good ? d : 1.0);
      for (index_t i = j + 1; i < n; ++i) {
        double v = a(i, j);
        for (index_t k = 0; k < j; ++k) v -= a(i, k) * a(j, k);
        a(i, j) = v / pivot;
      }
      a(j, j) = 1 / pivot;
    }
    for (index_t i = 0; i < n; ++i) {
      for (index_t k = 0; k < i; ++k) x(i) -= a(i, k) * x(k);
      x(i) *= a(i, i);
    }
    for (index_t i = n - 1; i >= 0; --i) {
      for (index_t k = i + 1; k < n; ++k) x(i) -= a(k, i) * x(k);
      x(i) *= a(i, i);
    }
    ok[l] = good;
  }
}
}  // namespace ref

inline namespace LAMINA_KERNELS_ISA_NS {

/// Cholesky factorisation and solve of lanes<double, Arch> systems of size n (layout above).
template <class Arch = default_arch>
void spd_solve_lanes(double* A, double* b, index_t n, std::uint8_t* ok) noexcept {
  using B = batch<double, Arch>;
  constexpr index_t L = index_t(B::size);
  const auto at = [A, n](index_t r, index_t c) { return A + (r * n + c) * L; };
  auto good = B(0) == B(0);
  for (index_t j = 0; j < n; ++j) {  // A = LLᵀ, column by column
    B d = B::load_unaligned(at(j, j));
    for (index_t k = 0; k < j; ++k) d = xsimd::fnma(B::load_unaligned(at(j, k)), B::load_unaligned(at(j, k)), d);
    good = good && (d > B(0));
    const B inv = B(1) / xsimd::sqrt(xsimd::select(good, d, B(1)));  // failed lanes stay finite
    inv.store_unaligned(at(j, j));
    for (index_t i = j + 1; i < n; ++i) {
      B v = B::load_unaligned(at(i, j));
      for (index_t k = 0; k < j; ++k) v = xsimd::fnma(B::load_unaligned(at(i, k)), B::load_unaligned(at(j, k)), v);
      (v * inv).store_unaligned(at(i, j));
    }
  }
  for (index_t i = 0; i < n; ++i) {  // L y = b
    B s = B::load_unaligned(b + i * L);
    for (index_t k = 0; k < i; ++k) s = xsimd::fnma(B::load_unaligned(at(i, k)), B::load_unaligned(b + k * L), s);
    (s * B::load_unaligned(at(i, i))).store_unaligned(b + i * L);
  }
  for (index_t i = n - 1; i >= 0; --i) {  // Lᵀ x = y
    B s = B::load_unaligned(b + i * L);
    for (index_t k = i + 1; k < n; ++k) s = xsimd::fnma(B::load_unaligned(at(k, i)), B::load_unaligned(b + k * L), s);
    (s * B::load_unaligned(at(i, i))).store_unaligned(b + i * L);
  }
  alignas(64) double flags[L];
  xsimd::select(good, B(1), B(0)).store_aligned(flags);
  for (index_t l = 0; l < L; ++l) ok[l] = flags[l] != 0;
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
