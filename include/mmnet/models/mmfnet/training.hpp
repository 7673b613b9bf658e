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


// One training batch: input N x M x D x H x W and binary target N x 1 x D x H x W.
template <class T, class B>
struct Batch {
  Tensor<T, B> input, target;
};

// What the Trainer reports after each epoch.
struct EpochReport {
  std::string phase;      // "train", or self_transfer's "pretrain.<m>", "warmup", "finetune"
  int epoch = 0;          // 0-based, counted across the trainer's phases
  double train_loss = 0;  // mean soft-Dice loss of the epoch's iterations
  std::optional<double> validation_loss;
  bool best = false;      // the validation loss improved (the best checkpoint was written)
  double lr = 0;
};

struct TrainResult {
  int epochs_run = 0;            // epochs of this fit() call
  bool stopped_early = false;
  int best_epoch = -1;           // over the trainer's whole life; -1 before any validation
  double best_validation_loss = std::numeric_limits<double>::infinity();
  std::vector<EpochReport> history;
};

// Defaults follow spec §4: Adam lr 1e-3, ≤100 epochs of 75 iterations, patience 10.
class TrainerOptions {
 public:
  // Adam's learning rate (betas 0.9/0.999, eps 1e-8, no weight decay; default 1e-3).
  TrainerOptions& lr(double v) { lr_ = v; return *this; }
  double lr() const { return lr_; }
  // Epochs one fit() call runs at most (default 100).
  TrainerOptions& epochs(int v) { epochs_ = v; return *this; }
  int epochs() const { return epochs_; }
  // Optimizer steps per epoch (default 75).
  TrainerOptions& iterations_per_epoch(int v) { iterations_ = v; return *this; }
  int iterations_per_epoch() const { return iterations_; }
  // Stop when the validation loss has not improved for this many epochs; 0 = never (default 10).
  TrainerOptions& patience(int v) { patience_ = v; return *this; }
  int patience() const { return patience_; }
  // Where the best epoch's checkpoint (io::save_checkpoint: model, optimizer, extra "epoch" and
  // "validation_loss") is written, atomically; empty = no file (default).
  TrainerOptions& best_checkpoint(std::string v) { best_checkpoint_ = std::move(v); return *this; }
  const std::string& best_checkpoint() const { return best_checkpoint_; }
  // Load the best epoch's weights and buffers back into the model when fit() ends (default true: spec §4
  // keeps the checkpoint with the best validation loss).
  TrainerOptions& restore_best(bool v) { restore_best_ = v; return *this; }
  bool restore_best() const { return restore_best_; }
  // Encoders frozen while training (self-transfer warm-up; default false = all parameters trained).
  TrainerOptions& freeze_encoders(bool v) { freeze_encoders_ = v; return *this; }
  bool freeze_encoders() const { return freeze_encoders_; }
  // With freeze_encoders: also keep the encoders' BN in eval mode (default false: train mode, spec A13).
  TrainerOptions& freeze_encoder_bn(bool v) { freeze_encoder_bn_ = v; return *this; }
  bool freeze_encoder_bn() const { return freeze_encoder_bn_; }
  // The name reported in EpochReport::phase (default "train").
  TrainerOptions& phase(std::string v) { phase_ = std::move(v); return *this; }
  const std::string& phase() const { return phase_; }

  void validate() const {
    const std::string who = "mmnet::mmfnet::TrainerOptions";
    if (!(lr_ >= 0) || !std::isfinite(lr_)) fail<value_error>(who, "lr", "a finite value >= 0", lr_);
    if (epochs_ < 0) fail<value_error>(who, "epochs", ">= 0", epochs_);
    if (iterations_ < 1) fail<value_error>(who, "iterations_per_epoch", ">= 1", iterations_);
    if (patience_ < 0) fail<value_error>(who, "patience", ">= 0", patience_);
  }

 private:
  double lr_ = 1e-3;
  int epochs_ = 100, iterations_ = 75, patience_ = 10;
  std::string best_checkpoint_;
  bool restore_best_ = true, freeze_encoders_ = false, freeze_encoder_bn_ = false;
  std::string phase_ = "train";
};

// Trains an MMFNet (any preset, the single-modality model included) with Adam on the soft-Dice loss of spec §3.
// The model must outlive the trainer and stay in place (the optimizer points at its parameters). Early
// stopping and the best state persist across fit() calls, so phases continue one run; start_phase() switches
// lr and freezing with a FRESH Adam (spec §4 step 4: new Adam state).
template <class T, class B>
class Trainer {
 public:
  using model_type = models::MMFNet<T, B>;
  using batch_type = Batch<T, B>;
  // (epoch, iteration) -> the batch of that step.
  using BatchSource = std::function<batch_type(int epoch, int iteration)>;
  // Validation loss of the model; called in eval mode once per epoch. Empty: no validation, no early stop.
  using Validation = std::function<double(model_type&)>;
  using Progress = std::function<void(const EpochReport&)>;

