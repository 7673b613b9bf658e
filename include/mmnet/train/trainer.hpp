// mmnet/train/trainer.hpp: a model-agnostic training loop with early stopping, best/last checkpoints, exact
// resume, Ctrl-C handling, a progress display, log.csv and curves.svg -- the loop one writes around
// torch.optim in PyTorch (nnU-Net's nnUNetTrainer.run_training, Lightning's Trainer.fit(ckpt_path=...)).
// docs/training.md describes the loop, the checkpoint contents and the resume semantics in full.
//
//   models::TinyNet<float, cpu> net;
//   optim::Adam<float, cpu> opt(net.parameters(), optim::AdamOptions(1e-3));
//   optim::PolyLR sched(opt, optim::PolyLROptions(100 * 250));
//   losses::BCEWithLogits<float, cpu> bce;
//   train::Trainer<models::TinyNet<float, cpu>> trainer(net, opt, train::loss_step(bce),
//       train::TrainerOptions().epochs(100).iterations_per_epoch(250).patience(20).output_dir("run1"));
//   trainer.scheduler(sched, train::SchedulerStep::per_iteration).track_generator("data", data_rng);
//   if (resuming) trainer.resume("run1");
//   auto result = trainer.fit([&](int e, int i) { return loader.next(); },
//                             [&](auto& model) { return train::ValidationResult{mean_dice(model), val_loss}; });
//
// One iteration: batch = batches(epoch, it); optimizer.zero_grad(); logits = model.forward(batch.input);
// (loss, dlogits) = loss_fn(logits, batch.target); model.backward(dlogits); optional clip_grad_norm_;
// optimizer.step(); a per-iteration scheduler steps. Each epoch ends with validation (model in eval mode), the
// early-stopping bookkeeping, a per-epoch scheduler step, last.h5 (and best.h5 when the monitored quantity
// improved), log.csv and curves.svg.
//
// Exact resume: every state the loop depends on is in last.h5 (model, optimizer, scheduler, loop counters, the
// running loss sum of a partial epoch, and the tracked generators), so a run resumed from it -- after an
// interrupt in the middle of an epoch too -- computes the same losses and weights, bit for bit, as one that
// never stopped, provided the batch source gives the same batch for the same (epoch, iteration) and generator
// states (a deterministic function of them, or drawing only from tracked generators).
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/module.hpp"
#include "../core/random.hpp"
#include "../io/checkpoint.hpp"
#include "../optim/clip_grad.hpp"
#include "../optim/lr_scheduler.hpp"
#include "../optim/optimizer.hpp"
#include "history.hpp"
#include "progress.hpp"

