#pragma once
// The layer-attention branch of one block (spec/layer_attention.md §2–3):
//   y_t = GAP(X_t),  Q_t = conv1d_q(y_t),  K_t = conv1d_k(y_t),  V_t = DWConv3x3(X_t)
// heads of d_h contiguous channels (G = C/d_h, R = B·G rows), and
//   MRLA-base:  A_t[r, s] = softmax_s(<Q_t^g, K_s^g>/sqrt(d_h)), s over the stage's
//               earlier attending blocks and t itself;  LA_t^g = Σ_s A_t[r, s] V_s^g
//   MRLA-light: a_t = sigmoid(<Q_t^g, K_t^g>/sqrt(d_h)),  LA_t = a_t ⊙ V_t + λ ⊙ X_{t−1}
// Output: LA_t [B, C, H, W], before the BatchNorm (attention/layer_attention.hpp
// adds out_t = X_t + BN(LA_t)).
//
// Stage memory (core/stage_memory.hpp): base publishes K_t (attention_k) and V_t
// (attention_v) and reads the earlier blocks' K and V, adding their gradients
// into the memory in backward; light publishes X_t (attention_x) and reads the
// previous attending block's. With `monitor` on, base publishes A_t
// (attention_a) and measures D_t against the previous attending block (§4).
// Kernels: depthwise_conv3x3, softmax / softmax backward and KL across short
// rows (kernels/short_rows.hpp), weighted aggregation (one call per row of
// L = d_h·H·W elements), all through the dispatch table.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "lamina/attention/projections.hpp"
#include "lamina/attention/redundancy.hpp"
#include "lamina/core/init.hpp"
#include "lamina/core/module.hpp"
#include "lamina/core/random.hpp"
#include "lamina/core/stage_memory.hpp"
#include "lamina/kernels/dispatch.hpp"

namespace lamina::attention {

enum class Variant { base, light };

struct BranchOptions {
  Variant variant = Variant::base;
  index_t head_dim = 0;        ///< d_h; 0 = min(32, C). Must divide C.
  double lambda_init = 1.0;    ///< MRLA-light: initial λ (one per channel)
  bool monitor = false;        ///< MRLA-base: measure D_t (§4) in training forwards
  RedundancyOptions redundancy{};
};

template <class T>
class LayerAttentionBranch {
 public:
  using value_type = T;

  LayerAttentionBranch(index_t C, const BranchOptions& o, Rng& rng) : C_(C), o_(o), red_(o.redundancy) {
    require(C >= 1, "LayerAttention", "channels C", ">= 1", C);
    dh_ = o.head_dim == 0 ? std::min<index_t>(32, C) : o.head_dim;
    require(dh_ >= 1 && C % dh_ == 0, "LayerAttention", "head_dim d_h", lamina::detail::text("a divisor of C = ", C), dh_);
    require(!o.monitor || o.variant == Variant::base, "LayerAttention", "monitor",
            "MRLA-base (light has no distribution over layers)", "MRLA-light");
    require(std::isfinite(o.lambda_init), "LayerAttention", "lambda_init", "a finite value", o.lambda_init);
    k_ = eca_kernel_size(C);
    wq_ = Tensor<T>(Shape{k_}), wk_ = Tensor<T>(Shape{k_}), wv_ = Tensor<T>(Shape{C, 1, 3, 3});
    const double bq = 1 / std::sqrt(double(k_));
    init::uniform(wq_.view(), -bq, bq, rng);
    init::uniform(wk_.view(), -bq, bq, rng);
    init::uniform(wv_.view(), -1.0 / 3, 1.0 / 3, rng);  // fan-in 9, as PyTorch's default
    dwq_ = Tensor<T>(wq_.shape()), dwk_ = Tensor<T>(wk_.shape()), dwv_ = Tensor<T>(wv_.shape());
    if (light()) lambda_ = Tensor<T>(Shape{C}, T(o.lambda_init)), dlambda_ = Tensor<T>(Shape{C});
  }

