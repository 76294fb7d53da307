#pragma once
// Row kernels for many short rows (spec/kernels.md; layer_attention.md §3–4):
// the layer-attention distributions are R = B·G rows of t ≤ n-blocks-per-stage
// entries, far shorter than a vector, so the per-row kernels (softmax.hpp,
// kl_divergence.hpp) run them in their scalar tails. These kernels vectorise
// ACROSS rows instead: a block of W rows (W = vector lanes) is transposed into
// a column buffer (entry s of W rows is one vector), computed there, and
// transposed back. The last block has fewer rows; its missing lanes hold 0
// and are never stored. Rows longer than short_row_max take the per-row
// (long-row) kernels.
//
//   softmax_rows_short:          p = softmax(a) per row (row maximum subtracted)
//   softmax_backward_rows_short: da += p ⊙ (dy − <dy, p>) per row
//   kl_probs_rows_short:         out[r] = KL(p_r ‖ q_r) with optional ε-smoothing,
//                                the definition of kl_probs (kl_divergence.hpp)
// Non-finite values behave as in the per-row kernels: NaN or +Inf in a softmax
// row gives NaN in the whole row, −Inf entries give 0; NaN in a KL row gives NaN.
#include "lamina/kernels/kl_divergence.hpp"
#include "lamina/kernels/softmax.hpp"

