// mmnet/models/conresnet/conresnet.hpp: ConResNet, the inter-slice context residual network (Zhang et al., IEEE
// TMI 2020; spec shared/specs/conresnet.md §2). PyTorch: the official `conresnet` of jianpengz/ConResNet
// (models/ConResNet.py, weight_std=True) without its 23 never-used tensors; tests/reference/conresnet_ref.py.
// It reads like the paper's figure 2 (PA = GN -> ReLU -> WSConv, U = trilinear align_corners=True to the size of
// the tensor it is added to):
//
//   X ─ conv_4_32 ─ layer0 ─ s1 ─ conv_32_64 (/2) ─ layer1 ─ s2 ─ conv_64_128 (/2) ─ layer2 ─ s3
//     ─ conv_128_256 (/2) ─ layer3 ─ layer4 (dilation 2) ─ fusionConv (GN, ReLU, Dropout3d, WSConv 8w -> 4w) ─ z
//   seg_x4:  (a4, o4) = ConResAtt(4w -> 2w, first)(U(z) + s3, U(X_res) at 1/4)          O_seg, O_res
//   seg_x2:  (a2, o2) = ConResAtt(2w -> w)(U(a4) + s2, U(o4))
//   seg_x1:  (a1, o1) = ConResAtt(w -> w)(U(a2) + s1, U(o2))
//   seg = seg_cls(a1), res = res_cls(o1), resx2 = U(resx2_cls(o2)), resx4 = U(resx4_cls(o4))   (1x1x1 with bias)
//
//   ConResNet<float, mmnet::cpu> net(ConResNetOptions::brats());          // 19,018,732 parameters
//   auto x_res = conresnet::image_residual(x);                             // outside the network, as the code
//   auto outs = net.forward(x, x_res);                                     // {seg, res, resx2, resx4} logits
//   auto [dx, dx_res] = net.backward(loss.backward());                     // one gradient per output
//   auto seg = net.predict(x, x_res);                                      // seg logits, eval mode
//
// Baseline (options.context_residual(false)): each stage is only F = conv_seg(ReLU(gn_seg(.))), O_seg = F,
// forward returns {seg}, x_res is ignored (may be undefined). State dict: the spec §8 names and order (100 tensors);
// load_official_state_dict() skips the 23 keys of the official dict that no forward uses (spec §7.7).
// Spec §7.10: the decoder interpolates to the skip tensor's size, which equals the official int(patch / f) for
// the required multiples of 8. GroupNorm has no running statistics: only fusionConv's Dropout3d depends on the mode.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../../attention/context_residual.hpp"
#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../layers/conv3d.hpp"
#include "../../layers/upsample.hpp"
#include "blocks.hpp"
#include "options.hpp"

namespace mmnet::models {

namespace conresnet {
// The 23 keys of the official state dict that hold tensors no forward uses, in the official order (spec §7.7).
inline std::vector<std::string> unused_official_keys() {
  std::vector<std::string> out;
  const attention::ConResAttOptions stages[3] = {attention::ConResAttOptions(4, 2).first(true),
                                                 attention::ConResAttOptions(2, 1), attention::ConResAttOptions(1, 1)};
  const char* names[3] = {"seg_x4.0.", "seg_x2.0.", "seg_x1.0."};
  for (int s = 0; s < 3; ++s)
    for (auto& k : attention::conres_att_unused_keys(stages[s], names[s])) out.push_back(k);
  return out;
}
}  // namespace conresnet

template <class T, class Backend>
struct ConResNet : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  using PreAct = conresnet::PreAct<T, Backend>;
  using Layer = conresnet::Layer<T, Backend>;
  using Stage = conresnet::Stage<T, Backend>;
  using Head = nn::Conv3d<T, Backend>;
  static constexpr const char* name = "mmnet::ConResNet";

  // The spec §8.3 encoder taps of the last forward.
  struct Taps {
    tensor x0, s1, s2, s3, layer3, layer4, z, r4, resx2_pre, resx4_pre;
  };

