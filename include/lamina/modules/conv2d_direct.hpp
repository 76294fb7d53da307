#pragma once
// The direct path of Conv2d for 3×3 kernels with padding 1 and stride 1 or 2
// (the stride-2 convolutions of the E1 ResNet, and its one-channel stem): an
// implicit GEMM (kernels/conv3x3_direct.hpp) without an im2col.
//
// Images go in chunks of nI. A chunk's input is split once into its s×s
// zero-padded stride phases, the images of a chunk side by side in each row:
// phase (a, b) of channel c holds padded element (s·i + a, s·j + b) of image
// g at row i, column g·Wq + j (pitch nI·Wq). Output (i, j) of image g is then
// grid position q = i·pitch + g·Wq + j, and tap (u, v) reads phase
// (u % s, v % s) at q + (u / s)·pitch + v / s: the GEMM's row k = (c, u, v) is
// a contiguous run of a phase plane. The grid's columns j >= Wo of each image
// (one for stride 2, two for stride 1) and the rounding to whole vectors are
// computed and dropped (forward, dx) or given zero gradient (dW).
// The data gradient is, per phase (a, b) of dx (rows s·m + a, columns s·n + b),
// a stride-1 convolution of dy padded by one (laid out as the phases, pitch
// nI·(Wo + 2)) with the taps (u, v) that reach it; the weight gradient is the
// product of the input phases' runs with dyᵀ laid out on the forward grid
// (zero in the dropped columns), reduced over the grid.
// Chunks run in parallel, each thread on its own scratch (kept between calls).
#include <algorithm>
#include <array>
#include <vector>

#include "lamina/core/aligned.hpp"
#include "lamina/core/parallel.hpp"
#include "lamina/kernels/dispatch.hpp"
#include "lamina/modules/conv2d_winograd.hpp"  // round_up

namespace lamina::detail {

template <class T>
class Conv3x3Direct {
 public:
  /// Shape of the next calls (scratch reallocated only on a change).
  void plan(index_t B, index_t C, index_t O, index_t H, index_t W, index_t s) {
    const index_t nr = kernels::table<T>().conv_nr;
    Plan p{.B = B, .C = C, .O = O, .H = H, .W = W, .s = s};
    p.Ho = (H - 1) / s + 1, p.Wo = (W - 1) / s + 1;
    p.Wq = (W + 1) / s + 1, p.Hq = (H + 1) / s + 1, p.Wd = p.Wo + 2;
    // Images per chunk: >= ~512 grid columns, planes within ~512 KiB, and a chunk per thread.
    // Among those, the fewest grid columns lost to the rounding to whole column blocks.
    const index_t per_thread = (B + num_threads() - 1) / num_threads(), grid = p.Ho * p.Wq;
    index_t lo = std::clamp<index_t>((512 + grid - 1) / grid, 1, per_thread), hi = std::min(2 * lo, per_thread);
    while (lo > 1 && s * s * C * (p.Hq + 1) * lo * p.Wq * index_t(sizeof(T)) > (index_t(1) << 19)) --lo;
    index_t nI = lo;
    const auto loss = [&](index_t m) { return double(round_up(m * grid, nr) - m * grid) / double(m * grid); };
    for (index_t m = lo + 1; m <= hi; ++m)
      if (s * s * C * (p.Hq + 1) * m * p.Wq * index_t(sizeof(T)) <= (index_t(1) << 19) && loss(m) < loss(nI)) nI = m;
    p.nI = nI, p.chunks = (B + nI - 1) / nI;
    p.pitch = nI * p.Wq, p.pitch_d = nI * p.Wd;
    p.N = round_up(p.Ho * p.pitch, nr);
    p.PL = round_up(std::max(p.Hq * p.pitch, p.N + (2 / s) * (p.pitch + 1)) + 1, 16);
    p.Nd = round_up(((H + s - 1) / s) * p.pitch_d, nr);
    p.PLd = round_up(std::max((p.Ho + 2) * p.pitch_d, p.Nd + 2 * p.pitch_d + 2) + 1, 16);
    p.Mo = round_up(O, kernels::conv_mr), p.Mc = round_up(C, kernels::conv_mr);
    p.Kp = round_up(9 * C, kernels::conv_mr), p.Ow = round_up(O, nr / kernels::conv_nv);
    const bool same = p == p_;
    p_ = p;
    scratch_.resize(static_cast<std::size_t>(num_threads()));
    for (Scratch& sc : scratch_) {
      if (same && sc.ready) continue;
      sc = Scratch{};
      sc.ready = true;
    }
    if (!same) offsets();
  }
  index_t out_h() const noexcept { return p_.Ho; }
  index_t out_w() const noexcept { return p_.Wo; }

