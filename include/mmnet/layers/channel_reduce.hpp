// mmnet/layers/channel_reduce.hpp: per-voxel reductions over the channel axis, N x C x ... -> N x 1 x ...
// (any rank >= 2, N x C x D x H x W in the networks), the spatial-attention pools of 3D-CBAM (MMFNet):
//   nn::ChannelMean  torch.mean(x, dim=1, keepdim=True)
//   nn::ChannelMax   torch.max(x, dim=1, keepdim=True)[0] -- the gradient goes to the FIRST maximal channel
//                    (torch.max's index; not torch.amax, which splits ties), and the first NaN wins
//   nn::ChannelStd   torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + eps): population std with eps inside
//                    the square root (default 1e-6, MMFNet spec A9), so a voxel where all channels are equal
//                    (all zero after a ReLU) has std sqrt(eps) and gradient 0; ds/dx_c = (x_c - mean) / (C s)
// One parallel index per voxel loops over the channels (stride D*H*W, so neighbouring indices read neighbouring
// addresses), accumulating in double.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/module.hpp"

namespace mmnet::nn {

namespace detail {

// N x C x S view of an input of rank >= 2 (S = product of the extents after C, 1 for rank 2).
struct ChannelProblem {
  index_t n = 0, c = 0, s = 0;
};

template <class T, class Backend>
ChannelProblem channel_problem(const char* name, const Tensor<T, Backend>& x) {
  if (!x.defined()) fail<shape_error>(name, "input", "a tensor of rank >= 2 (N x C x ...)", "an empty tensor");
  if (x.rank() < 2) fail<shape_error>(name, "input rank", ">= 2 (N x C x ...)", x.rank(), "shape " + x.shape().str());
  if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor (C >= 1)", "shape " + x.shape().str());
  return {x.size(0), x.size(1), x.numel() / (x.size(0) * x.size(1))};
}
inline Shape channel_reduced_shape(const Shape& s) {
  Shape r = s;
  r[1] = 1;
  return r;
}

template <class T, class Backend>
void check_channel_grad(const char* name, const Shape& in_shape, const Tensor<T, Backend>& dy) {
  if (in_shape.rank() < 2)
    fail<value_error>(std::string(name) + "::backward", "saved input", "a forward() call first", "none");
  check_same_shape(std::string(name) + "::backward", "grad_output", dy, channel_reduced_shape(in_shape));
}

template <class T, class Backend>
void channel_mean_forward(Backend b, ChannelProblem p, const T* x, T* y) {
  const double inv_c = 1.0 / static_cast<double>(p.c);
  backend::parallel_for(b, p.n * p.s, MMNET_KERNEL(index_t i) {
    const index_t n = i / p.s, v = i - n * p.s;
    const T* xv = x + n * p.c * p.s + v;
    double sum = 0;
    for (index_t c = 0; c < p.c; ++c) sum += static_cast<double>(xv[c * p.s]);
    y[i] = static_cast<T>(sum * inv_c);
  });
}

// dx[n, c, v] = dy[n, v] / C. Backward kernels run one voxel per index too and write its C gradients.
template <class T, class Backend>
void channel_mean_backward(Backend b, ChannelProblem p, const T* dy, T* dx) {
  const double inv_c = 1.0 / static_cast<double>(p.c);
  backend::parallel_for(b, p.n * p.s, MMNET_KERNEL(index_t i) {
    const index_t n = i / p.s, v = i - n * p.s;
    T* dxv = dx + n * p.c * p.s + v;
    const T g = static_cast<T>(static_cast<double>(dy[i]) * inv_c);
    for (index_t c = 0; c < p.c; ++c) dxv[c * p.s] = g;
  });
}

// The first maximal channel per voxel (strict >, so a later equal value does not move it); the first NaN wins.
template <class T, class Backend>
void channel_max_forward(Backend b, ChannelProblem p, const T* x, T* y, std::int64_t* argmax) {
  backend::parallel_for(b, p.n * p.s, MMNET_KERNEL(index_t i) {
    const index_t n = i / p.s, v = i - n * p.s;
    const T* xv = x + n * p.c * p.s + v;
    T best = xv[0];
    index_t best_c = 0;
    for (index_t c = 1; c < p.c; ++c) {
      const T val = xv[c * p.s];
      if (best == best && (val > best || val != val)) {
        best = val;
        best_c = c;
      }
    }
    y[i] = best;
    argmax[i] = best_c;
  });
}

template <class T, class Backend>
void channel_max_backward(Backend b, ChannelProblem p, const T* dy, const std::int64_t* argmax, T* dx) {
  backend::parallel_for(b, p.n * p.s, MMNET_KERNEL(index_t i) {
    const index_t n = i / p.s, v = i - n * p.s;
    T* dxv = dx + n * p.c * p.s + v;
    for (index_t c = 0; c < p.c; ++c) dxv[c * p.s] = argmax[i] == c ? dy[i] : T(0);
  });
}

// Mean and sqrt(population variance + eps) per voxel, two passes over the channels in double.
template <class T, class Backend>
void channel_std_forward(Backend b, ChannelProblem p, double eps, const T* x, T* y, double* mean, double* sd) {
  const double inv_c = 1.0 / static_cast<double>(p.c);
  backend::parallel_for(b, p.n * p.s, MMNET_KERNEL(index_t i) {
    const index_t n = i / p.s, v = i - n * p.s;
    const T* xv = x + n * p.c * p.s + v;
    double sum = 0;
    for (index_t c = 0; c < p.c; ++c) sum += static_cast<double>(xv[c * p.s]);
    const double mu = sum * inv_c;
    double ss = 0;
    for (index_t c = 0; c < p.c; ++c) {
      const double d = static_cast<double>(xv[c * p.s]) - mu;
      ss += d * d;
    }
    const double s = std::sqrt(ss * inv_c + eps);
    mean[i] = mu;
    sd[i] = s;
    y[i] = static_cast<T>(s);
  });
}

template <class T, class Backend>
void channel_std_backward(Backend b, ChannelProblem p, const T* dy, const T* x, const double* mean, const double* sd,
                          T* dx) {
  const double cd = static_cast<double>(p.c);
  backend::parallel_for(b, p.n * p.s, MMNET_KERNEL(index_t i) {
    const index_t n = i / p.s, v = i - n * p.s;
    const index_t off = n * p.c * p.s + v;
    const double g = static_cast<double>(dy[i]) / (cd * sd[i]);
    const double mu = mean[i];
    for (index_t c = 0; c < p.c; ++c) dx[off + c * p.s] = static_cast<T>(g * (static_cast<double>(x[off + c * p.s]) - mu));
  });
}

// cpu overloads: the voxels of one sample are cut into blocks of channel_block; one OpenMP iteration per
// (sample, block) sweeps the channels in order over the block's contiguous voxels (per-voxel accumulators in a
// small array), instead of one voxel reading C addresses D*H*W apart. Each voxel still sums its channels in
// order 0..C-1 in double, so the results are the generic kernels' bit for bit, for any thread count.
inline constexpr index_t channel_block = 512;

template <class F>
void for_each_channel_block(const ChannelProblem& p, F&& f) {
  const index_t nb = (p.s + channel_block - 1) / channel_block;
  const index_t tasks = p.n * nb;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (tasks > 1 && p.n * p.c * p.s >= backend::parallel_grain)
#endif
  for (index_t t = 0; t < tasks; ++t) {
    const index_t n = t / nb, b = t - n * nb;
    const index_t v0 = b * channel_block;
    const index_t len = v0 + channel_block < p.s ? channel_block : p.s - v0;
    f(n, v0, len);
  }
}

template <class T>
void channel_mean_forward(cpu, ChannelProblem p, const T* x, T* y) {
  const double inv_c = 1.0 / static_cast<double>(p.c);
  for_each_channel_block(p, [&](index_t n, index_t v0, index_t len) {
    double acc[channel_block];
    for (index_t j = 0; j < len; ++j) acc[j] = 0;
    for (index_t c = 0; c < p.c; ++c) {
      const T* xc = x + (n * p.c + c) * p.s + v0;
      for (index_t j = 0; j < len; ++j) acc[j] += static_cast<double>(xc[j]);
    }
    T* yv = y + n * p.s + v0;
    for (index_t j = 0; j < len; ++j) yv[j] = static_cast<T>(acc[j] * inv_c);
  });
}

template <class T>
void channel_mean_backward(cpu, ChannelProblem p, const T* dy, T* dx) {
  const double inv_c = 1.0 / static_cast<double>(p.c);
  for_each_channel_block(p, [&](index_t n, index_t v0, index_t len) {
    T g[channel_block];
    const T* dyv = dy + n * p.s + v0;
    for (index_t j = 0; j < len; ++j) g[j] = static_cast<T>(static_cast<double>(dyv[j]) * inv_c);
    for (index_t c = 0; c < p.c; ++c) {
      T* dxc = dx + (n * p.c + c) * p.s + v0;
      for (index_t j = 0; j < len; ++j) dxc[j] = g[j];
    }
  });
}

template <class T>
void channel_max_forward(cpu, ChannelProblem p, const T* x, T* y, std::int64_t* argmax) {
  for_each_channel_block(p, [&](index_t n, index_t v0, index_t len) {
    T* yv = y + n * p.s + v0;
    std::int64_t* av = argmax + n * p.s + v0;
    const T* x0 = x + n * p.c * p.s + v0;
    for (index_t j = 0; j < len; ++j) {
      yv[j] = x0[j];
      av[j] = 0;
    }
    for (index_t c = 1; c < p.c; ++c) {
      const T* xc = x0 + c * p.s;
      for (index_t j = 0; j < len; ++j) {
        const T best = yv[j], val = xc[j];
        if (best == best && (val > best || val != val)) {
          yv[j] = val;
          av[j] = c;
        }
      }
    }
  });
}

template <class T>
void channel_max_backward(cpu, ChannelProblem p, const T* dy, const std::int64_t* argmax, T* dx) {
  for_each_channel_block(p, [&](index_t n, index_t v0, index_t len) {
    const T* dyv = dy + n * p.s + v0;
    const std::int64_t* av = argmax + n * p.s + v0;
    for (index_t c = 0; c < p.c; ++c) {
      T* dxc = dx + (n * p.c + c) * p.s + v0;
      for (index_t j = 0; j < len; ++j) dxc[j] = av[j] == c ? dyv[j] : T(0);
    }
  });
}

template <class T>
void channel_std_forward(cpu, ChannelProblem p, double eps, const T* x, T* y, double* mean, double* sd) {
  const double inv_c = 1.0 / static_cast<double>(p.c);
  for_each_channel_block(p, [&](index_t n, index_t v0, index_t len) {
    double mu[channel_block], ss[channel_block];
    for (index_t j = 0; j < len; ++j) mu[j] = ss[j] = 0;
    const T* x0 = x + n * p.c * p.s + v0;
    for (index_t c = 0; c < p.c; ++c) {
      const T* xc = x0 + c * p.s;
      for (index_t j = 0; j < len; ++j) mu[j] += static_cast<double>(xc[j]);
    }
    for (index_t j = 0; j < len; ++j) mu[j] *= inv_c;
    for (index_t c = 0; c < p.c; ++c) {
      const T* xc = x0 + c * p.s;
      for (index_t j = 0; j < len; ++j) {
        const double d = static_cast<double>(xc[j]) - mu[j];
        ss[j] += d * d;
      }
    }
    const index_t o = n * p.s + v0;
    for (index_t j = 0; j < len; ++j) {
      const double s = std::sqrt(ss[j] * inv_c + eps);
      mean[o + j] = mu[j];
      sd[o + j] = s;
      y[o + j] = static_cast<T>(s);
    }
  });
}

template <class T>
void channel_std_backward(cpu, ChannelProblem p, const T* dy, const T* x, const double* mean, const double* sd,
                          T* dx) {
  const double cd = static_cast<double>(p.c);
  for_each_channel_block(p, [&](index_t n, index_t v0, index_t len) {
    double g[channel_block];
    const index_t o = n * p.s + v0;
    for (index_t j = 0; j < len; ++j) g[j] = static_cast<double>(dy[o + j]) / (cd * sd[o + j]);
    const double* mu = mean + o;
    for (index_t c = 0; c < p.c; ++c) {
      const index_t off = (n * p.c + c) * p.s + v0;
      for (index_t j = 0; j < len; ++j) dx[off + j] = static_cast<T>(g[j] * (static_cast<double>(x[off + j]) - mu[j]));
    }
  });
}

}  // namespace detail

// torch.mean(x, dim=1, keepdim=True); backward spreads dy / C over the channels.
template <class T, class Backend>
class ChannelMean : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  tensor forward(const tensor& x) {
    p_ = detail::channel_problem(name, x);
    tensor y(detail::channel_reduced_shape(x.shape()));
    detail::channel_mean_forward(Backend{}, p_, x.data(), y.data());
    in_shape_ = x.shape();
    return y;
  }

