// mmnet/models/cscn/training.hpp: CSCN training- and evaluation-side helpers (spec shared/specs/cascaded-fcn.md
// §4.2, §4.3, §5): block sampling with flips, the training ROI, the continuous exponential lr schedule, Adam's
// options and the paper's ASSD. The loss is losses::DistanceWeightedFocal (α from the FULL-volume label,
// losses::distance_weight_map, cut with the same block and flip as the image).
//
//   std::vector<cscn::SamplingCase> cases{cscn::sampling_case(label, cscn::whole_volume(dims))};   // BUNet
//   auto draw = cscn::draw_block(g, cases, options.block());          // case, view, centre, origin, flip
//   auto b = cscn::cut_block(image, label, alpha, draw, options.block());   // b.input, b.label, b.alpha: 1 x . x D x H x W
//   opt.set_lr(cscn::exponential_lr(t, options));                      // 1e-3 * 0.9^(t / 500)
#pragma once
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../../core/random.hpp"
#include "../../core/tensor.hpp"
#include "../../metrics/surface_distance.hpp"
#include "../../optim/adam.hpp"
#include "options.hpp"
#include "views.hpp"

namespace mmnet::models::cscn {

// lr(t) = lr0 decay^(t / steps) (continuous, TF exponential_decay's default) or decay^floor(t / steps) (staircase).
inline double exponential_lr(double t, double lr0 = 1e-3, double decay = 0.9, double steps = 500, bool staircase = false) {
  if (!(t >= 0)) fail<value_error>("mmnet::models::cscn::exponential_lr", "iteration t", ">= 0", t);
  const double e = staircase ? std::floor(t / steps) : t / steps;
  return lr0 * std::pow(decay, e);
}
inline double exponential_lr(double t, const CSCNOptions& o) {
  return exponential_lr(t, o.lr(), o.lr_decay(), o.lr_decay_steps(), o.lr_staircase());
}

// Spec §4.3 Adam: lr0 (1e-3), betas (0.9, 0.999), eps 1e-8, no weight decay.
inline optim::AdamOptions adam_options(const CSCNOptions& o = CSCNOptions::paper()) {
  return optim::AdamOptions(o.lr()).betas({0.9, 0.999}).eps(1e-8);
}

// What block sampling needs of one training case: its extent, the linear indices of its tumour (GT) voxels and the
// region for uniform centres (the whole volume for BUNet, the training ROI for ACDNet).
struct SamplingCase {
  ops::Dims3 dims;
  std::vector<index_t> tumour;
  Box3 region;
};

// label: 1 x 1 x Z x Y x X (tumour = 1).
template <class T, class Backend>
SamplingCase sampling_case(const Tensor<T, Backend>& label, const Box3& region) {
  const char* who = "mmnet::models::cscn::sampling_case";
  SamplingCase c;
  c.dims = volume_dims(who, label);
  for (int a = 0; a < 3; ++a) {
    const index_t n = a == 0 ? c.dims.d : a == 1 ? c.dims.h : c.dims.w;
    if (region.lo[static_cast<std::size_t>(a)] < 0 || region.hi[static_cast<std::size_t>(a)] > n || region.extent(a) < 1)
      fail<value_error>(who, std::string("region on axis ") + "ZYX"[a], "0 <= lo < hi <= " + std::to_string(n), region.str());
  }
  const auto v = label.to_vector();
  for (std::size_t i = 0; i < v.size(); ++i)
    if (v[i] == T(1)) c.tumour.push_back(static_cast<index_t>(i));
  c.region = region;
  return c;
}

// One drawn block (spec §4.2).
struct BlockDraw {
  std::size_t case_index = 0;
  View view = View::axial;
  std::array<index_t, 3> centre{0, 0, 0};  // (Z, Y, X)
  std::array<index_t, 3> origin{0, 0, 0};  // view frame: centre (permuted) - block // 2
  bool flip = false;                       // horizontal flip along volume X
};

// Case uniformly, view uniformly, centre: with probability tumour_fraction a uniform tumour voxel (when the case
// has one), otherwise uniform in the case's region; flip with probability flip_probability.
inline BlockDraw draw_block(Generator& g, const std::vector<SamplingCase>& cases, const ExpandingArray3& block,
                            double tumour_fraction = 0.5, double flip_probability = 0.5) {
  const char* who = "mmnet::models::cscn::draw_block";
  if (cases.empty()) fail<value_error>(who, "cases", "at least one", 0);
  BlockDraw d;
  d.case_index = static_cast<std::size_t>(g.integer(cases.size()));
  d.view = all_views[static_cast<std::size_t>(g.integer(3))];
  const SamplingCase& c = cases[d.case_index];
  const bool on_tumour = g.uniform() < tumour_fraction;
  if (on_tumour && !c.tumour.empty()) {
    const index_t i = c.tumour[static_cast<std::size_t>(g.integer(c.tumour.size()))];
    d.centre = {i / (c.dims.h * c.dims.w), (i / c.dims.w) % c.dims.h, i % c.dims.w};
  } else {
    for (std::size_t a = 0; a < 3; ++a)
      d.centre[a] = c.region.lo[a] + static_cast<index_t>(g.integer(static_cast<std::uint64_t>(c.region.extent(static_cast<int>(a)))));
  }
  d.flip = g.uniform() < flip_probability;
  const auto p = permutation(d.view);
  for (int k = 0; k < 3; ++k) d.origin[static_cast<std::size_t>(k)] = d.centre[static_cast<std::size_t>(p[k])] - block[k] / 2;
  return d;
}

template <class T, class Backend>
struct TrainingBlock {
  Tensor<T, Backend> input, label, alpha;  // 1 x C x D x H x W, 1 x 1 x ..., 1 x 1 x ...
};

// Cuts the drawn block from input (1 x C x Z x Y x X, e.g. cat[image, P_coarse]), label and α (full-volume maps)
// with the same view, origin and flip; outside the volume: input 0, label 0, α 1.
template <class T, class Backend>
TrainingBlock<T, Backend> cut_block(const Tensor<T, Backend>& input, const Tensor<T, Backend>& label,
                                    const Tensor<T, Backend>& alpha, const BlockDraw& d, const ExpandingArray3& block) {
  const char* who = "mmnet::models::cscn::cut_block";
  const ops::Dims3 dims = volume_dims(who, input);
  const Shape one{1, 1, dims.d, dims.h, dims.w};
  check_same_shape(who, "label", label, one);
  check_same_shape(who, "alpha", alpha, one);
  TrainingBlock<T, Backend> b;
  b.input = extract_block(input, d.view, d.origin, block, T(0), d.flip);
  b.label = extract_block(label, d.view, d.origin, block, T(0), d.flip);
  b.alpha = extract_block(alpha, d.view, d.origin, block, T(1), d.flip);
  return b;
}

// Stacks 1 x C x D x H x W blocks into an N x C x D x H x W batch.
template <class T, class Backend>
Tensor<T, Backend> stack(const std::vector<Tensor<T, Backend>>& blocks) {
  const char* who = "mmnet::models::cscn::stack";
  if (blocks.empty()) fail<value_error>(who, "blocks", "at least one", 0);
  const Shape& s = blocks[0].shape();
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    check_rank(who, "block " + std::to_string(i), blocks[i], 5);
    if (blocks[i].shape() != s || s[0] != 1)
      fail<shape_error>(who, "block " + std::to_string(i) + " shape", "(1, ...) equal to block 0's " + s.str(),
                        blocks[i].shape().str());
  }
  Tensor<T, Backend> out(Shape{static_cast<index_t>(blocks.size()), s[1], s[2], s[3], s[4]});
  const index_t n = blocks[0].numel();
  for (std::size_t i = 0; i < blocks.size(); ++i)
    backend_traits<Backend>::copy(blocks[i].data(), n, out.data() + static_cast<index_t>(i) * n);
  return out;
}

