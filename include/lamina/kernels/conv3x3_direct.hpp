#pragma once
// Products of the direct 3×3 convolution (modules/conv2d_direct.hpp): an
// implicit GEMM whose right factor is never built. Its row k is a contiguous
// run of a zero-padded (phase-split) input plane, src + off[k], the tap k's
// shifted view of the output grid; the left factor is the packed weights.
//   conv_gemm:    C[m][j] = Σ_k A[k][m] · src[off[k] + j]     (forward, dx)
//   conv_gemm_tn: C[m][j] += Σ_q src[off[m] + q] · B[q][j]    (dWᵀ, B = dyᵀ)
// Both in register blocks of conv_mr rows broadcast × conv_nv vectors, as the
// Winograd products (winograd.hpp). The row helpers move rows between NCHW
// tensors and the grid (masked loads and stores on AVX-512).
#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

inline constexpr index_t conv_mr = 8;  ///< rows (broadcast weights) of a conv_gemm block
inline constexpr index_t conv_nv = 3;  ///< vectors of a conv_gemm block

namespace ref {
/// C[m·ldc + j] = Σ_k A[k·M + m] · src[off[k] + j] for m < M, j < N.
template <class T>
void conv_gemm(const T* A, const T* src, const index_t* off, T* C, index_t M, index_t N, index_t K, index_t ldc) {
  for (index_t m = 0; m < M; ++m)
    for (index_t j = 0; j < N; ++j) {
      T s = 0;
      for (index_t k = 0; k < K; ++k) s += A[k * M + m] * src[off[k] + j];
      C[m * ldc + j] = s;
    }
}
/// C[m·ldc + j] += Σ_q src[off[m] + q] · B[q·ldb + j] for m < M, j < N, q < Q.
template <class T>
void conv_gemm_tn(const T* src, const index_t* off, const T* B, index_t ldb, T* C, index_t M, index_t N, index_t Q,
                  index_t ldc) {
  for (index_t m = 0; m < M; ++m)
    for (index_t j = 0; j < N; ++j) {
      T s = 0;
      for (index_t q = 0; q < Q; ++q) s += src[off[m] + q] * B[q * ldb + j];
      C[m * ldc + j] += s;
    }
}
/// For rows r < R of n values (in, ldi apart): even[r·ldo + k] = in[r·ldi + 2k]
/// (k < ⌈n/2⌉), odd[r·ldo + k] = in[r·ldi + 2k + 1] (k < ⌊n/2⌋): input rows
/// split into their column phases.
template <class T>
void conv_split2(const T* in, index_t ldi, index_t R, index_t n, T* even, T* odd, index_t ldo) {
  for (index_t r = 0; r < R; ++r, in += ldi, even += ldo, odd += ldo) {
    for (index_t k = 0; 2 * k < n; ++k) even[k] = in[2 * k];
    for (index_t k = 0; 2 * k + 1 < n; ++k) odd[k] = in[2 * k + 1];
  }
}
/// dst[r·ldd + k] = src[r·lds + k] + b for r < R, k < n (rows out of, or into, the grid).
template <class T>
void conv_copy_rows(const T* src, index_t lds, index_t R, index_t n, T* dst, index_t ldd, T b) {
  for (index_t r = 0; r < R; ++r)
    for (index_t k = 0; k < n; ++k) dst[r * ldd + k] = src[r * lds + k] + b;
}
/// dst[r·ldd + 2k] += even[r·lds + k], dst[r·ldd + 2k + 1] += odd[r·lds + k]
/// for 2k, 2k + 1 < n (the adjoint of conv_split2).
template <class T>
void conv_merge2_add(const T* even, const T* odd, index_t lds, index_t R, index_t n, T* dst, index_t ldd) {
  for (index_t r = 0; r < R; ++r, even += lds, odd += lds, dst += ldd) {
    for (index_t k = 0; 2 * k < n; ++k) dst[2 * k] += even[k];
    for (index_t k = 0; 2 * k + 1 < n; ++k) dst[2 * k + 1] += odd[k];
  }
}
}  // namespace ref