  index_t channels() const noexcept { return C_; }
  index_t head_dim() const noexcept { return dh_; }
  index_t kernel_size() const noexcept { return k_; }
  const BranchOptions& options() const noexcept { return o_; }
  bool light() const noexcept { return o_.variant == Variant::light; }
  Tensor<T>& wq() noexcept { return wq_; }
  Tensor<T>& wk() noexcept { return wk_; }
  Tensor<T>& wv() noexcept { return wv_; }
  Tensor<T>& lambda() noexcept { return lambda_; }
  /// D_t of the last training forward (monitor on), NaN when it measured none
  /// (first attending block of the stage, skipped predecessor's A unpublished, monitor off).
  double last_redundancy() const noexcept { return last_D_; }
  /// Number of forward and infer passes that computed Q, K, V and the retrieval.
  index_t computed() const noexcept { return computed_; }
  /// Totals of the last backward (tests): dL/dQ_t [B, C], dL/dA_t [R, t] (base).
  const Tensor<T>& last_dQ() const noexcept { return dQ_; }
  const Tensor<T>& last_dA() const noexcept { return dA_; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() == 4 && in[1] == C_ && in.numel() > 0, "LayerAttention", "X shape",
                         lamina::detail::text("[B, ", C_, ", H, W], non-empty"), in);
    return in;
  }

