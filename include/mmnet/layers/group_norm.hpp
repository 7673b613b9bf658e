// mmnet/layers/group_norm.hpp: GroupNorm (torch.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True))
// over N x C x * (rank 2-5; N x C x D x H x W in the networks).
//
// The C channels are split into G groups of C/G consecutive channels; each (sample, group) is normalised with its
// own mean and biased variance over its (C/G) * D*H*W values, then scaled and shifted per channel. There are no
// running statistics, so train and eval mode behave the same, as in PyTorch. One-channel groups (G == C) are
// InstanceNorm with per-channel affine parameters.
#pragma once
#include <cmath>
#include <string>

#include "../backend/common/group_stats.hpp"
#include "group_norm_pass.hpp"
#include "../core/module.hpp"

namespace mmnet::nn {

// Options of GroupNorm, with PyTorch's defaults:
//   GroupNormOptions(8, 32).eps(1e-5).affine(true)
struct GroupNormOptions {
  GroupNormOptions(index_t num_groups, index_t num_channels) : num_groups_(num_groups), num_channels_(num_channels) {}

  // Number of groups G; must divide num_channels.
  GroupNormOptions& num_groups(index_t v) { num_groups_ = v; return *this; }
  // Number of channels C.
  GroupNormOptions& num_channels(index_t v) { num_channels_ = v; return *this; }
  // Added to the variance before the square root.
  GroupNormOptions& eps(double v) { eps_ = v; return *this; }
  // Learnable per-channel weight (init 1) and bias (init 0).
  GroupNormOptions& affine(bool v) { affine_ = v; return *this; }

  index_t num_groups() const { return num_groups_; }
  index_t num_channels() const { return num_channels_; }
  double eps() const { return eps_; }
  bool affine() const { return affine_; }

 private:
  index_t num_groups_;
  index_t num_channels_;
  double eps_ = 1e-5;
  bool affine_ = true;
};

template <class T, class Backend>
class GroupNorm : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  Parameter<T, Backend> weight;  // (C), only with affine
  Parameter<T, Backend> bias;    // (C), only with affine

  explicit GroupNorm(const GroupNormOptions& options) : options_(options) { reset(); }

  // Validates the options and (re)allocates the parameters with their initial values.
  void reset() {
    const auto& o = options_;
    if (o.num_groups() < 1) fail<value_error>(name, "num_groups", ">= 1", o.num_groups());
    if (o.num_channels() < 1) fail<value_error>(name, "num_channels", ">= 1", o.num_channels());
    if (o.num_channels() % o.num_groups() != 0)
      fail<value_error>(name, "num_channels " + std::to_string(o.num_channels()) + " divisible by num_groups",
                        "a divisor of " + std::to_string(o.num_channels()), o.num_groups());
    if (!(o.eps() >= 0) || !std::isfinite(o.eps())) fail<value_error>(name, "eps", "a finite value >= 0", o.eps());
    weight = {};
    bias = {};
    if (o.affine()) {
      weight.reset(Shape{o.num_channels()});
      bias.reset(Shape{o.num_channels()});
    }
    reset_parameters();
  }
  // weight 1, bias 0.
  void reset_parameters() {
    if (!options_.affine()) return;
    weight.value.fill_(T(1));
    bias.value.zero_();
  }

  void members(Members<T, Backend>& m) override { m("weight", weight)("bias", bias); }

  tensor forward(const tensor& x) {
    if (!x.defined()) fail<shape_error>(name, "input", "a tensor of rank 2 to 5 (N, C, ...)", "an empty tensor");
    if (x.rank() < 2) fail<shape_error>(name, "input rank", "2 to 5 (N, C, ...)", x.rank(), "shape " + x.shape().str());
    if (x.size(1) != options_.num_channels())
      fail<shape_error>(name, "input channels", options_.num_channels(), x.size(1), "input shape " + x.shape().str());
    if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor", "shape " + x.shape().str());
    const backend::GroupNormProblem p = problem(x.shape());
    // PyTorch's check (F.group_norm): more than one value per group summed over the batch.
    if (p.n * p.group_size() < 2)
      fail<shape_error>(name, "values per group over the batch", "more than 1", p.n * p.group_size(),
                        "input shape " + x.shape().str());
    return pass_.forward(p, x, options_.eps(), affine_ptr(weight), affine_ptr(bias));
  }

  // dL/dx; adds dL/dweight = sum(dy * xhat) and dL/dbias = sum(dy) per channel into the parameters' grads.
  tensor backward(const tensor& dy) {
    T* gw = options_.affine() && weight.wants_grad() ? weight.grad.data() : nullptr;
    T* gb = options_.affine() && bias.wants_grad() ? bias.grad.data() : nullptr;
    return pass_.backward(name, dy, affine_ptr(weight), gw, gb);
  }

  const GroupNormOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::GroupNorm";
  const T* affine_ptr(const Parameter<T, Backend>& p) const { return options_.affine() ? p.value.data() : nullptr; }
  backend::GroupNormProblem problem(const Shape& s) const {
    index_t spatial = 1;
    for (int d = 2; d < s.rank(); ++d) spatial *= s[d];
    return {s[0], s[1], options_.num_groups(), spatial};
  }

  GroupNormOptions options_;
  detail::GroupNormPass<T, Backend> pass_;
};

}  // namespace mmnet::nn
