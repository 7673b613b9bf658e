// mmnet/backend/common/conv3d.hpp: the Conv3d problem description and the generic kernels (torch.nn.Conv3d
// semantics, cross-correlation, groups = 1), run by backend::parallel_for on any backend.
//
// Layouts: input (N, C, D, H, W), weight (K, C, kd, kh, kw), bias (K), output (N, K, OD, OH, OW), all
// contiguous. The generic kernels are the "analytic" variant: one output element per index, no atomics,
// sums in acc_t. Each backend may overload backend::conv3d_* on its tag with a faster path
// (backend/cpu/conv3d.hpp); backend::generic::conv3d_* stay callable on every backend so the tests can
// compare the two.
#pragma once
#include "../../core/backend.hpp"
#include "../../core/backends.hpp"
#include "../../core/config.hpp"

namespace mmnet {

// A convolution's sizes in one POD struct (cutlass' Conv3dProblemSize), captured by value in kernels.
struct Conv3dProblem {
  index_t N = 0, C = 0, D = 0, H = 0, W = 0;  // input
  index_t K = 0;                              // output channels
  index_t kd = 1, kh = 1, kw = 1;             // kernel
  index_t sd = 1, sh = 1, sw = 1;             // stride
  index_t pd = 0, ph = 0, pw = 0;             // zero padding on both sides
  index_t dd = 1, dh = 1, dw = 1;             // dilation
  index_t OD = 0, OH = 0, OW = 0;             // output, set by compute_output()

