// SIMD kernels against three baselines measured in the same binary
// (spec/kernels.md "Speed"): the STREAM triad (the bandwidth ceiling), the
// scalar reference compiled with the same flags, and the Eigen composition a
// user would write. Sizes: L1, L2 and DRAM-resident working sets.
//
// Bytes counted are the traffic of each algorithm as implemented: softmax reads
// its input twice (max/sum pass, write pass) and writes once: 3 streams, like
// the triad; the row-wise cases keep a row in cache between the passes, so the
// DRAM traffic is then one read and one write. KL from logits reads 2 streams;
// aggregation of t arrays reads t and writes 1.
#include <benchmark/benchmark.h>

#include "lamina/core/eigen_core.hpp"  // Eigen, with GCC 12's AVX-512 false positives silenced
#include <cmath>
#include <string>
#include <vector>

#include "lamina/core/aligned.hpp"
#include "lamina/core/random.hpp"
#include "lamina/modules/batchnorm2d.hpp"
#include "lamina/kernels/batchnorm.hpp"
#include "lamina/kernels/depthwise_conv3x3.hpp"
#include "lamina/kernels/kl_divergence.hpp"
#include "lamina/kernels/softmax.hpp"
#include "lamina/kernels/weighted_aggregation.hpp"

using namespace lamina;
namespace k = lamina::kernels;
using Vec = Eigen::Map<Eigen::ArrayXf>;
using CVec = Eigen::Map<const Eigen::ArrayXf>;

