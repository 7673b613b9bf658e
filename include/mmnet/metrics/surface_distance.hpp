// mmnet/metrics/surface_distance.hpp: surface distances between two binary 3D masks with voxel spacing in mm:
// Hausdorff distance (max and percentile, e.g. HD95), average (symmetric) surface distance, normalised surface
// Dice; MONAI's compute_hausdorff_distance / compute_average_surface_distance / compute_surface_dice
// (use_subvoxels=False, distance_metric="euclidean") on one (D, H, W) volume, computed in double on the host.
//
// Definitions (MONAI monai/metrics/utils.py get_mask_edges + get_surface_distance):
// * Surface ("edge") voxels of a mask M: M XOR binary_erosion(M) with scipy's default structuring element (the
//   6-neighbour cross) and border_value 0, i.e. the foreground voxels with at least one of their 6 face
//   neighbours in the background or outside the volume. A mask touching the volume border has surface there.
//   (MONAI first crops both masks to the bounding box of their union plus a 1-voxel zero margin; that changes
//   neither the surfaces nor the distances, so it is done here only to make the transform cheaper.)
// * Directed distances A -> B: for every surface voxel of A (in row-major order), the Euclidean distance in mm
//   to the nearest surface voxel of B: scipy.ndimage.distance_transform_edt(~edges_B, sampling=spacing) read at
//   the edges of A (ops::squared_distance_transform_host here).
// * Empty masks, exactly as MONAI's get_surface_distance: B has no surface -> +inf for each surface voxel of A
//   (none if A is empty too); A empty but B not -> one +inf per surface voxel of B (MONAI's quirk: not an empty
//   list). Hence, with pred P and truth G:
//     both empty:   HD = HD95 = ASD = ASSD = NSD = NaN   (MONAI: the class is absent; nan-aware means skip it)
//     one empty:    HD = HD95 = ASD = ASSD = +inf, NSD = 0
//   The one deliberate difference: MONAI's HD95 of an all-inf list is NaN (torch.quantile interpolates
//   inf - inf); here the percentile of all-infinite distances is +inf, so a missed or hallucinated structure
//   stays the worst case instead of silently vanishing from a nan-mean. docs/metrics.md lists both.
// * HD = max(max dist P->G, max dist G->P); HD_q = max(q-th percentile of P->G, of G->P) with numpy's default
//   linear interpolation (np.percentile / torch.quantile): position q/100 * (n - 1) in the sorted list.
//   directed=true keeps only P->G.
// * ASSD = mean of the concatenated P->G and G->P distances (MONAI compute_average_surface_distance with
//   symmetric=True: one mean over both lists, not the mean of the two means); ASD (symmetric=false) = mean P->G.
// * NSD(tau) = (#{P->G <= tau} + #{G->P <= tau}) / (#P->G + #G->P) (MONAI compute_surface_dice, voxel counts,
//   not areas; tau in mm, finite and >= 0).
// MONAI stores the distances in float32; here they stay double (values agree to float32 rounding).
//
//   auto sd = metrics::surface_distances(pred, truth, {d, h, w}, {3.0, 0.8, 0.6});
//   double hd95 = metrics::hausdorff_distance(sd, 95.0), nsd = metrics::normalized_surface_dice(sd, 1.0);
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../ops/distance_transform.hpp"

namespace mmnet::metrics {

using ops::Dims3;
using ops::Spacing3;

// Host copy of a mask as bytes (1 = foreground: any nonzero value).
template <class M>
std::vector<std::uint8_t> to_binary(const M* mask, index_t n) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = mask[i] != M(0) ? 1 : 0;
  return out;
}

// A Tensor of any backend, copied to the host (metrics run on results, never inside a training step).
template <class T, class Backend>
std::vector<std::uint8_t> to_binary(const Tensor<T, Backend>& mask) {
  const auto v = mask.to_vector();
  return to_binary(v.data(), static_cast<index_t>(v.size()));
}

