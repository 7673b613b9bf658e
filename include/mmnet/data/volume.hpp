// mmnet/data/volume.hpp: host-side images and label maps as the data pipeline passes them around.
//
// A Volume is C x D x H x W float32 in C order (W fastest) with the voxel spacing in mm along (D, H, W); for a
// NIfTI file that is (z, y, x) = (pixdim[3], pixdim[2], pixdim[1]). A LabelMap is D x H x W integer labels
// with the same geometry. Both are plain values: copying copies the voxels. The network side converts a Volume
// into a Tensor<T, Backend> with to_tensor() (and back with from_tensor()).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/shape.hpp"

namespace mmnet::data {

using Spacing = std::array<double, 3>;  // mm along (D, H, W)

// An axis-aligned box [begin, end) along (D, H, W), e.g. the body crop of a case.
struct Box {
  std::array<index_t, 3> begin{0, 0, 0}, end{0, 0, 0};
  index_t extent(int axis) const { return end[static_cast<std::size_t>(axis)] - begin[static_cast<std::size_t>(axis)]; }
  bool empty() const { return extent(0) <= 0 || extent(1) <= 0 || extent(2) <= 0; }
};

struct Volume {
  index_t channels = 0, depth = 0, height = 0, width = 0;
  Spacing spacing{1.0, 1.0, 1.0};
  std::vector<float> data;  // channels * depth * height * width

  Volume() = default;
  Volume(index_t c, index_t d, index_t h, index_t w, Spacing s = {1.0, 1.0, 1.0})
      : channels(c), depth(d), height(h), width(w), spacing(s),
        data(static_cast<std::size_t>(c * d * h * w), 0.0f) {
    if (c < 0 || d < 0 || h < 0 || w < 0)
      fail<shape_error>("mmnet::data::Volume", "extents", "all >= 0",
                        "(" + std::to_string(c) + ", " + std::to_string(d) + ", " + std::to_string(h) + ", " +
                            std::to_string(w) + ")");
  }
  index_t voxels() const { return depth * height * width; }
  Shape shape() const { return Shape{channels, depth, height, width}; }
  float* channel(index_t c) { return data.data() + c * voxels(); }
  const float* channel(index_t c) const { return data.data() + c * voxels(); }
  float& at(index_t c, index_t z, index_t y, index_t x) { return data[static_cast<std::size_t>(((c * depth + z) * height + y) * width + x)]; }
  float at(index_t c, index_t z, index_t y, index_t x) const { return data[static_cast<std::size_t>(((c * depth + z) * height + y) * width + x)]; }
};

struct LabelMap {
  index_t depth = 0, height = 0, width = 0;
  Spacing spacing{1.0, 1.0, 1.0};
  std::vector<std::uint8_t> data;  // depth * height * width labels (0 = background)

  LabelMap() = default;
  LabelMap(index_t d, index_t h, index_t w, Spacing s = {1.0, 1.0, 1.0})
      : depth(d), height(h), width(w), spacing(s), data(static_cast<std::size_t>(d * h * w), 0) {
    if (d < 0 || h < 0 || w < 0)
      fail<shape_error>("mmnet::data::LabelMap", "extents", "all >= 0",
                        "(" + std::to_string(d) + ", " + std::to_string(h) + ", " + std::to_string(w) + ")");
  }
  index_t voxels() const { return depth * height * width; }
  std::uint8_t& at(index_t z, index_t y, index_t x) { return data[static_cast<std::size_t>((z * height + y) * width + x)]; }
  std::uint8_t at(index_t z, index_t y, index_t x) const { return data[static_cast<std::size_t>((z * height + y) * width + x)]; }
};

}  // namespace mmnet::data
