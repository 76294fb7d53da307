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
//   BM_DynaLay<C>/D:    one inference episode of the E3 DynaLay model (in 784,
//                      width D, 10 classes, K = 3, S = 4, untrained) on 128 rows,
//                      static path (forced) or greedy agent; counters: mean FPI
//                      iterations and model / agent kFLOPs per sample
//   BM_DynaLayStep<P>/D: one training step (forward and backward) of phase P
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

dynalay::DynaLay<float> e3_dynalay(index_t D) {
  Rng rng(15);
  return dynalay::DynaLay<float>({.in = 784, .width = D, .classes = 10, .K = 3, .S = 4}, rng);
}

void report_episode(benchmark::State& st, const std::vector<dynalay::SampleTrace>& t) {
  double it = 0, model = 0, agent = 0;
  for (const auto& s : t) it += double(s.iterations), model += double(s.flops.model()), agent += double(s.flops.agent);
  const double n = double(t.size());
  st.counters["mean_iter"] = it / n;
  st.counters["model_kflop"] = model / n / 1e3;
  st.counters["agent_kflop"] = agent / n / 1e3;
}

template <dynalay::Control C>
void BM_DynaLay(benchmark::State& st) {
  set_num_threads(1);
  auto m = e3_dynalay(st.range(0));
  const auto x = random({N, 784}, 4);
  const std::vector<std::vector<index_t>> all(std::size_t(N), std::vector<index_t>{0, 1, 2});
  dynalay::DynaLay<float>::Episode e;
  for (auto _ : st) {
    m.forward(x.cview(), e, C, false, nullptr, all);
    benchmark::DoNotOptimize(e.logits.data());
  }
  report_episode(st, e.samples);
}

template <dynalay::Phase P>
void BM_DynaLayStep(benchmark::State& st) {
  set_num_threads(1);
  auto m = e3_dynalay(st.range(0));
  dynalay::Trainer<float> t(m);
  const auto x = random({N, 784}, 4);
  std::vector<std::int32_t> y(static_cast<std::size_t>(N));
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = std::int32_t(i % 10);
  Rng rng(5);
  for (auto _ : st) {
    const auto s = t.step(x.cview(), y, P, rng);
    benchmark::DoNotOptimize(s.loss);
  }
  report_episode(st, t.episode().samples);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Solve, fpi::Method::picard)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Solve, fpi::Method::anderson)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Solve, fpi::Method::broyden)->Arg(64)->Arg(128)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Backward, fpi::BackwardMode::implicit)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Backward, fpi::BackwardMode::phantom)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Backward, fpi::BackwardMode::one_step)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Backward, fpi::BackwardMode::unrolled)->Arg(64)->Arg(128)->UseManualTime()->Unit(benchmark::kMillisecond);

BENCHMARK_TEMPLATE(BM_DynaLay, dynalay::Control::forced)->Arg(64)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_DynaLay, dynalay::Control::greedy)->Arg(64)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_DynaLayStep, dynalay::Phase::warmup)->Arg(64)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_DynaLayStep, dynalay::Phase::agent)->Arg(64)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_DynaLayStep, dynalay::Phase::joint)->Arg(64)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
