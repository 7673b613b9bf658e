// mmnet/layers/conv3d.hpp: Conv3d (torch.nn.Conv3d, groups = 1, zero padding).
//
//   nn::Conv3d<float, mmnet::cpu> conv(nn::Conv3dOptions(4, 16, {1, 3, 3}).padding({0, 1, 1}).bias(false));
//
// weight (out, in, kD, kH, kW) and bias (out) carry PyTorch's names and default initialisation. Kernel,
// stride, padding and dilation are per axis (D, H, W), so anisotropic kernels such as (1,3,3) cost only
// their own taps. The kernels live in backend/common/conv3d.hpp (generic) and backend/cpu/conv3d.hpp.
#pragma once
#include <initializer_list>
#include <string>

#include "../backend/common/conv3d.hpp"
#include "../backend/cpu/conv3d.hpp"
#include "../core/expanding_array.hpp"
#include "../core/module.hpp"
#include "../core/random.hpp"
#include "../init/init.hpp"

namespace mmnet::nn {

struct Conv3dOptions {
  Conv3dOptions(index_t in_channels, index_t out_channels, ExpandingArray3 kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}

  index_t in_channels() const { return in_channels_; }
  index_t out_channels() const { return out_channels_; }
  const ExpandingArray3& kernel_size() const { return kernel_size_; }

  // Step between output positions (default 1).
  Conv3dOptions& stride(ExpandingArray3 v) { stride_ = v; return *this; }
  const ExpandingArray3& stride() const { return stride_; }
  // Zeros added on both sides of each axis (default 0).
  Conv3dOptions& padding(ExpandingArray3 v) { padding_ = v; return *this; }
  const ExpandingArray3& padding() const { return padding_; }
  // Spacing between kernel taps (default 1).
  Conv3dOptions& dilation(ExpandingArray3 v) { dilation_ = v; return *this; }
  const ExpandingArray3& dilation() const { return dilation_; }
  // Whether to learn an additive bias (default true).
  Conv3dOptions& bias(bool v) { bias_ = v; return *this; }
  bool bias() const { return bias_; }

 private:
  index_t in_channels_, out_channels_;
  ExpandingArray3 kernel_size_;
  ExpandingArray3 stride_{1}, padding_{0}, dilation_{1};
  bool bias_ = true;
};

template <class T, class Backend>
class Conv3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  Parameter<T, Backend> weight;  // (out, in, kD, kH, kW)
  Parameter<T, Backend> bias;    // (out), absent with bias(false)

  explicit Conv3d(const Conv3dOptions& options, Generator& generator = default_generator()) : options_(options) {
    check_options();
    const auto& k = options_.kernel_size();
    weight.reset({options_.out_channels(), options_.in_channels(), k.d, k.h, k.w});
    if (options_.bias()) bias.reset({options_.out_channels()});
    reset_parameters(generator);
  }

  void members(Members<T, Backend>& m) override { m("weight", weight)("bias", bias); }

  // PyTorch's default: kaiming_uniform_(a = sqrt(5)) weight, bias uniform in +-1/sqrt(in * kD * kH * kW).
  void reset_parameters(Generator& generator = default_generator()) {
    init::pytorch_default_(weight, &bias, generator);
  }

  const Conv3dOptions& options() const { return options_; }

  // The problem for an input of this shape (output extents may be <= 0 when the input is too small).
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
    check_rank("mmnet::nn::Conv3d", "input", x, 5);
    if (x.size(1) != options_.in_channels())
      fail<shape_error>("mmnet::nn::Conv3d", "input channels", options_.in_channels(), x.size(1),
                        "input shape " + x.shape().str());
    const Conv3dProblem pr = problem(x.shape());
    if (!pr.valid_output())
      fail<shape_error>("mmnet::nn::Conv3d", "output size", "every extent > 0",
                        "(" + std::to_string(pr.OD) + ", " + std::to_string(pr.OH) + ", " + std::to_string(pr.OW) + ")",
                        "input shape " + x.shape().str() + " is too small for kernel " +
                            options_.kernel_size().str() + ", padding " + options_.padding().str() +
                            ", dilation " + options_.dilation().str());
    tensor y({pr.N, pr.K, pr.OD, pr.OH, pr.OW});
    const T* pb = bias.defined() ? bias.value.data() : static_cast<const T*>(nullptr);
    backend::conv3d_forward(Backend{}, pr, x.data(), static_cast<const T*>(weight.value.data()), pb, y.data());
    x_ = x;
    problem_ = pr;
    return y;
  }

  tensor backward(const tensor& dy) {
    if (!x_.defined())
      fail<value_error>("mmnet::nn::Conv3d::backward", "state", "a forward() call first", "no stored input");
    const Conv3dProblem& pr = problem_;
    check_same_shape("mmnet::nn::Conv3d::backward", "grad_output", dy, Shape{pr.N, pr.K, pr.OD, pr.OH, pr.OW});
    tensor dx(x_.shape());
    backend::conv3d_backward_data(Backend{}, pr, dy.data(), static_cast<const T*>(weight.value.data()), dx.data());
    if (weight.wants_grad()) backend::conv3d_backward_weight(Backend{}, pr, x_.data(), dy.data(), weight.grad.data());
    if (bias.wants_grad()) backend::conv3d_backward_bias(Backend{}, pr, dy.data(), bias.grad.data());
    return dx;
  }

 private:
  void check_options() const {
    const char* who = "mmnet::nn::Conv3dOptions";
    const auto& o = options_;
    if (o.in_channels() <= 0) fail<value_error>(who, "in_channels", "> 0", o.in_channels());
    if (o.out_channels() <= 0) fail<value_error>(who, "out_channels", "> 0", o.out_channels());
    for (int i = 0; i < 3; ++i) {
      if (o.kernel_size()[i] <= 0) fail<value_error>(who, "kernel_size", "every entry > 0", o.kernel_size().str());
      if (o.stride()[i] <= 0) fail<value_error>(who, "stride", "every entry > 0", o.stride().str());
      if (o.padding()[i] < 0) fail<value_error>(who, "padding", "every entry >= 0", o.padding().str());
      if (o.dilation()[i] <= 0) fail<value_error>(who, "dilation", "every entry > 0", o.dilation().str());
    }
  }

  Conv3dOptions options_;
  tensor x_;
  Conv3dProblem problem_;
};

}  // namespace mmnet::nn
