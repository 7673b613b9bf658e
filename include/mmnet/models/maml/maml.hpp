// mmnet/models/maml/maml.hpp: MAML, modality-aware mutual learning (Zhang et al., MICCAI 2021; spec
// shared/specs/maml.md §2). PyTorch: official nnunet/network_architecture/generic_MAML.py `Generic_MAML`;
// tests/reference/maml_ref.py `MAML` (state-dict names of spec §8). It reads like the paper's figure 1:
//
//   x (N x M x D x H x W, channel i = modality i)
//     ├─ modality_specific_models.0 (nnU-Net) ─ F_0, logits z_0^(0..P-1) ─┐
//     ├─ ...                                                               ├─ fusion ─ F_dual
//     └─ modality_specific_models.M-1 ───────── F_{M-1}, z_{M-1}^(...) ───┤   modality_aware_modules.i(F_i, F_dual) = A_i
//                                                                          └─ F_att = Σ A_i F_i ─ output (1x1x1) ─ Z
//
//   MAML<float, mmnet::cpu> net(MAMLOptions::brats());
//   auto outs = net.forward(x);     // [Z, z_0^(0), ..., z_0^(P-1), ..., z_{M-1}^(P-1)]: 1 + M P logit maps
//   float l = loss.forward(outs, labels);
//   net.backward(loss.backward());  // one gradient per output; undefined = no loss term on it
//   auto prob = net.predict(x, {1});   // softmax of branch 1's full-resolution logits (one modality available)
//
// z_i^(k) (branch i, resolution 1/2^k) is at list index 1 + i P + k. The state dict is Generic_MAML's:
// modality_specific_models.{i}.*, fusion.*, modality_aware_modules.{i}.*, output.weight (MAFusion spliced in).
// "No gradient" (spec §3.3): after backward(), every parameter that no defined output gradient reaches has an
// undefined grad (an all-zero grad of it -- zero_grad()'s -- is dropped; a non-zero one, accumulated by an
// earlier backward, is kept), so the optimizers and clip_grad_norm_ skip it as PyTorch skips grad None; every
// reached parameter has a defined grad (allocated as zeros if it had none) into which the gradient is added.
// Variant ms_ensemble has no fusion, MA or output head: ma and output exist but are not listed or run.
// InstanceNorm has no running statistics, so train() / eval() only switch modality dropout.
#pragma once
#include <string>
#include <vector>

#include "../../attention/modality_aware.hpp"
#include "../../core/module.hpp"
#include "../../core/ops.hpp"
#include "../../core/random.hpp"
#include "../../layers/concat.hpp"
#include "../../layers/conv3d.hpp"
#include "../../layers/softmax.hpp"
#include "branch.hpp"
#include "options.hpp"

namespace mmnet::models {

template <class T, class Backend>
struct MAML : Module<T, Backend> {
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::MAML";

  std::vector<maml::Branch<T, Backend>> modality_specific_models;  // one nnU-Net per modality, no sharing
  attention::MAFusion<T, Backend> ma;                               // spliced: fusion.*, modality_aware_modules.*
  nn::Conv3d<T, Backend> output;                                    // C -> K, 1x1x1, no bias: Z

  explicit MAML(const MAMLOptions& options, Generator& g = default_generator())
      : modality_specific_models(branches(validated(options), g)),
        ma(attention::MAFusionOptions(options.modalities(), options.base_channels()).variant(options.ma_variant()), g),
        output(nn::Conv3dOptions(options.base_channels(), options.classes(), 1).bias(false), g),
        options_(options),
        dropout_rng_(options.dropout_seed()) {}

  void members(Members<T, Backend>& m) override {
    m("modality_specific_models", modality_specific_models);
    if (options_.has_fusion()) m.splice(ma)("output", output);
  }

  const MAMLOptions& options() const { return options_; }
  index_t num_outputs() const { return 1 + options_.modalities() * options_.num_pool(); }
  // List index of z_i^(k).
  index_t output_index(index_t i, index_t k) const { return 1 + i * options_.num_pool() + k; }

