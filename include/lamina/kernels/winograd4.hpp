#pragma once
// Winograd F(4×4, 3×3) transforms for the 3×3, stride 1, padding 1
// convolution (modules/conv2d_winograd.hpp; Lavin & Gray 2016). With
//   Bᵀ = [4  0 −5  0 1 0;  0 −4 −4  1 1 0;  0  4 −4 −1 1 0;
//         0 −2 −1  2 1 0;  0  2 −1 −2 1 0;  0  4  0 −5 0 1],
//   G  = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1],
//   Aᵀ = [1 1 1 1 1 0;  0 1 −1 2 −2 0;  0 1 1 4 4 0;  0 1 −1 8 −8 1],
// a 4×4 output tile is Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A for the 6×6 input tile d
// around it, and, for L = <Y, dY>, ∂L/∂(G g Gᵀ) = (A dY Aᵀ) ⊙ (Bᵀ d B): 36
// element-wise products per tile for 16 outputs (F(2×2): 16 for 4), summed
// over channels by the products of winograd.hpp.
//
// Layouts as in winograd.hpp with a tile stride of 4: the input polyphase is
// 32 arrays (row phase a < 4, column phase b < 4, column shift s < 2), array
// (a, b, s) at (8a + 2b + s)·ps holding padded element (4i + a, 4(k + s) + b)
// at i·TW + k, so element (r, c) of tile q is array (r & 3, c & 3, c >> 2) at
// q + (r >> 2)·TW; the output polyphase is 16 arrays, (a, b) at (4a + b)·ps
// holding element (4i + a, 4k + b) at i·TW + k. Transform element e = 6i + j
// is at V[e·es + q]. Vector loads and stores run over whole vectors past the
// last tile: callers keep a vector of slack.
//
// The references multiply by the matrices above, as written; the vector code
// uses their factored forms (fewer operations, other rounding), so the two
// agree to rounding, not bit for bit. NaN/Inf propagate as in the arithmetic,
// spreading over the transforms of the tiles they enter (winograd.hpp).
#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {

