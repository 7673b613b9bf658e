// mmnet/models/cscn/views.hpp: CSCN's three views, block extraction, the sliding-window block grid, multi-view
// stage prediction and the ROI rule (spec shared/specs/cascaded-fcn.md §2.1, §4.2, §4.4). No PyTorch built-in;
// reference: tests/reference/cscn_ref.py (torch/numpy, the same permutations).
//
// Volumes are 1 x C x Z x Y x X (Z axial slice, Y anterior-posterior, X left-right). A view sees (D, H, W):
//   axial    (Z, Y, X)  permutation (0, 1, 2), inverse (0, 1, 2)
//   coronal  (Y, Z, X)  permutation (1, 0, 2), inverse (1, 0, 2)
//   sagittal (X, Z, Y)  permutation (2, 0, 1), inverse (1, 2, 0)
// (view axis k is volume axis perm[k], torch's x.permute(0, 1, 2 + p0, 2 + p1, 2 + p2)).
//
//   extract_block(vol, View::sagittal, origin, block, pad, flip_x)   block in the view frame, zero (pad) outside
//   block_grid(n, B, s)                                              0, s, 2s, ... <= n - B, then n - B if missing
//   stage_predict(net, vol, block, stride)                           mean over views of the per-view mean of
//                                                                    softmax(net(block))[:, 1] over covering blocks
//   roi_from_mask(mask, dims, margin, min_extent)                    bbox(largest 26-CC) + margin, clipped, grown
//
// Accumulation is in double on the host, so stage_predict does not depend on the batch of blocks per call, the
// backend or the thread count beyond the network's own rounding.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../../backend/common/interpolate.hpp"
#include "../../core/error.hpp"
#include "../../core/expanding_array.hpp"
#include "../../core/tensor.hpp"
#include "../../ops/connected_components.hpp"