  // Training-mode list (spec §2.3): [Z, branch 0 logits (P, full -> coarse), ..., branch M-1]. x: N x M x D x H x W.
  // With modality dropout (options().modality_dropout() > 0, training mode, M >= 2) a random non-empty proper
  // subset may be dropped for this call: absent branches' entries and Z are undefined (not run); present() tells.
  std::vector<tensor> forward(const tensor& x) {
    const index_t mcount = options_.modalities();
    ModalitySet present = maml::all_modalities(mcount);
    if (this->is_training() && options_.modality_dropout() > 0 && mcount >= 2 &&
        dropout_rng_.uniform() < options_.modality_dropout()) {
      // uniform over the 2^M - 2 non-empty proper subsets, as a bit mask 1 .. 2^M - 2
      const std::uint64_t mask = 1 + dropout_rng_.integer((std::uint64_t(1) << mcount) - 2);
      present.clear();
      for (index_t i = 0; i < mcount; ++i)
        if (mask >> i & 1) present.push_back(i);
    }
    return forward(x, present);
  }

  // The same with an explicit set: x has M channels (absent ones are never read) or exactly present.size()
  // channels in the order of `present`. Z is computed only when all M are present (and not for ms_ensemble).
  std::vector<tensor> forward(const tensor& x, const ModalitySet& present) {
    const auto xs = inputs(x, present, "forward");
    const index_t p = options_.num_pool();
    std::vector<tensor> outs(static_cast<std::size_t>(num_outputs()));
    std::vector<tensor> feats;
    for (std::size_t j = 0; j < present.size(); ++j) {
      const index_t i = present[j];
      auto z = modality_specific_models[static_cast<std::size_t>(i)].forward(xs[j]);
      for (index_t k = 0; k < p; ++k) outs[static_cast<std::size_t>(output_index(i, k))] = z[static_cast<std::size_t>(k)];
      feats.push_back(modality_specific_models[static_cast<std::size_t>(i)].features_out());
    }
    f_att_ = tensor();
    if (all_present(present) && options_.has_fusion()) {
      f_att_ = ma.forward(feats);
      outs[0] = output.forward(f_att_);
    }
    present_ = present;
    x_shape_ = x.shape();
    out_shapes_.assign(outs.size(), Shape());
    defined_.assign(outs.size(), false);
    for (std::size_t j = 0; j < outs.size(); ++j)
      if (outs[j].defined()) {
        out_shapes_[j] = outs[j].shape();
        defined_[j] = true;
      }
    return outs;
  }

  // grads: one per forward() output; an undefined entry = that output has no loss term. Returns dL/dx with x's
  // shape (zero in absent channels). Leaves unreached parameters without a gradient (file comment).
  tensor backward(const std::vector<tensor>& grads) {
    const std::string who = std::string(name) + "::backward";
    if (present_.empty()) fail<value_error>(who, "state", "a forward() call first", "none");
    if (static_cast<index_t>(grads.size()) != num_outputs())
      fail<shape_error>(who, "number of output gradients (1 + M num_pool)", num_outputs(), grads.size());
    for (std::size_t j = 0; j < grads.size(); ++j) {
      if (!grads[j].defined()) continue;
      const std::string what = "gradient of output " + std::to_string(j);
      if (!defined_[j])
        fail<shape_error>(who, what, "an undefined tensor (the output was not computed)", grads[j].shape().str());
      check_same_shape(who, what, grads[j], out_shapes_[j]);
    }
    const index_t mcount = options_.modalities(), p = options_.num_pool();
    std::vector<tensor> dfeat(static_cast<std::size_t>(mcount));
    if (options_.has_fusion()) {
      const bool joint = grads[0].defined();
      mark_reached(output, joint);
      mark_reached(ma, joint);
      if (joint) {
        const auto df = ma.backward(output.backward(grads[0]));
        for (std::size_t j = 0; j < present_.size(); ++j) dfeat[static_cast<std::size_t>(present_[j])] = df[j];
      }
    }
    std::vector<tensor> dx(static_cast<std::size_t>(mcount));
    for (index_t i = 0; i < mcount; ++i) {
      auto& b = modality_specific_models[static_cast<std::size_t>(i)];
      if (!is_present(i)) {
        mark_reached(b, false);
        continue;
      }
      std::vector<tensor> dz(grads.begin() + output_index(i, 0), grads.begin() + output_index(i, 0) + p);
      dx[static_cast<std::size_t>(i)] = b.backward(dz, dfeat[static_cast<std::size_t>(i)]);
    }
    std::vector<tensor> parts;
    const Shape one{x_shape_[0], 1, x_shape_[2], x_shape_[3], x_shape_[4]};
    if (x_shape_[1] == mcount) {
      for (auto& d : dx) parts.push_back(d.defined() ? d : tensor(one));
    } else {
      for (index_t i : present_) parts.push_back(dx[static_cast<std::size_t>(i)]);
    }
    return parts.size() == 1 ? parts[0] : nn::cat_channels(parts);
  }

