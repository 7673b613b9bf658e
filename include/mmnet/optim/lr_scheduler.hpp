// mmnet/optim/lr_scheduler.hpp: learning-rate schedules with torch.optim.lr_scheduler's semantics (torch 1.13):
// StepLR, ExponentialLR, CosineAnnealingLR, PolyLR (torch's PolynomialLR) and ReduceLROnPlateau.
//
// Usage as in PyTorch: construct the scheduler after the optimizer (the constructor performs torch's initial
// step: last_epoch = 0, lr unchanged), then call step() after each optimizer.step() -- once per epoch or once
// per iteration, as the schedule is meant (last_epoch counts these calls):
//
//   optim::SGD<float, mmnet::cpu> opt(net.parameters(), optim::SGDOptions(0.01).momentum(0.99).nesterov(true));
//   optim::PolyLR sched(opt, optim::PolyLROptions(1000).power(0.9));
//   for (epoch ...) { for (it ...) { ...; opt.step(); } sched.step(); }
//
// step() uses torch's recursive ("chainable") forms, which multiply the optimizer's current lr, exactly as
// torch's step(); step(epoch) sets last_epoch = epoch and uses torch's closed forms (torch's deprecated
// step(epoch) path), e.g. nnU-Net's "lr_e = 0.01 (1 - e/E)^0.9, set at the start of epoch e" is
// sched.step(e) on a PolyLR(E, 0.9) before epoch e's iterations. Both agree up to rounding.
//
// base_lr is the optimizer's initial_lr, set from its lr by the first scheduler attached (torch's
// group['initial_lr']). A scheduler keeps a pointer to its optimizer, which must outlive it and stay put.
//
// state_dict() mirrors torch's scheduler.state_dict() (its __dict__ without the optimizer): base_lrs (1,),
// last_epoch, _step_count, _last_lr (1,) and the scheduler's hyperparameters under their torch names;
// load_state_dict() restores all of them (as torch's __dict__.update) and changes nothing when anything does
// not fit. ReduceLROnPlateau stores mode and threshold_mode as int64 (0 = min / rel, 1 = max / abs).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>

#include "optimizer.hpp"

namespace mmnet::optim {

// What every scheduler offers a checkpoint: its last lr, its epoch counter and its state.
class SchedulerBase {
 public:
  virtual ~SchedulerBase() = default;
  SchedulerBase(const SchedulerBase&) = delete;
  SchedulerBase& operator=(const SchedulerBase&) = delete;

  // The lr the last step() set (torch's get_last_lr()[0]).
  double get_last_lr() const { return last_lr_; }
  // Number of step() calls since construction (torch's last_epoch).
  std::int64_t last_epoch() const { return last_epoch_; }
  const std::string& name() const { return name_; }
  OptimizerBase& optimizer() const { return *opt_; }

  virtual StateDict state_dict() const = 0;
  // Restores state_dict()'s output; all or nothing (mmnet::state_dict_error lists every problem).
  void load_state_dict(const StateDict& sd) { read(sd)(); }
  // Throws exactly what load_state_dict(sd) would, without changing anything.
  void check_state_dict(const StateDict& sd) const { read(sd); }

 protected:
  SchedulerBase(OptimizerBase& opt, std::string name) : opt_(&opt), name_(std::move(name)) {}
  SchedulerBase(SchedulerBase&&) noexcept = default;
  SchedulerBase& operator=(SchedulerBase&&) noexcept = default;

  // Checks sd completely and returns the action that applies it.
  virtual std::function<void()> read(const StateDict& sd) const = 0;
  void require(bool ok, const std::string& what, const std::string& expected, double actual) const {
    if (!ok) fail<value_error>(name_, what, expected, actual);
  }
  // Runs check on a copy of the options, recording its complaint as a state-dict problem.
  template <class F>
  static void validate_into(detail::StateDictReader& r, F&& check) {
    try {
      check();
    } catch (const value_error& e) {
      r.problem(std::string("hyperparameters: ") + e.what());
    }
  }

