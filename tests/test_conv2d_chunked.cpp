// Conv2d's chunked im2col (images in chunks, one GEMM per chunk) against its
// reference twin, the per-image im2col (Conv2dAlgorithm::im2col_per_image):
// forward, infer, dx, dW and db added into pre-filled buffers, for 1×1 and 3×3
// kernels, strides 1 and 2, paddings 0 and 1, with and without bias, batches
// 1, 3, 13 and 128 (not multiples of the chunk), automatic and fixed chunk
// sizes, at 1 and 2 threads; and the chunk split itself (detail::conv_chunks).
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "lamina/core/parallel.hpp"
#include "lamina/core/random.hpp"
#include "lamina/modules/conv2d.hpp"

using namespace lamina;

namespace {
template <class T>
Tensor<T> random_tensor(Shape s, std::uint64_t seed) {
  Rng r(seed);
  Tensor<T> t(s);
  for (T& v : t.span()) v = T(r.uniform(-1, 1));
  return t;
}
/// max |a − b| / max(1, max |b|).
template <class T>
double rel_diff(ConstView<T> a, ConstView<T> b) {
  REQUIRE(a.shape() == b.shape());
  double d = 0, m = 1;
  const auto sa = a.span(), sb = b.span();
  for (std::size_t i = 0; i < sb.size(); ++i) {
    d = std::max(d, std::abs(double(sa[i]) - double(sb[i])));
    m = std::max(m, std::abs(double(sb[i])));
  }
  return d / m;
}

struct Cfg {
  index_t cin, cout, k, s, p;
  bool bias;
  index_t H, W;
};

/// The chunked conv against the per-image one on the same weights and inputs.
template <class T>
void compare(const Cfg& g, index_t B, index_t chunk, Grad want, double tol) {
  Rng r1(7), r2(7);
  Conv2dOptions o{g.cin, g.cout, g.k, g.k, g.s, g.p, g.bias, Conv2dAlgorithm::im2col, chunk};
  Conv2d<T> fast(o, r1);
  o.algorithm = Conv2dAlgorithm::im2col_per_image;
  Conv2d<T> ref(o, r2);
  ref.weight().assign(fast.weight().cview());
  if (g.bias) ref.bias().assign(fast.bias().cview());

  const Tensor<T> x = random_tensor<T>({B, g.cin, g.H, g.W}, 11);
  const Shape ys = fast.output_shape(x.shape());
  Tensor<T> y1(ys), y2(ys), z1(ys), z2(ys);
  fast.forward(x.cview(), y1.view());
  ref.forward(x.cview(), y2.view());
  CHECK(rel_diff<T>(y1.cview(), y2.cview()) <= tol);
  fast.infer(x.cview(), z1.view());
  ref.infer(x.cview(), z2.view());
  CHECK(rel_diff<T>(z1.cview(), z2.cview()) <= tol);
  CHECK(rel_diff<T>(z1.cview(), y1.cview()) == 0);

  // Backward adds into dx and the parameter gradients: pre-fill them.
  const Tensor<T> dy = random_tensor<T>(ys, 13);
  Tensor<T> dx1 = random_tensor<T>(x.shape(), 17), dx2 = Tensor<T>::copy_of(dx1.cview());
  std::vector<Tensor<T>> g1, g2;
  std::uint64_t seed = 19;
  auto prefill = [&](Conv2d<T>& m, std::vector<Tensor<T>>& out) {
    std::uint64_t sd = seed;
    visit_parameters(m, [&](const ParamRef<T>& p) {
      Rng r(sd++);
      for (T& v : p.grad.span()) v = T(r.uniform(-1, 1));
      out.push_back(Tensor<T>::copy_of(p.grad));
    });
  };
  prefill(fast, g1);
  prefill(ref, g2);
  fast.backward(dy.cview(), dx1.view(), want);
  ref.backward(dy.cview(), dx2.view(), want);
  CHECK(rel_diff<T>(dx1.cview(), dx2.cview()) <= tol);
  std::vector<Tensor<T>> after1, after2;
  visit_parameters(fast, [&](const ParamRef<T>& p) { after1.push_back(Tensor<T>::copy_of(p.grad)); });
  visit_parameters(ref, [&](const ParamRef<T>& p) { after2.push_back(Tensor<T>::copy_of(p.grad)); });
  REQUIRE(after1.size() == after2.size());
  for (std::size_t i = 0; i < after1.size(); ++i) {
    INFO("parameter gradient " << i);
    CHECK(rel_diff<T>(after1[i].cview(), after2[i].cview()) <= tol);
    // The gradients did change (not just left at the pre-filled values), or were left alone.
    if (want.params) CHECK(rel_diff<T>(after1[i].cview(), g1[i].cview()) > 0);
    else CHECK(rel_diff<T>(after1[i].cview(), g1[i].cview()) == 0);
  }
  if (!want.input) CHECK(rel_diff<T>(dx1.cview(), dx2.cview()) == 0);
}

const Cfg configs[] = {
    {3, 4, 3, 2, 1, false, 9, 9},   // 3×3 stride 2 padding 1 (the E1 downsampling conv)
    {3, 4, 1, 2, 0, false, 9, 8},   // 1×1 stride 2 (the E1 projection shortcut)
    {2, 3, 3, 1, 0, true, 7, 6},    // 3×3 stride 1, no padding
    {2, 3, 3, 1, 1, true, 5, 5},    // 3×3 stride 1 padding 1 (forced im2col)
    {2, 5, 1, 1, 1, true, 4, 5},    // 1×1 stride 1 padding 1 (not pointwise)
    {3, 2, 1, 2, 1, true, 6, 7},    // 1×1 stride 2 padding 1
    {2, 3, 3, 2, 0, true, 8, 7},    // 3×3 stride 2, no padding, odd width
    {4, 3, 1, 1, 0, false, 5, 5},   // 1×1 stride 1 unpadded: the pointwise path, not chunked
};
}  // namespace

