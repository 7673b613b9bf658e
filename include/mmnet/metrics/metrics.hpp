// mmnet/metrics/metrics.hpp: every segmentation metric of one binary mask pair (Dice, IoU, precision, recall, HD,
// HD95, ASSD, NSD) in one struct, and the same per label or per label group of two label volumes (labels 1..K,
// or BraTS regions WT/TC/ET given as label sets); MONAI's DiceMetric, MeanIoU, ConfusionMatrixMetric,
// HausdorffDistanceMetric, SurfaceDistanceMetric(symmetric=True) and SurfaceDiceMetric on one volume.
//
// Defaults (MetricOptions) follow MONAI: ignore_empty = true (Dice/IoU NaN when the truth is empty),
// hd_percentile = 95, nsd_tolerance_mm = 1.0 (MONAI has no default tolerance; 1 mm is common in MSD/BraTS-style
// reporting, so set it per structure). NaN means "not defined for this case" (both masks empty; see
// overlap.hpp and surface_distance.hpp for every empty-mask rule) and should be skipped by a nan-mean, as
// MONAI's reductions do. docs/metrics.md has the definitions and the MONAI correspondence.
//
//   metrics::MetricOptions opt;  opt.nsd_tolerance_mm = 2.0;
//   auto m = metrics::evaluate(pred_bytes, truth_bytes, {d, h, w}, {3.0, 0.8, 0.6}, opt);   // m.dice, m.hd95 ...
//   auto per = metrics::evaluate_regions(pred_labels, truth_labels, dims, spacing, metrics::brats_regions());
//   (metrics::nnunet_brats_regions() for nnU-Net's converted labels 1 edema, 2 non-enhancing, 3 enhancing)
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "overlap.hpp"
#include "surface_distance.hpp"

