// mmnet/models/mmfnet/decoder.hpp: MMFNet's single decoder (spec §2.4, A2-A5). For l = L..1, block l
//
//   u = up(x)                      ConvTranspose3d(in -> c_l, 2, stride 2, bias), no BN or ReLU
//   x = ReLU(bn(conv(cat[s_l, u])))  one CBR(c_l), k3 p1, on the level-l skip first, then u
//
// where x starts as the concatenated bottlenecks and s_l is the output of fusions.{l} (or the merged skips).
// PyTorch: tests/reference/mmfnet_ref.py `DecoderBlock`; names {l}.{up,conv,bn}, listed L..1 (spec §8).
#pragma once
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../../core/module.hpp"
#include "../../core/random.hpp"
#include "../../layers/activation.hpp"
#include "../../layers/batchnorm3d.hpp"
#include "../../layers/concat.hpp"
#include "../../layers/conv3d.hpp"
#include "../../layers/conv_transpose3d.hpp"

namespace mmnet::models::mmfnet {

template <class T, class Backend>
struct DecoderBlock : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  nn::ConvTranspose3d<T, Backend> up;
  nn::Concat<T, Backend> concat;
  nn::Conv3d<T, Backend> conv;
  nn::BatchNorm3d<T, Backend> bn;
  nn::ReLU<T, Backend> relu;

  // in: channels coming from below; channels: c_l; skip_channels: channels of the level-l skip.
  DecoderBlock(index_t in, index_t channels, index_t skip_channels, Generator& g = default_generator())
      : up(nn::ConvTranspose3dOptions(in, channels, 2).stride(2), g),
        conv(nn::Conv3dOptions(skip_channels + channels, channels, 3).padding(1), g),
        bn(nn::BatchNorm3dOptions(channels)) {}

  void members(Members<T, Backend>& m) override { m("up", up)("conv", conv)("bn", bn); }

  tensor forward(const tensor& below, const tensor& skip) {
    return relu.forward(bn.forward(conv.forward(concat.forward({skip, up.forward(below)}))));
  }
  // Returns {dL/dbelow, dL/dskip}.
  std::pair<tensor, tensor> backward(const tensor& dy) {
    const auto d = concat.backward(conv.backward(bn.backward(relu.backward(dy))));
    return {up.backward(d[1]), d[0]};
  }
};

template <class T, class Backend>
struct Decoder : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  std::vector<DecoderBlock<T, Backend>> blocks;  // blocks[l - 1] is block l

  // bottom_channels: channels of the concatenated bottlenecks; level_channels c_1..c_L; skip_channels: of the
  // level-l skips (c_l after a fusion block, M c_l when merging).
  Decoder(index_t bottom_channels, const std::vector<index_t>& level_channels, const std::vector<index_t>& skip_channels,
          Generator& g = default_generator()) {
    const std::size_t levels = level_channels.size();
    if (skip_channels.size() != levels)
      fail<value_error>("mmnet::models::mmfnet::Decoder", "number of skip widths", levels, skip_channels.size());
    // Built from level 1 up so that blocks[l - 1] is level l; each block's input is the width of the level below.
    blocks.reserve(levels);
    for (std::size_t l = 0; l < levels; ++l) {
      const index_t in = l + 1 < levels ? level_channels[l + 1] : bottom_channels;
      blocks.emplace_back(in, level_channels[l], skip_channels[l], g);
    }
  }

  // PyTorch order: decoder.L first.
  void members(Members<T, Backend>& m) override {
    for (std::size_t l = blocks.size(); l-- > 0;) m(std::to_string(l + 1), blocks[l]);
  }

  // bottom: the concatenated bottlenecks; skips[l - 1]: the level-l skip. Returns block 1's output.
  tensor forward(const tensor& bottom, const std::vector<tensor>& skips) {
    if (skips.size() != blocks.size())
      fail<shape_error>("mmnet::models::mmfnet::Decoder", "number of skips", blocks.size(), skips.size());
    outputs_.assign(blocks.size(), tensor());
    tensor x = bottom;
    for (std::size_t l = blocks.size(); l-- > 0;) outputs_[l] = x = blocks[l].forward(x, skips[l]);
    return x;
  }

  // dL/d(block 1 output) in; returns {dL/dbottom, dL/dskip per level}.
  std::pair<tensor, std::vector<tensor>> backward(const tensor& dy) {
    if (outputs_.empty()) fail<value_error>("mmnet::models::mmfnet::Decoder::backward", "state", "a forward() call first", "no stored input");
    std::vector<tensor> dskips(blocks.size());
    tensor d = dy;
    for (std::size_t l = 0; l < blocks.size(); ++l) std::tie(d, dskips[l]) = blocks[l].backward(d);
    return {d, dskips};
  }

  // Output of decoder block l (l = 1..L) of the last forward.
  const tensor& output(index_t level) const { return outputs_.at(static_cast<std::size_t>(level - 1)); }

 private:
  std::vector<tensor> outputs_;
};

}  // namespace mmnet::models::mmfnet
