#pragma once
// The memory of a stage (spec/laurel.md "PA", spec/layer_attention.md §3, §6):
// tensors that the blocks of one Stage publish during a forward and that later
// blocks of the same stage read, with the gradient from every reader summed.
//
// - One entry per block; an entry holds any number of tensors, each under a key
//   (a block may publish a LAUREL stream and layer-attention K and V at once).
// - An entry is active once its block published something in this application;
//   a block that is switched off (an EBQM-skipped retrieval) publishes nothing, and
//   later blocks do not see it: earlier() lists active entries only.
// - In training each published tensor has a gradient buffer of its shape, zero
//   when published and after zero_grads() (lazily: filled on the first grad(),
//   or overwritten by a reader that asks for grad_unzeroed() and writes all of
//   it, which saves a pass over large buffers). Readers add into it in their backward;
//   the publisher reads the sum in its own backward, which runs after all of its
//   readers' (a stage runs its blocks' backward last to first).
// - Stage keeps one memory per application in its Cache and resets it at the start
//   of every forward, so each stage (and each application of one) starts empty.
//   Values are views: they must stay alive until the stage's backward (Stage keeps
//   the block outputs; a block publishes tensors it keeps in its own Cache).
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "lamina/core/module.hpp"

namespace lamina {

/// Keys of the tensors that lamina's blocks publish. User modules pick keys from
/// memory_key::user on.
namespace memory_key {
inline constexpr std::uint32_t laurel_stream = 1;  ///< s of a LAUREL connection (PA)
inline constexpr std::uint32_t attention_k = 2;    ///< K_t [B, C] of a layer-attention block
inline constexpr std::uint32_t attention_v = 3;    ///< V_t [B, C, H, W] of a layer-attention block
inline constexpr std::uint32_t attention_x = 4;    ///< X_t of an MRLA-light block (its successor reads λ ⊙ X_{t-1})
inline constexpr std::uint32_t attention_a = 5;    ///< A_t [B·G, t] of a monitored block (redundancy, no gradient)
inline constexpr std::uint32_t user = 1000;
}  // namespace memory_key

template <class T>
class StageMemory {
 public:
  using Key = std::uint32_t;

  /// Empties the memory for a stage of `blocks` blocks (no entry active). Keeps
  /// the gradient buffers' storage, so a training loop allocates once.
  void reset(std::size_t blocks, bool training) {
    if (entries_.size() < blocks) entries_.resize(blocks);
    blocks_ = blocks;
    training_ = training;
    for (auto& e : entries_)
      for (Item& it : e) it.live = false;
  }
  std::size_t blocks() const noexcept { return blocks_; }
  bool training() const noexcept { return training_; }

  /// Block `block` publishes `value` under `key` (again in one application: the
  /// latest value wins). In training its gradient buffer is sized and reads as
  /// zero (zeroed when first asked for by grad(); see grad_unzeroed()).
  void publish(std::size_t block, Key key, ConstView<T> value) {
    check_block(block);
    require_contiguous(value, "StageMemory", "published value");
    Item& it = slot(block, key);
    it.value = value;
    it.live = true;
    if (training_) {
      it.grad.resize(value.shape());
      it.zero_pending = true;
    }
  }
  /// True when `block` published `key` in this application.
  bool has(std::size_t block, Key key) const noexcept { return find(*this, block, key) != nullptr; }
  /// True when `block` published anything in this application.
  bool active(std::size_t block) const noexcept {
    if (block >= blocks_) return false;
    for (const Item& it : entries_[block])
      if (it.live) return true;
    return false;
  }
  ConstView<T> value(std::size_t block, Key key) const { return get(*this, block, key, "value()").value; }
  /// dL/d(value): readers add into it (training only).
  View<T> grad(std::size_t block, Key key) {
    Item& it = grad_item(block, key, "grad()");
    if (it.zero_pending) fill_zero(it.grad.data(), it.grad.size());
    it.zero_pending = false;
    return it.grad.view();
  }
  /// dL/d(value) for a reader that writes every element of it in this call:
  /// when `fresh` comes back true nothing has been added since the buffer was
  /// last (lazily) zeroed, it holds stale values, and the reader must assign
  /// instead of add; later readers get fresh = false and add. Saves the
  /// zeroing pass over a large buffer (layer attention's dV).
  View<T> grad_unzeroed(std::size_t block, Key key, bool& fresh) {
    Item& it = grad_item(block, key, "grad_unzeroed()");
    fresh = it.zero_pending;
    it.zero_pending = false;
    return it.grad.view();
  }
  /// The blocks before `block` that published `key`, most recent first, at most
  /// `max` of them, appended to `out` (cleared first).
  void earlier(std::size_t block, Key key, std::size_t max, std::vector<std::size_t>& out) const {
    out.clear();
    for (std::size_t j = std::min(block, blocks_); j-- > 0 && out.size() < max;)
      if (has(j, key)) out.push_back(j);
  }
  /// Sets every gradient buffer to zero (a stage does so before each backward,
  /// which makes its backward repeatable); lazily: a buffer is filled when
  /// first asked for by grad(), or overwritten by a grad_unzeroed() reader.
  void zero_grads() noexcept {
    for (std::size_t b = 0; b < blocks_; ++b)
      for (Item& it : entries_[b])
        if (it.live) it.zero_pending = true;
  }

