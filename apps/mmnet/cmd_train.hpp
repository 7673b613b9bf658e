// apps/mmnet/cmd_train.hpp: `mmnet train`: MMFNet on an MSD-layout data set with the library's pieces:
// load_case -> prepare_case (T1 body box, body z-score with MMFNet's clips, crop) -> the last val_fraction of the
// training cases held out for validation -> PatchSampler (1/3 of each batch forced to hold foreground) +
// BatchLoader (background thread, batch k a pure function of (seed, k), MMFNet's augmentation: H/W flips,
// rotation +-5 degrees) -> train::Trainer (soft Dice on the sigmoid output as MMFNet's spec, Adam) with
// validation Dice per epoch by Gaussian sliding-window inference on the whole validation cases, threshold 0.5.
// Writes RUN/config.json, RUN/last.h5, RUN/best.h5, RUN/log.csv, RUN/curves.svg. --resume continues from
// RUN/last.h5 exactly (same weights and losses as an uninterrupted run).
#pragma once
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <mmnet/core/parallel.hpp>
#include <mmnet/data/augment.hpp>
#include <mmnet/data/dataset.hpp>
#include <mmnet/data/loader.hpp>
#include <mmnet/data/sampler.hpp>
#include <mmnet/inference/postprocess.hpp>
#include <mmnet/inference/sliding_window.hpp>
#include <mmnet/metrics/metrics.hpp>
#include <mmnet/mmfnet.hpp>
#include <mmnet/train/trainer.hpp>

#include "cli_common.hpp"
#include "pipeline.hpp"