  Trainer(model_type& model, const TrainerOptions& options) : model_(model) { start_phase(options); }

  // New options (lr, freezing, ...) and a new Adam with empty state; early-stopping state is kept.
  void start_phase(const TrainerOptions& options) {
    options.validate();
    options_ = options;
    optimizer_ = std::make_unique<optim::Adam<T, B>>(model_.parameters(), optim::AdamOptions(options.lr()));
    if (options.freeze_encoders()) freeze_encoders(model_, options.freeze_encoder_bn());
    else unfreeze_encoders(model_);
  }

  // Runs up to options().epochs() epochs; stops early when the validation loss has not improved for
  // patience() epochs (counted across phases).
  TrainResult fit(const BatchSource& batches, const Validation& validation = {}, const Progress& progress = {}) {
    const std::string who = "mmnet::mmfnet::Trainer::fit";
    if (!batches) fail<value_error>(who, "batch source", "a callable", "an empty std::function");
    TrainResult r;
    for (int e = 0; e < options_.epochs(); ++e) {
      if (options_.patience() > 0 && since_best_ >= options_.patience()) {
        r.stopped_early = true;
        break;
      }
      EpochReport rep;
      rep.phase = options_.phase();
      rep.epoch = epoch_;
      rep.lr = optimizer_->lr();
      rep.train_loss = train_epoch(batches);
      if (validation) {
        const double v = evaluate(validation);
        rep.validation_loss = v;
        if (v < best_loss_) {
          best_loss_ = v;
          best_epoch_ = epoch_;
          since_best_ = 0;
          rep.best = true;
          best_state_ = model_.state_dict();
          if (!options_.best_checkpoint().empty())
            io::save_checkpoint(options_.best_checkpoint(), model_, optimizer_.get(), nullptr,
                                {{"epoch", static_cast<double>(epoch_)}, {"validation_loss", v}}, "mmnet::MMFNet");
        } else {
          ++since_best_;
        }
      }
      ++epoch_;
      ++r.epochs_run;
      r.history.push_back(rep);
      if (progress) progress(rep);
    }
    if (options_.restore_best() && !best_state_.empty()) model_.load_state_dict(best_state_, true);
    r.best_epoch = best_epoch_;
    r.best_validation_loss = best_loss_;
    return r;
  }

  // Mean soft-Dice loss over batches in the model's current mode (Trainer calls validation in eval mode).
  static double dice_loss(model_type& model, const std::vector<batch_type>& batches) {
    if (batches.empty()) fail<value_error>("mmnet::mmfnet::Trainer::dice_loss", "batches", "at least one", 0);
    losses::SoftDice<T, B> dice;
    double sum = 0;
    for (const auto& b : batches) sum += static_cast<double>(dice.forward(model.forward(b.input), b.target));
    return sum / static_cast<double>(batches.size());
  }

  optim::Adam<T, B>& optimizer() { return *optimizer_; }
  const TrainerOptions& options() const { return options_; }
  int epoch() const { return epoch_; }
  int best_epoch() const { return best_epoch_; }
  double best_validation_loss() const { return best_loss_; }

 private:
  // Train mode, with the encoders' BN put back in eval mode when their statistics are frozen.
  void set_train_mode() {
    model_.train();
    if (options_.freeze_encoders() && options_.freeze_encoder_bn())
      for (auto& enc : model_.encoders) enc.eval();
  }
  double train_epoch(const BatchSource& batches) {
    set_train_mode();
    losses::SoftDice<T, B> dice;
    double sum = 0;
    // One backward per forward here: let the model free saved activations as backward goes (restored after).
    struct Release {
      model_type& m;
      bool before;
      ~Release() { m.release_activations_after_backward(before); }
    } restore{model_, model_.release_activations_after_backward()};
    model_.release_activations_after_backward(true);
    for (int it = 0; it < options_.iterations_per_epoch(); ++it) {
      const batch_type b = batches(epoch_, it);
      optimizer_->zero_grad();
      const T loss = dice.forward(model_.forward(b.input), b.target);
      if (!std::isfinite(static_cast<double>(loss)))
        fail<value_error>("mmnet::mmfnet::Trainer::fit", "training loss", "a finite value", static_cast<double>(loss),
                          "epoch " + std::to_string(epoch_) + ", iteration " + std::to_string(it));
      model_.backward(dice.backward());
      optimizer_->step();
      sum += static_cast<double>(loss);
    }
    return sum / options_.iterations_per_epoch();
  }
  double evaluate(const Validation& validation) {
    model_.eval();
    const double v = validation(model_);
    set_train_mode();
    if (!std::isfinite(v))
      fail<value_error>("mmnet::mmfnet::Trainer::fit", "validation loss", "a finite value", v, "epoch " + std::to_string(epoch_));
    return v;
  }

