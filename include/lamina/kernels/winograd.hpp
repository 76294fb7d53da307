#pragma once
// Winograd F(2×2, 3×3) pieces for the 3×3, stride 1, padding 1 convolution
// (modules/conv2d.hpp; Lavin & Gray 2016). With the transforms
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],  G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
//   Aᵀ = [1 1 1 0; 0 1 −1 −1],
// a 2×2 output tile is Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A for the 4×4 input tile d
// around it, and, for L = <Y, dY>, ∂L/∂(G g Gᵀ) = (A dY Aᵀ) ⊙ (Bᵀ d B).
// Summed over channels the 16 element-wise products are 16 matrix products,
// done here by register-blocked micro-kernels.
//
// Tiles are addressed through polyphase layouts, flat with a pitch of TW (the
// tiles per row): an input plane, padded by one, is held as 8 arrays
// (row parity a, column parity b, column shift s), array (a, b, s) holding
// padded element (2i + a, 2(k + s) + b) at i·TW + k; then element (r, c) of
// tile q is array (r & 1, c & 1, c >> 1) at q + (r >> 1)·TW, linear in q, so
// the transforms run vectorised over consecutive tiles of any image width and
// every lane is a real tile. Output tiles use 4 arrays (a, b): element
// (2i + a, 2k + b) at i·TW + k. Vector loads and stores run over whole vectors
// past the last tile: callers keep a vector of slack.
// NaN/Inf propagate as in the arithmetic, but each spreads over its tiles'
// transforms: a non-finite input makes every output of the tiles it enters
// NaN or Inf, not only its 3×3 neighbourhood.
#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

/// Register block of the product micro-kernels: rows (broadcast) × vectors.
inline constexpr index_t winograd_mr = 8;
inline constexpr index_t winograd_nv = 2;

/// Where winograd_gemm_nt puts element (m, j) of its M × N result: 4 × 4
/// blocks, row-major within a block and across the N / 4 blocks of a row.
constexpr index_t nt_index(index_t m, index_t j, index_t N) { return ((m / 4) * (N / 4) + j / 4) * 16 + m % 4 * 4 + j % 4; }

namespace ref {
/// V[e·es + q] = (Bᵀ d_q B)[e], e = 4i + j, for tiles q < n of the 8-array
/// input polyphase P (arrays at stride ps, flat pitch `pitch`).
template <class T>
void winograd_input(const T* P, index_t ps, index_t pitch, index_t n, T* V, index_t es) {
  for (index_t q = 0; q < n; ++q) {
    T d[4][4], t[4][4];
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 4; ++c) d[r][c] = P[((r & 1) * 4 + (c & 1) * 2 + (c >> 1)) * ps + q + (r >> 1) * pitch];
    for (int c = 0; c < 4; ++c)
      t[0][c] = d[0][c] - d[2][c], t[1][c] = d[1][c] + d[2][c], t[2][c] = d[2][c] - d[1][c], t[3][c] = d[1][c] - d[3][c];
    for (int r = 0; r < 4; ++r) {
      T* v = V + 4 * r * es + q;
      v[0] = t[r][0] - t[r][2], v[es] = t[r][1] + t[r][2], v[2 * es] = t[r][2] - t[r][1], v[3 * es] = t[r][1] - t[r][3];
    }
  }
}
/// Y[(2a + b)·ps + q] = (Aᵀ M_q A)[a][b] for tiles q < n, M_q[e] = M[e·es + q].
template <class T>
void winograd_output(const T* M, index_t es, index_t n, T* Y, index_t ps) {
  for (index_t q = 0; q < n; ++q) {
    T s[2][4];
    for (int c = 0; c < 4; ++c) {
      const T m0 = M[c * es + q], m1 = M[(4 + c) * es + q], m2 = M[(8 + c) * es + q], m3 = M[(12 + c) * es + q];
      s[0][c] = m0 + m1 + m2, s[1][c] = m1 - m2 - m3;
    }
    for (int a = 0; a < 2; ++a)
      Y[2 * a * ps + q] = s[a][0] + s[a][1] + s[a][2], Y[(2 * a + 1) * ps + q] = s[a][1] - s[a][2] - s[a][3];
  }
}
/// D_q = (A dY_q Aᵀ), dY_q[a][b] = G[(2a + b)·ps + q]: D[e·es + q] for q < n.
template <class T>
void winograd_output_grad(const T* G, index_t ps, index_t n, T* D, index_t es) {
  for (index_t q = 0; q < n; ++q) {
    T t[4][2];
    for (int b = 0; b < 2; ++b) {
      const T g0 = G[b * ps + q], g1 = G[(2 + b) * ps + q];
      t[0][b] = g0, t[1][b] = g0 + g1, t[2][b] = g0 - g1, t[3][b] = -g1;
    }
    for (int r = 0; r < 4; ++r) {
      T* d = D + 4 * r * es + q;
      d[0] = t[r][0], d[es] = t[r][0] + t[r][1], d[2 * es] = t[r][0] - t[r][1], d[3 * es] = -t[r][1];
    }
  }
}
/// C[m·ldc + j] = Σ_k A[k·M + m] · B[k·ldb + j] for m < M, j < N.
template <class T>
void winograd_gemm(const T* A, const T* B, T* C, index_t M, index_t N, index_t K, index_t ldb, index_t ldc) {
  for (index_t m = 0; m < M; ++m)
    for (index_t j = 0; j < N; ++j) {
      T s = 0;
      for (index_t k = 0; k < K; ++k) s += A[k * M + m] * B[k * ldb + j];
      C[m * ldc + j] = s;
    }
}
/// C[nt_index(m, j, N)] += Σ_k A[m·ld + k] · B[j·ld + k] for m < M, j < N
/// (M and N multiples of 4).
template <class T>
void winograd_gemm_nt(const T* A, const T* B, T* C, index_t M, index_t N, index_t K, index_t ld) {
  for (index_t m = 0; m < M; ++m)
    for (index_t j = 0; j < N; ++j) {
      T s = 0;
      for (index_t k = 0; k < K; ++k) s += A[m * ld + k] * B[j * ld + k];
      C[nt_index(m, j, N)] += s;
    }
}
}  // namespace ref

