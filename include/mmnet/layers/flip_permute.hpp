// mmnet/layers/flip_permute.hpp: Flip and Permute of the spatial axes of N x C x D x H x W volumes
// (torch.flip(x, dims=[2 + a for a in axes]) and x.permute(0, 1, 2 + p[0], 2 + p[1], 2 + p[2])).
//
//   nn::Flip<float, mmnet::cpu> flip(nn::FlipOptions({0, 2}));        // reverse D and W
//   nn::Permute<float, mmnet::cpu> perm(nn::PermuteOptions({2, 0, 1})); // output (D, H, W) = input (W, D, H)
//
// Axes are spatial indices: 0 = D, 1 = H, 2 = W; N and C never move. Output spatial axis k of Permute is input
// spatial axis p[k]. Both return new contiguous tensors; backward flips back / applies the inverse permutation.
#pragma once
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "../backend/common/interpolate.hpp"
#include "../core/module.hpp"

namespace mmnet::nn {

namespace detail {
inline std::string axes_str(const std::vector<int>& v) {
  std::string s = "{";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "}";
}
}  // namespace detail

struct FlipOptions {
  // The spatial axes to reverse (0 = D, 1 = H, 2 = W), each at most once; empty flips nothing.
  explicit FlipOptions(std::vector<int> axes) : axes_(std::move(axes)) {}
  FlipOptions& axes(std::vector<int> v) { axes_ = std::move(v); return *this; }
  const std::vector<int>& axes() const { return axes_; }

 private:
  std::vector<int> axes_;
};

struct PermuteOptions {
  // Output spatial axis k is input spatial axis order[k]; order is a permutation of {0, 1, 2}.
  explicit PermuteOptions(std::array<int, 3> order) : order_(order) {}
  PermuteOptions& order(std::array<int, 3> v) { order_ = v; return *this; }
  const std::array<int, 3>& order() const { return order_; }

 private:
  std::array<int, 3> order_;
};

template <class T, class Backend>
class Flip : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  explicit Flip(const FlipOptions& options) : options_(options) {
    bool seen[3] = {false, false, false};
    for (int a : options_.axes()) {
      if (a < 0 || a > 2)
        fail<value_error>(name, "axis", "0, 1 or 2 (D, H, W)", a, "axes " + detail::axes_str(options_.axes()));
      if (seen[a]) fail<value_error>(name, "axes", "each axis at most once", detail::axes_str(options_.axes()));
      seen[a] = true;
    }
  }

  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    shape_ = x.shape();
    tensor y(shape_);
    backend::axis_map_forward(Backend{}, map(), x.data(), y.data(), T(0));
    return y;
  }

  // A flip is its own adjoint.
  tensor backward(const tensor& dy) {
    if (shape_.rank() != 5) fail<value_error>(std::string(name) + "::backward", "state", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, shape_);
    tensor dx(shape_);
    backend::axis_map_forward(Backend{}, map(), dy.data(), dx.data(), T(0));
    return dx;
  }

  const FlipOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::Flip";

  backend::AxisMap3d map() const {
    backend::AxisMap3d m;
    m.planes = shape_[0] * shape_[1];
    for (int a = 0; a < 3; ++a) m.in[a] = m.out[a] = shape_[2 + a];
    for (int a : options_.axes()) m.step[a] = -1, m.offset[a] = shape_[2 + a] - 1;
    return m;
  }

  FlipOptions options_;
  Shape shape_;
};

template <class T, class Backend>
class Permute : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  explicit Permute(const PermuteOptions& options) : options_(options) {
    const auto& p = options_.order();
    const std::vector<int> v(p.begin(), p.end());
    bool seen[3] = {false, false, false};
    for (int a : p) {
      if (a < 0 || a > 2 || seen[a])
        fail<value_error>(name, "order", "a permutation of {0, 1, 2} (D, H, W)", detail::axes_str(v));
      seen[a] = true;
    }
  }

  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    in_shape_ = x.shape();
    const auto& p = options_.order();
    out_shape_ = Shape{x.size(0), x.size(1), x.size(2 + p[0]), x.size(2 + p[1]), x.size(2 + p[2])};
    tensor y(out_shape_);
    backend::axis_map_forward(Backend{}, map(), x.data(), y.data(), T(0));
    return y;
  }

  // dL/dx: dy permuted back (the adjoint of a permutation is its inverse).
  tensor backward(const tensor& dy) {
    if (in_shape_.rank() != 5) fail<value_error>(std::string(name) + "::backward", "state", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, out_shape_);
    tensor dx(in_shape_);
    backend::axis_map_backward(Backend{}, map(), dy.data(), dx.data());
    return dx;
  }

  const PermuteOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::Permute";

  backend::AxisMap3d map() const {
    backend::AxisMap3d m;
    m.planes = in_shape_[0] * in_shape_[1];
    for (int k = 0; k < 3; ++k) {
      m.in[k] = in_shape_[2 + k];
      m.out[k] = out_shape_[2 + k];
      m.src_axis[k] = options_.order()[k];
    }
    return m;
  }

  PermuteOptions options_;
  Shape in_shape_, out_shape_;
};

// Functional forms without gradient.
template <class T, class Backend>
Tensor<T, Backend> flip(const Tensor<T, Backend>& x, const std::vector<int>& axes) {
  Flip<T, Backend> f{FlipOptions(axes)};
  return f.forward(x);
}
template <class T, class Backend>
Tensor<T, Backend> permute(const Tensor<T, Backend>& x, const std::array<int, 3>& order) {
  Permute<T, Backend> p{PermuteOptions(order)};
  return p.forward(x);
}

}  // namespace mmnet::nn