  // PyTorch's formula: floor((in + 2p - d(k-1) - 1) / s) + 1; <= 0 means the input is too small.
  static MMNET_HOST_DEVICE index_t output_extent(index_t in, index_t k, index_t s, index_t p, index_t d) {
    const index_t span = in + 2 * p - d * (k - 1) - 1;
    // floor division for a negative span, so a too-small input gives an extent <= 0 rather than 1
    return (span >= 0 ? span / s : -((-span + s - 1) / s)) + 1;
  }
  Conv3dProblem& compute_output() {
    OD = output_extent(D, kd, sd, pd, dd);
    OH = output_extent(H, kh, sh, ph, dh);
    OW = output_extent(W, kw, sw, pw, dw);
    return *this;
  }
  bool valid_output() const { return OD > 0 && OH > 0 && OW > 0; }
  index_t kernel_volume() const { return kd * kh * kw; }
  index_t input_numel() const { return N * C * D * H * W; }
  index_t weight_numel() const { return K * C * kd * kh * kw; }
  index_t output_numel() const { return N * K * OD * OH * OW; }
};

namespace backend {
namespace generic {

// y[n,k,o] = b[k] + sum_{c,a,b,e} x[n, c, o*s - p + tap*d] * w[k,c,a,b,e]; b may be null.
template <class Backend, class T>
void conv3d_forward(Backend, const Conv3dProblem& pr, const T* x, const T* w, const T* b, T* y) {
  const Conv3dProblem p = pr;
  backend::parallel_for(Backend{}, p.output_numel(), MMNET_KERNEL(index_t i) {
    index_t r = i;
    const index_t ow = r % p.OW;
    r /= p.OW;
    const index_t oh = r % p.OH;
    r /= p.OH;
    const index_t od = r % p.OD;
    r /= p.OD;
    const index_t k = r % p.K;
    const index_t n = r / p.K;
    acc_t<T> acc = b ? static_cast<acc_t<T>>(b[k]) : acc_t<T>(0);
    for (index_t c = 0; c < p.C; ++c) {
      const T* xc = x + (n * p.C + c) * p.D * p.H * p.W;
      const T* wc = w + (k * p.C + c) * p.kd * p.kh * p.kw;
      for (index_t a = 0; a < p.kd; ++a) {
        const index_t z = od * p.sd - p.pd + a * p.dd;
        if (z < 0 || z >= p.D) continue;
        for (index_t bb = 0; bb < p.kh; ++bb) {
          const index_t yy = oh * p.sh - p.ph + bb * p.dh;
          if (yy < 0 || yy >= p.H) continue;
          for (index_t e = 0; e < p.kw; ++e) {
            const index_t xx = ow * p.sw - p.pw + e * p.dw;
            if (xx < 0 || xx >= p.W) continue;
            acc += static_cast<acc_t<T>>(xc[(z * p.H + yy) * p.W + xx]) * wc[(a * p.kh + bb) * p.kw + e];
          }
        }
      }
    }
    y[i] = static_cast<T>(acc);
  });
}

// dx[n,c,z,y,x] = sum over the outputs that read it of dy * w (the transposed convolution). Assigns dx.
// An output o reads input i through tap t iff i = o*s - p + t*d, i.e. o = (i + p - t*d) / s exactly.
template <class Backend, class T>
void conv3d_backward_data(Backend, const Conv3dProblem& pr, const T* dy, const T* w, T* dx) {
  const Conv3dProblem p = pr;
  backend::parallel_for(Backend{}, p.input_numel(), MMNET_KERNEL(index_t i) {
    index_t r = i;
    const index_t xx = r % p.W;
    r /= p.W;
    const index_t yy = r % p.H;
    r /= p.H;
    const index_t z = r % p.D;
    r /= p.D;
    const index_t c = r % p.C;
    const index_t n = r / p.C;
    acc_t<T> acc(0);
    for (index_t k = 0; k < p.K; ++k) {
      const T* dyk = dy + (n * p.K + k) * p.OD * p.OH * p.OW;
      const T* wk = w + (k * p.C + c) * p.kd * p.kh * p.kw;
      for (index_t a = 0; a < p.kd; ++a) {
        const index_t td = z + p.pd - a * p.dd;
        if (td < 0 || td % p.sd != 0 || td / p.sd >= p.OD) continue;
        const index_t od = td / p.sd;
        for (index_t bb = 0; bb < p.kh; ++bb) {
          const index_t th = yy + p.ph - bb * p.dh;
          if (th < 0 || th % p.sh != 0 || th / p.sh >= p.OH) continue;
          const index_t oh = th / p.sh;
          for (index_t e = 0; e < p.kw; ++e) {
            const index_t tw = xx + p.pw - e * p.dw;
            if (tw < 0 || tw % p.sw != 0 || tw / p.sw >= p.OW) continue;
            const index_t ow = tw / p.sw;
            acc += static_cast<acc_t<T>>(dyk[(od * p.OH + oh) * p.OW + ow]) * wk[(a * p.kh + bb) * p.kw + e];
          }
        }
      }
    }
    dx[i] = static_cast<T>(acc);
  });
}

// dw[k,c,a,b,e] += sum_{n,o} dy[n,k,o] * x[n, c, o*s - p + tap*d]. Adds into dw.
template <class Backend, class T>
void conv3d_backward_weight(Backend, const Conv3dProblem& pr, const T* x, const T* dy, T* dw) {
  const Conv3dProblem p = pr;
  backend::parallel_for(Backend{}, p.weight_numel(), MMNET_KERNEL(index_t i) {
    index_t r = i;
    const index_t e = r % p.kw;
    r /= p.kw;
    const index_t bb = r % p.kh;
    r /= p.kh;
    const index_t a = r % p.kd;
    r /= p.kd;
    const index_t c = r % p.C;
    const index_t k = r / p.C;
    acc_t<T> acc(0);
    for (index_t n = 0; n < p.N; ++n) {
      const T* xc = x + (n * p.C + c) * p.D * p.H * p.W;
      const T* dyk = dy + (n * p.K + k) * p.OD * p.OH * p.OW;
      for (index_t od = 0; od < p.OD; ++od) {
        const index_t z = od * p.sd - p.pd + a * p.dd;
        if (z < 0 || z >= p.D) continue;
        for (index_t oh = 0; oh < p.OH; ++oh) {
          const index_t yy = oh * p.sh - p.ph + bb * p.dh;
          if (yy < 0 || yy >= p.H) continue;
          for (index_t ow = 0; ow < p.OW; ++ow) {
            const index_t xx = ow * p.sw - p.pw + e * p.dw;
            if (xx < 0 || xx >= p.W) continue;
            acc += static_cast<acc_t<T>>(dyk[(od * p.OH + oh) * p.OW + ow]) * xc[(z * p.H + yy) * p.W + xx];
          }
        }
      }
    }
    dw[i] += static_cast<T>(acc);
  });
}

// db[k] += sum_{n,o} dy[n,k,o]. Adds into db.
template <class Backend, class T>
void conv3d_backward_bias(Backend, const Conv3dProblem& pr, const T* dy, T* db) {
  const Conv3dProblem p = pr;
  backend::parallel_for(Backend{}, p.K, MMNET_KERNEL(index_t k) {
    const index_t spatial = p.OD * p.OH * p.OW;
    acc_t<T> acc(0);
    for (index_t n = 0; n < p.N; ++n) {
      const T* dyk = dy + (n * p.K + k) * spatial;
      for (index_t j = 0; j < spatial; ++j) acc += static_cast<acc_t<T>>(dyk[j]);
    }
    db[k] += static_cast<T>(acc);
  });
}

}  // namespace generic

// The dispatch points: the generic kernels unless a backend overloads them on its tag (cpu/conv3d.hpp).
template <class Backend, class T>
void conv3d_forward(Backend, const Conv3dProblem& p, const T* x, const T* w, const T* b, T* y) {
  generic::conv3d_forward(Backend{}, p, x, w, b, y);
}
template <class Backend, class T>
void conv3d_backward_data(Backend, const Conv3dProblem& p, const T* dy, const T* w, T* dx) {
  generic::conv3d_backward_data(Backend{}, p, dy, w, dx);
}
template <class Backend, class T>
void conv3d_backward_weight(Backend, const Conv3dProblem& p, const T* x, const T* dy, T* dw) {
  generic::conv3d_backward_weight(Backend{}, p, x, dy, dw);
}
template <class Backend, class T>
void conv3d_backward_bias(Backend, const Conv3dProblem& p, const T* dy, T* db) {
  generic::conv3d_backward_bias(Backend{}, p, dy, db);
}

}  // namespace backend
}  // namespace mmnet