 private:
  struct Item {
    Key key = 0;
    bool live = false;
    ConstView<T> value;
    Tensor<T> grad;
    bool zero_pending = false;  ///< grad reads as zero but is not filled yet
  };
  Item& grad_item(std::size_t block, Key key, std::string_view what) {
    Item& it = get(*this, block, key, what);
    require<shape_error>(training_, "StageMemory", what, "a training forward", "an inference pass");
    return it;
  }
  void check_block(std::size_t block) const {
    require<shape_error>(block < blocks_, "StageMemory", "block index", detail::text("< ", blocks_), block);
  }
  Item& slot(std::size_t block, Key key) {
    for (Item& it : entries_[block])
      if (it.key == key) return it;
    entries_[block].push_back(Item{key, false, {}, {}, false});
    return entries_[block].back();
  }
  // The live item of (block, key), or nullptr; const or not as the memory is.
  template <class Self>
  static auto* find(Self& self, std::size_t block, Key key) noexcept {
    decltype(&self.entries_[0][0]) none = nullptr;
    if (block >= self.blocks_) return none;
    for (auto& it : self.entries_[block])
      if (it.key == key && it.live) return &it;
    return none;
  }
  template <class Self>
  static auto& get(Self& self, std::size_t block, Key key, std::string_view what) {
    self.check_block(block);
    auto* it = find(self, block, key);
    require<shape_error>(it != nullptr, "StageMemory", what, detail::text("block ", block, " published key ", key),
                         "nothing under that key (block switched off, or not yet run)");
    return *it;
  }

  std::vector<std::vector<Item>> entries_;
  std::size_t blocks_ = 0;
  bool training_ = false;
};

/// One block's place in a stage memory: what Stage hands to a block that uses
/// the memory. A default-constructed BlockMemory is "no stage" (a block used on
/// its own): publishing does nothing and there are no earlier entries.
template <class T>
class BlockMemory {
 public:
  BlockMemory() = default;
  BlockMemory(StageMemory<T>& m, std::size_t block) : m_(&m), block_(block) {}

  bool attached() const noexcept { return m_ != nullptr; }
  std::size_t block() const noexcept { return block_; }
  bool training() const noexcept { return m_ && m_->training(); }
  void publish(std::uint32_t key, ConstView<T> value) const {
    if (m_) m_->publish(block_, key, value);
  }
  /// Earlier blocks that published `key`, most recent first (at most max).
  void earlier(std::uint32_t key, std::size_t max, std::vector<std::size_t>& out) const {
    out.clear();
    if (m_) m_->earlier(block_, key, max, out);
  }
  ConstView<T> value(std::size_t block, std::uint32_t key) const { return m_->value(block, key); }
  View<T> grad(std::size_t block, std::uint32_t key) const { return m_->grad(block, key); }
  View<T> grad_unzeroed(std::size_t block, std::uint32_t key, bool& fresh) const {
    return m_->grad_unzeroed(block, key, fresh);
  }
  /// The gradient of this block's own published tensor.
  View<T> own_grad(std::uint32_t key) const { return m_->grad(block_, key); }
  View<T> own_grad_unzeroed(std::uint32_t key, bool& fresh) const { return m_->grad_unzeroed(block_, key, fresh); }

 private:
  StageMemory<T>* m_ = nullptr;
  std::size_t block_ = 0;
};

/// A block that reads or writes a stage memory: besides the Module calls it has
///   forward(x, y, c, BlockMemory<T> mem, Pass p = {}) and infer(x, y, BlockMemory<T> mem);
/// its backward finds the memory through c. Its plain forward/infer run it with
/// no stage (BlockMemory{}).
template <class M>
concept UsesStageMemory = Module<M> && requires(M& m, ConstView<typename M::value_type> x,
                                                View<typename M::value_type> y, typename M::Cache& c,
                                                BlockMemory<typename M::value_type> mem, Pass p) {
  m.forward(x, y, c, mem, p);
  m.infer(x, y, mem);
};

namespace detail {
/// forward of a part of a composite: with the block's memory when the part uses one.
template <class M, class T>
void forward_part(M& m, ConstView<T> x, View<T> y, typename M::Cache& c, const BlockMemory<T>& mem, Pass p) {
  if constexpr (UsesStageMemory<M>) m.forward(x, y, c, mem, p);
  else m.forward(x, y, c, p);
}
template <class M, class T>
void infer_part(M& m, ConstView<T> x, View<T> y, const BlockMemory<T>& mem) {
  if constexpr (UsesStageMemory<M>) m.infer(x, y, mem);
  else m.infer(x, y);
}
}  // namespace detail

}  // namespace lamina
