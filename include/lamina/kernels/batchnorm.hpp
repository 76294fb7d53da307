#pragma once
// BatchNorm kernels over one (b, c) plane of an NCHW tensor: n = H·W
// contiguous values of one channel (modules/batchnorm2d.hpp threads them over
// the B·C planes and combines the per-plane sums per channel).
//
// Statistics in one pass, shifted sums: with a per-channel shift K (the
// channel's first value), a plane gives Σ(x − K) and Σ(x − K)². Per-lane
// float partial sums cover blocks of `bn_block` values and are added into
// double; the planes are combined in double. mean = K + S1/n and
// var = (S2 − S1²/n)/n. The shift removes the cancellation of the naive
// Σx² − (Σx)²/n: for x = 1000 + N(0, 1) the float sums see values of
// order 1 instead of 10⁶, and x − K is exact (Sterbenz) when x and K are within
// a factor 2. The relative error of var grows with ((K − mean)/σ)², i.e.
// only if the channel's first value is an outlier far outside its
// distribution; the test ("one-pass statistics", 1000 + N(0, 1), and a constant
// channel) checks it against a two-pass double reference. Welford would not
// need the shift but costs a division per value (this pass must run at
// memory speed).
//
// Apply: y = (x − mean)·a + b (a = γ·inv, b = β), optionally + r (the residual), optionally ReLU. Backward
// recomputes x̂ = (x − mean)·inv from x instead of storing it: one pass
// for Σg and Σg·x̂ (g = dy, or dy·[y > 0] with the fused ReLU: the mask from
// the output), then dx += k·g + c0 + c1·(x − mean) and, with the fused add,
// dr += g.
//
// Many small planes (the *_planes kernels): a run of P consecutive planes of
// one tensor (BnRun: plane q of channel (c0 + q) mod C) in one call, with the
// per-channel terms as arrays, so that 7×7 planes do not pay a call, a
// scalar tail and a vector set-up per 49 values. Each plane is done as the
// single-plane kernels do it (its own float partials per bn_block values,
// added into double; s[2q], s[2q + 1] per plane), except that a plane of
// n ≥ lanes values ends with one whole vector at n − lanes that overlaps the
// previous ones instead of a scalar tail: the sums take only its new lanes
// (a select, so that an Inf or NaN in the overlap is not counted twice), and
// the element-wise passes compute it from the inputs before the plane's
// first store and store it last, which rewrites the overlap with the same
// values, so y may still alias x or r. Nothing is read or written outside the
// plane. Planes shorter than a vector go through the scalar reference.
//
// Non-finite values: a NaN or ±Inf in a plane makes its sums NaN or ±Inf, so
// that channel's batch statistics (and every output of it) are NaN in
// training mode. Apply and backward are element-wise IEEE: NaN in x or r gives
// NaN in y (the ReLU passes NaN, as modules/activation.hpp ReLU does); the ReLU
// mask [y > 0] is 0 where y is NaN (as ReLU's backward).
#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>

#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

/// Values per float partial sum before it is added into double.
inline constexpr index_t bn_block = 2048;

/// The per-plane coefficients of the dx pass: dx += k·g + c0 + c1·(x − mean).
template <class T>
struct BnGrad {
  T mean, k, c0, c1;
};

/// P consecutive planes of n values each; plane q is of channel (c0 + q) mod C
/// (NCHW: the planes of a tensor run over the channels, batch after batch).
struct BnRun {
  index_t P, n, C, c0;
};

