// mmnet/layers/batchnorm3d.hpp: BatchNorm3d (torch.nn.BatchNorm3d) over N x C x D x H x W.
//
// Train mode (is_training()) normalises with the batch statistics over N, D, H, W (biased variance) and
// updates running_mean / running_var with the unbiased variance; eval mode uses the running statistics.
// Without track_running_stats there are no buffers and batch statistics are used in both modes, as PyTorch.
#pragma once
#include <cmath>
#include <optional>
#include <string>

#include "../backend/common/batchnorm.hpp"
#include "../core/module.hpp"

namespace mmnet::nn {

// Options of BatchNorm3d, with PyTorch's defaults:
//   BatchNorm3dOptions(16).eps(1e-5).momentum(0.1).affine(true).track_running_stats(true)
struct BatchNorm3dOptions {
  explicit BatchNorm3dOptions(index_t num_features) : num_features_(num_features) {}

  // Number of channels C.
  BatchNorm3dOptions& num_features(index_t v) { num_features_ = v; return *this; }
  // Added to the variance before the square root.
  BatchNorm3dOptions& eps(double v) { eps_ = v; return *this; }
  // Weight of the new batch statistic in the running average; std::nullopt = cumulative moving average
  // (PyTorch's momentum=None: factor 1 / num_batches_tracked).
  BatchNorm3dOptions& momentum(std::optional<double> v) { momentum_ = v; return *this; }
  // Learnable per-channel weight (init 1) and bias (init 0).
  BatchNorm3dOptions& affine(bool v) { affine_ = v; return *this; }
  // Keep running_mean, running_var and num_batches_tracked, and use them in eval mode.
  BatchNorm3dOptions& track_running_stats(bool v) { track_running_stats_ = v; return *this; }

  index_t num_features() const { return num_features_; }
  double eps() const { return eps_; }
  std::optional<double> momentum() const { return momentum_; }
  bool affine() const { return affine_; }
  bool track_running_stats() const { return track_running_stats_; }

 private:
  index_t num_features_;
  double eps_ = 1e-5;
  std::optional<double> momentum_ = 0.1;
  bool affine_ = true;
  bool track_running_stats_ = true;
};

template <class T, class Backend>
class BatchNorm3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  Parameter<T, Backend> weight;  // (C), only with affine
  Parameter<T, Backend> bias;    // (C), only with affine
  Buffer<T, Backend> running_mean;  // (C), only with track_running_stats
  Buffer<T, Backend> running_var;   // (C), only with track_running_stats
  Counter num_batches_tracked;      // only with track_running_stats

  explicit BatchNorm3d(const BatchNorm3dOptions& options) : options_(options) { reset(); }

  // Validates the options and (re)allocates parameters and buffers with their initial values.
  void reset() {
    const auto& o = options_;
    if (o.num_features() < 1) fail<value_error>(name, "num_features", ">= 1", o.num_features());
    if (!(o.eps() >= 0) || !std::isfinite(o.eps())) fail<value_error>(name, "eps", "a finite value >= 0", o.eps());
    if (o.momentum() && !std::isfinite(*o.momentum()))
      fail<value_error>(name, "momentum", "a finite value or std::nullopt", *o.momentum());
    const Shape c{o.num_features()};
    weight = {};
    bias = {};
    running_mean = {};
    running_var = {};
    if (o.affine()) {
      weight.reset(c);
      bias.reset(c);
    }
    if (o.track_running_stats()) {
      running_mean.value = tensor(c);
      running_var.value = tensor(c);
    }
    reset_parameters();
  }
  // running_mean 0, running_var 1, num_batches_tracked 0.
  void reset_running_stats() {
    if (!options_.track_running_stats()) return;
    running_mean.value.zero_();
    running_var.value.fill_(T(1));
    num_batches_tracked.value = 0;
  }
  // Running statistics reset; weight 1, bias 0.
  void reset_parameters() {
    reset_running_stats();
    if (!options_.affine()) return;
    weight.value.fill_(T(1));
    bias.value.zero_();
  }

