// mmnet/init/init.hpp: parameter initialisers with PyTorch's formulas, drawn from a seeded mmnet::Generator.
// (The numbers differ from PyTorch's own RNG; the distributions and bounds are the same.)
#pragma once
#include <cmath>
#include <vector>

#include "../core/module.hpp"
#include "../core/random.hpp"

namespace mmnet::init {

// fan_in as torch.nn.init._calculate_fan_in_and_fan_out: dim 1 times the receptive field. For a
// ConvTranspose weight (in, out, k...) that is out * prod(k), PyTorch's (documented) quirk.
inline index_t fan_in(const Shape& s) {
  if (s.rank() < 2) fail<value_error>("mmnet::init::fan_in", "weight rank", ">= 2", s.rank());
  index_t receptive = 1;
  for (int i = 2; i < s.rank(); ++i) receptive *= s[i];
  return s[1] * receptive;
}

template <class T, class B>
void uniform_(Tensor<T, B>& t, double lo, double hi, Generator& g = default_generator()) {
  std::vector<T> v(static_cast<std::size_t>(t.numel()));
  for (auto& x : v) x = static_cast<T>(g.uniform(lo, hi));
  t.assign(v);
}

template <class T, class B>
void normal_(Tensor<T, B>& t, double mean, double stddev, Generator& g = default_generator()) {
  std::vector<T> v(static_cast<std::size_t>(t.numel()));
  for (auto& x : v) x = static_cast<T>(g.normal(mean, stddev));
  t.assign(v);
}

template <class T, class B>
void constant_(Tensor<T, B>& t, double value) {
  t.fill_(static_cast<T>(value));
}

// kaiming_uniform_(w, a): bound = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)).
template <class T, class B>
void kaiming_uniform_(Tensor<T, B>& w, double a, Generator& g = default_generator()) {
  const double gain = std::sqrt(2.0 / (1.0 + a * a));
  const double bound = gain * std::sqrt(3.0 / static_cast<double>(fan_in(w.shape())));
  uniform_(w, -bound, bound, g);
}

// PyTorch's default for Conv*d and Linear: kaiming_uniform_(a = sqrt(5)) on the weight, bias uniform in
// +-1/sqrt(fan_in).
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
