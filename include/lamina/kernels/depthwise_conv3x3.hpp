#pragma once
// Depthwise 3×3 convolution, padding 1, stride 1, NCHW (spec/kernels.md):
//   y[b,c,i,j] = Σ_{u,v∈0..2} w[c,u,v]·x[b,c,i+u−1,j+v−1]   (zero outside)
// weight is PyTorch's [C, 1, 3, 3]. Each plane is copied once, flat, between
// W + 1 zeros on each side; the vector body runs along the flat plane with
// masks for the first and last column (detail::FlatPlane), so planes narrower
// than a vector still vectorise. The input gradient is the same stencil with the
// kernel rotated by 180° applied to dy; the weight gradient is 9 masked dot
// products per plane.
// NaN/Inf propagate as in the arithmetic, padding included: a NaN or Inf
// weight makes the border outputs NaN too (0·Inf = NaN), as in PyTorch.
#include <vector>

#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

namespace ref {
/// x[b, c, r, q], 0 outside the plane (the padding takes part in the arithmetic:
/// 0·NaN and 0·Inf are NaN, as in PyTorch's padded convolution).
template <class T>
T padded(const T* x, index_t b, index_t c, index_t r, index_t q, index_t C, index_t H, index_t W) {
  return r >= 0 && r < H && q >= 0 && q < W ? x[((b * C + c) * H + r) * W + q] : T(0);
}
template <class T>
void depthwise_conv3x3(const T* x, const T* w, T* y, index_t B, index_t C, index_t H, index_t W) {
  for (index_t b = 0; b < B; ++b)
    for (index_t c = 0; c < C; ++c)
      for (index_t i = 0; i < H; ++i)
        for (index_t j = 0; j < W; ++j) {
          T s = 0;
          for (index_t u = 0; u < 3; ++u)
            for (index_t v = 0; v < 3; ++v) s += w[c * 9 + u * 3 + v] * padded(x, b, c, i + u - 1, j + v - 1, C, H, W);
          y[((b * C + c) * H + i) * W + j] = s;
        }
}
/// dx += ∂L/∂x, dw += ∂L/∂w for L = <y, dy> (gather form over the padded dy and x).
template <class T>
void depthwise_conv3x3_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, index_t B, index_t C, index_t H,
                                index_t W) {
  for (index_t b = 0; b < B; ++b)
    for (index_t c = 0; c < C; ++c)
      for (index_t i = 0; i < H; ++i)
        for (index_t j = 0; j < W; ++j)
          for (index_t u = 0; u < 3; ++u)
            for (index_t v = 0; v < 3; ++v) {
              const T* k = w + c * 9 + u * 3 + v;
              dx[((b * C + c) * H + i) * W + j] += *k * padded(dy, b, c, i - u + 1, j - v + 1, C, H, W);
              dw[c * 9 + u * 3 + v] += padded(x, b, c, i + u - 1, j + v - 1, C, H, W) * dy[((b * C + c) * H + i) * W + j];
            }
}
}  // namespace ref

