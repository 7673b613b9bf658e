// mmnet/attention/context_residual.hpp: ConResNet's context residual module ConResAtt, two inputs and two outputs
// (jianpengz/ConResNet, models/ConResNet.py, class ConResAtt with weight_std=True; no torch.nn equivalent).
//
//   attention::ConResAtt<float, mmnet::cpu> seg_x4(attention::ConResAttOptions(128, 64).first(true));
//   auto [o_seg, o_res] = seg_x4.forward(i_seg, i_res);
//   auto [di_seg, di_res] = seg_x4.backward(do_seg, do_res);
//
// With GN = GroupNorm(groups, c, eps 1e-5, affine) and WSConv = nn::WSConv3d without bias (3x3x3, padding 1,
// stride 1 unless said), exactly as the official forward (ConResNet spec section 2.3):
//   F     = conv_seg(ReLU(gn_seg(I_seg)))                       in -> out, the raw convolution output
//   S     = sigmoid(F)
//   G     = slice difference of S along D: G[0] = 0, G[d] = |S[d] - S[d-1]|
//   R     = conv_res(G)                                         1x1x1, no norm or activation
//   T     = first module:   conv_mp_first(I_res)                res_in_channels -> out, no norm or activation
//           in != out:      conv_mp(ReLU(gn_mp(I_res)))         in -> out
//           in == out:      I_res
//   O_res = conv_res1(ReLU(gn_res1(T + R)))                     out -> out, the raw convolution output
//   O_seg = F * (1 + sigmoid(O_res))
// The first module (seg_x4 in ConResNet) takes the image's inter-slice |difference| itself, resampled to its
// scale, so its I_res has the image's channel count C_in (res_in_channels), not in_channels; the others take
// the previous module's O_res (in_channels channels). All tensors are N x C x D x H x W with equal N, D, H, W.
//
// Backward sums every fan-out: F feeds S and O_seg, O_res feeds the gate and the caller's dO_res, T + R feeds
// both branches; the slice difference's derivative at a tie is 0 (torch.abs), and G[0] passes nothing.
//
// Parameters, in PyTorch's registration order and with its names: gn_seg.{weight,bias}, conv_seg.weight,
// conv_res.weight, gn_res1.{weight,bias}, conv_res1.weight, then by kind gn_mp.{weight,bias} (in != out, not
// first), conv_mp_first.weight (first), conv_mp.weight (in != out, not first). The official module also
// registers tensors its forward never uses (gn_res, gn_res2, conv_res2 always; gn_mp/conv_mp in the first module;
// conv_mp_first in the others; gn_mp/conv_mp when in == out). They are not allocated here (spec section 7.7):
// load_official_state_dict() drops exactly those keys (unused_official_keys()) and loads the rest.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/module.hpp"
#include "../core/ops.hpp"
#include "../layers/activation.hpp"
#include "../layers/group_norm.hpp"
#include "../layers/slice_difference.hpp"
#include "../layers/ws_conv3d.hpp"

namespace mmnet::attention {

// Options of ConResAtt; defaults are the official module's (GroupNorm(8, .), C_in 4 of BraTS):
//   ConResAttOptions(128, 64).first(true).res_in_channels(4).groups(8)
struct ConResAttOptions {
  ConResAttOptions(index_t in_channels, index_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}

  // Channels of I_seg (and of I_res in a module that is not the first).
  ConResAttOptions& in_channels(index_t v) { in_channels_ = v; return *this; }
  // Channels of both outputs.
  ConResAttOptions& out_channels(index_t v) { out_channels_ = v; return *this; }
  // The decoder's first module (official first_layer): T = conv_mp_first(I_res) on the raw residual input.
  ConResAttOptions& first(bool v) { first_ = v; return *this; }
  // Channels of the first module's I_res: the image's C_in (the official code hard-codes 4, BraTS). Unused
  // unless first.
  ConResAttOptions& res_in_channels(index_t v) { res_in_channels_ = v; return *this; }
  // GroupNorm groups of gn_seg, gn_mp and gn_res1 (the official code hard-codes 8; must divide in and out).
  ConResAttOptions& groups(index_t v) { groups_ = v; return *this; }

