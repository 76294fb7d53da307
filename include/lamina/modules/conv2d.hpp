#pragma once
// 2-D convolution (cross-correlation), NCHW, weight [Cout, Cin, kh, kw], zero
// padding, dilation 1, groups 1 (golden/core/README.md "Conv2d").
//
// Images go in chunks of nb: col = im2col(x_b .. x_b+nb-1) is [Cin·kh·kw,
// nb·Pq] (image j in columns j·Pq .. j·Pq+Pq-1) and Y = W col is [Cout, nb·Pq],
// scattered into the NCHW output. The col rows are built as contiguous runs:
// each image is split once into its zero-padded stride phases
// (detail::PhaseLayout), from which tap (u, v)'s row is one copy of Pq = Ho·Wq
// values, the output computed on a grid Wq >= Wo wide whose extra columns are
// dropped (a strided, bounds-checked gather per output row, as the per-image
// im2col does, cost as much as the GEMM on the E1 stride-2 shapes). nb gives
// the GEMM N = nb·Pq >= ~512 columns within a cache budget, 1 for few rows
// (1×1 kernels: there col is a plain strided gather and the GEMM writes y
// directly), and every thread has chunks. Chunks run in parallel, each with a
// single-threaded Eigen GEMM; the backward rebuilds a chunk's col instead of
// keeping the whole batch's columns (a 9× larger tensor than x for 3×3
// kernels): dW += G col^T with G the chunk's dy gathered into [Cout, nb·Pq]
// (zero in the extra columns), dcol = W^T G, added back into the phase planes
// and from them into dx.
// Conv2dAlgorithm::im2col_per_image keeps the plain per-image loop (no
// phases, gather or scatter), the reference twin of the chunked code.
//
// 3×3 kernels with padding 1 take other paths unless Conv2dOptions::algorithm
// asks for im2col: stride 2, and stride 1 on one input channel (the stem), the
// direct implicit GEMM (modules/conv2d_direct.hpp; the stem's data gradient
// goes through Winograd); stride 1 on more channels, the Winograd F(2×2, 3×3)
// path (modules/conv2d_winograd.hpp; F(4×4, 3×3) on request). The other shapes always take im2col.
#include "lamina/core/eigen_core.hpp"
#include <algorithm>
#include <string>
#include <vector>

#include "lamina/core/eigen.hpp"
#include "lamina/core/gemm.hpp"
#include "lamina/core/init.hpp"
#include "lamina/core/module.hpp"
#include "lamina/core/parallel.hpp"
#include "lamina/modules/conv2d_direct.hpp"
#include "lamina/modules/conv2d_winograd.hpp"

