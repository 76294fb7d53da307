#pragma once
// KL divergence kernels (spec/kernels.md).
//
// From probabilities: KL(p‖q) = Σ p_i (log p_i − log q_i); terms with p_i = 0
// count 0. With smoothing ε > 0 both vectors become (v + ε)/(1 + nε); the
// normaliser cancels inside the log, so
//   KL_ε = Σ (p_i + ε)(log(p_i + ε) − log(q_i + ε)) / (1 + nε).
// Non-finite: q_i = 0 with p_i > 0 (ε = 0) gives +Inf; a NaN in p, or in q
// where p_i + ε ≠ 0, gives NaN; a term with p_i + ε = 0 counts 0 whatever q_i
// is (spec/kernels.md). The same on every instruction set: the vector body
// drops a term where `p_i + ε == 0` (false for NaN everywhere), not where
// `!=` fails (ordered on AVX2 and AVX-512, where it would drop a NaN p_i).
//
// From logits, fused: KL(softmax(a)‖softmax(b)) = Σ p_i (a_i − b_i) − lse(a) + lse(b),
// one pass over a and b with online log-sum-exp for both and the weighted sum
// t = Σ e^{a_i − m_a}(a_i − b_i) rescaled with the a-sum; no temporaries. Rows
// that fit in cache (≤ 64 Ki elements) find both maxima first (a pass over
// cached data) and skip the rescaling. Every exp has a max-shifted argument
// (≤ 0) and feeds a sum, so it is vexp_nonpos (kernels/exp.hpp), unclamped
// in the cached path's first try: 2 exps per element make this kernel
// compute-bound.
// Non-finite: NaN or +Inf in a row gives NaN.
#include "lamina/kernels/log.hpp"
#include "lamina/kernels/softmax.hpp"

