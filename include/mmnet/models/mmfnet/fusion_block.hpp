// mmnet/models/mmfnet/fusion_block.hpp: MMFNet's fusion block for one skip level (spec §2.3; paper eqs. 6-13),
// 3D-CBAM recalibration of the concatenated modality features followed by the RFBlock:
//
//   Fori   = cat(F_1 .. F_M)                     N x MC x D x H x W, modality order of the encoders
//   Fc     = Wc * Fori                           channel_attention (avg/max/std pools, MLP per pool, one sigmoid)
//   Fs     = Ws * Fc                             spatial_attention (Conv3d(pools -> 1, 3, p1) on channel reductions)
//   Fr     = reduce(Fori + Fs)                   Conv3d(MC -> C, 1), no BN or activation (A11)
//   Ffused = Fr + conv2(ReLU(bn(conv1(Fr))))     conv1, conv2: Conv3d(C -> C, (1,3,3), p (0,1,1)); nothing after the add
//
// PyTorch: tests/reference/mmfnet_ref.py `FusionBlock`. Members channel_attention, spatial_attention (the two
// halves of attention::CBAM, held directly as the spec's names put them next to rfblock) and rfblock, so the
// state-dict names are channel_attention.mlp_{avg,max,std}.fc{1,2}.*, spatial_attention.conv.* and
// rfblock.{reduce,conv1,bn,conv2}.* (spec §8).
#pragma once
#include <string>
#include <vector>

#include "../../attention/cbam.hpp"
#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../layers/activation.hpp"
#include "../../layers/batchnorm3d.hpp"
#include "../../layers/concat.hpp"
#include "../../layers/conv3d.hpp"

namespace mmnet::models::mmfnet {

// Residual feature block (paper eqs. 12-13): Fr = reduce(x); Ffused = Fr + conv2(ReLU(bn(conv1(Fr)))).
template <class T, class Backend>
struct RFBlock : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  nn::Conv3d<T, Backend> reduce;  // MC -> C, 1 x 1 x 1
  nn::Conv3d<T, Backend> conv1;   // C -> C, 1 x 3 x 3, padding (0, 1, 1)
  nn::BatchNorm3d<T, Backend> bn;
  nn::ReLU<T, Backend> relu;
  nn::Conv3d<T, Backend> conv2;   // C -> C, 1 x 3 x 3, padding (0, 1, 1)

  RFBlock(index_t in, index_t channels, Generator& g = default_generator())
      : reduce(nn::Conv3dOptions(in, channels, 1), g),
        conv1(nn::Conv3dOptions(channels, channels, {1, 3, 3}).padding({0, 1, 1}), g),
        bn(nn::BatchNorm3dOptions(channels)),
        conv2(nn::Conv3dOptions(channels, channels, {1, 3, 3}).padding({0, 1, 1}), g) {}

  void members(Members<T, Backend>& m) override { m("reduce", reduce)("conv1", conv1)("bn", bn)("conv2", conv2); }

  tensor forward(const tensor& x) {
    fr_ = reduce.forward(x);
    tensor y = conv2.forward(relu.forward(bn.forward(conv1.forward(fr_))));
    add_(y, fr_);
    return y;
  }
  // dL/dFfused in; Fr receives the residual path and the direct one.
  tensor backward(const tensor& dy) {
    if (!fr_.defined()) fail<value_error>("mmnet::models::mmfnet::RFBlock::backward", "state", "a forward() call first", "no stored input");
    tensor dfr = conv1.backward(bn.backward(relu.backward(conv2.backward(dy))));
    add_(dfr, dy);
    return reduce.backward(dfr);
  }

  // Fr of the last forward.
  const tensor& reduced() const { return fr_; }

 private:
  tensor fr_;
};

