// mmnet/models/cscn/bunet.hpp: BUNet, the coarse stage of CSCN (spec shared/specs/cascaded-fcn.md §2.2): a 3D U-Net
// (Çiçek et al.) cut to two poolings because the block depth is 8. Returns LOGITS N x classes x D x H x W (the
// softmax is applied outside: the focal loss takes logits, inference uses softmax[:, 1]). PyTorch equivalent:
// tests/reference/cscn_ref.py `BUNet`, state-dict names of spec §8:
//
//   x ─ e1.0 ─ e1.1 ─┬─ pool ─ e2.0 ─ e2.1 ─┬─ pool ─ bottom.0 ─ bottom.1 ─ up2 ┐
//                    │                      └─────────── cat[E2, up] ─ dec2.0 ─ dec2.1 ─ up1 ┐
//                    └──────────────────────────────────────────── cat[E1, up] ─ dec1.0 ─ dec1.1 ─ head ─ logits
//
// e*, bottom, dec*: CBR (Conv3d k3 p1 no bias, BN, ReLU); up*: ConvTranspose3d(k2, s2, bias) keeping its width;
// head: Conv3d 1x1x1 with bias. Widths b | 2b, 2b | 4b, 4b | 8b, 4b | 4b, 2b | 2b (b = 16: 1,147,090 parameters).
// D, H and W must be multiples of 4.
//
//   models::BUNet<float, mmnet::cpu> net(models::BUNetOptions::paper());
//   auto logits = net.forward(x);                 // x: N x 1 x 8 x 24 x 24
//   auto dx = net.backward(dlogits);              // parameter gradients accumulate (+=)
#pragma once
#include <string>
#include <vector>

#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../init/init.hpp"
#include "../../layers/concat.hpp"
#include "../../layers/conv3d.hpp"
#include "../../layers/conv_transpose3d.hpp"
#include "../../layers/maxpool3d.hpp"
#include "cbr.hpp"
#include "options.hpp"

namespace mmnet::models {

namespace cscn {

// Two CBR(3) in a row (e1, e2, bottom, dec2, dec1): members "0" and "1".
template <class T, class Backend>
struct DoubleCBR : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  std::vector<CBR<T, Backend>> layers;

  DoubleCBR(index_t in, index_t mid, index_t out, Generator& g = default_generator()) {
    layers.reserve(2);
    layers.emplace_back(in, mid, 3, 1, g);
    layers.emplace_back(mid, out, 3, 1, g);
  }
  void members(Members<T, Backend>& m) override { m("0", layers[0])("1", layers[1]); }
  tensor forward(const tensor& x) { return layers[1].forward(layers[0].forward(x)); }
  tensor backward(const tensor& dy) { return layers[0].backward(layers[1].backward(dy)); }
};

// Shared input checks of BUNet and ACDNet: rank 5, channel count, non-empty, D, H, W multiples of 4.
template <class T, class Backend>
void check_net_input(const char* who, const Tensor<T, Backend>& x, index_t channels) {
  check_rank(who, "input", x, 5);
  if (x.size(1) != channels)
    fail<shape_error>(who, "input channels", channels, x.size(1), "input shape " + x.shape().str());
  if (x.numel() == 0) fail<shape_error>(who, "input", "a non-empty tensor", "shape " + x.shape().str());
  for (int d = 2; d < 5; ++d)
    if (x.size(d) % 4 != 0)
      fail<shape_error>(who, std::string("input size ") + "DHW"[d - 2], "a multiple of 4 (two 2x poolings)", x.size(d),
                        "input shape " + x.shape().str());
}

// Spec §4.3 He-normal initialisation of any CSCN network: every rank-5 weight (Conv3d and ConvTranspose3d)
// N(0, 2 / fan_in) with PyTorch's fan_in = weight.shape[1] k^3 (Cin k^3 for Conv3d, Cout 8 for a k2
// ConvTranspose3d, kaiming_normal_(mode fan_in, relu)); BatchNorm weight 1 and bias 0; every other bias 0.
// Running statistics are reset to PyTorch's initial values (mean 0, var 1, 0 batches).
template <class T, class Backend>
void he_normal_init(Module<T, Backend>& net, Generator& g = default_generator()) {
  for (auto& np : net.named_parameters()) {
    auto& v = np.second->value;
    const std::string& n = np.first;
    if (v.rank() == 5) init::kaiming_normal_(v, 0.0, init::FanMode::fan_in, "relu", g);
    else if (n.size() >= 9 && n.compare(n.size() - 9, 9, "bn.weight") == 0) init::ones_(v);
    else init::zeros_(v);
  }
  for (auto& nb : net.named_buffers()) {
    const std::string& n = nb.first;
    if (nb.second.counter) nb.second.counter->value = 0;
    else if (n.size() >= 11 && n.compare(n.size() - 11, 11, "running_var") == 0) init::ones_(nb.second.tensor->value);
    else init::zeros_(nb.second.tensor->value);
  }
}

}  // namespace cscn

