// mmnet/models/hmrnet/hmrnet.hpp: HMRNet, high- and multi-resolution network with bidirectional feature
// calibration (Fu et al.; spec shared/specs/hmrnet.md §2.3, §8.0). PyTorch: the official HMRNet_p.py /
// HMRNet_s.py without the unused `sse0`; tests/reference/hmrnet_ref.py `HMRNet`. It reads like the paper's
// figure 2 (B = the block of models/hmrnet/block.hpp, BFC = attention::BFC, c = c0..c3, ch = HR width):
//
//   x ─ in_conv ─ m0 ─ pool 2 ─ down1 ─ m1 ┐         ┌ mc1 ─ pool 2 ─ down2 ─ m2 ┐ BFC2 ┌ mc2 ─ pool p3 ─ down3 ─ ...
//     └ fr_in_conv ─ h0 ─ basic_conv1 ─ h1 ┘ BFC1 ───┴ hc1 ─ basic_conv2 ─── h2 ─┘ ─────┴ hc2 ─ basic_conv3 ─ ...
//   ... m3 ┐ BFC3 ─ mc3 ─ dpvision_con3 ─ y3 (1/8);   up u3 ─ up2 ─ m5 ┐ BFC5 (skip mc2) ─ mc5 ─ dpvision_con5 ─ y2 (1/4)
//   ... h3 ┘        hc3 ─ basic_conv5 ───────────────────────────── h5 ┘                 hc5 ─ ...
//   up 2 ─ up3 ─ m6, basic_conv6 ─ h6: BFC6 (skip mc1) ─ mc6 ─ dpvision_con6 ─ y1 (1/2);  up 2 ─ up4 ─ m7, basic_conv7 ─ h7
//   L7: m7c = concat7(cat[m0, h7, m7]) * sse7(h7);  h7c = fr_concat7(cat[m7c, h7]) * fr_sse7(m7)   (raw m7 in the gate)
//       y0 = out_conv(final_concat(cat[h7c, m7c]))        Conv 3x3x3, pad 1, logits at full resolution
//
//   HMRNet<float, mmnet::cpu> net(HMRNetOptions::paper_p());
//   auto ys = net.forward(x);      // [y0, y1, y2, y3]: full, 1/2, 1/4, 1/8 (-s: y3 at (1/8, 1/8, 1/4))
//   float l = loss.forward(ys, labels);
//   net.backward(loss.backward()); // one gradient per output; undefined = no loss term on it
//   auto prob = net.predict(x);    // softmax(y0)
//
// State dict: spec §8.0, the official keys in the official order (BFC levels spliced in: concat{l}.conv.*,
// fr_concat{l}.conv.*, sse_up{l}.conv.*, sse_down{l}.conv.*), so official weights load strictly once `sse0.*`
// is dropped. gates() lists the 12 gates of the last forward in the §8.0 (execution) order.
// "No gradient": after backward(), every parameter that no defined output gradient reaches has an undefined grad
// (an all-zero grad -- zero_grad()'s -- is dropped; a non-zero one accumulated by an earlier backward is kept), so
// the optimizers and clip_grad_norm_ skip it as PyTorch skips grad None: with the spec's λ = (0.4, 0.3, 0.3, 0)
// that is dpvision_con3 (§3). Every reached parameter has a defined grad into which the gradient is added.
// InstanceNorm has no running statistics: eval() and train() compute the same thing.
#pragma once
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "../../attention/bfc.hpp"
#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../layers/concat.hpp"
#include "../../layers/conv3d.hpp"
#include "../../layers/maxpool3d.hpp"
#include "../../layers/softmax.hpp"
#include "../../layers/upsample.hpp"
#include "block.hpp"
#include "options.hpp"

namespace mmnet::models {

template <class T, class Backend>
struct HMRNet : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  using Block = hmrnet::ConvBlock<T, Backend>;
  using Level = attention::BFC<T, Backend, Block>;
  using Gate = attention::Gate<T, Backend>;
  static constexpr const char* name = "mmnet::HMRNet";

