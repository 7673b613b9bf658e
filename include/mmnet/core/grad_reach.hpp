// mmnet/core/grad_reach.hpp: "no gradient" for the parts of a network a backward pass does not reach, as PyTorch
// leaves `grad is None` for a parameter no loss term depends on (MAML spec §3.3, HMRNet's unused deep-supervision
// head). Optimizers (optim/optimizer.hpp `active()`) and clip_grad_norm_ skip a parameter whose grad is undefined:
// no weight decay, no momentum or moment update, no step count, not in the norm.
//
//   mark_reached(head, dlogits.defined());     // before head.backward(dlogits), or instead of it
//
// reached: a trainable parameter with an undefined grad gets a zero one, so the module's backward can add into it.
// not reached: an all-zero grad (zero_grad()'s, or a fresh module's) becomes undefined; a non-zero grad holds
// gradients accumulated by an earlier backward (no zero_grad() in between) and is kept.
#pragma once
#include "module.hpp"
#include "ops.hpp"

namespace mmnet {

template <class T, class Backend>
bool all_zero(const Tensor<T, Backend>& t) {
  const T* p = t.data();
  return backend::reduce_sum<double>(Backend{}, t.numel(), MMNET_KERNEL(index_t i) { return p[i] != T(0) ? 1.0 : 0.0; }) == 0;
}

template <class T, class Backend>
void mark_reached(Module<T, Backend>& m, bool reached) {
  for (auto* p : m.parameters()) {
    if (reached && p->wants_grad() && !p->grad.defined()) p->grad = Tensor<T, Backend>(p->value.shape());
    if (!reached && p->grad.defined() && all_zero(p->grad)) p->grad = Tensor<T, Backend>();
  }
}

}  // namespace mmnet
