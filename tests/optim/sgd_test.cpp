// SGD: five steps against torch.optim.SGD (tests/reference/sgd_ref.py) for plain, momentum, dampening,
// nesterov and weight decay; a frozen parameter and one that starts late; options and bad input.
#include <mmnet/optim/sgd.hpp>

#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

// The fixture's parameters (param0..), a frozen one included. The vector is never resized, so the
// optimizer's pointers stay valid.
template <class T>
std::vector<Parameter<T, Backend>> sgd_fixture_params(const Fixture& fx, std::vector<int>& active_from) {
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
std::vector<Parameter<T, Backend>*> sgd_pointers(std::vector<Parameter<T, Backend>>& ps) {
  std::vector<Parameter<T, Backend>*> out;
  for (auto& p : ps) out.push_back(&p);
  return out;
}

template <class T>
struct SgdTestModule : Module<T, Backend> {
  Parameter<T, Backend> weight, bias;
  void members(Members<T, Backend>& m) override { m("weight", weight)("bias", bias); }
};

}  // namespace

TEST_CASE_TEMPLATE("SGD matches torch.optim.SGD step by step", T, float, double) {
  Fixture fx("sgd");
  const int steps = static_cast<int>(fx.scalar("num_steps"));
  for (const char* name : {"plain", "momentum", "dampening", "nesterov", "weight_decay", "momentum_weight_decay",
                           "nesterov_weight_decay"}) {
    const std::string c = std::string(name) + "/";
    std::vector<int> active_from;
    auto ps = sgd_fixture_params<T>(fx, active_from);
    const auto o = optim::SGDOptions(fx.scalar(c + "lr"))
                       .momentum(fx.scalar(c + "momentum"))
                       .dampening(fx.scalar(c + "dampening"))
                       .nesterov(fx.scalar(c + "nesterov") != 0)
                       .weight_decay(fx.scalar(c + "weight_decay"));
    optim::SGD<T, Backend> opt(sgd_pointers(ps), o);
    for (int t = 1; t <= steps; ++t) {
      for (std::size_t j = 0; j < ps.size(); ++j) {
        // Every parameter gets a gradient; those PyTorch sees with grad None are frozen here at this step.
        ps[j].grad.assign(fx.array("param" + std::to_string(j) + "/grad" + std::to_string(t)).data);
        ps[j].requires_grad = active_from[j] != 0 && t >= active_from[j];
      }
      opt.step();
      for (std::size_t j = 0; j < ps.size(); ++j) {
        const std::string key = c + "param" + std::to_string(j) + "/step" + std::to_string(t);
        check_close(ps[j].value, fx.array(key), tol_output<T>(), "sgd " + key);
      }
    }
    CHECK(opt.step_count() == steps);
    // the frozen parameter is bit-identical to its start and has no momentum buffer
    for (std::size_t j = 0; j < ps.size(); ++j) {
      if (active_from[j] != 0) continue;
      const auto& init = fx.array("param" + std::to_string(j) + "/initial").data;
      const auto v = ps[j].value.to_vector();
      for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == static_cast<T>(init[i]));
      CHECK_FALSE(opt.momentum_buffer(j).defined());
    }
  }
}

TEST_CASE_TEMPLATE("SGD on a module: hand-computed steps, zero_grad, set_lr", T, float, double) {
  SgdTestModule<T> m;
  m.weight.reset({2, 3});
  m.bias.reset({3});
  m.weight.value.fill_(T(1));
  m.bias.value.fill_(T(2));
  optim::SGD<T, Backend> opt(m, optim::SGDOptions(0.5).momentum(0.5));
  CHECK(opt.parameters().size() == 2);
  m.weight.grad.fill_(T(2));
  m.bias.grad.fill_(T(-1));
  opt.step();  // buf = g: w = 1 - 0.5 * 2 = 0, b = 2 + 0.5 = 2.5
  CHECK(m.weight.value.to_vector()[4] == doctest::Approx(0.0));
  CHECK(m.bias.value.to_vector()[1] == doctest::Approx(2.5));
  opt.set_lr(0.25);
  opt.step();  // buf = 0.5 * 2 + 2 = 3: w = 0 - 0.75; b: buf = -1.5, b = 2.5 + 0.375
  CHECK(m.weight.value.to_vector()[0] == doctest::Approx(-0.75));
  CHECK(m.bias.value.to_vector()[2] == doctest::Approx(2.875));
  CHECK(opt.lr() == 0.25);
  CHECK(opt.step_count() == 2);
  opt.zero_grad();
  for (auto v : m.weight.grad.to_vector()) CHECK(v == T(0));
  for (auto v : m.bias.grad.to_vector()) CHECK(v == T(0));
  m.freeze();
  m.weight.grad.fill_(T(100));
  opt.step();  // frozen: nothing moves
  CHECK(m.weight.value.to_vector()[0] == doctest::Approx(-0.75));
  // moving keeps the momentum buffers and the step count
  m.unfreeze();
  m.weight.grad.fill_(T(0));
  optim::SGD<T, Backend> moved = std::move(opt);
  moved.step();  // buf = 0.5 * 3 + 0 = 1.5: w = -0.75 - 0.25 * 1.5
  CHECK(m.weight.value.to_vector()[0] == doctest::Approx(-1.125));
  CHECK(moved.step_count() == 4);
}

TEST_CASE("SGD rejects bad options and gradients") {
  using O = optim::SGDOptions;
  std::vector<Parameter<double, Backend>> ps(1);
  ps[0].reset({3, 2});
  auto ptrs = sgd_pointers(ps);
  using SGD = optim::SGD<double, Backend>;
  CHECK_THROWS_WITH_AS(SGD(ptrs, O(-0.1)), doctest::Contains("mmnet::optim::SGD"), value_error);
  CHECK_THROWS_AS(SGD(ptrs, O(NAN)), value_error);
  CHECK_THROWS_AS(SGD(ptrs, O(0.1).momentum(-0.9)), value_error);
  CHECK_THROWS_AS(SGD(ptrs, O(0.1).weight_decay(-1e-4)), value_error);
  CHECK_THROWS_WITH_AS(SGD(ptrs, O(0.1).nesterov(true)), doctest::Contains("nesterov"), value_error);
  CHECK_THROWS_AS(SGD(ptrs, O(0.1).momentum(0.9).dampening(0.1).nesterov(true)), value_error);
  CHECK_THROWS_AS(SGD({nullptr}, O(0.1)), value_error);
  SGD opt(ptrs, O(0.1));
  CHECK_THROWS_AS(opt.set_lr(-1), value_error);
  CHECK(opt.lr() == 0.1);
  ps[0].grad = Tensor<double, Backend>({2, 3});  // a grad of the wrong shape
  CHECK_THROWS_AS(opt.step(), shape_error);
  ps[0].grad = Tensor<double, Backend>();  // no grad at all: skipped, as PyTorch's None
  const auto before = ps[0].value.to_vector();
  opt.step();
  CHECK(ps[0].value.to_vector() == before);
}
