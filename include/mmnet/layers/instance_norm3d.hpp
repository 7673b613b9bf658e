// mmnet/layers/instance_norm3d.hpp: InstanceNorm3d (torch.nn.InstanceNorm3d(C, affine=True)) over N x C x D x H x W.
//
// Each (sample, channel) is normalised with its own mean and biased variance over its D*H*W values, in train and
// eval mode alike (track_running_stats=False, PyTorch's default and what MAML/HMRNet use; running statistics are
// not implemented). As in PyTorch, a volume of a single voxel is rejected (its variance is undefined).
// Default affine(true) follows nnU-Net, MAML and HMRNet, NOT torch.nn.InstanceNorm3d's affine=False: write
// InstanceNorm3dOptions(c).affine(false) for PyTorch's plain InstanceNorm3d(c).
#pragma once
#include <cmath>
#include <string>

#include "../backend/common/group_stats.hpp"
#include "group_norm_pass.hpp"
#include "../core/module.hpp"

namespace mmnet::nn {

// Options of InstanceNorm3d; defaults as nnU-Net / MAML / HMRNet use it (PyTorch's own default is affine=False):
//   InstanceNorm3dOptions(16).eps(1e-5).affine(true)
struct InstanceNorm3dOptions {
  explicit InstanceNorm3dOptions(index_t num_features) : num_features_(num_features) {}

  // Number of channels C.
  InstanceNorm3dOptions& num_features(index_t v) { num_features_ = v; return *this; }
  // Added to the variance before the square root.
  InstanceNorm3dOptions& eps(double v) { eps_ = v; return *this; }
  // Learnable per-channel weight (init 1) and bias (init 0), named "weight" and "bias" as in PyTorch.
  InstanceNorm3dOptions& affine(bool v) { affine_ = v; return *this; }

  index_t num_features() const { return num_features_; }
  double eps() const { return eps_; }
  bool affine() const { return affine_; }

 private:
  index_t num_features_;
  double eps_ = 1e-5;
  bool affine_ = true;
};

template <class T, class Backend>
class InstanceNorm3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  Parameter<T, Backend> weight;  // (C), only with affine
  Parameter<T, Backend> bias;    // (C), only with affine

  explicit InstanceNorm3d(const InstanceNorm3dOptions& options) : options_(options) { reset(); }

  // Validates the options and (re)allocates the parameters with their initial values.
  void reset() {
    const auto& o = options_;
    if (o.num_features() < 1) fail<value_error>(name, "num_features", ">= 1", o.num_features());
    if (!(o.eps() >= 0) || !std::isfinite(o.eps())) fail<value_error>(name, "eps", "a finite value >= 0", o.eps());
    weight = {};
    bias = {};
    if (o.affine()) {
      weight.reset(Shape{o.num_features()});
      bias.reset(Shape{o.num_features()});
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
    check_rank(name, "input", x, 5);
    const index_t channels = options_.num_features();
    if (x.size(1) != channels) fail<shape_error>(name, "input channels", channels, x.size(1), "input shape " + x.shape().str());
    if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor", "shape " + x.shape().str());
    const backend::GroupNormProblem p = {x.size(0), channels, channels, x.size(2) * x.size(3) * x.size(4)};
    // PyTorch raises the same way (F.instance_norm: "Expected more than 1 spatial element").
    if (p.s < 2)
      fail<shape_error>(name, "spatial elements per channel (D*H*W)", "more than 1", p.s, "input shape " + x.shape().str());
    return pass_.forward(p, x, options_.eps(), affine_ptr(weight), affine_ptr(bias));
  }

  // dL/dx; adds dL/dweight = sum(dy * xhat) and dL/dbias = sum(dy) per channel (over the batch and the volume)
  // into the parameters' grads.
  tensor backward(const tensor& dy) {
    T* gw = options_.affine() && weight.wants_grad() ? weight.grad.data() : nullptr;
    T* gb = options_.affine() && bias.wants_grad() ? bias.grad.data() : nullptr;
    return pass_.backward(name, dy, affine_ptr(weight), gw, gb);
  }

  const InstanceNorm3dOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::InstanceNorm3d";
  const T* affine_ptr(const Parameter<T, Backend>& p) const { return options_.affine() ? p.value.data() : nullptr; }

  InstanceNorm3dOptions options_;
  detail::GroupNormPass<T, Backend> pass_;
};

}  // namespace mmnet::nn
