// Optimizer state dicts (optim/optimizer.hpp): the flattened names and values equal torch's
// optimizer.state_dict() for SGD and Adam (fixtures sgd / adam, written by sgd_ref.py and adam_ref.py); a run
// interrupted after 3 steps, its state loaded into fresh objects and continued, is bit-identical to a straight
// run (SGD, Adam, AdamW); hyperparameters are restored; bad state dicts are rejected whole, changing nothing.
#include <mmnet/optim/adam.hpp>
#include <mmnet/optim/adamw.hpp>
#include <mmnet/optim/sgd.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
struct StateProblem {
  std::vector<Parameter<T, Backend>> ps;
  std::vector<int> active_from;
  std::vector<Parameter<T, Backend>*> ptrs() {
    std::vector<Parameter<T, Backend>*> out;
    for (auto& p : ps) out.push_back(&p);
    return out;
  }
  // Sets the grads of fixture step t (1-based) and freezes the parameters torch sees with grad None.
  void set_grads(const Fixture& fx, int t) {
    for (std::size_t j = 0; j < ps.size(); ++j) {
      ps[j].grad.assign(fx.array("param" + std::to_string(j) + "/grad" + std::to_string(t)).data);
      ps[j].requires_grad = active_from[j] != 0 && t >= active_from[j];
    }
  }
};

template <class T>
StateProblem<T> state_problem(const Fixture& fx) {
  StateProblem<T> pr;
  for (int j = 0; fx.has("param" + std::to_string(j) + "/initial"); ++j) {
    const std::string pj = "param" + std::to_string(j) + "/";
    Parameter<T, Backend> p;
    p.value = fx.tensor<T>(pj + "initial");
    p.grad = Tensor<T, Backend>(p.value.shape());
    pr.ps.push_back(p);
    pr.active_from.push_back(static_cast<int>(fx.scalar(pj + "active_from")));
  }
  return pr;
}

template <class T>
void state_vs_torch(const StateDict& ours, const Fixture& fx, const std::string& prefix, const std::string& what) {
  std::size_t n = 0;
  for (const auto& entry : fx.all()) {
    if (entry.first.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string key = entry.first.substr(prefix.size());
    const HostArray& ref = entry.second;
    const HostArray* a = ours.find(key);
    REQUIRE_MESSAGE(a != nullptr, what << ": state_dict lacks torch's " << key);
    CHECK_MESSAGE(a->shape == ref.shape, what << " " << key);
    CHECK_MESSAGE((a->dtype == DType::i64) == (ref.dtype == DType::i64), what << " " << key);
    const double err = relative_error(a->data, ref.data);
    ErrorStats::get().record(std::is_same_v<T, double>, err, what + " state " + key);
    CHECK_MESSAGE(err <= tol_output<T>(), what << " " << key << ": relative error " << err);
    ++n;
  }
  CHECK(n > 0);
  for (const auto& entry : ours)
    if (entry.first != "step_count") CHECK_MESSAGE(fx.has(prefix + entry.first), what << ": not in torch's state: " << entry.first);
}

// Exact equality of two state dicts (names, order, dtypes, shapes, values).
void state_identical(const StateDict& a, const StateDict& b, const std::string& what) {
  CHECK_MESSAGE(a.keys() == b.keys(), what);
  for (const auto& entry : a) {
    const HostArray* o = b.find(entry.first);
    if (!o) continue;
    CHECK_MESSAGE(entry.second.dtype == o->dtype, what << " " << entry.first);
    CHECK_MESSAGE(entry.second.shape == o->shape, what << " " << entry.first);
    CHECK_MESSAGE(entry.second.data == o->data, what << " " << entry.first << " differs");
  }
}

template <class T>
void values_identical(StateProblem<T>& a, StateProblem<T>& b, const std::string& what) {
  for (std::size_t j = 0; j < a.ps.size(); ++j)
    CHECK_MESSAGE(a.ps[j].value.to_vector() == b.ps[j].value.to_vector(), what << ": parameter " << j << " differs");
}


// Straight 5 steps vs 3 steps, state_dict, fresh parameters (copied values) and a fresh optimizer built with
// different hyperparameters, load_state_dict, 2 more steps: parameters and state bit-identical.
template <class T, class Make>
void check_resume(const Fixture& fx, Make make, const std::string& what) {
  const int steps = static_cast<int>(fx.scalar("num_steps"));
  auto straight = state_problem<T>(fx);
  auto opt = make(straight.ptrs(), false);
  for (int t = 1; t <= steps; ++t) {
    straight.set_grads(fx, t);
    opt->step();
  }

  auto first = state_problem<T>(fx);
  auto opt1 = make(first.ptrs(), false);
  for (int t = 1; t <= 3; ++t) {
    first.set_grads(fx, t);
    opt1->step();
  }
  const StateDict saved = opt1->state_dict();
  auto second = state_problem<T>(fx);
  for (std::size_t j = 0; j < second.ps.size(); ++j) second.ps[j].value.assign(first.ps[j].value.to_vector());
  auto opt2 = make(second.ptrs(), true);  // other hyperparameters: load_state_dict must restore them
  opt2->load_state_dict(saved);
  state_identical(opt2->state_dict(), saved, what + " reloaded");
  for (int t = 4; t <= steps; ++t) {
    second.set_grads(fx, t);
    opt2->step();
  }
  values_identical(straight, second, what);
  state_identical(opt->state_dict(), opt2->state_dict(), what + " final state");
  CHECK(opt2->step_count() == steps);
  CHECK(opt2->lr() == opt->lr());
}

}  // namespace

