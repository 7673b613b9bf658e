// mmnet/inference/postprocess.hpp: network outputs (K x D x H x W, e.g. from sliding_window_inference) to a
// data::LabelMap: threshold for sigmoid outputs (MONAI's AsDiscrete(threshold=t): p >= t) or argmax for softmax
// outputs (torch.argmax(dim=1), ties to the first channel).
//
//   auto labels = inference::to_label_map(probs, inference::PostprocessOptions::threshold(0.5));
//   auto labels = inference::to_label_map(probs, inference::PostprocessOptions::argmax());
//
// Threshold with several channels (multi-label sigmoid outputs): a voxel gets the label of the LAST channel whose
// value is >= its threshold, 0 when none is. Nested regions listed outside-in therefore come out right, e.g.
// BraTS (WT, TC, ET) with labels({2, 1, 4}) gives edema 2, tumour core 1, enhancing tumour 4.
// Argmax: channel c gets label c (labels({...}) remaps), so with a background channel 0 stays background.
// Largest-connected-component filtering plugs in as component_filter, which runs on the finished label map:
// keep_largest_component() keeps, for each label separately, its largest connected component (MONAI's
// KeepLargestConnectedComponent(independent=True); nnU-Net's remove_all_but_largest_component per class). Mapping the labels back to the original image space (undoing a crop or a resampling)
// is the caller's job (data/crop.hpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../data/volume.hpp"
#include "../ops/connected_components.hpp"

namespace mmnet::inference {

enum class Discretize { threshold, argmax };

struct PostprocessOptions {
  // Sigmoid outputs: every channel thresholded at t (default 0.5, MONAI's AsDiscrete threshold; p >= t is on).
  static PostprocessOptions threshold(double t = 0.5) {
    PostprocessOptions o;
    o.method_ = Discretize::threshold;
    o.thresholds_ = {t};
    return o;
  }
  // Softmax outputs (or logits: argmax is the same): the most likely channel.
  static PostprocessOptions argmax() {
    PostprocessOptions o;
    o.method_ = Discretize::argmax;
    return o;
  }

  Discretize method() const { return method_; }
  // Per-channel thresholds (threshold mode): one value for all channels or one per channel.
  PostprocessOptions& thresholds(std::vector<double> v) { thresholds_ = std::move(v); return *this; }
  const std::vector<double>& thresholds() const { return thresholds_; }
  // The label of each channel, 0-255 (default: c + 1 for threshold, c for argmax). One per channel.
  PostprocessOptions& labels(std::vector<int> v) { labels_ = std::move(v); return *this; }
  const std::vector<int>& labels() const { return labels_; }
  // Runs on the finished label map, e.g. largest-connected-component filtering (empty: none, the default).
  PostprocessOptions& component_filter(std::function<void(data::LabelMap&)> f) { filter_ = std::move(f); return *this; }
  const std::function<void(data::LabelMap&)>& component_filter() const { return filter_; }

