// mmnet/models/mmfnet/mmfnet.hpp: MMFNet, the multi-modality MRI fusion network (Chen et al., Neurocomputing
// 2020; spec shared/specs/mmfnet.md §2). No official code exists; PyTorch equivalent: tests/reference/
// mmfnet_ref.py `MMFNet`, written from the spec, with the state-dict names of spec §8. It reads like figure 1:
//
//   x (N x M x D x H x W, channel m = modality m)
//     ├─ encoders.0 ─┐  per level l: skip_l^m ──► fusions.{l} (3D-CBAM + RFBlock) ──► Ffused_l ─┐
//     ├─ encoders.1 ─┤                                                                          │
//     └─ encoders.2 ─┴─ bottlenecks ─ cat ─► decoder.L ... decoder.1 (up, cat[Ffused_l, up], CBR) ◄┘
//                                                            └─ head (Conv3d 1x1x1) ─ logits ─ sigmoid ─ prob
//
//   MMFNet<float, mmnet::cpu> net(MMFNetOptions::paper());
//   auto prob = net.forward(x);               // N x 1 x D x H x W foreground probability
//   net.backward(dice.backward());            // dL/dprob in; parameter gradients accumulate
//
// Options (models/mmfnet/options.hpp) give the paper network, the §8 tiny network and every ablation: the
// single-modality model, Base MMFNet, +multi-MLP, +stdPool in one branch, two modalities, merging encoders'
// features, input-level fusion. The spatial sizes must be multiples of 2^L. BatchNorm follows train()/eval();
// freezing the encoders (net.encoders[m].freeze()) keeps their BN in train mode, as requires_grad=False does.
#pragma once
#include <string>
#include <vector>

#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../layers/activation.hpp"
#include "../../layers/concat.hpp"
#include "../../layers/conv3d.hpp"
#include "decoder.hpp"
#include "encoder.hpp"
#include "fusion_block.hpp"
#include "options.hpp"

namespace mmnet::models {

namespace detail {
inline const MMFNetOptions& validated(const MMFNetOptions& o) {
  o.validate();
  return o;
}
// Widths of the skips entering the decoder: c_l after a fusion block, E c_l when the skips are merged.
inline std::vector<index_t> decoder_skip_channels(const MMFNetOptions& o) {
  std::vector<index_t> s = o.level_channels();
  if (o.fusion() == MMFNetFusion::merge)
    for (auto& c : s) c *= o.num_encoders();
  return s;
}
}  // namespace detail

template <class T, class Backend>
struct MMFNet : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::MMFNet";

  std::vector<mmfnet::Encoder<T, Backend>> encoders;     // encoders[m] reads input channel m
  std::vector<mmfnet::FusionBlock<T, Backend>> fusions;  // fusions[l - 1] is level l; empty when merging
  mmfnet::Decoder<T, Backend> decoder;
  nn::Conv3d<T, Backend> head;                           // c_1 -> 1, 1 x 1 x 1

  explicit MMFNet(const MMFNetOptions& options = MMFNetOptions::paper(), Generator& g = default_generator())
      : decoder(detail::validated(options).num_encoders() * options.bottleneck_channels(), options.level_channels(),
                detail::decoder_skip_channels(options), g),
        head(nn::Conv3dOptions(options.channels(1), 1, 1), g),
        options_(options) {
    const index_t e = options.num_encoders(), levels = options.levels();
    encoders.reserve(static_cast<std::size_t>(e));
    for (index_t m = 0; m < e; ++m)
      encoders.emplace_back(options.encoder_in_channels(), options.level_channels(), options.bottleneck_channels(), g);
    if (options.fusion() == MMFNetFusion::cbam_rfblock) {
      fusions.reserve(static_cast<std::size_t>(levels));
      for (index_t l = 1; l <= levels; ++l) fusions.emplace_back(e, options.channels(l), options.attention_options(l), g);
    } else {
      merges_.resize(static_cast<std::size_t>(levels));
    }
    fused_.resize(static_cast<std::size_t>(levels));
  }

  void members(Members<T, Backend>& m) override {
    m("encoders", encoders)("fusions", fusions, 1)("decoder", decoder)("head", head);
  }

  const MMFNetOptions& options() const { return options_; }

  // Opt-in memory saving for training steps with ONE backward per forward (Trainer turns it on while it
  // trains): backward frees each BatchNorm input and each fusion block's attention tensors and taps
  // (fusions[l].fori() ...) once it has used them, lowering the step's peak memory. A second backward after
  // one forward then throws value_error. Default false. Numerics are unchanged.
  void release_activations_after_backward(bool v) {
    release_ = v;
    for (auto& e : encoders) {
      for (auto& b : e.blocks) {
        b.bn1.release_after_backward(v);
        b.bn2.release_after_backward(v);
      }
      e.bottleneck.bn.release_after_backward(v);
    }
    for (auto& f : fusions) f.release_after_backward(v);
    for (auto& b : decoder.blocks) b.bn.release_after_backward(v);
  }
  bool release_activations_after_backward() const { return release_; }