// The (D, H, W) of a mask tensor: rank 3, or rank 4-5 with leading axes of size 1.
template <class T, class Backend>
Dims3 volume_dims(const char* component, const Tensor<T, Backend>& mask) {
  if (!mask.defined() || mask.numel() == 0)
    fail<shape_error>(component, "mask", "a non-empty tensor", mask.defined() ? "shape " + mask.shape().str() : "an empty tensor");
  if (mask.rank() < 3 || mask.numel() != mask.size(-3) * mask.size(-2) * mask.size(-1))
    fail<shape_error>(component, "mask shape", "one volume: (D, H, W) or (1, [1,] D, H, W)", mask.shape().str());
  return {mask.size(-3), mask.size(-2), mask.size(-1)};
}

namespace detail {

inline void check_dims(const char* component, const Dims3& dims) {
  if (dims.d <= 0 || dims.h <= 0 || dims.w <= 0)
    fail<shape_error>(component, "volume extent (D, H, W)", "all > 0", dims.str());
}

// Half-open box [lo, hi) per axis (D, H, W); empty when lo[0] >= hi[0].
struct Box {
  index_t lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
  bool empty() const { return lo[0] >= hi[0]; }
  index_t extent(int a) const { return hi[a] - lo[a]; }
};

// Bounding box of the voxels nonzero in a or b.
inline Box union_box(const std::uint8_t* a, const std::uint8_t* b, const Dims3& dims) {
  Box box;
  box.lo[0] = dims.d, box.lo[1] = dims.h, box.lo[2] = dims.w;
  for (index_t z = 0; z < dims.d; ++z)
    for (index_t y = 0; y < dims.h; ++y) {
      const index_t row = (z * dims.h + y) * dims.w;
      for (index_t x = 0; x < dims.w; ++x)
        if (a[row + x] | b[row + x]) {
          box.lo[0] = std::min(box.lo[0], z), box.hi[0] = std::max(box.hi[0], z + 1);
          box.lo[1] = std::min(box.lo[1], y), box.hi[1] = std::max(box.hi[1], y + 1);
          box.lo[2] = std::min(box.lo[2], x), box.hi[2] = std::max(box.hi[2], x + 1);
        }
    }
  if (box.hi[0] == 0) box = Box{};
  return box;
}

// Surface voxels of the mask inside box, as a box-sized byte volume; the 6-neighbours are looked up in the
// whole volume (outside the volume counts as background, scipy's border_value=0).
inline std::vector<std::uint8_t> box_surface(const std::uint8_t* m, const Dims3& dims, const Box& box) {
  const index_t bd = box.extent(0), bh = box.extent(1), bw = box.extent(2);
  std::vector<std::uint8_t> s(static_cast<std::size_t>(bd * bh * bw), 0);
  const index_t sy = dims.w, sz = dims.h * dims.w;
  for (index_t z = box.lo[0]; z < box.hi[0]; ++z)
    for (index_t y = box.lo[1]; y < box.hi[1]; ++y)
      for (index_t x = box.lo[2]; x < box.hi[2]; ++x) {
        const index_t i = z * sz + y * sy + x;
        if (!m[i]) continue;
        const bool interior = z > 0 && z + 1 < dims.d && y > 0 && y + 1 < dims.h && x > 0 && x + 1 < dims.w &&
                              m[i - sz] && m[i + sz] && m[i - sy] && m[i + sy] && m[i - 1] && m[i + 1];
        s[static_cast<std::size_t>(((z - box.lo[0]) * bh + (y - box.lo[1])) * bw + (x - box.lo[2]))] = interior ? 0 : 1;
      }
  return s;
}

inline index_t count_nonzero(const std::vector<std::uint8_t>& v) {
  index_t n = 0;
  for (auto b : v) n += b ? 1 : 0;
  return n;
}

// MONAI get_surface_distance(edges_from, edges_to) on box-sized surface volumes.
inline std::vector<double> directed(const std::vector<std::uint8_t>& from, const std::vector<std::uint8_t>& to,
                                    const Dims3& box_dims, const Spacing3& spacing) {
  const double inf = std::numeric_limits<double>::infinity();
  const index_t n_from = count_nonzero(from), n_to = count_nonzero(to);
  if (n_to == 0) return std::vector<double>(static_cast<std::size_t>(n_from), inf);
  if (n_from == 0) return std::vector<double>(static_cast<std::size_t>(n_to), inf);  // MONAI: dis[seg_gt]
  std::vector<std::uint8_t> not_to(to.size());
  for (std::size_t i = 0; i < to.size(); ++i) not_to[i] = to[i] ? 0 : 1;
  const auto d2 = ops::squared_distance_transform_host(not_to.data(), box_dims, spacing);
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(n_from));
  for (std::size_t i = 0; i < from.size(); ++i)
    if (from[i]) out.push_back(std::sqrt(d2[i]));
  return out;
}

}  // namespace detail