template <class T, class Backend>
struct FusionBlock : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::models::mmfnet::FusionBlock";

  attention::ChannelAttention<T, Backend> channel_attention;
  attention::SpatialAttention<T, Backend> spatial_attention;
  RFBlock<T, Backend> rfblock;

  // modalities M, channels C of each input; attention: the 3D-CBAM on M C channels
  // (MMFNetOptions::attention_options(level) gives the model's).
  FusionBlock(index_t modalities, index_t channels, const attention::CBAMOptions& attention,
              Generator& g = default_generator())
      : channel_attention(checked(modalities, channels, attention).channel(), g),
        spatial_attention(attention.spatial(), g),
        rfblock(modalities * channels, channels, g),
        modalities_(modalities),
        channels_(channels) {}

  void members(Members<T, Backend>& m) override {
    m("channel_attention", channel_attention)("spatial_attention", spatial_attention)("rfblock", rfblock);
  }

  // f: the M level-l features, each N x C x D x H x W. Returns Ffused, N x C x D x H x W.
  tensor forward(const std::vector<tensor>& f) {
    if (static_cast<index_t>(f.size()) != modalities_) fail<shape_error>(name, "number of inputs", modalities_, f.size());
    for (std::size_t i = 0; i < f.size(); ++i) {
      check_rank(name, "input " + std::to_string(i), f[i], 5);
      if (f[i].size(1) != channels_)
        fail<shape_error>(name, "input " + std::to_string(i) + " channels", channels_, f[i].size(1),
                          "shape " + f[i].shape().str());
    }
    fori_ = concat_.forward(f);
    fc_ = channel_attention.forward(fori_);
    fs_ = spatial_attention.forward(fc_);
    ffused_ = rfblock.forward(add(fori_, fs_));
    return ffused_;
  }

  // dL/dFfused in; returns dL/dF_m per modality. Fori feeds the sum directly and through the attention.
  std::vector<tensor> backward(const tensor& dffused) {
    if (!ffused_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a forward() call first", "no stored input");
    check_same_shape(std::string(name) + "::backward", "grad_output", dffused, ffused_.shape());
    const tensor dsum = rfblock.backward(dffused);
    tensor dfori = spatial_attention.backward(dsum);
    if (release_after_backward_) spatial_attention.release();
    dfori = channel_attention.backward(dfori);
    if (release_after_backward_) {
      channel_attention.release();
      fori_ = fc_ = fs_ = ffused_ = tensor();
    }
    add_(dfori, dsum);
    return concat_.backward(dfori);
  }

  // Opt-in memory saving for one backward per forward: backward() frees the attention's saved tensors and
  // the taps below (and rfblock.bn's input) as soon as it is done with them; a second backward() throws.
  void release_after_backward(bool v) {
    release_after_backward_ = v;
    rfblock.bn.release_after_backward(v);
  }

  // Taps of the last forward (spec §8 point 2): Fori, Wc (N x MC x 1 x 1 x 1), Fc, Ws (N x 1 x D x H x W), Fs,
  // Fr and Ffused (N x C x D x H x W).
  const tensor& fori() const { return fori_; }
  const tensor& channel_weights() const { return channel_attention.weights(); }
  const tensor& channel_output() const { return fc_; }
  const tensor& spatial_weights() const { return spatial_attention.weights(); }
  const tensor& spatial_output() const { return fs_; }
  const tensor& reduced() const { return rfblock.reduced(); }
  const tensor& output() const { return ffused_; }

  index_t modalities() const { return modalities_; }
  index_t channels() const { return channels_; }

 private:
  static const attention::CBAMOptions& checked(index_t modalities, index_t channels, const attention::CBAMOptions& o) {
    if (modalities < 1) fail<value_error>(name, "modalities", ">= 1", modalities);
    if (channels < 1) fail<value_error>(name, "channels", ">= 1", channels);
    if (o.channels() != modalities * channels)
      fail<value_error>(name, "attention channels (modalities x channels)", modalities * channels, o.channels());
    return o;
  }

  index_t modalities_, channels_;
  bool release_after_backward_ = false;
  nn::Concat<T, Backend> concat_;
  tensor fori_, fc_, fs_, ffused_;
};

}  // namespace mmnet::models::mmfnet
