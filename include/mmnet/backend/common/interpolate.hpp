// mmnet/backend/common/interpolate.hpp: resampling kernels for both backends (one body each, run by
// backend::parallel_for). Tensors are viewed as planes (N*C) of D x H x W.
//
// * Trilinear and nearest interpolation (torch.nn.functional.interpolate). The source positions and weights
//   are separable, so they are computed once per axis on the host (PyTorch's CPU formulas, in double) and
//   uploaded as small tables. Backward gathers: one input element per index sums over the outputs whose
//   interpolation reads it (a per-axis output range kept with the tables), so there are no atomics.
// * Integer axis maps (crop/pad, flip, permute, strided picking): output axis k reads input axis src_axis[k]
//   at coordinate step[k] * o + offset[k], or a fill value outside the input. With steps of +-1 each input
//   element is read at most once, and the adjoint is again a gather.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../../core/backends.hpp"
#include "../../core/config.hpp"

namespace mmnet::backend {

// ------------------------------------------------------------------------------------------------------------
// Interpolation: per-axis tables, built on the host.

// One axis of a linear (trilinear) interpolation: output o = l0[o] * x[i0[o]] + l1[o] * x[i1[o]]; the
// outputs that read input i lie in [first[i], last[i]) (empty when first == last).
struct LinearAxisTable {
  std::vector<std::int64_t> i0, i1, first, last;
  std::vector<double> l0, l1;
};

// PyTorch's area_pixel_compute_scale / compute_scales_value: the step in input coordinates per output index.
// A positive scale_factor (given by the user, not recomputed) is used as 1 / scale_factor, as PyTorch does.
inline double interp_linear_scale(index_t in, index_t out, bool align_corners, double scale_factor) {
  if (align_corners) return out > 1 ? static_cast<double>(in - 1) / static_cast<double>(out - 1) : 0.0;
  return scale_factor > 0 ? 1.0 / scale_factor : static_cast<double>(in) / static_cast<double>(out);
}

// PyTorch's compute_source_index_and_lambda (CPU kernels, 1.13): an axis whose size does not change is copied
// whatever the scale factor; otherwise src = scale * o (align_corners) or scale * (o + 0.5) - 0.5 clamped at 0,
// i0 = floor(src), i1 = i0 + 1 except at the last input, l1 = src - i0 clamped to [0, 1].
inline LinearAxisTable linear_axis_table(index_t in, index_t out, bool align_corners, double scale_factor) {
  LinearAxisTable t;
  const auto no = static_cast<std::size_t>(out), ni = static_cast<std::size_t>(in);
  t.i0.resize(no), t.i1.resize(no), t.l0.resize(no), t.l1.resize(no);
  t.first.assign(ni, 0), t.last.assign(ni, 0);
  const double scale = interp_linear_scale(in, out, align_corners, scale_factor);
  for (index_t o = 0; o < out; ++o) {
    index_t i0 = o, i1 = o;
    double l1 = 0;
    if (in != out) {
      double src = align_corners ? scale * static_cast<double>(o) : scale * (static_cast<double>(o) + 0.5) - 0.5;
      if (src < 0) src = 0;
      i0 = std::min(static_cast<index_t>(src), in - 1);  // src >= 0: the cast floors
      i1 = i0 < in - 1 ? i0 + 1 : i0;
      l1 = std::min(std::max(src - static_cast<double>(i0), 0.0), 1.0);
    }
    const auto k = static_cast<std::size_t>(o);
    t.i0[k] = i0, t.i1[k] = i1, t.l1[k] = l1, t.l0[k] = 1.0 - l1;
  }
  // Source indices are non-decreasing in o, so the outputs reading input i form one range.
  auto at = [](index_t i) { return static_cast<std::size_t>(i); };
  for (index_t o = out - 1; o >= 0; --o) t.first[at(t.i0[at(o)])] = t.first[at(t.i1[at(o)])] = o;
  for (index_t o = 0; o < out; ++o) t.last[at(t.i0[at(o)])] = t.last[at(t.i1[at(o)])] = o + 1;
  return t;
}

// One axis of a nearest interpolation: output o copies input src[o]; the outputs copying input i lie in
// [first[i], last[i]).
struct NearestAxisTable {
  std::vector<std::int64_t> src, first, last;
};

// PyTorch's nearest_idx (mode 'nearest', CPU, 1.13): same size copies, double size halves the index, else
// min(floor(o * scale), in - 1) with scale computed and multiplied in float, as PyTorch does.
inline NearestAxisTable nearest_axis_table(index_t in, index_t out, double scale_factor) {
  NearestAxisTable t;
  t.src.resize(static_cast<std::size_t>(out));
  t.first.assign(static_cast<std::size_t>(in), 0), t.last.assign(static_cast<std::size_t>(in), 0);
  const float scale = scale_factor > 0 ? static_cast<float>(1.0 / scale_factor)
                                       : static_cast<float>(in) / static_cast<float>(out);
  for (index_t o = 0; o < out; ++o) {
    index_t s;
    if (out == in) s = o;
    else if (out == 2 * in) s = o >> 1;
    else s = std::min(static_cast<index_t>(std::floor(static_cast<float>(o) * scale)), in - 1);
    t.src[static_cast<std::size_t>(o)] = s;
  }
  auto at = [](index_t i) { return static_cast<std::size_t>(i); };
  for (index_t o = out - 1; o >= 0; --o) t.first[at(t.src[at(o)])] = o;
  for (index_t o = 0; o < out; ++o) t.last[at(t.src[at(o)])] = o + 1;
  return t;
}

// What the interpolation kernels read: extents and, per axis (0 = D, 1 = H, 2 = W), pointers into the
// uploaded tables. For nearest, i0 holds the source index and i1, l0, l1 are unused.
struct Interp3dProblem {
  index_t planes = 0;
  index_t in[3] = {0, 0, 0};
  index_t out[3] = {0, 0, 0};
  const std::int64_t* i0[3] = {nullptr, nullptr, nullptr};
  const std::int64_t* i1[3] = {nullptr, nullptr, nullptr};
  const std::int64_t* first[3] = {nullptr, nullptr, nullptr};
  const std::int64_t* last[3] = {nullptr, nullptr, nullptr};
  const double* l0[3] = {nullptr, nullptr, nullptr};
  const double* l1[3] = {nullptr, nullptr, nullptr};
  MMNET_HOST_DEVICE index_t in_plane() const { return in[0] * in[1] * in[2]; }
  MMNET_HOST_DEVICE index_t out_plane() const { return out[0] * out[1] * out[2]; }
};

// The tables of one interpolation, resident on the backend. problem() points into this plan's storage: take it
// anew from a copied plan.
template <class Backend>
class InterpPlan {
 public:
  using traits = backend_traits<Backend>;

