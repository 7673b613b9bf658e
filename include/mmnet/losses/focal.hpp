// mmnet/losses/focal.hpp: focal loss on logits, softmax (multi-class, integer labels; cascaded-FCN spec §3 form)
// or sigmoid (binary / multi-label, MONAI's sigmoid_focal_loss). PyTorch has no built-in; the references are
// monai.losses.FocalLoss and the cascaded-FCN spec §3.
//
// softmax (default), logits N x C x ..., labels N x 1 x ... or N x ... (whole numbers in [0, C)), per voxel v
// with p = softmax(x_v)_y and q = 1 - p (summed over the other classes, accurate when p -> 1):
//   FL_v = -a_v q^gamma log p,   a_v = class_weight[y] * alpha_c[y] * weight_map[v]   (each 1 when unset)
//   mean: (1 / voxels) Σ_v FL_v  (the spec's mean over all voxels of the batch; NOT divided by Σ a_v)
//   gamma = 0 and no weights is exactly torch.nn.functional.cross_entropy.
// sigmoid, logits and targets of one shape N x C x ... (targets in [0, 1]), per element:
//   FL = a (1 - p_t)^gamma bce(x, t), written as exp(gamma logsigmoid(-x (2t - 1))) bce (MONAI),
//   a = alpha t + (1 - alpha)(1 - t) (with alpha) * class_weight[c] * weight_map;  mean over all elements.
// alpha (MONAI's alpha): sigmoid as above; softmax alpha_c = 1 - alpha for class 0 and alpha for the others.
// class_weight (MONAI's weight): one per class (channel). weight_map (forward's third argument): a per-voxel
// weight, no gradient, e.g. the distance map of DistanceWeightedFocal; shape N x 1 x ... or N x ... (softmax),
// the logits' shape or N x 1 x ... broadcast over channels (sigmoid). Weights must be finite and >= 0.
// The gradient is w.r.t. the LOGITS (hand-written, spec §3):
//   softmax: dFL/dx_j = a [gamma q^(gamma-1) p log p - q^gamma] (delta_jy - p_j), the first term 0 where q = 0.
//
// Differences from MONAI's FocalLoss (documented, deliberate): MONAI's softmax mode takes one-hot targets and its
// mean divides by N*C*voxels (C times smaller than here); MONAI's gamma default is 2 as here. No
// include_background (MONAI drops channel 0 before the softmax, which changes the probabilities).
//
//   losses::FocalLoss<float, mmnet::cpu> fl(losses::FocalLossOptions().gamma(2));
//   float l = fl.forward(logits, labels);            // or fl.forward(logits, labels, weight_map)
//   auto dl_dlogits = fl.backward();
#pragma once
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "../backend/common/cross_entropy.hpp"
#include "../core/tensor.hpp"
#include "reduction.hpp"

namespace mmnet::losses {

enum class FocalMode { softmax, sigmoid };

namespace detail {
template <class T, class B>
index_t count_negative(const Tensor<T, B>& t) {
  const T* pt = t.data();
  return static_cast<index_t>(
      backend::reduce_sum<double>(B{}, t.numel(), MMNET_KERNEL(index_t i) { return pt[i] < T(0) ? 1.0 : 0.0; }));
}
}  // namespace detail

class FocalLossOptions {
 public:
  FocalLossOptions() = default;
  // Focusing exponent (default 2: Lin et al., MONAI, and the cascaded-FCN spec). 0 gives cross-entropy.
  FocalLossOptions& gamma(double g) {
    gamma_ = g;
    return *this;
  }
  double gamma() const { return gamma_; }
  // Balance factor in [0, 1] (unset by default): sigmoid alpha t + (1 - alpha)(1 - t); softmax 1 - alpha for
  // class 0, alpha for the others.
  FocalLossOptions& alpha(std::optional<double> a) {
    alpha_ = a;
    return *this;
  }
  const std::optional<double>& alpha() const { return alpha_; }
  // One weight per class / channel (MONAI's weight); empty (default) means all 1.
  FocalLossOptions& class_weight(std::vector<double> w) {
    class_weight_ = std::move(w);
    return *this;
  }
  const std::vector<double>& class_weight() const { return class_weight_; }
  // softmax (default) over the channel axis with integer labels, or an independent sigmoid per element.
  FocalLossOptions& mode(FocalMode m) {
    mode_ = m;
    return *this;
  }
  FocalMode mode() const { return mode_; }
  // mean (default: over voxels for softmax, over elements for sigmoid) or sum.
  FocalLossOptions& reduction(Reduction r) {
    reduction_ = r;
    return *this;
  }
  Reduction reduction() const { return reduction_; }

 private:
  double gamma_ = 2.0;
  std::optional<double> alpha_;
  std::vector<double> class_weight_;
  FocalMode mode_ = FocalMode::softmax;
  Reduction reduction_ = Reduction::mean;
};

template <class T, class Backend>
class FocalLoss {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::losses::FocalLoss: T must be float or double");

 public:
  using tensor = Tensor<T, Backend>;

  explicit FocalLoss(const FocalLossOptions& options = FocalLossOptions()) : options_(options) {
    if (!(options_.gamma() >= 0) || !std::isfinite(options_.gamma()))
      fail<value_error>(name, "gamma", "a finite value >= 0", options_.gamma());
    if (options_.alpha() && !(*options_.alpha() >= 0 && *options_.alpha() <= 1))
      fail<value_error>(name, "alpha", "a value in [0, 1]", *options_.alpha());
    detail::check_class_weights(name, "class_weight", options_.class_weight());
  }
  const FocalLossOptions& options() const { return options_; }