TEST_CASE_TEMPLATE("SGD and Adam state_dicts equal torch's optimizer.state_dict()", T, float, double) {
  {
    Fixture fx("sgd");
    const int steps = static_cast<int>(fx.scalar("num_steps"));
    for (const char* name : {"plain", "momentum", "dampening", "nesterov", "weight_decay", "momentum_weight_decay",
                             "nesterov_weight_decay"}) {
      const std::string c = std::string(name) + "/";
      auto pr = state_problem<T>(fx);
      optim::SGD<T, Backend> opt(pr.ptrs(), optim::SGDOptions(fx.scalar(c + "lr"))
                                                .momentum(fx.scalar(c + "momentum"))
                                                .dampening(fx.scalar(c + "dampening"))
                                                .nesterov(fx.scalar(c + "nesterov") != 0)
                                                .weight_decay(fx.scalar(c + "weight_decay")));
      for (int t = 1; t <= steps; ++t) {
        pr.set_grads(fx, t);
        opt.step();
      }
      state_vs_torch<T>(opt.state_dict(), fx, c + "torch_state/", "sgd " + std::string(name));
    }
  }
  {
    Fixture fx("adam");
    const int steps = static_cast<int>(fx.scalar("num_steps"));
    for (const char* name : {"default", "large_lr", "weight_decay", "amsgrad", "amsgrad_fast_beta2",
                             "amsgrad_weight_decay"}) {
      const std::string c = std::string(name) + "/";
      auto pr = state_problem<T>(fx);
      optim::Adam<T, Backend> opt(pr.ptrs(), optim::AdamOptions(fx.scalar(c + "lr"))
                                                 .betas({fx.scalar(c + "beta1"), fx.scalar(c + "beta2")})
                                                 .eps(fx.scalar(c + "eps"))
                                                 .weight_decay(fx.scalar(c + "weight_decay"))
                                                 .amsgrad(fx.scalar(c + "amsgrad") != 0));
      for (int t = 1; t <= steps; ++t) {
        pr.set_grads(fx, t);
        opt.step();
      }
      const StateDict sd = opt.state_dict();
      state_vs_torch<T>(sd, fx, c + "torch_state/", "adam " + std::string(name));
      CHECK(sd.at("state.0.exp_avg").dtype == (std::is_same_v<T, float> ? DType::f32 : DType::f64));
      CHECK(sd.at("state.3.step").data[0] == steps - 2);  // param3 starts at step 3
      CHECK_FALSE(sd.contains("state.2.step"));           // frozen: no state
    }
  }
}

