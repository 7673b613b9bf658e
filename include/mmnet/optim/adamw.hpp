// mmnet/optim/adamw.hpp: Adam with decoupled weight decay (torch.optim.AdamW, torch 1.13, single-tensor path).
//
// Per parameter w with gradient g, at the parameter's own step t:
//   w *= 1 - lr weight_decay                                  (decoupled: before the Adam step, g unchanged)
//   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
//   amsgrad: v_max = max(v_max, v), and v_max replaces v below
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps,   w -= lr / (1 - beta1^t) * m / denom
// Defaults as torch: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2, amsgrad false. The state and
// state_dict() names are Adam's (optim/adam.hpp). A frozen parameter is not decayed either (torch: grad None).
//
//   optim::AdamW<float, mmnet::cpu> opt(model.parameters(), optim::AdamWOptions(1e-3).weight_decay(0.05));
#pragma once
#include "adam.hpp"

namespace mmnet::optim {

class AdamWOptions : public detail::AdamOptionsBase<AdamWOptions> {
 public:
  explicit AdamWOptions(double lr = 1e-3) : AdamOptionsBase(lr, 1e-2) {}
};

template <class T, class Backend>
class AdamW : public detail::AdamBase<T, Backend, AdamWOptions> {
  using base = detail::AdamBase<T, Backend, AdamWOptions>;

 public:
  using typename base::parameter;

  AdamW(std::vector<parameter*> params, const AdamWOptions& options)
      : base(std::move(params), options, "mmnet::optim::AdamW", /*decoupled=*/true) {}
  // All parameters of a module (which must outlive the optimizer).
  AdamW(Module<T, Backend>& module, const AdamWOptions& options) : AdamW(module.parameters(), options) {}
};

}  // namespace mmnet::optim
