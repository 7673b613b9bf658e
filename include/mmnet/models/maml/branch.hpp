// mmnet/models/maml/branch.hpp: MAML's modality-specific model (spec maml.md §2.2), nnU-Net v1's Generic_UNet
// with conv pooling, transposed-conv upsampling and deep supervision, on ONE input channel (MAML; the
// Branch(options, in_channels) constructor takes more, e.g. HMRNet's stage-1 U-Net on CT / T1c / T2). PyTorch: official
// nnunet/network_architecture/generic_UNet.py `Generic_UNet`; tests/reference/maml_ref.py `Branch`.
//
//   stage 0      CNA(1, c0) CNA(c0, c0)                 conv_blocks_context.0.blocks.{0,1}     skip s_0
//   stage d      CNA(c_{d-1}, c_d, stride 2) CNA(c_d)    conv_blocks_context.d.blocks.{0,1}     skip s_d
//   stage P      CNA(c_{P-1}, c_P, stride 2), CNA(c_P)   conv_blocks_context.P.{0,1}.blocks.0   (bottleneck)
//   level u      up = tu.u(x); x = cat(up, s_t); CNA(2c_t, c_t); CNA(c_t)     t = P-1-u, coarse -> fine
//                                                        conv_blocks_localization.u.{0,1}.blocks.0
//   head u       h_u = seg_outputs.u(x)                  Conv3d(c_t, K, 1, bias=False)
//
// CNA = Conv3d(k3, pad 1, bias) -> InstanceNorm3d(affine, eps 1e-5, no running stats) -> LeakyReLU(0.01), with
// c_d = min(C 2^d, max). Outputs: F = the last level's x (C channels, full resolution, after the LeakyReLU) and the
// logit list [h_{P-1} (full), h_{P-2} (1/2), ..., h_0 (1/2^{P-1})], i.e. element k = z^(k) at resolution 1/2^k.
// Initialisation (nnU-Net InitWeights_He(1e-2)): every conv and transposed conv kaiming_normal_(a = 0.01,
// fan_in; a transposed weight (in, out, 2,2,2) has PyTorch's fan_in = out * 8), biases 0, IN gamma 1, beta 0.
//
// "No gradient" (spec §3.3): backward() takes one gradient per head, undefined where that output has no loss
// term. Parameters no defined gradient reaches (the unused heads, the decoder levels above the finest reached
// one) are left WITHOUT a gradient: an all-zero grad of theirs (what zero_grad() leaves) becomes an undefined
// tensor, so that the optimizers and clip_grad_norm_ skip them, as PyTorch skips grad None. A reached parameter
// whose grad is undefined gets a zero one before the gradient is added.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "../../core/grad_reach.hpp"
#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../init/init.hpp"
#include "../../layers/activation.hpp"
#include "../../layers/concat.hpp"
#include "../../layers/conv3d.hpp"
#include "../../layers/conv_transpose3d.hpp"
#include "../../layers/instance_norm3d.hpp"
#include "options.hpp"

namespace mmnet::models::maml {

namespace detail {

// a + b where either may be undefined (undefined + undefined = undefined); never writes into a or b.
template <class T, class Backend>
Tensor<T, Backend> sum_defined(const Tensor<T, Backend>& a, const Tensor<T, Backend>& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return add(a, b);
}

}  // namespace detail

// nnU-Net's ConvDropoutNormNonlin without dropout: conv -> instnorm -> lrelu. Names "conv", "instnorm".
template <class T, class Backend>
struct ConvNormNonlin : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  nn::Conv3d<T, Backend> conv;               // k3, pad 1, bias
  nn::InstanceNorm3d<T, Backend> instnorm;   // affine, eps 1e-5
  nn::LeakyReLU<T, Backend> lrelu;           // slope 0.01