TEMPLATE_TEST_CASE("Conv2d chunked im2col matches the per-image reference", "[conv2d][chunked]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Cfg& g : configs)
      for (index_t B : {index_t(1), index_t(3), index_t(13)})
        for (index_t chunk : {index_t(0), index_t(1), index_t(2), index_t(5), index_t(64)}) {
          INFO("threads " << threads << " cin " << g.cin << " cout " << g.cout << " k " << g.k << " s " << g.s
                          << " p " << g.p << " bias " << g.bias << " B " << B << " chunk " << chunk);
          compare<T>(g, B, chunk, {}, tol);
        }
  }
  set_num_threads(saved);
}

TEST_CASE("Conv2d chunked im2col: batch 128, partial gradients", "[conv2d][chunked]") {
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Cfg& g : {configs[0], configs[1], configs[2]})
      for (index_t chunk : {index_t(0), index_t(12), index_t(5)})
        for (Grad want : {Grad{}, Grad{.input = true, .params = false}, Grad{.input = false, .params = true}}) {
          INFO("threads " << threads << " k " << g.k << " s " << g.s << " p " << g.p << " chunk " << chunk
                          << " input " << want.input << " params " << want.params);
          compare<float>(g, 128, chunk, want, 2e-5);
        }
  }
  set_num_threads(saved);
}

TEST_CASE("Conv2d chunked im2col on the E1 shapes", "[conv2d][chunked]") {
  // 16→32 3×3 stride 2 at 28² and 32→64 1×1 stride 2 at 14², batch 8.
  compare<float>({16, 32, 3, 2, 1, false, 28, 28}, 8, 0, {}, 2e-5);
  compare<float>({32, 64, 1, 2, 0, false, 14, 14}, 8, 0, {}, 2e-5);
}

TEST_CASE("Conv2d chunked im2col: the chunk split", "[conv2d][chunked]") {
  using detail::conv_chunks;
  // Fixed chunk size: ceil(B / chunk) chunks.
  CHECK(conv_chunks(13, 27, 16, 4, 2, 5) == 3);
  CHECK(conv_chunks(13, 27, 16, 4, 1, 1) == 13);
  CHECK(conv_chunks(3, 27, 16, 4, 2, 64) == 1);
  // Automatic: >= 512 columns a chunk within the budget, a multiple of the thread count, at most B.
  for (int t : {1, 2, 3})
    for (index_t B : {index_t(1), index_t(2), index_t(3), index_t(8), index_t(13), index_t(128)})
      for (auto [K, P] : {std::pair<index_t, index_t>{144, 196}, {288, 49}, {16, 196}, {32, 49}, {9, 784}}) {
        INFO("threads " << t << " B " << B << " K " << K << " P " << P);
        const index_t n = conv_chunks(B, K, P, 4, t, 0);
        CHECK(n >= 1);
        CHECK(n <= B);
        if (n < B) CHECK(n % t == 0);
        CHECK(n >= std::min<index_t>(B, t));
      }
  // E1 batch 128 at 2 threads: the 3×3 stride-2 convs take several images a chunk (within the
  // 512 KiB budget), both threads have work; few rows (1×1 on 16 or 32 channels) take one image.
  const index_t n49 = conv_chunks(128, 288, 49, 4, 2, 0), n196 = conv_chunks(128, 144, 196, 4, 2, 0);
  CHECK(n49 % 2 == 0);
  CHECK(n196 % 2 == 0);
  CHECK((128 + n49 - 1) / n49 * 288 * 49 * 4 <= 512 * 1024);
  CHECK((128 + n49 - 1) / n49 >= 4);
  CHECK((128 + n196 - 1) / n196 * 196 >= 512);
  CHECK(conv_chunks(128, 32, 49, 4, 2, 0) == 128);
  CHECK(conv_chunks(3, 16, 196, 4, 2, 0) == 3);
}