namespace mmnet_cli {

// Defaults = what scripts/main.sh runs.
struct TrainArgs {
  std::string data, model = "mmfnet", config = "small", out, patch = "16x48x48", progress = "auto";
  int epochs = 8, iterations = 20, batch = 2, threads = 0;
  double lr = 3e-3, val_fraction = 0.2;
  unsigned long long seed = 0;
  bool resume = false;
  // Which options were given on the command line (a resumed run keeps config.json's values otherwise).
  CLI::Option *o_model = nullptr, *o_config = nullptr, *o_patch = nullptr, *o_iterations = nullptr, *o_batch = nullptr,
              *o_lr = nullptr, *o_val = nullptr, *o_seed = nullptr, *o_epochs = nullptr, *o_data = nullptr;
};

inline CLI::App* add_train_command(CLI::App& app, TrainArgs& a) {
  auto* c = app.add_subcommand("train", "Train MMFNet on an MSD-layout data set; writes RUN/{best,last}.h5, log.csv, curves.svg, config.json");
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later option wins
  a.o_data = c->add_option("--data", a.data, "Data set directory (dataset.json; the training split is used)");
  a.o_model = c->add_option("--model", a.model, "Model (mmfnet)")->capture_default_str();
  a.o_config = c->add_option("--config", a.config, "Preset (small, tiny, paper, ...)")->capture_default_str()->check(CLI::IsMember(preset_names()));
  c->add_option("--out", a.out, "Run directory")->required();
  a.o_epochs = c->add_option("--epochs", a.epochs, "Epochs (a resumed run continues up to this many)")->capture_default_str();
  a.o_iterations = c->add_option("--iterations", a.iterations, "Optimizer steps per epoch")->capture_default_str();
  a.o_batch = c->add_option("--batch", a.batch, "Patches per batch")->capture_default_str();
  a.o_patch = c->add_option("--patch", a.patch, "Patch size DxHxW (multiples of 2^levels; also the inference window)")->capture_default_str();
  a.o_lr = c->add_option("--lr", a.lr, "Adam learning rate")->capture_default_str();
  a.o_val = c->add_option("--val-fraction", a.val_fraction, "Fraction of the training cases held out for validation (the last ones)")->capture_default_str();
  c->add_flag("--resume", a.resume, "Continue RUN/last.h5 with RUN/config.json's settings (--epochs may grow)");
  c->add_option("--threads", a.threads, "Threads (0: OpenMP's default)")->capture_default_str();
  a.o_seed = c->add_option("--seed", a.seed, "Seed of the weights and of the batch sequence")->capture_default_str();
  c->add_option("--progress", a.progress, "auto (a bar on a terminal, lines otherwise), bar, lines or off")
      ->capture_default_str()->check(CLI::IsMember({"auto", "bar", "lines", "off"}));
  return c;
}

namespace train_detail {

// Mean Dice of the thresholded sliding-window prediction over the validation cases (whole cropped volumes).
template <class Net>
double validation_dice(Net& net, const std::vector<PreparedCase>& val, const RunConfig& rc) {
  auto opt = mmnet::inference::SlidingWindowOptions({rc.patch[0], rc.patch[1], rc.patch[2]})
                 .overlap(0.25).mode(mmnet::inference::BlendMode::gaussian);
  mmnet::metrics::MetricOptions mo;
  mo.surface = false;
  double sum = 0;
  int n = 0;
  for (const auto& c : val) {
    const auto probs = mmnet::inference::sliding_window_inference<mmnet::cpu, float>(
        c.image, [&](const mmnet::Tensor<float, mmnet::cpu>& x) { return net.forward(x); }, opt);
    const auto pred = mmnet::inference::to_label_map(probs, mmnet::inference::PostprocessOptions::threshold(0.5));
    const auto m = mmnet::metrics::evaluate(pred.data.data(), c.label->data.data(),
                                            mmnet::ops::Dims3{pred.depth, pred.height, pred.width},
                                            {1.0, 1.0, 1.0}, mo);
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
    if (!fs::exists(last, ec)) throw cli_error(last + ": no checkpoint to resume (train without --resume first)");
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
    if (a.o_data && a.o_data->count() > 0 && fs::weakly_canonical(a.data, ec) != fs::weakly_canonical(rc.data, ec))
      throw cli_error(config_path + ": the run was trained on " + rc.data + ", not " + a.data);
    if (a.o_epochs && a.o_epochs->count() > 0) rc.epochs = a.epochs;
  } else {
    if (a.data.empty()) throw cli_error("--data is required");
    if (fs::exists(last, ec) || fs::exists(config_path, ec))
      throw cli_error(a.out + ": already holds a run (config.json / last.h5); use --resume or another --out");
    rc.model = a.model;
    rc.config = a.config;
    rc.patch = parse_shape(a.patch, "--patch");
    rc.batch = a.batch;
    rc.epochs = a.epochs;
    rc.iterations = a.iterations;
    rc.lr = a.lr;
    rc.val_fraction = a.val_fraction;
    rc.seed = a.seed;
    rc.data = fs::absolute(a.data).lexically_normal().string();  // --resume may run from another directory
  }
  const mmnet::MMFNetOptions mo = options_for(rc.model, rc.config);
  const index_t k = mo.size_multiple();
  for (int d = 0; d < 3; ++d)
    if (rc.patch[d] % k != 0)
      throw cli_error(std::string("--patch: size ") + "DHW"[d] + " must be a multiple of " + std::to_string(k) + " (2^" +
                      std::to_string(mo.levels()) + " levels of mmfnet " + rc.config + "), got " + shape_str(rc.patch));
  if (rc.batch < 1) throw cli_error("--batch: expected >= 1, got " + std::to_string(rc.batch));
  if (rc.epochs < 1) throw cli_error("--epochs: expected >= 1, got " + std::to_string(rc.epochs));
  if (rc.iterations < 1) throw cli_error("--iterations: expected >= 1, got " + std::to_string(rc.iterations));
  if (!(rc.lr > 0) || !std::isfinite(rc.lr)) throw cli_error("--lr: expected a finite value > 0, got " + fmt(rc.lr, 6));
  if (!(rc.val_fraction >= 0 && rc.val_fraction < 1))
    throw cli_error("--val-fraction: expected a value in [0, 1), got " + fmt(rc.val_fraction, 4));

  // The data: every training case loaded, checked and prepared before anything is written.
  const mmnet::data::Dataset ds = mmnet::data::open_dataset(rc.data);
  check_dataset_fits(ds, mo.modalities(), "mmfnet " + rc.config);
  if (rc.clips.empty()) {
    const auto mm = mmnet::data::NormalizeOptions::mmfnet();
    for (index_t c = 0; c < mo.modalities(); ++c) {
      const auto clip = mm.clip_of(c);
      rc.clips.push_back(clip ? std::array<double, 2>{clip->lower, clip->upper} : std::array<double, 2>{-5.0, 5.0});
    }
    rc.modalities = ds.modalities;
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
    PreparedCase p = prepare_case(mmnet::data::load_case(ds, listed[static_cast<std::size_t>(i)]), norm);
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

  OutputGuard guard;
  guard.make_dir(a.out);
  if (!a.resume) guard.add(config_path);
  write_text_atomically(config_path, rc.to_json().dump(2) + "\n");

  // Model, loss, optimizer, trainer.
  mmnet::Generator init(rc.seed);
  mmnet::MMFNet<float, mmnet::cpu> net(mo, init);
  mmnet::losses::SoftDice<float, mmnet::cpu> dice;  // smooth 1, one global ratio (MMFNet spec §3)
  mmnet::optim::Adam<float, mmnet::cpu> adam(net.parameters(), mmnet::optim::AdamOptions(rc.lr));
  const auto topt = mmnet::train::TrainerOptions()
                        .epochs(rc.epochs)
                        .iterations_per_epoch(rc.iterations)
                        .output_dir(a.out)
                        .model_name(rc.checkpoint_name())
                        .metric_name("dice")
                        .progress(progress_mode(a.progress))
                        .progress_every(std::max(1, std::min(10, rc.iterations)));
  mmnet::train::Trainer<mmnet::MMFNet<float, mmnet::cpu>> trainer(net, adam, mmnet::train::loss_step(dice), topt);
  trainer.progress_stream(std::cout);
  if (a.resume) trainer.resume(a.out);
  trainer.on_epoch_end([&](const mmnet::train::EpochRecord&, bool) { guard.commit(); });  // a resumable run now

  // Batches: batch k = epoch * iterations + iteration, a pure function of (seed, k).
  std::vector<mmnet::data::Case> sampler_cases;
  for (auto& c : train_cases) sampler_cases.push_back({c.image, *c.label, c.name, {}});
  const auto pad = rc.pad_values();
  auto sampler = std::make_shared<mmnet::data::PatchSampler>(
      std::move(sampler_cases), mmnet::data::SamplerOptions({rc.patch[0], rc.patch[1], rc.patch[2]}).pad_value(pad));
  const index_t start = static_cast<index_t>(trainer.epoch()) * rc.iterations + trainer.iteration();
  const auto aug = mmnet::data::AugmentOptions::mmfnet().flip_probability({0, 0.5, 0.5}).rotation_fill(pad);
  mmnet::data::BatchLoader loader(sampler, mmnet::data::LoaderOptions(rc.batch).seed(rc.seed).start_batch(start).augment(aug));
  auto batches = [&](int epoch, int it) {
    mmnet::data::Batch b = loader.next();
    const index_t want = static_cast<index_t>(epoch) * rc.iterations + it;
    if (b.index != want)
      throw std::logic_error("batch " + std::to_string(b.index) + " arrived for step " + std::to_string(want));
    return mmnet::train::Batch<float, mmnet::cpu>{b.images, b.labels};
  };
  mmnet::train::Trainer<mmnet::MMFNet<float, mmnet::cpu>>::ValidationFn validate;
  if (!val_cases.empty())
    validate = [&](mmnet::MMFNet<float, mmnet::cpu>& m) {
      return mmnet::train::ValidationResult{validation_dice(m, val_cases, rc), std::nullopt};
    };

  std::printf("train: mmfnet %s (%lld parameters), %zu training + %zu validation cases, patch %s, batch %d, %d epochs x %d "
              "iterations, Adam lr %s, validation: sliding-window Dice on the validation cases%s\n",
              rc.config.c_str(), static_cast<long long>(net.num_parameters()), train_cases.size(), val_cases.size(),
              shape_str(rc.patch).c_str(), rc.batch, rc.epochs, rc.iterations, fmt(rc.lr, 6).c_str(),
              a.resume ? (", resuming at epoch " + std::to_string(trainer.epoch() + 1) + " iteration " +
                          std::to_string(trainer.iteration())).c_str() : "");
  std::fflush(stdout);
  const auto r = trainer.fit(batches, validate);
  loader.stop();
  guard.commit();
  const std::string best = join_path(a.out, "best.h5");
  if (val_cases.empty() && r.status != mmnet::train::FitStatus::interrupted) {
    fs::copy_file(last, best, fs::copy_options::overwrite_existing, ec);  // no validation: the last state is the best
    if (ec) throw cli_error(best + ": cannot write (" + ec.message() + ")");
  }
  if (r.status == mmnet::train::FitStatus::interrupted) {
    std::printf("train: interrupted; continue with: mmnet train --out %s --resume\n", a.out.c_str());
    return 130;
  }
  if (r.best_epoch >= 0)
    std::printf("train: best epoch %d, validation dice %s\n", r.best_epoch + 1, fmt(r.best_value).c_str());
  std::printf("train: %s (best), %s, log.csv, curves.svg, config.json in %s\n", best.c_str(), last.c_str(), a.out.c_str());
  return 0;
}

}  // namespace mmnet_cli