namespace mmnet::train {

// One training step's data: the network input (N x C x D x H x W) and the target the loss compares with.
template <class T, class Backend>
struct Batch {
  Tensor<T, Backend> input, target;
};

// What a loss step returns: the loss value and dL/dlogits. Grad is the type of the model's forward() output:
// a tensor, or e.g. std::vector<tensor> for a deep-supervision model (losses::DeepSupervision's backward()).
template <class T, class Backend, class Grad = Tensor<T, Backend>>
struct LossStep {
  double loss = 0;
  Grad grad;
};

// A loss step from a mmnet loss (T forward(outputs, target); backward() -> the gradient of the outputs), e.g.
// losses::BCEWithLogits or losses::DiceCE on one logit tensor, or a loss on a list of outputs (deep supervision:
// losses::DeepSupervision, MAMLLoss, HMRNetLoss: std::vector<tensor> in and out). The loss object is held by
// reference and must outlive the trainer.
template <class Loss>
auto loss_step(Loss& loss) {
  using tensor = typename Loss::tensor;
  using grad_type = std::decay_t<decltype(loss.backward())>;  // tensor, or std::vector<tensor>
  return [&loss](const grad_type& outputs, const tensor& target) {
    LossStep<typename tensor::value_type, typename tensor::backend_type, grad_type> s;
    s.loss = static_cast<double>(loss.forward(outputs, target));
    s.grad = loss.backward();
    return s;
  };
}

// What validation returns: the metric (higher is better, e.g. mean Dice) and/or the validation loss.
struct ValidationResult {
  std::optional<double> metric, loss;
};

// The quantity early stopping and best.h5 follow.
enum class Monitor {
  metric_max,  // the validation metric, higher is better (default)
  loss_min     // the validation loss, lower is better
};

// When an LRScheduler steps (ReduceLROnPlateau always steps once per epoch, on the monitored quantity).
enum class SchedulerStep { per_iteration, per_epoch };

// How fit() ended.
enum class FitStatus {
  completed,     // all epochs ran
  early_stopped, // patience epochs without improvement
  interrupted    // SIGINT or request_stop(): last.h5 holds the state after the last finished iteration
};

inline const char* status_name(FitStatus s) {
  switch (s) {
    case FitStatus::completed: return "completed";
    case FitStatus::early_stopped: return "early_stopped";
    case FitStatus::interrupted: return "interrupted";
  }
  return "?";
}

struct FitResult {
  FitStatus status = FitStatus::completed;
  int epochs_run = 0;              // epochs completed by this fit() call
  int epoch = 0;                   // the next epoch to run (0-based; == epochs when complete)
  int iteration = 0;               // the next iteration in that epoch (0 unless interrupted mid-epoch)
  int best_epoch = -1;             // 0-based; -1 before any validation
  double best_value = std::numeric_limits<double>::quiet_NaN();  // the monitored quantity at best_epoch
  std::vector<EpochRecord> history;  // every completed epoch, resumed ones included
};

// Options (chained setters). Defaults follow nnU-Net where it has one (250 iterations per epoch, "dice").
class TrainerOptions {
 public:
  // Total number of epochs of the run (a resumed run continues up to it). Default 100.
  TrainerOptions& epochs(int v) { epochs_ = v; return *this; }
  int epochs() const { return epochs_; }
  // Optimizer steps per epoch (>= 1). Default 250 (nnU-Net).
  TrainerOptions& iterations_per_epoch(int v) { iterations_ = v; return *this; }
  int iterations_per_epoch() const { return iterations_; }
  // Stop after this many epochs without improvement of the monitored quantity; 0 = never (default).
  TrainerOptions& patience(int v) { patience_ = v; return *this; }
  int patience() const { return patience_; }
  // What early stopping and best.h5 follow. Default Monitor::metric_max.
  TrainerOptions& monitor(Monitor v) { monitor_ = v; return *this; }
  Monitor monitor() const { return monitor_; }
  // An improvement must exceed this (>= 0). Default 0: any strict improvement counts.
  TrainerOptions& min_delta(double v) { min_delta_ = v; return *this; }
  double min_delta() const { return min_delta_; }
  // Clip the gradients' joint L2 norm to this before each step (optim::clip_grad_norm_); 0 = off (default;
  // nnU-Net uses 12).
  TrainerOptions& clip_grad_norm(double v) { clip_ = v; return *this; }
  double clip_grad_norm() const { return clip_; }
  // Directory for last.h5, best.h5, log.csv and curves.svg (created when missing); empty = no files (default).
  TrainerOptions& output_dir(std::string v) { dir_ = std::move(v); return *this; }
  const std::string& output_dir() const { return dir_; }
  // Load the best epoch's model state back when fit() completes or stops early (not when interrupted).
  // Default false: the model keeps its last state.
  TrainerOptions& restore_best(bool v) { restore_best_ = v; return *this; }
  bool restore_best() const { return restore_best_; }
  // Catch SIGINT during fit(): stop after the current iteration and save (default true).
  TrainerOptions& handle_sigint(bool v) { handle_sigint_ = v; return *this; }
  bool handle_sigint() const { return handle_sigint_; }
  // Progress display mode (default automatic: a bar on a terminal, plain lines otherwise).
  TrainerOptions& progress(ProgressMode v) { progress_ = v; return *this; }
  ProgressMode progress() const { return progress_; }
  // Plain-line mode: a line every this many iterations (>= 1; default 50), plus one per epoch.
  TrainerOptions& progress_every(int v) { progress_every_ = v; return *this; }
  int progress_every() const { return progress_every_; }
  // Name of the validation metric in log.csv ("val_<name>"), the display and the plot. Default "dice".
  TrainerOptions& metric_name(std::string v) { metric_name_ = std::move(v); return *this; }
  const std::string& metric_name() const { return metric_name_; }
  // The model_name attribute of the checkpoints (io/checkpoint.hpp). Default empty.
  TrainerOptions& model_name(std::string v) { model_name_ = std::move(v); return *this; }
  const std::string& model_name() const { return model_name_; }