  void members(Members<T, Backend>& m) override {
    m("weight", weight)("bias", bias)("running_mean", running_mean)("running_var", running_var);
    if (options_.track_running_stats()) m("num_batches_tracked", num_batches_tracked);
  }

  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    const index_t channels = options_.num_features();
    if (x.size(1) != channels) fail<shape_error>(name, "input channels", channels, x.size(1), "input shape " + x.shape().str());
    if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor", "shape " + x.shape().str());
    const backend::BatchNormProblem p{x.size(0), channels, x.size(2) * x.size(3) * x.size(4)};
    batch_stats_ = this->is_training() || !options_.track_running_stats();
    if (batch_stats_ && p.per_channel() < 2)
      fail<shape_error>(name, "values per channel when training", "more than 1", p.per_channel(),
                        "input shape " + x.shape().str());

    mean_ = Tensor<double, Backend>(Shape{channels});
    invstd_ = Tensor<double, Backend>(Shape{channels});
    if (batch_stats_) {
      T* rm = nullptr;
      T* rv = nullptr;
      double factor = 0;
      if (this->is_training() && options_.track_running_stats()) {
        num_batches_tracked.value += 1;
        factor = options_.momentum() ? *options_.momentum() : 1.0 / static_cast<double>(num_batches_tracked.value);
        rm = running_mean.value.data();
        rv = running_var.value.data();
      }
      backend::batch_norm_stats(Backend{}, p, x.data(), options_.eps(), mean_.data(), invstd_.data(), rm, rv, factor);
    } else {
      backend::batch_norm_running_stats(Backend{}, channels, running_mean.value.data(), running_var.value.data(),
                                        options_.eps(), mean_.data(), invstd_.data());
    }
    tensor y(x.shape());
    backend::batch_norm_apply(Backend{}, p, x.data(), mean_.data(), invstd_.data(), affine_ptr(weight),
                              affine_ptr(bias), y.data());
    x_ = x;
    return y;
  }

  // dL/dx; adds dL/dweight = sum(dy * xhat) and dL/dbias = sum(dy) per channel into the parameters' grads.
  tensor backward(const tensor& dy) {
    if (!x_.defined()) fail<value_error>(std::string(name) + "::backward", "saved input", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, x_.shape());
    const index_t channels = options_.num_features();
    const backend::BatchNormProblem p{x_.size(0), channels, x_.size(2) * x_.size(3) * x_.size(4)};
    T* gw = options_.affine() && weight.wants_grad() ? weight.grad.data() : nullptr;
    T* gb = options_.affine() && bias.wants_grad() ? bias.grad.data() : nullptr;
    Tensor<double, Backend> sum_dy, sum_dy_xhat;
    if (batch_stats_ || gw != nullptr || gb != nullptr) {
      sum_dy = Tensor<double, Backend>(Shape{channels});
      sum_dy_xhat = Tensor<double, Backend>(Shape{channels});
      backend::batch_norm_backward_reduce(Backend{}, p, x_.data(), dy.data(), mean_.data(), invstd_.data(),
                                          sum_dy.data(), sum_dy_xhat.data(), gw, gb);
    }
    tensor dx(dy.shape());
    backend::batch_norm_backward_input(Backend{}, p, x_.data(), dy.data(), mean_.data(), invstd_.data(),
                                       affine_ptr(weight), sum_dy.data(), sum_dy_xhat.data(), batch_stats_,
                                       dx.data());
    if (release_after_backward_) x_ = tensor();
    return dx;
  }

  // Opt-in memory saving for one backward per forward (training steps): backward() drops the saved input,
  // so its storage is freed as soon as nothing else holds it; a second backward() then throws value_error.
  // Default false (backward may be called repeatedly, e.g. to accumulate gradients).
  void release_after_backward(bool v) { release_after_backward_ = v; }
  bool release_after_backward() const { return release_after_backward_; }

  const BatchNorm3dOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::BatchNorm3d";
  const T* affine_ptr(const Parameter<T, Backend>& p) const { return options_.affine() ? p.value.data() : nullptr; }

  BatchNorm3dOptions options_;
  tensor x_;                        // the last input
  Tensor<double, Backend> mean_;    // the statistics the last forward normalised with, per channel
  Tensor<double, Backend> invstd_;
  bool batch_stats_ = true;         // whether they were batch statistics (then backward has the mean/var terms)
  bool release_after_backward_ = false;
};

}  // namespace mmnet::nn
