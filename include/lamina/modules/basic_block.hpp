#pragma once
// The CIFAR-style ResNet BasicBlock (torchvision's, golden/core/README.md
// "ResNet BasicBlock"), built from the generic composites:
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

template <class T>
using BasicBlockBody = Sequential<Conv2d<T>, BatchNorm2d<T>, ReLU<T>, Conv2d<T>, BatchNorm2d<T>>;
template <class T>
using BasicBlock = Sequential<Residual<BasicBlockBody<T>, Shortcut<T>>, ReLU<T>>;

template <class T>
BasicBlockBody<T> make_basic_block_body(index_t in_channels, index_t out_channels, index_t stride, Rng& rng) {
  BasicBlockBody<T> body(Conv2d<T>({in_channels, out_channels, 3, 3, stride, 1, false}, rng),
                         BatchNorm2d<T>(out_channels), ReLU<T>{},
                         Conv2d<T>({out_channels, out_channels, 3, 3, 1, 1, false}, rng),
                         BatchNorm2d<T>(out_channels));
  body.set_names({"conv1", "bn1", "relu", "conv2", "bn2"});
  return body;
}

template <class T>
BasicBlock<T> make_basic_block(index_t in_channels, index_t out_channels, index_t stride, Rng& rng) {
  Residual<BasicBlockBody<T>, Shortcut<T>> res(make_basic_block_body<T>(in_channels, out_channels, stride, rng),
                                               Shortcut<T>(in_channels, out_channels, stride, rng));
  res.set_names("", "downsample.");
  BasicBlock<T> block(std::move(res), ReLU<T>{});
  block.set_names({"", "relu_out"});
  return block;
}

}  // namespace lamina