  ConvNormNonlin(index_t in, index_t out, index_t stride, Generator& g)
      : conv(nn::Conv3dOptions(in, out, 3).stride(stride).padding(1), g), instnorm(nn::InstanceNorm3dOptions(out)) {
    init::kaiming_normal_(conv.weight.value, 1e-2, g);  // InitWeights_He(1e-2)
    init::zeros_(conv.bias.value);
  }

  void members(Members<T, Backend>& m) override { m("conv", conv)("instnorm", instnorm); }

  tensor forward(const tensor& x) { return lrelu.forward(instnorm.forward(conv.forward(x))); }
  tensor backward(const tensor& dy) { return conv.backward(instnorm.backward(lrelu.backward(dy))); }
};

// nnU-Net's StackedConvLayers: "blocks.{j}", the first conv with the stage's stride.
template <class T, class Backend>
struct StackedConvLayers : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  std::vector<ConvNormNonlin<T, Backend>> blocks;

  StackedConvLayers(index_t in, index_t out, int num_convs, index_t first_stride, Generator& g) {
    blocks.reserve(static_cast<std::size_t>(num_convs));
    for (int j = 0; j < num_convs; ++j) blocks.emplace_back(j == 0 ? in : out, out, j == 0 ? first_stride : 1, g);
  }

  void members(Members<T, Backend>& m) override { m("blocks", blocks); }

  tensor forward(tensor x) {
    for (auto& b : blocks) x = b.forward(x);
    return x;
  }
  tensor backward(tensor d) {
    for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) d = it->backward(d);
    return d;
  }
};

// nn.Sequential(StackedConvLayers(in, out, 1, stride), StackedConvLayers(out, out, 1)): nnU-Net's bottleneck and
// each decoder level, names "0.blocks.0", "1.blocks.0".
template <class T, class Backend>
struct StackedPair : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;

  StackedConvLayers<T, Backend> first, second;

  StackedPair(index_t in, index_t out, index_t first_stride, Generator& g)
      : first(in, out, 1, first_stride, g), second(out, out, 1, 1, g) {}

  void members(Members<T, Backend>& m) override { m("0", first)("1", second); }

  tensor forward(const tensor& x) { return second.forward(first.forward(x)); }
  tensor backward(const tensor& dy) { return first.backward(second.backward(dy)); }
};