  OptimizerBase* opt_;
  std::string name_;
  std::int64_t last_epoch_ = -1;
  double last_lr_ = 0;
};

// Base of the epoch-indexed schedules (torch's _LRScheduler).
class LRScheduler : public SchedulerBase {
 public:
  // One scheduler step (torch's step()): last_epoch += 1, lr from the recursive form.
  void step() {
    ++step_count_;
    ++last_epoch_;
    set(get_lr());
  }
  // torch's step(epoch): last_epoch = epoch, lr from the closed form.
  void step(std::int64_t epoch) {
    if (epoch < 0) fail<value_error>(name_, "epoch", ">= 0", epoch);
    ++step_count_;
    last_epoch_ = epoch;
    set(closed_form_lr());
  }
  double base_lr() const { return base_lr_; }

  StateDict state_dict() const override {
    StateDict sd;
    sd.insert("base_lrs", detail::vector_f64({base_lr_}));
    sd.insert("last_epoch", detail::scalar_i64(last_epoch_));
    sd.insert("_step_count", detail::scalar_i64(step_count_));
    sd.insert("_last_lr", detail::vector_f64({last_lr_}));
    write_options(sd);
    return sd;
  }

 protected:
  LRScheduler(OptimizerBase& opt, std::string name) : SchedulerBase(opt, std::move(name)) {
    if (!opt.initial_lr()) opt.set_initial_lr(opt.lr());
    base_lr_ = *opt.initial_lr();
  }
  // torch's _initial_step(), called at the end of each derived constructor (after validation).
  void initial_step() {
    step_count_ = 0;
    step();
  }
  // The chainable form: the next lr from the optimizer's current lr (torch's get_lr()).
  virtual double get_lr() const = 0;
  // The lr at last_epoch from base_lr alone (torch's _get_closed_form_lr()).
  virtual double closed_form_lr() const = 0;
  virtual void write_options(StateDict& sd) const = 0;
  // Reads and checks the derived scheduler's options; returns the action that applies them.
  virtual std::function<void()> read_options(detail::StateDictReader& r) const = 0;

  double lr() const { return opt_->lr(); }
  double base_lr_ = 0;
  std::int64_t step_count_ = 0;

 private:
  void set(double lr) {
    opt_->set_lr(lr);
    last_lr_ = lr;
  }
  std::function<void()> read(const StateDict& sd) const override {
    detail::StateDictReader r(sd, name_);
    double base = base_lr_, last_lr = last_lr_;
    if (const HostArray* a = r.get("base_lrs")) {
      if (a->numel() == 1 && a->shape.size() == 1) base = a->data[0];
      else r.problem("base_lrs (expected shape (1,): one parameter group, got " + a->shape_str() + ")");
    }
    if (const HostArray* a = r.get("_last_lr")) {
      if (a->numel() == 1 && a->shape.size() == 1) last_lr = a->data[0];
      else r.problem("_last_lr (expected shape (1,), got " + a->shape_str() + ")");
    }
    const std::int64_t last_epoch = r.integer("last_epoch", 0);
    const std::int64_t step_count = r.integer("_step_count", 1);
    if (last_epoch < 0) r.problem("last_epoch (expected >= 0, got " + std::to_string(last_epoch) + ")");
    if (!(base >= 0) || !std::isfinite(base)) r.problem("base_lrs (expected a finite value >= 0)");
    auto apply_options = read_options(r);
    r.finish();
    auto* self = const_cast<LRScheduler*>(this);  // only the returned action writes, from load_state_dict()
    return [self, base, last_lr, last_epoch, step_count, apply_options] {
      self->base_lr_ = base;
      self->last_lr_ = last_lr;
      self->last_epoch_ = last_epoch;
      self->step_count_ = step_count;
      apply_options();
    };
  }
};

// ---- StepLR --------------------------------------------------------------------------------------------

class StepLROptions {
 public:
  explicit StepLROptions(std::int64_t step_size) : step_size_(step_size) {}
  // Decay period in steps (> 0).
  StepLROptions& step_size(std::int64_t v) {
    step_size_ = v;
    return *this;
  }
  std::int64_t step_size() const { return step_size_; }
  // Multiplicative decay (> 0). Default 0.1 (torch).
  StepLROptions& gamma(double v) {
    gamma_ = v;
    return *this;
  }
  double gamma() const { return gamma_; }

