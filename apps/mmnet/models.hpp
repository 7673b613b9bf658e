// apps/mmnet/models.hpp: the networks the `mmnet` commands know, by name (--model, --config), and what the
// commands need to know about one without instantiating it: modalities, classes (1 sigmoid channel for MMFNet's
// binary output, K softmax channels for MAML, 1 tumour probability for CSCN), the size multiple of its inputs.
#pragma once
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <mmnet/conresnet.hpp>
#include <mmnet/cscn.hpp>
#include <mmnet/hmrnet.hpp>
#include <mmnet/maml.hpp>
#include <mmnet/mmfnet.hpp>

#include "cli_common.hpp"

namespace mmnet_cli {

enum class ModelKind { mmfnet, maml, cscn, hmrnet, conresnet };

inline const std::vector<std::string>& model_names() {
  static const std::vector<std::string> n{"mmfnet", "maml", "cscn", "hmrnet", "conresnet"};
  return n;
}

inline ModelKind model_kind(const std::string& model) {
  if (model == "mmfnet") return ModelKind::mmfnet;
  if (model == "maml") return ModelKind::maml;
  if (model == "cscn") return ModelKind::cscn;
  if (model == "hmrnet") return ModelKind::hmrnet;
  if (model == "conresnet") return ModelKind::conresnet;
  throw cli_error("unknown model '" + model + "' (known: mmfnet, maml, cscn, hmrnet, conresnet)");
}

inline const std::map<std::string, mmnet::MAMLOptions (*)()>& maml_presets() {
  using O = mmnet::MAMLOptions;
  static const std::map<std::string, O (*)()> presets{
      {"brats", &O::brats},
      {"liver", &O::liver},
      {"tiny", &O::tiny},
      {"small", &O::small},
      // The ablations of the paper's Table 1 (spec §3.3) on the phantom-size network.
      {"small-ms-ma", +[] { return O::small().variant(mmnet::models::MAMLVariant::ms_ma); }},
      {"small-ms-ensemble", +[] { return O::small().variant(mmnet::models::MAMLVariant::ms_ensemble); }},
      {"brats-paper-ma", +[] { return O::brats().ma_variant(mmnet::attention::MAVariant::paper); }},
  };
  return presets;
}

// CSCN (spec cascaded-fcn.md): paper (BUNet b 16 + ACDNet s 32 L 4 k 16, block 8 x 24 x 24), tiny (spec §8 ref-tiny,
// block 4 x 8 x 12) and small: the paper's block, stride and margin with narrow networks (BUNet b 4, ACDNet s 8,
// L 2, k 4, a 4, u2 16, u1 8, e 4) that train on the npc-like phantoms in minutes on two CPU cores.
inline const std::map<std::string, mmnet::CSCNOptions (*)()>& cscn_presets() {
  using O = mmnet::CSCNOptions;
  static const std::map<std::string, O (*)()> presets{
      {"paper", &O::paper},
      {"tiny", &O::tiny},
      {"small", +[] {
         return O::paper().bunet(mmnet::BUNetOptions().b(4))
             .acdnet(mmnet::ACDNetOptions().s(8).L(2).k(4).a(4).u2(16).u1(8).e(4));
       }},
  };
  return presets;
}

// HMRNet (spec hmrnet.md): the two-stage system of a preset -- the stage-1 coarse multi-class U-Net (maml::Branch
// on the 3 channels CT, T1c, T2; classes 0..5 of the barriers) and the widths of the binary fine HMRNets, whose
// form (p or s) per structure is TwoStagePlan::abcs()'s -- or, for info / forward, one fine network (-p, -s).
struct HMRNetPreset {
  mmnet::MAMLOptions unet{1, 6};              // stage 1 (modalities unused: Branch gets 3 input channels)
  mmnet::HMRNetOptions p, s;                   // the fine networks of form p and of form s
  std::optional<mmnet::HMRNetForm> single;     // "-p" / "-s" configs: one network (info, forward)
  index_t max_patch = 128;                     // largest fine-network patch per axis (spec §4: <= 128)
  const mmnet::HMRNetOptions& fine(mmnet::HMRNetForm f) const { return f == mmnet::HMRNetForm::p ? p : s; }
};

// paper: nnU-Net-like stage 1 (base 32, 4 poolings, max 320) and the paper's widths (c 16..128, ch 8; 3,124,092
// parameters for -p, 2,377,932 for -s); tiny: stage 1 base 4 (3 poolings, max 16), spec §8's tiny widths (c 4..32,
// ch 2); small (CLI preset for CPU phantom runs): stage 1 base 8 (3 poolings, max 32), fine networks c 4, 8, 8, 16,
// ch 2; the fine patches of small and tiny are at most 32 per axis (CPU), the paper's 128. The "-p" / "-s" names are one fine network of that form (info, forward); train / segment take the
// system names paper, tiny, small.
inline const std::map<std::string, HMRNetPreset>& hmrnet_presets() {
  using O = mmnet::HMRNetOptions;
  using F = mmnet::HMRNetForm;
  static const std::map<std::string, HMRNetPreset> presets = [] {
    std::map<std::string, HMRNetPreset> m;
    const HMRNetPreset paper{mmnet::MAMLOptions(1, 6).base_channels(32).num_pool(4).max_channels(320), O::paper_p(), O::paper_s(),
                             std::nullopt, 128};
    const HMRNetPreset tiny{mmnet::MAMLOptions(1, 6).base_channels(4).num_pool(3).max_channels(16), O::tiny_p(), O::tiny_s(),
                            std::nullopt, 32};
    const HMRNetPreset small{mmnet::MAMLOptions(1, 6).base_channels(8).num_pool(3).max_channels(32),
                             O(F::p).mr_channels({4, 8, 8, 16}).hr_channels(2), O(F::s).mr_channels({4, 8, 8, 16}).hr_channels(2),
                             std::nullopt, 32};
    for (auto [name, preset] : {std::pair<std::string, HMRNetPreset>{"paper", paper}, {"tiny", tiny}, {"small", small}}) {
      m[name] = preset;
      preset.single = F::p;
      m[name + "-p"] = preset;
      preset.single = F::s;
      m[name + "-s"] = preset;
    }
    return m;
  }();
  return presets;
}

// ConResNet (spec conresnet.md): brats (C_in 4, K 3 [ET, WT, TC], w 32, G 8; 19,018,732 parameters), tiny (spec
// §8: C_in 2, w 4, G 2; 298,544), small (C_in 4, w 8, G 4: CPU phantom runs), and each as "-baseline": the paper's
// Baseline ablation without the context residual path (ConResNetOptions::context_residual(false)).
inline const std::map<std::string, mmnet::ConResNetOptions>& conresnet_presets() {
  using O = mmnet::ConResNetOptions;
  static const std::map<std::string, O> presets = [] {
    std::map<std::string, O> m;
    for (auto [name, o] : {std::pair<std::string, O>{"brats", O::brats()}, {"tiny", O::tiny()}, {"small", O::small()}}) {
      m[name] = o;
      m[name + "-baseline"] = O(o).context_residual(false);
    }
    return m;
  }();
  return presets;
}

inline std::vector<std::string> config_names(ModelKind k) {
  std::vector<std::string> n;
  if (k == ModelKind::mmfnet)
    for (auto& p : mmfnet_presets()) n.push_back(p.first);
  else if (k == ModelKind::maml)
    for (auto& p : maml_presets()) n.push_back(p.first);
  else if (k == ModelKind::cscn)
    for (auto& p : cscn_presets()) n.push_back(p.first);
  else if (k == ModelKind::hmrnet)
    for (auto& p : hmrnet_presets()) n.push_back(p.first);
  else
    for (auto& p : conresnet_presets()) n.push_back(p.first);
  return n;
}

// Every config name of every model (what CLI11 checks before the model is known).
inline std::vector<std::string> all_config_names() {
  std::vector<std::string> n = config_names(ModelKind::mmfnet);
  for (ModelKind k : {ModelKind::maml, ModelKind::cscn, ModelKind::hmrnet, ModelKind::conresnet})
    for (auto& c : config_names(k))
      if (std::find(n.begin(), n.end(), c) == n.end()) n.push_back(c);
  return n;
}

inline std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? sep : "") + v[i];
  return s;
}

