// mmnet/backend/cpu/upsample.hpp: the cpu fast path of trilinear interpolation (overloads on the cpu tag of the
// generic kernels in backend/common/interpolate.hpp, which the cuda backend keeps).
//
// The generic kernels run one index per value and decode it with three divisions, reloading the d and h tables
// for every value. Here one OpenMP index is a whole W row: forward, the four source rows and the d/h weights are
// fixed per output row and the inner loop runs over ow alone; backward, one input row (plane, d, h) accumulates
// the W sums of every output row in its (od, oh) ranges into per-thread row buffers. The arithmetic per value and
// its order are the generic kernels' (double, w inside h inside d), so the results agree to rounding (they are
// equal unless the compiler contracts a multiply-add differently).
#pragma once
#include <vector>

#include "../common/interpolate.hpp"
#include "memory.hpp"

namespace mmnet::backend {

template <class T>
void trilinear_forward(cpu, const Interp3dProblem p, const T* x, T* y) {
  const index_t out_plane = p.out_plane(), in_plane = p.in_plane(), od_oh = p.out[0] * p.out[1];
  const index_t rows = p.planes * od_oh, width = p.out[2], in_w = p.in[2];
  const std::int64_t *i0w = p.i0[2], *i1w = p.i1[2];
  const double *l0w = p.l0[2], *l1w = p.l1[2];
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows > 1 && rows * width >= parallel_grain)
#endif
  for (index_t row = 0; row < rows; ++row) {
    const index_t plane = row / od_oh, rem = row - plane * od_oh, od = rem / p.out[1], oh = rem - od * p.out[1];
    const T* xp = x + plane * in_plane;
    const index_t d0 = p.i0[0][od] * p.in[1], d1 = p.i1[0][od] * p.in[1];
    const index_t h0 = p.i0[1][oh], h1 = p.i1[1][oh];
    const double ld0 = p.l0[0][od], ld1 = p.l1[0][od], lh0 = p.l0[1][oh], lh1 = p.l1[1][oh];
    const T* __restrict r00 = xp + (d0 + h0) * in_w;
    const T* __restrict r01 = xp + (d0 + h1) * in_w;
    const T* __restrict r10 = xp + (d1 + h0) * in_w;
    const T* __restrict r11 = xp + (d1 + h1) * in_w;
    T* __restrict yr = y + plane * out_plane + (od * p.out[1] + oh) * width;
    for (index_t ow = 0; ow < width; ++ow) {
      const index_t w0 = i0w[ow], w1 = i1w[ow];
      const double lw0 = l0w[ow], lw1 = l1w[ow];
      const double v0 = lh0 * lerp_row(r00, w0, w1, lw0, lw1) + lh1 * lerp_row(r01, w0, w1, lw0, lw1);
      const double v1 = lh0 * lerp_row(r10, w0, w1, lw0, lw1) + lh1 * lerp_row(r11, w0, w1, lw0, lw1);
      yr[ow] = static_cast<T>(ld0 * v0 + ld1 * v1);
    }
  }
}

template <class T>
void trilinear_backward(cpu, const Interp3dProblem p, const T* dy, T* dx) {
  const index_t out_plane = p.out_plane(), in_plane = p.in_plane(), dh = p.in[0] * p.in[1];
  const index_t rows = p.planes * dh, width = p.in[2], out_w = p.out[2];
#if defined(_OPENMP)
#pragma omp parallel if (rows > 1 && p.planes * out_plane >= parallel_grain)
#endif
  {
    std::vector<double> acc(static_cast<std::size_t>(width)), acc_h(static_cast<std::size_t>(width));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index_t row = 0; row < rows; ++row) {
      const index_t plane = row / dh, rem = row - plane * dh, d = rem / p.in[1], h = rem - d * p.in[1];
      const T* g = dy + plane * out_plane;
      for (index_t w = 0; w < width; ++w) acc[w] = 0;
      for (index_t od = p.first[0][d]; od < p.last[0][d]; ++od) {
        const double wd = (p.i0[0][od] == d ? p.l0[0][od] : 0.0) + (p.i1[0][od] == d ? p.l1[0][od] : 0.0);
        for (index_t w = 0; w < width; ++w) acc_h[w] = 0;
        for (index_t oh = p.first[1][h]; oh < p.last[1][h]; ++oh) {
          const double wh = (p.i0[1][oh] == h ? p.l0[1][oh] : 0.0) + (p.i1[1][oh] == h ? p.l1[1][oh] : 0.0);
          const T* gr = g + (od * p.out[1] + oh) * out_w;
          for (index_t w = 0; w < width; ++w) {
            double acc_w = 0;
            for (index_t ow = p.first[2][w]; ow < p.last[2][w]; ++ow) {
              const double ww = (p.i0[2][ow] == w ? p.l0[2][ow] : 0.0) + (p.i1[2][ow] == w ? p.l1[2][ow] : 0.0);
              acc_w += ww * static_cast<double>(gr[ow]);
            }
            acc_h[w] += wh * acc_w;
          }
        }
        for (index_t w = 0; w < width; ++w) acc[w] += wd * acc_h[w];
      }
      T* dr = dx + plane * in_plane + (d * p.in[1] + h) * width;
      for (index_t w = 0; w < width; ++w) dr[w] = static_cast<T>(acc[w]);
    }
  }
}

}  // namespace mmnet::backend