// Surface voxels (M XOR erosion(M), 6-neighbour cross, outside = background) of a host byte mask.
inline std::vector<std::uint8_t> surface_voxels(const std::uint8_t* mask, const Dims3& dims) {
  detail::check_dims("mmnet::metrics::surface_voxels", dims);
  detail::Box all;
  all.hi[0] = dims.d, all.hi[1] = dims.h, all.hi[2] = dims.w;
  return detail::box_surface(mask, dims, all);
}

// Both directed distance lists of one mask pair (pred P, truth G), in mm.
struct SurfaceDistances {
  std::vector<double> pred_to_truth;  // one per surface voxel of P (row-major order); see the empty rules above
  std::vector<double> truth_to_pred;  // one per surface voxel of G
};

// pred, truth: dims.numel() bytes each, nonzero = foreground.
inline SurfaceDistances surface_distances(const std::uint8_t* pred, const std::uint8_t* truth, const Dims3& dims,
                                          const Spacing3& spacing = {1.0, 1.0, 1.0}) {
  const char* component = "mmnet::metrics::surface_distances";
  detail::check_dims(component, dims);
  ops::detail::check_spacing(component, spacing);
  SurfaceDistances out;
  detail::Box box = detail::union_box(pred, truth, dims);
  if (box.empty()) return out;  // both empty: no surface, no distance
  // 1-voxel margin (clipped to the volume) as in MONAI's crop: the transform then sees the same surfaces.
  for (int a = 0; a < 3; ++a) {
    const index_t ext = a == 0 ? dims.d : a == 1 ? dims.h : dims.w;
    box.lo[a] = std::max<index_t>(0, box.lo[a] - 1), box.hi[a] = std::min<index_t>(ext, box.hi[a] + 1);
  }
  const Dims3 bdims{box.extent(0), box.extent(1), box.extent(2)};
  const auto sp = detail::box_surface(pred, dims, box), sg = detail::box_surface(truth, dims, box);
  out.pred_to_truth = detail::directed(sp, sg, bdims, spacing);
  out.truth_to_pred = detail::directed(sg, sp, bdims, spacing);
  return out;
}

template <class M>
SurfaceDistances surface_distances(const std::vector<M>& pred, const std::vector<M>& truth, const Dims3& dims,
                                   const Spacing3& spacing = {1.0, 1.0, 1.0}) {
  const char* component = "mmnet::metrics::surface_distances";
  detail::check_dims(component, dims);
  if (static_cast<index_t>(pred.size()) != dims.numel())
    fail<shape_error>(component, "pred voxel count for " + dims.str(), dims.numel(), pred.size());
  if (static_cast<index_t>(truth.size()) != dims.numel())
    fail<shape_error>(component, "truth voxel count for " + dims.str(), dims.numel(), truth.size());
  const auto p = to_binary(pred.data(), dims.numel()), g = to_binary(truth.data(), dims.numel());
  return surface_distances(p.data(), g.data(), dims, spacing);
}

// Tensors of any backend, shape (D, H, W) or (1, [1,] D, H, W), nonzero = foreground (copied to the host).
template <class T, class Backend>
SurfaceDistances surface_distances(const Tensor<T, Backend>& pred, const Tensor<T, Backend>& truth,
                                   const Spacing3& spacing = {1.0, 1.0, 1.0}) {
  const char* component = "mmnet::metrics::surface_distances";
  const Dims3 dims = volume_dims(component, pred);
  if (!truth.defined() || truth.shape() != pred.shape())
    fail<shape_error>(component, "truth shape", pred.shape().str(), truth.defined() ? truth.shape().str() : "an empty tensor");
  const auto p = to_binary(pred), g = to_binary(truth);
  return surface_distances(p.data(), g.data(), dims, spacing);
}

