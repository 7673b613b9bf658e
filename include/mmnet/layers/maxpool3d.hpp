// mmnet/layers/maxpool3d.hpp: MaxPool3d (torch.nn.MaxPool3d, dilation 1, ceil_mode false) over N x C x D x H x W.
//
// Output extent per axis: floor((in + 2 pad - kernel) / stride) + 1; padding counts as -inf. The argmax of each
// window (first in raster order on ties, as PyTorch) is kept, and backward routes each output gradient to it.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../backend/common/pooling.hpp"
#include "../core/expanding_array.hpp"
#include "../core/module.hpp"

namespace mmnet::nn {

// Options of MaxPool3d; sizes are one value for all axes or {d, h, w}:
//   MaxPool3dOptions({2, 2, 1}), MaxPool3dOptions(3).stride(1).padding(1)
struct MaxPool3dOptions {
  using size3 = ExpandingArray3;

  // The stride defaults to the kernel size.
  explicit MaxPool3dOptions(size3 kernel_size) : kernel_size_(kernel_size), stride_(kernel_size) {}

  // Window extent (d, h, w).
  MaxPool3dOptions& kernel_size(size3 v) { kernel_size_ = v; return *this; }
  // Step between windows; default: the kernel size given to the constructor.
  MaxPool3dOptions& stride(size3 v) { stride_ = v; return *this; }
  // Implicit -inf padding on both sides of each axis; at most half the kernel, as PyTorch requires.
  MaxPool3dOptions& padding(size3 v) { padding_ = v; return *this; }

  const size3& kernel_size() const { return kernel_size_; }
  const size3& stride() const { return stride_; }
  const size3& padding() const { return padding_; }

 private:
  size3 kernel_size_;
  size3 stride_;
  size3 padding_{0, 0, 0};
};

template <class T, class Backend>
class MaxPool3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  using traits = backend_traits<Backend>;

  explicit MaxPool3d(const MaxPool3dOptions& options) : options_(options) {
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
    backend::Pool3dProblem p = problem(x.shape());
    if (p.od < 1 || p.oh < 1 || p.ow < 1)
      fail<shape_error>(name, "output size", "at least 1 per axis",
                        "(" + std::to_string(p.od) + ", " + std::to_string(p.oh) + ", " + std::to_string(p.ow) + ")",
                        "input shape " + x.shape().str() + " is smaller than the padded kernel");
    tensor y(Shape{x.size(0), x.size(1), p.od, p.oh, p.ow});
    argmax_ = traits::template allocate<std::int64_t>(y.numel());
    backend::max_pool3d_forward(Backend{}, p, x.data(), y.data(), traits::data(argmax_));
    in_shape_ = x.shape();
    out_shape_ = y.shape();
    return y;
  }

  // dL/dx: each output gradient goes to its window's argmax; overlapping windows sum.
  tensor backward(const tensor& dy) {
    if (in_shape_.rank() != 5)
      fail<value_error>(std::string(name) + "::backward", "saved argmax", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, out_shape_);
    tensor dx(in_shape_);
    backend::max_pool3d_backward(Backend{}, problem(in_shape_), dy.data(), traits::data(argmax_), dx.data());
    return dx;
  }

  // The argmax of every output of the last forward, as a flat index d*H*W + h*W + w into its input plane
  // (PyTorch's return_indices), copied to the host.
  std::vector<std::int64_t> indices() const {
    const index_t n = out_shape_.rank() == 5 ? out_shape_.numel() : 0;
    std::vector<std::int64_t> v(static_cast<std::size_t>(n));
    traits::copy_to_host(argmax_, n, v.data());
    return v;
  }

  const MaxPool3dOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::MaxPool3d";

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

  MaxPool3dOptions options_;
  typename traits::template storage<std::int64_t> argmax_;  // per output of the last forward
  Shape in_shape_, out_shape_;
};

}  // namespace mmnet::nn
