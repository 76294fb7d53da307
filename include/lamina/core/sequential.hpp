#pragma once
// Static composition: Sequential<M1, ..., Mn> runs its modules in order;
// Residual<F, S> is y = f(x) + s(x); Identity is y = x. The outputs between the
// parts of one application live in its Cache; the gradients between them are
// scratch of the module (reused across steps).
#include <array>
#include <string>
#include <tuple>
#include <utility>

#include "lamina/core/module.hpp"
#include "lamina/core/stage_memory.hpp"

namespace lamina {

template <class... Ms>
class Sequential {
  static_assert(sizeof...(Ms) >= 1, "lamina::Sequential needs at least one module");
  static_assert((check_module<Ms>() && ...), "lamina::Sequential: every part must satisfy lamina::Module");
  using Last = std::tuple_element_t<sizeof...(Ms) - 1, std::tuple<Ms...>>;

 public:
  using value_type = typename std::tuple_element_t<0, std::tuple<Ms...>>::value_type;
  using T = value_type;
  static_assert((std::is_same_v<typename Ms::value_type, value_type> && ...),
                "lamina::Sequential: all parts must share one scalar type");
  static constexpr std::size_t size = sizeof...(Ms);
  /// A sequence uses the stage memory when any of its parts does (each such
  /// part is handed the block's place in the memory).
  static constexpr bool uses_memory = (UsesStageMemory<Ms> || ...);

  struct Cache {
    std::tuple<typename Ms::Cache...> parts;
    std::array<Tensor<T>, size - 1> out;  ///< output of part i, input of part i + 1
  };

  explicit Sequential(Ms... ms) : mods_(std::move(ms)...) {
    for (std::size_t i = 0; i < size; ++i) names_[i] = std::to_string(i);
  }

  /// Names used as parameter prefixes ("<name>.weight"); default "0", "1", ...
  Sequential& set_names(std::array<std::string, size> names) {
    names_ = std::move(names);
    return *this;
  }
  template <std::size_t I>
  auto& get() noexcept { return std::get<I>(mods_); }
  template <std::size_t I>
  const auto& get() const noexcept { return std::get<I>(mods_); }

  Shape output_shape(const Shape& in) const {
    return std::apply([&](const auto&... m) {
      Shape s = in;
      ((s = m.output_shape(s)), ...);
      return s;
    }, mods_);
  }

  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) { forward_from<0>(x, y, c, BlockMemory<T>{}, p); }
  void forward(ConstView<T> x, View<T> y, Cache& c, BlockMemory<T> mem, Pass p = {})
    requires uses_memory
  {
    forward_from<0>(x, y, c, mem, p);
  }
  void infer(ConstView<T> x, View<T> y) { infer_from<0>(x, y, BlockMemory<T>{}); }
  void infer(ConstView<T> x, View<T> y, BlockMemory<T> mem)
    requires uses_memory
  {
    infer_from<0>(x, y, mem);
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    backward_from<size - 1>(c, dy, dx, T(1), g);
  }
  /// backward(c, s·dy, dx, g) when the last part offers it (core/module.hpp ScaledBackward).
  void backward_scaled(const Cache& c, ConstView<T> dy, T s, View<T> dx, Grad g = {})
    requires ScaledBackward<Last>
  {
    backward_from<size - 1>(c, dy, dx, s, g);
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    visit_from<0>(f, prefix);
  }
  void set_training(bool on) {
    std::apply([&](auto&... m) { (lamina::set_training(m, on), ...); }, mods_);
  }

 private:
  template <std::size_t I>
  void forward_from(ConstView<T> x, View<T> y, Cache& c, const BlockMemory<T>& mem, Pass p) {
    auto& m = std::get<I>(mods_);
    auto& mc = std::get<I>(c.parts);
    if constexpr (I + 1 == size) {
      detail::forward_part(m, x, y, mc, mem, p);
    } else {
      Tensor<T>& out = c.out[I];
      out.resize(m.output_shape(x.shape()));
      detail::forward_part(m, x, out.view(), mc, mem, p);
      forward_from<I + 1>(out.cview(), y, c, mem, p);
    }
  }
  template <std::size_t I>
  void infer_from(ConstView<T> x, View<T> y, const BlockMemory<T>& mem) {
    auto& m = std::get<I>(mods_);
    if constexpr (I + 1 == size) {
      detail::infer_part(m, x, y, mem);
    } else {  // two ping-pong buffers; a part that publishes to a memory keeps its own
      Tensor<T>& buf = uses_memory ? infer_out_[I] : pong_[I % 2];
      buf.resize(m.output_shape(x.shape()));
      detail::infer_part(m, x, buf.view(), mem);
      infer_from<I + 1>(buf.cview(), y, mem);
    }
  }
  // `s` scales dy of the last part only (1 for a plain backward).
  template <std::size_t I>
  void backward_from(const Cache& c, ConstView<T> dy, View<T> dx, T s, Grad g) {
    auto& m = std::get<I>(mods_);
    const auto& mc = std::get<I>(c.parts);
    auto run = [&](View<T> out, Grad gi) {
      if constexpr (I + 1 == size && ScaledBackward<std::remove_reference_t<decltype(m)>>) m.backward_scaled(mc, dy, s, out, gi);
      else m.backward(mc, dy, out, gi);
    };
    if constexpr (I == 0) {
      run(dx, g);
    } else {
      Tensor<T>& gr = grad_[I - 1];
      gr.resize(c.out[I - 1].shape());
      fill_zero(gr.data(), gr.size());
      run(gr.view(), {.input = true, .params = g.params});
      backward_from<I - 1>(c, gr.cview(), dx, T(1), g);
    }
  }
  template <std::size_t I, class F>
  void visit_from(F& f, const std::string& prefix) {
    if constexpr (I < size) {
      // An empty name splices the part's parameters into this level.
      std::get<I>(mods_).visit(f, names_[I].empty() ? prefix : prefix + names_[I] + ".");
      visit_from<I + 1>(f, prefix);
    }
  }

