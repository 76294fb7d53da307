#pragma once
// The Winograd F(2×2, 3×3) and F(4×4, 3×3) paths of Conv2d for 3×3 kernels,
// stride 1, padding 1 (Winograd3x3<T, 2> and <T, 4>; kernels/winograd.hpp has
// the F(2×2) transforms and the products, kernels/winograd4.hpp the F(4×4)
// transforms). Below, M is the output tile (2 or 4) and E = (M + 2)² the
// element-wise products per tile.
//
// Images are taken in chunks of about 2 MB of transformed data; per chunk
// each plane is copied into its polyphase layout (zero padding built in),
// transformed to V [E][C][tiles of the chunk], multiplied by the transformed
// weights (E products [Cout × Cin]·[Cin × tiles]) and transformed back, the
// M×M tiles interleaved into NCHW. The data gradient is the same convolution
// of dy with the kernel rotated by 180° and the channels swapped; the weight
// gradient transforms dy tiles (A dY Aᵀ), sums their products with the input
// tiles' V over the tiles (E products [Cout × tiles]·[tiles × Cin]) and maps
// the sums back through Gᵀ · G. Chunks run in parallel, each thread on its own
// scratch (kept between calls: no steady-state allocation).
#include <algorithm>
#include <vector>

#include "lamina/core/aligned.hpp"
#include "lamina/core/parallel.hpp"
#include "lamina/kernels/dispatch.hpp"
#include "lamina/kernels/winograd4.hpp"

namespace lamina::detail {

inline index_t round_up(index_t n, index_t m) { return (n + m - 1) / m * m; }

/// U = G g Gᵀ for one 3×3 kernel g (row-major), u[4i + j].
template <class T>
void winograd_weight(const T* g, T* u) {
  T s[4][3];
  for (int c = 0; c < 3; ++c) {
    const T g0 = g[c], g1 = g[3 + c], g2 = g[6 + c];
    s[0][c] = g0, s[1][c] = T(0.5) * (g0 + g1 + g2), s[2][c] = T(0.5) * (g0 - g1 + g2), s[3][c] = g2;
  }
  for (int r = 0; r < 4; ++r) {
    const T a = s[r][0], b = s[r][1], c = s[r][2];
    u[4 * r] = a, u[4 * r + 1] = T(0.5) * (a + b + c), u[4 * r + 2] = T(0.5) * (a - b + c), u[4 * r + 3] = c;
  }
}

/// dg += Gᵀ dU G for one 4×4 dU (du[4i + j] at stride `es`), dg 3×3 row-major.
template <class T>
void winograd_weight_grad(const T* du, index_t es, T* dg) {
  T t[3][4];
  for (int c = 0; c < 4; ++c) {
    const T d0 = du[c * es], d1 = du[(4 + c) * es], d2 = du[(8 + c) * es], d3 = du[(12 + c) * es];
    t[0][c] = d0 + T(0.5) * (d1 + d2), t[1][c] = T(0.5) * (d1 - d2), t[2][c] = T(0.5) * (d1 + d2) + d3;
  }
  for (int r = 0; r < 3; ++r) {
    const T* a = t[r];
    dg[3 * r] += a[0] + T(0.5) * (a[1] + a[2]);
    dg[3 * r + 1] += T(0.5) * (a[1] - a[2]);
    dg[3 * r + 2] += T(0.5) * (a[1] + a[2]) + a[3];
  }
}

/// U = G g Gᵀ for one 3×3 kernel g (row-major) in F(4×4, 3×3): u[6i + j].
template <class T>
void winograd4_weight(const T* g, T* u) {
  using Mx = kernels::Winograd4Matrices<T>;
  T s[6][3];
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 3; ++c) s[i][c] = Mx::G[i][0] * g[c] + Mx::G[i][1] * g[3 + c] + Mx::G[i][2] * g[6 + c];
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) u[6 * i + j] = s[i][0] * Mx::G[j][0] + s[i][1] * Mx::G[j][1] + s[i][2] * Mx::G[j][2];
}

