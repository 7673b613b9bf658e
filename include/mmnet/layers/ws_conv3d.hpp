// mmnet/layers/ws_conv3d.hpp: WSConv3d, a Conv3d with weight standardisation, as ConResNet's `Conv3d` class
// (jianpengz/ConResNet, models/ConResNet.py; torch.nn.Conv3d whose forward standardises self.weight).
//
//   nn::WSConv3d<float, mmnet::cpu> conv(nn::Conv3dOptions(32, 64, 3).stride(2).padding(1).bias(false));
//
// Every forward standardises the raw weight W (out, in, kD, kH, kW) per output channel o, over its
// n = in * kD * kH * kW values, exactly as the official code (not the WS paper's std + 1e-5):
//   mu_o = mean(W[o]),  s_o = sqrt(sum (W[o] - mu_o)^2 / (n - 1) + 1e-12)   (UNBIASED variance, eps inside)
//   W^[o] = (W[o] - mu_o) / s_o,  y = conv3d(x, W^) + b
// and backward differentiates through it, with g = dL/dW^:
//   dL/dW[o] = (g - mean(g) - W^ * sum(g * W^) / (n - 1)) / s_o.
// Options, parameter names ("weight", "bias"), PyTorch default init and the convolution kernels are nn::Conv3d's,
// bias included: Conv3dOptions defaults to bias(true) as torch.nn.Conv3d; ConResNet's convolutions pass
// bias(false). n must be >= 2 (the unbiased variance of a single value is undefined; PyTorch gives NaN).
#pragma once
#include <cmath>
#include <string>

#include "../backend/common/conv3d.hpp"
#include "../backend/cpu/conv3d.hpp"
#include "../core/expanding_array.hpp"
#include "../core/module.hpp"
#include "../core/random.hpp"
#include "../init/init.hpp"
#include "conv3d.hpp"

namespace mmnet {
namespace backend {

// Per output channel o of a weight (K, n): mean[o] and s[o] = sqrt(unbiased var + eps), in double.
template <class Backend, class T>
void weight_standardise_stats(Backend, index_t K, index_t n, double eps, const T* w, double* mean, double* s) {
  backend::parallel_for(Backend{}, K, MMNET_KERNEL(index_t o) {
    const T* wo = w + o * n;
    double sum = 0;
    for (index_t j = 0; j < n; ++j) sum += static_cast<double>(wo[j]);
    const double mu = sum / static_cast<double>(n);
    double ss = 0;
    for (index_t j = 0; j < n; ++j) {
      const double c = static_cast<double>(wo[j]) - mu;
      ss += c * c;
    }
    mean[o] = mu;
    s[o] = std::sqrt(ss / static_cast<double>(n - 1) + eps);
  });
}

// w_hat[o, j] = (w[o, j] - mean[o]) / s[o]. Assigns w_hat.
template <class Backend, class T>
void weight_standardise(Backend, index_t K, index_t n, const T* w, const double* mean, const double* s, T* w_hat) {
  backend::parallel_for(Backend{}, K * n, MMNET_KERNEL(index_t i) {
    const index_t o = i / n;
    w_hat[i] = static_cast<T>((static_cast<double>(w[i]) - mean[o]) / s[o]);
  });
}

// dw[o, j] += (g - mean(g[o]) - w^ * sum(g[o] * w^[o]) / (n - 1)) / s[o], with w^ recomputed in double from w.
// One index per output channel for the two sums, then one per element.
template <class Backend, class T>
void weight_standardise_backward(Backend, index_t K, index_t n, const T* w, const double* mean, const double* s,
                                 const T* g, double* g_mean, double* g_proj, T* dw) {
  backend::parallel_for(Backend{}, K, MMNET_KERNEL(index_t o) {
    const T* wo = w + o * n;
    const T* go = g + o * n;
    double sg = 0, sgw = 0;
    for (index_t j = 0; j < n; ++j) {
      const double wh = (static_cast<double>(wo[j]) - mean[o]) / s[o];
      sg += static_cast<double>(go[j]);
      sgw += static_cast<double>(go[j]) * wh;
    }
    g_mean[o] = sg / static_cast<double>(n);
    g_proj[o] = sgw / static_cast<double>(n - 1);
  });
  backend::parallel_for(Backend{}, K * n, MMNET_KERNEL(index_t i) {
    const index_t o = i / n;
    const double wh = (static_cast<double>(w[i]) - mean[o]) / s[o];
    dw[i] += static_cast<T>((static_cast<double>(g[i]) - g_mean[o] - wh * g_proj[o]) / s[o]);
  });
}

}  // namespace backend

namespace nn {

template <class T, class Backend>
class WSConv3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  using dtensor = Tensor<double, Backend>;
  static constexpr const char* name = "mmnet::nn::WSConv3d";
  // Added to the unbiased variance inside the square root (the official code's constant).
  static constexpr double eps = 1e-12;

  Parameter<T, Backend> weight;  // (out, in, kD, kH, kW), the raw (unstandardised) weight
  Parameter<T, Backend> bias;    // (out), absent with bias(false)

  explicit WSConv3d(const Conv3dOptions& options, Generator& generator = default_generator()) : options_(options) {
    check_options();
    const auto& k = options_.kernel_size();
    weight.reset({options_.out_channels(), options_.in_channels(), k.d, k.h, k.w});
    if (options_.bias()) bias.reset({options_.out_channels()});
    reset_parameters(generator);
  }

  void members(Members<T, Backend>& m) override { m("weight", weight)("bias", bias); }

  // PyTorch's default for nn.Conv3d (the official class subclasses it): kaiming_uniform_(a = sqrt(5)) weight,
  // bias uniform in +-1/sqrt(in * kD * kH * kW).
  void reset_parameters(Generator& generator = default_generator()) {
    init::pytorch_default_(weight, &bias, generator);
  }

