// mmnet/losses/soft_dice.hpp: soft Dice loss on probabilities (MMFNet spec §3).
//
//   batch(true)  (default): one global ratio over every element of every sample and channel,
//                L = 1 - (2 Σ p g + smooth_nr) / (Σ p + Σ g + smooth_dr)
//   batch(false): MONAI's DiceLoss(batch=False) with sigmoid/softmax already applied: one ratio per (n, c)
//                over the remaining axes, L = mean over n, c of 1 - (2 Σ p g + smooth_nr) / (Σ p + Σ g + smooth_dr)
// Plain sums in the denominator (no squares). Note that MONAI's batch=True keeps channels apart (a ratio per
// channel); batch(true) here pools channels too, which is the same thing for MMFNet's single output channel.
//
//   losses::SoftDice<float, mmnet::cpu> dice(losses::SoftDiceOptions().smooth_nr(1).smooth_dr(1));
//   float l = dice.forward(prob, label);   // prob, label: N x C x D x H x W, values in [0, 1]
//   auto dl_dprob = dice.backward();       // dL/dprob, for the sigmoid's backward
#pragma once
#include <cmath>
#include <string>
#include <vector>

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
  // true: one ratio over the whole batch; false: a ratio per sample and channel, then their mean.
  SoftDiceOptions& batch(bool v) {
    batch_ = v;
    return *this;
  }
  bool batch() const { return batch_; }

 private:
  double smooth_nr_ = 1.0;
  double smooth_dr_ = 1.0;
  bool batch_ = true;
};

namespace detail {

// The two sums a Dice ratio needs, reduced together in one pass (reduce_sum's accumulator type).
struct DiceSums {
  double intersection = 0;  // Σ p g
  double total = 0;         // Σ p + Σ g
  MMNET_HOST_DEVICE DiceSums() {}
  MMNET_HOST_DEVICE explicit DiceSums(double v) : intersection(v), total(v) {}  // reduce_sum's A(0)
  MMNET_HOST_DEVICE DiceSums(double i, double t) : intersection(i), total(t) {}
  MMNET_HOST_DEVICE DiceSums operator+(const DiceSums& o) const { return {intersection + o.intersection, total + o.total}; }
  MMNET_HOST_DEVICE DiceSums& operator+=(const DiceSums& o) {
    intersection += o.intersection;
    total += o.total;
    return *this;
  }
};

template <class T, class Backend>
DiceSums dice_sums(const T* p, const T* g, index_t n) {
  return backend::reduce_sum<DiceSums>(Backend{}, n, MMNET_KERNEL(index_t i) {
    const double pi = p[i], gi = g[i];
    return DiceSums(pi * gi, pi + gi);
  });
}

// dL/dp_i = coef[2j] g_i + coef[2j + 1] for element i of group j (groups of k contiguous elements).
template <class T, class Backend>
void dice_backward(const T* g, const double* coef, index_t k, index_t n, T* dp) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) {
    const index_t j = i / k;
    dp[i] = static_cast<T>(coef[2 * j] * static_cast<double>(g[i]) + coef[2 * j + 1]);
  });
}

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

  // p: probabilities, g: target of the same shape (N x C x ... for batch(false)), both in [0, 1].
  // Returns the loss and keeps what backward needs.
  T forward(const tensor& p, const tensor& g) {
    detail::check_loss_operands(name, p, "probabilities", g, "target");
    if (!options_.batch() && p.rank() < 2)
      fail<shape_error>(name, "probabilities rank with batch(false)", ">= 2 (N x C x ...)", p.rank(),
                        "shape " + p.shape().str());
    detail::check_loss_values(name, "probabilities", p, true);
    detail::check_loss_values(name, "target", g, true);

    const index_t n = p.numel();
    const index_t groups = options_.batch() ? 1 : p.size(0) * p.size(1);
    const index_t k = n / groups;
    numerator_.assign(static_cast<std::size_t>(groups), 0.0);
    denominator_.assign(static_cast<std::size_t>(groups), 0.0);
    double loss = 0;
    // One reduction per group: each is parallel over its elements, which suits both a few large groups
    // (MMFNet: N x 1) and the device; the group count is N * C, small in practice.
    for (index_t j = 0; j < groups; ++j) {
      const auto s = detail::dice_sums<T, Backend>(p.data() + j * k, g.data() + j * k, k);
      const double num = 2.0 * s.intersection + options_.smooth_nr();
      const double den = s.total + options_.smooth_dr();
      numerator_[static_cast<std::size_t>(j)] = num;
      denominator_[static_cast<std::size_t>(j)] = den;
      loss += 1.0 - num / den;
    }
    loss /= static_cast<double>(groups);
    if (!std::isfinite(loss)) {
      std::size_t j = 0;  // the first group whose ratio is not finite, for the message
      while (j + 1 < numerator_.size() && std::isfinite(numerator_[j] / denominator_[j])) ++j;
      fail<value_error>(name, "loss", "a finite value", loss,
                        "numerator " + std::to_string(numerator_[j]) + " / denominator " +
                            std::to_string(denominator_[j]) + " in group " + std::to_string(j) +
                            "; smooth_dr is " + std::to_string(options_.smooth_dr()));
    }
    g_ = g;
    return static_cast<T>(loss);
  }

  // dL/dp times grad_loss: -(2 g_i Den_j - Num_j) / Den_j^2, divided by the group count (the mean).
  tensor backward(T grad_loss = T(1)) const {
    if (!g_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    const std::size_t groups = numerator_.size();
    const double scale = static_cast<double>(grad_loss) / static_cast<double>(groups);
    std::vector<double> coef(2 * groups);
    for (std::size_t j = 0; j < groups; ++j) {
      const double den = denominator_[j];
      coef[2 * j] = -scale * 2.0 / den;
      coef[2 * j + 1] = scale * numerator_[j] / (den * den);
    }
    using traits = backend_traits<Backend>;
    auto coef_dev = traits::template allocate<double>(static_cast<index_t>(coef.size()));
    traits::copy_from_host(coef.data(), static_cast<index_t>(coef.size()), coef_dev);
    tensor dp(g_.shape());
    detail::dice_backward<T, Backend>(g_.data(), traits::data(coef_dev),
                                      g_.numel() / static_cast<index_t>(groups), g_.numel(), dp.data());
    return dp;
  }

  static constexpr const char* name = "mmnet::losses::SoftDice";

 private:
  SoftDiceOptions options_;
  tensor g_;
  std::vector<double> numerator_, denominator_;  // per group (one with batch(true))
};

}  // namespace mmnet::losses
