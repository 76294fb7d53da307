#pragma once
// The low-rank term of LAUREL (spec/laurel.md "LR", "Backward", "Cost"):
//   y += (s A) (B diag(scale)),   A: D×r (down), B: r×D (up),
// on a stream s read in place (core/channels.hpp). Two skinny GEMMs forward
// (4·N·D·r FLOPs), four backward; the D×D product A B is never formed.
#include "lamina/core/eigen_core.hpp"

#include <cmath>
#include <span>
#include <vector>

#include "lamina/core/channels.hpp"
#include "lamina/core/init.hpp"
#include "lamina/core/module.hpp"

namespace lamina::laurel {

enum class AInit { column_orthogonal, xavier_uniform };

/// Column-orthogonal init A[i, c] = 1/sqrt(r·D) if i mod r == c (spec "Initialisation").
template <class T>
void init_column_orthogonal(View<T> A) {
  const index_t D = A.dim(0), r = A.dim(1);
  const T v = T(1.0 / std::sqrt(double(r * D)));
  for (index_t i = 0; i < D; ++i)
    for (index_t c = 0; c < r; ++c) A(i, c) = (i % r == c) ? v : T(0);
}

template <class T>
class LowRank {
 public:
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

  LowRank() = default;
  /// B starts at zero (as in LoRA), A column-orthogonal or Xavier-uniform.
  LowRank(index_t D, index_t r, AInit init, Rng& rng)
      : A_(Shape{D, r}), dA_(Shape{D, r}), B_(Shape{r, D}), dB_(Shape{r, D}) {
    require(D > 0, "LowRank", "D", "> 0", D);
    require(r >= 1 && r <= D, "LowRank", "rank r", detail::text("in [1, D = ", D, "]"), r);
    require(init == AInit::xavier_uniform || init == AInit::column_orthogonal, "LowRank", "init",
            "column_orthogonal or xavier_uniform", int(init));
    if (init == AInit::xavier_uniform) init::xavier_uniform(A_.view(), rng);
    else init_column_orthogonal(A_.view());
  }
  index_t width() const noexcept { return A_.dim(0); }
  index_t rank() const noexcept { return A_.dim(1); }
  Tensor<T>& A() noexcept { return A_; }
  Tensor<T>& B() noexcept { return B_; }
  Tensor<T>& dA() noexcept { return dA_; }
  Tensor<T>& dB() noexcept { return dB_; }

  /// B diag(scale): scale has D entries, or one shared by every column when
  /// per_column is false.
  Mat scaled(const T* scale, bool per_column) const {
    Mat Bs;
    scale_into(Bs, scale, per_column);
    return Bs;
  }
  /// scaled() into the object's working memory (valid until the next call).
  const Mat& scaled_scratch(const T* scale, bool per_column) {
    scale_into(Bs_, scale, per_column);
    return Bs_;
  }

