#pragma once
// Training-loop helpers: one epoch of minibatch training, evaluation, and a
// history that is written as CSV. A non-finite loss or gradient stops training
// with a non_finite_error before any optimizer step applies it (or, on request,
// skips the batch); a parameter made non-finite by a step stops it after.
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/data/dataset.hpp"
#include "lamina/dist/data_parallel.hpp"
#include "lamina/modules/softmax_cross_entropy.hpp"
#include "lamina/train/progress.hpp"

namespace lamina::train {

/// What train_epoch does with a batch whose loss or gradients are not finite.
enum class OnNonFinite {
  stop,  ///< throw non_finite_error before the update (the default)
  skip,  ///< drop the batch: no update, buffers (BatchNorm statistics) restored; counted in EpochStats
};
struct TrainOptions {
  OnNonFinite on_non_finite = OnNonFinite::stop;
  index_t epoch = 0;  ///< named in errors when > 0 (1-based); the label names it otherwise
};

struct EpochStats {
  double loss = 0, accuracy = 0;
  double seconds = 0, images_per_second = 0;
  index_t images = 0;
  index_t skipped = 0;         ///< batches dropped by OnNonFinite::skip (not in loss, accuracy, images)
  std::string first_skipped;   ///< why the first of them was dropped
};

namespace detail {
using lamina::detail::text;

/// "nan", "inf", "-inf" (the sign of a NaN means nothing) or the number.
inline std::string describe(double v) {
  if (std::isnan(v)) return "nan";
  return lamina::detail::concat(v);
}
/// Index of the first non-finite element of v, or -1.
template <class T>
index_t first_non_finite(const View<T>& v) noexcept {
  const T* p = v.data();
  for (index_t i = 0, n = v.size(); i < n; ++i)
    if (!std::isfinite(p[i])) return i;
  return -1;
}
/// "<what> <name> is <value> at index <i>" for the first non-finite tensor
/// (values, or gradients when `grads`) of `ps`; empty when all are finite.
template <class T>
std::string non_finite_report(const std::vector<ParamRef<T>>& ps, bool grads, const char* what) {
  for (const ParamRef<T>& p : ps) {
    const View<T>& v = grads ? p.grad : p.value;
    const index_t i = first_non_finite(v);
    if (i >= 0) return lamina::detail::concat(what, " ", p.name, " is ", describe(double(v.data()[i])), " at index ", i);
  }
  return {};
}
template <class M>
std::vector<ParamRef<typename M::value_type>> all_tensors(M& model) {
  std::vector<ParamRef<typename M::value_type>> ps;
  visit_parameters(model, [&](const ParamRef<typename M::value_type>& p) { ps.push_back(p); });
  return ps;
}

struct StepResult {
  dist::StepTotals totals;  ///< the whole batch's samples, mean loss and correct predictions (all ranks)
  std::string problem;      ///< the first non-finite loss, gradient or parameter; empty if none
  bool updated = false;     ///< the optimizer step ran (a problem after it cannot be skipped)
};

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

/// forward, loss, backward, (with `sync`: the one all-reduce of the
/// gradients), update, with the checks between them. With `sync` every rank
/// runs the all-reduce even when its own loss is not finite, so all ranks see
/// the same totals and gradients and stop (or skip) together; an empty shard
/// contributes weight 0.
template <Module M, class Opt>
StepResult checked_step(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                        ConstView<typename M::value_type> x, const std::vector<std::int32_t>& labels, double lr,
                        Tensor<typename M::value_type>& y, Tensor<typename M::value_type>& dy,
                        dist::GradientAllReduce<typename M::value_type>* sync) {
  StepResult r;
  const index_t n = x.rank() > 0 ? x.dim(0) : 0;
  double l = 0, correct = 0;
  if (n > 0 || !sync) {
    l = double(forward_loss(model, loss, x, labels, y));
    correct = double(loss.correct());
    if (!sync && !std::isfinite(l)) {
      r.totals = {double(n), l, correct};
      r.problem = "loss is " + describe(l);
      return r;
    }
    backward_loss(model, loss, opt, y, dy);
  } else {
    opt.zero_grad();
  }
  r.totals = sync ? (*sync)(double(n), l, correct) : dist::StepTotals{double(n), l, correct};
  if (!std::isfinite(r.totals.loss)) {
    r.problem = "loss is " + describe(r.totals.loss);
    return r;
  }
  r.problem = non_finite_report(opt.parameters(), true, "gradient of");
  if (!r.problem.empty()) return r;
  if (lr > 0) opt.set_lr(lr);
  opt.step();
  r.updated = true;
  r.problem = non_finite_report(all_tensors(model), false, "parameter");
  return r;
}
inline std::string step_failure(const StepResult& r) {
  return r.problem + (r.updated ? "; after the update (lower the learning rate?)"
                                : "; training stopped before the update (lower the learning rate?)");
}

/// Buffers (trainable == false: BatchNorm running statistics) to restore after a skipped batch.
template <class T>
std::vector<std::vector<T>> save_buffers(const std::vector<ParamRef<T>>& ps) {
  std::vector<std::vector<T>> b;
  for (const ParamRef<T>& p : ps)
    if (!p.trainable) b.emplace_back(p.value.data(), p.value.data() + p.value.size());
  return b;
}
template <class T>
void restore_buffers(const std::vector<ParamRef<T>>& ps, const std::vector<std::vector<T>>& b) {
  std::size_t k = 0;
  for (const ParamRef<T>& p : ps)
    if (!p.trainable) {
      std::copy(b[k].begin(), b[k].end(), p.value.data());
      ++k;
    }
}
}  // namespace detail

/// One training step on the batch (`x`, `labels`): forward, loss, backward,
/// `lr` (when > 0) and the optimizer update. Returns the batch loss; the
/// number of correct predictions is `loss.correct()` afterwards. `y`, `dy` and
/// `dx` are reusable buffers. A non-finite loss or gradient throws
/// non_finite_error before the update; a parameter made non-finite by the
/// update throws after it (the model is then unusable: reload a checkpoint).
template <Module M, class Opt>
typename M::value_type train_step(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                                  ConstView<typename M::value_type> x, const std::vector<std::int32_t>& labels,
                                  double lr, Tensor<typename M::value_type>& y, Tensor<typename M::value_type>& dy,
                                  Tensor<typename M::value_type>& dx) {
  (void)dx;  // kept in the signature; the input gradient is not needed
  const auto r = detail::checked_step(model, loss, opt, x, labels, lr, y, dy, nullptr);
  if (!r.problem.empty()) throw non_finite_error("lamina::train_step: " + detail::step_failure(r));
  return typename M::value_type(r.totals.loss);
}

/// The data-parallel step (dist/data_parallel.hpp): this rank's shard (`x`,
/// `labels`, possibly empty), then ONE all-reduce of the gradients weighted by
/// the shard sizes, so every rank applies the update of the whole batch. Every
/// rank must call it for every batch. Returns the totals of the whole batch
/// (mean loss, correct predictions, samples); a non-finite loss or gradient on
/// any rank throws on every rank before the update.
template <Module M, class Opt>
dist::StepTotals train_step(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                            ConstView<typename M::value_type> x, const std::vector<std::int32_t>& labels, double lr,
                            Tensor<typename M::value_type>& y, Tensor<typename M::value_type>& dy,
                            dist::GradientAllReduce<typename M::value_type>& sync) {
  const auto r = detail::checked_step(model, loss, opt, x, labels, lr, y, dy, &sync);
  if (!r.problem.empty()) throw non_finite_error("lamina::train_step: " + detail::step_failure(r));
  return r.totals;
}

/// Trains `model` for one epoch. `lr_at(step_in_epoch)` (optional) sets the
/// learning rate before each step, for per-step schedules. `label` names the
/// epoch in progress output and errors ("epoch 3/10").
///
/// Non-finite values: the loss, then every gradient, then (after the update)
/// every parameter and buffer are checked at each step. The first non-finite
/// one throws non_finite_error naming the label, the epoch (o.epoch), the step
/// and the tensor ("gradient of layer1.0.conv1.weight is nan at index 17").
/// A loss or gradient problem is found before the update: the parameters,
/// and the buffers (BatchNorm statistics, restored), are those of the last
/// good step; with OnNonFinite::skip such a batch is dropped instead and
/// counted in EpochStats::skipped. A parameter made non-finite by an update always throws.
/// The trainer writes no file: a caller that checkpoints after each epoch
/// keeps its last good checkpoint.
///
/// With `sync` (data-parallel training, dist/data_parallel.hpp: a loader
/// sharded over the communicator, the same call on every rank) each step
/// averages the gradients over the ranks in one all-reduce, the statistics are
/// those of the whole batches, all ranks stop or skip together, and only rank
/// 0 draws the progress.
template <Module M, class Opt>
EpochStats train_epoch(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                       data::Loader<typename M::value_type>& loader, Progress& progress, const std::string& label,
                       const std::function<double(index_t)>& lr_at = {}, const TrainOptions& o = {},
                       dist::GradientAllReduce<typename M::value_type>* sync = nullptr) {
  using T = typename M::value_type;
  if (sync)
    require(loader.shard().size == sync->communicator().size(), "train_epoch", "loader shard size",
            sync->communicator().size(), loader.shard().size);
  const bool draw = !sync || sync->communicator().is_root();
  set_training(model, true);
  loader.start_epoch();
  Tensor<T> x, y, dy;
  std::vector<std::int32_t> labels;
  EpochStats st;
  double loss_sum = 0;
  index_t correct = 0;
  const index_t nb = loader.batches();
  const bool skip = o.on_non_finite == OnNonFinite::skip;
  const auto tensors = detail::all_tensors(model);
  if (draw) progress.start(label, nb);
  const auto t0 = std::chrono::steady_clock::now();
  for (index_t b = 0; b < nb; ++b) {
    loader.batch(b, x, labels);
    const auto buffers = detail::save_buffers(tensors);  // BatchNorm statistics: a few values per channel
    const auto r = detail::checked_step(model, loss, opt, x.cview(), labels, lr_at ? lr_at(b) : 0.0, y, dy, sync);
    if (!r.problem.empty()) {
      const std::string where = lamina::detail::concat("lamina::train_epoch: ", label, ": ",
                                                       o.epoch > 0 ? lamina::detail::concat("epoch ", o.epoch, ", ") : "",
                                                       "step ", b + 1, " of ", nb, ": ", r.problem);
      if (!r.updated) detail::restore_buffers(tensors, buffers);  // as after the last good step
      if (!skip || r.updated) {
        if (draw) progress.finish();
        throw non_finite_error(where + (r.updated ? "; after the update (lower the learning rate?)"
                                                  : "; training stopped before the update"));
      }
      if (st.skipped++ == 0) st.first_skipped = where;
      continue;
    }
    loss_sum += r.totals.loss * r.totals.weight;
    correct += index_t(r.totals.correct);
    st.images += index_t(r.totals.weight);
    if (draw)
      progress.update(b + 1, loss_sum / double(std::max<index_t>(st.images, 1)),
                      double(correct) / double(std::max<index_t>(st.images, 1)), st.images);
  }
  if (draw) progress.finish();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.loss = st.images > 0 ? loss_sum / double(st.images) : std::numeric_limits<double>::quiet_NaN();
  st.accuracy = st.images > 0 ? double(correct) / double(st.images) : 0.0;
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
