// mmnet/models/maml/options.hpp: the configuration of MAML (Zhang et al., "Modality-aware Mutual Learning for
// Multi-modal Medical Image Segmentation", MICCAI 2021; spec shared/specs/maml.md §2.1, §3.3, §7), with presets:
//
//   MAMLOptions::brats()   M 4, K 4, C 16, num_pool 5, max width 320   (official code, BraTS 2018)  66,484,752 params
//   MAMLOptions::liver()   M 2, K 2, C 32, num_pool 5, max width 320   (paper, liver CT phases)     62,611,104
//   MAMLOptions::tiny()    M 2, K 3, C 4,  num_pool 3, max width 16    (spec §8 maml-tiny)             120,272
//   MAMLOptions::small()   M 4, K 4, C 8,  num_pool 3, max width 64    (CPU phantom runs)
//
// All setters chain: MAMLOptions::tiny().ma_variant(attention::MAVariant::paper) is the §8 point 9 network,
// MAMLOptions::brats().variant(MAMLVariant::ms_ensemble) the MS+Ensemble ablation. Branch widths are
// c_d = min(C 2^d, max) for d = 0..num_pool (stage num_pool is the bottleneck).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../../attention/modality_aware.hpp"
#include "../../core/error.hpp"

namespace mmnet::models {

// The spec §3.3 ablations: full MAML, MS+MA (the joint loss only: set by the loss, the network is MAML's) and
// MS+Ensemble (the M branches only: no fusion, MA or output head; the prediction is the mean of their softmaxes).
enum class MAMLVariant { maml, ms_ma, ms_ensemble };

inline const char* to_string(MAMLVariant v) {
  switch (v) {
    case MAMLVariant::maml: return "maml";
    case MAMLVariant::ms_ma: return "ms_ma";
    case MAMLVariant::ms_ensemble: return "ms_ensemble";
  }
  return "?";
}

// Which modalities are present: indices into 0..M-1, strictly increasing, non-empty.
using ModalitySet = std::vector<index_t>;

class MAMLOptions {
 public:
  // M input volumes (one branch each) and K classes; the other options have the BraTS preset's values.
  MAMLOptions(index_t modalities, index_t classes) : modalities_(modalities), classes_(classes) {}

  static MAMLOptions brats() { return MAMLOptions(4, 4).base_channels(16).num_pool(5).max_channels(320); }
  static MAMLOptions liver() { return MAMLOptions(2, 2).base_channels(32).num_pool(5).max_channels(320); }
  static MAMLOptions tiny() { return MAMLOptions(2, 3).base_channels(4).num_pool(3).max_channels(16); }
  static MAMLOptions small() { return MAMLOptions(4, 4).base_channels(8).num_pool(3).max_channels(64); }

  // M: input channels, one single-channel branch each.
  MAMLOptions& modalities(index_t v) { modalities_ = v; return *this; }
  index_t modalities() const { return modalities_; }
  // K: output classes (background included).
  MAMLOptions& classes(index_t v) { classes_ = v; return *this; }
  index_t classes() const { return classes_; }
  // C: base width of every branch = width of F_i (default 16, the BraTS code's plans' 32 halved).
  MAMLOptions& base_channels(index_t v) { base_ = v; return *this; }
  index_t base_channels() const { return base_; }
  // P: 2x2x2 stride-2 down-samplings per branch (default 5); also the number of deep-supervision heads.
  MAMLOptions& num_pool(index_t v) { num_pool_ = v; return *this; }
  index_t num_pool() const { return num_pool_; }
  // Cap of the branch widths (default 320, nnU-Net's 3D cap).
  MAMLOptions& max_channels(index_t v) { max_ = v; return *this; }
  index_t max_channels() const { return max_; }
  // MA module of the official code (default) or of the paper's text (spec §7 item 2).
  MAMLOptions& ma_variant(attention::MAVariant v) { ma_variant_ = v; return *this; }
  attention::MAVariant ma_variant() const { return ma_variant_; }
  // Network variant (default MAMLVariant::maml); ms_ensemble builds no fusion/MA/output.
  MAMLOptions& variant(MAMLVariant v) { variant_ = v; return *this; }
  MAMLVariant variant() const { return variant_; }
  // Training-mode modality dropout, an mmnet extension (the paper and code always train with all modalities,
  // spec §4.5): with probability p a training forward() drops a random non-empty proper subset of the
  // modalities, each of the 2^M - 2 subsets equally likely; default 0 (off). Needs M >= 2 to have an effect.
  MAMLOptions& modality_dropout(double p) { dropout_ = p; return *this; }
  double modality_dropout() const { return dropout_; }
  // Seed of the modality-dropout generator (MAML::dropout_generator(); default 0).
  MAMLOptions& dropout_seed(std::uint64_t v) { dropout_seed_ = v; return *this; }
  std::uint64_t dropout_seed() const { return dropout_seed_; }

