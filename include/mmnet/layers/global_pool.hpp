// mmnet/layers/global_pool.hpp: global pooling over D, H, W per sample and channel, N x C x D x H x W ->
// N x C x 1 x 1 x 1 (dimensions kept), the channel-attention pools of 3D-CBAM (MMFNet) and the image branch of
// ASPP (cascaded FCN):
//   nn::GlobalAvgPool3d  F.adaptive_avg_pool3d(x, 1)
//   nn::GlobalMaxPool3d  F.adaptive_max_pool3d(x, 1): the gradient goes to the argmax, the first index in
//                        raster order on ties (and the last NaN, as PyTorch's CPU kernel)
//   nn::GlobalStdPool3d  sqrt(x.var(dim=(2, 3, 4), unbiased=False, keepdim=True) + eps): population std with eps
//                        inside the square root (default 1e-6, MMFNet spec A9), so an all-constant channel has
//                        std sqrt(eps) and gradient 0 instead of 0/0; ds/dx_i = (x_i - mean) / (K s), K = D*H*W
// Reductions accumulate in double with a fixed two-pass blocking (see broadcast.hpp): deterministic, and the
// N*C outputs of a large volume still give a GPU many parallel blocks.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "../core/module.hpp"
#include "broadcast.hpp"

namespace mmnet::nn {

namespace detail {

template <class T>
struct SquaredDeviationTerm {
  const T* x;
  const double* mean;  // per small element (plane)
  MMNET_HOST_DEVICE double operator()(index_t i, index_t o) const {
    const double d = static_cast<double>(x[i]) - mean[o];
    return d * d;
  }
};

// Per plane of `plane` contiguous elements: the maximum and its index in the plane. Ties keep the first index
// and a NaN replaces the running maximum (so the last NaN wins), as PyTorch's adaptive_max_pool3d on the CPU.
template <class T, class Backend>
void plane_max(Backend b, index_t planes, index_t plane, const T* x, T* y, std::int64_t* argmax) {
  using traits = backend_traits<Backend>;
  const T neg_inf = -std::numeric_limits<T>::infinity();  // on the host: no constexpr call in device code
  const index_t nchunk = plane > reduce_chunk ? (plane + reduce_chunk - 1) / reduce_chunk : 1;
  auto part_v = traits::template allocate<T>(nchunk > 1 ? planes * nchunk : 0);
  auto part_i = traits::template allocate<std::int64_t>(nchunk > 1 ? planes * nchunk : 0);
  T* pv = nchunk > 1 ? traits::data(part_v) : y;
  std::int64_t* pi = nchunk > 1 ? traits::data(part_i) : argmax;
  // Pass 1: each (plane, chunk) scans its chunk in order.
  for_each_heavy(b, planes * nchunk, plane < reduce_chunk ? plane : reduce_chunk, MMNET_KERNEL(index_t j) {
    const index_t o = j / nchunk, c = j - o * nchunk;
    const index_t r0 = c * reduce_chunk;
    const index_t r1 = r0 + reduce_chunk < plane ? r0 + reduce_chunk : plane;
    const T* xp = x + o * plane;
    T best = neg_inf;
    index_t best_idx = r0;
    for (index_t r = r0; r < r1; ++r) {
      const T v = xp[r];
      if (v > best || v != v) {  // strict: an equal later value does not move the argmax
        best = v;
        best_idx = r;
      }
    }
    pv[j] = best;
    pi[j] = best_idx;
  });
  if (nchunk == 1) return;
  // Pass 2: the chunks in order, with the same rule, give the serial scan's answer.
  backend::parallel_for(b, planes, MMNET_KERNEL(index_t o) {
    T best = pv[o * nchunk];
    std::int64_t best_idx = pi[o * nchunk];
    for (index_t c = 1; c < nchunk; ++c) {
      const T v = pv[o * nchunk + c];
      if (v > best || v != v) {
        best = v;
        best_idx = pi[o * nchunk + c];
      }
    }
    y[o] = best;
    argmax[o] = best_idx;
  });
}

// Runs f(i, p) for every element i of `planes` contiguous planes of k elements, p = i / k its plane (the
// pools' backward kernels). The cpu overload loops over planes (cut into pieces for OpenMP) so no element
// pays an integer division and the inner loop vectorises.
template <class Backend, class F>
void for_each_in_planes(Backend b, index_t planes, index_t k, F f) {
  backend::parallel_for(b, planes * k, MMNET_KERNEL(index_t i) { f(i, i / k); });
}
template <class F>
void for_each_in_planes(cpu, index_t planes, index_t k, F f) {
  constexpr index_t piece = index_t(1) << 14;
  const index_t pieces = (k + piece - 1) / piece;
  const index_t tasks = planes * pieces;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (tasks > 1 && planes * k >= backend::parallel_grain)
#endif
  for (index_t t = 0; t < tasks; ++t) {
    const index_t p = t / pieces, k0 = (t - p * pieces) * piece;
    const index_t end = p * k + (k0 + piece < k ? k0 + piece : k);
    for (index_t i = p * k + k0; i < end; ++i) f(i, p);
  }
}

// Checks shared by the three pools; returns N x C x 1 x 1 x 1.
template <class T, class Backend>
Shape global_pool_shape(const char* name, const Tensor<T, Backend>& x) {
  check_rank(name, "input", x, 5);
  if (x.numel() == 0) fail<shape_error>(name, "input", "a non-empty tensor", "shape " + x.shape().str());
  return Shape{x.size(0), x.size(1), 1, 1, 1};
}

template <class T, class Backend>
void check_pool_grad(const char* name, const Shape& in_shape, const Tensor<T, Backend>& dy) {
  if (in_shape.rank() != 5)
    fail<value_error>(std::string(name) + "::backward", "saved input", "a forward() call first", "none");
  check_same_shape(std::string(name) + "::backward", "grad_output", dy, Shape{in_shape[0], in_shape[1], 1, 1, 1});
}

}  // namespace detail

// F.adaptive_avg_pool3d(x, 1): the mean over D, H, W; backward spreads dy / (D*H*W) over the plane.
template <class T, class Backend>
class GlobalAvgPool3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;