  /// y = conv(x, w) + bias (bias may be null); w [O, C, 3, 3].
  void forward(const T* w, const T* bias, const T* x, T* y);
  /// dx += the data gradient of dy.
  void backward_input(const T* w, const T* dy, T* dx);
  /// dw += the weight gradient for x and dy.
  void backward_weight(const T* x, const T* dy, T* dw);

 private:
  struct Plan {
    index_t B = 0, C = 0, O = 0, H = 0, W = 0, s = 0;
    index_t Ho = 0, Wo = 0, Wq = 0, Hq = 0, Wd = 0, nI = 0, chunks = 0, pitch = 0, pitch_d = 0;
    index_t N = 0, PL = 0, Nd = 0, PLd = 0, Mo = 0, Mc = 0, Kp = 0, Ow = 0;
    bool operator==(const Plan&) const = default;
  };
  struct Scratch {
    aligned_vector<T> planes, out, G, dW;  ///< input phases; forward grid output; dyᵀ on the grid; dWᵀ sums
    aligned_vector<T> D, outd;            ///< padded dy; a dx phase's grid output
    bool ready = false;
  };
  /// A dx phase (rows s·m + a, columns s·n + b): its rows, its taps and their offsets in the padded dy.
  struct Phase {
    index_t rows = 0;
    std::vector<index_t> off;
    std::vector<std::array<int, 2>> taps;  ///< (u, v) per tap
  };

  /// Tap offsets of the forward GEMM rows (c, u, v), and the dx phases'.
  void offsets() {
    const index_t s = p_.s;
    koff_.assign(static_cast<std::size_t>(p_.Kp), 0);
    for (index_t c = 0; c < p_.C; ++c)
      for (index_t u = 0; u < 3; ++u)
        for (index_t v = 0; v < 3; ++v)
          koff_[static_cast<std::size_t>(c * 9 + u * 3 + v)] =
              (((u % s) * s + v % s) * p_.C + c) * p_.PL + (u / s) * p_.pitch + v / s;
    phases_.clear();
    for (index_t a = 0; a < s; ++a)
      for (index_t b = 0; b < s; ++b) {
        Phase ph{.rows = (p_.H - a + s - 1) / s, .off = {}, .taps = {}};
        for (int u = 0; u < 3; ++u)
          for (int v = 0; v < 3; ++v)
            if ((a + 1 - u + s) % s == 0 && (b + 1 - v + s) % s == 0) ph.taps.push_back({u, v});
        for (index_t o = 0; o < p_.O; ++o)
          for (const auto& [u, v] : ph.taps) {
            const index_t di = (a + 1 - u + s) / s, dj = (b + 1 - v + s) / s;  // (a + 1 − u)/s + 1
            ph.off.push_back(o * p_.PLd + di * p_.pitch_d + dj);
          }
        phases_.push_back(std::move(ph));
      }
  }
  index_t chunk_images(index_t ch) const noexcept { return std::min(p_.nI, p_.B - ch * p_.nI); }

