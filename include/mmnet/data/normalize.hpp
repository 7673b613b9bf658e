// mmnet/data/normalize.hpp: per-modality intensity normalisation of a Volume, in place, channel by channel.
//
// Python equivalents: otsu_threshold = skimage.filters.threshold_otsu(x, nbins=256) (numpy.histogram binning,
// the first maximum of the between-class variance); NormalizeMode::body_zscore = MMFNet's "intra-body"
// normalisation (spec §4: z-score with the mean/std of the voxels above the volume's Otsu threshold, applied to
// every voxel, then an optional per-modality clip, no rescale after it); NormalizeMode::zscore = nnU-Net's
// ZScoreNormalization without a mask; NormalizeMode::ct_percentile = nnU-Net's CTNormalization (clip to the
// 0.5/99.5 percentiles, then z-score) with the statistics taken from the volume itself unless dataset-wide ones
// are given (nnU-Net takes them from the training set's foreground voxels: pass them with dataset_stats()).
// NormalizeOptions::use_nonzero_mask(true) with mode zscore = nnU-Net's ZScoreNormalization with
// use_mask_for_norm (its default for MRI data sets such as BraTS, whose crop to the non-zero box shrinks the
// volume by > 25%): mean/std over the case's non-zero mask (nonzero_mask(): voxels where ANY channel is
// non-zero, holes filled, as nnU-Net's create_nonzero_mask), voxels outside the mask set to 0.
// Statistics are accumulated in double; std is the population std (numpy's ddof=0) floored at eps (1e-8, as
// nnU-Net's max(std, 1e-8)).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "volume.hpp"

namespace mmnet::data {

namespace detail {
inline std::string where(const std::string& case_name, index_t channel) {
  return (case_name.empty() ? std::string() : "case '" + case_name + "', ") + "channel " + std::to_string(channel);
}
}  // namespace detail

// Throws value_error naming the case, the channel and the first non-finite voxel (z, y, x).
inline void check_finite(const Volume& v, index_t channel, const std::string& component, const std::string& case_name) {
  const float* x = v.channel(channel);
  for (index_t i = 0; i < v.voxels(); ++i)
    if (!std::isfinite(x[i])) {
      const index_t z = i / (v.height * v.width), y = (i / v.width) % v.height, w = i % v.width;
      fail<value_error>(component, "intensities", "finite values", x[i],
                        detail::where(case_name, channel) + ", voxel (" + std::to_string(z) + ", " +
                            std::to_string(y) + ", " + std::to_string(w) + ")");
    }
}

// skimage.filters.threshold_otsu(x, nbins): numpy.histogram's uniform bins over [min, max] (the same edge and
// index arithmetic in double, so voxels on a bin edge land in the same bin), the threshold is the centre of the
// first bin maximising weight1 * weight2 * (mean1 - mean2)^2. A constant input returns its value (skimage does).
// The body mask is then x > threshold.
inline double otsu_threshold(const float* x, index_t n, int nbins = 256) {
  const char* component = "mmnet::data::otsu_threshold";
  if (n <= 0) fail<value_error>(component, "voxel count", "> 0", n);
  if (nbins < 2) fail<value_error>(component, "nbins", ">= 2", nbins);
  double lo = x[0], hi = x[0];
  for (index_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) fail<value_error>(component, "intensities", "finite values", x[i], "index " + std::to_string(i));
    lo = std::min(lo, static_cast<double>(x[i]));
    hi = std::max(hi, static_cast<double>(x[i]));
  }
  if (lo == hi) return lo;
  const auto nb = static_cast<std::size_t>(nbins);
  // numpy.linspace(lo, hi, nbins + 1): i * step + lo, the last edge exactly hi.
  std::vector<double> edges(nb + 1);
  const double step = (hi - lo) / static_cast<double>(nbins);
  for (std::size_t i = 0; i < nb; ++i) edges[i] = static_cast<double>(i) * step + lo;
  edges[nb] = hi;
  const double norm = static_cast<double>(nbins) / (hi - lo);
  std::vector<std::int64_t> counts(nb, 0);
  for (index_t i = 0; i < n; ++i) {
    const double v = x[i];
    auto k = static_cast<std::ptrdiff_t>((v - lo) * norm);
    if (k == nbins) --k;
    if (v < edges[static_cast<std::size_t>(k)]) --k;
    if (v >= edges[static_cast<std::size_t>(k) + 1] && k != nbins - 1) ++k;
    ++counts[static_cast<std::size_t>(k)];
  }
  std::vector<double> centers(nb), w1(nb), w2(nb), m1(nb), m2(nb);
  for (std::size_t i = 0; i < nb; ++i) centers[i] = (edges[i] + edges[i + 1]) / 2.0;
  // Cumulative sums in numpy's order (sequential from the front, and from the back for class 2).
  std::int64_t c = 0;
  double s = 0;
  for (std::size_t i = 0; i < nb; ++i) {
    c += counts[i];
    s += static_cast<double>(counts[i]) * centers[i];
    w1[i] = static_cast<double>(c);
    m1[i] = s / w1[i];
  }
  c = 0;
  s = 0;
  for (std::size_t i = nb; i-- > 0;) {
    c += counts[i];
    s += static_cast<double>(counts[i]) * centers[i];
    w2[i] = static_cast<double>(c);
    m2[i] = s / w2[i];
  }
  // No 0/0: the first bin holds the minimum and the last the maximum, so w1[i] > 0 and w2[i] > 0 everywhere.
  std::size_t best = 0;
  double best_v = -1.0;
  for (std::size_t i = 0; i + 1 < nb; ++i) {
    const double d = m1[i] - m2[i + 1];
    const double v = w1[i] * w2[i + 1] * d * d;
    if (v > best_v) {
      best_v = v;
      best = i;
    }
  }
  return centers[best];
}

