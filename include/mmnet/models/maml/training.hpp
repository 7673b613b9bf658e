// mmnet/models/maml/training.hpp: MAML's optimisation settings (spec maml.md §4.1) as library calls, and the
// adapter that lets train::Trainer drive a MAML (whose forward() returns a list of outputs).
//
// Code preset (official MAMLTrainerV2 = stock nnU-Net V2 trainer; the library default):
//   optim::SGD<float, cpu> opt(net.parameters(), maml::sgd_options());             // lr 0.01, Nesterov 0.99, wd 3e-5
//   optim::PolyLR sched(opt, maml::poly_lr_options(1000));                          // per epoch: 0.01 (1 - e/E)^0.9
//   MAMLLoss<float, cpu> loss(MAMLLossOptions::code(net.options().num_pool()));
//   train::Trainer<MAML<float, cpu>> trainer(net, opt, maml::loss_step(loss),
//       train::TrainerOptions().epochs(1000).iterations_per_epoch(250).clip_grad_norm(maml::clip_norm));
//   trainer.scheduler(sched, train::SchedulerStep::per_epoch).track_generator("modality_dropout", net.dropout_generator());
// Paper preset (nnU-Net v1's original nnUNetTrainer optimiser, the paper's "Adam, 3e-4"; no clipping):
//   optim::Adam<float, cpu> opt(net.parameters(), maml::adam_options());             // AMSGrad, lr 3e-4, wd 3e-5
//   optim::ReduceLROnPlateau plateau(opt, maml::plateau_options());                 // factor 0.2, patience 30, abs 1e-3
//   maml::LossEMA ema;                                                              // MA <- 0.93 MA + 0.07 epoch loss
//   trainer.on_epoch_end([&](const train::EpochRecord& r, bool) { plateau.step(ema.update(r.train_loss)); });
//   MAMLLoss<float, cpu> loss(MAMLLossOptions::paper(net.options().num_pool()));
// (A plateau scheduler stepped from on_epoch_end is not in the trainer's checkpoints; save its and the EMA's
// state yourself if exact resume matters.)
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "../../optim/adam.hpp"
#include "../../optim/lr_scheduler.hpp"
#include "../../optim/sgd.hpp"
#include "../../train/trainer.hpp"
#include "loss.hpp"

namespace mmnet::models::maml {

// nnU-Net's clip_grad_norm_ bound (code preset).
constexpr double clip_norm = 12.0;

// SGD, lr 0.01, momentum 0.99, Nesterov, coupled weight decay 3e-5 (nnU-Net V2 trainer).
inline optim::SGDOptions sgd_options() {
  return optim::SGDOptions(0.01).momentum(0.99).nesterov(true).weight_decay(3e-5);
}
// Poly schedule lr_e = lr_0 (1 - e / epochs)^0.9, stepped once per epoch (set at the start of epoch e).
inline optim::PolyLROptions poly_lr_options(std::int64_t epochs = 1000) { return optim::PolyLROptions(epochs).power(0.9); }
// Adam with AMSGrad, lr 3e-4, betas (0.9, 0.999), eps 1e-8, coupled (L2) weight decay 3e-5 (nnU-Net v1 nnUNetTrainer).
inline optim::AdamOptions adam_options() {
  return optim::AdamOptions(3e-4).betas({0.9, 0.999}).eps(1e-8).weight_decay(3e-5).amsgrad(true);
}
// ReduceLROnPlateau(mode min, factor 0.2, patience 30, threshold 1e-3 absolute), stepped per epoch on LossEMA.
inline optim::ReduceLROnPlateauOptions plateau_options() {
  return optim::ReduceLROnPlateauOptions().mode(optim::PlateauMode::min).factor(0.2).patience(30).threshold(1e-3)
      .threshold_mode(optim::ThresholdMode::abs);
}

// nnU-Net v1's moving average of the training loss: MA <- alpha MA + (1 - alpha) epoch_loss, alpha 0.93, starting
// at the first epoch's loss.
class LossEMA {
 public:
  explicit LossEMA(double alpha = 0.93) : alpha_(alpha) {
    if (!(alpha >= 0 && alpha <= 1)) fail<value_error>("mmnet::models::maml::LossEMA", "alpha", "a value in [0, 1]", alpha);
  }
  // Adds one epoch's loss; returns the new average.
  double update(double epoch_loss) {
    value_ = value_ ? alpha_ * *value_ + (1 - alpha_) * epoch_loss : epoch_loss;
    return *value_;
  }
  // The current average (none before the first update).
  const std::optional<double>& value() const { return value_; }
  double alpha() const { return alpha_; }
  void reset(std::optional<double> v = std::nullopt) { value_ = v; }

 private:
  double alpha_;
  std::optional<double> value_;
};

// A train::Trainer loss step for MAML: (outputs, labels) -> (loss, one gradient per output); train::loss_step,
// which takes losses on lists of outputs too. The loss is held by reference and must outlive the trainer.
using train::loss_step;

}  // namespace mmnet::models::maml
