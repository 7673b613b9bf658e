// mmnet/ops/distance_transform.hpp: exact Euclidean distance transform of 3D masks with anisotropic spacing
// (scipy.ndimage.distance_transform_edt(mask, sampling=spacing)); no gradient (preprocessing, weight maps, metrics).
//
// For every nonzero ("inside") voxel: the distance to the nearest zero voxel, sqrt(Σ_axis (spacing_a Δ_a)^2);
// zero voxels get 0. As in scipy, the outside of the volume is NOT background. The last three axes are
// D, H, W (spacing in that order); leading axes (N, C) index independent volumes, so a D x H x W mask and an
// N x C x D x H x W batch are both accepted. A volume that has inside voxels but no zero voxel has no finite
// distance (scipy returns arbitrary values): value_error naming the volume.
//
// Algorithm: Felzenszwalb & Huttenlocher's separable squared EDT (lower envelope of parabolas), one pass per
// axis (W, then H, then D), each pass parallel over the lines of that axis on either backend; each line owns
// its scratch, so the result does not depend on the thread count. Exact for integer spacing (all values are
// sums of squares of integers); for other spacings within rounding of the candidate distances.
//
//   auto d2 = ops::squared_distance_transform(mask, {3.0, 1.0, 1.0});   // D spacing 3, H and W 1
//   auto d  = ops::distance_transform(mask);                            // unit spacing
//
// Host byte masks (metrics, connected components) use Dims3 and squared_distance_transform_host, which runs the
// same passes on the cpu backend without a Tensor: one D x H x W volume, nonzero bytes are inside.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace mmnet::ops {

using Spacing3 = std::array<double, 3>;  // D, H, W

// Extent of one host volume (D, H, W), row-major, W fastest.
struct Dims3 {
  index_t d = 0, h = 0, w = 0;
  index_t numel() const { return d * h * w; }
  std::string str() const {
    return "(" + std::to_string(d) + ", " + std::to_string(h) + ", " + std::to_string(w) + ")";
  }
};

namespace detail {

// One 1D pass along an axis of length len and element stride st over all lines: f holds squared distances
// (inf where no background was seen yet) and is updated in place; v, z, g are per-line scratch.
template <class Backend>
void edt_pass(index_t lines, index_t len, index_t st, double spacing, double inf, double* f, std::int64_t* v,
              double* z, double* g) {
  backend::parallel_for(Backend{}, lines, MMNET_KERNEL(index_t l) {
    const index_t base = (l / st) * (len * st) + l % st;
    std::int64_t* vl = v + l * len;
    double* zl = z + l * (len + 1);
    double* gl = g + l * len;
    for (index_t q = 0; q < len; ++q) gl[q] = f[base + q * st];
    // Lower envelope of the parabolas (x - x_q)^2 + g_q over the finite g_q, x_q = q * spacing.
    index_t k = -1;
    for (index_t q = 0; q < len; ++q) {
      const double gq = gl[q];
      if (!(gq < inf)) continue;
      const double xq = static_cast<double>(q) * spacing;
      double s = -inf;
      while (k >= 0) {
        const double xv = static_cast<double>(vl[k]) * spacing;
        s = ((gq + xq * xq) - (gl[vl[k]] + xv * xv)) / (2.0 * (xq - xv));
        if (s <= zl[k]) {
          --k;
        } else {
          break;
        }
      }
      ++k;
      vl[k] = q;
      zl[k] = k == 0 ? -inf : s;
      zl[k + 1] = inf;
    }
    if (k < 0) return;  // no finite value on this line: it stays inf
    index_t j = 0;
    for (index_t p = 0; p < len; ++p) {
      const double x = static_cast<double>(p) * spacing;
      while (zl[j + 1] < x) ++j;
      const double d = (static_cast<double>(p - vl[j])) * spacing;
      f[base + p * st] = d * d + gl[vl[j]];
    }
  });
}

template <class T, class Backend>
void edt_init(const T* mask, double inf, index_t n, double* f) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) { f[i] = mask[i] != T(0) ? inf : 0.0; });
}

template <class T, class Backend>
index_t count_zero(const T* p, index_t n) {
  return static_cast<index_t>(
      backend::reduce_sum<double>(Backend{}, n, MMNET_KERNEL(index_t i) { return p[i] == T(0) ? 1.0 : 0.0; }));
}

template <class T, class Backend>
void edt_finish(const double* f, bool take_sqrt, index_t n, T* out) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) {
    out[i] = static_cast<T>(take_sqrt ? std::sqrt(f[i]) : f[i]);
  });
}