  tensor backward(const tensor& dy) {
    detail::check_channel_grad(name, in_shape_, dy);
    tensor dx(in_shape_);
    detail::channel_mean_backward(Backend{}, p_, dy.data(), dx.data());
    return dx;
  }

 private:
  static constexpr const char* name = "mmnet::nn::ChannelMean";
  detail::ChannelProblem p_;
  Shape in_shape_;
};

// torch.max(x, dim=1, keepdim=True)[0]; backward routes dy to the first maximal channel of each voxel.
template <class T, class Backend>
class ChannelMax : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  using traits = backend_traits<Backend>;

  tensor forward(const tensor& x) {
    p_ = detail::channel_problem(name, x);
    tensor y(detail::channel_reduced_shape(x.shape()));
    argmax_ = traits::template allocate<std::int64_t>(y.numel());
    detail::channel_max_forward(Backend{}, p_, x.data(), y.data(), traits::data(argmax_));
    in_shape_ = x.shape();
    return y;
  }

  tensor backward(const tensor& dy) {
    detail::check_channel_grad(name, in_shape_, dy);
    tensor dx(in_shape_);
    detail::channel_max_backward(Backend{}, p_, dy.data(), traits::data(argmax_), dx.data());
    return dx;
  }

  // The channel index of every maximum of the last forward (torch.max(dim=1)'s indices), copied to the host.
  std::vector<std::int64_t> indices() const {
    const index_t n = in_shape_.rank() >= 2 ? p_.n * p_.s : 0;
    std::vector<std::int64_t> v(static_cast<std::size_t>(n));
    traits::copy_to_host(argmax_, n, v.data());
    return v;
  }

 private:
  static constexpr const char* name = "mmnet::nn::ChannelMax";
  detail::ChannelProblem p_;
  typename traits::template storage<std::int64_t> argmax_;
  Shape in_shape_;
};