  model_type& model_;
  TrainerOptions options_;
  std::unique_ptr<optim::Adam<T, B>> optimizer_;
  int epoch_ = 0, best_epoch_ = -1, since_best_ = 0;
  double best_loss_ = std::numeric_limits<double>::infinity();
  StateDict best_state_;
};

// The spec §4 schedule. Epoch counts are per phase; lr of pre-training and warm-up 1e-3, fine-tuning 1e-4.
struct SelfTransferOptions {
  TrainerOptions pretrain = TrainerOptions().lr(1e-3).phase("pretrain");
  int warmup_epochs = 5;
  double warmup_lr = 1e-3;
  double finetune_lr = 1e-4;
  int total_epochs = 100;          // warm-up + fine-tuning
  bool freeze_encoder_bn = false;  // spec A13: false (frozen encoders' BN stays in train mode)
  TrainerOptions main = TrainerOptions();  // iterations, patience, best_checkpoint of the MMFNet phases
};

struct SelfTransferResult {
  std::vector<TrainResult> pretrain;  // one per modality
  TrainResult warmup, finetune;
};

// Spec §4 self-transfer on net (M modalities, cbam_rfblock fusion): for each m, a single-modality model with
// net's widths (generator g) is trained on channel m of the batches (best weights kept), its encoder copied into
// net.encoders[m]; then warm-up epochs with frozen encoders at warmup_lr and fine-tuning of everything with a
// new Adam at finetune_lr, early stopping across both. validation: fixed multi-modality batches (mean soft-Dice
// in eval mode; channel m for the single models). A single model's best checkpoint, if main/pretrain name a
// path, gets ".pretrain<m>" appended.
template <class T, class B>
SelfTransferResult self_transfer(models::MMFNet<T, B>& net, const SelfTransferOptions& o,
                                 const typename Trainer<T, B>::BatchSource& batches,
                                 const std::vector<Batch<T, B>>& validation, Generator& g = default_generator(),
                                 const typename Trainer<T, B>::Progress& progress = {}) {
  const std::string who = "mmnet::mmfnet::self_transfer";
  const models::MMFNetOptions& no = net.options();
  if (no.input_level_fusion()) fail<value_error>(who, "network", "one encoder per modality", "input-level fusion");
  if (o.warmup_epochs < 0 || o.warmup_epochs > o.total_epochs)
    fail<value_error>(who, "warmup_epochs", "0..total_epochs (" + std::to_string(o.total_epochs) + ")", o.warmup_epochs);
  using trainer = Trainer<T, B>;
  SelfTransferResult r;
  const index_t mods = no.modalities();
  const std::vector<index_t> ones(static_cast<std::size_t>(mods), 1);
  for (index_t m = 0; m < mods; ++m) {
    const auto channel = [&ones, m](const Batch<T, B>& b) {
      return Batch<T, B>{nn::split_channels(b.input, ones)[static_cast<std::size_t>(m)], b.target};
    };
    models::MMFNetOptions so = no;
    so.modalities(1).fusion(models::MMFNetFusion::merge);
    models::MMFNet<T, B> single(so, g);
    TrainerOptions po = o.pretrain;
    po.phase("pretrain." + std::to_string(m));
    if (!po.best_checkpoint().empty()) po.best_checkpoint(po.best_checkpoint() + ".pretrain" + std::to_string(m));
    trainer t(single, po);
    std::vector<Batch<T, B>> val;
    for (const auto& b : validation) val.push_back(channel(b));
    typename trainer::Validation vf;
    if (!val.empty()) vf = [&val](models::MMFNet<T, B>& model) { return trainer::dice_loss(model, val); };
    r.pretrain.push_back(t.fit([&](int e, int it) { return channel(batches(e, it)); }, vf, progress));
    copy_encoder(single, net, m);
  }
  typename trainer::Validation vf;
  if (!validation.empty()) vf = [&validation](models::MMFNet<T, B>& model) { return trainer::dice_loss(model, validation); };
  TrainerOptions wo = o.main;
  wo.lr(o.warmup_lr).epochs(o.warmup_epochs).freeze_encoders(true).freeze_encoder_bn(o.freeze_encoder_bn)
      .restore_best(false).phase("warmup");
  trainer t(net, wo);
  r.warmup = t.fit(batches, vf, progress);
  TrainerOptions fo = o.main;
  fo.lr(o.finetune_lr).epochs(r.warmup.stopped_early ? 0 : o.total_epochs - r.warmup.epochs_run).freeze_encoders(false)
      .phase("finetune");
  t.start_phase(fo);
  r.finetune = t.fit(batches, vf, progress);
  return r;
}

}  // namespace mmnet::mmfnet
