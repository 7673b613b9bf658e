// mmnet/backend/common/group_stats.hpp: GroupNorm kernels for both backends (one body each, run by
// backend::parallel_for), shared by nn::GroupNorm and nn::InstanceNorm3d (InstanceNorm is GroupNorm with one
// channel per group). The input is viewed as N x C x S (S = product of the trailing extents); a group of sample n
// is the contiguous run of (C/G)*S values starting at (n*C + g*C/G)*S, one "row" of the statistics.
//
// Reductions over a row are split into fixed chunks of group_norm_chunk values: every (row, chunk) partial sum is
// its own parallel index and the partials are then added in chunk order. That keeps a GPU busy when there are
// few rows (N*G = 16 rows of millions of values is typical) and makes the result independent of the thread count.
// All sums run in double (two passes for the variance).
#pragma once
#include <cmath>

#include "../../core/backends.hpp"
#include "../../core/config.hpp"
#include "../../core/tensor.hpp"

namespace mmnet::backend {

// The problem size every GroupNorm kernel takes.
struct GroupNormProblem {
  index_t n = 0;  // batch
  index_t c = 0;  // channels
  index_t g = 0;  // groups; c % g == 0 (InstanceNorm: g == c)
  index_t s = 0;  // values per (sample, channel)
  MMNET_HOST_DEVICE index_t channels_per_group() const { return c / g; }
  MMNET_HOST_DEVICE index_t group_size() const { return (c / g) * s; }  // M, the values behind one statistic
  MMNET_HOST_DEVICE index_t rows() const { return n * g; }
  MMNET_HOST_DEVICE index_t numel() const { return n * c * s; }
};

// Values per partial sum.
inline constexpr index_t group_norm_chunk = 4096;

inline index_t group_norm_chunks(index_t length) { return (length + group_norm_chunk - 1) / group_norm_chunk; }

// Runs f(i) for i in [0, count), each i a loop over about `work` values. The generic form is parallel_for; the cpu
// overload also spreads a few long blocks over OpenMP threads, which parallel_for's grain (counted in indices,
// not values) would keep on one thread.
template <class Backend, class F>
void for_each_block(Backend b, index_t count, index_t work, F&& f) {
  (void)work;
  parallel_for(b, count, f);
}
template <class F>
void for_each_block(cpu, index_t count, index_t work, F&& f) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (count > 1 && count * work >= parallel_grain)
#endif
  for (index_t i = 0; i < count; ++i) f(i);
}

// Per row r: mean[r] and invstd[r] = 1 / sqrt(biased var + eps).
template <class T, class Backend>
void group_norm_stats(Backend b, const GroupNormProblem p, const T* x, double eps, double* mean, double* invstd) {
  const index_t rows = p.rows(), m = p.group_size(), chunks = group_norm_chunks(m), chunk = group_norm_chunk;
  Tensor<double, Backend> work(Shape{rows * chunks});
  double* part = work.data();
  const double inv_m = 1.0 / static_cast<double>(m);
  for_each_block(b, rows * chunks, chunk, MMNET_KERNEL(index_t i) {
    const index_t r = i / chunks, begin = (i % chunks) * chunk;
    const index_t end = begin + chunk < m ? begin + chunk : m;
    const T* xr = x + r * m;
    double s = 0;
    for (index_t j = begin; j < end; ++j) s += static_cast<double>(xr[j]);
    part[i] = s;
  });
  parallel_for(b, rows, MMNET_KERNEL(index_t r) {
    double s = 0;
    for (index_t k = 0; k < chunks; ++k) s += part[r * chunks + k];
    mean[r] = s * inv_m;
  });
  for_each_block(b, rows * chunks, chunk, MMNET_KERNEL(index_t i) {
    const index_t r = i / chunks, begin = (i % chunks) * chunk;
    const index_t end = begin + chunk < m ? begin + chunk : m;
    const T* xr = x + r * m;
    const double mu = mean[r];
    double s = 0;
    for (index_t j = begin; j < end; ++j) {
      const double d = static_cast<double>(xr[j]) - mu;
      s += d * d;
    }
    part[i] = s;
  });
  parallel_for(b, rows, MMNET_KERNEL(index_t r) {
    double s = 0;
    for (index_t k = 0; k < chunks; ++k) s += part[r * chunks + k];
    invstd[r] = 1.0 / std::sqrt(s * inv_m + eps);
  });
}

// y = (x - mean) * invstd * weight[c] + bias[c]; weight and bias may be null (non-affine).
template <class T, class Backend>
void group_norm_apply(Backend b, const GroupNormProblem p, const T* x, const double* mean, const double* invstd,
                      const T* weight, const T* bias, T* y) {
  const index_t m = p.group_size();
  parallel_for(b, p.numel(), MMNET_KERNEL(index_t i) {
    const index_t r = i / m, c = (i / p.s) % p.c;
    double v = (static_cast<double>(x[i]) - mean[r]) * invstd[r];
    if (weight != nullptr) v *= static_cast<double>(weight[c]);
    if (bias != nullptr) v += static_cast<double>(bias[c]);
    y[i] = static_cast<T>(v);
  });
}

