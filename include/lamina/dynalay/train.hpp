#pragma once
// DynaLay training (spec/fpi_dynalay.md §4 Training, Reward): one step of each
// phase of the three-phase schedule, computing gradients (the caller clears
// them before and applies its optimiser after):
//   warmup  the task loss (mean cross-entropy of the head at the end of the
//           path) on the static path (all K layers in order) or, for a share of
//           the samples, a random path; into stem, FPI layers and head;
//   agent   sampled paths, reward R = 1[correct] − λ_c·C/C_max − λ_r·repeats,
//           REINFORCE with advantage R − b (moving-average baseline, updated
//           after the step) and an entropy bonus; into the agent alone;
//   joint   both: the task loss on the sampled paths and the policy gradient.
// With TrainOptions::gumbel the agent and joint phases draw paths by Gumbel-max
// and train the agent with the straight-through gradient of the task loss plus
// λ_c·C/C_max + λ_r·repeats (model.hpp backward_gumbel) instead of REINFORCE;
// the rewards and the baseline are still computed and reported.
// Checkpoints (io/checkpoint.hpp format) hold the model, the agent and the
// baseline's state.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "lamina/dynalay/model.hpp"
#include "lamina/io/checkpoint.hpp"
#include "lamina/modules/softmax_cross_entropy.hpp"

namespace lamina::dynalay {

/// R of one episode.
inline double reward(bool correct, double iterations, double c_max, index_t repeats, const TrainOptions& o) {
  return (correct ? 1.0 : 0.0) - o.lambda_c * iterations / c_max - o.lambda_r * double(repeats);
}

struct StepStats {
  Phase phase = Phase::warmup;
  double loss = 0;             ///< mean cross-entropy
  double accuracy = 0;
  double reward = 0;           ///< mean R (agent and joint phases)
  double baseline = 0;         ///< b used for the advantages
  double mean_iterations = 0;  ///< FPI iterations per sample
  double mean_flops = 0;       ///< model FLOPs per sample
  index_t not_converged = 0;   ///< samples with a solve that missed its tolerance
};

template <class T>
class Trainer {
 public:
  Trainer(DynaLay<T>& model, TrainOptions o = {}) : m_(model), baseline_(checked(o).baseline_momentum), o_(o) {}

  const TrainOptions& options() const noexcept { return o_; }
  MovingBaseline<T>& baseline() noexcept { return baseline_; }
  double c_max() const noexcept {
    return o_.c_max > 0 ? o_.c_max : double(m_.config().K * m_.config().fpi.forward.max_iter);
  }
  /// Sets C_max to the mean FPI iterations of the full static path on x (the
  /// spec's definition, measured): call it after the warm-up.
  double calibrate_c_max(ConstView<T> x) {
    const index_t N = x.rank() == 2 ? x.dim(0) : 0;
    const std::vector<index_t> all = [&] {
      std::vector<index_t> p;
      for (index_t k = 0; k < m_.config().K; ++k) p.push_back(k);
      return p;
    }();
    const std::vector<std::vector<index_t>> paths(static_cast<std::size_t>(N), all);
    m_.forward(x, e_, Control::forced, false, nullptr, paths);
    double c = 0;
    for (const SampleTrace& t : e_.samples) c += double(t.iterations);
    c /= double(e_.samples.size());
    require(c > 0, "DynaLay Trainer", "static-path iterations", "> 0", c);
    o_.c_max = c;
    return c;
  }
  typename DynaLay<T>::Episode& episode() noexcept { return e_; }

  /// The static path (all K layers in order) or, with probability
  /// random_path_share, a random one (length uniform in 1..S, layers uniform).
  std::vector<std::vector<index_t>> warmup_paths(index_t N, Rng& rng) const {
    const index_t K = m_.config().K, S = m_.config().S;
    std::vector<std::vector<index_t>> p(static_cast<std::size_t>(N));
    for (auto& q : p) {
      if (rng.uniform() < o_.random_path_share) {
        const index_t len = 1 + std::min(S - 1, index_t(rng.uniform() * double(S)));
        for (index_t j = 0; j < len; ++j) q.push_back(std::min(K - 1, index_t(rng.uniform() * double(K))));
      } else {
        for (index_t k = 0; k < K; ++k) q.push_back(k);
      }
    }
    return p;
  }