namespace lamina {

/// How Conv2d computes: `automatic` takes the direct path on 3×3, padding 1,
/// stride 2 or one input channel, Winograd on the other 3×3, stride 1,
/// padding 1 convolutions and im2col elsewhere; the others force one (tests
/// and benchmarks); `winograd` or `direct` on another shape is rejected.
/// `im2col_per_image` is the plain one-GEMM-per-image im2col, the reference
/// the chunked im2col is tested and benchmarked against. `winograd` is
/// F(2×2, 3×3), `winograd4` F(4×4, 3×3) (fewer multiplies, larger rounding:
/// entries of its transforms up to 8 and 1/24).
enum class Conv2dAlgorithm { automatic, im2col, winograd, im2col_per_image, direct, winograd4 };

struct Conv2dOptions {
  index_t in_channels = 1, out_channels = 1;
  index_t kernel_h = 3, kernel_w = 3;
  index_t stride = 1, padding = 0;
  bool bias = false;
  Conv2dAlgorithm algorithm = Conv2dAlgorithm::automatic;
  /// Images per im2col GEMM (chunk); 0 chooses it from the output size and the
  /// thread count (detail::conv_chunks). Tests and benchmarks set it.
  index_t chunk_images = 0;
};

namespace detail {
/// First and one-past-last output index j with 0 <= j*s - p + v < W.
inline void valid_range(index_t Wo, index_t W, index_t s, index_t p, index_t v, index_t& lo, index_t& hi) {
  lo = 0;
  while (lo < Wo && lo * s - p + v < 0) ++lo;
  hi = Wo;
  while (hi > lo && (hi - 1) * s - p + v >= W) --hi;
}

/// col [C·kh·kw, Ho·Wo] from one image x [C, H, W]; the rows of col are ld
/// apart (ld = 0: Ho·Wo, a contiguous matrix).
template <class T>
void im2col(const T* x, index_t C, index_t H, index_t W, index_t kh, index_t kw, index_t s, index_t p, index_t Ho,
            index_t Wo, T* col, index_t ld = 0) {
  if (ld == 0) ld = Ho * Wo;
  for (index_t c = 0; c < C; ++c)
    for (index_t u = 0; u < kh; ++u)
      for (index_t v = 0; v < kw; ++v) {
        T* row = col + ((c * kh + u) * kw + v) * ld;
        index_t lo, hi;
        valid_range(Wo, W, s, p, v, lo, hi);
        for (index_t i = 0; i < Ho; ++i) {
          T* out = row + i * Wo;
          const index_t hi_in = i * s - p + u;
          if (hi_in < 0 || hi_in >= H) {
            std::fill(out, out + Wo, T(0));
            continue;
          }
          const T* in = x + (c * H + hi_in) * W - p + v;
          std::fill(out, out + lo, T(0));
          if (s == 1) std::copy(in + lo, in + hi, out + lo);
          else
            for (index_t j = lo; j < hi; ++j) out[j] = in[j * s];
          std::fill(out + hi, out + Wo, T(0));
        }
      }
}

/// x [C, H, W] += col2im(col); the rows of col are ld apart (ld = 0: Ho·Wo).
template <class T>
void col2im_add(const T* col, index_t C, index_t H, index_t W, index_t kh, index_t kw, index_t s, index_t p,
                index_t Ho, index_t Wo, T* x, index_t ld = 0) {
  if (ld == 0) ld = Ho * Wo;
  for (index_t c = 0; c < C; ++c)
    for (index_t u = 0; u < kh; ++u)
      for (index_t v = 0; v < kw; ++v) {
        const T* row = col + ((c * kh + u) * kw + v) * ld;
        index_t lo, hi;
        valid_range(Wo, W, s, p, v, lo, hi);
        for (index_t i = 0; i < Ho; ++i) {
          const index_t hi_in = i * s - p + u;
          if (hi_in < 0 || hi_in >= H) continue;
          const T* in = row + i * Wo;
          T* out = x + (c * H + hi_in) * W - p + v;
          if (s == 1)
            for (index_t j = lo; j < hi; ++j) out[j] += in[j];
          else
            for (index_t j = lo; j < hi; ++j) out[j * s] += in[j];
        }
      }
}

/// Number of image chunks for the chunked im2col of B images with K = Cin·kh·kw
/// rows and P output pixels per image, elem bytes per value, on `threads`
/// threads. chunk_images > 0 fixes the images per chunk (ceil(B / n) <=
/// chunk_images); otherwise a chunk takes enough images for >= 512 GEMM
/// columns, fewer when its columns would pass 512 KiB, one when K < 64, and
/// the count is a multiple of the thread count (at most B) so that every
/// thread has work.
/// Chunk c holds images [B·c/n, B·(c+1)/n): sizes differ by at most one.
inline index_t conv_chunks(index_t B, index_t K, index_t P, index_t elem, int threads, index_t chunk_images) {
  if (chunk_images > 0) return (B + chunk_images - 1) / chunk_images;
  constexpr index_t min_columns = 512, col_budget = 512 * 1024, min_rows = 64;
  // Few rows (a 1×1 kernel on few channels): the GEMM is cheap beside the
  // scatter of its result that a chunk needs, and one image's GEMM runs as fast.
  index_t nb = K < min_rows ? 1 : (min_columns + P - 1) / P;
  nb = std::max<index_t>(1, std::min(nb, col_budget / std::max<index_t>(1, K * P * elem)));
  const index_t t = std::max<index_t>(1, threads);
  index_t n = (B + nb - 1) / nb;
  n = (n + t - 1) / t * t;
  return std::min(n, B);
}

/// The chunked im2col's input layout: one image zero-padded and split into its
/// stride phases. Plane (a, b) of channel c holds the padded image's rows
/// R ≡ a and columns X ≡ b (mod s) (R = r + p, X = x + p) at row R / s, column
/// X / s, Hq + 1 rows (one of slack) of Wq; only the phases a < min(s, kh),
/// b < min(s, kw) that a kernel tap reads are kept. Tap (u, v) of output (i, j)
/// is then element (i + u / s, j + v / s) of plane (u % s, v % s): a col row is
/// one contiguous run of Ho·Wq values of a plane, read on an output grid Wq
/// wide, whose columns Wo .. Wq-1 are discarded (forward) or given zero
/// gradient (backward; they read real inputs, so a non-finite input can reach
/// dW through them as 0·inf, where it would make dW non-finite anyway).
struct PhaseLayout {
  index_t s, p, C, H, W, kh, kw, na, nb, Hq, Wq, Ho, Wo;
  index_t plane() const noexcept { return (Hq + 1) * Wq; }
  index_t size() const noexcept { return na * nb * C * plane(); }
  index_t Pq() const noexcept { return Ho * Wq; }  ///< the output grid's pixels, per image
};
inline PhaseLayout phase_layout(index_t C, index_t H, index_t W, index_t kh, index_t kw, index_t s, index_t p,
                                index_t Ho, index_t Wo) {
  return {s, p, C, H, W, kh, kw, std::min(s, kh), std::min(s, kw), (H + 2 * p + s - 1) / s, (W + 2 * p + s - 1) / s,
          Ho, Wo};
}
/// Calls f(image offset of row r of channel c, planes offset, x0) for every
/// image row and column phase that a plane keeps: x[c][r][x0 + k·s] goes to
/// planes[offset + k]. No division in the loops (the stride is a run-time
/// value).
template <class F>
void phase_rows(const PhaseLayout& L, F&& f) {
  const index_t s = L.s, p = L.p;
  for (index_t a = 0; a < L.na; ++a) {
    const index_t r0 = ((a - p) % s + s) % s, pr0 = (r0 + p) / s;  // first r with (r + p) % s == a
    for (index_t b = 0; b < L.nb; ++b) {
      const index_t x0 = ((b - p) % s + s) % s, d0 = (x0 + p) / s;
      for (index_t c = 0; c < L.C; ++c) {
        const index_t plane = ((a * L.nb + b) * L.C + c) * L.plane();
        for (index_t r = r0, pr = pr0; r < L.H; r += s, ++pr) f((c * L.H + r) * L.W, plane + pr * L.Wq + d0, x0);
      }
    }
  }
}
/// The planes' interiors from one image x [C, H, W] (the padding stays as it
/// is: zero when the buffer was zeroed once).
template <class T>
void phase_split(const T* x, const PhaseLayout& L, T* planes) {
  const index_t s = L.s, W = L.W;
  phase_rows(L, [&](index_t src, index_t dst, index_t x0) {
    const T* in = x + src;
    T* out = planes + dst;
    if (s == 1) std::copy_n(in, W, out);
    else if (s == 2)
      for (index_t k = 0, n = (W - x0 + 1) / 2; k < n; ++k) out[k] = in[x0 + 2 * k];
    else
      for (index_t xx = x0; xx < W; xx += s) *out++ = in[xx];
  });
}
/// phase_split for stride 2 with both column phases kept: each input row is
/// read once and deinterleaved into its two plane rows.
template <class T>
void phase_split2(const T* x, const PhaseLayout& L, T* planes) {
  const index_t p = L.p, W = L.W, half = W / 2;
  // x = 2k + e lands in column phase (e + p) % 2 at column k + (e + p) / 2.
  const index_t b0 = p % 2, b1 = (1 + p) % 2, c0 = p / 2, c1 = (1 + p) / 2;
  for (index_t a = 0; a < L.na; ++a) {
    const index_t r0 = ((a - p) % 2 + 2) % 2, pr0 = (r0 + p) / 2;
    for (index_t c = 0; c < L.C; ++c) {
      T* even = planes + ((a * 2 + b0) * L.C + c) * L.plane() + c0;
      T* odd = planes + ((a * 2 + b1) * L.C + c) * L.plane() + c1;
      for (index_t r = r0, pr = pr0; r < L.H; r += 2, ++pr) {
        const T* in = x + (c * L.H + r) * W;
        T* e = even + pr * L.Wq;
        T* o = odd + pr * L.Wq;
        for (index_t k = 0; k < half; ++k) {
          e[k] = in[2 * k];
          o[k] = in[2 * k + 1];
        }
        if (W % 2) e[half] = in[W - 1];
      }
    }
  }
}
/// dx [C, H, W] += the planes' interiors (the inverse of phase_split).
template <class T>
void phase_merge_add(const T* planes, const PhaseLayout& L, T* dx) {
  const index_t s = L.s, W = L.W;
  phase_rows(L, [&](index_t dst, index_t src, index_t x0) {
    const T* in = planes + src;
    T* out = dx + dst;
    if (s == 1)
      for (index_t xx = 0; xx < W; ++xx) out[xx] += in[xx];
    else if (s == 2)
      for (index_t k = 0, n = (W - x0 + 1) / 2; k < n; ++k) out[x0 + 2 * k] += in[k];
    else
      for (index_t xx = x0; xx < W; xx += s) out[xx] += *in++;
  });
}
/// phase_merge_add for stride 2 with both column phases kept (the adjoint of
/// phase_split2): each dx row is read and written once.
template <class T>
void phase_merge_add2(const T* planes, const PhaseLayout& L, T* dx) {
  const index_t p = L.p, W = L.W, half = W / 2;
  const index_t b0 = p % 2, b1 = (1 + p) % 2, c0 = p / 2, c1 = (1 + p) / 2;
  for (index_t a = 0; a < L.na; ++a) {
    const index_t r0 = ((a - p) % 2 + 2) % 2, pr0 = (r0 + p) / 2;
    for (index_t c = 0; c < L.C; ++c) {
      const T* even = planes + ((a * 2 + b0) * L.C + c) * L.plane() + c0;
      const T* odd = planes + ((a * 2 + b1) * L.C + c) * L.plane() + c1;
      for (index_t r = r0, pr = pr0; r < L.H; r += 2, ++pr) {
        T* out = dx + (c * L.H + r) * W;
        const T* e = even + pr * L.Wq;
        const T* o = odd + pr * L.Wq;
        for (index_t k = 0; k < half; ++k) {
          out[2 * k] += e[k];
          out[2 * k + 1] += o[k];
        }
        if (W % 2) out[W - 1] += e[half];
      }
    }
  }
}
/// Offset in the planes of tap (c, u, v)'s run.
inline index_t phase_tap(const PhaseLayout& L, index_t c, index_t u, index_t v) {
  return (((u % L.s) * L.nb + v % L.s) * L.C + c) * L.plane() + (u / L.s) * L.Wq + v / L.s;
}
/// col rows (c, u, v), each Ho·Wq values at col + row·ld, from the planes.
template <class T>
void phase_im2col(const T* planes, const PhaseLayout& L, T* col, index_t ld) {
  const index_t n = L.Pq();
  for (index_t c = 0; c < L.C; ++c)
    for (index_t u = 0; u < L.kh; ++u)
      for (index_t v = 0; v < L.kw; ++v)
        std::copy_n(planes + phase_tap(L, c, u, v), n, col + ((c * L.kh + u) * L.kw + v) * ld);
}
/// planes += col2im(col): the adjoint of phase_im2col.
template <class T>
void phase_col2im_add(const T* col, const PhaseLayout& L, T* planes, index_t ld) {
  const index_t n = L.Pq();
  for (index_t c = 0; c < L.C; ++c)
    for (index_t u = 0; u < L.kh; ++u)
      for (index_t v = 0; v < L.kw; ++v) {
        const T* src = col + ((c * L.kh + u) * L.kw + v) * ld;
        T* dst = planes + phase_tap(L, c, u, v);
        for (index_t t = 0; t < n; ++t) dst[t] += src[t];
      }
}
}  // namespace detail

template <class T>
class Conv2d {
 public:
  using value_type = T;