namespace ref {
/// s[0] = Σ(x − K), s[1] = Σ(x − K)² in double.
template <class T>
void bn_sums(const T* x, index_t n, T K, double* s) noexcept {
  double a = 0, b = 0;
  for (index_t i = 0; i < n; ++i) {
    const double d = double(x[i]) - double(K);
    a += d;
    b += d * d;
  }
  s[0] = a, s[1] = b;
}
/// y = (x − m)·a + b (+ r when r ≠ nullptr), then max(·, 0) when relu (NaN passes).
template <class T>
void bn_apply(const T* x, const T* r, T* y, index_t n, T m, T a, T b, bool relu) noexcept {
  for (index_t i = 0; i < n; ++i) {
    T v = (x[i] - m) * a + b;
    if (r) v += r[i];
    y[i] = relu && v < T(0) ? T(0) : v;
  }
}
/// g = dy, or dy·[y > 0] when y ≠ nullptr; s[0] = Σg, s[1] = Σg·(x − mean)·inv.
template <class T>
void bn_grad_sums(const T* x, const T* y, const T* dy, index_t n, T mean, T inv, double* s) noexcept {
  double a = 0, b = 0;
  for (index_t i = 0; i < n; ++i) {
    const double g = y && !(y[i] > T(0)) ? 0.0 : double(dy[i]);
    a += g;
    b += g * (double(x[i]) - double(mean)) * double(inv);
  }
  s[0] = a, s[1] = b;
}
/// dx += k·g + c0 + c1·(x − mean); dr += g when dr ≠ nullptr (g as in bn_grad_sums).
template <class T>
void bn_backward(const T* x, const T* y, const T* dy, T* dx, T* dr, index_t n, BnGrad<T> c) noexcept {
  for (index_t i = 0; i < n; ++i) {
    const T g = y && !(y[i] > T(0)) ? T(0) : dy[i];
    dx[i] += c.k * g + (c.c0 + c.c1 * (x[i] - c.mean));
    if (dr) dr[i] += g;
  }
}

/// bn_sums over each plane of the run: s[2q], s[2q + 1] with the shift K[channel].
template <class T>
void bn_sums_planes(const T* x, BnRun d, const T* K, double* s) noexcept {
  for (index_t q = 0, c = d.c0 % d.C; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1)
    ref::bn_sums(x + q * d.n, d.n, K[c], s + 2 * q);
}
/// bn_apply over each plane of the run with the channel's m[c], a[c], b[c].
template <class T>
void bn_apply_planes(const T* x, const T* r, T* y, BnRun d, const T* m, const T* a, const T* b, bool relu) noexcept {
  for (index_t q = 0, c = d.c0 % d.C; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1)
    ref::bn_apply(x + q * d.n, r ? r + q * d.n : nullptr, y + q * d.n, d.n, m[c], a[c], b[c], relu);
}
/// bn_grad_sums over each plane of the run with the channel's mean[c], inv[c]: s[2q], s[2q + 1].
template <class T>
void bn_grad_sums_planes(const T* x, const T* y, const T* dy, BnRun d, const T* mean, const T* inv, double* s) noexcept {
  for (index_t q = 0, c = d.c0 % d.C; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1) {
    const index_t o = q * d.n;
    ref::bn_grad_sums(x + o, y ? y + o : nullptr, dy + o, d.n, mean[c], inv[c], s + 2 * q);
  }
}
/// bn_backward over each plane of the run with the channel's coefficients cf[c].
template <class T>
void bn_backward_planes(const T* x, const T* y, const T* dy, T* dx, T* dr, BnRun d, const BnGrad<T>* cf) noexcept {
  for (index_t q = 0, c = d.c0 % d.C; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1) {
    const index_t o = q * d.n;
    ref::bn_backward(x + o, y ? y + o : nullptr, dy + o, dx + o, dr ? dr + o : nullptr, d.n, cf[c]);
  }
}

/// The whole-tensor reference (the former BatchNorm2d: statistics element by
/// element in double, two passes): biased mean and variance of each channel.
template <class T>
void bn_moments(const T* x, index_t B, index_t C, index_t HW, double* mean, double* var) {
  for (index_t c = 0; c < C; ++c) {
    double s = 0, q = 0;
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < HW; ++i) s += double(x[(b * C + c) * HW + i]);
    mean[c] = s / double(B * HW);
    for (index_t b = 0; b < B; ++b)
      for (index_t i = 0; i < HW; ++i) q += (double(x[(b * C + c) * HW + i]) - mean[c]) * (double(x[(b * C + c) * HW + i]) - mean[c]);
    var[c] = q / double(B * HW);
  }
}
/// The shapes and per-channel terms of the whole-tensor references.
struct BnShape {
  index_t B, C, HW;
  double eps;
};
/// y = relu?(γ (x − mean)/sqrt(var + eps) + β (+ r)) in double.
template <class T>
void bn_forward(const T* x, const T* r, T* y, BnShape d, const double* mean, const double* var, const T* gamma,
                const T* beta, bool relu) {
  for (index_t q = 0; q < d.B * d.C; ++q) {
    const index_t c = q % d.C;
    const double inv = 1 / std::sqrt(var[c] + d.eps);
    for (index_t i = q * d.HW; i < (q + 1) * d.HW; ++i) {
      double v = double(gamma[c]) * (double(x[i]) - mean[c]) * inv + double(beta[c]) + (r ? double(r[i]) : 0.0);
      y[i] = T(relu && v < 0 ? 0.0 : v);
    }
  }
}
/// The backward of bn_forward in double: adds into dx, dr (if any), dgamma and
/// dbeta; the ReLU mask from y when y ≠ nullptr; batch_stats as BatchNorm2d.
template <class T>
void bn_backward_full(const T* x, const T* y, const T* dy, T* dx, T* dr, T* dgamma, T* dbeta, BnShape d,
                      const double* mean, const double* var, const T* gamma, bool batch_stats) {
  const index_t n = d.B * d.HW;
  for (index_t c = 0; c < d.C; ++c) {
    const double inv = 1 / std::sqrt(var[c] + d.eps);
    auto g = [&](index_t i) { return y && !(y[i] > T(0)) ? 0.0 : double(dy[i]); };
    double sg = 0, sgh = 0;
    for (index_t b = 0; b < d.B; ++b)
      for (index_t i = (b * d.C + c) * d.HW; i < (b * d.C + c + 1) * d.HW; ++i)
        sg += g(i), sgh += g(i) * (double(x[i]) - mean[c]) * inv;
    dgamma[c] += T(sgh), dbeta[c] += T(sg);
    const double k = double(gamma[c]) * inv, mg = batch_stats ? sg / double(n) : 0.0,
                 mgh = batch_stats ? sgh / double(n) : 0.0;
    for (index_t b = 0; b < d.B; ++b)
      for (index_t i = (b * d.C + c) * d.HW; i < (b * d.C + c + 1) * d.HW; ++i) {
        dx[i] += T(k * (g(i) - mg - (double(x[i]) - mean[c]) * inv * mgh));
        if (dr) dr[i] += T(g(i));
      }
  }
}
}  // namespace ref

