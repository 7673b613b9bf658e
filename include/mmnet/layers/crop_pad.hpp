// mmnet/layers/crop_pad.hpp: CropPad, constant padding and cropping of the spatial axes of N x C x D x H x W
// (torch.nn.functional.pad(x, (w_begin, w_end, h_begin, h_end, d_begin, d_end), mode='constant', value=v),
// negative amounts cropping).
//
//   nn::CropPad<float, mmnet::cpu> cp(nn::CropPadOptions().begin({0, 2, -1}).end({3, 0, -1}).value(-1));
//
// Output extent per axis: in + begin + end; output o reads input o - begin, or the fill value outside the
// input. The crops alone must leave at least one voxel per axis. Backward is the adjoint: each input element
// receives the gradient of the output that copied it, cropped-away elements receive 0. Defaults: no padding,
// fill value 0 (PyTorch's).
#pragma once
#include <initializer_list>
#include <string>
#include <vector>

#include "../backend/common/interpolate.hpp"
#include "../core/expanding_array.hpp"
#include "../core/module.hpp"

namespace mmnet::nn {

struct CropPadOptions {
  CropPadOptions() = default;

  // The pad argument of torch.nn.functional.pad for the three spatial axes, last axis first:
  // {w_begin, w_end, h_begin, h_end, d_begin, d_end}.
  static CropPadOptions torch_pad(const std::vector<index_t>& pad) {
    if (pad.size() != 6)
      fail<value_error>("mmnet::nn::CropPadOptions::torch_pad", "number of pad entries", 6, pad.size());
    return CropPadOptions().begin({pad[4], pad[2], pad[0]}).end({pad[5], pad[3], pad[1]});
  }

  // Voxels added (> 0) or removed (< 0) before index 0 of each axis (d, h, w); default 0.
  CropPadOptions& begin(ExpandingArray3 v) { begin_ = v; return *this; }
  // Voxels added (> 0) or removed (< 0) after the last index of each axis (d, h, w); default 0.
  CropPadOptions& end(ExpandingArray3 v) { end_ = v; return *this; }
  // Fill value of padded voxels (default 0).
  CropPadOptions& value(double v) { value_ = v; return *this; }

  const ExpandingArray3& begin() const { return begin_; }
  const ExpandingArray3& end() const { return end_; }
  double value() const { return value_; }

 private:
  ExpandingArray3 begin_{0}, end_{0};
  double value_ = 0;
};

namespace detail {
inline backend::AxisMap3d crop_pad_map(const char* name, const Shape& in, const CropPadOptions& o) {
  backend::AxisMap3d m;
  m.planes = in[0] * in[1];
  static const char* axis[3] = {"D", "H", "W"};
  for (int a = 0; a < 3; ++a) {
    const index_t b = o.begin()[a], e = o.end()[a], n = in[2 + a];
    const index_t kept = n + (b < 0 ? b : 0) + (e < 0 ? e : 0);
    if (kept < 1)
      fail<shape_error>(name, std::string("voxels left along ") + axis[a] + " after cropping", ">= 1", kept,
                        "input shape " + in.str() + ", begin " + o.begin().str() + ", end " + o.end().str());
    m.in[a] = n;
    m.out[a] = n + b + e;
    m.offset[a] = -b;
  }
  return m;
}
}  // namespace detail

template <class T, class Backend>
class CropPad : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  explicit CropPad(const CropPadOptions& options = CropPadOptions()) : options_(options) {}

  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    map_ = detail::crop_pad_map(name, x.shape(), options_);
    in_shape_ = x.shape();
    out_shape_ = Shape{x.size(0), x.size(1), map_.out[0], map_.out[1], map_.out[2]};
    tensor y(out_shape_);
    backend::axis_map_forward(Backend{}, map_, x.data(), y.data(), static_cast<T>(options_.value()));
    return y;
  }

  tensor backward(const tensor& dy) {
    if (in_shape_.rank() != 5) fail<value_error>(std::string(name) + "::backward", "state", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, out_shape_);
    tensor dx(in_shape_);
    backend::axis_map_backward(Backend{}, map_, dy.data(), dx.data());
    return dx;
  }

  const CropPadOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::CropPad";
  CropPadOptions options_;
  backend::AxisMap3d map_;
  Shape in_shape_, out_shape_;
};

// Functional form without gradient: torch.nn.functional.pad with the amounts of options.
template <class T, class Backend>
Tensor<T, Backend> crop_pad(const Tensor<T, Backend>& x, const CropPadOptions& options) {
  CropPad<T, Backend> cp(options);
  return cp.forward(x);
}

}  // namespace mmnet::nn
