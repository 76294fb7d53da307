#pragma once
// The low-rank term of LAUREL (spec/laurel.md "LR", "Backward", "Cost"):
//   y += (s A) (B diag(scale)),   A: D×r (down), B: r×D (up),
// on a stream s read in place (core/channels.hpp). Two skinny GEMMs forward
// (4·N·D·r FLOPs), four backward; the D×D product A B is never formed.
#include "lamina/core/eigen_core.hpp"

#include <cmath>
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
    Mat Bs = matrix(B_.cview());
    for (index_t c = 0; c < Bs.cols(); ++c) Bs.col(c) *= scale[per_column ? c : 0];
    return Bs;
  }

  // ---- one block of rows (an image, or all dense rows) ------------------------
  /// Y += (X A) Bs, keeping U's rows [r0, r0 + X.rows()) = X A.
  template <class Xm, class Ym>
  void forward_block(const Xm& X, Ym&& Y, Mat& U, index_t r0, const Mat& Bs) const {
    auto Ub = U.middleRows(r0, X.rows());
    Ub.noalias() = X * matrix(A_.cview());
    Y.noalias() += Ub * Bs;
  }
  /// With P = G Bsᵀ: M += Uᵀ G, dA += Xᵀ P (M, dA partial sums; when g.params),
  /// DS += P Aᵀ (when g.input).
  template <class Gm, class Xm, class Dm>
  void backward_block(const Gm& G, const Xm& X, Dm&& DS, const Mat& U, index_t r0, const Mat& Bs, Mat& M, Mat& dA,
                      Grad g = {}) const {
    const Mat P = G * Bs.transpose();
    if (g.params) {
      M.noalias() += U.middleRows(r0, G.rows()).transpose() * G;
      dA.noalias() += X.transpose() * P;
    }
    if (g.input) DS.noalias() += P * matrix(A_.cview()).transpose();
  }
  /// Adds dA and dB = M diag(scale) into the gradients; returns
  /// t[c] = Σ_k B[k,c] M[k,c] (= <G, U B> of column c), from which the caller
  /// forms the gradients of the scale.
  std::vector<double> finish_backward(const Mat& M, const Mat& dA, const T* scale, bool per_column) {
    const index_t r = rank(), D = width();
    matrix(dA_.view()) += dA;
    auto dBm = matrix(dB_.view());
    const auto Bm = matrix(B_.cview());
    std::vector<double> t(static_cast<std::size_t>(D));
    for (index_t c = 0; c < D; ++c) {
      const T sc = scale[per_column ? c : 0];
      double acc = 0;
      for (index_t k = 0; k < r; ++k) {
        dBm(k, c) += sc * M(k, c);
        acc += double(Bm(k, c)) * double(M(k, c));
      }
      t[static_cast<std::size_t>(c)] = acc;
    }
    return t;
  }

  // ---- a whole stream -------------------------------------------------------------
  /// y += (s A)(B diag scale), keeping U = s A.
  void forward(const ChannelGeometry& g, const T* s, T* y, const T* scale, bool per_column, Mat& U) const {
    U.resize(g.rows(), rank());
    const Mat Bs = scaled(scale, per_column);
    for_each_row_block(g, [&](index_t r0, int, auto X, auto Y) { forward_block(X, Y, U, r0, Bs); }, s, y);
  }
  /// Gradients of forward(): dB += M diag scale, dA += sᵀ P (when want.params),
  /// ds += P Aᵀ (when want.input); returns t (empty without want.params).
  std::vector<double> backward(const ChannelGeometry& g, const T* G, const T* s, T* ds, const T* scale, bool per_column,
                               const Mat& U, Grad want = {}) {
    const Mat Bs = scaled(scale, per_column);
    const int nt = g.dense() ? 1 : num_threads();
    // Thread-private partial sums of M and dA (images run in parallel).
    std::vector<Mat> M(static_cast<std::size_t>(nt), Mat::Zero(rank(), width()));
    std::vector<Mat> dA(static_cast<std::size_t>(nt), Mat::Zero(width(), rank()));
    for_each_row_block(
        g,
        [&](index_t r0, int t, auto Gb, auto X, auto DS) {
          backward_block(Gb, X, DS, U, r0, Bs, M[static_cast<std::size_t>(t)], dA[static_cast<std::size_t>(t)], want);
        },
        G, s, ds);
    if (!want.params) return {};
    for (int t = 1; t < nt; ++t) M[0] += M[static_cast<std::size_t>(t)], dA[0] += dA[static_cast<std::size_t>(t)];
    return finish_backward(M[0], dA[0], scale, per_column);
  }

 private:
  static auto matrix(ConstView<T> v) {
    return Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), v.dim(0), v.dim(1));
  }
  static auto matrix(View<T> v) {
    return Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), v.dim(0), v.dim(1));
  }

  Tensor<T> A_, dA_, B_, dB_;
};

}  // namespace lamina::laurel
