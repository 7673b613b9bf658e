// mmnet/models/mmfnet/training.hpp: MMFNet's training procedure (spec shared/specs/mmfnet.md §4): the encoder
// copy and freezing of self-transfer, an Adam + soft-Dice trainer with early stopping on the validation loss and
// best-checkpoint keeping, and self_transfer() running the whole §4 schedule. PyTorch equivalent: the training
// loop one writes around torch.optim.Adam, `encoder.load_state_dict(single.encoders[0].state_dict())` and
// `p.requires_grad_(False)` (there is no library counterpart).
//
//   mmnet::mmfnet::copy_encoder(single, net, 0);   // single-modality model's encoders.0.* -> net.encoders.0.*
//   mmnet::mmfnet::freeze_encoders(net);           // warm-up: no updates of encoder weights/γ/β, BN stays in train
//   mmnet::mmfnet::Trainer<float, mmnet::cpu> trainer(net, TrainerOptions().lr(1e-3).patience(10));
//   auto result = trainer.fit(batches, validation);
#pragma once
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../../core/error.hpp"
#include "../../core/module.hpp"
#include "../../io/checkpoint.hpp"
#include "../../layers/concat.hpp"
#include "../../losses/soft_dice.hpp"
#include "../../optim/adam.hpp"
#include "mmfnet.hpp"

namespace mmnet::mmfnet {

// Spec §4 step 2: copies every encoders.0.* entry of a single-modality model (conv weights and biases, BN γ/β,
// running mean/var and num_batches_tracked) into net.encoders.{m}.*. Precision and backend may differ (values
// are converted as a state-dict load converts them). Throws value_error for a model with more than one encoder
// or m out of range, state_dict_error when the encoders' shapes differ; net is unchanged on error.
template <class T1, class B1, class T2, class B2>
void copy_encoder(models::MMFNet<T1, B1>& single, models::MMFNet<T2, B2>& net, index_t m) {
  const std::string who = "mmnet::mmfnet::copy_encoder";
  if (single.encoders.size() != 1)
    fail<value_error>(who, "encoders of the source (a single-modality model)", 1, single.encoders.size());
  if (m < 0 || m >= static_cast<index_t>(net.encoders.size()))
    fail<value_error>(who, "target encoder index m", "0.." + std::to_string(net.encoders.size() - 1), m);
  try {
    net.encoders[static_cast<std::size_t>(m)].load_state_dict(single.encoders[0].state_dict(), /*strict=*/true);
  } catch (const state_dict_error& e) {
    throw state_dict_error(who + ": encoder 0 of the source does not fit encoder " + std::to_string(m) + ": " + e.what());
  }
}

// Warm-up freezing (spec §4 step 3): encoder parameters get no gradient and optimizers skip them. By default
// the encoders stay in train mode, so their BN normalises with batch statistics and keeps updating its running
// statistics (what requires_grad=False does in PyTorch; spec A13). bn_statistics_too = true also puts the
// encoders in eval mode (running statistics used and left unchanged); a later net.train() undoes that part,
// so call this again after it (Trainer does).
template <class T, class B>
void freeze_encoders(models::MMFNet<T, B>& net, bool bn_statistics_too = false) {
  for (auto& e : net.encoders) {
    e.freeze();
    if (bn_statistics_too) e.eval();
  }
}

// Undoes freeze_encoders: trainable encoders, in the model's own train/eval mode.
template <class T, class B>
void unfreeze_encoders(models::MMFNet<T, B>& net) {
  for (auto& e : net.encoders) {
    e.unfreeze();
    e.train(net.is_training());
  }
}

}  // namespace mmnet::mmfnet