 private:
  std::int64_t step_size_;
  double gamma_ = 0.1;
};

// torch.optim.lr_scheduler.StepLR: lr = base_lr gamma^floor(last_epoch / step_size). A staircase exponential
// decay "lr0 0.9^floor(t/500)" is StepLR(500).gamma(0.9) stepped per iteration.
class StepLR : public LRScheduler {
 public:
  StepLR(OptimizerBase& opt, const StepLROptions& options) : LRScheduler(opt, "mmnet::optim::StepLR"), options_(options) {
    validate(options_);
    initial_step();
  }
  const StepLROptions& options() const { return options_; }

 protected:
  double get_lr() const override {
    if (last_epoch_ == 0 || last_epoch_ % options_.step_size() != 0) return lr();
    return lr() * options_.gamma();
  }
  double closed_form_lr() const override {
    return base_lr_ * std::pow(options_.gamma(), static_cast<double>(last_epoch_ / options_.step_size()));
  }
  void write_options(StateDict& sd) const override {
    sd.insert("step_size", detail::scalar_i64(options_.step_size()));
    sd.insert("gamma", detail::scalar_f64(options_.gamma()));
  }
  std::function<void()> read_options(detail::StateDictReader& r) const override {
    StepLROptions o = StepLROptions(r.integer("step_size", options_.step_size())).gamma(r.real("gamma", options_.gamma()));
    validate_into(r, [&] { validate(o); });
    auto* self = const_cast<StepLR*>(this);
    return [self, o] { self->options_ = o; };
  }

 private:
  void validate(const StepLROptions& o) const {
    require(o.step_size() > 0, "step_size", "> 0", static_cast<double>(o.step_size()));
    require(o.gamma() > 0 && std::isfinite(o.gamma()), "gamma", "a finite value > 0", o.gamma());
  }
  StepLROptions options_;
};

// ---- ExponentialLR -------------------------------------------------------------------------------------

class ExponentialLROptions {
 public:
  explicit ExponentialLROptions(double gamma) : gamma_(gamma) {}
  // Multiplicative decay per step (> 0).
  ExponentialLROptions& gamma(double v) {
    gamma_ = v;
    return *this;
  }
  double gamma() const { return gamma_; }

 private:
  double gamma_;
};

// torch.optim.lr_scheduler.ExponentialLR: lr = base_lr gamma^last_epoch. A continuous decay
// "lr0 0.9^(t/500)" (Cascaded-FCN) is ExponentialLR(std::pow(0.9, 1.0 / 500)) stepped per iteration.
class ExponentialLR : public LRScheduler {
 public:
  ExponentialLR(OptimizerBase& opt, const ExponentialLROptions& options)
      : LRScheduler(opt, "mmnet::optim::ExponentialLR"), options_(options) {
    validate(options_);
    initial_step();
  }
  const ExponentialLROptions& options() const { return options_; }

 protected:
  double get_lr() const override { return last_epoch_ == 0 ? lr() : lr() * options_.gamma(); }
  double closed_form_lr() const override {
    return base_lr_ * std::pow(options_.gamma(), static_cast<double>(last_epoch_));
  }
  void write_options(StateDict& sd) const override { sd.insert("gamma", detail::scalar_f64(options_.gamma())); }
  std::function<void()> read_options(detail::StateDictReader& r) const override {
    ExponentialLROptions o(r.real("gamma", options_.gamma()));
    validate_into(r, [&] { validate(o); });
    auto* self = const_cast<ExponentialLR*>(this);
    return [self, o] { self->options_ = o; };
  }

