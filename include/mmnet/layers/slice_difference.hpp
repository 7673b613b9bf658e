// mmnet/layers/slice_difference.hpp: ConResNet's inter-slice residual of N x C x D x H x W volumes along one
// spatial axis (default D, the slice axis of ConResNet's `_res`):
//
//   y[0] = 0,  y[d] = |x[d] - x[d-1]|  (d >= 1)
//
// PyTorch: y = torch.zeros_like(x); y[:, :, 1:] = (x[:, :, 1:] - x[:, :, :-1]).abs() (for axis D). Backward,
// with s[d] = sign(x[d] - x[d-1]) and sign(0) = 0 as torch.abs's derivative: dx[d] += dy[d] s[d] and
// dx[d-1] -= dy[d] s[d]; y[0] passes nothing.
//
// Label variant (no gradient; ConResNet's residual target, per channel): y[0] = (x[0] != 0),
// y[d] = (x[d] != x[d-1]), as 0 / 1 -- the first slice is NOT zeroed (the code subtracts an all-zero slice).
// On binary channels this is |x[d] - x[d-1]| with x[-1] = 0.
#pragma once
#include <cmath>
#include <string>

#include "../core/module.hpp"

namespace mmnet::nn {

struct SliceDifferenceOptions {
  SliceDifferenceOptions() = default;
  // Spatial axis of the difference: 0 = D (default, ConResNet), 1 = H, 2 = W.
  SliceDifferenceOptions& axis(int v) { axis_ = v; return *this; }
  int axis() const { return axis_; }

 private:
  int axis_ = 0;
};

namespace detail {
// The element stride of a spatial axis and its extent, for an N x C x D x H x W shape.
struct SliceAxis {
  index_t stride = 1, extent = 1;
};
inline SliceAxis slice_axis(const char* name, const Shape& s, int axis) {
  if (axis < 0 || axis > 2) fail<value_error>(name, "axis", "0, 1 or 2 (D, H, W)", axis);
  SliceAxis a;
  for (int k = 4; k > 2 + axis; --k) a.stride *= s[k];
  a.extent = s[2 + axis];
  return a;
}

template <class T>
MMNET_HOST_DEVICE inline T sign_of(T v) {
  return v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0));
}

template <class T, class Backend>
void slice_difference_forward(Backend b, index_t n, SliceAxis a, const T* x, T* y) {
  backend::parallel_for(b, n, MMNET_KERNEL(index_t i) {
    const index_t c = (i / a.stride) % a.extent;
    y[i] = c == 0 ? T(0) : std::abs(x[i] - x[i - a.stride]);
  });
}

// One input element per index: its share of the two differences it enters.
template <class T, class Backend>
void slice_difference_backward(Backend b, index_t n, SliceAxis a, const T* x, const T* dy, T* dx) {
  backend::parallel_for(b, n, MMNET_KERNEL(index_t i) {
    const index_t c = (i / a.stride) % a.extent;
    T g = T(0);
    if (c > 0) g += dy[i] * sign_of(x[i] - x[i - a.stride]);
    if (c + 1 < a.extent) g -= dy[i + a.stride] * sign_of(x[i + a.stride] - x[i]);
    dx[i] = g;
  });
}

template <class T, class Backend>
void slice_change_labels(Backend b, index_t n, SliceAxis a, const T* x, T* y) {
  backend::parallel_for(b, n, MMNET_KERNEL(index_t i) {
    const index_t c = (i / a.stride) % a.extent;
    const T previous = c == 0 ? T(0) : x[i - a.stride];
    y[i] = x[i] != previous ? T(1) : T(0);
  });
}
}  // namespace detail

template <class T, class Backend>
class SliceDifference : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  explicit SliceDifference(const SliceDifferenceOptions& options = SliceDifferenceOptions()) : options_(options) {
    if (options_.axis() < 0 || options_.axis() > 2) fail<value_error>(name, "axis", "0, 1 or 2 (D, H, W)", options_.axis());
  }

  tensor forward(const tensor& x) {
    check_rank(name, "input", x, 5);
    axis_ = detail::slice_axis(name, x.shape(), options_.axis());
    tensor y(x.shape());
    detail::slice_difference_forward(Backend{}, x.numel(), axis_, x.data(), y.data());
    x_ = x;
    return y;
  }

  tensor backward(const tensor& dy) {
    if (!x_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, x_.shape());
    tensor dx(x_.shape());
    detail::slice_difference_backward(Backend{}, x_.numel(), axis_, x_.data(), dy.data(), dx.data());
    return dx;
  }

  const SliceDifferenceOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::SliceDifference";
  SliceDifferenceOptions options_;
  detail::SliceAxis axis_;
  tensor x_;
};

// Functional form without gradient (e.g. ConResNet's X_res of an input image).
template <class T, class Backend>
Tensor<T, Backend> slice_difference(const Tensor<T, Backend>& x, int axis = 0) {
  SliceDifference<T, Backend> s(SliceDifferenceOptions().axis(axis));
  return s.forward(x);
}

// The label variant: 1 where a label differs from the previous slice's (the first slice from 0), else 0.
template <class T, class Backend>
Tensor<T, Backend> slice_difference_labels(const Tensor<T, Backend>& labels, int axis = 0) {
  const char* name = "mmnet::nn::slice_difference_labels";
  check_rank(name, "labels", labels, 5);
  const detail::SliceAxis a = detail::slice_axis(name, labels.shape(), axis);
  Tensor<T, Backend> y(labels.shape());
  detail::slice_change_labels(Backend{}, labels.numel(), a, labels.data(), y.data());
  return y;
}

}  // namespace mmnet::nn
