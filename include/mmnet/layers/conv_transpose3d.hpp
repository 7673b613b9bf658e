// mmnet/layers/conv_transpose3d.hpp: ConvTranspose3d (torch.nn.ConvTranspose3d, groups = 1, zero padding).
//
//   nn::ConvTranspose3d<float, mmnet::cpu> up(nn::ConvTranspose3dOptions(64, 32, 2).stride(2));        // k2 s2
//   nn::ConvTranspose3d<float, mmnet::cpu> up(nn::ConvTranspose3dOptions(8, 4, {1, 2, 2}).stride({1, 2, 2}));
//
// Output extent per axis: (in - 1) stride - 2 padding + dilation (kernel - 1) + output_padding + 1.
// weight (in, out, kD, kH, kW) and bias (out) carry PyTorch's names, layout and default initialisation
// (kaiming_uniform_(a = sqrt(5)) and bias +-1/sqrt(fan_in), where PyTorch's fan_in of a transposed weight is
// dim 1 times the receptive field, out * kD * kH * kW). Defaults as PyTorch: stride 1, padding 0,
// output_padding 0, dilation 1, bias on. The kernels are Conv3d's (backend/common/conv_transpose3d.hpp).
#pragma once
#include <algorithm>
#include <string>

// The cpu weight/bias-gradient overloads must be declared before backend/common/conv_transpose3d.hpp's
// dispatching templates (it also includes them, through backend/cpu/conv3d.hpp).
#include "../backend/cpu/conv3d_weight.hpp"
#include "../backend/common/conv_transpose3d.hpp"
#include "../backend/cpu/conv_transpose3d.hpp"
#include "../core/expanding_array.hpp"
#include "../core/module.hpp"
#include "../core/random.hpp"
#include "../init/init.hpp"

namespace mmnet::nn {

struct ConvTranspose3dOptions {
  ConvTranspose3dOptions(index_t in_channels, index_t out_channels, ExpandingArray3 kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}

  index_t in_channels() const { return in_channels_; }
  index_t out_channels() const { return out_channels_; }
  const ExpandingArray3& kernel_size() const { return kernel_size_; }

  // Step between the input positions' footprints in the output (default 1).
  ConvTranspose3dOptions& stride(ExpandingArray3 v) { stride_ = v; return *this; }
  const ExpandingArray3& stride() const { return stride_; }
  // Positions cropped from both sides of each output axis (PyTorch: the implicit zero padding of the input is
  // dilation (kernel - 1) - padding); default 0.
  ConvTranspose3dOptions& padding(ExpandingArray3 v) { padding_ = v; return *this; }
  const ExpandingArray3& padding() const { return padding_; }
  // Extra output positions on the far side of each axis, to invert a strided Conv3d whose input size was
  // not a multiple of the stride; each entry < max(stride, dilation), as PyTorch requires (default 0).
  ConvTranspose3dOptions& output_padding(ExpandingArray3 v) { output_padding_ = v; return *this; }
  const ExpandingArray3& output_padding() const { return output_padding_; }
  // Spacing between kernel taps (default 1).
  ConvTranspose3dOptions& dilation(ExpandingArray3 v) { dilation_ = v; return *this; }
  const ExpandingArray3& dilation() const { return dilation_; }
  // Whether to learn an additive bias (default true).
  ConvTranspose3dOptions& bias(bool v) { bias_ = v; return *this; }
  bool bias() const { return bias_; }

 private:
  index_t in_channels_, out_channels_;
  ExpandingArray3 kernel_size_;
  ExpandingArray3 stride_{1}, padding_{0}, output_padding_{0}, dilation_{1};
  bool bias_ = true;
};

template <class T, class Backend>
class ConvTranspose3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::nn::ConvTranspose3d";

  Parameter<T, Backend> weight;  // (in, out, kD, kH, kW)
  Parameter<T, Backend> bias;    // (out), absent with bias(false)

  explicit ConvTranspose3d(const ConvTranspose3dOptions& options, Generator& generator = default_generator())
      : options_(options) {
    check_options();
    const auto& k = options_.kernel_size();
    weight.reset({options_.in_channels(), options_.out_channels(), k.d, k.h, k.w});
    if (options_.bias()) bias.reset({options_.out_channels()});
    reset_parameters(generator);
  }

  void members(Members<T, Backend>& m) override { m("weight", weight)("bias", bias); }

  // PyTorch's default: kaiming_uniform_(a = sqrt(5)) weight, bias uniform in +-1/sqrt(out * kD * kH * kW).
  void reset_parameters(Generator& generator = default_generator()) {
    init::pytorch_default_(weight, &bias, generator);
  }

  const ConvTranspose3dOptions& options() const { return options_; }