namespace {
// Every array is 64-byte aligned, as lamina::Tensor stores its data (a plain
// std::vector's large blocks start 16 bytes past a page, which splits every
// AVX-512 load over two cache lines).
using Buffer = aligned_vector<float>;
Buffer data(index_t n, std::uint64_t seed, float lo = -4, float hi = 4) {
  Rng r(seed);
  Buffer v(static_cast<std::size_t>(n));
  for (float& x : v) x = float(r.uniform(lo, hi));
  return v;
}
void account(benchmark::State& st, double bytes_per_iter, double items_per_iter) {
  st.SetBytesProcessed(std::int64_t(bytes_per_iter * double(st.iterations())));
  st.SetItemsProcessed(std::int64_t(items_per_iter * double(st.iterations())));
}
// Row length of the row-wise benchmarks: 1024 floats (4 KiB) stay in L1 between passes.
constexpr index_t row = 1024;
enum Impl { simd = 0, scalar = 1, eigen = 2 };

// ---- Bandwidth ceiling ---------------------------------------------------------
void BM_Triad(benchmark::State& st) {
  const index_t n = st.range(0);
  auto a = data(n, 1), b = data(n, 2), c = data(n, 3);
  for (auto _ : st) {
    const float s = 0.5f;
    float *pa = a.data();
    const float *pb = b.data(), *pc = c.data();
    for (index_t i = 0; i < n; ++i) pa[i] = pb[i] + s * pc[i];
    benchmark::ClobberMemory();
  }
  account(st, 3.0 * double(n) * 4, double(n));
}
void BM_Copy(benchmark::State& st) {
  const index_t n = st.range(0);
  auto a = data(n, 1), b = data(n, 2);
  for (auto _ : st) {
    std::copy(b.begin(), b.end(), a.begin());
    benchmark::ClobberMemory();
  }
  account(st, 2.0 * double(n) * 4, double(n));
}

// ---- Softmax over rows of 1024 ---------------------------------------------------
void BM_SoftmaxRows(benchmark::State& st) {
  const index_t n = st.range(0), impl = st.range(1), R = n / row;
  auto a = data(n, 1);
  Buffer p(static_cast<std::size_t>(n));
  for (auto _ : st) {
    if (impl == simd) {  // the row-wise entry point (prefetches ahead; beyond L2 streams p to memory)
      k::softmax_rows(ConstView<float>(a.data(), Shape{R, row}), View<float>(p.data(), Shape{R, row}));
      benchmark::ClobberMemory();
      continue;
    }
    for (index_t r = 0; r < R; ++r) {
      const float* x = a.data() + r * row;
      float* y = p.data() + r * row;
      if (impl == simd) k::softmax(x, y, row);
      else if (impl == scalar) k::ref::softmax(x, y, row);
      else {
        CVec xa(x, row);
        Vec ya(y, row);
        ya = (xa - xa.maxCoeff()).exp();
        ya /= ya.sum();
      }
    }
    benchmark::ClobberMemory();
  }
  account(st, 2.0 * double(n) * 4, double(n));  // one read + one write of DRAM per element
}
// One row as long as the whole working set: both passes stream from memory.
void BM_SoftmaxLongRow(benchmark::State& st) {
  const index_t n = st.range(0), impl = st.range(1);
  auto a = data(n, 1);
  Buffer p(static_cast<std::size_t>(n));
  for (auto _ : st) {
    if (impl == simd) k::softmax(a.data(), p.data(), n);
    else if (impl == scalar) k::ref::softmax(a.data(), p.data(), n);
    else {
      CVec xa(a.data(), n);
      Vec ya(p.data(), n);
      ya = (xa - xa.maxCoeff()).exp();
      ya /= ya.sum();
    }
    benchmark::ClobberMemory();
  }
  account(st, 3.0 * double(n) * 4, double(n));
}

// ---- KL divergence from logits, fused, rows of 1024 --------------------------------
void BM_KLLogitsRows(benchmark::State& st) {
  const index_t n = st.range(0), impl = st.range(1), R = n / row;
  auto a = data(n, 1), b = data(n, 2);
  std::vector<float> out(static_cast<std::size_t>(R));
  float sink = 0;
  for (auto _ : st) {
    if (impl == simd) {  // the row-wise entry point (prefetches ahead)
      k::kl_logits_rows(ConstView<float>(a.data(), Shape{R, row}), ConstView<float>(b.data(), Shape{R, row}),
                        View<float>(out.data(), Shape{R}));
      benchmark::DoNotOptimize(out.data());
      continue;
    }
    for (index_t r = 0; r < R; ++r) {
      const float *x = a.data() + r * row, *y = b.data() + r * row;
      if (impl == simd) sink += k::kl_logits(x, y, row);
      else if (impl == scalar) sink += k::ref::kl_logits(x, y, row);
      else {  // log-softmax of both with Eigen, then Σ p (la − lb)
        CVec xa(x, row), ya(y, row);
        const float ma = xa.maxCoeff(), mb = ya.maxCoeff();
        const float la = ma + std::log((xa - ma).exp().sum()), lb = mb + std::log((ya - mb).exp().sum());
        sink += ((xa - la).exp() * ((xa - la) - (ya - lb))).sum();
      }
    }
    benchmark::DoNotOptimize(sink);
  }
  account(st, 2.0 * double(n) * 4, double(n));
}

// ---- KL divergence from probabilities (ε = 1e-6), rows of 1024 --------------------
void BM_KLProbsRows(benchmark::State& st) {
  const index_t n = st.range(0), impl = st.range(1), R = n / row;
  auto p = data(n, 1, 1e-4f, 1e-3f), q = data(n, 2, 1e-4f, 1e-3f);
  float sink = 0;
  const float eps = 1e-6f;
  for (auto _ : st) {
    for (index_t r = 0; r < R; ++r) {
      const float *x = p.data() + r * row, *y = q.data() + r * row;
      if (impl == simd) sink += k::kl_probs(x, y, row, eps);
      else if (impl == scalar) sink += k::ref::kl_probs(x, y, row, eps);
      else {
        CVec xa(x, row), ya(y, row);
        sink += ((xa + eps) * ((xa + eps).log() - (ya + eps).log())).sum() / (1 + float(row) * eps);
      }
    }
    benchmark::DoNotOptimize(sink);
  }
  account(st, 2.0 * double(n) * 4, double(n));
}

// ---- Weighted aggregation of t = 4 arrays of length L -----------------------------
constexpr index_t agg_t = 4;
void BM_Aggregation(benchmark::State& st) {
  const index_t L = st.range(0), impl = st.range(1);
  std::vector<Buffer> v;
  std::vector<const float*> vp;
  for (index_t s = 0; s < agg_t; ++s) v.push_back(data(L, std::uint64_t(s + 1)));
  for (auto& x : v) vp.push_back(x.data());
  const std::vector<float> w{0.1f, 0.2f, 0.3f, 0.4f};
  Buffer o(static_cast<std::size_t>(L));
  for (auto _ : st) {
    if (impl == simd) k::weighted_sum<k::default_arch, float>(vp, w, o.data(), L);
    else if (impl == scalar) k::ref::weighted_sum<float>(vp, w, o.data(), L);
    else {  // what one writes with Eigen: one expression per term
      Vec oa(o.data(), L);
      oa = w[0] * CVec(vp[0], L);
      for (index_t s = 1; s < agg_t; ++s) oa += w[std::size_t(s)] * CVec(vp[std::size_t(s)], L);
    }
    benchmark::ClobberMemory();
  }
  account(st, double(agg_t + 1) * double(L) * 4, double(L));
}
void BM_AggregationBackward(benchmark::State& st) {
  const index_t L = st.range(0), impl = st.range(1);
  std::vector<Buffer> v, dv;
  std::vector<const float*> vp;
  std::vector<float*> dvp;
  for (index_t s = 0; s < agg_t; ++s) {
    v.push_back(data(L, std::uint64_t(s + 1)));
    dv.push_back(data(L, std::uint64_t(s + 9)));
  }
  for (auto& x : v) vp.push_back(x.data());
  for (auto& x : dv) dvp.push_back(x.data());
  const std::vector<float> w{0.1f, 0.2f, 0.3f, 0.4f};
  const auto dout = data(L, 7);
  std::vector<float> dw(agg_t, 0.0f);
  for (auto _ : st) {
    if (impl == simd) k::weighted_sum_backward<k::default_arch, float>(vp, w, dout.data(), dvp, dw, L);
    else if (impl == scalar) k::ref::weighted_sum_backward<float>(vp, w, dout.data(), dvp, dw, L);
    else {
      CVec g(dout.data(), L);
      for (index_t s = 0; s < agg_t; ++s) {
        Vec(dvp[std::size_t(s)], L) += w[std::size_t(s)] * g;
        dw[std::size_t(s)] += (g * CVec(vp[std::size_t(s)], L)).sum();
      }
    }
    benchmark::ClobberMemory();
  }
  // dout once, each v once, each dv read and written.
  account(st, (1.0 + 3.0 * agg_t) * double(L) * 4, double(L));
}

// ---- Depthwise 3×3 convolution on [B, C, 28, 28] ------------------------------------
void BM_DepthwiseConv3x3(benchmark::State& st) {
  const index_t B = st.range(0), impl = st.range(1), C = 16, H = 28, W = 28, n = B * C * H * W;
  auto x = data(n, 1), w = data(C * 9, 2);
  Buffer y(static_cast<std::size_t>(n));
  for (auto _ : st) {
    if (impl == simd) k::depthwise_conv3x3(x.data(), w.data(), y.data(), B, C, H, W);
    else k::ref::depthwise_conv3x3(x.data(), w.data(), y.data(), B, C, H, W);
    benchmark::ClobberMemory();
  }
  account(st, 2.0 * double(n) * 4, double(n));
}
void BM_DepthwiseConv3x3Backward(benchmark::State& st) {
  const index_t B = st.range(0), impl = st.range(1), C = 16, H = 28, W = 28, n = B * C * H * W;
  auto x = data(n, 1), w = data(C * 9, 2), dy = data(n, 3);
  Buffer dx(static_cast<std::size_t>(n)), dw(static_cast<std::size_t>(C * 9));
  for (auto _ : st) {
    if (impl == simd) k::depthwise_conv3x3_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), B, C, H, W);
    else k::ref::depthwise_conv3x3_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), B, C, H, W);
    benchmark::ClobberMemory();
  }
  account(st, 4.0 * double(n) * 4, double(n));  // x, dy read; dx read and written
}