// A model and preset by name, checked.
struct ModelSpec {
  ModelKind kind = ModelKind::mmfnet;
  std::string model, config;
  std::optional<mmnet::MMFNetOptions> mmfnet;
  std::optional<mmnet::MAMLOptions> maml;
  std::optional<mmnet::CSCNOptions> cscn;
  std::optional<HMRNetPreset> hmrnet;
  std::optional<mmnet::ConResNetOptions> conresnet;

  index_t modalities() const {
    if (hmrnet) return 3;  // CT, T1c, T2
    if (conresnet) return conresnet->in_channels();
    return mmfnet ? mmfnet->modalities() : maml ? maml->modalities() : cscn->bunet().in_channels();
  }
  // Output channels: 1 (sigmoid foreground probability) for MMFNet, K (softmax) for MAML, 1 (P_final) for CSCN;
  // HMRNet: the stage-1 classes (6), or 2 (softmax of y0) for one fine network.
  // ConResNet: K sigmoid region channels ([ET, WT, TC]).
  index_t output_channels() const {
    if (hmrnet) return hmrnet->single ? 2 : hmrnet->unet.classes();
    if (conresnet) return conresnet->num_classes();
    return mmfnet ? 1 : maml ? maml->classes() : 1;
  }
  // Label values the data set must have: 0..classes-1 (ConResNet: nnU-Net's BraTS labels 0..3, composed into the
  // K = 3 overlapping regions).
  index_t classes() const {
    if (hmrnet) return hmrnet->single ? 2 : hmrnet->unet.classes();
    if (conresnet) return 4;
    return mmfnet ? 2 : maml ? maml->classes() : cscn->bunet().classes();
  }
  // HMRNet: of the stage-1 U-Net (train / segment patches); a fine network's own rule is checked by it.
  index_t size_multiple() const {
    if (hmrnet) return hmrnet->unet.size_multiple();
    if (conresnet) return mmnet::ConResNetOptions::size_multiple();
    return mmfnet ? mmfnet->size_multiple() : maml ? maml->size_multiple() : 4;
  }
  int levels() const {
    if (hmrnet) return static_cast<int>(hmrnet->unet.num_pool());
    if (conresnet) return 3;
    return mmfnet ? static_cast<int>(mmfnet->levels()) : maml ? static_cast<int>(maml->num_pool()) : 2;
  }
  std::string name() const { return model + " " + config; }
};