  // The problem for an input of this shape (output extents may be <= 0 when the padding is too large).
  ConvTranspose3dProblem problem(const Shape& input_shape) const {
    const auto &k = options_.kernel_size(), &s = options_.stride(), &p = options_.padding(),
               &op = options_.output_padding(), &d = options_.dilation();
    ConvTranspose3dProblem pr;
    pr.N = input_shape[0];
    pr.C = input_shape[1];
    pr.D = input_shape[2];
    pr.H = input_shape[3];
    pr.W = input_shape[4];
    pr.K = options_.out_channels();
    pr.kd = k.d, pr.kh = k.h, pr.kw = k.w;
    pr.sd = s.d, pr.sh = s.h, pr.sw = s.w;
    pr.pd = p.d, pr.ph = p.h, pr.pw = p.w;
    pr.opd = op.d, pr.oph = op.h, pr.opw = op.w;
    pr.dd = d.d, pr.dh = d.h, pr.dw = d.w;
    return pr.compute_output();
  }

  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    if (x.size(1) != options_.in_channels())
      fail<shape_error>(name, "input channels", options_.in_channels(), x.size(1), "input shape " + x.shape().str());
    if (x.size(2) < 1 || x.size(3) < 1 || x.size(4) < 1)
      fail<shape_error>(name, "input spatial extents", "every extent > 0", x.shape().str());
    const ConvTranspose3dProblem pr = problem(x.shape());
    if (!pr.valid_output())
      fail<shape_error>(name, "output size", "every extent > 0",
                        "(" + std::to_string(pr.OD) + ", " + std::to_string(pr.OH) + ", " + std::to_string(pr.OW) + ")",
                        "input shape " + x.shape().str() + " is too small for padding " + options_.padding().str() +
                            " with kernel " + options_.kernel_size().str() + ", stride " + options_.stride().str());
    tensor y({pr.N, pr.K, pr.OD, pr.OH, pr.OW});
    const T* pb = bias.defined() ? bias.value.data() : static_cast<const T*>(nullptr);
    backend::conv_transpose3d_forward(Backend{}, pr, x.data(), static_cast<const T*>(weight.value.data()), pb,
                                      y.data());
    x_ = x;
    problem_ = pr;
    return y;
  }

  tensor backward(const tensor& dy) {
    const std::string who = std::string(name) + "::backward";
    if (!x_.defined()) fail<value_error>(who, "state", "a forward() call first", "no stored input");
    const ConvTranspose3dProblem& pr = problem_;
    check_same_shape(who, "grad_output", dy, Shape{pr.N, pr.K, pr.OD, pr.OH, pr.OW});
    tensor dx(x_.shape());
    backend::conv_transpose3d_backward_data(Backend{}, pr, dy.data(), static_cast<const T*>(weight.value.data()),
                                            dx.data());
    if (weight.wants_grad())
      backend::conv_transpose3d_backward_weight(Backend{}, pr, x_.data(), dy.data(), weight.grad.data());
    if (bias.wants_grad()) backend::conv_transpose3d_backward_bias(Backend{}, pr, dy.data(), bias.grad.data());
    return dx;
  }

 private:
  void check_options() const {
    const char* who = "mmnet::nn::ConvTranspose3dOptions";
    const auto& o = options_;
    if (o.in_channels() <= 0) fail<value_error>(who, "in_channels", "> 0", o.in_channels());
    if (o.out_channels() <= 0) fail<value_error>(who, "out_channels", "> 0", o.out_channels());
    for (int i = 0; i < 3; ++i) {
      if (o.kernel_size()[i] <= 0) fail<value_error>(who, "kernel_size", "every entry > 0", o.kernel_size().str());
      if (o.stride()[i] <= 0) fail<value_error>(who, "stride", "every entry > 0", o.stride().str());
      if (o.padding()[i] < 0) fail<value_error>(who, "padding", "every entry >= 0", o.padding().str());
      if (o.dilation()[i] <= 0) fail<value_error>(who, "dilation", "every entry > 0", o.dilation().str());
      const index_t op = o.output_padding()[i], limit = std::max(o.stride()[i], o.dilation()[i]);
      if (op < 0 || op >= limit)
        fail<value_error>(who, "output_padding", "every entry >= 0 and < max(stride, dilation) = " +
                                                     ExpandingArray3(std::max(o.stride().d, o.dilation().d),
                                                                     std::max(o.stride().h, o.dilation().h),
                                                                     std::max(o.stride().w, o.dilation().w))
                                                         .str(),
                          o.output_padding().str());
    }
  }

  ConvTranspose3dOptions options_;
  tensor x_;
  ConvTranspose3dProblem problem_;
};

}  // namespace mmnet::nn