namespace mmnet::models::cscn {

enum class View { axial = 0, coronal = 1, sagittal = 2 };
inline constexpr std::array<View, 3> all_views{View::axial, View::coronal, View::sagittal};

inline const char* view_name(View v) {
  return v == View::axial ? "axial" : v == View::coronal ? "coronal" : "sagittal";
}
// View axis k is volume axis permutation(v)[k].
inline std::array<int, 3> permutation(View v) {
  switch (v) {
    case View::coronal: return {1, 0, 2};
    case View::sagittal: return {2, 0, 1};
    default: return {0, 1, 2};
  }
}
// Volume axis k is view axis inverse_permutation(v)[k].
inline std::array<int, 3> inverse_permutation(View v) {
  switch (v) {
    case View::coronal: return {1, 0, 2};
    case View::sagittal: return {1, 2, 0};
    default: return {0, 1, 2};
  }
}
// The view axis on which volume axis X (the horizontal flip of §4.2) lands: W for axial and coronal, D for sagittal.
inline int x_axis_in_view(View v) { return inverse_permutation(v)[2]; }

// A half-open box [lo, hi) in (Z, Y, X).
struct Box3 {
  std::array<index_t, 3> lo{0, 0, 0}, hi{0, 0, 0};
  index_t extent(int a) const { return hi[static_cast<std::size_t>(a)] - lo[static_cast<std::size_t>(a)]; }
  bool operator==(const Box3& o) const { return lo == o.lo && hi == o.hi; }
  bool operator!=(const Box3& o) const { return !(*this == o); }
  std::string str() const {
    std::string s = "[";
    for (int a = 0; a < 3; ++a)
      s += (a ? ", " : "") + std::to_string(lo[static_cast<std::size_t>(a)]) + ":" + std::to_string(hi[static_cast<std::size_t>(a)]);
    return s + "]";
  }
};

// (Z, Y, X) extent of a 1 x C x Z x Y x X volume.
template <class T, class Backend>
ops::Dims3 volume_dims(const char* who, const Tensor<T, Backend>& vol) {
  check_rank(who, "volume (1 x C x Z x Y x X)", vol, 5);
  if (vol.size(0) != 1) fail<shape_error>(who, "volume batch size", 1, vol.size(0), "volume shape " + vol.shape().str());
  if (vol.numel() == 0) fail<shape_error>(who, "volume", "a non-empty tensor", "shape " + vol.shape().str());
  return ops::Dims3{vol.size(2), vol.size(3), vol.size(4)};
}

// Throws value_error unless every block side is a positive multiple of 4 (both networks pool twice).
inline void check_block(const char* who, const ExpandingArray3& block) {
  for (int a = 0; a < 3; ++a)
    if (block[a] < 4 || block[a] % 4 != 0)
      fail<value_error>(who, std::string("block size ") + "DHW"[a], "a positive multiple of 4 (two 2x poolings)",
                        block[a], "block " + block.str());
}

// Minimum ROI extent on volume axis a: the largest block side that lands on a in any view ((24, 24, 24) for
// (8, 24, 24); (8, 12, 12) for (4, 8, 12)).
inline std::array<index_t, 3> min_extent(const ExpandingArray3& block) {
  std::array<index_t, 3> m{0, 0, 0};
  for (View v : all_views) {
    const auto p = permutation(v);
    for (int k = 0; k < 3; ++k) m[static_cast<std::size_t>(p[k])] = std::max(m[static_cast<std::size_t>(p[k])], block[k]);
  }
  return m;
}

// Block of size `size` (view frame D, H, W) of a 1 x C x Z x Y x X volume seen in view v, starting at `origin`
// (view frame, may be negative or run past the end: those voxels are `pad`). flip_x reverses the cut block along
// the volume's X axis (in the view frame: W for axial/coronal, D for sagittal). Returns 1 x C x D x H x W.
template <class T, class Backend>
Tensor<T, Backend> extract_block(const Tensor<T, Backend>& vol, View v, const std::array<index_t, 3>& origin,
                                 const ExpandingArray3& size, T pad = T(0), bool flip_x = false) {
  const char* who = "mmnet::models::cscn::extract_block";
  const ops::Dims3 dims = volume_dims(who, vol);
  for (int a = 0; a < 3; ++a)
    if (size[a] < 1) fail<value_error>(who, std::string("block size ") + "DHW"[a], ">= 1", size[a]);
  const auto p = permutation(v);
  backend::AxisMap3d m;
  m.planes = vol.size(1);
  m.in[0] = dims.d, m.in[1] = dims.h, m.in[2] = dims.w;
  const int fx = flip_x ? x_axis_in_view(v) : -1;
  for (int k = 0; k < 3; ++k) {
    m.out[k] = size[k];
    m.src_axis[k] = p[static_cast<std::size_t>(k)];
    m.step[k] = k == fx ? -1 : 1;
    m.offset[k] = origin[static_cast<std::size_t>(k)] + (k == fx ? size[k] - 1 : 0);
  }
  Tensor<T, Backend> out(Shape{1, vol.size(1), size[0], size[1], size[2]});
  backend::axis_map_forward(Backend{}, m, vol.data(), out.data(), pad);
  return out;
}

// The box of a 1 x C x Z x Y x X volume (axial frame), zero (pad) where it leaves the volume.
template <class T, class Backend>
Tensor<T, Backend> crop_box(const Tensor<T, Backend>& vol, const Box3& box, T pad = T(0)) {
  for (int a = 0; a < 3; ++a)
    if (box.extent(a) < 1)
      fail<value_error>("mmnet::models::cscn::crop_box", std::string("box extent ") + "ZYX"[a], ">= 1", box.extent(a),
                        "box " + box.str());
  return extract_block(vol, View::axial, box.lo, ExpandingArray3{box.extent(0), box.extent(1), box.extent(2)}, pad);
}

// O(n, B, s): 0, s, 2s, ... <= n - B, then n - B if it is not already the last (n >= B >= 1, s >= 1).
inline std::vector<index_t> block_grid(index_t n, index_t B, index_t s) {
  const char* who = "mmnet::models::cscn::block_grid";
  if (B < 1) fail<value_error>(who, "block size B", ">= 1", B);
  if (s < 1) fail<value_error>(who, "stride s", ">= 1", s);
  if (n < B) fail<value_error>(who, "extent n", ">= the block size " + std::to_string(B), n);
  std::vector<index_t> o;
  for (index_t x = 0; x <= n - B; x += s) o.push_back(x);
  if (o.back() != n - B) o.push_back(n - B);
  return o;
}

// Spec §4.4 stage_predict. net(blocks, view) maps a b x C x D x H x W batch of blocks (view frame) to logits
// b x K x D x H x W (K >= 2; call it in eval mode). vol: 1 x C x Z x Y x X. An axis shorter than min_extent(block)
// is zero-padded at the high end to that extent and the output cropped back. Returns the tumour probability
// (class 1) 1 x 1 x Z x Y x X: per view the sum of softmax[:, 1] over the blocks covering a voxel divided by
// their count, then the mean of the three views.
template <class T, class Backend, class Net>
Tensor<T, Backend> stage_predict(Net&& net, const Tensor<T, Backend>& vol, const ExpandingArray3& block,
                                 const ExpandingArray3& stride, index_t batch = 8) {
  const char* who = "mmnet::models::cscn::stage_predict";
  const ops::Dims3 dims = volume_dims(who, vol);
  check_block(who, block);
  for (int a = 0; a < 3; ++a)
    if (stride[a] < 1 || stride[a] > block[a])
      fail<value_error>(who, std::string("stride ") + "DHW"[a], "1 to the block size " + std::to_string(block[a]),
                        stride[a], "block " + block.str() + ", stride " + stride.str());
  if (batch < 1) fail<value_error>(who, "batch", ">= 1", batch);
  const std::array<index_t, 3> n{dims.d, dims.h, dims.w}, m = min_extent(block);
  std::array<index_t, 3> padded;
  for (std::size_t a = 0; a < 3; ++a) padded[a] = std::max(n[a], m[a]);
  const index_t total = dims.numel(), bvox = block[0] * block[1] * block[2], C = vol.size(1);
  std::vector<double> prob(static_cast<std::size_t>(total), 0.0);
  std::vector<double> acc(static_cast<std::size_t>(total)), cnt(static_cast<std::size_t>(total));
  for (View v : all_views) {
    std::fill(acc.begin(), acc.end(), 0.0);
    std::fill(cnt.begin(), cnt.end(), 0.0);
    const auto p = permutation(v);
    std::array<std::vector<index_t>, 3> grid;
    for (int k = 0; k < 3; ++k) grid[static_cast<std::size_t>(k)] = block_grid(padded[static_cast<std::size_t>(p[k])], block[k], stride[k]);
    std::vector<std::array<index_t, 3>> origins;
    for (index_t a : grid[0])
      for (index_t b : grid[1])
        for (index_t c : grid[2]) origins.push_back({a, b, c});
    for (std::size_t first = 0; first < origins.size(); first += static_cast<std::size_t>(batch)) {
      const std::size_t nb = std::min(origins.size() - first, static_cast<std::size_t>(batch));
      Tensor<T, Backend> blocks(Shape{static_cast<index_t>(nb), C, block[0], block[1], block[2]});
      for (std::size_t j = 0; j < nb; ++j) {
        const Tensor<T, Backend> one = extract_block(vol, v, origins[first + j], block);
        backend_traits<Backend>::copy(one.data(), one.numel(), blocks.data() + static_cast<index_t>(j) * C * bvox);
      }
      const Tensor<T, Backend> logits = net(blocks, v);
      if (logits.rank() != 5 || logits.size(0) != static_cast<index_t>(nb) || logits.size(1) < 2 ||
          logits.size(2) != block[0] || logits.size(3) != block[1] || logits.size(4) != block[2])
        fail<shape_error>(who, "network output shape", "(" + std::to_string(nb) + ", K >= 2, " + std::to_string(block[0]) +
                          ", " + std::to_string(block[1]) + ", " + std::to_string(block[2]) + ")", logits.shape().str());
      const index_t K = logits.size(1);
      const auto z = logits.to_vector();
      for (std::size_t j = 0; j < nb; ++j) {
        const auto& o = origins[first + j];
        for (index_t d = 0; d < block[0]; ++d)
          for (index_t h = 0; h < block[1]; ++h)
            for (index_t w = 0; w < block[2]; ++w) {
              const index_t vv[3] = {o[0] + d, o[1] + h, o[2] + w};
              index_t q[3];
              for (int k = 0; k < 3; ++k) q[p[static_cast<std::size_t>(k)]] = vv[k];
              if (q[0] >= n[0] || q[1] >= n[1] || q[2] >= n[2]) continue;  // high-end padding
              const index_t s = (d * block[1] + h) * block[2] + w;
              const std::size_t base = static_cast<std::size_t>(static_cast<index_t>(j) * K * bvox + s);
              double mx = static_cast<double>(z[base]);
              for (index_t c = 1; c < K; ++c) mx = std::max(mx, static_cast<double>(z[base + static_cast<std::size_t>(c * bvox)]));
              double sum = 0;
              for (index_t c = 0; c < K; ++c) sum += std::exp(static_cast<double>(z[base + static_cast<std::size_t>(c * bvox)]) - mx);
              const double p1 = std::exp(static_cast<double>(z[base + static_cast<std::size_t>(bvox)]) - mx) / sum;
              const std::size_t vi = static_cast<std::size_t>((q[0] * n[1] + q[1]) * n[2] + q[2]);
              acc[vi] += p1;
              cnt[vi] += 1.0;
            }
      }
    }
    for (std::size_t i = 0; i < prob.size(); ++i) prob[i] += acc[i] / cnt[i];
  }
  for (auto& e : prob) e /= 3.0;
  return Tensor<T, Backend>::from_vector(Shape{1, 1, n[0], n[1], n[2]}, prob);
}

// Grows axis extents below min_extent (spec §4.4): lo <- lo - floor((m - (hi - lo)) / 2), hi <- lo + m, then
// shifted inside [0, n) ([0, m) if lo < 0, [n - m, n) if hi > n). An axis with n < m becomes [0, n): the caller
// pads the crop (stage_predict does).
inline Box3 grow_box(Box3 b, const ops::Dims3& dims, const std::array<index_t, 3>& m) {
  const index_t n[3] = {dims.d, dims.h, dims.w};
  for (std::size_t a = 0; a < 3; ++a) {
    if (n[a] < m[a]) {
      b.lo[a] = 0, b.hi[a] = n[a];
      continue;
    }
    const index_t ext = b.hi[a] - b.lo[a];
    if (ext >= m[a]) continue;
    b.lo[a] -= (m[a] - ext) / 2;
    b.hi[a] = b.lo[a] + m[a];
    if (b.lo[a] < 0) b.lo[a] = 0, b.hi[a] = m[a];
    else if (b.hi[a] > n[a]) b.lo[a] = n[a] - m[a], b.hi[a] = n[a];
  }
  return b;
}

// Bounding box of the nonzero voxels of a host mask (empty -> lo = hi = 0 everywhere, check with `found`).
inline Box3 bounding_box(const std::uint8_t* mask, const ops::Dims3& dims, bool& found) {
  Box3 b;
  b.lo = {dims.d, dims.h, dims.w};
  b.hi = {0, 0, 0};
  found = false;
  for (index_t z = 0; z < dims.d; ++z)
    for (index_t y = 0; y < dims.h; ++y)
      for (index_t x = 0; x < dims.w; ++x)
        if (mask[(z * dims.h + y) * dims.w + x]) {
          found = true;
          const index_t q[3] = {z, y, x};
          for (std::size_t a = 0; a < 3; ++a) b.lo[a] = std::min(b.lo[a], q[a]), b.hi[a] = std::max(b.hi[a], q[a] + 1);
        }
  if (!found) b = Box3{};
  return b;
}

// bbox dilated by margin on every side, clipped to the volume.
inline Box3 dilate_clip(Box3 b, const ops::Dims3& dims, index_t margin) {
  const index_t n[3] = {dims.d, dims.h, dims.w};
  for (std::size_t a = 0; a < 3; ++a) b.lo[a] = std::max<index_t>(0, b.lo[a] - margin), b.hi[a] = std::min(n[a], b.hi[a] + margin);
  return b;
}

inline Box3 whole_volume(const ops::Dims3& dims) {
  Box3 b;
  b.hi = {dims.d, dims.h, dims.w};
  return b;
}

// Spec §4.4 ROI: the largest connected component (connectivity 26 by default; ties -> the component met first in
// a Z, Y, X raster scan) of the nonzero voxels of mask, its bbox dilated by margin and clipped, then grown to
// min_extent; the whole volume when the mask is empty.
inline Box3 roi_from_mask(const std::uint8_t* mask, const ops::Dims3& dims, index_t margin,
                          const std::array<index_t, 3>& min_ext, int connectivity = 26) {
  if (margin < 0) fail<value_error>("mmnet::models::cscn::roi_from_mask", "margin", ">= 0", margin);
  const auto keep = ops::largest_connected_component(mask, dims, connectivity);
  bool found = false;
  const Box3 b = bounding_box(keep.data(), dims, found);
  if (!found) return whole_volume(dims);
  return grow_box(dilate_clip(b, dims, margin), dims, min_ext);
}

// The same on a probability map 1 x 1 x Z x Y x X (mask = P > threshold, 0.5 by default).
template <class T, class Backend>
Box3 roi_from_probability(const Tensor<T, Backend>& prob, index_t margin, const std::array<index_t, 3>& min_ext,
                          int connectivity = 26, double threshold = 0.5) {
  const ops::Dims3 dims = volume_dims("mmnet::models::cscn::roi_from_probability", prob);
  const auto v = prob.to_vector();
  std::vector<std::uint8_t> mask(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) mask[i] = static_cast<double>(v[i]) > threshold ? 1 : 0;
  return roi_from_mask(mask.data(), dims, margin, min_ext, connectivity);
}

}  // namespace mmnet::models::cscn
