// Learning-rate schedules (optim/lr_scheduler.hpp) against torch.optim.lr_scheduler 1.13
// (tests/reference/lr_scheduler_ref.py): 40-step lr sequences of StepLR, ExponentialLR, CosineAnnealingLR
// (through two periods) and PolyLR (past total_iters) by step(), the closed forms by step(epoch) at jumping
// epochs, nnU-Net's poly formula, ReduceLROnPlateau on metric sequences with plateaus, ties, a NaN, cooldown,
// min_lr and eps; state_dict names against torch's, resume bit-identity, bad options and state dicts.
#include <mmnet/optim/lr_scheduler.hpp>
#include <mmnet/optim/sgd.hpp>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

// A one-parameter optimizer to schedule (the schedule never looks at the parameters).
template <class T>
struct SchedTarget {
  std::vector<Parameter<T, Backend>> ps = std::vector<Parameter<T, Backend>>(1);
  std::unique_ptr<optim::SGD<T, Backend>> opt;
  explicit SchedTarget(double lr) {
    ps[0].reset({2});
    opt = std::make_unique<optim::SGD<T, Backend>>(std::vector<Parameter<T, Backend>*>{&ps[0]}, optim::SGDOptions(lr));
  }
};

using MakeSched = std::function<std::unique_ptr<optim::LRScheduler>(optim::OptimizerBase&)>;

struct SchedCase {
  const char* name;
  MakeSched make;
};

std::vector<SchedCase> sched_cases() {
  using namespace optim;
  return {
      {"step", [](OptimizerBase& o) { return std::make_unique<StepLR>(o, StepLROptions(7).gamma(0.3)); }},
      {"step_every", [](OptimizerBase& o) { return std::make_unique<StepLR>(o, StepLROptions(1).gamma(0.85)); }},
      {"exponential", [](OptimizerBase& o) { return std::make_unique<ExponentialLR>(o, ExponentialLROptions(0.9)); }},
      {"exponential_continuous",
       [](OptimizerBase& o) { return std::make_unique<ExponentialLR>(o, ExponentialLROptions(std::pow(0.9, 1.0 / 5))); }},
      {"cosine",
       [](OptimizerBase& o) { return std::make_unique<CosineAnnealingLR>(o, CosineAnnealingLROptions(10).eta_min(1e-4)); }},
      {"cosine_zero", [](OptimizerBase& o) { return std::make_unique<CosineAnnealingLR>(o, CosineAnnealingLROptions(13)); }},
      {"poly", [](OptimizerBase& o) { return std::make_unique<PolyLR>(o, PolyLROptions(30).power(0.9)); }},
      {"poly_linear", [](OptimizerBase& o) { return std::make_unique<PolyLR>(o, PolyLROptions(25).power(1.0)); }},
      {"poly_square", [](OptimizerBase& o) { return std::make_unique<PolyLR>(o, PolyLROptions(33).power(2.0)); }},
  };
}

void check_lr(double actual, double expected, const std::string& what) {
  if (expected == 0) {
    CHECK_MESSAGE(std::abs(actual) <= 1e-300, what << ": " << actual << " vs 0");
    return;
  }
  check_close_scalar(actual, expected, tol_output<double>(), what);
}

}  // namespace

