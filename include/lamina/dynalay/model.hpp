#pragma once
// The DynaLay model (spec/fpi_dynalay.md §4): a stem z_0 = tanh(x W_s + b_s),
// K FPI layers of one width (fpi/layer.hpp, default cell tanh(z Ŵ + u)), a head
// logits = z W_h + b_h, and the agent (dynalay/policy.hpp). At step s = 0..S−1
// every sample still running reads the introspection features
//   φ_s = [z_s (the mean-pooled state: a dense state is its own pooling),
//          H(softmax(head(z_s))), max softmax(head(z_s)),
//          iterations / max_iter and min(residual, 1) of its last FPI solve
//          (0 at s = 0), one-hot s (S entries)]
// and chooses one of K + 1 actions: FPI layer k (z_{s+1} = FPI_k(z_s)) or answer
// (the head's prediction at z_s); at s = S it must answer. Paths are per sample:
// the samples that chose layer k at step s are gathered (core/rows.hpp), solved
// together and scattered back, so a batch gives each sample what it would get
// alone (the solvers stop per sample).
//
// An Episode is caller-owned, like a Module Cache: forward fills it, the two
// backward passes only read it:
//   backward_task(e, dlogits, dx)    the task loss through the chosen paths into
//                                    stem, FPI layers, head (and x);
//   backward_policy(e, A, β, scale)  the REINFORCE surrogate into the agent.
// The agent's features are read as constants (no gradient from the policy into
// the model). Control::forced runs given paths (the warm-up's static and random
// paths) without evaluating the agent. Control::gumbel (the option of §4
// Training) draws by Gumbel-max and, after backward_task, backward_gumbel sends
// the straight-through gradient of the task loss and the penalties to the agent.
//
// FLOPs per sample (exact for this definition): an affine map [in → out] costs
// 2·in·out + out, a tanh 1 per value, an FPI iteration one application of the
// cell (2·D² + D + D: matmul, + u, tanh), each FPI application its injection
// once; the agent's cost per decision is the head's affine map plus the policy
// MLP (softmax, entropy and the solver's own mixing arithmetic are not counted;
// the extra cell application at z* that a training forward makes for the
// backward is not counted either, so training and inference report the same).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lamina/core/rows.hpp"
#include "lamina/dynalay/options.hpp"
#include "lamina/dynalay/policy.hpp"
#include "lamina/fpi/layer.hpp"

namespace lamina::dynalay {

/// FLOPs one sample's path cost.
struct Flops {
  index_t stem = 0, inject = 0, fpi = 0, head = 0, agent = 0;
  index_t model() const noexcept { return stem + inject + fpi + head; }
  index_t total() const noexcept { return model() + agent; }
};

/// What one sample did in an episode.
struct SampleTrace {
  std::vector<index_t> path;  ///< the FPI layers applied, in order (the answer follows)
  index_t iterations = 0;     ///< FPI iterations spent (C in the reward)
  index_t repeats = 0;        ///< times a layer followed itself
  bool converged = true;      ///< every solve on the path reached its tolerance
  Flops flops;
};

/// sample: draw from π; greedy: argmax π; forced: given paths; gumbel: draw by
/// Gumbel-max and keep the relaxation for the straight-through gradient.
enum class Control { sample, greedy, forced, gumbel };

inline index_t affine_flops(index_t in, index_t out) noexcept { return 2 * in * out + out; }

template <class T>
class DynaLay {
 public:
  using value_type = T;
  using Layer = FpiLayer<fpi::TanhCell<T>>;

  /// The samples that applied one layer at one step.
  struct Group {
    index_t layer = 0;
    std::vector<index_t> rows;  ///< sample ids, ascending
    std::vector<index_t> iterations;  ///< per row: FPI iterations of this solve
    Tensor<T> x, y;
    typename Layer::Cache cache;
  };
  /// The decisions of one step.
  struct Step {
    std::vector<index_t> rows;  ///< samples still running at this step, ascending
    std::vector<index_t> actions;
    bool evaluated = false;     ///< the agent chose (not forced, s < S)
    Tensor<T> features, logits, probs, soft;  ///< soft: Control::gumbel's relaxation y
    std::vector<index_t> iterations;         ///< per row: FPI iterations spent at this step
    typename Policy<T>::Cache policy;
    std::vector<Group> groups;
  };
  struct Episode {
    typename Linear<T>::Cache stem_lin, head;
    typename Tanh<T>::Cache stem_act;
    Tensor<T> stem_a, zf, logits;
    std::vector<Tensor<T>> z;  ///< z[s], [N, D], s = 0..S (rows of finished samples unused)
    std::vector<Step> steps;   ///< s = 0..S
    std::vector<index_t> answer_step;
    std::vector<SampleTrace> samples;
    Control control = Control::greedy;
    bool train = false, done = false;
  };