 private:
  PostprocessOptions() = default;
  Discretize method_ = Discretize::threshold;
  std::vector<double> thresholds_{0.5};
  std::vector<int> labels_;
  std::function<void(data::LabelMap&)> filter_;
};

namespace detail {

inline constexpr const char* pp_component = "mmnet::inference::to_label_map";

// values: K channels of vox voxels each (channel-major).
template <class U>
data::LabelMap to_label_map(const U* values, index_t K, index_t D, index_t H, index_t W, const data::Spacing& spacing,
                            const PostprocessOptions& o) {
  if (K < 1) fail<shape_error>(pp_component, "channels", ">= 1", K);
  const index_t vox = D * H * W;
  if (vox == 0) fail<shape_error>(pp_component, "spatial size", "non-empty", "(" + std::to_string(D) + ", " + std::to_string(H) + ", " + std::to_string(W) + ")");
  std::vector<int> labels = o.labels();
  if (labels.empty())
    for (index_t c = 0; c < K; ++c) labels.push_back(static_cast<int>(o.method() == Discretize::threshold ? c + 1 : c));
  if (static_cast<index_t>(labels.size()) != K)
    fail<value_error>(pp_component, "number of labels (one per channel)", K, labels.size());
  for (int l : labels)
    if (l < 0 || l > 255) fail<value_error>(pp_component, "label", "in [0, 255] (LabelMap is uint8)", l);
  std::vector<double> t = o.thresholds();
  if (o.method() == Discretize::threshold) {
    if (t.size() == 1) t.assign(static_cast<std::size_t>(K), t[0]);
    if (static_cast<index_t>(t.size()) != K)
      fail<value_error>(pp_component, "number of thresholds (1 or one per channel)", K, t.size());
    for (double v : t)
      if (!std::isfinite(v)) fail<value_error>(pp_component, "threshold", "finite", v);
  }
  data::LabelMap out(D, H, W, spacing);
  index_t bad = vox;  // the first voxel with a non-finite value
#pragma omp parallel for schedule(static) reduction(min : bad)
  for (index_t i = 0; i < vox; ++i) {
    std::uint8_t label = 0;
    if (o.method() == Discretize::threshold) {
      for (index_t c = 0; c < K; ++c) {
        const double v = static_cast<double>(values[c * vox + i]);
        if (!std::isfinite(v)) bad = std::min(bad, i);
        if (v >= t[static_cast<std::size_t>(c)]) label = static_cast<std::uint8_t>(labels[static_cast<std::size_t>(c)]);
      }
    } else {
      index_t best = 0;
      double bv = static_cast<double>(values[i]);
      for (index_t c = 0; c < K; ++c) {
        const double v = static_cast<double>(values[c * vox + i]);
        if (!std::isfinite(v)) bad = std::min(bad, i);
        if (v > bv) bv = v, best = c;
      }
      label = static_cast<std::uint8_t>(labels[static_cast<std::size_t>(best)]);
    }
    out.data[static_cast<std::size_t>(i)] = label;
  }
  if (bad < vox) fail<value_error>(pp_component, "network output values", "finite", "a non-finite value", "voxel " + std::to_string(bad));
  if (o.component_filter()) o.component_filter()(out);
  return out;
}

}  // namespace detail

// probs: 1 x K x D x H x W or K x D x H x W on the host.
template <class T>
data::LabelMap to_label_map(const Tensor<T, cpu>& probs, const PostprocessOptions& options,
                            const data::Spacing& spacing = {1.0, 1.0, 1.0}) {
  if (!probs.defined() || (probs.rank() != 4 && probs.rank() != 5) || (probs.rank() == 5 && probs.size(0) != 1))
    fail<shape_error>(detail::pp_component, "network output shape", "(1, K, D, H, W) or (K, D, H, W)",
                      probs.defined() ? probs.shape().str() : std::string("an empty tensor"));
  const int o = probs.rank() - 4;
  return detail::to_label_map(probs.data(), probs.size(o), probs.size(o + 1), probs.size(o + 2), probs.size(o + 3),
                              spacing, options);
}

// A K x D x H x W Volume (e.g. from sliding_window_inference on a Volume); the label map keeps its spacing.
inline data::LabelMap to_label_map(const data::Volume& probs, const PostprocessOptions& options) {
  if (static_cast<index_t>(probs.data.size()) != probs.channels * probs.voxels())
    fail<shape_error>(detail::pp_component, "volume data size", probs.channels * probs.voxels(), probs.data.size());
  return detail::to_label_map(probs.data.data(), probs.channels, probs.depth, probs.height, probs.width, probs.spacing,
                              options);
}

// A component_filter: for every non-zero label present, only its largest connected component (6- or
// 26-connectivity, ops/connected_components.hpp) keeps the label; the other voxels of that label become 0.
inline std::function<void(data::LabelMap&)> keep_largest_component(int connectivity = 26) {
  return [connectivity](data::LabelMap& map) {
    const ops::Dims3 dims{map.depth, map.height, map.width};
    bool present[256] = {};
    for (const auto v : map.data) present[v] = true;
    std::vector<std::uint8_t> mask(map.data.size());
    for (int label = 1; label < 256; ++label) {
      if (!present[label]) continue;
      for (std::size_t i = 0; i < mask.size(); ++i) mask[i] = map.data[i] == label ? 1 : 0;
      const auto keep = ops::largest_connected_component(mask, dims, connectivity);
      for (std::size_t i = 0; i < mask.size(); ++i)
        if (mask[i] && !keep[i]) map.data[i] = 0;
    }
  };
}

}  // namespace mmnet::inference
