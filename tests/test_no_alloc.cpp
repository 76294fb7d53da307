// Checks that pass format no message: the hot calls allocate nothing once their
// buffers exist (core/error.hpp: messages are joined only on failure). Counts
// every allocation through the global operator new of this test program.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>

#include "lamina/lamina.hpp"

namespace {
std::atomic<long> allocations{0};
}
// AddressSanitizer keeps its own allocator (a replaced operator new trips its
// alloc-dealloc checks): the count runs in the other builds.
#if !defined(__SANITIZE_ADDRESS__)
#define LAMINA_COUNT_ALLOCATIONS 1
void* operator new(std::size_t n) {
  ++allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#endif

using namespace lamina;

template <class F>
long allocations_of(F&& f) {
  const long before = allocations.load();
  f();
  return allocations.load() - before;
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