namespace detail {
/// g = dy·[y > 0] (Mask) or dy.
template <bool Mask, class V>
V bn_masked(const V& dy, const V& y) noexcept {
  if constexpr (Mask) return xsimd::select(y > V(0), dy, V(0));
  else return dy;
}
template <class Arch, class T, bool Add, bool Relu>
void bn_apply_body(const T* x, const T* r, T* y, index_t n, T m, T a, T b) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  const V vm(m), va(a), vb(b), zero(T(0));
  index_t i = 0;
  for (; i + W <= n; i += W) {
    V v = xsimd::fma(V::load_unaligned(x + i) - vm, va, vb);
    if constexpr (Add) v += V::load_unaligned(r + i);
    if constexpr (Relu) v = xsimd::select(v < zero, zero, v);  // NaN passes
    v.store_unaligned(y + i);
  }
  ref::bn_apply(x + i, Add ? r + i : nullptr, y + i, n - i, m, a, b, Relu);
}
template <class Arch, class T, bool Mask>
void bn_grad_sums_body(const T* x, const T* y, const T* dy, index_t n, T mean, T inv, double* s) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  const V vm(mean);
  double a = 0, b = 0;
  index_t i = 0;
  while (i + W <= n) {  // float partials per block, Σg·(x − mean) scaled by inv at the end
    const index_t end = std::min(n - (n - i) % W, i + bn_block);
    V sa(T(0)), sb(T(0));
    for (; i < end; i += W) {
      const V g = bn_masked<Mask>(V::load_unaligned(dy + i), Mask ? V::load_unaligned(y + i) : V(T(0)));
      sa += g;
      sb = xsimd::fma(g, V::load_unaligned(x + i) - vm, sb);
    }
    a += double(xsimd::hadd(sa));
    b += double(xsimd::hadd(sb));
  }
  double t[2];
  ref::bn_grad_sums(x + i, Mask ? y + i : nullptr, dy + i, n - i, mean, T(1), t);
  s[0] = a + t[0], s[1] = (b + t[1]) * double(inv);
}
template <class Arch, class T, bool Mask, bool Add>
void bn_backward_body(const T* x, const T* y, const T* dy, T* dx, T* dr, index_t n, BnGrad<T> c) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  const V vk(c.k), v0(c.c0), v1(c.c1), vm(c.mean);
  index_t i = 0;
  for (; i + W <= n; i += W) {
    const V g = bn_masked<Mask>(V::load_unaligned(dy + i), Mask ? V::load_unaligned(y + i) : V(T(0)));
    const V d = xsimd::fma(v1, V::load_unaligned(x + i) - vm, v0);
    (V::load_unaligned(dx + i) + xsimd::fma(vk, g, d)).store_unaligned(dx + i);
    if constexpr (Add) (V::load_unaligned(dr + i) + g).store_unaligned(dr + i);
  }
  ref::bn_backward(x + i, Mask ? y + i : nullptr, dy + i, dx + i, Add ? dr + i : nullptr, n - i, c);
}

// ---- One plane of n ≥ lanes values, ending with an overlapping whole vector ----
// The vectors start at 0, W, 2W, ... below t = n − W (nv of them), then at t.
// The last one's lanes j ≥ nv·W − t are the new ones.

