// mmnet/models/hmrnet/options.hpp: the configuration of HMRNet (Fu et al., "HMRNet: High and Multi-Resolution
// Network with Bidirectional Feature Calibration for Brain Structure Segmentation in Radiotherapy"; spec
// shared/specs/hmrnet.md §2.1, §8), with presets (in = 3 [CT, T1c, T2], K = 2, no `sse0`):
//
//   HMRNetOptions::paper_p()   form p (3D convs),         c = (16, 32, 64, 128), ch 8   3,124,092 params
//   HMRNetOptions::paper_s()   form s (2.5D separable),   c = (16, 32, 64, 128), ch 8   2,377,932
//   HMRNetOptions::tiny_p()    form p,                    c = (4, 8, 16, 32),    ch 2     196,866  (spec §8)
//   HMRNetOptions::tiny_s()    form s,                    c = (4, 8, 16, 32),    ch 2     151,806
//
// Form p: every block B is 2 x [Conv 3x3x3 -> IN -> LReLU]; all poolings 2. Form s (official HMRNet_s): every
// 3D conv becomes intra (3,3,1) -> inter (1,1,3) -> intra (3,3,1), each with its own IN + LReLU (6 convs per
// block); the third pooling and the first decoder up-sampling are (2,2,1), the L3 cross-branch factor (8,8,4).
// The slice axis is W (the last axis) for every -s model (spec §2.1). Input sizes: D, H, W multiples of
// size_multiple() = (8, 8, 8) for p, (8, 8, 4) for s.
#pragma once
#include <array>
#include <string>

#include "../../core/error.hpp"
#include "../../core/expanding_array.hpp"

namespace mmnet::models {

// p: 3D convolutions (HMRNet_p); s: 2.5D separable (3,3,1) + (1,1,3) convolutions and (2,2,1) pooling (HMRNet_s).
enum class HMRNetForm { p, s };

inline const char* to_string(HMRNetForm f) { return f == HMRNetForm::p ? "p" : "s"; }

class HMRNetOptions {
 public:
  // The paper widths (c = 16, 32, 64, 128; ch = 8; in = 3; K = 2) in the given form.
  explicit HMRNetOptions(HMRNetForm form = HMRNetForm::p) : form_(form) {}

  static HMRNetOptions paper_p() { return HMRNetOptions(HMRNetForm::p); }
  static HMRNetOptions paper_s() { return HMRNetOptions(HMRNetForm::s); }
  static HMRNetOptions tiny_p() { return HMRNetOptions(HMRNetForm::p).mr_channels({4, 8, 16, 32}).hr_channels(2); }
  static HMRNetOptions tiny_s() { return HMRNetOptions(HMRNetForm::s).mr_channels({4, 8, 16, 32}).hr_channels(2); }

  // p (3D) or s (2.5D separable).
  HMRNetOptions& form(HMRNetForm v) { form_ = v; return *this; }
  HMRNetForm form() const { return form_; }
  // c0..c3: widths of the multi-resolution (MR) branch at full, 1/2, 1/4, 1/8 resolution (default 16, 32, 64, 128).
  HMRNetOptions& mr_channels(std::array<index_t, 4> v) { c_ = v; return *this; }
  const std::array<index_t, 4>& mr_channels() const { return c_; }
  index_t mr_channels(int level) const { return c_.at(static_cast<std::size_t>(level)); }
  // ch: width of the high-resolution (HR) branch, the same at every block (default 8).
  HMRNetOptions& hr_channels(index_t v) { ch_ = v; return *this; }
  index_t hr_channels() const { return ch_; }
  // Input channels (default 3: CT, T1-contrast, T2, in this order).
  HMRNetOptions& in_channels(index_t v) { in_ = v; return *this; }
  index_t in_channels() const { return in_; }
  // K: output classes (default 2: background, structure).
  HMRNetOptions& classes(index_t v) { k_ = v; return *this; }
  index_t classes() const { return k_; }

