// mmnet/init/init.hpp: parameter initialisers with torch.nn.init's formulas (torch 1.13), drawn from a seeded
// mmnet::Generator. (The numbers differ from PyTorch's own RNG; the distributions and bounds are the same.)
//
//   fan_in / fan_out       torch.nn.init._calculate_fan_in_and_fan_out: dim 1 / dim 0 times the receptive field
//                          (prod of dims 2..). Conv3d weight (out, in, k...): fan_in = in k^3. ConvTranspose3d
//                          weight (in, out, k...): fan_in = out k^3 -- PyTorch's documented quirk, kept.
//                          Linear (out, in): fan_in = in. Rank < 2 throws mmnet::value_error, as torch.
//   calculate_gain         linear, conv*, conv_transpose*, sigmoid: 1; tanh: 5/3; relu: sqrt(2);
//                          leaky_relu: sqrt(2 / (1 + slope^2)), slope default 0.01; selu: 3/4.
//   kaiming_uniform_/normal_(w, a = 0, mode = fan_in, nonlinearity = "leaky_relu"):
//                          std = calculate_gain(nonlinearity, a) / sqrt(fan); uniform bound sqrt(3) std.
//                          He normal (nnU-Net's InitWeights_He(1e-2)): kaiming_normal_(w, 1e-2).
//   xavier_uniform_/normal_(w, gain = 1): std = gain sqrt(2 / (fan_in + fan_out)); uniform bound sqrt(3) std.
//   uniform_, normal_, constant_, zeros_, ones_; pytorch_default_ (Conv/Linear reset_parameters()).
// A tensor with no elements is left alone, as torch does. Values are drawn in double on the host and rounded
// to T, so float and double tensors from the same seed agree, and every backend gets the same numbers.
#pragma once
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/module.hpp"
#include "../core/random.hpp"