  /// The chunk's images [b0, b0 + n) split into the phase planes (their padding stays 0).
  void split(const T* x, index_t b0, index_t n, T* planes) const {
    const kernels::KernelTable<T>& k = kernels::table<T>();
    const index_t s = p_.s, C = p_.C, H = p_.H, W = p_.W;
    for (index_t g = 0; g < n; ++g)
      for (index_t c = 0; c < C; ++c) {
        const T* in = x + ((b0 + g) * C + c) * H * W;
        T* plane = planes + c * p_.PL + g * p_.Wq;
        if (s == 1) {
          k.conv_copy_rows(in, W, H, W, plane + p_.pitch + 1, p_.pitch, T(0));
          continue;
        }
        // Rows r = 2i + 1 − a to phase a, row i; x = 2k to phase b = 1, column k; x = 2k + 1 to b = 0, column k + 1.
        for (index_t a = 0; a < 2; ++a) {
          T* row = plane + 2 * a * C * p_.PL + (1 - a) * p_.pitch;
          k.conv_split2(in + (1 - a) * W, 2 * W, (H - (1 - a) + 1) / 2, W, row + C * p_.PL, row + 1, p_.pitch);
        }
      }
  }

  void pack_forward(const T* w) {
    const index_t K = 9 * p_.C, M = p_.Mo;
    A_.assign(static_cast<std::size_t>(K * M), T(0));
    for (index_t o = 0; o < p_.O; ++o)
      for (index_t k = 0; k < K; ++k) A_[static_cast<std::size_t>(k * M + o)] = w[o * K + k];
  }
  Scratch& scratch() { return scratch_[static_cast<std::size_t>(thread_id())]; }
  static void fit(aligned_vector<T>& v, index_t n) {
    if (v.size() != static_cast<std::size_t>(n)) v.assign(static_cast<std::size_t>(n), T(0));
  }