  std::tuple<Ms...> mods_;
  std::array<std::string, size> names_;
  std::array<Tensor<T>, size - 1> grad_, infer_out_;
  std::array<Tensor<T>, 2> pong_;
  Cache cache_;
};

/// y = x (the shortcut of a plain residual).
template <class T>
class Identity {
 public:
  using value_type = T;
  struct Cache {
    Shape x_shape;
    bool done = false;
  };
  Shape output_shape(const Shape& in) const {
    require_non_empty(in, "Identity");
    return in;
  }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass = {}) {
    c.done = false;
    infer(x, y);
    c.x_shape = x.shape();
    c.done = true;
  }
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "Identity", "x");
    require_shape(y, output_shape(x.shape()), "Identity", "y");
    std::copy(x.data(), x.data() + x.size(), y.data());
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    require_forward(c.done, "Identity");
    require_shape(dy, c.x_shape, "Identity", "dy");
    require_input_grad(dx, c.x_shape, g, "Identity");
    if (g.input) axpy(dx.data(), dy.data(), dy.size());
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }
  template <class F>
  void visit(F&&, const std::string&) {}

 private:
  Cache cache_;
};

/// y = f(x) + s(x), s the identity by default. Wraps any module f whose output
/// has the shape of s's output. Both branches' input gradients add into dx.
template <class F, class S = Identity<typename F::value_type>>
class Residual {
  static_assert(check_module<F>() && check_module<S>(), "lamina::Residual: f and s must satisfy lamina::Module");

 public:
  using value_type = typename F::value_type;
  using T = value_type;
  static_assert(std::is_same_v<typename S::value_type, value_type>, "lamina::Residual: one scalar type");
  static constexpr bool identity_shortcut = std::is_same_v<S, Identity<value_type>>;

  struct Cache {
    typename F::Cache f;
    typename S::Cache s;  ///< unused for the identity
    Tensor<T> s_out;      ///< s(x) (other shortcuts)
  };

  explicit Residual(F f, S s = S{}) : f_(std::move(f)), s_(std::move(s)) {}
  /// Parameter prefixes of the two branches (default "f." and "shortcut.").
  Residual& set_names(std::string f_prefix, std::string s_prefix) {
    f_name_ = std::move(f_prefix);
    s_name_ = std::move(s_prefix);
    return *this;
  }
  F& body() noexcept { return f_; }
  S& shortcut() noexcept { return s_; }

  Shape output_shape(const Shape& in) const {
    const Shape a = f_.output_shape(in), b = s_.output_shape(in);
    require<shape_error>(a == b, "Residual", "branch output shapes", detail::text("f(x) ", a), detail::text("shortcut(x) ", b));
    return a;
  }
  void forward(ConstView<T> x, View<T> y, Cache& c, Pass p = {}) {
    const Shape ys = output_shape(x.shape());
    require_shape(y, ys, "Residual", "y");
    f_.forward(x, y, c.f, p);
    if constexpr (identity_shortcut) {
      axpy(y.data(), x.data(), y.size());  // the identity's backward needs no state
    } else {
      c.s_out.resize(ys);
      s_.forward(x, c.s_out.view(), c.s, p);
      axpy(y.data(), c.s_out.data(), y.size());
    }
  }
  void infer(ConstView<T> x, View<T> y) {
    const Shape ys = output_shape(x.shape());
    require_shape(y, ys, "Residual", "y");
    f_.infer(x, y);
    if constexpr (identity_shortcut) {
      axpy(y.data(), x.data(), y.size());
    } else {
      tmp_.resize(ys);
      s_.infer(x, tmp_.view());
      axpy(y.data(), tmp_.data(), y.size());
    }
  }
  void backward(const Cache& c, ConstView<T> dy, View<T> dx, Grad g = {}) {
    f_.backward(c.f, dy, dx, g);
    if constexpr (identity_shortcut) {
      if (g.input) axpy(dx.data(), dy.data(), dy.size());
    } else {
      s_.backward(c.s, dy, dx, g);
    }
  }
  void forward(ConstView<T> x, View<T> y) { forward(x, y, cache_); }
  void backward(ConstView<T> dy, View<T> dx, Grad g = {}) { backward(cache_, dy, dx, g); }
  template <class Fn>
  void visit(Fn&& fn, const std::string& prefix) {
    f_.visit(fn, prefix + f_name_);
    s_.visit(fn, prefix + s_name_);
  }
  void set_training(bool on) {
    lamina::set_training(f_, on);
    lamina::set_training(s_, on);
  }

 private:
  F f_;
  S s_;
  std::string f_name_ = "f.", s_name_ = "shortcut.";
  Tensor<T> tmp_;
  Cache cache_;
};

}  // namespace lamina