  /// Weights: Kaiming normal, fan_out, relu gain (torchvision's ResNet init);
  /// bias (when on): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch.
  Conv2d(const Conv2dOptions& o, Rng& rng) : o_(o) {
    require(o.in_channels > 0, "Conv2d", "in_channels", "> 0", o.in_channels);
    require(o.out_channels > 0, "Conv2d", "out_channels", "> 0", o.out_channels);
    require(o.kernel_h > 0 && o.kernel_w > 0, "Conv2d", "kernel size", "> 0",
            detail::text(o.kernel_h, "x", o.kernel_w));
    require(o.stride > 0, "Conv2d", "stride", "> 0", o.stride);
    require(o.padding >= 0, "Conv2d", "padding", ">= 0", o.padding);
    require((o.algorithm != Conv2dAlgorithm::winograd && o.algorithm != Conv2dAlgorithm::winograd4) ||
                winograd_shape(),
            "Conv2d", "algorithm", "winograd only for 3x3 kernels, stride 1, padding 1",
            detail::text(o.kernel_h, "x", o.kernel_w, " stride ", o.stride, " padding ", o.padding));
    require(o.algorithm != Conv2dAlgorithm::direct || direct_shape(), "Conv2d", "algorithm",
            "direct only for 3x3 kernels, stride 1 or 2, padding 1",
            detail::text(o.kernel_h, "x", o.kernel_w, " stride ", o.stride, " padding ", o.padding));
    const Shape ws{o.out_channels, o.in_channels, o.kernel_h, o.kernel_w};
    W_ = Tensor<T>(ws);
    dW_ = Tensor<T>(ws);
    b_ = Tensor<T>(Shape{o.bias ? o.out_channels : 0});
    db_ = Tensor<T>(Shape{o.bias ? o.out_channels : 0});
    init::kaiming_normal(W_.view(), rng, init::Gain::relu, init::FanMode::fan_out);
    if (o.bias) {
      const double a = 1.0 / std::sqrt(double(o.in_channels * o.kernel_h * o.kernel_w));
      init::uniform(b_.view(), -a, a, rng);
    }
  }

