#pragma once
// Row softmax and log-softmax (spec/kernels.md "softmax / log_softmax rows").
//   p_i = exp(a_i − M) / S,  log p_i = a_i − M − log S,  M = max a, S = Σ exp(a_j − M)
// One read pass computes (M, S) online (the running maximum rescales the sum
// only when it grows), one pass writes. Rows that fit in cache (≤ 64 Ki
// elements) take a max pass first and keep the exps of the sum pass, so each
// element costs one exp and memory still sees one read and one write
// (softmax_cached); long rows use the online pass and recompute the exps, so
// only 3 arrays cross the memory bus. Accumulation runs in 4
// vector registers, folded every 4096 elements, so float rows of 1e6 stay
// within 1e-5.
//
// Non-finite input (documented behaviour, as PyTorch): a row containing NaN or
// +Inf gives NaN in every output of that row; −Inf entries give p = 0 and
// log p = −Inf; a row that is all −Inf gives NaN. n = 0 does nothing.
#include "lamina/kernels/exp.hpp"

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

/// Row maximum and Σ exp(a − max).
template <class T>
struct MaxSum {
  T max, sum;
};

namespace ref {
template <class T>
MaxSum<T> max_sum(const T* a, index_t n) {
  T m = detail::lowest<T>;
  bool nan = false;
  for (index_t i = 0; i < n; ++i) {
    nan = nan || std::isnan(a[i]);
    m = std::max(m, a[i]);
  }
  if (nan) return {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::quiet_NaN()};
  T s = 0;
  for (index_t i = 0; i < n; ++i) s += std::exp(a[i] - m);
  return {m, s};
}
template <class T>
void softmax(const T* a, T* p, index_t n) {
  const MaxSum<T> ms = max_sum(a, n);
  for (index_t i = 0; i < n; ++i) p[i] = std::exp(a[i] - ms.max) / ms.sum;
}
template <class T>
void log_softmax(const T* a, T* out, index_t n) {
  const MaxSum<T> ms = max_sum(a, n);
  const T l = std::log(ms.sum);
  for (index_t i = 0; i < n; ++i) out[i] = a[i] - ms.max - l;
}
/// da += p ⊙ (dy − <dy, p>)
template <class T>
void softmax_backward(const T* p, const T* dy, T* da, index_t n) {
  T d = 0;
  for (index_t i = 0; i < n; ++i) d += dy[i] * p[i];
  for (index_t i = 0; i < n; ++i) da[i] += p[i] * (dy[i] - d);
}
/// da += dy − exp(logp)·Σ dy
template <class T>
void log_softmax_backward(const T* logp, const T* dy, T* da, index_t n) {
  T s = 0;
  for (index_t i = 0; i < n; ++i) s += dy[i];
  for (index_t i = 0; i < n; ++i) da[i] += dy[i] - std::exp(logp[i]) * s;
}
}  // namespace ref

/// (max, Σ exp(a − max)) of a row in one pass. Four vectors form a block that
/// shares one running lane maximum, rescaled (one exp) only when the block's
/// maximum exceeds it; block sums fold into a total every 4096 elements
/// (two-level summation); lanes merge once at the end with one vector exp.
template <class Arch = default_arch, class T>
MaxSum<T> max_sum(const T* a, index_t n) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), U = 4 * W, block = 4096;
  T M = detail::lowest<T>, S = 0;
  index_t i = 0;
  if (n >= U) {
    V m(detail::lowest<T>), total(T(0));
    while (i + U <= n) {
      const index_t end = std::min(n - (n - i) % U, i + block);
      V s0(T(0)), s1(T(0)), s2(T(0)), s3(T(0));
      for (; i < end; i += U) {
        const V x0 = V::load_unaligned(a + i), x1 = V::load_unaligned(a + i + W), x2 = V::load_unaligned(a + i + 2 * W),
                x3 = V::load_unaligned(a + i + 3 * W);
        const V bm = xsimd::max(xsimd::max(x0, x1), xsimd::max(x2, x3));
        if (xsimd::any(bm > m)) {
          const V nm = xsimd::max(m, bm), r = vexp(m - nm);
          s0 *= r;
          s1 *= r;
          s2 *= r;
          s3 *= r;
          total *= r;
          m = nm;
        }
        s0 += vexp(x0 - m);
        s1 += vexp(x1 - m);
        s2 += vexp(x2 - m);
        s3 += vexp(x3 - m);
      }
      total += (s0 + s1) + (s2 + s3);
    }
    M = detail::hmax(m);
    S = xsimd::hadd(total * vexp(m - V(M)));
    if (std::isnan(M)) S = M;
  }
  for (; i < n; ++i) detail::merge(M, S, a[i], T(1));  // scalar tail
  return {M, S};
}