  void validate() const {
    const std::string who = "mmnet::train::TrainerOptions";
    if (epochs_ < 0) fail<value_error>(who, "epochs", ">= 0", epochs_);
    if (iterations_ < 1) fail<value_error>(who, "iterations_per_epoch", ">= 1", iterations_);
    if (patience_ < 0) fail<value_error>(who, "patience", ">= 0", patience_);
    if (!(min_delta_ >= 0) || !std::isfinite(min_delta_))
      fail<value_error>(who, "min_delta", "a finite value >= 0", min_delta_);
    if (!(clip_ >= 0) || !std::isfinite(clip_))
      fail<value_error>(who, "clip_grad_norm", "a finite value >= 0 (0 = off)", clip_);
    if (progress_every_ < 1) fail<value_error>(who, "progress_every", ">= 1", progress_every_);
    if (metric_name_.empty() || metric_name_.find_first_of(",\n\r\"") != std::string::npos)
      fail<value_error>(who, "metric_name", "a non-empty name without commas, quotes or newlines",
                        "'" + metric_name_ + "'");
  }

 private:
  int epochs_ = 100, iterations_ = 250, patience_ = 0;
  Monitor monitor_ = Monitor::metric_max;
  double min_delta_ = 0, clip_ = 0;
  std::string dir_;
  bool restore_best_ = false, handle_sigint_ = true;
  ProgressMode progress_ = ProgressMode::automatic;
  int progress_every_ = 50;
  std::string metric_name_ = "dice", model_name_;
};

namespace trainer_detail {

// Set by the SIGINT handler fit() installs; read after every iteration.
inline volatile std::sig_atomic_t sigint_received = 0;
inline void on_sigint(int) { sigint_received = 1; }

// Installs on_sigint for its lifetime and restores the previous disposition after (also on exceptions). A
// SIGINT that was ignored (nohup, a background job) stays ignored. A second Ctrl-C while the checkpoint is
// saved only sets the flag again, so the save completes (and is atomic anyway).
class SigintGuard {
 public:
  explicit SigintGuard(bool on) {
    sigint_received = 0;
    if (!on) return;
#if defined(_WIN32)
    old_ = std::signal(SIGINT, &on_sigint);
    if (old_ == SIG_IGN) std::signal(SIGINT, SIG_IGN);
    else installed_ = old_ != SIG_ERR;
#else
    struct sigaction sa {};
    sa.sa_handler = &on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // file writes in progress are resumed, not failed with EINTR
    if (sigaction(SIGINT, nullptr, &old_) != 0) return;
    if (!(old_.sa_flags & SA_SIGINFO) && old_.sa_handler == SIG_IGN) return;
    installed_ = sigaction(SIGINT, &sa, nullptr) == 0;
#endif
  }
  ~SigintGuard() {
    if (!installed_) return;
#if defined(_WIN32)
    std::signal(SIGINT, old_);
#else
    sigaction(SIGINT, &old_, nullptr);
#endif
  }
  SigintGuard(const SigintGuard&) = delete;
  SigintGuard& operator=(const SigintGuard&) = delete;

 private:
  bool installed_ = false;
#if defined(_WIN32)
  void (*old_)(int) = SIG_DFL;
#else
  struct sigaction old_ {};
#endif
};

inline bool exists(const std::string& p) {
  std::error_code ec;
  return std::filesystem::exists(p, ec);
}

}  // namespace trainer_detail

// Trains Model (a mmnet::Module<T, Backend> with forward(x) and backward(d output): output = tensor, or any
// type the loss step takes and returns a gradient of, e.g. std::vector<tensor> for deep supervision) with any
// optimizer built on model.parameters(). The model, optimizer, scheduler and tracked generators are held by
// reference: they must outlive the trainer and stay in place. The model is left in train mode.
template <class Model, class T = typename Model::value_type, class Backend = typename Model::backend_type>
class Trainer {
  static_assert(
      std::is_base_of_v<Module<T, Backend>, Model>,
      "mmnet::train::Trainer: Model must derive from mmnet::Module<T, Backend> (checkpoints need its state dict)");