/// dg += Gᵀ dU G for one 6×6 dU (du[6i + j] at stride `es`), dg 3×3 row-major.
template <class T>
void winograd4_weight_grad(const T* du, index_t es, T* dg) {
  using Mx = kernels::Winograd4Matrices<T>;
  T t[3][6];
  for (int u = 0; u < 3; ++u)
    for (int j = 0; j < 6; ++j) {
      t[u][j] = 0;
      for (int i = 0; i < 6; ++i) t[u][j] += Mx::G[i][u] * du[(6 * i + j) * es];
    }
  for (int u = 0; u < 3; ++u)
    for (int v = 0; v < 3; ++v) {
      T a = 0;
      for (int j = 0; j < 6; ++j) a += t[u][j] * Mx::G[j][v];
      dg[3 * u + v] += a;
    }
}

/// Winograd F(M×M, 3×3), M = 2 or 4.
template <class T, int M = 2>
class Winograd3x3 {
  static_assert(M == 2 || M == 4);
  static constexpr index_t E = (M + 2) * (M + 2);  ///< element-wise products per tile

 public:
  /// Channels and image size of the next calls (reallocates only on a change).
  void plan(index_t B, index_t Cin, index_t Cout, index_t H, index_t W) {
    const kernels::KernelTable<T>& k = kernels::table<T>();
    const index_t L = k.winograd_nr / kernels::winograd_nv;
    Plan p{.B = B, .Cin = Cin, .Cout = Cout, .H = H, .W = W};
    p.TH = (H + M - 1) / M, p.TW = (W + M - 1) / M, p.pitch = p.TW, p.Q = p.TH * p.pitch;
    p.ps = round_up(p.Q + p.pitch + 2 * L, L);
    p.Cp = round_up(std::max(Cin, Cout), kernels::winograd_mr);
    const index_t cols = std::max<index_t>(64, (index_t(1) << 19) / (E * (Cin + Cout)));
    // Chunks of about `cols` tiles, their count a multiple of the threads
    // (when there are enough images): chunk c holds the images
    // [B·c / chunks, B·(c + 1) / chunks), at most nimg of them.
    const index_t threads = num_threads(), fit = std::clamp<index_t>(cols / p.Q, 1, B);
    p.chunks = (B + fit - 1) / fit;
    if (p.chunks > 1) p.chunks = std::min(B, round_up(p.chunks, threads));
    p.nimg = (B + p.chunks - 1) / p.chunks;
    p.ld = round_up(p.nimg * p.Q, k.winograd_nr) + L;
    p.ys = round_up(p.nimg * p.Q, L) + L;
    // The E rows of a tile's transform are es apart: off the 4 KiB multiples
    // that would put them all in one L1 set.
    p.es = round_up(p.Cp * p.ld, 1024) + 2 * L;
    const bool same = p.Cin == p_.Cin && p.Cout == p_.Cout && p.H == p_.H && p.W == p_.W && p.nimg == p_.nimg &&
                      p.chunks == p_.chunks;
    p_ = p;
    scratch_.resize(static_cast<std::size_t>(num_threads()));
    for (Scratch& s : scratch_) {
      if (same && s.ready) continue;
      const auto block = static_cast<std::size_t>(E * p.es);
      s.P.assign(static_cast<std::size_t>(2 * M * M * p.ps), T(0));
      s.Pd.assign(static_cast<std::size_t>(M * M * p.ps), T(0));
      s.Y.assign(static_cast<std::size_t>(M * M * (M == 2 ? p.ps : p.ys)), T(0));
      s.Z.assign(static_cast<std::size_t>(M == 2 ? 0 : M * p.ys), T(0));
      s.row.assign(static_cast<std::size_t>(M * (p.TW + 2)), T(0));
      s.V.assign(block, T(0)), s.Mv.assign(block, T(0)), s.D.assign(block, T(0));
      s.dU.assign(static_cast<std::size_t>(E * round_up(Cout, 4) * round_up(Cin, 4)), T(0));
      s.ready = true;
    }
    U_.resize(static_cast<std::size_t>(E * p.Cp * p.Cp));
  }

