#pragma once
// The adjoint map of the exact implicit backward (spec/fpi_dynalay.md §3):
//   A(w) = Jᵀ w + g,   J = ∂f/∂z at z*,
// as a row map for Solver (solve.hpp), so that w = Jᵀw + g is solved per sample
// with the forward's solvers. Each product Jᵀw is an input-only vector–Jacobian
// product of the cell (Grad{.input = true, .params = false}, empty du): the
// parameter gradients are untouched until the one full backward that follows.
//
// Converged samples stop costing work: the products run on the rows of the
// current cell application (at first the forward's, over the whole batch); when
// the active rows fall to half of them or fewer, the cell is re-applied at z* on
// the active rows alone (one evaluation of those rows) and later products use
// that smaller application. So at most twice the needed rows are ever
// multiplied, and the re-applications cost at most one evaluation of the batch.
#include <span>
#include <vector>

#include "lamina/core/cell.hpp"
#include "lamina/core/rows.hpp"

namespace lamina::fpi {

template <Cell C>
class AdjointMap {
 public:
  using T = typename C::value_type;

  /// cell, its application `star` at z* (all N rows), z*, u and the upstream g:
  /// all must stay alive and unchanged while the map is used.
  void bind(C& cell, const typename C::Cache& star, ConstView<T> z, ConstView<T> u, ConstView<T> g) {
    cell_ = &cell, star_ = &star, z_ = z, u_ = u, g_ = g;
    cached_.resize(std::size_t(z.dim(0)));
    for (index_t i = 0; i < z.dim(0); ++i) cached_[std::size_t(i)] = i;
    use_sub_ = false;
    product_rows_ = reapplied_rows_ = 0;
  }

  /// out[j] = (Jᵀ w)[j] + g[rows[j]] for the ascending row list `rows`.
  void operator()(ConstView<T> w, std::span<const index_t> rows, View<T> out) {
    if (2 * rows.size() <= cached_.size() && rows.size() < cached_.size()) reapply(rows);
    const index_t n = index_t(cached_.size()), width = z_.size() / z_.dim(0);
    if (index_t(rows.size()) == n) {  // every cached row asked for: out = g[rows], then the product adds into it
      gather_rows(g_, rows, out);
      cell_->backward(use_sub_ ? sub_ : *star_, w, out, View<T>{}, {.input = true, .params = false});
      product_rows_ += n;
      return;
    }
    const Shape s = with_rows(z_.shape(), n);
    place(w, rows, s, width);
    dz_.resize(s);
    fill_zero(dz_.data(), dz_.size());
    cell_->backward(use_sub_ ? sub_ : *star_, wfull_.cview(), dz_.view(), View<T>{}, {.input = true, .params = false});
    product_rows_ += n;
    pick(rows, out, width);
  }

  index_t product_rows() const noexcept { return product_rows_; }      ///< rows multiplied by Jᵀ
  index_t reapplied_rows() const noexcept { return reapplied_rows_; }  ///< rows of cell re-applications

 private:
  /// Re-applies the cell at z* on `rows`; later products use that application.
  void reapply(std::span<const index_t> rows) {
    cached_.assign(rows.begin(), rows.end());
    const Shape s = with_rows(z_.shape(), index_t(rows.size()));
    zs_.resize(s), us_.resize(s), ys_.resize(s);
    gather_rows(z_, rows, zs_.view());
    gather_rows(u_, rows, us_.view());
    cell_->forward(zs_.cview(), us_.cview(), ys_.view(), sub_);
    use_sub_ = true;
    reapplied_rows_ += index_t(rows.size());
  }
  /// wfull_ = w spread over the cached rows (zero where a cached row is not asked for).
  void place(ConstView<T> w, std::span<const index_t> rows, const Shape& s, index_t width) {
    wfull_.resize(s);
    pos_.resize(rows.size());
    fill_zero(wfull_.data(), wfull_.size());
    std::size_t p = 0;
    for (std::size_t j = 0; j < rows.size(); ++j) {
      while (cached_[p] != rows[j]) ++p;  // both ascending, rows ⊆ cached_
      pos_[j] = index_t(p);
      std::copy(w.data() + index_t(j) * width, w.data() + index_t(j + 1) * width, wfull_.data() + index_t(p) * width);
    }
  }
  void pick(std::span<const index_t> rows, View<T> out, index_t width) const {
    for (std::size_t j = 0; j < rows.size(); ++j) {
      const T* d = dz_.data() + pos_[j] * width;
      const T* g = g_.data() + rows[j] * width;
      T* o = out.data() + index_t(j) * width;
      for (index_t k = 0; k < width; ++k) o[k] = d[k] + g[k];
    }
  }

  C* cell_ = nullptr;
  const typename C::Cache* star_ = nullptr;
  ConstView<T> z_, u_, g_;
  std::vector<index_t> cached_, pos_;
  bool use_sub_ = false;
  typename C::Cache sub_;
  Tensor<T> zs_, us_, ys_, wfull_, dz_;
  index_t product_rows_ = 0, reapplied_rows_ = 0;
};

}  // namespace lamina::fpi
