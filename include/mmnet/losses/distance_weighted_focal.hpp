// mmnet/losses/distance_weighted_focal.hpp: softmax focal loss weighted per voxel by the distance to the
// tumour boundary (cascaded-FCN spec §3, paper Eq. 6-7). No PyTorch built-in; reference: the spec's formula with
// scipy.ndimage.distance_transform_edt.
//
//   FL(v) = -alpha_v (1 - p_t(v))^gamma log p_t(v),   L = (1 / |V|) Σ_v FL(v)   (mean over all voxels of the batch)
//   alpha_v = EDT_G(v) + 1 for foreground voxels (label == foreground), 1 elsewhere
// EDT_G(v): the Euclidean distance (in units of spacing, e.g. mm) from v to the nearest non-foreground voxel;
// the outside of the volume is not background (scipy), so a boundary voxel has EDT 1 on a unit grid. No cap
// unless alpha_max is set (the spec's optional alpha_max). alpha is a constant of the backward pass.
// Defaults: gamma = 2 (spec [R]), foreground class 1, unit spacing. The gradient is w.r.t. the LOGITS.
//
// IMPORTANT (spec §3): alpha must come from the FULL-volume ground truth, then be cropped (and flipped) like the
// image block: block edges are not tumour boundaries. forward(logits, labels) computes alpha from the labels it is
// given (right for whole volumes); for blocks compute distance_weight_map() on the full label volume, crop it, and
// call forward(logits, labels, alpha). A label volume that is all foreground raises value_error (EDT undefined).
//
//   losses::DistanceWeightedFocal<float, mmnet::cpu> loss;                       // gamma 2
//   auto alpha = losses::distance_weight_map(full_labels);                     // 1 x 1 x D x H x W, then crop
//   float l = loss.forward(block_logits, block_labels, block_alpha);
//   auto dl_dlogits = loss.backward();
#pragma once
#include <cmath>
#include <optional>
#include <string>

#include "../core/tensor.hpp"
#include "../ops/distance_transform.hpp"
#include "focal.hpp"
#include "reduction.hpp"

namespace mmnet::losses {

namespace detail {

template <class T, class Backend>
void foreground_mask(const T* labels, double foreground, index_t n, T* out) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) {
    out[i] = static_cast<double>(labels[i]) == foreground ? T(1) : T(0);
  });
}

template <class T, class Backend>
void distance_to_alpha(T* d, bool capped, double alpha_max, index_t n) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) {
    const double a = static_cast<double>(d[i]) + 1.0;
    d[i] = static_cast<T>(capped && a > alpha_max ? alpha_max : a);
  });
}

}  // namespace detail

// alpha = EDT(labels == foreground) + 1 (1 outside the foreground), optionally capped at alpha_max.
// labels: ... x D x H x W (rank 3 to 5; e.g. N x 1 x D x H x W), each leading index one volume.
template <class T, class Backend>
Tensor<T, Backend> distance_weight_map(const Tensor<T, Backend>& labels, index_t foreground = 1,
                                       const ops::Spacing3& spacing = {1.0, 1.0, 1.0},
                                       std::optional<double> alpha_max = std::nullopt) {
  constexpr const char* name = "mmnet::losses::distance_weight_map";
  if (alpha_max && !(*alpha_max >= 1))
    fail<value_error>(name, "alpha_max", "a value >= 1", *alpha_max);
  if (!labels.defined() || labels.numel() == 0)
    fail<shape_error>(name, "labels", "a non-empty tensor", labels.defined() ? "shape " + labels.shape().str() : "an empty tensor");
  if (labels.rank() < 3)
    fail<shape_error>(name, "labels rank", "3 to 5 (... x D x H x W)", labels.rank(), "shape " + labels.shape().str());
  Tensor<T, Backend> mask(labels.shape());
  detail::foreground_mask<T, Backend>(labels.data(), static_cast<double>(foreground), labels.numel(), mask.data());
  Tensor<T, Backend> alpha;
  try {
    alpha = ops::distance_transform(mask, spacing);
  } catch (const value_error& e) {
    throw value_error(std::string(name) + ": every volume needs a non-foreground voxel (label != " +
                      std::to_string(foreground) + "); " + e.what());
  }
  detail::distance_to_alpha<T, Backend>(alpha.data(), alpha_max.has_value(), alpha_max.value_or(0.0), alpha.numel());
  return alpha;
}

