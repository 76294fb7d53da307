#pragma once
// Data-parallel training over a dist::Communicator (issue 16), the pattern of
// PyTorch DDP and Flashlight: every rank holds the whole model, trains on its
// shard of each batch (data::Shard), and after backward the gradients are
// averaged over the ranks, so that every rank applies the same update.
//
// - broadcast_parameters(model, comm): parameters and buffers from rank 0, once
//   before training (the same initial weights everywhere).
// - GradientAllReduce: ONE all-reduce per step over a contiguous arena that
//   holds every gradient (packed, reduced, unpacked; the arena is allocated
//   once), plus three scalars: the rank's weight (its number of samples), its
//   weighted loss and its correct count. Gradients become the weighted mean,
//   i.e. exactly the gradient of the mean loss over the whole batch, even when
//   the shards differ in size. allreduce_gradients(model, comm) is the one-off
//   form.
// - BatchNorm: each rank normalises with its shard's statistics (DDP's default,
//   no SyncBN), so running statistics drift apart between ranks;
//   broadcast_buffers() copies rank 0's before evaluation and checkpoints, as
//   DDP broadcasts buffers. dist::save_checkpoint() does both and writes from
//   rank 0 only.
#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <vector>

#include "lamina/core/error.hpp"
#include "lamina/core/module.hpp"
#include "lamina/dist/communicator.hpp"
#include "lamina/io/checkpoint.hpp"

namespace lamina::dist {

namespace detail {
template <class T, HasParameters M, class Keep>
std::vector<ParamRef<T>> collect(M& model, Keep keep) {
  std::vector<ParamRef<T>> ps;
  visit_parameters(model, [&](const ParamRef<T>& p) {
    if (keep(p)) ps.push_back(p);
  });
  return ps;
}
template <class T>
index_t total_size(const std::vector<ParamRef<T>>& ps) {
  index_t n = 0;
  for (const ParamRef<T>& p : ps) n += p.value.size();
  return n;
}
/// Every rank must exchange the same number of tensors and scalars, or the
/// collectives would mismatch (a hang or garbage): checked with one all-reduce
/// of (t, n, t², n²): sums equal size·(t, n, t², n²) only when all agree.
inline void require_same_everywhere(Communicator& comm, index_t tensors, index_t scalars, const char* what) {
  const double t = double(tensors), n = double(scalars), k = double(comm.size());
  double v[4] = {t, n, t * t, n * n};
  comm.allreduce_sum(std::span<double>(v, 4));
  const bool same = v[0] == k * t && v[1] == k * n && v[2] == k * t * t && v[3] == k * n * n;
  require(same, "dist", what, "the same model (tensor and scalar counts) on every rank",
          lamina::detail::text("rank ", comm.rank(), ": ", tensors, " tensors, ", scalars,
                               " scalars; mean over ranks ", v[0] / k, " tensors, ", v[1] / k, " scalars"));
}
/// Broadcasts the values of `ps` from `root` through one packed buffer.
template <class T>
void broadcast_values(const std::vector<ParamRef<T>>& ps, Communicator& comm, int root, const char* what) {
  const index_t n = total_size(ps);
  require_same_everywhere(comm, index_t(ps.size()), n, what);
  std::vector<T> buf(static_cast<std::size_t>(n));
  T* q = buf.data();
  for (const ParamRef<T>& p : ps) q = std::copy(p.value.data(), p.value.data() + p.value.size(), q);
  comm.broadcast(std::span<T>(buf), root);
  const T* r = buf.data();
  for (const ParamRef<T>& p : ps) {
    std::copy(r, r + p.value.size(), p.value.data());
    r += p.value.size();
  }
}
}  // namespace detail

/// Parameters and buffers (BatchNorm running statistics) of every rank become
/// those of `root`.
template <HasParameters M>
void broadcast_parameters(M& model, Communicator& comm, int root = 0) {
  using T = typename M::value_type;
  detail::broadcast_values(detail::collect<T>(model, [](const ParamRef<T>&) { return true; }), comm, root,
                           "broadcast_parameters");
}
/// Buffers only (trainable == false: BatchNorm running statistics) from `root`.
template <HasParameters M>
void broadcast_buffers(M& model, Communicator& comm, int root = 0) {
  using T = typename M::value_type;
  detail::broadcast_values(detail::collect<T>(model, [](const ParamRef<T>& p) { return !p.trainable; }), comm, root,
                           "broadcast_buffers");
}

/// What a step's all-reduce summed over the ranks besides the gradients.
struct StepTotals {
  double weight = 0;   ///< sum of the ranks' weights (samples in the global batch)
  double loss = 0;     ///< weighted mean of the ranks' losses (the global batch's mean loss)
  double correct = 0;  ///< sum of the ranks' correct predictions
};

/// The gradient arena of one model: one all-reduce per step, no allocation
/// after construction. The model's parameters must not be reallocated while
/// it lives (as for an optimizer).
template <class T>
class GradientAllReduce {
 public:
  template <HasParameters M>
  GradientAllReduce(M& model, Communicator& comm)
      : comm_(&comm), params_(detail::collect<T>(model, [](const ParamRef<T>& p) { return p.trainable; })) {
    n_ = detail::total_size(params_);
    detail::require_same_everywhere(comm, index_t(params_.size()), n_, "GradientAllReduce");
    arena_.resize(static_cast<std::size_t>(n_ + extras));
  }