TEST_CASE_TEMPLATE("an optimizer resumed from its state_dict continues bit-identically", T, float, double) {
  using P = std::vector<Parameter<T, Backend>*>;
  {
    Fixture fx("sgd");
    check_resume<T>(
        fx,
        [](P ps, bool other) -> std::unique_ptr<optim::OptimizerBase> {
          auto o = other ? optim::SGDOptions(1.0) : optim::SGDOptions(0.03).momentum(0.9).nesterov(true).weight_decay(0.02);
          return std::make_unique<optim::SGD<T, Backend>>(ps, o);
        },
        "sgd nesterov");
    check_resume<T>(
        fx,
        [](P ps, bool other) -> std::unique_ptr<optim::OptimizerBase> {
          auto o = other ? optim::SGDOptions(0.5).momentum(0.1) : optim::SGDOptions(0.05).momentum(0.8).dampening(0.3);
          return std::make_unique<optim::SGD<T, Backend>>(ps, o);
        },
        "sgd dampening");
  }
  {
    Fixture fx("adam");
    check_resume<T>(
        fx,
        [](P ps, bool other) -> std::unique_ptr<optim::OptimizerBase> {
          auto o = other ? optim::AdamOptions(0.3) : optim::AdamOptions(0.02).betas({0.5, 0.9}).weight_decay(0.05).amsgrad(true);
          return std::make_unique<optim::Adam<T, Backend>>(ps, o);
        },
        "adam amsgrad");
    check_resume<T>(
        fx,
        [](P ps, bool other) -> std::unique_ptr<optim::OptimizerBase> {
          auto o = other ? optim::AdamOptions(0.3).amsgrad(true) : optim::AdamOptions(0.01).eps(1e-6);
          return std::make_unique<optim::Adam<T, Backend>>(ps, o);
        },
        "adam");
  }
  {
    Fixture fx("adamw");
    check_resume<T>(
        fx,
        [](P ps, bool other) -> std::unique_ptr<optim::OptimizerBase> {
          auto o = other ? optim::AdamWOptions(1.0).weight_decay(0) : optim::AdamWOptions(0.03).weight_decay(0.1).amsgrad(true);
          return std::make_unique<optim::AdamW<T, Backend>>(ps, o);
        },
        "adamw amsgrad");
  }
}

TEST_CASE("load_state_dict restores the hyperparameters and converts float state to double") {
  std::vector<Parameter<float, Backend>> fps(2);
  fps[0].reset({3, 2});
  fps[1].reset({4});
  fps[0].grad.fill_(0.5f);
  fps[1].grad.fill_(-2.f);
  optim::Adam<float, Backend> fopt({&fps[0], &fps[1]}, optim::AdamOptions(0.05).betas({0.8, 0.95}).eps(1e-5).amsgrad(true));
  fopt.step();
  fopt.step();
  fopt.set_initial_lr(0.07);
  const StateDict sd = fopt.state_dict();
  CHECK(sd.at("param_groups.0.initial_lr").data[0] == 0.07);
  CHECK(sd.at("param_groups.0.params").dtype == DType::i64);
  CHECK(sd.at("param_groups.0.params").data == std::vector<double>{0, 1});
  CHECK(sd.at("step_count").data[0] == 2);

  std::vector<Parameter<double, Backend>> dps(2);
  dps[0].reset({3, 2});
  dps[1].reset({4});
  optim::Adam<double, Backend> dopt({&dps[0], &dps[1]}, optim::AdamOptions(1.0));
  dopt.load_state_dict(sd);
  CHECK(dopt.lr() == 0.05);
  CHECK(dopt.options().betas() == std::pair<double, double>(0.8, 0.95));
  CHECK(dopt.options().eps() == 1e-5);
  CHECK(dopt.options().amsgrad());
  CHECK(dopt.initial_lr().value() == 0.07);
  CHECK(dopt.step_count() == 2);
  CHECK(dopt.state(1).step == 2);
  const auto m = dopt.state(0).exp_avg.to_vector();
  const auto mf = fopt.state(0).exp_avg.to_vector();
  for (std::size_t i = 0; i < m.size(); ++i) CHECK(m[i] == static_cast<double>(mf[i]));
  CHECK(dopt.state_dict().at("state.0.exp_avg").dtype == DType::f64);
}

