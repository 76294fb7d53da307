// Checks that pass format no message, and a warm training step or inference
// batch allocates nothing: the hot calls allocate nothing once their buffers
// exist (core/error.hpp: messages are joined only on failure). Counts every
// allocation of this test program, on every thread: the global operator new,
// and (glibc) the C allocator itself, which Eigen's aligned_malloc, libgomp
// and the aligned operator new call directly.
#include <catch2/catch.hpp>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <new>

#include "lamina/lamina.hpp"

namespace {
std::atomic<long> news{0};     // global operator new calls
std::atomic<long> mallocs{0};  // C allocator calls (operator new's included)
}  // namespace
// AddressSanitizer keeps its own allocator (a replaced operator new or malloc
// trips its checks): the count runs in the other builds.
#if !defined(__SANITIZE_ADDRESS__)
#define LAMINA_COUNT_ALLOCATIONS 1
void* operator new(std::size_t n) {
  ++news;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GLIBC__)
#define LAMINA_COUNT_MALLOC 1
// glibc's own entry points, which the replacements below forward to.
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
void* malloc(std::size_t n) noexcept {
  ++mallocs;
  return __libc_malloc(n);
}
void* calloc(std::size_t k, std::size_t n) noexcept {
  ++mallocs;
  return __libc_calloc(k, n);
}
void* realloc(void* p, std::size_t n) noexcept {
  ++mallocs;
  return __libc_realloc(p, n);
}
void* memalign(std::size_t a, std::size_t n) noexcept {
  ++mallocs;
  return __libc_memalign(a, n);
}
void* aligned_alloc(std::size_t a, std::size_t n) noexcept { return memalign(a, n); }
int posix_memalign(void** out, std::size_t a, std::size_t n) noexcept {
  void* p = memalign(a, n);
  if (p == nullptr) return ENOMEM;
  *out = p;
  return 0;
}
void free(void* p) noexcept { __libc_free(p); }
}
#endif
#endif

using namespace lamina;

/// Allocations made by f(): C allocator calls (operator new's among them),
/// or operator new calls where the C allocator is not counted.
template <class F>
long allocations_of(F&& f) {
#if defined(LAMINA_COUNT_MALLOC)
  std::atomic<long>& count = mallocs;
#else
  std::atomic<long>& count = news;
#endif
  const long before = count.load();
  f();
  return count.load() - before;
}

TEST_CASE("passing checks allocate nothing", "[errors][alloc]") {
#if !defined(LAMINA_COUNT_ALLOCATIONS)
  SUCCEED("allocation counting is off under AddressSanitizer");
  return;
#endif
  Rng rng(1);
  Linear<float> lin(8, 4, rng);
  Residual<Linear<float>> res(Linear<float>(8, 8, rng));
  laurel::Options o;
  Laurel<Linear<float>, laurel::RW_LR> lau(Linear<float>(8, 8, rng), 8, o, rng);
  Conv2d<float> conv({.in_channels = 2, .out_channels = 3, .padding = 1}, rng);
  BatchNorm2d<float> bn(3);
  RMSNorm<float> rms(8);
  SoftmaxCrossEntropy<float> loss;
  Tensor<float> x(Shape{5, 8}), y(Shape{5, 4}), logits(Shape{5, 4}, 0.5f);
  const std::vector<std::int32_t> labels{0, 1, 2, 3, 0};
  const Shape dense{5, 8}, image{2, 2, 6, 6};

  CHECK(allocations_of([&] {
          (void)lin.output_shape(dense);
          (void)res.output_shape(dense);
          (void)lau.output_shape(dense);
          (void)rms.output_shape(dense);
          (void)conv.output_shape(image);
          (void)bn.output_shape(Shape{2, 3, 6, 6});
          (void)x.cview().slice(1, 3);
          require(true, "Module", detail::text("labels[", 3, "]"), detail::text("in [0, ", 10, ")"), 4);
        }) == 0);
  lin.forward(x.cview(), y.view());  // sizes nothing: Linear keeps only a view
  CHECK(allocations_of([&] { lin.forward(x.cview(), y.view()); }) == 0);
  (void)loss.forward(logits.cview(), labels);  // first call sizes the buffers
  CHECK(allocations_of([&] { (void)loss.forward(logits.cview(), labels); }) == 0);
  // A failing check does format its message.
  CHECK(allocations_of([&] { CHECK_THROWS_AS(lin.output_shape(Shape{5, 7}), shape_error); }) > 0);
}

