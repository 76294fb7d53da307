#pragma once
// What DynaLay reports about compute (spec/fpi_dynalay.md §4 compute accounting,
// §5): per-sample FPI iterations and FLOPs as mean / median / p95, and the
// histogram of actions taken (layer k applied, or answered at step s).
#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

#include "lamina/dynalay/model.hpp"

namespace lamina::dynalay {

struct Distribution {
  double mean = 0, median = 0, p95 = 0, max = 0;
};

/// Mean, median and p95 (nearest rank: the ⌈0.95 n⌉-th smallest) of v; zeros when empty.
inline Distribution distribution(std::vector<double> v) {
  Distribution d;
  if (v.empty()) return d;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  for (double x : v) d.mean += x;
  d.mean /= double(n);
  d.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  d.p95 = v[std::size_t(std::ceil(0.95 * double(n))) - 1];
  d.max = v.back();
  return d;
}

struct ComputeReport {
  Distribution iterations, flops;   ///< per sample; flops: the model's (Flops::model())
  std::vector<index_t> layer_uses;  ///< [K]: times layer k was applied
  std::vector<index_t> answers_at;  ///< [S + 1]: samples that answered at step s
};

/// The report of a set of traces (one episode's samples, or several appended).
inline ComputeReport compute_report(std::span<const SampleTrace> traces, index_t K, index_t S) {
  ComputeReport r;
  r.layer_uses.assign(std::size_t(K), 0);
  r.answers_at.assign(std::size_t(S + 1), 0);
  std::vector<double> it, fl;
  for (const SampleTrace& t : traces) {
    it.push_back(double(t.iterations));
    fl.push_back(double(t.flops.model()));
    for (index_t k : t.path) ++r.layer_uses[std::size_t(k)];
    ++r.answers_at[std::min(t.path.size(), std::size_t(S))];
  }
  r.iterations = distribution(std::move(it));
  r.flops = distribution(std::move(fl));
  return r;
}

}  // namespace lamina::dynalay