TEST_CASE("optimizer load_state_dict rejects a state dict that does not fit, and changes nothing") {
  std::vector<Parameter<double, Backend>> ps(2);
  ps[0].reset({3, 2});
  ps[1].reset({4});
  ps[0].grad.fill_(1.0);
  ps[1].grad.fill_(-1.0);
  std::vector<Parameter<double, Backend>*> ptrs{&ps[0], &ps[1]};
  optim::Adam<double, Backend> opt(ptrs, optim::AdamOptions(0.1));
  opt.step();
  const StateDict good = opt.state_dict();

  optim::Adam<double, Backend> target(ptrs, optim::AdamOptions(0.2).amsgrad(true));
  target.step();
  const StateDict before = target.state_dict();
  auto rejected = [&](const StateDict& bad, const char* needle) {
    CHECK_THROWS_WITH_AS(target.load_state_dict(bad), doctest::Contains(needle), state_dict_error);
    CHECK_THROWS_AS(target.check_state_dict(bad), state_dict_error);
    state_identical(target.state_dict(), before, std::string("after rejecting: ") + needle);
  };
  auto edited = [&](const std::function<void(StateDict&)>& edit) {
    StateDict sd = good;
    edit(sd);
    return sd;
  };
  rejected(edited([](StateDict& sd) { sd.insert("state.0.exp_avg", HostArray{DType::f64, {2, 3}, std::vector<double>(6)}); }),
           "state.0.exp_avg (expected shape (3, 2)");
  rejected(edited([](StateDict& sd) { sd.insert("state.7.exp_avg", HostArray{DType::f64, {4}, std::vector<double>(4)}); }),
           "unexpected keys (1): state.7.exp_avg");
  rejected(edited([](StateDict& sd) { sd.insert("param_groups.0.amsgrad", HostArray{DType::i64, {}, {1}}); }),
           "missing keys");  // amsgrad needs max_exp_avg_sq for every parameter with state
  rejected(edited([](StateDict& sd) { sd.insert("param_groups.0.betas", HostArray{DType::f64, {2}, {1.0, 0.9}}); }),
           "betas[0]");
  rejected(edited([](StateDict& sd) { sd.insert("param_groups.0.betas", HostArray{DType::f64, {3}, {0.9, 0.9, 0.9}}); }),
           "param_groups.0.betas (expected shape (2,)");
  rejected(edited([](StateDict& sd) { sd.insert("param_groups.0.params", HostArray{DType::i64, {3}, {0, 1, 2}}); }),
           "saved for 3 parameters; this optimizer has 2");
  rejected(edited([](StateDict& sd) { sd.insert("state.1.exp_avg_sq", HostArray{DType::i64, {4}, {0, 0, 0, 0}}); }),
           "got int64");
  rejected(edited([](StateDict& sd) { sd.insert("param_groups.0.lr", HostArray{DType::f64, {}, {-1.0}}); }),
           "param_groups.0.lr");
  rejected(edited([](StateDict& sd) { sd.insert("state.0.step", HostArray{DType::i64, {}, {0}}); }), "state.0.step");
  rejected(StateDict(), "missing keys");
  // SGD state into Adam
  std::vector<Parameter<double, Backend>> qs(2);
  qs[0].reset({3, 2});
  qs[1].reset({4});
  optim::SGD<double, Backend> sgd({&qs[0], &qs[1]}, optim::SGDOptions(0.1).momentum(0.9));
  qs[0].grad.fill_(1.0);
  sgd.step();
  rejected(sgd.state_dict(), "unexpected keys");
  CHECK_THROWS_WITH_AS(sgd.load_state_dict(good), doctest::Contains("mmnet::optim::SGD::load_state_dict"), state_dict_error);
  // an invalid SGD combination
  StateDict s = sgd.state_dict();
  s.insert("param_groups.0.nesterov", HostArray{DType::i64, {}, {1}});
  s.insert("param_groups.0.dampening", HostArray{DType::f64, {}, {0.5}});
  CHECK_THROWS_WITH_AS(sgd.load_state_dict(s), doctest::Contains("nesterov"), state_dict_error);
  // a wrong-shaped momentum buffer
  s = sgd.state_dict();
  s.insert("state.1.momentum_buffer", HostArray{DType::f64, {5}, std::vector<double>(5)});
  CHECK_THROWS_WITH_AS(sgd.load_state_dict(s), doctest::Contains("state.1.momentum_buffer (expected shape (4,)"),
                       state_dict_error);
}

TEST_CASE("an SGD state without momentum has no buffers; loading one clears them") {
  std::vector<Parameter<double, Backend>> ps(1);
  ps[0].reset({5});
  ps[0].grad.fill_(1.0);
  optim::SGD<double, Backend> plain({&ps[0]}, optim::SGDOptions(0.1));
  plain.step();
  const StateDict sd = plain.state_dict();
  CHECK_FALSE(sd.contains("state.0.momentum_buffer"));
  optim::SGD<double, Backend> mom({&ps[0]}, optim::SGDOptions(0.1).momentum(0.9));
  mom.step();
  CHECK(mom.momentum_buffer(0).defined());
  mom.load_state_dict(sd);
  CHECK_FALSE(mom.momentum_buffer(0).defined());
  CHECK(mom.options().momentum() == 0);
}
