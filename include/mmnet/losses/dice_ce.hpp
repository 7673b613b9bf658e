// mmnet/losses/dice_ce.hpp: soft Dice + cross-entropy on logits with integer labels (nnU-Net v1 DC_and_CE_loss,
// MAML spec §3.1; HMRNet spec §3 L_fseg = L_fnDice + L_CE; like monai.losses.DiceCELoss(softmax=True,
// to_onehot_y=True)).
//
// p = softmax(x) over the channel axis, g = one_hot(labels); per Dice group j (batch(true), default: a group per
// class over batch and space, nnU-Net batch_dice; batch(false): per sample and class), classes 1..C-1 unless
// include_background(true):
//   r_j = (2 TP + smooth_nr) / (2 TP + theta FN + FP + smooth_dr),   TP = Σ p g, FN = Σ (1 - p) g, FP = Σ p (1 - g)
//   Dice = -mean_j r_j (dice_term negative, nnU-Net, default)  or  1 - mean_j r_j (one_minus, HMRNet / MONAI)
//   CE   = torch.nn.CrossEntropyLoss(weight = ce_weight, ignore_index) on x (mean)
//   L    = weight_ce CE + weight_dice Dice     (a term with weight 0 is not evaluated, as nnU-Net)
// Presets: DiceCEOptions::nnunet() (= the defaults; MAML L_seg): smooth_nr 1e-5, smooth_dr 1e-5 + 1e-8 (nnU-Net
// divides by 2TP + FP + FN + smooth + 1e-8), negative Dice, no background, batch Dice, theta 1.
// DiceCEOptions::hmrnet(theta): smooth_nr = smooth_dr = 1e-5, 1 - Dice, foreground only, batch Dice, theta.
// ignore_index: those voxels leave both terms (nnU-Net's loss mask: they are left out of TP, FP and FN).
// The gradient is w.r.t. the LOGITS (the Dice gradient goes through the softmax).
//
//   losses::DiceCE<float, mmnet::cpu> seg;                                   // MAML / nnU-Net L_seg
//   losses::DiceCE<float, mmnet::cpu> fseg(losses::DiceCEOptions::hmrnet(2.5));   // HMRNet fine stage
//   float l = seg.forward(logits, labels);    // logits N x C x D x H x W, labels N x 1 x D x H x W
//   auto dl_dlogits = seg.backward();
#pragma once
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "../backend/common/cross_entropy.hpp"
#include "../core/tensor.hpp"
#include "one_hot.hpp"
#include "reduction.hpp"
#include "soft_dice.hpp"

namespace mmnet::losses {

// How the Dice coefficient enters the loss: -dc (nnU-Net's SoftDiceLoss) or 1 - dc.
enum class DiceTerm { negative, one_minus };

class DiceCEOptions {
 public:
  DiceCEOptions() = default;
  // nnU-Net v1 DC_and_CE_loss({batch_dice: True, smooth: 1e-5, do_bg: False}, {}) (MAML §3.1): the defaults.
  static DiceCEOptions nnunet() { return DiceCEOptions(); }
  // HMRNet §3 fine-stage loss per output: (1 - fn-weighted batch Dice of the foreground) + CE, smooth 1e-5.
  static DiceCEOptions hmrnet(double theta) {
    return DiceCEOptions().fn_weight(theta).smooth_dr(1e-5).dice_term(DiceTerm::one_minus);
  }

