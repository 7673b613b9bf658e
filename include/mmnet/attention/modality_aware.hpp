// mmnet/attention/modality_aware.hpp: MAML's modality-aware (MA) attention fusion (Zhang et al., MICCAI 2021;
// official Generic_MAML). No single PyTorch module: the equivalents are Generic_MAML's
//   fusion                      torch.nn.Conv3d(M*C, C, 3, padding=1)
//   modality_aware_modules[i]   torch.nn.Sequential(Conv3d(2C, C, 3, padding=1), InstanceNorm3d(C, affine=True),
//                               LeakyReLU(0.01), Conv3d(C, C, 3, padding=1), Sigmoid())
// and the lines of its forward() that join them (spec maml.md §2.3):
//
//   F_dual = fusion(cat(F_1, ..., F_M))                           no norm, no activation
//   A_i    = modality_aware_modules[i](cat(F_i, F_dual))          C-channel gate in (0, 1), per voxel
//   F_att  = sum_i A_i * F_i                                      not normalised: the A_i need not sum to 1
//
//   attention::MAFusion<float, mmnet::cpu> ma(attention::MAFusionOptions(4, 16));   // BraTS: M = 4, C = 16
//   Tensor<float, mmnet::cpu> f_att = ma.forward({f1, f2, f3, f4});
//   std::vector<Tensor<float, mmnet::cpu>> df = ma.backward(df_att);                  // one per F_i
//
// The 1x1x1 output head Z = Conv3d(C, K, 1, bias=False)(F_att) is NOT part of MAFusion: Generic_MAML registers
// `fusion`, `modality_aware_modules` and `output` as siblings of its branches, so the network owns the head,
// and a network keeps the official flat state-dict names by splicing MAFusion's list into its own:
//   void members(Members<T, B>& m) override {
//     m("modality_specific_models", branches).splice(ma)("output", output);
//   }
// giving "fusion.weight", "modality_aware_modules.0.0.weight", ..., "output.weight", as the official code.
//
// Defaults follow the official code (spec §7 items 2-5): MAVariant::code (second conv 3x3x3, straight into the
// sigmoid), input order [F_i, F_dual], C-channel gates (average them over channels, e.g. with nn::ChannelMean,
// for the paper's one-channel maps). MAVariant::paper is the paper's text: second conv 1x1x1 followed by
// InstanceNorm3d + LeakyReLU before the sigmoid (Sequential indices 0 conv, 1 IN, 2 LReLU, 3 conv, 4 IN,
// 5 LReLU, 6 Sigmoid). InstanceNorm3d has eps 1e-5, affine, no running statistics; LeakyReLU slope 0.01.
// Initialisation: PyTorch's default for every conv (Generic_MAML never applies its He initialiser here, §2.4).
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/module.hpp"
#include "../core/ops.hpp"
#include "../layers/activation.hpp"
#include "../layers/broadcast.hpp"
#include "../layers/concat.hpp"
#include "../layers/conv3d.hpp"
#include "../layers/instance_norm3d.hpp"

namespace mmnet::attention {

// Which MA module: the official code's (default) or the paper text's (spec §2.3, §7 item 2).
enum class MAVariant { code, paper };

inline const char* to_string(MAVariant v) { return v == MAVariant::code ? "code" : "paper"; }

namespace detail {
// Checks that F is a non-empty N x channels x D x H x W tensor; `what` names it in the message.
template <class T, class Backend>
void check_feature(const char* component, const std::string& what, const Tensor<T, Backend>& f, index_t channels) {
  check_rank(component, what, f, 5);
  if (f.size(1) != channels)
    fail<shape_error>(component, what + " channels", channels, f.size(1), what + " shape " + f.shape().str());
  if (f.numel() == 0) fail<shape_error>(component, what, "a non-empty tensor", "shape " + f.shape().str());
}
}  // namespace detail

// Options of one MA module: MAModuleOptions(C).variant(MAVariant::code).
struct MAModuleOptions {
  explicit MAModuleOptions(index_t channels) : channels_(channels) {}

  // C: channels of F_i, of F_dual and of the gate A_i (the MA input has 2C).
  MAModuleOptions& channels(index_t v) { channels_ = v; return *this; }
  index_t channels() const { return channels_; }
  // The official code's module (default) or the paper text's.
  MAModuleOptions& variant(MAVariant v) { variant_ = v; return *this; }
  MAVariant variant() const { return variant_; }

