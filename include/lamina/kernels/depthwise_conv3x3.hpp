#pragma once
// Depthwise 3×3 convolution, padding 1, stride 1, NCHW (spec/kernels.md):
//   y[b,c,i,j] = Σ_{u,v∈0..2} w[c,u,v]·x[b,c,i+u−1,j+v−1]   (zero outside)
// weight is PyTorch's [C, 1, 3, 3]. Each plane is copied once, flat, between
// W + 1 zeros on each side; the vector body runs along the flat plane with
// masks for the first and last column (detail::FlatPlane), so planes narrower
// than a vector still vectorise. The input gradient is the same stencil with the
// kernel rotated by 180° applied to dy; the weight gradient is 9 masked dot
// products per plane. The backward takes the planes in memory order and does
// both in one pass per plane over the flat copies of dy and x (which stay in
// L1), the 9 dot products in registers, prefetching the next plane.
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

/// One plane of the backward in one pass over the flat planes g (dy) and p (x):
///   out[i] += Σ_{u,v} r[u·3+v] · g[i + (u−1)W + (v−1)]   (r the 180°-rotated weights)
///   dw[u·3+v] += Σ_i g[i] · p[i + (u−1)W + (v−1)]
/// (masked as in stencil3x3), so that dx and the 9 weight-gradient sums come from
/// the same loads, the 9 sums in registers. `next_*` are the next plane's x, dy
/// and dx (or the current ones for the last plane): one line of each is
/// prefetched per vector, so the next plane streams in while this one is computed.
template <class Arch, class T>
void stencil3x3_backward(FlatPlane<T, Arch>& fg, FlatPlane<T, Arch>& fx, const T* r, T* out, T* dw, const T* next_x,
                         const T* next_dy, const T* next_dx) {
  using V = batch<T, Arch>;
  constexpr index_t L = FlatPlane<T, Arch>::L;
  const index_t W = fg.W, HW = fg.HW;
  const T* g = fg.plane();
  const T* p = fx.plane();
  const T* left = fg.left.data();
  const T* right = fg.right.data();
  const V r0(r[0]), r1(r[1]), r2(r[2]), r3(r[3]), r4(r[4]), r5(r[5]), r6(r[6]), r7(r[7]), r8(r[8]);
  // The sums start at −0, the exact identity of addition (+0 would turn a sum of −0 terms into +0).
  const V z(T(-0.0));
  V a0 = z, a1 = z, a2 = z, a3 = z, a4 = z, a5 = z, a6 = z, a7 = z, a8 = z;
  index_t i = 0;
  for (; i + L <= HW; i += L) {
    __builtin_prefetch(next_x + i);
    __builtin_prefetch(next_dy + i);
    __builtin_prefetch(next_dx + i, 1);
    const auto lm = V::load_unaligned(left + i) != V(T(0));
    const auto rm = V::load_unaligned(right + i) != V(T(0));
    // A wrapped neighbour becomes the padding's 0 before it is multiplied (see stencil3x3).
    const auto lz = [&](const T* q) { return xsimd::select(lm, V::load_unaligned(q), V(T(0))); };
    const auto rz = [&](const T* q) { return xsimd::select(rm, V::load_unaligned(q), V(T(0))); };
    const T* c = g + i;
    const V gc = V::load_unaligned(c);
    const V mid = xsimd::fma(r1, V::load_unaligned(c - W), xsimd::fma(r4, gc, r7 * V::load_unaligned(c + W)));
    const V lft = xsimd::fma(r0, lz(c - W - 1), xsimd::fma(r3, lz(c - 1), r6 * lz(c + W - 1)));
    const V rgt = xsimd::fma(r2, rz(c - W + 1), xsimd::fma(r5, rz(c + 1), r8 * rz(c + W + 1)));
    (mid + lft + rgt + V::load_unaligned(out + i)).store_unaligned(out + i);
    const T* q = p + i;
    a0 = xsimd::fma(gc, lz(q - W - 1), a0);
    a1 = xsimd::fma(gc, V::load_unaligned(q - W), a1);
    a2 = xsimd::fma(gc, rz(q - W + 1), a2);
    a3 = xsimd::fma(gc, lz(q - 1), a3);
    a4 = xsimd::fma(gc, V::load_unaligned(q), a4);
    a5 = xsimd::fma(gc, rz(q + 1), a5);
    a6 = xsimd::fma(gc, lz(q + W - 1), a6);
    a7 = xsimd::fma(gc, V::load_unaligned(q + W), a7);
    a8 = xsimd::fma(gc, rz(q + W + 1), a8);
  }
  T t[9];
  std::fill(t, t + 9, T(-0.0));
  for (; i < HW; ++i) {
    const bool lm = left[i] != T(0), rm = right[i] != T(0);
    const T* c = g + i;
    const auto lg = [&](index_t o) { return lm ? c[o] : T(0); };
    const auto rg = [&](index_t o) { return rm ? c[o] : T(0); };
    out[i] += (r[1] * c[-W] + r[4] * c[0] + r[7] * c[W]) + (r[0] * lg(-W - 1) + r[3] * lg(-1) + r[6] * lg(W - 1)) +
              (r[2] * rg(-W + 1) + r[5] * rg(1) + r[8] * rg(W + 1));
    const T* q = p + i;
    for (int u = 0; u < 3; ++u) {
      const T* s = q + (u - 1) * W;
      t[u * 3 + 0] += c[0] * (lm ? s[-1] : T(0)), t[u * 3 + 1] += c[0] * s[0], t[u * 3 + 2] += c[0] * (rm ? s[1] : T(0));
    }
  }
  const V a[9] = {a0, a1, a2, a3, a4, a5, a6, a7, a8};
  for (int k = 0; k < 9; ++k) dw[k] += xsimd::hadd(a[k]) + t[k];
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
  const index_t HW = H * W, last = (B * C - 1) * HW;
  // Planes in memory order (b outer), so x, dy and dx are each read as one stream.
  for (index_t b = 0; b < B; ++b)
    for (index_t c = 0; c < C; ++c) {
      const index_t off = (b * C + c) * HW, next = off < last ? off + HW : off;
      T rot[9];
      for (int k = 0; k < 9; ++k) rot[k] = w[c * 9 + 8 - k];  // 180° rotation: the input gradient's stencil
      fg.load(dy + off);
      fx.load(x + off);
      detail::stencil3x3_backward<Arch>(fg, fx, rot, dx + off, dw + c * 9, x + next, dy + next, dx + next);
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
