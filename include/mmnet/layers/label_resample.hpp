// mmnet/layers/label_resample.hpp: nearest down-sampling of label volumes by integer per-axis factors, for
// deep-supervision targets (no gradient). Labels are integers stored as float or double, N x C x D x H x W
// (usually C = 1); values are copied, never interpolated.
//
// * downsample_labels_strided(y, f):  y[:, :, ::fd, ::fh, ::fw]           (HMRNet: label[::s], from index 0)
// * downsample_labels_centered(y, f): out[o] = y[f * o + f / 2] per axis  (MAML / nnU-Net order-0 resize,
//   pixel-centre aligned: f = 2 reads 2o + 1, f = 4 reads 4o + 2; apply to the full-resolution label, not
//   repeatedly)
// Output extents: every o whose source index lies inside the input, i.e. ceil(n / f) for the strided form
// and ceil((n - f / 2) / f) for the centred one (both n / f when f divides n). A factor of 1 copies the axis.
#pragma once
#include <string>

#include "../backend/common/interpolate.hpp"
#include "../core/expanding_array.hpp"
#include "../core/tensor.hpp"

namespace mmnet::nn {

namespace detail {
// out[o] = y[f * o + offset[a]] per axis, for every o with f * o + offset[a] < n.
template <class T, class Backend>
Tensor<T, Backend> pick_labels(const char* name, const Tensor<T, Backend>& labels, const ExpandingArray3& factor,
                               bool centred) {
  check_rank(name, "labels", labels, 5);
  backend::AxisMap3d m;
  m.planes = labels.size(0) * labels.size(1);
  for (int a = 0; a < 3; ++a) {
    const index_t f = factor[a], n = labels.size(2 + a);
    if (f < 1) fail<value_error>(name, "factor", "every entry >= 1", factor.str());
    const index_t offset = centred ? f / 2 : 0;
    m.in[a] = n;
    m.step[a] = f;
    m.offset[a] = offset;
    m.out[a] = n > offset ? (n - offset + f - 1) / f : 0;
    if (m.out[a] < 1)
      fail<shape_error>(name, "label extent along axis " + std::to_string(a) + " (D, H, W)",
                        "more than " + std::to_string(offset) + " to read index f / 2 = " + std::to_string(offset),
                        n, "labels shape " + labels.shape().str() + ", factor " + factor.str());
  }
  Tensor<T, Backend> out(Shape{labels.size(0), labels.size(1), m.out[0], m.out[1], m.out[2]});
  backend::axis_map_forward(Backend{}, m, labels.data(), out.data(), T(0));
  return out;
}
}  // namespace detail

// labels[:, :, ::f_d, ::f_h, ::f_w] (strided picking from index 0).
template <class T, class Backend>
Tensor<T, Backend> downsample_labels_strided(const Tensor<T, Backend>& labels, const ExpandingArray3& factor) {
  return detail::pick_labels("mmnet::nn::downsample_labels_strided", labels, factor, false);
}

// out[o] = labels[f * o + f / 2] per axis (centre-aligned nearest picking).
template <class T, class Backend>
Tensor<T, Backend> downsample_labels_centered(const Tensor<T, Backend>& labels, const ExpandingArray3& factor) {
  return detail::pick_labels("mmnet::nn::downsample_labels_centered", labels, factor, true);
}

}  // namespace mmnet::nn