 private:
  void validate(const ExponentialLROptions& o) const {
    require(o.gamma() > 0 && std::isfinite(o.gamma()), "gamma", "a finite value > 0", o.gamma());
  }
  ExponentialLROptions options_;
};

// ---- CosineAnnealingLR ---------------------------------------------------------------------------------

class CosineAnnealingLROptions {
 public:
  explicit CosineAnnealingLROptions(std::int64_t t_max) : t_max_(t_max) {}
  // Half period in steps (> 0): the lr falls from base_lr to eta_min over T_max steps, then rises again.
  CosineAnnealingLROptions& T_max(std::int64_t v) {
    t_max_ = v;
    return *this;
  }
  std::int64_t T_max() const { return t_max_; }
  // Minimum lr (>= 0). Default 0.
  CosineAnnealingLROptions& eta_min(double v) {
    eta_min_ = v;
    return *this;
  }
  double eta_min() const { return eta_min_; }

 private:
  std::int64_t t_max_;
  double eta_min_ = 0;
};

// torch.optim.lr_scheduler.CosineAnnealingLR: lr = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2
// (closed form; step() uses torch's recursive form, which continues periodically past T_max).
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(OptimizerBase& opt, const CosineAnnealingLROptions& options)
      : LRScheduler(opt, "mmnet::optim::CosineAnnealingLR"), options_(options) {
    validate(options_);
    initial_step();
  }
  const CosineAnnealingLROptions& options() const { return options_; }

 protected:
  // torch 1.13's get_lr(), term by term in Python's evaluation order.
  double get_lr() const override {
    const double pi = 3.14159265358979323846;  // math.pi
    const double eta = options_.eta_min(), t_max = static_cast<double>(options_.T_max());
    const double t = static_cast<double>(last_epoch_);
    if (last_epoch_ == 0) return lr();
    if (step_count_ == 1 && last_epoch_ > 0) return eta + (base_lr_ - eta) * (1 + std::cos(t * pi / t_max)) / 2;
    if ((last_epoch_ - 1 - options_.T_max()) % (2 * options_.T_max()) == 0)
      return lr() + (base_lr_ - eta) * (1 - std::cos(pi / t_max)) / 2;
    return (1 + std::cos(pi * t / t_max)) / (1 + std::cos(pi * (t - 1) / t_max)) * (lr() - eta) + eta;
  }
  double closed_form_lr() const override {
    const double pi = 3.14159265358979323846;
    const double eta = options_.eta_min();
    return eta + (base_lr_ - eta) *
                     (1 + std::cos(pi * static_cast<double>(last_epoch_) / static_cast<double>(options_.T_max()))) / 2;
  }
  void write_options(StateDict& sd) const override {
    sd.insert("T_max", detail::scalar_i64(options_.T_max()));
    sd.insert("eta_min", detail::scalar_f64(options_.eta_min()));
  }
  std::function<void()> read_options(detail::StateDictReader& r) const override {
    const auto o = CosineAnnealingLROptions(r.integer("T_max", options_.T_max())).eta_min(r.real("eta_min", options_.eta_min()));
    validate_into(r, [&] { validate(o); });
    auto* self = const_cast<CosineAnnealingLR*>(this);
    return [self, o] { self->options_ = o; };
  }

 private:
  void validate(const CosineAnnealingLROptions& o) const {
    require(o.T_max() > 0, "T_max", "> 0", static_cast<double>(o.T_max()));
    require(o.eta_min() >= 0 && std::isfinite(o.eta_min()), "eta_min", "a finite value >= 0", o.eta_min());
  }
  CosineAnnealingLROptions options_;
};

// ---- PolyLR --------------------------------------------------------------------------------------------

class PolyLROptions {
 public:
  explicit PolyLROptions(std::int64_t total_iters) : total_iters_(total_iters) {}
  // Number of steps over which the lr decays to 0 (> 0); it stays 0 afterwards.
  PolyLROptions& total_iters(std::int64_t v) {
    total_iters_ = v;
    return *this;
  }
  std::int64_t total_iters() const { return total_iters_; }
  // Exponent (finite, > 0). Default 0.9, nnU-Net's PolyLRScheduler and the specs (torch's PolynomialLR
  // defaults to 1.0).
  PolyLROptions& power(double v) {
    power_ = v;
    return *this;
  }
  double power() const { return power_; }

 private:
  std::int64_t total_iters_;
  double power_ = 0.9;
};

