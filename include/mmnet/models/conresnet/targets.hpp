// mmnet/models/conresnet/targets.hpp: ConResNet's inputs and targets (spec conresnet.md §3.1, §7.3):
//
//   image_residual(x)     X_res: X_res[0] = 0, X_res[d] = |X[d] - X[d-1]| along D (on the whole volume at test time)
//   label_residual(y)     Y_res per channel: Y_res[0] = (Y[0] != 0), Y_res[d] = (Y[d] != Y[d-1]) -- the first slice
//                         is NOT zeroed (the code subtracts an all-zero slice), unlike X_res and the module's G
//   region_targets(labels, regions)   N x 1 x D x H x W integer-valued labels -> N x K binary channels,
//                         channel k = (label in regions[k])
//   brats_regions_nnunet()   the brats-like phantom's labels (1 edema, 2 non-enhancing, 3 enhancing; nnU-Net's
//                         BraTS convention) as the official channel order [ET, WT, TC] = [{3}, {1, 2, 3}, {2, 3}]
//   brats_regions_official()   the official BraTS 2018 labels {1, 2, 4}: [{4}, {1, 2, 4}, {1, 4}]
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "../../core/tensor.hpp"
#include "../../layers/slice_difference.hpp"

namespace mmnet::models::conresnet {

template <class T, class Backend>
Tensor<T, Backend> image_residual(const Tensor<T, Backend>& x) {
  return nn::slice_difference(x, 0);
}

template <class T, class Backend>
Tensor<T, Backend> label_residual(const Tensor<T, Backend>& y) {
  return nn::slice_difference_labels(y, 0);
}

inline std::vector<std::vector<int>> brats_regions_nnunet() { return {{3}, {1, 2, 3}, {2, 3}}; }
// The official BraTS 2018 labels (1 necrosis / non-enhancing, 2 edema, 4 enhancing; the official dataset class):
// [ET, WT, TC] = [{4}, {1, 2, 4}, {1, 4}].
inline std::vector<std::vector<int>> brats_regions_official() { return {{4}, {1, 2, 4}, {1, 4}}; }

// Labels are rounded to the nearest integer. A host loop: data preparation, once per sample.
template <class T, class Backend>
Tensor<T, Backend> region_targets(const Tensor<T, Backend>& labels, const std::vector<std::vector<int>>& regions) {
  const char* name = "mmnet::conresnet::region_targets";
  check_rank(name, "labels", labels, 5);
  if (labels.size(1) != 1)
    fail<shape_error>(name, "label channels", 1, labels.size(1), "labels shape " + labels.shape().str());
  if (regions.empty()) fail<value_error>(name, "regions", "at least one region", 0);
  const index_t n = labels.size(0), k = static_cast<index_t>(regions.size());
  const index_t v = labels.size(2) * labels.size(3) * labels.size(4);
  const auto lab = labels.to_vector();
  std::vector<T> out(static_cast<std::size_t>(n * k * v), T(0));
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < v; ++j) {
      const long l = std::lround(static_cast<double>(lab[static_cast<std::size_t>(i * v + j)]));
      for (index_t c = 0; c < k; ++c)
        for (int r : regions[static_cast<std::size_t>(c)])
          if (l == r) out[static_cast<std::size_t>((i * k + c) * v + j)] = T(1);
    }
  return Tensor<T, Backend>::from_vector(Shape{n, k, labels.size(2), labels.size(3), labels.size(4)}, out);
}

}  // namespace mmnet::models::conresnet
