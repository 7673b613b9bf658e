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

// ---- cpu overloads: the same formulas in double, arranged for the vector units. Channel sums use lanes
// independent accumulators over each contiguous (sample, channel) row, added in a fixed order at the end, so
// they vectorise and stay independent of the thread count (they may differ from the generic kernel's
// sequential sums in the last bits). The element-wise kernels run one OpenMP iteration per row with the
// generic per-element arithmetic, so they give the generic kernel's bits.
namespace bn_cpu {
inline constexpr index_t lanes = 8;

// Sum of f(k) over [0, len) into acc[lanes] (acc accumulates across calls).
template <class F>
inline void lane_sum(index_t len, double* acc, F&& f) {
  index_t k = 0;
  for (; k + lanes <= len; k += lanes)
    for (index_t j = 0; j < lanes; ++j) acc[j] += f(k + j);
  for (; k < len; ++k) acc[k % lanes] += f(k);
}
inline double lane_total(const double* acc) {
  double s = 0;
  for (index_t j = 0; j < lanes; ++j) s += acc[j];
  return s;
}

template <class F>
void for_each_row(const BatchNormProblem p, F&& f) {
  const index_t rows = p.n * p.c;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows > 1 && p.numel() >= parallel_grain)
#endif
  for (index_t r = 0; r < rows; ++r) f(r % p.c, r * p.s);
}
}  // namespace bn_cpu

template <class T>
void batch_norm_stats(cpu b, const BatchNormProblem p, const T* x, double eps, double* mean, double* invstd,
                      T* running_mean, T* running_var, double factor) {
  const index_t m = p.per_channel();
  for_each_channel(b, p.c, m, [&](index_t c) {
    double acc[bn_cpu::lanes] = {};
    for (index_t n = 0; n < p.n; ++n) {
      const T* xc = x + (n * p.c + c) * p.s;
      bn_cpu::lane_sum(p.s, acc, [xc](index_t k) { return static_cast<double>(xc[k]); });
    }
    const double mu = bn_cpu::lane_total(acc) / static_cast<double>(m);
    double acc2[bn_cpu::lanes] = {};
    for (index_t n = 0; n < p.n; ++n) {
      const T* xc = x + (n * p.c + c) * p.s;
      bn_cpu::lane_sum(p.s, acc2, [xc, mu](index_t k) {
        const double d = static_cast<double>(xc[k]) - mu;
        return d * d;
      });
    }
    const double ss = bn_cpu::lane_total(acc2);
    const double var = ss / static_cast<double>(m);
    mean[c] = mu;
    invstd[c] = 1.0 / std::sqrt(var + eps);
    if (running_mean != nullptr) {
      const double unbiased = ss / static_cast<double>(m - 1);
      running_mean[c] = static_cast<T>((1.0 - factor) * static_cast<double>(running_mean[c]) + factor * mu);
      running_var[c] = static_cast<T>((1.0 - factor) * static_cast<double>(running_var[c]) + factor * unbiased);
    }
  });
}

template <class T>
void batch_norm_apply(cpu, const BatchNormProblem p, const T* x, const double* mean, const double* invstd,
                      const T* weight, const T* bias, T* y) {
  bn_cpu::for_each_row(p, [&](index_t c, index_t off) {
    const double mu = mean[c], is = invstd[c];
    const T* xr = x + off;
    T* yr = y + off;
    if (weight != nullptr) {
      const double w = static_cast<double>(weight[c]), bb = static_cast<double>(bias[c]);
      for (index_t k = 0; k < p.s; ++k) yr[k] = static_cast<T>(((static_cast<double>(xr[k]) - mu) * is) * w + bb);
    } else {
      for (index_t k = 0; k < p.s; ++k) yr[k] = static_cast<T>((static_cast<double>(xr[k]) - mu) * is);
    }
  });
}

template <class T>
void batch_norm_backward_reduce(cpu b, const BatchNormProblem p, const T* x, const T* dy, const double* mean,
                                const double* invstd, double* sum_dy, double* sum_dy_xhat, T* grad_weight,
                                T* grad_bias) {
  for_each_channel(b, p.c, p.per_channel(), [&](index_t c) {
    double a1[bn_cpu::lanes] = {}, a2[bn_cpu::lanes] = {};
    const double mu = mean[c];
    for (index_t n = 0; n < p.n; ++n) {
      const index_t base = (n * p.c + c) * p.s;
      const T* g = dy + base;
      const T* xr = x + base;
      bn_cpu::lane_sum(p.s, a1, [g](index_t k) { return static_cast<double>(g[k]); });
      bn_cpu::lane_sum(p.s, a2, [g, xr, mu](index_t k) {
        return static_cast<double>(g[k]) * (static_cast<double>(xr[k]) - mu);
      });
    }
    const double sd = bn_cpu::lane_total(a1);
    const double sdx = bn_cpu::lane_total(a2) * invstd[c];
    sum_dy[c] = sd;
    sum_dy_xhat[c] = sdx;
    if (grad_weight != nullptr) grad_weight[c] += static_cast<T>(sdx);
    if (grad_bias != nullptr) grad_bias[c] += static_cast<T>(sd);
  });
}

template <class T>
void batch_norm_backward_input(cpu, const BatchNormProblem p, const T* x, const T* dy, const double* mean,
                               const double* invstd, const T* weight, const double* sum_dy,
                               const double* sum_dy_xhat, bool batch_stats, T* dx) {
  const double inv_m = 1.0 / static_cast<double>(p.per_channel());
  bn_cpu::for_each_row(p, [&](index_t c, index_t off) {
    const double is = invstd[c];
    const double scale = is * (weight != nullptr ? static_cast<double>(weight[c]) : 1.0);
    const T* g = dy + off;
    T* d = dx + off;
    if (batch_stats) {
      const double mu = mean[c], a = sum_dy[c], bb = sum_dy_xhat[c];
      const T* xr = x + off;
      for (index_t k = 0; k < p.s; ++k) {
        const double xhat = (static_cast<double>(xr[k]) - mu) * is;
        d[k] = static_cast<T>(scale * (static_cast<double>(g[k]) - (a + xhat * bb) * inv_m));
      }
    } else {
      for (index_t k = 0; k < p.s; ++k) d[k] = static_cast<T>(scale * static_cast<double>(g[k]));
    }
  });
}

}  // namespace mmnet::backend
