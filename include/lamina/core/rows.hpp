#pragma once
// Per-sample routing (spec/fpi_dynalay.md §4: a batch takes different paths):
// rows of a batch (the leading extent; a row is everything behind it) are
// gathered by an index list into a contiguous sub-batch, a module runs on it,
// and the result is scattered back in place. The backward of a gather is a
// scatter-add, the backward of a scatter is a gather (added):
//
//   RowRouting r(route, 3);                       // route[i] = destination of row i
//   gather_rows(x, r.rows(k), xk);                // forward
//   m[k].forward(xk, yk, ck);  scatter_rows(yk, r.rows(k), y);
//   gather_rows(dy, r.rows(k), dyk);              // backward
//   m[k].backward(ck, dyk, dxk);  scatter_add_rows(dxk, r.rows(k), dx);
#include <span>
#include <vector>

#include "lamina/core/module.hpp"

namespace lamina {

/// The rows of a batch split between `destinations` by route[i] ∈ [0, destinations).
/// rows(k) lists the rows of destination k in ascending order.
class RowRouting {
 public:
  RowRouting() = default;
  RowRouting(std::span<const index_t> route, index_t destinations) {
    require(destinations >= 1, "RowRouting", "destinations", ">= 1", destinations);
    first_.assign(static_cast<std::size_t>(destinations + 1), 0);
    for (std::size_t i = 0; i < route.size(); ++i) {
      const index_t k = route[i];
      if (k < 0 || k >= destinations) [[unlikely]]
        fail<value_error>("RowRouting", detail::text("route[", i, "]"), detail::text("in [0, ", destinations, ")"), k);
      ++first_[static_cast<std::size_t>(k + 1)];
    }
    for (std::size_t k = 1; k < first_.size(); ++k) first_[k] += first_[k - 1];
    rows_.resize(route.size());
    std::vector<index_t> next(first_.begin(), first_.end() - 1);
    for (std::size_t i = 0; i < route.size(); ++i)
      rows_[static_cast<std::size_t>(next[static_cast<std::size_t>(route[i])]++)] = index_t(i);
  }
  index_t destinations() const noexcept { return index_t(first_.empty() ? 0 : first_.size() - 1); }
  index_t batch() const noexcept { return index_t(rows_.size()); }
  std::span<const index_t> rows(index_t k) const {
    require(k >= 0 && k < destinations(), "RowRouting", "destination", detail::text("in [0, ", destinations(), ")"), k);
    const auto a = static_cast<std::size_t>(first_[static_cast<std::size_t>(k)]);
    const auto b = static_cast<std::size_t>(first_[static_cast<std::size_t>(k + 1)]);
    return std::span<const index_t>(rows_).subspan(a, b - a);
  }

 private:
  std::vector<index_t> first_, rows_;
};

/// The shape of `rows` rows of a batch of shape s.
inline Shape with_rows(const Shape& s, index_t rows) {
  require<shape_error>(s.rank() >= 1, "with_rows", "shape", "rank >= 1", s);
  std::array<index_t, max_rank> d{};
  for (int i = 0; i < s.rank(); ++i) d[static_cast<std::size_t>(i)] = s[i];
  d[0] = rows;
  return Shape::from(d.begin(), d.begin() + s.rank());
}

namespace detail {
template <class T, class U>
index_t check_rows(const View<T>& batch, const View<U>& sub, std::span<const index_t> rows, std::string_view fn) {
  require_contiguous(batch, fn, "batch");
  require_contiguous(sub, fn, "rows tensor");
  require<shape_error>(sub.shape() == with_rows(batch.shape(), index_t(rows.size())), fn, "rows tensor shape",
                       with_rows(batch.shape(), index_t(rows.size())), sub.shape());
  const index_t n = batch.dim(0);
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (rows[i] < 0 || rows[i] >= n) [[unlikely]]
      fail<shape_error>(fn, detail::text("rows[", i, "]"), detail::text("in [0, ", n, ")"), rows[i]);
  return n == 0 ? 0 : batch.size() / n;
}
}  // namespace detail

/// out[i] = x[rows[i]]: the sub-batch of the listed rows.
template <class T>
void gather_rows(ConstView<T> x, std::span<const index_t> rows, View<T> out) {
  const index_t w = detail::check_rows(x, out, rows, "gather_rows");
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::copy(x.data() + rows[i] * w, x.data() + (rows[i] + 1) * w, out.data() + index_t(i) * w);
}
/// out[i] += x[rows[i]] (the backward of scatter_rows).
template <class T>
void gather_add_rows(ConstView<T> x, std::span<const index_t> rows, View<T> out) {
  const index_t w = detail::check_rows(x, out, rows, "gather_add_rows");
  for (std::size_t i = 0; i < rows.size(); ++i) axpy(out.data() + index_t(i) * w, x.data() + rows[i] * w, w);
}
/// y[rows[i]] = src[i]: the sub-batch back in place (other rows untouched).
template <class T>
void scatter_rows(ConstView<T> src, std::span<const index_t> rows, View<T> y) {
  const index_t w = detail::check_rows(y, src, rows, "scatter_rows");
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::copy(src.data() + index_t(i) * w, src.data() + index_t(i + 1) * w, y.data() + rows[i] * w);
}
/// y[rows[i]] += src[i] (the backward of gather_rows; rows may repeat).
template <class T>
void scatter_add_rows(ConstView<T> src, std::span<const index_t> rows, View<T> y) {
  const index_t w = detail::check_rows(y, src, rows, "scatter_add_rows");
  for (std::size_t i = 0; i < rows.size(); ++i) axpy(y.data() + rows[i] * w, src.data() + index_t(i) * w, w);
}

}  // namespace lamina
