// Core-module throughput: Linear and Conv2d forward/backward (GFLOP/s), beside
// the bare Eigen GEMM of the same size (the ceiling of the im2col approach), and
// the training step of the E1 baseline ResNet (ms per batch of 128) at 1 and 2
// threads.
#include <benchmark/benchmark.h>

#include "lamina/lamina.hpp"

using namespace lamina;

namespace {
template <class T>
Tensor<T> random(Shape s, std::uint64_t seed) {
  Rng rng(seed);
  Tensor<T> t(s);
  for (T& v : t.span()) v = T(rng.uniform(-1, 1));
  return t;
}
void gflops(benchmark::State& st, double flops_per_iter) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * double(st.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

// ---- Linear: N x in -> N x out --------------------------------------------------
template <class T>
void BM_LinearForward(benchmark::State& st) {
  set_num_threads(1);
  const index_t N = st.range(0), D = st.range(1);
  Rng rng(1);
  Linear<T> lin(D, D, rng);
  auto x = random<T>({N, D}, 2);
  Tensor<T> y(Shape{N, D});
  for (auto _ : st) {
    lin.forward(x.cview(), y.view());
    benchmark::DoNotOptimize(y.data());
  }
  gflops(st, 2.0 * double(N * D * D));
}
template <class T>
void BM_LinearBackward(benchmark::State& st) {
  set_num_threads(1);
  const index_t N = st.range(0), D = st.range(1);
  Rng rng(1);
  Linear<T> lin(D, D, rng);
  auto x = random<T>({N, D}, 2), dy = random<T>({N, D}, 3);
  Tensor<T> y(Shape{N, D}), dx(Shape{N, D});
  lin.forward(x.cview(), y.view());
  for (auto _ : st) {
    lin.backward(dy.cview(), dx.view());
    benchmark::DoNotOptimize(dx.data());
  }
  gflops(st, 4.0 * double(N * D * D));
}
// The same product with Eigen alone: the ceiling for Linear.
template <class T>
void BM_EigenGemm(benchmark::State& st) {
  set_num_threads(1);
  const index_t M = st.range(0), K = st.range(1), N = st.range(2);
  RowMatrix<T> a = RowMatrix<T>::Random(M, K), b = RowMatrix<T>::Random(K, N), c(M, N);
  for (auto _ : st) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  gflops(st, 2.0 * double(M * K * N));
}

// ---- Conv2d on the E1 network's shapes -------------------------------------------
// Args: batch, channels (in = out), spatial size, threads, algorithm (0 im2col,
// 1 Winograd F(2×2, 3×3), 2 direct, 3 Winograd F(4×4, 3×3)) and, for the backward, the part (0 dx and dW, 1 dx, 2 dW).
// GFLOP/s counted as direct-convolution FLOPs (2·B·Cout·Cin·9·Ho·Wo per pass).
Conv2dAlgorithm conv_algorithm(const benchmark::State& st) {
  switch (st.range(4)) {
    case 1: return Conv2dAlgorithm::winograd;
    case 2: return Conv2dAlgorithm::direct;
    case 3: return Conv2dAlgorithm::winograd4;
    default: return Conv2dAlgorithm::im2col;
  }
}
template <class T>
void BM_Conv2dForward(benchmark::State& st) {
  set_num_threads(int(st.range(3)));
  const index_t B = st.range(0), C = st.range(1), S = st.range(2);
  Rng rng(1);
  Conv2d<T> conv({C, C, 3, 3, 1, 1, false, conv_algorithm(st)}, rng);
  auto x = random<T>({B, C, S, S}, 2);
  Tensor<T> y(Shape{B, C, S, S});
  for (auto _ : st) {
    conv.forward(x.cview(), y.view());
    benchmark::DoNotOptimize(y.data());
  }
  gflops(st, 2.0 * double(B * C * S * S * C * 9));
}
template <class T>
void BM_Conv2dBackward(benchmark::State& st) {
  set_num_threads(int(st.range(3)));
  const index_t B = st.range(0), C = st.range(1), S = st.range(2);
  const Grad want{.input = st.range(5) != 2, .params = st.range(5) != 1};
  Rng rng(1);
  Conv2d<T> conv({C, C, 3, 3, 1, 1, false, conv_algorithm(st)}, rng);
  auto x = random<T>({B, C, S, S}, 2), dy = random<T>({B, C, S, S}, 3);
  Tensor<T> y(Shape{B, C, S, S}), dx(Shape{B, C, S, S});
  conv.forward(x.cview(), y.view());
  for (auto _ : st) {
    conv.backward(dy.cview(), dx.view(), want);
    benchmark::DoNotOptimize(dx.data());
  }
  gflops(st, (want.input && want.params ? 4.0 : 2.0) * double(B * C * S * S * C * 9));
}
// One image's im2col GEMM [C, 9C] x [9C, S*S], B times: the GEMM part of the conv alone.
template <class T>
void BM_Conv2dGemmOnly(benchmark::State& st) {
  set_num_threads(1);
  const index_t B = st.range(0), C = st.range(1), S = st.range(2);
  RowMatrix<T> w = RowMatrix<T>::Random(C, 9 * C), col = RowMatrix<T>::Random(9 * C, S * S), y(C, S * S);
  for (auto _ : st) {
    for (index_t b = 0; b < B; ++b) {
      y.noalias() = w * col;
      benchmark::DoNotOptimize(y.data());
    }
  }
  gflops(st, 2.0 * double(B * C * S * S * C * 9));
}

// ---- Conv2d on the E1 network's strided shapes (the im2col convs) ---------------------
// Args: batch, Cin, Cout, input size, kernel (padding k/2), stride, threads,
// chunked (0 the per-image im2col reference, 1 the chunked im2col), images per
// chunk (0 automatic) and, for the backward, the part (0 dx and dW, 1 dx, 2 dW).
// GFLOP/s counted as direct-convolution FLOPs (2·B·Cout·Cin·k²·Ho·Wo per pass).
Conv2dOptions strided_options(const benchmark::State& st) {
  return {.in_channels = st.range(1), .out_channels = st.range(2), .kernel_h = st.range(4), .kernel_w = st.range(4),
          .stride = st.range(5), .padding = st.range(4) / 2, .bias = false,
          .algorithm = st.range(7) == 1 ? Conv2dAlgorithm::im2col : Conv2dAlgorithm::im2col_per_image,
          .chunk_images = st.range(8)};
}
template <class T>
void BM_Conv2dStridedForward(benchmark::State& st) {
  set_num_threads(int(st.range(6)));
  Rng rng(1);
  Conv2d<T> conv(strided_options(st), rng);
  auto x = random<T>({st.range(0), st.range(1), st.range(3), st.range(3)}, 2);
  Tensor<T> y(conv.output_shape(x.shape()));
  for (auto _ : st) {
    conv.forward(x.cview(), y.view());
    benchmark::DoNotOptimize(y.data());
  }
  gflops(st, 2.0 * double(y.size()) * double(st.range(1) * st.range(4) * st.range(4)));
}
template <class T>
void BM_Conv2dStridedBackward(benchmark::State& st) {
  set_num_threads(int(st.range(6)));
  const Grad want{.input = st.range(9) != 2, .params = st.range(9) != 1};
  Rng rng(1);
  Conv2d<T> conv(strided_options(st), rng);
  auto x = random<T>({st.range(0), st.range(1), st.range(3), st.range(3)}, 2);
  Tensor<T> y(conv.output_shape(x.shape())), dx(x.shape());
  auto dy = random<T>(y.shape(), 3);
  conv.forward(x.cview(), y.view());
  for (auto _ : st) {
    conv.backward(dy.cview(), dx.view(), want);
    benchmark::DoNotOptimize(dx.data());
  }
  gflops(st, (want.input && want.params ? 4.0 : 2.0) * double(y.size()) * double(st.range(1) * st.range(4) * st.range(4)));
}

// ---- The E1 training step (forward, loss, backward, SGD step) -------------------
void BM_ResNetTrainStep(benchmark::State& st) {
  const int threads = int(st.range(0));
  set_num_threads(threads);
  Rng rng(1);
  auto net = make_resnet<float>({}, rng);
  optim::SGD<float> opt(net, {0.05, 0.9, 0.0, 5e-4, false});
  SoftmaxCrossEntropy<float> loss;
  const index_t B = 128;
  auto x = random<float>({B, 1, 28, 28}, 2);
  std::vector<std::int32_t> labels(B);
  for (index_t i = 0; i < B; ++i) labels[std::size_t(i)] = std::int32_t(i % 10);
  Tensor<float> y(Shape{B, 10}), dy(Shape{B, 10}), dx(x.shape());
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
  // Two untimed steps: the first allocates every buffer of the network (~1 s of page faults).
  step();
  step();
  for (auto _ : st) step();
  st.counters["images/s"] = benchmark::Counter(double(B) * double(st.iterations()), benchmark::Counter::kIsRate);
  st.counters["threads"] = threads;
}
}  // namespace

BENCHMARK_TEMPLATE(BM_LinearForward, float)->Args({4096, 256})->Args({4096, 1024});
BENCHMARK_TEMPLATE(BM_LinearBackward, float)->Args({4096, 256})->Args({4096, 1024});
BENCHMARK_TEMPLATE(BM_EigenGemm, float)->Args({4096, 256, 256})->Args({4096, 1024, 1024});
void conv_shapes(benchmark::internal::Benchmark* b, bool parts) {
  for (int algo : {0, 1, 2, 3})
    for (int threads : {1, 2})
      for (const auto& [C, S] : {std::pair{16, 28}, std::pair{32, 14}, std::pair{64, 7}})
        for (int part = 0; part <= (parts ? 2 : 0); ++part) {
          if (parts) b->Args({128, C, S, threads, algo, part});
          else b->Args({128, C, S, threads, algo});
        }
  b->ArgNames(parts ? std::vector<std::string>{"B", "C", "S", "threads", "algo", "part"}
                    : std::vector<std::string>{"B", "C", "S", "threads", "algo"});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK_TEMPLATE(BM_Conv2dForward, float)->Apply([](auto* b) { conv_shapes(b, false); });
BENCHMARK_TEMPLATE(BM_Conv2dBackward, float)->Apply([](auto* b) { conv_shapes(b, true); });
// The E1 stage changes: 3×3 stride 2 16→32 at 28², 32→64 at 14²; 1×1 stride 2 the same.
void strided_shapes(benchmark::internal::Benchmark* b, bool backward) {
  for (int threads : {1, 2})
    for (const auto& [ci, co, S, k] : {std::tuple{16, 32, 28, 3}, std::tuple{32, 64, 14, 3}, std::tuple{16, 32, 28, 1},
                                       std::tuple{32, 64, 14, 1}})
      for (int chunked : {0, 1}) {
        if (backward) b->Args({128, ci, co, S, k, 2, threads, chunked, 0, 0});
        else b->Args({128, ci, co, S, k, 2, threads, chunked, 0});
      }
  b->ArgNames(backward ? std::vector<std::string>{"B", "Ci", "Co", "S", "k", "s", "threads", "chunked", "nb", "part"}
                       : std::vector<std::string>{"B", "Ci", "Co", "S", "k", "s", "threads", "chunked", "nb"});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
// Images per chunk swept at 1 thread (nb 0 = automatic), forward, for choosing the default.
void chunk_sweep(benchmark::internal::Benchmark* b) {
  for (const auto& [ci, co, S, k] : {std::tuple{16, 32, 28, 3}, std::tuple{32, 64, 14, 3}, std::tuple{16, 32, 28, 1},
                                     std::tuple{32, 64, 14, 1}})
    for (int nb : {1, 2, 3, 4, 6, 8, 12, 16, 24, 32}) b->Args({128, ci, co, S, k, 2, 1, 1, nb});
  b->ArgNames({"B", "Ci", "Co", "S", "k", "s", "threads", "chunked", "nb"});
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}
BENCHMARK_TEMPLATE(BM_Conv2dStridedForward, float)->Apply([](auto* b) { strided_shapes(b, false); });
BENCHMARK_TEMPLATE(BM_Conv2dStridedBackward, float)->Apply([](auto* b) { strided_shapes(b, true); });
BENCHMARK_TEMPLATE(BM_Conv2dStridedForward, float)->Name("BM_Conv2dChunkSweep")->Apply(chunk_sweep);
BENCHMARK_TEMPLATE(BM_Conv2dGemmOnly, float)->Args({128, 16, 28})->Args({128, 32, 14})->Args({128, 64, 7})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ResNetTrainStep)->Arg(1)->Arg(2)->UseRealTime()->MinTime(3.0)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
