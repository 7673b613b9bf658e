// apps/mmnet/cmd_train.hpp: `mmnet train`: MMFNet or MAML on an MSD-layout data set with the library's pieces:
// load_case -> prepare_case (MMFNet: T1 body box, body z-score with MMFNet's clips, crop; MAML: nnU-Net's non-zero
// crop and masked z-score) -> the last val_fraction of the training cases held out for validation ->
// PatchSampler (1/3 of each batch forced to hold foreground) + BatchLoader (background thread, batch k a pure
// function of (seed, k); MMFNet's augmentation: H/W flips, rotation +-5 degrees; MAML: flips of all three axes,
// rotation) -> train::Trainer with validation Dice per epoch by Gaussian sliding-window inference on the whole
// validation cases. MMFNet: soft Dice on the sigmoid output (its spec §3), Adam, threshold 0.5. MAML: the
// joint + intra Dice-CE with deep supervision (spec §3, code or paper weights), SGD-Nesterov with poly LR and
// clipping at 12 (nnU-Net, the official code) or Adam-AMSGrad, argmax; optional random modality dropout.
// Writes RUN/config.json, RUN/last.h5, RUN/best.h5, RUN/log.csv, RUN/curves.svg. --resume continues from
// RUN/last.h5 exactly (same weights and losses as an uninterrupted run).
// CSCN (spec cascaded-fcn §4): cases resampled to 1 mm and z-scored over non-zero voxels; two stages in sequence,
// each a train::Trainer in its own directory (RUN/bunet/, RUN/acdnet/: last.h5, best.h5, log.csv, curves.svg),
// --epochs x --iterations each: (1) BUNet on (8, 24, 24) blocks of all three views with flips (cscn::draw_block /
// cut_block, half the centres on tumour), the distance-weighted focal loss (α from the full-volume label, cut with
// the block; γ 2), Adam 1e-3 with lr(t) = 1e-3 0.9^(t / 500) set per iteration; validation: BUNet's multi-view
// Dice; (2) the best BUNet frozen, its multi-view P_coarse of every case, ACDNet on cat[image, P_coarse] blocks
// centred in the training ROI (cscn::training_roi); validation: the whole cascade's Dice. RUN/best.h5 is the CSCN
// checkpoint (bunet.* + acdnet.*, model cscn-<config>) assembled from both stages' best. --stage 1 stops after
// stage 1; --resume continues whichever stage was running (stage 1 complete: stage 2), exactly.
#pragma once
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <mmnet/core/parallel.hpp>
#include <mmnet/data/augment.hpp>
#include <mmnet/data/dataset.hpp>
#include <mmnet/data/loader.hpp>
#include <mmnet/data/sampler.hpp>
#include <mmnet/hmrnet.hpp>
#include <mmnet/layers/label_resample.hpp>
#include <mmnet/layers/softmax.hpp>
#include <mmnet/losses/deep_supervision.hpp>
#include <mmnet/losses/dice_ce.hpp>
#include <mmnet/inference/postprocess.hpp>
#include <mmnet/inference/sliding_window.hpp>
#include <mmnet/metrics/metrics.hpp>
#include <mmnet/cscn.hpp>
#include <mmnet/maml.hpp>
#include <mmnet/mmfnet.hpp>
#include <mmnet/optim/sgd.hpp>
#include <mmnet/train/trainer.hpp>

#include "cli_common.hpp"
#include "conresnet_cli.hpp"
#include "hmrnet_cli.hpp"
#include "models.hpp"
#include "pipeline.hpp"

