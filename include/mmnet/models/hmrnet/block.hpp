// mmnet/models/hmrnet/block.hpp: HMRNet's convolution block B(cin, cout) (spec hmrnet.md §2.2), the official
// ConvBlock (nn.Sequential of Conv3d, InstanceNorm3d, LeakyReLU). PyTorch: tests/reference/hmrnet_ref.py
// `conv_layers` / `ConvBlock` / `HRBlock`.
//
//   form p   [Conv 3x3x3 (pad 1) -> IN -> LReLU] x 2                          names 0, 1, (2), 3, 4, (5)
//   form s   6 x [Conv -> IN -> LReLU], kernels (3,3,1), (1,1,3), (3,3,1), (3,3,1), (1,1,3), (3,3,1)
//            with paddings (1,1,0) / (0,0,1)                                   names 0, 1, 3, 4, ..., 15, 16
// The first conv maps cin -> cout, the others cout -> cout. Convs have a bias (zero gradient in exact arithmetic:
// an IN follows), IN is affine with eps 1e-5 and no running statistics, LReLU slope 0.01. Conv weights get
// PyTorch's default init (kaiming_uniform a = sqrt 5, what Conv3d does; the official trainer never re-inits).
//
//   ConvBlock(form, cin, cout)            member "conv_conv" (in_conv, down*.maxpool_conv.1, up*, concat*.conv)
//   ConvBlock(form, cin, cout, "conv_hr") member "conv_hr"   (basic_conv*, the HR blocks)
#pragma once
#include <string>
#include <vector>

#include "../../core/grad_reach.hpp"
#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../layers/activation.hpp"
#include "../../layers/conv3d.hpp"
#include "../../layers/instance_norm3d.hpp"
#include "options.hpp"

namespace mmnet::models::hmrnet {

// The Sequential itself: one (Conv3d, InstanceNorm3d, LeakyReLU) triple per conv, named 3i, 3i+1 (3i+2 is the
// parameterless LReLU).
template <class T, class Backend>
struct ConvLayers : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  std::vector<nn::Conv3d<T, Backend>> convs;
  std::vector<nn::InstanceNorm3d<T, Backend>> norms;
  std::vector<nn::LeakyReLU<T, Backend>> acts;

  ConvLayers(HMRNetForm form, index_t cin, index_t cout, Generator& g = default_generator()) {
    static const ExpandingArray3 kp[2] = {ExpandingArray3(3), ExpandingArray3(1)};
    static const ExpandingArray3 ks[6][2] = {{{3, 3, 1}, {1, 1, 0}}, {{1, 1, 3}, {0, 0, 1}}, {{3, 3, 1}, {1, 1, 0}},
                                             {{3, 3, 1}, {1, 1, 0}}, {{1, 1, 3}, {0, 0, 1}}, {{3, 3, 1}, {1, 1, 0}}};
    const int n = form == HMRNetForm::p ? 2 : 6;
    convs.reserve(static_cast<std::size_t>(n));
    norms.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      const ExpandingArray3 k = form == HMRNetForm::p ? kp[0] : ks[i][0];
      const ExpandingArray3 pad = form == HMRNetForm::p ? kp[1] : ks[i][1];
      convs.emplace_back(nn::Conv3dOptions(i == 0 ? cin : cout, cout, k).padding(pad), g);
      norms.emplace_back(nn::InstanceNorm3dOptions(cout).eps(1e-5).affine(true));
      acts.emplace_back(nn::LeakyReLUOptions().negative_slope(0.01));
    }
  }

  void members(Members<T, Backend>& m) override {
    for (std::size_t i = 0; i < convs.size(); ++i) m(std::to_string(3 * i), convs[i])(std::to_string(3 * i + 1), norms[i]);
  }

  tensor forward(tensor x) {
    for (std::size_t i = 0; i < convs.size(); ++i) x = acts[i].forward(norms[i].forward(convs[i].forward(x)));
    return x;
  }
  tensor backward(tensor d) {
    for (std::size_t i = convs.size(); i-- > 0;) d = convs[i].backward(norms[i].backward(acts[i].backward(d)));
    return d;
  }
};

// B(cin, cout) as the official ConvBlock: the layers under one member name ("conv_conv", or "conv_hr" for the
// HR branch's basic_conv blocks).
template <class T, class Backend>
struct ConvBlock : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::models::hmrnet::ConvBlock";

  ConvLayers<T, Backend> layers;

  ConvBlock(HMRNetForm form, index_t cin, index_t cout, std::string key = "conv_conv", Generator& g = default_generator())
      : layers(form, cin, cout, g), key_(std::move(key)), cin_(cin), cout_(cout) {}

  void members(Members<T, Backend>& m) override { m(key_, layers); }

  index_t in_channels() const { return cin_; }
  index_t out_channels() const { return cout_; }

  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    if (x.size(1) != cin_) fail<shape_error>(name, "input channels", cin_, x.size(1), "input shape " + x.shape().str());
    return layers.forward(x);
  }
  tensor backward(const tensor& dy) { return layers.backward(dy); }

 private:
  std::string key_;
  index_t cin_, cout_;
};

namespace detail {

// a += b where either may be undefined (undefined = not reached); returns the sum without writing into b.
template <class T, class Backend>
void accumulate(Tensor<T, Backend>& a, const Tensor<T, Backend>& b) {
  if (!b.defined()) return;
  if (!a.defined()) a = b;
  else a = add(a, b);
}

}  // namespace detail
}  // namespace mmnet::models::hmrnet
