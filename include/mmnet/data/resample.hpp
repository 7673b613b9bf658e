// mmnet/data/resample.hpp: resampling of a Volume (trilinear) or a LabelMap (nearest) to a target voxel spacing or
// to a given grid -- the "resample to 1 mm isotropic" step of CSCN's preprocessing (spec cascaded-fcn §4.1) and
// its inverse for predictions. Trilinear = scipy.ndimage.zoom(order=1, grid_mode=False) = torch
// F.interpolate(mode='trilinear', align_corners=True); reference: tests/reference/resample_ref.py.
//
//   auto iso = data::resample(image, {1.0, 1.0, 1.0});                 // C x D' x H' x W', spacing (1, 1, 1)
//   auto lab = data::resample(label, {1.0, 1.0, 1.0});                 // nearest neighbour, same grid as iso
//   auto back = data::resample_to_shape(pred, {d, h, w}, original);    // a 1 mm mask back onto the case's grid
//
// Semantics (one rule for both directions, so that resampling back lands on the original voxel centres):
// * Output extent per axis: n' = floor(n s / t + 0.5), at least 1 (scipy's zoom rounds n * zoom the same way,
//   except at exact halves, which Python's round sends to even).
// * Coordinates: "align corners": output voxel o sits at input coordinate o (n - 1) / (n' - 1) (0 when n' = 1),
//   so the first and last voxel centres of both grids coincide. Trilinear weights are computed in double; the
//   image is float32 as Volume holds it.
// * Nearest (labels): input index floor(x + 0.5) of that coordinate (round half up), clamped to [0, n - 1].
// * The new spacing is recorded as the target (nominal) spacing; with align corners the exact spacing is
//   s (n - 1) / (n' - 1), which differs from the target by less than half a voxel over the field of view.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "volume.hpp"