  InterpPlan() = default;
  // linear: trilinear tables; otherwise nearest. scale_factors[a] <= 0 means "derived from the sizes".
  InterpPlan(const index_t in[3], const index_t out[3], bool linear, bool align_corners, const double scale_factors[3])
      : linear_(linear) {
    std::vector<std::int64_t> idx;
    std::vector<double> w;
    for (int a = 0; a < 3; ++a) {
      in_[a] = in[a], out_[a] = out[a];
      if (linear) {
        const LinearAxisTable t = linear_axis_table(in[a], out[a], align_corners, scale_factors[a]);
        idx_off_[a][0] = push(idx, t.i0), idx_off_[a][1] = push(idx, t.i1);
        idx_off_[a][2] = push(idx, t.first), idx_off_[a][3] = push(idx, t.last);
        w_off_[a][0] = push(w, t.l0), w_off_[a][1] = push(w, t.l1);
      } else {
        const NearestAxisTable t = nearest_axis_table(in[a], out[a], scale_factors[a]);
        idx_off_[a][0] = idx_off_[a][1] = push(idx, t.src);
        idx_off_[a][2] = push(idx, t.first), idx_off_[a][3] = push(idx, t.last);
      }
    }
    idx_ = traits::template allocate<std::int64_t>(static_cast<index_t>(idx.size()));
    traits::copy_from_host(idx.data(), static_cast<index_t>(idx.size()), idx_);
    w_ = traits::template allocate<double>(static_cast<index_t>(w.size()));
    traits::copy_from_host(w.data(), static_cast<index_t>(w.size()), w_);
  }

  bool linear() const { return linear_; }

  Interp3dProblem problem(index_t planes) const {
    Interp3dProblem p;
    p.planes = planes;
    const std::int64_t* ib = traits::data(idx_);
    const double* wb = linear_ ? traits::data(w_) : nullptr;
    for (int a = 0; a < 3; ++a) {
      p.in[a] = in_[a], p.out[a] = out_[a];
      p.i0[a] = ib + idx_off_[a][0];
      p.i1[a] = ib + idx_off_[a][1];
      p.first[a] = ib + idx_off_[a][2];
      p.last[a] = ib + idx_off_[a][3];
      if (wb) p.l0[a] = wb + w_off_[a][0], p.l1[a] = wb + w_off_[a][1];
    }
    return p;
  }

 private:
  // Appends part to all and returns its offset.
  template <class V>
  static std::size_t push(std::vector<V>& all, const std::vector<V>& part) {
    const std::size_t offset = all.size();
    all.insert(all.end(), part.begin(), part.end());
    return offset;
  }

