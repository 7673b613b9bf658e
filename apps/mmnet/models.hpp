// apps/mmnet/models.hpp: the networks the `mmnet` commands know, by name (--model, --config), and what the
// commands need to know about one without instantiating it: modalities, classes (1 sigmoid channel for MMFNet's
// binary output, K softmax channels for MAML, 1 tumour probability for CSCN), the size multiple of its inputs.
#pragma once
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <mmnet/cscn.hpp>
#include <mmnet/maml.hpp>
#include <mmnet/mmfnet.hpp>

#include "cli_common.hpp"

namespace mmnet_cli {

enum class ModelKind { mmfnet, maml, cscn };

inline const std::vector<std::string>& model_names() {
  static const std::vector<std::string> n{"mmfnet", "maml", "cscn"};
  return n;
}

inline ModelKind model_kind(const std::string& model) {
  if (model == "mmfnet") return ModelKind::mmfnet;
  if (model == "maml") return ModelKind::maml;
  if (model == "cscn") return ModelKind::cscn;
  throw cli_error("unknown model '" + model + "' (known: mmfnet, maml, cscn)");
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

inline std::vector<std::string> config_names(ModelKind k) {
  std::vector<std::string> n;
  if (k == ModelKind::mmfnet)
    for (auto& p : mmfnet_presets()) n.push_back(p.first);
  else if (k == ModelKind::maml)
    for (auto& p : maml_presets()) n.push_back(p.first);
  else
    for (auto& p : cscn_presets()) n.push_back(p.first);
  return n;
}

// Every config name of every model (what CLI11 checks before the model is known).
inline std::vector<std::string> all_config_names() {
  std::vector<std::string> n = config_names(ModelKind::mmfnet);
  for (auto& c : config_names(ModelKind::maml)) n.push_back(c);
  for (auto& c : config_names(ModelKind::cscn))
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

  index_t modalities() const { return mmfnet ? mmfnet->modalities() : maml ? maml->modalities() : cscn->bunet().in_channels(); }
  // Output channels: 1 (sigmoid foreground probability) for MMFNet, K (softmax) for MAML, 1 (P_final) for CSCN.
  index_t output_channels() const { return mmfnet ? 1 : maml ? maml->classes() : 1; }
  // Label values the data set must have: 0..classes-1.
  index_t classes() const { return mmfnet ? 2 : maml ? maml->classes() : cscn->bunet().classes(); }
  index_t size_multiple() const { return mmfnet ? mmfnet->size_multiple() : maml ? maml->size_multiple() : 4; }
  int levels() const { return mmfnet ? static_cast<int>(mmfnet->levels()) : maml ? static_cast<int>(maml->num_pool()) : 2; }
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
