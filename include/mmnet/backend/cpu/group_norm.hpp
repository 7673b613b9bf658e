// mmnet/backend/cpu/group_norm.hpp: the cpu fast path of GroupNorm / InstanceNorm (overloads on the cpu tag of
// backend/common/group_stats.hpp's generic kernels, which the cuda backend keeps).
//
// The generic kernels run one index per value, with two integer divisions and double arithmetic each. Here every
// (sample, channel) plane of S contiguous values is one inner loop: its per-plane constants are computed once in
// double, then the loop runs over restrict pointers in double (vectorised by the compiler: converts, multiplies
// and adds; in T a float input far from its mean would lose the digits x - mean cancels). Sums run in double
// too, in `lanes` independent accumulators added in a fixed order, over the same fixed chunks as the generic
// kernels, so results are bit-identical for any thread count (they differ from the generic
// kernels' by rounding only: a different summation order, and per-plane constants such as invstd * weight).
#pragma once
#include <cmath>

#include "../common/group_stats.hpp"
#include "memory.hpp"

namespace mmnet::backend {
namespace cpu_group_norm {

// Independent double accumulators per sum: enough to hide the add latency and fill an AVX-512 register.
inline constexpr int lanes = 8;

// sum(x[j]) over [0, n), in double.
template <class T>
inline double sum(const T* __restrict x, index_t n) {
  double acc[lanes] = {};
  index_t j = 0;
  for (; j + lanes <= n; j += lanes)
    for (int l = 0; l < lanes; ++l) acc[l] += static_cast<double>(x[j + l]);
  double s = 0;
  for (int l = 0; l < lanes; ++l) s += acc[l];
  for (; j < n; ++j) s += static_cast<double>(x[j]);
  return s;
}

// sum((x[j] - mu)^2) over [0, n), in double.
template <class T>
inline double sum_sq_dev(const T* __restrict x, index_t n, double mu) {
  double acc[lanes] = {};
  index_t j = 0;
  for (; j + lanes <= n; j += lanes)
    for (int l = 0; l < lanes; ++l) {
      const double d = static_cast<double>(x[j + l]) - mu;
      acc[l] += d * d;
    }
  double s = 0;
  for (int l = 0; l < lanes; ++l) s += acc[l];
  for (; j < n; ++j) {
    const double d = static_cast<double>(x[j]) - mu;
    s += d * d;
  }
  return s;
}

// sd = sum(g[j]), sdx = sum(g[j] * (x[j] - mu)) over [0, n), in double.
template <class T>
inline void sum_dy_dyx(const T* __restrict x, const T* __restrict g, index_t n, double mu, double& sd, double& sdx) {
  double a[lanes] = {}, b[lanes] = {};
  index_t j = 0;
  for (; j + lanes <= n; j += lanes)
    for (int l = 0; l < lanes; ++l) {
      const double gv = static_cast<double>(g[j + l]);
      a[l] += gv;
      b[l] += gv * (static_cast<double>(x[j + l]) - mu);
    }
  double s0 = 0, s1 = 0;
  for (int l = 0; l < lanes; ++l) {
    s0 += a[l];
    s1 += b[l];
  }
  for (; j < n; ++j) {
    const double gv = static_cast<double>(g[j]);
    s0 += gv;
    s1 += gv * (static_cast<double>(x[j]) - mu);
  }
  sd = s0;
  sdx = s1;
}

// y[j] = (x[j] - m) * a + c over [0, n), in double (in T, a float input far from its mean would lose the
// digits that x - m cancels).
template <class T>
inline void affine(const T* __restrict x, index_t n, double m, double a, double c, T* __restrict y) {
  for (index_t j = 0; j < n; ++j) y[j] = static_cast<T>((static_cast<double>(x[j]) - m) * a + c);
}

// dx[j] = is * ((dy[j] w - a) - (x[j] - m) b) over [0, n), in double, nested as the generic kernel so that what
// cancels there cancels here (e.g. exactly 0 for one value per group).
template <class T>
inline void backward_input(const T* __restrict x, const T* __restrict dy, index_t n, double m, double is, double w,
                           double a, double b, T* __restrict dx) {
  for (index_t j = 0; j < n; ++j)
    dx[j] = static_cast<T>(is * ((static_cast<double>(dy[j]) * w - a) - (static_cast<double>(x[j]) - m) * b));
}

}  // namespace cpu_group_norm

template <class T>
void group_norm_stats(cpu, const GroupNormProblem p, const T* x, double eps, double* mean, double* invstd) {
  const index_t rows = p.rows(), m = p.group_size(), chunks = group_norm_chunks(m), chunk = group_norm_chunk;
  Tensor<double, cpu> work(Shape{rows * chunks});
  double* part = work.data();
  const double inv_m = 1.0 / static_cast<double>(m);
  for_each_block(cpu{}, rows * chunks, chunk, [=](index_t i) {
    const index_t r = i / chunks, begin = (i % chunks) * chunk;
    const index_t end = begin + chunk < m ? begin + chunk : m;
    part[i] = cpu_group_norm::sum(x + r * m + begin, end - begin);
  });
  for (index_t r = 0; r < rows; ++r) {
    double s = 0;
    for (index_t k = 0; k < chunks; ++k) s += part[r * chunks + k];
    mean[r] = s * inv_m;
  }
  for_each_block(cpu{}, rows * chunks, chunk, [=](index_t i) {
    const index_t r = i / chunks, begin = (i % chunks) * chunk;
    const index_t end = begin + chunk < m ? begin + chunk : m;
    part[i] = cpu_group_norm::sum_sq_dev(x + r * m + begin, end - begin, mean[r]);
  });
  for (index_t r = 0; r < rows; ++r) {
    double s = 0;
    for (index_t k = 0; k < chunks; ++k) s += part[r * chunks + k];
    invstd[r] = 1.0 / std::sqrt(s * inv_m + eps);
  }
}

template <class T>
void group_norm_apply(cpu, const GroupNormProblem p, const T* x, const double* mean, const double* invstd,
                      const T* weight, const T* bias, T* y) {
  const index_t planes = p.n * p.c, s = p.s, cpg = p.channels_per_group();
  for_each_block(cpu{}, planes, s, [=](index_t k) {
    const index_t c = k % p.c, r = (k / p.c) * p.g + c / cpg;
    const double w = weight != nullptr ? static_cast<double>(weight[c]) : 1.0;
    const double shift = bias != nullptr ? static_cast<double>(bias[c]) : 0.0;
    cpu_group_norm::affine(x + k * s, s, mean[r], invstd[r] * w, shift, y + k * s);
  });
}

template <class T>
void group_norm_backward_reduce(cpu, const GroupNormProblem p, const T* x, const T* dy, const double* mean,
                                const double* invstd, double* sum_dy, double* sum_dy_xhat) {
  const index_t planes = p.n * p.c, chunks = group_norm_chunks(p.s), chunk = group_norm_chunk;
  const index_t cpg = p.channels_per_group();
  Tensor<double, cpu> work(Shape{2 * planes * chunks});
  double* part_dy = work.data();
  double* part_dyx = part_dy + planes * chunks;
  for_each_block(cpu{}, planes * chunks, chunk, [=](index_t i) {
    const index_t k = i / chunks, begin = (i % chunks) * chunk;
    const index_t end = begin + chunk < p.s ? begin + chunk : p.s;
    const index_t r = (k / p.c) * p.g + (k % p.c) / cpg;
    cpu_group_norm::sum_dy_dyx(x + k * p.s + begin, dy + k * p.s + begin, end - begin, mean[r], part_dy[i],
                               part_dyx[i]);
  });
  group_norm_combine_partials(cpu{}, p, chunks, part_dy, part_dyx, invstd, sum_dy, sum_dy_xhat);
}

// dx = invstd * (dy w - (A + xhat B) / M) = invstd * ((dy w - A / M) - (x - mean) (invstd B / M)), with A and B
// the row sums of the generic kernel (computed per plane here, in the same order).
template <class T>
void group_norm_backward_input(cpu, const GroupNormProblem p, const T* x, const T* dy, const double* mean,
                               const double* invstd, const T* weight, const double* sum_dy,
                               const double* sum_dy_xhat, T* dx) {
  const index_t planes = p.n * p.c, s = p.s, cpg = p.channels_per_group();
  const double inv_m = 1.0 / static_cast<double>(p.group_size());
  for_each_block(cpu{}, planes, s, [=](index_t k) {
    const index_t n = k / p.c, c = k % p.c, r = n * p.g + c / cpg, c0 = (c / cpg) * cpg;
    double a = 0, bb = 0;
    for (index_t cc = c0; cc < c0 + cpg; ++cc) {
      const double w = weight != nullptr ? static_cast<double>(weight[cc]) : 1.0;
      a += w * sum_dy[n * p.c + cc];
      bb += w * sum_dy_xhat[n * p.c + cc];
    }
    const double is = invstd[r];
    const double w = weight != nullptr ? static_cast<double>(weight[c]) : 1.0;
    cpu_group_norm::backward_input(x + k * s, dy + k * s, s, mean[r], is, w, a * inv_m, is * bb * inv_m, dx + k * s);
  });
}

}  // namespace mmnet::backend