  index_t in_channels() const { return in_channels_; }
  index_t out_channels() const { return out_channels_; }
  bool first() const { return first_; }
  index_t res_in_channels() const { return res_in_channels_; }
  index_t groups() const { return groups_; }
  // Channels I_res must have.
  index_t res_channels() const { return first_ ? res_in_channels_ : in_channels_; }

 private:
  index_t in_channels_;
  index_t out_channels_;
  bool first_ = false;
  index_t res_in_channels_ = 4;
  index_t groups_ = 8;
};

// Keys of the tensors the official ConResAtt of this kind registers but never uses, in its registration order,
// each preceded by prefix (e.g. "seg_x4.0."). ConResNet's tiny and BraTS models have 23 of them in all.
inline std::vector<std::string> conres_att_unused_keys(const ConResAttOptions& o, const std::string& prefix = "") {
  std::vector<std::string> k = {"gn_res.weight", "gn_res.bias", "gn_res2.weight", "gn_res2.bias", "conv_res2.weight"};
  const bool mp_unused = o.first() || o.in_channels() == o.out_channels();
  if (mp_unused) k.insert(k.end(), {"gn_mp.weight", "gn_mp.bias"});
  if (!o.first()) k.push_back("conv_mp_first.weight");
  if (mp_unused) k.push_back("conv_mp.weight");
  for (auto& s : k) s = prefix + s;
  return k;
}

namespace detail {
// O_seg = F * (1 + s), s = sigmoid(O_res).
template <class T, class Backend>
void conres_gate_forward(Backend b, index_t n, const T* f, const T* s, T* y) {
  backend::parallel_for(b, n, MMNET_KERNEL(index_t i) { y[i] = f[i] * (T(1) + s[i]); });
}
// dF = dy * (1 + s) (assigned), ds = dy * F (assigned; the sigmoid's backward follows).
template <class T, class Backend>
void conres_gate_backward(Backend b, index_t n, const T* f, const T* s, const T* dy, T* df, T* ds) {
  backend::parallel_for(b, n, MMNET_KERNEL(index_t i) {
    df[i] = dy[i] * (T(1) + s[i]);
    ds[i] = dy[i] * f[i];
  });
}
}  // namespace detail

template <class T, class Backend>
class ConResAtt : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::attention::ConResAtt";
  // GroupNorm's eps in the official module (PyTorch's default).
  static constexpr double gn_eps = 1e-5;

  nn::GroupNorm<T, Backend> gn_seg;
  nn::WSConv3d<T, Backend> conv_seg;
  nn::WSConv3d<T, Backend> conv_res;
  nn::GroupNorm<T, Backend> gn_res1;
  nn::WSConv3d<T, Backend> conv_res1;
  std::optional<nn::GroupNorm<T, Backend>> gn_mp;           // in != out, not first
  std::optional<nn::WSConv3d<T, Backend>> conv_mp_first;    // first
  std::optional<nn::WSConv3d<T, Backend>> conv_mp;          // in != out, not first

  // The intermediates of the last forward (the spec's section 8.3 taps), f = F, g = G, r = R, t = T (t aliases
  // I_res when in == out and not first).
  struct Taps {
    tensor f, g, r, t;
  };