template <class T, class Backend>
Tensor<T, Backend> edt(const char* component, const Tensor<T, Backend>& mask, const Spacing3& spacing, bool take_sqrt) {
  if (!mask.defined() || mask.numel() == 0)
    fail<shape_error>(component, "mask", "a non-empty tensor", mask.defined() ? "shape " + mask.shape().str() : "an empty tensor");
  if (mask.rank() < 3)
    fail<shape_error>(component, "mask rank", "3 to 5 (... x D x H x W)", mask.rank(), "shape " + mask.shape().str());
  for (int a = 0; a < 3; ++a)
    if (!(spacing[static_cast<std::size_t>(a)] > 0) || !std::isfinite(spacing[static_cast<std::size_t>(a)]))
      fail<value_error>(component, std::string("spacing[") + std::to_string(a) + "] (D, H, W)", "a finite value > 0",
                        spacing[static_cast<std::size_t>(a)]);
  const index_t d = mask.size(-3), h = mask.size(-2), w = mask.size(-1);
  const index_t vol = d * h * w, n = mask.numel(), volumes = n / vol;
  // Every volume with an inside voxel needs a zero voxel (one reduction per volume; volumes are few).
  for (index_t k = 0; k < volumes; ++k) {
    const index_t zeros = count_zero<T, Backend>(mask.data() + k * vol, vol);
    if (zeros == 0)
      fail<value_error>(component, "background (zero) voxels in volume " + std::to_string(k), "at least 1", 0,
                        "mask shape " + mask.shape().str() + ": the distance to the background is undefined");
  }
  using traits = backend_traits<Backend>;
  const double inf = std::numeric_limits<double>::infinity();
  // Axis W (stride 1), H (stride W), D (stride H W); lines = n / len, each with len + 1 envelope bounds.
  const index_t len[3] = {w, h, d}, st[3] = {1, w, h * w};
  const index_t z_size = n + n / std::min(d, std::min(h, w));
  auto f = traits::template allocate<double>(n);
  auto g = traits::template allocate<double>(n);
  auto z = traits::template allocate<double>(z_size);
  auto v = traits::template allocate<std::int64_t>(n);
  edt_init<T, Backend>(mask.data(), inf, n, traits::data(f));
  const double sp[3] = {spacing[2], spacing[1], spacing[0]};
  for (int a = 0; a < 3; ++a)
    edt_pass<Backend>(n / len[a], len[a], st[a], sp[a], inf, traits::data(f), traits::data(v), traits::data(z),
                      traits::data(g));
  Tensor<T, Backend> out(mask.shape());
  edt_finish<T, Backend>(traits::data(f), take_sqrt, n, out.data());
  return out;
}

inline void check_spacing(const char* component, const Spacing3& spacing) {
  for (int a = 0; a < 3; ++a)
    if (!(spacing[static_cast<std::size_t>(a)] > 0) || !std::isfinite(spacing[static_cast<std::size_t>(a)]))
      fail<value_error>(component, std::string("spacing[") + std::to_string(a) + "] (D, H, W)", "a finite value > 0",
                        spacing[static_cast<std::size_t>(a)]);
}

}  // namespace detail

// Squared distances (exact for integer spacing), same shape as mask.
template <class T, class Backend>
Tensor<T, Backend> squared_distance_transform(const Tensor<T, Backend>& mask, const Spacing3& spacing = {1.0, 1.0, 1.0}) {
  return detail::edt("mmnet::ops::squared_distance_transform", mask, spacing, false);
}

// Host volume: squared distances of every inside (nonzero) voxel of `inside` (dims.numel() bytes) to the nearest
// zero voxel, 0 on zero voxels; the same algorithm and rounding as squared_distance_transform on the cpu backend.
inline std::vector<double> squared_distance_transform_host(const std::uint8_t* inside, const Dims3& dims,
                                                           const Spacing3& spacing = {1.0, 1.0, 1.0}) {
  const char* component = "mmnet::ops::squared_distance_transform_host";
  if (dims.d <= 0 || dims.h <= 0 || dims.w <= 0)
    fail<shape_error>(component, "volume extent (D, H, W)", "all > 0", dims.str());
  detail::check_spacing(component, spacing);
  const index_t n = dims.numel();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> f(static_cast<std::size_t>(n));
  index_t zeros = 0;
  for (index_t i = 0; i < n; ++i) {
    f[static_cast<std::size_t>(i)] = inside[i] ? inf : 0.0;
    zeros += inside[i] ? 0 : 1;
  }
  if (zeros == 0)
    fail<value_error>(component, "background (zero) voxels", "at least 1", 0,
                      "volume " + dims.str() + ": the distance to the background is undefined");
  const index_t len[3] = {dims.w, dims.h, dims.d}, st[3] = {1, dims.w, dims.h * dims.w};
  const double sp[3] = {spacing[2], spacing[1], spacing[0]};
  const index_t shortest = std::min(dims.d, std::min(dims.h, dims.w));
  std::vector<double> g(static_cast<std::size_t>(n)), z(static_cast<std::size_t>(n + n / shortest));
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (int a = 0; a < 3; ++a)
    detail::edt_pass<cpu>(n / len[a], len[a], st[a], sp[a], inf, f.data(), v.data(), z.data(), g.data());
  return f;
}

// Euclidean distances, same shape as mask.
template <class T, class Backend>
Tensor<T, Backend> distance_transform(const Tensor<T, Backend>& mask, const Spacing3& spacing = {1.0, 1.0, 1.0}) {
  return detail::edt("mmnet::ops::distance_transform", mask, spacing, true);
}

}  // namespace mmnet::ops