// Options of ChannelStd: ChannelStdOptions().eps(1e-6).
struct ChannelStdOptions {
  // Added to the population variance inside the square root; default 1e-6 (MMFNet spec, A9). With 0 a voxel
  // whose channels are all equal has a 0/0 (NaN) gradient, as in PyTorch.
  ChannelStdOptions& eps(double v) { eps_ = v; return *this; }
  double eps() const { return eps_; }

 private:
  double eps_ = 1e-6;
};

// torch.sqrt(x.var(dim=1, unbiased=False, keepdim=True) + eps); dL/dx_c = dy (x_c - mean) / (C s).
template <class T, class Backend>
class ChannelStd : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  using traits = backend_traits<Backend>;

  explicit ChannelStd(const ChannelStdOptions& options = {}) : options_(options) {
    if (!(options.eps() >= 0) || !std::isfinite(options.eps()))
      fail<value_error>(name, "eps", "a finite value >= 0", options.eps());
  }

  tensor forward(const tensor& x) {
    p_ = detail::channel_problem(name, x);
    tensor y(detail::channel_reduced_shape(x.shape()));
    mean_ = traits::template allocate<double>(y.numel());
    std_ = traits::template allocate<double>(y.numel());
    detail::channel_std_forward(Backend{}, p_, options_.eps(), x.data(), y.data(), traits::data(mean_),
                                traits::data(std_));
    x_ = x;
    return y;
  }

  tensor backward(const tensor& dy) {
    detail::check_channel_grad(name, x_.shape(), dy);
    tensor dx(x_.shape());
    detail::channel_std_backward(Backend{}, p_, dy.data(), x_.data(), traits::data(mean_), traits::data(std_),
                                 dx.data());
    return dx;
  }

  const ChannelStdOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::ChannelStd";
  ChannelStdOptions options_;
  detail::ChannelProblem p_;
  tensor x_;
  typename traits::template storage<double> mean_, std_;  // per voxel of the last forward
};

}  // namespace mmnet::nn
