#pragma once
// Shapes, non-owning strided views and the owning tensor (spec/conventions.md
// "Scalars, layouts, views"). Dense activations are row-major [N, D], images
// are NCHW [B, C, H, W]; a view is a pointer, a shape and strides in elements.
#include "lamina/core/eigen_core.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <initializer_list>
#include <ostream>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "lamina/core/aligned.hpp"
#include "lamina/core/error.hpp"

namespace lamina {

using index_t = std::ptrdiff_t;
inline constexpr int max_rank = 4;

/// Up to four extents, row-major (last index fastest).
class Shape {
 public:
  constexpr Shape() = default;
  constexpr Shape(std::initializer_list<index_t> dims) {
    if (dims.size() > max_rank) throw shape_error("lamina::Shape: rank: expected <= 4, got " + std::to_string(dims.size()));
    for (index_t d : dims) {
      if (d < 0) throw shape_error("lamina::Shape: extent: expected >= 0, got " + std::to_string(d));
      dims_[rank_++] = d;
    }
  }
  template <class It>
  static Shape from(It first, It last) {
    Shape s;
    for (; first != last; ++first) {
      if (s.rank_ == max_rank) throw shape_error("lamina::Shape: rank: expected <= 4, got more");
      if (*first < 0) throw shape_error("lamina::Shape: extent: expected >= 0, got " + std::to_string(*first));
      s.dims_[s.rank_++] = static_cast<index_t>(*first);
    }
    return s;
  }

  constexpr int rank() const noexcept { return rank_; }
  constexpr index_t operator[](int i) const noexcept { return dims_[static_cast<std::size_t>(i)]; }
  constexpr index_t numel() const noexcept {
    index_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
    return n;
  }
  /// Product of all extents but the last: the N of an [N, D] reading.
  constexpr index_t rows() const noexcept {
    index_t n = 1;
    for (int i = 0; i + 1 < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
    return n;
  }
  constexpr index_t cols() const noexcept { return rank_ == 0 ? 1 : dims_[static_cast<std::size_t>(rank_ - 1)]; }

  friend constexpr bool operator==(const Shape& a, const Shape& b) noexcept {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a[i] != b[i]) return false;
    return true;
  }
  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[static_cast<std::size_t>(i)]);
    return s + "]";
  }
  friend std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

 private:
  std::array<index_t, max_rank> dims_{};
  int rank_ = 0;
};

using Strides = std::array<index_t, max_rank>;

constexpr Strides contiguous_strides(const Shape& s) noexcept {
  Strides st{};
  index_t acc = 1;
  for (int i = s.rank() - 1; i >= 0; --i) {
    st[static_cast<std::size_t>(i)] = acc;
    acc *= s[i];
  }
  return st;
}

/// Non-owning view of T (T may be const). Copying a view never copies data.
template <class T>
class View {
 public:
  using value_type = std::remove_const_t<T>;
  using element_type = T;

  View() = default;
  View(T* data, Shape shape) : data_(data), shape_(shape), strides_(contiguous_strides(shape)) {}
  View(T* data, Shape shape, Strides strides) : data_(data), shape_(shape), strides_(strides) {}
  View(std::span<T> s) : View(s.data(), Shape{static_cast<index_t>(s.size())}) {}
  /// View<T> converts to View<const T>.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  View(const View<U>& v) : data_(v.data()), shape_(v.shape()), strides_(v.strides()) {}

  T* data() const noexcept { return data_; }
  const Shape& shape() const noexcept { return shape_; }
  const Strides& strides() const noexcept { return strides_; }
  int rank() const noexcept { return shape_.rank(); }
  index_t dim(int i) const noexcept { return shape_[i]; }
  index_t stride(int i) const noexcept { return strides_[static_cast<std::size_t>(i)]; }
  index_t size() const noexcept { return shape_.numel(); }
  bool empty() const noexcept { return size() == 0; }

  bool is_contiguous() const noexcept {
    const Strides c = contiguous_strides(shape_);
    for (int i = 0; i < rank(); ++i)
      if (shape_[i] > 1 && strides_[static_cast<std::size_t>(i)] != c[static_cast<std::size_t>(i)]) return false;
    return true;
  }

  T& operator()(index_t i) const noexcept { return data_[i * strides_[0]]; }
  T& operator()(index_t i, index_t j) const noexcept { return data_[i * strides_[0] + j * strides_[1]]; }
  T& operator()(index_t i, index_t j, index_t k) const noexcept {
    return data_[i * strides_[0] + j * strides_[1] + k * strides_[2]];
  }
  T& operator()(index_t i, index_t j, index_t k, index_t l) const noexcept {
    return data_[i * strides_[0] + j * strides_[1] + k * strides_[2] + l * strides_[3]];
  }