namespace detail {
/// Row maximum (vector pass). A NaN in the row may or may not reach the
/// result (x86 max returns its second operand on NaN): the callers do not need
/// it to, since exp(NaN − M) makes their sums NaN, and every output of the row
/// with them. Not tracking NaN saves a compare and a mask OR per vector.
template <class Arch, class T>
T row_max(const T* a, index_t n) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), U = 4 * W;
  T m = lowest<T>;
  index_t i = 0;
  if (n >= U) {
    V m0(m), m1(m), m2(m), m3(m);
    for (; i + U <= n; i += U) {
      m0 = xsimd::max(m0, V::load_unaligned(a + i));
      m1 = xsimd::max(m1, V::load_unaligned(a + i + W));
      m2 = xsimd::max(m2, V::load_unaligned(a + i + 2 * W));
      m3 = xsimd::max(m3, V::load_unaligned(a + i + 3 * W));
    }
    m = hmax(xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)));
  }
  for (; i < n; ++i) m = std::isnan(a[i]) ? a[i] : std::max(m, a[i]);
  return m;
}

/// Softmax of a row that stays in cache: a max pass, one pass that stores
/// e_i = exp(a_i − M) and sums it, and a scaling pass. One exp per element;
/// the extra passes read from L1/L2, so memory traffic stays one read and one
/// write per element.
///
/// Rows of a matrix (Mode = Rows::cached or streamed, from softmax_rows):
///  - the exp pass prefetches the row after next a few lines per iteration,
///    so its misses overlap the exps (a burst of prefetches at the start of a
///    row fills the miss buffers and stalls the row being computed; one row
///    ahead reached 69 %, two rows 77 % of the triad at DRAM size);
///  - streamed: rows up to stream_row elements keep their exps in a stack
///    buffer and write p once with non-temporal stores, which saves reading
///    p's lines before writing them (a third of the memory traffic); the
///    first vector of each row and of each 4 KiB page is stored normally
///    (see the write loop).
template <class Arch, class T, Rows Mode = Rows::one>
void softmax_cached(const T* a, T* p, index_t n) {
  constexpr bool Stream = Mode == Rows::streamed;
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), U = 4 * W;
  constexpr index_t stream_row = 16384 / index_t(sizeof(T));
  alignas(64) T scratch[Stream ? stream_row : 1];
  T* e = Stream && n <= stream_row ? scratch : p;
  const T M = row_max<Arch>(a, n);
  const V mv(M);
  V s0(T(0)), s1(T(0)), s2(T(0)), s3(T(0));
  index_t i = 0;
  for (; i + U <= n; i += U) {
    if constexpr (Mode != Rows::one) prefetch_block<U>(a + 2 * n + i);
    const V e0 = vexp(V::load_unaligned(a + i) - mv), e1 = vexp(V::load_unaligned(a + i + W) - mv),
            e2 = vexp(V::load_unaligned(a + i + 2 * W) - mv), e3 = vexp(V::load_unaligned(a + i + 3 * W) - mv);
    e0.store_unaligned(e + i);
    e1.store_unaligned(e + i + W);
    e2.store_unaligned(e + i + 2 * W);
    e3.store_unaligned(e + i + 3 * W);
    s0 += e0;
    s1 += e1;
    s2 += e2;
    s3 += e3;
  }
  T S = xsimd::hadd((s0 + s1) + (s2 + s3));
  for (; i < n; ++i) {
    e[i] = std::exp(a[i] - M);
    S += e[i];
  }
  const T inv = T(1) / S;
  const V vinv(inv);
  i = 0;
  if (e != p) {  // head up to a vector-aligned p, streamed body, tail
    const index_t head = std::min(n, index_t((-reinterpret_cast<std::uintptr_t>(p) / sizeof(T)) % std::uintptr_t(W)));
    for (; i < head; ++i) p[i] = e[i] * inv;
    for (; i + W <= n; i += W) {
      // The row's first vector and each page's first go through the cache:
      // rows written with non-temporal stores only ran at 20 GB/s against 30
      // on this machine (Zen 4 VM, DRAM-sized softmax_rows on 64-byte
      // aligned rows; huge pages made no difference).
      const V v = V::load_unaligned(e + i) * vinv;
      if (i == head || (reinterpret_cast<std::uintptr_t>(p + i) & 4095) == 0) v.store_aligned(p + i);
      else stream_store<Arch>(p + i, v);
    }
  } else {
    for (; i + W <= n; i += W) (V::load_unaligned(p + i) * vinv).store_unaligned(p + i);
  }
  for (; i < n; ++i) p[i] = e[i] * inv;
}
}  // namespace detail

/// Rows up to 64 Ki elements use the cached form (one exp per element); longer
/// rows stream twice over the input (online max-sum pass, then exp and write),
/// which moves 3 instead of 4 arrays through memory.
template <class Arch = default_arch, class T>
void softmax(const T* a, T* p, index_t n) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  if (n <= (index_t(1) << 16)) {
    detail::softmax_cached<Arch>(a, p, n);
    return;
  }
  const MaxSum<T> ms = max_sum<Arch>(a, n);
  const T inv = T(1) / ms.sum;
  const V vm(ms.max), vinv(inv);
  index_t i = 0;
  for (; i + W <= n; i += W) (vexp(V::load_unaligned(a + i) - vm) * vinv).store_unaligned(p + i);
  for (; i < n; ++i) p[i] = std::exp(a[i] - ms.max) * inv;
}

