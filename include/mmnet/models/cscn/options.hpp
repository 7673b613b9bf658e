// mmnet/models/cscn/options.hpp: options of the CSCN cascade (Guo et al. 2021; spec shared/specs/cascaded-fcn.md
// §2, §4, §8): BUNetOptions (coarse 3D U-Net), ACDNetOptions (ASPP-DenseNet with a multi-scale decoder) and
// CSCNOptions (both networks, block geometry, ROI margin, fusion weight, loss gamma, lr schedule).
//
//   auto o = models::CSCNOptions::paper();   // BUNet b 16, ACDNet s 32 L 4 k 16, block (8, 24, 24), margin 8
//   auto t = models::CSCNOptions::tiny();    // spec §8 "ref-tiny": block (4, 8, 12), margin 2
//
// Every default is the spec's [R] choice where the paper is silent (widths, rates, θ, λ, γ, margin, schedule).
#pragma once
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "../../core/config.hpp"
#include "../../core/error.hpp"
#include "../../core/expanding_array.hpp"

namespace mmnet::models {

// BUNet (spec §2.2): a 3D U-Net with 2 poolings, widths b | 2b (E1), 2b | 4b (E2), 4b | 8b (bottom),
// decoders 4b and 2b, head 2b -> classes.
class BUNetOptions {
 public:
  BUNetOptions() = default;
  static BUNetOptions paper() { return BUNetOptions(); }          // b 16: 1,147,090 parameters
  static BUNetOptions tiny() { return BUNetOptions().b(2); }      // spec §8: 18,116 parameters

  // Base width b (default 16).
  BUNetOptions& b(index_t v) { b_ = v; return *this; }
  index_t b() const { return b_; }
  // Input channels (default 1: the image).
  BUNetOptions& in_channels(index_t v) { in_ = v; return *this; }
  index_t in_channels() const { return in_; }
  // Output classes of the head, i.e. logit channels (default 2: background, tumour).
  BUNetOptions& classes(index_t v) { classes_ = v; return *this; }
  index_t classes() const { return classes_; }

  void validate() const {
    const std::string who = "mmnet::models::BUNetOptions";
    if (b_ < 1) fail<value_error>(who, "b", ">= 1", b_);
    if (in_ < 1) fail<value_error>(who, "in_channels", ">= 1", in_);
    if (classes_ < 2) fail<value_error>(who, "classes", ">= 2 (softmax over C)", classes_);
  }

 private:
  index_t b_ = 16, in_ = 1, classes_ = 2;
};

// ACDNet (spec §2.3): stem CBR(3, in -> s); 3 dense blocks of L ASPP dense layers (growth k, ASPP branch width a,
// rates r1..r3) separated by transitions CBR(1, C -> floor(θ C)) + AvgPool; decoder ConvT + CBR to u2 and u1;
// side outputs of width e on DB3, UP2, UP1, fused by CBR(3, 3e -> s) and a 1x1 head.
class ACDNetOptions {
 public:
  ACDNetOptions() = default;
  static ACDNetOptions paper() { return ACDNetOptions(); }  // 1,673,234 parameters
  // Spec §8 ref-tiny: s 8, L 2, k 3, a 4, rates (1, 2, 3), θ 0.5, u2 16, u1 10, e 4: 42,898 parameters.
  static ACDNetOptions tiny() { return ACDNetOptions().s(8).L(2).k(3).a(4).rates({1, 2, 3}).u2(16).u1(10).e(4); }

