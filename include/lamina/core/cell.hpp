#pragma once
// Two-input cells y = f(z, u) (spec/fpi_dynalay.md §1: an FPI layer iterates
// z ← f(z, u) with the injection u = x W_in + b_in computed once). A Cell
// follows the Module contract with a second input:
//   struct Cache;
//   Shape output_shape(Shape z) const;                       // y has z's shape
//   void forward(ConstView<T> z, ConstView<T> u, View<T> y, Cache& c, Pass p = {});
//   void infer(ConstView<T> z, ConstView<T> u, View<T> y);
//   void backward(const Cache& c, ConstView<T> dy, View<T> dz, View<T> du, Grad g = {});
//   void visit(F&& f, const std::string& prefix);
// backward adds dL/dz into dz when g.input, dL/du into du unless du is View<T>{}
// (an implicit backward wants dz alone many times: {.params = false} and an empty
// du, then dz, du and the parameters once), dL/dθ when g.params.
#include <string>

#include "lamina/core/module.hpp"

namespace lamina {

template <class C>
concept Cell = requires { typename C::value_type; typename C::Cache; } &&
               std::floating_point<typename C::value_type> && std::default_initializable<typename C::Cache> &&
               requires(C& m, const C& cm, ConstView<typename C::value_type> z, View<typename C::value_type> y,
                        typename C::Cache& c, const typename C::Cache& cc, Grad g, Pass p, const Shape& s) {
                 { cm.output_shape(s) } -> std::same_as<Shape>;
                 m.forward(z, z, y, c, p);
                 m.infer(z, z, y);
                 m.backward(cc, z, y, y, g);
               };

/// The injection pattern: y = g(f(z) + u) from two one-input modules, e.g. the
/// default FPI cell tanh(z W + u) = Injected(Linear(D, D, no bias), Tanh), or a
/// conv cell ReLU(norm(conv(z)) + u) = Injected(Sequential(Conv2d, BatchNorm2d), ReLU).
template <class F, class G>
class Injected {
  static_assert(check_module<F>() && check_module<G>(), "lamina::Injected: f and g must satisfy lamina::Module");

 public:
  using value_type = typename F::value_type;
  using T = value_type;
  struct Cache {
    typename F::Cache f;
    typename G::Cache g;
    Tensor<T> pre;  ///< f(z) + u
  };

  Injected(F f, G g) : f_(std::move(f)), g_(std::move(g)) {}
  F& f() noexcept { return f_; }
  G& g() noexcept { return g_; }

  Shape output_shape(const Shape& z) const {
    const Shape s = g_.output_shape(f_.output_shape(z));
    require<shape_error>(s == z, "Injected", "cell output shape", detail::text("the state's ", z), s);
    return s;
  }
  void forward(ConstView<T> z, ConstView<T> u, View<T> y, Cache& c, Pass p = {}) {
    check_u(z, u);
    c.pre.resize(z.shape());
    f_.forward(z, c.pre.view(), c.f, p);
    axpy(c.pre.data(), u.data(), u.size());
    g_.forward(c.pre.cview(), y, c.g, p);
  }
  void infer(ConstView<T> z, ConstView<T> u, View<T> y) {
    check_u(z, u);
    pre_.resize(z.shape());
    f_.infer(z, pre_.view());
    axpy(pre_.data(), u.data(), u.size());
    g_.infer(pre_.cview(), y);
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dz, View<T> du, Grad want = {}) {
    dpre_.resize(c.pre.shape());
    fill_zero(dpre_.data(), dpre_.size());
    g_.backward(c.g, dy, dpre_.view(), {.input = true, .params = want.params});
    if (du.data() != nullptr) {  // a default View<T>{} is "not wanted"
      require_shape(du, c.pre.shape(), "Injected", "du");
      axpy(du.data(), dpre_.data(), du.size());
    }
    if (want.input || want.params) f_.backward(c.f, dpre_.cview(), dz, want);
  }
  template <class Fn>
  void visit(Fn&& fn, const std::string& prefix) {
    f_.visit(fn, prefix + "f.");
    g_.visit(fn, prefix + "g.");
  }
  void set_training(bool on) {
    lamina::set_training(f_, on);
    lamina::set_training(g_, on);
  }

 private:
  static void check_u(ConstView<T> z, ConstView<T> u) {
    require_contiguous(u, "Injected", "u");
    require<shape_error>(u.shape() == z.shape(), "Injected", "u shape", z.shape(), u.shape());
  }

  F f_;
  G g_;
  Tensor<T> pre_, dpre_;  // infer and backward scratch
};

}  // namespace lamina
