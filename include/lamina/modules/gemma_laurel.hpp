#pragma once
// The normalised LR block of Gemma 3n (spec/laurel.md "Gemma 3n form"), with a
// pluggable inner module in place of attention, on dense rows [N, D]:
//   u = RMSNorm_in(x),  l = u + RMSNorm_w((u L) R),
//   h = (x + RMSNorm_post(inner(u)) + l) / sqrt(2).
// L (D×r) and R (r×D) are both Xavier-uniform: a zero R (LAUREL's default B = 0)
// would put RMSNorm_w at 0, where its gradient is 1/sqrt(eps).
#include <cmath>
#include <string>

#include "lamina/modules/low_rank.hpp"
#include "lamina/modules/rms_norm.hpp"

namespace lamina {

template <class Inner>
class GemmaLaurel {
  static_assert(check_module<Inner>(), "lamina::GemmaLaurel: the inner module must satisfy lamina::Module");

 public:
  using value_type = typename Inner::value_type;
  using T = value_type;

  GemmaLaurel(Inner inner, index_t D, index_t rank, Rng& rng, double eps = 1e-6)
      : inner_(std::move(inner)), in_norm_(D, eps), post_norm_(D, eps), lr_norm_(D, eps), D_(D) {
    require(rank >= 1 && rank <= D, "GemmaLaurel", "rank r", detail::text("in [1, D = ", D, "]"), rank);
    lr_ = laurel::LowRank<T>(D, rank, laurel::AInit::xavier_uniform, rng);
    init::xavier_uniform(lr_.B().view(), rng);
  }
  Inner& inner() noexcept { return inner_; }
  laurel::LowRank<T>& low_rank() noexcept { return lr_; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() == 2 && in.cols() == D_, "GemmaLaurel", "x shape", detail::text("[N, ", D_, "]"), in);
    require_non_empty(in, "GemmaLaurel");
    const Shape a = inner_.output_shape(in);
    require<shape_error>(a == in, "GemmaLaurel", "inner output shape", in, a);
    return in;
  }
  struct Cache {
    ConstView<T> x;
    Tensor<T> u, a, v, p;  ///< RMSNorm_in(x), inner(u), (u L) R, RMSNorm_post(a)
    typename laurel::LowRank<T>::Mat U;  ///< u L
    typename RMSNorm<T>::Cache in_norm, post_norm, lr_norm;
    typename Inner::Cache inner;
  };

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass pass = {}) {
    c.x = {};
    run(x, y, &c, pass);
    c.x = x;
  }
  void infer(ConstView<T> x, View<T> y) { run(x, y, nullptr, {}); }

  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad want = {}) {
    require_forward(c.x.data() != nullptr, "GemmaLaurel");
    require_shape(dy, c.x.shape(), "GemmaLaurel", "dy");
    require_input_grad(dx, c.x.shape(), want, "GemmaLaurel");
    const index_t n = dy.size();
    const T k = T(1 / std::sqrt(2.0));
    const Grad through{.input = true, .params = want.params};  // u's gradient is needed in any case
    g_.resize(dy.shape());  // dL/dp = dL/dl = dL/dx (direct) = dy / sqrt 2
    for (index_t i = 0; i < n; ++i) g_[i] = k * dy.data()[i];
    if (want.input) axpy(dx.data(), g_.data(), n);
    du_.resize(dy.shape());
    std::copy(g_.data(), g_.data() + n, du_.data());  // l = u + ...
    dv_.resize(dy.shape());
    fill_zero(dv_.data(), n);
    lr_norm_.backward(c.lr_norm, g_.cview(), dv_.view(), through);
    const T one = T(1);
    const ChannelGeometry geo = ChannelGeometry::of(dy.shape(), "GemmaLaurel", "dy");
    lr_.backward(geo, dv_.data(), c.u.data(), du_.data(), &one, false, c.U, through);
    da_.resize(dy.shape());
    fill_zero(da_.data(), n);
    post_norm_.backward(c.post_norm, g_.cview(), da_.view(), through);
    inner_.backward(c.inner, da_.cview(), du_.view(), through);
    in_norm_.backward(c.in_norm, du_.cview(), dx, want);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    in_norm_.visit(f, prefix + "input_norm.");
    inner_.visit(f, prefix + "inner.");
    post_norm_.visit(f, prefix + "post_norm.");
    f(ParamRef<T>{prefix + "laurel.L", lr_.A().view(), lr_.dA().view(), true, true, true});
    f(ParamRef<T>{prefix + "laurel.R", lr_.B().view(), lr_.dB().view(), true, true, true});
    lr_norm_.visit([&](ParamRef<T> p) { p.added = true, f(p); }, prefix + "laurel.norm.");
  }
  void set_training(bool on) { lamina::set_training(inner_, on); }

 private:
  // The training pass (c given) keeps u, a, v, p and the parts' caches in c;
  // infer uses the module's own buffers.
  void run(ConstView<T> x, View<T> y, Cache* c, Pass pass) {
    require_contiguous(x, "GemmaLaurel", "x");
    const Shape s = output_shape(x.shape());
    require_shape(y, s, "GemmaLaurel", "y");
    const index_t n = x.size();
    Cache& w = c ? *c : infer_;
    w.u.resize(s), w.a.resize(s), w.v.resize(s), w.p.resize(s);
    if (c) in_norm_.forward(x, w.u.view(), w.in_norm, pass);
    else in_norm_.infer(x, w.u.view());
    if (c) inner_.forward(w.u.cview(), w.a.view(), w.inner, pass);
    else inner_.infer(w.u.cview(), w.a.view());
    if (c) post_norm_.forward(w.a.cview(), w.p.view(), w.post_norm, pass);
    else post_norm_.infer(w.a.cview(), w.p.view());
    fill_zero(w.v.data(), n);
    const T one = T(1);
    lr_.forward(ChannelGeometry::of(s, "GemmaLaurel", "x"), w.u.data(), w.v.data(), &one, false, w.U);
    if (c) lr_norm_.forward(w.v.cview(), y, w.lr_norm, pass);
    else lr_norm_.infer(w.v.cview(), y);
    const T k = T(1 / std::sqrt(2.0));
    for (index_t i = 0; i < n; ++i) y.data()[i] = k * (x.data()[i] + w.p[i] + w.u[i] + y.data()[i]);
  }

  Inner inner_;
  RMSNorm<T> in_norm_, post_norm_, lr_norm_;
  laurel::LowRank<T> lr_;
  index_t D_;
  Tensor<T> g_, du_, dv_, da_;  // backward scratch
  Cache infer_, cache_;
};

}  // namespace lamina
