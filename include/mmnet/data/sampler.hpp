// mmnet/data/sampler.hpp: random training patches of size (pd, ph, pw) from a list of cases, with nnU-Net's
// foreground oversampling.
//
// Python equivalent: nnU-Net v2's nnUNetDataLoader3D.generate_train_batch / get_bbox with need_to_pad = 0:
// cases drawn uniformly with replacement; sample i of a batch of B is forced to contain foreground when
// i >= round(B * (1 - oversample_foreground)) (Python's round: half to even), so with the default 1/3 a batch of
// 8 has 3 forced patches and a batch of 2 has 1. A forced patch picks a class uniformly among the classes present
// in the case, then a voxel of that class uniformly, and places the patch so that it contains that voxel at a
// random offset (nnU-Net centres it instead: SamplerOptions::center_foreground(true)). Other patches start
// uniformly in [lb, ub] per axis, where a patch larger than the volume is centred with padding (nnU-Net's lbs/ubs).
// Voxels outside the volume are padded: images with a per-channel value (default 0; MMFNet pads with the
// modality's lower clip value), labels with 0. Everything draws from the Generator passed in, in a fixed order,
// so the same seed gives the same patches.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/random.hpp"
#include "volume.hpp"

namespace mmnet::data {

using PatchSize = std::array<index_t, 3>;  // (pd, ph, pw)

// One training case: the (normalised, cropped) image, its labels on the same grid, and a name for messages.
struct Case {
  Volume image;
  LabelMap label;
  std::string name;
  // Region of interest for WindowSampler, e.g. body_box of T1 taken before normalisation; empty: the whole volume.
  Box roi;
};

// A sampled patch and where it came from: box is in the case's voxel coordinates and may reach outside it.
struct Patch {
  Volume image;
  LabelMap label;
  index_t case_index = 0;
  Box box;
  bool forced_foreground = false;
};

struct SamplerOptions {
  explicit SamplerOptions(PatchSize patch) : patch_(patch) {}

  PatchSize patch() const { return patch_; }
  // Fraction of each batch forced to contain foreground (nnU-Net oversample_foreground_percent = 0.33; we use
  // exactly 1/3).
  SamplerOptions& oversample_foreground(double f) { oversample_ = f; return *this; }
  double oversample_foreground() const { return oversample_; }
  // Per-channel image fill outside the volume (empty: 0 for every channel).
  SamplerOptions& pad_value(std::vector<float> v) { pad_ = std::move(v); return *this; }
  const std::vector<float>& pad_value() const { return pad_; }
  // Forced patches centred on the chosen voxel (nnU-Net's get_bbox) instead of at a random offset around it.
  SamplerOptions& center_foreground(bool c) { center_ = c; return *this; }
  bool center_foreground() const { return center_; }

