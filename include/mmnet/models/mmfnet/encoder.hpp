// mmnet/models/mmfnet/encoder.hpp: one MMFNet encoder (spec §2.2), a 3D U-Net contracting path for one modality:
// per level l, block{l} = CBR(c_l) twice (CBR = Conv3d k3 p1 with bias -> BatchNorm3d -> ReLU), whose output is
// the level-l skip ("Output2", taken before the pool), then MaxPool3d(2, 2); after the last pool the bottleneck
// CBR. PyTorch: tests/reference/mmfnet_ref.py `Encoder`; state-dict names block{l}.{conv1,bn1,conv2,bn2} and
// bottleneck.{conv,bn} (spec §8).
#pragma once
#include <string>
#include <vector>

#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../layers/activation.hpp"
#include "../../layers/batchnorm3d.hpp"
#include "../../layers/conv3d.hpp"
#include "../../layers/maxpool3d.hpp"

namespace mmnet::models::mmfnet {

// Conv3d(in -> out, 3, padding 1, bias) -> BatchNorm3d -> ReLU: the spec's CBR, shared by encoder and decoder.
template <class T, class Backend>
nn::Conv3d<T, Backend> conv3(index_t in, index_t out, Generator& g) {
  return nn::Conv3d<T, Backend>(nn::Conv3dOptions(in, out, 3).padding(1), g);
}

// block{l}: conv1 -> bn1 -> ReLU -> conv2 -> bn2 -> ReLU.
template <class T, class Backend>
struct EncoderBlock : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  nn::Conv3d<T, Backend> conv1;
  nn::BatchNorm3d<T, Backend> bn1;
  nn::ReLU<T, Backend> relu1;
  nn::Conv3d<T, Backend> conv2;
  nn::BatchNorm3d<T, Backend> bn2;
  nn::ReLU<T, Backend> relu2;

  EncoderBlock(index_t in, index_t channels, Generator& g = default_generator())
      : conv1(conv3<T, Backend>(in, channels, g)), bn1(nn::BatchNorm3dOptions(channels)),
        conv2(conv3<T, Backend>(channels, channels, g)), bn2(nn::BatchNorm3dOptions(channels)) {}

  void members(Members<T, Backend>& m) override { m("conv1", conv1)("bn1", bn1)("conv2", conv2)("bn2", bn2); }

  tensor forward(const tensor& x) {
    return relu2.forward(bn2.forward(conv2.forward(relu1.forward(bn1.forward(conv1.forward(x))))));
  }
  tensor backward(const tensor& dy) {
    return conv1.backward(bn1.backward(relu1.backward(conv2.backward(bn2.backward(relu2.backward(dy))))));
  }
};

// bottleneck: conv -> bn -> ReLU (the "refine" conv after the last pool).
template <class T, class Backend>
struct Bottleneck : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  nn::Conv3d<T, Backend> conv;
  nn::BatchNorm3d<T, Backend> bn;
  nn::ReLU<T, Backend> relu;

  Bottleneck(index_t in, index_t channels, Generator& g = default_generator())
      : conv(conv3<T, Backend>(in, channels, g)), bn(nn::BatchNorm3dOptions(channels)) {}

  void members(Members<T, Backend>& m) override { m("conv", conv)("bn", bn); }

  tensor forward(const tensor& x) { return relu.forward(bn.forward(conv.forward(x))); }
  tensor backward(const tensor& dy) { return conv.backward(bn.backward(relu.backward(dy))); }
};

template <class T, class Backend>
struct Encoder : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  std::vector<EncoderBlock<T, Backend>> blocks;  // blocks[l - 1] is block{l}
  Bottleneck<T, Backend> bottleneck;

  // in: input channels (1 per modality; M for input-level fusion); level_channels c_1..c_L.
  Encoder(index_t in, const std::vector<index_t>& level_channels, index_t bottleneck_channels,
          Generator& g = default_generator())
      : bottleneck(level_channels.empty() ? in : level_channels.back(), bottleneck_channels, g) {
    blocks.reserve(level_channels.size());
    for (index_t c : level_channels) {
      blocks.emplace_back(in, c, g);
      pools_.emplace_back(nn::MaxPool3dOptions(2));
      in = c;
    }
  }

  void members(Members<T, Backend>& m) override {
    for (std::size_t l = 0; l < blocks.size(); ++l) m("block" + std::to_string(l + 1), blocks[l]);
    m("bottleneck", bottleneck);
  }

  // x: N x in x D x H x W (sizes divisible by 2^L; MMFNet checks). Returns the bottleneck feature; the skips
  // (level l at full size / 2^(l-1)) stay available through skip(l).
  tensor forward(const tensor& x) {
    skips_.clear();
    tensor h = x;
    for (std::size_t l = 0; l < blocks.size(); ++l) {
      skips_.push_back(blocks[l].forward(h));
      h = pools_[l].forward(skips_.back());
    }
    return bottleneck.forward(h);
  }

  // dL/dbottleneck and dL/dskip per level (dskips[l - 1] for level l) in; returns dL/dx. Each skip receives
  // the gradient of both of its uses: the pool below it and the fusion block.
  tensor backward(const tensor& dbottleneck, const std::vector<tensor>& dskips) {
    const std::string who = "mmnet::models::mmfnet::Encoder::backward";
    if (skips_.empty()) fail<value_error>(who, "state", "a forward() call first", "no stored input");
    if (dskips.size() != blocks.size()) fail<shape_error>(who, "number of skip gradients", blocks.size(), dskips.size());
    tensor d = bottleneck.backward(dbottleneck);
    for (std::size_t l = blocks.size(); l-- > 0;) {
      d = pools_[l].backward(d);
      add_(d, dskips[l]);
      d = blocks[l].backward(d);
    }
    return d;
  }

  // The level-l skip of the last forward (l = 1..L).
  const tensor& skip(index_t level) const { return skips_.at(static_cast<std::size_t>(level - 1)); }
  index_t levels() const { return static_cast<index_t>(blocks.size()); }

 private:
  std::vector<nn::MaxPool3d<T, Backend>> pools_;
  std::vector<tensor> skips_;
};

}  // namespace mmnet::models::mmfnet