  // Outputs of the four first blocks (before BFC1) of the last forward (spec §8.1's float32 checks).
  struct FirstBlocks {
    tensor in_conv, fr_in_conv, down1, basic_conv1;
  };

  // Members in the official construction (= state-dict) order.
  Block in_conv;        // B(in, c0)                      m0
  Block fr_in_conv;     // B(in, ch)                      h0
  Block basic_conv1;    // B(ch, ch)                      h1
  Block down1;          // B(c0, c1) after pool 2         m1   ("down1.maxpool_conv.1")
  Level bfc1;           // concat1, fr_concat1, sse_up1, sse_down1
  Block basic_conv2;
  Block down2;          // B(c1, c2) after pool 2
  Level bfc2;
  Block basic_conv3;
  Block down3;          // B(c2, c3) after pool p3
  nn::Conv3d<T, Backend> dpvision_con3;  // c3 -> K, 1x1x1: y3
  Level bfc3;
  Block up2;            // B(c3, c2) after up u3          m5   ("up2.uppool_conv.1")
  Block basic_conv5;
  nn::Conv3d<T, Backend> dpvision_con5;  // c2 -> K: y2
  Level bfc5;           // skip mc2
  Block up3;            // B(c2, c1) after up 2           m6
  Block basic_conv6;
  nn::Conv3d<T, Backend> dpvision_con6;  // c1 -> K: y1
  Level bfc6;           // skip mc1
  Block up4;            // B(c1, c0) after up 2           m7
  Block basic_conv7;
  Block concat7;        // B(2 c0 + ch, c0) on cat[m0, h7, m7]        ("concat7.conv")
  Block fr_concat7;     // B(c0 + ch, ch) on cat[m7c, h7]
  Block final_concat;   // B(ch + c0, c0) on cat[h7c, m7c]
  Gate sse7;            // W_h7 on h7 -> gates m7c
  Gate fr_sse7;         // W_m7 on raw m7 -> gates h7c
  nn::Conv3d<T, Backend> out_conv;  // c0 -> K, 3x3x3 pad 1: y0

  explicit HMRNet(const HMRNetOptions& options, Generator& g = default_generator())
      : in_conv(block(validated(options), options.in_channels(), options.mr_channels(0), "conv_conv", g)),
        fr_in_conv(block(options, options.in_channels(), options.hr_channels(), "conv_conv", g)),
        basic_conv1(hr_block(options, g)),
        down1(block(options, options.mr_channels(0), options.mr_channels(1), "conv_conv", g)),
        bfc1(level(options, 1, g)),
        basic_conv2(hr_block(options, g)),
        down2(block(options, options.mr_channels(1), options.mr_channels(2), "conv_conv", g)),
        bfc2(level(options, 2, g)),
        basic_conv3(hr_block(options, g)),
        down3(block(options, options.mr_channels(2), options.mr_channels(3), "conv_conv", g)),
        dpvision_con3(nn::Conv3dOptions(options.mr_channels(3), options.classes(), 1), g),
        bfc3(level(options, 3, g)),
        up2(block(options, options.mr_channels(3), options.mr_channels(2), "conv_conv", g)),
        basic_conv5(hr_block(options, g)),
        dpvision_con5(nn::Conv3dOptions(options.mr_channels(2), options.classes(), 1), g),
        bfc5(level(options, 5, g)),
        up3(block(options, options.mr_channels(2), options.mr_channels(1), "conv_conv", g)),
        basic_conv6(hr_block(options, g)),
        dpvision_con6(nn::Conv3dOptions(options.mr_channels(1), options.classes(), 1), g),
        bfc6(level(options, 6, g)),
        up4(block(options, options.mr_channels(1), options.mr_channels(0), "conv_conv", g)),
        basic_conv7(hr_block(options, g)),
        concat7(block(options, 2 * options.mr_channels(0) + options.hr_channels(), options.mr_channels(0), "conv_conv", g)),
        fr_concat7(block(options, options.mr_channels(0) + options.hr_channels(), options.hr_channels(), "conv_conv", g)),
        final_concat(block(options, options.hr_channels() + options.mr_channels(0), options.mr_channels(0), "conv_conv", g)),
        sse7(attention::GateOptions(options.hr_channels()), g),
        fr_sse7(attention::GateOptions(options.mr_channels(0)), g),
        out_conv(nn::Conv3dOptions(options.mr_channels(0), options.classes(), 3).padding(1), g),
        pool1_(nn::MaxPool3dOptions(ExpandingArray3(2))),
        pool2_(nn::MaxPool3dOptions(ExpandingArray3(2))),
        pool3_(nn::MaxPool3dOptions(options.p3())),
        upsample2_(upsample(options.p3())),
        upsample3_(upsample(ExpandingArray3(2))),
        upsample4_(upsample(ExpandingArray3(2))),
        options_(options) {}