inline double otsu_threshold(const Volume& v, index_t channel, int nbins = 256) {
  if (channel < 0 || channel >= v.channels)
    fail<value_error>("mmnet::data::otsu_threshold", "channel", "in [0, " + std::to_string(v.channels) + ")", channel);
  return otsu_threshold(v.channel(channel), v.voxels(), nbins);
}

// The body mask of one channel: 1 where x > otsu_threshold (skimage's foreground convention), else 0.
inline std::vector<std::uint8_t> otsu_mask(const Volume& v, index_t channel, int nbins = 256) {
  const double t = otsu_threshold(v, channel, nbins);
  std::vector<std::uint8_t> m(static_cast<std::size_t>(v.voxels()));
  const float* x = v.channel(channel);
  for (index_t i = 0; i < v.voxels(); ++i) m[static_cast<std::size_t>(i)] = static_cast<double>(x[i]) > t ? 1 : 0;
  return m;
}

// nnU-Net's create_nonzero_mask: 1 where any channel of v is non-zero, then scipy.ndimage.binary_fill_holes
// (background components not 6-connected to the volume's border become foreground). D x H x W bytes.
inline std::vector<std::uint8_t> nonzero_mask(const Volume& v) {
  const index_t n = v.voxels(), D = v.depth, H = v.height, W = v.width;
  std::vector<std::uint8_t> m(static_cast<std::size_t>(n), 0);
  for (index_t c = 0; c < v.channels; ++c) {
    const float* x = v.channel(c);
    for (index_t i = 0; i < n; ++i)
      if (x[i] != 0.0f) m[static_cast<std::size_t>(i)] = 1;
  }
  // Flood the background from the border (6-connectivity: binary_fill_holes' default cross structure); what
  // the flood does not reach is a hole.
  std::vector<std::uint8_t> outside(static_cast<std::size_t>(n), 0);
  std::vector<index_t> stack;
  auto push = [&](index_t i) {
    if (!m[static_cast<std::size_t>(i)] && !outside[static_cast<std::size_t>(i)]) {
      outside[static_cast<std::size_t>(i)] = 1;
      stack.push_back(i);
    }
  };
  for (index_t z = 0; z < D; ++z)
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x)
        if (z == 0 || y == 0 || x == 0 || z == D - 1 || y == H - 1 || x == W - 1) push((z * H + y) * W + x);
  while (!stack.empty()) {
    const index_t i = stack.back();
    stack.pop_back();
    const index_t z = i / (H * W), y = (i / W) % H, x = i % W;
    if (z > 0) push(i - H * W);
    if (z + 1 < D) push(i + H * W);
    if (y > 0) push(i - W);
    if (y + 1 < H) push(i + W);
    if (x > 0) push(i - 1);
    if (x + 1 < W) push(i + 1);
  }
  for (index_t i = 0; i < n; ++i) m[static_cast<std::size_t>(i)] = outside[static_cast<std::size_t>(i)] ? 0 : 1;
  return m;
}

enum class NormalizeMode {
  body_zscore,    // MMFNet: mean/std of the voxels above the Otsu threshold (the default)
  zscore,         // nnU-Net ZScoreNormalization: mean/std of all voxels
  ct_percentile,  // nnU-Net CTNormalization: clip to percentiles, then z-score
};

// Clip range of one channel, applied after the z-score.
struct ClipRange {
  double lower, upper;
};

// Dataset-wide statistics for ct_percentile (nnU-Net's dataset fingerprint: percentile_00_5, percentile_99_5,
// mean and std of the training foreground).
struct IntensityStats {
  double lower, upper, mean, std;
};

struct NormalizeOptions {
  explicit NormalizeOptions(NormalizeMode mode = NormalizeMode::body_zscore) : mode_(mode) {}

