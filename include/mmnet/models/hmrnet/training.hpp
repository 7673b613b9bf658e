// mmnet/models/hmrnet/training.hpp: HMRNet's optimisation settings (spec hmrnet.md §4, "recommend" column) as
// library calls, and the adapter that lets train::Trainer drive an HMRNet (whose forward() returns [y0..y3]):
//
//   optim::SGD<float, cpu> opt(net.parameters(), hmrnet::sgd_options());   // lr 0.01, Nesterov 0.99, wd 1e-5
//   optim::PolyLR sched(opt, hmrnet::poly_lr_options());                   // per epoch: 0.01 (1 - e/300)^0.9
//   HMRNetLoss<float, cpu> loss(HMRNetLossOptions().theta(2.5));
//   train::Trainer<HMRNet<float, cpu>> trainer(net, opt, hmrnet::loss_step(loss),
//       train::TrainerOptions().epochs(hmrnet::epochs).iterations_per_epoch(hmrnet::iterations_per_epoch)
//           .clip_grad_norm(hmrnet::clip_norm));
//   trainer.scheduler(sched, train::SchedulerStep::per_epoch);
//
// Clipping is of the raw loss gradients before the step (weight decay is added inside the step), over the
// parameters that have a gradient (the λ = 0 head has none), exactly clip_grad_norm_. At PyTorch's default init
// the -p gradient norm is ≈ 2-8 (clip inactive), the -s one ≈ 3e4-2e5 (clip always active) [spec §7.18].
// No He re-init and no epoch-100 fallback [spec §2.1, R].
#pragma once
#include <cstdint>
#include <vector>

#include "../../optim/lr_scheduler.hpp"
#include "../../optim/sgd.hpp"
#include "../../train/trainer.hpp"
#include "loss.hpp"

namespace mmnet::models::hmrnet {

// Global L2 gradient-norm bound (nnU-Net V2 trainer).
constexpr double clip_norm = 12.0;
// Epochs x iterations (paper 300 epochs; nnU-Net's 250 iterations per epoch).
constexpr std::int64_t epochs = 300;
constexpr std::int64_t iterations_per_epoch = 250;

// SGD, lr 0.01, momentum 0.99, Nesterov, coupled weight decay 1e-5 (paper's wd, code's momentum).
inline optim::SGDOptions sgd_options() {
  return optim::SGDOptions(0.01).momentum(0.99).nesterov(true).weight_decay(1e-5);
}
// Poly schedule lr_e = lr_0 (1 - e / epochs)^0.9, e = 0-based epoch (the paper's (1 - (e-1)/Ne)), stepped per epoch.
inline optim::PolyLROptions poly_lr_options(std::int64_t num_epochs = epochs) {
  return optim::PolyLROptions(num_epochs).power(0.9);
}

// A train::Trainer loss step for HMRNet: (outputs, labels) -> (loss, one gradient per output); train::loss_step,
// which takes losses on lists of outputs too. The loss is held by reference and must outlive the trainer.
using train::loss_step;

}  // namespace mmnet::models::hmrnet
