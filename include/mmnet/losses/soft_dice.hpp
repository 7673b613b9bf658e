// mmnet/losses/soft_dice.hpp: soft Dice loss on probabilities (MMFNet spec §3; monai.losses.DiceLoss with the
// sigmoid/softmax applied by the caller).
//
// For each group j of elements (which groups: below), with p the probabilities and g the target:
//   r_j = (2 Σ p g + smooth_nr) / (Σ p + Σ g + smooth_dr),    L = mean over groups of (1 - r_j)
//   batch(true), per_channel(false) (default): one group, every element of every sample and channel (MMFNet)
//   batch(true), per_channel(true):  a group per channel over the batch and space (MONAI batch=True,
//                                    nnU-Net batch_dice=True)
//   batch(false):                    a group per (sample, channel) over space (MONAI's default batch=False)
//   include_background(false):       channel 0 is left out of every group (MONAI include_background=False);
//                                    needs N x C x ... with C >= 2 (MONAI only warns and ignores it for C == 1)
// Plain sums in the denominator (no squares). Multi-class: apply the softmax outside and compare with
// one_hot(labels, C) (losses/one_hot.hpp). The gradient is w.r.t. the PROBABILITIES.
//
// Defaults vs MONAI's DiceLoss: MONAI uses smooth_nr = smooth_dr = 1e-5, include_background = true,
// batch = false; mmnet keeps MMFNet's smooth_nr = smooth_dr = 1 and one global ratio (batch(true)), and MONAI's
// include_background = true. MONAI's batch=True corresponds to batch(true).per_channel(true).
//
//   losses::SoftDice<float, mmnet::cpu> dice(losses::SoftDiceOptions().smooth_nr(1).smooth_dr(1));
//   float l = dice.forward(prob, label);   // prob, label: N x C x D x H x W, values in [0, 1]
//   auto dl_dprob = dice.backward();       // dL/dprob, for the sigmoid's backward
//
// detail::DiceEngine below also serves FNWeightedDice (a weight θ on the false negatives) and DiceCE.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "../backend/common/cross_entropy.hpp"
#include "../core/tensor.hpp"
#include "reduction.hpp"

namespace mmnet::losses {

class SoftDiceOptions {
 public:
  SoftDiceOptions() = default;
  // Added to the numerator 2 Σ p g (default 1, the ε of MMFNet).
  SoftDiceOptions& smooth_nr(double v) {
    smooth_nr_ = v;
    return *this;
  }
  double smooth_nr() const { return smooth_nr_; }
  // Added to the denominator Σ p + Σ g (default 1); 0 makes an empty prediction of an empty label 0/0.
  SoftDiceOptions& smooth_dr(double v) {
    smooth_dr_ = v;
    return *this;
  }
  double smooth_dr() const { return smooth_dr_; }
  // true: sums over the whole batch; false: a ratio per sample and channel, then their mean.
  SoftDiceOptions& batch(bool v) {
    batch_ = v;
    return *this;
  }
  bool batch() const { return batch_; }
  // With batch(true): false (default) pools the channels into one ratio; true keeps a ratio per channel.
  SoftDiceOptions& per_channel(bool v) {
    per_channel_ = v;
    return *this;
  }
  bool per_channel() const { return per_channel_; }
  // false leaves channel 0 (the background) out (default true, as MONAI).
  SoftDiceOptions& include_background(bool v) {
    include_background_ = v;
    return *this;
  }
  bool include_background() const { return include_background_; }