TEST_CASE_TEMPLATE("LR schedulers match torch's lr sequences by step() and step(epoch)", T, float, double) {
  Fixture fx("lr_scheduler");
  const int steps = static_cast<int>(fx.scalar("num_steps"));
  const auto& epochs = fx.array("closed_epochs").data;
  for (const auto& sc : sched_cases()) {
    const std::string c = std::string(sc.name) + "/";
    const auto& expected = fx.array(c + "lr").data;
    REQUIRE(static_cast<int>(expected.size()) == steps + 1);
    SchedTarget<T> target(fx.scalar(c + "lr0"));
    auto sched = sc.make(*target.opt);
    CHECK(sched->last_epoch() == 0);
    CHECK(target.opt->lr() == fx.scalar(c + "lr0"));  // the initial step leaves the lr alone
    check_lr(sched->get_last_lr(), expected[0], c + "lr after construction");
    for (int t = 1; t <= steps; ++t) {
      target.opt->step();
      sched->step();
      check_lr(sched->get_last_lr(), expected[static_cast<std::size_t>(t)], c + "lr after step " + std::to_string(t));
      CHECK(target.opt->lr() == sched->get_last_lr());
    }
    CHECK(sched->last_epoch() == steps);
    // the scheduler's numeric state equals torch's state_dict() entries of the same names
    const StateDict sd = sched->state_dict();
    const std::string tp = c + "torch_state/";
    std::size_t shared = 0;
    for (const auto& entry : fx.all()) {
      if (entry.first.compare(0, tp.size(), tp) != 0) continue;
      const std::string key = entry.first.substr(tp.size());
      const HostArray* a = sd.find(key);
      REQUIRE_MESSAGE(a != nullptr, c << "state_dict lacks torch's " << key);
      CHECK_MESSAGE(a->shape == entry.second.shape, key);
      CHECK_MESSAGE(relative_error(a->data, entry.second.data) <= 1e-15, key);
      ++shared;
    }
    CHECK(shared == sd.size());  // and nothing that torch does not have

    // closed forms at jumping epochs, as torch's deprecated step(epoch)
    const auto& closed = fx.array(c + "closed_lr").data;
    SchedTarget<T> target2(fx.scalar(c + "lr0"));
    auto sched2 = sc.make(*target2.opt);
    for (std::size_t i = 0; i < epochs.size(); ++i) {
      target2.opt->step();
      sched2->step(static_cast<std::int64_t>(epochs[i]));
      check_lr(sched2->get_last_lr(), closed[i], c + "closed form at epoch " + std::to_string(static_cast<int>(epochs[i])));
      CHECK(sched2->last_epoch() == static_cast<std::int64_t>(epochs[i]));
    }
  }
}

TEST_CASE("PolyLR.step(epoch) is nnU-Net's PolyLRScheduler") {
  Fixture fx("lr_scheduler");
  const auto& expected = fx.array("nnunet/lr").data;
  SchedTarget<double> target(fx.scalar("nnunet/initial_lr"));
  optim::PolyLR sched(*target.opt, optim::PolyLROptions(static_cast<std::int64_t>(fx.scalar("nnunet/max_steps")))
                                       .power(fx.scalar("nnunet/exponent")));
  CHECK(optim::PolyLROptions(10).power() == 0.9);  // nnU-Net's default exponent
  for (std::size_t e = 0; e < expected.size(); ++e) {
    sched.step(static_cast<std::int64_t>(e));  // at the start of epoch e
    check_lr(target.opt->lr(), expected[e], "nnU-Net poly lr at epoch " + std::to_string(e));
  }
}

TEST_CASE_TEMPLATE("ReduceLROnPlateau matches torch on metric sequences", T, float, double) {
  Fixture fx("lr_scheduler");
  const char* sequences[] = {"metric", "dice", "ema"};
  for (const char* name : {"min_rel", "min_abs_cooldown", "max_rel", "max_abs_eps", "maml_like", "defaults"}) {
    const std::string c = std::string("plateau/") + name + "/";
    const auto& metric = fx.array(std::string("plateau_metric/") + sequences[static_cast<int>(fx.scalar(c + "sequence"))]).data;
    const auto& lr = fx.array(c + "lr").data;
    const auto& best = fx.array(c + "best").data;
    const auto& bad = fx.array(c + "num_bad_epochs").data;
    const auto& cool = fx.array(c + "cooldown_counter").data;
    auto o = optim::ReduceLROnPlateauOptions();
    if (std::string(name) != "defaults")
      o.mode(fx.scalar(c + "mode_max") != 0 ? optim::PlateauMode::max : optim::PlateauMode::min)
          .factor(fx.scalar(c + "factor"))
          .patience(static_cast<std::int64_t>(fx.scalar(c + "patience")))
          .threshold(fx.scalar(c + "threshold"))
          .threshold_mode(fx.scalar(c + "threshold_abs") != 0 ? optim::ThresholdMode::abs : optim::ThresholdMode::rel)
          .cooldown(static_cast<std::int64_t>(fx.scalar(c + "cooldown")))
          .min_lr(fx.scalar(c + "min_lr"))
          .eps(fx.scalar(c + "eps"));
    SchedTarget<T> target(fx.scalar(c + "lr0"));
    optim::ReduceLROnPlateau sched(*target.opt, o);
    CHECK(std::isinf(sched.best()));
    int reductions = 0;
    for (std::size_t t = 0; t < metric.size(); ++t) {
      const double before = target.opt->lr();
      target.opt->step();
      sched.step(metric[t]);
      reductions += target.opt->lr() != before;
      const std::string at = c + "step " + std::to_string(t + 1);
      check_lr(target.opt->lr(), lr[t], at + " lr");
      CHECK(sched.get_last_lr() == target.opt->lr());
      CHECK_MESSAGE(sched.best() == best[t], at << " best " << sched.best() << " vs " << best[t]);
      CHECK_MESSAGE(sched.num_bad_epochs() == static_cast<std::int64_t>(bad[t]), at);
      CHECK_MESSAGE(sched.cooldown_counter() == static_cast<std::int64_t>(cool[t]), at);
      CHECK(sched.last_epoch() == static_cast<std::int64_t>(t + 1));
    }
    CHECK_MESSAGE(reductions > 0, c << "never reduced the lr");
  }
}

