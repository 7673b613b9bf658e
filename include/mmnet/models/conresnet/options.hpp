// mmnet/models/conresnet/options.hpp: the configuration of ConResNet (Zhang et al., "Inter-slice Context Residual
// Learning for 3D Medical Image Segmentation", IEEE TMI 2020; spec shared/specs/conresnet.md §2.1, §2.6), with
// presets (the official model is hard-coded to brats()):
//
//   ConResNetOptions::brats()   C_in 4 [FLAIR, T1, T1ce, T2], K 3 [ET, WT, TC], w 32, G 8   19,018,732 params
//   ConResNetOptions::tiny()    C_in 2, K 3, w 4, G 2 (the spec's §8 reference test)           298,544
//   ConResNetOptions::small()   C_in 4, K 3, w 8, G 4 (CPU phantom runs)
//   .context_residual(false)    the paper's "Baseline" ablation: O_seg = F, no residual path and no residual
//                               heads (BraTS 18,783,715 = the paper's 18.8 M)
//
// Every preset: residual blocks (1, 2, 2, 2, 2) in layer0..layer4, layer4 dilation 2, fusionConv Dropout3d 0.1.
// Widths w, 2w, 4w, 8w; decoder 8w -> 4w (fusionConv) -> 2w (seg_x4) -> w (seg_x2) -> w (seg_x1). D, H, W of an
// input must be multiples of 8.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "../../core/error.hpp"
#include "../../core/expanding_array.hpp"

namespace mmnet::models {

class ConResNetOptions {
 public:
  ConResNetOptions() = default;

  static ConResNetOptions brats() { return ConResNetOptions(); }
  static ConResNetOptions tiny() { return ConResNetOptions().in_channels(2).num_classes(3).width(4).groups(2); }
  static ConResNetOptions small() { return ConResNetOptions().in_channels(4).num_classes(3).width(8).groups(4); }

  // C_in: image channels (also the channels of X_res). Default 4 (BraTS).
  ConResNetOptions& in_channels(index_t v) { in_ = v; return *this; }
  index_t in_channels() const { return in_; }
  // K: independent sigmoid output channels. Default 3 ([ET, WT, TC]).
  ConResNetOptions& num_classes(index_t v) { k_ = v; return *this; }
  index_t num_classes() const { return k_; }
  // w: the first width (w, 2w, 4w, 8w). Default 32.
  ConResNetOptions& width(index_t v) { w_ = v; return *this; }
  index_t width() const { return w_; }
  // G: GroupNorm groups everywhere (must divide w). Default 8.
  ConResNetOptions& groups(index_t v) { g_ = v; return *this; }
  index_t groups() const { return g_; }
  // Residual blocks of layer0..layer4. Default (1, 2, 2, 2, 2).
  ConResNetOptions& blocks(std::array<index_t, 5> v) { blocks_ = v; return *this; }
  const std::array<index_t, 5>& blocks() const { return blocks_; }
  // Dilation (= padding) of layer4's convolutions. Default 2.
  ConResNetOptions& dilation(index_t v) { dilation_ = v; return *this; }
  index_t dilation() const { return dilation_; }
  // Dropout3d probability in fusionConv (train mode only). Default 0.1.
  ConResNetOptions& dropout(double v) { dropout_ = v; return *this; }
  double dropout() const { return dropout_; }
  // Seed of fusionConv's Dropout3d mask generator. Default 0.
  ConResNetOptions& dropout_seed(std::uint64_t v) { dropout_seed_ = v; return *this; }
  std::uint64_t dropout_seed() const { return dropout_seed_; }
  // true (default): ConResNet; false: the paper's Baseline (no context residual path, forward returns {seg}).
  ConResNetOptions& context_residual(bool v) { residual_ = v; return *this; }
  bool context_residual() const { return residual_; }

  // Number of forward() outputs: 4 ([seg, res, resx2, resx4]) or 1 (baseline).
  index_t num_outputs() const { return residual_ ? 4 : 1; }
  // D, H, W of an input must be multiples of this.
  static constexpr index_t size_multiple() { return 8; }

  // Parameter count of the model these options build (the used tensors only; spec §2.6).
  index_t num_parameters() const {
    const index_t w = w_, k = k_;
    auto gn = [](index_t c) { return 2 * c; };
    auto conv3 = [](index_t a, index_t b) { return a * b * 27; };
    auto block = [&](index_t c) { return 2 * gn(c) + 2 * conv3(c, c); };
    index_t n = conv3(in_, w);
    n += gn(w) + conv3(w, 2 * w) + gn(2 * w) + conv3(2 * w, 4 * w) + gn(4 * w) + conv3(4 * w, 8 * w);
    const index_t c[5] = {w, 2 * w, 4 * w, 8 * w, 8 * w};
    for (int l = 0; l < 5; ++l) n += blocks_[static_cast<std::size_t>(l)] * block(c[l]);
    n += gn(8 * w) + conv3(8 * w, 4 * w);  // fusionConv
    // decoder stages: gn_seg + conv_seg, then (residual) conv_res 1x1x1, gn_res1, conv_res1, the I_res path
    const index_t in[3] = {4 * w, 2 * w, w}, out[3] = {2 * w, w, w};
    for (int s = 0; s < 3; ++s) {
      n += gn(in[s]) + conv3(in[s], out[s]);
      if (!residual_) continue;
      n += out[s] * out[s] + gn(out[s]) + conv3(out[s], out[s]);
      if (s == 0) n += conv3(in_, out[s]);                          // conv_mp_first
      else if (in[s] != out[s]) n += gn(in[s]) + conv3(in[s], out[s]);  // gn_mp, conv_mp
    }
    n += k * w + k;  // seg_cls
    if (residual_) n += 2 * (k * w + k) + (k * 2 * w + k);  // res_cls, resx2_cls, resx4_cls
    return n;
  }

  // Throws value_error naming the first invalid option.
  void validate() const {
    const std::string who = "mmnet::ConResNetOptions";
    if (in_ < 1) fail<value_error>(who, "in_channels", ">= 1", in_);
    if (k_ < 1) fail<value_error>(who, "num_classes", ">= 1", k_);
    if (w_ < 2) fail<value_error>(who, "width", ">= 2 (conv_res of seg_x1 is a w x w 1x1x1 WSConv)", w_);
    if (g_ < 1 || w_ % g_ != 0)
      fail<value_error>(who, "groups", "a divisor of width " + std::to_string(w_), g_);
    for (int l = 0; l < 5; ++l)
      if (blocks_[static_cast<std::size_t>(l)] < 0)
        fail<value_error>(who, "blocks[" + std::to_string(l) + "]", ">= 0", blocks_[static_cast<std::size_t>(l)]);
    if (dilation_ < 1) fail<value_error>(who, "dilation", ">= 1", dilation_);
    if (!(dropout_ >= 0 && dropout_ <= 1)) fail<value_error>(who, "dropout", "a value in [0, 1]", dropout_);
  }

 private:
  index_t in_ = 4, k_ = 3, w_ = 32, g_ = 8;
  std::array<index_t, 5> blocks_{1, 2, 2, 2, 2};
  index_t dilation_ = 2;
  double dropout_ = 0.1;
  std::uint64_t dropout_seed_ = 0;
  bool residual_ = true;
};

}  // namespace mmnet::models
