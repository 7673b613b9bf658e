// mmnet/data/augment.hpp: seeded augmentation of an (image patch, label patch) pair, in place.
//
// Python equivalents (batchgenerators, as nnU-Net uses them): in-plane rotation = SpatialTransform's rotation
// about the axis D (bilinear for images, nearest for labels, constant fill outside: scipy map_coordinates
// mode='constant' with per-neighbour fill); noise = GaussianNoiseTransform; scale =
// BrightnessMultiplicativeTransform; shift = MONAI RandShiftIntensity (nnU-Net has none by default); gamma =
// GammaTransform (per channel, on min-max normalised intensities, then mapped back, optionally restoring mean
// and std); flips = MirrorTransform. Order, as nnU-Net: rotation, noise, scale, shift, gamma, flips.
//
// Defaults (nnU-Net's 3D full-resolution setting unless noted):
//   rotation  p = 0.2, angle uniform in [-30, 30] degrees, in the H-W plane (MMFNet: p = 1, [-5, 5])
//   noise     p = 0.1, std uniform in [0, 0.1] (batchgenerators draws "variance" and uses it as the std)
//   scale     p = 0.15, factor uniform in [0.75, 1.25], per channel
//   shift     p = 0 (off; MONAI's RandShiftIntensity), offset uniform in [-0.1, 0.1], per channel
//   gamma     p = 0.3, gamma in [0.7, 1.5] (half the time below 1, as batchgenerators), retain stats
//   flips     p = 0.5 per axis (D, H, W) (MMFNet: H only, {0, 0.5, 0})
// The channel-wise transforms draw one decision and one value per channel.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "volume.hpp"

namespace mmnet::data {

struct Range {
  double lo, hi;
};

struct AugmentOptions {
  AugmentOptions() = default;

  // Every probability 0: augment() leaves the pair unchanged (but still draws from the generator).
  static AugmentOptions none() {
    return AugmentOptions().flip_probability({0, 0, 0}).rotation_probability(0).noise_probability(0)
        .scale_probability(0).shift_probability(0).gamma_probability(0);
  }
  // MMFNet (spec §4): vertical (H) flip p = 0.5, in-plane rotation in [-5, 5] degrees always, nothing else. The
  // spec fills with each modality's lower clip: add .rotation_fill({-2, -3, -2}) for (T1, T2, CET1), or use
  // LoaderOptions::crop_margin so that no fill reaches the patch.
  static AugmentOptions mmfnet() {
    return none().flip_probability({0, 0.5, 0}).rotation_probability(1).rotation_degrees({-5, 5});
  }

  // Flip probability per axis (D, H, W).
  AugmentOptions& flip_probability(std::array<double, 3> p) { flip_p_ = p; return *this; }
  std::array<double, 3> flip_probability() const { return flip_p_; }
  AugmentOptions& rotation_probability(double p) { rot_p_ = p; return *this; }
  double rotation_probability() const { return rot_p_; }
  // In-plane (H-W) rotation angle range in degrees, positive = counter-clockwise with H down and W right.
  AugmentOptions& rotation_degrees(Range r) { rot_deg_ = r; return *this; }
  Range rotation_degrees() const { return rot_deg_; }
  // Image value outside the rotated patch, per channel (empty: 0); labels get 0.
  AugmentOptions& rotation_fill(std::vector<float> v) { rot_fill_ = std::move(v); return *this; }
  const std::vector<float>& rotation_fill() const { return rot_fill_; }
  AugmentOptions& noise_probability(double p) { noise_p_ = p; return *this; }
  double noise_probability() const { return noise_p_; }
  AugmentOptions& noise_std(Range r) { noise_std_ = r; return *this; }
  Range noise_std() const { return noise_std_; }
  AugmentOptions& scale_probability(double p) { scale_p_ = p; return *this; }
  double scale_probability() const { return scale_p_; }
  AugmentOptions& scale_range(Range r) { scale_ = r; return *this; }
  Range scale_range() const { return scale_; }
  AugmentOptions& shift_probability(double p) { shift_p_ = p; return *this; }
  double shift_probability() const { return shift_p_; }
  AugmentOptions& shift_range(Range r) { shift_ = r; return *this; }
  Range shift_range() const { return shift_; }
  AugmentOptions& gamma_probability(double p) { gamma_p_ = p; return *this; }
  double gamma_probability() const { return gamma_p_; }
  AugmentOptions& gamma_range(Range r) { gamma_ = r; return *this; }
  Range gamma_range() const { return gamma_; }
  // Restore each channel's mean and std after gamma (batchgenerators retain_stats; nnU-Net: true).
  AugmentOptions& gamma_retain_stats(bool b) { gamma_retain_ = b; return *this; }
  bool gamma_retain_stats() const { return gamma_retain_; }

