#pragma once
// Options of the DynaLay model and its training (spec/fpi_dynalay.md §4), set
// with designated initialisers and checked by validate(), which names the
// module, the option, the expected and the actual value:
//   dynalay::Config c{.in = 784, .width = 64, .classes = 10, .K = 3, .S = 4};
//   dynalay::TrainOptions t{.lambda_c = 0.3, .lambda_r = 0.05, .entropy = 0.01};
#include <cmath>
#include <string_view>

#include "lamina/core/error.hpp"
#include "lamina/core/tensor.hpp"
#include "lamina/fpi/options.hpp"

namespace lamina::dynalay {

/// The shape of the model: stem in → width, K FPI layers of that width, a head
/// width → classes, the agent's hidden width; at most S steps per episode.
struct Config {
  index_t in = 0;
  index_t width = 0;
  index_t classes = 0;
  index_t K = 3;        ///< FPI layers (actions 0..K−1); action K answers now
  index_t S = 4;        ///< most FPI steps of one episode (S ≥ K: the static path fits)
  index_t hidden = 32;  ///< the agent's hidden width
  fpi::Options fpi{};   ///< every FPI layer's solver and backward mode
  double gumbel_tau = 1.0;  ///< temperature of Control::gumbel's relaxation (> 0)
};

/// Reward R = 1[correct] − λ_c·C/C_max − λ_r·repeats; REINFORCE with a moving
/// average baseline b ← μ b + (1 − μ) mean(R) and an entropy bonus.
struct TrainOptions {
  double lambda_c = 0.3;
  double lambda_r = 0.05;
  double entropy = 0.01;           ///< weight of the entropy bonus (≥ 0)
  double baseline_momentum = 0.9;  ///< μ ∈ [0, 1)
  double c_max = 0;                ///< iterations of the full static path; 0: K · forward.max_iter
  double random_path_share = 0.5;  ///< warm-up: share of samples on a random path (the rest static)
  bool gumbel = false;  ///< agent and joint phases: straight-through Gumbel-softmax instead of REINFORCE
};

/// The three-phase schedule (§4 Training), in optimiser steps.
struct Schedule {
  index_t warmup = 1000;  ///< (1) stem, FPI layers and head on static and random paths
  index_t agent = 1000;   ///< (2) the agent alone, REINFORCE
  index_t joint = 0;      ///< (3) optional joint fine-tuning
};

enum class Phase { warmup, agent, joint, done };

inline const char* name(Phase p) noexcept {
  switch (p) {
    case Phase::warmup: return "warmup";
    case Phase::agent: return "agent";
    case Phase::joint: return "joint";
    case Phase::done: return "done";
  }
  return "?";
}

inline void validate(const Config& c) {
  require(c.in >= 1, "DynaLay", "in", ">= 1", c.in);
  require(c.width >= 1, "DynaLay", "width", ">= 1", c.width);
  require(c.classes >= 2, "DynaLay", "classes", ">= 2", c.classes);
  require(c.K >= 1, "DynaLay", "K", ">= 1", c.K);
  require(c.S >= 1, "DynaLay", "S", ">= 1", c.S);
  require(c.S >= c.K, "DynaLay", "S", detail::text(">= K = ", c.K, " (the static path of all K layers must fit)"), c.S);
  require(c.hidden >= 1, "DynaLay", "hidden", ">= 1", c.hidden);
  require(std::isfinite(c.gumbel_tau) && c.gumbel_tau > 0, "DynaLay", "gumbel_tau", "finite and > 0", c.gumbel_tau);
  fpi::validate(c.fpi, "DynaLay");
}

inline void validate(const TrainOptions& o) {
  require(std::isfinite(o.lambda_c) && o.lambda_c >= 0, "DynaLay", "lambda_c", "finite and >= 0", o.lambda_c);
  require(std::isfinite(o.lambda_r) && o.lambda_r >= 0, "DynaLay", "lambda_r", "finite and >= 0", o.lambda_r);
  require(std::isfinite(o.entropy) && o.entropy >= 0, "DynaLay", "entropy", "finite and >= 0", o.entropy);
  require(o.baseline_momentum >= 0 && o.baseline_momentum < 1, "DynaLay", "baseline_momentum", "in [0, 1)",
          o.baseline_momentum);
  require(std::isfinite(o.c_max) && o.c_max >= 0, "DynaLay", "c_max", "finite and >= 0 (0: K * max_iter)", o.c_max);
  require(o.random_path_share >= 0 && o.random_path_share <= 1, "DynaLay", "random_path_share", "in [0, 1]",
          o.random_path_share);
}

inline void validate(const Schedule& s) {
  require(s.warmup >= 0, "DynaLay", "schedule.warmup", ">= 0", s.warmup);
  require(s.agent >= 0, "DynaLay", "schedule.agent", ">= 0", s.agent);
  require(s.joint >= 0, "DynaLay", "schedule.joint", ">= 0", s.joint);
}

/// The phase of optimiser step `step` (0-based).
inline Phase phase_at(const Schedule& s, index_t step) {
  validate(s);
  require(step >= 0, "DynaLay", "step", ">= 0", step);
  if (step < s.warmup) return Phase::warmup;
  if (step < s.warmup + s.agent) return Phase::agent;
  if (step < s.warmup + s.agent + s.joint) return Phase::joint;
  return Phase::done;
}

}  // namespace lamina::dynalay