namespace detail {
/// One H×W plane laid flat with W + 1 zeros (plus a vector of slack) on each
/// side, so that the 3×3 neighbours of flat index i are at i + (u−1)W + (v−1)
/// for every row, the first and last included. Columns wrap around in the flat
/// layout; the masks zero the left neighbours of column 0 and the right
/// neighbours of column W − 1. One copy per plane (no per-row padding), and the
/// vector body runs over the whole plane, so narrow planes (7×7) vectorise too.
template <class T, class Arch>
struct FlatPlane {
  static constexpr index_t L = index_t(batch<T, Arch>::size);
  index_t H = -1, W = -1, HW = 0, M = 0;
  std::vector<T> buf, left, right;  // margined plane; masks (1 where the neighbour exists)
  void reshape(index_t H_, index_t W_) {
    H = H_, W = W_, HW = H_ * W_, M = W_ + 1 + L;
    buf.assign(std::size_t(HW + 2 * M), T(0));
    left.assign(std::size_t(HW), T(1)), right.assign(std::size_t(HW), T(1));
    for (index_t i = 0; i < H; ++i) left[std::size_t(i * W)] = T(0), right[std::size_t(i * W + W - 1)] = T(0);
  }
  T* plane() noexcept { return buf.data() + M; }
  void load(const T* src) noexcept { std::copy(src, src + HW, plane()); }
};
/// The calling thread's flat plane `slot` for H×W planes: kept between calls,
/// so repeated calls on planes of one size allocate nothing (the margins stay 0).
template <class T, class Arch>
FlatPlane<T, Arch>& flat_plane(index_t H, index_t W, int slot) {
  thread_local FlatPlane<T, Arch> planes[2];
  FlatPlane<T, Arch>& f = planes[slot];
  if (f.H != H || f.W != W) f.reshape(H, W);
  return f;
}

/// out[i] (+)= Σ_{u,v} k[u·3+v] · p[i + (u−1)W + (v−1)] (masked) over a flat plane.
template <class Arch, class T, bool Accumulate>
void stencil3x3(FlatPlane<T, Arch>& f, const T* k, T* out) {
  using V = batch<T, Arch>;
  constexpr index_t L = FlatPlane<T, Arch>::L;
  const index_t W = f.W, HW = f.HW;
  const T* p = f.plane();
  const V k0(k[0]), k1(k[1]), k2(k[2]), k3(k[3]), k4(k[4]), k5(k[5]), k6(k[6]), k7(k[7]), k8(k[8]);
  index_t i = 0;
  // A wrapped neighbour is replaced by the padding's 0 before it is multiplied
  // (select, not a product with the mask: Inf·0 would make it NaN), so a
  // non-finite weight still meets the padding as in PyTorch (0·Inf = NaN).
  for (; i + L <= HW; i += L) {
    const T* c = p + i;
    const auto lm = V::load_unaligned(f.left.data() + i) != V(T(0));
    const auto rm = V::load_unaligned(f.right.data() + i) != V(T(0));
    const auto l = [&](const T* q) { return xsimd::select(lm, V::load_unaligned(q), V(T(0))); };
    const auto r = [&](const T* q) { return xsimd::select(rm, V::load_unaligned(q), V(T(0))); };
    const V mid = xsimd::fma(k1, V::load_unaligned(c - W), xsimd::fma(k4, V::load_unaligned(c), k7 * V::load_unaligned(c + W)));
    const V lft = xsimd::fma(k0, l(c - W - 1), xsimd::fma(k3, l(c - 1), k6 * l(c + W - 1)));
    const V rgt = xsimd::fma(k2, r(c - W + 1), xsimd::fma(k5, r(c + 1), k8 * r(c + W + 1)));
    V s = mid + lft + rgt;
    if constexpr (Accumulate) s += V::load_unaligned(out + i);
    s.store_unaligned(out + i);
  }
  for (; i < HW; ++i) {
    const T* c = p + i;
    const bool lm = f.left[std::size_t(i)] != T(0), rm = f.right[std::size_t(i)] != T(0);
    const auto l = [&](index_t o) { return lm ? c[o] : T(0); };
    const auto r = [&](index_t o) { return rm ? c[o] : T(0); };
    const T s = (k[1] * c[-W] + k[4] * c[0] + k[7] * c[W]) + (k[0] * l(-W - 1) + k[3] * l(-1) + k[6] * l(W - 1)) +
                (k[2] * r(-W + 1) + k[5] * r(1) + k[8] * r(W + 1));
    out[i] = Accumulate ? out[i] + s : s;
  }
}

/// dw[u·3+v] += Σ_i g[i] · p[i + (u−1)W + (v−1)] (masked), p the flat plane of x.
template <class Arch, class T>
void stencil3x3_weight_grad(FlatPlane<T, Arch>& f, const T* g, T* dw) {
  using V = batch<T, Arch>;
  constexpr index_t L = FlatPlane<T, Arch>::L;
  const index_t W = f.W, HW = f.HW;
  const T* p = f.plane();
  V acc[9];
  for (auto& a : acc) a = V(T(0));
  index_t i = 0;
  for (; i + L <= HW; i += L) {
    const V gv = V::load_unaligned(g + i);
    const auto lm = V::load_unaligned(f.left.data() + i) != V(T(0));
    const auto rm = V::load_unaligned(f.right.data() + i) != V(T(0));
    for (int u = 0; u < 3; ++u) {
      const T* c = p + i + (u - 1) * W;
      acc[u * 3 + 0] = xsimd::fma(gv, xsimd::select(lm, V::load_unaligned(c - 1), V(T(0))), acc[u * 3 + 0]);
      acc[u * 3 + 1] = xsimd::fma(gv, V::load_unaligned(c), acc[u * 3 + 1]);
      acc[u * 3 + 2] = xsimd::fma(gv, xsimd::select(rm, V::load_unaligned(c + 1), V(T(0))), acc[u * 3 + 2]);
    }
  }
  T tail[9] = {};
  for (; i < HW; ++i) {
    const bool lm = f.left[std::size_t(i)] != T(0), rm = f.right[std::size_t(i)] != T(0);
    for (int u = 0; u < 3; ++u) {
      const T* c = p + i + (u - 1) * W;
      tail[u * 3 + 0] += g[i] * (lm ? c[-1] : T(0)), tail[u * 3 + 1] += g[i] * c[0], tail[u * 3 + 2] += g[i] * (rm ? c[1] : T(0));
    }
  }
  for (int k = 0; k < 9; ++k) dw[k] += xsimd::hadd(acc[k]) + tail[k];
}
}  // namespace detail