  // nnU-Net's MRI setting (BraTS, MAML spec §4.2): z-score inside the non-zero mask, 0 outside.
  static NormalizeOptions nnunet_mri() { return NormalizeOptions(NormalizeMode::zscore).use_nonzero_mask(true); }
  // MMFNet's setting for channels (T1, T2, CET1): body z-score, clips [-2, 1], [-3, 2], [-2, 3.5] (spec §4).
  static NormalizeOptions mmfnet() {
    return NormalizeOptions(NormalizeMode::body_zscore).clip(0, -2.0, 1.0).clip(1, -3.0, 2.0).clip(2, -2.0, 3.5);
  }

  NormalizeOptions& mode(NormalizeMode m) { mode_ = m; return *this; }
  NormalizeMode mode() const { return mode_; }
  // Clip channel c's normalised values to [lower, upper] (no clip for channels without one; none by default).
  NormalizeOptions& clip(index_t c, double lower, double upper) {
    if (c < 0) fail<value_error>("mmnet::data::NormalizeOptions", "clip channel", ">= 0", c);
    if (!(lower <= upper))
      fail<value_error>("mmnet::data::NormalizeOptions", "clip range", "lower <= upper",
                        "[" + std::to_string(lower) + ", " + std::to_string(upper) + "]");
    if (clips_.size() <= static_cast<std::size_t>(c)) clips_.resize(static_cast<std::size_t>(c) + 1);
    clips_[static_cast<std::size_t>(c)] = ClipRange{lower, upper};
    return *this;
  }
  const std::vector<std::optional<ClipRange>>& clips() const { return clips_; }
  std::optional<ClipRange> clip_of(index_t c) const {
    return static_cast<std::size_t>(c) < clips_.size() ? clips_[static_cast<std::size_t>(c)] : std::nullopt;
  }
  // ct_percentile: the percentiles (numpy's linear interpolation) of the volume's voxels; default 0.5 / 99.5.
  NormalizeOptions& percentiles(double lower, double upper) {
    if (!(0.0 <= lower && lower <= upper && upper <= 100.0))
      fail<value_error>("mmnet::data::NormalizeOptions", "percentiles", "0 <= lower <= upper <= 100",
                        "(" + std::to_string(lower) + ", " + std::to_string(upper) + ")");
    lower_percentile_ = lower;
    upper_percentile_ = upper;
    return *this;
  }
  double lower_percentile() const { return lower_percentile_; }
  double upper_percentile() const { return upper_percentile_; }
  // ct_percentile with fixed dataset statistics for channel c instead of the volume's own.
  NormalizeOptions& dataset_stats(index_t c, IntensityStats s) {
    if (c < 0) fail<value_error>("mmnet::data::NormalizeOptions", "dataset_stats channel", ">= 0", c);
    if (stats_.size() <= static_cast<std::size_t>(c)) stats_.resize(static_cast<std::size_t>(c) + 1);
    stats_[static_cast<std::size_t>(c)] = s;
    return *this;
  }
  std::optional<IntensityStats> dataset_stats_of(index_t c) const {
    return static_cast<std::size_t>(c) < stats_.size() ? stats_[static_cast<std::size_t>(c)] : std::nullopt;
  }
  // zscore only: statistics over nonzero_mask(v) (shared by all channels), voxels outside it set to 0
  // (nnU-Net's use_mask_for_norm); default false. An all-zero volume (empty mask) is left all 0.
  NormalizeOptions& use_nonzero_mask(bool b) { use_nonzero_mask_ = b; return *this; }
  bool use_nonzero_mask() const { return use_nonzero_mask_; }
  // Floor of the std in the division (nnU-Net: 1e-8).
  NormalizeOptions& eps(double e) { eps_ = e; return *this; }
  double eps() const { return eps_; }
  // Otsu histogram bins (skimage default 256).
  NormalizeOptions& nbins(int n) { nbins_ = n; return *this; }
  int nbins() const { return nbins_; }

 private:
  NormalizeMode mode_;
  std::vector<std::optional<ClipRange>> clips_;
  std::vector<std::optional<IntensityStats>> stats_;
  double lower_percentile_ = 0.5, upper_percentile_ = 99.5;
  double eps_ = 1e-8;
  int nbins_ = 256;
  bool use_nonzero_mask_ = false;
};

// What normalize() used for one channel (threshold only for body_zscore; mask_voxels for body_zscore and the
// non-zero mask; lower/upper only for
// ct_percentile).
struct ChannelStats {
  double threshold = 0, mean = 0, std = 0, lower = 0, upper = 0;
  index_t mask_voxels = 0;
};

