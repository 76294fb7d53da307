#pragma once
// Streams shared between the blocks of a stage (spec/laurel.md "PA"; later the
// layer-attention memory): a block that exposes a StreamSlot lets later blocks
// of the same Stage read the stream that entered it and add their gradient
// into it. Stage links every such block to its predecessors before each pass.
#include <concepts>
#include <span>

#include "lamina/core/tensor.hpp"

namespace lamina {

template <class T>
struct StreamSlot {
  ConstView<T> train;  ///< the stream of the latest forward()
  ConstView<T> infer;  ///< the stream of the latest infer()
  /// dL/d(stream): zeroed by the owner's forward(), added into by every later
  /// consumer's backward() and by the owner's, consumed by the owner's backward()
  /// (later blocks run their backward first).
  Tensor<T> grad;
};

/// A block that publishes its input stream and reads its predecessors'.
/// link_predecessors receives the slots of the earlier blocks of the stage,
/// most recent first; the block keeps as many as it uses.
template <class M>
concept HasStreamSlot = requires(M& m, std::span<StreamSlot<typename M::value_type>* const> earlier) {
  { m.stream_slot() } -> std::same_as<StreamSlot<typename M::value_type>*>;
  m.link_predecessors(earlier);
};

}  // namespace lamina