  void members(Members<T, Backend>& m) override {
    m("in_conv", in_conv)("fr_in_conv", fr_in_conv);
    m("basic_conv1", basic_conv1)("down1.maxpool_conv.1", down1).splice(bfc1);
    m("basic_conv2", basic_conv2)("down2.maxpool_conv.1", down2).splice(bfc2);
    m("basic_conv3", basic_conv3)("down3.maxpool_conv.1", down3)("dpvision_con3", dpvision_con3).splice(bfc3);
    m("up2.uppool_conv.1", up2)("basic_conv5", basic_conv5)("dpvision_con5", dpvision_con5).splice(bfc5);
    m("up3.uppool_conv.1", up3)("basic_conv6", basic_conv6)("dpvision_con6", dpvision_con6).splice(bfc6);
    m("up4.uppool_conv.1", up4)("basic_conv7", basic_conv7)("concat7.conv", concat7)("fr_concat7.conv", fr_concat7)
        ("final_concat.conv", final_concat)("sse7", sse7)("fr_sse7", fr_sse7)("out_conv", out_conv);
  }

  const HMRNetOptions& options() const { return options_; }
  static constexpr index_t num_outputs() { return 4; }

  // x: N x in x D x H x W, D, H, W multiples of options().size_multiple(). Returns [y0, y1, y2, y3] (logits at
  // full, 1/2, 1/4 and 1/8 resolution; -s: y3 at 1/(8, 8, 4)).
  std::vector<tensor> forward(const tensor& x) {
    check_input(x, "forward");
    const tensor m0 = in_conv.forward(x), h0 = fr_in_conv.forward(x);
    first_.in_conv = m0;
    first_.fr_in_conv = h0;
    first_.down1 = down1.forward(pool1_.forward(m0));
    first_.basic_conv1 = basic_conv1.forward(h0);
    const auto l1 = bfc1.forward(first_.down1, first_.basic_conv1);
    const auto l2 = bfc2.forward(down2.forward(pool2_.forward(l1.mc)), basic_conv2.forward(l1.hc));
    const auto l3 = bfc3.forward(down3.forward(pool3_.forward(l2.mc)), basic_conv3.forward(l2.hc));
    const tensor y3 = dpvision_con3.forward(l3.mc);
    const auto l5 = bfc5.forward(up2.forward(upsample2_.forward(l3.mc)), basic_conv5.forward(l3.hc), l2.mc);
    const tensor y2 = dpvision_con5.forward(l5.mc);
    const auto l6 = bfc6.forward(up3.forward(upsample3_.forward(l5.mc)), basic_conv6.forward(l5.hc), l1.mc);
    const tensor y1 = dpvision_con6.forward(l6.mc);
    const tensor m7 = up4.forward(upsample4_.forward(l6.mc)), h7 = basic_conv7.forward(l6.hc);
    const tensor m7c = sse7.forward(concat7.forward(cat7m_.forward({m0, h7, m7})), h7);
    const tensor h7c = fr_sse7.forward(fr_concat7.forward(cat7h_.forward({m7c, h7})), m7);
    const tensor y0 = out_conv.forward(final_concat.forward(catf_.forward({h7c, m7c})));
    std::vector<tensor> ys{y0, y1, y2, y3};
    x_shape_ = x.shape();
    out_shapes_.clear();
    for (const auto& y : ys) out_shapes_.push_back(y.shape());
    lvl_shapes_ = {{{l1.mc.shape(), l1.hc.shape()}, {l2.mc.shape(), l2.hc.shape()}, {l3.mc.shape(), l3.hc.shape()},
                    {l5.mc.shape(), l5.hc.shape()}, {l6.mc.shape(), l6.hc.shape()}}};
    return ys;
  }

