// apps/mmnet/cli_common.hpp: what the `mmnet` subcommands share: the usage-error type, the MMFNet presets by
// name, and the parsers of "DxHxW" sizes and per-axis triples.
#pragma once
#include <cstddef>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <mmnet/mmfnet.hpp>

namespace mmnet_cli {

using mmnet::index_t;

constexpr int exit_error = 2;

// A usage or input problem: reported as one line, exit code 2.
struct cli_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline const std::map<std::string, mmnet::MMFNetOptions (*)()>& mmfnet_presets() {
  static const std::map<std::string, mmnet::MMFNetOptions (*)()> presets{
      {"paper", &mmnet::MMFNetOptions::paper},
      {"tiny", &mmnet::MMFNetOptions::tiny},
      {"small", &mmnet::MMFNetOptions::small},
      {"single-modality", &mmnet::MMFNetOptions::single_modality},
      {"base-mmfnet", &mmnet::MMFNetOptions::base_mmfnet},
      {"multi-mlp", &mmnet::MMFNetOptions::multi_mlp},
      {"std-channel-only", &mmnet::MMFNetOptions::std_channel_only},
      {"std-spatial-only", &mmnet::MMFNetOptions::std_spatial_only},
      {"two-modality", &mmnet::MMFNetOptions::two_modality},
      {"merge-baseline", &mmnet::MMFNetOptions::merge_baseline},
      {"input-level", &mmnet::MMFNetOptions::input_level},
  };
  return presets;
}

inline std::vector<std::string> preset_names() {
  std::vector<std::string> n;
  for (auto& p : mmfnet_presets()) n.push_back(p.first);
  return n;
}

inline mmnet::MMFNetOptions options_for(const std::string& model, const std::string& config) {
  if (model != "mmfnet") throw cli_error("unknown model '" + model + "' (known: mmfnet)");
  auto it = mmfnet_presets().find(config);
  if (it == mmfnet_presets().end()) throw cli_error("unknown mmfnet config '" + config + "'");
  return it->second();
}

inline std::string shape_str(const std::vector<index_t>& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? " x " : "") + std::to_string(s[i]);
  return out;
}

// Splits text at any of seps into integers >= min_value; what names the option in messages.
inline std::vector<index_t> parse_ints(const std::string& text, const char* seps, long long min_value,
                                       const std::string& what, const std::string& form) {
  std::vector<index_t> v;
  std::size_t start = 0;
  while (true) {
    const std::size_t sep = text.find_first_of(seps, start);
    const std::string part = text.substr(start, sep == std::string::npos ? std::string::npos : sep - start);
    std::size_t used = 0;
    long long x = min_value - 1;
    try {
      x = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (part.empty() || used != part.size() || x < min_value)
      throw cli_error(what + ": expected " + form + " with integers >= " + std::to_string(min_value) + ", got '" + text + "'");
    v.push_back(static_cast<index_t>(x));
    if (sep == std::string::npos) break;
    start = sep + 1;
  }
  return v;
}

// "DxHxW" -> {D, H, W}, each a positive integer.
inline std::vector<index_t> parse_shape(const std::string& text, const std::string& what = "--shape") {
  const auto dims = parse_ints(text, "xX", 1, what, "DxHxW");
  if (dims.size() != 3)
    throw cli_error(what + ": expected 3 sizes DxHxW, got " + std::to_string(dims.size()) + " in '" + text + "'");
  return dims;
}

// "k" (all three axes) or "kD,kH,kW" (also "kDxkHxkW") -> {D, H, W}, each >= min_value.
inline std::vector<index_t> parse_triple(const std::string& text, const std::string& what, long long min_value) {
  auto v = parse_ints(text, ",xX", min_value, what, "k or kD,kH,kW");
  if (v.size() == 1) v = {v[0], v[0], v[0]};
  if (v.size() != 3)
    throw cli_error(what + ": expected one value or three (D,H,W), got " + std::to_string(v.size()) + " in '" + text + "'");
  return v;
}

}  // namespace mmnet_cli