  DynaLay(const Config& c, Rng& rng)
      : c_(checked(c)),
        stem_(c.in, c.width, rng),
        head_(c.width, c.classes, rng),
        agent_(feature_size(), c.hidden, c.K + 1, rng) {
    layers_.reserve(std::size_t(c.K));
    for (index_t k = 0; k < c.K; ++k) layers_.push_back(make_tanh_fpi<T>(c.width, c.width, rng, c.fpi));
  }

  const Config& config() const noexcept { return c_; }
  index_t feature_size() const noexcept { return c_.width + 4 + c_.S; }
  Layer& layer(index_t k) { return layers_.at(std::size_t(k)); }
  Linear<T>& stem() noexcept { return stem_; }
  Linear<T>& head() noexcept { return head_; }
  Policy<T>& agent() noexcept { return agent_; }
  index_t answer() const noexcept { return c_.K; }

  /// FLOPs of one FPI iteration (one cell application) and of one injection.
  index_t cell_flops() const noexcept { return 2 * c_.width * c_.width + 2 * c_.width; }
  index_t inject_flops() const noexcept { return affine_flops(c_.width, c_.width); }

  /// One power-iteration update of every layer's spectral estimate (once per
  /// training step); the episode's applications then hold Ŵ fixed.
  void refresh_spectral() {
    for (auto& l : layers_) {
      fpi::begin_step(l.cell(), true);
      fpi::end_step(l.cell());
    }
  }
  void set_training(bool on) {
    for (auto& l : layers_) l.set_training(on);
  }

  /// Runs one episode per row of x [N, in]. train: keep what the backward
  /// passes need. rng: for Control::sample. paths: for Control::forced, per
  /// sample the layers to apply (at most S, each in [0, K)), then the answer.
  void forward(ConstView<T> x, Episode& e, Control ctl, bool train, Rng* rng = nullptr,
               std::span<const std::vector<index_t>> paths = {}) {
    e.done = false;
    check_input(x, ctl, rng, paths);
    const index_t N = x.dim(0), D = c_.width;
    e.train = train;
    e.control = ctl;
    e.z.resize(std::size_t(c_.S + 1));
    for (auto& z : e.z) z.resize(Shape{N, D});
    e.steps.resize(std::size_t(c_.S + 1));
    e.answer_step.assign(std::size_t(N), 0);
    e.samples.assign(std::size_t(N), SampleTrace{});
    last_iter_.assign(std::size_t(N), 0), last_res_.assign(std::size_t(N), 0);
    gated_ = nullptr;
    run_stem(x, e);
    std::vector<index_t> active(static_cast<std::size_t>(N));
    for (index_t i = 0; i < N; ++i) active[std::size_t(i)] = i;
    for (index_t s = 0; s <= c_.S; ++s) {
      Step& st = e.steps[std::size_t(s)];
      st.rows = active;
      st.groups.clear();
      st.evaluated = false;
      if (active.empty()) continue;
      choose(e, st, s, ctl, rng, paths);
      active = run_step(e, st, s);
    }
    run_head(e);
    e.done = true;
  }

  /// Greedy inference: logits [N, classes] into y, the traces in e.
  void infer(ConstView<T> x, View<T> y, Episode& e) {
    forward(x, e, Control::greedy, false);
    require_shape(y, e.logits.shape(), "DynaLay", "y");
    std::copy(e.logits.data(), e.logits.data() + e.logits.size(), y.data());
  }