  // Members in the official registration (= state-dict) order.
  nn::WSConv3d<T, Backend> conv_4_32;  // "conv_4_32.0": C_in -> w
  PreAct conv_32_64;                   // w -> 2w, stride 2
  PreAct conv_64_128;                  // 2w -> 4w, stride 2
  PreAct conv_128_256;                 // 4w -> 8w, stride 2
  Layer layer0, layer1, layer2, layer3, layer4;
  PreAct fusionConv;                   // 8w -> 4w with Dropout3d
  Stage seg_x4;                        // "seg_x4.0": ConResAtt(4w -> 2w, first)
  Stage seg_x2;                        // ConResAtt(2w -> w)
  Stage seg_x1;                        // ConResAtt(w -> w)
  Head seg_cls;                        // "seg_cls.0": w -> K
  std::optional<Head> res_cls;         // w -> K        (context_residual only)
  std::optional<Head> resx2_cls;       // w -> K
  std::optional<Head> resx4_cls;       // 2w -> K

  explicit ConResNet(const ConResNetOptions& options = ConResNetOptions::brats(), Generator& g = default_generator())
      : conv_4_32(conresnet::ws3(validated(options).in_channels(), options.width()), g),
        conv_32_64(options.groups(), options.width(), 2 * options.width(), 2, g),
        conv_64_128(options.groups(), 2 * options.width(), 4 * options.width(), 2, g),
        conv_128_256(options.groups(), 4 * options.width(), 8 * options.width(), 2, g),
        layer0(options.groups(), options.width(), options.blocks()[0], 1, g),
        layer1(options.groups(), 2 * options.width(), options.blocks()[1], 1, g),
        layer2(options.groups(), 4 * options.width(), options.blocks()[2], 1, g),
        layer3(options.groups(), 8 * options.width(), options.blocks()[3], 1, g),
        layer4(options.groups(), 8 * options.width(), options.blocks()[4], options.dilation(), g),
        fusionConv(options.groups(), 8 * options.width(), 4 * options.width(), 1, g,
                   nn::Dropout3dOptions(options.dropout()).seed(options.dropout_seed())),
        seg_x4(options.context_residual(), stage(options, 4, 2).first(true), g),
        seg_x2(options.context_residual(), stage(options, 2, 1), g),
        seg_x1(options.context_residual(), stage(options, 1, 1), g),
        seg_cls(head(options.width(), options), g),
        options_(options) {
    if (options_.context_residual()) {
      res_cls.emplace(head(options_.width(), options_), g);
      resx2_cls.emplace(head(options_.width(), options_), g);
      resx4_cls.emplace(head(2 * options_.width(), options_), g);
    }
  }

  void members(Members<T, Backend>& m) override {
    m("conv_4_32.0", conv_4_32)("conv_32_64", conv_32_64)("conv_64_128", conv_64_128)("conv_128_256", conv_128_256);
    m("layer0", layer0)("layer1", layer1)("layer2", layer2)("layer3", layer3)("layer4", layer4);
    m("fusionConv", fusionConv)("seg_x4.0", seg_x4)("seg_x2.0", seg_x2)("seg_x1.0", seg_x1)("seg_cls.0", seg_cls);
    if (res_cls) m("res_cls.0", *res_cls)("resx2_cls.0", *resx2_cls)("resx4_cls.0", *resx4_cls);
  }

  const ConResNetOptions& options() const { return options_; }
  index_t num_outputs() const { return options_.num_outputs(); }