 public:
  using tensor = Tensor<T, Backend>;
  using batch_type = Batch<T, Backend>;
  // What model.forward(input) returns (tensor for a plain segmentation network).
  using output_type = std::decay_t<decltype(std::declval<Model&>().forward(std::declval<const tensor&>()))>;
  using loss_step_type = LossStep<T, Backend, output_type>;
  // (epoch, iteration) -> that step's batch (0-based; after a resume the first call continues where the
  // interrupted run stopped).
  using BatchSource = std::function<batch_type(int epoch, int iteration)>;
  // (logits, target) -> (loss, dL/dlogits).
  using LossFn = std::function<loss_step_type(const output_type& logits, const tensor& target)>;
  // Called once per epoch with the model in eval mode.
  using ValidationFn = std::function<ValidationResult(Model& model)>;

  Trainer(Model& model, optim::OptimizerBase& optimizer, LossFn loss, const TrainerOptions& options = TrainerOptions())
      : model_(model), optimizer_(optimizer), loss_(std::move(loss)), options_(options) {
    options_.validate();
    if (!loss_) fail<value_error>(who("Trainer"), "loss step", "a callable", "an empty std::function");
    best_value_ = worst_value();
  }

  // An epoch-indexed scheduler (StepLR, CosineAnnealingLR, PolyLR, ...) attached to the trainer's optimizer,
  // stepped after every optimizer step (per_iteration) or at every epoch's end (per_epoch, the default).
  Trainer& scheduler(optim::LRScheduler& s, SchedulerStep when = SchedulerStep::per_epoch) {
    check_scheduler(s);
    scheduler_ = &s;
    iteration_step_ = when == SchedulerStep::per_iteration ? std::function<void()>([&s] { s.step(); }) : nullptr;
    epoch_step_ = when == SchedulerStep::per_epoch ? std::function<void(double)>([&s](double) { s.step(); }) : nullptr;
    return *this;
  }
  // ReduceLROnPlateau: stepped at every epoch's end with the monitored quantity (the validation metric or
  // loss), or the epoch's training loss when there is no validation. Build it with the matching mode
  // (PlateauMode::max for a metric).
  Trainer& scheduler(optim::ReduceLROnPlateau& s) {
    check_scheduler(s);
    scheduler_ = &s;
    iteration_step_ = nullptr;
    epoch_step_ = [&s](double v) { s.step(v); };
    return *this;
  }

  // A generator whose state is saved in the checkpoints and restored by resume() (data sampling,
  // augmentation, a dropout layer's generator()). name: non-empty, no '/', unique.
  Trainer& track_generator(const std::string& name, Generator& g) {
    if (name.empty() || name.find('/') != std::string::npos || name == ".")
      fail<value_error>(who("track_generator"), "name", "a non-empty name without '/'", "'" + name + "'");
    for (auto& t : generators_)
      if (t.first == name)
        fail<value_error>(who("track_generator"), "name", "a name not tracked yet", "'" + name + "'");
    generators_.emplace_back(name, &g);
    return *this;
  }

  // Called after every completed epoch (after its checkpoint and logs are written) with its record and
  // whether the monitored quantity improved: for the caller's own logging or schedules. It may call
  // request_stop().
  Trainer& on_epoch_end(std::function<void(const EpochRecord&, bool improved)> f) {
    on_epoch_end_ = std::move(f);
    return *this;
  }

  // Where the progress display writes (default std::cerr; only std::cout / std::cerr can be terminals).
  Trainer& progress_stream(std::ostream& os) {
    progress_os_ = &os;
    return *this;
  }

  // Restores the state of last.h5 in dir (or of a checkpoint file path): model, optimizer, scheduler, loop
  // counters, early-stopping state and tracked generators, all or nothing (on any mismatch it throws
  // state_dict_error / value_error / io_error and changes nothing). log.csv's rows up to the checkpoint are
  // kept as history, and with restore_best the model part of best.h5 is the best state.
  void resume(const std::string& dir_or_file) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const bool is_dir = fs::is_directory(dir_or_file, ec);
    const std::string dir = is_dir ? dir_or_file : fs::path(dir_or_file).parent_path().string();
    const std::string path = is_dir ? join(dir_or_file, "last.h5") : dir_or_file;
    if (!trainer_detail::exists(path))
      throw io_error(who("resume") + ": no checkpoint " + path + " (nothing to resume)");
    io::Checkpoint c = io::read_checkpoint(path);
    const std::string where = who("resume") + ": " + path;

