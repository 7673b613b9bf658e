// mmnet/backend/cpu/conv3d.hpp: the cpu fast path of Conv3d (same signatures as the generic kernels in
// backend/common/conv3d.hpp, overloaded on the cpu tag).
//
// All three passes are direct convolutions over a zero-padded copy of the input, so the inner loops have no
// bounds checks and run along the contiguous W axis in xsimd batches (full batches, then a scalar tail):
//   forward          y = conv(pad(x), w)                                    (stride_w == 1, else generic)
//   backward-data    dx = conv(pad(upsample(dy, s)), flip(w)^T), stride 1   (any stride: zeros are inserted)
//   backward-weight  dw[k,c,tap] += sum over rows of dot(dy row, x row)     (stride_w == 1, else generic)
// OpenMP splits the outputs (rows, or blocks of weight elements) between threads; each is summed by
// one thread in a fixed order, so results do not depend on the thread count.
//
// Precision: forward and backward-data sum C*kd*kh*kw (resp. K*kd*kh*kw) products in T, as every conv
// library does; backward-weight sums each W row in T and the rows (up to N*OD*OH of them) in double.
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../common/conv3d.hpp"
#include "memory.hpp"

namespace mmnet::backend {
namespace cpu_conv3d {

template <class T>
using buffer = std::vector<T, xsimd::aligned_allocator<T>>;

// A direct convolution over an input that needs no bounds checks (already padded), stride 1 along W:
//   y[n,k,od,oh,ow] = bias[k] + sum_{c,a,b,e} x[n, c, od*sd + a*dd, oh*sh + b*dh, ow + e*dw] * w[k,c,a,b,e]
struct DirectConv {
  index_t N, Cin, Dp, Hp, Wp;  // (padded) input
  index_t Cout;
  index_t kd, kh, kw, sd, sh, dd, dh, dw;
  index_t OD, OH, OW;
};

// Register-blocked rows: KB output channels times two batches of W share every input load.
template <class T, int KB>
void direct_rows(const DirectConv& g, const T* xn, const T* wk, const T* bias, T* yk, index_t od, index_t oh) {
  using B = xsimd::batch<T>;
  constexpr index_t L = static_cast<index_t>(B::size);
  const index_t wstride = g.Cin * g.kd * g.kh * g.kw;
  const index_t ystride = g.OD * g.OH * g.OW;
  const index_t plane = g.Hp * g.Wp, chan = g.Dp * plane;
  const T* xbase = xn + od * g.sd * plane + oh * g.sh * g.Wp;
  T* yrow[KB];
  T bv[KB];
  for (int kb = 0; kb < KB; ++kb) {
    yrow[kb] = yk + kb * ystride + (od * g.OH + oh) * g.OW;
    bv[kb] = bias ? bias[kb] : T(0);
  }
  index_t ow = 0;
  for (; ow + 2 * L <= g.OW; ow += 2 * L) {
    B acc0[KB], acc1[KB];
    for (int kb = 0; kb < KB; ++kb) acc0[kb] = acc1[kb] = B(bv[kb]);
    for (index_t c = 0; c < g.Cin; ++c)
      for (index_t a = 0; a < g.kd; ++a)
        for (index_t b = 0; b < g.kh; ++b) {
          const T* xr = xbase + c * chan + a * g.dd * plane + b * g.dh * g.Wp + ow;
          const T* wr = wk + ((c * g.kd + a) * g.kh + b) * g.kw;
          for (index_t e = 0; e < g.kw; ++e) {
            const B x0 = B::load_unaligned(xr + e * g.dw);
            const B x1 = B::load_unaligned(xr + e * g.dw + L);
            for (int kb = 0; kb < KB; ++kb) {
              const B wv(wr[kb * wstride + e]);
              acc0[kb] += wv * x0;
              acc1[kb] += wv * x1;
            }
          }
        }
    for (int kb = 0; kb < KB; ++kb) {
      acc0[kb].store_unaligned(yrow[kb] + ow);
      acc1[kb].store_unaligned(yrow[kb] + ow + L);
    }
  }
  for (; ow + L <= g.OW; ow += L) {
    B acc[KB];
    for (int kb = 0; kb < KB; ++kb) acc[kb] = B(bv[kb]);
    for (index_t c = 0; c < g.Cin; ++c)
      for (index_t a = 0; a < g.kd; ++a)
        for (index_t b = 0; b < g.kh; ++b) {
          const T* xr = xbase + c * chan + a * g.dd * plane + b * g.dh * g.Wp + ow;
          const T* wr = wk + ((c * g.kd + a) * g.kh + b) * g.kw;
          for (index_t e = 0; e < g.kw; ++e) {
            const B x0 = B::load_unaligned(xr + e * g.dw);
            for (int kb = 0; kb < KB; ++kb) acc[kb] += B(wr[kb * wstride + e]) * x0;
          }
        }
    for (int kb = 0; kb < KB; ++kb) acc[kb].store_unaligned(yrow[kb] + ow);
  }
  for (; ow < g.OW; ++ow) {
    T acc[KB];
    for (int kb = 0; kb < KB; ++kb) acc[kb] = bv[kb];
    for (index_t c = 0; c < g.Cin; ++c)
      for (index_t a = 0; a < g.kd; ++a)
        for (index_t b = 0; b < g.kh; ++b) {
          const T* xr = xbase + c * chan + a * g.dd * plane + b * g.dh * g.Wp + ow;
          const T* wr = wk + ((c * g.kd + a) * g.kh + b) * g.kw;
          for (index_t e = 0; e < g.kw; ++e) {
            const T xv = xr[e * g.dw];
            for (int kb = 0; kb < KB; ++kb) acc[kb] += wr[kb * wstride + e] * xv;
          }
        }
    for (int kb = 0; kb < KB; ++kb) yrow[kb][ow] = acc[kb];
  }
}

// Work below this many multiply-adds stays on one thread.
inline constexpr index_t parallel_work = index_t(1) << 16;

template <class T>
void direct_conv(const DirectConv& g, const T* x, const T* w, const T* bias, T* y) {
  constexpr index_t KB = 4;
  const index_t nkb = (g.Cout + KB - 1) / KB;
  const index_t tasks = g.N * nkb * g.OD * g.OH;
  const index_t work = g.N * g.Cout * g.OD * g.OH * g.OW * g.Cin * g.kd * g.kh * g.kw;
  // Consecutive tasks walk oh, then od, so a thread's rows share input planes.
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (work >= parallel_work)
#endif
  for (index_t t = 0; t < tasks; ++t) {
    index_t r = t;
    const index_t oh = r % g.OH;
    r /= g.OH;
    const index_t od = r % g.OD;
    r /= g.OD;
    const index_t kbi = r % nkb;
    const index_t n = r / nkb;
    const index_t k0 = kbi * KB;
    const T* xn = x + n * g.Cin * g.Dp * g.Hp * g.Wp;
    const T* wk = w + k0 * g.Cin * g.kd * g.kh * g.kw;
    const T* bk = bias ? bias + k0 : nullptr;
    T* yk = y + (n * g.Cout + k0) * g.OD * g.OH * g.OW;
    switch (std::min(KB, g.Cout - k0)) {
      case 4: direct_rows<T, 4>(g, xn, wk, bk, yk, od, oh); break;
      case 3: direct_rows<T, 3>(g, xn, wk, bk, yk, od, oh); break;
      case 2: direct_rows<T, 2>(g, xn, wk, bk, yk, od, oh); break;
      default: direct_rows<T, 1>(g, xn, wk, bk, yk, od, oh); break;
    }
  }
  (void)work;
}

// Spread copy of NC volumes (Ds, Hs, Ws) into zero-filled volumes (Dd, Hd, Wd):
//   dst[z, y, x] = src[(z - oz) / uz, (y - oy) / uy, (x - ox) / ux] where each (i - o) is >= 0, divisible by
//   u and the quotient is inside src; else 0. Offsets o > 0 pad, o < 0 crop; u > 1 inserts zeros (stride).
struct Spread {
  index_t NC, Ds, Hs, Ws, Dd, Hd, Wd, oz, oy, ox, uz, uy, ux;
};

// The source index feeding destination index i, or -1.
inline index_t spread_source(index_t i, index_t o, index_t u, index_t extent) {
  const index_t t = i - o;
  if (t < 0 || t % u != 0) return -1;
  return t / u < extent ? t / u : -1;
}

template <class T>
void spread_copy(const Spread& s, const T* src, T* dst) {
  const index_t planes = s.NC * s.Dd;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (planes * s.Hd * s.Wd >= parallel_work)
#endif
  for (index_t pi = 0; pi < planes; ++pi) {
    const index_t z = pi % s.Dd, nc = pi / s.Dd;
    T* dp = dst + pi * s.Hd * s.Wd;
    std::fill(dp, dp + s.Hd * s.Wd, T(0));
    const index_t zs = spread_source(z, s.oz, s.uz, s.Ds);
    if (zs < 0) continue;
    const T* sp = src + (nc * s.Ds + zs) * s.Hs * s.Ws;
    for (index_t y = 0; y < s.Hd; ++y) {
      const index_t ys = spread_source(y, s.oy, s.uy, s.Hs);
      if (ys < 0) continue;
      const T* sr = sp + ys * s.Ws;
      T* dr = dp + y * s.Wd;
      if (s.ux == 1) {
        // the contiguous run of x whose source lies inside the row
        const index_t x0 = std::max<index_t>(0, s.ox), x1 = std::min(s.Wd, s.ox + s.Ws);
        if (x1 > x0) std::memcpy(dr + x0, sr + (x0 - s.ox), sizeof(T) * static_cast<std::size_t>(x1 - x0));
      } else {
        for (index_t x = 0; x < s.Wd; ++x) {
          const index_t xs = spread_source(x, s.ox, s.ux, s.Ws);
          if (xs >= 0) dr[x] = sr[xs];
        }
      }
    }
  }
}

// x padded to the extents the outputs read, (OD-1)*sd + (kd-1)*dd + 1 etc. Returns x itself (no copy) when
// no padding is needed.
template <class T>
const T* padded_input(const Conv3dProblem& p, const T* x, buffer<T>& storage, index_t& Dp, index_t& Hp, index_t& Wp) {
  Dp = (p.OD - 1) * p.sd + (p.kd - 1) * p.dd + 1;
  Hp = (p.OH - 1) * p.sh + (p.kh - 1) * p.dh + 1;
  Wp = (p.OW - 1) * p.sw + (p.kw - 1) * p.dw + 1;
  if (p.pd == 0 && p.ph == 0 && p.pw == 0 && Dp == p.D && Hp == p.H && Wp == p.W) return x;
  storage.resize(static_cast<std::size_t>(p.N * p.C * Dp * Hp * Wp));
  spread_copy(Spread{p.N * p.C, p.D, p.H, p.W, Dp, Hp, Wp, p.pd, p.ph, p.pw, 1, 1, 1}, x, storage.data());
  return storage.data();
}

}  // namespace cpu_conv3d

template <class T>
void conv3d_forward(cpu, const Conv3dProblem& p, const T* x, const T* w, const T* b, T* y) {
  if (p.sw != 1 || p.output_numel() == 0) {
    generic::conv3d_forward(cpu{}, p, x, w, b, y);
    return;
  }
  cpu_conv3d::buffer<T> storage;
  index_t Dp, Hp, Wp;
  const T* xp = cpu_conv3d::padded_input(p, x, storage, Dp, Hp, Wp);
  const cpu_conv3d::DirectConv g{p.N, p.C, Dp, Hp, Wp, p.K, p.kd, p.kh, p.kw,
                                 p.sd, p.sh, p.dd, p.dh, p.dw, p.OD, p.OH, p.OW};
  cpu_conv3d::direct_conv(g, xp, w, b, y);
}

// dx[c, z] = sum_{k, t'} u[k, z + t'*d] * w[k, c, kflip - t'], with u = dy spread by the stride and shifted
// by d*(k-1) - p (a negative shift crops): the transposed convolution as a stride-1 direct convolution.
template <class T>
void conv3d_backward_data(cpu, const Conv3dProblem& p, const T* dy, const T* w, T* dx) {
  if (p.input_numel() == 0) return;
  if (p.output_numel() == 0) {
    std::fill(dx, dx + p.input_numel(), T(0));
    return;
  }
  const index_t kvol = p.kernel_volume();
  // flipped, transposed weights (C, K, kd, kh, kw)
  cpu_conv3d::buffer<T> wt(static_cast<std::size_t>(p.weight_numel()));
  for (index_t k = 0; k < p.K; ++k)
    for (index_t c = 0; c < p.C; ++c) {
      const T* src = w + (k * p.C + c) * kvol;
      T* dst = wt.data() + (c * p.K + k) * kvol;
      for (index_t j = 0; j < kvol; ++j) dst[j] = src[kvol - 1 - j];  // reversing the flat index flips all three axes
    }
  const index_t Dp = p.D + (p.kd - 1) * p.dd, Hp = p.H + (p.kh - 1) * p.dh, Wp = p.W + (p.kw - 1) * p.dw;
  cpu_conv3d::buffer<T> u(static_cast<std::size_t>(p.N * p.K * Dp * Hp * Wp));
  cpu_conv3d::spread_copy(cpu_conv3d::Spread{p.N * p.K, p.OD, p.OH, p.OW, Dp, Hp, Wp, (p.kd - 1) * p.dd - p.pd,
                                             (p.kh - 1) * p.dh - p.ph, (p.kw - 1) * p.dw - p.pw, p.sd, p.sh, p.sw},
                          dy, u.data());
  cpu_conv3d::direct_conv(
      cpu_conv3d::DirectConv{p.N, p.K, Dp, Hp, Wp, p.C, p.kd, p.kh, p.kw, 1, 1, p.dd, p.dh, p.dw, p.D, p.H, p.W},
      u.data(), wt.data(), static_cast<const T*>(nullptr), dx);
}

}  // namespace mmnet::backend

// The weight and bias gradients' cpu fast paths.
#include "conv3d_weight.hpp"