  // ---- one block of rows (an image, or all dense rows) ------------------------
  /// Y += (X A) Bs, keeping U's rows [r0, r0 + X.rows()) = X A.
  template <class Xm, class Ym>
  void forward_block(const Xm& X, Ym&& Y, Mat& U, index_t r0, const Mat& Bs) const {
    auto Ub = U.middleRows(r0, X.rows());
    Ub.noalias() = X * matrix(A_.cview());
    Y.noalias() += Ub * Bs;
  }
  /// Zeroes the partial sums of `threads` threads for the backward_block calls
  /// that follow (working memory kept by the object, grown only).
  void begin_backward(int threads) {
    const auto nt = static_cast<std::size_t>(threads);
    if (M_.size() < nt) M_.resize(nt), dAp_.resize(nt), P_.resize(nt);
    for (std::size_t t = 0; t < nt; ++t) {
      zeroed(M_[t], rank(), width());
      zeroed(dAp_[t], width(), rank());
    }
  }
  /// With P = G Bsᵀ: M += Uᵀ G, dA += Xᵀ P (thread `thread`'s partial sums,
  /// when g.params), DS += P Aᵀ (when g.input). After begin_backward.
  template <class Gm, class Xm, class Dm>
  void backward_block(const Gm& G, const Xm& X, Dm&& DS, const Mat& U, index_t r0, const Mat& Bs, int thread,
                      Grad g = {}) {
    const auto t = static_cast<std::size_t>(thread);
    Mat& P = P_[t];
    P.noalias() = G * Bs.transpose();
    if (g.params) {
      M_[t].noalias() += U.middleRows(r0, G.rows()).transpose() * G;
      dAp_[t].noalias() += X.transpose() * P;
    }
    if (g.input) DS.noalias() += P * matrix(A_.cview()).transpose();
  }
  /// Sums the partial sums of `threads` threads and adds dA and dB = M diag(scale)
  /// into the gradients; returns t[c] = Σ_k B[k,c] M[k,c] (= <G, U B> of column c),
  /// from which the caller forms the gradients of the scale (valid until the
  /// next call).
  std::span<const double> finish_backward(int threads, const T* scale, bool per_column) {
    for (std::size_t th = 1; th < static_cast<std::size_t>(threads); ++th) M_[0] += M_[th], dAp_[0] += dAp_[th];
    const Mat& M = M_[0];
    const index_t r = rank(), D = width();
    matrix(dA_.view()) += dAp_[0];
    auto dBm = matrix(dB_.view());
    const auto Bm = matrix(B_.cview());
    t_.resize(static_cast<std::size_t>(D));
    for (index_t c = 0; c < D; ++c) {
      const T sc = scale[per_column ? c : 0];
      double acc = 0;
      for (index_t k = 0; k < r; ++k) {
        dBm(k, c) += sc * M(k, c);
        acc += double(Bm(k, c)) * double(M(k, c));
      }
      t_[static_cast<std::size_t>(c)] = acc;
    }
    return t_;
  }

  // ---- a whole stream -------------------------------------------------------------
  /// y += (s A)(B diag scale), keeping U = s A.
  void forward(const ChannelGeometry& g, const T* s, T* y, const T* scale, bool per_column, Mat& U) {
    if (U.rows() != g.rows() || U.cols() != rank()) U.resize(g.rows(), rank());
    const Mat& Bs = scaled_scratch(scale, per_column);
    for_each_row_block(g, [&](index_t r0, int, auto X, auto Y) { forward_block(X, Y, U, r0, Bs); }, s, y);
  }
  /// Gradients of forward(): dB += M diag scale, dA += sᵀ P (when want.params),
  /// ds += P Aᵀ (when want.input); returns t (empty without want.params; valid
  /// until the next call).
  std::span<const double> backward(const ChannelGeometry& g, const T* G, const T* s, T* ds, const T* scale,
                                   bool per_column, const Mat& U, Grad want = {}) {
    const Mat& Bs = scaled_scratch(scale, per_column);
    const int nt = g.dense() ? 1 : num_threads();  // images run in parallel
    begin_backward(nt);
    for_each_row_block(
        g, [&](index_t r0, int t, auto Gb, auto X, auto DS) { backward_block(Gb, X, DS, U, r0, Bs, t, want); }, G, s,
        ds);
    if (!want.params) return {};
    return finish_backward(nt, scale, per_column);
  }

 private:
  static auto matrix(ConstView<T> v) {
    return Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), v.dim(0), v.dim(1));
  }
  static auto matrix(View<T> v) {
    return Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), v.dim(0), v.dim(1));
  }

  void scale_into(Mat& Bs, const T* scale, bool per_column) const {
    Bs = matrix(B_.cview());
    for (index_t c = 0; c < Bs.cols(); ++c) Bs.col(c) *= scale[per_column ? c : 0];
  }
  static void zeroed(Mat& m, index_t rows, index_t cols) {
    if (m.rows() != rows || m.cols() != cols) m.resize(rows, cols);
    m.setZero();
  }

  Tensor<T> A_, dA_, B_, dB_;
  // Working memory of one forward or backward (a copy starts with its own).
  Mat Bs_;                       // B diag(scale)
  std::vector<Mat> M_, dAp_, P_;  // per thread: partial Uᵀ G and Xᵀ P; P = G Bsᵀ
  std::vector<double> t_;         // finish_backward's result
};

}  // namespace lamina::laurel