  DiceCEOptions& weight_ce(double v) {
    weight_ce_ = v;
    return *this;
  }
  double weight_ce() const { return weight_ce_; }
  DiceCEOptions& weight_dice(double v) {
    weight_dice_ = v;
    return *this;
  }
  double weight_dice() const { return weight_dice_; }
  // Added to 2 TP (default 1e-5).
  DiceCEOptions& smooth_nr(double v) {
    smooth_nr_ = v;
    return *this;
  }
  double smooth_nr() const { return smooth_nr_; }
  // Added to the denominator (default 1e-5 + 1e-8, nnU-Net's smooth plus its 1e-8).
  DiceCEOptions& smooth_dr(double v) {
    smooth_dr_ = v;
    return *this;
  }
  double smooth_dr() const { return smooth_dr_; }
  // true (default): a Dice ratio per class over the batch and space; false: per sample and class.
  DiceCEOptions& batch(bool v) {
    batch_ = v;
    return *this;
  }
  bool batch() const { return batch_; }
  // false (default) leaves class 0 out of the Dice term (the CE term always has every class).
  DiceCEOptions& include_background(bool v) {
    include_background_ = v;
    return *this;
  }
  bool include_background() const { return include_background_; }
  // theta, the weight of the false negatives in the Dice denominator (default 1: plain Dice).
  DiceCEOptions& fn_weight(double v) {
    fn_weight_ = v;
    return *this;
  }
  double fn_weight() const { return fn_weight_; }
  DiceCEOptions& dice_term(DiceTerm t) {
    dice_term_ = t;
    return *this;
  }
  DiceTerm dice_term() const { return dice_term_; }
  // Class weights of the CE term (torch's weight=); empty (default) means all 1.
  DiceCEOptions& ce_weight(std::vector<double> w) {
    ce_weight_ = std::move(w);
    return *this;
  }
  const std::vector<double>& ce_weight() const { return ce_weight_; }
  // Label value whose voxels leave both terms; unset by default.
  DiceCEOptions& ignore_index(std::optional<index_t> v) {
    ignore_index_ = v;
    return *this;
  }
  const std::optional<index_t>& ignore_index() const { return ignore_index_; }

 private:
  double weight_ce_ = 1, weight_dice_ = 1;
  double smooth_nr_ = 1e-5, smooth_dr_ = 1e-5 + 1e-8;
  bool batch_ = true, include_background_ = false;
  double fn_weight_ = 1;
  DiceTerm dice_term_ = DiceTerm::negative;
  std::vector<double> ce_weight_;
  std::optional<index_t> ignore_index_;
};

namespace detail {
// m[v] = 0 where the label is ignored, else 1.
template <class T, class Backend>
void label_mask(const T* labels, double ignore, index_t n, T* m) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) { m[i] = static_cast<double>(labels[i]) == ignore ? T(0) : T(1); });
}
}  // namespace detail

template <class T, class Backend>
class DiceCE {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::losses::DiceCE: T must be float or double");

 public:
  using tensor = Tensor<T, Backend>;

  explicit DiceCE(const DiceCEOptions& options = DiceCEOptions()) : options_(options) {
    auto finite_nonneg = [](const char* what, double v) {
      if (!(v >= 0) || !std::isfinite(v)) fail<value_error>(name, what, "a finite value >= 0", v);
    };
    finite_nonneg("weight_ce", options_.weight_ce());
    finite_nonneg("weight_dice", options_.weight_dice());
    finite_nonneg("smooth_nr", options_.smooth_nr());
    finite_nonneg("smooth_dr", options_.smooth_dr());
    finite_nonneg("fn_weight", options_.fn_weight());
    detail::check_class_weights(name, "ce_weight", options_.ce_weight());
    if (!options_.ce_weight().empty()) ce_weight_.assign(options_.ce_weight());
  }
  const DiceCEOptions& options() const { return options_; }