template <class V>
using T_of = typename V::value_type;
/// Lanes j ≥ seen of a vector (the part of the last vector not covered yet).
template <class V>
auto bn_new_lanes(index_t seen) noexcept {
  using T = typename V::value_type;
  alignas(64) T idx[V::size];
  for (std::size_t j = 0; j < V::size; ++j) idx[j] = T(j);
  return V::load_aligned(idx) >= V(T(seen));
}
template <class Arch, class T>
void bn_sums_plane(const T* x, index_t n, T K, double* s) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), per = bn_block / W;
  const index_t t = n - W, nv = (t + W - 1) / W;
  const V vk(K);
  double a = 0, b = 0;
  index_t v = 0;
  do {  // float partials per block of bn_block values (the last block also takes the last vector)
    const index_t ve = std::min(nv, v + per);
    V a0(T(0)), a1(T(0)), b0(T(0)), b1(T(0));
    for (; v + 2 <= ve; v += 2) {
      const V d0 = V::load_unaligned(x + v * W) - vk, d1 = V::load_unaligned(x + v * W + W) - vk;
      a0 += d0, a1 += d1;
      b0 = xsimd::fma(d0, d0, b0), b1 = xsimd::fma(d1, d1, b1);
    }
    if (v < ve) {
      const V d0 = V::load_unaligned(x + v * W) - vk;
      a0 += d0, b0 = xsimd::fma(d0, d0, b0), ++v;
    }
    if (v == nv) {
      const V d1 = xsimd::select(bn_new_lanes<V>(nv * W - t), V::load_unaligned(x + t) - vk, V(T(0)));
      a1 += d1, b1 = xsimd::fma(d1, d1, b1);
    }
    a += double(xsimd::hadd(a0 + a1));
    b += double(xsimd::hadd(b0 + b1));
  } while (v < nv);
  s[0] = a, s[1] = b;
}
template <class Arch, class T, bool Add, bool Relu>
void bn_apply_plane(const T* x, const T* r, T* y, index_t n, T m, T a, T b) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  const V vm(m), va(a), vb(b), zero(T(0));
  auto f = [&](index_t i) {
    V v = xsimd::fma(V::load_unaligned(x + i) - vm, va, vb);
    if constexpr (Add) v += V::load_unaligned(r + i);
    if constexpr (Relu) v = xsimd::select(v < zero, zero, v);  // NaN passes
    return v;
  };
  const index_t t = n - W;
  const V last = f(t);  // before the first store: y may alias x or r
  for (index_t i = 0; i < t; i += W) f(i).store_unaligned(y + i);
  last.store_unaligned(y + t);
}
template <class Arch, class T, bool Mask>
void bn_grad_sums_plane(const T* x, const T* y, const T* dy, index_t n, T mean, T inv, double* s) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), per = bn_block / W;
  const index_t t = n - W, nv = (t + W - 1) / W;
  const V vm(mean);
  auto g = [&](index_t i) { return bn_masked<Mask>(V::load_unaligned(dy + i), Mask ? V::load_unaligned(y + i) : V(T(0))); };
  double a = 0, b = 0;
  index_t v = 0;
  do {  // as bn_sums_plane; Σg·(x − mean) scaled by inv at the end
    const index_t ve = std::min(nv, v + per);
    V a0(T(0)), a1(T(0)), b0(T(0)), b1(T(0));
    for (; v + 2 <= ve; v += 2) {
      const V g0 = g(v * W), g1 = g(v * W + W);
      a0 += g0, a1 += g1;
      b0 = xsimd::fma(g0, V::load_unaligned(x + v * W) - vm, b0);
      b1 = xsimd::fma(g1, V::load_unaligned(x + v * W + W) - vm, b1);
    }
    if (v < ve) {
      const V g0 = g(v * W);
      a0 += g0, b0 = xsimd::fma(g0, V::load_unaligned(x + v * W) - vm, b0), ++v;
    }
    if (v == nv) {  // both factors selected: 0·Inf of an already counted lane would be NaN
      const auto fresh = bn_new_lanes<V>(nv * W - t);
      const V g1 = xsimd::select(fresh, g(t), V(T(0))), d1 = xsimd::select(fresh, V::load_unaligned(x + t) - vm, V(T(0)));
      a1 += g1, b1 = xsimd::fma(g1, d1, b1);
    }
    a += double(xsimd::hadd(a0 + a1));
    b += double(xsimd::hadd(b0 + b1));
  } while (v < nv);
  s[0] = a, s[1] = b * double(inv);
}
template <class Arch, class T, bool Mask, bool Add>
void bn_backward_plane(const T* x, const T* y, const T* dy, T* dx, T* dr, index_t n, BnGrad<T> c) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  const V vk(c.k), v0(c.c0), v1(c.c1), vm(c.mean);
  auto g = [&](index_t i) { return bn_masked<Mask>(V::load_unaligned(dy + i), Mask ? V::load_unaligned(y + i) : V(T(0))); };
  auto f = [&](index_t i, const V& gi) {
    return V::load_unaligned(dx + i) + xsimd::fma(vk, gi, xsimd::fma(v1, V::load_unaligned(x + i) - vm, v0));
  };
  const index_t t = n - W;
  const V gt = g(t), dxt = f(t, gt);  // before the first store
  V drt(T(0));
  if constexpr (Add) drt = V::load_unaligned(dr + t) + gt;
  for (index_t i = 0; i < t; i += W) {
    const V gi = g(i);
    f(i, gi).store_unaligned(dx + i);
    if constexpr (Add) (V::load_unaligned(dr + i) + gi).store_unaligned(dr + i);
  }
  dxt.store_unaligned(dx + t);
  if constexpr (Add) drt.store_unaligned(dr + t);
}
}  // namespace detail

