#pragma once
// Zero-copy adapters between lamina views and Eigen (spec/conventions.md:
// "Converting adapters for Eigen types belong in the library").
#include "lamina/core/eigen_core.hpp"

#include "lamina/core/tensor.hpp"

namespace lamina {

template <class T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ColVector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

namespace detail {
template <class T>
using MatrixMapOf = std::conditional_t<std::is_const_v<T>,
                                       Eigen::Map<const RowMatrix<std::remove_const_t<T>>, Eigen::Unaligned, Eigen::OuterStride<>>,
                                       Eigen::Map<RowMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>>;
template <class T>
using VectorMapOf = std::conditional_t<std::is_const_v<T>, Eigen::Map<const ColVector<std::remove_const_t<T>>>,
                                       Eigen::Map<ColVector<T>>>;
}  // namespace detail

/// A contiguous view read as the row-major matrix [rows(), cols()] (an [N, D]
/// reading: all leading extents are rows). Writable when T is not const.
template <class T>
detail::MatrixMapOf<T> as_matrix(const View<T>& v) {
  require_contiguous(v, "as_matrix", "view");
  const index_t r = v.shape().rows(), c = v.shape().cols();
  return detail::MatrixMapOf<T>(v.data(), r, c, Eigen::OuterStride<>(c));
}
/// A contiguous view read as the row-major matrix [rows, cols] (rows*cols == size()).
template <class T>
detail::MatrixMapOf<T> as_matrix(const View<T>& v, index_t rows, index_t cols) {
  require_contiguous(v, "as_matrix", "view");
  require<shape_error>(rows * cols == v.size(), "as_matrix", "rows*cols", v.size(), rows * cols);
  return detail::MatrixMapOf<T>(v.data(), rows, cols, Eigen::OuterStride<>(cols));
}
/// A contiguous view of any shape as a flat Eigen vector.
template <class T>
detail::VectorMapOf<T> as_vector(const View<T>& v) {
  require_contiguous(v, "as_vector", "view");
  return detail::VectorMapOf<T>(v.data(), v.size());
}

/// Views of Eigen dense objects (matrices, maps, blocks with direct access).
/// Row-major objects give contiguous [rows, cols] views; column-major ones a
/// strided view of the same logical [rows, cols] matrix.
template <class Derived>
auto view_of(Eigen::PlainObjectBase<Derived>& m) {
  using S = typename Derived::Scalar;
  const index_t r = m.rows(), c = m.cols();
  if constexpr (Derived::IsRowMajor) return View<S>(m.data(), Shape{r, c}, Strides{m.outerStride(), 1, 0, 0});
  else return View<S>(m.data(), Shape{r, c}, Strides{1, m.outerStride(), 0, 0});
}
template <class Derived>
auto view_of(const Eigen::PlainObjectBase<Derived>& m) {
  using S = typename Derived::Scalar;
  const index_t r = m.rows(), c = m.cols();
  if constexpr (Derived::IsRowMajor) return ConstView<S>(m.data(), Shape{r, c}, Strides{m.outerStride(), 1, 0, 0});
  else return ConstView<S>(m.data(), Shape{r, c}, Strides{1, m.outerStride(), 0, 0});
}
/// Views of Eigen::Map (any strides): writable for a writable map.
template <class PlainType, int Options, class StrideType>
auto view_of(Eigen::Map<PlainType, Options, StrideType>& m) {
  using Elem = std::remove_pointer_t<decltype(m.data())>;
  const index_t r = m.rows(), c = m.cols();
  if constexpr (PlainType::IsRowMajor) return View<Elem>(m.data(), Shape{r, c}, Strides{m.outerStride(), m.innerStride(), 0, 0});
  else return View<Elem>(m.data(), Shape{r, c}, Strides{m.innerStride(), m.outerStride(), 0, 0});
}
template <class PlainType, int Options, class StrideType>
auto view_of(const Eigen::Map<PlainType, Options, StrideType>& m) {
  using Elem = const typename PlainType::Scalar;
  const index_t r = m.rows(), c = m.cols();
  if constexpr (PlainType::IsRowMajor) return View<Elem>(m.data(), Shape{r, c}, Strides{m.outerStride(), m.innerStride(), 0, 0});
  else return View<Elem>(m.data(), Shape{r, c}, Strides{m.innerStride(), m.outerStride(), 0, 0});
}

}  // namespace lamina
