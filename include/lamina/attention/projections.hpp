#pragma once
// The projections of a layer-attention branch (spec/layer_attention.md §2):
//   y = GAP(X) ∈ R^{B×C},   Q = conv1d_q(y),   K = conv1d_k(y)
// ECA-style 1-D cross-correlations across the channel axis (1 in, 1 out
// channel, zero "same" padding, no bias) with the ECA kernel-size rule
// (golden/README.md open point 1). V (depthwise 3×3) is kernels/depthwise_conv3x3.
// Plain loops: these are [B, C] arrays with k ≤ 9 taps, a few thousand values.
#include <algorithm>
#include <cmath>

#include "lamina/core/tensor.hpp"

namespace lamina::attention {

/// ECA kernel size: s = int((log2 C + 1) / 2), k = s if s is odd else s + 1
/// (C = 16 → 3, 64 → 3, 128 → 5, 256 → 5).
inline index_t eca_kernel_size(index_t C) {
  require(C >= 1, "LayerAttention", "channels C", ">= 1", C);
  const auto s = static_cast<index_t>((std::log2(double(C)) + 1) / 2);
  return s % 2 == 1 ? s : s + 1;
}

/// y[b, c] = mean of X[b, c, :, :] (X is [B, C, HW] contiguous).
template <class T>
void global_avg_pool(const T* X, T* y, index_t B, index_t C, index_t HW) {
  const T inv = T(1) / T(HW);
  for (index_t bc = 0; bc < B * C; ++bc) {
    const T* p = X + bc * HW;
    T s = 0;
    for (index_t i = 0; i < HW; ++i) s += p[i];
    y[bc] = s * inv;
  }
}
/// dX[b, c, :] += dy[b, c] / HW.
template <class T>
void global_avg_pool_backward(const T* dy, T* dX, index_t B, index_t C, index_t HW) {
  const T inv = T(1) / T(HW);
  for (index_t bc = 0; bc < B * C; ++bc) {
    const T g = dy[bc] * inv;
    T* p = dX + bc * HW;
    for (index_t i = 0; i < HW; ++i) p[i] += g;
  }
}

/// out[b, c] = Σ_j w[j] · y[b, c + j − (k−1)/2] (zero outside 0..C−1).
template <class T>
void channel_conv1d(const T* y, const T* w, T* out, index_t B, index_t C, index_t k) {
  const index_t h = (k - 1) / 2;
  for (index_t b = 0; b < B; ++b) {
    const T* yb = y + b * C;
    T* ob = out + b * C;
    for (index_t c = 0; c < C; ++c) {
      T s = 0;
      const index_t j0 = std::max<index_t>(0, h - c), j1 = std::min<index_t>(k, C + h - c);
      for (index_t j = j0; j < j1; ++j) s += w[j] * yb[c + j - h];
      ob[c] = s;
    }
  }
}
/// Backward of channel_conv1d: dy += Wᵀ dout (when dy), dw += Σ dout ⊗ y (when dw).
template <class T>
void channel_conv1d_backward(const T* y, const T* w, const T* dout, T* dy, T* dw, index_t B, index_t C, index_t k) {
  const index_t h = (k - 1) / 2;
  for (index_t b = 0; b < B; ++b) {
    const T* yb = y + b * C;
    const T* gb = dout + b * C;
    for (index_t c = 0; c < C; ++c) {
      const index_t j0 = std::max<index_t>(0, h - c), j1 = std::min<index_t>(k, C + h - c);
      for (index_t j = j0; j < j1; ++j) {
        if (dy) dy[b * C + c + j - h] += w[j] * gb[c];
        if (dw) dw[j] += gb[c] * yb[c + j - h];
      }
    }
  }
}

}  // namespace lamina::attention
