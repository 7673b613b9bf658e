// mmnet/backend/common/avg_pooling.hpp: 3D average pooling kernels for both backends (one body each, run by
// backend::parallel_for). Tensors are viewed as (N*C) planes of D x H x W; the problem struct, output sizes and
// window arithmetic are MaxPool3d's (pooling.hpp).
#pragma once
#include <vector>

#include "../../core/backends.hpp"
#include "../../core/config.hpp"
#include "pooling.hpp"

namespace mmnet::backend {

// Divisor of output window (od, oh, ow), as PyTorch's avg_pool3d: with count_include_pad the window clipped to
// the padded input (kd*kh*kw whenever the output size is floored), else only its elements inside the input.
MMNET_HOST_DEVICE inline index_t avg_pool_divisor(const Pool3dProblem& p, bool count_include_pad, index_t od,
                                                  index_t oh, index_t ow) {
  index_t d0 = od * p.sd - p.pd, h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
  index_t d1 = d0 + p.kd < p.id + p.pd ? d0 + p.kd : p.id + p.pd;
  index_t h1 = h0 + p.kh < p.ih + p.ph ? h0 + p.kh : p.ih + p.ph;
  index_t w1 = w0 + p.kw < p.iw + p.pw ? w0 + p.kw : p.iw + p.pw;
  if (count_include_pad) return (d1 - d0) * (h1 - h0) * (w1 - w0);
  d0 = d0 < 0 ? 0 : d0, h0 = h0 < 0 ? 0 : h0, w0 = w0 < 0 ? 0 : w0;
  d1 = d1 < p.id ? d1 : p.id, h1 = h1 < p.ih ? h1 : p.ih, w1 = w1 < p.iw ? w1 : p.iw;
  return (d1 - d0) * (h1 - h0) * (w1 - w0);
}

// One output per index: the sum over the window clipped to the input (padding adds zeros), in double, divided
// by avg_pool_divisor.
template <class T, class Backend>
void avg_pool3d_forward(Backend b, const Pool3dProblem p, bool count_include_pad, const T* x, T* y) {
  const index_t out_plane = p.out_plane();
  const index_t in_plane = p.in_plane();
  parallel_for(b, p.planes * out_plane, MMNET_KERNEL(index_t i) {
    const index_t plane = i / out_plane;
    index_t r = i - plane * out_plane;
    const index_t ow = r % p.ow;
    r /= p.ow;
    const index_t oh = r % p.oh;
    const index_t od = r / p.oh;
    const index_t d0 = od * p.sd - p.pd, h0 = oh * p.sh - p.ph, w0 = ow * p.sw - p.pw;
    const index_t d_lo = d0 < 0 ? 0 : d0, h_lo = h0 < 0 ? 0 : h0, w_lo = w0 < 0 ? 0 : w0;
    const index_t d_hi = d0 + p.kd < p.id ? d0 + p.kd : p.id;
    const index_t h_hi = h0 + p.kh < p.ih ? h0 + p.kh : p.ih;
    const index_t w_hi = w0 + p.kw < p.iw ? w0 + p.kw : p.iw;
    const T* xp = x + plane * in_plane;
    double acc = 0;
    for (index_t d = d_lo; d < d_hi; ++d)
      for (index_t h = h_lo; h < h_hi; ++h) {
        const T* row = xp + (d * p.ih + h) * p.iw;
        for (index_t w = w_lo; w < w_hi; ++w) acc += static_cast<double>(row[w]);
      }
    y[i] = static_cast<T>(acc / static_cast<double>(avg_pool_divisor(p, count_include_pad, od, oh, ow)));
  });
}

// dL/dx, one input element per index: the sum of dy / divisor over the windows that contain the element, so
// overlapping windows (stride < kernel) need no atomics.
template <class T, class Backend>
void avg_pool3d_backward(Backend b, const Pool3dProblem p, bool count_include_pad, const T* dy, T* dx) {
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
    const T* dyp = dy + plane * out_plane;
    double acc = 0;
    for (index_t od = od_lo; od <= od_hi; ++od)
      for (index_t oh = oh_lo; oh <= oh_hi; ++oh)
        for (index_t ow = ow_lo; ow <= ow_hi; ++ow)
          acc += static_cast<double>(dyp[(od * p.oh + oh) * p.ow + ow]) /
                 static_cast<double>(avg_pool_divisor(p, count_include_pad, od, oh, ow));
    dx[i] = static_cast<T>(acc);
  });
}

// cpu: the same sums in the same order, but window ranges and per-axis divisor factors are computed once per
// call (they are separable), and one OpenMP iteration handles a whole (plane, d) slice, so the inner loop has no
// integer divisions. Results equal the generic kernel's bit for bit.
template <class T>
void avg_pool3d_backward(cpu, const Pool3dProblem p, bool count_include_pad, const T* dy, T* dx) {
  struct Axis {
    std::vector<index_t> lo, hi, count;  // per input position: first and last window; per window: its extent
  };
  auto axis = [count_include_pad](index_t in, index_t out, index_t k, index_t s, index_t pad) {
    Axis a;
    a.lo.resize(static_cast<std::size_t>(in));
    a.hi.resize(static_cast<std::size_t>(in));
    a.count.resize(static_cast<std::size_t>(out));
    for (index_t x = 0; x < in; ++x) {
      const index_t hi = pool_last_window(x, s, pad);
      a.lo[static_cast<std::size_t>(x)] = pool_first_window(x, k, s, pad);
      a.hi[static_cast<std::size_t>(x)] = hi < out - 1 ? hi : out - 1;
    }
    for (index_t o = 0; o < out; ++o) {
      index_t start = o * s - pad, end = start + k < in + pad ? start + k : in + pad;
      if (!count_include_pad) {
        start = start < 0 ? 0 : start;
        end = end < in ? end : in;
      }
      a.count[static_cast<std::size_t>(o)] = end - start;
    }
    return a;
  };
  const Axis ad = axis(p.id, p.od, p.kd, p.sd, p.pd), ah = axis(p.ih, p.oh, p.kh, p.sh, p.ph),
             aw = axis(p.iw, p.ow, p.kw, p.sw, p.pw);
  const index_t slices = p.planes * p.id;
  const index_t out_plane = p.out_plane();
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (slices > 1 && slices * p.ih * p.iw >= parallel_grain)
#endif
  for (index_t sl = 0; sl < slices; ++sl) {
    const index_t plane = sl / p.id, d = sl - plane * p.id;
    const T* dyp = dy + plane * out_plane;
    T* dxs = dx + sl * p.ih * p.iw;
    const auto ds = static_cast<std::size_t>(d);
    for (index_t h = 0; h < p.ih; ++h) {
      const auto hs = static_cast<std::size_t>(h);
      for (index_t w = 0; w < p.iw; ++w) {
        const auto ws = static_cast<std::size_t>(w);
        double acc = 0;
        for (index_t od = ad.lo[ds]; od <= ad.hi[ds]; ++od)
          for (index_t oh = ah.lo[hs]; oh <= ah.hi[hs]; ++oh)
            for (index_t ow = aw.lo[ws]; ow <= aw.hi[ws]; ++ow)
              acc += static_cast<double>(dyp[(od * p.oh + oh) * p.ow + ow]) /
                     static_cast<double>(ad.count[static_cast<std::size_t>(od)] * ah.count[static_cast<std::size_t>(oh)] *
                                         aw.count[static_cast<std::size_t>(ow)]);
        dxs[h * p.iw + w] = static_cast<T>(acc);
      }
    }
  }
}

}  // namespace mmnet::backend