// numpy.percentile(values, q) with the default linear interpolation; NaN for an empty list; +inf when the
// interpolation meets +inf (see the header: MONAI's torch.quantile gives NaN for inf - inf).
inline double percentile(std::vector<double> values, double q) {
  if (!(q >= 0.0 && q <= 100.0))
    fail<value_error>("mmnet::metrics::percentile", "q", "a value in [0, 100]", q);
  if (values.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(values.begin(), values.end());
  const double pos = q / 100.0 * static_cast<double>(values.size() - 1);
  const double lo_f = std::floor(pos);
  const std::size_t lo = static_cast<std::size_t>(lo_f), hi = std::min(lo + 1, values.size() - 1);
  const double t = pos - lo_f, a = values[lo], b = values[hi];
  if (std::isinf(a) || std::isinf(b)) return t == 0.0 ? a : (std::isinf(b) ? b : a);
  // numpy's _lerp: a + (b - a) t, computed from b's side when t >= 0.5 (the same rounding as numpy).
  const double diff = b - a;
  return t >= 0.5 ? b - diff * (1.0 - t) : a + diff * t;
}

namespace detail {
inline double list_max(const std::vector<double>& v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  return *std::max_element(v.begin(), v.end());
}
// torch.max(torch.stack([a, b])): NaN wins.
inline double nan_max(double a, double b) { return std::isnan(a) || std::isnan(b) ? std::numeric_limits<double>::quiet_NaN() : std::max(a, b); }
}  // namespace detail

// Hausdorff distance (max of both directed maxima; directed=true: P->G only).
inline double hausdorff_distance(const SurfaceDistances& sd, bool directed = false) {
  const double a = detail::list_max(sd.pred_to_truth);
  return directed ? a : detail::nan_max(a, detail::list_max(sd.truth_to_pred));
}

// Percentile Hausdorff distance, e.g. q = 95 for HD95: max of the two directed q-th percentiles.
inline double hausdorff_distance(const SurfaceDistances& sd, double q, bool directed = false) {
  const double a = percentile(sd.pred_to_truth, q);
  return directed ? a : detail::nan_max(a, percentile(sd.truth_to_pred, q));
}

// Average surface distance: symmetric=true is ASSD (one mean over both lists), false the mean of P->G
// (MONAI's default for compute_average_surface_distance is symmetric=False).
inline double average_surface_distance(const SurfaceDistances& sd, bool symmetric) {
  double sum = 0.0;
  std::size_t n = sd.pred_to_truth.size();
  for (double v : sd.pred_to_truth) sum += v;
  if (symmetric) {
    for (double v : sd.truth_to_pred) sum += v;
    n += sd.truth_to_pred.size();
  }
  return n == 0 ? std::numeric_limits<double>::quiet_NaN() : sum / static_cast<double>(n);
}

inline double average_symmetric_surface_distance(const SurfaceDistances& sd) { return average_surface_distance(sd, true); }

// Normalised surface Dice at tolerance tau (mm): the fraction of surface voxels of both masks within tau of the
// other surface; NaN when both are empty, 0 when exactly one is.
inline double normalized_surface_dice(const SurfaceDistances& sd, double tolerance_mm) {
  if (!std::isfinite(tolerance_mm) || tolerance_mm < 0)
    fail<value_error>("mmnet::metrics::normalized_surface_dice", "tolerance_mm", "a finite value >= 0", tolerance_mm);
  const std::size_t total = sd.pred_to_truth.size() + sd.truth_to_pred.size();
  if (total == 0) return std::numeric_limits<double>::quiet_NaN();
  std::size_t within = 0;
  for (double v : sd.pred_to_truth) within += v <= tolerance_mm ? 1 : 0;
  for (double v : sd.truth_to_pred) within += v <= tolerance_mm ? 1 : 0;
  return static_cast<double>(within) / static_cast<double>(total);
}

}  // namespace mmnet::metrics
