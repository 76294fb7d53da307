// Bad input to every module: options outside their domain (negative, zero,
// NaN, infinite, out of range) and degenerate shapes (README "Guarantees on
// bad input"). Each must be a lamina error naming the module and argument.
#include <catch2/catch.hpp>

#include <limits>
#include <string>

#include "lamina/lamina.hpp"

using namespace lamina;

namespace {
constexpr double nan_v = std::numeric_limits<double>::quiet_NaN(), inf_v = std::numeric_limits<double>::infinity();

template <class Make>
void rejects(const std::string& name, std::initializer_list<double> bad, Make&& make) {
  for (double v : bad) {
    INFO(name << " = " << v);
    CHECK_THROWS_AS(make(v), value_error);
    CHECK_THROWS_WITH(make(v), Catch::Contains(name));
  }
}

// output_shape, forward and infer of m on an input of shape `in` all throw shape_error naming `who`.
template <class M>
void rejects_shape(M& m, const Shape& in, const std::string& who) {
  INFO(who << " on " << in);
  Tensor<double> x(in), y(in);
  CHECK_THROWS_AS(m.output_shape(in), shape_error);
  CHECK_THROWS_WITH(m.output_shape(in), Catch::Contains(who));
  typename M::Cache c;
  CHECK_THROWS_AS(m.forward(x.cview(), y.view(), c), shape_error);
  CHECK_THROWS_AS(m.infer(x.cview(), y.view()), shape_error);
  CHECK_THROWS_AS(m.backward(c, y.cview(), x.view()), shape_error);  // the failed forward left nothing to differentiate
}
}  // namespace

TEST_CASE("Every module option is checked for zero, negative, NaN, infinite and out-of-range values", "[errors][options]") {
  Rng rng(1);
  rejects("Linear: in_features", {0, -2}, [&](double v) { return Linear<double>(index_t(v), 3, rng); });
  rejects("Linear: out_features", {0, -2}, [&](double v) { return Linear<double>(3, index_t(v), rng); });
  auto conv = [&](Conv2dOptions o) { return Conv2d<double>(o, rng); };
  rejects("Conv2d: in_channels", {0, -1}, [&](double v) { return conv({.in_channels = index_t(v)}); });
  rejects("Conv2d: out_channels", {0, -1}, [&](double v) { return conv({.out_channels = index_t(v)}); });
  rejects("Conv2d: kernel size", {0, -3}, [&](double v) { return conv({.kernel_h = index_t(v)}); });
  rejects("Conv2d: kernel size", {0, -3}, [&](double v) { return conv({.kernel_w = index_t(v)}); });
  rejects("Conv2d: stride", {0, -1}, [&](double v) { return conv({.stride = index_t(v)}); });
  rejects("Conv2d: padding", {-1}, [&](double v) { return conv({.padding = index_t(v)}); });
  rejects("BatchNorm2d: num_features", {0, -4}, [](double v) { return BatchNorm2d<double>(index_t(v)); });
  rejects("BatchNorm2d: eps", {0, -1e-5, nan_v, inf_v, -inf_v}, [](double v) { return BatchNorm2d<double>(4, v); });
  rejects("BatchNorm2d: momentum", {-0.1, 1.5, nan_v, inf_v}, [](double v) { return BatchNorm2d<double>(4, 1e-5, v); });
  rejects("Dropout: p", {-0.1, 1, 2, nan_v, inf_v}, [](double v) { return Dropout<double>(v); });
  rejects("RMSNorm: D", {0, -8}, [](double v) { return RMSNorm<double>(index_t(v)); });
  rejects("RMSNorm: eps", {0, -1, nan_v, inf_v}, [](double v) { return RMSNorm<double>(8, v); });
  rejects("SoftmaxCrossEntropy: label_smoothing", {-0.1, 1.1, nan_v, inf_v, -inf_v},
          [](double v) { return SoftmaxCrossEntropy<double>(v); });
  auto resnet = [&](ResNetOptions o) { return make_resnet<double>(o, rng); };
  rejects("ResNet: in_channels", {0, -1}, [&](double v) { return resnet({.in_channels = index_t(v)}); });
  rejects("ResNet: blocks_per_stage", {0, -1}, [&](double v) { return resnet({.blocks_per_stage = index_t(v)}); });
  rejects("ResNet: num_classes", {0, 1, -3}, [&](double v) { return resnet({.num_classes = index_t(v)}); });
  rejects("ResNet: widths", {0, -16}, [&](double v) { return resnet({.widths = {16, index_t(v), 64}}); });

  using LR = Laurel<Linear<double>, laurel::RW_LR_PA>;
  auto laurel_with = [&](index_t D, laurel::Options o) { return LR(Linear<double>(8, 8, rng), {}, D, o, rng); };
  rejects("Laurel: D", {0, -8}, [&](double v) { return laurel_with(index_t(v), {}); });
  rejects("Laurel: rank r", {0, -1, 9}, [&](double v) { return laurel_with(8, {.rank = index_t(v)}); });
  rejects("Laurel: history k", {0, -2}, [&](double v) { return laurel_with(8, {.history = index_t(v)}); });
  rejects("Laurel: bound", {3, -1, 100}, [&](double v) { return laurel_with(8, {.bound = laurel::Bound(int(v))}); });
  rejects("Laurel: a_init", {2, -1}, [&](double v) { return laurel_with(8, {.a_init = laurel::AInit(int(v))}); });
  rejects("Laurel: h", {3, -1}, [&](double v) { return laurel_with(8, {.h = laurel::History(int(v))}); });
  rejects("Laurel: per_channel", {0}, [&](double) {
    return Laurel<Linear<double>, laurel::LR>(Linear<double>(8, 8, rng), {}, 8, {.per_channel = true}, rng);
  });
  rejects("LowRank: D", {0}, [&](double v) { return laurel::LowRank<double>(index_t(v), 0, laurel::AInit::xavier_uniform, rng); });
  rejects("LowRank: rank r", {0, 5}, [&](double v) { return laurel::LowRank<double>(4, index_t(v), laurel::AInit::xavier_uniform, rng); });
  rejects("LowRank: init", {2, -1}, [&](double v) { return laurel::LowRank<double>(4, 2, laurel::AInit(int(v)), rng); });
  CHECK_THROWS_AS(laurel::LowRank<double>(-4, 2, laurel::AInit::xavier_uniform, rng), shape_error);
  rejects("GemmaLaurel: rank r", {0, -1, 9}, [&](double v) { return GemmaLaurel<Linear<double>>(Linear<double>(8, 8, rng), 8, index_t(v), rng); });
  rejects("RMSNorm: eps", {0, nan_v, inf_v}, [&](double v) { return GemmaLaurel<Linear<double>>(Linear<double>(8, 8, rng), 8, 2, rng, v); });
}