template <class Arch = default_arch, class T>
void depthwise_conv3x3(const T* x, const T* w, T* y, index_t B, index_t C, index_t H, index_t W) {
  auto& f = detail::flat_plane<T, Arch>(H, W, 0);
  for (index_t b = 0; b < B; ++b)
    for (index_t c = 0; c < C; ++c) {
      const index_t off = (b * C + c) * H * W;
      f.load(x + off);
      detail::stencil3x3<Arch, T, false>(f, w + c * 9, y + off);
    }
}

template <class Arch = default_arch, class T>
void depthwise_conv3x3_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, index_t B, index_t C, index_t H,
                                index_t W) {
  auto& fg = detail::flat_plane<T, Arch>(H, W, 0);
  auto& fx = detail::flat_plane<T, Arch>(H, W, 1);
  for (index_t c = 0; c < C; ++c) {
    T rot[9];
    for (int k = 0; k < 9; ++k) rot[k] = w[c * 9 + 8 - k];  // 180° rotation: the input gradient's stencil
    T gw[9] = {};
    for (index_t b = 0; b < B; ++b) {
      const index_t off = (b * C + c) * H * W;
      fg.load(dy + off);
      detail::stencil3x3<Arch, T, true>(fg, rot, dx + off);
      fx.load(x + off);
      detail::stencil3x3_weight_grad<Arch>(fx, dy + off, gw);
    }
    for (int k = 0; k < 9; ++k) dw[c * 9 + k] += gw[k];
  }
}

/// View entry points: x, y [B, C, H, W], weight [C, 1, 3, 3].
template <class Arch = default_arch, class T>
void depthwise_conv3x3(ConstView<T> x, ConstView<T> weight, View<T> y) {
  require<shape_error>(x.rank() == 4 && x.size() > 0, "depthwise_conv3x3", "x shape", "[B, C, H, W], non-empty", x.shape());
  require<shape_error>(weight.shape() == Shape{x.dim(1), 1, 3, 3}, "depthwise_conv3x3", "weight shape", Shape{x.dim(1), 1, 3, 3}, weight.shape());
  require<shape_error>(y.shape() == x.shape(), "depthwise_conv3x3", "y shape", x.shape(), y.shape());
  require_contiguous(x, "depthwise_conv3x3", "x");
  require_contiguous(weight, "depthwise_conv3x3", "weight");
  require_contiguous(y, "depthwise_conv3x3", "y");
  depthwise_conv3x3<Arch>(x.data(), weight.data(), y.data(), x.dim(0), x.dim(1), x.dim(2), x.dim(3));
}
template <class Arch = default_arch, class T>
void depthwise_conv3x3_backward(ConstView<T> x, ConstView<T> weight, ConstView<T> dy, View<T> dx, View<T> dweight) {
  require<shape_error>(x.rank() == 4 && x.size() > 0, "depthwise_conv3x3_backward", "x shape", "[B, C, H, W], non-empty", x.shape());
  require<shape_error>(weight.shape() == Shape{x.dim(1), 1, 3, 3}, "depthwise_conv3x3_backward", "weight shape", Shape{x.dim(1), 1, 3, 3}, weight.shape());
  require<shape_error>(dweight.shape() == weight.shape(), "depthwise_conv3x3_backward", "dweight shape", weight.shape(), dweight.shape());
  require<shape_error>(dy.shape() == x.shape(), "depthwise_conv3x3_backward", "dy shape", x.shape(), dy.shape());
  require<shape_error>(dx.shape() == x.shape(), "depthwise_conv3x3_backward", "dx shape", x.shape(), dx.shape());
  for (const auto* v : {&x, &weight, &dy}) require_contiguous(*v, "depthwise_conv3x3_backward", "input");
  require_contiguous(dx, "depthwise_conv3x3_backward", "dx");
  require_contiguous(dweight, "depthwise_conv3x3_backward", "dweight");
  depthwise_conv3x3_backward<Arch>(x.data(), weight.data(), dy.data(), dx.data(), dweight.data(), x.dim(0), x.dim(1),
                                   x.dim(2), x.dim(3));
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
