// mmnet/backend/common/pooling.hpp: 3D max pooling kernels for both backends (one body each, run by
// backend::parallel_for). Tensors are viewed as (N*C) planes of D x H x W; padding counts as -inf.
#pragma once
#include <cstdint>
#include <cstring>
#include <limits>

#include "../../core/backends.hpp"
#include "../../core/config.hpp"

namespace mmnet::backend {

// Every pooling kernel's vocabulary: plane count, input and output extents, kernel, stride, padding per axis.
struct Pool3dProblem {
  index_t planes = 0;                // N * C
  index_t id = 0, ih = 0, iw = 0;    // input D, H, W
  index_t od = 0, oh = 0, ow = 0;    // output D, H, W
  index_t kd = 1, kh = 1, kw = 1;    // kernel
  index_t sd = 1, sh = 1, sw = 1;    // stride
  index_t pd = 0, ph = 0, pw = 0;    // padding
  MMNET_HOST_DEVICE index_t in_plane() const { return id * ih * iw; }
  MMNET_HOST_DEVICE index_t out_plane() const { return od * oh * ow; }
};

// floor((in + 2 pad - kernel) / stride) + 1, or <= 0 when the padded input is smaller than the kernel.
inline index_t pool_output_size(index_t in, index_t kernel, index_t stride, index_t pad) {
  const index_t span = in + 2 * pad - kernel;
  return span < 0 ? 0 : span / stride + 1;
}

// One output per index: the maximum over the window and its flat index d*H*W + h*W + w within the input plane.
// Ties keep the first index in window raster order (kd, kh, kw), and a NaN wins, as in PyTorch.
template <class T, class Backend>
void max_pool3d_forward(Backend b, const Pool3dProblem p, const T* x, T* y, std::int64_t* argmax) {
  const index_t out_plane = p.out_plane();
  const index_t in_plane = p.in_plane();
  const T neg_inf = -std::numeric_limits<T>::infinity();  // on the host: no constexpr call in device code
  parallel_for(b, p.planes * out_plane, MMNET_KERNEL(index_t i) {
    const index_t plane = i / out_plane;
    index_t r = i - plane * out_plane;
    const index_t ow = r % p.ow;
    r /= p.ow;
    const index_t oh = r % p.oh;
    const index_t od = r / p.oh;
    // The window clipped to the input; padding <= kernel / 2 keeps it non-empty.
    const index_t d0 = od * p.sd - p.pd, h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
    const index_t d_lo = d0 < 0 ? 0 : d0, h_lo = h0 < 0 ? 0 : h0, w_lo = w0 < 0 ? 0 : w0;
    const index_t d_hi = d0 + p.kd < p.id ? d0 + p.kd : p.id;
    const index_t h_hi = h0 + p.kh < p.ih ? h0 + p.kh : p.ih;
    const index_t w_hi = w0 + p.kw < p.iw ? w0 + p.kw : p.iw;
    const T* xp = x + plane * in_plane;
    T best = neg_inf;
    index_t best_idx = (d_lo * p.ih + h_lo) * p.iw + w_lo;
    for (index_t d = d_lo; d < d_hi; ++d)
      for (index_t h = h_lo; h < h_hi; ++h)
        for (index_t w = w_lo; w < w_hi; ++w) {
          const index_t k = (d * p.ih + h) * p.iw + w;
          const T v = xp[k];
          if (v > best || v != v) {  // strict: an equal later value does not move the argmax
            best = v;
            best_idx = k;
          }
        }
    y[i] = best;
    argmax[i] = best_idx;
  });
}

// cpu: one OpenMP iteration per output row (plane, od, oh), so the index arithmetic runs once per row; the
// window scan and its tie/NaN rules are the generic kernel's, so results are identical.
template <class T>
void max_pool3d_forward(cpu, const Pool3dProblem p, const T* x, T* y, std::int64_t* argmax) {
  const index_t rows = p.planes * p.od * p.oh;
  const index_t in_plane = p.in_plane();
  const T neg_inf = -std::numeric_limits<T>::infinity();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (rows > 1 && rows * p.ow >= parallel_grain)
#endif
  for (index_t row = 0; row < rows; ++row) {
    const index_t plane = row / (p.od * p.oh);
    const index_t r = row - plane * (p.od * p.oh);
    const index_t od = r / p.oh, oh = r - od * p.oh;
    const index_t d0 = od * p.sd - p.pd, h0 = oh * p.sh - p.ph;
    const index_t d_lo = d0 < 0 ? 0 : d0, h_lo = h0 < 0 ? 0 : h0;
    const index_t d_hi = d0 + p.kd < p.id ? d0 + p.kd : p.id;
    const index_t h_hi = h0 + p.kh < p.ih ? h0 + p.kh : p.ih;
    const T* xp = x + plane * in_plane;
    T* yr = y + row * p.ow;
    std::int64_t* ar = argmax + row * p.ow;
    if (d_hi - d_lo == 2 && h_hi - h_lo == 2 && p.kw == 2 && p.sw == 2 && p.pw == 0) {
      // The U-Net 2 x 2 x 2 window (this row's d and h pairs inside the input): the same scan order and
      // update rule, written as selects so the compiler can keep it branch-free.
      const index_t k00 = (d_lo * p.ih + h_lo) * p.iw, k01 = k00 + p.iw, k10 = k00 + p.ih * p.iw, k11 = k10 + p.iw;
      for (index_t ow = 0; ow < p.ow; ++ow) {
        const index_t w = 2 * ow;
        T best = neg_inf;
        index_t idx = k00 + w;
        const index_t ks[8] = {k00 + w, k00 + w + 1, k01 + w, k01 + w + 1, k10 + w, k10 + w + 1, k11 + w, k11 + w + 1};
        for (int q = 0; q < 8; ++q) {
          const T v = xp[ks[q]];
          const bool take = v > best || v != v;
          best = take ? v : best;
          idx = take ? ks[q] : idx;
        }
        yr[ow] = best;
        ar[ow] = idx;
      }
      continue;
    }
    for (index_t ow = 0; ow < p.ow; ++ow) {
      const index_t w0 = ow * p.sw - p.pw;
      const index_t w_lo = w0 < 0 ? 0 : w0;
      const index_t w_hi = w0 + p.kw < p.iw ? w0 + p.kw : p.iw;
      T best = neg_inf;
      index_t best_idx = (d_lo * p.ih + h_lo) * p.iw + w_lo;
      for (index_t d = d_lo; d < d_hi; ++d)
        for (index_t h = h_lo; h < h_hi; ++h) {
          const index_t k0 = (d * p.ih + h) * p.iw;
          for (index_t w = w_lo; w < w_hi; ++w) {
            const T v = xp[k0 + w];
            if (v > best || v != v) {
              best = v;
              best_idx = k0 + w;
            }
          }
        }
      yr[ow] = best;
      ar[ow] = best_idx;
    }
  }
}

// First output index along one axis whose window [o*s - p, o*s - p + k) contains input position x.
MMNET_HOST_DEVICE inline index_t pool_first_window(index_t x, index_t k, index_t s, index_t pad) {
  return x + pad < k ? 0 : (x + pad - k) / s + 1;
}
// Last such output index (before clipping to the output extent).
MMNET_HOST_DEVICE inline index_t pool_last_window(index_t x, index_t s, index_t pad) { return (x + pad) / s; }

// dL/dx, one input element per index: sums dy over the outputs whose window contains the element and whose
// stored argmax is that element. Overlapping windows (stride < kernel) sum without atomics.
template <class T, class Backend>
void max_pool3d_backward(Backend b, const Pool3dProblem p, const T* dy, const std::int64_t* argmax, T* dx) {
  const index_t out_plane = p.out_plane();
  const index_t in_plane = p.in_plane();
  parallel_for(b, p.planes * in_plane, MMNET_KERNEL(index_t i) {
    const index_t plane = i / in_plane;
    const index_t k = i - plane * in_plane;
    const index_t w = k % p.iw;
    const index_t h = (k / p.iw) % p.ih;
    const index_t d = k / (p.iw * p.ih);
    const index_t od_lo = pool_first_window(d, p.kd, p.sd, p.pd), oh_lo = pool_first_window(h, p.kh, p.sh, p.ph),
                  ow_lo = pool_first_window(w, p.kw, p.sw, p.pw);
    index_t od_hi = pool_last_window(d, p.sd, p.pd), oh_hi = pool_last_window(h, p.sh, p.ph),
            ow_hi = pool_last_window(w, p.sw, p.pw);
    if (od_hi > p.od - 1) od_hi = p.od - 1;
    if (oh_hi > p.oh - 1) oh_hi = p.oh - 1;
    if (ow_hi > p.ow - 1) ow_hi = p.ow - 1;
    const index_t base = plane * out_plane;
    double acc = 0;
    for (index_t od = od_lo; od <= od_hi; ++od)
      for (index_t oh = oh_lo; oh <= oh_hi; ++oh)
        for (index_t ow = ow_lo; ow <= ow_hi; ++ow) {
          const index_t o = base + (od * p.oh + oh) * p.ow + ow;
          if (argmax[o] == k) acc += static_cast<double>(dy[o]);
        }
    dx[i] = static_cast<T>(acc);
  });
}

// cpu, windows that do not overlap (stride >= kernel on every axis, the U-Net 2 x 2 x 2 pool): each input
// element is in at most one window, so dx is the plane zeroed and each output's dy written at its argmax,
// one OpenMP iteration per plane (its outputs write only into it). The same values as the generic kernel
// (a single term needs no double sum). Overlapping windows use the generic gather.
template <class T>
void max_pool3d_backward(cpu, const Pool3dProblem p, const T* dy, const std::int64_t* argmax, T* dx) {
  if (p.sd < p.kd || p.sh < p.kh || p.sw < p.kw) {
    max_pool3d_backward<T, cpu>(cpu{}, p, dy, argmax, dx);
    return;
  }
  const index_t out_plane = p.out_plane(), in_plane = p.in_plane();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (p.planes > 1 && p.planes * in_plane >= parallel_grain)
#endif
  for (index_t plane = 0; plane < p.planes; ++plane) {
    T* dxp = dx + plane * in_plane;
    std::memset(static_cast<void*>(dxp), 0, sizeof(T) * static_cast<std::size_t>(in_plane));
    const T* dyp = dy + plane * out_plane;
    const std::int64_t* ap = argmax + plane * out_plane;
    for (index_t o = 0; o < out_plane; ++o) dxp[ap[o]] = dyp[o];
  }
}

}  // namespace mmnet::backend
