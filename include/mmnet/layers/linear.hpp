// mmnet/layers/linear.hpp: Linear (torch.nn.Linear), y = x W^T + b, over the feature axis 1 of an N x in input.
//
//   nn::Linear<float, mmnet::cpu> fc1(nn::LinearOptions(12, 3));          // bias on, as PyTorch
//
// Besides N x in (rank 2) it takes N x in x 1 x 1 x 1 (ranks 3-5 whose trailing axes are all 1, e.g. the
// pooled channel descriptors of CBAM's MLPs in MMFNet): the trailing axes are treated as absent and the
// output keeps the input's rank, N x out x 1 x 1 x 1. (This is not PyTorch's rule for higher ranks, which
// applies Linear to the last axis; it equals flattening to N x in, Linear, and viewing back.)
// weight (out, in) and bias (out) carry PyTorch's names and default initialisation (kaiming_uniform_(a =
// sqrt(5)), bias +-1/sqrt(in)). The kernels are generic (one output element per index, sums in acc_t).
#pragma once
#include <string>

#include "../core/module.hpp"
#include "../core/random.hpp"
#include "../init/init.hpp"

namespace mmnet {

// Sizes of a Linear: input (N, I), weight (O, I), output (N, O).
struct LinearProblem {
  index_t N = 0, I = 0, O = 0;
};

namespace backend {

// y[n, o] = b[o] + sum_i x[n, i] w[o, i]; b may be null. Assigns y.
template <class Backend, class T>
void linear_forward(Backend, const LinearProblem& pr, const T* x, const T* w, const T* b, T* y) {
  const LinearProblem p = pr;
  backend::parallel_for(Backend{}, p.N * p.O, MMNET_KERNEL(index_t j) {
    const index_t o = j % p.O, n = j / p.O;
    const T* xn = x + n * p.I;
    const T* wo = w + o * p.I;
    acc_t<T> acc = b ? static_cast<acc_t<T>>(b[o]) : acc_t<T>(0);
    for (index_t i = 0; i < p.I; ++i) acc += static_cast<acc_t<T>>(xn[i]) * wo[i];
    y[j] = static_cast<T>(acc);
  });
}

// dx[n, i] = sum_o dy[n, o] w[o, i]. Assigns dx.
template <class Backend, class T>
void linear_backward_data(Backend, const LinearProblem& pr, const T* dy, const T* w, T* dx) {
  const LinearProblem p = pr;
  backend::parallel_for(Backend{}, p.N * p.I, MMNET_KERNEL(index_t j) {
    const index_t i = j % p.I, n = j / p.I;
    const T* dyn = dy + n * p.O;
    acc_t<T> acc(0);
    for (index_t o = 0; o < p.O; ++o) acc += static_cast<acc_t<T>>(dyn[o]) * w[o * p.I + i];
    dx[j] = static_cast<T>(acc);
  });
}

// dw[o, i] += sum_n dy[n, o] x[n, i]. Adds into dw.
template <class Backend, class T>
void linear_backward_weight(Backend, const LinearProblem& pr, const T* x, const T* dy, T* dw) {
  const LinearProblem p = pr;
  backend::parallel_for(Backend{}, p.O * p.I, MMNET_KERNEL(index_t j) {
    const index_t i = j % p.I, o = j / p.I;
    acc_t<T> acc(0);
    for (index_t n = 0; n < p.N; ++n) acc += static_cast<acc_t<T>>(dy[n * p.O + o]) * x[n * p.I + i];
    dw[j] += static_cast<T>(acc);
  });
}

// db[o] += sum_n dy[n, o]. Adds into db.
template <class Backend, class T>
void linear_backward_bias(Backend, const LinearProblem& pr, const T* dy, T* db) {
  const LinearProblem p = pr;
  backend::parallel_for(Backend{}, p.O, MMNET_KERNEL(index_t o) {
    acc_t<T> acc(0);
    for (index_t n = 0; n < p.N; ++n) acc += static_cast<acc_t<T>>(dy[n * p.O + o]);
    db[o] += static_cast<T>(acc);
  });
}

}  // namespace backend

namespace nn {

// Options of Linear, with PyTorch's defaults: LinearOptions(in_features, out_features).bias(true)
struct LinearOptions {
  LinearOptions(index_t in_features, index_t out_features) : in_features_(in_features), out_features_(out_features) {}