// ---- BatchNorm2d at the E1 shapes (batch 128: 16×28², 32×14², 64×7²) --------------
// The first argument is the element count of the triad that moves the same
// bytes: forward reads x twice (statistics, apply) and writes y, 3 streams of
// N = 128·C·HW, like the triad of N; backward reads x and dy twice and reads
// and writes dx, 6 streams: the triad of 2N. Implementation 1 ("scalar") is
// kernels::ref: the former BatchNorm2d's double two-pass statistics, element by
// element (without its x̂ copy, so a little faster than it was).
struct BnShape {
  index_t C, HW;
};
BnShape bn_shape(index_t N) {
  const index_t C = N == 1605632 ? 16 : N == 802816 ? 32 : 64;
  return {C, N / (128 * C)};
}
/// The shape in the output ("64x7x7"): backward's argument is 2N, so its
/// names are one E1 shape off the forward's (BNBackward/802816 is 64×7²).
void bn_label(benchmark::State& st, BnShape d) {
  const index_t h = index_t(std::lround(std::sqrt(double(d.HW))));
  st.SetLabel(std::to_string(d.C) + "x" + std::to_string(h) + "x" + std::to_string(d.HW / h));
}
void bn_forward(benchmark::State& st, bool relu) {
  const index_t N = st.range(0), impl = st.range(1);
  const BnShape d = bn_shape(N);
  const Shape s{128, d.C, 1, d.HW};
  auto x = data(N, 1);
  Buffer y(static_cast<std::size_t>(N));
  BatchNorm2d<float> bn(d.C, {.relu = relu});
  BatchNorm2d<float>::Cache c;
  std::vector<double> mean(static_cast<std::size_t>(d.C)), var(mean);
  for (auto _ : st) {
    if (impl == simd) {
      bn.forward(ConstView<float>(x.data(), s), View<float>(y.data(), s), c);
    } else {
      k::ref::bn_moments(x.data(), 128, d.C, d.HW, mean.data(), var.data());
      k::ref::bn_forward(x.data(), static_cast<const float*>(nullptr), y.data(), {128, d.C, d.HW, 1e-5}, mean.data(),
                         var.data(), bn.gamma().data(), bn.beta().data(), relu);
    }
    benchmark::ClobberMemory();
  }
  account(st, 3.0 * double(N) * 4, double(N));
  bn_label(st, d);
}
void BM_BNForward(benchmark::State& st) { bn_forward(st, false); }
void BM_BNForwardReLU(benchmark::State& st) { bn_forward(st, true); }
void BM_BNBackward(benchmark::State& st) {
  const index_t N = st.range(0) / 2, impl = st.range(1);
  const BnShape d = bn_shape(N);
  const Shape s{128, d.C, 1, d.HW};
  auto x = data(N, 1), dy = data(N, 2), dx = data(N, 3);
  Buffer y(static_cast<std::size_t>(N));
  BatchNorm2d<float> bn(d.C);
  BatchNorm2d<float>::Cache c;
  bn.forward(ConstView<float>(x.data(), s), View<float>(y.data(), s), c);
  std::vector<double> mean(static_cast<std::size_t>(d.C)), var(mean);
  k::ref::bn_moments(x.data(), 128, d.C, d.HW, mean.data(), var.data());
  std::vector<float> dg(static_cast<std::size_t>(d.C)), db(dg);
  for (auto _ : st) {
    if (impl == simd)
      bn.backward(c, ConstView<float>(dy.data(), s), View<float>(dx.data(), s));
    else
      k::ref::bn_backward_full(x.data(), static_cast<const float*>(nullptr), dy.data(), dx.data(), static_cast<float*>(nullptr),
                               dg.data(), db.data(), {128, d.C, d.HW, 1e-5}, mean.data(), var.data(),
                               bn.gamma().data(), true);
    benchmark::ClobberMemory();
  }
  account(st, 6.0 * double(N) * 4, double(N));
  bn_label(st, d);
}
void sizes_bn(benchmark::internal::Benchmark* b, index_t scale) {
  for (index_t N : {index_t(1605632), index_t(802816), index_t(401408)})
    for (index_t impl : {simd, scalar}) b->Args({scale * N, impl});
}

