#pragma once
// The Module contract, version 2 (spec/conventions.md "The Module contract").
//
// A module M with scalar type T = M::value_type provides
//   struct Cache;                                         // the state of ONE application
//   Shape output_shape(Shape in) const;                   // validates `in`, throws shape_error
//   void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {});  // training pass, state into c
//   void infer(ConstView<T> x, View<T> y);                // inference pass, keeps nothing
//   void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {});
//   void visit(F&& f, const std::string& prefix);         // f(ParamRef<T>) per parameter and buffer
// and, for simple use, the same calls over a cache the module owns:
//   void forward(ConstView<T> x, View<T> y);              // == forward(x, y, own cache)
//   void backward(ConstView<T> dy, View<T> dx, Grad g = {});
//
// Why a caller-owned Cache: a module can be applied many times in one step (an
// FPI cell iterated to its fixed point, DynaLay applying one FPI layer at several
// steps to different subsets of the batch, one block reused in a loop). Each
// application gets its own Cache; backward(c_i, ...) differentiates exactly that
// application, in any order, as often as needed. A Cache is default-constructed
// by the caller, filled by forward and only read by backward, so it can be reused
// for the next step without reallocating. Scratch memory that backward needs only
// while it runs lives in the module (one backward at a time per module object).
//
// Rules:
// - backward ADDS, into dx and into parameter gradients (as in dlib). A tensor that
//   feeds several consumers (LAUREL-PA streams, the layer-attention memory)
//   receives every consumer's gradient in one buffer.
// - Grad selects what backward computes: {.input = true, .params = true} by
//   default. {.params = false} is a vector–Jacobian product with respect to the
//   input alone: every parameter gradient stays bit-for-bit unchanged (an implicit
//   FPI backward solves w = Jᵀw + g with many such products, then makes one full
//   backward). {.input = false} skips dx, which may then be an empty View.
//   Gradients into a stage memory (core/stage_memory.hpp) count as input gradients.
// - forward may keep views of x in c: x must stay alive and unchanged until the
//   last backward that uses c. y must not alias x.
// - Pass{.recompute = true} re-runs the application recorded in c (activation
//   recomputation): state updates are not repeated (BatchNorm2d's running
//   statistics) and random draws are reused (Dropout's mask). A plain forward on
//   a used cache is a new application.
// - A forward that throws leaves c unusable: backward on it throws until the
//   next forward on c succeeds.
// - Two-input cells f(z, u) (FPI) follow the same pattern (core/cell.hpp);
//   per-sample routing gathers rows into sub-batches and scatters them back
//   (core/rows.hpp); blocks of a Stage share a StageMemory (core/stage_memory.hpp).
#include <algorithm>
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

/// What a backward computes. Designated initialisers read best:
/// `m.backward(c, dy, dx, {.params = false})`.
struct Grad {
  bool input = true;   ///< add dL/dx into dx (dx may be empty when false)
  bool params = true;  ///< add dL/dθ into the parameter gradients
};
/// How a training forward runs.
struct Pass {
  /// Re-run the application recorded in the cache: no state updates, the same
  /// random draws (see the rules above).
  bool recompute = false;
};

template <class M>
concept Module = requires { typename M::value_type; typename M::Cache; } &&
                 std::floating_point<typename M::value_type> && std::default_initializable<typename M::Cache> &&
                 requires(M& m, const M& cm, ConstView<typename M::value_type> x, View<typename M::value_type> y,
                          typename M::Cache& c, const typename M::Cache& cc, Grad g, Pass p, const Shape& s,
                          const std::string& prefix) {
                   { cm.output_shape(s) } -> std::same_as<Shape>;
                   m.forward(x, y, c, p);
                   m.infer(x, y);
                   m.backward(cc, x, y, g);
                   m.visit(detail::param_visitor_archetype<typename M::value_type>{}, prefix);
                 };

/// Optional extension: backward_scaled(c, dy, s, dx, g) == backward(c, s·dy, dx, g)
/// without forming s·dy (a scaled residual branch, LAUREL's α f(x), hands its
/// gradient on without an extra pass). Backward passes are linear in dy, so any
/// module can offer it; BatchNorm2d and Sequentials ending in one do.
template <class M>
concept ScaledBackward = Module<M> && requires(M& m, const typename M::Cache& c, ConstView<typename M::value_type> dy,
                                               typename M::value_type s, View<typename M::value_type> dx, Grad g) {
  m.backward_scaled(c, dy, s, dx, g);
};