 private:
  index_t channels_;
  MAVariant variant_ = MAVariant::code;
};

// A_i = sigmoid(conv_b(LReLU(IN(conv_a(cat(F_i, F_dual))))))            (code)
// A_i = sigmoid(LReLU(IN(conv_b(LReLU(IN(conv_a(cat(F_i, F_dual))))))))  (paper, conv_b 1x1x1)
// Parameters carry the nn.Sequential indices: "0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"
// and, in the paper variant, "4.weight", "4.bias". forward(F_i, F_dual) returns A_i (N x C x D x H x W);
// backward(dA) returns {dL/dF_i, dL/dF_dual} and adds into the parameters' grads.
template <class T, class Backend>
class MAModule : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  nn::Conv3d<T, Backend> conv_a;                        // "0": 2C -> C, 3x3x3, pad 1, bias
  nn::InstanceNorm3d<T, Backend> norm_a;                // "1"
  nn::LeakyReLU<T, Backend> act_a;                      // "2"
  nn::Conv3d<T, Backend> conv_b;                        // "3": C -> C, 3x3x3 pad 1 (code) or 1x1x1 (paper), bias
  std::optional<nn::InstanceNorm3d<T, Backend>> norm_b;  // "4", paper variant only
  nn::LeakyReLU<T, Backend> act_b;                      // "5", paper variant only
  nn::Sigmoid<T, Backend> gate;                         // "4" (code) or "6" (paper)

  explicit MAModule(const MAModuleOptions& options, Generator& generator = default_generator())
      : conv_a(nn::Conv3dOptions(2 * checked(options).channels(), options.channels(), 3).padding(1), generator),
        norm_a(nn::InstanceNorm3dOptions(options.channels())),
        conv_b(options.variant() == MAVariant::code
                   ? nn::Conv3dOptions(options.channels(), options.channels(), 3).padding(1)
                   : nn::Conv3dOptions(options.channels(), options.channels(), 1),
               generator),
        options_(options) {
    if (options.variant() == MAVariant::paper) norm_b.emplace(nn::InstanceNorm3dOptions(options.channels()));
  }

  void members(Members<T, Backend>& m) override {
    m("0", conv_a)("1", norm_a)("2", act_a)("3", conv_b);
    if (norm_b) m("4", *norm_b)("5", act_b)("6", gate);
    else m("4", gate);
  }

  tensor forward(const tensor& f, const tensor& f_dual) {
    const index_t c = options_.channels();
    detail::check_feature(name, "F_i", f, c);
    detail::check_feature(name, "F_dual", f_dual, c);
    if (f_dual.shape() != f.shape())
      fail<shape_error>(name, "F_dual shape (equal to F_i's)", f.shape().str(), f_dual.shape().str());
    tensor z = conv_b.forward(act_a.forward(norm_a.forward(conv_a.forward(concat_.forward({f, f_dual})))));
    if (norm_b) z = act_b.forward(norm_b->forward(z));
    a_ = gate.forward(z);
    return a_;
  }

  std::pair<tensor, tensor> backward(const tensor& da) {
    if (!a_.defined())
      fail<value_error>(std::string(name) + "::backward", "saved state", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", da, a_.shape());
    tensor d = gate.backward(da);
    if (norm_b) d = norm_b->backward(act_b.backward(d));
    d = conv_a.backward(norm_a.backward(act_a.backward(conv_b.backward(d))));
    auto parts = concat_.backward(d);
    return {parts[0], parts[1]};
  }

  const MAModuleOptions& options() const { return options_; }
  // The last gate A_i.
  const tensor& attention() const { return a_; }

 private:
  static constexpr const char* name = "mmnet::attention::MAModule";
  static const MAModuleOptions& checked(const MAModuleOptions& o) {
    if (o.channels() < 1) fail<value_error>("mmnet::attention::MAModuleOptions", "channels", ">= 1", o.channels());
    return o;
  }

  MAModuleOptions options_;
  nn::Concat<T, Backend> concat_;
  tensor a_;
};

// Options of the fusion: MAFusionOptions(M, C).variant(MAVariant::code).
struct MAFusionOptions {
  MAFusionOptions(index_t modalities, index_t channels) : modalities_(modalities), channels_(channels) {}

  // M: number of modalities (branches), one F_i each.
  MAFusionOptions& modalities(index_t v) { modalities_ = v; return *this; }
  index_t modalities() const { return modalities_; }
  // C: channels of every F_i (the branch base width).
  MAFusionOptions& channels(index_t v) { channels_ = v; return *this; }
  index_t channels() const { return channels_; }
  // Variant of every MA module (default: the official code's).
  MAFusionOptions& variant(MAVariant v) { variant_ = v; return *this; }
  MAVariant variant() const { return variant_; }