  // grads: one per forward() output, [dL/dy0, dL/dy1, dL/dy2, dL/dy3]; an undefined entry = that output has no
  // loss term. Returns dL/dx (zeros when no gradient is defined). Leaves unreached parameters without a gradient.
  tensor backward(const std::vector<tensor>& grads) {
    const std::string who = std::string(name) + "::backward";
    if (out_shapes_.empty()) fail<value_error>(who, "state", "a forward() call first", "none");
    if (static_cast<index_t>(grads.size()) != num_outputs())
      fail<shape_error>(who, "number of output gradients ([y0, y1, y2, y3])", num_outputs(), grads.size());
    for (std::size_t j = 0; j < grads.size(); ++j)
      if (grads[j].defined()) check_same_shape(who, "gradient of y" + std::to_string(j), grads[j], out_shapes_[j]);
    using hmrnet::detail::accumulate;
    // Level 7 and y0.
    tensor dm0, dm6, dh6;
    const bool top = grads[0].defined();
    for (Module<T, Backend>* mod : std::initializer_list<Module<T, Backend>*>{
             &out_conv, &final_concat, &fr_sse7, &fr_concat7, &sse7, &concat7, &up4, &basic_conv7})
      mark_reached(*mod, top);
    if (top) {
      const auto df = catf_.backward(final_concat.backward(out_conv.backward(grads[0])));
      tensor dh7c = df[0], dm7c = df[1];
      auto [dfh, dm7] = fr_sse7.backward(dh7c);
      const auto dch = cat7h_.backward(fr_concat7.backward(dfh));
      accumulate(dm7c, dch[0]);
      tensor dh7 = dch[1];
      auto [dfm, dh7_gate] = sse7.backward(dm7c);
      const auto dcm = cat7m_.backward(concat7.backward(dfm));
      dm0 = dcm[0];
      accumulate(dh7, dcm[1]);
      accumulate(dh7, dh7_gate);
      accumulate(dm7, dcm[2]);
      dm6 = upsample4_.backward(up4.backward(dm7));
      dh6 = basic_conv7.backward(dh7);
    }
    accumulate(dm6, head_backward(dpvision_con6, grads[1]));
    const auto g6 = level_backward(bfc6, 4, dm6, dh6);
    tensor dm1 = g6.dskip;
    tensor dm5 = through(up3, g6.dm, [&](const tensor& d) { return upsample3_.backward(up3.backward(d)); });
    tensor dh5 = through(basic_conv6, g6.dh, [&](const tensor& d) { return basic_conv6.backward(d); });
    accumulate(dm5, head_backward(dpvision_con5, grads[2]));
    const auto g5 = level_backward(bfc5, 3, dm5, dh5);
    tensor dm2 = g5.dskip;
    tensor dm3 = through(up2, g5.dm, [&](const tensor& d) { return upsample2_.backward(up2.backward(d)); });
    tensor dh3 = through(basic_conv5, g5.dh, [&](const tensor& d) { return basic_conv5.backward(d); });
    accumulate(dm3, head_backward(dpvision_con3, grads[3]));
    const auto g3 = level_backward(bfc3, 2, dm3, dh3);
    accumulate(dm2, through(down3, g3.dm, [&](const tensor& d) { return pool3_.backward(down3.backward(d)); }));
    tensor dh2 = through(basic_conv3, g3.dh, [&](const tensor& d) { return basic_conv3.backward(d); });
    const auto g2 = level_backward(bfc2, 1, dm2, dh2);
    accumulate(dm1, through(down2, g2.dm, [&](const tensor& d) { return pool2_.backward(down2.backward(d)); }));
    tensor dh1 = through(basic_conv2, g2.dh, [&](const tensor& d) { return basic_conv2.backward(d); });
    const auto g1 = level_backward(bfc1, 0, dm1, dh1);
    accumulate(dm0, through(down1, g1.dm, [&](const tensor& d) { return pool1_.backward(down1.backward(d)); }));
    const tensor dh0 = through(basic_conv1, g1.dh, [&](const tensor& d) { return basic_conv1.backward(d); });
    tensor dx = through(in_conv, dm0, [&](const tensor& d) { return in_conv.backward(d); });
    accumulate(dx, through(fr_in_conv, dh0, [&](const tensor& d) { return fr_in_conv.backward(d); }));
    return dx.defined() ? dx : tensor(x_shape_);
  }

