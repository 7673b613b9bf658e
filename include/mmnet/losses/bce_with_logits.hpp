// mmnet/losses/bce_with_logits.hpp: binary cross-entropy on logits (torch.nn.BCEWithLogitsLoss).
//
// Per element, in torch's numerically stable form (no exp of a large positive number):
//   l = (1 - y) x + w (max(-x, 0) + log(1 + exp(-|x|))),   w = 1 + (pos_weight - 1) y   (w = 1 without pos_weight)
// which is max(x, 0) - x y + log(1 + exp(-|x|)) when w = 1; then the mean or the sum over all elements.
// dl/dx = w sigmoid(x) - pos_weight y   (sigmoid(x) - y without pos_weight).
// pos_weight is one scalar here (torch also accepts a per-class tensor broadcast over the last axis).
//
//   losses::BCEWithLogits<float, mmnet::cpu> bce(losses::BCEWithLogitsOptions().pos_weight(3.0));
//   float l = bce.forward(logits, target);   // same shapes; target in [0, 1] (soft targets allowed)
//   auto dl_dlogits = bce.backward();
#pragma once
#include <cmath>
#include <optional>
#include <string>

#include "../core/tensor.hpp"
#include "reduction.hpp"

namespace mmnet::losses {

class BCEWithLogitsOptions {
 public:
  BCEWithLogitsOptions() = default;
  // mean (default) or sum over all elements.
  BCEWithLogitsOptions& reduction(Reduction r) {
    reduction_ = r;
    return *this;
  }
  Reduction reduction() const { return reduction_; }
  // Weight of the positive term, e.g. (#negatives / #positives); unset means 1.
  BCEWithLogitsOptions& pos_weight(std::optional<double> w) {
    pos_weight_ = w;
    return *this;
  }
  const std::optional<double>& pos_weight() const { return pos_weight_; }

 private:
  Reduction reduction_ = Reduction::mean;
  std::optional<double> pos_weight_;
};

namespace detail {

// Sum over i of the stable per-element loss, in double. pw = 1 is the plain loss (w = 1 exactly).
template <class T, class Backend>
double bce_with_logits_sum(const T* x, const T* y, double pw, index_t n) {
  return backend::reduce_sum<double>(Backend{}, n, MMNET_KERNEL(index_t i) {
    const double xi = x[i], yi = y[i];
    const double w = 1.0 + (pw - 1.0) * yi;
    return (1.0 - yi) * xi + w * (fmax(-xi, 0.0) + std::log1p(std::exp(-std::abs(xi))));
  });
}

// dx_i = scale (w sigmoid(x_i) - pw y_i), sigmoid evaluated without overflow.
template <class T, class Backend>
void bce_with_logits_backward(const T* x, const T* y, double pw, double scale, index_t n, T* dx) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) {
    const double xi = x[i], yi = y[i];
    const double e = std::exp(-std::abs(xi));
    const double sig = xi >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
    const double w = 1.0 + (pw - 1.0) * yi;
    dx[i] = static_cast<T>(scale * (w * sig - pw * yi));
  });
}

}  // namespace detail

template <class T, class Backend>
class BCEWithLogits {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::losses::BCEWithLogits: T must be float or double");

 public:
  using tensor = Tensor<T, Backend>;

  explicit BCEWithLogits(const BCEWithLogitsOptions& options = BCEWithLogitsOptions()) : options_(options) {
    if (options_.pos_weight() && (!(*options_.pos_weight() >= 0) || !std::isfinite(*options_.pos_weight())))
      fail<value_error>(name, "pos_weight", "a finite value >= 0", *options_.pos_weight());
  }
  const BCEWithLogitsOptions& options() const { return options_; }

  // x: logits, y: targets of the same shape (any rank). Returns the reduced loss; keeps x and y for backward.
  T forward(const tensor& x, const tensor& y) {
    detail::check_loss_operands(name, x, "logits", y, "target");
    detail::check_loss_values(name, "logits", x, false);
    detail::check_loss_values(name, "target", y, false);
    const double total = detail::bce_with_logits_sum<T, Backend>(x.data(), y.data(), pos_weight(), x.numel());
    const double loss = options_.reduction() == Reduction::mean ? total / static_cast<double>(x.numel()) : total;
    if (!std::isfinite(loss)) fail<value_error>(name, "loss", "a finite value", loss, "input shape " + x.shape().str());
    x_ = x;
    y_ = y;
    return static_cast<T>(loss);
  }

  // dL/dx times grad_loss (divided by the element count for the mean).
  tensor backward(T grad_loss = T(1)) const {
    if (!x_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    double scale = static_cast<double>(grad_loss);
    if (options_.reduction() == Reduction::mean) scale /= static_cast<double>(x_.numel());
    tensor dx(x_.shape());
    detail::bce_with_logits_backward<T, Backend>(x_.data(), y_.data(), pos_weight(), scale, x_.numel(), dx.data());
    return dx;
  }

  static constexpr const char* name = "mmnet::losses::BCEWithLogits";

 private:
  double pos_weight() const { return options_.pos_weight().value_or(1.0); }

  BCEWithLogitsOptions options_;
  tensor x_, y_;
};

}  // namespace mmnet::losses