/// s[0] = Σ(x − K), s[1] = Σ(x − K)² (float partials per lane over blocks, summed in double).
template <class Arch = default_arch, class T>
void bn_sums(const T* x, index_t n, T K, double* s) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), U = 2 * W;
  const V vk(K);
  double a = 0, b = 0;
  index_t i = 0;
  while (i + U <= n) {
    const index_t end = std::min(n - (n - i) % U, i + bn_block);
    V a0(T(0)), a1(T(0)), b0(T(0)), b1(T(0));
    for (; i < end; i += U) {
      const V d0 = V::load_unaligned(x + i) - vk, d1 = V::load_unaligned(x + i + W) - vk;
      a0 += d0, a1 += d1;
      b0 = xsimd::fma(d0, d0, b0), b1 = xsimd::fma(d1, d1, b1);
    }
    a += double(xsimd::hadd(a0 + a1));
    b += double(xsimd::hadd(b0 + b1));
  }
  double t[2];
  ref::bn_sums(x + i, n - i, K, t);
  s[0] = a + t[0], s[1] = b + t[1];
}

/// y = (x − m)·a + b (+ r when r ≠ nullptr), ReLU when relu. y may alias x or r.
template <class Arch = default_arch, class T>
void bn_apply(const T* x, const T* r, T* y, index_t n, T m, T a, T b, bool relu) noexcept {
  if (r) relu ? detail::bn_apply_body<Arch, T, true, true>(x, r, y, n, m, a, b)
              : detail::bn_apply_body<Arch, T, true, false>(x, r, y, n, m, a, b);
  else relu ? detail::bn_apply_body<Arch, T, false, true>(x, r, y, n, m, a, b)
            : detail::bn_apply_body<Arch, T, false, false>(x, r, y, n, m, a, b);
}

/// s[0] = Σg, s[1] = Σg·(x − mean)·inv, g = dy·[y > 0] when y ≠ nullptr, else dy.
template <class Arch = default_arch, class T>
void bn_grad_sums(const T* x, const T* y, const T* dy, index_t n, T mean, T inv, double* s) noexcept {
  y ? detail::bn_grad_sums_body<Arch, T, true>(x, y, dy, n, mean, inv, s)
    : detail::bn_grad_sums_body<Arch, T, false>(x, y, dy, n, mean, inv, s);
}

/// dx += k·g + c0 + c1·(x − mean), and dr += g when dr ≠ nullptr.
template <class Arch = default_arch, class T>
void bn_backward(const T* x, const T* y, const T* dy, T* dx, T* dr, index_t n, BnGrad<T> c) noexcept {
  if (y) dr ? detail::bn_backward_body<Arch, T, true, true>(x, y, dy, dx, dr, n, c)
            : detail::bn_backward_body<Arch, T, true, false>(x, y, dy, dx, dr, n, c);
  else dr ? detail::bn_backward_body<Arch, T, false, true>(x, y, dy, dx, dr, n, c)
          : detail::bn_backward_body<Arch, T, false, false>(x, y, dy, dx, dr, n, c);
}