  Plan p_;
  aligned_vector<T> A_;
  std::vector<aligned_vector<T>> Ad_;  ///< per dx phase: weights [taps·O][Mc]
  std::vector<index_t> koff_;
  std::vector<Phase> phases_;
  std::vector<Scratch> scratch_;
};

template <class T>
void Conv3x3Direct<T>::forward(const T* w, const T* bias, const T* x, T* y) {
  const kernels::KernelTable<T>& k = kernels::table<T>();
  pack_forward(w);
  const index_t O = p_.O, P = p_.Ho * p_.Wo;
  parallel_for(p_.chunks, [&](index_t ch) {
    Scratch& sc = scratch();
    fit(sc.planes, p_.s * p_.s * p_.C * p_.PL);
    fit(sc.out, p_.Mo * p_.N);
    const index_t b0 = ch * p_.nI, n = chunk_images(ch);
    split(x, b0, n, sc.planes.data());
    k.conv_gemm(A_.data(), sc.planes.data(), koff_.data(), sc.out.data(), p_.Mo, p_.N, 9 * p_.C, p_.N);
    for (index_t g = 0; g < n; ++g)
      for (index_t o = 0; o < O; ++o) {
        const T bo = bias ? bias[o] : T(0);
        T* dst = y + ((b0 + g) * O + o) * P;
        k.conv_copy_rows(sc.out.data() + o * p_.N + g * p_.Wq, p_.pitch, p_.Ho, p_.Wo, dst, p_.Wo, bo);
      }
  });
}

template <class T>
void Conv3x3Direct<T>::backward_weight(const T* x, const T* dy, T* dw) {
  const kernels::KernelTable<T>& k = kernels::table<T>();
  const index_t O = p_.O, P = p_.Ho * p_.Wo, K = 9 * p_.C, Ow = p_.Ow;
  for (Scratch& sc : scratch_) sc.dW.assign(static_cast<std::size_t>(p_.Kp * Ow), T(0));
  parallel_for(p_.chunks, [&](index_t ch) {
    Scratch& sc = scratch();
    fit(sc.planes, p_.s * p_.s * p_.C * p_.PL);
    fit(sc.G, p_.N * Ow);
    const index_t b0 = ch * p_.nI, n = chunk_images(ch);
    split(x, b0, n, sc.planes.data());
    // dyᵀ on the forward grid [q][o]; the columns past Wo, the channels past O and a short chunk's missing images stay 0.
    if (n < p_.nI) std::fill(sc.G.begin(), sc.G.end(), T(0));
    for (index_t g = 0; g < n; ++g)
      for (index_t o = 0; o < O; ++o) {
        const T* src = dy + ((b0 + g) * O + o) * P;
        T* dst = sc.G.data() + g * p_.Wq * Ow + o;
        for (index_t i = 0; i < p_.Ho; ++i)
          for (index_t j = 0; j < p_.Wo; ++j) dst[(i * p_.pitch + j) * Ow] = src[i * p_.Wo + j];
      }
    k.conv_gemm_tn(sc.planes.data(), koff_.data(), sc.G.data(), Ow, sc.dW.data(), p_.Kp, Ow, p_.N, Ow);
  });
  // Per-thread sums reduced in a fixed order (deterministic for a thread count).
  for (const Scratch& sc : scratch_)
    for (index_t o = 0; o < O; ++o)
      for (index_t kk = 0; kk < K; ++kk) dw[o * K + kk] += sc.dW[static_cast<std::size_t>(kk * Ow + o)];
}

template <class T>
void Conv3x3Direct<T>::backward_input(const T* w, const T* dy, T* dx) {
  const kernels::KernelTable<T>& k = kernels::table<T>();
  const index_t C = p_.C, O = p_.O, P = p_.Ho * p_.Wo, s = p_.s, Mc = p_.Mc;
  Ad_.resize(phases_.size());
  for (std::size_t f = 0; f < phases_.size(); ++f) {
    const Phase& ph = phases_[f];
    const index_t nt = index_t(ph.taps.size());
    Ad_[f].assign(static_cast<std::size_t>(O * nt * Mc), T(0));
    for (index_t o = 0; o < O; ++o)
      for (index_t t = 0; t < nt; ++t)
        for (index_t c = 0; c < C; ++c) {
          const auto [u, v] = ph.taps[static_cast<std::size_t>(t)];
          Ad_[f][static_cast<std::size_t>((o * nt + t) * Mc + c)] = w[((o * C + c) * 3 + u) * 3 + v];
        }
  }
  parallel_for(p_.chunks, [&](index_t ch) {
    Scratch& sc = scratch();
    fit(sc.D, O * p_.PLd);
    fit(sc.outd, s * Mc * p_.Nd);
    const index_t b0 = ch * p_.nI, n = chunk_images(ch);
    for (index_t g = 0; g < n; ++g)  // dy padded by one: the padding stays 0
      for (index_t o = 0; o < O; ++o)
        k.conv_copy_rows(dy + ((b0 + g) * O + o) * P, p_.Wo, p_.Ho, p_.Wo, sc.D.data() + o * p_.PLd + p_.pitch_d + g * p_.Wd + 1,
                         p_.pitch_d, T(0));
    // The column phases of a row phase a side by side (s = 2: outd holds both), then merged into dx's rows.
    for (index_t a = 0; a < s; ++a) {
      for (index_t b = 0; b < s; ++b) {
        const std::size_t f = static_cast<std::size_t>(a * s + b);
        const Phase& ph = phases_[f];
        const index_t K = index_t(ph.off.size()), N = round_up(ph.rows * p_.pitch_d, k.conv_nr);
        k.conv_gemm(Ad_[f].data(), sc.D.data(), ph.off.data(), sc.outd.data() + b * Mc * p_.Nd, Mc, N, K, p_.Nd);
      }
      const index_t rows = (p_.H - a + s - 1) / s;
      for (index_t g = 0; g < n; ++g)
        for (index_t c = 0; c < C; ++c) {
          const T* src = sc.outd.data() + c * p_.Nd + g * p_.Wd;
          T* dst = dx + (((b0 + g) * C + c) * p_.H + a) * p_.W;
          if (s == 2) {
            k.conv_merge2_add(src, src + Mc * p_.Nd, p_.pitch_d, rows, p_.W, dst, 2 * p_.W);
            continue;
          }
          for (index_t m = 0; m < rows; ++m)
            for (index_t j = 0; j < p_.W; ++j) dst[m * p_.W + j] += src[m * p_.pitch_d + j];
        }
    }
  });
}

}  // namespace lamina::detail