  const Conv3dOptions& options() const { return options_; }

  // The standardised weight W^ of the current raw weight (what forward convolves with).
  tensor standardised_weight() const {
    dtensor mean, s;
    tensor w_hat;
    standardise(mean, s, w_hat);
    return w_hat;
  }

  Conv3dProblem problem(const Shape& input_shape) const {
    const auto &k = options_.kernel_size(), &s = options_.stride(), &p = options_.padding(), &d = options_.dilation();
    Conv3dProblem pr;
    pr.N = input_shape[0];
    pr.C = input_shape[1];
    pr.D = input_shape[2];
    pr.H = input_shape[3];
    pr.W = input_shape[4];
    pr.K = options_.out_channels();
    pr.kd = k.d, pr.kh = k.h, pr.kw = k.w;
    pr.sd = s.d, pr.sh = s.h, pr.sw = s.w;
    pr.pd = p.d, pr.ph = p.h, pr.pw = p.w;
    pr.dd = d.d, pr.dh = d.h, pr.dw = d.w;
    return pr.compute_output();
  }

  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    if (x.size(1) != options_.in_channels())
      fail<shape_error>(name, "input channels", options_.in_channels(), x.size(1), "input shape " + x.shape().str());
    const Conv3dProblem pr = problem(x.shape());
    if (!pr.valid_output())
      fail<shape_error>(name, "output size", "every extent > 0",
                        "(" + std::to_string(pr.OD) + ", " + std::to_string(pr.OH) + ", " + std::to_string(pr.OW) + ")",
                        "input shape " + x.shape().str() + " is too small for kernel " +
                            options_.kernel_size().str() + ", padding " + options_.padding().str() +
                            ", dilation " + options_.dilation().str());
    standardise(mean_, std_, w_hat_);
    tensor y({pr.N, pr.K, pr.OD, pr.OH, pr.OW});
    const T* pb = bias.defined() ? bias.value.data() : static_cast<const T*>(nullptr);
    backend::conv3d_forward(Backend{}, pr, x.data(), static_cast<const T*>(w_hat_.data()), pb, y.data());
    x_ = x;
    problem_ = pr;
    return y;
  }

  tensor backward(const tensor& dy) {
    const std::string who = std::string(name) + "::backward";
    if (!x_.defined()) fail<value_error>(who, "state", "a forward() call first", "no stored input");
    const Conv3dProblem& pr = problem_;
    check_same_shape(who, "grad_output", dy, Shape{pr.N, pr.K, pr.OD, pr.OH, pr.OW});
    tensor dx(x_.shape());
    backend::conv3d_backward_data(Backend{}, pr, dy.data(), static_cast<const T*>(w_hat_.data()), dx.data());
    if (weight.wants_grad()) {
      tensor g(weight.value.shape());  // dL/dW^ (the kernel adds into zeros)
      backend::conv3d_backward_weight(Backend{}, pr, x_.data(), dy.data(), g.data());
      const index_t K = options_.out_channels(), n = fan_in();
      dtensor g_mean(Shape{K}), g_proj(Shape{K});
      backend::weight_standardise_backward(Backend{}, K, n, static_cast<const T*>(weight.value.data()),
                                           static_cast<const double*>(mean_.data()),
                                           static_cast<const double*>(std_.data()), static_cast<const T*>(g.data()),
                                           g_mean.data(), g_proj.data(), weight.grad.data());
    }
    if (bias.wants_grad()) backend::conv3d_backward_bias(Backend{}, pr, dy.data(), bias.grad.data());
    return dx;
  }

 private:
  // Values standardised together: in * kD * kH * kW.
  index_t fan_in() const {
    const auto& k = options_.kernel_size();
    return options_.in_channels() * k.d * k.h * k.w;
  }

  void standardise(dtensor& mean, dtensor& s, tensor& w_hat) const {
    const index_t K = options_.out_channels(), n = fan_in();
    mean = dtensor(Shape{K});
    s = dtensor(Shape{K});
    w_hat = tensor(weight.value.shape());
    const T* w = weight.value.data();
    backend::weight_standardise_stats(Backend{}, K, n, eps, w, mean.data(), s.data());
    backend::weight_standardise(Backend{}, K, n, w, static_cast<const double*>(mean.data()),
                                static_cast<const double*>(s.data()), w_hat.data());
  }

  void check_options() const {
    const char* who = "mmnet::nn::WSConv3d";
    const auto& o = options_;
    if (o.in_channels() <= 0) fail<value_error>(who, "in_channels", "> 0", o.in_channels());
    if (o.out_channels() <= 0) fail<value_error>(who, "out_channels", "> 0", o.out_channels());
    for (int i = 0; i < 3; ++i) {
      if (o.kernel_size()[i] <= 0) fail<value_error>(who, "kernel_size", "every entry > 0", o.kernel_size().str());
      if (o.stride()[i] <= 0) fail<value_error>(who, "stride", "every entry > 0", o.stride().str());
      if (o.padding()[i] < 0) fail<value_error>(who, "padding", "every entry >= 0", o.padding().str());
      if (o.dilation()[i] <= 0) fail<value_error>(who, "dilation", "every entry > 0", o.dilation().str());
    }
    if (fan_in() < 2)
      fail<value_error>(who, "weights per output channel (in_channels * kD * kH * kW)",
                        ">= 2 (the unbiased variance of one value is undefined)", fan_in());
  }

  Conv3dOptions options_;
  tensor x_;
  tensor w_hat_;
  dtensor mean_, std_;
  Conv3dProblem problem_;
};

}  // namespace nn
}  // namespace mmnet
