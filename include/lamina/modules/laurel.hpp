#pragma once
// LAUREL: learned augmented residual connection (spec/laurel.md)
//   y = α f(x) + β (s + s A B + Σ_{j=1..k} γ_j h_j(s_{i-j})),   s = shortcut(x)
// around any Module f. The variant (RW, LR, PA, RW+LR, RW+LR+PA) is a
// compile-time tag, so unused parts have no storage and no code; rank, history,
// bounding of α/β and initialisation are run-time options.
//
// The stream s is x itself (identity shortcut) or the output of a projection
// shortcut (a ResNet stage's first block), so that every stream of a stage has
// the stage's width D. Dense [N, D] and image [B, C, H, W] streams are read in
// place through core/channels.hpp; no D×D product is ever formed.
#include "lamina/core/eigen_core.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lamina/core/channels.hpp"
#include "lamina/core/init.hpp"
#include "lamina/core/module.hpp"
#include "lamina/core/sequential.hpp"
#include "lamina/core/stage_memory.hpp"
#include "lamina/modules/low_rank.hpp"

namespace lamina::laurel {

// Variant tags (spec/laurel.md "Variants").
struct RW {
  static constexpr bool rw = true, lr = false, pa = false;
  static constexpr const char* name = "RW";
};
struct LR {
  static constexpr bool rw = false, lr = true, pa = false;
  static constexpr const char* name = "LR";
};
struct PA {
  static constexpr bool rw = false, lr = false, pa = true;
  static constexpr const char* name = "PA";
};
struct RW_LR {
  static constexpr bool rw = true, lr = true, pa = false;
  static constexpr const char* name = "RW+LR";
};
struct RW_LR_PA {
  static constexpr bool rw = true, lr = true, pa = true;
  static constexpr const char* name = "RW+LR+PA";
};

template <class V>
concept Variant = requires {
  { V::rw } -> std::convertible_to<bool>;
  { V::lr } -> std::convertible_to<bool>;
  { V::pa } -> std::convertible_to<bool>;
};

/// Bounding of α, β (spec "Bounding α, β"). softmax: (α, β) = 2·softmax(w);
/// sigmoid: α = σ(s), β = 1 − σ(s); two_sigmoids: α = 2σ(s_α), β = 2σ(s_β)
/// (the factor 2 keeps α = β = 1 at init, as the softmax default does).
enum class Bound { softmax, sigmoid, two_sigmoids };
/// h_j of PA: identity or low-rank A_j B_j; automatic = identity for PA,
/// low-rank for RW+LR+PA (the spec's forms).
enum class History { automatic, identity, low_rank };

struct Options {
  index_t rank = 4;     ///< r of A, B (and of A_j, B_j)
  index_t history = 2;  ///< k: earlier streams a PA connection reads
  Bound bound = Bound::softmax;
  bool per_channel = false;  ///< α, β ∈ R^D instead of scalars
  AInit a_init = AInit::column_orthogonal;
  History h = History::automatic;
};

}  // namespace lamina::laurel

namespace lamina {

template <class F, laurel::Variant V, class S = Identity<typename F::value_type>>
class Laurel {
  static_assert(check_module<F>() && check_module<S>(), "lamina::Laurel: f and the shortcut must satisfy lamina::Module");

 public:
  using value_type = typename F::value_type;
  using T = value_type;
  using variant = V;
  static_assert(std::is_same_v<typename S::value_type, T>, "lamina::Laurel: one scalar type");
  static constexpr bool identity_shortcut = std::is_same_v<S, Identity<T>>;