/// ref::winograd_input, vectorised over tiles; writes whole vectors (up to n
/// rounded up to the vector length), reads as far.
template <class Arch = default_arch, class T>
void winograd_input(const T* P, index_t ps, index_t pitch, index_t n, T* V, index_t es) {
  using B = batch<T, Arch>;
  constexpr index_t L = index_t(B::size);
  for (index_t q = 0; q < n; q += L) {
    const auto ld = [&](int r, int c) {
      return B::load_unaligned(P + ((r & 1) * 4 + (c & 1) * 2 + (c >> 1)) * ps + q + (r >> 1) * pitch);
    };
    B t[4][4];
    for (int c = 0; c < 4; ++c) {
      const B d0 = ld(0, c), d1 = ld(1, c), d2 = ld(2, c), d3 = ld(3, c);
      t[0][c] = d0 - d2, t[1][c] = d1 + d2, t[2][c] = d2 - d1, t[3][c] = d1 - d3;
    }
    for (int r = 0; r < 4; ++r) {
      T* v = V + 4 * r * es + q;
      (t[r][0] - t[r][2]).store_unaligned(v);
      (t[r][1] + t[r][2]).store_unaligned(v + es);
      (t[r][2] - t[r][1]).store_unaligned(v + 2 * es);
      (t[r][1] - t[r][3]).store_unaligned(v + 3 * es);
    }
  }
}

/// ref::winograd_output, vectorised over tiles (whole vectors, as above).
template <class Arch = default_arch, class T>
void winograd_output(const T* M, index_t es, index_t n, T* Y, index_t ps) {
  using B = batch<T, Arch>;
  constexpr index_t L = index_t(B::size);
  for (index_t q = 0; q < n; q += L) {
    B s[2][4];
    for (int c = 0; c < 4; ++c) {
      const B m0 = B::load_unaligned(M + c * es + q), m1 = B::load_unaligned(M + (4 + c) * es + q);
      const B m2 = B::load_unaligned(M + (8 + c) * es + q), m3 = B::load_unaligned(M + (12 + c) * es + q);
      s[0][c] = m0 + m1 + m2, s[1][c] = m1 - m2 - m3;
    }
    for (int a = 0; a < 2; ++a) {
      (s[a][0] + s[a][1] + s[a][2]).store_unaligned(Y + 2 * a * ps + q);
      (s[a][1] - s[a][2] - s[a][3]).store_unaligned(Y + (2 * a + 1) * ps + q);
    }
  }
}

/// ref::winograd_output_grad, vectorised over tiles (whole vectors, as above).
template <class Arch = default_arch, class T>
void winograd_output_grad(const T* G, index_t ps, index_t n, T* D, index_t es) {
  using B = batch<T, Arch>;
  constexpr index_t L = index_t(B::size);
  for (index_t q = 0; q < n; q += L) {
    B t[4][2];
    for (int b = 0; b < 2; ++b) {
      const B g0 = B::load_unaligned(G + b * ps + q), g1 = B::load_unaligned(G + (2 + b) * ps + q);
      t[0][b] = g0, t[1][b] = g0 + g1, t[2][b] = g0 - g1, t[3][b] = -g1;
    }
    for (int r = 0; r < 4; ++r) {
      T* d = D + 4 * r * es + q;
      t[r][0].store_unaligned(d);
      (t[r][0] + t[r][1]).store_unaligned(d + es);
      (t[r][0] - t[r][1]).store_unaligned(d + 2 * es);
      (-t[r][1]).store_unaligned(d + 3 * es);
    }
  }
}