namespace detail {
// ---- The element-wise passes over a run of short planes as one array ----
// The run's P·n values are taken in whole vectors from its start, so that the
// loads and stores do not split a cache line more often than the array does
// (per plane, 7×7 planes would take 4 vectors for 49 values, most of them
// straddling lines). A vector that straddles two planes (n ≥ lanes: never
// three) gets its lanes' coefficients by a select; the last vector, at
// P·n − lanes, lies in the last plane, and is computed first and stored last
// as in the single-plane passes.
template <class Arch, class T, std::size_t NC, class Coef, class Compute, class Store>
void bn_stream(BnRun d, Coef coef, Compute compute, Store store) noexcept {
  using V = batch<T, Arch>;
  using K = std::array<V, NC>;
  constexpr index_t W = index_t(V::size);
  alignas(64) T idx[W];
  for (index_t j = 0; j < W; ++j) idx[j] = T(j);
  const V iota = V::load_aligned(idx);
  const index_t n = d.n, t = d.P * n - W;
  auto next = [&](index_t c) { return c + 1 == d.C ? index_t(0) : c + 1; };
  const auto last = compute(t, coef((d.c0 + d.P - 1) % d.C));  // before the first store: y may alias x or r
  index_t c = d.c0 % d.C, nc = next(c), e = n;  // lane 0 is in the plane of channel c, which ends at e
  K cur = coef(c), nxt = coef(nc);
  for (index_t i = 0; i < t; i += W) {
    const auto lo = iota < V(T(std::min(e - i, W)));  // the lanes before e
    K k;
    for (std::size_t j = 0; j < NC; ++j) k[j] = xsimd::select(lo, cur[j], nxt[j]);
    store(i, compute(i, k));
    if (i + W >= e) c = nc, nc = next(nc), e += n, cur = nxt, nxt = coef(nc);
  }
  store(t, last);
}
/// The planes count as short (one stream) up to this many vectors each.
inline constexpr index_t bn_stream_vectors = 16;

template <class Arch, class T, bool Add, bool Relu>
void bn_apply_stream(const T* x, const T* r, T* y, BnRun d, const T* m, const T* a, const T* b) noexcept {
  using V = batch<T, Arch>;
  const V zero(T(0));
  bn_stream<Arch, T, 3>(
      d, [&](index_t c) { return std::array<V, 3>{V(m[c]), V(a[c]), V(b[c])}; },
      [&](index_t i, const std::array<V, 3>& k) {
        V v = xsimd::fma(V::load_unaligned(x + i) - k[0], k[1], k[2]);
        if constexpr (Add) v += V::load_unaligned(r + i);
        if constexpr (Relu) v = xsimd::select(v < zero, zero, v);  // NaN passes
        return v;
      },
      [&](index_t i, const V& v) { v.store_unaligned(y + i); });
}
template <class Arch, class T, bool Mask, bool Add>
void bn_backward_stream(const T* x, const T* y, const T* dy, T* dx, T* dr, BnRun d, const BnGrad<T>* cf) noexcept {
  using V = batch<T, Arch>;
  struct Out {
    V dx, dr;
  };
  bn_stream<Arch, T, 4>(
      d, [&](index_t c) { return std::array<V, 4>{V(cf[c].mean), V(cf[c].k), V(cf[c].c0), V(cf[c].c1)}; },
      [&](index_t i, const std::array<V, 4>& k) {
        const V g = bn_masked<Mask>(V::load_unaligned(dy + i), Mask ? V::load_unaligned(y + i) : V(T(0)));
        Out o{V::load_unaligned(dx + i) + xsimd::fma(k[1], g, xsimd::fma(k[3], V::load_unaligned(x + i) - k[0], k[2])), g};
        if constexpr (Add) o.dr += V::load_unaligned(dr + i);
        return o;
      },
      [&](index_t i, const Out& o) {
        o.dx.store_unaligned(dx + i);
        if constexpr (Add) o.dr.store_unaligned(dr + i);
      });
}

template <class Arch, class T, bool Add, bool Relu>
void bn_apply_run(const T* x, const T* r, T* y, BnRun d, const T* m, const T* a, const T* b) noexcept {
  if (d.n <= bn_stream_vectors * lanes<T, Arch>) return bn_apply_stream<Arch, T, Add, Relu>(x, r, y, d, m, a, b);
  for (index_t q = 0, c = d.c0 % d.C; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1) {
    const index_t o = q * d.n;
    bn_apply_plane<Arch, T, Add, Relu>(x + o, Add ? r + o : nullptr, y + o, d.n, m[c], a[c], b[c]);
  }
}
template <class Arch, class T, bool Mask>
void bn_grad_sums_run(const T* x, const T* y, const T* dy, BnRun d, const T* mean, const T* inv, double* s) noexcept {
  for (index_t q = 0, c = d.c0 % d.C; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1) {
    const index_t o = q * d.n;
    bn_grad_sums_plane<Arch, T, Mask>(x + o, Mask ? y + o : nullptr, dy + o, d.n, mean[c], inv[c], s + 2 * q);
  }
}
template <class Arch, class T, bool Mask, bool Add>
void bn_backward_run(const T* x, const T* y, const T* dy, T* dx, T* dr, BnRun d, const BnGrad<T>* cf) noexcept {
  if (d.n <= bn_stream_vectors * lanes<T, Arch>) return bn_backward_stream<Arch, T, Mask, Add>(x, y, dy, dx, dr, d, cf);
  for (index_t q = 0, c = d.c0 % d.C; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1) {
    const index_t o = q * d.n;
    bn_backward_plane<Arch, T, Mask, Add>(x + o, Mask ? y + o : nullptr, dy + o, dx + o, Add ? dr + o : nullptr, d.n,
                                          cf[c]);
  }
}

// ---- Runs of short planes (lanes ≤ n ≤ bn_block): one float partial per plane ----
// G = lanes/2 planes at a time keep their Σ and Σ² vectors, and one transposed
// reduction (xsimd::haddp) gives all 2G sums in one vector: a horizontal add
// per plane would cost more than the plane's own loads at 7×7.

/// The row whose sum xsimd::haddp returns in lane j: row j, except for float
/// on AVX-512, where xsimd 8.1 gives rows 0 1 4 5 2 3 6 7 in each half (its
/// 128-bit blocks 1 and 2 swapped; checked by the plane-run tests at 8+ planes).
template <class Arch, class T>
constexpr index_t bn_haddp_row(index_t j) noexcept {
  if constexpr (std::is_base_of_v<xsimd::avx512f, Arch> && std::is_same_v<T, float>) {
    const index_t k = j % 8;
    return j - k + (k == 2 || k == 3 ? k + 2 : k == 4 || k == 5 ? k - 2 : k);
  } else {
    return j;
  }
}
/// f(std::integral_constant<index_t, nv>) for the common small nv (so that a
/// plane's few vectors are straight-line code), else f(constant −1).
template <class F>
void bn_with_nv(index_t nv, F&& f) {
  switch (nv) {
    case 0: return f(std::integral_constant<index_t, 0>{});
    case 1: return f(std::integral_constant<index_t, 1>{});
    case 2: return f(std::integral_constant<index_t, 2>{});
    case 3: return f(std::integral_constant<index_t, 3>{});
    case 4: return f(std::integral_constant<index_t, 4>{});
    case 5: return f(std::integral_constant<index_t, 5>{});
    case 6: return f(std::integral_constant<index_t, 6>{});
    case 7: return f(std::integral_constant<index_t, 7>{});
    default: return f(std::integral_constant<index_t, -1>{});
  }
}
/// The plane's partial vectors: a = Σ(x − K) and b = Σ(x − K)² per lane (n ≥ lanes; NV: nv, or −1).
template <index_t NV, class V>
void bn_short_sums(const T_of<V>* x, index_t nv, index_t t, const typename V::batch_bool_type& fresh, T_of<V> K, V& a,
                   V& b) noexcept {
  using T = T_of<V>;
  constexpr index_t W = index_t(V::size);
  const V vk(K);
  V a0(T(0)), b0(T(0));
  const index_t m = NV >= 0 ? NV : nv;
  for (index_t v = 0; v < m; ++v) {
    const V d0 = V::load_unaligned(x + v * W) - vk;
    a0 += d0, b0 = xsimd::fma(d0, d0, b0);
  }
  const V d1 = xsimd::select(fresh, V::load_unaligned(x + t) - vk, V(T(0)));
  a = a0 + d1, b = xsimd::fma(d1, d1, b0);
}
template <index_t NV, class Arch, class T>
void bn_sums_short_run(const T* x, BnRun d, const T* K, double* s) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), G = W / 2;
  const index_t n = d.n, t = n - W, nv = (t + W - 1) / W;
  const auto fresh = bn_new_lanes<V>(nv * W - t);
  index_t q = 0, c = d.c0 % d.C;
  for (; q + G <= d.P; q += G) {
    V acc[W];
    for (index_t g = 0; g < G; ++g, c = c + 1 == d.C ? 0 : c + 1)
      bn_short_sums<NV, V>(x + (q + g) * n, nv, t, fresh, K[c], acc[2 * g], acc[2 * g + 1]);
    alignas(64) T out[W];
    xsimd::haddp(acc).store_aligned(out);  // Σ, Σ² of plane q + g from rows 2g, 2g + 1: the layout of s
    for (index_t j = 0; j < W; ++j) s[2 * q + bn_haddp_row<Arch, T>(j)] = double(out[j]);
  }
  for (; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1) bn_sums_plane<Arch>(x + q * n, n, K[c], s + 2 * q);
}
template <index_t NV, class Arch, class T, bool Mask>
void bn_grad_sums_short_run(const T* x, const T* y, const T* dy, BnRun d, const T* mean, const T* inv,
                            double* s) noexcept {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), G = W / 2;
  const index_t n = d.n, t = n - W, nv = (t + W - 1) / W;
  const auto fresh = bn_new_lanes<V>(nv * W - t);
  index_t q = 0, c = d.c0 % d.C;
  for (; q + G <= d.P; q += G) {
    V acc[W];
    T sc[G];
    for (index_t g = 0; g < G; ++g, c = c + 1 == d.C ? 0 : c + 1) {
      const index_t o = (q + g) * n;
      const V vm(mean[c]), zero(T(0));
      auto gv = [&](index_t i) {
        return bn_masked<Mask>(V::load_unaligned(dy + o + i), Mask ? V::load_unaligned(y + o + i) : zero);
      };
      V a0 = zero, b0 = zero;
      for (index_t v = 0; v < (NV >= 0 ? NV : nv); ++v) {
        const V g0 = gv(v * W);
        a0 += g0, b0 = xsimd::fma(g0, V::load_unaligned(x + o + v * W) - vm, b0);
      }
      // both factors selected: 0·Inf of an already counted lane would be NaN
      const V g1 = xsimd::select(fresh, gv(t), zero), d1 = xsimd::select(fresh, V::load_unaligned(x + o + t) - vm, zero);
      acc[2 * g] = a0 + g1, acc[2 * g + 1] = xsimd::fma(g1, d1, b0);
      sc[g] = inv[c];
    }
    alignas(64) T out[W];
    xsimd::haddp(acc).store_aligned(out);
    alignas(64) T row[W];
    for (index_t j = 0; j < W; ++j) row[bn_haddp_row<Arch, T>(j)] = out[j];
    for (index_t g = 0; g < G; ++g)
      s[2 * (q + g)] = double(row[2 * g]), s[2 * (q + g) + 1] = double(row[2 * g + 1]) * double(sc[g]);
  }
  for (; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1) {
    const index_t o = q * n;
    bn_grad_sums_plane<Arch, T, Mask>(x + o, Mask ? y + o : nullptr, dy + o, n, mean[c], inv[c], s + 2 * q);
  }
}
}  // namespace detail

