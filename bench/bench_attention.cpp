// Layer-attention costs (issue 13 "Benchmarks"). Every benchmark interleaves the
// measured case with its reference in the same loop, so `ratio` (case time /
// reference time) sees the same machine state; the benchmark's own time is the
// case's.
//   BM_Branch/C/t:   one block's MRLA-base branch, forward + backward, with t − 1
//                    earlier blocks in the stage memory (memory depth t), at the
//                    E2 shapes (B = 128; C = 16, 32, 64 at 28², 14², 7²), against
//                    the same computation written directly with Eigen;
//                    `max_diff` is the largest difference of LA and dX between them
//   BM_E2Step<M>:    a training step (batch 128) of the E2 network (n = 4) with
//                    method M against MRLA-base: ELA with skips decided (blocks
//                    1 and 3 of each stage), ELA before any skip (the monitor's
//                    cost), MRLA-light, no layer attention
#include <benchmark/benchmark.h>

#include "lamina/core/eigen_core.hpp"  // Eigen, with GCC 12's AVX-512 false positives silenced

#include <chrono>
#include <cmath>

#include "lamina/attention/branch.hpp"
#include "lamina/lamina.hpp"
#include "lamina/models/ela_resnet.hpp"

using namespace lamina;

namespace {
using clk = std::chrono::steady_clock;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapR = Eigen::Map<RowMat>;
using CMapR = Eigen::Map<const RowMat>;

Tensor<float> random(Shape s, std::uint64_t seed) {
  Rng rng(seed);
  Tensor<float> t(s);
  for (float& v : t.span()) v = float(rng.uniform(-1, 1));
  return t;
}

template <class R, class M>
void interleaved(benchmark::State& st, R&& reference, M&& measured) {
  reference(), measured(), reference(), measured();  // allocate every buffer
  double tr = 0, tm = 0;
  for (auto _ : st) {
    const auto t0 = clk::now();
    reference();
    const auto t1 = clk::now();
    measured();
    const auto t2 = clk::now();
    const double a = std::chrono::duration<double>(t1 - t0).count(), b = std::chrono::duration<double>(t2 - t1).count();
    tr += a, tm += b;
    st.SetIterationTime(b);
  }
  const double n = double(st.iterations());
  st.counters["ref_ms"] = 1e3 * tr / n;
  st.counters["case_ms"] = 1e3 * tm / n;
  st.counters["ratio"] = tm / tr;
}

// The inputs of one block's branch at memory depth t: X, dLA and the earlier K, V.
struct BranchData {
  index_t B, C, H, W, t;
  Tensor<float> X, dLA;
  std::vector<Tensor<float>> K, V;  // earlier blocks
  BranchData(index_t B_, index_t C_, index_t H_, index_t t_) : B(B_), C(C_), H(H_), W(H_), t(t_) {
    X = random({B, C, H, W}, 1), dLA = random({B, C, H, W}, 2);
    for (index_t j = 0; j + 1 < t; ++j) K.push_back(random({B, C}, 10 + j)), V.push_back(random({B, C, H, W}, 40 + j));
  }
};

// MRLA-base forward + backward written directly with Eigen expressions.
class EigenBranch {
 public:
  EigenBranch(const BranchData& d, attention::LayerAttentionBranch<float>& br)
      : d_(d), wq_(br.wq().data()), wk_(br.wk().data()), wv_(br.wv().data()), k_(br.kernel_size()), dh_(br.head_dim()) {
    G_ = d.C / dh_, R_ = d.B * G_, HW_ = d.H * d.W, L_ = dh_ * HW_;
    LA_.resize(d.B * d.C, HW_), dX_.resize(d.B * d.C, HW_), V_.resize(d.B * d.C, HW_), dV_.resize(d.B * d.C, HW_);
    for (index_t j = 0; j + 1 < d.t; ++j) dKm_.emplace_back(d.B, d.C), dVm_.emplace_back(d.B * d.C, HW_);
    pad_.setZero(d.H + 2, d.W + 2);
  }
  const RowMat& LA() const { return LA_; }
  const RowMat& dX() const { return dX_; }

  void run() {
    forward();
    backward();
  }

 private:
  const float* Kp(index_t s) const { return s + 1 == d_.t ? K_.data() : d_.K[std::size_t(s)].data(); }
  const float* Vp(index_t s) const { return s + 1 == d_.t ? V_.data() : d_.V[std::size_t(s)].data(); }
  float* dKp(index_t s) { return s + 1 == d_.t ? dK_.data() : dKm_[std::size_t(s)].data(); }
  float* dVp(index_t s) { return s + 1 == d_.t ? dV_.data() : dVm_[std::size_t(s)].data(); }