TEST_CASE("the gradient all-reduce allocates nothing after construction", "[dist][alloc]") {
#if !defined(LAMINA_COUNT_ALLOCATIONS)
  SUCCEED("allocation counting is off under AddressSanitizer");
  return;
#endif
  Rng rng(2);
  Sequential<Linear<float>, Tanh<float>, Linear<float>> net(Linear<float>(8, 8, rng), Tanh<float>{},
                                                            Linear<float>(8, 3, rng));
  dist::LocalCommunicator comm;
  dist::GradientAllReduce<float> sync(net, comm);
  CHECK(allocations_of([&] {
          for (int step = 0; step < 3; ++step) (void)sync(4.0, 0.5, 2.0);
        }) == 0);
}

TEST_CASE("gemm is Eigen's product bit for bit, and reuses its packing buffers", "[gemm][alloc]") {
  using M = RowMatrix<float>;
  Rng rng(4);
  auto random = [&](index_t r, index_t c) {
    M m(r, c);
    for (index_t i = 0; i < m.size(); ++i) m.data()[i] = float(rng.uniform(-1.0, 1.0));
    return m;
  };
  struct Case {
    index_t rows, depth, cols;
  };
  // Large enough for heap packing buffers, a vector result, Eigen's tiny coefficient-based path.
  for (const Case s : {Case{64, 400, 1600}, Case{33, 144, 500}, Case{1, 70, 90}, Case{3, 4, 5}}) {
    CAPTURE(s.rows, s.depth, s.cols);
    const M a = random(s.rows, s.depth), at = a.transpose(), b = random(s.depth, s.cols), bt = b.transpose();
    const M c0 = random(s.rows, s.cols);
    GemmSpace<float> space;
    for (const bool add : {false, true}) {
      CAPTURE(add);
      M want = c0, want_t = c0, got = c0, got_t = c0;
      const int threads = num_threads();
      set_num_threads(1);  // Eigen's product on one thread, as inside lamina's parallel loops
      if (add) want.noalias() += a * b, want_t.noalias() += at.transpose() * bt.transpose();
      else want.noalias() = a * b, want_t.noalias() = at.transpose() * bt.transpose();
      set_num_threads(threads);
      gemm(got, a, b, space, add);
      gemm(got_t, at.transpose(), bt.transpose(), space, add);  // column-major operands
      CHECK(got == want);
      CHECK(got_t == want_t);
      CHECK(allocations_of([&] { gemm(got, a, b, space, add); }) == 0);
    }
  }
}

namespace {
/// An E1 model (models/resnet.hpp: 3 stages of 2 BasicBlocks, 16/32/64 wide) on
/// a batch of 28×28 images, trained by SGD with momentum as bench_e1 does.
template <class Net>
struct Step {
  index_t batch;
  Net net;
  Tensor<float> x{Shape{batch, 1, 28, 28}, 0.25f}, y{Shape{batch, 10}}, dy{Shape{batch, 10}},
      dx{Shape{batch, 1, 28, 28}};
  std::vector<std::int32_t> labels = [this] {
    std::vector<std::int32_t> l;
    for (index_t i = 0; i < batch; ++i) l.push_back(std::int32_t(i % 10));
    return l;
  }();
  SoftmaxCrossEntropy<float> loss;
  optim::SGD<float> opt{net, optim::SgdOptions{.lr = 0.05, .momentum = 0.9, .weight_decay = 5e-4}};

  Step(index_t b, Net n) : batch(b), net(std::move(n)) {
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(i % 17) / 17.0f - 0.5f;
  }
  void step() {
    net.forward(x.cview(), y.view());
    (void)loss.forward(y.cview(), labels);
    dy.zero();
    loss.backward(dy.view());
    dx.zero();
    opt.zero_grad();
    net.backward(dy.cview(), dx.view());
    opt.step();
  }
  void infer() { net.infer(x.cview(), y.view()); }
};

/// Warm steps and inference batches of `e` at the default thread count and at 1.
template <class S>
void check_no_allocation(S& e) {
  const int threads = num_threads();
  for (int t : {threads, 1}) {
    set_num_threads(t);
    set_training(e.net, true);
    for (int i = 0; i < 2; ++i) e.step();  // the first steps size every buffer
    CAPTURE(t);
    CHECK(allocations_of([&] { e.step(); }) == 0);
    set_training(e.net, false);
    e.infer();
    CHECK(allocations_of([&] { e.infer(); }) == 0);
  }
  set_num_threads(threads);
}

/// The E1 LAUREL network of variant V (examples/laurel_e1.cpp: rank r, history 2).
template <laurel::Variant V>
Step<LaurelResNet<float, V>> laurel_step(index_t batch, index_t rank) {
  Rng rng(3);
  laurel::Options lo;
  lo.rank = rank, lo.history = 2;
  auto net = make_laurel_resnet<float, V>({}, lo, rng);
  if constexpr (V::lr) {  // B starts at zero: make the low-rank terms non-trivial
    visit_parameters(net, [](const ParamRef<float>& p) {
      if (p.name.ends_with("laurel.B") || p.name.ends_with("laurel.B1") || p.name.ends_with("laurel.B2"))
        for (index_t i = 0; i < p.value.size(); ++i) p.value.data()[i] = 0.01f * float(i % 7);
    });
  }
  return Step<LaurelResNet<float, V>>(batch, std::move(net));
}
}  // namespace