template <class T, class Backend>
struct Branch : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::models::maml::Branch";

  std::vector<StackedConvLayers<T, Backend>> conv_blocks_context;  // encoder stages 0..P-1 (the skips)
  StackedPair<T, Backend> bottleneck;                               // stage P, named "conv_blocks_context.{P}"
  std::vector<nn::ConvTranspose3d<T, Backend>> tu;                  // [u]: c_{t+1} -> c_t, 2x2x2 stride 2, no bias
  std::vector<StackedPair<T, Backend>> conv_blocks_localization;    // [u]: CNA(2c_t, c_t), CNA(c_t, c_t)
  std::vector<nn::Conv3d<T, Backend>> seg_outputs;                  // [u]: c_t -> K, 1x1x1, no bias

  // Uses o's base_channels, num_pool, max_channels and classes (modalities is the network's business).
  explicit Branch(const MAMLOptions& o, Generator& g = default_generator()) : Branch(o, 1, g) {}
  // The same U-Net on in_channels input channels (MAML uses 1; e.g. HMRNet's stage-1 coarse U-Net uses 3).
  Branch(const MAMLOptions& o, index_t in_channels, Generator& g = default_generator())
      : conv_blocks_context(encoder(validated(o), checked_in(in_channels), g)),
        bottleneck(o.channels(static_cast<int>(o.num_pool()) - 1), o.channels(static_cast<int>(o.num_pool())), 2, g),
        options_(o), in_channels_(in_channels) {
    const int p = static_cast<int>(o.num_pool());
    tu.reserve(static_cast<std::size_t>(p));
    conv_blocks_localization.reserve(static_cast<std::size_t>(p));
    seg_outputs.reserve(static_cast<std::size_t>(p));
    for (int u = 0; u < p; ++u) {
      const int t = p - 1 - u;
      tu.emplace_back(nn::ConvTranspose3dOptions(o.channels(t + 1), o.channels(t), 2).stride(2).bias(false), g);
      init::kaiming_normal_(tu.back().weight.value, 1e-2, g);  // fan_in = dim 1 * 8, PyTorch's rule
    }
    for (int u = 0; u < p; ++u) {
      const int t = p - 1 - u;
      conv_blocks_localization.emplace_back(2 * o.channels(t), o.channels(t), 1, g);
    }
    for (int u = 0; u < p; ++u) {
      const int t = p - 1 - u;
      seg_outputs.emplace_back(nn::Conv3dOptions(o.channels(t), o.classes(), 1).bias(false), g);
      init::kaiming_normal_(seg_outputs.back().weight.value, 1e-2, g);
    }
    concat_.resize(static_cast<std::size_t>(p));
    skips_.resize(static_cast<std::size_t>(p));
    levels_.resize(static_cast<std::size_t>(p));
  }

  void members(Members<T, Backend>& m) override {
    m("conv_blocks_context", conv_blocks_context)("conv_blocks_context." + std::to_string(conv_blocks_context.size()), bottleneck)
        ("tu", tu)("conv_blocks_localization", conv_blocks_localization)("seg_outputs", seg_outputs);
  }

  const MAMLOptions& options() const { return options_; }
  index_t num_pool() const { return options_.num_pool(); }

  index_t in_channels() const { return in_channels_; }

  // x: N x in_channels x D x H x W (sizes multiples of 2^P, checked by the network). Runs encoder and decoder and returns F
  // (N x C x D x H x W); the heads are run by head() / forward().
  tensor features(const tensor& x) {
    check_input(x);
    const std::size_t p = skips_.size();
    tensor h = x;
    for (std::size_t d = 0; d < p; ++d) skips_[d] = h = conv_blocks_context[d].forward(h);
    h = bottleneck.forward(h);
    for (std::size_t u = 0; u < p; ++u)
      levels_[u] = h = conv_blocks_localization[u].forward(concat_[u].forward({tu[u].forward(h), skips_[p - 1 - u]}));
    x_shape_ = x.shape();
    return h;
  }
  // z^(k) = h_{P-1-k} of the last features() call: N x K at resolution 1/2^k.
  tensor head(index_t k) {
    const auto u = static_cast<std::size_t>(num_pool() - 1 - k);
    return seg_outputs.at(u).forward(levels_.at(u));
  }
  // The logit list [z^(0) (full resolution), ..., z^(P-1)]; F is features_out() afterwards.
  std::vector<tensor> forward(const tensor& x) {
    features(x);
    std::vector<tensor> z;
    for (index_t k = 0; k < num_pool(); ++k) z.push_back(head(k));
    return z;
  }
  // F of the last forward: the finest decoder level's output.
  const tensor& features_out() const { return levels_.back(); }
  // Output of decoder level u (0 = coarsest) and the skip of stage d, of the last forward.
  const tensor& decoder_output(index_t u) const { return levels_.at(static_cast<std::size_t>(u)); }
  const tensor& skip(index_t d) const { return skips_.at(static_cast<std::size_t>(d)); }

  // dlogits: P gradients in z^(k) order (undefined: no loss on that head); df: dL/dF from the fusion (undefined:
  // none). Returns dL/dx (zeros when nothing is reached). See the file comment for the no-gradient rule.
  tensor backward(const std::vector<tensor>& dlogits, const tensor& df = tensor()) {
    const std::string who = std::string(name) + "::backward";
    const int p = static_cast<int>(num_pool());
    if (levels_.empty() || !levels_.back().defined())
      fail<value_error>(who, "state", "a forward() call first", "no stored activations");
    if (static_cast<int>(dlogits.size()) != p)
      fail<shape_error>(who, "number of head gradients (num_pool)", p, dlogits.size());
    int top = df.defined() ? p - 1 : -1;  // the finest decoder level a gradient reaches
    for (int u = 0; u < p; ++u)
      if (dlogits[static_cast<std::size_t>(p - 1 - u)].defined()) top = std::max(top, u);
    for (int u = 0; u < p; ++u) {
      mark_reached(seg_outputs[static_cast<std::size_t>(u)], dlogits[static_cast<std::size_t>(p - 1 - u)].defined());
      mark_reached(tu[static_cast<std::size_t>(u)], u <= top);
      mark_reached(conv_blocks_localization[static_cast<std::size_t>(u)], u <= top);
    }
    for (auto& s : conv_blocks_context) mark_reached(s, top >= 0);
    mark_reached(bottleneck, top >= 0);
    if (top < 0) return tensor(x_shape_);

    std::vector<tensor> dskip(static_cast<std::size_t>(p));
    tensor carry;  // dL/d(input of level u), i.e. of level u-1's output (or the bottleneck's)
    for (int u = top; u >= 0; --u) {
      const auto uu = static_cast<std::size_t>(u);
      tensor g = carry;
      const tensor& dz = dlogits[static_cast<std::size_t>(p - 1 - u)];
      if (dz.defined()) {
        check_same_shape(who, "gradient of z^(" + std::to_string(p - 1 - u) + ")", dz, head_shape(uu));
        g = detail::sum_defined(g, seg_outputs[uu].backward(dz));
      }
      if (u == p - 1 && df.defined()) {
        check_same_shape(who, "gradient of F", df, levels_[uu].shape());
        g = detail::sum_defined(g, df);
      }
      const auto parts = concat_[uu].backward(conv_blocks_localization[uu].backward(g));
      dskip[static_cast<std::size_t>(p - 1 - u)] = parts[1];
      carry = tu[uu].backward(parts[0]);
    }
    carry = bottleneck.backward(carry);
    for (int d = p - 1; d >= 0; --d) carry = conv_blocks_context[static_cast<std::size_t>(d)].backward(
        detail::sum_defined(carry, dskip[static_cast<std::size_t>(d)]));
    return carry;
  }

 private:
  static const MAMLOptions& validated(const MAMLOptions& o) {
    o.validate();
    return o;
  }
  static index_t checked_in(index_t c) {
    if (c < 1) fail<value_error>(name, "in_channels", ">= 1", c);
    return c;
  }
  static std::vector<StackedConvLayers<T, Backend>> encoder(const MAMLOptions& o, index_t in, Generator& g) {
    std::vector<StackedConvLayers<T, Backend>> stages;
    stages.reserve(static_cast<std::size_t>(o.num_pool()));
    for (int d = 0; d < static_cast<int>(o.num_pool()); ++d)
      stages.emplace_back(d == 0 ? in : o.channels(d - 1), o.channels(d), 2, d == 0 ? 1 : 2, g);
    return stages;
  }
  void check_input(const tensor& x) const {
    check_rank(name, "input", x, 5);
    if (x.size(1) != in_channels_)
      fail<shape_error>(name, "input channels", in_channels_, x.size(1), "input shape " + x.shape().str());
    const index_t k = options_.size_multiple();
    for (int d = 2; d < 5; ++d)
      if (x.size(d) < 1 || x.size(d) % k != 0)
        fail<shape_error>(name, std::string("input size ") + "DHW"[d - 2], "a positive multiple of " + std::to_string(k) + " (2^num_pool)",
                          x.size(d), "input shape " + x.shape().str());
  }
  Shape head_shape(std::size_t u) const {
    const Shape& s = levels_[u].shape();
    return Shape{s[0], options_.classes(), s[2], s[3], s[4]};
  }

  MAMLOptions options_;
  index_t in_channels_ = 1;
  std::vector<nn::Concat<T, Backend>> concat_;
  std::vector<tensor> skips_, levels_;
  Shape x_shape_;
};

}  // namespace mmnet::models::maml
