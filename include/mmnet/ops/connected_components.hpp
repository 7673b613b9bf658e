// mmnet/ops/connected_components.hpp: connected-component labelling of a binary 3D host volume (6- or 26-
// connectivity) and the largest-connected-component filter; scipy.ndimage.label(mask,
// generate_binary_structure(3, 1 or 3)) and MONAI's KeepLargestConnectedComponent / get_largest_connected_component_mask
// for one binary volume. No gradient (post-processing of results).
//
// Labels are 1..count in the row-major (D, H, W) order of each component's first voxel, exactly scipy's
// numbering; background is 0. Default connectivity 26 (MONAI's KeepLargestConnectedComponent default
// connectivity=None means full, i.e. 26 in 3D). The largest component is the one with the most voxels, the lowest
// label on ties (np.argmax over the sizes). Iterative breadth-first flood fill with an explicit queue: no
// recursion, deterministic, O(voxels) time; 4 bytes of labels plus at most 8 bytes of queue per voxel.
//
//   auto cc = ops::connected_components(mask_bytes, {d, h, w});        // cc.labels, cc.count, cc.sizes
//   auto keep = ops::largest_connected_component(mask_bytes, {d, h, w}, 6);
#pragma once
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "distance_transform.hpp"  // Dims3

namespace mmnet::ops {

struct Components {
  std::vector<std::int32_t> labels;  // dims.numel(), 0 = background, 1..count
  std::int64_t count = 0;
  std::vector<std::int64_t> sizes;   // sizes[k] = voxels of component k + 1
};

namespace detail {

inline void check_cc_args(const char* component, const Dims3& dims, int connectivity) {
  if (dims.d <= 0 || dims.h <= 0 || dims.w <= 0)
    fail<shape_error>(component, "volume extent (D, H, W)", "all > 0", dims.str());
  if (connectivity != 6 && connectivity != 26) fail<value_error>(component, "connectivity", "6 or 26", connectivity);
  if (dims.numel() >= static_cast<index_t>(INT32_MAX))
    fail<shape_error>(component, "voxel count", "< 2^31 - 1", dims.numel(), "labels are int32");
}

}  // namespace detail

// mask: dims.numel() values, nonzero = foreground.
template <class M>
Components connected_components(const M* mask, const Dims3& dims, int connectivity = 26) {
  detail::check_cc_args("mmnet::ops::connected_components", dims, connectivity);
  const index_t n = dims.numel(), sz = dims.h * dims.w, sy = dims.w;
  Components cc;
  cc.labels.assign(static_cast<std::size_t>(n), 0);
  // Neighbour offsets (dz, dy, dx): the 6 faces, or all 26.
  int off[26][3];
  index_t lin[26];  // the same offsets as linear index steps (voxels off the volume border)
  int noff = 0;
  for (int dz = -1; dz <= 1; ++dz)
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx) {
        const int manhattan = (dz != 0) + (dy != 0) + (dx != 0);
        if (manhattan == 0 || (connectivity == 6 && manhattan != 1)) continue;
        off[noff][0] = dz, off[noff][1] = dy, off[noff][2] = dx;
        lin[noff] = dz * sz + dy * sy + dx, ++noff;
      }
  std::vector<index_t> queue;
  for (index_t seed = 0; seed < n; ++seed) {
    if (mask[seed] == M(0) || cc.labels[static_cast<std::size_t>(seed)] != 0) continue;
    const auto label = static_cast<std::int32_t>(++cc.count);
    cc.labels[static_cast<std::size_t>(seed)] = label;
    queue.clear();
    queue.push_back(seed);
    for (std::size_t head = 0; head < queue.size(); ++head) {
      const index_t i = queue[head], z = i / sz, y = (i / sy) % dims.h, x = i % sy;
      if (z > 0 && z + 1 < dims.d && y > 0 && y + 1 < dims.h && x > 0 && x + 1 < dims.w) {
        for (int k = 0; k < noff; ++k) {  // interior: no bounds checks; same visiting order as below
          const index_t j = i + lin[k];
          if (mask[j] == M(0) || cc.labels[static_cast<std::size_t>(j)] != 0) continue;
          cc.labels[static_cast<std::size_t>(j)] = label;
          queue.push_back(j);
        }
        continue;
      }
      for (int k = 0; k < noff; ++k) {
        const index_t nz = z + off[k][0], ny = y + off[k][1], nx = x + off[k][2];
        if (nz < 0 || nz >= dims.d || ny < 0 || ny >= dims.h || nx < 0 || nx >= dims.w) continue;
        const index_t j = nz * sz + ny * sy + nx;
        if (mask[j] == M(0) || cc.labels[static_cast<std::size_t>(j)] != 0) continue;
        cc.labels[static_cast<std::size_t>(j)] = label;
        queue.push_back(j);
      }
    }
    cc.sizes.push_back(static_cast<std::int64_t>(queue.size()));
  }
  return cc;
}

template <class M>
Components connected_components(const std::vector<M>& mask, const Dims3& dims, int connectivity = 26) {
  if (static_cast<index_t>(mask.size()) != dims.numel())
    fail<shape_error>("mmnet::ops::connected_components", "mask voxel count for " + dims.str(), dims.numel(), mask.size());
  return connected_components(mask.data(), dims, connectivity);
}

// Tensor of any backend, shape (D, H, W) or (1, [1,] D, H, W) (copied to the host).
template <class T, class Backend>
Components connected_components(const Tensor<T, Backend>& mask, int connectivity = 26) {
  const char* component = "mmnet::ops::connected_components";
  if (!mask.defined() || mask.rank() < 3 || mask.numel() == 0 ||
      mask.numel() != mask.size(-3) * mask.size(-2) * mask.size(-1))
    fail<shape_error>(component, "mask shape", "one volume: (D, H, W) or (1, [1,] D, H, W)",
                      mask.defined() ? mask.shape().str() : "an empty tensor");
  const auto v = mask.to_vector();
  return connected_components(v.data(), Dims3{mask.size(-3), mask.size(-2), mask.size(-1)}, connectivity);
}

// 1 on the voxels of the largest component (lowest label on ties), 0 elsewhere; all 0 for an empty mask.
inline std::vector<std::uint8_t> largest_component_mask(const Components& cc) {
  std::vector<std::uint8_t> out(cc.labels.size(), 0);
  if (cc.count == 0) return out;
  std::int64_t best = 0;
  for (std::int64_t k = 1; k < cc.count; ++k)
    if (cc.sizes[static_cast<std::size_t>(k)] > cc.sizes[static_cast<std::size_t>(best)]) best = k;
  const auto label = static_cast<std::int32_t>(best + 1);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = cc.labels[i] == label ? 1 : 0;
  return out;
}

template <class M>
std::vector<std::uint8_t> largest_connected_component(const M* mask, const Dims3& dims, int connectivity = 26) {
  return largest_component_mask(connected_components(mask, dims, connectivity));
}

template <class M>
std::vector<std::uint8_t> largest_connected_component(const std::vector<M>& mask, const Dims3& dims,
                                                      int connectivity = 26) {
  return largest_component_mask(connected_components(mask, dims, connectivity));
}

// Same shape and backend as mask, 1 on the largest component, 0 elsewhere.
template <class T, class Backend>
Tensor<T, Backend> largest_connected_component(const Tensor<T, Backend>& mask, int connectivity = 26) {
  const auto keep = largest_component_mask(connected_components(mask, connectivity));
  return Tensor<T, Backend>::from_vector(mask.shape(), std::vector<T>(keep.begin(), keep.end()));
}

}  // namespace mmnet::ops
