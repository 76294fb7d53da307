// LAUREL costs (issue: LAUREL "Benchmarks" and "Must reach"). Every benchmark
// interleaves the LAUREL case with its reference in the same loop, so the
// reported `ratio` (LAUREL time / reference time) sees the same machine state;
// the benchmark's own time is the LAUREL case's. Run with repetitions and read
// the medians (bench/README.md).
//   BM_E1Step<V>/threads:     training step (batch 128) of the E1 ResNet with
//                             LAUREL V against the plain ResNet
//   BM_Block<V>/D/r:          forward+backward of y = LAUREL(f)(x), f = Linear(D, D),
//                             N = 4096, against the plain residual f(x) + x
//   BM_LowRankForward/D/r:    the LR branch forward (U = x A; y += U B) against
//                             the same two GEMMs written directly with Eigen
//   BM_LowRankBackward/D/r:   its backward against its four Eigen GEMMs
#include <benchmark/benchmark.h>

#include <chrono>

#include "lamina/lamina.hpp"

using namespace lamina;

namespace {
using clk = std::chrono::steady_clock;

template <class T>
Tensor<T> random(Shape s, std::uint64_t seed) {
  Rng rng(seed);
  Tensor<T> t(s);
  for (T& v : t.span()) v = T(rng.uniform(-1, 1));
  return t;
}

// Runs reference() and laurel() alternately; manual time = laurel's.
template <class R, class L>
void interleaved(benchmark::State& st, R&& reference, L&& laurel) {
  reference(), laurel(), reference(), laurel();  // allocate every buffer
  double tr = 0, tl = 0;
  for (auto _ : st) {
    const auto t0 = clk::now();
    reference();
    const auto t1 = clk::now();
    laurel();
    const auto t2 = clk::now();
    const double a = std::chrono::duration<double>(t1 - t0).count(), b = std::chrono::duration<double>(t2 - t1).count();
    tr += a, tl += b;
    st.SetIterationTime(b);
  }
  const double n = double(st.iterations());
  st.counters["ref_ms"] = 1e3 * tr / n;
  st.counters["laurel_ms"] = 1e3 * tl / n;
  st.counters["ratio"] = tl / tr;
}

// One SGD training step of a network on a fixed batch.
template <class Net>
struct Stepper {
  Net net;
  optim::SGD<float> opt;
  SoftmaxCrossEntropy<float> loss;
  Tensor<float> x, y, dy, dx;
  std::vector<std::int32_t> labels;
  explicit Stepper(Net n, index_t B = 128)
      : net(std::move(n)), opt(net, {0.05, 0.9, 0.0, 5e-4, false}), x(random<float>({B, 1, 28, 28}, 2)),
        y(Shape{B, 10}), dy(Shape{B, 10}), dx(x.shape()), labels(static_cast<std::size_t>(B)) {
    for (index_t i = 0; i < B; ++i) labels[std::size_t(i)] = std::int32_t(i % 10);
  }
  void operator()() {
    net.forward(x.cview(), y.view());
    benchmark::DoNotOptimize(loss.forward(y.cview(), labels));
    dy.zero();
    loss.backward(dy.view());
    dx.zero();
    opt.zero_grad();
    net.backward(dy.cview(), dx.view());
    opt.step();
  }
};

template <class V>
void BM_E1Step(benchmark::State& st) {
  set_num_threads(int(st.range(0)));
  laurel::Options lo;
  lo.rank = 4, lo.history = 2;
  Rng r1(1), r2(1);
  Stepper base(make_resnet<float>({}, r1));
  Stepper lau(make_laurel_resnet<float, V>({}, lo, r2));
  interleaved(st, base, lau);
}

template <class V>
void BM_Block(benchmark::State& st) {
  set_num_threads(1);
  const index_t N = 4096, D = st.range(0);
  laurel::Options lo;
  lo.rank = st.range(1), lo.history = 1;
  Rng rng(1);
  Linear<float> f(D, D, rng, false);
  Residual<Linear<float>> plain(f);
  Laurel<Linear<float>, V> lau(f, D, lo, rng);
  if constexpr (V::lr) lau.B().assign(random<float>({lo.rank, D}, 5).cview());  // non-zero B: the full cost
  auto x = random<float>({N, D}, 2), dy = random<float>({N, D}, 3);
  Tensor<float> y(Shape{N, D}), dx(Shape{N, D});
  // PA reads one earlier stream (the same x: what matters is the traffic).
  StageMemory<float> memory;
  typename Residual<Linear<float>>::Cache plain_cache;
  typename Laurel<Linear<float>, V>::Cache laurel_cache;  // caches outlive the loop: no allocation per step
  auto run = [&](auto& m, auto& c) {
    if constexpr (UsesStageMemory<std::remove_reference_t<decltype(m)>>) {
      memory.reset(2, true);
      memory.publish(0, memory_key::laurel_stream, x.cview());
      m.forward(x.cview(), y.view(), c, BlockMemory<float>(memory, 1));
    } else {
      m.forward(x.cview(), y.view(), c);
    }
    m.backward(c, dy.cview(), dx.view());
  };
  interleaved(st, [&] { run(plain, plain_cache); }, [&] { run(lau, laurel_cache); });
}

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ColMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic>;

void BM_LowRankForward(benchmark::State& st) {
  set_num_threads(1);
  const index_t N = 4096, D = st.range(0), r = st.range(1);
  Rng rng(1);
  laurel::LowRank<float> lr(D, r, laurel::AInit::xavier_uniform, rng);
  lr.B().assign(random<float>({r, D}, 5).cview());
  auto x = random<float>({N, D}, 2);
  Tensor<float> y(Shape{N, D});
  ColMat U, U2(N, r);
  const float one = 1;
  const ChannelGeometry g{N, D, 1};
  const Eigen::Map<const RowMat> X(x.data(), N, D), A(lr.A().data(), D, r), B(lr.B().data(), r, D);
  Eigen::Map<RowMat> Y(y.data(), N, D);
  interleaved(
      st,
      [&] {
        U2.noalias() = X * A;
        Y.noalias() += U2 * B;
        benchmark::DoNotOptimize(y.data());
      },
      [&] {
        lr.forward(g, x.data(), y.data(), &one, false, U);
        benchmark::DoNotOptimize(y.data());
      });
  st.counters["GFLOP/s"] = benchmark::Counter(4.0 * double(N * D * r) * double(st.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

void BM_LowRankBackward(benchmark::State& st) {
  set_num_threads(1);
  const index_t N = 4096, D = st.range(0), r = st.range(1);
  Rng rng(1);
  laurel::LowRank<float> lr(D, r, laurel::AInit::xavier_uniform, rng);
  lr.B().assign(random<float>({r, D}, 5).cview());
  auto x = random<float>({N, D}, 2), G = random<float>({N, D}, 3);
  Tensor<float> y(Shape{N, D}), dx(Shape{N, D});
  ColMat U;
  const float one = 1;
  const ChannelGeometry g{N, D, 1};
  lr.forward(g, x.data(), y.data(), &one, false, U);
  const Eigen::Map<const RowMat> X(x.data(), N, D), Gm(G.data(), N, D), A(lr.A().data(), D, r), B(lr.B().data(), r, D);
  Eigen::Map<RowMat> dX(dx.data(), N, D);
  RowMat dA = RowMat::Zero(D, r), dB = RowMat::Zero(r, D);
  ColMat P(N, r);
  interleaved(
      st,
      [&] {
        P.noalias() = Gm * B.transpose();
        dB.noalias() += U.transpose() * Gm;
        dA.noalias() += X.transpose() * P;
        dX.noalias() += P * A.transpose();
        benchmark::DoNotOptimize(dx.data());
      },
      [&] {
        benchmark::DoNotOptimize(lr.backward(g, G.data(), x.data(), dx.data(), &one, false, U));
      });
  st.counters["GFLOP/s"] = benchmark::Counter(8.0 * double(N * D * r) * double(st.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

void block_args(benchmark::internal::Benchmark* b) {
  for (index_t D : {64, 256, 1024})
    for (index_t r : {4, 16, 64})
      if (r <= D) b->Args({D, r});
}
}  // namespace

BENCHMARK_TEMPLATE(BM_E1Step, laurel::RW)->Arg(1)->Arg(2)->UseManualTime()->MinTime(4.0)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_E1Step, laurel::RW_LR)->Arg(1)->Arg(2)->UseManualTime()->MinTime(4.0)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_E1Step, laurel::RW_LR_PA)->Arg(1)->Arg(2)->UseManualTime()->MinTime(4.0)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Block, laurel::RW)->Args({64, 4})->Args({256, 4})->Args({1024, 4})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_Block, laurel::LR)->Apply(block_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_Block, laurel::RW_LR)->Apply(block_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_Block, laurel::RW_LR_PA)->Apply(block_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LowRankForward)->Apply(block_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_LowRankBackward)->Apply(block_args)->UseManualTime()->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
