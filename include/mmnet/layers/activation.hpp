// mmnet/layers/activation.hpp: ReLU, LeakyReLU and Sigmoid (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.Sigmoid).
#pragma once
#include <cmath>
#include <string>

#include "../backend/cpu/leaky_relu.hpp"  // cpu overloads of the LeakyReLU kernels below
#include "../core/module.hpp"

namespace mmnet::backend {

// LeakyReLU's generic kernels (the cuda backend's; cpu has the overloads of backend/cpu/leaky_relu.hpp).
// y = x > 0 ? x : x * slope over n values.
template <class T, class Backend>
void leaky_relu_forward(Backend b, index_t n, const T* x, T slope, T* y) {
  parallel_for(b, n, MMNET_KERNEL(index_t i) { y[i] = x[i] > T(0) ? x[i] : x[i] * slope; });
}
// dx = x > 0 ? dy : dy * slope over n values.
template <class T, class Backend>
void leaky_relu_backward(Backend b, index_t n, const T* x, const T* dy, T slope, T* dx) {
  parallel_for(b, n, MMNET_KERNEL(index_t i) { dx[i] = x[i] > T(0) ? dy[i] : dy[i] * slope; });
}

}  // namespace mmnet::backend

namespace mmnet::nn {

// y = max(x, 0); dy/dx = 1 where x > 0, else 0 (0 at x == 0, as PyTorch).
template <class T, class Backend>
class ReLU : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  tensor forward(const tensor& x) {
    if (!x.defined()) fail<shape_error>("mmnet::nn::ReLU", "input", "a tensor", "an empty tensor");
    tensor y(x.shape());
    const T* px = x.data();
    T* py = y.data();
    backend::parallel_for(Backend{}, x.numel(), MMNET_KERNEL(index_t i) { py[i] = px[i] > T(0) ? px[i] : T(0); });
    y_ = y;  // the output alone decides the mask (y > 0 iff x > 0)
    return y;
  }
  tensor backward(const tensor& dy) {
    check_same_shape("mmnet::nn::ReLU::backward", "grad_output", dy, y_.shape());
    tensor dx(dy.shape());
    const T *py = y_.data(), *pdy = dy.data();
    T* pdx = dx.data();
    // Both loads unconditional, so the select vectorises (a load only on one branch cannot be speculated).
    backend::parallel_for(Backend{}, dy.numel(), MMNET_KERNEL(index_t i) {
      const T g = pdy[i];
      pdx[i] = py[i] > T(0) ? g : T(0);
    });
    return dx;
  }

 private:
  tensor y_;
};

// Options of LeakyReLU, with PyTorch's default: LeakyReLUOptions().negative_slope(0.01) (MAML and HMRNet's slope).
struct LeakyReLUOptions {
  // The factor applied where x < 0 (any finite value, as PyTorch).
  LeakyReLUOptions& negative_slope(double v) { negative_slope_ = v; return *this; }
  double negative_slope() const { return negative_slope_; }

 private:
  double negative_slope_ = 0.01;
};

// y = x where x > 0, else negative_slope * x; dy/dx = 1 where x > 0, else negative_slope (so the slope at x == 0,
// as PyTorch's leaky_relu_backward).
template <class T, class Backend>
class LeakyReLU : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  explicit LeakyReLU(const LeakyReLUOptions& options = LeakyReLUOptions()) : options_(options) {
    if (!std::isfinite(options.negative_slope()))
      fail<value_error>(name, "negative_slope", "a finite value", options.negative_slope());
  }

  tensor forward(const tensor& x) {
    if (!x.defined()) fail<shape_error>(name, "input", "a tensor", "an empty tensor");
    tensor y(x.shape());
    const T* px = x.data();
    T* py = y.data();
    const T slope = static_cast<T>(options_.negative_slope());
    backend::leaky_relu_forward(Backend{}, x.numel(), px, slope, py);
    x_ = x;  // the input decides the branch (the output cannot when the slope is <= 0)
    return y;
  }
  tensor backward(const tensor& dy) {
    if (!x_.defined()) fail<value_error>(std::string(name) + "::backward", "saved input", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, x_.shape());
    tensor dx(dy.shape());
    const T *px = x_.data(), *pdy = dy.data();
    T* pdx = dx.data();
    const T slope = static_cast<T>(options_.negative_slope());
    backend::leaky_relu_backward(Backend{}, dy.numel(), px, pdy, slope, pdx);
    return dx;
  }

  const LeakyReLUOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::LeakyReLU";
  LeakyReLUOptions options_;
  tensor x_;
};

// y = 1 / (1 + exp(-x)), computed without overflow for large |x|; dy/dx = y (1 - y).
template <class T, class Backend>
class Sigmoid : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  tensor forward(const tensor& x) {
    if (!x.defined()) fail<shape_error>("mmnet::nn::Sigmoid", "input", "a tensor", "an empty tensor");
    tensor y(x.shape());
    const T* px = x.data();
    T* py = y.data();
    backend::parallel_for(Backend{}, x.numel(), MMNET_KERNEL(index_t i) {
      const T v = px[i];
      if (v >= T(0)) {
        py[i] = T(1) / (T(1) + std::exp(-v));
      } else {
        const T e = std::exp(v);
        py[i] = e / (T(1) + e);
      }
    });
    y_ = y;
    return y;
  }
  tensor backward(const tensor& dy) {
    check_same_shape("mmnet::nn::Sigmoid::backward", "grad_output", dy, y_.shape());
    tensor dx(dy.shape());
    const T *py = y_.data(), *pdy = dy.data();
    T* pdx = dx.data();
    backend::parallel_for(Backend{}, dy.numel(), MMNET_KERNEL(index_t i) { pdx[i] = pdy[i] * py[i] * (T(1) - py[i]); });
    return dx;
  }
  // The last output (probabilities), e.g. for a Dice loss.
  const tensor& output() const { return y_; }

 private:
  tensor y_;
};

}  // namespace mmnet::nn