namespace detail {
/// One winograd_mr × (winograd_nv vectors) block of C = AᵀB (see winograd_gemm).
template <class Arch, class T>
void winograd_block(const T* A, const T* B, T* C, index_t M, index_t K, index_t ldb, index_t ldc) {
  using V = batch<T, Arch>;
  constexpr index_t L = index_t(V::size);
  V acc[winograd_mr][winograd_nv];
#pragma GCC unroll 8
  for (index_t i = 0; i < winograd_mr; ++i)
#pragma GCC unroll 2
    for (index_t v = 0; v < winograd_nv; ++v) acc[i][v] = V(T(0));
  for (index_t k = 0; k < K; ++k) {
    V b[winograd_nv];
#pragma GCC unroll 2
    for (index_t v = 0; v < winograd_nv; ++v) b[v] = V::load_unaligned(B + k * ldb + v * L);
    const T* a = A + k * M;
#pragma GCC unroll 8
    for (index_t i = 0; i < winograd_mr; ++i) {
      const V ai(a[i]);
#pragma GCC unroll 2
      for (index_t v = 0; v < winograd_nv; ++v) acc[i][v] = xsimd::fma(ai, b[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (index_t i = 0; i < winograd_mr; ++i)
#pragma GCC unroll 2
    for (index_t v = 0; v < winograd_nv; ++v) acc[i][v].store_unaligned(C + i * ldc + v * L);
}

/// haddp(row) with sum i in lane i. xsimd 8.1's AVX-512 float haddp returns
/// its lanes permuted (2 ↔ 4, 3 ↔ 5, 10 ↔ 12, 11 ↔ 13: an involution), so its
/// rows go in permuted; the kernel tests check the order on every ISA.
template <class Arch, class T>
batch<T, Arch> ordered_haddp(const batch<T, Arch>* row) {
  if constexpr (std::is_same_v<T, float> && std::is_base_of_v<xsimd::avx512f, Arch>) {
    constexpr int perm[16] = {0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15};
    batch<T, Arch> r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = row[perm[i]];
    return xsimd::haddp(r);
  } else {
    return xsimd::haddp(row);
  }
}

/// A 4 × 4 block of C += A Bᵀ reduced over K (a multiple of the vector length),
/// C the block's 16 contiguous elements. The 16 sums are reduced together
/// (haddp), L at a time: one pass over the accumulators instead of 16 hadds.
template <class Arch, class T>
void winograd_block_nt(const T* A, const T* B, T* C, index_t K, index_t ld) {
  using V = batch<T, Arch>;
  constexpr index_t L = index_t(V::size);
  static_assert(16 % L == 0);
  V acc[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) acc[i] = V(T(0));
  for (index_t k = 0; k < K; k += L) {
    V a[4], b[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) a[i] = V::load_unaligned(A + i * ld + k), b[i] = V::load_unaligned(B + i * ld + k);
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[4 * i + j] = xsimd::fma(a[i], b[j], acc[4 * i + j]);
  }
  for (index_t g = 0; g < 16; g += L) (V::load_unaligned(C + g) + ordered_haddp<Arch>(acc + g)).store_unaligned(C + g);
}
}  // namespace detail

/// ref::winograd_gemm for M a multiple of winograd_mr and N of winograd_nv
/// vectors: A is the packed [K][M] left factor, B and C row-major.
template <class Arch = default_arch, class T>
void winograd_gemm(const T* A, const T* B, T* C, index_t M, index_t N, index_t K, index_t ldb, index_t ldc) {
  constexpr index_t NR = winograd_nv * index_t(batch<T, Arch>::size);
  for (index_t j = 0; j < N; j += NR)
    for (index_t m = 0; m < M; m += winograd_mr) detail::winograd_block<Arch>(A + m, B + j, C + m * ldc + j, M, K, ldb, ldc);
}

/// ref::winograd_gemm_nt for M and N multiples of 4 and K of the vector length.
template <class Arch = default_arch, class T>
void winograd_gemm_nt(const T* A, const T* B, T* C, index_t M, index_t N, index_t K, index_t ld) {
  for (index_t m = 0; m < M; m += 4)
    for (index_t j = 0; j < N; j += 4) detail::winograd_block_nt<Arch>(A + m * ld, B + j * ld, C + nt_index(m, j, N), K, ld);
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
