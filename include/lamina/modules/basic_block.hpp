#pragma once
// The CIFAR-style ResNet BasicBlock (torchvision's, golden/core/README.md
// "ResNet BasicBlock"):
//   y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
// shortcut = identity, or 1×1 conv (stride s) + BN when the shape changes.
// Parameter names are PyTorch's state_dict keys (conv1.weight, downsample.0.weight, ...).
#include <optional>
#include <string>

#include "lamina/core/sequential.hpp"
#include "lamina/modules/activation.hpp"
#include "lamina/modules/batchnorm2d.hpp"
#include "lamina/modules/conv2d.hpp"

namespace lamina {

/// Identity, or the projection 1×1 conv + BatchNorm ("option B"), chosen at run time
/// so that all blocks of a stage share one type.
template <class T>
class Shortcut {
 public:
  using value_type = T;
  using Projection = Sequential<Conv2d<T>, BatchNorm2d<T>>;

  Shortcut() = default;
  Shortcut(index_t in_channels, index_t out_channels, index_t stride, Rng& rng) {
    if (stride != 1 || in_channels != out_channels)
      proj_.emplace(Conv2d<T>({in_channels, out_channels, 1, 1, stride, 0, false}, rng),
                    BatchNorm2d<T>(out_channels));
  }
  bool is_identity() const noexcept { return !proj_.has_value(); }
  Projection* projection() noexcept { return proj_ ? &*proj_ : nullptr; }

  struct Cache {
    typename Projection::Cache proj;
    typename Identity<T>::Cache id;
  };

  Shape output_shape(const Shape& in) const { return proj_ ? proj_->output_shape(in) : id_.output_shape(in); }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    proj_ ? proj_->forward(x, y, c.proj, p) : id_.forward(x, y, c.id, p);
  }
  void infer(ConstView<T> x, View<T> y) { proj_ ? proj_->infer(x, y) : id_.infer(x, y); }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    proj_ ? proj_->backward(c.proj, dy, dx, g) : id_.backward(c.id, dy, dx, g);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    if (proj_) proj_->visit(f, prefix);
  }
  void set_training(bool on) {
    if (proj_) proj_->set_training(on);
  }

 private:
  std::optional<Projection> proj_;
  Identity<T> id_;
  Cache cache_;
};

/// conv1 → bn1 (with its ReLU fused, kernels/batchnorm.hpp) → conv2 → bn2.
template <class T>
using BasicBlockBody = Sequential<Conv2d<T>, BatchNorm2d<T>, Conv2d<T>, BatchNorm2d<T>>;

/// The plain block, y = relu(bn2(conv2(h)) + shortcut(x)), h = relu(bn1(conv1(x))),
/// with bn2, the residual add and the output ReLU in one pass (BatchNorm2d's
/// residual form, kernels/batchnorm.hpp): no sum buffer, no separate ReLU,
/// and the identity shortcut's gradient is added into dx by bn2's backward.
/// (LAUREL wraps the residual itself and keeps BasicBlockBody: models/laurel_resnet.hpp.)
template <class T>
class BasicBlock {
 public:
  using value_type = T;
  using Head = Sequential<Conv2d<T>, BatchNorm2d<T>, Conv2d<T>>;  ///< conv1, bn1 (ReLU fused), conv2

  struct Cache {
    typename Head::Cache head;
    typename BatchNorm2d<T>::Cache bn2;
    typename Shortcut<T>::Cache s;
    Tensor<T> t;      ///< conv2's output, bn2's input
    Tensor<T> s_out;  ///< the projection shortcut's output
    Shape x_shape;
  };

  BasicBlock(Head head, BatchNorm2d<T> bn2, Shortcut<T> shortcut)
      : head_(std::move(head)), bn2_(std::move(bn2)), sc_(std::move(shortcut)) {
    require(bn2_.fused_relu(), "BasicBlock", "bn2", "a BatchNorm2d with {.relu = true}", "relu = false");
  }
  Head& head() noexcept { return head_; }
  BatchNorm2d<T>& bn2() noexcept { return bn2_; }
  Shortcut<T>& shortcut() noexcept { return sc_; }