namespace detail {
template <class Arch>
inline constexpr bool conv_avx512 = std::is_base_of_v<xsimd::avx512f, Arch>;

#if defined(__AVX512F__)
/// AVX-512 row helpers: masked loads and stores (no access past n).
template <class T>
struct Avx512Rows;
template <>
struct Avx512Rows<float> {
  static constexpr index_t L = 16;
  static __mmask16 mask(index_t n) { return n <= 0 ? __mmask16(0) : n >= L ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }
  static __m512 load(const float* p, index_t n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(float* p, __m512 v, index_t n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static __m512 add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
  static __m512 set1(float b) { return _mm512_set1_ps(b); }
  static void split(__m512 a, __m512 b, __m512& e, __m512& o) {
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i io = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    e = _mm512_permutex2var_ps(a, ie, b), o = _mm512_permutex2var_ps(a, io, b);
  }
  static void merge(__m512 e, __m512 o, __m512& a, __m512& b) {
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    a = _mm512_permutex2var_ps(e, lo, o), b = _mm512_permutex2var_ps(e, hi, o);
  }
};
template <>
struct Avx512Rows<double> {
  static constexpr index_t L = 8;
  static __mmask8 mask(index_t n) { return n <= 0 ? __mmask8(0) : n >= L ? __mmask8(0xFF) : __mmask8((1u << n) - 1); }
  static __m512d load(const double* p, index_t n) { return _mm512_maskz_loadu_pd(mask(n), p); }
  static void store(double* p, __m512d v, index_t n) { _mm512_mask_storeu_pd(p, mask(n), v); }
  static __m512d add(__m512d a, __m512d b) { return _mm512_add_pd(a, b); }
  static __m512d set1(double b) { return _mm512_set1_pd(b); }
  static void split(__m512d a, __m512d b, __m512d& e, __m512d& o) {
    const __m512i ie = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), io = _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1);
    e = _mm512_permutex2var_pd(a, ie, b), o = _mm512_permutex2var_pd(a, io, b);
  }
  static void merge(__m512d e, __m512d o, __m512d& a, __m512d& b) {
    const __m512i lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0), hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
    a = _mm512_permutex2var_pd(e, lo, o), b = _mm512_permutex2var_pd(e, hi, o);
  }
};
#endif
/// One conv_mr × (conv_nv vectors) block of conv_gemm at column j.
template <class Arch, class T>
void conv_block(const T* A, const T* src, const index_t* off, T* C, index_t M, index_t K, index_t j, index_t ldc) {
  using V = batch<T, Arch>;
  constexpr index_t L = index_t(V::size);
  V acc[conv_mr][conv_nv];
#pragma GCC unroll 8
  for (index_t i = 0; i < conv_mr; ++i)
#pragma GCC unroll 3
    for (index_t v = 0; v < conv_nv; ++v) acc[i][v] = V(T(0));
  for (index_t k = 0; k < K; ++k) {
    const T* b = src + off[k] + j;
    V bv[conv_nv];
#pragma GCC unroll 3
    for (index_t v = 0; v < conv_nv; ++v) bv[v] = V::load_unaligned(b + v * L);
    const T* a = A + k * M;
#pragma GCC unroll 8
    for (index_t i = 0; i < conv_mr; ++i) {
      const V ai(a[i]);
#pragma GCC unroll 3
      for (index_t v = 0; v < conv_nv; ++v) acc[i][v] = xsimd::fma(ai, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (index_t i = 0; i < conv_mr; ++i)
#pragma GCC unroll 3
    for (index_t v = 0; v < conv_nv; ++v) acc[i][v].store_unaligned(C + i * ldc + j + v * L);
}

/// One conv_mr × (NV vectors) block of conv_gemm_tn at column j.
template <class Arch, index_t NV, class T>
void conv_block_tn(const T* src, const index_t* off, const T* B, index_t ldb, T* C, index_t Q, index_t j, index_t ldc) {
  using V = batch<T, Arch>;
  constexpr index_t L = index_t(V::size);
  V acc[conv_mr][NV];
  const T* a[conv_mr];
#pragma GCC unroll 8
  for (index_t i = 0; i < conv_mr; ++i) {
    a[i] = src + off[i];
#pragma GCC unroll 3
    for (index_t v = 0; v < NV; ++v) acc[i][v] = V(T(0));
  }
  for (index_t q = 0; q < Q; ++q) {
    const T* b = B + q * ldb + j;
    V bv[NV];
#pragma GCC unroll 3
    for (index_t v = 0; v < NV; ++v) bv[v] = V::load_unaligned(b + v * L);
#pragma GCC unroll 8
    for (index_t i = 0; i < conv_mr; ++i) {
      const V ai(a[i][q]);
#pragma GCC unroll 3
      for (index_t v = 0; v < NV; ++v) acc[i][v] = xsimd::fma(ai, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (index_t i = 0; i < conv_mr; ++i)
#pragma GCC unroll 3
    for (index_t v = 0; v < NV; ++v) {
      T* c = C + i * ldc + j + v * L;
      (acc[i][v] + V::load_unaligned(c)).store_unaligned(c);
    }
}

}  // namespace detail

/// ref::conv_split2; on AVX-512 with masked loads and stores (other ISAs: the reference).
template <class Arch = default_arch, class T>
void conv_split2(const T* in, index_t ldi, index_t R, index_t n, T* even, T* odd, index_t ldo) {
#if defined(__AVX512F__)
  if constexpr (detail::conv_avx512<Arch>) {
    using D = detail::Avx512Rows<T>;
    constexpr index_t L = D::L;
    for (index_t r = 0; r < R; ++r, in += ldi, even += ldo, odd += ldo)
      for (index_t i = 0; i < n; i += 2 * L) {
        const index_t m = n - i;
        decltype(D::set1(T(0))) e, o;
        D::split(D::load(in + i, m), D::load(in + i + L, m - L), e, o);
        D::store(even + i / 2, e, (m + 1) / 2);
        D::store(odd + i / 2, o, m / 2);
      }
    return;
  }
#endif
  ref::conv_split2(in, ldi, R, n, even, odd, ldo);
}
/// ref::conv_copy_rows; on AVX-512 with masked loads and stores.
template <class Arch = default_arch, class T>
void conv_copy_rows(const T* src, index_t lds, index_t R, index_t n, T* dst, index_t ldd, T b) {
#if defined(__AVX512F__)
  if constexpr (detail::conv_avx512<Arch>) {
    using D = detail::Avx512Rows<T>;
    const auto bv = D::set1(b);
    for (index_t r = 0; r < R; ++r, src += lds, dst += ldd)
      for (index_t i = 0; i < n; i += D::L) D::store(dst + i, D::add(D::load(src + i, n - i), bv), n - i);
    return;
  }
#endif
  ref::conv_copy_rows(src, lds, R, n, dst, ldd, b);
}
/// ref::conv_merge2_add; on AVX-512 with masked loads and stores.
template <class Arch = default_arch, class T>
void conv_merge2_add(const T* even, const T* odd, index_t lds, index_t R, index_t n, T* dst, index_t ldd) {
#if defined(__AVX512F__)
  if constexpr (detail::conv_avx512<Arch>) {
    using D = detail::Avx512Rows<T>;
    constexpr index_t L = D::L;
    for (index_t r = 0; r < R; ++r, even += lds, odd += lds, dst += ldd)
      for (index_t i = 0; i < n; i += 2 * L) {
        const index_t m = n - i;
        decltype(D::set1(T(0))) a, b;
        D::merge(D::load(even + i / 2, (m + 1) / 2), D::load(odd + i / 2, m / 2), a, b);
        D::store(dst + i, D::add(a, D::load(dst + i, m)), m);
        D::store(dst + i + L, D::add(b, D::load(dst + i + L, m - L)), m - L);
      }
    return;
  }
#endif
  ref::conv_merge2_add(even, odd, lds, R, n, dst, ldd);
}

/// ref::conv_gemm for M a multiple of conv_mr and N of conv_nv vectors (reads
/// src up to off[k] + N).
template <class Arch = default_arch, class T>
void conv_gemm(const T* A, const T* src, const index_t* off, T* C, index_t M, index_t N, index_t K, index_t ldc) {
  constexpr index_t NR = conv_nv * index_t(batch<T, Arch>::size);
  for (index_t j = 0; j < N; j += NR)
    for (index_t m = 0; m < M; m += conv_mr) detail::conv_block<Arch>(A + m, src, off, C + m * ldc, M, K, j, ldc);
}

/// ref::conv_gemm_tn for M a multiple of conv_mr and N of the vector length.
template <class Arch = default_arch, class T>
void conv_gemm_tn(const T* src, const index_t* off, const T* B, index_t ldb, T* C, index_t M, index_t N, index_t Q,
                  index_t ldc) {
  constexpr index_t L = index_t(batch<T, Arch>::size), NR = conv_nv * L;
  for (index_t m = 0; m < M; m += conv_mr) {
    index_t j = 0;
    for (; j + NR <= N; j += NR) detail::conv_block_tn<Arch, conv_nv>(src, off + m, B, ldb, C + m * ldc, Q, j, ldc);
    for (; j + 2 * L <= N; j += 2 * L) detail::conv_block_tn<Arch, 2>(src, off + m, B, ldb, C + m * ldc, Q, j, ldc);
    for (; j < N; j += L) detail::conv_block_tn<Arch, 1>(src, off + m, B, ldb, C + m * ldc, Q, j, ldc);
  }
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