 private:
  index_t modalities_, channels_;
  MAVariant variant_ = MAVariant::code;
};

// F_att = sum_i A_i * F_i with A_i = MA_i(F_i, fusion(cat(F_1..F_M))). forward(F) takes the M branch features
// (each N x C x D x H x W, all of one shape) and returns F_att; backward(dF_att) returns dL/dF_i for every i,
// the sum of its three uses: the product A_i * F_i, MA module i and the fusion conv (F_dual feeds every MA
// module, so its gradient is summed over i first).
template <class T, class Backend>
class MAFusion : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  nn::Conv3d<T, Backend> fusion;                               // M*C -> C, 3x3x3, pad 1, bias
  std::vector<MAModule<T, Backend>> modality_aware_modules;    // one per modality, no sharing

  explicit MAFusion(const MAFusionOptions& options, Generator& generator = default_generator())
      : fusion(nn::Conv3dOptions(checked(options).modalities() * options.channels(), options.channels(), 3)
                   .padding(1),
               generator),
        options_(options) {
    const auto ma = MAModuleOptions(options.channels()).variant(options.variant());
    modality_aware_modules.reserve(static_cast<std::size_t>(options.modalities()));
    for (index_t i = 0; i < options.modalities(); ++i) modality_aware_modules.emplace_back(ma, generator);
    products_.resize(static_cast<std::size_t>(options.modalities()));
  }

  // Generic_MAML's names: "fusion.*", "modality_aware_modules.{i}.*".
  void members(Members<T, Backend>& m) override {
    m("fusion", fusion)("modality_aware_modules", modality_aware_modules);
  }

  tensor forward(const std::vector<tensor>& f) {
    const index_t mcount = options_.modalities();
    if (static_cast<index_t>(f.size()) != mcount)
      fail<shape_error>(name, "number of modality features", mcount, f.size());
    for (std::size_t i = 0; i < f.size(); ++i) {
      const std::string what = "F_" + std::to_string(i);
      detail::check_feature(name, what, f[i], options_.channels());
      if (f[i].shape() != f[0].shape())
        fail<shape_error>(name, what + " shape (equal to F_0's)", f[0].shape().str(), f[i].shape().str());
    }
    dual_ = fusion.forward(concat_.forward(f));
    tensor f_att;
    for (std::size_t i = 0; i < f.size(); ++i) {
      const tensor a = modality_aware_modules[i].forward(f[i], dual_);
      tensor p = products_[i].forward(a, f[i]);
      if (i == 0) f_att = p;  // summed in modality order, as Generic_MAML's loop
      else add_(f_att, p);
    }
    out_shape_ = f_att.shape();
    return f_att;
  }

  std::vector<tensor> backward(const tensor& df_att) {
    if (!dual_.defined())
      fail<value_error>(std::string(name) + "::backward", "saved state", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", df_att, out_shape_);
    std::vector<tensor> df(products_.size());
    tensor ddual;
    for (std::size_t i = 0; i < products_.size(); ++i) {
      auto [da, df_direct] = products_[i].backward(df_att);
      auto [df_ma, ddual_i] = modality_aware_modules[i].backward(da);
      df[i] = df_direct;
      add_(df[i], df_ma);
      if (i == 0) ddual = ddual_i;
      else add_(ddual, ddual_i);
    }
    const auto df_fusion = concat_.backward(fusion.backward(ddual));
    for (std::size_t i = 0; i < df.size(); ++i) add_(df[i], df_fusion[i]);
    return df;
  }

  const MAFusionOptions& options() const { return options_; }
  // The last F_dual (N x C x D x H x W).
  const tensor& dual() const { return dual_; }
  // The last gate A_i of modality i.
  const tensor& attention(index_t i) const {
    return modality_aware_modules.at(static_cast<std::size_t>(i)).attention();
  }

 private:
  static constexpr const char* name = "mmnet::attention::MAFusion";
  static const MAFusionOptions& checked(const MAFusionOptions& o) {
    const char* who = "mmnet::attention::MAFusionOptions";
    if (o.modalities() < 1) fail<value_error>(who, "modalities", ">= 1", o.modalities());
    if (o.channels() < 1) fail<value_error>(who, "channels", ">= 1", o.channels());
    return o;
  }

  MAFusionOptions options_;
  nn::Concat<T, Backend> concat_;
  std::vector<nn::Multiply<T, Backend>> products_;
  tensor dual_;
  Shape out_shape_;
};

}  // namespace mmnet::attention