// torch.optim.lr_scheduler.PolynomialLR (1.13): lr = base_lr (1 - min(t, total_iters) / total_iters)^power.
// The same as nnU-Net's PolyLRScheduler (initial_lr (1 - e / max_steps)^exponent) for e <= max_steps.
class PolyLR : public LRScheduler {
 public:
  PolyLR(OptimizerBase& opt, const PolyLROptions& options) : LRScheduler(opt, "mmnet::optim::PolyLR"), options_(options) {
    validate(options_);
    initial_step();
  }
  const PolyLROptions& options() const { return options_; }

 protected:
  double get_lr() const override {
    const std::int64_t n = options_.total_iters();
    if (last_epoch_ == 0 || last_epoch_ > n) return lr();
    const double t = static_cast<double>(last_epoch_), total = static_cast<double>(n);
    const double decay = std::pow((1.0 - t / total) / (1.0 - (t - 1) / total), options_.power());
    return lr() * decay;
  }
  double closed_form_lr() const override {
    const std::int64_t n = options_.total_iters();
    const double t = static_cast<double>(std::min(n, last_epoch_));
    return base_lr_ * std::pow(1.0 - t / static_cast<double>(n), options_.power());
  }
  void write_options(StateDict& sd) const override {
    sd.insert("total_iters", detail::scalar_i64(options_.total_iters()));
    sd.insert("power", detail::scalar_f64(options_.power()));
  }
  std::function<void()> read_options(detail::StateDictReader& r) const override {
    const auto o = PolyLROptions(r.integer("total_iters", options_.total_iters())).power(r.real("power", options_.power()));
    validate_into(r, [&] { validate(o); });
    auto* self = const_cast<PolyLR*>(this);
    return [self, o] { self->options_ = o; };
  }

 private:
  void validate(const PolyLROptions& o) const {
    require(o.total_iters() > 0, "total_iters", "> 0", static_cast<double>(o.total_iters()));
    require(o.power() > 0 && std::isfinite(o.power()), "power", "a finite value > 0", o.power());
  }
  PolyLROptions options_;
};

// ---- ReduceLROnPlateau ---------------------------------------------------------------------------------

enum class PlateauMode { min, max };  // whether a lower or a higher metric is better
enum class ThresholdMode { rel, abs };  // improvement relative to the best value, or absolute

class ReduceLROnPlateauOptions {
 public:
  ReduceLROnPlateauOptions() = default;
  // min: the metric should fall (a loss); max: rise (a Dice). Default min.
  ReduceLROnPlateauOptions& mode(PlateauMode v) {
    mode_ = v;
    return *this;
  }
  PlateauMode mode() const { return mode_; }
  // lr *= factor on a plateau, in [0, 1). Default 0.1.
  ReduceLROnPlateauOptions& factor(double v) {
    factor_ = v;
    return *this;
  }
  double factor() const { return factor_; }
  // Number of steps without improvement tolerated before reducing (>= 0). Default 10.
  ReduceLROnPlateauOptions& patience(std::int64_t v) {
    patience_ = v;
    return *this;
  }
  std::int64_t patience() const { return patience_; }
  // Least improvement that counts (>= 0). Default 1e-4.
  ReduceLROnPlateauOptions& threshold(double v) {
    threshold_ = v;
    return *this;
  }
  double threshold() const { return threshold_; }
  // rel: better than best (1 -/+ threshold); abs: better than best -/+ threshold. Default rel.
  ReduceLROnPlateauOptions& threshold_mode(ThresholdMode v) {
    threshold_mode_ = v;
    return *this;
  }
  ThresholdMode threshold_mode() const { return threshold_mode_; }
  // Steps after a reduction during which bad steps are not counted (>= 0). Default 0.
  ReduceLROnPlateauOptions& cooldown(std::int64_t v) {
    cooldown_ = v;
    return *this;
  }
  std::int64_t cooldown() const { return cooldown_; }
  // The lr is never reduced below min_lr (>= 0). Default 0.
  ReduceLROnPlateauOptions& min_lr(double v) {
    min_lr_ = v;
    return *this;
  }
  double min_lr() const { return min_lr_; }
  // A reduction smaller than eps is skipped (>= 0). Default 1e-8.
  ReduceLROnPlateauOptions& eps(double v) {
    eps_ = v;
    return *this;
  }
  double eps() const { return eps_; }