  /// y = conv(x, w) + bias (bias may be null); w [Cout, Cin, 3, 3].
  void forward(const T* w, const T* bias, const T* x, T* y) {
    pack_weights(w, false);
    apply(x, p_.Cin, p_.Cout, y, bias, false);
  }
  /// dx += the data gradient of dy.
  void backward_input(const T* w, const T* dy, T* dx) {
    pack_weights(w, true);
    apply(dy, p_.Cout, p_.Cin, dx, nullptr, true);
  }
  /// dw += the weight gradient for x and dy.
  void backward_weight(const T* x, const T* dy, T* dw);

 private:
  struct Plan {
    index_t B = 0, Cin = 0, Cout = 0, H = 0, W = 0;
    index_t TH = 0, TW = 0, pitch = 0, Q = 0, ps = 0, Cp = 0, nimg = 0, chunks = 0, ld = 0, es = 0;
    index_t ys = 0;  ///< pitch of the chunk-wide output polyphase (M = 4)
  };
  struct Scratch {
    aligned_vector<T> P, Pd, Y, V, Mv, D, dU;  // polyphase (padded, unpadded, output); transforms, products; dW sums
    aligned_vector<T> row, Z;  // F(4×4): one padded row; one row phase of the chunk's output tiles
    bool ready = false;
  };

  /// U_[e][k][m] (m < Mp, zero beyond the output channels): forward k = ci,
  /// m = co; data gradient (kernel rotated by 180°) k = co, m = ci.
  void pack_weights(const T* w, bool rotate) {
    const index_t K = rotate ? p_.Cout : p_.Cin, Mp = round_up(rotate ? p_.Cin : p_.Cout, kernels::winograd_mr);
    std::fill(U_.begin(), U_.end(), T(0));
    for (index_t co = 0; co < p_.Cout; ++co)
      for (index_t ci = 0; ci < p_.Cin; ++ci) {
        T g[9], u[E];
        const T* src = w + (co * p_.Cin + ci) * 9;
        for (int i = 0; i < 9; ++i) g[i] = rotate ? src[8 - i] : src[i];
        if constexpr (M == 2) winograd_weight(g, u);
        else winograd4_weight(g, u);
        const index_t kk = rotate ? co : ci, mm = rotate ? ci : co;
        for (index_t e = 0; e < E; ++e) U_[static_cast<std::size_t>((e * K + kk) * Mp + mm)] = u[e];
      }
  }