  /// Adds the gradient of the task loss, given dL/dlogits [N, classes], into
  /// the stem, FPI layers and head (g.params) and dx (g.input).
  void backward_task(const Episode& e, ConstView<T> dlogits, View<T> dx, Grad g = {}) {
    require_train(e);
    require_shape(dlogits, e.logits.shape(), "DynaLay", "dlogits");
    const index_t N = e.logits.dim(0), D = c_.width;
    dzf_.resize(Shape{N, D}), dcur_.resize(Shape{N, D}), dprev_.resize(Shape{N, D});
    dzf_.zero(), dcur_.zero();
    head_.backward(e.head, dlogits, dzf_.view(), {.input = true, .params = g.params});
    const bool gumbel = e.control == Control::gumbel;
    if (gumbel) start_gates(e);
    for (index_t s = c_.S; s >= 0; --s) {
      for (index_t i = 0; i < N; ++i)
        if (e.answer_step[std::size_t(i)] == s) axpy(dcur_.data() + i * D, dzf_.data() + i * D, D);
      if (gumbel) add_gates(e, s);
      if (s == 0) break;
      dprev_.zero();
      for (const Group& gr : e.steps[std::size_t(s - 1)].groups) backward_group(gr, g.params);
      std::swap(dcur_, dprev_);
    }
    dstem_.resize(Shape{N, D});
    dstem_.zero();
    stem_act_.backward(e.stem_act, dcur_.cview(), dstem_.view());
    stem_.backward(e.stem_lin, dstem_.cview(), dx, g);
  }

  /// Adds scale · ∂/∂θ_agent of Σ_samples Σ_steps (−A_i log π(a_s) − β H(π_s))
  /// into the agent's gradients; advantage[i] per sample.
  void backward_policy(const Episode& e, std::span<const double> advantage, double beta, double scale) {
    require_train(e);
    require<shape_error>(index_t(advantage.size()) == index_t(e.samples.size()), "DynaLay", "advantage size",
                         e.samples.size(), advantage.size());
    const index_t A = c_.K + 1;
    for (const Step& st : e.steps) {
      if (!st.evaluated) continue;
      dl_.resize(st.logits.shape());
      dl_.zero();
      for (std::size_t j = 0; j < st.rows.size(); ++j)
        add_reinforce_grad(st.probs.data() + index_t(j) * A, c_.K, st.actions[j],
                           advantage[std::size_t(st.rows[j])], beta, scale, dl_.data() + index_t(j) * A);
      agent_.backward(st.policy, dl_.cview(), View<T>{}, {.input = false});
    }
  }

  /// Control::gumbel: adds into the agent's gradients the straight-through
  /// gradient of the task loss of the preceding backward_task(e, ...) plus
  /// scale · Σ_steps (c_cost · iterations_s + r_cost · [repeat_s]) · ŷ_s (the
  /// compute and repeat penalties, c_cost = λ_c / C_max, r_cost = λ_r), and the
  /// entropy bonus −β H(π) like backward_policy.
  void backward_gumbel(const Episode& e, double c_cost, double r_cost, double beta, double scale) {
    require_train(e);
    require(e.control == Control::gumbel, "DynaLay", "episode", "a Control::gumbel forward", "another control");
    require(gated_ == &e, "DynaLay", "backward_gumbel()", "a preceding backward_task() of this episode", "none");
    const index_t A = c_.K + 1;
    for (std::size_t s = 0; s < e.steps.size(); ++s) {
      const Step& st = e.steps[s];
      if (!st.evaluated) continue;
      dl_.resize(st.logits.shape());
      dl_.zero();
      for (std::size_t j = 0; j < st.rows.size(); ++j) {
        const index_t a = st.actions[j];
        const double pen = a < c_.K ? c_cost * double(st.iterations[j]) + r_cost * double(repeats_at(e, s, j)) : 0.0;
        add_gumbel_grad(st.soft.data() + index_t(j) * A, c_.K, a, gate_[s][j] + scale * pen, c_.gumbel_tau,
                        dl_.data() + index_t(j) * A);
        add_reinforce_grad(st.probs.data() + index_t(j) * A, c_.K, a, 0.0, beta, scale, dl_.data() + index_t(j) * A);
      }
      agent_.backward(st.policy, dl_.cview(), View<T>{}, {.input = false});
    }
  }
  /// ∂L/∂ŷ per step and row from the last backward_task of a Control::gumbel episode.
  const std::vector<std::vector<double>>& gate_gradients() const noexcept { return gate_; }

