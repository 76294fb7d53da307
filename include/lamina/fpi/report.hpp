#pragma once
// What a solve reports (spec/fpi_dynalay.md §2): per sample the iterations used,
// the final relative residual and whether it converged. A solve that does not
// converge is never silent: the report carries the flags, and with
// SolverOptions::throw_on_failure the solve throws convergence_error.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <vector>

#include "lamina/core/error.hpp"
#include "lamina/core/tensor.hpp"
#include "lamina/fpi/options.hpp"

namespace lamina::fpi {

/// A solve that did not reach its tolerance for some sample (thrown only when asked).
struct convergence_error : error {
  using error::error;
};

struct SampleReport {
  index_t iterations = 0;  ///< evaluations of f spent on this sample
  double residual = std::numeric_limits<double>::infinity();  ///< relative residual of the returned iterate
  bool converged = false;
  index_t best = 0;  ///< the evaluation (1-based) whose input is the returned iterate; 0: none
};

struct SolveReport {
  std::vector<SampleReport> samples;
  index_t evaluations = 0;  ///< rows of f evaluated in total (the compute of the solve)

  index_t size() const noexcept { return index_t(samples.size()); }
  index_t failed() const noexcept {
    return index_t(std::count_if(samples.begin(), samples.end(), [](const SampleReport& s) { return !s.converged; }));
  }
  bool all_converged() const noexcept { return failed() == 0; }
  index_t max_iterations() const noexcept {
    index_t m = 0;
    for (const auto& s : samples) m = std::max(m, s.iterations);
    return m;
  }
  double mean_iterations() const noexcept {
    double t = 0;
    for (const auto& s : samples) t += double(s.iterations);
    return samples.empty() ? 0.0 : t / double(samples.size());
  }
  /// The sample with the largest residual (NaN counts as largest); -1 when empty.
  index_t worst() const noexcept {
    index_t w = -1;
    for (index_t i = 0; i < size(); ++i) {
      const double r = samples[std::size_t(i)].residual;
      if (w < 0 || !(r <= samples[std::size_t(w)].residual)) w = i;
    }
    return w;
  }
};

/// Throws convergence_error when o asks for it and some sample did not converge.
inline void enforce(const SolveReport& r, const SolverOptions& o, std::string_view module, std::string_view what) {
  if (!o.throw_on_failure || r.all_converged()) return;
  const index_t w = r.worst();
  const index_t failed = r.failed(), n = r.size();
  const double res = r.samples[std::size_t(w)].residual;
  fail<convergence_error>(
      module, what, detail::text("relative residual < ", o.tol, " within ", o.max_iter, " iterations (", name(o.method), ")"),
      detail::text(failed, " of ", n, " samples not converged, worst residual ", res, " at sample ", w));
}

}  // namespace lamina::fpi
