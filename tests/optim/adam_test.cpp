// Adam: five steps against torch.optim.Adam 1.13 (tests/reference/adam_ref.py) with default settings,
// weight decay and AMSGrad; a frozen parameter and one whose own step count starts at step 3.
#include <mmnet/optim/adam.hpp>

#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
std::vector<Parameter<T, Backend>> adam_fixture_params(const Fixture& fx, std::vector<int>& active_from) {
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
std::vector<Parameter<T, Backend>*> adam_pointers(std::vector<Parameter<T, Backend>>& ps) {
  std::vector<Parameter<T, Backend>*> out;
  for (auto& p : ps) out.push_back(&p);
  return out;
}

template <class T>
struct AdamTestModule : Module<T, Backend> {
  Parameter<T, Backend> weight, bias;
  void members(Members<T, Backend>& m) override { m("weight", weight)("bias", bias); }
};

}  // namespace

TEST_CASE_TEMPLATE("Adam matches torch.optim.Adam step by step", T, float, double) {
  Fixture fx("adam");
  const int steps = static_cast<int>(fx.scalar("num_steps"));
  for (const char* name : {"default", "large_lr", "weight_decay", "amsgrad", "amsgrad_fast_beta2",
                           "amsgrad_weight_decay"}) {
    const std::string c = std::string(name) + "/";
    std::vector<int> active_from;
    auto ps = adam_fixture_params<T>(fx, active_from);
    const auto o = optim::AdamOptions(fx.scalar(c + "lr"))
                       .betas({fx.scalar(c + "beta1"), fx.scalar(c + "beta2")})
                       .eps(fx.scalar(c + "eps"))
                       .weight_decay(fx.scalar(c + "weight_decay"))
                       .amsgrad(fx.scalar(c + "amsgrad") != 0);
    optim::Adam<T, Backend> opt(adam_pointers(ps), o);
    for (int t = 1; t <= steps; ++t) {
      for (std::size_t j = 0; j < ps.size(); ++j) {
        ps[j].grad.assign(fx.array("param" + std::to_string(j) + "/grad" + std::to_string(t)).data);
        ps[j].requires_grad = active_from[j] != 0 && t >= active_from[j];
      }
      opt.step();
      for (std::size_t j = 0; j < ps.size(); ++j) {
        const std::string key = c + "param" + std::to_string(j) + "/step" + std::to_string(t);
        check_close(ps[j].value, fx.array(key), tol_output<T>(), "adam " + key);
      }
    }
    CHECK(opt.step_count() == steps);
    for (std::size_t j = 0; j < ps.size(); ++j) {
      const auto& st = opt.state(j);
      if (active_from[j] == 0) {  // frozen: bit-identical, no state
        const auto& init = fx.array("param" + std::to_string(j) + "/initial").data;
        const auto v = ps[j].value.to_vector();
        for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == static_cast<T>(init[i]));
        CHECK(st.step == 0);
        CHECK_FALSE(st.exp_avg.defined());
      } else {
        CHECK(st.step == steps - active_from[j] + 1);
        CHECK(st.max_exp_avg_sq.defined() == o.amsgrad());
      }
    }
  }
}

TEST_CASE_TEMPLATE("Adam on a module: the first step moves every element by lr", T, float, double) {
  AdamTestModule<T> m;
  m.weight.reset({4, 3});
  m.bias.reset({4});
  m.weight.grad.assign(std::vector<double>{3, -2, 0.5, -1e-3, 7, 1, -1, 2, 4, -4, 0.25, 9});
  m.bias.grad.fill_(T(-5));
  optim::Adam<T, Backend> opt(m, optim::AdamOptions(0.01));
  opt.step();  // m_hat / sqrt(v_hat) = sign(g) at t = 1
  const auto w = m.weight.value.to_vector();
  const auto g = m.weight.grad.to_vector();
  for (std::size_t i = 0; i < w.size(); ++i) CHECK(w[i] == doctest::Approx(g[i] > 0 ? -0.01 : 0.01).epsilon(1e-4));
  for (auto b : m.bias.value.to_vector()) CHECK(b == doctest::Approx(0.01).epsilon(1e-6));
  opt.zero_grad();
  for (auto v : m.weight.grad.to_vector()) CHECK(v == T(0));
  opt.step();  // zero grad: m decays, so the parameters still move (as in PyTorch)
  CHECK(opt.state(0).step == 2);
  CHECK(m.bias.value.to_vector()[0] > T(0.01));
}

TEST_CASE("Adam rejects bad options and gradients") {
  using O = optim::AdamOptions;
  std::vector<Parameter<double, Backend>> ps(1);
  ps[0].reset({3, 2});
  auto ptrs = adam_pointers(ps);
  using Adam = optim::Adam<double, Backend>;
  CHECK_THROWS_WITH_AS(Adam(ptrs, O(-1e-3)), doctest::Contains("mmnet::optim::Adam"), value_error);
  CHECK_THROWS_WITH_AS(Adam(ptrs, O().betas({1.0, 0.999})), doctest::Contains("betas[0]"), value_error);
  CHECK_THROWS_AS(Adam(ptrs, O().betas({-0.1, 0.999})), value_error);
  CHECK_THROWS_WITH_AS(Adam(ptrs, O().betas({0.9, 1.0})), doctest::Contains("betas[1]"), value_error);
  CHECK_THROWS_AS(Adam(ptrs, O().eps(-1e-8)), value_error);
  CHECK_THROWS_AS(Adam(ptrs, O().weight_decay(-0.1)), value_error);
  CHECK_NOTHROW(Adam(ptrs, O(0).betas({0, 0}).eps(0)));
  Adam opt(ptrs, O());
  CHECK(opt.lr() == 1e-3);
  CHECK_THROWS_AS(opt.set_lr(-1), value_error);
  ps[0].grad = Tensor<double, Backend>({6});
  CHECK_THROWS_AS(opt.step(), shape_error);
}