  /// Stem, FPI layers, head.
  template <class F>
  void visit_model(F&& f, const std::string& prefix) {
    stem_.visit(f, prefix + "stem.");
    for (std::size_t k = 0; k < layers_.size(); ++k) layers_[k].visit(f, prefix + "layer" + std::to_string(k) + ".");
    head_.visit(f, prefix + "head.");
  }
  template <class F>
  void visit_agent(F&& f, const std::string& prefix) {
    agent_.visit(f, prefix + "agent.");
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) {
    visit_model(f, prefix);
    visit_agent(f, prefix);
  }

 private:
  static const Config& checked(const Config& c) {
    validate(c);
    return c;
  }
  void check_input(ConstView<T> x, Control ctl, Rng* rng, std::span<const std::vector<index_t>> paths) const {
    require_contiguous(x, "DynaLay", "x");
    require<shape_error>(x.rank() == 2 && x.dim(0) > 0 && x.dim(1) == c_.in, "DynaLay", "x shape",
                         detail::text("[N, ", c_.in, "], N > 0"), x.shape());
    if (ctl == Control::sample || ctl == Control::gumbel)
      require(rng != nullptr, "DynaLay", "rng", "a generator for Control::sample and Control::gumbel", "null");
    if (ctl != Control::forced) return;
    require<shape_error>(index_t(paths.size()) == x.dim(0), "DynaLay", "paths size", x.dim(0), paths.size());
    for (std::size_t i = 0; i < paths.size(); ++i) {
      require(index_t(paths[i].size()) <= c_.S, "DynaLay", detail::text("paths[", i, "] length"),
              detail::text("<= S = ", c_.S), paths[i].size());
      for (std::size_t j = 0; j < paths[i].size(); ++j)
        require(paths[i][j] >= 0 && paths[i][j] < c_.K, "DynaLay", detail::text("paths[", i, "][", j, "]"),
                detail::text("a layer in [0, ", c_.K, ")"), paths[i][j]);
    }
  }
  void require_train(const Episode& e) const {
    require_forward(e.done, "DynaLay");
    require(e.train, "DynaLay", "episode", "a training forward (train = true)", "an inference forward");
  }

  void run_stem(ConstView<T> x, Episode& e) {
    const index_t N = x.dim(0);
    e.stem_a.resize(Shape{N, c_.width});
    if (e.train) {
      stem_.forward(x, e.stem_a.view(), e.stem_lin);
      stem_act_.forward(e.stem_a.cview(), e.z[0].view(), e.stem_act);
    } else {
      stem_.infer(x, e.stem_a.view());
      stem_act_.infer(e.stem_a.cview(), e.z[0].view());
    }
    for (auto& t : e.samples) t.flops.stem = affine_flops(c_.in, c_.width) + c_.width;
  }

  /// Fills st.actions (one per running sample).
  void choose(Episode& e, Step& st, index_t s, Control ctl, Rng* rng, std::span<const std::vector<index_t>> paths) {
    const std::size_t n = st.rows.size();
    st.actions.assign(n, c_.K);
    st.iterations.assign(n, 0);
    if (s == c_.S) return;  // the mask leaves only "answer"
    if (ctl == Control::forced) {
      for (std::size_t j = 0; j < n; ++j) {
        const auto& p = paths[std::size_t(st.rows[j])];
        st.actions[j] = index_t(p.size()) > s ? p[std::size_t(s)] : c_.K;
      }
      return;
    }
    features(e, st, s);
    const index_t A = c_.K + 1;
    st.logits.resize(Shape{index_t(n), A}), st.probs.resize(Shape{index_t(n), A});
    if (e.train)
      agent_.forward(st.features.cview(), st.logits.view(), st.policy);
    else
      agent_.infer(st.features.cview(), st.logits.view());
    st.evaluated = e.train;
    if (ctl == Control::gumbel) st.soft.resize(Shape{index_t(n), A});
    for (std::size_t j = 0; j < n; ++j) {
      T* p = st.probs.data() + index_t(j) * A;
      const T* l = st.logits.data() + index_t(j) * A;
      masked_softmax(l, s, c_.S, c_.K, p);
      if (ctl == Control::gumbel)
        st.actions[j] = gumbel_action(l, s, c_.S, c_.K, c_.gumbel_tau, *rng, st.soft.data() + index_t(j) * A);
      else
        st.actions[j] = ctl == Control::sample ? sample_action(p, c_.K, *rng) : greedy_action(p, c_.K);
      e.samples[std::size_t(st.rows[j])].flops.agent += affine_flops(c_.width, c_.classes) + agent_.flops_per_row();
    }
  }

