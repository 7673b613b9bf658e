// mmnet/data/crop.hpp: body bounding boxes, cropping a Volume/LabelMap to a Box and pasting a cropped result
// back into the full grid.
//
// Python equivalents: bounding_box = the [min, max + 1) extent of numpy.nonzero(mask) per axis (nnU-Net's
// get_bbox_from_mask); crop = v[:, z0:z1, y0:y1, x0:x1]; uncrop = np.zeros(full); full[box] = cropped (nnU-Net
// puts the cropped prediction back into the original image with background elsewhere). MMFNet (spec §4) takes
// the box from the T1 Otsu mask: body_box(v, channel 0). nnU-Net crops MRI (BraTS) to the box of the non-zero
// mask of all channels: nonzero_box(v) (= get_bbox_from_mask(create_nonzero_mask(data)) of nnU-Net's
// crop_to_nonzero).
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "normalize.hpp"
#include "volume.hpp"

namespace mmnet::data {

using Margin = std::array<index_t, 3>;  // voxels along (D, H, W)

// The smallest box holding every nonzero voxel of a d x h x w mask; an empty Box ({0,0,0}, {0,0,0}) when the
// mask is all zero.
inline Box bounding_box(const std::uint8_t* mask, index_t d, index_t h, index_t w) {
  Box b{{d, h, w}, {0, 0, 0}};
  bool any = false;
  for (index_t z = 0; z < d; ++z)
    for (index_t y = 0; y < h; ++y)
      for (index_t x = 0; x < w; ++x)
        if (mask[(z * h + y) * w + x]) {
          any = true;
          b.begin = {std::min(b.begin[0], z), std::min(b.begin[1], y), std::min(b.begin[2], x)};
          b.end = {std::max(b.end[0], z + 1), std::max(b.end[1], y + 1), std::max(b.end[2], x + 1)};
        }
  return any ? b : Box{};
}
inline Box bounding_box(const LabelMap& m) { return bounding_box(m.data.data(), m.depth, m.height, m.width); }

// b grown by margin on each side, clamped to a d x h x w grid.
inline Box expand(const Box& b, const Margin& margin, index_t d, index_t h, index_t w) {
  for (int a = 0; a < 3; ++a)
    if (margin[static_cast<std::size_t>(a)] < 0)
      fail<value_error>("mmnet::data::expand", "margin along axis " + std::to_string(a), ">= 0",
                        margin[static_cast<std::size_t>(a)]);
  const std::array<index_t, 3> size{d, h, w};
  Box e = b;
  for (std::size_t a = 0; a < 3; ++a) {
    e.begin[a] = std::max<index_t>(0, b.begin[a] - margin[a]);
    e.end[a] = std::min(size[a], b.end[a] + margin[a]);
  }
  return e;
}

// The bounding box of channel `channel`'s Otsu body mask (x > threshold), grown by margin and clamped. A
// constant channel (empty mask) gives the whole volume, so nothing is cut away.
inline Box body_box(const Volume& v, index_t channel = 0, const Margin& margin = {0, 0, 0}, int nbins = 256) {
  const auto mask = otsu_mask(v, channel, nbins);
  const Box b = bounding_box(mask.data(), v.depth, v.height, v.width);
  if (b.empty()) return Box::full(v.depth, v.height, v.width);
  return expand(b, margin, v.depth, v.height, v.width);
}

// The bounding box of nonzero_mask(v) (voxels where any channel is non-zero; filling holes does not change
// the box), grown by margin and clamped. An all-zero volume gives the whole volume (nnU-Net would fail).
inline Box nonzero_box(const Volume& v, const Margin& margin = {0, 0, 0}) {
  const auto mask = nonzero_mask(v);
  const Box b = bounding_box(mask.data(), v.depth, v.height, v.width);
  if (b.empty()) return Box::full(v.depth, v.height, v.width);
  return expand(b, margin, v.depth, v.height, v.width);
}

namespace detail {
inline void check_box(const char* component, const Box& b, index_t d, index_t h, index_t w) {
  if (b.empty() || !b.inside(d, h, w))
    fail<shape_error>(component, "box", "a non-empty box inside [0:" + std::to_string(d) + ", 0:" + std::to_string(h) +
                                            ", 0:" + std::to_string(w) + "]",
                      b.str());
}
}  // namespace detail

// v[:, box]. The box must be non-empty and inside the volume.
inline Volume crop(const Volume& v, const Box& b) {
  detail::check_box("mmnet::data::crop", b, v.depth, v.height, v.width);
  Volume out(v.channels, b.extent(0), b.extent(1), b.extent(2), v.spacing);
  for (index_t c = 0; c < v.channels; ++c)
    for (index_t z = 0; z < out.depth; ++z)
      for (index_t y = 0; y < out.height; ++y)
        std::copy_n(v.data.data() + v.offset(c, z + b.begin[0], y + b.begin[1], b.begin[2]), out.width, &out.at(c, z, y, 0));
  return out;
}
inline LabelMap crop(const LabelMap& m, const Box& b) {
  detail::check_box("mmnet::data::crop", b, m.depth, m.height, m.width);
  LabelMap out(b.extent(0), b.extent(1), b.extent(2), m.spacing);
  for (index_t z = 0; z < out.depth; ++z)
    for (index_t y = 0; y < out.height; ++y)
      std::copy_n(m.data.data() + m.offset(z + b.begin[0], y + b.begin[1], b.begin[2]), out.width, &out.at(z, y, 0));
  return out;
}

// A d x h x w map holding `cropped` at `box` and `background` elsewhere: the inverse of crop() for
// predictions. cropped's extents must equal the box's.
inline LabelMap uncrop(const LabelMap& cropped, const Box& b, index_t d, index_t h, index_t w,
                       std::uint8_t background = 0) {
  const char* component = "mmnet::data::uncrop";
  detail::check_box(component, b, d, h, w);
  if (cropped.shape() != Shape{b.extent(0), b.extent(1), b.extent(2)})
    fail<shape_error>(component, "cropped map shape", Shape{b.extent(0), b.extent(1), b.extent(2)}.str(),
                      cropped.shape().str(), "box " + b.str());
  LabelMap out(d, h, w, cropped.spacing);
  std::fill(out.data.begin(), out.data.end(), background);
  for (index_t z = 0; z < cropped.depth; ++z)
    for (index_t y = 0; y < cropped.height; ++y)
      std::copy_n(cropped.data.data() + cropped.offset(z, y, 0), cropped.width, &out.at(z + b.begin[0], y + b.begin[1], b.begin[2]));
  return out;
}
// The same for a Volume (e.g. per-class probabilities), `fill` outside the box.
inline Volume uncrop(const Volume& cropped, const Box& b, index_t d, index_t h, index_t w, float fill = 0.0f) {
  const char* component = "mmnet::data::uncrop";
  detail::check_box(component, b, d, h, w);
  if (cropped.depth != b.extent(0) || cropped.height != b.extent(1) || cropped.width != b.extent(2))
    fail<shape_error>(component, "cropped volume extents (D, H, W)",
                      Shape{b.extent(0), b.extent(1), b.extent(2)}.str(),
                      Shape{cropped.depth, cropped.height, cropped.width}.str(), "box " + b.str());
  Volume out(cropped.channels, d, h, w, cropped.spacing);
  std::fill(out.data.begin(), out.data.end(), fill);
  for (index_t c = 0; c < cropped.channels; ++c)
    for (index_t z = 0; z < cropped.depth; ++z)
      for (index_t y = 0; y < cropped.height; ++y)
        std::copy_n(cropped.data.data() + cropped.offset(c, z, y, 0), cropped.width, &out.at(c, z + b.begin[0], y + b.begin[1], b.begin[2]));
  return out;
}

}  // namespace mmnet::data
