// mmnet/backend/cpu/conv_transpose3d.hpp: the cpu fast path of ConvTranspose3d (same signatures as
// backend/common/conv_transpose3d.hpp, overloaded on the cpu tag).
//
// The transposed forward is the adjoint conv's polyphase backward-data with the bias as the accumulators'
// start (no second pass over y); the transposed backward-data is the adjoint conv's forward
// (backend/cpu/conv3d.hpp). Backward-weight and backward-bias stay on the dispatch in common/.
#pragma once
#include "../common/conv_transpose3d.hpp"
#include "conv3d.hpp"

namespace mmnet::backend {

// y = x (*)^T w (+ b): assigns y.
template <class T>
void conv_transpose3d_forward(cpu, const ConvTranspose3dProblem& p, const T* x, const T* w, const T* b, T* y) {
  if (p.output_numel() == 0) return;
  const Conv3dProblem a = p.adjoint();
  if (a.output_numel() == 0) {  // no input positions: the bias alone
    for (index_t i = 0; i < p.output_numel(); ++i) y[i] = b ? b[(i / (p.OD * p.OH * p.OW)) % p.K] : T(0);
    return;
  }
  cpu_conv3d::backward_data(a, x, w, b, y);
}

// dx = dL/dx: assigns dx.
template <class T>
void conv_transpose3d_backward_data(cpu, const ConvTranspose3dProblem& p, const T* dy, const T* w, T* dx) {
  if (p.input_numel() == 0) return;
  cpu_conv3d::forward(p.adjoint(), dy, w, static_cast<const T*>(nullptr), dx);
}

}  // namespace mmnet::backend