  /// φ_s of the running samples (header), read as constants.
  void features(Episode& e, Step& st, index_t s) {
    const index_t n = index_t(st.rows.size()), D = c_.width, C = c_.classes, F = feature_size();
    zs_.resize(Shape{n, D}), hl_.resize(Shape{n, C});
    gather_rows(e.z[std::size_t(s)].cview(), st.rows, zs_.view());
    head_.infer(zs_.cview(), hl_.view());
    st.features.resize(Shape{n, F});
    st.features.zero();
    const double max_iter = double(c_.fpi.forward.max_iter);
    for (index_t j = 0; j < n; ++j) {
      T* f = st.features.data() + j * F;
      std::copy(zs_.data() + j * D, zs_.data() + (j + 1) * D, f);
      const T* l = hl_.data() + j * C;
      const T m = *std::max_element(l, l + C);
      double z = 0, h = 0;
      for (index_t k = 0; k < C; ++k) z += std::exp(double(l[k] - m));
      for (index_t k = 0; k < C; ++k) {
        const double p = std::exp(double(l[k] - m)) / z;
        if (p > 0) h -= p * std::log(p);
      }
      const std::size_t i = std::size_t(st.rows[std::size_t(j)]);
      f[D] = T(h);
      f[D + 1] = T(1.0 / z);  // the max probability: exp(0) / z
      f[D + 2] = T(last_iter_[i] / max_iter);
      f[D + 3] = T(std::min(last_res_[i], 1.0));
      f[D + 4 + s] = T(1);
    }
  }

  /// Applies the chosen layers; returns the samples still running.
  std::vector<index_t> run_step(Episode& e, Step& st, index_t s) {
    const RowRouting r(st.actions, c_.K + 1);
    st.groups.reserve(std::size_t(c_.K));
    for (index_t k = 0; k < c_.K; ++k) {
      if (r.rows(k).empty()) continue;
      Group& g = st.groups.emplace_back();
      g.layer = k;
      for (index_t j : r.rows(k)) g.rows.push_back(st.rows[std::size_t(j)]);
      apply_group(e, g, s);
      std::size_t m = 0;
      for (index_t j : r.rows(k)) st.iterations[std::size_t(j)] = g.iterations[m++];
    }
    std::vector<index_t> next;
    for (std::size_t j = 0; j < st.rows.size(); ++j) {
      if (st.actions[j] == c_.K)
        e.answer_step[std::size_t(st.rows[j])] = s;
      else
        next.push_back(st.rows[j]);
    }
    return next;
  }

  void apply_group(Episode& e, Group& g, index_t s) {
    const index_t n = index_t(g.rows.size()), D = c_.width;
    g.x.resize(Shape{n, D}), g.y.resize(Shape{n, D});
    gather_rows(e.z[std::size_t(s)].cview(), g.rows, g.x.view());
    Layer& l = layers_[std::size_t(g.layer)];
    // Pass::recompute: the spectral estimate is updated once per training step
    // (refresh_spectral), not once per group.
    if (e.train)
      l.forward(g.x.cview(), g.y.view(), g.cache, Pass{.recompute = true});
    else
      l.infer(g.x.cview(), g.y.view());
    scatter_rows(g.y.cview(), g.rows, e.z[std::size_t(s + 1)].view());
    const fpi::SolveReport& rep = e.train ? g.cache.report : l.last_report();
    g.iterations.resize(std::size_t(n));
    for (index_t j = 0; j < n; ++j) {
      const auto i = std::size_t(g.rows[std::size_t(j)]);
      const fpi::SampleReport& sr = rep.samples[std::size_t(j)];
      SampleTrace& t = e.samples[i];
      if (!t.path.empty() && t.path.back() == g.layer) ++t.repeats;
      t.path.push_back(g.layer);
      t.iterations += sr.iterations;
      g.iterations[std::size_t(j)] = sr.iterations;
      t.converged = t.converged && sr.converged;
      t.flops.inject += inject_flops();
      t.flops.fpi += sr.iterations * cell_flops();
      last_iter_[i] = double(sr.iterations), last_res_[i] = sr.residual;
    }
  }