// Working sets: L1 ≈ 16 KiB, L2 ≈ 512 KiB, DRAM ≈ 256 MiB (floats per array).
constexpr index_t l1 = 2048, l2 = 65536, dram = 32 * 1024 * 1024;
void sizes3(benchmark::internal::Benchmark* b) {
  for (index_t n : {l1, l2, dram})
    for (index_t impl : {simd, scalar, eigen}) b->Args({n, impl});
}
void sizes_agg(benchmark::internal::Benchmark* b) {  // (t + 1) arrays: L1 20 KiB, L2 640 KiB, DRAM 320 MiB
  for (index_t n : {index_t(1024), index_t(32768), index_t(16 * 1024 * 1024)})
    for (index_t impl : {simd, scalar, eigen}) b->Args({n, impl});
}
void sizes_dw(benchmark::internal::Benchmark* b) {  // batch 1 (L2) and 256 (DRAM, 25.7 MB per tensor)
  for (index_t B : {index_t(1), index_t(256)})
    for (index_t impl : {simd, scalar}) b->Args({B, impl});
}
}  // namespace

BENCHMARK(BM_Triad)->Arg(1024)->Arg(l1)->Arg(32768)->Arg(l2)->Arg(16 * 1024 * 1024)->Arg(dram);
// The byte counts of the BatchNorm benchmarks (E1 shapes: N and 2N).
BENCHMARK(BM_Triad)->Arg(401408)->Arg(802816)->Arg(1605632)->Arg(3211264);
BENCHMARK(BM_BNForward)->Apply([](auto* b) { sizes_bn(b, 1); });
BENCHMARK(BM_BNForwardReLU)->Apply([](auto* b) { sizes_bn(b, 1); });
BENCHMARK(BM_BNBackward)->Apply([](auto* b) { sizes_bn(b, 2); });
BENCHMARK(BM_Copy)->Arg(l1)->Arg(l2)->Arg(dram);
BENCHMARK(BM_SoftmaxRows)->Apply(sizes3);
BENCHMARK(BM_SoftmaxLongRow)->Apply(sizes3);
BENCHMARK(BM_KLLogitsRows)->Apply(sizes3);
BENCHMARK(BM_KLProbsRows)->Apply(sizes3);
BENCHMARK(BM_Aggregation)->Apply(sizes_agg);
BENCHMARK(BM_AggregationBackward)->Apply(sizes_agg);
BENCHMARK(BM_DepthwiseConv3x3)->Apply(sizes_dw);
BENCHMARK(BM_DepthwiseConv3x3Backward)->Apply(sizes_dw);

BENCHMARK_MAIN();
