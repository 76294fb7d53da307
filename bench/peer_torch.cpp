// lamina against LibTorch on the same work (issue 15): the kernels of
// spec/kernels.md, Conv2d and BatchNorm2d+ReLU at the E1 shapes, and the E1
// ResNet's training step and inference batch (bench/bench_e1.cpp's set-up).
//
// Each benchmark is one PAIR: the same inputs (the LibTorch side reads lamina's
// buffers through from_blob, and the E1 model gets lamina's weights copied in)
// go to both sides; before anything is timed the outputs are compared and the
// program aborts with a message when they disagree (tolerances at `tol_*`).
// Each iteration then runs both sides once, alternating which goes first, and
// the counters report the time of each side, their ratio lamina/LibTorch, and
// GFLOP/s or GB/s. Run with repetitions and random interleaving
// (bench/peer_torch.py does, with GLIBC_TUNABLES set for LibTorch's allocator).
//
// Both sides get the same thread count: lamina::set_num_threads and
// at::set_num_threads. The kernels are single-threaded in lamina and are run at 1
// thread only; the layers and the network at 1 and 2.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lamina/kernels/depthwise_conv3x3.hpp"
#include "lamina/kernels/kl_divergence.hpp"
#include "lamina/kernels/short_rows.hpp"
#include "lamina/kernels/softmax.hpp"
#include "lamina/kernels/weighted_aggregation.hpp"
#include "lamina/lamina.hpp"
#include "lamina/models/ela_resnet.hpp"

using namespace lamina;
namespace k = lamina::kernels;
using torch::indexing::Slice;

