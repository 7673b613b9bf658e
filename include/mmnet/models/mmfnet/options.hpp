// mmnet/models/mmfnet/options.hpp: the configuration of MMFNet (Chen et al., Neurocomputing 2020; spec
// shared/specs/mmfnet.md §2.1, §2.6), with the paper's network, the §8 test network and every ablation as presets:
//
//   MMFNetOptions::paper()              M 3, levels (8, 16, 32, 64), bottleneck 64, r 12, all pools, separate MLPs
//   MMFNetOptions::tiny()               spec §8 mmfnet-tiny: levels (4, 8), bottleneck 8, r 4
//   MMFNetOptions::small()              levels (8, 16, 32), bottleneck 32: trains on a CPU in minutes (the CLI's main job)
//   MMFNetOptions::single_modality()    one encoder, the skips go to the decoder unfused (self-transfer pre-training)
//   MMFNetOptions::base_mmfnet()        one shared MLP, avg + max pools in both attention branches
//   MMFNetOptions::multi_mlp()          separate MLPs, avg + max, no std anywhere
//   MMFNetOptions::std_channel_only()   multi-MLP, std pool in the channel attention only
//   MMFNetOptions::std_spatial_only()   multi-MLP, std pool in the spatial attention only
//   MMFNetOptions::two_modality()       M 2 (hidden floor(2c / 12))
//   MMFNetOptions::merge_baseline()     "merging encoders' features": the fusion block is a plain concat
//   MMFNetOptions::input_level()        one encoder on all M input channels, widths x M (input-level fusion)
//
// Every preset starts from paper() and changes only what its ablation changes; all setters chain, e.g.
// MMFNetOptions::tiny().modalities(2).reduction(3) is the §8 point 9 two-modality test network. Defaults follow
// the spec's [R] resolutions: hidden = floor(M c / r), at least 1 (A8); std eps 1e-6 inside the square root (A9).
#pragma once
#include <string>
#include <vector>

#include "../../attention/cbam.hpp"
#include "../../core/error.hpp"

namespace mmnet::models {

// What each skip level does with the M encoders' features.
enum class MMFNetFusion {
  cbam_rfblock,  // MMFNet's fusion block: 3D-CBAM on the concat, then RFBlock back to c_l channels
  merge          // the "merging encoders' features" baseline: the plain concat (M c_l channels) goes on
};

inline const char* fusion_name(MMFNetFusion f) { return f == MMFNetFusion::cbam_rfblock ? "cbam_rfblock" : "merge"; }

class MMFNetOptions {
 public:
  using Pool = attention::Pool;

  // The paper's network with `modalities` input volumes (default 3: T1, T2, CET1).
  explicit MMFNetOptions(index_t modalities = 3) : modalities_(modalities) {}

  static MMFNetOptions paper() { return MMFNetOptions(3); }
  static MMFNetOptions tiny() { return paper().level_channels({4, 8}).bottleneck_channels(8).reduction(4); }
  static MMFNetOptions small() { return paper().level_channels({8, 16, 32}).bottleneck_channels(32); }
  static MMFNetOptions single_modality() { return paper().modalities(1).fusion(MMFNetFusion::merge); }
  static MMFNetOptions base_mmfnet() {
    return paper().shared_mlp(true).channel_pools({Pool::avg, Pool::max}).spatial_pools({Pool::avg, Pool::max});
  }
  static MMFNetOptions multi_mlp() {
    return paper().channel_pools({Pool::avg, Pool::max}).spatial_pools({Pool::avg, Pool::max});
  }
  static MMFNetOptions std_channel_only() { return paper().spatial_pools({Pool::avg, Pool::max}); }
  static MMFNetOptions std_spatial_only() { return paper().channel_pools({Pool::avg, Pool::max}); }
  static MMFNetOptions two_modality() { return paper().modalities(2); }
  static MMFNetOptions merge_baseline() { return paper().fusion(MMFNetFusion::merge); }
  static MMFNetOptions input_level() {
    return paper().input_level_fusion(true).fusion(MMFNetFusion::merge).level_channels({24, 48, 96, 192})
        .bottleneck_channels(192);
  }