  /// even[k] = s[2k], odd[k] = s[2k + 1] for one row of W (plain loops: the
  /// compiler vectorises the interleaved accesses).
  static void deinterleave(const T* s, index_t W, T* even, T* odd) {
    const index_t no = W / 2;
    for (index_t k = 0; k < no; ++k) even[k] = s[2 * k], odd[k] = s[2 * k + 1];
    if (W & 1) even[no] = s[W - 1];
  }
  /// Copies one plane, padded by one, into the 8-array input polyphase
  /// (kernels/winograd.hpp): array (a, b, s) at (a·4 + b·2 + s)·ps. Elements
  /// outside the image are never written (they stay 0), but for the first
  /// column of array (a, 0, 0), which is cleared after use.
  void to_input_polyphase(const T* src, Scratch& s) const {
    if constexpr (M != 2) return to_input_polyphase_strided(src, s);
    T* P = s.P.data();
    const index_t H = p_.H, W = p_.W, TW = p_.TW, ps = p_.ps, n = (p_.TH + 1) * TW;
    for (index_t r = 0; r < H; ++r) {
      T* row = P + ((r + 1) & 1) * 4 * ps + ((r + 1) >> 1) * TW;
      // Odd padded columns to (a, 1, 0); even ones to (a, 0, 0) from its second
      // column (the last of an even W spills into the next row's first).
      deinterleave(src + r * W, W, row + 2 * ps, row + 1);
    }
    // Shift 1 is shift 0 one element on, but at the rows' ends: (a, 0, 1) ends
    // on the spilled column (or the 0 of the next row's padding), (a, 1, 1) on 0.
    for (index_t a = 0; a < 2; ++a) {
      T* p = P + a * 4 * ps;
      std::copy(p + 1, p + n + 1, p + ps);
      std::copy(p + 2 * ps + 1, p + 2 * ps + n + 1, p + 3 * ps);
      for (index_t i = 0; i <= p_.TH; ++i) p[i * TW] = T(0), p[3 * ps + i * TW + TW - 1] = T(0);
    }
  }
  /// The input polyphase for any M: array (a, b, s) at ((a·M + b)·2 + s)·ps
  /// holds padded element (M·i + a, M·(k + s) + b) at i·TW + k. Each row is
  /// padded, then split into its M column phases (shift 0); shift 1 is shift 0
  /// one element on, but at the rows' ends (k = TW − 1), where it is padded
  /// column M·TW + b: the last image column when b = 0 and W = M·TW, else 0.
  /// Rows of the padding are never written (they stay 0).
  void to_input_polyphase_strided(const T* src, Scratch& s) const {
    const index_t H = p_.H, W = p_.W, TW = p_.TW, ps = p_.ps, n = (p_.TH + 1) * TW;
    T* row = s.row.data();  // row[0] and row[W + 1 ..] stay 0
    const auto arr = [&](index_t a, index_t b, index_t sh) { return s.P.data() + ((a * M + b) * 2 + sh) * ps; };
    for (index_t r = 0; r < H; ++r) {
      for (index_t c = 0; c < W; ++c) row[c + 1] = src[r * W + c];  // short: no memmove call
      const index_t a = (r + 1) % M, i = (r + 1) / M;
      T* d[M];
      for (index_t b = 0; b < M; ++b) d[b] = arr(a, b, 0) + i * TW;
      for (index_t k = 0; k < TW; ++k)
        for (index_t b = 0; b < M; ++b) d[b][k] = row[M * k + b];
    }
    for (index_t a = 0; a < M; ++a)
      for (index_t b = 0; b < M; ++b) {
        T* s1 = arr(a, b, 1);
        const T* s0 = arr(a, b, 0) + 1;
        for (index_t k = 0; k < n; ++k) s1[k] = s0[k];
        for (index_t i = 0, R = a; i <= p_.TH; ++i, R += M)
          s1[i * TW + TW - 1] = b == 0 && W == M * TW && R >= 1 && R <= H ? src[(R - 1) * W + W - 1] : T(0);
      }
  }
  /// Copies one plane into the M²-array output polyphase: array (a, b) at
  /// (a·M + b)·ps holds element (M·i + a, M·k + b) at i·TW + k; elements past
  /// the image are never written (they stay 0).
  void to_output_polyphase(const T* src, T* P) const {
    const index_t H = p_.H, W = p_.W, TW = p_.TW, ps = p_.ps;
    if constexpr (M != 2) {
      for (index_t r = 0; r < H; ++r)
        for (index_t b = 0; b < M && b < W; ++b) {
          T* d = P + ((r % M) * M + b) * ps + (r / M) * TW;
          for (index_t k = 0, c = b; c < W; ++k, c += M) d[k] = src[r * W + c];
        }
      return;
    }
    for (index_t r = 0; r < H; ++r) {
      T* even = P + (r & 1) * 2 * ps + (r >> 1) * TW;
      deinterleave(src + r * W, W, even, even + ps);
    }
  }
  /// dst (+)= the interleaved 2×2 tiles of Y (plus bias when given).
  void from_polyphase(const T* Y, T* dst, T bias, bool accumulate) const {
    const index_t H = p_.H, W = p_.W, TW = p_.TW, ps = p_.ps, no = W / 2;
    for (index_t r = 0; r < H; ++r) {
      const T* even = Y + (r & 1) * 2 * ps + (r >> 1) * TW;
      const T* odd = even + ps;
      T* d = dst + r * W;
      if (accumulate) {
        for (index_t k = 0; k < no; ++k) d[2 * k] += even[k], d[2 * k + 1] += odd[k];
        if (W & 1) d[W - 1] += even[no];
      } else {
        for (index_t k = 0; k < no; ++k) d[2 * k] = even[k] + bias, d[2 * k + 1] = odd[k] + bias;
        if (W & 1) d[W - 1] = even[no] + bias;
      }
    }
  }

