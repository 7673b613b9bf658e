// mmnet/backend/common/batchnorm.hpp: BatchNorm kernels for both backends (one body each, run by
// backend::parallel_for). The input is viewed as N x C x S (S = D*H*W); per-channel reductions run one channel
// per parallel index and accumulate in double, so results do not depend on the thread count.
#pragma once
#include <cmath>

#include "../../core/backends.hpp"
#include "../../core/config.hpp"

namespace mmnet::backend {

// The problem size every BatchNorm kernel takes: N x C x S with S the product of the spatial extents.
struct BatchNormProblem {
  index_t n = 0;  // batch
  index_t c = 0;  // channels
  index_t s = 0;  // spatial elements per (sample, channel)
  MMNET_HOST_DEVICE index_t per_channel() const { return n * s; }
  MMNET_HOST_DEVICE index_t numel() const { return n * c * s; }
};

// Runs f(c) once per channel. The generic form is parallel_for; the cpu overload spreads channels over OpenMP
// threads even when there are fewer channels than parallel_for's grain, since each channel is a long loop.
template <class Backend, class F>
void for_each_channel(Backend b, index_t channels, index_t work_per_channel, F&& f) {
  (void)work_per_channel;
  parallel_for(b, channels, f);
}
template <class F>
void for_each_channel(cpu, index_t channels, index_t work_per_channel, F&& f) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (channels > 1 && channels * work_per_channel >= parallel_grain)
#endif
  for (index_t c = 0; c < channels; ++c) f(c);
}

// Batch statistics per channel: mean and 1/sqrt(biased var + eps) (two passes, in double). When running_mean
// is not null, the running statistics are updated with the given factor and the unbiased variance, as
// PyTorch does: r = (1 - f) r + f stat.
template <class T, class Backend>
void batch_norm_stats(Backend b, const BatchNormProblem p, const T* x, double eps, double* mean, double* invstd,
                      T* running_mean, T* running_var, double factor) {
  const index_t m = p.per_channel();
  for_each_channel(b, p.c, m, MMNET_KERNEL(index_t c) {
    double sum = 0;
    for (index_t n = 0; n < p.n; ++n) {
      const T* xc = x + (n * p.c + c) * p.s;
      for (index_t k = 0; k < p.s; ++k) sum += static_cast<double>(xc[k]);
    }
    const double mu = sum / static_cast<double>(m);
    double ss = 0;
    for (index_t n = 0; n < p.n; ++n) {
      const T* xc = x + (n * p.c + c) * p.s;
      for (index_t k = 0; k < p.s; ++k) {
        const double d = static_cast<double>(xc[k]) - mu;
        ss += d * d;
      }
    }
    const double var = ss / static_cast<double>(m);
    mean[c] = mu;
    invstd[c] = 1.0 / std::sqrt(var + eps);
    if (running_mean != nullptr) {
      // m > 1 is checked by the caller in train mode.
      const double unbiased = ss / static_cast<double>(m - 1);
      running_mean[c] = static_cast<T>((1.0 - factor) * static_cast<double>(running_mean[c]) + factor * mu);
      running_var[c] = static_cast<T>((1.0 - factor) * static_cast<double>(running_var[c]) + factor * unbiased);
    }
  });
}

// Eval-mode statistics: mean = running_mean, invstd = 1/sqrt(running_var + eps).
template <class T, class Backend>
void batch_norm_running_stats(Backend b, index_t channels, const T* running_mean, const T* running_var, double eps,
                              double* mean, double* invstd) {
  parallel_for(b, channels, MMNET_KERNEL(index_t c) {
    mean[c] = static_cast<double>(running_mean[c]);
    invstd[c] = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
  });
}

// y = (x - mean) * invstd * weight + bias, element-wise; weight and bias may be null (non-affine).
template <class T, class Backend>
void batch_norm_apply(Backend b, const BatchNormProblem p, const T* x, const double* mean, const double* invstd,
                      const T* weight, const T* bias, T* y) {
  parallel_for(b, p.numel(), MMNET_KERNEL(index_t i) {
    const index_t c = (i / p.s) % p.c;
    double v = (static_cast<double>(x[i]) - mean[c]) * invstd[c];
    if (weight != nullptr) v = v * static_cast<double>(weight[c]) + static_cast<double>(bias[c]);
    y[i] = static_cast<T>(v);
  });
}

// Per channel: sum_dy = sum(dy), sum_dy_xhat = sum(dy * xhat) with xhat = (x - mean) * invstd. Adds them into
// grad_bias and grad_weight when those are not null (frozen or absent parameters get nothing).
template <class T, class Backend>
void batch_norm_backward_reduce(Backend b, const BatchNormProblem p, const T* x, const T* dy, const double* mean,
                                const double* invstd, double* sum_dy, double* sum_dy_xhat, T* grad_weight,
                                T* grad_bias) {
  for_each_channel(b, p.c, p.per_channel(), MMNET_KERNEL(index_t c) {
    double sd = 0, sdx = 0;
    const double mu = mean[c];
    for (index_t n = 0; n < p.n; ++n) {
      const index_t base = (n * p.c + c) * p.s;
      for (index_t k = 0; k < p.s; ++k) {
        const double g = static_cast<double>(dy[base + k]);
        sd += g;
        sdx += g * (static_cast<double>(x[base + k]) - mu);
      }
    }
    sdx *= invstd[c];
    sum_dy[c] = sd;
    sum_dy_xhat[c] = sdx;
    if (grad_weight != nullptr) grad_weight[c] += static_cast<T>(sdx);
    if (grad_bias != nullptr) grad_bias[c] += static_cast<T>(sd);
  });
}

// dL/dx. With batch statistics (train mode) the mean and variance depend on x:
//   dx = w * invstd * (dy - sum_dy / M - xhat * sum_dy_xhat / M),   M = N * S;
// with running statistics (eval mode) the layer is affine: dx = w * invstd * dy (sums unused, may be null).
template <class T, class Backend>
void batch_norm_backward_input(Backend b, const BatchNormProblem p, const T* x, const T* dy, const double* mean,
                               const double* invstd, const T* weight, const double* sum_dy,
                               const double* sum_dy_xhat, bool batch_stats, T* dx) {
  const double inv_m = 1.0 / static_cast<double>(p.per_channel());
  parallel_for(b, p.numel(), MMNET_KERNEL(index_t i) {
    const index_t c = (i / p.s) % p.c;
    const double scale = invstd[c] * (weight != nullptr ? static_cast<double>(weight[c]) : 1.0);
    double g = static_cast<double>(dy[i]);
    if (batch_stats) {
      const double xhat = (static_cast<double>(x[i]) - mean[c]) * invstd[c];
      g -= (sum_dy[c] + xhat * sum_dy_xhat[c]) * inv_m;
    }
    dx[i] = static_cast<T>(scale * g);
  });
}

}  // namespace mmnet::backend