  // Number of input volumes M, the input's channel count (default 3).
  MMFNetOptions& modalities(index_t v) { modalities_ = v; return *this; }
  index_t modalities() const { return modalities_; }
  // Encoder widths c_1..c_L, one per level, level 1 at full resolution (default (8, 16, 32, 64)).
  MMFNetOptions& level_channels(std::vector<index_t> v) { levels_ = std::move(v); return *this; }
  const std::vector<index_t>& level_channels() const { return levels_; }
  // Width of the conv after the last pool (default 64).
  MMFNetOptions& bottleneck_channels(index_t v) { bottleneck_ = v; return *this; }
  index_t bottleneck_channels() const { return bottleneck_; }
  // Reduction ratio r of the channel-attention MLPs: hidden = floor(M c_l / r), at least 1 (default 12).
  MMFNetOptions& reduction(index_t v) { reduction_ = v; return *this; }
  index_t reduction() const { return reduction_; }
  // Global pools of the channel attention (default {avg, max, std}).
  MMFNetOptions& channel_pools(std::vector<Pool> v) { channel_pools_ = std::move(v); return *this; }
  const std::vector<Pool>& channel_pools() const { return channel_pools_; }
  // Channel reductions of the spatial attention (default {avg, max, std}).
  MMFNetOptions& spatial_pools(std::vector<Pool> v) { spatial_pools_ = std::move(v); return *this; }
  const std::vector<Pool>& spatial_pools() const { return spatial_pools_; }
  // One MLP shared by the channel pools (Base MMFNet) instead of one per pool (default false).
  MMFNetOptions& shared_mlp(bool v) { shared_mlp_ = v; return *this; }
  bool shared_mlp() const { return shared_mlp_; }
  // eps inside the square root of every std pool (default 1e-6).
  MMFNetOptions& std_eps(double v) { std_eps_ = v; return *this; }
  double std_eps() const { return std_eps_; }
  // Fusion at the skip levels (default cbam_rfblock).
  MMFNetOptions& fusion(MMFNetFusion v) { fusion_ = v; return *this; }
  MMFNetFusion fusion() const { return fusion_; }
  // true: one encoder takes all M channels (input-level fusion) instead of one encoder per channel (default false).
  MMFNetOptions& input_level_fusion(bool v) { input_level_ = v; return *this; }
  bool input_level_fusion() const { return input_level_; }

  // Derived sizes.
  index_t levels() const { return static_cast<index_t>(levels_.size()); }
  // c_l of level l = 1..L.
  index_t channels(index_t level) const { return levels_.at(static_cast<std::size_t>(level - 1)); }
  index_t num_encoders() const { return input_level_ ? 1 : modalities_; }
  index_t encoder_in_channels() const { return input_level_ ? modalities_ : 1; }
  // The spatial sizes must be multiples of this (one 2 x 2 x 2 pool per level).
  index_t size_multiple() const { return index_t(1) << levels(); }
  // The 3D-CBAM of level l: channels E c_l (E encoders), hidden floor(E c_l / r) at least 1.
  attention::CBAMOptions attention_options(index_t level) const {
    const index_t mc = num_encoders() * channels(level);
    return attention::CBAMOptions(mc, attention::reduced_channels(mc, reduction_))
        .channel_pools(channel_pools_)
        .spatial_pools(spatial_pools_)
        .shared_mlp(shared_mlp_)
        .std_eps(std_eps_);
  }

  // Throws value_error naming the first invalid option.
  void validate() const {
    const std::string who = "mmnet::MMFNetOptions";
    if (modalities_ < 1) fail<value_error>(who, "modalities", ">= 1", modalities_);
    if (levels_.empty()) fail<value_error>(who, "level_channels", "at least one level", "none");
    if (levels_.size() > 20) fail<value_error>(who, "level_channels", "at most 20 levels", levels_.size());
    for (std::size_t i = 0; i < levels_.size(); ++i)
      if (levels_[i] < 1) fail<value_error>(who, "level_channels[" + std::to_string(i) + "]", ">= 1", levels_[i]);
    if (bottleneck_ < 1) fail<value_error>(who, "bottleneck_channels", ">= 1", bottleneck_);
    if (reduction_ < 1) fail<value_error>(who, "reduction", ">= 1", reduction_);
    attention::detail::check_pools(who + " channel_pools", channel_pools_);
    attention::detail::check_pools(who + " spatial_pools", spatial_pools_);
    attention::detail::check_eps(who, std_eps_);
  }

 private:
  index_t modalities_ = 3;
  std::vector<index_t> levels_{8, 16, 32, 64};
  index_t bottleneck_ = 64;
  index_t reduction_ = 12;
  std::vector<Pool> channel_pools_{Pool::avg, Pool::max, Pool::std};
  std::vector<Pool> spatial_pools_{Pool::avg, Pool::max, Pool::std};
  bool shared_mlp_ = false;
  double std_eps_ = 1e-6;
  MMFNetFusion fusion_ = MMFNetFusion::cbam_rfblock;
  bool input_level_ = false;
};

}  // namespace mmnet::models