  void conv1d(const float* w, RowMat& out) const {
    const index_t h = (k_ - 1) / 2, C = d_.C;
    out.setZero(d_.B, C);
    for (index_t j = 0; j < k_; ++j) {
      const index_t lo = std::max<index_t>(0, h - j), hi = std::min<index_t>(C, C + h - j);
      out.middleCols(lo, hi - lo) += w[j] * y_.middleCols(lo + j - h, hi - lo);
    }
  }
  void conv1d_backward(const float* w, const RowMat& dout, float* dw) {
    const index_t h = (k_ - 1) / 2, C = d_.C;
    for (index_t j = 0; j < k_; ++j) {
      const index_t lo = std::max<index_t>(0, h - j), hi = std::min<index_t>(C, C + h - j);
      dy_.middleCols(lo + j - h, hi - lo) += w[j] * dout.middleCols(lo, hi - lo);
      dw[j] += dout.middleCols(lo, hi - lo).cwiseProduct(y_.middleCols(lo + j - h, hi - lo)).sum();
    }
  }
  void forward() {
    const CMapR X(d_.X.data(), d_.B * d_.C, HW_);
    y_.resize(d_.B, d_.C);
    Eigen::Map<Eigen::VectorXf>(y_.data(), d_.B * d_.C) = X.rowwise().mean();
    conv1d(wq_, Q_);
    conv1d(wk_, K_);
    for (index_t p = 0; p < d_.B * d_.C; ++p) {
      pad_.block(1, 1, d_.H, d_.W) = CMapR(d_.X.data() + p * HW_, d_.H, d_.W);
      MapR v(V_.data() + p * HW_, d_.H, d_.W);
      const float* w = wv_ + (p % d_.C) * 9;
      v = w[0] * pad_.block(0, 0, d_.H, d_.W);
      for (int u = 0; u < 3; ++u)
        for (int q = 0; q < 3; ++q)
          if (u || q) v += w[u * 3 + q] * pad_.block(u, q, d_.H, d_.W);
    }
    const index_t t = d_.t;
    A_.resize(R_, t);
    const float sc = 1 / std::sqrt(float(dh_));
    for (index_t r = 0; r < R_; ++r) {
      const index_t b = r / G_, off = (r % G_) * dh_;
      for (index_t s = 0; s < t; ++s)
        A_(r, s) = sc * Q_.row(b).segment(off, dh_).dot(CMapR(Kp(s), d_.B, d_.C).row(b).segment(off, dh_));
      A_.row(r) = (A_.row(r).array() - A_.row(r).maxCoeff()).exp();
      A_.row(r) /= A_.row(r).sum();
    }
    MapR la(LA_.data(), R_, L_);
    for (index_t r = 0; r < R_; ++r) {
      la.row(r) = A_(r, 0) * CMapR(Vp(0), R_, L_).row(r);
      for (index_t s = 1; s < t; ++s) la.row(r) += A_(r, s) * CMapR(Vp(s), R_, L_).row(r);
    }
  }
  void backward() {
    const index_t t = d_.t;
    dV_.setZero(), dK_.setZero(d_.B, d_.C), dQ_.setZero(d_.B, d_.C), dy_.setZero(d_.B, d_.C), dX_.setZero();
    for (auto& m : dKm_) m.setZero();
    for (auto& m : dVm_) m.setZero();
    dA_.resize(R_, t);
    const CMapR g(d_.dLA.data(), R_, L_);
    for (index_t r = 0; r < R_; ++r)
      for (index_t s = 0; s < t; ++s) {
        dA_(r, s) = g.row(r).dot(CMapR(Vp(s), R_, L_).row(r));
        MapR(dVp(s), R_, L_).row(r) += A_(r, s) * g.row(r);
      }
    const float sc = 1 / std::sqrt(float(dh_));
    for (index_t r = 0; r < R_; ++r) {
      const float dot = dA_.row(r).dot(A_.row(r));
      const index_t b = r / G_, off = (r % G_) * dh_;
      for (index_t s = 0; s < t; ++s) {
        const float ds = sc * A_(r, s) * (dA_(r, s) - dot);
        dQ_.row(b).segment(off, dh_) += ds * CMapR(Kp(s), d_.B, d_.C).row(b).segment(off, dh_);
        MapR(dKp(s), d_.B, d_.C).row(b).segment(off, dh_) += ds * Q_.row(b).segment(off, dh_);
      }
    }
    conv1d_backward(wq_, dQ_, dwq_);
    conv1d_backward(wk_, dK_, dwk_);
    for (index_t p = 0; p < d_.B * d_.C; ++p) {
      pad_.block(1, 1, d_.H, d_.W) = CMapR(d_.X.data() + p * HW_, d_.H, d_.W);
      dpad_.setZero(d_.H + 2, d_.W + 2);
      const CMapR dv(dV_.data() + p * HW_, d_.H, d_.W);
      const float* w = wv_ + (p % d_.C) * 9;
      for (int u = 0; u < 3; ++u)
        for (int q = 0; q < 3; ++q) {
          dpad_.block(u, q, d_.H, d_.W) += w[u * 3 + q] * dv;
          dwv_[(p % d_.C) * 9 + u * 3 + q] += dv.cwiseProduct(pad_.block(u, q, d_.H, d_.W)).sum();
        }
      MapR(dX_.data() + p * HW_, d_.H, d_.W) += dpad_.block(1, 1, d_.H, d_.W);
    }
    dX_.colwise() += Eigen::Map<const Eigen::VectorXf>(dy_.data(), d_.B * d_.C) / float(HW_);
  }

