#pragma once
// The E1 network with LAUREL connections (spec/experiments.md E1): every
// BasicBlock's residual sum becomes a LAUREL connection of variant V,
//   y = relu(α body(x) + β (s + s A B + Σ_j γ_j h_j(s_{i-j}))),  s = shortcut(x),
// so the projection shortcut of a stage's first block feeds the stream at the
// stage's width. PA history runs within a stage (all its streams have one width).
#include "lamina/models/resnet.hpp"
#include "lamina/modules/laurel.hpp"

namespace lamina {

template <class T, laurel::Variant V>
using LaurelBasicBlock = Sequential<Laurel<BasicBlockBody<T>, V, Shortcut<T>>, ReLU<T>>;

template <class T, laurel::Variant V>
LaurelBasicBlock<T, V> make_laurel_basic_block(index_t in_channels, index_t out_channels, index_t stride,
                                               const laurel::Options& lo, Rng& rng) {
  // Same draws as make_basic_block first, so a baseline and a LAUREL network of
  // one seed start from the same body weights.
  auto body = make_basic_block_body<T>(in_channels, out_channels, stride, rng);
  Shortcut<T> shortcut(in_channels, out_channels, stride, rng);
  Laurel<BasicBlockBody<T>, V, Shortcut<T>> conn(std::move(body), std::move(shortcut), out_channels, lo, rng);
  conn.set_names("", "downsample.", "laurel.");
  LaurelBasicBlock<T, V> block(std::move(conn), ReLU<T>{});
  block.set_names({"", "relu_out"});
  return block;
}

template <class T, laurel::Variant V>
using LaurelResNet = ResNetWith<T, LaurelBasicBlock<T, V>>;

template <class T, laurel::Variant V>
LaurelResNet<T, V> make_laurel_resnet(const ResNetOptions& o, const laurel::Options& lo, Rng& rng) {
  return make_resnet_with<T>(o, rng, [&](index_t in, index_t out, index_t stride, Rng& r) {
    return make_laurel_basic_block<T, V>(in, out, stride, lo, r);
  });
}

}  // namespace lamina
