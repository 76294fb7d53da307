#pragma once
// A tensor read as N rows of D channels without a copy (spec/laurel.md
// "Notation"): dense activations [N, D] (or [B, T, D]) are row-major rows; an
// image batch [B, C, H, W] is N = B·H·W rows of D = C channels whose channel
// stride is H·W. Modules that mix channels (LAUREL's low-rank term, RMSNorm)
// work on either through the helpers below.
#include "lamina/core/eigen_core.hpp"

#include <algorithm>
#include <string_view>
#include <type_traits>
#include <vector>

#include "lamina/core/parallel.hpp"
#include "lamina/core/tensor.hpp"

namespace lamina {

/// Element (o, c, i) of the stream lives at (o·D + c)·inner + i.
struct ChannelGeometry {
  index_t outer = 0;  ///< N for dense rows, B for images
  index_t D = 0;      ///< channels
  index_t inner = 1;  ///< 1 for dense rows, H·W for images

  index_t rows() const noexcept { return outer * inner; }
  index_t size() const noexcept { return outer * D * inner; }
  /// Rows of an image (inner > 1) are strided; dense rows are contiguous.
  bool dense() const noexcept { return inner == 1; }

  /// Reads rank 2 or 3 as dense rows (last extent = D) and rank 4 as NCHW.
  static ChannelGeometry of(const Shape& s, std::string_view module, std::string_view argument) {
    if (s.rank() == 4) return {s[0], s[1], s[2] * s[3]};
    require<shape_error>(s.rank() == 2 || s.rank() == 3, module, argument, "rank 2 ([N, D]), 3 or 4 ([B, C, H, W])", s);
    return {s.rows(), s.cols(), 1};
  }
};

namespace detail {
/// Eigen map [rows × cols] of p with the given storage order; const-ness follows P.
template <int Order, class P>
auto block_map(P* p, index_t rows, index_t cols) {
  using M = Eigen::Matrix<std::remove_const_t<P>, Eigen::Dynamic, Eigen::Dynamic, Order>;
  if constexpr (std::is_const_v<P>) return Eigen::Map<const M>(p, rows, cols);
  else return Eigen::Map<M>(p, rows, cols);
}
}  // namespace detail

/// Calls fn(first_row, thread, X...) for the blocks of rows of one or more
/// streams of geometry g, each X an Eigen map [rows_in_block × D] of the matching
/// pointer: one row-major map for dense rows, one column-major map per image
/// (its H·W pixels × C channels) for NCHW. Images run in parallel; `thread`
/// indexes thread-private accumulators (see num_threads()).
template <class Fn, class... P>
void for_each_row_block(const ChannelGeometry& g, Fn&& fn, P*... streams) {
  if (g.dense()) {
    fn(index_t(0), 0, detail::block_map<Eigen::RowMajor>(streams, g.outer, g.D)...);
    return;
  }
  const index_t block = g.D * g.inner;
  parallel_for(g.outer, [&](index_t o) {
    fn(o * g.inner, thread_id(), detail::block_map<Eigen::ColMajor>(streams + o * block, g.inner, g.D)...);
  });
}

/// Splits an element-wise pass over a stream into chunks that run in parallel
/// and carry their own partial sums, so that reductions are deterministic (the
/// same bits for any thread count). A chunk calls
///   seg(offset, length, channel, step)
/// for each of its contiguous segments: step 0 means every element of the
/// segment has channel `channel`; step 1 means element i has channel
/// `channel + i` (a dense row). With per_channel == false everything is
/// channel 0 and the segments are plain slices of the flat tensor. An empty
/// stream has no chunk.
struct ChannelChunks {
  ChannelGeometry g;
  bool per_channel;

  static constexpr index_t flat_chunk = index_t(1) << 15;
  static constexpr index_t dense_rows_per_chunk = 64;

  /// Dense rows: flat slices (or groups of rows per channel). Images: one
  /// chunk per image, so a caller can finish an image's channel-mixing work
  /// while the image is still in cache.
  index_t count() const noexcept {
    if (g.size() == 0) return 0;
    if (!g.dense()) return g.outer;
    if (!per_channel) return (g.size() + flat_chunk - 1) / flat_chunk;
    return (g.outer + dense_rows_per_chunk - 1) / dense_rows_per_chunk;
  }
  /// Accumulator slots per chunk and reduced quantity: 1, or D per channel.
  index_t width() const noexcept { return per_channel ? g.D : 1; }

  template <class Seg>
  void run_chunk(index_t k, Seg&& seg) const {
    if (!g.dense() && !per_channel) {
      seg(k * g.D * g.inner, g.D * g.inner, index_t(0), std::integral_constant<int, 0>{});
    } else if (!per_channel) {
      const index_t first = k * flat_chunk;
      seg(first, std::min(flat_chunk, g.size() - first), index_t(0), std::integral_constant<int, 0>{});
    } else if (g.dense()) {
      const index_t r1 = std::min(g.outer, (k + 1) * dense_rows_per_chunk);
      for (index_t r = k * dense_rows_per_chunk; r < r1; ++r) seg(r * g.D, g.D, index_t(0), std::integral_constant<int, 1>{});
    } else {
      for (index_t c = 0; c < g.D; ++c) seg((k * g.D + c) * g.inner, g.inner, c, std::integral_constant<int, 0>{});
    }
  }

  /// Runs chunk_fn(k) over all chunks, in parallel for large streams.
  template <class ChunkFn>
  void each(ChunkFn&& chunk_fn) const {
    const index_t n = count();
    if (g.size() >= (index_t(1) << 16)) {
      parallel_for(n, [&](index_t k) { chunk_fn(k); });
    } else {
      for (index_t k = 0; k < n; ++k) chunk_fn(k);
    }
  }

  /// Runs chunk_fn(k, partial) over all chunks, partial pointing at
  /// `nacc · width()` zeroed doubles private to chunk k; returns the sums over
  /// chunks (nacc rows of width() values), reduced in chunk order.
  template <class ChunkFn>
  std::vector<double> reduce(index_t nacc, ChunkFn&& chunk_fn) const {
    std::vector<double> partial, total;
    reduce(nacc, chunk_fn, partial, total);
    return total;
  }
  /// reduce() with the partial sums and the result in the caller's vectors
  /// (resized; no allocation once they are large enough).
  template <class ChunkFn>
  void reduce(index_t nacc, ChunkFn&& chunk_fn, std::vector<double>& partial, std::vector<double>& total) const {
    const index_t n = count(), w = nacc * width();
    partial.assign(static_cast<std::size_t>(n * w), 0.0);
    each([&](index_t k) { chunk_fn(k, partial.data() + k * w); });
    total.assign(static_cast<std::size_t>(w), 0.0);
    for (index_t k = 0; k < n; ++k)
      for (index_t j = 0; j < w; ++j) total[static_cast<std::size_t>(j)] += partial[static_cast<std::size_t>(k * w + j)];
  }
};

}  // namespace lamina