 private:
  PlateauMode mode_ = PlateauMode::min;
  double factor_ = 0.1;
  std::int64_t patience_ = 10;
  double threshold_ = 1e-4;
  ThresholdMode threshold_mode_ = ThresholdMode::rel;
  std::int64_t cooldown_ = 0;
  double min_lr_ = 0;
  double eps_ = 1e-8;
};

// torch.optim.lr_scheduler.ReduceLROnPlateau (1.13): step(metric) once per evaluation; when the metric has not
// improved for more than patience steps, lr = max(lr factor, min_lr) (skipped if the change is <= eps), then
// cooldown steps ignore bad results. A NaN metric counts as no improvement, as in torch. MAML's paper preset
// (nnU-Net v1): ReduceLROnPlateauOptions().factor(0.2).patience(30).threshold(1e-3)
// .threshold_mode(ThresholdMode::abs), stepped each epoch on an exponential moving average of the loss.
class ReduceLROnPlateau : public SchedulerBase {
 public:
  ReduceLROnPlateau(OptimizerBase& opt, const ReduceLROnPlateauOptions& options = ReduceLROnPlateauOptions())
      : SchedulerBase(opt, "mmnet::optim::ReduceLROnPlateau"), options_(options) {
    validate(options_);
    last_epoch_ = 0;
    last_lr_ = opt.lr();
    best_ = mode_worse(options_.mode());
  }
  const ReduceLROnPlateauOptions& options() const { return options_; }

  void step(double metric) {
    ++last_epoch_;
    if (is_better(metric, best_)) {
      best_ = metric;
      num_bad_epochs_ = 0;
    } else {
      ++num_bad_epochs_;
    }
    if (cooldown_counter_ > 0) {
      --cooldown_counter_;
      num_bad_epochs_ = 0;  // bad epochs in cooldown are ignored
    }
    if (num_bad_epochs_ > options_.patience()) {
      reduce_lr();
      cooldown_counter_ = options_.cooldown();
      num_bad_epochs_ = 0;
    }
    last_lr_ = opt_->lr();
  }

  // The best metric so far (+inf in min mode, -inf in max mode before the first step).
  double best() const { return best_; }
  std::int64_t num_bad_epochs() const { return num_bad_epochs_; }
  std::int64_t cooldown_counter() const { return cooldown_counter_; }
  bool in_cooldown() const { return cooldown_counter_ > 0; }

  StateDict state_dict() const override {
    StateDict sd;
    const auto& o = options_;
    sd.insert("factor", detail::scalar_f64(o.factor()));
    sd.insert("min_lrs", detail::vector_f64({o.min_lr()}));
    sd.insert("patience", detail::scalar_i64(o.patience()));
    sd.insert("cooldown", detail::scalar_i64(o.cooldown()));
    sd.insert("cooldown_counter", detail::scalar_i64(cooldown_counter_));
    sd.insert("mode", detail::scalar_i64(o.mode() == PlateauMode::max ? 1 : 0));
    sd.insert("threshold", detail::scalar_f64(o.threshold()));
    sd.insert("threshold_mode", detail::scalar_i64(o.threshold_mode() == ThresholdMode::abs ? 1 : 0));
    sd.insert("best", detail::scalar_f64(best_));
    sd.insert("num_bad_epochs", detail::scalar_i64(num_bad_epochs_));
    sd.insert("mode_worse", detail::scalar_f64(mode_worse(o.mode())));
    sd.insert("eps", detail::scalar_f64(o.eps()));
    sd.insert("last_epoch", detail::scalar_i64(last_epoch_));
    sd.insert("_last_lr", detail::vector_f64({last_lr_}));
    return sd;
  }