 private:
  PatchSize patch_;
  double oversample_ = 1.0 / 3.0;
  std::vector<float> pad_;
  bool center_ = false;
};

// Checks a case list: at least one case, equal channel counts, labels on the image grid, no empty volume, and
// pad values (if any) one per channel. Messages name the case by index and name.
inline void validate_cases(const std::vector<Case>& cases, const std::vector<float>& pad, const char* component) {
  if (cases.empty()) fail<value_error>(component, "number of cases", ">= 1", 0);
  const index_t channels = cases[0].image.channels;
  if (!pad.empty() && static_cast<index_t>(pad.size()) != channels)
    fail<shape_error>(component, "pad_value entries (one per channel)", channels, pad.size());
  for (std::size_t k = 0; k < cases.size(); ++k) {
    const Case& c = cases[k];
    const std::string ctx = "case " + std::to_string(k) + (c.name.empty() ? "" : " '" + c.name + "'");
    if (c.image.channels != channels)
      fail<shape_error>(component, "image channels", channels, c.image.channels, ctx + "; case 0 sets the count");
    if (c.image.channels <= 0 || c.image.voxels() <= 0)
      fail<shape_error>(component, "image", "non-empty", c.image.shape().str(), ctx);
    if (static_cast<index_t>(c.image.data.size()) != c.image.channels * c.image.voxels())
      fail<shape_error>(component, "image data size", c.image.channels * c.image.voxels(), c.image.data.size(), ctx);
    const Shape grid{c.image.depth, c.image.height, c.image.width};
    if (c.label.shape() != grid || static_cast<index_t>(c.label.data.size()) != c.label.voxels())
      fail<shape_error>(component, "label shape", grid.str(), c.label.shape().str(), ctx);
  }
}

// Copies box b (any extents > 0; it may reach outside the case) from case c: images padded with pad[channel]
// (empty: 0), labels with 0. k is recorded as the patch's case index.
inline Patch extract_patch(const Case& c, index_t k, const Box& b, const std::vector<float>& pad = {}) {
  if (b.empty()) fail<shape_error>("mmnet::data::extract_patch", "box", "non-empty", b.str());
  if (!pad.empty() && static_cast<index_t>(pad.size()) != c.image.channels)
    fail<shape_error>("mmnet::data::extract_patch", "pad values (one per channel)", c.image.channels, pad.size());
  const PatchSize p{b.extent(0), b.extent(1), b.extent(2)};
  Patch out;
  out.case_index = k;
  out.box = b;
  out.image = Volume(c.image.channels, p[0], p[1], p[2], c.image.spacing);
  out.label = LabelMap(p[0], p[1], p[2], c.label.spacing);
  for (index_t ch = 0; ch < c.image.channels; ++ch) {
    const float fill = pad.empty() ? 0.0f : pad[static_cast<std::size_t>(ch)];
    std::fill_n(out.image.channel(ch), out.image.voxels(), fill);
  }
  // The overlap of the box with the volume, in patch coordinates.
  const std::array<index_t, 3> size{c.image.depth, c.image.height, c.image.width};
  std::array<index_t, 3> lo{}, hi{};
  for (std::size_t a = 0; a < 3; ++a) {
    lo[a] = std::max<index_t>(0, -b.begin[a]);
    hi[a] = std::min(p[a], size[a] - b.begin[a]);
    if (hi[a] <= lo[a]) return out;  // entirely outside: all padding
  }
  const index_t n = hi[2] - lo[2];
  for (index_t z = lo[0]; z < hi[0]; ++z)
    for (index_t y = lo[1]; y < hi[1]; ++y) {
      const index_t sz = z + b.begin[0], sy = y + b.begin[1], sx = lo[2] + b.begin[2];
      for (index_t ch = 0; ch < c.image.channels; ++ch)
        std::copy_n(c.image.data.data() + c.image.offset(ch, sz, sy, sx), n, &out.image.at(ch, z, y, lo[2]));
      std::copy_n(c.label.data.data() + c.label.offset(sz, sy, sx), n, &out.label.at(z, y, lo[2]));
    }
  return out;
}

class PatchSampler {
 public:
  static constexpr const char* component = "mmnet::data::PatchSampler";

  // Validates the cases (at least one; equal channel counts; labels on the image grid; no empty volume) and
  // indexes each case's foreground voxels per class.
  PatchSampler(std::vector<Case> cases, SamplerOptions options) : cases_(std::move(cases)), o_(std::move(options)) {
    for (int a = 0; a < 3; ++a)
      if (o_.patch()[static_cast<std::size_t>(a)] <= 0)
        fail<value_error>(component, "patch size along axis " + std::to_string(a), "> 0",
                          o_.patch()[static_cast<std::size_t>(a)]);
    if (!(o_.oversample_foreground() >= 0.0 && o_.oversample_foreground() <= 1.0))
      fail<value_error>(component, "oversample_foreground", "in [0, 1]", o_.oversample_foreground());
    validate_cases(cases_, o_.pad_value(), component);
    classes_.resize(cases_.size());
    for (std::size_t k = 0; k < cases_.size(); ++k) {
      const Case& c = cases_[k];
      // Foreground voxel indices per class, in raster order.
      std::array<std::vector<index_t>, 256> per_class;
      for (index_t i = 0; i < c.label.voxels(); ++i)
        if (const auto l = c.label.data[static_cast<std::size_t>(i)]) per_class[l].push_back(i);
      for (int l = 1; l < 256; ++l)
        if (!per_class[static_cast<std::size_t>(l)].empty())
          classes_[k].push_back({static_cast<std::uint8_t>(l), std::move(per_class[static_cast<std::size_t>(l)])});
    }
  }

  const SamplerOptions& options() const { return o_; }
  const std::vector<Case>& cases() const { return cases_; }
  index_t channels() const { return cases_[0].image.channels; }
  // The classes present in case k (labels > 0, ascending).
  std::vector<std::uint8_t> classes(index_t k) const {
    std::vector<std::uint8_t> out;
    for (const auto& e : classes_.at(static_cast<std::size_t>(k))) out.push_back(e.label);
    return out;
  }
  // How many of a batch of b are forced to contain foreground: b - round_half_even(b * (1 - fraction)).
  index_t forced_per_batch(index_t b) const { return b - first_forced(b); }
  // Sample i of a batch of b is forced when i >= round(b * (1 - fraction)) (nnU-Net's get_do_oversample).
  bool forced(index_t i, index_t b) const { return i >= first_forced(b); }