  // Stem width s (default 32).
  ACDNetOptions& s(index_t v) { s_ = v; return *this; }
  index_t s() const { return s_; }
  // Dense layers per block L (default 4).
  ACDNetOptions& L(index_t v) { L_ = v; return *this; }
  index_t L() const { return L_; }
  // Growth rate k: channels each dense layer adds (default 16).
  ACDNetOptions& k(index_t v) { k_ = v; return *this; }
  index_t k() const { return k_; }
  // ASPP branch width a (default 16).
  ACDNetOptions& a(index_t v) { a_ = v; return *this; }
  index_t a() const { return a_; }
  // Atrous rates (r1, r2, r3) of the 3x3x3 branches b1..b3, isotropic, the same in every block (default 1, 2, 4).
  ACDNetOptions& rates(std::array<index_t, 3> v) { rates_ = v; return *this; }
  const std::array<index_t, 3>& rates() const { return rates_; }
  // Transition compression θ: a transition keeps floor(θ C) channels (default 0.5).
  ACDNetOptions& theta(double v) { theta_ = v; return *this; }
  double theta() const { return theta_; }
  // Decoder widths u2 (after UP2) and u1 (after UP1) (defaults 64 = 2s and 32 = s).
  ACDNetOptions& u2(index_t v) { u2_ = v; return *this; }
  index_t u2() const { return u2_; }
  ACDNetOptions& u1(index_t v) { u1_ = v; return *this; }
  index_t u1() const { return u1_; }
  // Side-output width e (default 16 = s / 2).
  ACDNetOptions& e(index_t v) { e_ = v; return *this; }
  index_t e() const { return e_; }
  // Input channels (default 2: cat[image, P_coarse]; 1 for the "ACDNet alone" baseline).
  ACDNetOptions& in_channels(index_t v) { in_ = v; return *this; }
  index_t in_channels() const { return in_; }
  // Output classes (default 2).
  ACDNetOptions& classes(index_t v) { classes_ = v; return *this; }
  index_t classes() const { return classes_; }

  // Derived widths: output channels of dense block i = 1..3 and of transition i = 1..2.
  index_t transition_width(index_t c) const { return static_cast<index_t>(std::floor(theta_ * static_cast<double>(c))); }
  index_t block_in(int i) const { return i == 1 ? s_ : transition_width(block_out(i - 1)); }
  index_t block_out(int i) const { return block_in(i) + L_ * k_; }

  void validate() const {
    const std::string who = "mmnet::models::ACDNetOptions";
    for (auto [name, v] : {std::pair<const char*, index_t>{"s", s_}, {"L", L_}, {"k", k_}, {"a", a_}, {"u2", u2_},
                           {"u1", u1_}, {"e", e_}, {"in_channels", in_}})
      if (v < 1) fail<value_error>(who, name, ">= 1", v);
    if (classes_ < 2) fail<value_error>(who, "classes", ">= 2 (softmax over C)", classes_);
    for (int i = 0; i < 3; ++i)
      if (rates_[static_cast<std::size_t>(i)] < 1)
        fail<value_error>(who, "rates[" + std::to_string(i) + "]", ">= 1", rates_[static_cast<std::size_t>(i)]);
    if (!(theta_ > 0 && theta_ <= 1)) fail<value_error>(who, "theta", "a value in (0, 1]", theta_);
    for (int i = 1; i <= 2; ++i)
      if (transition_width(block_out(i)) < 1)
        fail<value_error>(who, "transition " + std::to_string(i) + " width floor(theta C)", ">= 1",
                          transition_width(block_out(i)));
  }

 private:
  index_t s_ = 32, L_ = 4, k_ = 16, a_ = 16;
  std::array<index_t, 3> rates_{1, 2, 4};
  double theta_ = 0.5;
  index_t u2_ = 64, u1_ = 32, e_ = 16, in_ = 2, classes_ = 2;
};

// The cascade (spec §2.1, §3, §4): both networks, the block (D, H, W) in the view frame, the sliding-window
// stride, the ROI margin, the fusion weight λ, one network per stage or one per view, the focal γ and the
// Adam / exponential-decay schedule of §4.3.
class CSCNOptions {
 public:
  CSCNOptions() = default;
  static CSCNOptions paper() { return CSCNOptions(); }
  static CSCNOptions tiny() {
    return CSCNOptions().bunet(BUNetOptions::tiny()).acdnet(ACDNetOptions::tiny()).block({4, 8, 12}).stride({2, 4, 6})
        .roi_margin(2);
  }