  /// D: width of the stream (channels of f's output). rng draws Xavier A.
  Laurel(F f, S s, index_t D, const laurel::Options& o, Rng& rng) : f_(std::move(f)), s_(std::move(s)), D_(D), o_(o) {
    require(D > 0, "Laurel", "D", "> 0", D);
    require(int(o.bound) >= 0 && int(o.bound) <= 2, "Laurel", "bound", "softmax, sigmoid or two_sigmoids", int(o.bound));
    require(int(o.a_init) >= 0 && int(o.a_init) <= 1, "Laurel", "a_init", "column_orthogonal or xavier_uniform",
            int(o.a_init));
    require(int(o.h) >= 0 && int(o.h) <= 2, "Laurel", "h", "automatic, identity or low_rank", int(o.h));
    require(V::rw || !o.per_channel, "Laurel", "per_channel", "a variant with RW (alpha, beta)", detail::text(V::name));
    if constexpr (V::pa) {
      require(o.history >= 1, "Laurel", "history k", ">= 1", o.history);
      if (o.h == laurel::History::automatic) o_.h = V::lr ? laurel::History::low_rank : laurel::History::identity;
    }
    if (uses_rank()) {
      require(o.rank >= 1, "Laurel", "rank r", ">= 1", o.rank);
      require(o.rank <= D, "Laurel", "rank r", detail::text("<= D = ", D), o.rank);
    }
    const index_t dc = coef_width();
    if constexpr (V::rw) {
      const index_t m = o.bound == laurel::Bound::sigmoid ? 1 : 2;
      w_ = Tensor<T>(o.per_channel ? Shape{m, D} : Shape{m});  // 0: α = β = 1 (softmax)
      dw_ = Tensor<T>(w_.shape());
    }
    alpha_.assign(static_cast<std::size_t>(dc), T(1));
    beta_.assign(static_cast<std::size_t>(dc), T(1));
    if constexpr (V::lr) lr_ = laurel::LowRank<T>(D, o.rank, o.a_init, rng);
    if constexpr (V::pa) {
      const index_t k = o.history;
      // identity h: γ = 0; low-rank h: γ = 1 and B_j = 0 (never both zero).
      gamma_ = Tensor<T>(Shape{k}, low_rank_history() ? T(1) : T(0));
      dgamma_ = Tensor<T>(Shape{k});
      if (low_rank_history())
        for (index_t j = 0; j < k; ++j) h_.emplace_back(D, o.rank, o.a_init, rng);
    }
    update_coefficients();
  }
  Laurel(F f, index_t D, const laurel::Options& o, Rng& rng)
    requires identity_shortcut
      : Laurel(std::move(f), S{}, D, o, rng) {}

  /// Parameter prefixes of f, the shortcut and LAUREL's own parameters.
  Laurel& set_names(std::string f_prefix, std::string s_prefix, std::string laurel_prefix = "laurel.") {
    f_name_ = std::move(f_prefix), s_name_ = std::move(s_prefix), l_name_ = std::move(laurel_prefix);
    return *this;
  }
  F& body() noexcept { return f_; }
  S& shortcut() noexcept { return s_; }
  const laurel::Options& options() const noexcept { return o_; }
  index_t width() const noexcept { return D_; }
  /// α, β of the current parameters: one value, or one per channel.
  const std::vector<T>& alpha() noexcept { return update_coefficients(), alpha_; }
  const std::vector<T>& beta() noexcept { return update_coefficients(), beta_; }
  Tensor<T>& w() noexcept requires V::rw { return w_; }
  Tensor<T>& A() noexcept requires V::lr { return lr_.A(); }
  Tensor<T>& B() noexcept requires V::lr { return lr_.B(); }
  Tensor<T>& gamma() noexcept requires V::pa { return gamma_; }
  Tensor<T>& A_history(index_t j) requires V::pa { return h_.at(static_cast<std::size_t>(j - 1)).A(); }  ///< A_j, j = 1..k
  Tensor<T>& B_history(index_t j) requires V::pa { return h_.at(static_cast<std::size_t>(j - 1)).B(); }  ///< B_j, j = 1..k

  Shape output_shape(const Shape& in) const {
    require_non_empty(in, "Laurel");
    const Shape a = f_.output_shape(in), b = s_.output_shape(in);
    require<shape_error>(a == b, "Laurel", "branch output shapes", detail::text("f(x) ", a), detail::text("shortcut(x) ", b));
    const ChannelGeometry g = ChannelGeometry::of(a, "Laurel", "stream shape");
    require<shape_error>(g.D == D_, "Laurel", "stream width D (channels)", D_, g.D);
    return a;
  }

