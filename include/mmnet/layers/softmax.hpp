// mmnet/layers/softmax.hpp: Softmax and LogSoftmax over one axis, by default the channel axis of N x C x ...
// (torch.nn.Softmax(dim=1), torch.nn.LogSoftmax(dim=1)).
//
// Numerically stable: the maximum along the axis is subtracted before exp, and sums run in double, so logits of
// +-1000 give exact probabilities and finite log-probabilities. A NaN anywhere along the axis makes the whole
// slice NaN, as in PyTorch.
#pragma once
#include <cmath>
#include <string>

#include "../core/module.hpp"

namespace mmnet {
namespace backend {

// The tensor viewed as outer x C x inner with the reduction over C (stride inner).
struct SoftmaxProblem {
  index_t outer = 0;  // product of the extents before the axis
  index_t c = 0;      // extent of the axis
  index_t inner = 0;  // product of the extents after it
  MMNET_HOST_DEVICE index_t slices() const { return outer * inner; }
};

// One slice per index: y = exp(x - max) / sum, or (x - max) - log(sum) when log is set.
template <class T, class Backend>
void softmax_axis_forward(Backend b, const SoftmaxProblem p, const T* x, bool log, T* y) {
  parallel_for(b, p.slices(), MMNET_KERNEL(index_t i) {
    const index_t o = i / p.inner;
    const index_t base = o * p.c * p.inner + (i - o * p.inner);
    double mx = static_cast<double>(x[base]);
    for (index_t k = 1; k < p.c; ++k) {
      const double v = static_cast<double>(x[base + k * p.inner]);
      if (v > mx) mx = v;
    }
    double sum = 0;
    for (index_t k = 0; k < p.c; ++k) sum += std::exp(static_cast<double>(x[base + k * p.inner]) - mx);
    if (log) {
      const double lse = std::log(sum);
      for (index_t k = 0; k < p.c; ++k) y[base + k * p.inner] = static_cast<T>(static_cast<double>(x[base + k * p.inner]) - mx - lse);
    } else {
      const double inv = 1.0 / sum;
      for (index_t k = 0; k < p.c; ++k) y[base + k * p.inner] = static_cast<T>(std::exp(static_cast<double>(x[base + k * p.inner]) - mx) * inv);
    }
  });
}

// dL/dx from the saved output y. Softmax: dx = y (dy - sum(dy y)); LogSoftmax: dx = dy - exp(y) sum(dy).
template <class T, class Backend>
void softmax_axis_backward(Backend b, const SoftmaxProblem p, const T* y, const T* dy, bool log, T* dx) {
  parallel_for(b, p.slices(), MMNET_KERNEL(index_t i) {
    const index_t o = i / p.inner;
    const index_t base = o * p.c * p.inner + (i - o * p.inner);
    double s = 0;
    for (index_t k = 0; k < p.c; ++k) {
      const index_t j = base + k * p.inner;
      s += log ? static_cast<double>(dy[j]) : static_cast<double>(dy[j]) * static_cast<double>(y[j]);
    }
    for (index_t k = 0; k < p.c; ++k) {
      const index_t j = base + k * p.inner;
      const double yj = static_cast<double>(y[j]), g = static_cast<double>(dy[j]);
      dx[j] = static_cast<T>(log ? g - std::exp(yj) * s : yj * (g - s));
    }
  });
}

}  // namespace backend

namespace nn {

// Options of Softmax and LogSoftmax: the axis to normalise over (negative counts from the end, as PyTorch).
//   SoftmaxOptions(1)
struct SoftmaxOptions {
  explicit SoftmaxOptions(int dim) : dim_(dim) {}
  SoftmaxOptions& dim(int v) { dim_ = v; return *this; }
  int dim() const { return dim_; }

 private:
  int dim_;
};
using LogSoftmaxOptions = SoftmaxOptions;

namespace detail {
// The shared body of Softmax (log = false) and LogSoftmax (log = true).
template <class T, class Backend, bool Log>
class SoftmaxBase : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  explicit SoftmaxBase(const SoftmaxOptions& options) : options_(options) {}

  tensor forward(const tensor& x) {
    if (!x.defined()) fail<shape_error>(name(), "input", "a tensor", "an empty tensor");
    const int rank = x.rank(), d = options_.dim() < 0 ? options_.dim() + rank : options_.dim();
    if (d < 0 || d >= rank)
      fail<shape_error>(name(), "dim", "in [" + std::to_string(-rank) + ", " + std::to_string(rank - 1) + "]",
                        options_.dim(), "input shape " + x.shape().str());
    if (x.numel() == 0) fail<shape_error>(name(), "input", "a non-empty tensor", "shape " + x.shape().str());
    p_ = {1, x.size(d), 1};
    for (int k = 0; k < d; ++k) p_.outer *= x.size(k);
    for (int k = d + 1; k < rank; ++k) p_.inner *= x.size(k);
    tensor y(x.shape());
    backend::softmax_axis_forward(Backend{}, p_, x.data(), Log, y.data());
    y_ = y;
    return y;
  }

  tensor backward(const tensor& dy) {
    if (!y_.defined()) fail<value_error>(name() + "::backward", "saved output", "a forward() call first", "none");
    check_same_shape(name() + "::backward", "grad_output", dy, y_.shape());
    tensor dx(dy.shape());
    backend::softmax_axis_backward(Backend{}, p_, y_.data(), dy.data(), Log, dx.data());
    return dx;
  }

  // The last output (probabilities, or log-probabilities for LogSoftmax).
  const tensor& output() const { return y_; }
  const SoftmaxOptions& options() const { return options_; }

 private:
  static std::string name() { return Log ? "mmnet::nn::LogSoftmax" : "mmnet::nn::Softmax"; }

  SoftmaxOptions options_;
  backend::SoftmaxProblem p_;
  tensor y_;
};
}  // namespace detail

// y = exp(x) / sum(exp(x)) along options.dim() (default 1, the channels).
template <class T, class Backend>
class Softmax : public detail::SoftmaxBase<T, Backend, false> {
 public:
  explicit Softmax(const SoftmaxOptions& options = SoftmaxOptions(1)) : detail::SoftmaxBase<T, Backend, false>(options) {}
};

// y = x - log(sum(exp(x))) along options.dim() (default 1, the channels).
template <class T, class Backend>
class LogSoftmax : public detail::SoftmaxBase<T, Backend, true> {
 public:
  explicit LogSoftmax(const LogSoftmaxOptions& options = LogSoftmaxOptions(1))
      : detail::SoftmaxBase<T, Backend, true>(options) {}
};

}  // namespace nn
}  // namespace mmnet