  /// The elements as a span (contiguous views only).
  std::span<T> span() const {
    require<shape_error>(is_contiguous(), "View", "span()", "a contiguous view", "strided view");
    return {data_, static_cast<std::size_t>(size())};
  }
  /// Same data, another shape of equal size (contiguous views only).
  View reshape(Shape s) const {
    require<shape_error>(is_contiguous(), "View", "reshape()", "a contiguous view", "strided view");
    require<shape_error>(s.numel() == size(), "View", "reshape() size", size(), s.numel());
    return View(data_, s);
  }
  /// Rows [first, first + count) of the leading dimension (a batch slice).
  View slice(index_t first, index_t count) const {
    require<shape_error>(rank() >= 1 && first >= 0 && count >= 0 && first + count <= dim(0), "View",
                         "slice() range", detail::text("within [0, ", rank() ? dim(0) : 0, ")"),
                         detail::text("[", first, ", ", first + count, ")"));
    std::array<index_t, max_rank> d{};
    for (int i = 0; i < rank(); ++i) d[static_cast<std::size_t>(i)] = shape_[i];
    d[0] = count;
    return View(data_ + first * strides_[0], Shape::from(d.begin(), d.begin() + rank()), strides_);
  }

 private:
  T* data_ = nullptr;
  Shape shape_{};
  Strides strides_{};
};

template <class T>
using ConstView = View<const T>;

/// Owning, contiguous, 64-byte aligned tensor. resize() keeps the allocation when it can.
template <class T>
class Tensor {
  static_assert(std::is_floating_point_v<T> || std::is_integral_v<T>, "lamina::Tensor<T>: T must be arithmetic");

 public:
  using value_type = T;

  Tensor() = default;
  explicit Tensor(Shape shape, T fill = T(0)) : shape_(shape), data_(static_cast<std::size_t>(shape.numel()), fill) {}
  Tensor(Shape shape, std::initializer_list<T> values) : shape_(shape), data_(values) {
    require<shape_error>(static_cast<index_t>(values.size()) == shape.numel(), "Tensor", "values",
                         shape.numel(), values.size());
  }
  /// Deep copy of any view.
  static Tensor copy_of(ConstView<T> v) {
    Tensor t(v.shape());
    t.assign(v);
    return t;
  }

  const Shape& shape() const noexcept { return shape_; }
  index_t size() const noexcept { return shape_.numel(); }
  int rank() const noexcept { return shape_.rank(); }
  index_t dim(int i) const noexcept { return shape_[i]; }
  T* data() noexcept { return data_.data(); }
  const T* data() const noexcept { return data_.data(); }
  T& operator[](index_t i) noexcept { return data_[static_cast<std::size_t>(i)]; }
  const T& operator[](index_t i) const noexcept { return data_[static_cast<std::size_t>(i)]; }

  View<T> view() noexcept { return View<T>(data_.data(), shape_); }
  ConstView<T> view() const noexcept { return ConstView<T>(data_.data(), shape_); }
  ConstView<T> cview() const noexcept { return view(); }
  operator View<T>() noexcept { return view(); }
  operator ConstView<T>() const noexcept { return view(); }
  std::span<T> span() noexcept { return {data_.data(), data_.size()}; }
  std::span<const T> span() const noexcept { return {data_.data(), data_.size()}; }

  /// New shape; contents are unspecified unless the size is unchanged.
  void resize(Shape s) {
    shape_ = s;
    data_.resize(static_cast<std::size_t>(s.numel()));
  }
  void fill(T v) noexcept { std::fill(data_.begin(), data_.end(), v); }
  void zero() noexcept { fill(T(0)); }
  /// Copies a view of the same shape (any strides) into this tensor.
  void assign(ConstView<T> v) {
    require<shape_error>(v.shape() == shape_, "Tensor", "assign() shape", shape_, v.shape());
    if (v.is_contiguous()) {
      std::copy(v.data(), v.data() + v.size(), data_.begin());
      return;
    }
    index_t k = 0;
    const Shape& s = v.shape();
    std::array<index_t, max_rank> d{1, 1, 1, 1}, st{0, 0, 0, 0};
    const int off = max_rank - s.rank();
    for (int i = 0; i < s.rank(); ++i) {
      d[static_cast<std::size_t>(off + i)] = s[i];
      st[static_cast<std::size_t>(off + i)] = v.stride(i);
    }
    for (index_t a = 0; a < d[0]; ++a)
      for (index_t b = 0; b < d[1]; ++b)
        for (index_t c = 0; c < d[2]; ++c)
          for (index_t e = 0; e < d[3]; ++e) data_[static_cast<std::size_t>(k++)] = v.data()[a * st[0] + b * st[1] + c * st[2] + e * st[3]];
  }

 private:
  Shape shape_ = Shape{0};  // an empty tensor, not a rank-0 scalar
  aligned_vector<T> data_;
};

/// Throws shape_error unless v is contiguous.
template <class T>
void require_contiguous(const View<T>& v, std::string_view module, std::string_view argument) {
  require<shape_error>(v.is_contiguous(), module, argument, "a contiguous tensor", "a strided view");
}

}  // namespace lamina
