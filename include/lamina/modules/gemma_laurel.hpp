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
    require(rank >= 1 && rank <= D, "GemmaLaurel", "rank r", detail::concat("in [1, D = ", D, "]"), rank);
    lr_ = laurel::LowRank<T>(D, rank, laurel::AInit::xavier_uniform, rng);
    init::xavier_uniform(lr_.B().view(), rng);
  }
  Inner& inner() noexcept { return inner_; }
  laurel::LowRank<T>& low_rank() noexcept { return lr_; }

  Shape output_shape(const Shape& in) const {
    require<shape_error>(in.rank() == 2 && in.cols() == D_, "GemmaLaurel", "x shape", detail::concat("[N, ", D_, "]"), in);
    const Shape a = inner_.output_shape(in);
    require<shape_error>(a == in, "GemmaLaurel", "inner output shape", in, a);
    return in;
  }
  void forward(ConstView<T> x, View<T> y) { run(x, y, true); }
  void infer(ConstView<T> x, View<T> y) { run(x, y, false); }

  void backward(ConstView<T> dy, View<T> dx) {
    require<shape_error>(x_.data() != nullptr, "GemmaLaurel", "backward()", "a preceding forward()", "none");
    require_shape(dy, x_.shape(), "GemmaLaurel", "dy");
    require_shape(dx, x_.shape(), "GemmaLaurel", "dx");
    const index_t n = dy.size();
    const T k = T(1 / std::sqrt(2.0));
    g_.resize(dy.shape());  // dL/dp = dL/dl = dL/dx (direct) = dy / sqrt 2
    for (index_t i = 0; i < n; ++i) g_[i] = k * dy.data()[i];
    axpy(dx.data(), g_.data(), n);
    du_.resize(dy.shape());
    std::copy(g_.data(), g_.data() + n, du_.data());  // l = u + ...
    dv_.resize(dy.shape());
    fill_zero(dv_.data(), n);
    lr_norm_.backward(g_.cview(), dv_.view());
    const T one = T(1);
    const ChannelGeometry geo = ChannelGeometry::of(dy.shape(), "GemmaLaurel", "dy");
    lr_.backward(geo, dv_.data(), u_.data(), du_.data(), &one, false, U_);
    da_.resize(dy.shape());
    fill_zero(da_.data(), n);
    post_norm_.backward(g_.cview(), da_.view());
    inner_.backward(da_.cview(), du_.view());
    in_norm_.backward(du_.cview(), dx);
  }

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
  void run(ConstView<T> x, View<T> y, bool train) {
    require_contiguous(x, "GemmaLaurel", "x");
    const Shape s = output_shape(x.shape());
    require_shape(y, s, "GemmaLaurel", "y");
    const index_t n = x.size();
    // The training pass keeps u, a, v (and the norms keep views of them); infer
    // uses its own buffers.
    Tensor<T>& u = train ? u_ : iu_;
    Tensor<T>& a = train ? a_ : ia_;
    Tensor<T>& v = train ? v_ : iv_;
    Tensor<T>& p = train ? p_ : ip_;
    u.resize(s), a.resize(s), v.resize(s), p.resize(s);
    if (train) in_norm_.forward(x, u.view());
    else in_norm_.infer(x, u.view());
    if (train) inner_.forward(u.cview(), a.view());
    else inner_.infer(u.cview(), a.view());
    if (train) post_norm_.forward(a.cview(), p.view());
    else post_norm_.infer(a.cview(), p.view());
    fill_zero(v.data(), n);
    const T one = T(1);
    lr_.forward(ChannelGeometry::of(s, "GemmaLaurel", "x"), u.data(), v.data(), &one, false, train ? U_ : iU_);
    if (train) lr_norm_.forward(v.cview(), y);
    else lr_norm_.infer(v.cview(), y);
    const T k = T(1 / std::sqrt(2.0));
    for (index_t i = 0; i < n; ++i) y.data()[i] = k * (x.data()[i] + p[i] + u[i] + y.data()[i]);
    if (train) x_ = x;
  }

  Inner inner_;
  RMSNorm<T> in_norm_, post_norm_, lr_norm_;
  laurel::LowRank<T> lr_;
  index_t D_;
  ConstView<T> x_;
  Tensor<T> u_, a_, v_, p_, iu_, ia_, iv_, ip_, g_, du_, dv_, da_;
  typename laurel::LowRank<T>::Mat U_, iU_;
};

}  // namespace lamina