 protected:
  std::function<void()> read(const StateDict& sd) const override {
    detail::StateDictReader r(sd, name_);
    ReduceLROnPlateauOptions o = options_;
    o.factor(r.real("factor", o.factor()))
        .patience(r.integer("patience", o.patience()))
        .cooldown(r.integer("cooldown", o.cooldown()))
        .threshold(r.real("threshold", o.threshold()))
        .eps(r.real("eps", o.eps()));
    if (const HostArray* a = r.get("min_lrs")) {
      if (a->numel() == 1 && a->shape.size() == 1) o.min_lr(a->data[0]);
      else r.problem("min_lrs (expected shape (1,): one parameter group, got " + a->shape_str() + ")");
    }
    const std::int64_t mode = r.integer("mode", 0), tmode = r.integer("threshold_mode", 0);
    if (mode != 0 && mode != 1) r.problem("mode (expected 0 = min or 1 = max, got " + std::to_string(mode) + ")");
    if (tmode != 0 && tmode != 1)
      r.problem("threshold_mode (expected 0 = rel or 1 = abs, got " + std::to_string(tmode) + ")");
    o.mode(mode == 1 ? PlateauMode::max : PlateauMode::min);
    o.threshold_mode(tmode == 1 ? ThresholdMode::abs : ThresholdMode::rel);
    validate_into(r, [&] { validate(o); });
    r.accept("mode_worse");  // derived from mode, as torch's load_state_dict re-derives it
    const double best = r.real("best", best_);
    const std::int64_t bad = r.integer("num_bad_epochs", 0), cooldown_counter = r.integer("cooldown_counter", 0);
    const std::int64_t last_epoch = r.integer("last_epoch", 0);
    double last_lr = last_lr_;
    if (const HostArray* a = r.get("_last_lr")) {
      if (a->numel() == 1 && a->shape.size() == 1) last_lr = a->data[0];
      else r.problem("_last_lr (expected shape (1,), got " + a->shape_str() + ")");
    }
    if (bad < 0 || cooldown_counter < 0 || last_epoch < 0)
      r.problem("num_bad_epochs, cooldown_counter and last_epoch (expected >= 0)");
    r.finish();
    auto* self = const_cast<ReduceLROnPlateau*>(this);
    return [self, o, best, bad, cooldown_counter, last_epoch, last_lr] {
      self->options_ = o;
      self->best_ = best;
      self->num_bad_epochs_ = bad;
      self->cooldown_counter_ = cooldown_counter;
      self->last_epoch_ = last_epoch;
      self->last_lr_ = last_lr;
    };
  }

 private:
  static double mode_worse(PlateauMode m) {
    return m == PlateauMode::min ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
  }
  // torch's is_better, comparison by comparison.
  bool is_better(double a, double best) const {
    const double th = options_.threshold();
    const bool rel = options_.threshold_mode() == ThresholdMode::rel;
    if (options_.mode() == PlateauMode::min) return rel ? a < best * (1. - th) : a < best - th;
    return rel ? a > best * (th + 1.) : a > best + th;
  }
  void reduce_lr() {
    const double old_lr = opt_->lr();
    const double new_lr = std::max(old_lr * options_.factor(), options_.min_lr());
    if (old_lr - new_lr > options_.eps()) opt_->set_lr(new_lr);
  }
  void validate(const ReduceLROnPlateauOptions& o) const {
    require(o.factor() >= 0 && o.factor() < 1, "factor", "a value in [0, 1)", o.factor());
    require(o.patience() >= 0, "patience", ">= 0", static_cast<double>(o.patience()));
    require(o.cooldown() >= 0, "cooldown", ">= 0", static_cast<double>(o.cooldown()));
    require(o.threshold() >= 0 && std::isfinite(o.threshold()), "threshold", "a finite value >= 0", o.threshold());
    require(o.min_lr() >= 0 && std::isfinite(o.min_lr()), "min_lr", "a finite value >= 0", o.min_lr());
    require(o.eps() >= 0 && std::isfinite(o.eps()), "eps", "a finite value >= 0", o.eps());
  }

  ReduceLROnPlateauOptions options_;
  double best_;
  std::int64_t num_bad_epochs_ = 0;
  std::int64_t cooldown_counter_ = 0;
};

}  // namespace mmnet::optim
