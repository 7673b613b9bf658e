// mmnet/losses/cross_entropy.hpp: softmax cross-entropy on logits with integer labels
// (torch.nn.CrossEntropyLoss(weight=, ignore_index=, reduction=); HMRNet §3 L_CE, MAML §3.1 CE).
//
// Logits x: N x C x ... (rank >= 2; N x C for plain classification). Labels: N x 1 x ... or N x ... with whole
// numbers in [0, C) stored in T. Per voxel v with label y_v:
//   l_v = w[y_v] * (log sum_c exp(x_c) - x_y)          (w = 1 without class weights)
//   mean: sum_v l_v / sum_v w[y_v]    (torch's weighted mean; the voxel count without weights)
//   sum:  sum_v l_v
// Voxels whose label equals ignore_index contribute nothing to either sum (torch). torch's default ignore_index
// is -100; here it is unset by default, so every label must be a class (set it to -100 for torch's behaviour).
// All voxels ignored (or all weights 0) with the mean is 0/0: torch returns NaN, mmnet raises value_error.
// dL/dx_c = w[y] (softmax(x)_c - [c == y]) / denominator: the gradient is w.r.t. the LOGITS.
// No label smoothing.
//
//   losses::CrossEntropy<float, mmnet::cpu> ce(losses::CrossEntropyOptions().weight({0.2, 1, 3}).ignore_index(255));
//   float l = ce.forward(logits, labels);   // logits N x 3 x D x H x W, labels N x 1 x D x H x W
//   auto dl_dlogits = ce.backward();
#pragma once
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "../backend/common/cross_entropy.hpp"
#include "../core/tensor.hpp"
#include "reduction.hpp"

namespace mmnet::losses {

class CrossEntropyOptions {
 public:
  CrossEntropyOptions() = default;
  // mean (default: weighted mean over the voxels that are not ignored) or sum.
  CrossEntropyOptions& reduction(Reduction r) {
    reduction_ = r;
    return *this;
  }
  Reduction reduction() const { return reduction_; }
  // One weight per class (torch's weight=); empty (default) means all 1.
  CrossEntropyOptions& weight(std::vector<double> w) {
    weight_ = std::move(w);
    return *this;
  }
  const std::vector<double>& weight() const { return weight_; }
  // Label value whose voxels are skipped (torch's ignore_index); unset (default) means none.
  CrossEntropyOptions& ignore_index(std::optional<index_t> v) {
    ignore_index_ = v;
    return *this;
  }
  const std::optional<index_t>& ignore_index() const { return ignore_index_; }

 private:
  Reduction reduction_ = Reduction::mean;
  std::vector<double> weight_;
  std::optional<index_t> ignore_index_;
};

template <class T, class Backend>
class CrossEntropy {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::losses::CrossEntropy: T must be float or double");

 public:
  using tensor = Tensor<T, Backend>;

  explicit CrossEntropy(const CrossEntropyOptions& options = CrossEntropyOptions()) : options_(options) {
    detail::check_class_weights(name, "weight", options_.weight());
    if (!options_.weight().empty()) weight_.assign(options_.weight());
  }
  const CrossEntropyOptions& options() const { return options_; }

  // x: logits N x C x ...; labels: N x 1 x ... or N x .... Returns the reduced loss; keeps x and labels.
  T forward(const tensor& x, const tensor& labels) {
    const auto l = detail::class_layout(name, "logits", x);
    detail::check_label_shape(name, labels, x.shape());
    if (!options_.weight().empty() && static_cast<index_t>(options_.weight().size()) != l.c)
      fail<shape_error>(name, "class weight count (logits channels)", l.c, options_.weight().size(),
                        "logits shape " + x.shape().str());
    detail::check_loss_values(name, "logits", x, false);
    detail::check_labels(name, labels, l.c, options_.ignore_index());
    const backend::ClassProblem p{l.n, l.c, l.s};
    const auto sums = backend::cross_entropy_sums(Backend{}, p, x.data(), labels.data(), weight_.data(), label_spec());
    denominator_ = options_.reduction() == Reduction::mean ? sums.v[1] : 1.0;
    const double loss = sums.v[0] / denominator_;
    if (!std::isfinite(loss))
      fail<value_error>(name, "loss", "a finite value", loss,
                        "sum " + std::to_string(sums.v[0]) + " / weight sum " + std::to_string(sums.v[1]) +
                            " (all voxels ignored or of zero weight?); logits shape " + x.shape().str());
    x_ = x;
    labels_ = labels;
    layout_ = l;
    return static_cast<T>(loss);
  }

  // dL/dlogits times grad_loss.
  tensor backward(T grad_loss = T(1)) const {
    if (!x_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    tensor dx(x_.shape());
    backend::cross_entropy_backward(Backend{}, backend::ClassProblem{layout_.n, layout_.c, layout_.s}, x_.data(),
                                    labels_.data(), weight_.data(), label_spec(),
                                    static_cast<double>(grad_loss) / denominator_, false, dx.data());
    return dx;
  }

  static constexpr const char* name = "mmnet::losses::CrossEntropy";

 private:
  backend::LabelSpec label_spec() const {
    backend::LabelSpec ls;
    ls.has_ignore = options_.ignore_index().has_value();
    ls.ignore = ls.has_ignore ? static_cast<double>(*options_.ignore_index()) : 0.0;
    return ls;
  }

  CrossEntropyOptions options_;
  detail::DeviceDoubles<Backend> weight_;
  tensor x_, labels_;
  detail::ClassLayout layout_;
  double denominator_ = 1;
};

}  // namespace mmnet::losses