  /// Transforms Cs planes of the images [b0, b0 + nb) into s.V.
  void transform_input(const T* src, index_t Cs, index_t b0, index_t nb, Scratch& s) const {
    const kernels::KernelTable<T>& k = kernels::table<T>();
    const index_t plane = p_.H * p_.W, es = p_.es;
    for (index_t i = 0; i < nb; ++i)
      for (index_t c = 0; c < Cs; ++c) {
        to_input_polyphase(src + ((b0 + i) * Cs + c) * plane, s);
        (M == 2 ? k.winograd_input : k.winograd4_input)(s.P.data(), p_.ps, p_.pitch, p_.Q, s.V.data() + c * p_.ld + i * p_.Q, es);
      }
  }

  /// dst (+)= the convolution of src (Cs channels) by the packed U_ (Cd outputs).
  void apply(const T* src, index_t Cs, index_t Cd, T* dst, const T* bias, bool accumulate) {
    const kernels::KernelTable<T>& k = kernels::table<T>();
    const index_t plane = p_.H * p_.W, es = p_.es, Mp = round_up(Cd, kernels::winograd_mr);
    parallel_for(p_.chunks, [&](index_t ch) {
      Scratch& s = scratch_[static_cast<std::size_t>(thread_id())];
      const index_t b0 = p_.B * ch / p_.chunks, nb = p_.B * (ch + 1) / p_.chunks - b0;
      transform_input(src, Cs, b0, nb, s);
      const index_t N = round_up(nb * p_.Q, k.winograd_nr);
      for (index_t e = 0; e < E; ++e)
        k.winograd_gemm(U_.data() + e * Cs * Mp, s.V.data() + e * es, s.Mv.data() + e * es, Mp, N, Cs, p_.ld,
                        p_.ld);
      for (index_t c = 0; c < Cd; ++c) {
        T* d = dst + (b0 * Cd + c) * plane;
        const T bc = bias ? bias[c] : T(0);
        if constexpr (M != 2) {
          k.winograd4_output(s.Mv.data() + c * p_.ld, es, nb * p_.Q, s.Y.data(), p_.ys);
          from_chunk_polyphase(s, nb, d, Cd * plane, bc, accumulate);
          continue;
        }
        for (index_t i = 0; i < nb; ++i) {
          k.winograd_output(s.Mv.data() + c * p_.ld + i * p_.Q, es, p_.Q, s.Y.data(), p_.ps);
          from_polyphase(s.Y.data(), d + i * Cd * plane, bc, accumulate);
        }
      }
    });
  }
  /// The planes dst + i·stride (+)= the M×M tiles of the chunk's nb images in
  /// s.Y (array (a, b) at (a·M + b)·ys, tile i·Q + q), plus bias when given:
  /// per row phase a the M column phases are interleaved over all the chunk's
  /// tiles into s.Z, whose tile rows are then the image rows M·ti + a.
  void from_chunk_polyphase(Scratch& s, index_t nb, T* dst, index_t stride, T bias, bool accumulate) const {
    const index_t H = p_.H, W = p_.W, TW = p_.TW, Q = p_.Q, ys = p_.ys, n = nb * Q;
    T* Z = s.Z.data();
    for (index_t a = 0; a < M; ++a) {
      const T* Y = s.Y.data() + a * M * ys;
      for (index_t t = 0; t < n; ++t)
        for (index_t b = 0; b < M; ++b) Z[M * t + b] = Y[b * ys + t];
      for (index_t i = 0; i < nb; ++i)
        for (index_t ti = 0, r = a; r < H; ++ti, r += M) {
          const T* z = Z + M * (i * Q + ti * TW);
          T* d = dst + i * stride + r * W;
          if (accumulate)
            for (index_t c = 0; c < W; ++c) d[c] += z[c];
          else
            for (index_t c = 0; c < W; ++c) d[c] = z[c] + bias;
        }
    }
  }