namespace lamina::kernels {
inline namespace LAMINA_KERNELS_ISA_NS {

namespace ref {
template <class T>
T kl_probs(const T* p, const T* q, index_t n, T eps = T(0)) {
  T s = 0;
  for (index_t i = 0; i < n; ++i) {
    const T a = p[i] + eps, b = q[i] + eps;
    if (!(a == T(0))) s += a * (std::log(a) - std::log(b));
  }
  return eps == T(0) ? s : s / (T(1) + T(n) * eps);
}
/// Two-step reference: log-softmax of both rows, then Σ p (log p − log q).
template <class T>
T kl_logits(const T* a, const T* b, index_t n) {
  const MaxSum<T> ma = max_sum(a, n), mb = max_sum(b, n);
  const T la = std::log(ma.sum), lb = std::log(mb.sum);
  T s = 0;
  for (index_t i = 0; i < n; ++i) {
    const T lpa = (a[i] - ma.max) - la, lpb = (b[i] - mb.max) - lb;  // (a − M) − log S: see log_softmax
    s += std::exp(lpa) * (lpa - lpb);
  }
  return s;
}
}  // namespace ref

namespace detail {
/// a/b to about an ulp. AVX-512 float: vrcp14ps and one Newton step
/// (relative error ≤ 2⁻²³ before the product, 2 ulp after it) instead of
/// vdivps, whose throughput (one zmm per ~16 cycles on Skylake) bounds kl_probs
/// in cache. Out-of-range quotients (0, Inf, NaN, tiny or huge b) may differ
/// from a/b; kl_probs redoes those vectors with two logs.
template <class Arch>
batch<float, Arch> quotient(const batch<float, Arch>& a, const batch<float, Arch>& b) noexcept {
  if constexpr (is_avx512<Arch>) {
    const __m512 r = _mm512_rcp14_ps(b);
    const __m512 r1 = _mm512_mul_ps(r, _mm512_fnmadd_ps(b, r, _mm512_set1_ps(2.0f)));
    return _mm512_mul_ps(a, r1);
  } else {
    return a / b;
  }
}
template <class Arch>
batch<double, Arch> quotient(const batch<double, Arch>& a, const batch<double, Arch>& b) noexcept {
  return a / b;
}
/// Lanes of v that are not positive normal numbers (0, subnormal, negative,
/// ±Inf, NaN): one vfpclassps on AVX-512.
template <class Arch, class T>
auto not_positive_normal(const batch<T, Arch>& v) noexcept {
  if constexpr (is_avx512<Arch> && std::is_same_v<T, float>)
    return xsimd::batch_bool<float, Arch>(_mm512_fpclass_ps_mask(v, 0xff));
  else
    return !(v >= batch<T, Arch>(std::numeric_limits<T>::min()) && v <= batch<T, Arch>(std::numeric_limits<T>::max()));
}
/// log a − log b, kl_probs' rare path: out of line, so that the common one
/// inlines its single vlog.
template <class V>
[[gnu::noinline]] V log_difference(const V& a, const V& b) noexcept {
  return vlog(a) - vlog(b);
}
}  // namespace detail

template <class Arch = default_arch, class T>
T kl_probs(const T* p, const T* q, index_t n, T eps = T(0)) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), U = 4 * W, block = 4096;
  const V ve(eps), zero(T(0));
  auto term = [&](const V& pv, const V& qv) {
    const V a = pv + ve, b = qv + ve, ratio = detail::quotient(a, b);
    // One log of a/b (a division and a log instead of two logs): exact to an
    // ulp of a/b, i.e. closer than log a − log b. Only where a/b is not a
    // positive normal float (b zero, a or b negative, subnormal-ish, Inf, NaN)
    // in a lane whose term counts (a ≠ 0) are both logs needed: then the
    // vector is redone as a (log a − log b).
    const auto a0 = a == zero;
    V l = detail::vlog_normal<Arch>(ratio);
    if (xsimd::any(detail::not_positive_normal(ratio) && !a0)) [[unlikely]]
      l = detail::log_difference(a, b);
    // 0·log 0 = 0; a NaN in a stays (a == 0 is false for NaN on every ISA).
    return xsimd::select(a0, zero, a * l);
  };
  T total = 0;
  index_t i = 0;
  while (i + U <= n) {  // blocks of at most 4096 elements in 4 accumulators
    const index_t end = std::min(n - (n - i) % U, i + block);
    V acc[4] = {zero, zero, zero, zero};
    for (; i < end; i += U)
      for (int k = 0; k < 4; ++k) acc[k] += term(V::load_unaligned(p + i + k * W), V::load_unaligned(q + i + k * W));
    total += xsimd::hadd((acc[0] + acc[1]) + (acc[2] + acc[3]));
  }
  for (; i < n; ++i) {
    const T a = p[i] + eps, b = q[i] + eps;
    if (!(a == T(0))) total += a * (std::log(a) - std::log(b));
  }
  return eps == T(0) ? total : total / (T(1) + T(n) * eps);
}

namespace detail {
/// Scalar state of the fused KL: a-sum with its weighted sum t, and b-sum.
template <class T>
struct KLState {
  T ma = lowest<T>, sa = 0, t = 0, mb = lowest<T>, sb = 0;
  void merge(T ma2, T sa2, T t2, T mb2, T sb2) noexcept {
    if (std::isnan(ma2) || std::isnan(mb2) || std::isnan(t2)) {
      t = std::numeric_limits<T>::quiet_NaN();
      return;
    }
    const T M = std::max(ma, ma2), r1 = std::exp(ma - M), r2 = std::exp(ma2 - M);
    sa = sa * r1 + sa2 * r2;
    t = t * r1 + t2 * r2;
    ma = M;
    detail::merge(mb, sb, mb2, sb2);
  }
};
}  // namespace detail