  // x: N x C_in x D x H x W (D, H, W multiples of 8); x_res: its inter-slice residual, same shape
  // (conresnet::image_residual(x); ignored by the baseline). Returns logits N x K x D x H x W:
  // {seg, res, resx2, resx4}, or {seg} for the baseline.
  std::vector<tensor> forward(const tensor& x, const tensor& x_res) {
    check_inputs(x, x_res, "forward");
    Taps t;
    t.x0 = conv_4_32.forward(x);
    t.s1 = layer0.forward(t.x0);
    t.s2 = layer1.forward(conv_32_64.forward(t.s1));
    t.s3 = layer2.forward(conv_64_128.forward(t.s2));
    t.layer3 = layer3.forward(conv_128_256.forward(t.s3));
    t.layer4 = layer4.forward(t.layer3);
    t.z = fusionConv.forward(t.layer4);
    const ExpandingArray3 sz1 = spatial(t.s1), sz2 = spatial(t.s2), sz4 = spatial(t.s3);
    const bool res = options_.context_residual();
    if (res) t.r4 = up_r4_.forward(x_res, sz4);
    const auto [a4, o4] = seg_x4.forward(add(up_z_.forward(t.z, sz4), t.s3), t.r4);
    const auto [a2, o2] = seg_x2.forward(add(up_a4_.forward(a4, sz2), t.s2), res ? up_o4_.forward(o4, sz2) : tensor());
    const auto [a1, o1] = seg_x1.forward(add(up_a2_.forward(a2, sz1), t.s1), res ? up_o2_.forward(o2, sz1) : tensor());
    std::vector<tensor> outs{seg_cls.forward(a1)};
    if (res) {
      t.resx2_pre = resx2_cls->forward(o2);
      t.resx4_pre = resx4_cls->forward(o4);
      outs.push_back(res_cls->forward(o1));
      outs.push_back(up_resx2_.forward(t.resx2_pre, sz1));
      outs.push_back(up_resx4_.forward(t.resx4_pre, sz1));
    }
    taps_ = t;
    x_shape_ = x.shape();
    out_shape_ = outs[0].shape();
    return outs;
  }

  // d_outs: one gradient per forward() output (an undefined entry counts as zero). Adds every parameter's
  // gradient; returns {dL/dX, dL/dX_res} (dX_res undefined for the baseline).
  std::pair<tensor, tensor> backward(const std::vector<tensor>& d_outs) {
    const std::string who = std::string(name) + "::backward";
    if (x_shape_.rank() != 5) fail<value_error>(who, "state", "a forward() call first", "none");
    if (static_cast<index_t>(d_outs.size()) != num_outputs())
      fail<shape_error>(who, options_.context_residual() ? "number of output gradients ({seg, res, resx2, resx4})"
                                                          : "number of output gradients ({seg}, baseline)",
                        num_outputs(), d_outs.size());
    std::vector<tensor> d(d_outs.size());
    for (std::size_t j = 0; j < d_outs.size(); ++j) {
      if (d_outs[j].defined()) check_same_shape(who, "gradient of output " + std::to_string(j), d_outs[j], out_shape_);
      d[j] = d_outs[j].defined() ? d_outs[j] : tensor(out_shape_);
    }
    const bool res = options_.context_residual();
    const tensor da1 = seg_cls.backward(d[0]);
    tensor do1, do2, do4;
    if (res) {
      do1 = res_cls->backward(d[1]);
      do2 = resx2_cls->backward(up_resx2_.backward(d[2]));
      do4 = resx4_cls->backward(up_resx4_.backward(d[3]));
    }
    const auto g1 = seg_x1.backward(da1, do1);
    tensor ds1 = g1.first;
    if (res) add_(do2, up_o2_.backward(g1.second));
    const auto g2 = seg_x2.backward(up_a2_.backward(g1.first), do2);
    tensor ds2 = g2.first;
    if (res) add_(do4, up_o4_.backward(g2.second));
    const auto g4 = seg_x4.backward(up_a4_.backward(g2.first), do4);
    tensor ds3 = g4.first;
    const tensor dx_res = res ? up_r4_.backward(g4.second) : tensor();
    const tensor dl3 = layer4.backward(fusionConv.backward(up_z_.backward(g4.first)));
    add_(ds3, conv_128_256.backward(layer3.backward(dl3)));
    add_(ds2, conv_64_128.backward(layer2.backward(ds3)));
    add_(ds1, conv_32_64.backward(layer1.backward(ds2)));
    return {conv_4_32.backward(layer0.backward(ds1)), dx_res};
  }

