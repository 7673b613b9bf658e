// mmnet/layers/dropout3d.hpp: Dropout3d (torch.nn.Dropout3d(p)) over N x C x D x H x W.
//
// Train mode zeroes whole channels: each (sample, channel) is dropped with probability p and the kept ones are
// scaled by 1 / (1 - p), so the expectation is unchanged; eval mode (and p == 0) is the identity. The masks come
// from a seeded mmnet::Generator owned by the layer (one uniform draw per (n, c) in n-major order; kept when
// u >= p), so a seed fixes the masks, but they cannot equal PyTorch's. To reproduce a PyTorch run, pass its mask to
// forward_with_mask(). Only 5-d input is accepted (PyTorch 1.13 also takes unbatched C x D x H x W).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/module.hpp"
#include "../core/random.hpp"

namespace mmnet {
namespace backend {

// y = x * mask[i / s]: one multiplier per (sample, channel) plane of s values.
template <class T, class Backend>
void dropout3d_apply(Backend b, index_t numel, index_t s, const T* x, const T* mask, T* y) {
  parallel_for(b, numel, MMNET_KERNEL(index_t i) { y[i] = x[i] * mask[i / s]; });
}

}  // namespace backend

namespace nn {

// Options of Dropout3d, with PyTorch's default p and a fixed seed for the layer's generator:
//   Dropout3dOptions(0.1).seed(42)
struct Dropout3dOptions {
  explicit Dropout3dOptions(double p = 0.5) : p_(p) {}

  // Probability of zeroing a channel, in [0, 1].
  Dropout3dOptions& p(double v) { p_ = v; return *this; }
  // Seed of the layer's generator (the masks of successive forward calls follow from it).
  Dropout3dOptions& seed(std::uint64_t v) { seed_ = v; return *this; }

  double p() const { return p_; }
  std::uint64_t seed() const { return seed_; }

 private:
  double p_;
  std::uint64_t seed_ = 0;
};

template <class T, class Backend>
class Dropout3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  explicit Dropout3d(const Dropout3dOptions& options = Dropout3dOptions()) : options_(options), generator_(options.seed()) {
    if (!(options.p() >= 0.0 && options.p() <= 1.0))
      fail<value_error>(name, "dropout probability p", "a value in [0, 1]", options.p());
  }

  // Train mode: a fresh mask from the generator; eval mode or p == 0: a copy of x (never x itself, so in-place
  // updates of the output cannot reach a tensor another layer saved).
  tensor forward(const tensor& x) {
    check_input(x);
    if (!this->is_training() || options_.p() == 0.0) {
      mask_ = {};
      shape_ = x.shape();
      return x.clone();
    }
    const index_t planes = x.size(0) * x.size(1);
    std::vector<T> m(static_cast<std::size_t>(planes));
    const bool all = options_.p() >= 1.0;  // p == 1 drops everything (no 1 / 0 scale), as PyTorch
    const T scale = all ? T(0) : static_cast<T>(1.0 / (1.0 - options_.p()));
    for (auto& v : m) v = generator_.uniform() >= options_.p() ? scale : T(0);
    return apply(x, tensor::from_vector(Shape{x.size(0), x.size(1), 1, 1, 1}, m));
  }

  // y = x * mask with mask of shape (N, C, 1, 1, 1) holding the multiplier of each channel (0 or 1 / (1 - p) for a
  // PyTorch mask, i.e. torch's output / input), in either mode; backward then uses the same mask.
  tensor forward_with_mask(const tensor& x, const tensor& mask) {
    check_input(x);
    check_same_shape(name, "mask", mask, Shape{x.size(0), x.size(1), 1, 1, 1});
    return apply(x, mask.clone());  // a copy: later changes to the caller's tensor must not reach backward
  }

  // dL/dx = dy * mask (dy itself, copied, when the forward was the identity).
  tensor backward(const tensor& dy) {
    if (shape_.rank() != 5) fail<value_error>(std::string(name) + "::backward", "saved mask", "a forward() call first", "none");
    check_same_shape(std::string(name) + "::backward", "grad_output", dy, shape_);
    if (!mask_.defined()) return dy.clone();
    tensor dx(dy.shape());
    backend::dropout3d_apply(Backend{}, dy.numel(), shape_[2] * shape_[3] * shape_[4], dy.data(), mask_.data(), dx.data());
    return dx;
  }

  // The multipliers of the last forward, shape (N, C, 1, 1, 1); undefined when it was the identity.
  const tensor& mask() const { return mask_; }
  // The generator the masks are drawn from (e.g. generator().seed(s) to restart a sequence).
  Generator& generator() { return generator_; }
  const Dropout3dOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::Dropout3d";

  void check_input(const tensor& x) const {
    check_rank(name, "input", x, 5);
    if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor", "shape " + x.shape().str());
  }
  tensor apply(const tensor& x, const tensor& mask) {
    tensor y(x.shape());
    backend::dropout3d_apply(Backend{}, x.numel(), x.size(2) * x.size(3) * x.size(4), x.data(), mask.data(), y.data());
    mask_ = mask;
    shape_ = x.shape();
    return y;
  }

  Dropout3dOptions options_;
  Generator generator_;
  tensor mask_;  // (N, C, 1, 1, 1) multipliers of the last forward
  Shape shape_;  // the last input's shape
};

}  // namespace nn
}  // namespace mmnet