  // softmax: target = integer labels; sigmoid: target of the logits' shape in [0, 1].
  T forward(const tensor& x, const tensor& target) { return run(x, target, nullptr); }
  // weight_map: per-voxel weights (see the header comment for its shapes).
  T forward(const tensor& x, const tensor& target, const tensor& weight_map) { return run(x, target, &weight_map); }

  // dL/dlogits times grad_loss.
  tensor backward(T grad_loss = T(1)) const {
    if (!x_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    const double scale = static_cast<double>(grad_loss) / denominator_;
    tensor dx(x_.shape());
    const T* wm = wmap_.defined() ? wmap_.data() : nullptr;
    if (options_.mode() == FocalMode::softmax)
      backend::focal_softmax_backward(Backend{}, problem_, x_.data(), t_.data(), class_w_.data(), wm, options_.gamma(),
                                      scale, dx.data());
    else
      backend::focal_sigmoid_backward(Backend{}, problem_, x_.data(), t_.data(), class_w_.data(), wm, sigmoid_spec_,
                                      scale, dx.data());
    return dx;
  }

  static constexpr const char* name = "mmnet::losses::FocalLoss";

 private:
  T run(const tensor& x, const tensor& t, const tensor* wmap) {
    const auto l = detail::class_layout(name, "logits", x);
    const bool softmax = options_.mode() == FocalMode::softmax;
    if (softmax) {
      detail::check_label_shape(name, t, x.shape());
    } else {
      detail::check_loss_operands(name, x, "logits", t, "target");
    }
    if (wmap) check_weight_map(*wmap, x.shape(), softmax);
    const auto& cw = options_.class_weight();
    if (!cw.empty() && static_cast<index_t>(cw.size()) != l.c)
      fail<shape_error>(name, "class_weight count (logits channels)", l.c, cw.size(), "logits shape " + x.shape().str());
    if (softmax && l.c < 2 && options_.alpha())
      fail<shape_error>(name, "channels with alpha in softmax mode", ">= 2", l.c, "logits shape " + x.shape().str());
    detail::check_loss_values(name, "logits", x, false);
    if (softmax)
      detail::check_labels(name, t, l.c);
    else
      detail::check_loss_values(name, "target", t, true);

    // Per-class factors: class_weight times the softmax alpha (1 - alpha for class 0, alpha for the others).
    std::vector<double> w;
    if (!cw.empty() || (softmax && options_.alpha())) {
      w.assign(static_cast<std::size_t>(l.c), 1.0);
      for (index_t k = 0; k < l.c; ++k) {
        if (!cw.empty()) w[static_cast<std::size_t>(k)] *= cw[static_cast<std::size_t>(k)];
        if (softmax && options_.alpha()) w[static_cast<std::size_t>(k)] *= k == 0 ? 1 - *options_.alpha() : *options_.alpha();
      }
    }
    class_w_ = detail::DeviceDoubles<Backend>(w);
    problem_ = backend::ClassProblem{l.n, l.c, l.s};
    sigmoid_spec_ = backend::SigmoidFocalSpec{};
    sigmoid_spec_.gamma = options_.gamma();
    sigmoid_spec_.has_alpha = !softmax && options_.alpha().has_value();
    sigmoid_spec_.alpha = options_.alpha().value_or(0.0);
    sigmoid_spec_.map_broadcast = (wmap && wmap->numel() != x.numel()) ? l.s : 0;
    const T* wm = wmap ? wmap->data() : nullptr;
    const double total =
        softmax ? backend::focal_softmax_sum(Backend{}, problem_, x.data(), t.data(), class_w_.data(), wm, options_.gamma())
                : backend::focal_sigmoid_sum(Backend{}, problem_, x.data(), t.data(), class_w_.data(), wm, sigmoid_spec_);
    const double count = softmax ? static_cast<double>(l.n * l.s) : static_cast<double>(x.numel());
    denominator_ = options_.reduction() == Reduction::mean ? count : 1.0;
    const double loss = total / denominator_;
    if (!std::isfinite(loss)) fail<value_error>(name, "loss", "a finite value", loss, "logits shape " + x.shape().str());
    x_ = x;
    t_ = t;
    wmap_ = wmap ? *wmap : tensor();
    return static_cast<T>(loss);
  }

  void check_weight_map(const tensor& m, const Shape& xs, bool softmax) const {
    std::vector<index_t> a = xs.to_vector(), b = a, full = a;
    a[1] = 1;
    b.erase(b.begin() + 1);
    const auto ms = m.defined() ? m.shape().to_vector() : std::vector<index_t>{};
    const bool ok = m.defined() && (ms == a || (softmax && ms == b) || (!softmax && ms == full));
    if (!ok)
      fail<shape_error>(name, "weight_map shape (logits " + xs.str() + ")",
                        softmax ? Shape(a).str() + " or " + Shape(b).str() : Shape(full).str() + " or " + Shape(a).str(),
                        m.defined() ? m.shape().str() : std::string("an empty tensor"));
    detail::check_loss_values(name, "weight_map", m, false);
    const index_t neg = detail::count_negative(m);
    if (neg > 0) fail<value_error>(name, "weight_map", "values >= 0", std::to_string(neg) + " negative values");
  }

  FocalLossOptions options_;
  detail::DeviceDoubles<Backend> class_w_;
  backend::ClassProblem problem_;
  backend::SigmoidFocalSpec sigmoid_spec_;
  tensor x_, t_, wmap_;
  double denominator_ = 1;
};

}  // namespace mmnet::losses
