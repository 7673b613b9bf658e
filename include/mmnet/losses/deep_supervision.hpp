// mmnet/losses/deep_supervision.hpp: a weighted sum of one loss over several outputs (nnU-Net v1
// MultipleOutputLoss2; HMRNet spec §3 Eq. 11, MAML spec §3.2-3.3). No PyTorch built-in.
//
//   L = Σ_k w_k loss(pred_k, target_k)      a term with w_k == 0 is SKIPPED (not evaluated, no gradient)
// The targets (e.g. labels down-sampled to each output's resolution by the spec's rule: HMRNet label[::s], MAML
// y[f o + f/2]) are supplied by the caller. Each term has its own loss instance, so backward() returns, per
// output, what that loss's backward returns (dL/dlogits or dL/dprobabilities), times w_k; an undefined tensor
// for a skipped term, so that the caller can leave its head without a gradient (spec: no zero gradient).
// Weights are used as given; nnunet_weights(n) gives nnU-Net's 1, 1/2, 1/4, ... with the last (coarsest) output
// at 0, normalised to sum 1 (n = 5: 8/15, 4/15, 2/15, 1/15, 0; n = 4: 4/7, 2/7, 1/7, 0).
//
//   losses::DeepSupervision<losses::DiceCE<float, mmnet::cpu>> ds(losses::nnunet_weights(3), losses::DiceCE<float, mmnet::cpu>());
//   float l = ds.forward({z0, z1, z2}, {y0, y1, y2});
//   auto grads = ds.backward();   // grads[2] undefined (weight 0)
#pragma once
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "../core/tensor.hpp"

namespace mmnet::losses {

// nnU-Net v1's deep-supervision weights: 2^-k for k < n - 1, 0 for the last, normalised to sum 1 (n >= 1;
// n == 1 gives {1}).
inline std::vector<double> nnunet_weights(std::size_t n) {
  if (n == 0) fail<value_error>("mmnet::losses::nnunet_weights", "output count", ">= 1", n);
  std::vector<double> w(n, 0.0);
  double sum = 0;
  for (std::size_t k = 0; k < n; ++k) {
    w[k] = (k + 1 < n || n == 1) ? std::ldexp(1.0, -static_cast<int>(k)) : 0.0;
    sum += w[k];
  }
  for (auto& v : w) v /= sum;
  return w;
}

template <class Loss>
class DeepSupervision {
 public:
  using tensor = typename Loss::tensor;
  using T = typename tensor::value_type;

  // weights: one per output, finite and >= 0; prototype: the loss (with its options) copied for every output.
  explicit DeepSupervision(std::vector<double> weights, const Loss& prototype = Loss())
      : weights_(std::move(weights)), losses_(weights_.size(), prototype), terms_(weights_.size(), 0.0) {
    if (weights_.empty()) fail<value_error>(name, "weight count", ">= 1", 0);
    for (std::size_t k = 0; k < weights_.size(); ++k)
      if (!(weights_[k] >= 0) || !std::isfinite(weights_[k]))
        fail<value_error>(name, "weight[" + std::to_string(k) + "]", "a finite value >= 0", weights_[k]);
  }
  const std::vector<double>& weights() const { return weights_; }

  // preds[k] and targets[k]: the operands of the k-th loss (one per weight).
  T forward(const std::vector<tensor>& preds, const std::vector<tensor>& targets) {
    if (preds.size() != weights_.size())
      fail<shape_error>(name, "output count (one per weight)", weights_.size(), preds.size());
    if (targets.size() != weights_.size())
      fail<shape_error>(name, "target count (one per weight)", weights_.size(), targets.size());
    double loss = 0;
    for (std::size_t k = 0; k < weights_.size(); ++k) {
      terms_[k] = 0;
      if (weights_[k] == 0) continue;  // skipped, not multiplied by 0 (MultipleOutputLoss2)
      try {
        terms_[k] = static_cast<double>(losses_[k].forward(preds[k], targets[k]));
      } catch (const shape_error& e) {
        throw shape_error(std::string(name) + ": output " + std::to_string(k) + ": " + e.what());
      } catch (const value_error& e) {
        throw value_error(std::string(name) + ": output " + std::to_string(k) + ": " + e.what());
      }
      loss += weights_[k] * terms_[k];
    }
    done_ = true;
    return static_cast<T>(loss);
  }

  // Per output: w_k grad_loss times the k-th loss's gradient; an undefined tensor for a skipped output.
  std::vector<tensor> backward(T grad_loss = T(1)) const {
    if (!done_) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    std::vector<tensor> grads(weights_.size());
    for (std::size_t k = 0; k < weights_.size(); ++k)
      if (weights_[k] != 0) grads[k] = losses_[k].backward(static_cast<T>(weights_[k] * static_cast<double>(grad_loss)));
    return grads;
  }

  // The unweighted value of each term in the last forward (0 for skipped terms).
  const std::vector<double>& terms() const { return terms_; }
  Loss& loss(std::size_t k) { return losses_.at(k); }
  const Loss& loss(std::size_t k) const { return losses_.at(k); }

  static constexpr const char* name = "mmnet::losses::DeepSupervision";

 private:
  std::vector<double> weights_;
  std::vector<Loss> losses_;
  std::vector<double> terms_;
  bool done_ = false;
};

}  // namespace mmnet::losses
