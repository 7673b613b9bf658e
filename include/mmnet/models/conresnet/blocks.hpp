// mmnet/models/conresnet/blocks.hpp: ConResNet's building blocks (spec conresnet.md §2.2-2.3), each the official
// module of jianpengz/ConResNet models/ConResNet.py with its state-dict names:
//
//   PreAct      nn.Sequential(GroupNorm, ReLU, [Dropout3d,] Conv3d(WS)): conv_32_64 / conv_64_128 / conv_128_256
//               ("0" GN, "2" conv) and fusionConv ("0" GN, "2" Dropout3d, "3" conv); y = WSConv(ReLU(GN(x)))
//   ResBlock    NoBottleneck, identity skip: y = x + conv2(ReLU(gn2(conv1(ReLU(gn1(x)))))), 3x3x3, padding =
//               dilation (names gn1, conv1, gn2, conv2; the never-built `downsample` is absent)
//   Stage       a decoder stage "seg_x{4,2,1}.0": attention::ConResAtt, or for the baseline ablation only its
//               segmentation half F = conv_seg(ReLU(gn_seg(I_seg))) (O_seg = F, no O_res)
// GroupNorm eps 1e-5, affine; every convolution is a bias-free nn::WSConv3d with PyTorch's default init.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../../attention/context_residual.hpp"
#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../layers/activation.hpp"
#include "../../layers/dropout3d.hpp"
#include "../../layers/group_norm.hpp"
#include "../../layers/ws_conv3d.hpp"

namespace mmnet::models::conresnet {

inline nn::GroupNormOptions gn_options(index_t groups, index_t c) { return nn::GroupNormOptions(groups, c).eps(1e-5); }
inline nn::Conv3dOptions ws3(index_t in, index_t out, index_t stride = 1, index_t dilation = 1) {
  return nn::Conv3dOptions(in, out, 3).stride(stride).padding(dilation).dilation(dilation).bias(false);
}

// GN -> ReLU -> (Dropout3d) -> WSConv 3x3x3. With dropout, fusionConv: names "0" and "3"; without, "0" and "2".
template <class T, class Backend>
struct PreAct : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  nn::GroupNorm<T, Backend> gn;
  nn::WSConv3d<T, Backend> conv;

  PreAct(index_t groups, index_t in, index_t out, index_t stride, Generator& g, std::optional<nn::Dropout3dOptions> drop = {})
      : gn(gn_options(groups, in)), conv(ws3(in, out, stride), g) {
    if (drop) dropout.emplace(*drop);
  }
  void members(Members<T, Backend>& m) override {
    m("0", gn);
    if (dropout) m("2", *dropout)("3", conv);
    else m("2", conv);
  }
  // mask (N x C x 1 x 1 x 1, the multipliers): used by the next train-mode forward instead of a drawn one.
  void next_dropout_mask(const tensor& mask) { next_mask_ = mask; }

  tensor forward(const tensor& x) {
    tensor a = relu_.forward(gn.forward(x));
    if (dropout) {
      if (this->is_training() && next_mask_.defined()) a = dropout->forward_with_mask(a, next_mask_);
      else a = dropout->forward(a);
      next_mask_ = tensor();
    }
    return conv.forward(a);
  }
  tensor backward(const tensor& dy) {
    tensor d = conv.backward(dy);
    if (dropout) d = dropout->backward(d);
    return gn.backward(relu_.backward(d));
  }
  const tensor& dropout_mask() const {
    static const tensor none;
    return dropout ? dropout->mask() : none;
  }

  std::optional<nn::Dropout3d<T, Backend>> dropout;

 private:
  nn::ReLU<T, Backend> relu_;
  tensor next_mask_;
};

// NoBottleneck: x + PA(PA(x)), both c -> c, 3x3x3, dilation d, padding d.
template <class T, class Backend>
struct ResBlock : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  nn::GroupNorm<T, Backend> gn1;
  nn::WSConv3d<T, Backend> conv1;
  nn::GroupNorm<T, Backend> gn2;
  nn::WSConv3d<T, Backend> conv2;

  ResBlock(index_t groups, index_t c, index_t dilation, Generator& g)
      : gn1(gn_options(groups, c)), conv1(ws3(c, c, 1, dilation), g), gn2(gn_options(groups, c)),
        conv2(ws3(c, c, 1, dilation), g) {}
  void members(Members<T, Backend>& m) override { m("gn1", gn1)("conv1", conv1)("gn2", gn2)("conv2", conv2); }

  tensor forward(const tensor& x) {
    const tensor y = conv2.forward(relu2_.forward(gn2.forward(conv1.forward(relu1_.forward(gn1.forward(x))))));
    return add(x, y);
  }
  tensor backward(const tensor& dy) {
    tensor dx = gn1.backward(relu1_.backward(conv1.backward(gn2.backward(relu2_.backward(conv2.backward(dy))))));
    add_(dx, dy);  // identity skip
    return dx;
  }

 private:
  nn::ReLU<T, Backend> relu1_, relu2_;
};

// A layerN: blocks ResBlocks in sequence, named "0", "1", ...
template <class T, class Backend>
struct Layer : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  std::vector<ResBlock<T, Backend>> blocks;

  Layer(index_t groups, index_t c, index_t n, index_t dilation, Generator& g) {
    blocks.reserve(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) blocks.emplace_back(groups, c, dilation, g);
  }
  void members(Members<T, Backend>& m) override {
    for (std::size_t i = 0; i < blocks.size(); ++i) m(std::to_string(i), blocks[i]);
  }
  tensor forward(tensor x) {
    for (auto& b : blocks) x = b.forward(x);
    return x;
  }
  tensor backward(tensor d) {
    for (std::size_t i = blocks.size(); i-- > 0;) d = blocks[i].backward(d);
    return d;
  }
};

// A decoder stage (member "seg_x{4,2,1}.0"): the context residual module, or (baseline) its segmentation half.
template <class T, class Backend>
struct Stage : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  std::optional<attention::ConResAtt<T, Backend>> att;  // context_residual(true)
  std::optional<nn::GroupNorm<T, Backend>> gn_seg;      // baseline
  std::optional<nn::WSConv3d<T, Backend>> conv_seg;     // baseline

  Stage(bool residual, const attention::ConResAttOptions& o, Generator& g) {
    if (residual) {
      att.emplace(o, g);
    } else {
      gn_seg.emplace(gn_options(o.groups(), o.in_channels()));
      conv_seg.emplace(ws3(o.in_channels(), o.out_channels()), g);
    }
  }
  void members(Members<T, Backend>& m) override {
    if (att) m.splice(*att);
    else m("gn_seg", *gn_seg)("conv_seg", *conv_seg);
  }
  // {O_seg, O_res}; baseline: {F, undefined} (i_res ignored).
  std::pair<tensor, tensor> forward(const tensor& i_seg, const tensor& i_res) {
    if (att) return att->forward(i_seg, i_res);
    return {conv_seg->forward(relu_.forward(gn_seg->forward(i_seg))), tensor()};
  }
  std::pair<tensor, tensor> backward(const tensor& d_seg, const tensor& d_res) {
    if (att) return att->backward(d_seg, d_res);
    return {gn_seg->backward(relu_.backward(conv_seg->backward(d_seg))), tensor()};
  }

 private:
  nn::ReLU<T, Backend> relu_;
};

}  // namespace mmnet::models::conresnet