  // The third max pooling and the first decoder up-sampling (p3 = u3): 2, or (2,2,1) for form s.
  ExpandingArray3 p3() const { return form_ == HMRNetForm::p ? ExpandingArray3(2) : ExpandingArray3(2, 2, 1); }
  // Cross-branch factor between full and MR resolution at BFC level l (1, 2, 3, 5, 6): s1 = 2, s2 = 4, s3 = 8 or
  // (8,8,4), s5 = 4, s6 = 2.
  ExpandingArray3 level_scale(int l) const {
    switch (l) {
      case 1: case 6: return ExpandingArray3(2);
      case 2: case 5: return ExpandingArray3(4);
      case 3: return form_ == HMRNetForm::p ? ExpandingArray3(8) : ExpandingArray3(8, 8, 4);
      default: fail<value_error>("mmnet::HMRNetOptions::level_scale", "BFC level", "1, 2, 3, 5 or 6", l);
    }
    return ExpandingArray3(1);
  }
  // D, H, W of an input must be multiples of this: (8, 8, 8) for p, (8, 8, 4) for s.
  ExpandingArray3 size_multiple() const { return level_scale(3); }

  // Parameters of one block B(a -> b) (convs with bias, IN affine), from the options alone.
  index_t block_parameters(index_t a, index_t b) const {
    if (form_ == HMRNetForm::p) return (b * a * 27 + 3 * b) + (b * b * 27 + 3 * b);
    // (3,3,1), (1,1,3), (3,3,1), (3,3,1), (1,1,3), (3,3,1): the first a -> b, the others b -> b
    return (b * a * 9 + 3 * b) + b * b * (3 + 9 + 9 + 3 + 9) + 5 * 3 * b;
  }
  // Total parameter count (spec §2.5 / §8: paper 3,124,092 (p) and 2,377,932 (s); tiny 196,866 and 151,806).
  index_t num_parameters() const {
    const auto& c = c_;
    const index_t h = ch_, k = k_;
    auto gate = [](index_t cin) { return cin + 1; };
    index_t n = block_parameters(in_, c[0]) + block_parameters(in_, h);
    for (int l = 1; l <= 3; ++l) {
      const index_t b = c[static_cast<std::size_t>(l)];
      n += block_parameters(h, h) + block_parameters(c[static_cast<std::size_t>(l - 1)], b);
      n += block_parameters(h + b, b) + block_parameters(b + h, h) + gate(b) + gate(h);
    }
    n += k * c[3] + k;  // dpvision_con3
    for (int l = 5; l <= 6; ++l) {
      const index_t a = c[static_cast<std::size_t>(8 - l)], b = c[static_cast<std::size_t>(7 - l)];
      n += block_parameters(a, b) + block_parameters(h, h) + (k * b + k);
      n += block_parameters(2 * b + h, b) + block_parameters(b + h, h) + gate(b) + gate(h);
    }
    n += block_parameters(c[1], c[0]) + block_parameters(h, h);                       // up4, basic_conv7
    n += block_parameters(2 * c[0] + h, c[0]) + block_parameters(c[0] + h, h);        // concat7, fr_concat7
    n += block_parameters(h + c[0], c[0]) + gate(h) + gate(c[0]);                     // final_concat, sse7, fr_sse7
    n += k * c[0] * 27 + k;                                                           // out_conv
    return n;
  }

  // Throws value_error naming the first invalid option.
  void validate() const {
    const std::string who = "mmnet::HMRNetOptions";
    for (int l = 0; l < 4; ++l)
      if (c_[static_cast<std::size_t>(l)] < 1)
        fail<value_error>(who, "mr_channels[" + std::to_string(l) + "]", ">= 1", c_[static_cast<std::size_t>(l)]);
    if (ch_ < 1) fail<value_error>(who, "hr_channels", ">= 1", ch_);
    if (in_ < 1) fail<value_error>(who, "in_channels", ">= 1", in_);
    if (k_ < 2) fail<value_error>(who, "classes", ">= 2 (background and at least one class)", k_);
  }

 private:
  HMRNetForm form_;
  std::array<index_t, 4> c_{16, 32, 64, 128};
  index_t ch_ = 8, in_ = 3, k_ = 2;
};

}  // namespace mmnet::models
