#pragma once
// Weighted aggregation, the layer-attention retrieval (spec/kernels.md,
// layer_attention.md §3):  o = Σ_{s<t} w_s v_s  over t arrays of length L,
// and its backward  ∂v_s += w_s ∂o,  ∂w_s += <∂o, v_s>  (or ∂v_s = w_s ∂o for the
// s marked `assign`: a gradient buffer nothing has written yet need not be
// zeroed first, which saves a pass over it).
// Each v_s is read once and o written once (t + 1 streams); the backward reads
// ∂o once for all s. NaN/Inf propagate as in the arithmetic (0·Inf = NaN); an
// assigned ∂v_s does not see what the buffer held before (NaN garbage included).
#include <cstdint>
#include <span>
#include <vector>

#include "lamina/kernels/simd.hpp"

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

namespace ref {
template <class T>
void weighted_sum(std::span<const T* const> v, std::span<const T> w, T* o, index_t L) {
  for (index_t i = 0; i < L; ++i) {
    T s = 0;
    for (std::size_t k = 0; k < v.size(); ++k) s += w[k] * v[k][i];
    o[i] = s;
  }
}
template <class T>
void weighted_sum_backward(std::span<const T* const> v, std::span<const T> w, const T* dout,
                           std::span<T* const> dv, std::span<T> dw, index_t L,
                           std::span<const std::uint8_t> assign = {}) {
  for (std::size_t k = 0; k < v.size(); ++k) {
    const bool set = !assign.empty() && assign[k];
    T d = 0;
    for (index_t i = 0; i < L; ++i) {
      dv[k][i] = (set ? T(0) : dv[k][i]) + w[k] * dout[i];
      d += dout[i] * v[k][i];
    }
    dw[k] += d;
  }
}
}  // namespace ref

/// o[0..L) = Σ_k w[k] v[k][0..L). o may not alias any v[k].
template <class Arch = default_arch, class T>
void weighted_sum(std::span<const T* const> v, std::span<const T> w, T* o, index_t L) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  const std::size_t t = v.size();
  if (t == 0) {
    std::fill(o, o + L, T(0));
    return;
  }
  index_t i = 0;
  for (; i + 2 * W <= L; i += 2 * W) {  // two independent vectors per step
    const V w0(w[0]);
    V a = w0 * V::load_unaligned(v[0] + i), b = w0 * V::load_unaligned(v[0] + i + W);
    for (std::size_t k = 1; k < t; ++k) {
      const V wk(w[k]);
      a = xsimd::fma(wk, V::load_unaligned(v[k] + i), a);
      b = xsimd::fma(wk, V::load_unaligned(v[k] + i + W), b);
    }
    a.store_unaligned(o + i);
    b.store_unaligned(o + i + W);
  }
  for (; i < L; ++i) {
    T s = w[0] * v[0][i];
    for (std::size_t k = 1; k < t; ++k) s = std::fma(w[k], v[k][i], s);
    o[i] = s;
  }
}

namespace detail {
// One k of weighted_sum_backward: dvk (+)= wk·dout, returns <dout, vk>.
template <class Arch, bool Assign, class T>
T aggregation_pass(const T* vk, T wk_s, const T* dout, T* dvk, index_t L) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), chunk = 2048;
  const V wk(wk_s);
  auto old = [&](index_t i) { return Assign ? V(T(0)) : V::load_unaligned(dvk + i); };
  T total = 0;
  for (index_t c0 = 0; c0 < L; c0 += chunk) {
    const index_t c1 = std::min(L, c0 + chunk);
    V acc0(T(0)), acc1(T(0));
    index_t i = c0;
    for (; i + 2 * W <= c1; i += 2 * W) {
      const V g0 = V::load_unaligned(dout + i), g1 = V::load_unaligned(dout + i + W);
      acc0 = xsimd::fma(g0, V::load_unaligned(vk + i), acc0);
      acc1 = xsimd::fma(g1, V::load_unaligned(vk + i + W), acc1);
      xsimd::fma(wk, g0, old(i)).store_unaligned(dvk + i);
      xsimd::fma(wk, g1, old(i + W)).store_unaligned(dvk + i + W);
    }
    T part = xsimd::hadd(acc0 + acc1);
    for (; i < c1; ++i) {
      part += dout[i] * vk[i];
      dvk[i] = (Assign ? T(0) : dvk[i]) + wk_s * dout[i];
    }
    total += part;
  }
  return total;
}
}  // namespace detail