  // Inference: softmax(y0), N x K x D x H x W.
  tensor predict(const tensor& x) {
    nn::Softmax<T, Backend> softmax;
    return softmax.forward(forward(x)[0]);
  }

  // The 12 gates of the last forward in the spec §8.0 order: sse_down1, sse_up1, sse_down2, sse_up2, sse_down3,
  // sse_up3, sse_down5, sse_up5, sse_down6, sse_up6, sse7, fr_sse7 (alpha_m: N x 1 at the level's MR resolution;
  // alpha_h and both L7 gates: N x 1 at full resolution).
  std::vector<tensor> gates() const {
    return {bfc1.alpha_m(), bfc1.alpha_h(), bfc2.alpha_m(), bfc2.alpha_h(), bfc3.alpha_m(), bfc3.alpha_h(),
            bfc5.alpha_m(), bfc5.alpha_h(), bfc6.alpha_m(), bfc6.alpha_h(), sse7.alpha(), fr_sse7.alpha()};
  }
  static std::vector<std::string> gate_names() {
    return {"sse_down1", "sse_up1", "sse_down2", "sse_up2", "sse_down3", "sse_up3",
            "sse_down5", "sse_up5", "sse_down6", "sse_up6", "sse7", "fr_sse7"};
  }
  const FirstBlocks& first_blocks() const { return first_; }

 private:
  static const HMRNetOptions& validated(const HMRNetOptions& o) {
    o.validate();
    return o;
  }
  static Block block(const HMRNetOptions& o, index_t cin, index_t cout, const char* key, Generator& g) {
    return Block(o.form(), cin, cout, key, g);
  }
  static Block hr_block(const HMRNetOptions& o, Generator& g) {
    return Block(o.form(), o.hr_channels(), o.hr_channels(), "conv_hr", g);
  }
  // BFC level l: Bm then Bh then the gates, built in this order from g (a fixed order whatever the compiler).
  static Level level(const HMRNetOptions& o, int l, Generator& g) {
    const index_t cm = o.mr_channels(l <= 3 ? l : 7 - l), ch = o.hr_channels();
    const index_t skip = l <= 3 ? 0 : cm;
    Block bm(o.form(), skip + ch + cm, cm, "conv_conv", g);
    Block bh(o.form(), cm + ch, ch, "conv_conv", g);
    return Level(attention::BFCOptions(cm, ch, o.level_scale(l)).skip_channels(skip).level(l), std::move(bm),
                 std::move(bh), g);
  }
  static nn::Upsample<T, Backend> upsample(const ExpandingArray3& s) {
    return nn::Upsample<T, Backend>(
        nn::UpsampleOptions()
            .scale_factor({static_cast<double>(s[0]), static_cast<double>(s[1]), static_cast<double>(s[2])})
            .mode(nn::UpsampleMode::trilinear)
            .align_corners(true));
  }