  // The patch box: where a patch of case k starts (random draws from g).
  Box draw_box(index_t k, bool force_fg, Generator& g) const {
    const Case& c = case_at(k);
    const std::array<index_t, 3> size{c.image.depth, c.image.height, c.image.width};
    const PatchSize p = o_.patch();
    std::array<index_t, 3> lb{}, ub{}, start{};
    for (std::size_t a = 0; a < 3; ++a) {
      const index_t pad = std::max<index_t>(0, p[a] - size[a]);
      lb[a] = -(pad / 2);
      ub[a] = size[a] + pad / 2 + pad % 2 - p[a];
    }
    const auto& cls = classes_[static_cast<std::size_t>(k)];
    if (force_fg && !cls.empty()) {
      const auto& voxels = cls[g.integer(cls.size())].voxels;
      const index_t v = voxels[g.integer(voxels.size())];
      const std::array<index_t, 3> at{v / (size[1] * size[2]), (v / size[2]) % size[1], v % size[2]};
      for (std::size_t a = 0; a < 3; ++a) {
        if (o_.center_foreground()) {
          start[a] = std::max(lb[a], at[a] - p[a] / 2);
        } else {
          // Starts in [lb, ub] whose patch [s, s + p) holds the voxel; never empty (see the header comment).
          const index_t lo = std::max(lb[a], at[a] - p[a] + 1), hi = std::min(ub[a], at[a]);
          start[a] = lo + static_cast<index_t>(g.integer(static_cast<std::uint64_t>(hi - lo + 1)));
        }
      }
    } else {
      for (std::size_t a = 0; a < 3; ++a)
        start[a] = lb[a] + static_cast<index_t>(g.integer(static_cast<std::uint64_t>(ub[a] - lb[a] + 1)));
    }
    return Box{start, {start[0] + p[0], start[1] + p[1], start[2] + p[2]}};
  }

  // Copies the patch at box from case k, padding outside the volume.
  Patch extract(index_t k, const Box& b) const {
    const Case& c = case_at(k);
    const PatchSize p = o_.patch();
    if (b.extent(0) != p[0] || b.extent(1) != p[1] || b.extent(2) != p[2])
      fail<shape_error>(component, "box extents", Shape{p[0], p[1], p[2]}.str(),
                        Shape{b.extent(0), b.extent(1), b.extent(2)}.str(), b.str());
    return extract_patch(c, k, b, o_.pad_value());
  }

  // One patch of case k.
  Patch sample(index_t k, bool force_fg, Generator& g) const {
    Patch p = extract(k, draw_box(k, force_fg, g));
    p.forced_foreground = force_fg;
    return p;
  }

  // A batch of b patches: for i = 0..b-1, a case uniformly at random, then sample(case, forced(i, b), g).
  std::vector<Patch> sample_batch(index_t b, Generator& g) const {
    if (b <= 0) fail<value_error>(component, "batch size", "> 0", b);
    std::vector<Patch> out;
    out.reserve(static_cast<std::size_t>(b));
    for (index_t i = 0; i < b; ++i) {
      const auto k = static_cast<index_t>(g.integer(cases_.size()));
      out.push_back(sample(k, forced(i, b), g));
    }
    return out;
  }

 private:
  struct ClassVoxels {
    std::uint8_t label;
    std::vector<index_t> voxels;
  };
  const Case& case_at(index_t k) const {
    if (k < 0 || k >= static_cast<index_t>(cases_.size()))
      fail<value_error>(component, "case index", "in [0, " + std::to_string(cases_.size()) + ")", k);
    return cases_[static_cast<std::size_t>(k)];
  }
  index_t first_forced(index_t b) const {
    // Python's round(): half to even (std::nearbyint under the default rounding mode).
    return static_cast<index_t>(std::nearbyint(static_cast<double>(b) * (1.0 - o_.oversample_foreground())));
  }

  std::vector<Case> cases_;
  SamplerOptions o_;
  std::vector<std::vector<ClassVoxels>> classes_;
};

// ---- MMFNet's Z windows ------------------------------------------------------------------------------------

struct WindowOptions {
  explicit WindowOptions(PatchSize patch = {16, 256, 256}) : patch_(patch) {}

  // MMFNet (spec §4): 16 x 256 x 256 windows, Z starts on a stride-4 grid, centre offsets up to (4, 32, 32),
  // padding with the lower clip values of T1, T2, CET1 (a single-modality model sets pad_value({its clip})).
  static WindowOptions mmfnet() { return WindowOptions({16, 256, 256}).pad_value({-2.0f, -3.0f, -2.0f}); }

  PatchSize patch() const { return patch_; }
  // Spacing of the window starts along D (default 4).
  WindowOptions& z_stride(index_t s) { z_stride_ = s; return *this; }
  index_t z_stride() const { return z_stride_; }
  // Training jitter: integer offsets uniform in [-o, o] per axis (D, H, W) added to the window (default (4, 32, 32)).
  WindowOptions& max_offset(std::array<index_t, 3> o) { offset_ = o; return *this; }
  std::array<index_t, 3> max_offset() const { return offset_; }
  // Per-channel image fill outside the volume (empty: 0); labels 0.
  WindowOptions& pad_value(std::vector<float> v) { pad_ = std::move(v); return *this; }
  const std::vector<float>& pad_value() const { return pad_; }