// numpy.percentile(x, q) (method 'linear', numpy >= 1.22's lerp) of n values.
inline double percentile(std::vector<double> x, double q) {
  if (x.empty()) fail<value_error>("mmnet::data::percentile", "value count", "> 0", 0);
  std::sort(x.begin(), x.end());
  const double vi = static_cast<double>(x.size() - 1) * (q / 100.0);
  const double fl = std::floor(vi);
  auto i = static_cast<std::size_t>(fl);
  if (i >= x.size() - 1) return x.back();
  const double t = vi - fl, a = x[i], b = x[i + 1], d = b - a;
  return t >= 0.5 ? b - d * (1.0 - t) : a + d * t;
}

// Normalises every channel of v in place; case_name only labels error messages. Returns per-channel statistics.
// A channel whose body mask is empty (a constant volume) uses all voxels. Non-finite voxels -> value_error.
inline std::vector<ChannelStats> normalize(Volume& v, const NormalizeOptions& o, const std::string& case_name = {}) {
  const char* component = "mmnet::data::normalize";
  if (v.channels <= 0 || v.voxels() <= 0) fail<shape_error>(component, "volume", "non-empty", v.shape().str(), case_name);
  if (o.clips().size() > static_cast<std::size_t>(v.channels))
    fail<shape_error>(component, "channels with a clip range", "<= " + std::to_string(v.channels),
                      o.clips().size(), case_name);
  if (o.use_nonzero_mask() && o.mode() != NormalizeMode::zscore)
    fail<value_error>(component, "use_nonzero_mask", "mode zscore (nnU-Net's use_mask_for_norm)",
                      o.mode() == NormalizeMode::body_zscore ? "body_zscore" : "ct_percentile", case_name);
  std::vector<ChannelStats> out(static_cast<std::size_t>(v.channels));
  const index_t n = v.voxels();
  std::vector<std::uint8_t> nonzero;
  if (o.use_nonzero_mask()) {
    for (index_t c = 0; c < v.channels; ++c) check_finite(v, c, component, case_name);
    nonzero = nonzero_mask(v);
  }
  for (index_t c = 0; c < v.channels; ++c) {
    check_finite(v, c, component, case_name);
    float* out_x = v.channel(c);
    // Work in double: clipped percentiles and statistics must not be rounded to float between steps.
    std::vector<double> x(out_x, out_x + n);
    ChannelStats& st = out[static_cast<std::size_t>(c)];
    std::vector<std::uint8_t> mask;
    if (o.mode() == NormalizeMode::body_zscore) {
      st.threshold = otsu_threshold(out_x, n, o.nbins());
      mask.resize(static_cast<std::size_t>(n));
      for (index_t i = 0; i < n; ++i) {
        mask[static_cast<std::size_t>(i)] = x[static_cast<std::size_t>(i)] > st.threshold;
        st.mask_voxels += mask[static_cast<std::size_t>(i)];
      }
      if (st.mask_voxels == 0) mask.clear();
    } else if (o.use_nonzero_mask()) {
      mask = nonzero;
      for (auto b : mask) st.mask_voxels += b;
      if (st.mask_voxels == 0) {  // all zero: nothing to normalise, stays 0
        std::fill(out_x, out_x + n, 0.0f);
        continue;
      }
    } else if (o.mode() == NormalizeMode::ct_percentile) {
      if (auto ds = o.dataset_stats_of(c)) {
        st.lower = ds->lower, st.upper = ds->upper, st.mean = ds->mean, st.std = ds->std;
      } else {
        st.lower = percentile(x, o.lower_percentile());
        st.upper = percentile(x, o.upper_percentile());
      }
      for (auto& e : x) e = std::min(std::max(e, st.lower), st.upper);
    }
    if (!(o.mode() == NormalizeMode::ct_percentile && o.dataset_stats_of(c))) {
      double s = 0;
      index_t m = 0;
      for (std::size_t i = 0; i < x.size(); ++i)
        if (mask.empty() || mask[i]) s += x[i], ++m;
      st.mean = s / static_cast<double>(m);
      double q = 0;
      for (std::size_t i = 0; i < x.size(); ++i)
        if (mask.empty() || mask[i]) q += (x[i] - st.mean) * (x[i] - st.mean);
      st.std = std::sqrt(q / static_cast<double>(m));
    }
    const double inv = 1.0 / std::max(st.std, o.eps());
    const auto clip = o.clip_of(c);
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (o.use_nonzero_mask() && !mask[i]) {
        out_x[i] = 0.0f;
        continue;
      }
      double y = (x[i] - st.mean) * inv;
      if (clip) y = std::min(std::max(y, clip->lower), clip->upper);
      out_x[i] = static_cast<float>(y);
    }
  }
  return out;
}

// A normalised copy of v.
inline Volume normalized(Volume v, const NormalizeOptions& o, const std::string& case_name = {}) {
  normalize(v, o, case_name);
  return v;
}

}  // namespace mmnet::data
