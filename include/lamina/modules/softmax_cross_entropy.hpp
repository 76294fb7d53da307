#pragma once
// Mean softmax cross-entropy with optional label smoothing, PyTorch's
// F.cross_entropy (golden/core/README.md "Softmax cross-entropy"): the smoothing
// mass eps is spread over all K classes, the true one included.
#include <cmath>
#include <cstdint>
#include <span>

#include "lamina/core/module.hpp"

namespace lamina {

template <class T>
class SoftmaxCrossEntropy {
 public:
  using value_type = T;

  explicit SoftmaxCrossEntropy(double label_smoothing = 0.0) : eps_(label_smoothing) {
    require(label_smoothing >= 0 && label_smoothing <= 1, "SoftmaxCrossEntropy", "label_smoothing", "in [0, 1]",
            label_smoothing);
  }

  /// Mean loss over the N rows of logits [N, K]; labels in [0, K). Keeps the
  /// probabilities for backward() and correct().
  T forward(ConstView<T> logits, std::span<const std::int32_t> labels) {
    require_contiguous(logits, "SoftmaxCrossEntropy", "logits");
    require<shape_error>(logits.rank() == 2 && logits.size() > 0, "SoftmaxCrossEntropy", "logits shape",
                         "[N, K], non-empty", logits.shape());
    const index_t N = logits.dim(0), K = logits.dim(1);
    require<shape_error>(static_cast<index_t>(labels.size()) == N, "SoftmaxCrossEntropy", "labels size", N,
                         labels.size());
    valid_ = false;  // a forward that throws leaves nothing for backward()
    probs_.resize(logits.shape());
    labels_.assign(labels.begin(), labels.end());
    double total = 0;
    correct_ = 0;
    for (index_t i = 0; i < N; ++i) {
      const std::int32_t y = labels[static_cast<std::size_t>(i)];
      require(y >= 0 && y < K, "SoftmaxCrossEntropy", detail::text("labels[", i, "]"),
              detail::text("in [0, ", K, ")"), y);
      const T* z = logits.data() + i * K;
      T* p = probs_.data() + i * K;
      index_t arg = 0;
      for (index_t k = 1; k < K; ++k)
        if (z[k] > z[arg]) arg = k;
      const T m = z[arg];
      double s = 0;
      for (index_t k = 0; k < K; ++k) s += std::exp(double(z[k] - m));
      const double lse = std::log(s);
      double li = 0;
      for (index_t k = 0; k < K; ++k) {
        const double logp = double(z[k] - m) - lse;
        p[k] = T(std::exp(logp));
        const double q = (k == y ? 1.0 - eps_ : 0.0) + eps_ / double(K);
        if (q != 0) li -= q * logp;
      }
      total += li;
      correct_ += (arg == y);
    }
    valid_ = true;
    return T(total / double(N));
  }

  /// Adds d(mean loss)/d(logits) = (softmax − q)/N, scaled by `scale`, into dlogits.
  void backward(View<T> dlogits, T scale = T(1)) const {
    require<shape_error>(valid_, "SoftmaxCrossEntropy", "backward()", "a preceding forward()", "none");
    require_shape(dlogits, probs_.shape(), "SoftmaxCrossEntropy", "dlogits");
    const index_t N = probs_.dim(0), K = probs_.dim(1);
    const T inv = scale / T(N), off = T(eps_ / double(K));
    for (index_t i = 0; i < N; ++i)
      for (index_t k = 0; k < K; ++k) {
        const T q = (k == labels_[static_cast<std::size_t>(i)] ? T(1 - eps_) : T(0)) + off;
        dlogits.data()[i * K + k] += inv * (probs_[i * K + k] - q);
      }
  }

  const Tensor<T>& probabilities() const noexcept { return probs_; }
  /// Rows of the last forward whose arg-max equals the label.
  index_t correct() const noexcept { return correct_; }

 private:
  double eps_;
  Tensor<T> probs_;
  std::vector<std::int32_t> labels_;
  index_t correct_ = 0;
  bool valid_ = false;
};

}  // namespace lamina
