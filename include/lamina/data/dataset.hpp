#pragma once
// An image classification data set in memory and a batch loader with
// shuffling, normalisation and optional augmentation (random crop with zero
// padding, horizontal flip), as the E1 training recipe (spec/experiments.md).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "lamina/core/random.hpp"
#include "lamina/core/tensor.hpp"
#include "lamina/data/idx.hpp"

namespace lamina::data {

/// Images as raw intensities in [0, 1], [N, C, H, W]; labels in [0, classes).
struct Dataset {
  Tensor<float> images;
  std::vector<std::int32_t> labels;
  index_t num_classes = 0;
  index_t size() const noexcept { return images.rank() == 4 ? images.dim(0) : 0; }

  /// The first n samples (n <= size()).
  Dataset head(index_t n) const {
    const index_t N = size();
    require(n >= 0 && n <= N, "Dataset", "head(n)", detail::text("in [0, ", N, "]"), n);
    Dataset d;
    const index_t per = images.size() / std::max<index_t>(size(), 1);
    d.images = Tensor<float>(Shape{n, images.dim(1), images.dim(2), images.dim(3)});
    std::copy(images.data(), images.data() + n * per, d.images.data());
    d.labels.assign(labels.begin(), labels.begin() + n);
    d.num_classes = num_classes;
    return d;
  }
};

/// Per-channel mean and standard deviation of a data set's intensities.
struct Normalization {
  float mean = 0, stddev = 1;
};
inline Normalization statistics(const Dataset& d) {
  double s = 0, q = 0;
  for (float v : d.images.span()) {
    s += v;
    q += double(v) * v;
  }
  const double n = double(d.images.size()), m = s / n;
  return {float(m), float(std::sqrt(std::max(q / n - m * m, 1e-12)))};
}

namespace detail {
/// Images [N, H, W] and labels [N] of an IDX pair agree and are usable.
inline void check_idx_pair(const IdxArray& im, const IdxArray& lb, const std::filesystem::path& images,
                           const std::filesystem::path& labels, index_t num_classes) {
  using lamina::detail::text;
  require(num_classes > 0, "load_idx_pair", "num_classes", "> 0", num_classes);
  require<io_error>(im.dims.size() == 3, "load_idx_pair", text(images, ": rank"), "3 ([N, H, W])", im.dims.size());
  require<io_error>(lb.dims.size() == 1, "load_idx_pair", text(labels, ": rank"), "1 ([N])", lb.dims.size());
  require<io_error>(im.dims[1] > 0 && im.dims[2] > 0, "load_idx_pair", text(images, ": image size H x W"),
                    "> 0 x > 0", text(im.dims[1], " x ", im.dims[2]));
  require<io_error>(im.dims[0] == lb.dims[0], "load_idx_pair", "sample count",
                    text(im.dims[0], " (images)"), text(lb.dims[0], " (labels)"));
  for (std::size_t i = 0; i < lb.values.size(); ++i)
    require<io_error>(lb.values[i] < num_classes, "load_idx_pair", text(labels, ": label ", i),
                      text("< ", num_classes), int(lb.values[i]));
}
}  // namespace detail

/// Builds a data set from an images IDX file [N, H, W] and a labels file [N].
/// Throws io_error naming the file for ranks, sizes or labels that disagree.
inline Dataset load_idx_pair(const std::filesystem::path& images, const std::filesystem::path& labels,
                             index_t num_classes, index_t limit = 0) {
  require(limit >= 0, "load_idx_pair", "limit", ">= 0 (0: all samples)", limit);
  const IdxArray im = read_idx(images), lb = read_idx(labels);
  detail::check_idx_pair(im, lb, images, labels, num_classes);
  index_t n = im.dims[0];
  if (limit > 0) n = std::min(n, limit);
  const index_t H = im.dims[1], W = im.dims[2];
  Dataset d;
  d.num_classes = num_classes;
  d.images = Tensor<float>(Shape{n, 1, H, W});
  for (index_t i = 0; i < n * H * W; ++i) d.images[i] = float(im.values[static_cast<std::size_t>(i)]) / 255.0f;
  d.labels.assign(lb.values.begin(), lb.values.begin() + n);
  return d;
}

/// Fashion-MNIST from Debian's dataset-fashion-mnist (or any folder with the
/// four standard file names). split: "train" or "test".
inline std::filesystem::path default_fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }
inline Dataset load_fashion_mnist(const std::filesystem::path& dir, const std::string& split, index_t limit = 0) {
  require(split == "train" || split == "test", "load_fashion_mnist", "split", "\"train\" or \"test\"", split);
  const std::string p = split == "train" ? "train" : "t10k";
  return load_idx_pair(dir / (p + "-images-idx3-ubyte.gz"), dir / (p + "-labels-idx1-ubyte.gz"), 10, limit);
}