  // value_error for probabilities outside [0, 1] and reversed or invalid ranges.
  void validate() const {
    const char* component = "mmnet::data::AugmentOptions";
    auto prob = [&](const char* what, double p) {
      if (!(p >= 0.0 && p <= 1.0)) fail<value_error>(component, what, "in [0, 1]", p);
    };
    auto range = [&](const char* what, Range r) {
      if (!(r.lo <= r.hi))
        fail<value_error>(component, what, "lo <= hi", "[" + std::to_string(r.lo) + ", " + std::to_string(r.hi) + "]");
    };
    for (double p : flip_p_) prob("flip probability", p);
    prob("rotation probability", rot_p_);
    prob("noise probability", noise_p_);
    prob("scale probability", scale_p_);
    prob("shift probability", shift_p_);
    prob("gamma probability", gamma_p_);
    range("rotation degrees", rot_deg_);
    range("noise std", noise_std_);
    range("scale range", scale_);
    range("shift range", shift_);
    range("gamma range", gamma_);
    if (noise_std_.lo < 0) fail<value_error>(component, "noise std", ">= 0", noise_std_.lo);
    if (gamma_.lo <= 0) fail<value_error>(component, "gamma range lower end", "> 0", gamma_.lo);
  }

 private:
  std::array<double, 3> flip_p_{0.5, 0.5, 0.5};
  double rot_p_ = 0.2;
  Range rot_deg_{-30.0, 30.0};
  std::vector<float> rot_fill_;
  double noise_p_ = 0.1;
  Range noise_std_{0.0, 0.1};
  double scale_p_ = 0.15;
  Range scale_{0.75, 1.25};
  double shift_p_ = 0.0;
  Range shift_{-0.1, 0.1};
  double gamma_p_ = 0.3;
  Range gamma_{0.7, 1.5};
  bool gamma_retain_ = true;
};

// ---- The single transforms (also usable on their own) ---------------------------------------------------------

// Reverses axis (0 = D, 1 = H, 2 = W) of every channel.
inline void flip(Volume& v, int axis) {
  if (axis < 0 || axis > 2) fail<value_error>("mmnet::data::flip", "axis", "0, 1 or 2", axis);
  for (index_t c = 0; c < v.channels; ++c)
    for (index_t z = 0; z < v.depth; ++z)
      for (index_t y = 0; y < v.height; ++y)
        for (index_t x = 0; x < v.width; ++x) {
          index_t z2 = z, y2 = y, x2 = x;
          if (axis == 0) z2 = v.depth - 1 - z;
          if (axis == 1) y2 = v.height - 1 - y;
          if (axis == 2) x2 = v.width - 1 - x;
          // Visit each pair once: swap only from the lower half of the flipped axis.
          if ((axis == 0 && z < z2) || (axis == 1 && y < y2) || (axis == 2 && x < x2))
            std::swap(v.at(c, z, y, x), v.at(c, z2, y2, x2));
        }
}
inline void flip(LabelMap& m, int axis) {
  if (axis < 0 || axis > 2) fail<value_error>("mmnet::data::flip", "axis", "0, 1 or 2", axis);
  for (index_t z = 0; z < m.depth; ++z)
    for (index_t y = 0; y < m.height; ++y)
      for (index_t x = 0; x < m.width; ++x) {
        const index_t z2 = axis == 0 ? m.depth - 1 - z : z, y2 = axis == 1 ? m.height - 1 - y : y,
                      x2 = axis == 2 ? m.width - 1 - x : x;
        if ((axis == 0 && z < z2) || (axis == 1 && y < y2) || (axis == 2 && x < x2))
          std::swap(m.at(z, y, x), m.at(z2, y2, x2));
      }
}

namespace detail {
// Source position in the H-W plane of output (y, x) for a rotation by `radians` about the plane's centre:
// the content moves by R(theta), so the output samples the input at R(-theta) (q - centre) + centre.
struct PlaneRotation {
  double c, s, cy, cx;
  PlaneRotation(double radians, index_t h, index_t w)
      : c(std::cos(radians)), s(std::sin(radians)), cy(0.5 * static_cast<double>(h - 1)),
        cx(0.5 * static_cast<double>(w - 1)) {}
  void source(index_t y, index_t x, double& sy, double& sx) const {
    const double dy = static_cast<double>(y) - cy, dx = static_cast<double>(x) - cx;
    sy = cy + c * dy + s * dx;
    sx = cx - s * dy + c * dx;
  }
};
}  // namespace detail

// In-plane (H-W) rotation of every slice about the patch centre, bilinear; neighbours outside the patch count
// as fill[c] (empty fill: 0).
inline void rotate_inplane(Volume& v, double radians, const std::vector<float>& fill = {}) {
  if (!fill.empty() && static_cast<index_t>(fill.size()) != v.channels)
    fail<shape_error>("mmnet::data::rotate_inplane", "fill entries (one per channel)", v.channels, fill.size());
  if (radians == 0.0) return;
  const detail::PlaneRotation r(radians, v.height, v.width);
  std::vector<float> slice(static_cast<std::size_t>(v.height * v.width));
  for (index_t c = 0; c < v.channels; ++c) {
    const double f = fill.empty() ? 0.0 : static_cast<double>(fill[static_cast<std::size_t>(c)]);
    for (index_t z = 0; z < v.depth; ++z) {
      const float* src = &v.at(c, z, 0, 0);
      std::copy_n(src, slice.size(), slice.data());
      auto px = [&](index_t y, index_t x) {
        return (y < 0 || y >= v.height || x < 0 || x >= v.width) ? f
                                                                   : static_cast<double>(slice[static_cast<std::size_t>(y * v.width + x)]);
      };
      for (index_t y = 0; y < v.height; ++y)
        for (index_t x = 0; x < v.width; ++x) {
          double sy, sx;
          r.source(y, x, sy, sx);
          const double fy = std::floor(sy), fx = std::floor(sx), ty = sy - fy, tx = sx - fx;
          const auto y0 = static_cast<index_t>(fy), x0 = static_cast<index_t>(fx);
          double val;
          if (y0 < -1 || y0 >= v.height || x0 < -1 || x0 >= v.width) {
            val = f;
          } else {
            val = (1 - ty) * ((1 - tx) * px(y0, x0) + tx * px(y0, x0 + 1)) +
                  ty * ((1 - tx) * px(y0 + 1, x0) + tx * px(y0 + 1, x0 + 1));
          }
          v.at(c, z, y, x) = static_cast<float>(val);
        }
    }
  }
}

// The same rotation for labels: nearest neighbour (round half away from zero), 0 outside.
inline void rotate_inplane(LabelMap& m, double radians) {
  if (radians == 0.0) return;
  const detail::PlaneRotation r(radians, m.height, m.width);
  std::vector<std::uint8_t> slice(static_cast<std::size_t>(m.height * m.width));
  for (index_t z = 0; z < m.depth; ++z) {
    std::copy_n(&m.at(z, 0, 0), slice.size(), slice.data());
    for (index_t y = 0; y < m.height; ++y)
      for (index_t x = 0; x < m.width; ++x) {
        double sy, sx;
        r.source(y, x, sy, sx);
        const double ry = std::round(sy), rx = std::round(sx);
        const bool in = ry >= 0 && rx >= 0 && ry < static_cast<double>(m.height) && rx < static_cast<double>(m.width);
        m.at(z, y, x) = in ? slice[static_cast<std::size_t>(static_cast<index_t>(ry) * m.width + static_cast<index_t>(rx))] : 0;
      }
  }
}

// x * scale + shift on channel c.
inline void scale_shift(Volume& v, index_t c, double scale, double shift) {
  float* x = v.channel(c);
  for (index_t i = 0; i < v.voxels(); ++i) x[i] = static_cast<float>(static_cast<double>(x[i]) * scale + shift);
}

// batchgenerators augment_gamma on channel c: ((x - min) / (range + 1e-7))^gamma * (range + 1e-7) + min, then
// (retain_stats) the channel's former mean and std restored: (y - mean_y) / (std_y + 1e-8) * std + mean.
inline void gamma_transform(Volume& v, index_t c, double gamma, bool retain_stats) {
  float* x = v.channel(c);
  const index_t n = v.voxels();
  if (n == 0) return;
  auto stats = [&](double& mean, double& sd) {
    double s = 0, q = 0;
    for (index_t i = 0; i < n; ++i) s += x[i];
    mean = s / static_cast<double>(n);
    for (index_t i = 0; i < n; ++i) q += (x[i] - mean) * (x[i] - mean);
    sd = std::sqrt(q / static_cast<double>(n));
  };
  double mean = 0, sd = 0;
  if (retain_stats) stats(mean, sd);
  double lo = x[0], hi = x[0];
  for (index_t i = 0; i < n; ++i) lo = std::min(lo, static_cast<double>(x[i])), hi = std::max(hi, static_cast<double>(x[i]));
  const double range = hi - lo + 1e-7;
  for (index_t i = 0; i < n; ++i)
    x[i] = static_cast<float>(std::pow((static_cast<double>(x[i]) - lo) / range, gamma) * range + lo);
  if (retain_stats) {
    double m2 = 0, s2 = 0;
    stats(m2, s2);
    for (index_t i = 0; i < n; ++i) x[i] = static_cast<float>((x[i] - m2) / (s2 + 1e-8) * sd + mean);
  }
}

// Adds N(0, std^2) noise to channel c.
inline void add_gaussian_noise(Volume& v, index_t c, double std, Generator& g) {
  float* x = v.channel(c);
  for (index_t i = 0; i < v.voxels(); ++i) x[i] = static_cast<float>(static_cast<double>(x[i]) + std * g.normal());
}

// ---- The chain ------------------------------------------------------------------------------------------------

// Applies the options' random transforms to the pair, drawing from g in a fixed order (rotation, then per
// channel noise, scale, shift, gamma, then flips per axis). Each transform draws its decision even when its
// probability is 0, so changing one probability does not reshuffle the others' draws.
inline void augment(Volume& image, LabelMap& label, const AugmentOptions& o, Generator& g) {
  const char* component = "mmnet::data::augment";
  o.validate();
  if (label.shape() != Shape{image.depth, image.height, image.width})
    fail<shape_error>(component, "label shape", Shape{image.depth, image.height, image.width}.str(),
                      label.shape().str());
  constexpr double deg = 3.14159265358979323846 / 180.0;
  {
    const bool on = g.uniform() < o.rotation_probability();
    const double angle = g.uniform(o.rotation_degrees().lo, o.rotation_degrees().hi) * deg;
    if (on) {
      rotate_inplane(image, angle, o.rotation_fill());
      rotate_inplane(label, angle);
    }
  }
  for (index_t c = 0; c < image.channels; ++c) {
    const bool on = g.uniform() < o.noise_probability();
    const double sd = g.uniform(o.noise_std().lo, o.noise_std().hi);
    if (on) add_gaussian_noise(image, c, sd, g);
  }
  for (index_t c = 0; c < image.channels; ++c) {
    const bool on = g.uniform() < o.scale_probability();
    const double s = g.uniform(o.scale_range().lo, o.scale_range().hi);
    if (on) scale_shift(image, c, s, 0.0);
  }
  for (index_t c = 0; c < image.channels; ++c) {
    const bool on = g.uniform() < o.shift_probability();
    const double b = g.uniform(o.shift_range().lo, o.shift_range().hi);
    if (on) scale_shift(image, c, 1.0, b);
  }
  for (index_t c = 0; c < image.channels; ++c) {
    const bool on = g.uniform() < o.gamma_probability();
    // batchgenerators: half the time gamma in [lo, 1), else in [max(lo, 1), hi].
    const bool below = g.uniform() < 0.5 && o.gamma_range().lo < 1.0;
    const double u = g.uniform();
    const double gamma = below ? o.gamma_range().lo + (std::min(1.0, o.gamma_range().hi) - o.gamma_range().lo) * u
                               : std::max(o.gamma_range().lo, 1.0) +
                                     (o.gamma_range().hi - std::max(o.gamma_range().lo, 1.0)) * u;
    if (on) gamma_transform(image, c, gamma, o.gamma_retain_stats());
  }
  for (int a = 0; a < 3; ++a)
    if (g.uniform() < o.flip_probability()[static_cast<std::size_t>(a)]) {
      flip(image, a);
      flip(label, a);
    }
}

}  // namespace mmnet::data