namespace mmnet::data {

using Extent3 = std::array<index_t, 3>;

// True when every axis of a and b agrees within a relative 1e-5 (NIfTI pixdims are float32).
inline bool same_spacing(const Spacing& a, const Spacing& b) {
  for (std::size_t i = 0; i < 3; ++i)
    if (std::abs(a[i] - b[i]) > 1e-5 * std::abs(b[i]) + 1e-8) return false;
  return true;
}

// The extent of a grid of `n` voxels of `from` mm resampled to `to` mm: floor(n from / to + 0.5), at least 1.
inline Extent3 resampled_extent(const Extent3& n, const Spacing& from, const Spacing& to) {
  const char* who = "mmnet::data::resampled_extent";
  Extent3 out{};
  for (std::size_t a = 0; a < 3; ++a) {
    if (n[a] < 1) fail<shape_error>(who, std::string("extent along ") + "DHW"[a], ">= 1", n[a]);
    if (!(from[a] > 0) || !std::isfinite(from[a]))
      fail<value_error>(who, std::string("source spacing along ") + "DHW"[a], "a finite value > 0", from[a]);
    if (!(to[a] > 0) || !std::isfinite(to[a]))
      fail<value_error>(who, std::string("target spacing along ") + "DHW"[a], "a finite value > 0", to[a]);
    out[a] = std::max<index_t>(1, static_cast<index_t>(std::floor(static_cast<double>(n[a]) * from[a] / to[a] + 0.5)));
  }
  return out;
}

namespace resample_detail {

// Per output index along one axis: the lower input index, the upper one and the weight of the upper.
struct Taps {
  std::vector<index_t> lo, hi;
  std::vector<double> w;
};

inline double coordinate(index_t o, index_t n_in, index_t n_out) {
  return n_out > 1 ? static_cast<double>(o) * static_cast<double>(n_in - 1) / static_cast<double>(n_out - 1) : 0.0;
}

inline Taps linear_taps(index_t n_in, index_t n_out) {
  Taps t;
  t.lo.resize(static_cast<std::size_t>(n_out));
  t.hi.resize(static_cast<std::size_t>(n_out));
  t.w.resize(static_cast<std::size_t>(n_out));
  for (index_t o = 0; o < n_out; ++o) {
    const double c = coordinate(o, n_in, n_out);
    index_t i0 = static_cast<index_t>(std::floor(c));
    if (i0 > n_in - 1) i0 = n_in - 1;
    if (i0 < 0) i0 = 0;
    const index_t i1 = i0 + 1 < n_in ? i0 + 1 : i0;
    t.lo[static_cast<std::size_t>(o)] = i0;
    t.hi[static_cast<std::size_t>(o)] = i1;
    t.w[static_cast<std::size_t>(o)] = i1 == i0 ? 0.0 : c - static_cast<double>(i0);
  }
  return t;
}

inline std::vector<index_t> nearest_taps(index_t n_in, index_t n_out) {
  std::vector<index_t> idx(static_cast<std::size_t>(n_out));
  for (index_t o = 0; o < n_out; ++o) {
    index_t i = static_cast<index_t>(std::floor(coordinate(o, n_in, n_out) + 0.5));
    idx[static_cast<std::size_t>(o)] = i < 0 ? 0 : i > n_in - 1 ? n_in - 1 : i;
  }
  return idx;
}

inline void check_target(const char* who, const Extent3& in, const Extent3& out) {
  for (std::size_t a = 0; a < 3; ++a) {
    if (in[a] < 1) fail<shape_error>(who, std::string("input extent along ") + "DHW"[a], ">= 1", in[a]);
    if (out[a] < 1) fail<shape_error>(who, std::string("output extent along ") + "DHW"[a], ">= 1", out[a]);
  }
}

}  // namespace resample_detail

// Trilinear resampling of every channel of v onto a d' x h' x w' grid (align corners); the result gets `spacing`.
inline Volume resample_to_shape(const Volume& v, const Extent3& shape, const Spacing& spacing) {
  using namespace resample_detail;
  check_target("mmnet::data::resample_to_shape(Volume)", {v.depth, v.height, v.width}, shape);
  const Taps tz = linear_taps(v.depth, shape[0]), ty = linear_taps(v.height, shape[1]), tx = linear_taps(v.width, shape[2]);
  Volume out(v.channels, shape[0], shape[1], shape[2], spacing);
  const index_t D = shape[0], H = shape[1], W = shape[2];
#pragma omp parallel for collapse(2) schedule(static)
  for (index_t c = 0; c < v.channels; ++c)
    for (index_t z = 0; z < D; ++z) {
      const std::size_t zs = static_cast<std::size_t>(z);
      const double wz = tz.w[zs];
      for (index_t y = 0; y < H; ++y) {
        const std::size_t ys = static_cast<std::size_t>(y);
        const double wy = ty.w[ys];
        const float* p00 = &v.data[v.offset(c, tz.lo[zs], ty.lo[ys], 0)];
        const float* p01 = &v.data[v.offset(c, tz.lo[zs], ty.hi[ys], 0)];
        const float* p10 = &v.data[v.offset(c, tz.hi[zs], ty.lo[ys], 0)];
        const float* p11 = &v.data[v.offset(c, tz.hi[zs], ty.hi[ys], 0)];
        float* o = &out.data[out.offset(c, z, y, 0)];
        for (index_t x = 0; x < W; ++x) {
          const std::size_t xs = static_cast<std::size_t>(x);
          const index_t x0 = tx.lo[xs], x1 = tx.hi[xs];
          const double wx = tx.w[xs];
          auto lerp_x = [&](const float* p) { return (1.0 - wx) * p[x0] + wx * p[x1]; };
          const double a = (1.0 - wy) * lerp_x(p00) + wy * lerp_x(p01);
          const double b = (1.0 - wy) * lerp_x(p10) + wy * lerp_x(p11);
          o[x] = static_cast<float>((1.0 - wz) * a + wz * b);
        }
      }
    }
  return out;
}

// Nearest-neighbour resampling of a label map onto a d' x h' x w' grid (align corners, round half up).
inline LabelMap resample_to_shape(const LabelMap& m, const Extent3& shape, const Spacing& spacing) {
  using namespace resample_detail;
  check_target("mmnet::data::resample_to_shape(LabelMap)", {m.depth, m.height, m.width}, shape);
  const auto iz = nearest_taps(m.depth, shape[0]), iy = nearest_taps(m.height, shape[1]), ix = nearest_taps(m.width, shape[2]);
  LabelMap out(shape[0], shape[1], shape[2], spacing);
  for (index_t z = 0; z < shape[0]; ++z)
    for (index_t y = 0; y < shape[1]; ++y) {
      const std::uint8_t* row = &m.data[m.offset(iz[static_cast<std::size_t>(z)], iy[static_cast<std::size_t>(y)], 0)];
      std::uint8_t* o = &out.data[out.offset(z, y, 0)];
      for (index_t x = 0; x < shape[2]; ++x) o[x] = row[ix[static_cast<std::size_t>(x)]];
    }
  return out;
}

// v resampled to `spacing` mm (trilinear); a copy when v already has it.
inline Volume resample(const Volume& v, const Spacing& spacing) {
  const Extent3 e = resampled_extent({v.depth, v.height, v.width}, v.spacing, spacing);  // validates first
  if (same_spacing(v.spacing, spacing)) return v;
  return resample_to_shape(v, e, spacing);
}

// m resampled to `spacing` mm (nearest); a copy when m already has it.
inline LabelMap resample(const LabelMap& m, const Spacing& spacing) {
  const Extent3 e = resampled_extent({m.depth, m.height, m.width}, m.spacing, spacing);  // validates first
  if (same_spacing(m.spacing, spacing)) return m;
  return resample_to_shape(m, e, spacing);
}

}  // namespace mmnet::data