TEST_CASE("Degenerate shapes: empty batches, features, channels and images are a shape_error in every module", "[errors][shapes]") {
  Rng rng(2);
  Linear<double> lin(4, 3, rng);
  for (const Shape& s : {Shape{0, 4}, Shape{4, 0}, Shape{0, 0}}) rejects_shape(lin, s, "Linear");
  for (const index_t pad : {0, 1, 3}) {
    Conv2d<double> conv({.in_channels = 2, .out_channels = 3, .kernel_h = 3, .kernel_w = 3, .padding = pad}, rng);
    for (const Shape& s : {Shape{0, 2, 5, 5}, Shape{1, 2, 0, 0}, Shape{1, 2, 0, 5}, Shape{1, 2, 5, 0}, Shape{2, 0, 5, 5}})
      rejects_shape(conv, s, "Conv2d");
  }
  BatchNorm2d<double> bn(2);
  for (const Shape& s : {Shape{0, 2, 3, 3}, Shape{2, 2, 0, 0}}) rejects_shape(bn, s, "BatchNorm2d");
  ReLU<double> relu;
  Tanh<double> tanh_m;
  Dropout<double> drop(0.5);
  GlobalAvgPool<double> gap;
  Flatten<double> flat;
  Identity<double> id;
  RMSNorm<double> rms(4);
  GemmaLaurel<Linear<double>> gl(Linear<double>(4, 4, rng), 4, 2, rng);
  Laurel<Linear<double>, laurel::RW_LR> lau(Linear<double>(4, 4, rng), {}, 4, {.rank = 2}, rng);
  Residual<Linear<double>> res(Linear<double>(4, 4, rng));
  for (const Shape& s : {Shape{0, 4}, Shape{0, 4, 1, 1}}) {
    rejects_shape(relu, s, "ReLU");
    rejects_shape(tanh_m, s, "Tanh");
    rejects_shape(drop, s, "Dropout");
    rejects_shape(flat, s, "Flatten");
    rejects_shape(id, s, "Identity");
  }
  rejects_shape(gap, Shape{0, 4, 2, 2}, "GlobalAvgPool");
  rejects_shape(gap, Shape{2, 4, 0, 0}, "GlobalAvgPool");
  for (const Shape& s : {Shape{0, 4}}) {
    rejects_shape(rms, s, "RMSNorm");
    rejects_shape(gl, s, "GemmaLaurel");
    rejects_shape(lau, s, "Laurel");
    rejects_shape(res, s, "Linear");
  }
  auto net = make_resnet<double>({1, {2, 2, 2}, 1, 2}, rng);
  for (const Shape& s : {Shape{0, 1, 8, 8}, Shape{1, 1, 0, 0}}) rejects_shape(net, s, "Conv2d");
  // The smallest legal shapes work: one sample, one pixel.
  Tensor<double> x(Shape{1, 1, 1, 1}, 0.5), y(net.output_shape(x.shape()));
  CHECK(y.shape() == Shape{1, 2});
  CHECK_THROWS_WITH(net.forward(x.cview(), y.view()), Catch::Contains("BatchNorm2d: values per channel in training"));
  set_training(net, false);
  CHECK_NOTHROW(net.infer(x.cview(), y.view()));
  SoftmaxCrossEntropy<double> loss;
  Tensor<double> empty(Shape{0, 3});
  CHECK_THROWS_AS(loss.forward(empty.cview(), {}), shape_error);
}