namespace detail {
/// The exp pass of kl_logits_cached: Σ e^{a−Ma}, Σ e^{a−Ma}(a − b), Σ e^{b−Mb}
/// folded into the KL. Clamped = false uses vexp_nonpos_unclamped (one
/// operation less per exp), whose non-finite results for −Inf or huge
/// negative inputs make the KL non-finite.
template <bool Clamped, class Arch, class T, detail::Rows Mode>
T kl_logits_exp_pass(const T* a, const T* b, index_t n, T Ma, T Mb) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), U = 2 * W;
  const auto ex = [](const V& x) {
    if constexpr (Clamped) return vexp_nonpos(x);
    else return vexp_nonpos_unclamped(x);
  };
  const V ma(Ma), mb(Mb);
  V sa0(T(0)), sa1(T(0)), t0(T(0)), t1(T(0)), sb0(T(0)), sb1(T(0));
  index_t i = 0;
  for (; i + U <= n; i += U) {
    if constexpr (Mode != Rows::one) {
      prefetch_block<U>(a + 2 * n + i);
      prefetch_block<U>(b + 2 * n + i);
    }
    const V a0 = V::load_unaligned(a + i), a1 = V::load_unaligned(a + i + W), b0 = V::load_unaligned(b + i),
            b1 = V::load_unaligned(b + i + W);
    const V e0 = ex(a0 - ma), e1 = ex(a1 - ma);
    sa0 += e0;
    sa1 += e1;
    t0 = xsimd::fma(e0, a0 - b0, t0);
    t1 = xsimd::fma(e1, a1 - b1, t1);
    sb0 += ex(b0 - mb);
    sb1 += ex(b1 - mb);
  }
  T sa = xsimd::hadd(sa0 + sa1), t = xsimd::hadd(t0 + t1), sb = xsimd::hadd(sb0 + sb1);
  for (; i < n; ++i) {
    const T e = std::exp(a[i] - Ma);
    sa += e;
    t += e * (a[i] - b[i]);
    sb += std::exp(b[i] - Mb);
  }
  return t / sa + (Mb - Ma) + std::log(sb / sa);
}

/// Fused KL of rows that stay in cache: the maxima first (one vector pass over
/// both rows), then one pass of exps and sums with no rescaling. Rows of
/// matrices (Mode ≠ Rows::one, from kl_logits_rows) prefetch two rows ahead
/// during the exp pass, as softmax_cached does. The exp pass runs without the
/// −Inf clamp, and again with it only when the result is not finite (a row
/// with −Inf, NaN or ±Inf logits, or logits spread over more than 9·10⁴, whose
/// KL is then mostly ±Inf or NaN): rows of finite logits save the two clamps,
/// 2 of the 24 vector operations per 2 × 16 elements.
template <class Arch, class T, detail::Rows Mode = detail::Rows::one>
T kl_logits_cached(const T* a, const T* b, index_t n) {
  const T Ma = row_max<Arch>(a, n), Mb = row_max<Arch>(b, n);
  if (std::isnan(Ma) || std::isnan(Mb)) return std::numeric_limits<T>::quiet_NaN();
  const T kl = kl_logits_exp_pass<false, Arch, T, Mode>(a, b, n, Ma, Mb);
  if (std::isfinite(kl)) [[likely]]
    return kl;
  return kl_logits_exp_pass<true, Arch, T, Rows::one>(a, b, n, Ma, Mb);
}
}  // namespace detail

