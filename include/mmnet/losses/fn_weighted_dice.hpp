// mmnet/losses/fn_weighted_dice.hpp: false-negative-weighted soft Dice on probabilities (HMRNet spec §3,
// the official code's `recall_alpha * fn`). No PyTorch built-in; reference: the spec's formula written in torch.
//
// Per group j (batch(true), default: a group per foreground channel over batch and space, nnU-Net batch Dice;
// batch(false): per sample and channel), with TP = Σ p g, FN = Σ (1 - p) g, FP = Σ p (1 - g):
//   L = mean over groups of 1 - (2 TP + smooth_nr) / (2 TP + theta FN + FP + smooth_dr)
// theta = 1 is the plain soft Dice (2 TP + FN + FP = Σ p + Σ g). The spec's paper Eq. 8 (theta on Σ p (1 - g)) is
// not used (spec §3, §7.8). Defaults (spec): theta 1, smooth_nr = smooth_dr = 1e-5 (nnU-Net's smooth, no extra
// 1e-8), include_background(false) (for K = 2 the foreground channel only), batch(true).
// p: softmax probabilities N x C x ...; g: one-hot target of the same shape (one_hot(labels, C)).
// The gradient is w.r.t. the PROBABILITIES; on logits with the CE term use DiceCE(DiceCEOptions::hmrnet(theta)).
//
//   losses::FNWeightedDice<float, mmnet::cpu> fnd(losses::FNWeightedDiceOptions(2.5));
//   float l = fnd.forward(prob, one_hot_target);
//   auto dl_dprob = fnd.backward();
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#include "reduction.hpp"
#include "soft_dice.hpp"

namespace mmnet::losses {

class FNWeightedDiceOptions {
 public:
  // theta: the weight of the false negatives (HMRNet: 2.0 to 3.5 per structure; 1 = plain Dice).
  explicit FNWeightedDiceOptions(double theta = 1.0) : theta_(theta) {}
  FNWeightedDiceOptions& theta(double v) {
    theta_ = v;
    return *this;
  }
  double theta() const { return theta_; }
  // Added to the numerator 2 TP (default 1e-5).
  FNWeightedDiceOptions& smooth_nr(double v) {
    smooth_nr_ = v;
    return *this;
  }
  double smooth_nr() const { return smooth_nr_; }
  // Added to the denominator (default 1e-5).
  FNWeightedDiceOptions& smooth_dr(double v) {
    smooth_dr_ = v;
    return *this;
  }
  double smooth_dr() const { return smooth_dr_; }
  // true (default): a ratio per channel over the batch and space; false: per sample and channel.
  FNWeightedDiceOptions& batch(bool v) {
    batch_ = v;
    return *this;
  }
  bool batch() const { return batch_; }
  // false (default) leaves channel 0, the background, out.
  FNWeightedDiceOptions& include_background(bool v) {
    include_background_ = v;
    return *this;
  }
  bool include_background() const { return include_background_; }

 private:
  double theta_;
  double smooth_nr_ = 1e-5;
  double smooth_dr_ = 1e-5;
  bool batch_ = true;
  bool include_background_ = false;
};

template <class T, class Backend>
class FNWeightedDice {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::losses::FNWeightedDice: T must be float or double");

 public:
  using tensor = Tensor<T, Backend>;

  explicit FNWeightedDice(const FNWeightedDiceOptions& options = FNWeightedDiceOptions()) : options_(options) {
    if (!(options_.theta() >= 0) || !std::isfinite(options_.theta()))
      fail<value_error>(name, "theta", "a finite value >= 0", options_.theta());
    if (!(options_.smooth_nr() >= 0) || !std::isfinite(options_.smooth_nr()))
      fail<value_error>(name, "smooth_nr", "a finite value >= 0", options_.smooth_nr());
    if (!(options_.smooth_dr() >= 0) || !std::isfinite(options_.smooth_dr()))
      fail<value_error>(name, "smooth_dr", "a finite value >= 0", options_.smooth_dr());
  }
  const FNWeightedDiceOptions& options() const { return options_; }

  // p: probabilities N x C x ..., g: target of the same shape, both in [0, 1].
  T forward(const tensor& p, const tensor& g) {
    detail::check_loss_operands(name, p, "probabilities", g, "target");
    detail::class_layout(name, "probabilities", p);
    detail::check_loss_values(name, "probabilities", p, true);
    detail::check_loss_values(name, "target", g, true);
    detail::DiceSpec spec;
    spec.smooth_nr = options_.smooth_nr();
    spec.smooth_dr = options_.smooth_dr();
    spec.fn_weight = options_.theta();
    spec.include_background = options_.include_background();
    spec.groups = options_.batch() ? detail::DiceGroups::per_channel : detail::DiceGroups::per_sample_channel;
    const double loss = engine_.forward(name, spec, p, g, nullptr);
    g_ = g;
    return static_cast<T>(loss);
  }

  // dL/dp times grad_loss (0 for an excluded background channel).
  tensor backward(T grad_loss = T(1)) const {
    if (!g_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    return engine_.backward(static_cast<double>(grad_loss), g_, nullptr);
  }

  std::vector<double> dice_coefficients() const { return engine_.ratios(); }

  static constexpr const char* name = "mmnet::losses::FNWeightedDice";

 private:
  FNWeightedDiceOptions options_;
  detail::DiceEngine<T, Backend> engine_;
  tensor g_;
};

}  // namespace mmnet::losses