  const BranchData& d_;
  const float *wq_, *wk_, *wv_;
  index_t k_, dh_, G_ = 1, R_ = 1, HW_ = 1, L_ = 1;
  RowMat y_, Q_, K_, V_, A_, LA_, dA_, dQ_, dK_, dV_, dy_, dX_, pad_, dpad_;
  std::vector<RowMat> dKm_, dVm_;
  float dwq_[9] = {}, dwk_[9] = {};
  std::vector<float> dwv_store_ = std::vector<float>(9 * 256);
  float* dwv_ = dwv_store_.data();
};

// lamina's branch on the same data.
struct LaminaBranch {
  const BranchData& d;
  attention::LayerAttentionBranch<float>& br;
  StageMemory<float> mem;
  attention::LayerAttentionBranch<float>::Cache c;
  Tensor<float> LA, dX;
  LaminaBranch(const BranchData& d_, attention::LayerAttentionBranch<float>& b) : d(d_), br(b), LA(d.X.shape()), dX(d.X.shape()) {}
  void run() {
    mem.reset(std::size_t(d.t), true);
    for (std::size_t j = 0; j + 1 < std::size_t(d.t); ++j) {
      mem.publish(j, memory_key::attention_k, d.K[j].cview());
      mem.publish(j, memory_key::attention_v, d.V[j].cview());
    }
    br.forward(d.X.cview(), LA.view(), c, BlockMemory<float>(mem, std::size_t(d.t - 1)));
    fill_zero(dX.data(), dX.size());
    br.backward(c, d.dLA.cview(), dX.view());
  }
};

void BM_Branch(benchmark::State& st) {
  set_num_threads(1);
  const index_t C = st.range(0), t = st.range(1), H = C == 16 ? 28 : C == 32 ? 14 : 7;
  const BranchData d(128, C, H, t);
  Rng rng(3);
  attention::LayerAttentionBranch<float> br(C, {}, rng);
  EigenBranch eig(d, br);
  LaminaBranch lam(d, br);
  eig.run(), lam.run();
  double diff = 0;
  for (index_t i = 0; i < lam.LA.size(); ++i) {
    diff = std::max(diff, double(std::abs(lam.LA[i] - eig.LA().data()[i])));
    diff = std::max(diff, double(std::abs(lam.dX[i] - eig.dX().data()[i])));
  }
  interleaved(st, [&] { eig.run(); }, [&] { lam.run(); });
  st.counters["max_diff"] = diff;
}
void branch_args(benchmark::internal::Benchmark* b) {
  for (index_t C : {16, 32, 64})
    for (index_t t = 1; t <= 16; ++t) b->Args({C, t});
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
      : net(std::move(n)), opt(net, {0.05, 0.9, 0.0, 5e-4, false}), x(random({B, 1, 28, 28}, 2)), y(Shape{B, 10}),
        dy(Shape{B, 10}), dx(x.shape()), labels(static_cast<std::size_t>(B)) {
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

enum class Case { ela_skipped, ela_monitor, light, none };
template <Case K>
void BM_E2Step(benchmark::State& st) {
  set_num_threads(int(st.range(0)));
  const ResNetOptions o{.blocks_per_stage = 4};
  Rng r1(1), r2(1);
  Stepper base(make_ela_resnet<float>(o, attention::Method::mrla_base, r1));
  if constexpr (K == Case::none) {
    Stepper other(make_resnet<float>(o, r2));
    interleaved(st, base, other);
  } else {
    const auto m = K == Case::light ? attention::Method::mrla_light : attention::Method::ela;
    Stepper other(make_ela_resnet<float>(o, m, r2));
    if constexpr (K == Case::ela_skipped) {
      for (std::size_t b : {1, 3}) {
        other.net.template get<resnet_stage_index(0)>()[b].set_skipped(true);
        other.net.template get<resnet_stage_index(1)>()[b].set_skipped(true);
        other.net.template get<resnet_stage_index(2)>()[b].set_skipped(true);
      }
    }
    interleaved(st, base, other);
  }
}

}  // namespace

BENCHMARK(BM_Branch)->Apply(branch_args)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_E2Step, Case::ela_skipped)->Arg(1)->Arg(2)->UseManualTime()->MinTime(3.0)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_E2Step, Case::ela_monitor)->Arg(1)->Arg(2)->UseManualTime()->MinTime(3.0)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_E2Step, Case::light)->Arg(1)->Arg(2)->UseManualTime()->MinTime(3.0)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_E2Step, Case::none)->Arg(1)->Arg(2)->UseManualTime()->MinTime(3.0)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