 private:
  double smooth_nr_ = 1.0;
  double smooth_dr_ = 1.0;
  bool batch_ = true;
  bool per_channel_ = false;
  bool include_background_ = true;
};

namespace detail {

// Which elements share one Dice ratio.
enum class DiceGroups { global, per_channel, per_sample_channel };

// The ratio r = (2 I + smooth_nr) / (P + G + (fn_weight - 1) FN + smooth_dr) with I = Σ p g, P = Σ p, G = Σ g,
// FN = Σ (1 - p) g = G - I; the term of a group is 1 - r, or -r with negative (nnU-Net's SoftDiceLoss).
// Since 2 TP + FP + FN = P + G for any g, fn_weight = 1 is the plain soft Dice.
struct DiceSpec {
  double smooth_nr = 1, smooth_dr = 1, fn_weight = 1;
  bool negative = false;
  DiceGroups groups = DiceGroups::global;
  bool include_background = true;
};

// Σ p g m, Σ p m, Σ g m over k contiguous elements (m: a per-element mask at stride 1, or all 1 when null).
template <class T, class Backend>
backend::Sums<3> dice_sums(const T* p, const T* g, const T* m, index_t k) {
  return backend::reduce_sum<backend::Sums<3>>(Backend{}, k, MMNET_KERNEL(index_t i) {
    const double mi = m ? static_cast<double>(m[i]) : 1.0;
    const double pi = static_cast<double>(p[i]) * mi, gi = static_cast<double>(g[i]) * mi;
    backend::Sums<3> r;
    r.v[0] = pi * static_cast<double>(g[i]);
    r.v[1] = pi;
    r.v[2] = gi;
    return r;
  });
}

// dL/dp_i = m_i (coef[2j] g_i + coef[2j + 1]) for element i of block j (blocks of k contiguous elements);
// the mask m (null: all 1) is indexed per voxel: block j = n * C + c reads m[n * k + i % k].
template <class T, class Backend>
void dice_backward(const T* g, const T* m, const double* coef, index_t c, index_t k, index_t n, T* dp) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) {
    const index_t j = i / k;
    const double mi = m ? static_cast<double>(m[(j / c) * k + i % k]) : 1.0;
    dp[i] = static_cast<T>(mi * (coef[2 * j] * static_cast<double>(g[i]) + coef[2 * j + 1]));
  });
}

// Forward and backward of the Dice term on probabilities p and a target g of one shape N x C x S (or any rank
// with DiceGroups::global and include_background: one block). mask: null, or N x 1 x S weights in {0, 1}
// (DiceCE's ignore_index) multiplying p and g.
template <class T, class Backend>
class DiceEngine {
 public:
  using tensor = Tensor<T, Backend>;

  // Returns the mean over groups; on a non-finite value raises value_error naming the group.
  double forward(const char* component, const DiceSpec& spec, const tensor& p, const tensor& g, const tensor* mask) {
    spec_ = spec;
    const bool channels = p.rank() >= 2;
    n_ = channels ? p.size(0) : 1;
    c_ = channels ? p.size(1) : 1;
    s_ = p.numel() / (n_ * c_);
    c0_ = spec.include_background ? 0 : 1;
    if (!spec.include_background && (!channels || c_ < 2))
      fail<shape_error>(component, "channels with include_background(false)", ">= 2 (N x C x ..., C >= 2)",
                        channels ? std::to_string(c_) : "no channel axis", "shape " + p.shape().str());
    if (spec.groups != DiceGroups::global && !channels)
      fail<shape_error>(component, "rank with a ratio per channel", ">= 2 (N x C x ...)", p.rank(),
                        "shape " + p.shape().str());
    const index_t nc = c_ - c0_;
    const index_t groups = spec.groups == DiceGroups::global ? 1 : spec.groups == DiceGroups::per_channel ? nc : n_ * nc;
    std::vector<double> inter(static_cast<std::size_t>(groups), 0.0), psum(inter), gsum(inter);
    const T* m = mask ? mask->data() : nullptr;
    // One reduction per (n, c) block: each is parallel over its voxels, which suits both a few large blocks and
    // the device; blocks are added on the host in a fixed order (independent of the thread count).
    for (index_t n = 0; n < n_; ++n)
      for (index_t c = c0_; c < c_; ++c) {
        const index_t off = (n * c_ + c) * s_;
        const auto s = dice_sums<T, Backend>(p.data() + off, g.data() + off, m ? m + n * s_ : nullptr, s_);
        const auto j = static_cast<std::size_t>(group_of(n, c));
        inter[j] += s.v[0];
        psum[j] += s.v[1];
        gsum[j] += s.v[2];
      }
    num_.assign(static_cast<std::size_t>(groups), 0.0);
    den_.assign(static_cast<std::size_t>(groups), 0.0);
    double loss = 0;
    for (std::size_t j = 0; j < num_.size(); ++j) {
      num_[j] = 2.0 * inter[j] + spec.smooth_nr;
      den_[j] = psum[j] + gsum[j] + (spec.fn_weight - 1.0) * (gsum[j] - inter[j]) + spec.smooth_dr;
      loss += (spec.negative ? 0.0 : 1.0) - num_[j] / den_[j];
    }
    loss /= static_cast<double>(groups);
    if (!std::isfinite(loss)) {
      std::size_t j = 0;  // the first group whose ratio is not finite, for the message
      while (j + 1 < num_.size() && std::isfinite(num_[j] / den_[j])) ++j;
      fail<value_error>(component, "loss", "a finite value", loss,
                        "numerator " + std::to_string(num_[j]) + " / denominator " + std::to_string(den_[j]) +
                            " in group " + std::to_string(j) + "; smooth_dr is " + std::to_string(spec.smooth_dr));
    }
    return loss;
  }