/// Use inside a template to get one readable message per missing piece of the
/// contract instead of a page of substitution failures.
template <class M>
consteval bool check_module() {
  static_assert(requires { typename M::value_type; }, "lamina: a Module needs `using value_type = T;`");
  static_assert(requires { typename M::Cache; },
                "lamina: a Module needs `struct Cache` (the state of one application, default-constructible)");
  if constexpr (requires { typename M::value_type; typename M::Cache; }) {
    using T = typename M::value_type;
    using C = typename M::Cache;
    static_assert(std::floating_point<T>, "lamina: Module::value_type must be float or double");
    static_assert(std::default_initializable<C>, "lamina: Module::Cache must be default-constructible");
    static_assert(requires(const M& m, const Shape& s) { { m.output_shape(s) } -> std::same_as<Shape>; },
                  "lamina: a Module needs `Shape output_shape(Shape) const`");
    static_assert(requires(M& m, ConstView<T> x, View<T> y, C& c, Pass p) { m.forward(x, y, c, p); },
                  "lamina: a Module needs `void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {})`");
    static_assert(requires(M& m, ConstView<T> x, View<T> y) { m.infer(x, y); },
                  "lamina: a Module needs `void infer(ConstView<T> x, View<T> y)`");
    static_assert(requires(M& m, const C& c, ConstView<T> dy, View<T> dx, Grad g) { m.backward(c, dy, dx, g); },
                  "lamina: a Module needs `void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {})` "
                  "(adds into dx and the parameter gradients)");
    static_assert(requires(M& m, const std::string& p) { m.visit(detail::param_visitor_archetype<T>{}, p); },
                  "lamina: a Module needs `template <class F> void visit(F&& f, const std::string& prefix)`");
  }
  return Module<M>;
}

/// Anything with parameters: a Module, a Cell (core/cell.hpp), a model.
template <class M>
concept HasParameters = requires(M& m, const std::string& prefix) {
  typename M::value_type;
  m.visit(detail::param_visitor_archetype<typename M::value_type>{}, prefix);
};

/// Calls f(ParamRef) for every parameter and buffer of m.
template <HasParameters M, class F>
void visit_parameters(M& m, F&& f) {
  m.visit(f, std::string{});
}

/// Clears every gradient of m.
template <HasParameters M>
void zero_grad(M& m) {
  visit_parameters(m, [](const ParamRef<typename M::value_type>& p) {
    if (p.trainable) std::fill(p.grad.data(), p.grad.data() + p.grad.size(), typename M::value_type(0));
  });
}

/// Number of trainable scalars of m.
template <HasParameters M>
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
template <HasParameters M>
ParameterCount parameter_count(M& m) {
  ParameterCount c;
  visit_parameters(m, [&](const ParamRef<typename M::value_type>& p) {
    if (!p.trainable) return;
    c.total += p.value.size();
    if (p.added) c.added += p.value.size();
  });
  return c;
}

/// Degenerate shapes (README "Guarantees on bad input"): no module takes an
/// empty tensor. A batch of 0 samples, 0 features, 0 channels or a 0×0 image
/// (padding included) is a shape_error, the same in every module.
inline void require_non_empty(const Shape& in, std::string_view module) {
  require<shape_error>(in.rank() >= 1 && in.numel() > 0, module, "x shape", "a non-empty tensor (every extent > 0)", in);
}

/// Output shape check shared by modules: y must have exactly `expected`.
template <class T>
void require_shape(const View<T>& v, const Shape& expected, std::string_view module, std::string_view argument) {
  require<shape_error>(v.shape() == expected, module, argument, expected, v.shape());
  require_contiguous(v, module, argument);
}
/// dx of a backward: checked when g.input asks for it.
template <class T>
void require_input_grad(const View<T>& dx, const Shape& expected, const Grad& g, std::string_view module) {
  if (g.input) require_shape(dx, expected, module, "dx");
}
/// The state of backward's cache: it must hold a completed forward.
inline void require_forward(bool done, std::string_view module) {
  require<shape_error>(done, module, "backward()", "a preceding forward()", "none");
}

/// a += scale * b over n contiguous elements (vectorised by the compiler,
/// threaded for large n).
template <class T>
void axpy(T* a, const T* b, index_t n, T scale = T(1)) noexcept {
  for_each_large(n, [=](index_t i) { a[i] += scale * b[i]; });
}
/// v[0..n) = 0, threaded for large n.
template <class T>
void fill_zero(T* v, index_t n) noexcept {
  for_each_large(n, [=](index_t i) { v[i] = T(0); });
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
