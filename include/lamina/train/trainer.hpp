#pragma once
// Training-loop helpers: one epoch of minibatch training, evaluation, and a
// history that is written as CSV. A non-finite loss stops training with a
// non_finite_error before any optimizer step applies it.
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/data/dataset.hpp"
#include "lamina/dist/data_parallel.hpp"
#include "lamina/modules/softmax_cross_entropy.hpp"
#include "lamina/train/progress.hpp"

namespace lamina::train {

struct EpochStats {
  double loss = 0, accuracy = 0;
  double seconds = 0, images_per_second = 0;
  index_t images = 0;
};

namespace detail {
inline void require_finite_loss(double l) {
  if (!std::isfinite(l))
    throw non_finite_error(lamina::detail::concat("lamina::train_step: loss is ", l,
                                                  "; training stopped before the update (lower the learning rate?)"));
}
/// Forward and loss of a training step; y is resized.
template <Module M>
typename M::value_type forward_loss(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss,
                                    ConstView<typename M::value_type> x, const std::vector<std::int32_t>& labels,
                                    Tensor<typename M::value_type>& y) {
  y.resize(model.output_shape(x.shape()));
  model.forward(x, y.view());
  return loss.forward(y.cview(), labels);
}
/// Loss gradient into dy, cleared parameter gradients, backward (no input gradient).
template <Module M, class Opt>
void backward_loss(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                   const Tensor<typename M::value_type>& y, Tensor<typename M::value_type>& dy) {
  dy.resize(y.shape());
  dy.zero();
  loss.backward(dy.view());
  opt.zero_grad();
  model.backward(dy.cview(), View<typename M::value_type>{}, {.input = false});
}
}  // namespace detail

/// One training step on the batch (`x`, `labels`): forward, loss, backward,
/// `lr` (when > 0) and the optimizer update. Returns the batch loss; the
/// number of correct predictions is `loss.correct()` afterwards. `y`, `dy` and
/// `dx` are reusable buffers. A non-finite loss throws before the update.
template <Module M, class Opt>
typename M::value_type train_step(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                                  ConstView<typename M::value_type> x, const std::vector<std::int32_t>& labels,
                                  double lr, Tensor<typename M::value_type>& y, Tensor<typename M::value_type>& dy,
                                  Tensor<typename M::value_type>& dx) {
  const auto l = detail::forward_loss(model, loss, x, labels, y);
  detail::require_finite_loss(double(l));
  (void)dx;  // kept in the signature; the input gradient is not needed
  detail::backward_loss(model, loss, opt, y, dy);
  if (lr > 0) opt.set_lr(lr);
  opt.step();
  return l;
}

/// The data-parallel step (dist/data_parallel.hpp): this rank's shard (`x`,
/// `labels`, possibly empty), then ONE all-reduce of the gradients weighted by
/// the shard sizes, so every rank applies the update of the whole batch. Every
/// rank must call it for every batch. Returns the totals of the whole batch
/// (mean loss, correct predictions, samples); a non-finite loss on any rank
/// throws on every rank before the update.
template <Module M, class Opt>
dist::StepTotals train_step(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                            ConstView<typename M::value_type> x, const std::vector<std::int32_t>& labels, double lr,
                            Tensor<typename M::value_type>& y, Tensor<typename M::value_type>& dy,
                            dist::GradientAllReduce<typename M::value_type>& sync) {
  const index_t n = x.rank() > 0 ? x.dim(0) : 0;
  double l = 0, correct = 0;
  if (n > 0) {
    l = double(detail::forward_loss(model, loss, x, labels, y));
    correct = double(loss.correct());
    detail::backward_loss(model, loss, opt, y, dy);
  } else {
    opt.zero_grad();
  }
  const dist::StepTotals t = sync(double(n), l, correct);
  detail::require_finite_loss(t.loss);
  if (lr > 0) opt.set_lr(lr);
  opt.step();
  return t;
}

/// Trains `model` for one epoch. `lr_at(step_in_epoch)` (optional) sets the
/// learning rate before each step, for per-step schedules. With `sync`
/// (data-parallel training: a sharded loader, the same call on every rank),
/// each step averages the gradients over the ranks, the statistics are those
/// of the whole batches, and only rank 0 draws the progress.
template <Module M, class Opt>
EpochStats train_epoch(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                       data::Loader<typename M::value_type>& loader, Progress& progress, const std::string& label,
                       const std::function<double(index_t)>& lr_at = {},
                       dist::GradientAllReduce<typename M::value_type>* sync = nullptr) {
  using T = typename M::value_type;
  if (sync)
    require(loader.shard().size == sync->communicator().size(), "train_epoch", "loader shard size",
            sync->communicator().size(), loader.shard().size);
  const bool draw = !sync || sync->communicator().is_root();
  set_training(model, true);
  loader.start_epoch();
  Tensor<T> x, y, dy, dx;
  std::vector<std::int32_t> labels;
  EpochStats st;
  double loss_sum = 0;
  index_t correct = 0;
  const index_t nb = loader.batches();
  if (draw) progress.start(label, nb);
  const auto t0 = std::chrono::steady_clock::now();
  for (index_t b = 0; b < nb; ++b) {
    loader.batch(b, x, labels);
    const double lr = lr_at ? lr_at(b) : 0.0;
    dist::StepTotals t;
    try {
      if (sync) {
        t = train_step(model, loss, opt, x.cview(), labels, lr, y, dy, *sync);
      } else {
        t.loss = double(train_step(model, loss, opt, x.cview(), labels, lr, y, dy, dx));
        t.weight = double(x.dim(0)), t.correct = double(loss.correct());
      }
    } catch (const non_finite_error& e) {
      if (draw) progress.finish();
      throw non_finite_error(lamina::detail::concat("lamina::train_epoch: ", label, ": step ", b + 1, " of ", nb, ": ", e.what()));
    }
    loss_sum += t.loss * t.weight;
    correct += index_t(t.correct);
    st.images += index_t(t.weight);
    if (draw) progress.update(b + 1, loss_sum / double(st.images), double(correct) / double(st.images), st.images);
  }
  if (draw) progress.finish();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.loss = loss_sum / double(st.images);
  st.accuracy = double(correct) / double(st.images);
  st.images_per_second = double(st.images) / st.seconds;
  return st;
}

/// Mean loss and accuracy of `model` in evaluation mode (infer path). With
/// `comm` (data-parallel training, the same call on every rank), rank 0's
/// BatchNorm buffers are first copied to every rank, and a sharded loader's
/// parts are summed over the ranks: every rank returns the whole set's figures.
template <Module M>
EpochStats evaluate(M& model, data::Loader<typename M::value_type>& loader, dist::Communicator* comm = nullptr) {
  using T = typename M::value_type;
  const int shards = loader.shard().size;
  if (comm) {
    require(shards == 1 || shards == comm->size(), "evaluate", "loader shard size",
            lamina::detail::text("1 or ", comm->size()), shards);
    dist::broadcast_buffers(model, *comm);
  }
  set_training(model, false);
  SoftmaxCrossEntropy<T> loss;
  Tensor<T> x, y;
  std::vector<std::int32_t> labels;
  double sums[3] = {0, 0, 0};  // loss sum, correct, images
  const auto t0 = std::chrono::steady_clock::now();
  for (index_t b = 0; b < loader.batches(); ++b) {
    loader.batch(b, x, labels);
    if (x.dim(0) == 0) continue;  // an empty shard of a small last batch
    y.resize(model.output_shape(x.shape()));
    model.infer(x.cview(), y.view());
    sums[0] += double(loss.forward(y.cview(), labels)) * double(x.dim(0));
    sums[1] += double(loss.correct());
    sums[2] += double(x.dim(0));
  }
  if (comm && shards > 1) comm->allreduce_sum(std::span<double>(sums, 3));
  set_training(model, true);
  EpochStats st;
  st.images = index_t(sums[2]);
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.loss = sums[0] / sums[2];
  st.accuracy = sums[1] / sums[2];
  st.images_per_second = sums[2] / st.seconds;
  return st;
}

/// One row per epoch; written as CSV (a header line, then numbers).
struct EpochRecord {
  index_t epoch;
  double lr;
  EpochStats train, test;
};

inline void write_csv(const std::string& path, const std::vector<EpochRecord>& rows) {
  std::ofstream out(path);
  if (!out) throw io_error("lamina::write_csv: cannot create " + path);
  out << "epoch,lr,train_loss,train_accuracy,test_loss,test_accuracy,train_seconds,train_images_per_second\n";
  out.precision(8);
  for (const EpochRecord& r : rows)
    out << r.epoch << ',' << r.lr << ',' << r.train.loss << ',' << r.train.accuracy << ',' << r.test.loss << ','
        << r.test.accuracy << ',' << r.train.seconds << ',' << r.train.images_per_second << '\n';
  if (!out) throw io_error("lamina::write_csv: write failed for " + path);
}

}  // namespace lamina::train