  Plan p_;
  aligned_vector<T> U_;
  std::vector<Scratch> scratch_;
};

template <class T, int M>
void Winograd3x3<T, M>::backward_weight(const T* x, const T* dy, T* dw) {
  const kernels::KernelTable<T>& k = kernels::table<T>();
  const index_t plane = p_.H * p_.W, es = p_.es, ld = p_.ld;
  const index_t Ci4 = round_up(p_.Cin, 4), Co4 = round_up(p_.Cout, 4), us = Co4 * Ci4;
  for (Scratch& s : scratch_) std::fill(s.dU.begin(), s.dU.end(), T(0));
  parallel_for(p_.chunks, [&](index_t ch) {
    Scratch& s = scratch_[static_cast<std::size_t>(thread_id())];
    const index_t b0 = p_.B * ch / p_.chunks, nb = p_.B * (ch + 1) / p_.chunks - b0, n = nb * p_.Q;
    const index_t N = round_up(n, k.winograd_nr);
    transform_input(x, p_.Cin, b0, nb, s);
    for (index_t i = 0; i < nb; ++i)
      for (index_t c = 0; c < p_.Cout; ++c) {
        to_output_polyphase(dy + ((b0 + i) * p_.Cout + c) * plane, s.Pd.data());
        (M == 2 ? k.winograd_output_grad : k.winograd4_output_grad)(s.Pd.data(), p_.ps, p_.Q, s.D.data() + c * ld + i * p_.Q, es);
      }
    // Columns past the chunk's tiles and rows past the channels take no part.
    for (index_t e = 0; e < E; ++e) {
      for (index_t c = 0; c < Ci4; ++c) {
        T* v = s.V.data() + e * es + c * ld;
        std::fill(v + (c < p_.Cin ? n : 0), v + N, T(0));
      }
      for (index_t c = 0; c < Co4; ++c) {
        T* d = s.D.data() + e * es + c * ld;
        std::fill(d + (c < p_.Cout ? n : 0), d + N, T(0));
      }
      k.winograd_gemm_nt(s.D.data() + e * es, s.V.data() + e * es, s.dU.data() + e * us, Co4, Ci4, N, ld);
    }
  });
  // Per-thread sums reduced in a fixed order (deterministic for a thread count).
  Scratch& s0 = scratch_.front();
  for (std::size_t t = 1; t < scratch_.size(); ++t)
    for (std::size_t i = 0; i < s0.dU.size(); ++i) s0.dU[i] += scratch_[t].dU[i];
  for (index_t co = 0; co < p_.Cout; ++co)
    for (index_t ci = 0; ci < p_.Cin; ++ci)
      if constexpr (M == 2)
        winograd_weight_grad(s0.dU.data() + kernels::nt_index(co, ci, Ci4), us, dw + (co * p_.Cin + ci) * 9);
      else
        winograd4_weight_grad(s0.dU.data() + kernels::nt_index(co, ci, Ci4), us, dw + (co * p_.Cin + ci) * 9);
}

}  // namespace lamina::detail
