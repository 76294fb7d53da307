// FPI layer costs (issue 14 "Benchmarks"): iterations and time to tolerance of
// Picard, Anderson and Broyden, and the cost of each backward mode against one
// forward solve. The cell is E3-shaped (spec/experiments.md E3, dense cells):
// a batch of 128 states of width D, u = x W_in + b_in, z = tanh(z Ŵ + u) with Ŵ
// at the spectral bound κ = 0.9 (raw W at 3× PyTorch's init, so the
// normalisation acts), spec defaults tol 1e-4, max_iter 50 (adjoint 1e-6, 100).
// The weights are random, not trained: a trained E3 cell may converge faster or
// slower. Run with repetitions and read the medians (bench/README.md).
//   BM_Solve<M>/D:     infer (injection + solve) with method M; counters: mean and
//                      max iterations per sample, non-converged samples
//   BM_Backward<B>/D:  backward of mode B after a training forward, interleaved
//                      with a forward solve (infer) of the same layer; `ratio` =
//                      backward time / forward-solve time
#include <benchmark/benchmark.h>

#include <chrono>

#include "lamina/lamina.hpp"

using namespace lamina;

namespace {
using clk = std::chrono::steady_clock;
constexpr index_t N = 128;

Tensor<float> random(Shape s, std::uint64_t seed) {
  Rng rng(seed);
  Tensor<float> t(s);
  for (float& v : t.span()) v = float(rng.uniform(-1, 1));
  return t;
}

FpiLayer<fpi::TanhCell<float>> e3_layer(index_t D, fpi::Options o) {
  Rng rng(14);
  auto layer = make_tanh_fpi<float>(D, D, rng, o);
  for (float& w : layer.cell().f().weight().span()) w *= 3;
  layer.cell().f().reset_estimate();
  return layer;
}

void report_solve(benchmark::State& st, const fpi::SolveReport& r) {
  st.counters["mean_iter"] = r.mean_iterations();
  st.counters["max_iter"] = double(r.max_iterations());
  st.counters["failed"] = double(r.failed());
}

template <fpi::Method M>
void BM_Solve(benchmark::State& st) {
  set_num_threads(1);
  const index_t D = st.range(0);
  auto layer = e3_layer(D, {.forward = {.method = M, .tol = 1e-4, .max_iter = 50}});
  const auto x = random({N, D}, 2);
  Tensor<float> y(Shape{N, D});
  layer.infer(x.cview(), y.view());
  for (auto _ : st) {
    layer.infer(x.cview(), y.view());
    benchmark::DoNotOptimize(y.data());
  }
  report_solve(st, layer.last_report());
}

template <fpi::BackwardMode B>
void BM_Backward(benchmark::State& st) {
  set_num_threads(1);
  const index_t D = st.range(0);
  const fpi::Method m = B == fpi::BackwardMode::unrolled ? fpi::Method::picard : fpi::Method::anderson;
  auto layer = e3_layer(D, {.forward = {.method = m}, .backward = {.mode = B, .solver = {.method = m}}});
  const auto x = random({N, D}, 2), dy = random({N, D}, 3);
  Tensor<float> y(Shape{N, D}), dx(Shape{N, D});
  FpiLayer<fpi::TanhCell<float>>::Cache c;
  layer.forward(x.cview(), y.view(), c);
  layer.backward(c, dy.cview(), dx.view());
  double tf = 0, tb = 0;
  for (auto _ : st) {
    const auto t0 = clk::now();
    layer.infer(x.cview(), y.view());
    const auto t1 = clk::now();
    layer.backward(c, dy.cview(), dx.view());
    const auto t2 = clk::now();
    const double a = std::chrono::duration<double>(t1 - t0).count(), b = std::chrono::duration<double>(t2 - t1).count();
    tf += a, tb += b;
    st.SetIterationTime(b);
  }
  const double n = double(st.iterations());
  st.counters["solve_ms"] = 1e3 * tf / n;
  st.counters["backward_ms"] = 1e3 * tb / n;
  st.counters["ratio"] = tb / tf;
  st.counters["fwd_iter"] = c.report.mean_iterations();
  if (B == fpi::BackwardMode::implicit) st.counters["adj_iter"] = layer.last_backward_report().mean_iterations();
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Solve, fpi::Method::picard)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Solve, fpi::Method::anderson)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Solve, fpi::Method::broyden)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Backward, fpi::BackwardMode::implicit)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Backward, fpi::BackwardMode::phantom)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Backward, fpi::BackwardMode::one_step)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Backward, fpi::BackwardMode::unrolled)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