  tensor forward(const tensor& x) {
    const Shape out = detail::global_pool_shape(name, x);
    const index_t k = x.size(2) * x.size(3) * x.size(4);
    in_shape_ = x.shape();
    const auto l = detail::broadcast_layout(out, x.shape());
    return detail::tensor_from_sums<T, Backend>(detail::broadcast_reduce(Backend{}, l, detail::SumTerm<T>{x.data()}),
                                                out, 1.0 / static_cast<double>(k));
  }

  tensor backward(const tensor& dy) {
    detail::check_pool_grad(name, in_shape_, dy);
    const index_t k = in_shape_[2] * in_shape_[3] * in_shape_[4];
    const double inv_k = 1.0 / static_cast<double>(k);
    tensor dx(in_shape_);
    const T* pdy = dy.data();
    T* pdx = dx.data();
    detail::for_each_in_planes(Backend{}, dx.numel() / k, k, MMNET_KERNEL(index_t i, index_t p) {
      pdx[i] = static_cast<T>(static_cast<double>(pdy[p]) * inv_k);
    });
    return dx;
  }

 private:
  static constexpr const char* name = "mmnet::nn::GlobalAvgPool3d";
  Shape in_shape_;
};

// F.adaptive_max_pool3d(x, 1): the maximum over D, H, W; backward routes dy to the argmax (first on ties).
template <class T, class Backend>
class GlobalMaxPool3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  using traits = backend_traits<Backend>;

  tensor forward(const tensor& x) {
    const Shape out = detail::global_pool_shape(name, x);
    tensor y(out);
    argmax_ = traits::template allocate<std::int64_t>(y.numel());
    detail::plane_max(Backend{}, y.numel(), x.size(2) * x.size(3) * x.size(4), x.data(), y.data(),
                      traits::data(argmax_));
    in_shape_ = x.shape();
    return y;
  }

  tensor backward(const tensor& dy) {
    detail::check_pool_grad(name, in_shape_, dy);
    const index_t k = in_shape_[2] * in_shape_[3] * in_shape_[4];
    tensor dx(in_shape_);
    const T* pdy = dy.data();
    const std::int64_t* am = traits::data(argmax_);
    T* pdx = dx.data();
    detail::for_each_in_planes(Backend{}, dx.numel() / k, k, MMNET_KERNEL(index_t i, index_t p) {
      pdx[i] = i - p * k == am[p] ? pdy[p] : T(0);
    });
    return dx;
  }

  // The argmax of every (sample, channel) of the last forward as a flat index d*H*W + h*W + w (PyTorch's
  // return_indices), copied to the host.
  std::vector<std::int64_t> indices() const {
    const index_t n = in_shape_.rank() == 5 ? in_shape_[0] * in_shape_[1] : 0;
    std::vector<std::int64_t> v(static_cast<std::size_t>(n));
    traits::copy_to_host(argmax_, n, v.data());
    return v;
  }

 private:
  static constexpr const char* name = "mmnet::nn::GlobalMaxPool3d";
  typename traits::template storage<std::int64_t> argmax_;
  Shape in_shape_;
};

