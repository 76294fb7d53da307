#pragma once
// Options of the FPI layer (spec/fpi_dynalay.md §2 solvers, §3 backward modes),
// set with designated initialisers:
//   fpi::Options o{.forward = {.method = fpi::Method::anderson, .tol = 1e-4},
//                  .backward = {.mode = fpi::BackwardMode::implicit}};
// validate() rejects values outside their domain with lamina's value_error,
// naming the module, the option, the expected and the actual value.
#include <string_view>

#include "lamina/core/error.hpp"
#include "lamina/core/tensor.hpp"

namespace lamina::fpi {

/// The forward (and adjoint) solver, §2.
enum class Method { picard, anderson, broyden };

inline const char* name(Method m) noexcept {
  switch (m) {
    case Method::picard: return "picard";
    case Method::anderson: return "anderson";
    case Method::broyden: return "broyden";
  }
  return "?";
}

/// One solve of z = f(z), per sample: stop a sample when
/// ‖f(z) − z‖ / (‖f(z)‖ + 1e-9) < tol or after max_iter evaluations of f.
struct SolverOptions {
  static constexpr index_t max_anderson_memory = 32;  ///< m's upper bound (fixed-capacity small systems)
  Method method = Method::anderson;
  double tol = 1e-4;
  index_t max_iter = 50;
  double tau = 1.0;      ///< Picard damping: z ← (1−τ) z + τ f(z), τ ∈ (0, 1]
  index_t m = 5;         ///< Anderson memory, 1 ≤ m ≤ max_anderson_memory
  double lambda = 1e-4;  ///< Anderson regulariser (≥ 0), times the newest residual's squared norm
  double beta = 1.0;     ///< Anderson mixing β ∈ (0, 1]
  index_t broyden_memory = 30;  ///< Broyden: rank-one updates kept (oldest replaced), ≥ 1
  bool throw_on_failure = false;  ///< throw convergence_error instead of only reporting
  /// Samples solved together (≥ 0; 0: the whole batch at once). The batch is
  /// solved in blocks of this many samples, one block after another: the
  /// solver's buffers and Anderson's history are sized by the block, not the
  /// batch. Every sample's result is the same for any block size. On the E3
  /// cells (500 × 64, 1 thread) blocks of 32–256 made no solve faster: Anderson
  /// kept its time, Picard took ~5 % longer (smaller products).
  index_t block = 0;
};

/// §3 backward modes.
enum class BackwardMode { implicit, phantom, one_step, unrolled };

struct BackwardOptions {
  BackwardMode mode = BackwardMode::implicit;
  /// The adjoint solve w = Jᵀw + g of the implicit mode (spec: tolerance 1e-6).
  /// Blocks here make the adjoint map re-apply the cell at z* per block
  /// (fpi/adjoint.hpp): one extra evaluation of the batch.
  SolverOptions solver{.tol = 1e-6, .max_iter = 100};
  index_t k = 5;     ///< phantom: damped steps differentiated from z*
  double tau = 1.0;  ///< phantom: damping of those steps
};

struct Options {
  SolverOptions forward{};
  BackwardOptions backward{};
};

inline void validate(const SolverOptions& o, std::string_view module, std::string_view which) {
  require(o.tol > 0, module, detail::text(which, ".tol"), "> 0", o.tol);
  require(o.max_iter >= 1, module, detail::text(which, ".max_iter"), ">= 1", o.max_iter);
  require(o.tau > 0 && o.tau <= 1, module, detail::text(which, ".tau"), "in (0, 1]", o.tau);
  require(o.m >= 1, module, detail::text(which, ".m"), ">= 1", o.m);
  require(o.m <= SolverOptions::max_anderson_memory, module, detail::text(which, ".m"),
          detail::text("<= ", SolverOptions::max_anderson_memory), o.m);
  require(o.lambda >= 0, module, detail::text(which, ".lambda"), ">= 0", o.lambda);
  require(o.beta > 0 && o.beta <= 1, module, detail::text(which, ".beta"), "in (0, 1]", o.beta);
  require(o.block >= 0, module, detail::text(which, ".block"), ">= 0 (0: the whole batch)", o.block);
  require(o.broyden_memory >= 1, module, detail::text(which, ".broyden_memory"), ">= 1", o.broyden_memory);
}

inline void validate(const Options& o, std::string_view module) {
  validate(o.forward, module, "forward");
  validate(o.backward.solver, module, "backward.solver");
  require(o.backward.k >= 1, module, "backward.k", ">= 1", o.backward.k);
  require(o.backward.tau > 0 && o.backward.tau <= 1, module, "backward.tau", "in (0, 1]", o.backward.tau);
  if (o.backward.mode == BackwardMode::unrolled)
    require(o.forward.method == Method::picard, module, "forward.method with backward.mode unrolled",
            "picard (the unrolled oracle differentiates damped Picard steps)", name(o.forward.method));
}

}  // namespace lamina::fpi