  void run_head(Episode& e) {
    const index_t N = index_t(e.samples.size()), D = c_.width;
    e.zf.resize(Shape{N, D}), e.logits.resize(Shape{N, c_.classes});
    for (index_t i = 0; i < N; ++i) {
      const T* src = e.z[std::size_t(e.answer_step[std::size_t(i)])].data() + i * D;
      std::copy(src, src + D, e.zf.data() + i * D);
      e.samples[std::size_t(i)].flops.head = affine_flops(D, c_.classes);
    }
    if (e.train)
      head_.forward(e.zf.cview(), e.logits.view(), e.head);
    else
      head_.infer(e.zf.cview(), e.logits.view());
  }

  void start_gates(const Episode& e) {
    gate_.resize(e.steps.size());
    for (std::size_t s = 0; s < e.steps.size(); ++s) gate_[s].assign(e.steps[s].rows.size(), 0.0);
    gated_ = &e;
  }
  /// With dcur_ = ∂L/∂z_s complete: the gates of the answers at s (output z_s
  /// into the head) and of the layers applied at s − 1 (output z_s).
  void add_gates(const Episode& e, index_t s) {
    const index_t D = c_.width;
    auto dot = [D](const T* a, const T* b) {
      double d = 0;
      for (index_t k = 0; k < D; ++k) d += double(a[k]) * double(b[k]);
      return d;
    };
    const Step& st = e.steps[std::size_t(s)];
    for (std::size_t j = 0; j < st.rows.size(); ++j)
      if (st.actions[j] == c_.K) gate_[std::size_t(s)][j] = dot(dzf_.data() + st.rows[j] * D, e.zf.data() + st.rows[j] * D);
    if (s == 0) return;
    const Step& prev = e.steps[std::size_t(s - 1)];
    for (std::size_t j = 0; j < prev.rows.size(); ++j)
      if (prev.actions[j] < c_.K)
        gate_[std::size_t(s - 1)][j] = dot(dcur_.data() + prev.rows[j] * D, e.z[std::size_t(s)].data() + prev.rows[j] * D);
  }
  /// 1 when row j of step s applied the layer it applied at step s − 1.
  static index_t repeats_at(const Episode& e, std::size_t s, std::size_t j) {
    const auto& path = e.samples[std::size_t(e.steps[s].rows[j])].path;
    return s >= 1 && s < path.size() && path[s] == path[s - 1] ? 1 : 0;
  }

  void backward_group(const Group& g, bool params) {
    const index_t n = index_t(g.rows.size()), D = c_.width;
    dyk_.resize(Shape{n, D}), dxk_.resize(Shape{n, D});
    gather_rows(dcur_.cview(), g.rows, dyk_.view());
    dxk_.zero();
    layers_[std::size_t(g.layer)].backward(g.cache, dyk_.cview(), dxk_.view(), {.input = true, .params = params});
    scatter_add_rows(dxk_.cview(), g.rows, dprev_.view());
  }

  Config c_;
  Linear<T> stem_;
  Tanh<T> stem_act_;
  std::vector<Layer> layers_;
  Linear<T> head_;
  Policy<T> agent_;
  std::vector<double> last_iter_, last_res_;
  std::vector<std::vector<double>> gate_;  ///< ∂L/∂ŷ per step and row (Control::gumbel)
  const Episode* gated_ = nullptr;         ///< the episode gate_ belongs to
  Tensor<T> zs_, hl_, dzf_, dcur_, dprev_, dstem_, dyk_, dxk_, dl_;
};

}  // namespace lamina::dynalay
