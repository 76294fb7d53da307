#pragma once
// The E1 baseline (spec/experiments.md): a CIFAR-style ResNet for 28×28 input.
// 3×3 conv stem → BN → ReLU → 3 stages of n BasicBlocks (widths 16/32/64,
// stride 2 at the start of stages 2 and 3) → global average pool → linear head.
#include <array>

#include "lamina/core/stage.hpp"
#include "lamina/modules/basic_block.hpp"
#include "lamina/modules/linear.hpp"
#include "lamina/modules/pooling.hpp"

namespace lamina {

struct ResNetOptions {
  index_t in_channels = 1;
  std::array<index_t, 3> widths{16, 32, 64};
  index_t blocks_per_stage = 2;
  index_t num_classes = 10;
};

/// The network around any block type (BasicBlock, or a LAUREL block).
template <class T, class Block>
using ResNetWith =
    Sequential<Conv2d<T>, BatchNorm2d<T>, Stage<Block>, Stage<Block>, Stage<Block>, GlobalAvgPool<T>, Linear<T>>;
/// Index of stage s (0, 1, 2) in a ResNetWith (after the stem conv and its BN, which applies the ReLU).
constexpr std::size_t resnet_stage_index(std::size_t s) noexcept { return 2 + s; }
template <class T>
using ResNet = ResNetWith<T, BasicBlock<T>>;

/// make_block(in_channels, out_channels, stride, rng) builds one block.
template <class T, class MakeBlock>
auto make_resnet_with(const ResNetOptions& o, Rng& rng, MakeBlock&& make_block) {
  using Block = decltype(make_block(index_t(1), index_t(1), index_t(1), rng));
  require(o.in_channels > 0, "ResNet", "in_channels", "> 0", o.in_channels);
  require(o.blocks_per_stage > 0, "ResNet", "blocks_per_stage", "> 0", o.blocks_per_stage);
  require(o.num_classes > 1, "ResNet", "num_classes", "> 1", o.num_classes);
  for (index_t w : o.widths) require(w > 0, "ResNet", "widths", "> 0", w);
  std::array<Stage<Block>, 3> stages;
  index_t in = o.widths[0];
  for (std::size_t s = 0; s < 3; ++s) {
    for (index_t b = 0; b < o.blocks_per_stage; ++b) {
      const index_t stride = (s > 0 && b == 0) ? 2 : 1;
      stages[s].push_back(make_block(in, o.widths[s], stride, rng));
      in = o.widths[s];
    }
  }
  ResNetWith<T, Block> net(Conv2d<T>({o.in_channels, o.widths[0], 3, 3, 1, 1, false}, rng), BatchNorm2d<T>(o.widths[0], {.relu = true}),
                std::move(stages[0]), std::move(stages[1]), std::move(stages[2]), GlobalAvgPool<T>{},
                Linear<T>(o.widths[2], o.num_classes, rng));
  net.set_names({"conv1", "bn1", "layer1", "layer2", "layer3", "avgpool", "fc"});
  return net;
}

template <class T>
ResNet<T> make_resnet(const ResNetOptions& o, Rng& rng) {
  return make_resnet_with<T>(o, rng, [](index_t in, index_t out, index_t stride, Rng& r) {
    return make_basic_block<T>(in, out, stride, r);
  });
}

}  // namespace lamina
