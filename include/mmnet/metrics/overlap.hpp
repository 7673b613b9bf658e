// mmnet/metrics/overlap.hpp: voxel-overlap metrics of one binary mask pair (pred P, truth G): the confusion counts,
// Dice, IoU (Jaccard), precision, recall; MONAI's compute_dice / compute_iou / ConfusionMatrixMetric
// ("precision" = ppv, "recall" = sensitivity) on one volume, in double on the host (any nonzero value is foreground).
//
// Empty masks, as MONAI:
// * dice, iou with ignore_empty = true (MONAI's default): NaN whenever G is empty (whatever P is), 0 when P is
//   empty but G is not. ignore_empty = false: 1 when both are empty, 0 when only G is empty.
// * precision = TP / (TP + FP): NaN when P is empty; recall = TP / (TP + FN): NaN when G is empty
//   (MONAI's confusion-matrix metrics return NaN for a zero denominator).
// Voxel spacing does not matter here (every voxel has the same volume).
//
//   auto c = metrics::confusion_counts(pred, truth);   // two host vectors or two tensors of one shape
//   double d = metrics::dice(c), j = metrics::iou(c, /*ignore_empty=*/false);
#pragma once
#include <cstdint>
#include <limits>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace mmnet::metrics {

struct ConfusionCounts {
  std::int64_t tp = 0, fp = 0, fn = 0, tn = 0;
  std::int64_t predicted() const { return tp + fp; }  // |P|
  std::int64_t truth() const { return tp + fn; }      // |G|
  std::int64_t total() const { return tp + fp + fn + tn; }
};

// pred, truth: n values each; nonzero = foreground.
template <class P, class G>
ConfusionCounts confusion_counts(const P* pred, const G* truth, index_t n) {
  ConfusionCounts c;
  for (index_t i = 0; i < n; ++i) {
    const bool p = pred[i] != P(0), g = truth[i] != G(0);
    c.tp += p && g, c.fp += p && !g, c.fn += !p && g, c.tn += !p && !g;
  }
  return c;
}

template <class P, class G>
ConfusionCounts confusion_counts(const std::vector<P>& pred, const std::vector<G>& truth) {
  if (pred.size() != truth.size())
    fail<shape_error>("mmnet::metrics::confusion_counts", "truth voxel count (that of pred)", pred.size(), truth.size());
  return confusion_counts(pred.data(), truth.data(), static_cast<index_t>(pred.size()));
}

// Tensors of any backend and one shape (copied to the host).
template <class T, class Backend>
ConfusionCounts confusion_counts(const Tensor<T, Backend>& pred, const Tensor<T, Backend>& truth) {
  const char* component = "mmnet::metrics::confusion_counts";
  if (!pred.defined() || !truth.defined())
    fail<shape_error>(component, "pred and truth", "defined tensors", "an empty tensor");
  if (pred.shape() != truth.shape())
    fail<shape_error>(component, "truth shape", pred.shape().str(), truth.shape().str());
  return confusion_counts(pred.to_vector(), truth.to_vector());
}

namespace detail {
inline double ratio_or_nan(std::int64_t num, std::int64_t den) {
  return den == 0 ? std::numeric_limits<double>::quiet_NaN() : static_cast<double>(num) / static_cast<double>(den);
}
}  // namespace detail

// 2 TP / (|P| + |G|).
inline double dice(const ConfusionCounts& c, bool ignore_empty = true) {
  if (c.truth() > 0) return 2.0 * static_cast<double>(c.tp) / static_cast<double>(c.truth() + c.predicted());
  if (ignore_empty) return std::numeric_limits<double>::quiet_NaN();
  return c.predicted() == 0 ? 1.0 : 0.0;
}

// TP / |P u G|.
inline double iou(const ConfusionCounts& c, bool ignore_empty = true) {
  const std::int64_t uni = c.tp + c.fp + c.fn;
  if (ignore_empty && c.truth() == 0) return std::numeric_limits<double>::quiet_NaN();
  return uni > 0 ? static_cast<double>(c.tp) / static_cast<double>(uni) : 1.0;
}

inline double precision(const ConfusionCounts& c) { return detail::ratio_or_nan(c.tp, c.tp + c.fp); }
inline double recall(const ConfusionCounts& c) { return detail::ratio_or_nan(c.tp, c.tp + c.fn); }

}  // namespace mmnet::metrics
