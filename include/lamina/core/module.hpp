#pragma once
// The Module contract (spec/conventions.md "The Module contract").
//
// A module M with scalar type M::value_type = T provides
//   Shape output_shape(Shape in) const;        // validates `in`, throws shape_error
//   void forward(ConstView<T> x, View<T> y);    // training pass, keeps what backward needs
//   void infer(ConstView<T> x, View<T> y);      // inference pass, keeps nothing
//   void backward(ConstView<T> dy, View<T> dx); // ADDS dL/dx into dx and dL/dθ into θ's gradient
//   void visit(F&& f, const std::string& prefix); // f(ParamRef<T>) for every parameter and buffer
//
// Rules that make the roadmap's patterns work:
// - backward adds, into dx as into parameter gradients (as in dlib). A tensor that
//   feeds several consumers (LAUREL-PA history, layer-attention memory) simply
//   receives every consumer's backward into the same buffer.
// - forward may keep a view of x: x must stay alive and unchanged until the
//   matching backward. y must not alias x.
// - backward uses the cache of the latest forward. A module applied k times to
//   its own output (an FPI cell) is differentiated through step i by calling
//   forward(z_i) again before backward (recomputation), or only at the fixed point
//   (implicit gradient).
// - per-sample routing runs a module on a row slice (View::slice) of the batch;
//   a module switched off for an epoch is simply not called.
#include <concepts>
#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

#include "lamina/core/parallel.hpp"
#include "lamina/core/tensor.hpp"

namespace lamina {

/// One parameter (trainable, with a gradient) or buffer (state such as BN
/// running statistics: trainable == false, grad empty) of a module.
template <class T>
struct ParamRef {
  std::string name;
  View<T> value;
  View<T> grad;        ///< empty for buffers
  bool decay = true;   ///< weight decay applies (false for gains and BN/bias terms where chosen)
  bool trainable = true;
  bool added = false;  ///< added by an augmentation (LAUREL) on top of the base model
};

namespace detail {
template <class T>
struct param_visitor_archetype {
  void operator()(const ParamRef<T>&) const {}
};
}  // namespace detail

template <class M>
concept Module = requires { typename M::value_type; } && std::floating_point<typename M::value_type> &&
                 requires(M& m, const M& cm, ConstView<typename M::value_type> x, View<typename M::value_type> y,
                          const Shape& s, const std::string& prefix) {
                   { cm.output_shape(s) } -> std::same_as<Shape>;
                   m.forward(x, y);
                   m.infer(x, y);
                   m.backward(x, y);
                   m.visit(detail::param_visitor_archetype<typename M::value_type>{}, prefix);
                 };

/// Optional extension: backward_scaled(dy, s, dx) == backward(s·dy, dx) without
/// forming s·dy (a scaled residual branch, LAUREL's α f(x), hands its gradient
/// on without an extra pass). Backward passes are linear in dy, so any module
/// can offer it; BatchNorm2d and Sequentials ending in one do.
template <class M>
concept ScaledBackward = Module<M> && requires(M& m, ConstView<typename M::value_type> dy, typename M::value_type s,
                                               View<typename M::value_type> dx) { m.backward_scaled(dy, s, dx); };

/// Use inside a template to get one readable message per missing piece of the
/// contract instead of a page of substitution failures.
template <class M>
consteval bool check_module() {
  static_assert(requires { typename M::value_type; }, "lamina: a Module needs `using value_type = T;`");
  if constexpr (requires { typename M::value_type; }) {
    using T = typename M::value_type;
    static_assert(std::floating_point<T>, "lamina: Module::value_type must be float or double");
    static_assert(requires(const M& m, const Shape& s) { { m.output_shape(s) } -> std::same_as<Shape>; },
                  "lamina: a Module needs `Shape output_shape(Shape) const`");
    static_assert(requires(M& m, ConstView<T> x, View<T> y) { m.forward(x, y); },
                  "lamina: a Module needs `void forward(ConstView<T> x, View<T> y)`");
    static_assert(requires(M& m, ConstView<T> x, View<T> y) { m.infer(x, y); },
                  "lamina: a Module needs `void infer(ConstView<T> x, View<T> y)`");
    static_assert(requires(M& m, ConstView<T> dy, View<T> dx) { m.backward(dy, dx); },
                  "lamina: a Module needs `void backward(ConstView<T> dy, View<T> dx)` (adds into dx)");
    static_assert(requires(M& m, const std::string& p) { m.visit(detail::param_visitor_archetype<T>{}, p); },
                  "lamina: a Module needs `template <class F> void visit(F&& f, const std::string& prefix)`");
  }
  return Module<M>;
}

/// Calls f(ParamRef) for every parameter and buffer of m.
template <Module M, class F>
void visit_parameters(M& m, F&& f) {
  m.visit(f, std::string{});
}

/// Clears every gradient of m.
template <Module M>
void zero_grad(M& m) {
  visit_parameters(m, [](const ParamRef<typename M::value_type>& p) {
    if (p.trainable) std::fill(p.grad.data(), p.grad.data() + p.grad.size(), typename M::value_type(0));
  });
}

/// Number of trainable scalars of m.
template <Module M>
index_t count_parameters(M& m) {
  index_t n = 0;
  visit_parameters(m, [&](const ParamRef<typename M::value_type>& p) {
    if (p.trainable) n += p.value.size();
  });
  return n;
}

/// Trainable scalars of a model, and those that augmentations (LAUREL) added.
struct ParameterCount {
  index_t total = 0, added = 0;
  index_t base() const noexcept { return total - added; }
  /// added as a percentage of the base model's parameters.
  double added_percent() const noexcept { return base() > 0 ? 100.0 * double(added) / double(base()) : 0.0; }
};
template <Module M>
ParameterCount parameter_count(M& m) {
  ParameterCount c;
  visit_parameters(m, [&](const ParamRef<typename M::value_type>& p) {
    if (!p.trainable) return;
    c.total += p.value.size();
    if (p.added) c.added += p.value.size();
  });
  return c;
}

/// Output shape check shared by modules: y must have exactly `expected`.
template <class T>
void require_shape(const View<T>& v, const Shape& expected, std::string_view module, std::string_view argument) {
  require<shape_error>(v.shape() == expected, module, argument, expected, v.shape());
  require_contiguous(v, module, argument);
}

/// a += scale * b over n contiguous elements (vectorised by the compiler,
/// threaded for large n).
template <class T>
void axpy(T* a, const T* b, index_t n, T scale = T(1)) noexcept {
  LAMINA_PARALLEL_FOR_LARGE(n)
  for (index_t i = 0; i < n; ++i) a[i] += scale * b[i];
}
/// v[0..n) = 0, threaded for large n.
template <class T>
void fill_zero(T* v, index_t n) noexcept {
  LAMINA_PARALLEL_FOR_LARGE(n)
  for (index_t i = 0; i < n; ++i) v[i] = T(0);
}

}  // namespace lamina

namespace lamina {

/// Switches modules with a training/evaluation difference (BatchNorm, Dropout,
/// and composites that contain them); a no-op for the others.
template <class M>
void set_training(M& m, bool on) {
  if constexpr (requires { m.set_training(on); }) m.set_training(on);
}

}  // namespace lamina