template <class Arch = default_arch, class T>
T kl_logits(const T* a, const T* b, index_t n) {
  using V = batch<T, Arch>;
  constexpr index_t W = index_t(V::size), U = 4 * W, block = 4096;
  if (n == 0) return T(0);
  if (n <= (index_t(1) << 16)) return detail::kl_logits_cached<Arch>(a, b, n);
  detail::KLState<T> st;
  index_t i = 0;
  if (n >= U) {
    // Long rows: one streaming pass. Blocks of four vectors share one running maximum per side (see max_sum).
    V ma(detail::lowest<T>), mb(detail::lowest<T>), sa_tot(T(0)), t_tot(T(0)), sb_tot(T(0));
    while (i + U <= n) {
      const index_t end = std::min(n - (n - i) % U, i + block);
      V sa[4], t[4], sb[4];
      for (int k = 0; k < 4; ++k) sa[k] = t[k] = sb[k] = V(T(0));
      for (; i < end; i += U) {
        V av[4], bv[4];
        for (int k = 0; k < 4; ++k) {
          av[k] = V::load_unaligned(a + i + k * W);
          bv[k] = V::load_unaligned(b + i + k * W);
        }
        const V ba = xsimd::max(xsimd::max(av[0], av[1]), xsimd::max(av[2], av[3]));
        const V bb = xsimd::max(xsimd::max(bv[0], bv[1]), xsimd::max(bv[2], bv[3]));
        if (xsimd::any(ba > ma)) {
          const V nm = xsimd::max(ma, ba), r = vexp(ma - nm);
          for (int k = 0; k < 4; ++k) {
            sa[k] *= r;
            t[k] *= r;
          }
          sa_tot *= r;
          t_tot *= r;
          ma = nm;
        }
        if (xsimd::any(bb > mb)) {
          const V nm = xsimd::max(mb, bb), r = vexp(mb - nm);
          for (int k = 0; k < 4; ++k) sb[k] *= r;
          sb_tot *= r;
          mb = nm;
        }
        for (int k = 0; k < 4; ++k) {
          const V e = vexp_nonpos(av[k] - ma);
          sa[k] += e;
          t[k] = xsimd::fma(e, av[k] - bv[k], t[k]);
          sb[k] += vexp_nonpos(bv[k] - mb);
        }
      }
      sa_tot += (sa[0] + sa[1]) + (sa[2] + sa[3]);
      t_tot += (t[0] + t[1]) + (t[2] + t[3]);
      sb_tot += (sb[0] + sb[1]) + (sb[2] + sb[3]);
    }
    const T Ma = detail::hmax(ma), Mb = detail::hmax(mb);
    const V ra = vexp(ma - V(Ma)), rb = vexp(mb - V(Mb));
    st.ma = Ma;
    st.sa = xsimd::hadd(sa_tot * ra);
    st.t = xsimd::hadd(t_tot * ra);
    st.mb = Mb;
    st.sb = xsimd::hadd(sb_tot * rb);
    if (std::isnan(Ma) || std::isnan(Mb)) st.t = std::numeric_limits<T>::quiet_NaN();
  }
  for (; i < n; ++i) st.merge(a[i], T(1), a[i] - b[i], b[i], T(1));
  if (n == 0) return T(0);
  // KL = t/s_a − (m_a + log s_a) + (m_b + log s_b), grouped to limit cancellation.
  return st.t / st.sa + (st.mb - st.ma) + std::log(st.sb / st.sa);
}

/// Per-row KL over [R, n] views; out has R entries.
template <class Arch = default_arch, class T>
void kl_probs_rows(ConstView<T> p, ConstView<T> q, View<T> out, T eps = T(0)) {
  require<shape_error>(p.rank() == 2 && q.shape() == p.shape(), "kl_probs_rows", "q shape", p.shape(), q.shape());
  require<shape_error>(out.size() == p.dim(0), "kl_probs_rows", "out size", p.dim(0), out.size());
  require(eps >= T(0), "kl_probs_rows", "eps", ">= 0", eps);
  require_contiguous(p, "kl_probs_rows", "p");
  require_contiguous(q, "kl_probs_rows", "q");
  const index_t n = p.dim(1);
  for (index_t r = 0; r < p.dim(0); ++r) out.data()[r] = kl_probs<Arch>(p.data() + r * n, q.data() + r * n, n, eps);
}
template <class Arch = default_arch, class T>
void kl_logits_rows(ConstView<T> a, ConstView<T> b, View<T> out) {
  require<shape_error>(a.rank() == 2 && b.shape() == a.shape(), "kl_logits_rows", "b shape", a.shape(), b.shape());
  require<shape_error>(out.size() == a.dim(0), "kl_logits_rows", "out size", a.dim(0), out.size());
  require_contiguous(a, "kl_logits_rows", "a");
  require_contiguous(b, "kl_logits_rows", "b");
  const index_t n = a.dim(1);
  T* o = out.data();
  if (detail::rows_mode<T>(2 * a.size(), n) != detail::Rows::one) {  // no output stream: prefetching is all
    for (index_t r = 0; r < a.dim(0); ++r)
      o[r] = detail::kl_logits_cached<Arch, T, detail::Rows::cached>(a.data() + r * n, b.data() + r * n, n);
  } else {
    for (index_t r = 0; r < a.dim(0); ++r) o[r] = kl_logits<Arch>(a.data() + r * n, b.data() + r * n, n);
  }
}

}  // namespace LAMINA_KERNELS_ISA_NS
}  // namespace lamina::kernels