  // Convolution weights get PyTorch's nn.Conv3d default init from generator, in registration order; GroupNorm
  // weight 1, bias 0.
  explicit ConResAtt(const ConResAttOptions& options, Generator& generator = default_generator())
      : gn_seg(gn_options(checked(options).groups(), options.in_channels())),  // validates before any member
        conv_seg(conv3(options.in_channels(), options.out_channels()), generator),
        conv_res(nn::Conv3dOptions(options.out_channels(), options.out_channels(), 1).bias(false), generator),
        gn_res1(gn_options(options.groups(), options.out_channels())),
        conv_res1(conv3(options.out_channels(), options.out_channels()), generator),
        options_(options) {
    if (options_.first()) {
      conv_mp_first.emplace(conv3(options_.res_in_channels(), options_.out_channels()), generator);
    } else if (options_.in_channels() != options_.out_channels()) {
      gn_mp.emplace(gn_options(options_.groups(), options_.in_channels()));
      conv_mp.emplace(conv3(options_.in_channels(), options_.out_channels()), generator);
    }
  }

  void members(Members<T, Backend>& m) override {
    m("gn_seg", gn_seg)("conv_seg", conv_seg)("conv_res", conv_res)("gn_res1", gn_res1)("conv_res1", conv_res1);
    if (gn_mp) m("gn_mp", *gn_mp);
    if (conv_mp_first) m("conv_mp_first", *conv_mp_first);
    if (conv_mp) m("conv_mp", *conv_mp);
  }

  const ConResAttOptions& options() const { return options_; }

  // The official state-dict keys of this module that hold no used tensor (see conres_att_unused_keys).
  std::vector<std::string> unused_official_keys() const { return conres_att_unused_keys(options_); }

  // Loads a state dict of the official module: drops exactly unused_official_keys() (where present), then
  // load_state_dict(rest, strict). Any other key still counts as unexpected.
  LoadResult load_official_state_dict(const StateDict& sd, bool strict = true) {
    const auto unused = unused_official_keys();
    StateDict used;
    for (const auto& e : sd) {
      bool skip = false;
      for (const auto& k : unused) skip = skip || e.first == k;
      if (!skip) used.insert(e.first, e.second);
    }
    return this->load_state_dict(used, strict);
  }

  // Returns {O_seg, O_res}, both N x out x D x H x W.
  std::pair<tensor, tensor> forward(const tensor& i_seg, const tensor& i_res) {
    check_inputs(i_seg, i_res);
    const tensor f = conv_seg.forward(relu_seg_.forward(gn_seg.forward(i_seg)));
    const tensor g = slice_diff_.forward(sigmoid_s_.forward(f));
    const tensor r = conv_res.forward(g);
    tensor t;
    if (options_.first()) t = conv_mp_first->forward(i_res);
    else if (conv_mp) t = conv_mp->forward(relu_mp_.forward(gn_mp->forward(i_res)));
    else t = i_res;
    const tensor o_res = conv_res1.forward(relu_res1_.forward(gn_res1.forward(add(t, r))));
    const tensor s = sigmoid_gate_.forward(o_res);
    tensor o_seg(f.shape());
    detail::conres_gate_forward(Backend{}, f.numel(), f.data(), s.data(), o_seg.data());
    taps_ = Taps{f, g, r, t};
    return {o_seg, o_res};
  }

  // dL/dO_seg, dL/dO_res in; returns {dL/dI_seg, dL/dI_res} and adds every parameter's gradient.
  std::pair<tensor, tensor> backward(const tensor& d_seg, const tensor& d_res) {
    const std::string who = std::string(name) + "::backward";
    if (!taps_.f.defined()) fail<value_error>(who, "state", "a forward() call first", "no stored forward");
    check_same_shape(who, "grad_output of O_seg", d_seg, taps_.f.shape());
    check_same_shape(who, "grad_output of O_res", d_res, taps_.f.shape());
    const index_t n = taps_.f.numel();
    tensor df(taps_.f.shape()), ds(taps_.f.shape());
    detail::conres_gate_backward(Backend{}, n, taps_.f.data(), sigmoid_gate_.output().data(), d_seg.data(), df.data(),
                                 ds.data());
    tensor d_o_res = sigmoid_gate_.backward(ds);
    add_(d_o_res, d_res);  // O_res gates O_seg and is an output
    const tensor d_sum = gn_res1.backward(relu_res1_.backward(conv_res1.backward(d_o_res)));  // dL/d(T + R)
    // the context path: R = conv_res(G), G from S = sigmoid(F); F also reaches O_seg directly
    add_(df, sigmoid_s_.backward(slice_diff_.backward(conv_res.backward(d_sum))));
    tensor di_seg = gn_seg.backward(relu_seg_.backward(conv_seg.backward(df)));
    tensor di_res;
    if (options_.first()) di_res = conv_mp_first->backward(d_sum);
    else if (conv_mp) di_res = gn_mp->backward(relu_mp_.backward(conv_mp->backward(d_sum)));
    else di_res = d_sum;  // T = I_res; d_sum is a fresh tensor nothing else holds
    return {di_seg, di_res};
  }