  /// One step of `phase` on the batch x [N, in] with labels.
  StepStats step(ConstView<T> x, std::span<const std::int32_t> labels, Phase phase, Rng& rng) {
    require(phase != Phase::done, "DynaLay Trainer", "phase", "warmup, agent or joint", name(phase));
    const index_t N = x.rank() == 2 ? x.dim(0) : 0;
    if (phase != Phase::agent) m_.refresh_spectral();
    if (phase == Phase::warmup) {
      const auto paths = warmup_paths(N, rng);
      m_.forward(x, e_, Control::forced, true, nullptr, paths);
    } else {
      m_.forward(x, e_, o_.gumbel ? Control::gumbel : Control::sample, true, &rng);
    }
    StepStats st{.phase = phase};
    st.loss = double(ce_.forward(e_.logits.cview(), labels));
    st.accuracy = double(ce_.correct()) / double(N);
    mark_correct(labels);
    summarise(st);
    if (phase == Phase::warmup) {
      task_backward(true);
      return st;
    }
    if (o_.gumbel) task_backward(phase == Phase::joint);  // the gates; the model only when joint
    if (!o_.gumbel && phase == Phase::joint) task_backward(true);
    policy_backward(st);
    return st;
  }

 private:
  static const TrainOptions& checked(const TrainOptions& o) {
    validate(o);
    return o;
  }
  /// correct_[i]: the arg-max of sample i's logits (lowest index on ties) is its label.
  void mark_correct(std::span<const std::int32_t> labels) {
    const index_t N = e_.logits.dim(0), C = e_.logits.dim(1);
    correct_.assign(std::size_t(N), false);
    for (index_t i = 0; i < N; ++i) {
      const T* l = e_.logits.data() + i * C;
      correct_[std::size_t(i)] = index_t(std::max_element(l, l + C) - l) == index_t(labels[std::size_t(i)]);
    }
  }
  void summarise(StepStats& st) const {
    for (const SampleTrace& t : e_.samples) {
      st.mean_iterations += double(t.iterations);
      st.mean_flops += double(t.flops.model());
      st.not_converged += t.converged ? 0 : 1;
    }
    st.mean_iterations /= double(e_.samples.size());
    st.mean_flops /= double(e_.samples.size());
  }
  void task_backward(bool params) {
    dlogits_.resize(e_.logits.shape());
    dlogits_.zero();
    ce_.backward(dlogits_.view());
    m_.backward_task(e_, dlogits_.cview(), View<T>{}, {.input = false, .params = params});
  }
  void policy_backward(StepStats& st) {
    const std::size_t N = e_.samples.size();
    const double cm = c_max();
    const double b = baseline_.initialised() ? baseline_.value() : 0.0;
    adv_.resize(N);
    double mean = 0;
    for (std::size_t i = 0; i < N; ++i) {
      const SampleTrace& t = e_.samples[i];
      const double r = reward(correct_[i], double(t.iterations), cm, t.repeats, o_);
      mean += r;
      adv_[i] = r - b;
    }
    mean /= double(N);
    if (o_.gumbel)
      m_.backward_gumbel(e_, o_.lambda_c / cm, o_.lambda_r, o_.entropy, 1.0 / double(N));
    else
      m_.backward_policy(e_, adv_, o_.entropy, 1.0 / double(N));
    baseline_.update(mean);
    st.reward = mean, st.baseline = b;
  }

  DynaLay<T>& m_;
  MovingBaseline<T> baseline_;
  TrainOptions o_;
  typename DynaLay<T>::Episode e_;
  SoftmaxCrossEntropy<T> ce_;
  Tensor<T> dlogits_;
  std::vector<double> adv_;
  std::vector<bool> correct_;
};

/// Every parameter and buffer of the model and the agent, and the baseline's state.
template <class T>
std::vector<ParamRef<T>> state_of(DynaLay<T>& m, MovingBaseline<T>& b) {
  std::vector<ParamRef<T>> s;
  m.visit([&](const ParamRef<T>& p) { s.push_back(p); }, "");
  b.visit([&](const ParamRef<T>& p) { s.push_back(p); }, "baseline.");
  return s;
}
template <class T>
void save_checkpoint(Trainer<T>& t, DynaLay<T>& m, const std::filesystem::path& path) {
  io::save_tensors(path, state_of(m, t.baseline()));
}
template <class T>
void load_checkpoint(Trainer<T>& t, DynaLay<T>& m, const std::filesystem::path& path) {
  io::load_tensors(path, state_of(m, t.baseline()));
}

}  // namespace lamina::dynalay