class DistanceWeightedFocalOptions {
 public:
  DistanceWeightedFocalOptions() = default;
  // Focusing exponent (default 2, spec [R]); 0 with alpha == 1 is cross-entropy.
  DistanceWeightedFocalOptions& gamma(double g) {
    gamma_ = g;
    return *this;
  }
  double gamma() const { return gamma_; }
  // The class whose voxels get alpha = EDT + 1 (default 1, the tumour).
  DistanceWeightedFocalOptions& foreground(index_t c) {
    foreground_ = c;
    return *this;
  }
  index_t foreground() const { return foreground_; }
  // Voxel spacing (D, H, W) of the distance (default 1, 1, 1: voxels = mm on the 1 mm grid).
  DistanceWeightedFocalOptions& spacing(const ops::Spacing3& s) {
    spacing_ = s;
    return *this;
  }
  const ops::Spacing3& spacing() const { return spacing_; }
  // Upper bound of alpha (unset by default: no cap, as the paper).
  DistanceWeightedFocalOptions& alpha_max(std::optional<double> a) {
    alpha_max_ = a;
    return *this;
  }
  const std::optional<double>& alpha_max() const { return alpha_max_; }
  // mean over voxels (default) or sum.
  DistanceWeightedFocalOptions& reduction(Reduction r) {
    reduction_ = r;
    return *this;
  }
  Reduction reduction() const { return reduction_; }

 private:
  double gamma_ = 2.0;
  index_t foreground_ = 1;
  ops::Spacing3 spacing_{1.0, 1.0, 1.0};
  std::optional<double> alpha_max_;
  Reduction reduction_ = Reduction::mean;
};

template <class T, class Backend>
class DistanceWeightedFocal {
 public:
  using tensor = Tensor<T, Backend>;

  explicit DistanceWeightedFocal(const DistanceWeightedFocalOptions& options = DistanceWeightedFocalOptions())
      : options_(options),
        focal_(FocalLossOptions().gamma(options.gamma()).reduction(options.reduction()).mode(FocalMode::softmax)) {
    if (options_.foreground() < 0) fail<value_error>(name, "foreground", ">= 0", options_.foreground());
    if (options_.alpha_max() && !(*options_.alpha_max() >= 1))
      fail<value_error>(name, "alpha_max", "a value >= 1", *options_.alpha_max());
  }
  const DistanceWeightedFocalOptions& options() const { return options_; }

  // logits N x C x D x H x W, labels N x 1 x D x H x W or N x D x H x W; alpha from these labels (whole volumes).
  T forward(const tensor& x, const tensor& labels) {
    if (!x.defined() || x.rank() != 5)
      fail<shape_error>(name, "logits rank", "5 (N x C x D x H x W)", x.defined() ? x.rank() : 0,
                        x.defined() ? "shape " + x.shape().str() : "an empty tensor");
    detail::check_label_shape(name, labels, x.shape());
    check_foreground(x);
    alpha_ = distance_weight_map(labels, options_.foreground(), options_.spacing(), options_.alpha_max());
    return focal_.forward(x, labels, alpha_);
  }
  // alpha: a precomputed map (distance_weight_map of the full volume, cropped), N x 1 x ... or N x ....
  T forward(const tensor& x, const tensor& labels, const tensor& alpha) {
    detail::class_layout(name, "logits", x);
    check_foreground(x);
    alpha_ = alpha;
    return focal_.forward(x, labels, alpha);
  }

  // dL/dlogits times grad_loss.
  tensor backward(T grad_loss = T(1)) const {
    if (!alpha_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    return focal_.backward(grad_loss);
  }
  // The alpha map of the last forward.
  const tensor& alpha() const { return alpha_; }

  static constexpr const char* name = "mmnet::losses::DistanceWeightedFocal";

 private:
  void check_foreground(const tensor& x) const {
    if (x.size(1) <= options_.foreground())
      fail<shape_error>(name, "logits channels (foreground class " + std::to_string(options_.foreground()) + ")",
                        "> " + std::to_string(options_.foreground()), x.size(1), "logits shape " + x.shape().str());
  }

  DistanceWeightedFocalOptions options_;
  FocalLoss<T, Backend> focal_;
  tensor alpha_;
};

}  // namespace mmnet::losses