namespace mmnet::init {

// Which fan kaiming_* divides by: fan_in keeps the forward variance, fan_out the backward one.
enum class FanMode { fan_in, fan_out };

// (fan_in, fan_out) as torch.nn.init._calculate_fan_in_and_fan_out.
inline std::pair<index_t, index_t> fans(const Shape& s) {
  if (s.rank() < 2)
    fail<value_error>("mmnet::init", "weight rank for fan in and fan out", ">= 2", s.rank(), "shape " + s.str());
  index_t receptive = 1;
  for (int i = 2; i < s.rank(); ++i) receptive *= s[i];
  return {s[1] * receptive, s[0] * receptive};
}
inline index_t fan_in(const Shape& s) { return fans(s).first; }
inline index_t fan_out(const Shape& s) { return fans(s).second; }

// torch.nn.init.calculate_gain. param is leaky_relu's negative slope (default 0.01); other names ignore it.
inline double calculate_gain(const std::string& nonlinearity, std::optional<double> param = std::nullopt) {
  static const char* const linear[] = {"linear",           "conv1d",           "conv2d",          "conv3d",
                                       "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid"};
  for (const char* n : linear)
    if (nonlinearity == n) return 1.0;
  if (nonlinearity == "tanh") return 5.0 / 3;
  if (nonlinearity == "relu") return std::sqrt(2.0);
  if (nonlinearity == "leaky_relu") {
    const double slope = param.value_or(0.01);
    if (!std::isfinite(slope)) fail<value_error>("mmnet::init::calculate_gain", "negative slope", "a finite number", slope);
    return std::sqrt(2.0 / (1 + slope * slope));
  }
  if (nonlinearity == "selu") return 3.0 / 4;
  fail<value_error>("mmnet::init::calculate_gain", "nonlinearity",
                    "linear, conv1d/2d/3d, conv_transpose1d/2d/3d, sigmoid, tanh, relu, leaky_relu or selu",
                    "'" + nonlinearity + "'");
}

template <class T, class B>
void uniform_(Tensor<T, B>& t, double lo, double hi, Generator& g = default_generator()) {
  if (t.numel() == 0) return;
  std::vector<T> v(static_cast<std::size_t>(t.numel()));
  for (auto& x : v) x = static_cast<T>(g.uniform(lo, hi));
  t.assign(v);
}

template <class T, class B>
void normal_(Tensor<T, B>& t, double mean, double stddev, Generator& g = default_generator()) {
  if (t.numel() == 0) return;
  std::vector<T> v(static_cast<std::size_t>(t.numel()));
  for (auto& x : v) x = static_cast<T>(g.normal(mean, stddev));
  t.assign(v);
}

template <class T, class B>
void constant_(Tensor<T, B>& t, double value) {
  if (t.numel() > 0) t.fill_(static_cast<T>(value));
}
template <class T, class B>
void zeros_(Tensor<T, B>& t) {
  constant_(t, 0.0);
}
template <class T, class B>
void ones_(Tensor<T, B>& t) {
  constant_(t, 1.0);
}

namespace detail {
// torch.nn.init's kaiming standard deviation, gain / sqrt(fan).
inline double kaiming_std(const Shape& s, double a, FanMode mode, const std::string& nonlinearity) {
  const auto [fi, fo] = fans(s);
  const double fan = static_cast<double>(mode == FanMode::fan_in ? fi : fo);
  return calculate_gain(nonlinearity, a) / std::sqrt(fan);
}
inline double xavier_std(const Shape& s, double gain) {
  const auto [fi, fo] = fans(s);
  return gain * std::sqrt(2.0 / static_cast<double>(fi + fo));
}
}  // namespace detail

// U(-bound, bound), bound = sqrt(3) gain / sqrt(fan) (He uniform for a = 0 and nonlinearity "relu").
template <class T, class B>
void kaiming_uniform_(Tensor<T, B>& w, double a = 0, FanMode mode = FanMode::fan_in,
                      const std::string& nonlinearity = "leaky_relu", Generator& g = default_generator()) {
  if (w.numel() == 0) return;
  const double bound = std::sqrt(3.0) * detail::kaiming_std(w.shape(), a, mode, nonlinearity);
  uniform_(w, -bound, bound, g);
}
// kaiming_uniform_(w, a) with fan_in and leaky_relu, from generator g.
template <class T, class B>
void kaiming_uniform_(Tensor<T, B>& w, double a, Generator& g) {
  kaiming_uniform_(w, a, FanMode::fan_in, "leaky_relu", g);
}

// N(0, std^2), std = gain / sqrt(fan).
template <class T, class B>
void kaiming_normal_(Tensor<T, B>& w, double a = 0, FanMode mode = FanMode::fan_in,
                     const std::string& nonlinearity = "leaky_relu", Generator& g = default_generator()) {
  if (w.numel() == 0) return;
  normal_(w, 0.0, detail::kaiming_std(w.shape(), a, mode, nonlinearity), g);
}
template <class T, class B>
void kaiming_normal_(Tensor<T, B>& w, double a, Generator& g) {
  kaiming_normal_(w, a, FanMode::fan_in, "leaky_relu", g);
}

// U(-bound, bound), bound = gain sqrt(6 / (fan_in + fan_out)) (Glorot uniform).
template <class T, class B>
void xavier_uniform_(Tensor<T, B>& w, double gain = 1.0, Generator& g = default_generator()) {
  if (w.numel() == 0) return;
  const double bound = std::sqrt(3.0) * detail::xavier_std(w.shape(), gain);
  uniform_(w, -bound, bound, g);
}

// N(0, std^2), std = gain sqrt(2 / (fan_in + fan_out)) (Glorot normal).
template <class T, class B>
void xavier_normal_(Tensor<T, B>& w, double gain = 1.0, Generator& g = default_generator()) {
  if (w.numel() == 0) return;
  normal_(w, 0.0, detail::xavier_std(w.shape(), gain), g);
}

// PyTorch's default for Conv*d, ConvTranspose*d and Linear: kaiming_uniform_(a = sqrt(5)) on the weight, bias
// uniform in +-1/sqrt(fan_in).
template <class T, class B>
void pytorch_default_(Parameter<T, B>& weight, Parameter<T, B>* bias, Generator& g = default_generator()) {
  kaiming_uniform_(weight.value, std::sqrt(5.0), g);
  if (bias && bias->defined()) {
    const index_t fi = fan_in(weight.value.shape());
    const double bound = fi > 0 ? 1.0 / std::sqrt(static_cast<double>(fi)) : 0.0;
    uniform_(bias->value, -bound, bound, g);
  }
}

// The same for a layer without bias.
template <class T, class B>
void pytorch_default_(Parameter<T, B>& weight, Generator& g = default_generator()) {
  pytorch_default_(weight, static_cast<Parameter<T, B>*>(nullptr), g);
}

}  // namespace mmnet::init