/// bn_sums over each plane of a run (plane q: s[2q], s[2q + 1], shift K[channel]).
template <class Arch = default_arch, class T>
void bn_sums_planes(const T* x, BnRun d, const T* K, double* s) noexcept {
  if (d.n < lanes<T, Arch>) return ref::bn_sums_planes(x, d, K, s);
  if (d.n <= bn_block)
    return detail::bn_with_nv((d.n - 1) / lanes<T, Arch>, [&](auto nv) {
      detail::bn_sums_short_run<decltype(nv)::value, Arch>(x, d, K, s);
    });
  for (index_t q = 0, c = d.c0 % d.C; q < d.P; ++q, c = c + 1 == d.C ? 0 : c + 1)
    detail::bn_sums_plane<Arch>(x + q * d.n, d.n, K[c], s + 2 * q);
}

/// bn_apply over each plane of a run with the channel's m[c], a[c], b[c]. y may alias x or r.
template <class Arch = default_arch, class T>
void bn_apply_planes(const T* x, const T* r, T* y, BnRun d, const T* m, const T* a, const T* b, bool relu) noexcept {
  if (d.n < lanes<T, Arch>) return ref::bn_apply_planes(x, r, y, d, m, a, b, relu);
  if (r) relu ? detail::bn_apply_run<Arch, T, true, true>(x, r, y, d, m, a, b)
              : detail::bn_apply_run<Arch, T, true, false>(x, r, y, d, m, a, b);
  else relu ? detail::bn_apply_run<Arch, T, false, true>(x, r, y, d, m, a, b)
            : detail::bn_apply_run<Arch, T, false, false>(x, r, y, d, m, a, b);
}