  CSCNOptions& bunet(const BUNetOptions& v) { bunet_ = v; return *this; }
  const BUNetOptions& bunet() const { return bunet_; }
  CSCNOptions& acdnet(const ACDNetOptions& v) { acdnet_ = v; return *this; }
  const ACDNetOptions& acdnet() const { return acdnet_; }
  // Block (D, H, W) in the view frame, D along the view normal (default (8, 24, 24); each a multiple of 4).
  CSCNOptions& block(ExpandingArray3 v) { block_ = v; return *this; }
  const ExpandingArray3& block() const { return block_; }
  // Sliding-window step (D, H, W) of stage_predict (default (4, 12, 12) = half the block, spec §4.4).
  CSCNOptions& stride(ExpandingArray3 v) { stride_ = v; return *this; }
  const ExpandingArray3& stride() const { return stride_; }
  // ROI margin in voxels around the bounding box of the largest component (default 8).
  CSCNOptions& roi_margin(index_t v) { margin_ = v; return *this; }
  index_t roi_margin() const { return margin_; }
  // Fusion weight: P_final = λ P_coarse + (1 - λ) P_fine in the ROI (default 0.5).
  CSCNOptions& lambda(double v) { lambda_ = v; return *this; }
  double lambda() const { return lambda_; }
  // Three networks per stage (one per view, Wang-style) instead of one shared network (default false).
  CSCNOptions& view_specific_weights(bool v) { view_specific_ = v; return *this; }
  bool view_specific_weights() const { return view_specific_; }
  // Focal-loss γ of both stages (default 2).
  CSCNOptions& gamma(double v) { gamma_ = v; return *this; }
  double gamma() const { return gamma_; }
  // Adam's initial lr (default 1e-3), decay factor per decay_steps iterations (0.9 per 500), staircase (false).
  CSCNOptions& lr(double v) { lr_ = v; return *this; }
  double lr() const { return lr_; }
  CSCNOptions& lr_decay(double v) { decay_ = v; return *this; }
  double lr_decay() const { return decay_; }
  CSCNOptions& lr_decay_steps(double v) { decay_steps_ = v; return *this; }
  double lr_decay_steps() const { return decay_steps_; }
  CSCNOptions& lr_staircase(bool v) { staircase_ = v; return *this; }
  bool lr_staircase() const { return staircase_; }
  // Blocks per network call in stage_predict (default 8; results do not depend on it in eval mode).
  CSCNOptions& inference_batch(index_t v) { inference_batch_ = v; return *this; }
  index_t inference_batch() const { return inference_batch_; }

  void validate() const {
    const std::string who = "mmnet::models::CSCNOptions";
    bunet_.validate();
    acdnet_.validate();
    for (int a = 0; a < 3; ++a) {
      if (block_[a] < 4 || block_[a] % 4 != 0)
        fail<value_error>(who, std::string("block ") + "DHW"[a], "a positive multiple of 4 (two 2x poolings)", block_[a],
                          "block " + block_.str());
      if (stride_[a] < 1 || stride_[a] > block_[a])
        fail<value_error>(who, std::string("stride ") + "DHW"[a], "1 to the block size " + std::to_string(block_[a]),
                          stride_[a]);
    }
    if (margin_ < 0) fail<value_error>(who, "roi_margin", ">= 0", margin_);
    if (!(lambda_ >= 0 && lambda_ <= 1)) fail<value_error>(who, "lambda", "a value in [0, 1]", lambda_);
    if (!(gamma_ >= 0) || !std::isfinite(gamma_)) fail<value_error>(who, "gamma", "a finite value >= 0", gamma_);
    if (!(lr_ > 0) || !std::isfinite(lr_)) fail<value_error>(who, "lr", "a finite value > 0", lr_);
    if (!(decay_ > 0 && decay_ <= 1)) fail<value_error>(who, "lr_decay", "a value in (0, 1]", decay_);
    if (!(decay_steps_ > 0)) fail<value_error>(who, "lr_decay_steps", "> 0", decay_steps_);
    if (inference_batch_ < 1) fail<value_error>(who, "inference_batch", ">= 1", inference_batch_);
    if (bunet_.classes() != acdnet_.classes())
      fail<value_error>(who, "acdnet classes (equal to bunet's)", bunet_.classes(), acdnet_.classes());
  }

 private:
  BUNetOptions bunet_;
  ACDNetOptions acdnet_;
  ExpandingArray3 block_{8, 24, 24}, stride_{4, 12, 12};
  index_t margin_ = 8;
  double lambda_ = 0.5;
  bool view_specific_ = false;
  double gamma_ = 2.0, lr_ = 1e-3, decay_ = 0.9, decay_steps_ = 500;
  bool staircase_ = false;
  index_t inference_batch_ = 8;
};

}  // namespace mmnet::models