  void check_input(const tensor& x, const char* fn) const {
    const std::string who = std::string(name) + "::" + fn;
    check_rank(who, "input", x, 5);
    if (x.size(1) != options_.in_channels())
      fail<shape_error>(who, "input channels", options_.in_channels(), x.size(1), "input shape " + x.shape().str());
    if (x.numel() == 0) fail<shape_error>(who, "input", "a non-empty tensor", "shape " + x.shape().str());
    const ExpandingArray3 k = options_.size_multiple();
    for (int a = 0; a < 3; ++a)
      if (x.size(2 + a) % k[a] != 0)
        fail<shape_error>(who, std::string("input size ") + "DHW"[a],
                          "a multiple of " + std::to_string(k[a]) + " (HMRNet-" + to_string(options_.form()) +
                              " needs D, H, W multiples of " + k.str() + ")",
                          x.size(2 + a), "input shape " + x.shape().str());
    // InstanceNorm needs more than one voxel per channel at the coarsest (1/size_multiple) level
    if ((x.size(2) / k[0]) * (x.size(3) / k[1]) * (x.size(4) / k[2]) < 2)
      fail<shape_error>(who, "voxels at the coarsest level (D/" + std::to_string(k[0]) + " * H/" + std::to_string(k[1]) +
                                 " * W/" + std::to_string(k[2]) + ", InstanceNorm needs more than 1)",
                        ">= 2", 1, "input shape " + x.shape().str());
  }

  // Runs f(d) when d is defined (the module is reached); marks the module's parameters either way.
  template <class F>
  tensor through(Module<T, Backend>& mod, const tensor& d, F&& f) {
    mark_reached(mod, d.defined());
    return d.defined() ? f(d) : tensor();
  }
  tensor head_backward(nn::Conv3d<T, Backend>& head, const tensor& g) {
    return through(head, g, [&](const tensor& d) { return head.backward(d); });
  }

  // A BFC level's backward where either calibrated output may have no gradient: the missing one is fed as
  // zeros and the half that only it reaches (its fusion block and gate) is marked unreached afterwards; the
  // skip is reached only through the MR half.
  typename Level::Gradients level_backward(Level& lv, std::size_t i, const tensor& dmc, const tensor& dhc) {
    typename Level::Gradients g;
    if (!dmc.defined() && !dhc.defined()) {
      mark_reached(lv, false);
      return g;
    }
    mark_reached(lv, true);
    g = lv.backward(dmc.defined() ? dmc : tensor(lvl_shapes_[i][0]), dhc.defined() ? dhc : tensor(lvl_shapes_[i][1]));
    if (!dmc.defined()) {
      mark_reached(lv.concat, false);
      if (lv.sse_down) mark_reached(*lv.sse_down, false);
      g.dskip = tensor();
    }
    if (!dhc.defined()) {
      mark_reached(lv.fr_concat, false);
      if (lv.sse_up) mark_reached(*lv.sse_up, false);
    }
    return g;
  }

  nn::MaxPool3d<T, Backend> pool1_, pool2_, pool3_;
  nn::Upsample<T, Backend> upsample2_, upsample3_, upsample4_;
  nn::Concat<T, Backend> cat7m_, cat7h_, catf_;
  HMRNetOptions options_;
  FirstBlocks first_;
  Shape x_shape_;
  std::vector<Shape> out_shapes_;
  std::array<std::array<Shape, 2>, 5> lvl_shapes_;
};

}  // namespace mmnet::models