  /// Sums weight·grad, weight·loss, correct and weight over the ranks in one
  /// all-reduce, then sets every gradient to the weighted mean. A rank with an
  /// empty shard passes weight 0 (its gradients are then ignored).
  StepTotals operator()(double weight = 1, double loss = 0, double correct = 0) {
    require(weight >= 0, "dist::GradientAllReduce", "weight", ">= 0", weight);
    pack(T(weight));
    T* e = arena_.data() + n_;
    e[0] = T(weight), e[1] = T(weight * loss), e[2] = T(correct);
    comm_->allreduce_sum(std::span<T>(arena_));
    const double total = double(e[0]);
    require(total > 0, "dist::GradientAllReduce", "sum of the ranks' weights", "> 0", total);
    unpack(T(1.0 / total));
    return {total, double(e[1]) / total, double(e[2])};
  }

  index_t elements() const noexcept { return n_; }  ///< gradient scalars (the arena holds 3 more)
  std::size_t bytes() const noexcept { return arena_.size() * sizeof(T); }
  Communicator& communicator() const noexcept { return *comm_; }

 private:
  static constexpr index_t extras = 3;
  void pack(T w) {
    T* q = arena_.data();
    for (const ParamRef<T>& p : params_) {
      const T* g = p.grad.data();
      for (index_t i = 0; i < p.grad.size(); ++i) q[i] = w * g[i];
      q += p.grad.size();
    }
  }
  void unpack(T inv) {
    const T* q = arena_.data();
    for (const ParamRef<T>& p : params_) {
      T* g = p.grad.data();
      for (index_t i = 0; i < p.grad.size(); ++i) g[i] = inv * q[i];
      q += p.grad.size();
    }
  }
  Communicator* comm_;
  std::vector<ParamRef<T>> params_;
  index_t n_ = 0;
  std::vector<T> arena_;
};

/// Averages the gradients of `model` over the ranks (weighted by `weight`,
/// e.g. the rank's samples). Builds the arena for this call: in a training
/// loop keep a GradientAllReduce instead.
template <HasParameters M>
StepTotals allreduce_gradients(M& model, Communicator& comm, double weight = 1) {
  return GradientAllReduce<typename M::value_type>(model, comm)(weight);
}

/// Writes a checkpoint of `model` from `root` only, with root's BatchNorm
/// buffers copied to every rank first; returns when the file is complete.
template <Module M>
void save_checkpoint(M& model, const std::filesystem::path& path, Communicator& comm, int root = 0) {
  broadcast_buffers(model, comm, root);
  if (comm.rank() == root) io::save_checkpoint(model, path);
  comm.barrier();
}

}  // namespace lamina::dist