  // x: N x M x D x H x W, D, H, W multiples of 2^L. Returns the foreground probability N x 1 x D x H x W.
  tensor forward(const tensor& x) {
    check_input(x);
    const std::size_t e = encoders.size(), levels = fused_.size();
    const std::vector<tensor> xs =
        options_.input_level_fusion() ? std::vector<tensor>{x} : nn::split_channels(x, std::vector<index_t>(e, 1));
    std::vector<tensor> bottoms;
    for (std::size_t m = 0; m < e; ++m) bottoms.push_back(encoders[m].forward(xs[m]));
    for (std::size_t l = 0; l < levels; ++l) {
      std::vector<tensor> skips;
      for (auto& enc : encoders) skips.push_back(enc.skip(static_cast<index_t>(l + 1)));
      fused_[l] = fusions.empty() ? merges_[l].forward(skips) : fusions[l].forward(skips);
    }
    logits_ = head.forward(decoder.forward(bottom_concat_.forward(bottoms), fused_));
    return sigmoid_.forward(logits_);
  }

  // dL/dprob in; returns dL/dx and adds every parameter gradient.
  tensor backward(const tensor& dprob) {
    check_grad(dprob, "grad_output (dL/dprob)");
    return backward_logits(sigmoid_.backward(dprob));
  }

  // dL/dlogits in (for losses on logits, e.g. BCE with logits); returns dL/dx.
  tensor backward_logits(const tensor& dlogits) {
    check_grad(dlogits, "grad_output (dL/dlogits)");
    auto [dbottom, dfused] = decoder.backward(head.backward(dlogits));
    const std::vector<tensor> dbottoms = bottom_concat_.backward(dbottom);
    const std::size_t e = encoders.size(), levels = fused_.size();
    std::vector<std::vector<tensor>> dskips(e, std::vector<tensor>(levels));
    for (std::size_t l = 0; l < levels; ++l) {
      const std::vector<tensor> d = fusions.empty() ? merges_[l].backward(dfused[l]) : fusions[l].backward(dfused[l]);
      for (std::size_t m = 0; m < e; ++m) dskips[m][l] = d[m];
    }
    std::vector<tensor> dxs;
    for (std::size_t m = 0; m < e; ++m) dxs.push_back(encoders[m].backward(dbottoms[m], dskips[m]));
    return options_.input_level_fusion() ? dxs[0] : nn::cat_channels(dxs);
  }

  // Of the last forward: logits and probability (N x 1 x D x H x W); the skip that decoder block l received
  // (Ffused_l, or the merged skips); decoder block l's output. Per-level attention taps: fusions[l - 1].
  const tensor& logits() const { return logits_; }
  const tensor& probability() const { return sigmoid_.output(); }
  const tensor& fused(index_t level) const { return fused_.at(static_cast<std::size_t>(level - 1)); }
  const tensor& decoder_output(index_t level) const { return decoder.output(level); }

 private:
  void check_input(const tensor& x) const {
    check_rank(name, "input", x, 5);
    if (x.size(1) != options_.modalities())
      fail<shape_error>(name, "input channels (modalities)", options_.modalities(), x.size(1), "input shape " + x.shape().str());
    if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor", "shape " + x.shape().str());
    const index_t k = options_.size_multiple();
    for (int d = 2; d < 5; ++d)
      if (x.size(d) % k != 0)
        fail<shape_error>(name, std::string("input size ") + "DHW"[d - 2],
                          "a multiple of " + std::to_string(k) + " (2^" + std::to_string(options_.levels()) + " levels)",
                          x.size(d), "input shape " + x.shape().str());
  }
  void check_grad(const tensor& d, const std::string& what) const {
    const std::string who = std::string(name) + "::backward";
    if (!logits_.defined()) fail<value_error>(who, "state", "a forward() call first", "no stored input");
    check_same_shape(who, what, d, logits_.shape());
  }

  MMFNetOptions options_;
  bool release_ = false;
  std::vector<nn::Concat<T, Backend>> merges_;  // the merge baseline's per-level concat
  nn::Concat<T, Backend> bottom_concat_;
  nn::Sigmoid<T, Backend> sigmoid_;
  std::vector<tensor> fused_;
  tensor logits_;
};

}  // namespace mmnet::models
