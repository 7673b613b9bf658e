// mmnet/layers/group_norm_pass.hpp: the forward/backward of a group normalisation over (sample, group) rows,
// shared by nn::GroupNorm and nn::InstanceNorm3d (one channel per group). The layers validate their input and
// own the affine parameters; this keeps what backward needs and runs the kernels of group_stats.hpp (on cpu,
// the fast path of backend/cpu/group_norm.hpp).
#pragma once
#include <string>

#include "../backend/common/group_stats.hpp"
#include "../backend/cpu/group_norm.hpp"  // the cpu overloads must be declared before the calls below
#include "../core/tensor.hpp"

namespace mmnet::nn::detail {

template <class T, class Backend>
class GroupNormPass {
 public:
  using tensor = Tensor<T, Backend>;

  // y = (x - mean) * invstd [* weight + bias]; weight and bias are null without affine parameters.
  tensor forward(const backend::GroupNormProblem& p, const tensor& x, double eps, const T* weight, const T* bias) {
    p_ = p;
    mean_ = Tensor<double, Backend>(Shape{p_.rows()});
    invstd_ = Tensor<double, Backend>(Shape{p_.rows()});
    backend::group_norm_stats(Backend{}, p_, x.data(), eps, mean_.data(), invstd_.data());
    tensor y(x.shape());
    backend::group_norm_apply(Backend{}, p_, x.data(), mean_.data(), invstd_.data(), weight, bias, y.data());
    x_ = x;
    return y;
  }

  // dL/dx; adds dL/dweight = sum(dy * xhat) and dL/dbias = sum(dy) per channel into grad_weight / grad_bias
  // where those are non-null.
  tensor backward(const std::string& component, const tensor& dy, const T* weight, T* grad_weight, T* grad_bias) {
    if (!x_.defined()) fail<value_error>(component + "::backward", "saved input", "a forward() call first", "none");
    check_same_shape(component + "::backward", "grad_output", dy, x_.shape());
    Tensor<double, Backend> sum_dy(Shape{p_.n * p_.c}), sum_dy_xhat(Shape{p_.n * p_.c});
    backend::group_norm_backward_reduce(Backend{}, p_, x_.data(), dy.data(), mean_.data(), invstd_.data(),
                                        sum_dy.data(), sum_dy_xhat.data());
    if (grad_weight != nullptr || grad_bias != nullptr)
      backend::group_norm_param_grads(Backend{}, p_, sum_dy.data(), sum_dy_xhat.data(), grad_weight, grad_bias);
    tensor dx(dy.shape());
    backend::group_norm_backward_input(Backend{}, p_, x_.data(), dy.data(), mean_.data(), invstd_.data(), weight,
                                       sum_dy.data(), sum_dy_xhat.data(), dx.data());
    return dx;
  }

 private:
  backend::GroupNormProblem p_{};
  tensor x_;                      // the last input
  Tensor<double, Backend> mean_;  // its statistics per (sample, group)
  Tensor<double, Backend> invstd_;
};

}  // namespace mmnet::nn::detail