  bool linear_ = true;
  index_t in_[3] = {0, 0, 0}, out_[3] = {0, 0, 0};
  std::size_t idx_off_[3][4] = {};  // per axis: i0, i1, first, last
  std::size_t w_off_[3][2] = {};    // per axis: l0, l1
  typename traits::template storage<std::int64_t> idx_;
  typename traits::template storage<double> w_;
};

// ------------------------------------------------------------------------------------------------------------
// Interpolation kernels.

template <class T>
MMNET_HOST_DEVICE inline double lerp_row(const T* row, index_t w0, index_t w1, double lw0, double lw1) {
  return lw0 * static_cast<double>(row[w0]) + lw1 * static_cast<double>(row[w1]);
}

// One output per index: the 8-corner weighted sum, nested as PyTorch nests it (w inside h inside d), in double.
template <class T, class Backend>
void trilinear_forward(Backend b, const Interp3dProblem p, const T* x, T* y) {
  const index_t out_plane = p.out_plane(), in_plane = p.in_plane();
  parallel_for(b, p.planes * out_plane, MMNET_KERNEL(index_t i) {
    const index_t plane = i / out_plane;
    index_t r = i - plane * out_plane;
    const index_t ow = r % p.out[2];
    r /= p.out[2];
    const index_t oh = r % p.out[1];
    const index_t od = r / p.out[1];
    const T* xp = x + plane * in_plane;
    const index_t d0 = p.i0[0][od] * p.in[1], d1 = p.i1[0][od] * p.in[1];
    const index_t h0 = p.i0[1][oh], h1 = p.i1[1][oh];
    const index_t w0 = p.i0[2][ow], w1 = p.i1[2][ow];
    const double ld0 = p.l0[0][od], ld1 = p.l1[0][od], lh0 = p.l0[1][oh], lh1 = p.l1[1][oh];
    const double lw0 = p.l0[2][ow], lw1 = p.l1[2][ow];
    const double v0 = lh0 * lerp_row(xp + (d0 + h0) * p.in[2], w0, w1, lw0, lw1) +
                      lh1 * lerp_row(xp + (d0 + h1) * p.in[2], w0, w1, lw0, lw1);
    const double v1 = lh0 * lerp_row(xp + (d1 + h0) * p.in[2], w0, w1, lw0, lw1) +
                      lh1 * lerp_row(xp + (d1 + h1) * p.in[2], w0, w1, lw0, lw1);
    y[i] = static_cast<T>(ld0 * v0 + ld1 * v1);
  });
}

// dL/dx, one input element per index: sums dy * (weight of this element) over the outputs in its per-axis
// ranges. An element that is both corners of an output (at the last input) gets both weights, as PyTorch's
// scatter adds both.
template <class T, class Backend>
void trilinear_backward(Backend b, const Interp3dProblem p, const T* dy, T* dx) {
  const index_t out_plane = p.out_plane(), in_plane = p.in_plane();
  parallel_for(b, p.planes * in_plane, MMNET_KERNEL(index_t i) {
    const index_t plane = i / in_plane;
    index_t r = i - plane * in_plane;
    const index_t w = r % p.in[2];
    r /= p.in[2];
    const index_t h = r % p.in[1];
    const index_t d = r / p.in[1];
    const T* g = dy + plane * out_plane;
    double acc = 0;
    for (index_t od = p.first[0][d]; od < p.last[0][d]; ++od) {
      const double wd = (p.i0[0][od] == d ? p.l0[0][od] : 0.0) + (p.i1[0][od] == d ? p.l1[0][od] : 0.0);
      double acc_h = 0;
      for (index_t oh = p.first[1][h]; oh < p.last[1][h]; ++oh) {
        const double wh = (p.i0[1][oh] == h ? p.l0[1][oh] : 0.0) + (p.i1[1][oh] == h ? p.l1[1][oh] : 0.0);
        const T* gr = g + (od * p.out[1] + oh) * p.out[2];
        double acc_w = 0;
        for (index_t ow = p.first[2][w]; ow < p.last[2][w]; ++ow) {
          const double ww = (p.i0[2][ow] == w ? p.l0[2][ow] : 0.0) + (p.i1[2][ow] == w ? p.l1[2][ow] : 0.0);
          acc_w += ww * static_cast<double>(gr[ow]);
        }
        acc_h += wh * acc_w;
      }
      acc += wd * acc_h;
    }
    dx[i] = static_cast<T>(acc);
  });
}

// One output per index: a copy of its nearest source element.
template <class T, class Backend>
void nearest_forward(Backend b, const Interp3dProblem p, const T* x, T* y) {
  const index_t out_plane = p.out_plane(), in_plane = p.in_plane();
  parallel_for(b, p.planes * out_plane, MMNET_KERNEL(index_t i) {
    const index_t plane = i / out_plane;
    index_t r = i - plane * out_plane;
    const index_t ow = r % p.out[2];
    r /= p.out[2];
    const index_t oh = r % p.out[1];
    const index_t od = r / p.out[1];
    y[i] = x[plane * in_plane + (p.i0[0][od] * p.in[1] + p.i0[1][oh]) * p.in[2] + p.i0[2][ow]];
  });
}

// dL/dx, one input element per index: the sum of dy over the outputs that copied it.
template <class T, class Backend>
void nearest_backward(Backend b, const Interp3dProblem p, const T* dy, T* dx) {
  const index_t out_plane = p.out_plane(), in_plane = p.in_plane();
  parallel_for(b, p.planes * in_plane, MMNET_KERNEL(index_t i) {
    const index_t plane = i / in_plane;
    index_t r = i - plane * in_plane;
    const index_t w = r % p.in[2];
    r /= p.in[2];
    const index_t h = r % p.in[1];
    const index_t d = r / p.in[1];
    const T* g = dy + plane * out_plane;
    double acc = 0;
    for (index_t od = p.first[0][d]; od < p.last[0][d]; ++od)
      for (index_t oh = p.first[1][h]; oh < p.last[1][h]; ++oh) {
        const T* gr = g + (od * p.out[1] + oh) * p.out[2];
        for (index_t ow = p.first[2][w]; ow < p.last[2][w]; ++ow) acc += static_cast<double>(gr[ow]);
      }
    dx[i] = static_cast<T>(acc);
  });
}

// ------------------------------------------------------------------------------------------------------------
// Integer axis maps.

// Output axis k (0 = D, 1 = H, 2 = W) reads input axis src_axis[k] at step[k] * o + offset[k]; positions
// outside the input read fill.
struct AxisMap3d {
  index_t planes = 0;
  index_t in[3] = {0, 0, 0};
  index_t out[3] = {0, 0, 0};
  int src_axis[3] = {0, 1, 2};
  index_t step[3] = {1, 1, 1};
  index_t offset[3] = {0, 0, 0};
  MMNET_HOST_DEVICE index_t in_plane() const { return in[0] * in[1] * in[2]; }
  MMNET_HOST_DEVICE index_t out_plane() const { return out[0] * out[1] * out[2]; }
};

// y[plane, o] = x[plane, map(o)], or fill where map(o) leaves the input.
template <class T, class Backend>
void axis_map_forward(Backend b, const AxisMap3d m, const T* x, T* y, T fill) {
  const index_t out_plane = m.out_plane(), in_plane = m.in_plane();
  parallel_for(b, m.planes * out_plane, MMNET_KERNEL(index_t i) {
    const index_t plane = i / out_plane;
    index_t r = i - plane * out_plane;
    index_t o[3];
    o[2] = r % m.out[2];
    r /= m.out[2];
    o[1] = r % m.out[1];
    o[0] = r / m.out[1];
    index_t s[3] = {0, 0, 0};
    bool inside = true;
    for (int k = 0; k < 3; ++k) {
      const index_t c = m.step[k] * o[k] + m.offset[k];
      inside = inside && c >= 0 && c < m.in[m.src_axis[k]];
      s[m.src_axis[k]] = c;
    }
    y[i] = inside ? x[plane * in_plane + (s[0] * m.in[1] + s[1]) * m.in[2] + s[2]] : fill;
  });
}

// The adjoint for steps of +-1 (each input element read at most once): dx[plane, j] = dy[plane, o] for the
// output o that read j, or 0 when no output did (cropped away).
template <class T, class Backend>
void axis_map_backward(Backend b, const AxisMap3d m, const T* dy, T* dx) {
  const index_t out_plane = m.out_plane(), in_plane = m.in_plane();
  parallel_for(b, m.planes * in_plane, MMNET_KERNEL(index_t i) {
    const index_t plane = i / in_plane;
    index_t r = i - plane * in_plane;
    index_t c[3];
    c[2] = r % m.in[2];
    r /= m.in[2];
    c[1] = r % m.in[1];
    c[0] = r / m.in[1];
    index_t o[3] = {0, 0, 0};
    bool read = true;
    for (int k = 0; k < 3; ++k) {
      o[k] = (c[m.src_axis[k]] - m.offset[k]) * m.step[k];  // step is +-1: its own inverse
      read = read && o[k] >= 0 && o[k] < m.out[k];
    }
    dx[i] = read ? dy[plane * out_plane + (o[0] * m.out[1] + o[1]) * m.out[2] + o[2]] : T(0);
  });
}

}  // namespace mmnet::backend
