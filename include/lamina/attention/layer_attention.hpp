#pragma once
// Layer attention around any block (spec/layer_attention.md §1, §3, §6):
//   X_t = block(x),   out_t = X_t + BN(LA_t)   (option: X_t + ReLU(BN(LA_t)))
// with LA_t the branch of attention/branch.hpp (MRLA-base or MRLA-light) over the
// stage memory. Put LayerAttention<Block> in a Stage: the memory is reset at
// each stage's forward, so every stage starts empty. A block that itself uses
// the stage memory (LAUREL-PA) is handed the same BlockMemory.
//
// Skipping (§6): a skipped block computes no Q, K, V and no aggregation,
// out_t = X_t, and publishes nothing, so later blocks attend over the blocks
// that were not skipped. The skip flag and the EBQM hysteresis streak are
// buffers ("la.skip", "la.streak"), saved in checkpoints and applied by infer.
#include <algorithm>
#include <string>

#include "lamina/attention/branch.hpp"
#include "lamina/attention/redundancy.hpp"
#include "lamina/modules/batchnorm2d.hpp"

namespace lamina::attention {

struct Options {
  BranchOptions branch{};
  bool relu = false;  ///< out_t = X_t + ReLU(BN(LA_t))
};

/// What the ELA schedule (attention/ela.hpp) reads and sets on one block.
template <class T>
struct Control {
  Tensor<T> skip{Shape{1}};    ///< 1 = the retrieval is skipped
  Tensor<T> streak{Shape{1}};  ///< consecutive EBQM decisions that flagged the block
  RedundancyMeter meter;       ///< D_t over the current epoch
  bool skipped() const noexcept { return skip[0] != T(0); }
  void set_skipped(bool on) noexcept { skip[0] = on ? T(1) : T(0); }
};

}  // namespace lamina::attention

namespace lamina {

template <class Block>
class LayerAttention {
  static_assert(check_module<Block>(), "lamina::LayerAttention: the block type must satisfy lamina::Module");

 public:
  using value_type = typename Block::value_type;
  using T = value_type;
  using Branch = attention::LayerAttentionBranch<T>;

  /// C: channels of the block's output.
  LayerAttention(Block block, index_t C, const attention::Options& o, Rng& rng)
      : block_(std::move(block)), branch_(C, o.branch, rng), bn_(C), relu_(o.relu) {}

  Block& block() noexcept { return block_; }
  Branch& branch() noexcept { return branch_; }
  BatchNorm2d<T>& bn() noexcept { return bn_; }
  attention::Control<T>& control() noexcept { return ctl_; }
  bool skipped() const noexcept { return ctl_.skipped(); }
  void set_skipped(bool on) noexcept { ctl_.set_skipped(on); }

  Shape output_shape(const Shape& in) const { return branch_.output_shape(block_.output_shape(in)); }

  struct Cache {
    typename Block::Cache block;
    typename Branch::Cache branch;
    typename BatchNorm2d<T>::Cache bn;
    Tensor<T> X, LA, N;  ///< block output, branch output, BN(LA)
    bool skipped = false, done = false;
  };

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) { forward(x, y, c, BlockMemory<T>{}, p); }
  void forward(ConstView<T> x, View<T> y, Cache& c, BlockMemory<T> mem, Pass p = {}) {
    const Shape s = output_shape(x.shape());
    require_shape(y, s, "LayerAttention", "y");
    c.done = false;
    c.X.resize(s);
    lamina::detail::forward_part(block_, x, c.X.view(), c.block, mem, p);
    c.skipped = skipped();
    if (c.skipped) {
      std::copy(c.X.data(), c.X.data() + c.X.size(), y.data());
    } else {
      c.LA.resize(s), c.N.resize(s);
      branch_.forward(c.X.cview(), c.LA.view(), c.branch, mem, p);
      bn_.forward(c.LA.cview(), c.N.view(), c.bn, p);
      combine(c.X.cview(), c.N.cview(), y);
      const double D = branch_.last_redundancy();
      if (!p.recompute && D == D) ctl_.meter.add(D);
    }
    c.done = true;
  }
  void infer(ConstView<T> x, View<T> y) { infer(x, y, BlockMemory<T>{}); }
  void infer(ConstView<T> x, View<T> y, BlockMemory<T> mem) {
    const Shape s = output_shape(x.shape());
    require_shape(y, s, "LayerAttention", "y");
    ix_.resize(s);
    lamina::detail::infer_part(block_, x, ix_.view(), mem);
    if (skipped()) {
      std::copy(ix_.data(), ix_.data() + ix_.size(), y.data());
      return;
    }
    ila_.resize(s), in_.resize(s);
    branch_.infer(ix_.cview(), ila_.view(), mem);
    bn_.infer(ila_.cview(), in_.view());
    combine(ix_.cview(), in_.cview(), y);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.done, "LayerAttention");
    require_shape(dy, c.X.shape(), "LayerAttention", "dy");
    dX_.resize(c.X.shape());
    std::copy(dy.data(), dy.data() + dy.size(), dX_.data());
    if (!c.skipped) {
      const Grad through{.input = true, .params = g.params};
      dN_.resize(c.X.shape());
      for (index_t i = 0; i < dy.size(); ++i) dN_[i] = relu_ && !(c.N[i] > T(0)) ? T(0) : dy.data()[i];
      dLA_.resize(c.X.shape());
      fill_zero(dLA_.data(), dLA_.size());
      bn_.backward(c.bn, dN_.cview(), dLA_.view(), through);
      branch_.backward(c.branch, dLA_.cview(), dX_.view(), through);
    }
    block_.backward(c.block, dX_.cview(), dx, g);
  }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    block_.visit(f, prefix);
    branch_.visit(f, prefix + "la.");
    bn_.visit(f, prefix + "la.bn.");
    f(ParamRef<T>{prefix + "la.skip", ctl_.skip.view(), View<T>{}, false, false, true});
    f(ParamRef<T>{prefix + "la.streak", ctl_.streak.view(), View<T>{}, false, false, true});
  }
  void set_training(bool on) {
    lamina::set_training(block_, on);
    bn_.set_training(on);
  }

 private:
  void combine(ConstView<T> X, ConstView<T> N, View<T> y) const {
    const T* a = X.data();
    const T* b = N.data();
    T* o = y.data();
    if (relu_)
      for (index_t i = 0; i < y.size(); ++i) o[i] = a[i] + std::max(b[i], T(0));
    else
      for (index_t i = 0; i < y.size(); ++i) o[i] = a[i] + b[i];
  }

  Block block_;
  Branch branch_;
  BatchNorm2d<T> bn_;
  bool relu_;
  attention::Control<T> ctl_;
  Tensor<T> dX_, dN_, dLA_, ix_, ila_, in_;
  Cache cache_;
};

}  // namespace lamina
