// mmnet/backend/common/conv_transpose3d.hpp: the ConvTranspose3d problem and its kernels (torch.nn.ConvTranspose3d
// semantics, groups = 1), built on the Conv3d kernels.
//
// A transposed convolution is the adjoint of the Conv3d that maps its output back onto its input (the "adjoint
// conv", ConvTranspose3dProblem::adjoint()): with the same weight (Cin, Cout, kd, kh, kw), read by the adjoint
// conv as (K = Cin, C = Cout, ...),
//   transposed forward          y  = conv3d_backward_data(adjoint, dy := x)            (+ bias)
//   transposed backward-data    dx = conv3d_forward(adjoint, x := dy)                  (no bias)
//   transposed backward-weight  dw += conv3d_backward_weight(adjoint, x := dy, dy := x)
// so every backend's Conv3d fast paths (backend/cpu/conv3d.hpp) serve it too. The adjoint conv's output
// extents are set to the transposed input's extents rather than computed: with output_padding >= stride
// (allowed when dilation > stride) the Conv3d formula would give one more position than the input has.
#pragma once
#include "../../core/backend.hpp"
#include "../../core/backends.hpp"
#include "../../core/config.hpp"
#include "conv3d.hpp"
// The cpu overloads of conv3d_* must be declared before the dispatching calls below to be found.
#include "../cpu/conv3d.hpp"

namespace mmnet {

// A transposed convolution's sizes: input (N, C, D, H, W), weight (C, K, kd, kh, kw), output (N, K, OD, OH, OW).
struct ConvTranspose3dProblem {
  index_t N = 0, C = 0, D = 0, H = 0, W = 0;  // input
  index_t K = 0;                              // output channels
  index_t kd = 1, kh = 1, kw = 1;             // kernel
  index_t sd = 1, sh = 1, sw = 1;             // stride
  index_t pd = 0, ph = 0, pw = 0;             // padding (cropped from both sides of the full output)
  index_t opd = 0, oph = 0, opw = 0;          // output_padding (added on the far side only)
  index_t dd = 1, dh = 1, dw = 1;             // dilation
  index_t OD = 0, OH = 0, OW = 0;             // output, set by compute_output()

  // PyTorch's formula: (in - 1) s - 2p + d (k - 1) + output_padding + 1; <= 0 when the padding eats it all.
  static MMNET_HOST_DEVICE index_t output_extent(index_t in, index_t k, index_t s, index_t p, index_t op, index_t d) {
    return (in - 1) * s - 2 * p + d * (k - 1) + op + 1;
  }
  ConvTranspose3dProblem& compute_output() {
    OD = output_extent(D, kd, sd, pd, opd, dd);
    OH = output_extent(H, kh, sh, ph, oph, dh);
    OW = output_extent(W, kw, sw, pw, opw, dw);
    return *this;
  }
  bool valid_output() const { return OD > 0 && OH > 0 && OW > 0; }
  index_t input_numel() const { return N * C * D * H * W; }
  index_t weight_numel() const { return C * K * kd * kh * kw; }
  index_t output_numel() const { return N * K * OD * OH * OW; }

  // The Conv3d from this problem's output (N, K, OD, OH, OW) to its input (N, C, D, H, W), same weight.
  Conv3dProblem adjoint() const {
    Conv3dProblem c;
    c.N = N;
    c.C = K, c.D = OD, c.H = OH, c.W = OW;
    c.K = C;
    c.kd = kd, c.kh = kh, c.kw = kw;
    c.sd = sd, c.sh = sh, c.sw = sw;
    c.pd = pd, c.ph = ph, c.pw = pw;
    c.dd = dd, c.dh = dh, c.dw = dw;
    c.OD = D, c.OH = H, c.OW = W;  // set, not computed (see the file comment)
    return c;
  }
};

namespace backend {

// y[n, k, ...] += b[k] over (N, K, spatial) (a per-channel bias on an NC... tensor).
template <class Backend, class T>
void add_channel_bias(Backend, index_t N, index_t K, index_t spatial, const T* b, T* y) {
  backend::parallel_for(Backend{}, N * K * spatial, MMNET_KERNEL(index_t i) { y[i] += b[(i / spatial) % K]; });
}

// db[k] += sum_{n, j} dy[n, k, j] over (N, K, spatial).
template <class Backend, class T>
void channel_bias_backward(Backend, index_t N, index_t K, index_t spatial, const T* dy, T* db) {
  backend::parallel_for(Backend{}, K, MMNET_KERNEL(index_t k) {
    acc_t<T> acc(0);
    for (index_t n = 0; n < N; ++n) {
      const T* dyk = dy + (n * K + k) * spatial;
      for (index_t j = 0; j < spatial; ++j) acc += static_cast<acc_t<T>>(dyk[j]);
    }
    db[k] += static_cast<T>(acc);
  });
}

namespace generic {

// The transposed convolution through the generic Conv3d kernels only (what the tests compare against).
template <class Backend, class T>
void conv_transpose3d_forward(Backend, const ConvTranspose3dProblem& p, const T* x, const T* w, const T* b, T* y) {
  generic::conv3d_backward_data(Backend{}, p.adjoint(), x, w, y);
  if (b) add_channel_bias(Backend{}, p.N, p.K, p.OD * p.OH * p.OW, b, y);
}
template <class Backend, class T>
void conv_transpose3d_backward_data(Backend, const ConvTranspose3dProblem& p, const T* dy, const T* w, T* dx) {
  generic::conv3d_forward(Backend{}, p.adjoint(), dy, w, static_cast<const T*>(nullptr), dx);
}
template <class Backend, class T>
void conv_transpose3d_backward_weight(Backend, const ConvTranspose3dProblem& p, const T* x, const T* dy, T* dw) {
  generic::conv3d_backward_weight(Backend{}, p.adjoint(), dy, x, dw);
}

}  // namespace generic

// y = x (*)^T w (+ b): assigns y (positions no input reaches get the bias alone).
template <class Backend, class T>
void conv_transpose3d_forward(Backend, const ConvTranspose3dProblem& p, const T* x, const T* w, const T* b, T* y) {
  if (p.output_numel() == 0) return;
  conv3d_backward_data(Backend{}, p.adjoint(), x, w, y);
  if (b) add_channel_bias(Backend{}, p.N, p.K, p.OD * p.OH * p.OW, b, y);
}
// dx = dL/dx: assigns dx.
template <class Backend, class T>
void conv_transpose3d_backward_data(Backend, const ConvTranspose3dProblem& p, const T* dy, const T* w, T* dx) {
  if (p.input_numel() == 0) return;
  conv3d_forward(Backend{}, p.adjoint(), dy, w, static_cast<const T*>(nullptr), dx);
}
// dw[c, k, tap] += sum_{n, i} x[n, c, i] * dy[n, k, i*s - p + tap*d]: adds into dw.
template <class Backend, class T>
void conv_transpose3d_backward_weight(Backend, const ConvTranspose3dProblem& p, const T* x, const T* dy, T* dw) {
  if (p.input_numel() == 0) return;
  conv3d_backward_weight(Backend{}, p.adjoint(), dy, x, dw);
}
// db[k] += sum over n and the output positions of dy[n, k]: adds into db.
template <class Backend, class T>
void conv_transpose3d_backward_bias(Backend, const ConvTranspose3dProblem& p, const T* dy, T* db) {
  channel_bias_backward(Backend{}, p.N, p.K, p.OD * p.OH * p.OW, dy, db);
}

}  // namespace backend
}  // namespace mmnet
