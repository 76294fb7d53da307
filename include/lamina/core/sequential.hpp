#pragma once
// Static composition: Sequential<M1, ..., Mn> runs its modules in order and owns
// the tensors between them (outputs and their gradients, reused across steps).
#include <array>
#include <string>
#include <tuple>
#include <utility>

#include "lamina/core/history.hpp"
#include "lamina/core/module.hpp"

namespace lamina {

template <class... Ms>
class Sequential {
  static_assert(sizeof...(Ms) >= 1, "lamina::Sequential needs at least one module");
  static_assert((check_module<Ms>() && ...), "lamina::Sequential: every part must satisfy lamina::Module");

 public:
  using value_type = typename std::tuple_element_t<0, std::tuple<Ms...>>::value_type;
  static_assert((std::is_same_v<typename Ms::value_type, value_type> && ...),
                "lamina::Sequential: all parts must share one scalar type");
  static constexpr std::size_t size = sizeof...(Ms);

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

  void forward(ConstView<value_type> x, View<value_type> y) { forward_from<0>(x, y); }
  void infer(ConstView<value_type> x, View<value_type> y) { infer_from<0>(x, y); }
  void backward(ConstView<value_type> dy, View<value_type> dx) { backward_from<size - 1>(dy, dx, value_type(1)); }
  /// backward(s·dy, dx) when the last part offers it (core/module.hpp ScaledBackward).
  void backward_scaled(ConstView<value_type> dy, value_type s, View<value_type> dx)
    requires ScaledBackward<std::tuple_element_t<size - 1, std::tuple<Ms...>>>
  {
    backward_from<size - 1>(dy, dx, s);
  }

  template <class F>
  void visit(F&& f, const std::string& prefix) {
    visit_from<0>(f, prefix);
  }
  void set_training(bool on) {
    std::apply([&](auto&... m) { (lamina::set_training(m, on), ...); }, mods_);
  }
  /// A sequence whose first part publishes a stream (a LAUREL-PA connection
  /// followed by its activation) publishes that stream (core/history.hpp).
  StreamSlot<value_type>* stream_slot()
    requires HasStreamSlot<std::tuple_element_t<0, std::tuple<Ms...>>>
  {
    return std::get<0>(mods_).stream_slot();
  }
  void link_predecessors(std::span<StreamSlot<value_type>* const> earlier)
    requires HasStreamSlot<std::tuple_element_t<0, std::tuple<Ms...>>>
  {
    std::get<0>(mods_).link_predecessors(earlier);
  }

 private:
  using T = value_type;

  template <std::size_t I>
  void forward_from(ConstView<T> x, View<T> y) {
    auto& m = std::get<I>(mods_);
    if constexpr (I + 1 == size) {
      m.forward(x, y);
    } else {
      out_[I].resize(m.output_shape(x.shape()));
      m.forward(x, out_[I].view());
      forward_from<I + 1>(out_[I].cview(), y);
    }
  }
  template <std::size_t I>
  void infer_from(ConstView<T> x, View<T> y) {
    auto& m = std::get<I>(mods_);
    if constexpr (I + 1 == size) {
      m.infer(x, y);
    } else {  // two ping-pong buffers, separate from the training cache
      Tensor<T>& buf = pong_[I % 2];
      buf.resize(m.output_shape(x.shape()));
      m.infer(x, buf.view());
      infer_from<I + 1>(buf.cview(), y);
    }
  }
  // `s` scales dy of the last part only (1 for a plain backward).
  template <std::size_t I>
  void backward_from(ConstView<T> dy, View<T> dx, T s) {
    auto& m = std::get<I>(mods_);
    auto run = [&](View<T> out) {
      if constexpr (I + 1 == size && ScaledBackward<std::remove_reference_t<decltype(m)>>) m.backward_scaled(dy, s, out);
      else m.backward(dy, out);
    };
    if constexpr (I == 0) {
      run(dx);
    } else {
      Tensor<T>& g = grad_[I - 1];
      g.resize(out_[I - 1].shape());
      fill_zero(g.data(), g.size());
      run(g.view());
      backward_from<I - 1>(g.cview(), dx, T(1));
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
  std::array<Tensor<T>, size - 1> out_, grad_;
  std::array<Tensor<T>, 2> pong_;
};

/// y = x (the shortcut of a plain residual).
template <class T>
class Identity {
 public:
  using value_type = T;
  Shape output_shape(const Shape& in) const { return in; }
  void forward(ConstView<T> x, View<T> y) { infer(x, y); }
  void infer(ConstView<T> x, View<T> y) {
    require_contiguous(x, "Identity", "x");
    require_shape(y, x.shape(), "Identity", "y");
    std::copy(x.data(), x.data() + x.size(), y.data());
  }
  void backward(ConstView<T> dy, View<T> dx) {
    require_shape(dx, dy.shape(), "Identity", "dx");
    require_contiguous(dy, "Identity", "dy");
    axpy(dx.data(), dy.data(), dy.size());
  }
  template <class F>
  void visit(F&&, const std::string&) {}
};

/// y = f(x) + s(x), s the identity by default. Wraps any module f whose output
/// has the shape of s's output. Both branches' input gradients add into dx.
template <class F, class S = Identity<typename F::value_type>>
class Residual {
  static_assert(check_module<F>() && check_module<S>(), "lamina::Residual: f and s must satisfy lamina::Module");

 public:
  using value_type = typename F::value_type;
  static_assert(std::is_same_v<typename S::value_type, value_type>, "lamina::Residual: one scalar type");
  static constexpr bool identity_shortcut = std::is_same_v<S, Identity<value_type>>;

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
    require<shape_error>(a == b, "Residual", "branch output shapes", detail::concat("f(x) ", a), detail::concat("shortcut(x) ", b));
    return a;
  }
  void forward(ConstView<value_type> x, View<value_type> y) { run(x, y, true); }
  void infer(ConstView<value_type> x, View<value_type> y) { run(x, y, false); }
  void backward(ConstView<value_type> dy, View<value_type> dx) {
    f_.backward(dy, dx);
    s_.backward(dy, dx);
  }
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
  void run(ConstView<value_type> x, View<value_type> y, bool train) {
    const Shape ys = output_shape(x.shape());
    require_shape(y, ys, "Residual", "y");
    if (train) f_.forward(x, y);
    else f_.infer(x, y);
    if constexpr (identity_shortcut) {
      axpy(y.data(), x.data(), y.size());
    } else {
      tmp_.resize(ys);
      if (train) s_.forward(x, tmp_.view());
      else s_.infer(x, tmp_.view());
      axpy(y.data(), tmp_.data(), y.size());
    }
  }

  F f_;
  S s_;
  std::string f_name_ = "f.", s_name_ = "shortcut.";
  Tensor<value_type> tmp_;
};

}  // namespace lamina