/// What a Loader checks in its data set when it is built.
enum class Check {
  all,          ///< shape, labels and finite intensities (one pass over the images)
  labels_only,  ///< shape and labels; non-finite intensities pass through (training tests)
};

struct Augmentation {
  index_t pad = 0;     ///< random crop of the original size from the zero-padded image
  bool hflip = false;  ///< horizontal flip with probability 1/2
};

/// The part of every batch that one of `size` ranks trains on (data-parallel
/// training, dist/data_parallel.hpp). {0, 1} is the whole batch.
struct Shard {
  int rank = 0, size = 1;
};
/// Rank shard.rank's rows [first, first + count) of a batch of n rows: the
/// batch split into shard.size contiguous parts whose sizes differ by at most 1.
struct ShardRange {
  index_t first = 0, count = 0;
};
inline ShardRange shard_range(index_t n, Shard shard) {
  require(shard.size > 0, "shard_range", "shard size", "> 0", shard.size);
  require(shard.rank >= 0 && shard.rank < shard.size, "shard_range", "shard rank",
          detail::text("in [0, ", shard.size, ")"), shard.rank);
  require(n >= 0, "shard_range", "batch rows", ">= 0", n);
  const index_t k = shard.size, r = shard.rank, first = n * r / k;
  return {first, n * (r + 1) / k - first};
}

/// Iterates over a data set in batches of scalar type T. With a Shard of
/// several ranks, every rank draws the same permutation each epoch (the same
/// seed) and batch(i) returns only its shard_range of global batch i, so the
/// ranks' shards of a step make up exactly the batch one process would use;
/// augmentation is then drawn from a separate stream per rank. With one rank
/// (the default) the loader behaves exactly as without sharding.
template <class T>
class Loader {
 public:
  /// Checks the data set once: shape [N, C, H, W] with N > 0, one label per
  /// sample in [0, num_classes), and (unless `check` is Check::labels_only)
  /// finite intensities; value_error names the first bad sample.
  Loader(const Dataset& d, index_t batch_size, Normalization norm, bool shuffle = false, Augmentation aug = {},
         std::uint64_t seed = 1, Shard shard = {}, Check check = Check::all)
      : d_(&d), bs_(batch_size), norm_(norm), shuffle_(shuffle), aug_(aug), rng_(seed), shard_(shard),
        aug_rng_(seed ^ (0x9e3779b97f4a7c15ULL * std::uint64_t(shard.rank + 1))) {
    require(batch_size > 0, "Loader", "batch_size", "> 0", batch_size);
    require(std::isfinite(norm.mean), "Loader", "normalization mean", "a finite value", norm.mean);
    require(std::isfinite(norm.stddev) && norm.stddev > 0, "Loader", "normalization stddev", "finite and > 0",
            norm.stddev);
    require(aug.pad >= 0, "Loader", "augmentation pad", ">= 0", aug.pad);
    (void)shard_range(0, shard);  // validates the shard
    check_dataset(d, check);
    order_.resize(static_cast<std::size_t>(d.size()));
    std::iota(order_.begin(), order_.end(), index_t(0));
  }
  /// The same without sharding, with the data-set check chosen.
  Loader(const Dataset& d, index_t batch_size, Normalization norm, bool shuffle, Augmentation aug, std::uint64_t seed,
         Check check)
      : Loader(d, batch_size, norm, shuffle, aug, seed, Shard{}, check) {}
  /// Batches per epoch: the same on every rank.
  index_t batches() const noexcept { return (d_->size() + bs_ - 1) / bs_; }
  index_t size() const noexcept { return d_->size(); }
  Shard shard() const noexcept { return shard_; }
  /// This rank's rows of batch i (the whole batch without sharding).
  ShardRange range(index_t i) const {
    require(i >= 0 && i < batches(), "Loader", "batch index", detail::text("in [0, ", batches(), ")"), i);
    const index_t first = i * bs_, n = std::min(bs_, d_->size() - first);
    const ShardRange r = shard_range(n, shard_);
    return {first + r.first, r.count};
  }
  /// The sample indices of this rank's part of batch i, in order.
  std::span<const index_t> indices(index_t i) const {
    const ShardRange r = range(i);
    return {order_.data() + r.first, static_cast<std::size_t>(r.count)};
  }