template <class T, class Backend>
struct BUNet : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::models::BUNet";

  cscn::DoubleCBR<T, Backend> e1, e2, bottom;
  nn::ConvTranspose3d<T, Backend> up2;
  cscn::DoubleCBR<T, Backend> dec2;
  nn::ConvTranspose3d<T, Backend> up1;
  cscn::DoubleCBR<T, Backend> dec1;
  nn::Conv3d<T, Backend> head;

  explicit BUNet(const BUNetOptions& options = BUNetOptions::paper(), Generator& g = default_generator())
      : BUNet(validated(options), options.b(), g) {}

  void members(Members<T, Backend>& m) override {
    m("e1", e1)("e2", e2)("bottom", bottom)("up2", up2)("dec2", dec2)("up1", up1)("dec1", dec1)("head", head);
  }

  const BUNetOptions& options() const { return options_; }

  // x: N x in_channels x D x H x W (D, H, W multiples of 4). Returns the logits N x classes x D x H x W.
  tensor forward(const tensor& x) {
    cscn::check_net_input(name, x, options_.in_channels());
    const tensor s1 = e1.forward(x);
    const tensor s2 = e2.forward(pool1_.forward(s1));
    const tensor u2 = up2.forward(bottom.forward(pool2_.forward(s2)));
    const tensor d2 = dec2.forward(cat2_.forward({s2, u2}));
    const tensor d1 = dec1.forward(cat1_.forward({s1, up1.forward(d2)}));
    logits_ = head.forward(d1);
    return logits_;
  }

  // dL/dlogits in; returns dL/dx and adds every parameter gradient.
  tensor backward(const tensor& dlogits) {
    const std::string who = std::string(name) + "::backward";
    if (!logits_.defined()) fail<value_error>(who, "state", "a forward() call first", "no stored input");
    check_same_shape(who, "grad_output (dL/dlogits)", dlogits, logits_.shape());
    const auto d1 = cat1_.backward(dec1.backward(head.backward(dlogits)));  // {dE1 (skip), dup1}
    const auto d2 = cat2_.backward(dec2.backward(up1.backward(d1[1])));     // {dE2 (skip), dup2}
    tensor ds2 = pool2_.backward(bottom.backward(up2.backward(d2[1])));
    add_(ds2, d2[0]);
    tensor ds1 = pool1_.backward(e2.backward(ds2));
    add_(ds1, d1[0]);
    return e1.backward(ds1);
  }

  // The logits of the last forward.
  const tensor& logits() const { return logits_; }

 private:
  static const BUNetOptions& validated(const BUNetOptions& o) {
    o.validate();
    return o;
  }
  BUNet(const BUNetOptions& o, index_t b, Generator& g)
      : e1(o.in_channels(), b, 2 * b, g),
        e2(2 * b, 2 * b, 4 * b, g),
        bottom(4 * b, 4 * b, 8 * b, g),
        up2(nn::ConvTranspose3dOptions(8 * b, 8 * b, 2).stride(2), g),
        dec2(12 * b, 4 * b, 4 * b, g),
        up1(nn::ConvTranspose3dOptions(4 * b, 4 * b, 2).stride(2), g),
        dec1(6 * b, 2 * b, 2 * b, g),
        head(nn::Conv3dOptions(2 * b, o.classes(), 1), g),
        options_(o) {}

  BUNetOptions options_;
  nn::MaxPool3d<T, Backend> pool1_{nn::MaxPool3dOptions(2)}, pool2_{nn::MaxPool3dOptions(2)};
  nn::Concat<T, Backend> cat1_, cat2_;
  tensor logits_;
};

}  // namespace mmnet::models