namespace mmnet::metrics {

struct MetricOptions {
  bool ignore_empty = true;       // Dice / IoU: NaN when the truth is empty (MONAI's default)
  double hd_percentile = 95.0;    // the percentile Hausdorff distance reported as hd95
  double nsd_tolerance_mm = 1.0;  // normalised surface Dice tolerance tau in mm
  bool surface = true;            // false: skip the (costlier) surface metrics, leaving them NaN
};

struct SegmentationMetrics {
  ConfusionCounts counts;
  double dice = 0, iou = 0, precision = 0, recall = 0;
  double hd = 0, hd95 = 0, assd = 0, nsd = 0;  // mm; hd95 is the hd_percentile option
};

// pred, truth: dims.numel() bytes each (nonzero = foreground); spacing (D, H, W) in mm.
inline SegmentationMetrics evaluate(const std::uint8_t* pred, const std::uint8_t* truth, const Dims3& dims,
                                    const Spacing3& spacing = {1.0, 1.0, 1.0}, const MetricOptions& opt = {}) {
  const char* component = "mmnet::metrics::evaluate";
  detail::check_dims(component, dims);
  ops::detail::check_spacing(component, spacing);
  if (!(opt.hd_percentile >= 0 && opt.hd_percentile <= 100))
    fail<value_error>(component, "hd_percentile", "a value in [0, 100]", opt.hd_percentile);
  if (!std::isfinite(opt.nsd_tolerance_mm) || opt.nsd_tolerance_mm < 0)
    fail<value_error>(component, "nsd_tolerance_mm", "a finite value >= 0", opt.nsd_tolerance_mm);
  SegmentationMetrics m;
  m.counts = confusion_counts(pred, truth, dims.numel());
  m.dice = dice(m.counts, opt.ignore_empty);
  m.iou = iou(m.counts, opt.ignore_empty);
  m.precision = precision(m.counts);
  m.recall = recall(m.counts);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  m.hd = m.hd95 = m.assd = m.nsd = nan;
  if (opt.surface) {
    const SurfaceDistances sd = surface_distances(pred, truth, dims, spacing);
    m.hd = hausdorff_distance(sd);
    m.hd95 = hausdorff_distance(sd, opt.hd_percentile);
    m.assd = average_symmetric_surface_distance(sd);
    m.nsd = normalized_surface_dice(sd, opt.nsd_tolerance_mm);
  }
  return m;
}

template <class M>
SegmentationMetrics evaluate(const std::vector<M>& pred, const std::vector<M>& truth, const Dims3& dims,
                             const Spacing3& spacing = {1.0, 1.0, 1.0}, const MetricOptions& opt = {}) {
  const char* component = "mmnet::metrics::evaluate";
  detail::check_dims(component, dims);
  if (static_cast<index_t>(pred.size()) != dims.numel())
    fail<shape_error>(component, "pred voxel count for " + dims.str(), dims.numel(), pred.size());
  if (static_cast<index_t>(truth.size()) != dims.numel())
    fail<shape_error>(component, "truth voxel count for " + dims.str(), dims.numel(), truth.size());
  const auto p = to_binary(pred.data(), dims.numel()), g = to_binary(truth.data(), dims.numel());
  return evaluate(p.data(), g.data(), dims, spacing, opt);
}

// Tensors of any backend, shape (D, H, W) or (1, [1,] D, H, W) (copied to the host).
template <class T, class Backend>
SegmentationMetrics evaluate(const Tensor<T, Backend>& pred, const Tensor<T, Backend>& truth,
                             const Spacing3& spacing = {1.0, 1.0, 1.0}, const MetricOptions& opt = {}) {
  const char* component = "mmnet::metrics::evaluate";
  const Dims3 dims = volume_dims(component, pred);
  if (!truth.defined() || truth.shape() != pred.shape())
    fail<shape_error>(component, "truth shape", pred.shape().str(), truth.defined() ? truth.shape().str() : "an empty tensor");
  const auto p = to_binary(pred), g = to_binary(truth);
  return evaluate(p.data(), g.data(), dims, spacing, opt);
}

// A structure to evaluate: the voxels whose label is any of `labels`.
struct Region {
  std::string name;
  std::vector<std::int64_t> labels;
};

// Labels 1..K, one region each, named "1".."K" (MONAI's one-hot classes without the background).
inline std::vector<Region> label_regions(std::int64_t num_labels) {
  if (num_labels < 1) fail<value_error>("mmnet::metrics::label_regions", "num_labels", ">= 1", num_labels);
  std::vector<Region> r;
  for (std::int64_t k = 1; k <= num_labels; ++k) r.push_back({std::to_string(k), {k}});
  return r;
}

// BraTS evaluation regions: whole tumour WT = {1, 2, et}, tumour core TC = {1, et}, enhancing tumour ET = {et};
// labels 1 necrotic core, 2 oedema, et = 4 (BraTS 2018-2021; pass 3 for BraTS 2023+).
inline std::vector<Region> brats_regions(std::int64_t et_label = 4) {
  return {{"WT", {1, 2, et_label}}, {"TC", {1, et_label}}, {"ET", {et_label}}};
}

// The same regions on nnU-Net's converted BraTS labels (1 edema, 2 non-enhancing / necrosis, 3 enhancing; MSD
// Task01 and the mmnet brats_like phantom): WT = {1, 2, 3}, TC = {2, 3}, ET = {3} (MAML spec §5).
inline std::vector<Region> nnunet_brats_regions() { return {{"WT", {1, 2, 3}}, {"TC", {2, 3}}, {"ET", {3}}}; }

// Label volumes (any integral or floating label type; floating labels are compared after rounding to int64).
template <class L>
std::vector<SegmentationMetrics> evaluate_regions(const L* pred, const L* truth, const Dims3& dims,
                                                  const Spacing3& spacing, const std::vector<Region>& regions,
                                                  const MetricOptions& opt = {}) {
  const char* component = "mmnet::metrics::evaluate_regions";
  detail::check_dims(component, dims);
  if (regions.empty()) fail<value_error>(component, "regions", "at least 1", 0);
  const index_t n = dims.numel();
  auto label_of = [](L v) { return static_cast<std::int64_t>(std::llround(static_cast<double>(v))); };
  std::vector<SegmentationMetrics> out;
  std::vector<std::uint8_t> p(static_cast<std::size_t>(n)), g(static_cast<std::size_t>(n));
  for (const Region& r : regions) {
    if (r.labels.empty()) fail<value_error>(component, "labels of region '" + r.name + "'", "at least 1", 0);
    auto in = [&](L v) {
      const std::int64_t l = label_of(v);
      for (std::int64_t x : r.labels)
        if (x == l) return std::uint8_t(1);
      return std::uint8_t(0);
    };
    for (index_t i = 0; i < n; ++i) p[static_cast<std::size_t>(i)] = in(pred[i]), g[static_cast<std::size_t>(i)] = in(truth[i]);
    out.push_back(evaluate(p.data(), g.data(), dims, spacing, opt));
  }
  return out;
}

template <class L>
std::vector<SegmentationMetrics> evaluate_regions(const std::vector<L>& pred, const std::vector<L>& truth,
                                                  const Dims3& dims, const Spacing3& spacing,
                                                  const std::vector<Region>& regions, const MetricOptions& opt = {}) {
  const char* component = "mmnet::metrics::evaluate_regions";
  detail::check_dims(component, dims);
  if (static_cast<index_t>(pred.size()) != dims.numel())
    fail<shape_error>(component, "pred voxel count for " + dims.str(), dims.numel(), pred.size());
  if (static_cast<index_t>(truth.size()) != dims.numel())
    fail<shape_error>(component, "truth voxel count for " + dims.str(), dims.numel(), truth.size());
  return evaluate_regions(pred.data(), truth.data(), dims, spacing, regions, opt);
}

// Label tensors of any backend, shape (D, H, W) or (1, [1,] D, H, W) (copied to the host).
template <class T, class Backend>
std::vector<SegmentationMetrics> evaluate_regions(const Tensor<T, Backend>& pred, const Tensor<T, Backend>& truth,
                                                  const Spacing3& spacing, const std::vector<Region>& regions,
                                                  const MetricOptions& opt = {}) {
  const char* component = "mmnet::metrics::evaluate_regions";
  const Dims3 dims = volume_dims(component, pred);
  if (!truth.defined() || truth.shape() != pred.shape())
    fail<shape_error>(component, "truth shape", pred.shape().str(), truth.defined() ? truth.shape().str() : "an empty tensor");
  const auto p = pred.to_vector(), g = truth.to_vector();
  return evaluate_regions(p.data(), g.data(), dims, spacing, regions, opt);
}

}  // namespace mmnet::metrics