TEST_CASE("schedulers resumed from their state_dict continue bit-identically") {
  for (const auto& sc : sched_cases()) {
    const std::string name = sc.name;
    const auto& make = sc.make;
    SchedTarget<double> a(0.1), b(0.1), c(0.7);
    auto straight = make(*a.opt);
    auto first = make(*b.opt);
    for (int t = 0; t < 17; ++t) {
      straight->step();
      first->step();
    }
    const StateDict opt_sd = b.opt->state_dict();
    const StateDict sd = first->state_dict();
    // a fresh optimizer and scheduler, built with another lr: both states restore everything
    auto resumed = make(*c.opt);
    c.opt->load_state_dict(opt_sd);
    resumed->load_state_dict(sd);
    CHECK(resumed->state_dict().keys() == sd.keys());
    for (int t = 17; t < 45; ++t) {
      straight->step();
      resumed->step();
      CHECK_MESSAGE(a.opt->lr() == c.opt->lr(), name << " step " << t + 1);
    }
    CHECK(resumed->last_epoch() == straight->last_epoch());
    CHECK(resumed->base_lr() == 0.1);
  }
  // ReduceLROnPlateau, interrupted in a cooldown
  SchedTarget<double> a(0.1), b(0.1), c(0.5);
  const auto o = optim::ReduceLROnPlateauOptions().patience(1).cooldown(2).factor(0.5);
  optim::ReduceLROnPlateau straight(*a.opt, o), first(*b.opt, o);
  std::vector<double> metric{1, 0.9, 0.95, 0.95, 0.96, 0.97, 0.85, 0.9, 0.91, 0.92, 0.93, 0.8, 0.81, 0.82, 0.83};
  for (std::size_t t = 0; t < 5; ++t) {
    straight.step(metric[t]);
    first.step(metric[t]);
  }
  CHECK(first.in_cooldown());
  optim::ReduceLROnPlateau resumed(*c.opt, optim::ReduceLROnPlateauOptions().mode(optim::PlateauMode::max));
  c.opt->load_state_dict(b.opt->state_dict());
  resumed.load_state_dict(first.state_dict());
  CHECK(resumed.options().mode() == optim::PlateauMode::min);
  CHECK(resumed.options().cooldown() == 2);
  for (std::size_t t = 5; t < metric.size(); ++t) {
    straight.step(metric[t]);
    resumed.step(metric[t]);
    CHECK(a.opt->lr() == c.opt->lr());
    CHECK(straight.best() == resumed.best());
  }
  CHECK(a.opt->lr() < 0.05);
}

TEST_CASE("schedulers share the optimizer's initial_lr, as torch's group['initial_lr']") {
  SchedTarget<double> t(0.2);
  optim::StepLR first(*t.opt, optim::StepLROptions(1).gamma(0.5));
  first.step();
  CHECK(t.opt->lr() == 0.1);
  CHECK(t.opt->initial_lr().value() == 0.2);
  optim::ExponentialLR second(*t.opt, optim::ExponentialLROptions(0.5));
  CHECK(second.base_lr() == 0.2);  // from initial_lr, not the current lr
  second.step(2);
  CHECK(t.opt->lr() == 0.05);
  CHECK(t.opt->state_dict().at("param_groups.0.initial_lr").data[0] == 0.2);
}