 private:
  PatchSize patch_;
  index_t z_stride_ = 4;
  std::array<index_t, 3> offset_{4, 32, 32};
  std::vector<float> pad_;
};

// MMFNet's training windows (spec §4 "ROI / patches" and "Sampling per iteration"): a case uniformly at random, a
// window start uniformly on the Z grid 0, s, 2s, ... <= max(0, D - pd), the window centred on the case's roi
// centre in H and W (start = (roi.begin + roi.end) / 2 - p / 2), then integer offsets uniform in [-o, o] added
// per axis. Windows reaching outside the volume are padded. Draw order per patch: case, Z index, dz, dy, dx.
class WindowSampler {
 public:
  static constexpr const char* component = "mmnet::data::WindowSampler";

  WindowSampler(std::vector<Case> cases, WindowOptions options) : cases_(std::move(cases)), o_(std::move(options)) {
    for (int a = 0; a < 3; ++a) {
      const auto ua = static_cast<std::size_t>(a);
      if (o_.patch()[ua] <= 0)
        fail<value_error>(component, "window size along axis " + std::to_string(a), "> 0", o_.patch()[ua]);
      if (o_.max_offset()[ua] < 0)
        fail<value_error>(component, "max offset along axis " + std::to_string(a), ">= 0", o_.max_offset()[ua]);
    }
    if (o_.z_stride() <= 0) fail<value_error>(component, "z stride", "> 0", o_.z_stride());
    validate_cases(cases_, o_.pad_value(), component);
    for (std::size_t k = 0; k < cases_.size(); ++k) {
      Case& c = cases_[k];
      if (c.roi.empty()) {
        c.roi = Box::full(c.image.depth, c.image.height, c.image.width);
      } else if (!c.roi.inside(c.image.depth, c.image.height, c.image.width)) {
        fail<shape_error>(component, "roi", "inside " + c.image.shape().str(), c.roi.str(),
                          "case " + std::to_string(k) + " '" + c.name + "'");
      }
    }
  }

  const WindowOptions& options() const { return o_; }
  const std::vector<Case>& cases() const { return cases_; }
  index_t channels() const { return cases_[0].image.channels; }
  // Number of Z starts of case k.
  index_t windows(index_t k) const {
    return std::max<index_t>(0, case_at(k).image.depth - o_.patch()[0]) / o_.z_stride() + 1;
  }
  // The box of window z_index of case k moved by offset (D, H, W); offset {0, 0, 0} is the inference crop.
  Box window_box(index_t k, index_t z_index, std::array<index_t, 3> offset = {0, 0, 0}) const {
    const Case& c = case_at(k);
    if (z_index < 0 || z_index >= windows(k))
      fail<value_error>(component, "window index", "in [0, " + std::to_string(windows(k)) + ")", z_index);
    const PatchSize p = o_.patch();
    std::array<index_t, 3> start{z_index * o_.z_stride(), (c.roi.begin[1] + c.roi.end[1]) / 2 - p[1] / 2,
                                 (c.roi.begin[2] + c.roi.end[2]) / 2 - p[2] / 2};
    for (std::size_t a = 0; a < 3; ++a) start[a] += offset[a];
    return Box{start, {start[0] + p[0], start[1] + p[1], start[2] + p[2]}};
  }
  Patch sample(index_t k, Generator& g) const {
    const index_t zi = static_cast<index_t>(g.integer(static_cast<std::uint64_t>(windows(k))));
    std::array<index_t, 3> off{};
    for (std::size_t a = 0; a < 3; ++a) {
      const index_t o = o_.max_offset()[a];
      off[a] = static_cast<index_t>(g.integer(static_cast<std::uint64_t>(2 * o + 1))) - o;
    }
    return extract_patch(case_at(k), k, window_box(k, zi, off), o_.pad_value());
  }
  std::vector<Patch> sample_batch(index_t b, Generator& g) const {
    if (b <= 0) fail<value_error>(component, "batch size", "> 0", b);
    std::vector<Patch> out;
    out.reserve(static_cast<std::size_t>(b));
    for (index_t i = 0; i < b; ++i) out.push_back(sample(static_cast<index_t>(g.integer(cases_.size())), g));
    return out;
  }

 private:
  const Case& case_at(index_t k) const {
    if (k < 0 || k >= static_cast<index_t>(cases_.size()))
      fail<value_error>(component, "case index", "in [0, " + std::to_string(cases_.size()) + ")", k);
    return cases_[static_cast<std::size_t>(k)];
  }

  std::vector<Case> cases_;
  WindowOptions o_;
};

}  // namespace mmnet::data