// Spec §4.3 training ROI of ACDNet: bbox(GT ∪ largest_cc(P_coarse > 0.5)) dilated by margin and clipped; the whole
// volume when both are empty. label, p_coarse: 1 x 1 x Z x Y x X.
template <class T, class Backend>
Box3 training_roi(const Tensor<T, Backend>& label, const Tensor<T, Backend>& p_coarse, index_t margin, int connectivity = 26) {
  const char* who = "mmnet::models::cscn::training_roi";
  const ops::Dims3 dims = volume_dims(who, label);
  check_same_shape(who, "P_coarse", p_coarse, label.shape());
  if (margin < 0) fail<value_error>(who, "margin", ">= 0", margin);
  const auto pv = p_coarse.to_vector(), lv = label.to_vector();
  std::vector<std::uint8_t> m(pv.size());
  for (std::size_t i = 0; i < pv.size(); ++i) m[i] = static_cast<double>(pv[i]) > 0.5 ? 1 : 0;
  auto keep = ops::largest_connected_component(m.data(), dims, connectivity);
  for (std::size_t i = 0; i < lv.size(); ++i) keep[i] = keep[i] || lv[i] == T(1);
  bool found = false;
  const Box3 b = bounding_box(keep.data(), dims, found);
  return found ? dilate_clip(b, dims, margin) : whole_volume(dims);
}

// Spec §5 / paper Eq. 9 ASSD: the mean of the two directed mean surface distances (medpy's assd), not the pooled
// mean over |S_X| + |S_Y| of metrics::average_symmetric_surface_distance (MONAI's). Surfaces as in
// metrics::surface_distances (6-neighbour erosion, outside = background). NaN when a mask is empty.
inline double assd_mean_of_means(const metrics::SurfaceDistances& sd) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto mean = [nan](const std::vector<double>& v) {
    if (v.empty()) return nan;
    double s = 0;
    for (double e : v) s += e;
    return s / static_cast<double>(v.size());
  };
  const double a = mean(sd.pred_to_truth), b = mean(sd.truth_to_pred);
  if (std::isinf(a) || std::isinf(b)) return nan;  // one mask empty (MONAI's +inf convention): undefined here
  return 0.5 * (a + b);
}

}  // namespace mmnet::models::cscn