TEST_CASE("schedulers reject bad options and state dicts") {
  using namespace optim;
  SchedTarget<double> t(0.1);
  CHECK_THROWS_WITH_AS(StepLR(*t.opt, StepLROptions(0)), doctest::Contains("mmnet::optim::StepLR: step_size"), value_error);
  CHECK_THROWS_AS(StepLR(*t.opt, StepLROptions(3).gamma(-0.1)), value_error);
  CHECK_THROWS_WITH_AS(ExponentialLR(*t.opt, ExponentialLROptions(0)), doctest::Contains("gamma"), value_error);
  CHECK_THROWS_AS(ExponentialLR(*t.opt, ExponentialLROptions(NAN)), value_error);
  CHECK_THROWS_WITH_AS(CosineAnnealingLR(*t.opt, CosineAnnealingLROptions(0)), doctest::Contains("T_max"), value_error);
  CHECK_THROWS_AS(CosineAnnealingLR(*t.opt, CosineAnnealingLROptions(5).eta_min(-1)), value_error);
  CHECK_THROWS_WITH_AS(PolyLR(*t.opt, PolyLROptions(-3)), doctest::Contains("total_iters"), value_error);
  CHECK_THROWS_AS(PolyLR(*t.opt, PolyLROptions(3).power(0)), value_error);
  using R = ReduceLROnPlateauOptions;
  CHECK_THROWS_WITH_AS(ReduceLROnPlateau(*t.opt, R().factor(1.0)), doctest::Contains("factor"), value_error);
  CHECK_THROWS_AS(ReduceLROnPlateau(*t.opt, R().patience(-1)), value_error);
  CHECK_THROWS_AS(ReduceLROnPlateau(*t.opt, R().cooldown(-1)), value_error);
  CHECK_THROWS_AS(ReduceLROnPlateau(*t.opt, R().threshold(-1e-4)), value_error);
  CHECK_THROWS_AS(ReduceLROnPlateau(*t.opt, R().min_lr(-1)), value_error);
  CHECK_THROWS_AS(ReduceLROnPlateau(*t.opt, R().eps(NAN)), value_error);
  CHECK(t.opt->lr() == 0.1);

  StepLR step(*t.opt, StepLROptions(3));
  CHECK_THROWS_WITH_AS(step.step(-1), doctest::Contains("epoch"), value_error);
  step.step();
  const StateDict before = step.state_dict();
  CosineAnnealingLR cosine(*t.opt, CosineAnnealingLROptions(4));
  CHECK_THROWS_WITH_AS(step.load_state_dict(cosine.state_dict()), doctest::Contains("unexpected keys"), state_dict_error);
  StateDict bad = before;
  bad.insert("step_size", HostArray{DType::i64, {}, {0}});
  CHECK_THROWS_WITH_AS(step.load_state_dict(bad), doctest::Contains("step_size"), state_dict_error);
  bad = before;
  bad.insert("base_lrs", HostArray{DType::f64, {2}, {0.1, 0.2}});
  CHECK_THROWS_WITH_AS(step.load_state_dict(bad), doctest::Contains("one parameter group"), state_dict_error);
  bad = before;
  bad.insert("last_epoch", HostArray{DType::f64, {}, {2.5}});
  CHECK_THROWS_WITH_AS(step.load_state_dict(bad), doctest::Contains("expected an integer"), state_dict_error);
  CHECK(step.state_dict().keys() == before.keys());
  CHECK(step.last_epoch() == 1);

  ReduceLROnPlateau plateau(*t.opt);
  StateDict p = plateau.state_dict();
  p.insert("mode", HostArray{DType::i64, {}, {2}});
  CHECK_THROWS_WITH_AS(plateau.load_state_dict(p), doctest::Contains("mode"), state_dict_error);
  CHECK_THROWS_AS(plateau.load_state_dict(before), state_dict_error);
  CHECK(plateau.last_epoch() == 0);
}