inline ModelSpec model_spec(const std::string& model, const std::string& config) {
  ModelSpec s;
  s.kind = model_kind(model);
  s.model = model;
  s.config = config;
  if (s.kind == ModelKind::mmfnet) {
    s.mmfnet = options_for(model, config);
  } else if (s.kind == ModelKind::cscn) {
    auto it = cscn_presets().find(config);
    if (it == cscn_presets().end())
      throw cli_error("unknown cscn config '" + config + "' (known: " + join(config_names(ModelKind::cscn)) + ")");
    s.cscn = it->second();
    s.cscn->validate();
  } else if (s.kind == ModelKind::hmrnet) {
    auto it = hmrnet_presets().find(config);
    if (it == hmrnet_presets().end())
      throw cli_error("unknown hmrnet config '" + config + "' (known: " + join(config_names(ModelKind::hmrnet)) + ")");
    s.hmrnet = it->second;
    s.hmrnet->unet.validate();
    s.hmrnet->p.validate();
    s.hmrnet->s.validate();
  } else if (s.kind == ModelKind::conresnet) {
    auto it = conresnet_presets().find(config);
    if (it == conresnet_presets().end())
      throw cli_error("unknown conresnet config '" + config + "' (known: " + join(config_names(ModelKind::conresnet)) + ")");
    s.conresnet = it->second;
    s.conresnet->validate();
  } else {
    auto it = maml_presets().find(config);
    if (it == maml_presets().end())
      throw cli_error("unknown maml config '" + config + "' (known: " + join(config_names(ModelKind::maml)) + ")");
    s.maml = it->second();
    s.maml->validate();
  }
  return s;
}

// "T1ce,FLAIR" or "1,3" (names of dataset.json's modalities, or channel indices) -> sorted indices.
inline mmnet::models::ModalitySet parse_modalities(const std::string& text, const std::vector<std::string>& names,
                                                   const std::string& what = "--modalities") {
  mmnet::models::ModalitySet out;
  std::size_t start = 0;
  while (true) {
    const std::size_t sep = text.find(',', start);
    const std::string part = text.substr(start, sep == std::string::npos ? std::string::npos : sep - start);
    index_t idx = -1;
    for (std::size_t i = 0; i < names.size(); ++i)
      if (names[i] == part) idx = static_cast<index_t>(i);
    if (idx < 0 && !part.empty() && part.find_first_not_of("0123456789") == std::string::npos && part.size() < 6)
      idx = static_cast<index_t>(std::stoll(part));
    if (idx < 0 || idx >= static_cast<index_t>(names.size()))
      throw cli_error(what + ": '" + part + "' is not one of the modalities (" + join(names) + ") or an index 0.." +
                      std::to_string(names.size() - 1));
    for (auto v : out)
      if (v == idx) throw cli_error(what + ": modality '" + part + "' given twice in '" + text + "'");
    out.push_back(idx);
    if (sep == std::string::npos) break;
    start = sep + 1;
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace mmnet_cli