    // Everything is read and checked first.
    std::vector<std::string> problems;
    auto number = [&](const char* key) {
      const auto it = c.extra.find(key);
      if (it == c.extra.end()) {
        problems.push_back(std::string("missing extra entry '") + key + "'");
        return 0.0;
      }
      return it->second;
    };
    const int epoch = static_cast<int>(number("epoch"));
    const int iteration = static_cast<int>(number("iteration"));
    const auto global_step = static_cast<std::int64_t>(number("global_step"));
    const double best_value = number("best_value");
    const int best_epoch = static_cast<int>(number("best_epoch"));
    const int since_best = static_cast<int>(number("epochs_without_improvement"));
    const double loss_sum = number("epoch_loss_sum");
    const auto loss_count = static_cast<std::int64_t>(number("epoch_loss_count"));
    const double seconds = number("seconds");
    const int iterations = static_cast<int>(number("iterations_per_epoch"));
    const int monitor = static_cast<int>(number("monitor"));
    const double last_lr = number("last_lr");
    if (problems.empty()) {
      if (epoch < 0 || iteration < 0 || global_step < 0 || since_best < 0 || loss_count < 0 || iterations < 1)
        problems.push_back("negative loop counters");
      if (monitor != static_cast<int>(options_.monitor()))
        problems.push_back(std::string("the checkpoint monitored the validation ") +
                           (monitor == 0 ? "metric" : "loss") + ", this trainer monitors the validation " +
                           (options_.monitor() == Monitor::metric_max ? "metric" : "loss"));
      if (iteration > 0 && iterations != options_.iterations_per_epoch())
        problems.push_back("saved in the middle of an epoch of " + std::to_string(iterations) +
                           " iterations; this trainer runs " + std::to_string(options_.iterations_per_epoch()) +
                           " per epoch (change it only at an epoch boundary)");
      if (iteration > options_.iterations_per_epoch())
        problems.push_back("iteration " + std::to_string(iteration) + " lies beyond the epoch");
    }
    std::vector<std::vector<std::uint64_t>> states;
    for (auto& [name, g] : generators_) {
      const std::string base = "rng." + name + ".";
      const auto n = c.extra.find(base + "words");
      if (n == c.extra.end()) {
        problems.push_back("no state for tracked generator '" + name + "'");
        continue;
      }
      std::vector<std::uint64_t> words;
      for (std::size_t i = 0; i < static_cast<std::size_t>(n->second); ++i) {
        const auto hi = c.extra.find(base + std::to_string(i) + ".hi"),
                   lo = c.extra.find(base + std::to_string(i) + ".lo");
        if (hi == c.extra.end() || lo == c.extra.end()) {
          problems.push_back("generator '" + name + "': word " + std::to_string(i) + " missing");
          break;
        }
        words.push_back(static_cast<std::uint64_t>(hi->second) << 32 | static_cast<std::uint64_t>(lo->second));
      }
      try {
        Generator probe;
        probe.set_state(words);
      } catch (const value_error& e) {
        problems.push_back("generator '" + name + "': " + e.what());
      }
      states.push_back(std::move(words));
    }
    for (auto& [key, v] : c.extra) {
      if (key.compare(0, 4, "rng.") != 0) continue;
      const std::string name = key.substr(4, key.rfind('.') - 4);
      if (key.size() > 6 && key.compare(key.size() - 6, 6, ".words") == 0 &&
          std::none_of(generators_.begin(), generators_.end(), [&](const auto& t) { return t.first == name; }))
        problems.push_back("the checkpoint holds generator '" + name + "', which this trainer does not track "
                           "(track_generator it, or the resumed run would not continue exactly)");
    }
    if (scheduler_ && c.scheduler.empty())
      problems.push_back("a scheduler was attached but the checkpoint has no scheduler state");
    if (!scheduler_ && !c.scheduler.empty())
      problems.push_back("the checkpoint has scheduler state but no scheduler was attached");
    if (c.optimizer.empty()) problems.push_back("the checkpoint has no optimizer state");
    if (!problems.empty()) {
      std::string msg = where + ": cannot resume";
      for (auto& p : problems) msg += "; " + p;
      throw state_dict_error(msg);
    }
    optimizer_.check_state_dict(c.optimizer);
    if (scheduler_) scheduler_->check_state_dict(c.scheduler);
    std::vector<EpochRecord> history;
    const std::string csv = join(dir, "log.csv");
    if (trainer_detail::exists(csv))
      for (auto& r : read_csv(csv))
        if (r.epoch < epoch) history.push_back(r);
    StateDict best_state;
    const std::string best = join(dir, "best.h5");
    if (options_.restore_best() && best_epoch >= 0 && trainer_detail::exists(best))
      best_state = io::read_checkpoint(best).model;