  // Inference: the seg logits with Dropout off (eval) whatever the mode; the mode is restored.
  tensor predict(const tensor& x, const tensor& x_res) {
    const bool was = this->is_training();
    this->eval();
    tensor seg;
    try {
      seg = forward(x, x_res)[0];
    } catch (...) {
      this->train(was);
      throw;
    }
    this->train(was);
    return seg;
  }

  // The spec §8.3 taps of the last forward (encoder, r4, head outputs before U); per-module F, G, R, T:
  // seg_x4.att->taps() etc.
  const Taps& taps() const { return taps_; }

  // The next train-mode forward uses this fusionConv Dropout3d mask (N x 8w x 1 x 1 x 1 multipliers, 0 or 1/(1-p),
  // e.g. exported from PyTorch) instead of drawing one.
  void next_dropout_mask(const tensor& mask) { fusionConv.next_dropout_mask(mask); }

  // The official keys this model does not hold (the 23 of unused_official_keys(); spec §7.7).
  std::vector<std::string> unused_official_keys() const { return conresnet::unused_official_keys(); }

  // Loads the official state dict (123 keys): drops the unused_official_keys() present (listed in *skipped if
  // given), then load_state_dict(rest, strict).
  LoadResult load_official_state_dict(const StateDict& sd, bool strict = true, std::vector<std::string>* skipped = nullptr) {
    const auto unused = unused_official_keys();
    StateDict used;
    for (const auto& e : sd) {
      bool skip = false;
      for (const auto& k : unused) skip = skip || e.first == k;
      if (skip && skipped) skipped->push_back(e.first);
      if (!skip) used.insert(e.first, e.second);
    }
    return this->load_state_dict(used, strict);
  }

 private:
  static const ConResNetOptions& validated(const ConResNetOptions& o) {
    o.validate();
    return o;
  }
  static attention::ConResAttOptions stage(const ConResNetOptions& o, index_t in_mult, index_t out_mult) {
    return attention::ConResAttOptions(in_mult * o.width(), out_mult * o.width())
        .res_in_channels(o.in_channels())
        .groups(o.groups());
  }
  static nn::Conv3dOptions head(index_t in, const ConResNetOptions& o) { return nn::Conv3dOptions(in, o.num_classes(), 1); }
  static nn::Upsample<T, Backend> upsample() {
    return nn::Upsample<T, Backend>(nn::UpsampleOptions().mode(nn::UpsampleMode::trilinear).align_corners(true).size({1, 1, 1}));
  }
  static ExpandingArray3 spatial(const tensor& t) { return {t.size(2), t.size(3), t.size(4)}; }

  void check_inputs(const tensor& x, const tensor& x_res, const char* fn) const {
    const std::string who = std::string(name) + "::" + fn;
    check_rank(who, "X", x, 5);
    if (x.size(1) != options_.in_channels())
      fail<shape_error>(who, "X channels (in_channels)", options_.in_channels(), x.size(1), "X shape " + x.shape().str());
    if (x.numel() == 0) fail<shape_error>(who, "X", "a non-empty tensor", "shape " + x.shape().str());
    for (int a = 0; a < 3; ++a)
      if (x.size(2 + a) % ConResNetOptions::size_multiple() != 0)
        fail<shape_error>(who, std::string("X size ") + "DHW"[a], "a multiple of 8", x.size(2 + a),
                          "X shape " + x.shape().str());
    if (options_.context_residual() && x_res.shape() != x.shape())
      fail<shape_error>(who, "X_res shape (X's)", x.shape().str(), x_res.defined() ? x_res.shape().str() : "undefined");
  }

  ConResNetOptions options_;
  nn::Upsample<T, Backend> up_z_ = upsample(), up_r4_ = upsample(), up_a4_ = upsample(), up_o4_ = upsample(),
                           up_a2_ = upsample(), up_o2_ = upsample(), up_resx2_ = upsample(), up_resx4_ = upsample();
  Taps taps_;
  Shape x_shape_, out_shape_;
};

}  // namespace mmnet::models