namespace lamina::kernels {

/// Longest row the across-rows kernels take (longer rows use the per-row ones).
inline constexpr index_t short_row_max = 32;

inline namespace LAMINA_KERNELS_ISA_NS {

namespace ref {
template <class T>
void softmax_rows_short(const T* a, T* p, index_t R, index_t n) {
  for (index_t r = 0; r < R; ++r) softmax(a + r * n, p + r * n, n);
}
template <class T>
void softmax_backward_rows_short(const T* p, const T* dy, T* da, index_t R, index_t n) {
  for (index_t r = 0; r < R; ++r) softmax_backward(p + r * n, dy + r * n, da + r * n, n);
}
template <class T>
void kl_probs_rows_short(const T* p, const T* q, T* out, index_t R, index_t n, T eps) {
  for (index_t r = 0; r < R; ++r) out[r] = kl_probs(p + r * n, q + r * n, n, eps);
}
}  // namespace ref

namespace detail {
/// Column buffer of one block of W rows: buf[s·W + l] is entry s of row l.
template <class T, class Arch>
struct Columns {
  static constexpr index_t W = index_t(batch<T, Arch>::size);
  alignas(64) T buf[short_row_max * W];

  /// Loads rows [0, rows) of a (rows of n, contiguous); missing lanes get 0.
  void load(const T* a, index_t rows, index_t n) noexcept {
    for (index_t s = 0; s < n; ++s)
      for (index_t l = 0; l < W; ++l) buf[s * W + l] = l < rows ? a[l * n + s] : T(0);
  }
  void store(T* a, index_t rows, index_t n) const noexcept {
    for (index_t l = 0; l < rows; ++l)
      for (index_t s = 0; s < n; ++s) a[l * n + s] = buf[s * W + l];
  }
  batch<T, Arch> col(index_t s) const noexcept { return batch<T, Arch>::load_aligned(buf + s * W); }
  void set(index_t s, const batch<T, Arch>& v) noexcept { v.store_aligned(buf + s * W); }
};

template <class Arch, class T>
void softmax_columns(Columns<T, Arch>& c, index_t n) noexcept {
  using V = batch<T, Arch>;
  V m(lowest<T>), sum(T(0));
  for (index_t s = 0; s < n; ++s) m = xsimd::max(m, c.col(s));
  for (index_t s = 0; s < n; ++s) {
    const V e = vexp(c.col(s) - m);
    c.set(s, e);
    sum += e;
  }
  const V inv = V(T(1)) / sum;
  for (index_t s = 0; s < n; ++s) c.set(s, c.col(s) * inv);
}
}  // namespace detail

/// p = softmax(a) for R rows of n (contiguous, p may alias a).
template <class Arch = default_arch, class T>
void softmax_rows_short(const T* a, T* p, index_t R, index_t n) {
  if (n > short_row_max) {
    for (index_t r = 0; r < R; ++r) softmax<Arch>(a + r * n, p + r * n, n);
    return;
  }
  detail::Columns<T, Arch> c;
  constexpr index_t W = detail::Columns<T, Arch>::W;
  for (index_t r = 0; r < R; r += W) {
    const index_t rows = std::min(W, R - r);
    c.load(a + r * n, rows, n);
    detail::softmax_columns<Arch>(c, n);
    c.store(p + r * n, rows, n);
  }
}

/// da += p ⊙ (dy − <dy, p>) for R rows of n (adds).
template <class Arch = default_arch, class T>
void softmax_backward_rows_short(const T* p, const T* dy, T* da, index_t R, index_t n) {
  using V = batch<T, Arch>;
  if (n > short_row_max) {
    for (index_t r = 0; r < R; ++r) softmax_backward<Arch>(p + r * n, dy + r * n, da + r * n, n);
    return;
  }
  detail::Columns<T, Arch> cp, cg;
  constexpr index_t W = detail::Columns<T, Arch>::W;
  for (index_t r = 0; r < R; r += W) {
    const index_t rows = std::min(W, R - r);
    cp.load(p + r * n, rows, n);
    cg.load(dy + r * n, rows, n);
    V d(T(0));
    for (index_t s = 0; s < n; ++s) d = xsimd::fma(cg.col(s), cp.col(s), d);
    for (index_t s = 0; s < n; ++s) cg.set(s, cp.col(s) * (cg.col(s) - d));  // cg := the increment
    for (index_t l = 0; l < rows; ++l)
      for (index_t s = 0; s < n; ++s) da[(r + l) * n + s] += cg.buf[s * W + l];
  }
}

/// out[r] = KL(p_r ‖ q_r) for R rows of n, smoothing ε ≥ 0 as kl_probs.
template <class Arch = default_arch, class T>
void kl_probs_rows_short(const T* p, const T* q, T* out, index_t R, index_t n, T eps) {
  using V = batch<T, Arch>;
  if (n > short_row_max) {
    for (index_t r = 0; r < R; ++r) out[r] = kl_probs<Arch>(p + r * n, q + r * n, n, eps);
    return;
  }
  detail::Columns<T, Arch> cp, cq;
  constexpr index_t W = detail::Columns<T, Arch>::W;
  const V ve(eps), zero(T(0));
  const T norm = eps == T(0) ? T(1) : T(1) / (T(1) + T(n) * eps);
  for (index_t r = 0; r < R; r += W) {
    const index_t rows = std::min(W, R - r);
    cp.load(p + r * n, rows, n);
    cq.load(q + r * n, rows, n);
    V acc(T(0));
    for (index_t s = 0; s < n; ++s) {
      const V a = cp.col(s) + ve, b = cq.col(s) + ve;
      acc += xsimd::select(a != zero, a * (xsimd::log(a) - xsimd::log(b)), zero);  // 0·log 0 = 0; NaN kept
    }
    alignas(64) T res[W];
    (acc * V(norm)).store_aligned(res);
    for (index_t l = 0; l < rows; ++l) out[r + l] = res[l];
  }
}

/// View entry points: [R, n] rows.
template <class Arch = default_arch, class T>
void softmax_rows_short(ConstView<T> a, View<T> p) {
  require<shape_error>(a.rank() == 2 && p.shape() == a.shape(), "softmax_rows_short", "p shape", a.shape(), p.shape());
  require_contiguous(a, "softmax_rows_short", "a");
  require_contiguous(p, "softmax_rows_short", "p");
  softmax_rows_short<Arch>(a.data(), p.data(), a.dim(0), a.dim(1));
}
template <class Arch = default_arch, class T>
void kl_probs_rows_short(ConstView<T> p, ConstView<T> q, View<T> out, T eps = T(0)) {
  require<shape_error>(p.rank() == 2 && q.shape() == p.shape(), "kl_probs_rows_short", "q shape", p.shape(), q.shape());
  require<shape_error>(out.size() == p.dim(0), "kl_probs_rows_short", "out size", p.dim(0), out.size());
  require(eps >= T(0), "kl_probs_rows_short", "eps", ">= 0", eps);
  require_contiguous(p, "kl_probs_rows_short", "p");
  require_contiguous(q, "kl_probs_rows_short", "q");
  require_contiguous(out, "kl_probs_rows_short", "out");
  kl_probs_rows_short<Arch>(p.data(), q.data(), out.data(), p.dim(0), p.dim(1), eps);
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