namespace mmnet_cli {

// Defaults = what scripts/main.sh runs.
struct TrainArgs {
  std::string data, model = "mmfnet", config = "small", out, patch = "16x48x48", progress = "auto";
  std::string optimizer, loss = "code";  // optimizer "": the model's default (mmfnet adam, maml sgd)
  std::string stage = "all";             // cscn: all, or 1 (stop after BUNet; --resume continues with stage 2)
  int epochs = 8, iterations = 20, batch = 2, threads = 0;
  int stage1_epochs = 0;                 // hmrnet: epochs of stage 1 (0: --epochs)
  double lr = 0, val_fraction = 0.2, modality_dropout = 0;  // lr 0: the default of the optimizer and model
  unsigned long long seed = 0;
  bool resume = false;
  // Which options were given on the command line (a resumed run keeps config.json's values otherwise).
  CLI::Option *o_model = nullptr, *o_config = nullptr, *o_patch = nullptr, *o_iterations = nullptr, *o_batch = nullptr,
              *o_lr = nullptr, *o_val = nullptr, *o_seed = nullptr, *o_epochs = nullptr, *o_data = nullptr,
              *o_optimizer = nullptr, *o_loss = nullptr, *o_dropout = nullptr, *o_stage1_epochs = nullptr;
};

// Default learning rates: MMFNet Adam 3e-3 (the phantom runs; its spec's 1e-3 is for 256 x 256 slabs), nnU-Net's
// SGD 0.01 (MAML spec §4.1), Adam 3e-4 (MAML's paper preset).
inline double default_lr(ModelKind k, const std::string& optimizer) {
  if (k == ModelKind::cscn) return 1e-3;  // spec cascaded-fcn §4.3
  if (k == ModelKind::hmrnet) return optimizer == "sgd" ? 0.01 : 3e-3;  // spec hmrnet §4; Adam for short CPU runs
  if (k == ModelKind::conresnet) return 1e-3;  // the official 1e-4 is for 40,000 iterations; short CPU runs
  if (optimizer == "sgd") return 0.01;
  return k == ModelKind::mmfnet ? 3e-3 : 3e-4;
}

inline CLI::App* add_train_command(CLI::App& app, TrainArgs& a) {
  auto* c = app.add_subcommand("train", "Train MMFNet, MAML or CSCN on an MSD-layout data set; writes RUN/{best,last}.h5, log.csv, curves.svg, config.json (cscn: RUN/best.h5 and the stages in RUN/bunet/, RUN/acdnet/)");
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later option wins
  a.o_data = c->add_option("--data", a.data, "Data set directory (dataset.json; the training split is used)");
  a.o_model = c->add_option("--model", a.model, "Model (mmfnet, maml, cscn, hmrnet, conresnet)")->capture_default_str()->check(CLI::IsMember(model_names()));
  a.o_config = c->add_option("--config", a.config, "Preset (mmfnet: small, tiny, paper, ...; maml: small, tiny, brats, liver, ...; cscn: paper, small, tiny)")
                   ->capture_default_str()->check(CLI::IsMember(all_config_names()));
  c->add_option("--out", a.out, "Run directory")->required();
  a.o_epochs = c->add_option("--epochs", a.epochs, "Epochs (a resumed run continues up to this many; cscn: per stage)")->capture_default_str();
  a.o_iterations = c->add_option("--iterations", a.iterations, "Optimizer steps per epoch")->capture_default_str();
  a.o_batch = c->add_option("--batch", a.batch, "Patches per batch")->capture_default_str();
  a.o_patch = c->add_option("--patch", a.patch, "Patch size DxHxW (multiples of 2^levels; also the inference window; cscn: the preset's block)")->capture_default_str();
  a.o_lr = c->add_option("--lr", a.lr, "Learning rate (0: mmfnet Adam 3e-3; maml SGD 0.01, Adam 3e-4)")->capture_default_str();
  a.o_optimizer = c->add_option("--optimizer", a.optimizer, "adam, or sgd (Nesterov 0.99, wd 3e-5, poly LR, clip 12; AMSGrad for maml's adam); default mmfnet adam, maml sgd")
                      ->check(CLI::IsMember({"adam", "sgd"}));
  a.o_loss = c->add_option("--loss", a.loss, "maml: loss weights of the official code or of the paper (spec §3.3)")
                 ->capture_default_str()->check(CLI::IsMember({"code", "paper"}));
  a.o_dropout = c->add_option("--modality-dropout", a.modality_dropout, "maml: probability that a training step drops a random proper subset of the modalities")
                    ->capture_default_str();
  a.o_val = c->add_option("--val-fraction", a.val_fraction, "Fraction of the training cases held out for validation (the last ones)")->capture_default_str();
  c->add_flag("--resume", a.resume, "Continue RUN/last.h5 with RUN/config.json's settings (--epochs may grow)");
  a.o_stage1_epochs = c->add_option("--stage1-epochs", a.stage1_epochs, "hmrnet: epochs of stage 1, the coarse U-Net (0: --epochs; a resumed run may grow it)")
                          ->capture_default_str();
  c->add_option("--stage", a.stage, "cscn: all (BUNet, then ACDNet), or 1 (BUNet only; --resume then continues with stage 2); hmrnet: all, or 1 (the coarse U-Net only)")
      ->capture_default_str()->check(CLI::IsMember({"all", "1"}));
  c->add_option("--threads", a.threads, "Threads (0: OpenMP's default)")->capture_default_str();
  a.o_seed = c->add_option("--seed", a.seed, "Seed of the weights and of the batch sequence")->capture_default_str();
  c->add_option("--progress", a.progress, "auto (a bar on a terminal, lines otherwise), bar, lines or off")
      ->capture_default_str()->check(CLI::IsMember({"auto", "bar", "lines", "off"}));
  return c;
}

namespace train_detail {

// Mean foreground Dice of the sliding-window prediction over the validation cases (whole cropped volumes):
// predict(x) returns N x C x roi probabilities (C = 1: threshold 0.5; C > 1: argmax, Dice averaged over labels
// 1..C-1, nnU-Net's validation Dice; a label absent from both prediction and truth is left out).
template <class Predict>
double validation_dice(Predict&& predict, index_t channels, const std::vector<PreparedCase>& val, const RunConfig& rc) {
  auto opt = mmnet::inference::SlidingWindowOptions({rc.patch[0], rc.patch[1], rc.patch[2]})
                 .overlap(0.25).mode(mmnet::inference::BlendMode::gaussian);
  if (channels > 1)  // MAML: nnU-Net's tiles and Gaussian, as segment uses
    opt.placement(mmnet::inference::WindowPlacement::nnunet).gaussian_style(mmnet::inference::GaussianStyle::nnunet);
  mmnet::metrics::MetricOptions mo;
  mo.surface = false;
  const auto post = channels == 1 ? mmnet::inference::PostprocessOptions::threshold(0.5)
                                  : mmnet::inference::PostprocessOptions::argmax();
  const auto regions = mmnet::metrics::label_regions(channels == 1 ? 1 : channels - 1);
  double sum = 0;
  int n = 0;
  for (const auto& c : val) {
    const auto probs = mmnet::inference::sliding_window_inference<mmnet::cpu, float>(
        c.image, [&](const mmnet::Tensor<float, mmnet::cpu>& x) { return predict(x); }, opt);
    const auto pred = mmnet::inference::to_label_map(probs, post);
    const auto ms = mmnet::metrics::evaluate_regions(pred.data, c.label->data,
                                                     mmnet::ops::Dims3{pred.depth, pred.height, pred.width},
                                                     {1.0, 1.0, 1.0}, regions, mo);
    for (const auto& m : ms)
      if (!std::isnan(m.dice)) sum += m.dice, ++n;
  }
  return n ? sum / n : 0.0;
}

inline mmnet::train::ProgressMode progress_mode(const std::string& s) {
  if (s == "bar") return mmnet::train::ProgressMode::bar;
  if (s == "lines") return mmnet::train::ProgressMode::lines;
  if (s == "off") return mmnet::train::ProgressMode::off;
  return mmnet::train::ProgressMode::automatic;
}

// What run_train prepared for the model-specific part.
struct TrainContext {
  const TrainArgs& args;
  RunConfig& rc;
  const ModelSpec& spec;
  std::vector<PreparedCase>& train_cases;
  std::vector<PreparedCase>& val_cases;
  OutputGuard& guard;
  std::string last;
};

// The loop shared by the models: trainer options, batches from the loader, resume, fit, the closing lines.
// configure(trainer) tracks generators; epoch_lr(e), when set, gives the learning rate of epoch e (0-based; set
// before it starts, also after a resume); step_lr(k), when set, the learning rate of optimizer step k (set before
// the step; ConResNet's poly schedule); describe is the model part of the start line.
template <class Net, class LossFn, class Validate, class Configure>
int fit(TrainContext& cx, Net& net, mmnet::optim::OptimizerBase& opt, LossFn loss_fn, Validate validate_fn,
        double clip, Configure configure, const std::function<double(int)>& epoch_lr, const std::string& describe,
        const mmnet::data::AugmentOptions& aug, const std::function<double(long long)>& step_lr = nullptr) {
  const RunConfig& rc = cx.rc;
  const auto topt = mmnet::train::TrainerOptions()
                        .epochs(rc.epochs)
                        .iterations_per_epoch(rc.iterations)
                        .output_dir(cx.args.out)
                        .model_name(rc.checkpoint_name())
                        .metric_name("dice")
                        .clip_grad_norm(clip)
                        .progress(progress_mode(cx.args.progress))
                        .progress_every(std::max(1, std::min(10, rc.iterations)));
  using Trainer = mmnet::train::Trainer<Net>;
  Trainer trainer(net, opt, loss_fn, topt);
  trainer.progress_stream(std::cout);
  configure(trainer);
  if (cx.args.resume) trainer.resume(cx.args.out);
  if (epoch_lr) opt.set_lr(epoch_lr(trainer.epoch()));
  trainer.on_epoch_end([&](const mmnet::train::EpochRecord& rec, bool) {
    cx.guard.commit();  // a resumable run now
    if (epoch_lr) opt.set_lr(epoch_lr(rec.epoch + 1));
  });

  // Batches: batch k = epoch * iterations + iteration, a pure function of (seed, k).
  std::vector<mmnet::data::Case> sampler_cases;
  for (auto& c : cx.train_cases) sampler_cases.push_back({c.image, *c.label, c.name, {}});
  auto sampler = std::make_shared<mmnet::data::PatchSampler>(
      std::move(sampler_cases), mmnet::data::SamplerOptions({rc.patch[0], rc.patch[1], rc.patch[2]}).pad_value(rc.pad_values()));
  const index_t start = static_cast<index_t>(trainer.epoch()) * rc.iterations + trainer.iteration();
  mmnet::data::BatchLoader loader(sampler, mmnet::data::LoaderOptions(rc.batch).seed(rc.seed).start_batch(start).augment(aug));
  auto batches = [&](int epoch, int it) {
    mmnet::data::Batch b = loader.next();
    const index_t want = static_cast<index_t>(epoch) * rc.iterations + it;
    if (b.index != want)
      throw std::logic_error("batch " + std::to_string(b.index) + " arrived for step " + std::to_string(want));
    if (step_lr) opt.set_lr(step_lr(static_cast<long long>(want)));
    return mmnet::train::Batch<float, mmnet::cpu>{b.images, b.labels};
  };
  typename Trainer::ValidationFn validate;
  if (!cx.val_cases.empty())
    validate = [&](Net& m) { return mmnet::train::ValidationResult{validate_fn(m), std::nullopt}; };

  std::printf("train: %s %s (%lld parameters), %zu training + %zu validation cases, patch %s, batch %d, %d epochs x %d "
              "iterations, %s, validation: sliding-window Dice on the validation cases%s\n",
              rc.model.c_str(), rc.config.c_str(), static_cast<long long>(net.num_parameters()), cx.train_cases.size(),
              cx.val_cases.size(), shape_str(rc.patch).c_str(), rc.batch, rc.epochs, rc.iterations, describe.c_str(),
              cx.args.resume ? (", resuming at epoch " + std::to_string(trainer.epoch() + 1) + " iteration " +
                                std::to_string(trainer.iteration())).c_str() : "");
  std::fflush(stdout);
  const auto r = trainer.fit(batches, validate);
  loader.stop();
  cx.guard.commit();
  const std::string best = join_path(cx.args.out, "best.h5");
  std::error_code ec;
  if (cx.val_cases.empty() && r.status != mmnet::train::FitStatus::interrupted) {
    fs::copy_file(cx.last, best, fs::copy_options::overwrite_existing, ec);  // no validation: the last state is the best
    if (ec) throw cli_error(best + ": cannot write (" + ec.message() + ")");
  }
  if (r.status == mmnet::train::FitStatus::interrupted) {
    std::printf("train: interrupted; continue with: mmnet train --out %s --resume\n", cx.args.out.c_str());
    return 130;
  }
  if (r.best_epoch >= 0)
    std::printf("train: best epoch %d, validation dice %s\n", r.best_epoch + 1, fmt(r.best_value).c_str());
  std::printf("train: %s (best), %s, log.csv, curves.svg, config.json in %s\n", best.c_str(), cx.last.c_str(),
              cx.args.out.c_str());
  return 0;
}

inline int train_mmfnet(TrainContext& cx) {
  const RunConfig& rc = cx.rc;
  mmnet::Generator init(rc.seed);
  mmnet::MMFNet<float, mmnet::cpu> net(*cx.spec.mmfnet, init);
  mmnet::losses::SoftDice<float, mmnet::cpu> dice;  // smooth 1, one global ratio (MMFNet spec §3)
  std::unique_ptr<mmnet::optim::OptimizerBase> opt;
  if (rc.optimizer == "sgd")
    opt = std::make_unique<mmnet::optim::SGD<float, mmnet::cpu>>(
        net.parameters(), mmnet::optim::SGDOptions(rc.lr).momentum(0.99).nesterov(true).weight_decay(3e-5));
  else
    opt = std::make_unique<mmnet::optim::Adam<float, mmnet::cpu>>(net.parameters(), mmnet::optim::AdamOptions(rc.lr));
  const auto pad = rc.pad_values();
  const auto aug = mmnet::data::AugmentOptions::mmfnet().flip_probability({0, 0.5, 0.5}).rotation_fill(pad);
  auto validate = [&](mmnet::MMFNet<float, mmnet::cpu>& m) {
    return validation_dice([&](const mmnet::Tensor<float, mmnet::cpu>& x) { return m.forward(x); }, 1, cx.val_cases, rc);
  };
  return fit(cx, net, *opt, mmnet::train::loss_step(dice), validate, 0.0, [](auto&) {}, nullptr,
             (rc.optimizer == "sgd" ? "SGD-Nesterov lr " : "Adam lr ") + fmt(rc.lr, 6), aug);
}

inline int train_maml(TrainContext& cx) {
  using Net = mmnet::MAML<float, mmnet::cpu>;
  const RunConfig& rc = cx.rc;
  mmnet::Generator init(rc.seed);
  Net net(mmnet::MAMLOptions(*cx.spec.maml).modality_dropout(rc.modality_dropout), init);
  const index_t P = cx.spec.maml->num_pool();
  auto lo = rc.loss == "paper" ? mmnet::models::MAMLLossOptions::paper(P) : mmnet::models::MAMLLossOptions::code(P);
  mmnet::MAMLLoss<float, mmnet::cpu> loss(lo.variant(cx.spec.maml->variant()));
  std::unique_ptr<mmnet::optim::OptimizerBase> opt;
  std::function<double(int)> epoch_lr;
  double clip = 0;
  std::string describe;
  if (rc.optimizer == "sgd") {  // the official code (spec §4.1): Nesterov 0.99, wd 3e-5, poly LR per epoch, clip 12
    opt = std::make_unique<mmnet::optim::SGD<float, mmnet::cpu>>(net.parameters(), mmnet::models::maml::sgd_options().lr(rc.lr));
    // nnU-Net's closed form lr_e = lr (1 - e / E)^0.9, set at the start of epoch e: a pure function of the epoch
    // and of the run's current length, so a resumed run with more --epochs decays over the new length.
    epoch_lr = [&rc](int e) { return e >= rc.epochs ? 0.0 : rc.lr * std::pow(1.0 - double(e) / rc.epochs, 0.9); };
    clip = mmnet::models::maml::clip_norm;
    describe = "SGD-Nesterov lr " + fmt(rc.lr, 6) + " poly, clip 12";
  } else {  // the paper's Adam (nnU-Net v1's: AMSGrad, wd 3e-5)
    opt = std::make_unique<mmnet::optim::Adam<float, mmnet::cpu>>(net.parameters(), mmnet::models::maml::adam_options().lr(rc.lr));
    describe = "Adam-AMSGrad lr " + fmt(rc.lr, 6);
  }
  describe += ", " + rc.loss + " loss weights";
  if (rc.modality_dropout > 0) describe += ", modality dropout " + fmt(rc.modality_dropout, 2);
  // nnU-Net mirrors every axis; the phantoms are isotropic, so all three flips are label-preserving.
  const auto aug = mmnet::data::AugmentOptions::mmfnet().flip_probability({0.5, 0.5, 0.5}).rotation_fill(rc.pad_values());
  auto validate = [&](Net& m) {
    return validation_dice([&](const mmnet::Tensor<float, mmnet::cpu>& x) { return m.predict(x); },
                           cx.spec.output_channels(), cx.val_cases, rc);
  };
  auto configure = [&](mmnet::train::Trainer<Net>& t) {
    if (rc.modality_dropout > 0) t.track_generator("modality_dropout", net.dropout_generator());
  };
  return fit(cx, net, *opt, mmnet::models::maml::loss_step(loss), validate, clip, configure, epoch_lr, describe, aug);
}

// ---- CSCN (spec cascaded-fcn §4) ------------------------------------------------------------------------------

namespace cscn_train {

using tensor = mmnet::Tensor<float, mmnet::cpu>;
namespace mc = mmnet::models::cscn;

inline tensor volume_tensor(const mmnet::data::Volume& v) {
  return tensor::from_vector(mmnet::Shape{1, v.channels, v.depth, v.height, v.width}, v.data);
}
inline tensor label_tensor(const mmnet::data::LabelMap& m) {
  std::vector<float> f(m.data.begin(), m.data.end());
  return tensor::from_vector(mmnet::Shape{1, 1, m.depth, m.height, m.width}, f);
}

// One case of a stage: the image (1 x 1 x Z x Y x X), its label, α (distance_weight_map of the FULL label), the
// network input (stage 1 the image, stage 2 cat[image, P_coarse]), P_coarse (stage 2).
struct Case {
  std::string name;
  tensor image, label, alpha, input, p_coarse;
};

inline std::vector<Case> make_cases(const std::vector<PreparedCase>& prepared) {
  std::vector<Case> out;
  for (const auto& p : prepared) {
    Case c;
    c.name = p.name;
    c.image = volume_tensor(p.image);
    c.label = label_tensor(*p.label);
    try {
      c.alpha = mmnet::losses::distance_weight_map(c.label);
    } catch (const mmnet::error& e) {
      throw cli_error("case " + p.name + ": the distance weights of its label are undefined (" + e.what() + ")");
    }
    c.input = c.image;
    out.push_back(std::move(c));
  }
  return out;
}

// Dice of (prob > 0.5) against the label (1 when both are empty).
inline double dice(const tensor& prob, const tensor& label) {
  const auto p = prob.to_vector(), l = label.to_vector();
  double inter = 0, a = 0, b = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const bool x = p[i] > 0.5f, y = l[i] == 1.0f;
    inter += x && y, a += x, b += y;
  }
  return a + b > 0 ? 2 * inter / (a + b) : 1.0;
}

// SplitMix64 of (seed, stage, batch): batch k of a stage is a pure function of them (exact resume).
inline std::uint64_t batch_seed(std::uint64_t seed, std::uint64_t stage, std::uint64_t k) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + stage * 0xD1B54A32D192ED03ull + k + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The focal loss step on a target that packs (label, α) as channels 0 and 1 of N x 2 x D x H x W.
inline auto focal_step(mmnet::losses::DistanceWeightedFocal<float, mmnet::cpu>& focal) {
  return [&focal](const tensor& logits, const tensor& target) {
    const mmnet::index_t n = target.size(0), per = target.numel() / (2 * n);
    const auto t = target.to_vector();
    std::vector<float> lab(static_cast<std::size_t>(n * per)), alp(lab.size());
    for (mmnet::index_t i = 0; i < n; ++i) {
      std::copy_n(t.begin() + 2 * i * per, per, lab.begin() + i * per);
      std::copy_n(t.begin() + (2 * i + 1) * per, per, alp.begin() + i * per);
    }
    const mmnet::Shape s{n, 1, target.size(2), target.size(3), target.size(4)};
    mmnet::train::LossStep<float, mmnet::cpu> r;
    r.loss = static_cast<double>(focal.forward(logits, tensor::from_vector(s, lab), tensor::from_vector(s, alp)));
    r.grad = focal.backward();
    return r;
  };
}

// A batch of blocks of one stage: (case, view, centre, flip) drawn from the stage's sampling cases, cut from the
// input, label and α; lr set for step k (the schedule is per iteration, a pure function of k).
inline mmnet::train::Batch<float, mmnet::cpu> make_batch(const std::vector<Case>& cases, const std::vector<mc::SamplingCase>& sc,
                                                        const mmnet::CSCNOptions& o, int batch, std::uint64_t seed) {
  mmnet::Generator g(seed);
  std::vector<tensor> in, tg;
  for (int b = 0; b < batch; ++b) {
    const mc::BlockDraw d = mc::draw_block(g, sc, o.block());
    const Case& c = cases[d.case_index];
    const auto blk = mc::cut_block(c.input, c.label, c.alpha, d, o.block());
    in.push_back(blk.input);
    tg.push_back(mmnet::nn::cat_channels(std::vector<tensor>{blk.label, blk.alpha}));
  }
  return {mc::stack(in), mc::stack(tg)};
}

inline mmnet::train::TrainerOptions trainer_options(const TrainContext& cx, const std::string& dir, const std::string& name) {
  const RunConfig& rc = cx.rc;
  return mmnet::train::TrainerOptions()
      .epochs(rc.epochs)
      .iterations_per_epoch(rc.iterations)
      .output_dir(dir)
      .model_name(name)
      .metric_name("dice")
      .progress(progress_mode(cx.args.progress))
      .progress_every(std::max(1, std::min(10, rc.iterations)));
}

// After a stage's fit: no validation -> its last state is its best.
inline void last_is_best(const std::string& dir) {
  std::error_code ec;
  const std::string best = join_path(dir, "best.h5");
  fs::copy_file(join_path(dir, "last.h5"), best, fs::copy_options::overwrite_existing, ec);
  if (ec) throw cli_error(best + ": cannot write (" + ec.message() + ")");
}

}  // namespace cscn_train

inline int train_cscn(TrainContext& cx) {
  using namespace cscn_train;
  const RunConfig& rc = cx.rc;
  const mmnet::CSCNOptions o = mmnet::CSCNOptions(*cx.spec.cscn).lr(rc.lr);
  const std::string dir1 = join_path(cx.args.out, "bunet"), dir2 = join_path(cx.args.out, "acdnet");
  const std::string name1 = rc.checkpoint_name() + ".bunet", name2 = rc.checkpoint_name() + ".acdnet";
  std::error_code ec;
  const bool stage2_started = cx.args.resume && fs::exists(join_path(dir2, "last.h5"), ec);
  std::vector<Case> train_cases = make_cases(cx.train_cases), val_cases = make_cases(cx.val_cases);
  mmnet::losses::DistanceWeightedFocal<float, mmnet::cpu> focal(mmnet::losses::DistanceWeightedFocalOptions().gamma(o.gamma()));
  const bool has_val = !val_cases.empty();
  auto mean = [](double s, std::size_t n) { return n ? s / static_cast<double>(n) : 0.0; };
  std::printf("train: cscn %s, %zu training + %zu validation cases on the %s mm grid, block %s, batch %d, per stage "
              "%d epochs x %d iterations, Adam lr %s x 0.9^(t/500), focal gamma %s%s\n",
              rc.config.c_str(), train_cases.size(), val_cases.size(),
              (fmt(rc.spacing[0], 2) + " x " + fmt(rc.spacing[1], 2) + " x " + fmt(rc.spacing[2], 2)).c_str(),
              o.block().str().c_str(), rc.batch, rc.epochs, rc.iterations, fmt(rc.lr, 6).c_str(), fmt(o.gamma(), 2).c_str(),
              cx.args.resume ? (stage2_started ? ", resuming stage 2" : ", resuming stage 1") : "");
  std::fflush(stdout);

  // Stage 1: BUNet on image blocks of the whole volume.
  if (!stage2_started) {
    mmnet::Generator init(rc.seed);
    mmnet::BUNet<float, mmnet::cpu> bunet(o.bunet(), init);
    mmnet::models::cscn::he_normal_init(bunet, init);
    mmnet::optim::Adam<float, mmnet::cpu> opt(bunet.parameters(), mc::adam_options(o));
    std::vector<mc::SamplingCase> sc;
    for (const auto& c : train_cases) sc.push_back(mc::sampling_case(c.label, mc::whole_volume(mc::volume_dims("train", c.label))));
    mmnet::train::Trainer<mmnet::BUNet<float, mmnet::cpu>> trainer(bunet, opt, focal_step(focal), trainer_options(cx, dir1, name1));
    trainer.progress_stream(std::cout);
    if (cx.args.resume && fs::exists(join_path(dir1, "last.h5"), ec)) trainer.resume(dir1);
    trainer.on_epoch_end([&](const mmnet::train::EpochRecord&, bool) { cx.guard.commit(); });
    auto batches = [&](int e, int it) {
      const std::uint64_t k = static_cast<std::uint64_t>(e) * static_cast<std::uint64_t>(rc.iterations) + static_cast<std::uint64_t>(it);
      opt.set_lr(mc::exponential_lr(static_cast<double>(k), o));
      return make_batch(train_cases, sc, o, rc.batch, batch_seed(rc.seed, 1, k));
    };
    typename mmnet::train::Trainer<mmnet::BUNet<float, mmnet::cpu>>::ValidationFn validate;
    if (has_val)
      validate = [&](mmnet::BUNet<float, mmnet::cpu>& net) {
        double s = 0;
        for (const auto& c : val_cases)
          s += dice(mc::stage_predict([&](const tensor& b, mc::View) { return net.forward(b); }, c.image, o.block(),
                                      o.stride(), o.inference_batch()), c.label);
        return mmnet::train::ValidationResult{mean(s, val_cases.size()), std::nullopt};
      };
    std::printf("train: stage 1/2: BUNet (%lld parameters) in %s, validation: BUNet-alone multi-view Dice\n",
                static_cast<long long>(bunet.num_parameters()), dir1.c_str());
    std::fflush(stdout);
    const auto r = trainer.fit(batches, validate);
    cx.guard.commit();
    if (r.status == mmnet::train::FitStatus::interrupted) {
      std::printf("train: interrupted in stage 1; continue with: mmnet train --out %s --resume\n", cx.args.out.c_str());
      return 130;
    }
    if (!has_val) last_is_best(dir1);
    if (r.best_epoch >= 0)
      std::printf("train: stage 1 best epoch %d, validation dice (BUNet alone) %s\n", r.best_epoch + 1, fmt(r.best_value).c_str());
    if (cx.args.stage == "1") {
      std::printf("train: stage 1 done (%s); continue with stage 2: mmnet train --out %s --resume\n",
                  join_path(dir1, "best.h5").c_str(), cx.args.out.c_str());
      return 0;
    }
  }

  // Stage 2: the best BUNet frozen; ACDNet on cat[image, P_coarse] blocks centred in the training ROI.
  mmnet::Generator init2(batch_seed(rc.seed, 2, 0));
  mmnet::CSCN<float, mmnet::cpu> cscn(o, init2);
  mmnet::models::cscn::he_normal_init(cscn.acdnet[0], init2);
  const std::string best1 = join_path(dir1, "best.h5");
  if (!fs::exists(best1, ec)) throw cli_error(best1 + ": missing (stage 1 did not finish; resume it first)");
  cscn.bunet[0].load_state_dict(mmnet::io::read_checkpoint(best1).model, /*strict=*/true);
  std::printf("train: stage 2/2: coarse maps of %zu cases with the frozen BUNet (%s)\n", train_cases.size() + val_cases.size(),
              best1.c_str());
  std::fflush(stdout);
  std::vector<mc::SamplingCase> sc;
  std::vector<mc::Box3> val_roi;
  for (auto* cs : {&train_cases, &val_cases})
    for (auto& c : *cs) {
      c.p_coarse = cscn.coarse(c.image);
      c.input = mmnet::nn::cat_channels(std::vector<tensor>{c.image, c.p_coarse});
      if (cs == &train_cases) sc.push_back(mc::sampling_case(c.label, mc::training_roi(c.label, c.p_coarse, o.roi_margin())));
      else val_roi.push_back(cscn.roi(c.p_coarse));
    }
  auto& acdnet = cscn.acdnet[0];
  mmnet::optim::Adam<float, mmnet::cpu> opt2(acdnet.parameters(), mc::adam_options(o));
  using Trainer2 = mmnet::train::Trainer<mmnet::ACDNet<float, mmnet::cpu>>;
  Trainer2 trainer2(acdnet, opt2, focal_step(focal), trainer_options(cx, dir2, name2));
  trainer2.progress_stream(std::cout);
  if (stage2_started) trainer2.resume(dir2);
  trainer2.on_epoch_end([&](const mmnet::train::EpochRecord&, bool) { cx.guard.commit(); });
  auto batches2 = [&](int e, int it) {
    const std::uint64_t k = static_cast<std::uint64_t>(e) * static_cast<std::uint64_t>(rc.iterations) + static_cast<std::uint64_t>(it);
    opt2.set_lr(mc::exponential_lr(static_cast<double>(k), o));
    return make_batch(train_cases, sc, o, rc.batch, batch_seed(rc.seed, 2, k));
  };
  typename Trainer2::ValidationFn validate2;
  if (has_val)
    validate2 = [&](mmnet::ACDNet<float, mmnet::cpu>&) {  // the whole cascade: spec §4.4 ROI, P_fine, λ fusion
      double s = 0;
      for (std::size_t i = 0; i < val_cases.size(); ++i) {
        const Case& c = val_cases[i];
        const mc::Box3& roi = val_roi[i];
        const auto pf = cscn.fine(c.image, c.p_coarse, roi).to_vector();
        auto pc = c.p_coarse.to_vector();
        std::vector<float> p(pc.size(), 0.0f);
        const mmnet::index_t Y = c.image.size(3), X = c.image.size(4), ey = roi.extent(1), ex = roi.extent(2);
        for (mmnet::index_t z = roi.lo[0]; z < roi.hi[0]; ++z)
          for (mmnet::index_t y = roi.lo[1]; y < roi.hi[1]; ++y)
            for (mmnet::index_t x = roi.lo[2]; x < roi.hi[2]; ++x) {
              const std::size_t v = static_cast<std::size_t>((z * Y + y) * X + x);
              const std::size_t f = static_cast<std::size_t>(((z - roi.lo[0]) * ey + (y - roi.lo[1])) * ex + (x - roi.lo[2]));
              p[v] = static_cast<float>(o.lambda() * pc[v] + (1 - o.lambda()) * pf[f]);
            }
        s += dice(tensor::from_vector(c.label.shape(), p), c.label);
      }
      return mmnet::train::ValidationResult{mean(s, val_cases.size()), std::nullopt};
    };
  std::printf("train: stage 2/2: ACDNet (%lld parameters) in %s, validation: cascade Dice\n",
              static_cast<long long>(acdnet.num_parameters()), dir2.c_str());
  std::fflush(stdout);
  const auto r2 = trainer2.fit(batches2, validate2);
  cx.guard.commit();
  if (r2.status == mmnet::train::FitStatus::interrupted) {
    std::printf("train: interrupted in stage 2; continue with: mmnet train --out %s --resume\n", cx.args.out.c_str());
    return 130;
  }
  if (!has_val) last_is_best(dir2);
  if (r2.best_epoch >= 0)
    std::printf("train: stage 2 best epoch %d, validation dice (cascade) %s\n", r2.best_epoch + 1, fmt(r2.best_value).c_str());

  // RUN/best.h5: the CSCN of both stages' best (bunet.*, acdnet.*).
  acdnet.load_state_dict(mmnet::io::read_checkpoint(join_path(dir2, "best.h5")).model, /*strict=*/true);
  mmnet::io::Checkpoint ck;
  ck.model = cscn.state_dict();
  const std::string best = join_path(cx.args.out, "best.h5");
  mmnet::io::write_checkpoint(best, ck, rc.checkpoint_name());
  std::printf("train: %s (CSCN: best BUNet + best ACDNet), bunet/, acdnet/ (last.h5, best.h5, log.csv, curves.svg), "
              "config.json in %s\n", best.c_str(), cx.args.out.c_str());
  return 0;
}


// ---- HMRNet (spec hmrnet.md §4) -------------------------------------------------------------------------------

// Stage 1 (RUN/stage1/): the coarse multi-class U-Net (maml::Branch on [CT, T1c, T2], deep supervision, Dice + CE
// with nnU-Net's weights) on patches of the whole z-scored volumes, validation: its sliding-window mean Dice over
// labels 1..5. Stage 2 (RUN/<part>/, in TwoStagePlan::abcs() order): one binary HMRNet per part on the crops of
// the boxes of the ground truth and of stage 1's prediction of each training case (structure boxes margin 10; the
// sinus split into its sagittal and transverse parts, margin 5; targets from the ground truth),
// HMRNet's loss with the paper's θ per structure, clip 12; validation: the part's Dice on the validation cases'
// ground-truth crops. Each stage is a `fit` with its own last.h5 / best.h5 / log.csv / curves.svg; --resume
// continues the last stage that has a last.h5 (the ones before it are finished; later ones start fresh); --stage 1
// stops after stage 1. RUN/best.h5 is the whole system (stage1.* and one prefix per part) of every stage's best.
inline int train_hmrnet(TrainContext& cx) {
  namespace hs = mmnet::hmrnet;
  using tensor = mmnet::Tensor<float, mmnet::cpu>;
  const RunConfig& rc = cx.rc;
  const HMRNetPreset& hp = *cx.spec.hmrnet;
  const hs::TwoStagePlan plan = hmrnet_plan(rc);
  const std::size_t n_parts = plan.parts.size();
  std::vector<std::string> dirs{join_path(cx.args.out, "stage1")};
  for (const auto& p : plan.parts) dirs.push_back(join_path(cx.args.out, p.name));
  std::error_code ec;
  int resume_at = -1;  // the last stage with a last.h5: resumed; those before it are done
  if (cx.args.resume)
    for (std::size_t i = 0; i < dirs.size(); ++i)
      if (fs::exists(join_path(dirs[i], "last.h5"), ec)) resume_at = static_cast<int>(i);
  const bool sgd = rc.optimizer == "sgd";
  std::printf("train: hmrnet %s, two stages: a %lld-class U-Net, then %zu binary HMRNets on ground-truth and stage-1 crops; "
              "stage 1 %d epochs, each part %d epochs, x %d iterations, %s lr %s, batch %d%s\n",
              rc.config.c_str(), static_cast<long long>(hp.unet.classes()), n_parts, rc.stage1_epochs > 0 ? rc.stage1_epochs : rc.epochs,
              rc.epochs, rc.iterations,
              sgd ? "SGD-Nesterov (poly)" : "Adam", fmt(rc.lr, 6).c_str(), rc.batch,
              resume_at >= 0 ? (", resuming stage " + std::string(resume_at == 0 ? "1" : "2 (" + plan.parts[static_cast<std::size_t>(resume_at - 1)].name + ")")).c_str() : "");
  std::fflush(stdout);
  auto stage_lr = [&rc, sgd](int epochs) -> std::function<double(int)> {  // SGD: poly over the stage's epochs
    if (!sgd) return nullptr;
    const double lr = rc.lr;
    return [lr, epochs](int e) { return e >= epochs ? 0.0 : lr * std::pow(1.0 - double(e) / epochs, 0.9); };
  };
  auto make_opt = [&](auto& net) -> std::unique_ptr<mmnet::optim::OptimizerBase> {
    if (sgd)
      return std::make_unique<mmnet::optim::SGD<float, mmnet::cpu>>(net.parameters(), hs::sgd_options().lr(rc.lr));
    return std::make_unique<mmnet::optim::Adam<float, mmnet::cpu>>(net.parameters(), mmnet::optim::AdamOptions(rc.lr));
  };
  // A stage's context: its directory, its resume flag, its checkpoint name, and (stage 2) its patch and cases.
  auto stage_context = [&](std::size_t i, TrainArgs& args, RunConfig& src, std::vector<PreparedCase>& tr,
                           std::vector<PreparedCase>& va) {
    args = cx.args;
    args.out = dirs[i];
    args.resume = static_cast<int>(i) == resume_at;
    src = rc;
    src.config = rc.config + "." + (i == 0 ? std::string("stage1") : plan.parts[i - 1].name);
    return TrainContext{args, src, cx.spec, tr, va, cx.guard, join_path(dirs[i], "last.h5")};
  };
  const auto flip_w = mmnet::data::AugmentOptions::none().flip_probability({0, 0, 0.5});  // left-right only

  // Stage 1.
  if (resume_at <= 0) {
    mmnet::Generator init(rc.seed);
    mmnet::models::maml::Branch<float, mmnet::cpu> unet(hp.unet, 3, init);
    const std::size_t P = static_cast<std::size_t>(hp.unet.num_pool());
    mmnet::losses::DeepSupervision<mmnet::losses::DiceCE<float, mmnet::cpu>> ds(mmnet::losses::nnunet_weights(P));
    auto loss_fn = [&ds, P](const std::vector<tensor>& z, const tensor& y) {
      std::vector<tensor> ys{y};
      for (std::size_t k = 1; k < P; ++k)
        ys.push_back(mmnet::nn::downsample_labels_strided(y, mmnet::ExpandingArray3(static_cast<index_t>(1) << k)));
      mmnet::train::LossStep<float, mmnet::cpu, std::vector<tensor>> s;
      s.loss = static_cast<double>(ds.forward(z, ys));
      s.grad = ds.backward();
      return s;
    };
    auto opt = make_opt(unet);
    TrainArgs args;
    RunConfig src;
    TrainContext sc = stage_context(0, args, src, cx.train_cases, cx.val_cases);
    if (rc.stage1_epochs > 0) src.epochs = rc.stage1_epochs;
    auto validate = [&](mmnet::models::maml::Branch<float, mmnet::cpu>& m) {
      mmnet::nn::Softmax<float, mmnet::cpu> softmax;
      return validation_dice([&](const tensor& x) { return softmax.forward(m.forward(x)[0]); }, hp.unet.classes(),
                             cx.val_cases, src);
    };
    std::printf("train: stage 1: U-Net (3 -> %lld classes) in %s, validation: sliding-window mean Dice over labels 1..%lld\n",
                static_cast<long long>(hp.unet.classes()), dirs[0].c_str(), static_cast<long long>(hp.unet.classes() - 1));
    std::fflush(stdout);
    const int r = fit(sc, unet, *opt, loss_fn, validate, hs::clip_norm, [](auto&) {}, stage_lr(src.epochs),
                      "stage 1, Dice + CE (deep supervision)", flip_w);
    if (r != 0) return r;
    if (cx.args.stage == "1") {
      std::printf("train: stage 1 done; continue with stage 2: mmnet train --out %s --resume\n", cx.args.out.c_str());
      return 0;
    }
  }

  // Stage 2: the parts, on the crops of their boxes from the ground truth and from stage 1's best prediction of
  // the same case (the paper's box augmentation with stage-1 predictions [P], with the final stage-1 network
  // only): the fine networks also see the larger boxes that stray stage-1 voxels make at test time.
  std::vector<mmnet::data::LabelMap> predicted;
  {
    mmnet::models::maml::Branch<float, mmnet::cpu> unet(hp.unet, 3);
    const std::string best1 = join_path(dirs[0], "best.h5");
    if (!fs::exists(best1, ec)) throw cli_error(best1 + ": missing (stage 1 did not finish; resume it first)");
    unet.load_state_dict(mmnet::io::read_checkpoint(best1).model, /*strict=*/true);
    unet.eval();
    const auto sw = hmrnet_window(rc.patch, 0.5, false);
    for (const auto& c : cx.train_cases) predicted.push_back(hmrnet_coarse(unet, c.image, sw));
  }
  for (std::size_t i = 0; i < n_parts; ++i) {
    const std::size_t stage = i + 1;
    if (static_cast<int>(stage) < resume_at) continue;  // finished
    const hs::TwoStagePart& part = plan.parts[i];
    const HMRNetPartConfig& pc = rc.parts.at(i);
    // Crops of `cases` with boxes from `boxes_from` (their labels when null), targets from the ground truth.
    auto crops_of = [&](const std::vector<PreparedCase>& cases, const std::vector<mmnet::data::LabelMap>* boxes_from) {
      std::vector<PreparedCase> out;
      for (std::size_t j = 0; j < cases.size(); ++j) {
        const auto& c = cases[j];
        const auto crop = hs::plan_crops(plan, boxes_from ? (*boxes_from)[j] : *c.label)[i];
        if (crop.box.empty()) continue;  // the structure (or the sinus in the part's region) is absent
        PreparedCase p;
        p.name = c.name;
        p.image = mmnet::data::crop(c.image, crop.box);
        p.label = hs::part_target(*c.label, crop);
        out.push_back(std::move(p));
      }
      return out;
    };
    std::vector<PreparedCase> tr = crops_of(cx.train_cases, nullptr), va = crops_of(cx.val_cases, nullptr);
    const std::size_t n_gt = tr.size();
    for (auto& p : crops_of(cx.train_cases, &predicted)) tr.push_back(std::move(p));
    if (tr.empty()) throw cli_error("part " + part.name + ": no training case holds label " + std::to_string(part.label) + " in its region");
    mmnet::Generator init(cscn_train::batch_seed(rc.seed, stage + 1, 0));
    const mmnet::HMRNetOptions o = hp.fine(part.form);
    mmnet::HMRNet<float, mmnet::cpu> net(o, init);
    const double theta = mmnet::HMRNetLossOptions::theta_for(part.label, part.region == hs::PartRegion::sinus_transverse);
    mmnet::HMRNetLoss<float, mmnet::cpu> loss(mmnet::HMRNetLossOptions().theta(theta));
    auto opt = make_opt(net);
    TrainArgs args;
    RunConfig src;
    TrainContext sc = stage_context(stage, args, src, tr, va);
    src.patch = pc.patch;
    src.seed = cscn_train::batch_seed(rc.seed, stage + 1, 1);  // each part its own batch sequence
    auto validate = [&](mmnet::HMRNet<float, mmnet::cpu>& m) {
      const auto sw = hmrnet_window(pc.patch, 0.5, false);
      double s = 0;
      int n = 0;
      for (const auto& c : va) {
        const auto pred = hmrnet_fine(m, c.image, sw);
        long long inter = 0, a = 0, b = 0;
        for (std::size_t v = 0; v < pred.data.size(); ++v) {
          const bool x = pred.data[v] != 0, y = c.label->data[v] != 0;
          inter += x && y, a += x, b += y;
        }
        if (a + b > 0) s += 2.0 * static_cast<double>(inter) / static_cast<double>(a + b), ++n;
      }
      return n ? s / n : 0.0;
    };
    std::printf("train: stage 2, part %zu/%zu: %s (label %d, HMRNet-%s, theta %s) on %zu training crops (%zu ground-truth "
                "boxes + %zu stage-1 boxes) + %zu validation crops, patch %s, in %s\n",
                i + 1, n_parts, part.name.c_str(), part.label, mmnet::models::to_string(part.form), fmt(theta, 1).c_str(),
                tr.size(), n_gt, tr.size() - n_gt, va.size(), shape_str(pc.patch).c_str(), dirs[stage].c_str());
    std::fflush(stdout);
    const int r = fit(sc, net, *opt, mmnet::train::loss_step(loss), validate, hs::clip_norm, [](auto&) {}, stage_lr(src.epochs),
                      "HMRNet loss (fn-Dice theta " + fmt(theta, 1) + " + CE, deep supervision)", flip_w);
    if (r != 0) return r;
  }

  // RUN/best.h5: every stage's best in one state dict.
  HMRNetSystem<float, mmnet::cpu> sys(hp, plan);
  sys.stage1.load_state_dict(mmnet::io::read_checkpoint(join_path(dirs[0], "best.h5")).model, /*strict=*/true);
  for (std::size_t i = 0; i < n_parts; ++i)
    sys.fine[i]->load_state_dict(mmnet::io::read_checkpoint(join_path(dirs[i + 1], "best.h5")).model, /*strict=*/true);
  mmnet::io::Checkpoint ck;
  ck.model = sys.state_dict();
  const std::string best = join_path(cx.args.out, "best.h5");
  mmnet::io::write_checkpoint(best, ck, rc.checkpoint_name());
  cx.guard.commit();
  std::printf("train: %s (HMRNet two-stage system: stage1.* + %zu parts, %lld parameters), stage1/ and one directory "
              "per part (last.h5, best.h5, log.csv, curves.svg), config.json in %s\n",
              best.c_str(), n_parts, static_cast<long long>(sys.num_parameters()), cx.args.out.c_str());
  return 0;
}


// ---- ConResNet (spec conresnet.md §3, §4) ----------------------------------------------------------------------

// Patches of the non-zero-cropped, z-scored cases (nnU-Net's MRI preprocessing, as MAML); the network gets X and
// X_res = image_residual(X) of the patch; targets: the overlapping sigmoid regions [ET, WT, TC] of the patch's
// labels (region_targets with brats_regions_nnunet), Y_res = label_residual(Y); ConResNetLoss (code mode, λ 0.5;
// the baseline: Dice + BCE); Adam with coupled weight decay 5e-4 and lr_k = lr (1 - k / K)^0.9 per iteration
// (K = epochs x iterations); flips of all three axes. Validation: conresnet::sliding_window_probabilities on the
// whole validation cases (tiles = the patch), p > 0.5, mean Dice over the three regions.
inline int train_conresnet(TrainContext& cx) {
  namespace cr = mmnet::conresnet;
  using tensor = mmnet::Tensor<float, mmnet::cpu>;
  using Net = ConResNetTrainable<float, mmnet::cpu>;
  const RunConfig& rc = cx.rc;
  const mmnet::ConResNetOptions& o = *cx.spec.conresnet;
  mmnet::Generator init(rc.seed);
  Net net(mmnet::ConResNetOptions(o).dropout_seed(cscn_train::batch_seed(rc.seed, 9, 0)), init);
  mmnet::ConResNetLoss<float, mmnet::cpu> loss;
  const auto regions = cr::brats_regions_nnunet();
  auto loss_fn = [&loss, &regions](const std::vector<tensor>& outs, const tensor& labels) {
    const tensor y = cr::region_targets(labels, regions);
    mmnet::train::LossStep<float, mmnet::cpu, std::vector<tensor>> s;
    s.loss = static_cast<double>(loss.forward(outs, y, cr::label_residual(y)));
    s.grad = loss.backward();
    return s;
  };
  mmnet::optim::Adam<float, mmnet::cpu> opt(net.parameters(), cr::adam_options().lr(rc.lr));
  const long long total = static_cast<long long>(rc.epochs) * rc.iterations;
  const double lr = rc.lr;
  auto step_lr = [lr, total](long long k) { return cr::poly_lr(lr, static_cast<long>(std::min(k, total)), static_cast<long>(total)); };
  const auto aug = mmnet::data::AugmentOptions::none().flip_probability({0.5, 0.5, 0.5});
  const mmnet::ExpandingArray3 patch(rc.patch[0], rc.patch[1], rc.patch[2]);
  auto validate = [&](Net& m) {
    double sum = 0;
    int n = 0;
    for (const auto& c : cx.val_cases) {
      const auto& v = c.image;
      const tensor x = tensor::from_vector(mmnet::Shape{1, v.channels, v.depth, v.height, v.width}, v.data);
      const auto p = cr::sliding_window_probabilities(m.net, x, patch).to_vector();
      std::vector<float> lf(c.label->data.begin(), c.label->data.end());
      const auto t = cr::region_targets(tensor::from_vector(mmnet::Shape{1, 1, v.depth, v.height, v.width}, lf), regions).to_vector();
      const std::size_t V = lf.size();
      for (std::size_t k = 0; k < regions.size(); ++k) {
        double inter = 0, a = 0, b = 0;
        for (std::size_t i = k * V; i < (k + 1) * V; ++i) {
          const bool x1 = p[i] > 0.5f, y1 = t[i] > 0.5f;
          inter += x1 && y1, a += x1, b += y1;
        }
        if (b > 0) sum += 2 * inter / (a + b), ++n;  // a region absent from the truth is left out (MONAI ignore_empty)
      }
    }
    return n ? sum / n : 0.0;
  };
  auto configure = [&](mmnet::train::Trainer<Net>& t) { t.track_generator("dropout", net.dropout_generator()); };
  const std::string describe = std::string(o.context_residual() ? "context residual" : "baseline (no context residual)") +
                               ", ConResNetLoss, Adam lr " + fmt(rc.lr, 6) + " (coupled wd 5e-4) poly per iteration, "
                               "regions [ET, WT, TC]";
  return fit(cx, net, opt, loss_fn, validate, 0.0, configure, nullptr, describe, aug, step_lr);
}

}  // namespace train_detail