  struct Cache {
    ConstView<T> X;
    Tensor<T> y, Q, K, V, A;          ///< A: [R, t] (base) or a [R] (light)
    std::vector<std::size_t> seen;    ///< base: earlier blocks read, oldest first; light: the previous one
    BlockMemory<T> memory;
    bool done = false;
  };

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) { run(x, y, c, BlockMemory<T>{}, true, p); }
  void forward(ConstView<T> x, View<T> y, Cache& c, BlockMemory<T> mem, Pass p = {}) { run(x, y, c, mem, true, p); }
  void infer(ConstView<T> x, View<T> y) { run(x, y, infer_, BlockMemory<T>{}, false, {}); }
  void infer(ConstView<T> x, View<T> y, BlockMemory<T> mem) { run(x, y, infer_, mem, false, {}); }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  /// Adds dL/dX_t into dx, dL/dK_s, dL/dV_s (base) or dL/dX_{t−1} (light) of the
  /// earlier blocks into the stage memory, and the parameter gradients. The
  /// block's own memory gradients (from later readers) are read, and this
  /// block's own share is added into those same buffers.
  void backward(const Cache& c, ConstView<T> dLA, View<T> dx, Grad g = {}) {
    require_forward(c.done, "LayerAttention");
    require_shape(dLA, c.X.shape(), "LayerAttention", "dLA");
    require_input_grad(dx, c.X.shape(), g, "LayerAttention");
    View<T> dX = g.input ? dx : zeroed(dx_scratch_, c.X.shape());
    const Dims d = dims(c.X.shape());
    bool dv_fresh = false;
    View<T> dV = own_dV(c, dv_fresh);
    View<T> dK = own_grad(c, memory_key::attention_k, dK_scratch_, c.K.shape());
    zeroed(dQ_, c.Q.shape());
    if (light()) light_backward(c, dLA, dV, dK, d, g.params);
    else base_backward(c, dLA, dV, dv_fresh, dK, d);
    projections_backward(c, dV, dK, dX, d, g.params);
    if (light() && c.memory.attached()) axpy(dX.data(), c.memory.own_grad(memory_key::attention_x).data(), dX.size());
  }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    f(ParamRef<T>{prefix + "q.weight", wq_.view(), dwq_.view(), true, true, true});
    f(ParamRef<T>{prefix + "k.weight", wk_.view(), dwk_.view(), true, true, true});
    f(ParamRef<T>{prefix + "v.weight", wv_.view(), dwv_.view(), true, true, true});
    if (light()) f(ParamRef<T>{prefix + "lambda", lambda_.view(), dlambda_.view(), false, true, true});
  }

 private:
  struct Dims {
    index_t B, C, HW, G, R, L;
  };
  Dims dims(const Shape& s) const {
    const index_t B = s[0], HW = s[2] * s[3], G = C_ / dh_;
    return {B, C_, HW, G, B * G, dh_ * HW};
  }
  static View<T> zeroed(Tensor<T>& t, const Shape& s) {
    t.resize(s);
    fill_zero(t.data(), t.size());
    return t.view();
  }
  // The block's own gradient buffer of a published tensor, or zeroed scratch.
  View<T> own_grad(const Cache& c, std::uint32_t key, Tensor<T>& scratch, const Shape& s) const {
    if (c.memory.attached() && c.memory.training() && !light()) return c.memory.own_grad(key);
    return zeroed(scratch, s);
  }
  // The block's own dV: its stage-memory buffer (base, in a training stage) or
  // scratch. `fresh`: nothing was added into it yet, and base's retrieval
  // backward assigns it instead of adding (no zeroing pass); light adds.
  View<T> own_dV(const Cache& c, bool& fresh) {
    if (c.memory.attached() && c.memory.training() && !light())
      return c.memory.own_grad_unzeroed(memory_key::attention_v, fresh);
    fresh = !light();
    if (!fresh) return zeroed(dV_scratch_, c.V.shape());
    dV_scratch_.resize(c.V.shape());
    return dV_scratch_.view();
  }
  T inv_sqrt_dh() const noexcept { return T(1 / std::sqrt(double(dh_))); }

  void run(ConstView<T> X, View<T> out, Cache& c, const BlockMemory<T>& mem, bool train, Pass p) {
    require_contiguous(X, "LayerAttention", "X");
    require_shape(out, output_shape(X.shape()), "LayerAttention", "LA");
    c.done = false;
    c.X = X;
    c.memory = mem;
    last_D_ = std::numeric_limits<double>::quiet_NaN();
    const Dims d = dims(X.shape());
    c.y.resize(Shape{d.B, d.C}), c.Q.resize(Shape{d.B, d.C}), c.K.resize(Shape{d.B, d.C}), c.V.resize(X.shape());
    global_avg_pool(X.data(), c.y.data(), d.B, d.C, d.HW);
    channel_conv1d(c.y.data(), wq_.data(), c.Q.data(), d.B, d.C, k_);
    channel_conv1d(c.y.data(), wk_.data(), c.K.data(), d.B, d.C, k_);
    ++computed_;
    if (light()) light_forward(c, out, mem, d);
    else base_forward(c, out, mem, d, train && !p.recompute);
    c.done = true;
  }

  // ---- MRLA-base ------------------------------------------------------------
  void base_forward(Cache& c, View<T> out, const BlockMemory<T>& mem, const Dims& d, bool measure) {
    mem.publish(memory_key::attention_k, c.K.cview());
    mem.publish(memory_key::attention_v, c.V.cview());
    mem.earlier(memory_key::attention_k, mem.block() + 1, c.seen);
    std::reverse(c.seen.begin(), c.seen.end());  // oldest first: A's index s−1 is the s-th attending block
    for (std::size_t j : c.seen) {
      require<shape_error>(mem.value(j, memory_key::attention_v).shape() == c.V.shape(), "LayerAttention",
                           lamina::detail::text("V of earlier block ", j), c.V.shape(), mem.value(j, memory_key::attention_v).shape());
    }
    const index_t t = index_t(c.seen.size()) + 1;
    c.A.resize(Shape{d.R, t});
    scores(c, d, t);
    kernels::table<T>().softmax_rows_short(c.A.data(), c.A.data(), d.R, t);
    retrieve(c, out, d, t);
    if (o_.monitor) {
      mem.publish(memory_key::attention_a, c.A.cview());
      if (measure && !c.seen.empty() && mem.attached()) measure_redundancy(c, mem, d);
    }
  }
  // K_s of attending block s (index into seen, t − 1 = this block).
  const T* key_of(const Cache& c, index_t s, index_t t) const {
    return s + 1 == t ? c.K.data() : c.memory.value(c.seen[std::size_t(s)], memory_key::attention_k).data();
  }
  const T* value_of(const Cache& c, index_t s, index_t t) const {
    return s + 1 == t ? c.V.data() : c.memory.value(c.seen[std::size_t(s)], memory_key::attention_v).data();
  }
  void scores(Cache& c, const Dims& d, index_t t) const {
    const T scale = inv_sqrt_dh();
    for (index_t s = 0; s < t; ++s) {
      const T* K = key_of(c, s, t);
      for (index_t r = 0; r < d.R; ++r) {
        const index_t off = (r / d.G) * d.C + (r % d.G) * dh_;
        T acc = 0;
        for (index_t i = 0; i < dh_; ++i) acc += c.Q.data()[off + i] * K[off + i];
        c.A.data()[r * t + s] = acc * scale;
      }
    }
  }
  // V_t of row r (head g of sample b: d_h planes), computed right before it is read.
  void value_row(Cache& c, const Dims& d, index_t r) const {
    kernels::table<T>().depthwise_conv3x3(c.X.data() + r * d.L, wv_.data() + (r % d.G) * dh_ * 9, c.V.data() + r * d.L,
                                          1, dh_, c.X.dim(2), c.X.dim(3));
  }
  void retrieve(Cache& c, View<T> out, const Dims& d, index_t t) {
    vp_.resize(std::size_t(t));
    const auto& k = kernels::table<T>();
    for (index_t r = 0; r < d.R; ++r) {
      value_row(c, d, r);  // in cache for the weighted sum
      for (index_t s = 0; s < t; ++s) vp_[std::size_t(s)] = value_of(c, s, t) + r * d.L;
      k.weighted_sum(vp_.data(), c.A.data() + r * t, std::size_t(t), out.data() + r * d.L, d.L);
    }
  }
  void measure_redundancy(const Cache& c, const BlockMemory<T>& mem, const Dims& d) {
    mem.earlier(memory_key::attention_a, 1, a_blocks_);
    if (a_blocks_.empty() || a_blocks_[0] != c.seen.back()) return;  // the previous attending block is not monitored
    red_d_.resize(Shape{d.R});
    last_D_ = double(red_(c.A.cview(), mem.value(a_blocks_[0], memory_key::attention_a), red_d_.view()));
  }

  // Every dV_s that no later block wrote yet is assigned, not zeroed and added to.
  void base_backward(const Cache& c, ConstView<T> dLA, View<T> dV, bool dv_fresh, View<T> dK, const Dims& d) {
    const index_t t = c.A.dim(1);
    const auto& k = kernels::table<T>();
    zeroed(dA_, c.A.shape());
    const std::size_t n = std::size_t(t);
    vbase_.resize(n), dvbase_.resize(n), assign_.resize(n), vp_.resize(n), dvp_.resize(n);
    for (index_t s = 0; s < t; ++s) {
      bool fresh = dv_fresh;
      vbase_[std::size_t(s)] = value_of(c, s, t);
      dvbase_[std::size_t(s)] = s + 1 == t ? dV.data()
                                           : c.memory.grad_unzeroed(c.seen[std::size_t(s)], memory_key::attention_v, fresh).data();
      assign_[std::size_t(s)] = fresh ? 1 : 0;
    }
    for (index_t r = 0; r < d.R; ++r) {
      for (std::size_t s = 0; s < n; ++s) vp_[s] = vbase_[s] + r * d.L, dvp_[s] = dvbase_[s] + r * d.L;
      k.weighted_sum_backward(vp_.data(), c.A.data() + r * t, n, dLA.data() + r * d.L, dvp_.data(), dA_.data() + r * t,
                              d.L, assign_.data());
    }
    zeroed(dS_, c.A.shape());
    k.softmax_backward_rows_short(c.A.data(), dA_.data(), dS_.data(), d.R, t);
    const T scale = inv_sqrt_dh();
    for (index_t s = 0; s < t; ++s) {
      const T* K = key_of(c, s, t);
      T* dKs = grad_of(c, memory_key::attention_k, s, t, dK);
      for (index_t r = 0; r < d.R; ++r) {
        const index_t off = (r / d.G) * d.C + (r % d.G) * dh_;
        const T g = dS_.data()[r * t + s] * scale;
        for (index_t i = 0; i < dh_; ++i) {
          dQ_.data()[off + i] += g * K[off + i];
          dKs[off + i] += g * c.Q.data()[off + i];
        }
      }
    }
  }
  T* grad_of(const Cache& c, std::uint32_t key, index_t s, index_t t, View<T> own) const {
    return s + 1 == t ? own.data() : c.memory.grad(c.seen[std::size_t(s)], key).data();
  }

  // ---- MRLA-light -------------------------------------------------------------
  void light_forward(Cache& c, View<T> out, const BlockMemory<T>& mem, const Dims& d) {
    mem.publish(memory_key::attention_x, c.X);
    mem.earlier(memory_key::attention_x, 1, c.seen);
    const T* Xp = nullptr;
    if (!c.seen.empty()) {
      const ConstView<T> xp = mem.value(c.seen[0], memory_key::attention_x);
      require<shape_error>(xp.shape() == c.X.shape(), "LayerAttention", "X_{t-1} shape", c.X.shape(), xp.shape());
      Xp = xp.data();
    }
    c.A.resize(Shape{d.R});
    const T scale = inv_sqrt_dh();
    for (index_t r = 0; r < d.R; ++r) {
      const index_t off = (r / d.G) * d.C + (r % d.G) * dh_;
      T acc = 0;
      for (index_t i = 0; i < dh_; ++i) acc += c.Q.data()[off + i] * c.K.data()[off + i];
      const T a = T(1) / (T(1) + std::exp(-acc * scale));
      c.A.data()[r] = a;
      value_row(c, d, r);
      const T* V = c.V.data() + r * d.L;
      T* o = out.data() + r * d.L;
      for (index_t i = 0; i < d.L; ++i) o[i] = a * V[i];
    }
    if (Xp)
      for (index_t bc = 0; bc < d.B * d.C; ++bc) axpy(out.data() + bc * d.HW, Xp + bc * d.HW, d.HW, lambda_[bc % d.C]);
  }
  void light_backward(const Cache& c, ConstView<T> dLA, View<T> dV, View<T> dK, const Dims& d, bool params) {
    const T scale = inv_sqrt_dh();
    for (index_t r = 0; r < d.R; ++r) {
      const T a = c.A.data()[r];
      const T* V = c.V.data() + r * d.L;
      const T* g = dLA.data() + r * d.L;
      T* dv = dV.data() + r * d.L;
      T da = 0;
      for (index_t i = 0; i < d.L; ++i) {
        da += g[i] * V[i];
        dv[i] += a * g[i];
      }
      const T dz = da * a * (T(1) - a) * scale;
      const index_t off = (r / d.G) * d.C + (r % d.G) * dh_;
      for (index_t i = 0; i < dh_; ++i) {
        dQ_.data()[off + i] += dz * c.K.data()[off + i];
        dK.data()[off + i] += dz * c.Q.data()[off + i];
      }
    }
    if (c.seen.empty()) return;
    const T* Xp = c.memory.value(c.seen[0], memory_key::attention_x).data();
    T* dXp = c.memory.grad(c.seen[0], memory_key::attention_x).data();
    for (index_t bc = 0; bc < d.B * d.C; ++bc) {
      const T* g = dLA.data() + bc * d.HW;
      const T lam = lambda_[bc % d.C];
      T s = 0;
      for (index_t i = 0; i < d.HW; ++i) {
        s += g[i] * Xp[bc * d.HW + i];
        dXp[bc * d.HW + i] += lam * g[i];
      }
      if (params) dlambda_[bc % d.C] += s;
    }
  }

  // dQ, dK → y → X;  dV → X (depthwise backward); parameter gradients when asked.
  void projections_backward(const Cache& c, View<T> dV, View<T> dK, View<T> dX, const Dims& d, bool params) {
    zeroed(dy_, c.y.shape());
    channel_conv1d_backward(c.y.data(), wq_.data(), dQ_.data(), dy_.data(), params ? dwq_.data() : nullptr, d.B, d.C, k_);
    channel_conv1d_backward(c.y.data(), wk_.data(), dK.data(), dy_.data(), params ? dwk_.data() : nullptr, d.B, d.C, k_);
    T* dw = params ? dwv_.data() : zeroed(dwv_scratch_, wv_.shape()).data();
    const auto& k = kernels::table<T>();
    for (index_t r = 0; r < d.R; ++r) {  // row by row: dX's planes stay in cache for the GAP gradient
      const index_t off = r * d.L, w0 = (r % d.G) * dh_ * 9;
      k.depthwise_conv3x3_backward(c.X.data() + off, wv_.data() + w0, dV.data() + off, dX.data() + off, dw + w0, 1, dh_,
                                   c.X.dim(2), c.X.dim(3));
      global_avg_pool_backward(dy_.data() + (r / d.G) * d.C + (r % d.G) * dh_, dX.data() + off, 1, dh_, d.HW);
    }
  }

  index_t C_, dh_ = 1, k_ = 1;
  BranchOptions o_;
  Tensor<T> wq_, wk_, wv_, lambda_, dwq_, dwk_, dwv_, dlambda_;
  Redundancy<T> red_;
  double last_D_ = std::numeric_limits<double>::quiet_NaN();
  index_t computed_ = 0;
  std::vector<const T*> vp_, vbase_;
  std::vector<T*> dvp_, dvbase_;
  std::vector<std::uint8_t> assign_;
  std::vector<std::size_t> a_blocks_;
  Tensor<T> dA_, dS_, dQ_, dy_, dV_scratch_, dK_scratch_, dx_scratch_, dwv_scratch_, red_d_;
  Cache infer_, cache_;
};

}  // namespace lamina::attention