/// bn_grad_sums over each plane of a run with the channel's mean[c], inv[c] (plane q: s[2q], s[2q + 1]).
template <class Arch = default_arch, class T>
void bn_grad_sums_planes(const T* x, const T* y, const T* dy, BnRun d, const T* mean, const T* inv, double* s) noexcept {
  if (d.n < lanes<T, Arch>) return ref::bn_grad_sums_planes(x, y, dy, d, mean, inv, s);
  if (d.n <= bn_block)
    return detail::bn_with_nv((d.n - 1) / lanes<T, Arch>, [&](auto nv) {
      constexpr index_t NV = decltype(nv)::value;
      y ? detail::bn_grad_sums_short_run<NV, Arch, T, true>(x, y, dy, d, mean, inv, s)
        : detail::bn_grad_sums_short_run<NV, Arch, T, false>(x, y, dy, d, mean, inv, s);
    });
  y ? detail::bn_grad_sums_run<Arch, T, true>(x, y, dy, d, mean, inv, s)
    : detail::bn_grad_sums_run<Arch, T, false>(x, y, dy, d, mean, inv, s);
}

/// bn_backward over each plane of a run with the channel's coefficients cf[c].
template <class Arch = default_arch, class T>
void bn_backward_planes(const T* x, const T* y, const T* dy, T* dx, T* dr, BnRun d, const BnGrad<T>* cf) noexcept {
  if (d.n < lanes<T, Arch>) return ref::bn_backward_planes(x, y, dy, dx, dr, d, cf);
  if (y) dr ? detail::bn_backward_run<Arch, T, true, true>(x, y, dy, dx, dr, d, cf)
            : detail::bn_backward_run<Arch, T, true, false>(x, y, dy, dx, dr, d, cf);
  else dr ? detail::bn_backward_run<Arch, T, false, true>(x, y, dy, dx, dr, d, cf)
          : detail::bn_backward_run<Arch, T, false, false>(x, y, dy, dx, dr, d, cf);
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