  const Taps& taps() const { return taps_; }

 private:
  static nn::GroupNormOptions gn_options(index_t groups, index_t c) {
    return nn::GroupNormOptions(groups, c).eps(gn_eps);
  }
  static nn::Conv3dOptions conv3(index_t in, index_t out) {
    return nn::Conv3dOptions(in, out, 3).padding(1).bias(false);
  }

  static const ConResAttOptions& checked(const ConResAttOptions& o) {
    if (o.in_channels() < 1) fail<value_error>(name, "in_channels", ">= 1", o.in_channels());
    // conv_res is 1x1x1: one weight per output channel would have no unbiased variance (WSConv3d). With two,
    // its standardised weight is +-1/sqrt(2) whatever the raw weight, so that weight's gradient is ~0.
    if (o.out_channels() < 2)
      fail<value_error>(name, "out_channels", ">= 2 (conv_res is a 1x1x1 WSConv3d)", o.out_channels());
    if (o.first() && o.res_in_channels() < 1) fail<value_error>(name, "res_in_channels", ">= 1", o.res_in_channels());
    if (o.groups() < 1) fail<value_error>(name, "groups", ">= 1", o.groups());
    if (o.in_channels() % o.groups() != 0 || o.out_channels() % o.groups() != 0)
      fail<value_error>(name, "groups (dividing in_channels and out_channels)",
                        "a common divisor of " + std::to_string(o.in_channels()) + " and " +
                            std::to_string(o.out_channels()),
                        o.groups());
    return o;
  }

  void check_inputs(const tensor& i_seg, const tensor& i_res) const {
    check_rank(name, "I_seg", i_seg, 5);
    check_rank(name, "I_res", i_res, 5);
    const std::string ctx = "I_seg shape " + i_seg.shape().str() + ", I_res shape " + i_res.shape().str();
    if (i_seg.size(1) != options_.in_channels())
      fail<shape_error>(name, "I_seg channels", options_.in_channels(), i_seg.size(1), ctx);
    if (i_res.size(1) != options_.res_channels())
      fail<shape_error>(name,
                        std::string("I_res channels") + (options_.first() ? " (res_in_channels, first module)" : ""),
                        options_.res_channels(), i_res.size(1), ctx);
    const Shape want{i_seg.size(0), i_res.size(1), i_seg.size(2), i_seg.size(3), i_seg.size(4)};
    if (i_res.shape() != want)
      fail<shape_error>(name, "I_res shape (I_seg's N, D, H, W)", want.str(), i_res.shape().str(), ctx);
    if (i_seg.numel() == 0) fail<shape_error>(name, "I_seg", "a non-empty tensor", "shape " + i_seg.shape().str());
  }

  ConResAttOptions options_;
  nn::ReLU<T, Backend> relu_seg_, relu_mp_, relu_res1_;
  nn::Sigmoid<T, Backend> sigmoid_s_, sigmoid_gate_;
  nn::SliceDifference<T, Backend> slice_diff_;
  Taps taps_;
};

}  // namespace mmnet::attention