namespace {
// Agreement tolerances: max |lamina − LibTorch| / max |LibTorch| over the output.
constexpr double tol_kernel = 1e-4;  // float kernels, different summation orders
constexpr double tol_layer = 1e-3;   // convolutions (GEMM order), BatchNorm statistics
constexpr double tol_net = 2e-3;     // E1 logits through 14 conv+BN layers
constexpr double tol_grad = 1e-2;    // E1 parameter gradients (BN backward amplifies rounding)

// ---- buffers, views, checks ---------------------------------------------------------
Tensor<float> random(Shape s, std::uint64_t seed, double lo = -4, double hi = 4) {
  Rng r(seed);
  Tensor<float> t(s);
  for (float& v : t.span()) v = float(r.uniform(lo, hi));
  return t;
}
std::vector<std::int64_t> dims(const Shape& s) {
  std::vector<std::int64_t> d;
  for (int i = 0; i < s.rank(); ++i) d.push_back(s[i]);
  return d;
}
/// The LibTorch tensor over lamina's memory (no copy).
torch::Tensor wrap(const float* p, const Shape& s) {
  return torch::from_blob(const_cast<float*>(p), dims(s), torch::kFloat);
}
torch::Tensor wrap(const Tensor<float>& t) { return wrap(t.data(), t.shape()); }

/// max |a − b| / max |b|.
double rel_err(const torch::Tensor& lam, const torch::Tensor& ref) {
  const torch::Tensor a = lam.detach().to(torch::kDouble).reshape({-1}), b = ref.detach().to(torch::kDouble).reshape({-1});
  if (a.numel() != b.numel()) return std::numeric_limits<double>::infinity();
  const double scale = std::max(b.abs().max().item<double>(), 1e-30);
  return (a - b).abs().max().item<double>() / scale;
}
/// rel_err(lam, ref); aborts the program when above tol (PEER_TORCH_WARN_ONLY
/// set: prints every check and goes on, for diagnosis).
double agree(const std::string& what, const torch::Tensor& lam, const torch::Tensor& ref, double tol) {
  const double err = rel_err(lam, ref);
  const bool warn_only = std::getenv("PEER_TORCH_WARN_ONLY") != nullptr;
  if (warn_only) std::fprintf(stderr, "peer_torch: %s: %.3g (tolerance %.3g)\n", what.c_str(), err, tol);
  if (!(err <= tol)) {
    std::fprintf(stderr, "peer_torch: %s: lamina and LibTorch disagree: max|diff|/max|LibTorch| = %.3g > %.3g\n",
                 what.c_str(), err, tol);
    if (!warn_only) std::abort();
  }
  return err;
}
/// Against a double-precision LibTorch reference: lamina must be within tol of
/// it, or at most twice as far from it as LibTorch's own float result is.
double agree_exact(const std::string& what, const torch::Tensor& lam, const torch::Tensor& torch_float,
                   const torch::Tensor& ref, double tol) {
  return agree(what + " (vs double)", lam, ref, std::max(tol, 2 * rel_err(torch_float, ref)));
}

// ---- the timed pair -----------------------------------------------------------------
struct Pair {
  std::function<void()> lamina, torch;
  double flops = 0, bytes = 0;  ///< per call of one side (for GFLOP/s, GB/s)
  double err = 0;               ///< the agreement measured before timing
};
using Maker = std::function<Pair()>;

void set_threads(int n) {
  lamina::set_num_threads(n);
  at::set_num_threads(n);
}

/// The pair of the current benchmark, built once per benchmark run (Google
/// Benchmark calls the function several times while it sizes the iterations).
Pair& pair_for(const std::string& key, const Maker& make) {
  static std::string current;
  static std::unique_ptr<Pair> p;
  if (!p || current != key) {
    p.reset();  // free the previous pair's buffers first
    p = std::make_unique<Pair>(make());
    current = key;
  }
  return *p;
}

void time_pair(benchmark::State& st, const std::string& key, const Maker& make, int threads) {
  set_threads(threads);
  Pair& p = pair_for(key, make);
  p.lamina();  // warm: first-call allocations on both sides
  p.torch();
  using clock = std::chrono::steady_clock;
  double tl = 0, tt = 0;
  bool lamina_first = true;
  for (auto _ : st) {
    const auto t0 = clock::now();
    lamina_first ? p.lamina() : p.torch();
    const auto t1 = clock::now();
    lamina_first ? p.torch() : p.lamina();
    const auto t2 = clock::now();
    const double a = std::chrono::duration<double>(t1 - t0).count(), b = std::chrono::duration<double>(t2 - t1).count();
    tl += lamina_first ? a : b;
    tt += lamina_first ? b : a;
    lamina_first = !lamina_first;
  }
  const double n = double(st.iterations());
  st.counters["lamina_ms"] = 1e3 * tl / n;
  st.counters["torch_ms"] = 1e3 * tt / n;
  st.counters["ratio"] = tl / tt;
  st.counters["nthreads"] = threads;
  st.counters["check_err"] = p.err;
  if (p.flops > 0) {
    st.counters["lamina_GFLOPs"] = p.flops * n / tl * 1e-9;
    st.counters["torch_GFLOPs"] = p.flops * n / tt * 1e-9;
  }
  if (p.bytes > 0) {
    st.counters["lamina_GBs"] = p.bytes * n / tl * 1e-9;
    st.counters["torch_GBs"] = p.bytes * n / tt * 1e-9;
  }
}

std::vector<std::pair<std::string, std::pair<Maker, std::vector<int>>>>& registry() {
  static std::vector<std::pair<std::string, std::pair<Maker, std::vector<int>>>> r;
  return r;
}
void add(std::string name, Maker make, std::vector<int> threads = {1, 2}) {
  registry().push_back({std::move(name), {std::move(make), std::move(threads)}});
}

// ---- kernels (spec/kernels.md), sizes as bench_kernels -------------------------------
constexpr index_t row = 1024;
constexpr index_t l2 = 65536, dram = 32 * 1024 * 1024;
// Short rows (layer attention: R = B·G rows of t entries), t = 4.
constexpr index_t short_n = 4;

/// Softmax over rows of `width`: the per-row kernel (width 1024) or the across-rows
/// one (short rows), against at::softmax_out.
Pair softmax_pair(index_t n, index_t width) {
  auto a = std::make_shared<Tensor<float>>(random(Shape{n / width, width}, 1));
  auto p = std::make_shared<Tensor<float>>(a->shape());
  auto out = std::make_shared<torch::Tensor>(torch::empty(dims(a->shape())));
  const bool short_rows = width <= k::short_row_max;
  Pair r{.lamina =
             [=] {
               if (short_rows) k::softmax_rows_short(a->cview(), p->view());
               else k::softmax_rows(a->cview(), p->view());
             },
         .torch = [=] { at::softmax_out(*out, wrap(*a), 1); },
         .bytes = 2.0 * double(n) * 4};
  r.lamina();
  r.torch();
  r.err = agree(short_rows ? "softmax short rows" : "softmax rows", wrap(*p), *out, tol_kernel);
  return r;
}

Pair kl_logits_rows(index_t n) {
  const index_t R = n / row;
  auto a = std::make_shared<Tensor<float>>(random(Shape{R, row}, 1));
  auto b = std::make_shared<Tensor<float>>(random(Shape{R, row}, 2));
  auto o = std::make_shared<Tensor<float>>(Shape{R});
  auto to = std::make_shared<torch::Tensor>();
  Pair r{.lamina = [=] { k::kl_logits_rows(a->cview(), b->cview(), o->view()); },
         .torch =
             [=] {  // KL(softmax a ‖ softmax b) = Σ p (log p − log q)
               const torch::Tensor la = torch::log_softmax(wrap(*a), 1), lb = torch::log_softmax(wrap(*b), 1);
               *to = (la.exp() * (la - lb)).sum(1);
             },
         .bytes = 2.0 * double(n) * 4};
  r.lamina();
  r.torch();
  r.err = agree("KL from logits", wrap(*o), *to, tol_kernel);
  return r;
}

constexpr float kl_eps = 1e-6f;
torch::Tensor torch_kl_probs(const torch::Tensor& p, const torch::Tensor& q) {  // smoothing (x + ε)/(1 + nε)
  const double z = 1.0 + double(p.size(1)) * kl_eps;
  const torch::Tensor ps = (p + kl_eps) / z, qs = (q + kl_eps) / z;
  return (ps * (ps.log() - qs.log())).sum(1);
}

/// KL from probabilities over rows of `width`: the per-row kernel row by row
/// (width 1024, entries in [1e-4, 1e-3]) or the across-rows one (short rows,
/// entries in [0.05, 0.45]), against the LibTorch composition.
Pair kl_probs_pair(index_t n, index_t width) {
  const index_t R = n / width;
  const bool short_rows = width <= k::short_row_max;
  const double lo = short_rows ? 0.05 : 1e-4, hi = short_rows ? 0.45 : 1e-3;
  auto p = std::make_shared<Tensor<float>>(random(Shape{R, width}, 1, lo, hi));
  auto q = std::make_shared<Tensor<float>>(random(Shape{R, width}, 2, lo, hi));
  auto o = std::make_shared<Tensor<float>>(Shape{R});
  auto to = std::make_shared<torch::Tensor>();
  Pair r{.lamina =
             [=] {
               if (short_rows) k::kl_probs_rows_short(p->cview(), q->cview(), o->view(), kl_eps);
               else
                 for (index_t i = 0; i < R; ++i)
                   o->data()[i] = k::kl_probs(p->data() + i * width, q->data() + i * width, width, kl_eps);
             },
         .torch = [=] { *to = torch_kl_probs(wrap(*p), wrap(*q)); },
         .bytes = 2.0 * double(n) * 4};
  r.lamina();
  r.torch();
  r.err = agree(short_rows ? "KL from probabilities, short rows" : "KL from probabilities", wrap(*o), *to, tol_kernel);
  return r;
}

// Weighted aggregation of t = 4 arrays of length L, stored as one [t, L] tensor:
// LibTorch's natural form is the GEMV o = wᵀ V (one pass over V).
constexpr index_t agg_t = 4;
struct Agg {
  Tensor<float> V, dV, w, dw, o, dout;
  std::vector<const float*> vp;
  std::vector<float*> dvp;
  explicit Agg(index_t L)
      : V(random(Shape{agg_t, L}, 1)), dV(random(Shape{agg_t, L}, 9)), w(Tensor<float>(Shape{agg_t}, {0.1f, 0.2f, 0.3f, 0.4f})),
        dw(Shape{agg_t}), o(Shape{L}), dout(random(Shape{L}, 7)) {
    for (index_t s = 0; s < agg_t; ++s) {
      vp.push_back(V.data() + s * L);
      dvp.push_back(dV.data() + s * L);
    }
  }
  index_t L() const { return o.size(); }
};

Pair aggregation(index_t L) {
  auto a = std::make_shared<Agg>(L);
  auto to = std::make_shared<torch::Tensor>(torch::empty({1, L}));
  Pair r{.lamina = [=] { k::weighted_sum<k::default_arch, float>(a->vp, a->w.span(), a->o.data(), a->L()); },
         .torch = [=] { at::mm_out(*to, wrap(a->w).view({1, agg_t}), wrap(a->V)); },
         .bytes = double(agg_t + 1) * double(L) * 4};
  r.lamina();
  r.torch();
  r.err = agree("weighted aggregation", wrap(a->o), *to, tol_kernel);
  return r;
}

// Backward: ∂V += w ∂oᵀ (outer-product update, addr_) and ∂w += V ∂o (GEMV).
Pair aggregation_backward(index_t L) {
  auto a = std::make_shared<Agg>(L);
  auto tdV = std::make_shared<torch::Tensor>(wrap(a->dV).clone());
  auto tdw = std::make_shared<torch::Tensor>(torch::zeros({agg_t}));
  Pair r{.lamina =
             [=] {
               std::vector<float*> dvp = a->dvp;
               k::weighted_sum_backward<k::default_arch, float>(a->vp, a->w.span(), a->dout.data(), dvp, a->dw.span(),
                                                                a->L());
             },
         .torch =
             [=] {
               tdV->addr_(wrap(a->w), wrap(a->dout));
               tdw->add_(at::mv(wrap(a->V), wrap(a->dout)));
             },
         .bytes = (1.0 + 3.0 * agg_t) * double(L) * 4};
  r.lamina();
  r.torch();
  r.err = std::max(agree("aggregation backward dV", wrap(a->dV), *tdV, tol_kernel),
                   agree("aggregation backward dw", wrap(a->dw), *tdw, tol_kernel));
  return r;
}

// Depthwise 3×3 on [B, 16, 28, 28]: LibTorch's grouped convolution.
struct Depthwise {
  static constexpr index_t C = 16, H = 28;
  Tensor<float> x, w, y, dy, dx, dw;
  explicit Depthwise(index_t B)
      : x(random(Shape{B, C, H, H}, 1)), w(random(Shape{C, 1, 3, 3}, 2)), y(x.shape()), dy(random(x.shape(), 3)),
        dx(x.shape()), dw(w.shape()) {}
  index_t B() const { return x.shape()[0]; }
};
torch::Tensor torch_depthwise(const Depthwise& d) {
  return torch::conv2d(wrap(d.x), wrap(d.w), {}, 1, 1, 1, Depthwise::C);
}

Pair depthwise(index_t B) {
  auto d = std::make_shared<Depthwise>(B);
  auto to = std::make_shared<torch::Tensor>();
  Pair r{.lamina = [=] { k::depthwise_conv3x3(d->x.data(), d->w.data(), d->y.data(), d->B(), d->C, d->H, d->H); },
         .torch = [=] { *to = torch_depthwise(*d); },
         .bytes = 2.0 * double(d->x.size()) * 4};
  r.lamina();
  r.torch();
  r.err = agree("depthwise 3x3", wrap(d->y), *to, tol_kernel);
  return r;
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> torch_conv_backward(const torch::Tensor& dy,
                                                                            const torch::Tensor& x,
                                                                            const torch::Tensor& w, std::int64_t stride,
                                                                            std::int64_t pad, std::int64_t groups) {
  return at::convolution_backward(dy, x, w, c10::nullopt, {stride, stride}, {pad, pad}, {1, 1}, false, {0, 0}, groups,
                                  {true, true, false});
}

Pair depthwise_backward(index_t B) {
  auto d = std::make_shared<Depthwise>(B);
  auto tg = std::make_shared<std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>>();
  Pair r{.lamina =
             [=] {
               k::depthwise_conv3x3_backward(d->x.data(), d->w.data(), d->dy.data(), d->dx.data(), d->dw.data(),
                                             d->B(), d->C, d->H, d->H);
             },
         .torch = [=] { *tg = torch_conv_backward(wrap(d->dy), wrap(d->x), wrap(d->w), 1, 1, Depthwise::C); },
         .bytes = 4.0 * double(d->x.size()) * 4};
  r.lamina();  // dx, dw start at 0: one call is the gradient
  r.torch();
  r.err = std::max(agree("depthwise backward dx", wrap(d->dx), std::get<0>(*tg), tol_kernel),
                   agree("depthwise backward dw", wrap(d->dw), std::get<1>(*tg), tol_kernel));
  return r;
}

// ---- Conv2d at the E1 shapes, batch 128 -----------------------------------------------
constexpr index_t batch = 128;
struct ConvShape {
  const char* name;
  index_t cin, cout, hw, k, stride;
};
// The E1 ResNet's convolutions: stem, the 3×3 stride-1 of each stage, the
// stride-2 3×3 and the 1×1 stride-2 projections at the stage changes.
constexpr ConvShape conv_shapes[] = {
    {"stem_1to16_28", 1, 16, 28, 3, 1},        {"3x3_16ch_28", 16, 16, 28, 3, 1},
    {"3x3_32ch_14", 32, 32, 14, 3, 1},         {"3x3_64ch_7", 64, 64, 7, 3, 1},
    {"3x3s2_16to32_28", 16, 32, 28, 3, 2},     {"3x3s2_32to64_14", 32, 64, 14, 3, 2},
    {"1x1s2_16to32_28", 16, 32, 28, 1, 2},     {"1x1s2_32to64_14", 32, 64, 14, 1, 2},
};

struct Conv {
  ConvShape s;
  Conv2d<float> m;
  Tensor<float> x, y, dy, dx;
  torch::Tensor tw;  ///< lamina's weight, copied
  explicit Conv(const ConvShape& cs, Rng rng = Rng(5))
      : s(cs), m({cs.cin, cs.cout, cs.k, cs.k, cs.stride, cs.k / 2, false}, rng),
        x(random(Shape{batch, cs.cin, cs.hw, cs.hw}, 1, -1, 1)), y(m.output_shape(x.shape())),
        dy(random(y.shape(), 2, -1, 1)), dx(x.shape()) {
    visit_parameters(m, [&](const ParamRef<float>& p) { tw = wrap(p.value.data(), p.value.shape()).clone(); });
  }
  torch::Tensor forward_torch() const { return torch::conv2d(wrap(x), tw, {}, s.stride, s.k / 2); }
  double flops() const { return 2.0 * double(y.size()) * double(s.cin * s.k * s.k); }
  View<float> dW() {
    View<float> g;
    visit_parameters(m, [&](const ParamRef<float>& p) { g = p.grad; });
    return g;
  }
};

Pair conv_forward(const ConvShape& cs) {
  auto c = std::make_shared<Conv>(cs);
  auto to = std::make_shared<torch::Tensor>();
  Pair r{.lamina = [=] { c->m.forward(c->x.cview(), c->y.view()); },
         .torch = [=] { *to = c->forward_torch(); },
         .flops = c->flops()};
  r.lamina();
  r.torch();
  r.err = agree(std::string("conv forward ") + cs.name, wrap(c->y), *to, tol_layer);
  return r;
}

// Backward: the input and weight gradients (lamina adds into dx and dW; LibTorch
// returns fresh tensors, as its autograd's convolution_backward does).
Pair conv_backward(const ConvShape& cs) {
  auto c = std::make_shared<Conv>(cs);
  auto tg = std::make_shared<std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>>();
  c->m.forward(c->x.cview(), c->y.view());
  Pair r{.lamina = [=] { c->m.backward(c->dy.cview(), c->dx.view()); },
         .torch = [=] { *tg = torch_conv_backward(wrap(c->dy), wrap(c->x), c->tw, cs.stride, cs.k / 2, 1); },
         .flops = 2 * c->flops()};
  r.lamina();  // dx and dW start at 0
  r.torch();
  const std::string n = cs.name;
  r.err = std::max(agree("conv backward dx " + n, wrap(c->dx), std::get<0>(*tg), tol_layer),
                   agree("conv backward dW " + n, wrap(c->dW().data(), c->dW().shape()), std::get<1>(*tg), tol_layer));
  return r;
}

// ---- BatchNorm2d + ReLU, training mode ---------------------------------------------------
struct BnRelu {
  Sequential<BatchNorm2d<float>, ReLU<float>> m;
  Tensor<float> x, y, dy, dx;
  torch::Tensor gamma, beta, rmean, rvar;
  BnRelu(index_t C, index_t hw)
      : m(BatchNorm2d<float>(C), ReLU<float>{}), x(random(Shape{batch, C, hw, hw}, 1, -2, 3)), y(x.shape()),
        dy(random(x.shape(), 2, -1, 1)), dx(x.shape()), gamma(torch::ones({C})), beta(torch::zeros({C})),
        rmean(torch::zeros({C})), rvar(torch::ones({C})) {}
  // What autograd runs for relu(batch_norm(x)): native_batch_norm, relu; threshold_backward,
  // native_batch_norm_backward.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_torch() const {
    auto [out, mean, invstd] = at::native_batch_norm(wrap(x), gamma, beta, rmean, rvar, true, 0.1, 1e-5);
    return {out.relu_(), mean, invstd};
  }
  torch::Tensor backward_torch(const std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>& f) const {
    const torch::Tensor g = at::threshold_backward(wrap(dy), std::get<0>(f), 0);
    return std::get<0>(at::native_batch_norm_backward(g, wrap(x), gamma, rmean, rvar, std::get<1>(f), std::get<2>(f),
                                                       true, 1e-5, {true, true, true}));
  }
  double bytes() const { return 2.0 * double(x.size()) * 4; }
};
constexpr std::pair<index_t, index_t> bn_shapes[] = {{16, 28}, {32, 14}, {64, 7}};
std::string bn_name(index_t C, index_t hw) { return std::to_string(C) + "ch_" + std::to_string(hw); }

Pair bn_relu_forward(index_t C, index_t hw) {
  auto b = std::make_shared<BnRelu>(C, hw);
  auto to = std::make_shared<std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>>();
  Pair r{.lamina = [=] { b->m.forward(b->x.cview(), b->y.view()); },
         .torch = [=] { *to = b->forward_torch(); },
         .bytes = b->bytes()};
  r.lamina();
  r.torch();
  r.err = agree("BN+ReLU forward " + bn_name(C, hw), wrap(b->y), std::get<0>(*to), tol_layer);
  return r;
}
Pair bn_relu_backward(index_t C, index_t hw) {
  auto b = std::make_shared<BnRelu>(C, hw);
  b->m.forward(b->x.cview(), b->y.view());
  auto tf = std::make_shared<std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>>(b->forward_torch());
  auto tdx = std::make_shared<torch::Tensor>();
  Pair r{.lamina = [=] { b->m.backward(b->dy.cview(), b->dx.view()); },
         .torch = [=] { *tdx = b->backward_torch(*tf); },
         .bytes = 3.0 * double(b->x.size()) * 4};
  r.lamina();  // dx starts at 0
  r.torch();
  r.err = agree("BN+ReLU backward " + bn_name(C, hw), wrap(b->dx), *tdx, tol_layer);
  return r;
}

// ---- one LAUREL RW+LR block (modules/laurel.hpp, spec/laurel.md) -----------------------
// y = relu(α f(x) + β (s + s A B)), s = x (identity shortcut), (α, β) = 2 softmax(w),
// f = bn2(conv2(relu(bn1(conv1 x)))); the stage-1 block of the E1 LAUREL ResNet
// (16 ch, 28², batch 128). LibTorch: the same maths with autograd, s A B as two
// 1×1 convolutions over the channels. One pair = forward + backward (dx included).
/// LibTorch's copies of a lamina module's parameters and buffers, by lamina's
/// names, for functional LibTorch forms of the same maths (autograd backward).
struct Twin {
  std::map<std::string, torch::Tensor> t;
  template <class M>
  void copy_from(M& m) {
    visit_parameters(m, [&](const ParamRef<float>& p) {
      t[p.name] = wrap(p.value.data(), p.value.shape()).clone().requires_grad_(p.trainable);
    });
  }
  /// The same parameters in double (the reference of the checks).
  Twin in_double() const {
    Twin d;
    for (const auto& [n, v] : t) d.t[n] = v.detach().to(torch::kDouble).requires_grad_(v.requires_grad());
    return d;
  }
  torch::Tensor bn(const torch::Tensor& v, const std::string& n) {
    return torch::batch_norm(v, t[n + "weight"], t[n + "bias"], t[n + "running_mean"], t[n + "running_var"], true,
                             0.1, 1e-5, false);
  }
  /// bn2(conv2(relu(bn1(conv1 x)))) of a stride-1 BasicBlock body.
  torch::Tensor body(const torch::Tensor& x, const std::string& p) {
    const torch::Tensor h = bn(torch::conv2d(x, t[p + "conv1.weight"], {}, 1, 1), p + "bn1.").relu_();
    return bn(torch::conv2d(h, t[p + "conv2.weight"], {}, 1, 1), p + "bn2.");
  }
  void clear_grads() {
    for (auto& [n, v] : t)
      if (v.requires_grad()) v.mutable_grad() = torch::Tensor();
  }
  /// The largest disagreement over every trainable gradient of m (ref: in double).
  template <class M>
  double check_grads(M& m, Twin& ref, const std::string& what) {
    double err = 0;
    visit_parameters(m, [&](const ParamRef<float>& p) {
      if (p.trainable)
        err = std::max(err, agree_exact(what + " gradient " + p.name, wrap(p.grad.data(), p.grad.shape()),
                                        t[p.name].grad(), ref.t[p.name].grad(), tol_grad));
    });
    return err;
  }
};

/// A pair of training passes (forward, then backward with dx) of one lamina
/// module M against a functional LibTorch form F of the same maths.
template <class M>
struct TrainPair {
  M m;
  Tensor<float> x = random(Shape{batch, 16, 28, 28}, 1, -1, 1), y{x.shape()}, dy = random(x.shape(), 2, -1, 1),
                dx{x.shape()};
  Twin tw;
  torch::Tensor tx = wrap(x).clone().requires_grad_(true);
  std::function<torch::Tensor(Twin&, const torch::Tensor&)> f;
  TrainPair(M module, std::function<torch::Tensor(Twin&, const torch::Tensor&)> form)
      : m(std::move(module)), f(std::move(form)) {}
  void step_torch() {
    tw.clear_grads();
    tx.mutable_grad() = torch::Tensor();
    f(tw, tx).backward(wrap(dy));
  }
  void step_lamina() {
    zero_grad(m);
    dx.zero();
    m.forward(x.cview(), y.view());
    m.backward(dy.cview(), dx.view());
  }
};

/// Checks forward, dx and every gradient against LibTorch in double (the float
/// gradients through two BatchNorms lose digits on both sides), then times the
/// two training passes.
template <class M>
Pair train_pair(std::shared_ptr<TrainPair<M>> l, const std::string& what) {
  l->tw.copy_from(l->m);
  Twin ref = l->tw.in_double();
  const torch::Tensor rx = l->tx.detach().to(torch::kDouble).requires_grad_(true);
  const torch::Tensor ry = l->f(ref, rx);
  ry.backward(wrap(l->dy).to(torch::kDouble));
  l->step_lamina();
  const torch::Tensor ty = [&] {
    torch::NoGradGuard g;
    return l->f(l->tw, l->tx);
  }();
  l->step_torch();
  double err = agree_exact(what + " forward", wrap(l->y), ty, ry, tol_layer);
  err = std::max(err, agree_exact(what + " dx", wrap(l->dx), l->tx.grad(), rx.grad(), tol_layer));
  err = std::max(err, l->tw.check_grads(l->m, ref, what));
  return Pair{.lamina = [=] { l->step_lamina(); }, .torch = [=] { l->step_torch(); }, .err = err};
}

Pair laurel_block() {
  laurel::Options o{};
  Rng rng(3);
  auto block = make_laurel_basic_block<float, laurel::RW_LR>(16, 16, 1, o, rng);
  Rng draw(4);  // B starts at 0 and w at (0, 0): draw both, so that every term counts
  visit_parameters(block, [&](const ParamRef<float>& p) {
    if (p.name == "laurel.B" || p.name == "laurel.w")
      for (float& v : p.value.span()) v = float(draw.uniform(-0.5, 0.5));
  });
  auto form = [](Twin& tw, const torch::Tensor& x) {
    const torch::Tensor ab = 2 * torch::softmax(tw.t["laurel.w"], 0);
    const torch::Tensor &A = tw.t["laurel.A"], &B = tw.t["laurel.B"];  // A: [D, r], B: [r, D]
    const torch::Tensor lr = torch::conv2d(torch::conv2d(x, A.t().unsqueeze(2).unsqueeze(3)), B.t().unsqueeze(2).unsqueeze(3));
    return (ab[0] * tw.body(x, "") + ab[1] * (x + lr)).relu_();
  };
  return train_pair(std::make_shared<TrainPair<decltype(block)>>(std::move(block), form), "LAUREL");
}

// ---- MRLA-base: a stage of two attending blocks (models/ela_resnet.hpp) -------------------
// out_t = X_t + BN(LA_t), X_t = BasicBlock(x); y = GAP(X_t); Q, K = ECA conv1d(y);
// V = DWConv3x3(X_t); A_t = softmax_s(<Q_t, K_s>/sqrt d_h) over s = 1..t; LA_t = Σ_s A_t[s] V_s
// (spec/layer_attention.md §2–3). 16 ch, 28², batch 128, d_h = 16: the second
// block attends over both. Stage 1 of the E2 network with two blocks.
torch::Tensor eca(const torch::Tensor& y, const torch::Tensor& w) {
  return torch::conv1d(y.unsqueeze(1), w.view({1, 1, -1}), {}, 1, (w.size(0) - 1) / 2).squeeze(1);
}
torch::Tensor mrla_stage(Twin& tw, const torch::Tensor& x, index_t blocks, index_t dh) {
  std::vector<torch::Tensor> K, V;
  torch::Tensor h = x;
  for (index_t b = 0; b < blocks; ++b) {
    const std::string p = std::to_string(b) + ".";
    const torch::Tensor X = (tw.body(h, p) + h).relu_();
    const std::int64_t B = X.size(0), C = X.size(1), G = C / dh;
    const torch::Tensor y = X.mean({2, 3}), Q = eca(y, tw.t[p + "la.q.weight"]).view({B, G, dh});
    K.push_back(eca(y, tw.t[p + "la.k.weight"]).view({B, G, dh}));
    V.push_back(torch::conv2d(X, tw.t[p + "la.v.weight"], {}, 1, 1, 1, C).view({B, G, -1}));
    std::vector<torch::Tensor> scores;
    for (const torch::Tensor& k : K) scores.push_back((Q * k).sum(2));
    const torch::Tensor A = torch::softmax(torch::stack(scores, 2) / std::sqrt(double(dh)), 2);  // [B, G, t]
    torch::Tensor LA = A.select(2, 0).unsqueeze(2) * V[0];
    for (std::size_t s = 1; s < V.size(); ++s) LA = LA + A.select(2, std::int64_t(s)).unsqueeze(2) * V[s];
    h = X + tw.bn(LA.view(X.sizes()), p + "la.bn.");
  }
  return h;
}
Pair mrla_block() {
  Rng rng(6);
  Stage<AttentionBasicBlock<float>> stage;
  const auto ao = attention::options_of(attention::Method::mrla_base);
  for (int b = 0; b < 2; ++b) stage.push_back(AttentionBasicBlock<float>(make_basic_block<float>(16, 16, 1, rng), 16, ao, rng));
  auto form = [](Twin& tw, const torch::Tensor& x) { return mrla_stage(tw, x, 2, 16); };
  return train_pair(std::make_shared<TrainPair<decltype(stage)>>(std::move(stage), form), "MRLA-base");
}

// ---- the E1 ResNet in torch::nn (torchvision's names, as lamina's) ----------------------
namespace tnn = torch::nn;
tnn::Conv2dOptions conv_opts(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride) {
  return tnn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false);
}
struct TBlockImpl : tnn::Module {
  tnn::Conv2d conv1{nullptr}, conv2{nullptr};
  tnn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  tnn::Sequential downsample{nullptr};
  TBlockImpl(std::int64_t in, std::int64_t out, std::int64_t stride)
      : conv1(register_module("conv1", tnn::Conv2d(conv_opts(in, out, 3, stride)))),
        conv2(register_module("conv2", tnn::Conv2d(conv_opts(out, out, 3, 1)))),
        bn1(register_module("bn1", tnn::BatchNorm2d(out))),
        bn2(register_module("bn2", tnn::BatchNorm2d(out))) {
    if (stride != 1 || in != out)
      downsample = register_module("downsample", tnn::Sequential(tnn::Conv2d(conv_opts(in, out, 1, stride)),
                                                                 tnn::BatchNorm2d(out)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = bn2(conv2(bn1(conv1(x)).relu_()));
    y += downsample ? downsample->forward(x) : x;
    return y.relu_();
  }
};
TORCH_MODULE(TBlock);

struct TResNetImpl : tnn::Module {
  tnn::Conv2d conv1{nullptr};
  tnn::BatchNorm2d bn1{nullptr};
  tnn::Sequential layer1, layer2, layer3;
  tnn::Linear fc{nullptr};
  explicit TResNetImpl(const ResNetOptions& o)
      : conv1(register_module("conv1", tnn::Conv2d(conv_opts(o.in_channels, o.widths[0], 3, 1)))),
        bn1(register_module("bn1", tnn::BatchNorm2d(o.widths[0]))),
        fc(register_module("fc", tnn::Linear(o.widths[2], o.num_classes))) {
    tnn::Sequential* layers[] = {&layer1, &layer2, &layer3};
    std::int64_t in = o.widths[0];
    for (std::size_t s = 0; s < 3; ++s) {
      for (index_t b = 0; b < o.blocks_per_stage; ++b) {
        layers[s]->get()->push_back(TBlock(in, o.widths[s], (s > 0 && b == 0) ? 2 : 1));
        in = o.widths[s];
      }
      register_module("layer" + std::to_string(s + 1), *layers[s]);
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = bn1(conv1(x)).relu_();
    y = layer3->forward(layer2->forward(layer1->forward(y)));
    return fc(y.mean({2, 3}));
  }
};
TORCH_MODULE(TResNet);

/// f(lamina parameter or buffer, its LibTorch twin) for every lamina one; aborts
/// when a name is missing or the shapes differ other than by a transpose
/// (lamina's Linear weight is [in, out], LibTorch's [out, in]).
template <class Net, class F>
void for_each_twin(Net& net, tnn::Module& t, F&& f) {
  auto params = t.named_parameters(true), buffers = t.named_buffers(true);
  std::size_t matched = 0;
  visit_parameters(net, [&](const ParamRef<float>& p) {
    torch::Tensor* tw = params.find(p.name);
    if (!tw) tw = buffers.find(p.name);
    if (!tw) {
      std::fprintf(stderr, "peer_torch: lamina parameter %s has no LibTorch twin\n", p.name.c_str());
      std::abort();
    }
    const auto d = dims(p.value.shape());
    const bool transposed = tw->sizes().vec() != d;
    if (transposed && !(d.size() == 2 && tw->size(0) == d[1] && tw->size(1) == d[0])) {
      std::fprintf(stderr, "peer_torch: %s: lamina and LibTorch shapes differ\n", p.name.c_str());
      std::abort();
    }
    f(p, *tw, transposed);
    matched += p.trainable ? 1 : 0;
  });
  if (matched != params.size()) {
    std::fprintf(stderr, "peer_torch: %zu lamina parameters, %zu LibTorch ones\n", matched, params.size());
    std::abort();
  }
}
torch::Tensor as_torch(const View<float>& v, bool transposed) {
  const torch::Tensor t = wrap(v.data(), v.shape());
  return transposed ? t.t() : t;
}

struct E1 {
  ResNet<float> net;
  TResNet tnet{ResNetOptions{}};
  Tensor<float> x = random(Shape{batch, 1, 28, 28}, 2, -1, 1);
  Tensor<float> y{Shape{batch, 10}}, dy{Shape{batch, 10}}, dx{Shape{batch, 1, 28, 28}};
  std::vector<std::int32_t> labels;
  torch::Tensor tlabels;
  SoftmaxCrossEntropy<float> loss;
  E1() : net([] {
          Rng rng(1);
          return make_resnet<float>({}, rng);
        }()) {
    torch::NoGradGuard no_grad;
    for_each_twin(net, *tnet, [](const ParamRef<float>& p, torch::Tensor& t, bool tr) { t.copy_(as_torch(p.value, tr)); });
    for (index_t i = 0; i < batch; ++i) labels.push_back(std::int32_t(i % 10));
    tlabels = torch::from_blob(labels.data(), {batch}, torch::kInt32).to(torch::kLong);
  }
  torch::Tensor tx() const { return wrap(x); }
};

Pair e1_step() {
  auto e = std::make_shared<E1>();
  // Check before timing: one forward, loss and backward on both sides.
  e->net.forward(e->x.cview(), e->y.view());
  const float l = e->loss.forward(e->y.cview(), e->labels);
  e->dy.zero();
  e->loss.backward(e->dy.view());
  zero_grad(e->net);
  e->net.backward(e->dy.cview(), e->dx.view());
  e->tnet->zero_grad();
  const torch::Tensor ty = e->tnet->forward(e->tx());
  const torch::Tensor tl = torch::nn::functional::cross_entropy(ty, e->tlabels);
  tl.backward();
  double err = std::max(agree("E1 training logits", wrap(e->y), ty.detach(), tol_net),
                        agree("E1 loss", torch::tensor(l), tl.detach(), tol_net));
  for_each_twin(e->net, *e->tnet, [&](const ParamRef<float>& p, torch::Tensor& t, bool tr) {
    if (p.trainable) err = std::max(err, agree("E1 gradient " + p.name, as_torch(p.grad, tr), t.grad(), tol_grad));
  });
  auto opt = std::make_shared<optim::SGD<float>>(e->net, optim::SgdOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4});
  auto topt = std::make_shared<torch::optim::SGD>(
      e->tnet->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4));
  Pair r{.lamina =
             [=] {  // bench_e1's step
               e->net.forward(e->x.cview(), e->y.view());
               benchmark::DoNotOptimize(e->loss.forward(e->y.cview(), e->labels));
               e->dy.zero();
               e->loss.backward(e->dy.view());
               e->dx.zero();
               opt->zero_grad();
               e->net.backward(e->dy.cview(), e->dx.view());
               opt->step();
             },
         .torch =
             [=] {
               topt->zero_grad();
               torch::nn::functional::cross_entropy(e->tnet->forward(e->tx()), e->tlabels).backward();
               topt->step();
             },
         .err = err};
  return r;
}

Pair e1_infer() {
  auto e = std::make_shared<E1>();
  {  // one training forward on both sides moves the running statistics away from (0, 1)
    torch::NoGradGuard no_grad;
    e->net.forward(e->x.cview(), e->y.view());
    e->tnet->forward(e->tx());
  }
  set_training(e->net, false);
  e->tnet->eval();
  auto to = std::make_shared<torch::Tensor>();
  Pair r{.lamina = [=] { e->net.infer(e->x.cview(), e->y.view()); },
         .torch =
             [=] {
               c10::InferenceMode guard;
               *to = e->tnet->forward(e->tx());
             }};
  r.lamina();
  r.torch();
  r.err = agree("E1 inference logits", wrap(e->y), *to, tol_net);
  return r;
}

void register_all() {
  for (index_t n : {l2, dram}) {
    const std::string s = n == l2 ? "L2" : "DRAM";
    add("SoftmaxRows/" + s, [n] { return softmax_pair(n, row); }, {1});
    add("KLLogitsRows/" + s, [n] { return kl_logits_rows(n); }, {1});
    add("KLProbsRows/" + s, [n] { return kl_probs_pair(n, row); }, {1});
    add("SoftmaxShortRows/" + s, [n] { return softmax_pair(n, short_n); }, {1});
    add("KLProbsShortRows/" + s, [n] { return kl_probs_pair(n, short_n); }, {1});
  }
  for (index_t L : {index_t(32768), index_t(16 * 1024 * 1024)}) {
    const std::string s = L == 32768 ? "L2" : "DRAM";
    add("Aggregation/" + s, [L] { return aggregation(L); }, {1});
    add("AggregationBackward/" + s, [L] { return aggregation_backward(L); }, {1});
  }
  for (index_t B : {index_t(1), index_t(256)}) {
    const std::string s = B == 1 ? "L2" : "DRAM";
    add("Depthwise3x3/" + s, [B] { return depthwise(B); }, {1});
    add("Depthwise3x3Backward/" + s, [B] { return depthwise_backward(B); }, {1});
  }
  for (const ConvShape& cs : conv_shapes) {
    add(std::string("ConvForward/") + cs.name, [cs] { return conv_forward(cs); });
    add(std::string("ConvBackward/") + cs.name, [cs] { return conv_backward(cs); });
  }
  for (auto [C, hw] : bn_shapes) {
    add("BnReluForward/" + bn_name(C, hw), [C, hw] { return bn_relu_forward(C, hw); });
    add("BnReluBackward/" + bn_name(C, hw), [C, hw] { return bn_relu_backward(C, hw); });
  }
  add("LaurelRWLRBlock/16ch_28", laurel_block);
  add("MrlaBaseStage2Blocks/16ch_28", mrla_block);
  add("E1Step", e1_step);
  add("E1Infer", e1_infer);
}
}  // namespace

int main(int argc, char** argv) {
  register_all();
  for (auto& [name, entry] : registry()) {
    for (int t : entry.second) {
      const std::string full = name + "/threads:" + std::to_string(t);
      Maker make = entry.first;
      benchmark::RegisterBenchmark(full.c_str(), [full, make, t](benchmark::State& st) { time_pair(st, full, make, t); })
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond)
          ->ComputeStatistics("min", [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); })
          ->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
