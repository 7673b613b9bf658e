// AdamW: five steps against torch.optim.AdamW 1.13 (tests/reference/adamw_ref.py) with the default decay,
// strong decay, no decay and AMSGrad; a frozen parameter (neither decayed nor updated) and one whose own step
// count starts at step 3; torch's state_dict() after the last step; options and bad input.
#include <mmnet/optim/adamw.hpp>

#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
std::vector<Parameter<T, Backend>> adamw_fixture_params(const Fixture& fx, std::vector<int>& active_from) {
  std::vector<Parameter<T, Backend>> ps;
  active_from.clear();
  for (int j = 0; fx.has("param" + std::to_string(j) + "/initial"); ++j) {
    const std::string pj = "param" + std::to_string(j) + "/";
    Parameter<T, Backend> p;
    p.value = fx.tensor<T>(pj + "initial");
    p.grad = Tensor<T, Backend>(p.value.shape());
    ps.push_back(p);
    active_from.push_back(static_cast<int>(fx.scalar(pj + "active_from")));
  }
  return ps;
}

template <class T>
std::vector<Parameter<T, Backend>*> adamw_pointers(std::vector<Parameter<T, Backend>>& ps) {
  std::vector<Parameter<T, Backend>*> out;
  for (auto& p : ps) out.push_back(&p);
  return out;
}

// Every entry of torch's flattened optimizer.state_dict() (prefix "<case>/torch_state/") is in ours with the
// same shape, kind and (within tolerance) value; ours has nothing else but mmnet's step_count.
template <class T>
void adamw_check_state_vs_torch(const StateDict& ours, const Fixture& fx, const std::string& prefix) {
  std::size_t n = 0;
  for (const auto& entry : fx.all()) {
    if (entry.first.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string key = entry.first.substr(prefix.size());
    const HostArray& ref = entry.second;
    const HostArray* a = ours.find(key);
    REQUIRE_MESSAGE(a != nullptr, "state_dict lacks torch's " << key);
    CHECK_MESSAGE(a->shape == ref.shape, key);
    CHECK_MESSAGE((a->dtype == DType::i64) == (ref.dtype == DType::i64), key);
    const double err = relative_error(a->data, ref.data);
    ErrorStats::get().record(std::is_same_v<T, double>, err, "adamw state " + key);
    CHECK_MESSAGE(err <= tol_output<T>(), key << ": relative error " << err);
    ++n;
  }
  CHECK(n > 0);
  for (const auto& entry : ours)
    if (entry.first != "step_count") CHECK_MESSAGE(fx.has(prefix + entry.first), "not in torch's state: " << entry.first);
}

}  // namespace

TEST_CASE_TEMPLATE("AdamW matches torch.optim.AdamW step by step, and its state_dict", T, float, double) {
  Fixture fx("adamw");
  const int steps = static_cast<int>(fx.scalar("num_steps"));
  for (const char* name : {"default", "strong_decay", "no_decay", "amsgrad", "amsgrad_large_eps"}) {
    const std::string c = std::string(name) + "/";
    std::vector<int> active_from;
    auto ps = adamw_fixture_params<T>(fx, active_from);
    auto o = optim::AdamWOptions(fx.scalar(c + "lr"))
                 .betas({fx.scalar(c + "beta1"), fx.scalar(c + "beta2")})
                 .eps(fx.scalar(c + "eps"))
                 .amsgrad(fx.scalar(c + "amsgrad") != 0);
    if (std::string(name) != "default") o.weight_decay(fx.scalar(c + "weight_decay"));
    CHECK(o.weight_decay() == fx.scalar(c + "weight_decay"));  // the default is torch's 1e-2
    optim::AdamW<T, Backend> opt(adamw_pointers(ps), o);
    for (int t = 1; t <= steps; ++t) {
      for (std::size_t j = 0; j < ps.size(); ++j) {
        ps[j].grad.assign(fx.array("param" + std::to_string(j) + "/grad" + std::to_string(t)).data);
        ps[j].requires_grad = active_from[j] != 0 && t >= active_from[j];
      }
      opt.step();
      for (std::size_t j = 0; j < ps.size(); ++j) {
        const std::string key = c + "param" + std::to_string(j) + "/step" + std::to_string(t);
        check_close(ps[j].value, fx.array(key), tol_output<T>(), "adamw " + key);
      }
    }
    for (std::size_t j = 0; j < ps.size(); ++j) {
      if (active_from[j] != 0) continue;  // frozen: not even decayed
      const auto& init = fx.array("param" + std::to_string(j) + "/initial").data;
      const auto v = ps[j].value.to_vector();
      for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == static_cast<T>(init[i]));
    }
    adamw_check_state_vs_torch<T>(opt.state_dict(), fx, c + "torch_state/");
  }
}

TEST_CASE_TEMPLATE("AdamW decays decoupled from the gradient", T, float, double) {
  std::vector<Parameter<T, Backend>> ps(1);
  ps[0].reset({2, 3});
  ps[0].value.fill_(T(2));
  // A zero gradient: Adam's moments stay 0, so the step is exactly the decay w *= 1 - lr wd.
  optim::AdamW<T, Backend> opt(adamw_pointers(ps), optim::AdamWOptions(0.1).weight_decay(0.5));
  opt.step();
  for (auto v : ps[0].value.to_vector()) CHECK(v == doctest::Approx(2 * (1 - 0.05)).epsilon(1e-6));
  // Adam with the same weight decay adds it to the gradient instead: the normalised step is lr
  std::vector<Parameter<T, Backend>> qs(1);
  qs[0].reset({2, 3});
  qs[0].value.fill_(T(2));
  optim::Adam<T, Backend> adam(adamw_pointers(qs), optim::AdamOptions(0.1).weight_decay(0.5));
  adam.step();
  for (auto v : qs[0].value.to_vector()) CHECK(v == doctest::Approx(2 - 0.1).epsilon(1e-5));
}

TEST_CASE("AdamW rejects bad options and gradients") {
  using O = optim::AdamWOptions;
  std::vector<Parameter<double, Backend>> ps(1);
  ps[0].reset({3, 2});
  auto ptrs = adamw_pointers(ps);
  using AdamW = optim::AdamW<double, Backend>;
  CHECK(O().lr() == 1e-3);
  CHECK(O().weight_decay() == 1e-2);
  CHECK(O().betas() == std::pair<double, double>(0.9, 0.999));
  CHECK(O().eps() == 1e-8);
  CHECK_FALSE(O().amsgrad());
  CHECK_THROWS_WITH_AS(AdamW(ptrs, O(-1e-3)), doctest::Contains("mmnet::optim::AdamW"), value_error);
  CHECK_THROWS_WITH_AS(AdamW(ptrs, O().betas({1.0, 0.999})), doctest::Contains("betas[0]"), value_error);
  CHECK_THROWS_WITH_AS(AdamW(ptrs, O().betas({0.9, -0.5})), doctest::Contains("betas[1]"), value_error);
  CHECK_THROWS_AS(AdamW(ptrs, O().eps(-1e-8)), value_error);
  CHECK_THROWS_WITH_AS(AdamW(ptrs, O().weight_decay(-0.1)), doctest::Contains("weight_decay"), value_error);
  CHECK_THROWS_AS(AdamW(ptrs, O().weight_decay(INFINITY)), value_error);
  CHECK_THROWS_AS(AdamW({nullptr}, O()), value_error);
  AdamW opt(ptrs, O());
  ps[0].grad = Tensor<double, Backend>({2, 3});
  CHECK_THROWS_AS(opt.step(), shape_error);
}