/// dv[k] += w[k]·dout (dv[k] = w[k]·dout where assign[k] is set; an empty
/// `assign` adds everywhere), dw[k] += <dout, v[k]>. The row runs in L1-sized
/// chunks; within a chunk each k is one streaming pass (dout re-read from L1),
/// with its dot product in two registers. Chunk sums fold into a total per k:
/// two-level summation for long rows.
template <class Arch = default_arch, class T>
void weighted_sum_backward(std::span<const T* const> v, std::span<const T> w, const T* dout,
                           std::span<T* const> dv, std::span<T> dw, index_t L,
                           std::span<const std::uint8_t> assign = {}) {
  for (std::size_t k = 0; k < v.size(); ++k) {
    const T d = !assign.empty() && assign[k] ? detail::aggregation_pass<Arch, true>(v[k], w[k], dout, dv[k], L)
                                             : detail::aggregation_pass<Arch, false>(v[k], w[k], dout, dv[k], L);
    dw[k] += d;
  }
}

/// Batched retrieval: V_s are [R, L] (R = B·G rows), A is [R, t] (row r holds
/// the weights of row r), O is [R, L]: O[r] = Σ_s A[r, s] V_s[r].
template <class Arch = default_arch, class T>
void aggregate(std::span<const ConstView<T>> V, ConstView<T> A, View<T> O) {
  const index_t t = index_t(V.size());
  require<shape_error>(A.rank() == 2 && A.dim(1) == t, "aggregate", "A shape", Shape{O.dim(0), t}, A.shape());
  require<shape_error>(O.rank() == 2 && O.dim(0) == A.dim(0), "aggregate", "O rows", A.dim(0), O.shape());
  for (const auto& v : V) {
    require<shape_error>(v.shape() == O.shape(), "aggregate", "V_s shape", O.shape(), v.shape());
    require_contiguous(v, "aggregate", "V_s");
  }
  require_contiguous(A, "aggregate", "A");
  require_contiguous(O, "aggregate", "O");
  const index_t R = O.dim(0), L = O.dim(1);
  std::vector<const T*> ptr(static_cast<std::size_t>(t));
  for (index_t r = 0; r < R; ++r) {
    for (index_t s = 0; s < t; ++s) ptr[std::size_t(s)] = V[std::size_t(s)].data() + r * L;
    weighted_sum<Arch, T>(ptr, std::span<const T>(A.data() + r * t, std::size_t(t)), O.data() + r * L, L);
  }
}

/// Backward of aggregate(): dV_s[r] += A[r, s]·dO[r], dA[r, s] += <dO[r], V_s[r]>.
template <class Arch = default_arch, class T>
void aggregate_backward(std::span<const ConstView<T>> V, ConstView<T> A, ConstView<T> dO, std::span<const View<T>> dV,
                        View<T> dA) {
  const index_t t = index_t(V.size());
  require<shape_error>(A.rank() == 2 && A.dim(1) == t, "aggregate_backward", "A shape", Shape{dO.dim(0), t}, A.shape());
  require<shape_error>(dA.shape() == A.shape(), "aggregate_backward", "dA shape", A.shape(), dA.shape());
  require<shape_error>(index_t(dV.size()) == t, "aggregate_backward", "number of dV", t, dV.size());
  require<shape_error>(dO.rank() == 2 && dO.dim(0) == A.dim(0), "aggregate_backward", "dO rows", A.dim(0), dO.shape());
  for (index_t s = 0; s < t; ++s) {
    require<shape_error>(V[std::size_t(s)].shape() == dO.shape(), "aggregate_backward", "V_s shape", dO.shape(), V[std::size_t(s)].shape());
    require<shape_error>(dV[std::size_t(s)].shape() == dO.shape(), "aggregate_backward", "dV_s shape", dO.shape(), dV[std::size_t(s)].shape());
    require_contiguous(V[std::size_t(s)], "aggregate_backward", "V_s");
    require_contiguous(dV[std::size_t(s)], "aggregate_backward", "dV_s");
  }
  require_contiguous(A, "aggregate_backward", "A");
  require_contiguous(dA, "aggregate_backward", "dA");
  require_contiguous(dO, "aggregate_backward", "dO");
  const index_t R = dO.dim(0), L = dO.dim(1);
  std::vector<const T*> vp(static_cast<std::size_t>(t));
  std::vector<T*> dvp(static_cast<std::size_t>(t));
  for (index_t r = 0; r < R; ++r) {
    for (index_t s = 0; s < t; ++s) {
      vp[std::size_t(s)] = V[std::size_t(s)].data() + r * L;
      dvp[std::size_t(s)] = dV[std::size_t(s)].data() + r * L;
    }
    weighted_sum_backward<Arch, T>(vp, std::span<const T>(A.data() + r * t, std::size_t(t)), dO.data() + r * L, dvp,
                                   std::span<T>(dA.data() + r * t, std::size_t(t)), L);
  }
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
