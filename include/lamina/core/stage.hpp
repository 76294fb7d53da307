#pragma once
// A stage: a run-time number of modules of one type applied in order (e.g. the
// BasicBlocks of one ResNet stage). Owns the tensors between its blocks.
// Blocks that publish a StreamSlot (LAUREL-PA) are linked to the slots of the
// earlier blocks before each pass, and every block output is kept while such a
// stage infers (a later block may read any earlier stream).
#include <string>
#include <vector>

#include "lamina/core/history.hpp"
#include "lamina/core/module.hpp"

namespace lamina {

template <class M>
class Stage {
  static_assert(check_module<M>(), "lamina::Stage: the block type must satisfy lamina::Module");

 public:
  using value_type = typename M::value_type;
  using T = value_type;

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
  void forward(ConstView<T> x, View<T> y) {
    const std::size_t n = blocks_.size();
    require<shape_error>(n > 0, "Stage", "blocks", ">= 1", 0);
    out_.resize(n - 1);
    ConstView<T> cur = x;
    for (std::size_t i = 0; i + 1 < n; ++i) {
      link(i);
      out_[i].resize(blocks_[i].output_shape(cur.shape()));
      blocks_[i].forward(cur, out_[i].view());
      cur = out_[i].cview();
    }
    link(n - 1);
    blocks_[n - 1].forward(cur, y);
  }
  void infer(ConstView<T> x, View<T> y) {
    const std::size_t n = blocks_.size();
    require<shape_error>(n > 0, "Stage", "blocks", ">= 1", 0);
    ConstView<T> cur = x;
    if constexpr (HasStreamSlot<M>) infer_out_.resize(n - 1);
    for (std::size_t i = 0; i + 1 < n; ++i) {
      link(i);
      Tensor<T>& buf = HasStreamSlot<M> ? infer_out_[i] : pong_[i % 2];
      buf.resize(blocks_[i].output_shape(cur.shape()));
      blocks_[i].infer(cur, buf.view());
      cur = buf.cview();
    }
    link(n - 1);
    blocks_[n - 1].infer(cur, y);
  }
  void backward(ConstView<T> dy, View<T> dx) {
    const std::size_t n = blocks_.size();
    require<shape_error>(n > 0 && out_.size() == n - 1, "Stage", "backward()", "a preceding forward()", "none");
    grad_.resize(n - 1);
    ConstView<T> g = dy;
    for (std::size_t i = n - 1; i > 0; --i) {
      grad_[i - 1].resize(out_[i - 1].shape());
      fill_zero(grad_[i - 1].data(), grad_[i - 1].size());
      blocks_[i].backward(g, grad_[i - 1].view());
      g = grad_[i - 1].cview();
    }
    blocks_[0].backward(g, dx);
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].visit(f, prefix + std::to_string(i) + ".");
  }
  void set_training(bool on) {
    for (M& b : blocks_) lamina::set_training(b, on);
  }

 private:
  void link(std::size_t i) {
    if constexpr (HasStreamSlot<M>) {
      earlier_.clear();
      for (std::size_t j = i; j-- > 0;) earlier_.push_back(blocks_[j].stream_slot());
      blocks_[i].link_predecessors(std::span<StreamSlot<T>* const>(earlier_));
    }
  }

  std::vector<M> blocks_;
  std::vector<Tensor<T>> out_, grad_, infer_out_;
  std::vector<StreamSlot<T>*> earlier_;
  Tensor<T> pong_[2];
};

}  // namespace lamina