  // Width of branch stage d = 0..num_pool: min(C 2^d, max).
  index_t channels(int d) const {
    index_t c = base_;
    for (int i = 0; i < d && c < max_; ++i) c *= 2;
    return c < max_ ? c : max_;
  }
  // The spatial sizes of a training input must be multiples of this.
  index_t size_multiple() const { return index_t(1) << num_pool_; }
  bool has_fusion() const { return variant_ != MAMLVariant::ms_ensemble; }

  // Parameter counts, from the options alone (spec §2.2, §2.3; used to check presets without building them).
  index_t branch_parameters() const {
    auto cna = [](index_t ci, index_t co) { return co * ci * 27 + co + 2 * co; };  // conv + bias + IN affine
    index_t n = cna(1, channels(0)) + cna(channels(0), channels(0));
    for (int d = 1; d <= static_cast<int>(num_pool_); ++d) n += cna(channels(d - 1), channels(d)) + cna(channels(d), channels(d));
    for (int t = 0; t < static_cast<int>(num_pool_); ++t) {
      const index_t ct = channels(t);
      n += channels(t + 1) * ct * 8;                 // tu, no bias
      n += cna(2 * ct, ct) + cna(ct, ct);            // localization
      n += classes_ * ct;                            // seg_outputs, 1x1x1, no bias
    }
    return n;
  }
  index_t fusion_parameters() const { return has_fusion() ? modalities_ * base_ * base_ * 27 + base_ : 0; }
  index_t ma_parameters() const {
    if (!has_fusion()) return 0;
    const index_t c = base_;
    const index_t second = ma_variant_ == attention::MAVariant::code ? c * c * 27 + c : c * c + c + 2 * c;
    return modalities_ * (2 * c * c * 27 + c + 2 * c + second);
  }
  index_t output_parameters() const { return has_fusion() ? base_ * classes_ : 0; }
  index_t num_parameters() const {
    return modalities_ * branch_parameters() + fusion_parameters() + ma_parameters() + output_parameters();
  }

  // Throws value_error naming the first invalid option.
  void validate() const {
    const std::string who = "mmnet::MAMLOptions";
    if (modalities_ < 1) fail<value_error>(who, "modalities", ">= 1", modalities_);
    if (classes_ < 2) fail<value_error>(who, "classes", ">= 2 (background and at least one class)", classes_);
    if (base_ < 1) fail<value_error>(who, "base_channels", ">= 1", base_);
    if (num_pool_ < 1 || num_pool_ > 12) fail<value_error>(who, "num_pool", "1..12", num_pool_);
    if (max_ < base_) fail<value_error>(who, "max_channels", ">= base_channels (" + std::to_string(base_) + ")", max_);
    if (!(dropout_ >= 0 && dropout_ <= 1)) fail<value_error>(who, "modality_dropout", "a probability in [0, 1]", dropout_);
  }

 private:
  index_t modalities_, classes_;
  index_t base_ = 16;
  index_t num_pool_ = 5;
  index_t max_ = 320;
  attention::MAVariant ma_variant_ = attention::MAVariant::code;
  MAMLVariant variant_ = MAMLVariant::maml;
  double dropout_ = 0;
  std::uint64_t dropout_seed_ = 0;
};

namespace maml {

// Checks a ModalitySet against M modalities: non-empty, indices in 0..M-1, strictly increasing.
inline void check_modality_set(const std::string& who, const ModalitySet& present, index_t modalities) {
  auto list = [&present] {
    std::string s = "{";
    for (std::size_t i = 0; i < present.size(); ++i) s += (i ? ", " : "") + std::to_string(present[i]);
    return s + "}";
  };
  if (present.empty()) fail<value_error>(who, "present modalities", "a non-empty set", "{}");
  for (std::size_t i = 0; i < present.size(); ++i) {
    if (present[i] < 0 || present[i] >= modalities)
      fail<value_error>(who, "present modality index", "0.." + std::to_string(modalities - 1), present[i],
                        "set " + list());
    if (i > 0 && present[i] <= present[i - 1])
      fail<value_error>(who, "present modalities", "strictly increasing indices", list());
  }
}

inline ModalitySet all_modalities(index_t m) {
  ModalitySet s(static_cast<std::size_t>(m));
  for (index_t i = 0; i < m; ++i) s[static_cast<std::size_t>(i)] = i;
  return s;
}

}  // namespace maml
}  // namespace mmnet::models