  // Inference: softmax probabilities N x K x D x H x W. All present: softmax(Z); one present (j): softmax of
  // branch j's full-resolution logits (spec §4.5); 2..M-1 present, or variant ms_ensemble: the mean of the
  // present branches' softmaxes (an mmnet extension; spec §3.3 MS+Ensemble, §7 item 15). Runs only what it needs.
  tensor predict(const tensor& x, const ModalitySet& present) {
    const auto xs = inputs(x, present, "predict");
    nn::Softmax<T, Backend> softmax;
    if (all_present(present) && options_.has_fusion()) {
      std::vector<tensor> feats;
      for (std::size_t j = 0; j < present.size(); ++j)
        feats.push_back(modality_specific_models[static_cast<std::size_t>(present[j])].features(xs[j]));
      return softmax.forward(output.forward(ma.forward(feats)));
    }
    tensor mean;
    for (std::size_t j = 0; j < present.size(); ++j) {
      auto& b = modality_specific_models[static_cast<std::size_t>(present[j])];
      b.features(xs[j]);
      const tensor prob = softmax.forward(b.head(0));
      if (j == 0) mean = prob;
      else add_(mean, prob);
    }
    if (present.size() > 1) scale_(mean, static_cast<T>(1.0 / static_cast<double>(present.size())));
    return mean;
  }
  tensor predict(const tensor& x) { return predict(x, maml::all_modalities(options_.modalities())); }

  // Modality dropout's generator (seeded with options().dropout_seed(); track it in train::Trainer for resume).
  Generator& dropout_generator() { return dropout_rng_; }

  // Taps of the last forward(): the present set, F_i, F_dual, A_i, F_att (the last three only when Z was computed).
  const ModalitySet& present() const { return present_; }
  const tensor& features(index_t i) const { return modality_specific_models.at(static_cast<std::size_t>(i)).features_out(); }
  const tensor& dual() const { return ma.dual(); }
  const tensor& attention(index_t i) const { return ma.attention(i); }
  const tensor& fused() const { return f_att_; }

 private:
  static const MAMLOptions& validated(const MAMLOptions& o) {
    o.validate();
    return o;
  }
  static std::vector<maml::Branch<T, Backend>> branches(const MAMLOptions& o, Generator& g) {
    std::vector<maml::Branch<T, Backend>> b;
    b.reserve(static_cast<std::size_t>(o.modalities()));
    for (index_t i = 0; i < o.modalities(); ++i) b.emplace_back(o, g);
    return b;
  }
  bool all_present(const ModalitySet& s) const { return static_cast<index_t>(s.size()) == options_.modalities(); }
  bool is_present(index_t i) const {
    for (index_t j : present_)
      if (j == i) return true;
    return false;
  }

  // The single-channel inputs of the present branches, in the order of `present`, after checking x and the set.
  std::vector<tensor> inputs(const tensor& x, const ModalitySet& present, const char* fn) const {
    const std::string who = std::string(name) + "::" + fn;
    const index_t mcount = options_.modalities();
    maml::check_modality_set(who, present, mcount);
    check_rank(who, "input", x, 5);
    const auto given = static_cast<index_t>(present.size());
    if (x.size(1) != mcount && x.size(1) != given)
      fail<shape_error>(who, "input channels", std::to_string(mcount) + " (modalities) or " + std::to_string(given) +
                        " (present modalities)", x.size(1), "input shape " + x.shape().str());
    if (x.numel() == 0) fail<shape_error>(who, "input", "a non-empty tensor", "shape " + x.shape().str());
    const index_t k = options_.size_multiple();
    for (int d = 2; d < 5; ++d)
      if (x.size(d) % k != 0)
        fail<shape_error>(who, std::string("input size ") + "DHW"[d - 2],
                          "a multiple of " + std::to_string(k) + " (2^num_pool)", x.size(d), "input shape " + x.shape().str());
    const auto all = x.size(1) == 1 ? std::vector<tensor>{x}
                                    : nn::split_channels(x, std::vector<index_t>(static_cast<std::size_t>(x.size(1)), 1));
    std::vector<tensor> xs;
    for (std::size_t j = 0; j < present.size(); ++j)
      xs.push_back(all[x.size(1) == mcount ? static_cast<std::size_t>(present[j]) : j]);
    return xs;
  }

  MAMLOptions options_;
  Generator dropout_rng_;
  ModalitySet present_;
  Shape x_shape_;
  std::vector<Shape> out_shapes_;
  std::vector<bool> defined_;
  tensor f_att_;
};

}  // namespace mmnet::models
