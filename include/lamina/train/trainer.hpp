#pragma once
// Training-loop helpers: one epoch of minibatch training, evaluation, and a
// history that is written as CSV. A non-finite loss stops training with a
// non_finite_error before any optimizer step applies it.
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "lamina/core/module.hpp"
#include "lamina/data/dataset.hpp"
#include "lamina/modules/softmax_cross_entropy.hpp"
#include "lamina/train/progress.hpp"

namespace lamina::train {

struct EpochStats {
  double loss = 0, accuracy = 0;
  double seconds = 0, images_per_second = 0;
  index_t images = 0;
};

/// One training step on the batch (`x`, `labels`): forward, loss, backward,
/// `lr` (when > 0) and the optimizer update. Returns the batch loss; the
/// number of correct predictions is `loss.correct()` afterwards. `y`, `dy` and
/// `dx` are reusable buffers. A non-finite loss throws before the update.
template <Module M, class Opt>
typename M::value_type train_step(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                                  ConstView<typename M::value_type> x, const std::vector<std::int32_t>& labels,
                                  double lr, Tensor<typename M::value_type>& y, Tensor<typename M::value_type>& dy,
                                  Tensor<typename M::value_type>& dx) {
  const Shape ys = model.output_shape(x.shape());
  y.resize(ys);
  model.forward(x, y.view());
  const auto l = loss.forward(y.cview(), labels);
  if (!std::isfinite(double(l)))
    throw non_finite_error(detail::concat("lamina::train_step: loss is ", double(l),
                                          "; training stopped before the update (lower the learning rate?)"));
  dy.resize(ys);
  dy.zero();
  loss.backward(dy.view());
  (void)dx;  // kept in the signature; the input gradient is not needed
  opt.zero_grad();
  model.backward(dy.cview(), View<typename M::value_type>{}, {.input = false});
  if (lr > 0) opt.set_lr(lr);
  opt.step();
  return l;
}

/// Trains `model` for one epoch. `lr_at(step_in_epoch)` (optional) sets the
/// learning rate before each step, for per-step schedules.
template <Module M, class Opt>
EpochStats train_epoch(M& model, SoftmaxCrossEntropy<typename M::value_type>& loss, Opt& opt,
                       data::Loader<typename M::value_type>& loader, Progress& progress, const std::string& label,
                       const std::function<double(index_t)>& lr_at = {}) {
  using T = typename M::value_type;
  set_training(model, true);
  loader.start_epoch();
  Tensor<T> x, y, dy, dx;
  std::vector<std::int32_t> labels;
  EpochStats st;
  double loss_sum = 0;
  index_t correct = 0;
  const index_t nb = loader.batches();
  progress.start(label, nb);
  const auto t0 = std::chrono::steady_clock::now();
  for (index_t b = 0; b < nb; ++b) {
    loader.batch(b, x, labels);
    T l;
    try {
      l = train_step(model, loss, opt, x.cview(), labels, lr_at ? lr_at(b) : 0.0, y, dy, dx);
    } catch (const non_finite_error& e) {
      progress.finish();
      throw non_finite_error(detail::concat("lamina::train_epoch: ", label, ": step ", b + 1, " of ", nb, ": ", e.what()));
    }
    const index_t n = x.dim(0);
    loss_sum += double(l) * double(n);
    correct += loss.correct();
    st.images += n;
    progress.update(b + 1, loss_sum / double(st.images), double(correct) / double(st.images), st.images);
  }
  progress.finish();
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.loss = loss_sum / double(st.images);
  st.accuracy = double(correct) / double(st.images);
  st.images_per_second = double(st.images) / st.seconds;
  return st;
}

/// Mean loss and accuracy of `model` in evaluation mode (infer path).
template <Module M>
EpochStats evaluate(M& model, data::Loader<typename M::value_type>& loader) {
  using T = typename M::value_type;
  set_training(model, false);
  SoftmaxCrossEntropy<T> loss;
  Tensor<T> x, y;
  std::vector<std::int32_t> labels;
  EpochStats st;
  double loss_sum = 0;
  index_t correct = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (index_t b = 0; b < loader.batches(); ++b) {
    loader.batch(b, x, labels);
    y.resize(model.output_shape(x.shape()));
    model.infer(x.cview(), y.view());
    loss_sum += double(loss.forward(y.cview(), labels)) * double(x.dim(0));
    correct += loss.correct();
    st.images += x.dim(0);
  }
  set_training(model, true);
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  st.loss = loss_sum / double(st.images);
  st.accuracy = double(correct) / double(st.images);
  st.images_per_second = double(st.images) / st.seconds;
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