/// The F(4×4, 3×3) matrices (row-major), shared by the references and the
/// weight transforms of the module.
template <class T>
struct Winograd4Matrices {
  static constexpr T BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                 {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr T G[6][3] = {{T(1) / 4, 0, 0},
                                {T(-1) / 6, T(-1) / 6, T(-1) / 6},
                                {T(-1) / 6, T(1) / 6, T(-1) / 6},
                                {T(1) / 24, T(1) / 12, T(1) / 6},
                                {T(1) / 24, T(-1) / 12, T(1) / 6},
                                {0, 0, 1}};
  static constexpr T AT[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

inline namespace LAMINA_KERNELS_ISA_NS {

/// Index of input polyphase array (a, b, s) for tile element (r, c).
constexpr index_t winograd4_array(int r, int c) { return (r & 3) * 8 + (c & 3) * 2 + (c >> 2); }

namespace ref {
/// V[e·es + q] = (Bᵀ d_q B)[e], e = 6i + j, for tiles q < n of the 32-array
/// input polyphase P (arrays at stride ps, flat pitch `pitch`).
template <class T>
void winograd4_input(const T* P, index_t ps, index_t pitch, index_t n, T* V, index_t es) {
  using Mx = Winograd4Matrices<T>;
  for (index_t q = 0; q < n; ++q) {
    T d[6][6], t[6][6];
    for (int r = 0; r < 6; ++r)
      for (int c = 0; c < 6; ++c) d[r][c] = P[winograd4_array(r, c) * ps + q + (r >> 2) * pitch];
    for (int i = 0; i < 6; ++i)
      for (int c = 0; c < 6; ++c) {
        t[i][c] = 0;
        for (int r = 0; r < 6; ++r) t[i][c] += Mx::BT[i][r] * d[r][c];
      }
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j) {
        T s = 0;
        for (int c = 0; c < 6; ++c) s += t[i][c] * Mx::BT[j][c];
        V[(6 * i + j) * es + q] = s;
      }
  }
}
/// Y[(4a + b)·ps + q] = (Aᵀ M_q A)[a][b] for tiles q < n, M_q[e] = M[e·es + q].
template <class T>
void winograd4_output(const T* M, index_t es, index_t n, T* Y, index_t ps) {
  using Mx = Winograd4Matrices<T>;
  for (index_t q = 0; q < n; ++q) {
    T t[4][6];
    for (int a = 0; a < 4; ++a)
      for (int c = 0; c < 6; ++c) {
        t[a][c] = 0;
        for (int r = 0; r < 6; ++r) t[a][c] += Mx::AT[a][r] * M[(6 * r + c) * es + q];
      }
    for (int a = 0; a < 4; ++a)
      for (int b = 0; b < 4; ++b) {
        T s = 0;
        for (int c = 0; c < 6; ++c) s += t[a][c] * Mx::AT[b][c];
        Y[(4 * a + b) * ps + q] = s;
      }
  }
}
/// D_q = A dY_q Aᵀ, dY_q[a][b] = G[(4a + b)·ps + q]: D[e·es + q] for q < n.
template <class T>
void winograd4_output_grad(const T* G, index_t ps, index_t n, T* D, index_t es) {
  using Mx = Winograd4Matrices<T>;
  for (index_t q = 0; q < n; ++q) {
    T t[6][4];
    for (int i = 0; i < 6; ++i)
      for (int b = 0; b < 4; ++b) {
        t[i][b] = 0;
        for (int a = 0; a < 4; ++a) t[i][b] += Mx::AT[a][i] * G[(4 * a + b) * ps + q];
      }
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 6; ++j) {
        T s = 0;
        for (int b = 0; b < 4; ++b) s += t[i][b] * Mx::AT[b][j];
        D[(6 * i + j) * es + q] = s;
      }
  }
}
}  // namespace ref

namespace detail {
/// r = Bᵀ d for one column of six (values of type S, or vectors of them), factored.
template <class S, class V>
inline void winograd4_bt(const V* d, V* r) {
  const V k2(S(2)), k4(S(4)), k5(S(5));
  const V a = d[4] - k4 * d[2], b = k4 * d[1] - d[3], c = d[4] - d[2], e = k2 * (d[3] - d[1]);
  r[0] = k4 * d[0] - k5 * d[2] + d[4];
  r[1] = a - b, r[2] = a + b;
  r[3] = c + e, r[4] = c - e;
  r[5] = k4 * d[1] - k5 * d[3] + d[5];
}
/// r = Aᵀ m (six in, four out), factored.
template <class S, class V>
inline void winograd4_at(const V* m, V* r) {
  const V k2(S(2)), k4(S(4)), k8(S(8));
  const V p = m[1] + m[2], q = m[1] - m[2], u = m[3] + m[4], v = m[3] - m[4];
  r[0] = m[0] + p + u, r[1] = q + k2 * v, r[2] = p + k4 * u, r[3] = q + k8 * v + m[5];
}
/// r = A g (four in, six out), factored.
template <class S, class V>
inline void winograd4_a(const V* g, V* r) {
  const V k2(S(2)), k4(S(4)), k8(S(8));
  const V e = g[0] + g[2], o = g[1] + g[3], e4 = g[0] + k4 * g[2], o4 = k2 * g[1] + k8 * g[3];
  r[0] = g[0], r[1] = e + o, r[2] = e - o, r[3] = e4 + o4, r[4] = e4 - o4, r[5] = g[3];
}
}  // namespace detail

/// ref::winograd4_input, vectorised over tiles; writes whole vectors (up to n
/// rounded up to the vector length), reads as far.
template <class Arch = default_arch, class T>
void winograd4_input(const T* P, index_t ps, index_t pitch, index_t n, T* V, index_t es) {
  using B = batch<T, Arch>;
  constexpr index_t L = index_t(B::size);
  for (index_t q = 0; q < n; q += L) {
    B t[6][6];  // t[i][c] = (Bᵀ d)[i][c]
    for (int c = 0; c < 6; ++c) {
      B d[6], r[6];
      for (int k = 0; k < 6; ++k) d[k] = B::load_unaligned(P + winograd4_array(k, c) * ps + q + (k >> 2) * pitch);
      detail::winograd4_bt<T>(d, r);
      for (int i = 0; i < 6; ++i) t[i][c] = r[i];
    }
    for (int i = 0; i < 6; ++i) {
      B r[6];
      detail::winograd4_bt<T>(t[i], r);
      for (int j = 0; j < 6; ++j) r[j].store_unaligned(V + (6 * i + j) * es + q);
    }
  }
}

/// ref::winograd4_output, vectorised over tiles (whole vectors, as above).
template <class Arch = default_arch, class T>
void winograd4_output(const T* M, index_t es, index_t n, T* Y, index_t ps) {
  using B = batch<T, Arch>;
  constexpr index_t L = index_t(B::size);
  for (index_t q = 0; q < n; q += L) {
    B t[4][6];  // t[a][c] = (Aᵀ M)[a][c]
    for (int c = 0; c < 6; ++c) {
      B m[6], r[4];
      for (int k = 0; k < 6; ++k) m[k] = B::load_unaligned(M + (6 * k + c) * es + q);
      detail::winograd4_at<T>(m, r);
      for (int a = 0; a < 4; ++a) t[a][c] = r[a];
    }
    for (int a = 0; a < 4; ++a) {
      B r[4];
      detail::winograd4_at<T>(t[a], r);
      for (int b = 0; b < 4; ++b) r[b].store_unaligned(Y + (4 * a + b) * ps + q);
    }
  }
}

/// ref::winograd4_output_grad, vectorised over tiles (whole vectors, as above).
template <class Arch = default_arch, class T>
void winograd4_output_grad(const T* G, index_t ps, index_t n, T* D, index_t es) {
  using B = batch<T, Arch>;
  constexpr index_t L = index_t(B::size);
  for (index_t q = 0; q < n; q += L) {
    B t[6][4];  // t[i][b] = (A dY)[i][b]
    for (int b = 0; b < 4; ++b) {
      B g[4], r[6];
      for (int a = 0; a < 4; ++a) g[a] = B::load_unaligned(G + (4 * a + b) * ps + q);
      detail::winograd4_a<T>(g, r);
      for (int i = 0; i < 6; ++i) t[i][b] = r[i];
    }
    for (int i = 0; i < 6; ++i) {
      B r[6];
      detail::winograd4_a<T>(t[i], r);
      for (int j = 0; j < 6; ++j) r[j].store_unaligned(D + (6 * i + j) * es + q);
    }
  }
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
