#pragma once
// Depthwise 3×3 convolution, padding 1, stride 1, NCHW (spec/kernels.md):
//   y[b,c,i,j] = Σ_{u,v∈0..2} w[c,u,v]·x[b,c,i+u−1,j+v−1]   (zero outside)
// weight is PyTorch's [C, 1, 3, 3]. Each plane is copied once into a
// zero-padded (H+2)×(W+2) scratch so the vector body along j needs no edge
// cases; the input gradient is the same stencil with the kernel rotated by
// 180° applied to dy; the weight gradient is 9 dot products per plane.
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
/// Zero-padded copy of one H×W plane into (H+2)×(W+2).
template <class T>
void pad_plane(const T* src, T* dst, index_t H, index_t W) {
  const index_t P = W + 2;
  std::fill(dst, dst + P, T(0));
  std::fill(dst + (H + 1) * P, dst + (H + 2) * P, T(0));
  for (index_t i = 0; i < H; ++i) {
    T* row = dst + (i + 1) * P;
    row[0] = T(0);
    std::copy(src + i * W, src + (i + 1) * W, row + 1);
    row[W + 1] = T(0);
  }
}
/// out[i, j] (+)= Σ_{u,v} k[u·3+v] · padded[i+u, j+v] over an H×W plane.
template <class Arch, class T, bool Accumulate>
void stencil3x3(const T* padded, const T* k, T* out, index_t H, index_t W) {
  using V = batch<T, Arch>;
  constexpr index_t L = index_t(V::size);
  const index_t P = W + 2;
  const V k0(k[0]), k1(k[1]), k2(k[2]), k3(k[3]), k4(k[4]), k5(k[5]), k6(k[6]), k7(k[7]), k8(k[8]);
  for (index_t i = 0; i < H; ++i) {
    const T *r0 = padded + i * P, *r1 = r0 + P, *r2 = r1 + P;
    T* o = out + i * W;
    index_t j = 0;
    for (; j + L <= W; j += L) {
      V s = k0 * V::load_unaligned(r0 + j);
      s = xsimd::fma(k1, V::load_unaligned(r0 + j + 1), s);
      s = xsimd::fma(k2, V::load_unaligned(r0 + j + 2), s);
      s = xsimd::fma(k3, V::load_unaligned(r1 + j), s);
      s = xsimd::fma(k4, V::load_unaligned(r1 + j + 1), s);
      s = xsimd::fma(k5, V::load_unaligned(r1 + j + 2), s);
      s = xsimd::fma(k6, V::load_unaligned(r2 + j), s);
      s = xsimd::fma(k7, V::load_unaligned(r2 + j + 1), s);
      s = xsimd::fma(k8, V::load_unaligned(r2 + j + 2), s);
      if constexpr (Accumulate) s += V::load_unaligned(o + j);
      s.store_unaligned(o + j);
    }
    for (; j < W; ++j) {
      T s = k[0] * r0[j] + k[1] * r0[j + 1] + k[2] * r0[j + 2] + k[3] * r1[j] + k[4] * r1[j + 1] + k[5] * r1[j + 2] +
            k[6] * r2[j] + k[7] * r2[j + 1] + k[8] * r2[j + 2];
      o[j] = Accumulate ? o[j] + s : s;
    }
  }
}
}  // namespace detail

template <class Arch = default_arch, class T>
void depthwise_conv3x3(const T* x, const T* w, T* y, index_t B, index_t C, index_t H, index_t W) {
  std::vector<T> pad(static_cast<std::size_t>((H + 2) * (W + 2)));
  for (index_t b = 0; b < B; ++b)
    for (index_t c = 0; c < C; ++c) {
      const index_t off = (b * C + c) * H * W;
      detail::pad_plane(x + off, pad.data(), H, W);
      detail::stencil3x3<Arch, T, false>(pad.data(), w + c * 9, y + off, H, W);
    }
}

template <class Arch = default_arch, class T>
void depthwise_conv3x3_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, index_t B, index_t C, index_t H,
                                index_t W) {
  using V = batch<T, Arch>;
  constexpr index_t L = index_t(V::size);
  const index_t P = W + 2;
  std::vector<T> pad(static_cast<std::size_t>((H + 2) * P)), xpad(pad.size());
  for (index_t c = 0; c < C; ++c) {
    T rot[9];
    for (int k = 0; k < 9; ++k) rot[k] = w[c * 9 + 8 - k];  // 180° rotation
    T gw[9] = {};
    for (index_t b = 0; b < B; ++b) {
      const index_t off = (b * C + c) * H * W;
      detail::pad_plane(dy + off, pad.data(), H, W);
      detail::stencil3x3<Arch, T, true>(pad.data(), rot, dx + off, H, W);
      // dw[u,v] = Σ_{i,j} dy[i,j] · xpad[i+u, j+v]
      detail::pad_plane(x + off, xpad.data(), H, W);
      V acc[9];
      for (auto& a : acc) a = V(T(0));
      for (index_t i = 0; i < H; ++i) {
        const T* g = dy + off + i * W;
        index_t j = 0;
        for (; j + L <= W; j += L) {
          const V gv = V::load_unaligned(g + j);
          for (int u = 0; u < 3; ++u)
            for (int v = 0; v < 3; ++v) acc[u * 3 + v] = xsimd::fma(gv, V::load_unaligned(xpad.data() + (i + u) * P + j + v), acc[u * 3 + v]);
        }
        for (; j < W; ++j)
          for (int u = 0; u < 3; ++u)
            for (int v = 0; v < 3; ++v) gw[u * 3 + v] += g[j] * xpad[std::size_t((i + u) * P + j + v)];
      }
      for (int k = 0; k < 9; ++k) gw[k] += xsimd::hadd(acc[k]);
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