// Options of GlobalStdPool3d: GlobalStdPool3dOptions().eps(1e-6).
struct GlobalStdPool3dOptions {
  // Added to the population variance inside the square root; default 1e-6 (MMFNet spec, A9). With 0 a
  // constant channel has a 0/0 (NaN) gradient, as in PyTorch.
  GlobalStdPool3dOptions& eps(double v) { eps_ = v; return *this; }
  double eps() const { return eps_; }

 private:
  double eps_ = 1e-6;
};

// sqrt(x.var(dim=(2, 3, 4), unbiased=False, keepdim=True) + eps): the population std over D, H, W.
template <class T, class Backend>
class GlobalStdPool3d : public Module<T, Backend> {
 public:
  using tensor = Tensor<T, Backend>;
  using traits = backend_traits<Backend>;

  explicit GlobalStdPool3d(const GlobalStdPool3dOptions& options = {}) : options_(options) {
    if (!(options.eps() >= 0) || !std::isfinite(options.eps()))
      fail<value_error>(name, "eps", "a finite value >= 0", options.eps());
  }

  tensor forward(const tensor& x) {
    const Shape out = detail::global_pool_shape(name, x);
    const index_t k = x.size(2) * x.size(3) * x.size(4);
    const auto l = detail::broadcast_layout(out, x.shape());
    // Two passes (mean, then squared deviations), both in double.
    mean_ = detail::broadcast_reduce(Backend{}, l, detail::SumTerm<T>{x.data()});
    double* mu = traits::data(mean_);
    const double inv_k = 1.0 / static_cast<double>(k);
    backend::parallel_for(Backend{}, l.kept, MMNET_KERNEL(index_t o) { mu[o] *= inv_k; });
    std_ = detail::broadcast_reduce(Backend{}, l, detail::SquaredDeviationTerm<T>{x.data(), mu});
    double* s = traits::data(std_);
    const double eps = options_.eps();
    tensor y(out);
    T* py = y.data();
    backend::parallel_for(Backend{}, l.kept, MMNET_KERNEL(index_t o) {
      s[o] = std::sqrt(s[o] * inv_k + eps);
      py[o] = static_cast<T>(s[o]);
    });
    x_ = x;
    return y;
  }

  // dL/dx_i = dy * (x_i - mean) / (K s).
  tensor backward(const tensor& dy) {
    detail::check_pool_grad(name, x_.shape(), dy);
    const index_t k = x_.size(2) * x_.size(3) * x_.size(4);
    const double kd = static_cast<double>(k);
    tensor dx(x_.shape());
    const T *pdy = dy.data(), *px = x_.data();
    const double *mu = traits::data(mean_), *s = traits::data(std_);
    T* pdx = dx.data();
    detail::for_each_in_planes(Backend{}, dx.numel() / k, k, MMNET_KERNEL(index_t i, index_t p) {
      pdx[i] = static_cast<T>(static_cast<double>(pdy[p]) * (static_cast<double>(px[i]) - mu[p]) / (kd * s[p]));
    });
    return dx;
  }

  const GlobalStdPool3dOptions& options() const { return options_; }

 private:
  static constexpr const char* name = "mmnet::nn::GlobalStdPool3d";
  GlobalStdPool3dOptions options_;
  tensor x_;
  detail::double_storage<Backend> mean_, std_;  // per (sample, channel) of the last forward
};

}  // namespace mmnet::nn