  const Conv2dOptions& options() const noexcept { return o_; }
  Tensor<T>& weight() noexcept { return W_; }
  Tensor<T>& bias() noexcept { return b_; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() == 4 && in[1] == o_.in_channels && in[0] > 0, "Conv2d", "x shape",
                         detail::text("[B > 0, ", o_.in_channels, ", H, W]"), in);
    require<shape_error>(in[2] > 0 && in[3] > 0, "Conv2d", "x spatial size", "H > 0 and W > 0 (padding does not make an empty image valid)", in);
    const index_t Ho = (in[2] + 2 * o_.padding - o_.kernel_h) / o_.stride + 1;
    const index_t Wo = (in[3] + 2 * o_.padding - o_.kernel_w) / o_.stride + 1;
    require<shape_error>(in[2] + 2 * o_.padding >= o_.kernel_h && in[3] + 2 * o_.padding >= o_.kernel_w, "Conv2d",
                         "x spatial size", detail::text("padded size >= kernel ", o_.kernel_h, "x", o_.kernel_w),
                         in);
    return Shape{in[0], o_.out_channels, Ho, Wo};
  }

  struct Cache {
    ConstView<T> x;  ///< the input, until backward
  };

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass = {}) {
    c.x = {};
    infer(x, y);
    c.x = x;
  }

  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "Conv2d", "x");
    const Shape ys = output_shape(x.shape());
    require_shape(y, ys, "Conv2d", "y");
    const Geometry g = geometry(x.shape(), ys);
    if (uses_direct()) {
      direct_.plan(g.B, o_.in_channels, o_.out_channels, g.H, g.W, o_.stride);
      direct_.forward(W_.data(), o_.bias ? b_.data() : nullptr, x.data(), y.data());
      return;
    }
    if (uses_winograd4()) return forward_winograd(wino4_, g, x.data(), y.data());
    if (uses_winograd()) return forward_winograd(wino_, g, x.data(), y.data());
    if (!chunked()) return infer_per_image(g, x.data(), y.data());
    const detail::PhaseLayout L = layout(g);
    const index_t n = chunks(g, L);
    prepare_scratch(g, false, n, &L);
    const auto Wm = as_matrix(W_.cview(), o_.out_channels, g.K);
    const T* xp = x.data();
    T* yp = y.data();
    const index_t O = o_.out_channels, P = g.P, Pq = L.Pq(), Wq = L.Wq, Wo = g.Wo;
    parallel_for(n, [&](index_t c) {
      Scratch& sc = scratch_[static_cast<std::size_t>(thread_id())];
      const index_t b0 = g.B * c / n, nb = g.B * (c + 1) / n - b0, N = nb * Pq;
      for (index_t j = 0; j < nb; ++j) chunk_im2col(g, L, xp + (b0 + j) * g.in_image, sc, j * Pq, N);
      const Eigen::Map<const RowMatrix<T>> col(sc.col.data(), g.K, N);
      T* yc = yp + b0 * g.out_image;
      if (nb == 1 && Wq == Wo) {  // [O, P] is the image's output itself
        gemm(Eigen::Map<RowMatrix<T>>(yc, O, P), Wm, col, sc.pack);
        if (o_.bias) Eigen::Map<RowMatrix<T>>(yc, O, P).colwise() += as_vector(b_.cview());
        return;
      }
      gemm(Eigen::Map<RowMatrix<T>>(sc.out.data(), O, N), Wm, col, sc.pack);
      // Scatter [O, nb·Ho·Wq] into [nb][O][Ho][Wo], dropping the columns past Wo, adding the bias.
      const T* bias = o_.bias ? b_.data() : nullptr;
      for (index_t j = 0; j < nb; ++j)
        for (index_t o = 0; o < O; ++o) {
          const T bo = bias ? bias[o] : T(0);
          for (index_t i = 0; i < g.Ho; ++i) {
            const T* src = sc.out.data() + o * N + j * Pq + i * Wq;
            T* dst = yc + (j * O + o) * P + i * Wo;
            for (index_t q = 0; q < Wo; ++q) dst[q] = src[q] + bo;
          }
        }
    });
  }

  /// {.input = false} skips the data gradient (its GEMM and col2im);
  /// {.params = false} skips the weight gradient (im2col and its GEMM).
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad want = {}) {
    require_forward(c.x.data() != nullptr, "Conv2d");
    const Shape ys = output_shape(c.x.shape());
    require_shape(dy, ys, "Conv2d", "dy");
    require_input_grad(dx, c.x.shape(), want, "Conv2d");
    if (!want.input && !want.params) return;
    const Geometry g = geometry(c.x.shape(), ys);
    if (uses_direct()) return backward_direct(g, c.x.data(), dy.data(), dx.data(), want);
    if (uses_winograd4()) return backward_winograd(wino4_, g, c.x.data(), dy.data(), dx.data(), want);
    if (uses_winograd()) return backward_winograd(wino_, g, c.x.data(), dy.data(), dx.data(), want);
    if (!chunked()) return backward_per_image(g, c.x.data(), dy.data(), dx.data(), want);
    const detail::PhaseLayout L = layout(g);
    const index_t n = chunks(g, L);
    prepare_scratch(g, want.params, n, &L, want.input);
    const auto Wm = as_matrix(W_.cview(), o_.out_channels, g.K);
    const T* xp = c.x.data();
    const T* gp = dy.data();
    T* dxp = dx.data();
    const index_t O = o_.out_channels, P = g.P, Pq = L.Pq(), Wq = L.Wq, Wo = g.Wo;
    parallel_for(n, [&](index_t ci) {
      Scratch& sc = scratch_[static_cast<std::size_t>(thread_id())];
      const index_t b0 = g.B * ci / n, nb = g.B * (ci + 1) / n - b0, N = nb * Pq;
      const T* gc = gp + b0 * g.out_image;
      if (nb > 1 || Wq != Wo) {  // gather dy [nb][O][Ho][Wo] into [O, nb·Ho·Wq], zero past Wo
        for (index_t j = 0; j < nb; ++j)
          for (index_t o = 0; o < O; ++o)
            for (index_t i = 0; i < g.Ho; ++i) {
              T* dst = sc.out.data() + o * N + j * Pq + i * Wq;
              std::copy_n(gc + (j * O + o) * P + i * Wo, Wo, dst);
              std::fill(dst + Wo, dst + Wq, T(0));
            }
        gc = sc.out.data();
      }
      const Eigen::Map<const RowMatrix<T>> G(gc, O, N);
      Eigen::Map<RowMatrix<T>> col(sc.col.data(), g.K, N);
      if (want.params) {
        for (index_t j = 0; j < nb; ++j) chunk_im2col(g, L, xp + (b0 + j) * g.in_image, sc, j * Pq, N);
        gemm(Eigen::Map<RowMatrix<T>>(sc.dW.data(), O, g.K), G, col.transpose(), sc.pack, true);
        if (o_.bias) Eigen::Map<ColVector<T>>(sc.db.data(), O).noalias() += G.rowwise().sum();
      }
      if (want.input) {
        gemm(col, Wm.transpose(), G, sc.pack);  // col now holds dcol (zero in the columns past Wo)
        for (index_t j = 0; j < nb; ++j) {
          T* dxb = dxp + (b0 + j) * g.in_image;
          if (gathers_directly()) {
            detail::col2im_add(sc.col.data() + j * Pq, o_.in_channels, g.H, g.W, 1, 1, o_.stride, 0, g.Ho, g.Wo, dxb, N);
            continue;
          }
          std::fill(sc.dplanes.begin(), sc.dplanes.end(), T(0));
          detail::phase_col2im_add(sc.col.data() + j * Pq, L, sc.dplanes.data(), N);
          if (L.s == 2 && L.nb == 2) detail::phase_merge_add2(sc.dplanes.data(), L, dxb);
          else detail::phase_merge_add(sc.dplanes.data(), L, dxb);
        }
      }
    });
    reduce_partial_sums(want);
  }

  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    f(ParamRef<T>{prefix + "weight", W_.view(), dW_.view(), true, true});
    if (o_.bias) f(ParamRef<T>{prefix + "bias", b_.view(), db_.view(), true, true});
  }

 private:
  struct Geometry {
    index_t B, H, W, Ho, Wo, K, P, in_image, out_image;
  };
  struct Scratch {
    aligned_vector<T> col, out, dW, db;  ///< out: a chunk's y (forward) or gathered dy (backward)
    aligned_vector<T> planes, dplanes;   ///< one image's phase planes (detail::PhaseLayout) and their gradient
    GemmSpace<T> pack;                   ///< the GEMMs' packing buffers (core/gemm.hpp)
    bool used = false;
  };

  // ---- the per-image im2col: Conv2dAlgorithm::im2col_per_image, and 1×1 stride-1 unpadded convs ----
  void infer_per_image(const Geometry& g, const T* xp, T* yp) {
    const auto Wm = as_matrix(W_.cview(), o_.out_channels, g.K);
    prepare_scratch(g, false, g.B);
    parallel_for(g.B, [&](index_t b) {
      Scratch& sc = scratch_[static_cast<std::size_t>(thread_id())];
      if (is_pointwise()) {  // 1×1, stride 1, no padding: col_b is x_b itself
        Eigen::Map<const RowMatrix<T>> col(xp + b * g.in_image, g.K, g.P);
        gemm(Eigen::Map<RowMatrix<T>>(yp + b * g.out_image, o_.out_channels, g.P), Wm, col, sc.pack);
      } else {
        detail::im2col(xp + b * g.in_image, o_.in_channels, g.H, g.W, o_.kernel_h, o_.kernel_w, o_.stride,
                       o_.padding, g.Ho, g.Wo, sc.col.data());
        gemm(Eigen::Map<RowMatrix<T>>(yp + b * g.out_image, o_.out_channels, g.P), Wm,
             Eigen::Map<const RowMatrix<T>>(sc.col.data(), g.K, g.P), sc.pack);
      }
      if (o_.bias) {
        Eigen::Map<RowMatrix<T>> yb(yp + b * g.out_image, o_.out_channels, g.P);
        yb.colwise() += as_vector(b_.cview());
      }
    });
  }

  void backward_per_image(const Geometry& g, const T* xp, const T* gp, T* dxp, Grad want) {
    const auto Wm = as_matrix(W_.cview(), o_.out_channels, g.K);
    prepare_scratch(g, want.params, g.B);
    parallel_for(g.B, [&](index_t b) {
      Scratch& sc = scratch_[static_cast<std::size_t>(thread_id())];
      Eigen::Map<const RowMatrix<T>> G(gp + b * g.out_image, o_.out_channels, g.P);
      auto dW = Eigen::Map<RowMatrix<T>>(sc.dW.data(), o_.out_channels, g.K);
      if (is_pointwise()) {
        Eigen::Map<const RowMatrix<T>> col(xp + b * g.in_image, g.K, g.P);
        if (want.params) gemm(dW, G, col.transpose(), sc.pack, true);
        if (want.input) gemm(Eigen::Map<RowMatrix<T>>(dxp + b * g.in_image, g.K, g.P), Wm.transpose(), G, sc.pack, true);
      } else {
        Eigen::Map<RowMatrix<T>> col(sc.col.data(), g.K, g.P);
        if (want.params) {
          detail::im2col(xp + b * g.in_image, o_.in_channels, g.H, g.W, o_.kernel_h, o_.kernel_w, o_.stride,
                         o_.padding, g.Ho, g.Wo, sc.col.data());
          gemm(dW, G, col.transpose(), sc.pack, true);
        }
        if (want.input) {
          gemm(col, Wm.transpose(), G, sc.pack);  // col now holds dcol
          detail::col2im_add(sc.col.data(), o_.in_channels, g.H, g.W, o_.kernel_h, o_.kernel_w, o_.stride,
                             o_.padding, g.Ho, g.Wo, dxp + b * g.in_image);
        }
      }
      if (o_.bias && want.params) Eigen::Map<ColVector<T>>(sc.db.data(), o_.out_channels).noalias() += G.rowwise().sum();
    });
    reduce_partial_sums(want);
  }

  // Per-thread partial sums, reduced in a fixed order (deterministic for a given thread count).
  void reduce_partial_sums(Grad want) {
    if (!want.params) return;
    for (Scratch& sc : scratch_) {
      if (!sc.used) continue;
      detail_axpy(dW_.data(), sc.dW.data(), dW_.size());
      if (o_.bias) detail_axpy(db_.data(), sc.db.data(), db_.size());
    }
  }

  bool winograd_shape() const noexcept {
    return o_.kernel_h == 3 && o_.kernel_w == 3 && o_.stride == 1 && o_.padding == 1;
  }
  bool uses_winograd() const noexcept {
    return winograd_shape() && !uses_direct() && o_.algorithm != Conv2dAlgorithm::im2col &&
           o_.algorithm != Conv2dAlgorithm::im2col_per_image;
  }
  bool uses_winograd4() const noexcept { return uses_winograd() && o_.algorithm == Conv2dAlgorithm::winograd4; }
  bool direct_shape() const noexcept {
    return o_.kernel_h == 3 && o_.kernel_w == 3 && o_.padding == 1 && (o_.stride == 1 || o_.stride == 2);
  }
  bool uses_direct() const noexcept {
    if (o_.algorithm == Conv2dAlgorithm::direct) return true;
    return o_.algorithm == Conv2dAlgorithm::automatic && direct_shape() && (o_.stride == 2 || o_.in_channels == 1);
  }
  /// The stem (stride 1, one input channel) takes its data gradient through
  /// Winograd: the direct dx GEMM would pad its one row to conv_mr.
  void backward_direct(const Geometry& g, const T* x, const T* dy, T* dx, Grad want) {
    if (want.input && o_.stride == 1 && o_.in_channels < kernels::conv_mr) {
      wino_.plan(g.B, o_.in_channels, o_.out_channels, g.H, g.W);
      wino_.backward_input(W_.data(), dy, dx);
    } else if (want.input) {
      direct_.plan(g.B, o_.in_channels, o_.out_channels, g.H, g.W, o_.stride);
      direct_.backward_input(W_.data(), dy, dx);
    }
    if (!want.params) return;
    direct_.plan(g.B, o_.in_channels, o_.out_channels, g.H, g.W, o_.stride);
    direct_.backward_weight(x, dy, dW_.data());
    if (!o_.bias) return;
    auto db = as_vector(db_.view());
    for (index_t b = 0; b < g.B; ++b)
      db.noalias() += Eigen::Map<const RowMatrix<T>>(dy + b * g.out_image, o_.out_channels, g.P).rowwise().sum();
  }
  /// The chunked im2col (not the per-image reference; a 1×1 stride-1 unpadded
  /// conv needs no im2col and stays per image).
  bool chunked() const noexcept { return o_.algorithm != Conv2dAlgorithm::im2col_per_image && !is_pointwise(); }
  detail::PhaseLayout layout(const Geometry& g) const {
    return detail::phase_layout(o_.in_channels, g.H, g.W, o_.kernel_h, o_.kernel_w, o_.stride, o_.padding, g.Ho, g.Wo);
  }
  /// 1×1 unpadded (strided): col is a strided gather of x, on the output grid
  /// itself (Wq = Wo), with no phase planes.
  bool gathers_directly() const noexcept { return o_.kernel_h == 1 && o_.kernel_w == 1 && o_.padding == 0; }
  /// One image's col rows at sc.col + offset, rows ld apart.
  void chunk_im2col(const Geometry& g, const detail::PhaseLayout& L, const T* x, Scratch& sc, index_t offset,
                    index_t ld) const {
    if (gathers_directly())
      return detail::im2col(x, o_.in_channels, g.H, g.W, 1, 1, o_.stride, 0, g.Ho, g.Wo, sc.col.data() + offset, ld);
    if (L.s == 2 && L.nb == 2) detail::phase_split2(x, L, sc.planes.data());
    else detail::phase_split(x, L, sc.planes.data());
    detail::phase_im2col(sc.planes.data(), L, sc.col.data() + offset, ld);
  }
  index_t chunks(const Geometry& g, const detail::PhaseLayout& L) const {
    return detail::conv_chunks(g.B, g.K, L.Pq(), index_t(sizeof(T)), num_threads(), o_.chunk_images);
  }
  template <class Winograd>
  void forward_winograd(Winograd& wino, const Geometry& g, const T* x, T* y) {
    wino.plan(g.B, o_.in_channels, o_.out_channels, g.H, g.W);
    wino.forward(W_.data(), o_.bias ? b_.data() : nullptr, x, y);
  }
  template <class Winograd>
  void backward_winograd(Winograd& wino, const Geometry& g, const T* x, const T* dy, T* dx, Grad want) {
    wino.plan(g.B, o_.in_channels, o_.out_channels, g.H, g.W);
    if (want.input) wino.backward_input(W_.data(), dy, dx);
    if (!want.params) return;
    wino.backward_weight(x, dy, dW_.data());
    if (!o_.bias) return;
    auto db = as_vector(db_.view());
    for (index_t b = 0; b < g.B; ++b)
      db.noalias() += Eigen::Map<const RowMatrix<T>>(dy + b * g.out_image, o_.out_channels, g.P).rowwise().sum();
  }
  bool is_pointwise() const noexcept {
    return o_.kernel_h == 1 && o_.kernel_w == 1 && o_.stride == 1 && o_.padding == 0;
  }
  Geometry geometry(const Shape& xs, const Shape& ys) const {
    const index_t K = o_.in_channels * o_.kernel_h * o_.kernel_w, P = ys[2] * ys[3];
    return {xs[0], xs[2], xs[3], ys[2], ys[3], K, P, o_.in_channels * xs[2] * xs[3], o_.out_channels * P};
  }
  /// Per-thread buffers for n chunks of the batch (n = B: one image each, and
  /// no phase planes for the per-image path). Sized by the largest chunk;
  /// resizing to the same or a smaller size keeps the memory, so steady-state
  /// steps allocate nothing.
  void prepare_scratch(const Geometry& g, bool grads, index_t n, const detail::PhaseLayout* L = nullptr,
                       bool input_grad = false) {
    const index_t nb = (g.B + n - 1) / n, Pq = L ? L->Pq() : g.P;
    const bool direct = nb == 1 && Pq == g.P;  // the chunk's y and dy are the image's own
    scratch_.resize(static_cast<std::size_t>(num_threads()));
    for (Scratch& sc : scratch_) {
      sc.col.resize(static_cast<std::size_t>(g.K * Pq * nb));
      sc.out.resize(static_cast<std::size_t>(direct ? 0 : o_.out_channels * Pq * nb));
      // Zeroed once a call: phase_split writes the same interior for every image.
      const bool planes = L && !gathers_directly();
      sc.planes.assign(static_cast<std::size_t>(planes ? L->size() : 0), T(0));
      sc.dplanes.resize(static_cast<std::size_t>(planes && input_grad ? L->size() : 0));
      sc.used = grads;
      if (grads) {
        sc.dW.assign(static_cast<std::size_t>(W_.size()), T(0));
        sc.db.assign(static_cast<std::size_t>(b_.size()), T(0));
      }
    }
  }
  static void detail_axpy(T* a, const T* b, index_t n) { axpy(a, b, n); }

  Conv2dOptions o_;
  Tensor<T> W_, dW_, b_, db_;
  std::vector<Scratch> scratch_;
  detail::Winograd3x3<T> wino_;
  detail::Winograd3x3<T, 4> wino4_;
  detail::Conv3x3Direct<T> direct_;
  Cache cache_;
};

}  // namespace lamina