template <class Arch = default_arch, class T>
void log_softmax(const T* a, T* out, index_t n) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  const MaxSum<T> ms = max_sum<Arch>(a, n);
  // (a − M) − log S, never a − (M + log S): M + log S rounds to M's ulp (6e-5 at 1000 in float).
  const T l = std::log(ms.sum);
  const V vm(ms.max), vl(l);
  index_t i = 0;
  for (; i + W <= n; i += W) ((V::load_unaligned(a + i) - vm) - vl).store_unaligned(out + i);
  for (; i < n; ++i) out[i] = (a[i] - ms.max) - l;
}

namespace detail {
/// Σ x_i y_i in 4 vector accumulators, folded every 4096 elements.
template <class Arch, class T>
T dot(const T* x, const T* y, index_t n) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), U = 4 * W, block = 4096;
  T total = 0;
  index_t i = 0;
  while (i + U <= n) {
    const index_t end = std::min(n - (n - i) % U, i + block);
    V acc[4] = {V(T(0)), V(T(0)), V(T(0)), V(T(0))};
    for (; i < end; i += U)
      for (int k = 0; k < 4; ++k) acc[k] = xsimd::fma(V::load_unaligned(x + i + k * W), V::load_unaligned(y + i + k * W), acc[k]);
    total += xsimd::hadd((acc[0] + acc[1]) + (acc[2] + acc[3]));
  }
  for (; i < n; ++i) total += x[i] * y[i];
  return total;
}
}  // namespace detail

/// da += p ⊙ (dy − <dy, p>) (backward of softmax, adds).
template <class Arch = default_arch, class T>
void softmax_backward(const T* p, const T* dy, T* da, index_t n) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  const T d = detail::dot<Arch>(dy, p, n);
  const V vd(d);
  index_t i = 0;
  for (; i + W <= n; i += W) {
    const V pv = V::load_unaligned(p + i);
    xsimd::fma(pv, V::load_unaligned(dy + i) - vd, V::load_unaligned(da + i)).store_unaligned(da + i);
  }
  for (; i < n; ++i) da[i] += p[i] * (dy[i] - d);
}
/// da += dy − exp(logp)·Σ dy (backward of log-softmax, adds).
template <class Arch = default_arch, class T>
void log_softmax_backward(const T* logp, const T* dy, T* da, index_t n) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size);
  T s = 0;
  for (index_t i = 0; i < n; ++i) s += dy[i];
  const V vs(s);
  index_t i = 0;
  for (; i + W <= n; i += W)
    (V::load_unaligned(da + i) + V::load_unaligned(dy + i) - vexp(V::load_unaligned(logp + i)) * vs).store_unaligned(da + i);
  for (; i < n; ++i) da[i] += dy[i] - std::exp(logp[i]) * s;
}

/// Row-wise over [R, n] views (contiguous rows).
template <class Arch = default_arch, class T>
void softmax_rows(ConstView<T> a, View<T> p) {
  require<shape_error>(a.rank() == 2 && p.shape() == a.shape(), "softmax_rows", "p shape", a.shape(), p.shape());
  require_contiguous(a, "softmax_rows", "a");
  require_contiguous(p, "softmax_rows", "p");
  const index_t R = a.dim(0), n = a.dim(1);
  const T* x = a.data();
  T* y = p.data();
  switch (detail::rows_mode<T>(R * n, n)) {
    case detail::Rows::streamed:
      for (index_t r = 0; r < R; ++r) detail::softmax_cached<Arch, T, detail::Rows::streamed>(x + r * n, y + r * n, n);
      detail::stream_fence<Arch>();
      break;
    case detail::Rows::cached:
      for (index_t r = 0; r < R; ++r) detail::softmax_cached<Arch, T, detail::Rows::cached>(x + r * n, y + r * n, n);
      break;
    case detail::Rows::one:
      for (index_t r = 0; r < R; ++r) softmax<Arch>(x + r * n, y + r * n, n);
  }
}
template <class Arch = default_arch, class T>
void log_softmax_rows(ConstView<T> a, View<T> out) {
  require<shape_error>(a.rank() == 2 && out.shape() == a.shape(), "log_softmax_rows", "out shape", a.shape(), out.shape());
  require_contiguous(a, "log_softmax_rows", "a");
  require_contiguous(out, "log_softmax_rows", "out");
  const index_t R = a.dim(0), n = a.dim(1);
  for (index_t r = 0; r < R; ++r) log_softmax<Arch>(a.data() + r * n, out.data() + r * n, n);
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