// The second half of group_norm_backward_reduce (shared with the cpu fast path): per (sample, channel) k the
// chunk partial sums in chunk order, so the result does not depend on the thread count.
template <class Backend>
void group_norm_combine_partials(Backend b, const GroupNormProblem p, index_t chunks, const double* part_dy,
                                 const double* part_dyx, const double* invstd, double* sum_dy, double* sum_dy_xhat) {
  const index_t cpg = p.channels_per_group();
  parallel_for(b, p.n * p.c, MMNET_KERNEL(index_t k) {
    const index_t r = (k / p.c) * p.g + (k % p.c) / cpg;
    double sd = 0, sdx = 0;
    for (index_t j = 0; j < chunks; ++j) {
      sd += part_dy[k * chunks + j];
      sdx += part_dyx[k * chunks + j];
    }
    sum_dy[k] = sd;
    sum_dy_xhat[k] = sdx * invstd[r];
  });
}

// Per (sample, channel) k = n*C + c: sum_dy[k] = sum(dy), sum_dy_xhat[k] = sum(dy * xhat) over the S values,
// xhat = (x - mean) * invstd with the statistics of the channel's group.
template <class T, class Backend>
void group_norm_backward_reduce(Backend b, const GroupNormProblem p, const T* x, const T* dy, const double* mean,
                                const double* invstd, double* sum_dy, double* sum_dy_xhat) {
  const index_t planes = p.n * p.c, chunks = group_norm_chunks(p.s), chunk = group_norm_chunk;
  const index_t cpg = p.channels_per_group();
  Tensor<double, Backend> work(Shape{2 * planes * chunks});
  double* part_dy = work.data();
  double* part_dyx = part_dy + planes * chunks;
  for_each_block(b, planes * chunks, chunk, MMNET_KERNEL(index_t i) {
    const index_t k = i / chunks, begin = (i % chunks) * chunk;
    const index_t end = begin + chunk < p.s ? begin + chunk : p.s;
    const index_t r = (k / p.c) * p.g + (k % p.c) / cpg;
    const double mu = mean[r];
    const T* xk = x + k * p.s;
    const T* gk = dy + k * p.s;
    double sd = 0, sdx = 0;
    for (index_t j = begin; j < end; ++j) {
      const double g = static_cast<double>(gk[j]);
      sd += g;
      sdx += g * (static_cast<double>(xk[j]) - mu);
    }
    part_dy[i] = sd;
    part_dyx[i] = sdx;
  });
  group_norm_combine_partials(b, p, chunks, part_dy, part_dyx, invstd, sum_dy, sum_dy_xhat);
}

// grad_weight[c] += sum_n sum_dy_xhat[n, c] and grad_bias[c] += sum_n sum_dy[n, c]; either may be null
// (frozen or absent parameters get nothing).
template <class T, class Backend>
void group_norm_param_grads(Backend b, const GroupNormProblem p, const double* sum_dy, const double* sum_dy_xhat,
                            T* grad_weight, T* grad_bias) {
  parallel_for(b, p.c, MMNET_KERNEL(index_t c) {
    double gw = 0, gb = 0;
    for (index_t n = 0; n < p.n; ++n) {
      gw += sum_dy_xhat[n * p.c + c];
      gb += sum_dy[n * p.c + c];
    }
    if (grad_weight != nullptr) grad_weight[c] += static_cast<T>(gw);
    if (grad_bias != nullptr) grad_bias[c] += static_cast<T>(gb);
  });
}

// dL/dx. With g = dy * weight[c] (the gradient with respect to xhat) and per-row sums A = sum(g), B = sum(g xhat):
//   dx = invstd * (g - (A + xhat * B) / M),   M = (C/G) * S.
template <class T, class Backend>
void group_norm_backward_input(Backend b, const GroupNormProblem p, const T* x, const T* dy, const double* mean,
                               const double* invstd, const T* weight, const double* sum_dy,
                               const double* sum_dy_xhat, T* dx) {
  const index_t rows = p.rows(), m = p.group_size(), cpg = p.channels_per_group();
  Tensor<double, Backend> work(Shape{2 * rows});
  double* row_a = work.data();
  double* row_b = row_a + rows;
  parallel_for(b, rows, MMNET_KERNEL(index_t r) {
    const index_t n = r / p.g, c0 = (r % p.g) * cpg;
    double a = 0, bb = 0;
    for (index_t c = c0; c < c0 + cpg; ++c) {
      const double w = weight != nullptr ? static_cast<double>(weight[c]) : 1.0;
      a += w * sum_dy[n * p.c + c];
      bb += w * sum_dy_xhat[n * p.c + c];
    }
    row_a[r] = a;
    row_b[r] = bb;
  });
  const double inv_m = 1.0 / static_cast<double>(m);
  parallel_for(b, p.numel(), MMNET_KERNEL(index_t i) {
    const index_t r = i / m, c = (i / p.s) % p.c;
    const double w = weight != nullptr ? static_cast<double>(weight[c]) : 1.0;
    const double xhat = (static_cast<double>(x[i]) - mean[r]) * invstd[r];
    const double g = static_cast<double>(dy[i]) * w;
    dx[i] = static_cast<T>(invstd[r] * (g - (row_a[r] + xhat * row_b[r]) * inv_m));
  });
}

}  // namespace mmnet::backend