  Shape output_shape(const Shape& in) const {
    const Shape a = bn2_.output_shape(head_.output_shape(in)), b = sc_.output_shape(in);
    require<shape_error>(a == b, "BasicBlock", "branch output shapes", detail::text("body ", a), detail::text("shortcut ", b));
    return a;
  }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    require_shape(y, output_shape(x.shape()), "BasicBlock", "y");
    c.x_shape = Shape{};
    c.t.resize(y.shape());
    head_.forward(x, c.t.view(), c.head, p);
    ConstView<T> r = x;
    if (!sc_.is_identity()) {
      c.s_out.resize(y.shape());
      sc_.forward(x, c.s_out.view(), c.s, p);
      r = c.s_out.cview();
    }
    bn2_.forward(c.t.cview(), r, y, c.bn2, p);
    c.x_shape = x.shape();
  }
  void infer(ConstView<T> x, View<T> y) {
    require_shape(y, output_shape(x.shape()), "BasicBlock", "y");
    t_.resize(y.shape());
    head_.infer(x, t_.view());
    ConstView<T> r = x;
    if (!sc_.is_identity()) {
      s_.resize(y.shape());
      sc_.infer(x, s_.view());
      r = s_.cview();
    }
    bn2_.infer(t_.cview(), r, y);
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.x_shape.rank() == 4, "BasicBlock");
    require_input_grad(dx, c.x_shape, g, "BasicBlock");
    dt_.resize(c.t.shape());
    fill_zero(dt_.data(), dt_.size());
    const Grad inner{.input = true, .params = g.params};
    if (sc_.is_identity()) {  // the identity's gradient goes straight into dx
      bn2_.backward(c.bn2, dy, dt_.view(), g.input ? dx : View<T>{}, inner);
    } else {
      s_.resize(c.t.shape());
      fill_zero(s_.data(), s_.size());
      bn2_.backward(c.bn2, dy, dt_.view(), s_.view(), inner);
      sc_.backward(c.s, s_.cview(), dx, g);
    }
    head_.backward(c.head, dt_.cview(), dx, g);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    head_.visit(f, prefix);
    bn2_.visit(f, prefix + "bn2.");
    sc_.visit(f, prefix + "downsample.");
  }
  void set_training(bool on) {
    lamina::set_training(head_, on);
    bn2_.set_training(on);
    sc_.set_training(on);
  }

 private:
  Head head_;
  BatchNorm2d<T> bn2_;
  Shortcut<T> sc_;
  Tensor<T> t_, s_, dt_;  ///< scratch: infer's conv2 output, shortcut output / gradient, bn2's dx
  Cache cache_;
};

template <class T>
BasicBlockBody<T> make_basic_block_body(index_t in_channels, index_t out_channels, index_t stride, Rng& rng) {
  BasicBlockBody<T> body(Conv2d<T>({in_channels, out_channels, 3, 3, stride, 1, false}, rng),
                         BatchNorm2d<T>(out_channels, {.relu = true}),
                         Conv2d<T>({out_channels, out_channels, 3, 3, 1, 1, false}, rng),
                         BatchNorm2d<T>(out_channels));
  body.set_names({"conv1", "bn1", "conv2", "bn2"});
  return body;
}

template <class T>
BasicBlock<T> make_basic_block(index_t in_channels, index_t out_channels, index_t stride, Rng& rng) {
  // The draws of make_basic_block_body, then the shortcut's (as LAUREL's blocks).
  typename BasicBlock<T>::Head head(Conv2d<T>({in_channels, out_channels, 3, 3, stride, 1, false}, rng),
                                    BatchNorm2d<T>(out_channels, {.relu = true}),
                                    Conv2d<T>({out_channels, out_channels, 3, 3, 1, 1, false}, rng));
  head.set_names({"conv1", "bn1", "conv2"});
  return BasicBlock<T>(std::move(head), BatchNorm2d<T>(out_channels, {.relu = true}),
                       Shortcut<T>(in_channels, out_channels, stride, rng));
}

}  // namespace lamina