  // dL/dp times scale for the g and mask of the last forward.
  tensor backward(double scale, const tensor& g, const tensor* mask) const {
    const double s = scale / static_cast<double>(num_.size());
    std::vector<double> coef(static_cast<std::size_t>(2 * n_ * c_), 0.0);  // excluded channels stay 0
    for (index_t n = 0; n < n_; ++n)
      for (index_t c = c0_; c < c_; ++c) {
        const auto j = static_cast<std::size_t>(group_of(n, c));
        const double den = den_[j], r = num_[j] / den_[j];
        const auto b = static_cast<std::size_t>(2 * (n * c_ + c));
        coef[b] = -s * (2.0 - r * (1.0 - spec_.fn_weight)) / den;
        coef[b + 1] = s * r / den;
      }
    const DeviceDoubles<Backend> coef_dev(coef);
    tensor dp(g.shape());
    dice_backward<T, Backend>(g.data(), mask ? mask->data() : nullptr, coef_dev.data(), c_, s_, g.numel(), dp.data());
    return dp;
  }

  std::size_t groups() const { return num_.size(); }
  // r_j of the last forward (the Dice coefficients, e.g. for logging).
  std::vector<double> ratios() const {
    std::vector<double> r(num_.size());
    for (std::size_t j = 0; j < r.size(); ++j) r[j] = num_[j] / den_[j];
    return r;
  }

 private:
  index_t group_of(index_t n, index_t c) const {
    switch (spec_.groups) {
      case DiceGroups::global: return 0;
      case DiceGroups::per_channel: return c - c0_;
      default: return n * (c_ - c0_) + c - c0_;
    }
  }

  DiceSpec spec_;
  index_t n_ = 0, c_ = 0, s_ = 0, c0_ = 0;
  std::vector<double> num_, den_;  // per group
};

}  // namespace detail

template <class T, class Backend>
class SoftDice {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::losses::SoftDice: T must be float or double");

 public:
  using tensor = Tensor<T, Backend>;

  explicit SoftDice(const SoftDiceOptions& options = SoftDiceOptions()) : options_(options) {
    if (!(options_.smooth_nr() >= 0) || !std::isfinite(options_.smooth_nr()))
      fail<value_error>(name, "smooth_nr", "a finite value >= 0", options_.smooth_nr());
    if (!(options_.smooth_dr() >= 0) || !std::isfinite(options_.smooth_dr()))
      fail<value_error>(name, "smooth_dr", "a finite value >= 0", options_.smooth_dr());
  }
  const SoftDiceOptions& options() const { return options_; }

  // p: probabilities, g: target of the same shape (N x C x ... unless batch(true) pools everything), both in
  // [0, 1]. Returns the loss and keeps what backward needs.
  T forward(const tensor& p, const tensor& g) {
    detail::check_loss_operands(name, p, "probabilities", g, "target");
    if (!options_.batch() && p.rank() < 2)
      fail<shape_error>(name, "probabilities rank with batch(false)", ">= 2 (N x C x ...)", p.rank(),
                        "shape " + p.shape().str());
    detail::check_loss_values(name, "probabilities", p, true);
    detail::check_loss_values(name, "target", g, true);
    detail::DiceSpec spec;
    spec.smooth_nr = options_.smooth_nr();
    spec.smooth_dr = options_.smooth_dr();
    spec.include_background = options_.include_background();
    spec.groups = !options_.batch()         ? detail::DiceGroups::per_sample_channel
                  : options_.per_channel() ? detail::DiceGroups::per_channel
                                           : detail::DiceGroups::global;
    const double loss = engine_.forward(name, spec, p, g, nullptr);
    g_ = g;
    return static_cast<T>(loss);
  }

  // dL/dp times grad_loss: -(2 g_i Den_j - Num_j) / Den_j^2 divided by the group count (the mean); 0 for an
  // excluded background channel.
  tensor backward(T grad_loss = T(1)) const {
    if (!g_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    return engine_.backward(static_cast<double>(grad_loss), g_, nullptr);
  }

  // The Dice coefficients of the last forward, one per group.
  std::vector<double> dice_coefficients() const { return engine_.ratios(); }

  static constexpr const char* name = "mmnet::losses::SoftDice";

 private:
  SoftDiceOptions options_;
  detail::DiceEngine<T, Backend> engine_;
  tensor g_;
};

}  // namespace mmnet::losses
