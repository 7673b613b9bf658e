// mmnet/layers/avgpool3d.hpp: AvgPool3d (torch.nn.AvgPool3d, ceil_mode false, no divisor_override) over
// N x C x D x H x W.
//
// Output extent per axis: floor((in + 2 pad - kernel) / stride) + 1. Padding adds zeros and, with
// count_include_pad (PyTorch's default, kept here), counts in the divisor, so every window divides by
// kd*kh*kw; without it only the window's elements inside the input count. Backward gives each input element the
// sum of dy / divisor over the windows that contain it (grad / 8 for the 2x2x2 DenseNet transition).
#pragma once
#include <string>

#include "../backend/common/avg_pooling.hpp"
#include "../core/expanding_array.hpp"
#include "../core/module.hpp"

namespace mmnet::nn {

// Options of AvgPool3d; sizes are one value for all axes or {d, h, w}:
//   AvgPool3dOptions(2), AvgPool3dOptions({8, 8, 4}), AvgPool3dOptions(3).stride(1).padding(1)
struct AvgPool3dOptions {
  using size3 = ExpandingArray3;

  // The stride defaults to the kernel size.
  explicit AvgPool3dOptions(size3 kernel_size) : kernel_size_(kernel_size), stride_(kernel_size) {}

  // Window extent (d, h, w).
  AvgPool3dOptions& kernel_size(size3 v) { kernel_size_ = v; return *this; }
  // Step between windows; default: the kernel size given to the constructor.
  AvgPool3dOptions& stride(size3 v) { stride_ = v; return *this; }
  // Implicit zero padding on both sides of each axis; at most half the kernel, as PyTorch requires. Default 0.
  AvgPool3dOptions& padding(size3 v) { padding_ = v; return *this; }
  // Whether padded zeros count in the divisor; default true (PyTorch's default).
  AvgPool3dOptions& count_include_pad(bool v) { count_include_pad_ = v; return *this; }

  const size3& kernel_size() const { return kernel_size_; }
  const size3& stride() const { return stride_; }
  const size3& padding() const { return padding_; }
  bool count_include_pad() const { return count_include_pad_; }

 private:
  size3 kernel_size_;
  size3 stride_;
  size3 padding_{0, 0, 0};
  bool count_include_pad_ = true;
};

template <class T, class Backend>
class AvgPool3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  explicit AvgPool3d(const AvgPool3dOptions& options) : options_(options) {
    static const char* axis[3] = {"d", "h", "w"};
    for (int a = 0; a < 3; ++a) {
      const index_t k = options.kernel_size()[a], s = options.stride()[a], p = options.padding()[a];
      if (k < 1) fail<value_error>(name, std::string("kernel_size (") + axis[a] + ")", ">= 1", k);
      if (s < 1) fail<value_error>(name, std::string("stride (") + axis[a] + ")", ">= 1", s);
      if (p < 0 || 2 * p > k)
        fail<value_error>(name, std::string("padding (") + axis[a] + ")", "0 to kernel_size / 2 = " + std::to_string(k / 2), p);
    }
  }

  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor", "shape " + x.shape().str());
    const backend::Pool3dProblem p = problem(x.shape());
    if (p.od < 1 || p.oh < 1 || p.ow < 1)
      fail<shape_error>(name, "output size", "at least 1 per axis",
                        "(" + std::to_string(p.od) + ", " + std::to_string(p.oh) + ", " + std::to_string(p.ow) + ")",
                        "input shape " + x.shape().str() + " is smaller than the kernel " +
                            options_.kernel_size().str() + " with padding " + options_.padding().str());
    tensor y(Shape{x.size(0), x.size(1), p.od, p.oh, p.ow});
    backend::avg_pool3d_forward(Backend{}, p, options_.count_include_pad(), x.data(), y.data());
    in_shape_ = x.shape();
    out_shape_ = y.shape();
    return y;
  }

  tensor backward(const tensor& dy) {
    if (in_shape_.rank() != 5)
      fail<value_error>(std::string(name) + "::backward", "saved input shape", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, out_shape_);
    tensor dx(in_shape_);
    backend::avg_pool3d_backward(Backend{}, problem(in_shape_), options_.count_include_pad(), dy.data(), dx.data());
    return dx;
  }

  const AvgPool3dOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::AvgPool3d";

  backend::Pool3dProblem problem(const Shape& in) const {
    const auto &k = options_.kernel_size(), &s = options_.stride(), &pad = options_.padding();
    backend::Pool3dProblem p;
    p.planes = in[0] * in[1];
    p.id = in[2];
    p.ih = in[3];
    p.iw = in[4];
    p.kd = k[0], p.kh = k[1], p.kw = k[2];
    p.sd = s[0], p.sh = s[1], p.sw = s[2];
    p.pd = pad[0], p.ph = pad[1], p.pw = pad[2];
    p.od = backend::pool_output_size(p.id, p.kd, p.sd, p.pd);
    p.oh = backend::pool_output_size(p.ih, p.kh, p.sh, p.ph);
    p.ow = backend::pool_output_size(p.iw, p.kw, p.sw, p.pw);
    return p;
  }

  AvgPool3dOptions options_;
  Shape in_shape_, out_shape_;
};

}  // namespace mmnet::nn
