// The E1 networks end to end (spec/experiments.md E1), batch 128, float: one
// training step (forward, loss, backward, SGD step) and one inference batch, at
// 1 and 2 threads, for the baseline ResNet and the RW+LR+PA LAUREL ResNet (the
// variant that uses the stage memory). Written against the plain two-argument
// calls only, so the same file builds against an older checkout of lamina and
// bench/compare_builds.py can time two builds interleaved in one run.
#include <benchmark/benchmark.h>

#include "lamina/lamina.hpp"

using namespace lamina;

namespace {
constexpr index_t batch = 128;

Tensor<float> random_images(std::uint64_t seed) {
  Rng rng(seed);
  Tensor<float> t(Shape{batch, 1, 28, 28});
  for (float& v : t.span()) v = float(rng.uniform(-1, 1));
  return t;
}

template <class Net>
void train_step(benchmark::State& st, Net& net) {
  set_num_threads(int(st.range(0)));
  optim::SGD<float> opt(net, {.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4});
  SoftmaxCrossEntropy<float> loss;
  const Tensor<float> x = random_images(2);
  std::vector<std::int32_t> labels(batch);
  for (index_t i = 0; i < batch; ++i) labels[std::size_t(i)] = std::int32_t(i % 10);
  Tensor<float> y(Shape{batch, 10}), dy(Shape{batch, 10}), dx(x.shape());
  auto step = [&] {
    net.forward(x.cview(), y.view());
    benchmark::DoNotOptimize(loss.forward(y.cview(), labels));
    dy.zero();
    loss.backward(dy.view());
    dx.zero();
    opt.zero_grad();
    net.backward(dy.cview(), dx.view());
    opt.step();
  };
  step();  // untimed: the first steps allocate every buffer of the network
  step();
  for (auto _ : st) step();
  st.counters["images/s"] = benchmark::Counter(double(batch) * double(st.iterations()), benchmark::Counter::kIsRate);
}

template <class Net>
void inference(benchmark::State& st, Net& net) {
  set_num_threads(int(st.range(0)));
  set_training(net, false);
  const Tensor<float> x = random_images(3);
  Tensor<float> y(Shape{batch, 10});
  net.infer(x.cview(), y.view());
  for (auto _ : st) {
    net.infer(x.cview(), y.view());
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["images/s"] = benchmark::Counter(double(batch) * double(st.iterations()), benchmark::Counter::kIsRate);
}

auto baseline() {
  Rng rng(1);
  return make_resnet<float>({}, rng);
}
auto laurel_pa() {
  Rng rng(1);
  laurel::Options o;
  return make_laurel_resnet<float, laurel::RW_LR_PA>({}, o, rng);
}

void BM_E1Step_Baseline(benchmark::State& st) {
  auto net = baseline();
  train_step(st, net);
}
void BM_E1Infer_Baseline(benchmark::State& st) {
  auto net = baseline();
  inference(st, net);
}
void BM_E1Step_RW_LR_PA(benchmark::State& st) {
  auto net = laurel_pa();
  train_step(st, net);
}
void BM_E1Infer_RW_LR_PA(benchmark::State& st) {
  auto net = laurel_pa();
  inference(st, net);
}
}  // namespace

BENCHMARK(BM_E1Step_Baseline)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_E1Infer_Baseline)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_E1Step_RW_LR_PA)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_E1Infer_RW_LR_PA)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
