#pragma once
// Single-threaded Eigen GEMM with packing buffers that outlive the call.
//
// `dst.noalias() = a * b` on large operands makes Eigen allocate its packing
// buffers (the packed panels of a and b, Goto's blockA and blockB) on every
// call: on the stack up to EIGEN_STACK_ALLOCATION_LIMIT (128 KiB), with
// std::malloc above it. gemm() runs the same general_matrix_matrix_product with
// the blocking sizes Eigen computes for one thread (so the bits of Eigen's
// single-threaded product), but takes the buffers from a GemmSpace kept by the
// caller (a module's per-thread scratch), which grows to the largest product it
// has served and is reused after: a steady-state training step packs into
// memory it already has.
//
// For the products lamina runs inside its own parallel loops, where Eigen runs
// one thread anyway (Eigen's threaded GEMM, parallelize_gemm, is not used).
// Products small enough for Eigen's coefficient-based or matrix-vector path
// (which need no packing) are handed to Eigen unchanged.
#include "lamina/core/eigen_core.hpp"

#include <cstddef>
#include <type_traits>

#include "lamina/core/aligned.hpp"
#include "lamina/core/tensor.hpp"

namespace lamina {

/// The packing buffers of gemm(): one per thread that calls it.
template <class T>
class GemmSpace : public Eigen::internal::level3_blocking<T, T> {
 public:
  /// Blocking sizes for the column-major product [rows, depth]·[depth, cols]
  /// on one thread, as Eigen's gemm_blocking_space computes them, and buffers
  /// for them (grown, never shrunk).
  void prepare(index_t rows, index_t cols, index_t depth) {
    this->m_mc = rows;
    this->m_nc = cols;
    this->m_kc = depth;
    Eigen::internal::computeProductBlockingSizes<T, T, 1>(this->m_kc, this->m_mc, this->m_nc, Eigen::Index(1));
    grow(a_, this->m_mc * this->m_kc);
    grow(b_, this->m_kc * this->m_nc);
    this->m_blockA = a_.data();
    this->m_blockB = b_.data();
  }
  /// Bytes held (for tests and reports).
  std::size_t bytes() const noexcept { return (a_.capacity() + b_.capacity()) * sizeof(T); }

 private:
  static void grow(aligned_vector<T>& v, index_t n) {
    if (v.size() < static_cast<std::size_t>(n)) v.resize(static_cast<std::size_t>(n));
  }
  aligned_vector<T> a_, b_;
};

/// dst = a·b, or dst += a·b when `add`: what `dst.noalias() = a * b` (or +=)
/// computes on one thread, bit for bit, with the packing buffers in `space`.
/// a and b are matrices with unit inner stride (maps, their transposes).
template <class Dst, class Lhs, class Rhs, class T>
void gemm(Dst&& dst, const Lhs& a, const Rhs& b, GemmSpace<T>& space, bool add = false) {
  namespace ei = Eigen::internal;
  using D = std::remove_cvref_t<Dst>;
  using LhsTraits = ei::blas_traits<Lhs>;
  using RhsTraits = ei::blas_traits<Rhs>;
  const index_t rows = dst.rows(), cols = dst.cols(), depth = a.cols();
  // Eigen's own choice (GeneralMatrixMatrix.h, generic_product_impl): the
  // coefficient-based product for tiny sizes, GEMV for a vector result.
  if (rows <= 1 || cols <= 1 || depth == 0 || b.rows() + rows + cols < EIGEN_GEMM_TO_COEFFBASED_THRESHOLD) {
    if (add) dst.noalias() += a * b;
    else dst.noalias() = a * b;
    return;
  }
  const auto& lhs = LhsTraits::extract(a);
  const auto& rhs = RhsTraits::extract(b);
  using L = std::remove_cvref_t<decltype(lhs)>;
  using R = std::remove_cvref_t<decltype(rhs)>;
  static_assert(ei::traits<L>::InnerStrideAtCompileTime == 1 && ei::traits<R>::InnerStrideAtCompileTime == 1,
                "gemm: operands need unit inner stride");
  constexpr int lhs_order = (L::Flags & Eigen::RowMajorBit) ? Eigen::RowMajor : Eigen::ColMajor;
  constexpr int rhs_order = (R::Flags & Eigen::RowMajorBit) ? Eigen::RowMajor : Eigen::ColMajor;
  constexpr int dst_order = (D::Flags & Eigen::RowMajorBit) ? Eigen::RowMajor : Eigen::ColMajor;
  using Product = ei::general_matrix_matrix_product<Eigen::Index, T, lhs_order, LhsTraits::NeedToConjugate, T, rhs_order,
                                                    RhsTraits::NeedToConjugate, dst_order, D::InnerStrideAtCompileTime>;
  if (!add) dst.setZero();
  // A row-major result is computed as its column-major transpose (Eigen swaps
  // the operands and the blocking's rows and columns the same way).
  if constexpr (dst_order == Eigen::RowMajor) space.prepare(cols, rows, depth);
  else space.prepare(rows, cols, depth);
  const T alpha = ei::combine_scalar_factors(T(1), a, b);
  Product::run(rows, cols, depth, lhs.data(), lhs.outerStride(), rhs.data(), rhs.outerStride(), dst.data(),
               dst.innerStride(), dst.outerStride(), alpha, space, nullptr);
}

}  // namespace lamina
