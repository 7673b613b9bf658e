// mmnet/inference/sliding_window.hpp: sliding-window inference over a whole volume
// (monai.inferers.sliding_window_inference with padding_mode="constant" by default; nnU-Net v1's
// SegmentationNetwork._internal_predict_3D_3Dconv_tiled with SlidingWindowOptions::nnunet(roi)).
//
//   auto net = [&](const Tensor<float, mmnet::cuda>& x) { return model.forward(x); };  // N x C x roi -> N x K x roi
//   auto opt = inference::SlidingWindowOptions({64, 128, 128}).overlap(0.5).mode(inference::BlendMode::gaussian);
//   Tensor<float, mmnet::cpu> probs = inference::sliding_window_inference<mmnet::cuda>(image, net, opt);
//
// What it does, as MONAI does it (docs/inference.md has the details and the nnU-Net correspondence):
//  1. Pad each spatial axis that is shorter than the roi with padding_value (diff // 2 before, the rest after;
//     nnU-Net's pad_nd_image pads the same way, with 0).
//  2. Window starts along an axis (placement):
//     - WindowPlacement::monai (default): multiples of the scan interval int(roi * (1 - overlap)) (at least 1; the
//       roi itself when roi == padded size), as many as needed to reach the end, the last one snapped back to end
//       at the border (MONAI's _get_scan_interval and dense_patch_slices).
//     - WindowPlacement::nnunet: n = int(ceil((size - roi) / (roi * step))) + 1 windows, step = 1 - overlap
//       (nnU-Net's step_size), starts round_half_even(i * ((size - roi) / (n - 1))), i = 0 .. n - 1; n = 1 (start
//       0) when size == roi (nnU-Net v1's _compute_steps_for_sliding_window; e.g. 193 / 128 -> 0, 32, 65).
//     Windows are visited D-major (W fastest), as both do.
//  3. sw_batch_size windows at a time go to the network as one N x C x roi tensor on Backend (windows of all
//     images of the input batch, image-major, as MONAI does); it must return N x K x roi (any K >= 1).
//  4. Each window's prediction is multiplied by the importance map w and added into a host accumulator; w is
//     added into a count map; the result is accumulator / count. w is 1 ("constant", MONAI's default) or a
//     separable Gaussian with sigma = sigma_scale * roi (gaussian_style):
//     - GaussianStyle::monai (default): exp(-x^2 / (2 sigma^2)), x = i - (roi - 1) / 2, NOT normalised (max 1
//       only for odd roi), then clamped from below at max(min(w), 1e-3) (MONAI's compute_importance_map). MONAI
//       builds w in float32; mmnet builds it in double (differences ~1e-7 relative).
//     - GaussianStyle::nnunet: exp(-x^2 / (2 sigma^2)), x = i - roi // 2, 0 beyond scipy's truncation radius
//       int(4 sigma + 0.5), the product over the axes in double, rounded to float32, zeros replaced by the
//       smallest non-zero value; no clamp (nnU-Net v1's _get_gaussian: a delta at roi // 2 through
//       scipy.ndimage.gaussian_filter, divided by its maximum, cast to float32 -- bit-identical, see
//       docs/inference.md; at sigma_scale 1/8 the truncation radius reaches every voxel and no value is 0).
//  5. The padding is cropped off. Undoing a body crop / resampling (back to the original image space) is the
//     caller's job (data/crop.hpp).
// Mirror TTA (mirror_axes) averages whatever the network returns over the flips: a network that returns
// softmax probabilities gives nnU-Net v1's result (it averages and blends inference_apply_nonlin(net(x)), i.e.
// the softmax); one that returns logits averages logits.
// Accumulation is in double on the host whatever T and Backend are, so the result does not depend on
// sw_batch_size, on the backend or on the thread count (bit-identical), only on the network.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/expanding_array.hpp"
#include "../core/tensor.hpp"
#include "../data/volume.hpp"