  // x: logits N x C x ...; labels: N x 1 x ... or N x ....
  T forward(const tensor& x, const tensor& labels) {
    const auto l = detail::class_layout(name, "logits", x);
    detail::check_label_shape(name, labels, x.shape());
    if (!options_.ce_weight().empty() && static_cast<index_t>(options_.ce_weight().size()) != l.c)
      fail<shape_error>(name, "ce_weight count (logits channels)", l.c, options_.ce_weight().size(),
                        "logits shape " + x.shape().str());
    if (!options_.include_background() && l.c < 2)
      fail<shape_error>(name, "logits channels with include_background(false)", ">= 2", l.c,
                        "logits shape " + x.shape().str());
    detail::check_loss_values(name, "logits", x, false);
    detail::check_labels(name, labels, l.c, options_.ignore_index());
    const backend::ClassProblem p{l.n, l.c, l.s};
    const auto ls = label_spec();

    dice_ = 0;
    ce_ = 0;
    prob_ = tensor();
    g_ = tensor();
    mask_ = tensor();
    if (options_.weight_dice() != 0) {
      prob_ = tensor(x.shape());
      backend::softmax_forward(Backend{}, p, x.data(), prob_.data());
      g_ = tensor(x.shape());
      detail::one_hot_kernel<T, Backend>(l.n, l.c, l.s, labels.data(), ls.has_ignore, ls.ignore, g_.data());
      if (ls.has_ignore) {
        mask_ = tensor(Shape{l.n, 1, l.s});
        detail::label_mask<T, Backend>(labels.data(), ls.ignore, l.n * l.s, mask_.data());
      }
      detail::DiceSpec spec;
      spec.smooth_nr = options_.smooth_nr();
      spec.smooth_dr = options_.smooth_dr();
      spec.fn_weight = options_.fn_weight();
      spec.negative = options_.dice_term() == DiceTerm::negative;
      spec.include_background = options_.include_background();
      spec.groups = options_.batch() ? detail::DiceGroups::per_channel : detail::DiceGroups::per_sample_channel;
      const tensor p3 = prob_.reshape(Shape{l.n, l.c, l.s}), g3 = g_.reshape(Shape{l.n, l.c, l.s});
      dice_ = engine_.forward(name, spec, p3, g3, mask_.defined() ? &mask_ : nullptr);
    }
    ce_denominator_ = 1;
    if (options_.weight_ce() != 0) {
      const auto sums = backend::cross_entropy_sums(Backend{}, p, x.data(), labels.data(), ce_weight_.data(), ls);
      ce_denominator_ = sums.v[1];
      ce_ = sums.v[0] / sums.v[1];
      if (!std::isfinite(ce_))
        fail<value_error>(name, "cross-entropy term", "a finite value", ce_,
                          "sum " + std::to_string(sums.v[0]) + " / weight sum " + std::to_string(sums.v[1]) +
                              " (all voxels ignored or of zero weight?); logits shape " + x.shape().str());
    }
    const double loss = options_.weight_ce() * ce_ + options_.weight_dice() * dice_;
    if (!std::isfinite(loss)) fail<value_error>(name, "loss", "a finite value", loss, "logits shape " + x.shape().str());
    x_ = x;
    labels_ = labels;
    layout_ = l;
    return static_cast<T>(loss);
  }

  // dL/dlogits times grad_loss.
  tensor backward(T grad_loss = T(1)) const {
    if (!x_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    const backend::ClassProblem p{layout_.n, layout_.c, layout_.s};
    tensor dx(x_.shape());
    const double gl = static_cast<double>(grad_loss);
    bool have = false;
    if (options_.weight_dice() != 0) {
      const tensor g3 = g_.reshape(Shape{layout_.n, layout_.c, layout_.s});
      const tensor dp = engine_.backward(gl * options_.weight_dice(), g3, mask_.defined() ? &mask_ : nullptr);
      backend::softmax_backward(Backend{}, p, prob_.data(), dp.data(), dx.data());
      have = true;
    }
    if (options_.weight_ce() != 0)
      backend::cross_entropy_backward(Backend{}, p, x_.data(), labels_.data(), ce_weight_.data(), label_spec(),
                                      gl * options_.weight_ce() / ce_denominator_, have, dx.data());
    return dx;
  }

  // The two terms of the last forward (before weighting) and the Dice coefficients per group.
  double dice_term() const { return dice_; }
  double ce_term() const { return ce_; }
  std::vector<double> dice_coefficients() const { return engine_.ratios(); }

  static constexpr const char* name = "mmnet::losses::DiceCE";

 private:
  backend::LabelSpec label_spec() const {
    backend::LabelSpec ls;
    ls.has_ignore = options_.ignore_index().has_value();
    ls.ignore = ls.has_ignore ? static_cast<double>(*options_.ignore_index()) : 0.0;
    return ls;
  }

  DiceCEOptions options_;
  detail::DeviceDoubles<Backend> ce_weight_;
  detail::DiceEngine<T, Backend> engine_;
  tensor x_, labels_, prob_, g_, mask_;
  detail::ClassLayout layout_;
  double dice_ = 0, ce_ = 0, ce_denominator_ = 1;
};

}  // namespace mmnet::losses