    // Then applied (model.load_state_dict checks everything itself before it writes).
    model_.load_state_dict(c.model, /*strict=*/true);
    optimizer_.load_state_dict(c.optimizer);
    if (scheduler_) scheduler_->load_state_dict(c.scheduler);
    for (std::size_t i = 0; i < generators_.size(); ++i) generators_[i].second->set_state(states[i]);
    epoch_ = epoch;
    iteration_ = iteration;
    global_step_ = global_step;
    best_value_ = best_value;
    best_epoch_ = best_epoch;
    since_best_ = since_best;
    loss_sum_ = loss_sum;
    loss_count_ = loss_count;
    seconds_ = seconds;
    last_lr_ = last_lr;
    history_ = std::move(history);
    best_state_ = std::move(best_state);
  }

  // Runs the remaining epochs (up to options().epochs()). Returns how it ended; see FitStatus.
  FitResult fit(const BatchSource& batches, const ValidationFn& validation = {}) {
    using clock = std::chrono::steady_clock;
    if (!batches) fail<value_error>(who("fit"), "batch source", "a callable", "an empty std::function");
    const std::string& dir = options_.output_dir();
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec) throw io_error(who("fit") + ": cannot create output directory " + dir + ": " + ec.message());
    }
    trainer_detail::SigintGuard guard(options_.handle_sigint());
    stop_requested_ = false;
    const int epochs = options_.epochs(), iterations = options_.iterations_per_epoch();
    ProgressDisplay progress(*progress_os_, options_.progress(), options_.progress_every());
    progress.start(static_cast<long long>(std::max(0, epochs - epoch_)) * iterations -
                   (epoch_ < epochs ? iteration_ : 0));
    const auto t0 = clock::now();
    const double seconds0 = seconds_;
    auto elapsed = [&] { return seconds0 + std::chrono::duration<double>(clock::now() - t0).count(); };

    FitResult r;
    if (early_stop_due()) r.status = FitStatus::early_stopped;
    while (r.status == FitStatus::completed && epoch_ < epochs) {
      const double epoch_start = elapsed();
      model_.train();
      bool stop = false;
      while (iteration_ < iterations && !stop) {
        const batch_type b = batches(epoch_, iteration_);
        optimizer_.zero_grad();
        const output_type logits = model_.forward(b.input);
        const loss_step_type s = loss_(logits, b.target);
        if (!std::isfinite(s.loss))
          fail<value_error>(who("fit"), "training loss", "a finite value", s.loss,
                            "epoch " + std::to_string(epoch_) + ", iteration " + std::to_string(iteration_));
        model_.backward(s.grad);
        if (options_.clip_grad_norm() > 0) optim::clip_grad_norm_(model_.parameters(), options_.clip_grad_norm());
        last_lr_ = optimizer_.lr();
        optimizer_.step();
        if (iteration_step_) iteration_step_();
        loss_sum_ += s.loss;
        ++loss_count_;
        ++iteration_;
        ++global_step_;
        ProgressState ps;
        ps.epoch = epoch_;
        ps.epochs = epochs;
        ps.iteration = iteration_;
        ps.iterations = iterations;
        ps.loss = loss_sum_ / static_cast<double>(loss_count_);
        ps.lr = last_lr_;
        progress.update(ps);
        stop = stop_pending();
      }
      if (stop) {  // after the epoch's last iteration too: resume() runs its validation
        seconds_ = elapsed();
        save_last_and_logs();
        r.status = FitStatus::interrupted;
        break;
      }

      // The epoch's end.
      EpochRecord rec;
      rec.epoch = epoch_;
      rec.iteration = global_step_;
      rec.train_loss = loss_count_ > 0 ? loss_sum_ / static_cast<double>(loss_count_) : 0.0;
      rec.lr = last_lr_;
      bool improved = false;
      std::optional<double> monitored;
      if (validation) {
        model_.eval();
        const ValidationResult v = validation(model_);
        model_.train();
        rec.val_metric = v.metric;
        rec.val_loss = v.loss;
        monitored = options_.monitor() == Monitor::metric_max ? v.metric : v.loss;
        if (!monitored || !std::isfinite(*monitored))
          fail<value_error>(who("fit"),
                            options_.monitor() == Monitor::metric_max ? "validation metric" : "validation loss",
                            "a finite value (the monitored quantity)", monitored ? std::to_string(*monitored) : "none",
                            "epoch " + std::to_string(epoch_));
        improved = is_improvement(*monitored);
        if (improved) {
          best_value_ = *monitored;
          best_epoch_ = epoch_;
          since_best_ = 0;
          if (options_.restore_best()) best_state_ = model_.state_dict();
        } else {
          ++since_best_;
        }
      }
      if (epoch_step_) epoch_step_(monitored ? *monitored : rec.train_loss);
      ++epoch_;
      iteration_ = 0;
      loss_sum_ = 0;
      loss_count_ = 0;
      seconds_ = elapsed();
      rec.seconds = seconds_;
      history_.push_back(rec);
      ++r.epochs_run;
      if (!dir.empty()) {
        const io::Checkpoint c = make_checkpoint();
        io::write_checkpoint(join(dir, "last.h5"), c, options_.model_name());
        if (improved) io::write_checkpoint(join(dir, "best.h5"), c, options_.model_name());
        write_logs();
      }
      EpochSummary es;
      es.epoch = rec.epoch;
      es.epochs = epochs;
      es.train_loss = rec.train_loss;
      es.val_loss = rec.val_loss;
      es.val_metric = rec.val_metric;
      es.metric_name = options_.metric_name();
      es.best = improved;
      es.lr = rec.lr;
      es.seconds = seconds_ - epoch_start;
      progress.epoch_end(es);
      if (on_epoch_end_) on_epoch_end_(rec, improved);
      if (stop_pending()) r.status = FitStatus::interrupted;
      else if (early_stop_due()) r.status = FitStatus::early_stopped;
    }
    if (r.status == FitStatus::interrupted)
      progress.message("interrupted at epoch " + std::to_string(epoch_ + 1) + ", iteration " +
                       std::to_string(iteration_) + (dir.empty() ? std::string() : "; saved " + join(dir, "last.h5")));
    else if (r.status == FitStatus::early_stopped)
      progress.message("early stop: no improvement for " + std::to_string(since_best_) + " epochs (best epoch " +
                       std::to_string(best_epoch_ + 1) + ")");
    if (r.status != FitStatus::interrupted && options_.restore_best() && !best_state_.empty())
      model_.load_state_dict(best_state_, /*strict=*/true);
    r.epoch = epoch_;
    r.iteration = iteration_;
    r.best_epoch = best_epoch_;
    r.best_value = best_epoch_ >= 0 ? best_value_ : std::numeric_limits<double>::quiet_NaN();
    r.history = history_;
    return r;
  }

  // Asks fit() to stop after the current iteration, as a SIGINT does (callable from another thread or from
  // the batch source / validation).
  void request_stop() { stop_requested_ = true; }

  // The checkpoint fit() would write now (model, optimizer, scheduler and the extras of docs/training.md).
  io::Checkpoint make_checkpoint() {
    io::Checkpoint c;
    c.model = model_.state_dict();
    c.optimizer = optimizer_.state_dict();
    if (scheduler_) c.scheduler = scheduler_->state_dict();
    c.model_name = options_.model_name();
    auto& x = c.extra;
    x["epoch"] = epoch_;
    x["iteration"] = iteration_;
    x["global_step"] = static_cast<double>(global_step_);
    x["best_value"] = best_value_;
    x["best_epoch"] = best_epoch_;
    x["epochs_without_improvement"] = since_best_;
    x["epoch_loss_sum"] = loss_sum_;
    x["epoch_loss_count"] = static_cast<double>(loss_count_);
    x["seconds"] = seconds_;
    x["iterations_per_epoch"] = options_.iterations_per_epoch();
    x["monitor"] = static_cast<int>(options_.monitor());
    x["last_lr"] = last_lr_;
    // 64-bit generator words as two exact 32-bit halves (extras are float64 scalars).
    for (auto& [name, g] : generators_) {
      const std::vector<std::uint64_t> words = g->state();
      const std::string base = "rng." + name + ".";
      x[base + "words"] = static_cast<double>(words.size());
      for (std::size_t i = 0; i < words.size(); ++i) {
        x[base + std::to_string(i) + ".hi"] = static_cast<double>(words[i] >> 32);
        x[base + std::to_string(i) + ".lo"] = static_cast<double>(words[i] & 0xffffffffu);
      }
    }
    return c;
  }

  const TrainerOptions& options() const { return options_; }
  Model& model() { return model_; }
  optim::OptimizerBase& optimizer() { return optimizer_; }
  int epoch() const { return epoch_; }                  // next epoch to run (0-based)
  int iteration() const { return iteration_; }          // next iteration in it
  std::int64_t global_step() const { return global_step_; }  // optimizer steps so far
  int best_epoch() const { return best_epoch_; }
  double best_value() const { return best_value_; }     // -inf (metric) / +inf (loss) before any validation
  int epochs_without_improvement() const { return since_best_; }
  const std::vector<EpochRecord>& history() const { return history_; }

 private:
  static std::string who(const char* what) { return std::string("mmnet::train::Trainer::") + what; }
  static std::string join(const std::string& dir, const char* file) {
    return (std::filesystem::path(dir) / file).string();
  }

  void check_scheduler(const optim::SchedulerBase& s) const {
    if (&s.optimizer() != &optimizer_)
      fail<value_error>(who("scheduler"), "the scheduler's optimizer", "the trainer's optimizer", "another optimizer");
  }
  double worst_value() const {
    return options_.monitor() == Monitor::metric_max ? -std::numeric_limits<double>::infinity()
                                                     : std::numeric_limits<double>::infinity();
  }
  bool is_improvement(double v) const {
    return options_.monitor() == Monitor::metric_max ? v > best_value_ + options_.min_delta()
                                                     : v < best_value_ - options_.min_delta();
  }
  bool early_stop_due() const { return options_.patience() > 0 && since_best_ >= options_.patience(); }
  bool stop_pending() const { return trainer_detail::sigint_received != 0 || stop_requested_.load(); }

  void write_logs() {
    const std::string& dir = options_.output_dir();
    write_csv(join(dir, "log.csv"), history_, options_.metric_name());
    write_svg(join(dir, "curves.svg"), history_, options_.metric_name(), best_epoch_);
  }
  void save_last_and_logs() {
    if (options_.output_dir().empty()) return;
    io::write_checkpoint(join(options_.output_dir(), "last.h5"), make_checkpoint(), options_.model_name());
    write_logs();
  }

  Model& model_;
  optim::OptimizerBase& optimizer_;
  LossFn loss_;
  TrainerOptions options_;
  optim::SchedulerBase* scheduler_ = nullptr;
  std::function<void()> iteration_step_;
  std::function<void(double)> epoch_step_;
  std::vector<std::pair<std::string, Generator*>> generators_;
  std::function<void(const EpochRecord&, bool)> on_epoch_end_;
  std::ostream* progress_os_ = &std::cerr;
  std::atomic<bool> stop_requested_{false};

  int epoch_ = 0, iteration_ = 0, best_epoch_ = -1, since_best_ = 0;
  std::int64_t global_step_ = 0, loss_count_ = 0;
  double best_value_ = 0, loss_sum_ = 0, seconds_ = 0, last_lr_ = 0;
  std::vector<EpochRecord> history_;
  StateDict best_state_;
};

}  // namespace mmnet::train