  /// Starts an epoch: a new permutation when shuffling.
  void start_epoch() {
    if (!shuffle_) return;
    for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng_.below(i)]);
  }

  /// Batch i of the epoch: normalised (and augmented) images and their labels.
  void batch(index_t i, Tensor<T>& x, std::vector<std::int32_t>& y) {
    const auto [first, n] = range(i);
    Rng& arng = shard_.size > 1 ? aug_rng_ : rng_;
    const Tensor<float>& im = d_->images;
    const index_t C = im.dim(1), H = im.dim(2), W = im.dim(3), per = C * H * W;
    x.resize(Shape{n, C, H, W});
    y.resize(static_cast<std::size_t>(n));
    const T zero = T((0.0f - norm_.mean) / norm_.stddev), inv = T(1.0f / norm_.stddev), mean = T(norm_.mean);
    for (index_t k = 0; k < n; ++k) {
      const index_t s = order_[static_cast<std::size_t>(first + k)];
      y[static_cast<std::size_t>(k)] = d_->labels[static_cast<std::size_t>(s)];
      const float* src = im.data() + s * per;
      T* dst = x.data() + k * per;
      index_t dy = 0, dx = 0;
      bool flip = false;
      if (aug_.pad > 0) {
        dy = index_t(arng.below(std::uint64_t(2 * aug_.pad + 1))) - aug_.pad;
        dx = index_t(arng.below(std::uint64_t(2 * aug_.pad + 1))) - aug_.pad;
      }
      if (aug_.hflip) flip = arng.below(2) == 1;
      for (index_t c = 0; c < C; ++c)
        for (index_t r = 0; r < H; ++r)
          for (index_t q = 0; q < W; ++q) {
            const index_t sr = r + dy, sq0 = q + dx, sq = flip ? W - 1 - sq0 : sq0;
            const bool inside = sr >= 0 && sr < H && sq0 >= 0 && sq0 < W;
            dst[(c * H + r) * W + q] = inside ? (T(src[(c * H + sr) * W + sq]) - mean) * inv : zero;
          }
    }
  }

 private:
  static void check_dataset(const Dataset& d, Check check) {
    using detail::text;
    const index_t n = d.size(), k = d.num_classes;
    require<shape_error>(d.images.rank() == 4 && n > 0 && d.images.size() > 0, "Loader", "data set images",
                         "[N, C, H, W] with N > 0, non-empty", d.images.shape());
    require(static_cast<index_t>(d.labels.size()) == n, "Loader", "data set labels", text(n, " (one per image)"),
            d.labels.size());
    require(k > 0, "Loader", "data set num_classes", "> 0", k);
    for (std::size_t i = 0; i < d.labels.size(); ++i)
      require(d.labels[i] >= 0 && d.labels[i] < k, "Loader", text("data set label of sample ", i),
              text("in [0, ", k, ")"), d.labels[i]);
    if (check == Check::labels_only) return;
    const float* v = d.images.data();
    const index_t total = d.images.size(), per = total / n;
    for (index_t i = 0; i < total; ++i)
      if (!std::isfinite(v[i])) [[unlikely]]
        fail("Loader", text("data set image of sample ", i / per, ", value ", i % per), "a finite intensity", v[i]);
  }

  const Dataset* d_;
  index_t bs_;
  Normalization norm_;
  bool shuffle_;
  Augmentation aug_;
  Rng rng_;  ///< the permutation (and, with one rank, augmentation)
  Shard shard_;
  Rng aug_rng_;  ///< augmentation with several ranks
  std::vector<index_t> order_;
};

}  // namespace lamina::data
