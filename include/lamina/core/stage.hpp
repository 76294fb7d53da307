#pragma once
// A stage: a run-time number of modules of one type applied in order (e.g. the
// BasicBlocks of one ResNet stage). An application's Cache holds the tensors
// between the blocks and, when the blocks use one, the stage memory
// (core/stage_memory.hpp): reset at the start of every forward, block i is handed
// its place in it, and every block output is kept while such a stage infers (a
// later block may read any earlier one).
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/core/stage_memory.hpp"

namespace lamina {

template <class M>
class Stage {
  static_assert(check_module<M>(), "lamina::Stage: the block type must satisfy lamina::Module");

 public:
  using value_type = typename M::value_type;
  using T = value_type;
  static constexpr bool uses_memory = UsesStageMemory<M>;

  struct Cache {
    std::vector<typename M::Cache> blocks;
    std::vector<Tensor<T>> out;  ///< output of block i (i < n − 1)
    /// What the blocks published (uses_memory only). Mutable: backward passes
    /// add the readers' gradients into it.
    mutable StageMemory<T> memory;
    bool done = false;
  };

  Stage() = default;
  explicit Stage(std::vector<M> blocks) : blocks_(std::move(blocks)) {}
  void push_back(M m) { blocks_.push_back(std::move(m)); }
  std::size_t size() const noexcept { return blocks_.size(); }
  M& operator[](std::size_t i) noexcept { return blocks_[i]; }
  auto begin() noexcept { return blocks_.begin(); }
  auto end() noexcept { return blocks_.end(); }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(!blocks_.empty(), "Stage", "blocks", ">= 1", 0);
    Shape s = in;
    for (const M& b : blocks_) s = b.output_shape(s);
    return s;
  }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    const std::size_t n = blocks_.size();
    require<shape_error>(n > 0, "Stage", "blocks", ">= 1", 0);
    c.done = false;
    c.blocks.resize(n);
    c.out.resize(n - 1);
    if constexpr (uses_memory) c.memory.reset(n, true);
    ConstView<T> cur = x;
    for (std::size_t i = 0; i < n; ++i) {
      View<T> out = y;
      if (i + 1 < n) {
        c.out[i].resize(blocks_[i].output_shape(cur.shape()));
        out = c.out[i].view();
      }
      if constexpr (uses_memory) blocks_[i].forward(cur, out, c.blocks[i], BlockMemory<T>(c.memory, i), p);
      else blocks_[i].forward(cur, out, c.blocks[i], p);
      cur = out;
    }
    c.done = true;
  }
  void infer(ConstView<T> x, View<T> y) {
    const std::size_t n = blocks_.size();
    require<shape_error>(n > 0, "Stage", "blocks", ">= 1", 0);
    if constexpr (uses_memory) {
      infer_memory_.reset(n, false);
      infer_out_.resize(n - 1);
    }
    ConstView<T> cur = x;
    for (std::size_t i = 0; i < n; ++i) {
      View<T> out = y;
      if (i + 1 < n) {  // ping-pong buffers, or every output when later blocks may read it
        Tensor<T>& buf = uses_memory ? infer_out_[i] : pong_[i % 2];
        buf.resize(blocks_[i].output_shape(cur.shape()));
        out = buf.view();
      }
      if constexpr (uses_memory) blocks_[i].infer(cur, out, BlockMemory<T>(infer_memory_, i));
      else blocks_[i].infer(cur, out);
      cur = out;
    }
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    const std::size_t n = blocks_.size();
    require_forward(c.done && c.blocks.size() == n, "Stage");
    // Readers add into the memory's gradients during this pass; start from zero
    // so that a backward can be repeated on the same cache.
    if constexpr (uses_memory) c.memory.zero_grads();
    grad_.resize(n - 1);
    ConstView<T> gy = dy;
    for (std::size_t i = n - 1; i > 0; --i) {
      Tensor<T>& gi = grad_[i - 1];
      gi.resize(c.out[i - 1].shape());
      fill_zero(gi.data(), gi.size());
      blocks_[i].backward(c.blocks[i], gy, gi.view(), {.input = true, .params = g.params});
      gy = gi.cview();
    }
    blocks_[0].backward(c.blocks[0], gy, dx, g);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].visit(f, prefix + std::to_string(i) + ".");
  }
  void set_training(bool on) {
    for (M& b : blocks_) lamina::set_training(b, on);
  }

 private:
  std::vector<M> blocks_;
  std::vector<Tensor<T>> grad_, infer_out_;
  StageMemory<T> infer_memory_;
  Tensor<T> pong_[2];
  Cache cache_;
};

}  // namespace lamina