  index_t in_features() const { return in_features_; }
  index_t out_features() const { return out_features_; }
  // Whether to learn an additive bias (default true).
  LinearOptions& bias(bool v) { bias_ = v; return *this; }
  bool bias() const { return bias_; }

 private:
  index_t in_features_, out_features_;
  bool bias_ = true;
};

template <class T, class Backend>
class Linear : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::nn::Linear";

  Parameter<T, Backend> weight;  // (out, in)
  Parameter<T, Backend> bias;    // (out), absent with bias(false)

  explicit Linear(const LinearOptions& options, Generator& generator = default_generator()) : options_(options) {
    const char* who = "mmnet::nn::LinearOptions";
    if (options_.in_features() <= 0) fail<value_error>(who, "in_features", "> 0", options_.in_features());
    if (options_.out_features() <= 0) fail<value_error>(who, "out_features", "> 0", options_.out_features());
    weight.reset({options_.out_features(), options_.in_features()});
    if (options_.bias()) bias.reset({options_.out_features()});
    reset_parameters(generator);
  }

  void members(Members<T, Backend>& m) override { m("weight", weight)("bias", bias); }

  // PyTorch's default: kaiming_uniform_(a = sqrt(5)) weight, bias uniform in +-1/sqrt(in_features).
  void reset_parameters(Generator& generator = default_generator()) {
    init::pytorch_default_(weight, &bias, generator);
  }

  const LinearOptions& options() const { return options_; }

  tensor forward(const tensor& x) {
    if (!x.defined()) fail<shape_error>(name, "input", "a tensor of rank 2 to 5", "an empty tensor");
    if (x.rank() < 2)
      fail<shape_error>(name, "input rank", "2 to 5 (N x in, or N x in x 1 x 1 x 1)", x.rank(),
                        "input shape " + x.shape().str());
    for (int a = 2; a < x.rank(); ++a)
      if (x.size(a) != 1)
        fail<shape_error>(name, "extent of trailing axis " + std::to_string(a), 1, x.size(a),
                          "input shape " + x.shape().str() + "; only N x in (x 1 x 1 x 1) is supported");
    if (x.size(1) != options_.in_features())
      fail<shape_error>(name, "input features", options_.in_features(), x.size(1), "input shape " + x.shape().str());
    const LinearProblem p{x.size(0), options_.in_features(), options_.out_features()};
    Shape ys = x.shape();
    ys[1] = p.O;
    tensor y(ys);
    const T* pb = bias.defined() ? bias.value.data() : static_cast<const T*>(nullptr);
    backend::linear_forward(Backend{}, p, x.data(), static_cast<const T*>(weight.value.data()), pb, y.data());
    x_ = x;
    y_shape_ = ys;
    return y;
  }

  tensor backward(const tensor& dy) {
    const std::string who = std::string(name) + "::backward";
    if (!x_.defined()) fail<value_error>(who, "state", "a forward() call first", "no stored input");
    check_same_shape(who, "grad_output", dy, y_shape_);
    const LinearProblem p{x_.size(0), options_.in_features(), options_.out_features()};
    tensor dx(x_.shape());
    backend::linear_backward_data(Backend{}, p, dy.data(), static_cast<const T*>(weight.value.data()), dx.data());
    if (weight.wants_grad()) backend::linear_backward_weight(Backend{}, p, x_.data(), dy.data(), weight.grad.data());
    if (bias.wants_grad()) backend::linear_backward_bias(Backend{}, p, dy.data(), bias.grad.data());
    return dx;
  }

 private:
  LinearOptions options_;
  tensor x_;
  Shape y_shape_;
};

}  // namespace nn
}  // namespace mmnet