  /// The state of one application.
  struct Cache {
    Shape x_shape;
    ConstView<T> stream;
    Tensor<T> own_stream, fx;  // fx = f(x), kept for g_α
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> U;
    std::vector<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>> Uh;
    std::vector<ConstView<T>> preds;       // PA: s_{i-j}, j = 1..npred
    std::vector<std::size_t> pred_blocks;  // PA: their blocks in the stage memory
    BlockMemory<T> memory;                 // PA: this block's place in the stage memory
    index_t npred = 0;
    typename F::Cache f;
    typename S::Cache s;
    bool done = false;
  };

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) { run(x, y, c, BlockMemory<T>{}, true, p); }
  void infer(ConstView<T> x, View<T> y) { run(x, y, infer_, BlockMemory<T>{}, false, {}); }
  /// PA: publishes its stream s in the stage memory and reads the k most recent
  /// earlier ones (core/stage_memory.hpp); their gradients are added there.
  void forward(ConstView<T> x, View<T> y, Cache& c, BlockMemory<T> mem, Pass p = {})
    requires V::pa
  {
    run(x, y, c, mem, true, p);
  }
  void infer(ConstView<T> x, View<T> y, BlockMemory<T> mem)
    requires V::pa
  {
    run(x, y, infer_, mem, false, {});
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  /// {.params = false} leaves w, γ, A, B (and f's, the shortcut's) gradients
  /// untouched; {.input = false} computes dx into scratch (the shortcut's and the
  /// stage memory's gradients need it) and drops it.
  void backward(const Cache& c, ConstView<T> dy, View<T> dx_out, Grad want = {}) {
    require_forward(c.done, "Laurel");
    require_shape(dy, c.stream.shape(), "Laurel", "dy");
    require_input_grad(dx_out, c.x_shape, want, "Laurel");
    const View<T> dx = input_grad(c, dx_out, want);
    const View<T> ds = skip_grad(c, dx, dy.shape());
    const Grad through{.input = true, .params = want.params};
    const ChannelGeometry g = ChannelGeometry::of(dy.shape(), "Laurel", "dy");
    // f receives αG: through backward_scaled when f offers it (no extra pass),
    // else as a tensor written by the fused pass below.
    const bool fold_alpha = ScaledBackward<F> && !per_channel();
    if constexpr (V::rw)
      if (!fold_alpha) dF_.resize(dy.shape());
    collect_terms(c, ds.data(), bterms_);
    const std::span<const double> sums = backward_fused(c, g, dy.data(), ds.data(), fold_alpha, through);
    coefficient_grads(g, dy.data(), sums, want, through);
    backward_branches(c, dy, dx, ds, fold_alpha, through);
  }

  template <class Fn>
  void visit(Fn&& fn, const std::string& prefix) {
    f_.visit(fn, prefix + f_name_);
    s_.visit(fn, prefix + s_name_);
    const std::string p = prefix + l_name_;
    // α, β (w) and γ are excluded from weight decay; A, B are not (spec "Initialisation").
    if constexpr (V::rw) fn(ParamRef<T>{p + "w", w_.view(), dw_.view(), false, true, true});
    if constexpr (V::lr) {
      fn(ParamRef<T>{p + "A", lr_.A().view(), lr_.dA().view(), true, true, true});
      fn(ParamRef<T>{p + "B", lr_.B().view(), lr_.dB().view(), true, true, true});
    }
    if constexpr (V::pa) {
      fn(ParamRef<T>{p + "gamma", gamma_.view(), dgamma_.view(), false, true, true});
      for (std::size_t j = 0; j < h_.size(); ++j) {
        fn(ParamRef<T>{p + "A" + std::to_string(j + 1), h_[j].A().view(), h_[j].dA().view(), true, true, true});
        fn(ParamRef<T>{p + "B" + std::to_string(j + 1), h_[j].B().view(), h_[j].dB().view(), true, true, true});
      }
    }
  }
  void set_training(bool on) {
    lamina::set_training(f_, on);
    lamina::set_training(s_, on);
  }

 private:
  // ---- backward, step by step ------------------------------------------------------
  // Where dx goes: the caller's buffer, or zeroed scratch when it is not wanted.
  View<T> input_grad(const Cache& c, View<T> dx, Grad want) {
    if (want.input) return dx;
    dx_scratch_.resize(c.x_shape);
    fill_zero(dx_scratch_.data(), dx_scratch_.size());
    return dx_scratch_.view();
  }
  // Where the skip gradient dL/ds goes: straight into dx for a plain identity
  // shortcut; into the stream's entry of the stage memory, which later blocks
  // have filled (PA in a stage); else into zeroed scratch.
  View<T> skip_grad(const Cache& c, View<T> dx, const Shape& s) {
    if (V::pa && c.memory.attached()) return c.memory.own_grad(memory_key::laurel_stream);
    if (V::pa || !identity_shortcut) {
      ds_.resize(s);
      fill_zero(ds_.data(), ds_.size());
      return ds_.view();
    }
    return dx;
  }
  // Earlier streams read through identity h (PA without low-rank history).
  index_t identity_history(const Cache& c) const noexcept { return V::pa && !low_rank_history() ? c.npred : 0; }

  // One fused pass over the chunks: dF = αG, ds += βG, ds_{i-j} += βγ_j G for
  // identity h, the reductions <G, f(x)>, <G, s>, <G, s_{i-j}> (returned, as
  // rows of ChannelChunks::width()), and on images each image's low-rank GEMMs
  // while it is in cache.
  std::span<const double> backward_fused(const Cache& c, const ChannelGeometry& g, const T* G, T* ds, bool fold_alpha,
                                         Grad through) {
    const index_t nid = identity_history(c);
    dpred_.resize(static_cast<std::size_t>(nid));
    for (index_t j = 0; j < nid; ++j) dpred_[static_cast<std::size_t>(j)] = pred_grad(c, j);
    const int nt = g.dense() ? 1 : num_threads();  // thread-private partial sums of M and dA
    for (Term& t : bterms_) t.lr->begin_backward(nt);
    const ChannelChunks chunks{g, per_channel()};
    chunks.reduce(
        (V::rw ? 2 : 0) + nid,
        [&](index_t k, double* acc) {
          chunks.run_chunk(k, [&](index_t off, index_t len, index_t ch, auto step) {
            backward_segment(c, off, len, ch, step, acc, chunks.width(), G, ds, fold_alpha, nid);
          });
          if (g.dense()) return;
          const int th = thread_id();
          for (Term& t : bterms_)
            t.lr->backward_block(rows_of<Eigen::ColMajor>(G, g, k), rows_of<Eigen::ColMajor>(t.src, g, k),
                                 rows_of<Eigen::ColMajor>(t.dsrc, g, k), *t.U, k * g.inner, *t.Bs, th, through);
        },
        partial_, sums_);
    return sums_;
  }
  // The element-wise backward of one segment of a chunk (ChannelChunks::run_chunk).
  template <class Step>
  void backward_segment(const Cache& c, index_t off, index_t len, index_t ch, Step, double* acc, index_t W, const T* G,
                        T* ds, bool fold_alpha, index_t nid) {
    constexpr int St = Step::value;
    const T* a = alpha_.data() + (per_channel() ? ch : 0);
    const T* b = beta_.data() + (per_channel() ? ch : 0);
    const T* Gs = G + off;
    T* dso = ds + off;
    if constexpr (V::rw) {
      const T* Fs = c.fx.data() + off;
      const T* Ss = c.stream.data() + off;
      T* dFs = fold_alpha ? nullptr : dF_.data() + off;
      if constexpr (St == 0) {
        double ga = 0, gb = 0;
        const T av = a[0], bv = b[0];
        if (dFs) {
          LAMINA_SIMD_REDUCE_SUM(ga, gb)
          for (index_t i = 0; i < len; ++i) {
            ga += double(Gs[i]) * double(Fs[i]);
            gb += double(Gs[i]) * double(Ss[i]);
            dFs[i] = av * Gs[i];
            dso[i] += bv * Gs[i];
          }
        } else {
          LAMINA_SIMD_REDUCE_SUM(ga, gb)
          for (index_t i = 0; i < len; ++i) {
            ga += double(Gs[i]) * double(Fs[i]);
            gb += double(Gs[i]) * double(Ss[i]);
            dso[i] += bv * Gs[i];
          }
        }
        acc[ch] += ga;
        acc[W + ch] += gb;
      } else {
        for (index_t i = 0; i < len; ++i) {
          acc[i] += double(Gs[i]) * double(Fs[i]);
          acc[W + i] += double(Gs[i]) * double(Ss[i]);
          dFs[i] = a[i] * Gs[i];
          dso[i] += b[i] * Gs[i];
        }
      }
    } else {
      for (index_t i = 0; i < len; ++i) dso[i] += Gs[i];
    }
    for (index_t j = 0; j < nid; ++j) {
      const T* P = c.preds[static_cast<std::size_t>(j)].data() + off;
      T* dP = dpred_[static_cast<std::size_t>(j)] + off;
      const T gj = gamma_[j];
      double* q = acc + ((V::rw ? 2 : 0) + j) * W + ch;
      if constexpr (St == 0) {
        double s = 0;
        const T bg = b[0] * gj;
        LAMINA_SIMD_REDUCE_SUM(s)
        for (index_t i = 0; i < len; ++i) {
          s += double(Gs[i]) * double(P[i]);
          dP[i] += bg * Gs[i];
        }
        q[0] += s;
      } else {
        for (index_t i = 0; i < len; ++i) {
          q[i] += double(Gs[i]) * double(P[i]);
          dP[i] += b[i] * gj * Gs[i];
        }
      }
    }
  }

  // g_α = <G, f(x)> and g_β = <G, s> (+ the history's and low-rank terms'
  // shares), dγ_j, the low-rank gradients; then dw through the bounding.
  void coefficient_grads(const ChannelGeometry& g, const T* G, std::span<const double> sums, Grad want, Grad through) {
    const auto W = static_cast<std::size_t>(ChannelChunks{g, per_channel()}.width());
    ga_.assign(W, 0.0);
    gb_.assign(W, 0.0);
    if constexpr (V::rw) {
      std::copy(sums.begin(), sums.begin() + std::ptrdiff_t(W), ga_.begin());
      std::copy(sums.begin() + std::ptrdiff_t(W), sums.begin() + std::ptrdiff_t(2 * W), gb_.begin());
    }
    const index_t nid = index_t(sums.size() / W) - (V::rw ? 2 : 0);
    for (index_t j = 0; j < nid; ++j) {
      const double* q = sums.data() + ((V::rw ? 2 : 0) + j) * index_t(W);
      double dg = 0;
      for (std::size_t ch = 0; ch < W; ++ch) {
        dg += beta_at(index_t(ch)) * q[ch];
        gb_[ch] += double(gamma_[j]) * q[ch];
      }
      if (want.params) dgamma_[j] += T(dg);
    }
    low_rank_grads(g, G, want, through);
    if constexpr (V::rw)
      if (want.params) chain_rule(ga_, gb_);
  }
  double beta_at(index_t ch) const { return double(beta_[static_cast<std::size_t>(per_channel() ? ch : 0)]); }

  // Low-rank terms: their GEMMs for dense rows (images were done per image in
  // backward_fused), then g_β[c] += coef·<G, U B>[c] and dγ_j = Σ_c β_c <G, U_j B_j>[c]
  // (spec "Backward").
  void low_rank_grads(const ChannelGeometry& g, const T* G, Grad want, Grad through) {
    const int nt = g.dense() ? 1 : num_threads();
    for (std::size_t ti = 0; ti < bterms_.size(); ++ti) {
      Term& t = bterms_[ti];
      if (g.dense())
        t.lr->backward_block(rows_of<Eigen::RowMajor>(G, g, 0), rows_of<Eigen::RowMajor>(t.src, g, 0),
                             rows_of<Eigen::RowMajor>(t.dsrc, g, 0), *t.U, 0, *t.Bs, 0, through);
      if (!want.params) continue;
      const std::span<const double> tv = t.lr->finish_backward(nt, t.scale, per_channel());
      double dg = 0;
      for (index_t ch = 0; ch < D_; ++ch) {
        dg += beta_at(ch) * tv[static_cast<std::size_t>(ch)];
        gb_[static_cast<std::size_t>(per_channel() ? ch : 0)] += double(t.coef) * tv[static_cast<std::size_t>(ch)];
      }
      if (ti > 0 || !V::lr) dgamma_[index_t(V::lr ? ti - 1 : ti)] += T(dg);
    }
  }

  // f's backward (with αG), then the shortcut's with dL/ds.
  void backward_branches(const Cache& c, ConstView<T> dy, View<T> dx, View<T> ds, bool fold_alpha, Grad through) {
    if constexpr (V::rw && ScaledBackward<F>) {
      if (fold_alpha) f_.backward_scaled(c.f, dy, alpha_[0], dx, through);
      else f_.backward(c.f, dF_.cview(), dx, through);
    } else {
      f_.backward(c.f, V::rw ? dF_.cview() : dy, dx, through);
    }
    if constexpr (!identity_shortcut) s_.backward(c.s, ds, dx, through);
    else if constexpr (V::pa) axpy(dx.data(), ds.data(), ds.size());
  }

  // PA: the gradient buffer of earlier stream j (in the stage memory).
  static T* pred_grad(const Cache& c, index_t j) {
    return c.memory.grad(c.pred_blocks[static_cast<std::size_t>(j)], memory_key::laurel_stream).data();
  }

  bool per_channel() const noexcept { return V::rw && o_.per_channel; }
  bool uses_rank() const noexcept { return V::lr || (V::pa && o_.h == laurel::History::low_rank); }
  bool low_rank_history() const noexcept { return V::pa && o_.h == laurel::History::low_rank; }
  index_t coef_width() const noexcept { return V::rw && o_.per_channel ? D_ : 1; }

  void update_coefficients() {
    if constexpr (V::rw) {
      const index_t dc = coef_width();
      for (index_t c = 0; c < dc; ++c) {
        const auto cu = static_cast<std::size_t>(c);
        const double w0 = double(w_[c]);
        switch (o_.bound) {
          case laurel::Bound::softmax: {
            const double w1 = double(w_[dc + c]), m = std::max(w0, w1);
            const double e0 = std::exp(w0 - m), e1 = std::exp(w1 - m);
            alpha_[cu] = T(2 * e0 / (e0 + e1)), beta_[cu] = T(2 * e1 / (e0 + e1));
            break;
          }
          case laurel::Bound::sigmoid: {
            const double sg = 1 / (1 + std::exp(-w0));
            alpha_[cu] = T(sg), beta_[cu] = T(1 - sg);
            break;
          }
          case laurel::Bound::two_sigmoids:
            alpha_[cu] = T(2 / (1 + std::exp(-w0))), beta_[cu] = T(2 / (1 + std::exp(-double(w_[dc + c]))));
            break;
        }
      }
    }
  }

  // dL/dw from g_α = <G, f(x)>, g_β = <G, S> through the bounding (spec "Backward").
  void chain_rule(const std::vector<double>& ga, const std::vector<double>& gb) {
    const index_t dc = coef_width();
    for (index_t c = 0; c < dc; ++c) {
      const auto cu = static_cast<std::size_t>(c);
      const double a = double(alpha_[cu]), b = double(beta_[cu]);
      switch (o_.bound) {
        case laurel::Bound::softmax: {
          const double d = 2 * (a / 2) * (b / 2) * (ga[cu] - gb[cu]);
          dw_[c] += T(d), dw_[dc + c] -= T(d);
          break;
        }
        case laurel::Bound::sigmoid: dw_[c] += T(a * (1 - a) * (ga[cu] - gb[cu])); break;
        case laurel::Bound::two_sigmoids:
          dw_[c] += T(a * (1 - a / 2) * ga[cu]), dw_[dc + c] += T(b * (1 - b / 2) * gb[cu]);
          break;
      }
    }
  }

  // y = α F + β (s + Σ_j γ_j s_{i-j}) (identity h) over chunk k, in one pass.
  void run_elementwise_forward(const ChannelChunks& chunks, index_t k, Cache& c, View<T> y, index_t nid) const {
    chunks.run_chunk(k, [&](index_t off, index_t len, index_t ch, auto step) {
        constexpr int St = decltype(step)::value;
        const T* a = alpha_.data() + (per_channel() ? ch : 0);
        const T* b = beta_.data() + (per_channel() ? ch : 0);
        const T* Ss = c.stream.data() + off;
        T* Ys = y.data() + off;

        if constexpr (V::rw) {
          const T* Fs = c.fx.data() + off;
          if constexpr (St == 0) {  // scalars held in registers (y may alias nothing, but the compiler cannot know)
            const T av = a[0], bv = b[0];
            for (index_t i = 0; i < len; ++i) Ys[i] = av * Fs[i] + bv * Ss[i];
          } else {
            for (index_t i = 0; i < len; ++i) Ys[i] = a[i] * Fs[i] + b[i] * Ss[i];
          }
        } else {
          for (index_t i = 0; i < len; ++i) Ys[i] += Ss[i];
        }
        for (index_t j = 0; j < nid; ++j) {
          const T* P = c.preds[static_cast<std::size_t>(j)].data() + off;
          const T gj = gamma_[j], bg = b[0] * gj;
          if constexpr (St == 0) {
            for (index_t i = 0; i < len; ++i) Ys[i] += bg * P[i];
          } else {
            for (index_t i = 0; i < len; ++i) Ys[i] += b[i] * gj * P[i];
          }
        }
    });
  }

  using Mat = typename laurel::LowRank<T>::Mat;
  template <class UMat>  // Mat in the forward (which writes U), const Mat in the backward
  struct TermOf {        // one low-rank product of the connection
    laurel::LowRank<T>* lr;
    const T* src;    // the stream it reads
    T* dsrc;         // that stream's gradient
    UMat* U;         // s A (sized by prepare_low_rank)
    const T* scale;  // coef·β per column (in scales_)
    const Mat* Bs;   // B diag(scale) (in lr's working memory)
    T coef;
  };
  using Term = TermOf<const Mat>;
  // The LR term (coef 1) and the low-rank h_j (coef γ_j) of the cached pass, into
  // `terms` (the module's, reused); U sized.
  template <class C, class Terms>
  void collect_terms(C& c, T* ds, Terms& terms) {
    terms.clear();
    auto add = [&](laurel::LowRank<T>& lr, const T* src, T* dsrc, auto& U, T coef) {
      const std::size_t i = terms.size();
      if (scales_.size() <= i) scales_.resize(i + 1);
      std::vector<T>& sc = scales_[i];
      sc.assign(beta_.begin(), beta_.end());
      for (T& v : sc) v *= coef;
      terms.push_back({&lr, src, dsrc, &U, sc.data(), &lr.scaled_scratch(sc.data(), per_channel()), coef});
    };
    if constexpr (V::lr) add(lr_, c.stream.data(), ds, c.U, T(1));
    if constexpr (V::pa) {
      if (low_rank_history()) {
        for (index_t j = 0; j < c.npred; ++j) {
          const auto ju = static_cast<std::size_t>(j);
          add(h_[ju], c.preds[ju].data(), ds ? pred_grad(c, j) : nullptr, c.Uh[ju], gamma_[j]);
        }
      }
    }
  }
  // Rows of block k of a stream as an Eigen map: all dense rows (k = 0), or image k.
  template <int Order, class P>
  static auto rows_of(P* p, const ChannelGeometry& g, index_t k) {
    if constexpr (Order == Eigen::RowMajor) return detail::block_map<Order>(p, g.outer, g.D);
    else return detail::block_map<Order>(p + k * g.D * g.inner, g.inner, g.D);
  }

  // PA: publish s, collect the earlier streams.
  void link_memory(Cache& c, const BlockMemory<T>& mem, const Shape& ys) {
    c.memory = mem;
    mem.publish(memory_key::laurel_stream, c.stream);
    mem.earlier(memory_key::laurel_stream, static_cast<std::size_t>(o_.history), c.pred_blocks);
    c.npred = static_cast<index_t>(c.pred_blocks.size());
    c.preds.clear();
    for (std::size_t j : c.pred_blocks) {
      const ConstView<T> v = mem.value(j, memory_key::laurel_stream);
      require<shape_error>(v.shape() == ys, "Laurel", "earlier stream x_{i-j} shape", ys, v.shape());
      c.preds.push_back(v);
    }
  }

  void run(ConstView<T> x, View<T> y, Cache& c, const BlockMemory<T>& mem, bool train, Pass p) {
    require_contiguous(x, "Laurel", "x");
    const Shape ys = output_shape(x.shape());
    require_shape(y, ys, "Laurel", "y");
    const ChannelGeometry g = ChannelGeometry::of(ys, "Laurel", "y");
    c.done = false;
    c.x_shape = x.shape();

    // The stream s: x, or the projection shortcut's output.
    if constexpr (identity_shortcut) {
      c.stream = x;
    } else {
      c.own_stream.resize(ys);
      if (train) s_.forward(x, c.own_stream.view(), c.s, p);
      else s_.infer(x, c.own_stream.view());
      c.stream = c.own_stream.cview();
    }
    if constexpr (V::pa) link_memory(c, mem, ys);
    update_coefficients();
    prepare_low_rank(c, g);

    // f(x): into y directly, or into F when RW needs it again for g_α.
    View<T> fo = y;
    if constexpr (V::rw) {
      c.fx.resize(ys);
      fo = c.fx.view();
    }
    if (train) f_.forward(x, fo, c.f, p);
    else f_.infer(x, fo);

    // y = α F + β (s + Σ_j γ_j s_{i-j}) for identity h, in one pass.
    const bool id_h = V::pa && !low_rank_history();
    const index_t nid = id_h ? c.npred : 0;
    const ChannelChunks chunks{g, per_channel()};
    // Low-rank terms y += (s A)(B diag β) and γ_j (s_{i-j} A_j)(B_j diag β): on
    // images, each image right after its element-wise pass, while in cache.
    collect_terms(c, nullptr, fterms_);
    chunks.each([&](index_t k) {
      run_elementwise_forward(chunks, k, c, y, nid);
      if (!g.dense())
        for (auto& t : fterms_)
          t.lr->forward_block(rows_of<Eigen::ColMajor>(t.src, g, k), rows_of<Eigen::ColMajor>(y.data(), g, k), *t.U, k * g.inner, *t.Bs);
    });

    if (g.dense())
      for (auto& t : fterms_) t.lr->forward_block(rows_of<Eigen::RowMajor>(t.src, g, 0), rows_of<Eigen::RowMajor>(y.data(), g, 0), *t.U, 0, *t.Bs);
    c.done = true;
  }

  // U = s A of each low-rank term, sized for this pass.
  void prepare_low_rank(Cache& c, const ChannelGeometry& g) {
    auto size = [&](auto& U, index_t r) {
      if (U.rows() != g.rows() || U.cols() != r) U.resize(g.rows(), r);
    };
    if constexpr (V::lr) size(c.U, lr_.rank());
    if (low_rank_history()) {
      c.Uh.resize(static_cast<std::size_t>(c.npred));
      for (index_t j = 0; j < c.npred; ++j) size(c.Uh[static_cast<std::size_t>(j)], o_.rank);
    }
  }
  F f_;
  S s_;
  index_t D_;
  laurel::Options o_;
  std::string f_name_ = "f.", s_name_ = "shortcut.", l_name_ = "laurel.";
  Tensor<T> w_, dw_, gamma_, dgamma_;
  laurel::LowRank<T> lr_;             // A, B (LR variants)
  std::vector<laurel::LowRank<T>> h_;  // A_j, B_j (low-rank h of PA)
  std::vector<T> alpha_, beta_;
  Cache infer_, cache_;
  Tensor<T> dF_, ds_, dx_scratch_;  // backward scratch
  // Working memory of one forward or backward, reused (grown only).
  std::vector<TermOf<Mat>> fterms_;
  std::vector<Term> bterms_;
  std::vector<std::vector<T>> scales_;  // per low-rank term: coef·β
  std::vector<T*> dpred_;               // PA, identity h: the earlier streams' gradients
  std::vector<double> partial_, sums_, ga_, gb_;
};

}  // namespace lamina
