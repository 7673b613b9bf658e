// mmnet/models/conresnet/training.hpp: ConResNet's optimisation settings (spec conresnet.md §4.1; the official
// train_conresnet.py / run.sh):
//
//   optim::Adam<float, cpu> opt(net.parameters(), conresnet::adam_options());   // lr 1e-4, wd 5e-4 (coupled L2)
//   for (long t = 0; t < 40000; ++t) { opt.set_lr(conresnet::poly_lr(1e-4, t, 40000)); ... opt.step(); }
#pragma once
#include <cmath>

#include "../../core/error.hpp"
#include "../../optim/adam.hpp"

namespace mmnet::models::conresnet {

// torch.optim.Adam: lr 1e-4, betas (0.9, 0.999), eps 1e-8, no AMSGrad, coupled L2 weight decay 5e-4 (g += wd θ).
inline optim::AdamOptions adam_options() {
  return optim::AdamOptions(1e-4).betas({0.9, 0.999}).eps(1e-8).weight_decay(5e-4);
}

// Official iteration count (batch 2).
constexpr long official_iterations = 40000;

// lr_t = base (1 - t / T)^0.9, set before step t = 0 .. T - 1.
inline double poly_lr(double base, long t, long T) {
  if (T <= 0 || t < 0 || t > T)
    fail<value_error>("mmnet::conresnet::poly_lr", "iteration t (with T = " + std::to_string(T) + " > 0)",
                      "0 <= t <= T", t);
  return base * std::pow(1.0 - static_cast<double>(t) / static_cast<double>(T), 0.9);
}

}  // namespace mmnet::models::conresnet