namespace mmnet::inference {

// How overlapping window predictions are blended (MONAI's BlendMode).
enum class BlendMode { constant, gaussian };

inline const char* to_string(BlendMode m) { return m == BlendMode::constant ? "constant" : "gaussian"; }

// Where the windows go along each axis: MONAI's fixed scan interval with the last window snapped to the border,
// or nnU-Net v1's evenly spread windows (see the top of this file).
enum class WindowPlacement { monai, nnunet };

inline const char* to_string(WindowPlacement p) { return p == WindowPlacement::monai ? "monai" : "nnunet"; }

// Which Gaussian BlendMode::gaussian uses: MONAI's (centred at (roi - 1) / 2, clamped at 1e-3) or nnU-Net v1's
// (centred at roi // 2, float32 values, no clamp).
enum class GaussianStyle { monai, nnunet };

inline const char* to_string(GaussianStyle g) { return g == GaussianStyle::monai ? "monai" : "nnunet"; }

using Index3 = std::array<index_t, 3>;   // (D, H, W)
using Double3 = std::array<double, 3>;  // (D, H, W)

struct SlidingWindowOptions {
  // roi_size: the window (patch) size along (D, H, W), each >= 1; a single value means a cube.
  explicit SlidingWindowOptions(ExpandingArray3 roi_size) : roi_size_(roi_size) {}

  // nnU-Net v1's inference (predict_3D with its defaults): step_size 0.5 (overlap 0.5), nnU-Net's window
  // placement, its Gaussian (sigma = roi / 8), mirror TTA over all three axes, zero padding. Give it a network
  // that returns softmax probabilities to get nnU-Net's result (docs/inference.md).
  static SlidingWindowOptions nnunet(ExpandingArray3 roi_size) {
    return SlidingWindowOptions(roi_size)
        .overlap(0.5)
        .placement(WindowPlacement::nnunet)
        .mode(BlendMode::gaussian)
        .gaussian_style(GaussianStyle::nnunet)
        .mirror_axes({0, 1, 2});
  }

  const ExpandingArray3& roi_size() const { return roi_size_; }
  // Fraction of the roi two neighbouring windows share, per axis, in [0, 1) (default 0.25, MONAI's default;
  // nnU-Net uses 0.5).
  SlidingWindowOptions& overlap(double v) { overlap_ = {v, v, v}; return *this; }
  SlidingWindowOptions& overlap(Double3 v) { overlap_ = v; return *this; }
  const Double3& overlap() const { return overlap_; }
  // Window placement (default WindowPlacement::monai; nnU-Net's with WindowPlacement::nnunet, where
  // 1 - overlap is nnU-Net's step_size).
  SlidingWindowOptions& placement(WindowPlacement v) { placement_ = v; return *this; }
  WindowPlacement placement() const { return placement_; }
  // Blending of overlapping windows (default constant, MONAI's default; nnU-Net blends with a Gaussian).
  SlidingWindowOptions& mode(BlendMode v) { mode_ = v; return *this; }
  BlendMode mode() const { return mode_; }
  // Gaussian sigma as a fraction of the roi, per axis, > 0 (default 0.125 = 1/8, as MONAI and nnU-Net).
  SlidingWindowOptions& sigma_scale(double v) { sigma_scale_ = {v, v, v}; return *this; }
  SlidingWindowOptions& sigma_scale(Double3 v) { sigma_scale_ = v; return *this; }
  const Double3& sigma_scale() const { return sigma_scale_; }
  // The Gaussian's form when mode() is gaussian (default GaussianStyle::monai; ignored for constant blending).
  SlidingWindowOptions& gaussian_style(GaussianStyle v) { gaussian_style_ = v; return *this; }
  GaussianStyle gaussian_style() const { return gaussian_style_; }
  // Windows per network call, >= 1 (default 1, MONAI's sw_batch_size has no default; 1 is the lowest memory).
  SlidingWindowOptions& sw_batch_size(index_t v) { sw_batch_size_ = v; return *this; }
  index_t sw_batch_size() const { return sw_batch_size_; }
  // Value of the constant padding when the image is smaller than the roi (MONAI's cval, default 0).
  SlidingWindowOptions& padding_value(double v) { padding_value_ = v; return *this; }
  double padding_value() const { return padding_value_; }
  // Byte budget for what this function allocates (0: unlimited, the default): the double accumulator
  // (N x K x D x H x W) and count map (D x H x W), the importance map, and per window in flight its input and
  // output on the host and on Backend (plus the double TTA sum with mirroring). The first network call then
  // takes one window (to learn K); later calls take as many windows as fit, at most sw_batch_size. A budget
  // that cannot hold the accumulators plus one window throws value_error. The network's own working memory is
  // not counted: lower sw_batch_size for that.
  SlidingWindowOptions& memory_limit(std::size_t bytes) { memory_limit_ = bytes; return *this; }
  std::size_t memory_limit() const { return memory_limit_; }
  // Mirror test-time augmentation (nnU-Net's): spatial axes (0 = D, 1 = H, 2 = W) to mirror; each window's
  // prediction is the mean of the network output on the window and, for every non-empty combination of these
  // axes (itertools.combinations order: singles, pairs, triple), the flipped-back output on the flipped window.
  // Empty (the default): no TTA. Costs 2^len - 1 extra network calls per batch. The mean is over what the
  // network returns: nnU-Net v1 averages the softmax, so give a network that ends in a softmax for its result.
  SlidingWindowOptions& mirror_axes(std::vector<int> v) { mirror_axes_ = std::move(v); return *this; }
  const std::vector<int>& mirror_axes() const { return mirror_axes_; }