inline int run_train(TrainArgs a) {
  using namespace train_detail;
  if (a.threads < 0) throw cli_error("--threads: expected >= 0, got " + std::to_string(a.threads));
  if (a.threads > 0) mmnet::set_num_threads(a.threads);
  const std::string config_path = join_path(a.out, "config.json"), last = join_path(a.out, "last.h5");
  std::error_code ec;

  // The run's settings: the command line, or config.json when resuming (explicitly given ones must agree).
  RunConfig rc;
  if (a.resume) {
    if (!fs::exists(last, ec) && !fs::exists(join_path(join_path(a.out, "bunet"), "last.h5"), ec) &&  // cscn: per stage
        !fs::exists(join_path(join_path(a.out, "stage1"), "last.h5"), ec))                            // hmrnet
      throw cli_error(last + ": no checkpoint to resume (train without --resume first)");
    rc = RunConfig::read(config_path);
    auto clash = [&](CLI::Option* o, bool differs, const std::string& stored) {
      if (o && o->count() > 0 && differs)
        throw cli_error(config_path + ": the run was made with " + o->get_name() + " " + stored +
                        "; --resume keeps it (drop the option or train into another --out)");
    };
    clash(a.o_model, a.model != rc.model, rc.model);
    clash(a.o_config, a.config != rc.config, rc.config);
    clash(a.o_patch, parse_shape(a.patch, "--patch") != rc.patch, shape_str(rc.patch));
    clash(a.o_iterations, a.iterations != rc.iterations, std::to_string(rc.iterations));
    clash(a.o_batch, a.batch != rc.batch, std::to_string(rc.batch));
    clash(a.o_lr, a.lr != rc.lr, fmt(rc.lr, 6));
    clash(a.o_val, a.val_fraction != rc.val_fraction, fmt(rc.val_fraction, 4));
    clash(a.o_seed, a.seed != rc.seed, std::to_string(rc.seed));
    clash(a.o_optimizer, a.optimizer != rc.optimizer, rc.optimizer);
    clash(a.o_loss, a.loss != rc.loss, rc.loss);
    clash(a.o_dropout, a.modality_dropout != rc.modality_dropout, fmt(rc.modality_dropout, 4));
    if (a.o_data && a.o_data->count() > 0 && fs::weakly_canonical(a.data, ec) != fs::weakly_canonical(rc.data, ec))
      throw cli_error(config_path + ": the run was trained on " + rc.data + ", not " + a.data);
    if (a.o_epochs && a.o_epochs->count() > 0) rc.epochs = a.epochs;
    if (a.o_stage1_epochs && a.o_stage1_epochs->count() > 0) rc.stage1_epochs = a.stage1_epochs;
  } else {
    if (a.data.empty()) throw cli_error("--data is required");
    if (fs::exists(last, ec) || fs::exists(config_path, ec))
      throw cli_error(a.out + ": already holds a run (config.json / last.h5); use --resume or another --out");
    const ModelKind kind = model_kind(a.model);
    rc.model = a.model;
    rc.config = a.config;
    rc.patch = parse_shape(a.patch, "--patch");
    rc.batch = a.batch;
    rc.epochs = a.epochs;
    rc.stage1_epochs = a.stage1_epochs;
    rc.iterations = a.iterations;
    rc.optimizer = a.optimizer.empty() ? (kind == ModelKind::maml ? "sgd" : "adam") : a.optimizer;
    if (kind == ModelKind::hmrnet) {
      if (model_spec(a.model, a.config).hmrnet->single)
        throw cli_error("--config " + a.config + ": one fine network (info, forward); train the two-stage system with "
                        "--config paper, small or tiny");
      if (!(a.o_patch && a.o_patch->count() > 0)) rc.patch.clear();  // stage 1: the whole volume (set below)
    }
    if (kind == ModelKind::conresnet) {
      if (!(a.o_patch && a.o_patch->count() > 0)) rc.patch = {32, 32, 32};  // CPU phantom runs (official 80 x 160 x 160)
      if (rc.optimizer != "adam") throw cli_error("--optimizer: conresnet trains with adam (spec §4.1), got " + rc.optimizer);
    }
    rc.lr = a.lr == 0 ? default_lr(kind, rc.optimizer) : a.lr;
    rc.loss = a.loss;
    rc.modality_dropout = a.modality_dropout;
    rc.normalization = (kind == ModelKind::maml || kind == ModelKind::conresnet) ? "nonzero_zscore"
                       : kind == ModelKind::cscn ? "isotropic_nonzero_zscore"
                       : kind == ModelKind::hmrnet ? "zscore" : "body_zscore";
    if (kind == ModelKind::cscn) {  // the block is the preset's (spec §2.1); Adam only (spec §4.3)
      const auto& blk = model_spec(a.model, a.config).cscn->block();
      const std::vector<index_t> block{blk[0], blk[1], blk[2]};
      if (a.o_patch && a.o_patch->count() > 0 && rc.patch != block)
        throw cli_error("--patch: cscn " + a.config + " trains on its block " + shape_str(block) + ", got " + shape_str(rc.patch));
      rc.patch = block;
      if (rc.optimizer != "adam") throw cli_error("--optimizer: cscn trains with adam (spec §4.3), got " + rc.optimizer);
    }
    rc.val_fraction = a.val_fraction;
    rc.seed = a.seed;
    rc.data = fs::absolute(a.data).lexically_normal().string();  // --resume may run from another directory
    if (kind != ModelKind::maml && a.o_loss && a.o_loss->count() > 0) throw cli_error("--loss: only for --model maml");
    if (kind != ModelKind::maml && a.modality_dropout != 0) throw cli_error("--modality-dropout: only for --model maml");
  }
  const ModelSpec spec = model_spec(rc.model, rc.config);
  if (spec.kind != ModelKind::cscn && spec.kind != ModelKind::hmrnet && a.stage != "all")
    throw cli_error("--stage: only for --model cscn or hmrnet");
  const index_t k = spec.size_multiple();
  for (int d = 0; d < 3 && !rc.patch.empty(); ++d)
    if (rc.patch[d] % k != 0)
      throw cli_error(std::string("--patch: size ") + "DHW"[d] + " must be a multiple of " + std::to_string(k) + " (2^" +
                      std::to_string(spec.levels()) + " levels of " + spec.name() + "), got " + shape_str(rc.patch));
  if (rc.batch < 1) throw cli_error("--batch: expected >= 1, got " + std::to_string(rc.batch));
  if (rc.epochs < 1) throw cli_error("--epochs: expected >= 1, got " + std::to_string(rc.epochs));
  if (rc.stage1_epochs < 0) throw cli_error("--stage1-epochs: expected >= 0, got " + std::to_string(rc.stage1_epochs));
  if (rc.stage1_epochs != 0 && spec.kind != ModelKind::hmrnet) throw cli_error("--stage1-epochs: only for --model hmrnet");
  if (rc.iterations < 1) throw cli_error("--iterations: expected >= 1, got " + std::to_string(rc.iterations));
  if (!(rc.lr > 0) || !std::isfinite(rc.lr)) throw cli_error("--lr: expected a finite value > 0, got " + fmt(rc.lr, 6));
  if (!(rc.val_fraction >= 0 && rc.val_fraction < 1))
    throw cli_error("--val-fraction: expected a value in [0, 1), got " + fmt(rc.val_fraction, 4));
  if (!(rc.modality_dropout >= 0 && rc.modality_dropout <= 1))
    throw cli_error("--modality-dropout: expected a probability in [0, 1], got " + fmt(rc.modality_dropout, 4));

  // The data: every training case loaded, checked and prepared before anything is written.
  const mmnet::data::Dataset ds = mmnet::data::open_dataset(rc.data);
  check_dataset_fits(ds, spec.modalities(), spec.classes(), spec.name());
  if (rc.modalities.empty()) {
    if (rc.normalization == "body_zscore") {
      const auto mm = mmnet::data::NormalizeOptions::mmfnet();
      for (index_t c = 0; c < spec.modalities(); ++c) {
        const auto clip = mm.clip_of(c);
        rc.clips.push_back(clip ? std::array<double, 2>{clip->lower, clip->upper} : std::array<double, 2>{-5.0, 5.0});
      }
    }
    rc.modalities = ds.modalities;
    rc.labels = label_names(ds);
  }
  const auto norm = rc.normalize_options();
  const auto& listed = ds.cases("train");
  if (listed.empty()) throw cli_error(join_path(ds.dir, "dataset.json") + ": no training cases");
  const int n = static_cast<int>(listed.size());
  int n_val = 0;
  if (rc.val_fraction > 0 && n >= 2) n_val = std::max(1, std::min(n - 1, static_cast<int>(std::lround(n * rc.val_fraction))));
  std::vector<PreparedCase> train_cases, val_cases;
  std::printf("train: loading %d cases from %s\n", n, rc.data.c_str());
  std::fflush(stdout);
  for (int i = 0; i < n; ++i) {
    PreparedCase p = prepare_case(mmnet::data::load_case(ds, listed[static_cast<std::size_t>(i)]), norm, false, rc.resample_target());
    if (!p.label) throw cli_error(listed[static_cast<std::size_t>(i)].images[0] + ": case " + p.name + " has no label file");
    (i < n - n_val ? train_cases : val_cases).push_back(std::move(p));
  }
  std::vector<std::string> tnames, vnames;
  for (auto& c : train_cases) tnames.push_back(c.name);
  for (auto& c : val_cases) vnames.push_back(c.name);
  if (a.resume && (tnames != rc.train_cases || vnames != rc.val_cases))
    throw cli_error(config_path + ": the data set's training cases differ from those the run was trained on");
  rc.train_cases = tnames;
  rc.val_cases = vnames;
  if (spec.kind == ModelKind::hmrnet && !a.resume) {
    // Stage 1's patch: the whole volume (the largest case) rounded up to the U-Net's multiple; the sinus split of
    // the grid; each fine network's patch from the ground-truth crops of the training cases.
    const auto& c0 = train_cases.front().image;
    if (rc.patch.empty()) {
      rc.patch = {0, 0, 0};
      for (const auto* cs : {&train_cases, &val_cases})
        for (const auto& c : *cs) {
          const index_t e[3] = {c.image.depth, c.image.height, c.image.width};
          for (int d = 0; d < 3; ++d) rc.patch[d] = std::max(rc.patch[d], (e[d] + k - 1) / k * k);
        }
    }
    rc.sinus_split = default_sinus_split(c0.depth, c0.width);
    rc.parts.clear();
    const auto plan = hmrnet_plan(rc);
    std::vector<std::vector<mmnet::data::Box>> boxes(plan.parts.size());
    for (const auto& c : train_cases) {
      const auto crops = mmnet::hmrnet::plan_crops(plan, *c.label);
      for (std::size_t i = 0; i < crops.size(); ++i)
        if (!crops[i].box.empty()) boxes[i].push_back(crops[i].box);
    }
    for (std::size_t i = 0; i < plan.parts.size(); ++i) {
      const auto& part = plan.parts[i];
      rc.parts.push_back({part.name, mmnet::hmrnet::to_string(part.region), part.label, mmnet::models::to_string(part.form),
                          part_patch(boxes[i], spec.hmrnet->fine(part.form), spec.hmrnet->max_patch)});
    }
  }

  OutputGuard guard;
  guard.make_dir(a.out);
  if (!a.resume) guard.add(config_path);
  write_text_atomically(config_path, rc.to_json().dump(2) + "\n");

  TrainContext cx{a, rc, spec, train_cases, val_cases, guard, last};
  if (spec.kind == ModelKind::cscn) return train_cscn(cx);
  if (spec.kind == ModelKind::hmrnet) return train_hmrnet(cx);
  if (spec.kind == ModelKind::conresnet) return train_conresnet(cx);
  return spec.kind == ModelKind::maml ? train_maml(cx) : train_mmfnet(cx);
}

}  // namespace mmnet_cli