// Batch 16 already reaches Eigen's heap-allocated packing buffers (the
// chunked convolutions' GEMMs) and parallel loops of every size. One thread
// too: libgomp allocates the team of a one-thread region on every entry.
TEST_CASE("a warm E1 training step and inference batch allocate nothing", "[resnet][alloc]") {
#if !defined(LAMINA_COUNT_ALLOCATIONS)
  SUCCEED("allocation counting is off under AddressSanitizer");
  return;
#endif
  Rng rng(3);
  Step<ResNet<float>> e(16, make_resnet<float>({}, rng));
  check_no_allocation(e);
}

// Every LAUREL variant E1 trains (rw, rw_lr4, rw_lr8, rw_lr_pa), and LR and PA alone.
TEST_CASE("a warm E1 LAUREL training step and inference batch allocate nothing", "[laurel][alloc]") {
#if !defined(LAMINA_COUNT_ALLOCATIONS)
  SUCCEED("allocation counting is off under AddressSanitizer");
  return;
#endif
  SECTION("RW") {
    auto e = laurel_step<laurel::RW>(16, 4);
    check_no_allocation(e);
  }
  SECTION("RW+LR, r = 4") {
    auto e = laurel_step<laurel::RW_LR>(16, 4);
    check_no_allocation(e);
  }
  SECTION("RW+LR, r = 8") {
    auto e = laurel_step<laurel::RW_LR>(16, 8);
    check_no_allocation(e);
  }
  SECTION("RW+LR+PA") {
    auto e = laurel_step<laurel::RW_LR_PA>(16, 4);
    check_no_allocation(e);
  }
  SECTION("LR") {
    auto e = laurel_step<laurel::LR>(16, 4);
    check_no_allocation(e);
  }
  SECTION("PA") {
    auto e = laurel_step<laurel::PA>(16, 4);
    check_no_allocation(e);
  }
}

// A fixed-point solve sizes its buffers on the first call of a shape; a warm
// solve allocates nothing, for every solver, while the active samples shrink
// (the contraction's samples stop at different iterations).
TEST_CASE("a warm FPI solve and FPI layer inference allocate nothing", "[fpi][alloc]") {
#if !defined(LAMINA_COUNT_ALLOCATIONS)
  SUCCEED("allocation counting is off under AddressSanitizer");
  return;
#endif
  const index_t N = 24, D = 16;
  Rng rng(5);
  Tensor<float> A(Shape{D, D}), b(Shape{N, D});
  for (float& v : A.span()) v = float(rng.uniform(-1.8, 1.8) / std::sqrt(double(D)));
  for (float& v : b.span()) v = float(rng.uniform(-1, 1));
  // tanh(c_i z A + b_i), plain loops; c_i = (i + 1)/N: sample i contracts at its own rate.
  auto f = [&](ConstView<float> z, std::span<const index_t> rows, View<float> out) {
    for (std::size_t k = 0; k < rows.size(); ++k)
      for (index_t d = 0; d < D; ++d) {
        float s = 0;
        for (index_t e = 0; e < D; ++e) s += z.data()[index_t(k) * D + e] * A[e * D + d];
        out.data()[index_t(k) * D + d] = std::tanh(s * float(rows[k] + 1) / float(N) + b[rows[k] * D + d]);
      }
  };
  for (fpi::Method m : {fpi::Method::picard, fpi::Method::anderson, fpi::Method::broyden})
    for (index_t mem : {2, 5}) {
      INFO("method " << fpi::name(m) << ", memory " << mem);
      const fpi::SolverOptions o{.method = m, .tol = 1e-6, .max_iter = 60, .m = mem, .broyden_memory = mem};
      fpi::Solver<float> s;
      fpi::SolveReport r;
      Tensor<float> z(Shape{N, D});
      s.solve(f, z.view(), o, r);
      CHECK(r.max_iterations() > r.samples.front().iterations);  // the active rows do shrink
      z.zero();
      CHECK(allocations_of([&] { s.solve(f, z.view(), o, r); }) == 0);
      CHECK(r.all_converged());
    }
  auto layer = make_tanh_fpi<float>(D, D, rng, {});
  Tensor<float> x(Shape{N, D}), y(Shape{N, D});
  for (float& v : x.span()) v = float(rng.uniform(-1, 1));
  for (fpi::Method m : {fpi::Method::picard, fpi::Method::anderson}) {
    fpi::Options o = layer.options();
    o.forward.method = m;
    layer.set_options(o);
    layer.infer(x.cview(), y.view());
    CHECK(allocations_of([&] { layer.infer(x.cview(), y.view()); }) == 0);
  }
}