 private:
  ExpandingArray3 roi_size_;
  Double3 overlap_{0.25, 0.25, 0.25};
  WindowPlacement placement_ = WindowPlacement::monai;
  BlendMode mode_ = BlendMode::constant;
  GaussianStyle gaussian_style_ = GaussianStyle::monai;
  Double3 sigma_scale_{0.125, 0.125, 0.125};
  index_t sw_batch_size_ = 1;
  double padding_value_ = 0.0;
  std::size_t memory_limit_ = 0;
  std::vector<int> mirror_axes_;
};

// Where the windows go for one image size (the padding, then MONAI's _get_scan_interval and dense_patch_slices
// or nnU-Net v1's _compute_steps_for_sliding_window).
struct WindowPlan {
  Index3 image_size{};   // the input's spatial size
  Index3 padded_size{};  // max(image_size, roi)
  Index3 pad_before{};   // padding before each axis: (roi - size) // 2 when positive
  Index3 roi{};
  // MONAI placement: the scan interval. nnU-Net placement: the largest distance between consecutive starts
  // (the roi when the axis has one window).
  Index3 scan_interval{};
  std::array<std::vector<index_t>, 3> axis_starts;  // window starts along D, H and W, in padded coordinates
  std::vector<Index3> starts;  // all window starts in padded coordinates, D-major order (W fastest)
};

// What a run did (optional output).
struct SlidingWindowInfo {
  index_t windows = 0;        // per image
  index_t network_calls = 0;  // including the mirror TTA calls
  index_t batch_size = 0;     // windows per call after the memory limit (the last call may take fewer)
  index_t out_channels = 0;   // K
  std::size_t bytes = 0;      // what the memory budget counted at the chosen batch size
};

namespace detail {

inline constexpr const char* sw_component = "mmnet::inference::sliding_window_inference";

template <class U>
struct type_identity {
  using type = U;
};

inline std::string str3(const Index3& v) {
  return "(" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", " + std::to_string(v[2]) + ")";
}
inline std::string str3(const Double3& v) {
  return "(" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ", " + std::to_string(v[2]) + ")";
}

inline void check_options(const SlidingWindowOptions& o) {
  const auto& r = o.roi_size();
  if (r.d <= 0 || r.h <= 0 || r.w <= 0) fail<value_error>(sw_component, "roi_size", "all >= 1", r.str());
  for (int a = 0; a < 3; ++a) {
    const double ov = o.overlap()[static_cast<std::size_t>(a)];
    if (!(ov >= 0.0 && ov < 1.0))
      fail<value_error>(sw_component, "overlap along axis " + std::to_string(a), "in [0, 1)", ov);
    const double s = o.sigma_scale()[static_cast<std::size_t>(a)];
    if (o.mode() == BlendMode::gaussian && !(s > 0.0 && std::isfinite(s)))
      fail<value_error>(sw_component, "sigma_scale along axis " + std::to_string(a), "> 0", s);
  }
  if (o.sw_batch_size() < 1) fail<value_error>(sw_component, "sw_batch_size", ">= 1", o.sw_batch_size());
  if (!std::isfinite(o.padding_value())) fail<value_error>(sw_component, "padding_value", "finite", o.padding_value());
  bool seen[3] = {false, false, false};
  for (int a : o.mirror_axes()) {
    if (a < 0 || a > 2) fail<value_error>(sw_component, "mirror axis", "0, 1 or 2 (D, H, W)", a);
    if (seen[a]) fail<value_error>(sw_component, "mirror axes", "each axis at most once", a, "repeated");
    seen[a] = true;
  }
}

// nnU-Net's order: itertools.combinations of the axes by size 1, 2, 3.
inline std::vector<std::vector<int>> mirror_combinations(const std::vector<int>& axes) {
  std::vector<std::vector<int>> out;
  const int n = static_cast<int>(axes.size());
  for (int k = 1; k <= n; ++k) {
    std::vector<int> idx(static_cast<std::size_t>(k));
    for (int i = 0; i < k; ++i) idx[static_cast<std::size_t>(i)] = i;
    while (true) {
      std::vector<int> c;
      for (int i : idx) c.push_back(axes[static_cast<std::size_t>(i)]);
      out.push_back(c);
      int i = k - 1;
      while (i >= 0 && idx[static_cast<std::size_t>(i)] == n - k + i) --i;
      if (i < 0) break;
      ++idx[static_cast<std::size_t>(i)];
      for (int j = i + 1; j < k; ++j) idx[static_cast<std::size_t>(j)] = idx[static_cast<std::size_t>(j - 1)] + 1;
    }
  }
  return out;
}

// Reverses the given spatial axes of a host n x c x d x h x w array (out-of-place).
template <class U>
std::vector<U> flip_host(const std::vector<U>& x, index_t nc, const Index3& s, const std::vector<int>& axes) {
  bool f[3] = {false, false, false};
  for (int a : axes) f[a] = true;
  std::vector<U> y(x.size());
  const index_t D = s[0], H = s[1], W = s[2];
#pragma omp parallel for collapse(2) schedule(static)
  for (index_t q = 0; q < nc; ++q)
    for (index_t z = 0; z < D; ++z) {
      const index_t zs = f[0] ? D - 1 - z : z;
      for (index_t yy = 0; yy < H; ++yy) {
        const index_t ys = f[1] ? H - 1 - yy : yy;
        const U* src = x.data() + ((q * D + zs) * H + ys) * W;
        U* dst = y.data() + ((q * D + z) * H + yy) * W;
        if (f[2])
          for (index_t xx = 0; xx < W; ++xx) dst[xx] = src[W - 1 - xx];
        else
          std::copy(src, src + W, dst);
      }
    }
  return y;
}

// numpy's round (half to even) for v >= 0; v - floor(v) is exact, so ties are recognised exactly.
inline index_t round_half_even(double v) {
  double f = std::floor(v);
  const double r = v - f;
  if (r > 0.5 || (r == 0.5 && std::fmod(f, 2.0) != 0.0)) f += 1.0;
  return static_cast<index_t>(f);
}

// MONAI's starts along one axis of padded size `size` (_get_scan_interval, dense_patch_slices).
inline std::vector<index_t> monai_starts(index_t size, index_t roi, double overlap, index_t& interval) {
  // The same double arithmetic as Python's int(roi * (1 - o)).
  interval = roi;
  if (roi != size) {
    interval = static_cast<index_t>(static_cast<double>(roi) * (1.0 - overlap));
    if (interval <= 0) interval = 1;
  }
  // dense_patch_slices (patch size min(size, roi) = roi after padding).
  const index_t num = (size + interval - 1) / interval;
  index_t scan_num = 1;
  for (index_t d = 0; d < num; ++d)
    if (d * interval + roi >= size) {
      scan_num = d + 1;
      break;
    }
  std::vector<index_t> starts;
  for (index_t i = 0; i < scan_num; ++i) {
    index_t start = i * interval;
    start -= std::max<index_t>(start + roi - size, 0);
    starts.push_back(start);
  }
  return starts;
}

// nnU-Net v1's starts along one axis of padded size `size` >= roi (_compute_steps_for_sliding_window with
// step_size = 1 - overlap), in its double arithmetic: target step roi * step_size, n = int(ceil((size - roi) /
// target)) + 1 (1 when size == roi), actual step (size - roi) / (n - 1), starts int(np.round(actual * i)).
inline std::vector<index_t> nnunet_starts(index_t size, index_t roi, double overlap) {
  const double target = static_cast<double>(roi) * (1.0 - overlap);
  const index_t n = static_cast<index_t>(std::ceil(static_cast<double>(size - roi) / target)) + 1;
  const double actual = n > 1 ? static_cast<double>(size - roi) / static_cast<double>(n - 1) : 0.0;
  std::vector<index_t> starts;
  for (index_t i = 0; i < n; ++i) starts.push_back(round_half_even(actual * static_cast<double>(i)));
  return starts;
}

}  // namespace detail

// The window placement (options.placement(): MONAI's or nnU-Net v1's) for an image of spatial size image_size
// (each >= 1).
inline WindowPlan plan_windows(const Index3& image_size, const SlidingWindowOptions& options) {
  detail::check_options(options);
  for (int a = 0; a < 3; ++a)
    if (image_size[static_cast<std::size_t>(a)] < 1)
      fail<shape_error>(detail::sw_component, "image spatial size", "all >= 1", detail::str3(image_size));
  WindowPlan p;
  p.image_size = image_size;
  auto& axis_starts = p.axis_starts;
  for (std::size_t a = 0; a < 3; ++a) {
    const index_t roi = options.roi_size()[static_cast<int>(a)];
    p.roi[a] = roi;
    p.padded_size[a] = std::max(image_size[a], roi);
    p.pad_before[a] = std::max<index_t>(roi - image_size[a], 0) / 2;
    const index_t size = p.padded_size[a];
    if (options.placement() == WindowPlacement::monai) {
      axis_starts[a] = detail::monai_starts(size, roi, options.overlap()[a], p.scan_interval[a]);
    } else {
      axis_starts[a] = detail::nnunet_starts(size, roi, options.overlap()[a]);
      const auto& st = axis_starts[a];
      p.scan_interval[a] = st.size() == 1 ? roi : 0;
      for (std::size_t i = 1; i < st.size(); ++i) p.scan_interval[a] = std::max(p.scan_interval[a], st[i] - st[i - 1]);
    }
  }
  for (index_t z : axis_starts[0])
    for (index_t y : axis_starts[1])
      for (index_t x : axis_starts[2]) p.starts.push_back({z, y, x});
  return p;
}

// The importance map for a roi (D x H x W values, W fastest), in double: 1 (constant), MONAI's
// compute_importance_map (GaussianStyle::monai) or nnU-Net v1's _get_gaussian (GaussianStyle::nnunet, float32
// values stored in double).
inline std::vector<double> importance_map(const Index3& roi, BlendMode mode,
                                          const Double3& sigma_scale = {0.125, 0.125, 0.125},
                                          GaussianStyle style = GaussianStyle::monai) {
  const std::size_t n = static_cast<std::size_t>(roi[0] * roi[1] * roi[2]);
  if (mode == BlendMode::constant) return std::vector<double>(n, 1.0);
  const bool nn = style == GaussianStyle::nnunet;
  std::array<std::vector<double>, 3> g;
  for (std::size_t a = 0; a < 3; ++a) {
    const double sigma = static_cast<double>(roi[a]) * sigma_scale[a];
    // scipy.ndimage.gaussian_filter's kernel radius (truncate = 4): nnU-Net's filtered delta is 0 beyond it.
    const index_t radius = static_cast<index_t>(4.0 * sigma + 0.5);
    for (index_t i = 0; i < roi[a]; ++i) {
      if (nn) {
        const index_t d = i - roi[a] / 2;
        g[a].push_back(std::abs(d) > radius ? 0.0
                                             : std::exp(-static_cast<double>(d * d) / (2.0 * sigma * sigma)));
      } else {
        const double x = -(static_cast<double>(roi[a]) - 1.0) / 2.0 + static_cast<double>(i);
        g[a].push_back(std::exp(x * x / (-2.0 * sigma * sigma)));
      }
    }
  }
  std::vector<double> w(n);
  std::size_t k = 0;
  for (index_t z = 0; z < roi[0]; ++z)
    for (index_t y = 0; y < roi[1]; ++y)
      for (index_t x = 0; x < roi[2]; ++x) w[k++] = g[0][static_cast<std::size_t>(z)] * g[1][static_cast<std::size_t>(y)] * g[2][static_cast<std::size_t>(x)];
  if (nn) {
    // nnU-Net: max 1 (exactly 1 here: the centre is exp(0)), astype(float32), then zeros (beyond the truncation
    // radius or underflowed in float32) replaced by the smallest non-zero value so no voxel has zero weight.
    double lo = 1.0;
    for (auto& v : w) {
      v = static_cast<double>(static_cast<float>(v));
      if (v > 0.0) lo = std::min(lo, v);
    }
    for (auto& v : w)
      if (v == 0.0) v = lo;
    return w;
  }
  // MONAI: "handle non-positive weights": clamp at max(min(w), 1e-3), i.e. raise values below 1e-3 to 1e-3.
  const double lo = std::max(*std::min_element(w.begin(), w.end()), 1e-3);
  for (auto& v : w) v = std::max(v, lo);
  return w;
}

template <class T, class Backend>
using Network = std::function<Tensor<T, Backend>(const Tensor<T, Backend>&)>;

// image: N x C x D x H x W on the host (N >= 1 images, each run through the same windows). network: N' x C x roi
// on Backend -> N' x K x roi on Backend. Returns N x K x D x H x W on the host (the blended network outputs:
// logits stay logits, probabilities stay probabilities). Call as sliding_window_inference<mmnet::cuda>(...).
template <class Backend, class T>
Tensor<T, cpu> sliding_window_inference(const Tensor<T, cpu>& image,
                                        const typename detail::type_identity<Network<T, Backend>>::type& network,
                                        const SlidingWindowOptions& options, SlidingWindowInfo* info = nullptr) {
  using detail::sw_component;
  check_rank(sw_component, "image (N x C x D x H x W)", image, 5);
  if (image.numel() == 0) fail<shape_error>(sw_component, "image", "a non-empty N x C x D x H x W tensor", image.shape().str());
  if (!network) fail<value_error>(sw_component, "network", "a callable", "an empty std::function");
  const index_t N = image.size(0), C = image.size(1);
  const Index3 size{image.size(2), image.size(3), image.size(4)};
  const WindowPlan plan = plan_windows(size, options);
  const Index3& roi = plan.roi;
  const index_t roi_vox = roi[0] * roi[1] * roi[2];
  const index_t vox = size[0] * size[1] * size[2];
  const index_t num_win = static_cast<index_t>(plan.starts.size());
  const index_t total = N * num_win;
  const std::vector<double> w = importance_map(roi, options.mode(), options.sigma_scale(), options.gaussian_style());
  const auto combos = detail::mirror_combinations(options.mirror_axes());
  const T pad_value = static_cast<T>(options.padding_value());
  const T* src = image.data();

  // Window origin in image coordinates (negative where padding precedes the image).
  auto origin = [&](index_t widx) {
    const Index3& s = plan.starts[static_cast<std::size_t>(widx)];
    return Index3{s[0] - plan.pad_before[0], s[1] - plan.pad_before[1], s[2] - plan.pad_before[2]};
  };

  // Host gather of windows [first, first + b) of the flattened (image, window) list, padded with pad_value.
  auto gather = [&](index_t first, index_t b) {
    std::vector<T> x(static_cast<std::size_t>(b * C * roi_vox));
#pragma omp parallel for collapse(3) schedule(static)
    for (index_t j = 0; j < b; ++j)
      for (index_t c = 0; c < C; ++c)
        for (index_t z = 0; z < roi[0]; ++z) {
          const index_t idx = first + j, n = idx / num_win;
          const Index3 o = origin(idx % num_win);
          const index_t iz = o[0] + z;
          T* dst = x.data() + ((j * C + c) * roi[0] + z) * roi[1] * roi[2];
          for (index_t y = 0; y < roi[1]; ++y) {
            const index_t iy = o[1] + y;
            T* row = dst + y * roi[2];
            if (iz < 0 || iz >= size[0] || iy < 0 || iy >= size[1]) {
              std::fill(row, row + roi[2], pad_value);
              continue;
            }
            const T* srow = src + (((n * C + c) * size[0] + iz) * size[1] + iy) * size[2];
            for (index_t xx = 0; xx < roi[2]; ++xx) {
              const index_t ix = o[2] + xx;
              row[xx] = (ix < 0 || ix >= size[2]) ? pad_value : srow[ix];
            }
          }
        }
    return x;
  };

  index_t K = 0;
  index_t calls = 0;
  // One network call with its shape checks; returns the host copy of the output.
  auto call = [&](const std::vector<T>& xh, index_t b) {
    const auto xb = Tensor<T, Backend>::from_host(Shape{b, C, roi[0], roi[1], roi[2]}, xh.data());
    const Tensor<T, Backend> y = network(xb);
    ++calls;
    if (!y.defined() || y.rank() != 5 || y.size(0) != b || y.size(2) != roi[0] || y.size(3) != roi[1] ||
        y.size(4) != roi[2] || y.size(1) < 1 || (K > 0 && y.size(1) != K))
      fail<shape_error>(sw_component, "network output shape",
                        "(" + std::to_string(b) + ", " + (K > 0 ? std::to_string(K) : std::string("K >= 1")) + ", " +
                            std::to_string(roi[0]) + ", " + std::to_string(roi[1]) + ", " + std::to_string(roi[2]) + ")",
                        y.defined() ? y.shape().str() : std::string("an empty tensor"),
                        "network input shape " + xb.shape().str());
    K = y.size(1);
    return y.to_vector();
  };

  // The prediction for a batch of windows in double: the network output, or with mirroring nnU-Net's mean.
  auto predict = [&](index_t first, index_t b) {
    const std::vector<T> xh = gather(first, b);
    const std::vector<T> y0 = call(xh, b);
    std::vector<double> p(y0.begin(), y0.end());
    if (!combos.empty()) {
      for (const auto& axes : combos) {
        const std::vector<T> yf = detail::flip_host(call(detail::flip_host(xh, b * C, roi, axes), b), b * K, roi, axes);
        for (std::size_t i = 0; i < p.size(); ++i) p[i] += static_cast<double>(yf[i]);
      }
      const double denom = static_cast<double>(combos.size() + 1);
      for (auto& v : p) v /= denom;
    }
    return p;
  };

  // Memory accounting (see SlidingWindowOptions::memory_limit).
  const std::size_t limit = options.memory_limit();
  auto fixed_bytes = [&](index_t k) {
    return static_cast<std::size_t>(N * k * vox + vox + roi_vox) * sizeof(double);
  };
  auto window_bytes = [&](index_t k) {
    std::size_t b = static_cast<std::size_t>((C + k) * roi_vox) * sizeof(T) * 2;  // host + Backend copies
    if (!combos.empty()) b += static_cast<std::size_t>(k * roi_vox) * (sizeof(double) + sizeof(T) * 2);
    return b;
  };

  std::vector<double> acc, count;
  index_t batch = std::min<index_t>(options.sw_batch_size(), total);
  // Adds the predictions of windows [first, first + b) into the accumulator and count map (image region only:
  // padded voxels are cropped off at the end, and each voxel's normalisation is its own).
  auto accumulate = [&](const std::vector<double>& p, index_t first, index_t b) {
    for (index_t j = 0; j < b; ++j) {
      const index_t idx = first + j, n = idx / num_win, widx = idx % num_win;
      const Index3 o = origin(widx);
      const Index3 lo{std::max<index_t>(0, -o[0]), std::max<index_t>(0, -o[1]), std::max<index_t>(0, -o[2])};
      const Index3 hi{std::min(roi[0], size[0] - o[0]), std::min(roi[1], size[1] - o[1]), std::min(roi[2], size[2] - o[2])};
      const bool add_count = n == 0;  // the count map is shared by the images of the batch (MONAI)
#pragma omp parallel for collapse(2) schedule(static)
      for (index_t k = 0; k < K; ++k)
        for (index_t z = lo[0]; z < hi[0]; ++z)
          for (index_t y = lo[1]; y < hi[1]; ++y) {
            const double* pr = p.data() + (((j * K + k) * roi[0] + z) * roi[1] + y) * roi[2];
            const double* wr = w.data() + (z * roi[1] + y) * roi[2];
            double* ar = acc.data() + (((n * K + k) * size[0] + o[0] + z) * size[1] + o[1] + y) * size[2] + o[2];
            for (index_t x = lo[2]; x < hi[2]; ++x) ar[x] += pr[x] * wr[x];
            if (add_count && k == 0) {
              double* cr = count.data() + ((o[0] + z) * size[1] + o[1] + y) * size[2] + o[2];
              for (index_t x = lo[2]; x < hi[2]; ++x) cr[x] += wr[x];
            }
          }
    }
  };

  index_t done = 0;
  while (done < total) {
    index_t b = std::min(batch, total - done);
    if (K == 0 && limit > 0) b = 1;  // learn K with the smallest call before sizing the batch
    const std::vector<double> p = predict(done, b);
    if (acc.empty()) {
      if (limit > 0) {
        const std::size_t need = fixed_bytes(K) + window_bytes(K);
        if (need > limit)
          fail<value_error>(sw_component, "memory_limit (bytes)", "at least " + std::to_string(need), limit,
                            "accumulator " + std::to_string(N) + " x " + std::to_string(K) + " x " +
                                detail::str3(size) + " doubles, count map and one " + detail::str3(roi) + " window");
        const index_t fit = static_cast<index_t>((limit - fixed_bytes(K)) / window_bytes(K));
        batch = std::max<index_t>(1, std::min(batch, fit));
      }
      acc.assign(static_cast<std::size_t>(N * K * vox), 0.0);
      count.assign(static_cast<std::size_t>(vox), 0.0);
    }
    accumulate(p, done, b);
    done += b;
  }

  Tensor<T, cpu> out(Shape{N, K, size[0], size[1], size[2]});
  T* o = out.data();
  const index_t per_image = K * vox;
#pragma omp parallel for schedule(static)
  for (index_t i = 0; i < N * per_image; ++i)
    o[i] = static_cast<T>(acc[static_cast<std::size_t>(i)] / count[static_cast<std::size_t>(i % vox)]);
  if (info) {
    info->windows = num_win;
    info->network_calls = calls;
    info->batch_size = batch;
    info->out_channels = K;
    info->bytes = fixed_bytes(K) + static_cast<std::size_t>(batch) * window_bytes(K);
  }
  return out;
}

// A data::Volume (C x D x H x W float) run through a network in T on Backend; returns the K x D x H x W blended
// outputs as a Volume with the input's spacing. Call as sliding_window_inference<mmnet::cuda, float>(...).
template <class Backend, class T = float>
data::Volume sliding_window_inference(const data::Volume& image,
                                      const typename detail::type_identity<Network<T, Backend>>::type& network,
                                      const SlidingWindowOptions& options, SlidingWindowInfo* info = nullptr) {
  if (static_cast<index_t>(image.data.size()) != image.channels * image.voxels())
    fail<shape_error>(detail::sw_component, "volume data size", image.channels * image.voxels(), image.data.size(),
                      "volume " + image.shape().str());
  const Shape s{1, image.channels, image.depth, image.height, image.width};
  if (s.numel() == 0) fail<shape_error>(detail::sw_component, "image", "a non-empty C x D x H x W volume", image.shape().str());
  const auto x = Tensor<T, cpu>::from_vector(s, image.data);
  const Tensor<T, cpu> y = sliding_window_inference<Backend, T>(x, network, options, info);
  data::Volume out(y.size(1), image.depth, image.height, image.width, image.spacing);
  const T* p = y.data();
  std::transform(p, p + y.numel(), out.data.begin(), [](T v) { return static_cast<float>(v); });
  return out;
}

}  // namespace mmnet::inference
