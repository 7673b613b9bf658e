// Gradient clipping (optim/clip_grad.hpp) against torch.nn.utils.clip_grad_norm_ / clip_grad_value_
// (tests/reference/clip_grad_ref.py): total norms and clipped gradients for p = 2, 1, 3.5, inf, clipping and
// not, all-zero gradients; a frozen parameter is neither counted nor changed; non-finite norms; bad options.
#include <mmnet/optim/clip_grad.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
struct ClipProblem {
  std::vector<Parameter<T, Backend>> ps;
  std::vector<Parameter<T, Backend>*> ptrs() {
    std::vector<Parameter<T, Backend>*> out;
    for (auto& p : ps) out.push_back(&p);
    return out;
  }
};

// The fixture's gradients; the frozen parameter also gets one (mmnet keeps a grad tensor for it), which
// clipping must ignore.
template <class T>
ClipProblem<T> clip_problem(const Fixture& fx, bool zero = false) {
  ClipProblem<T> pr;
  for (int j = 0; fx.has("grad" + std::to_string(j)); ++j) {
    Parameter<T, Backend> p;
    p.grad = fx.tensor<T>("grad" + std::to_string(j));
    p.value = Tensor<T, Backend>(p.grad.shape());
    p.requires_grad = fx.scalar("frozen" + std::to_string(j)) == 0;
    if (zero && p.requires_grad) p.grad.zero_();
    pr.ps.push_back(p);
  }
  return pr;
}

template <class T>
void check_grads(ClipProblem<T>& pr, const Fixture& fx, const std::string& c) {
  for (std::size_t j = 0; j < pr.ps.size(); ++j) {
    const std::string key = c + "grad" + std::to_string(j);
    if (!pr.ps[j].requires_grad) {  // frozen: untouched
      const auto& orig = fx.array("grad" + std::to_string(j)).data;
      const auto v = pr.ps[j].grad.to_vector();
      for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == static_cast<T>(orig[i]));
      CHECK_FALSE(fx.has(key));
      continue;
    }
    check_close(pr.ps[j].grad, fx.array(key), tol_output<T>(), key);
  }
}

}  // namespace

TEST_CASE_TEMPLATE("clip_grad_norm_ matches torch.nn.utils.clip_grad_norm_", T, float, double) {
  Fixture fx("clip_grad");
  for (const char* name : {"l2_clip", "l2_no_clip", "l2_nnunet", "l1_clip", "p3_5_clip", "inf_clip", "inf_no_clip",
                           "zeros"}) {
    const std::string c = std::string(name) + "/";
    auto pr = clip_problem<T>(fx, fx.scalar(c + "zero") != 0);
    const double total = optim::clip_grad_norm_(pr.ptrs(), fx.scalar(c + "max_norm"), fx.scalar(c + "norm_type"));
    const double expected = fx.scalar(c + "total_norm");
    if (expected == 0) CHECK(total == 0);
    else check_close_scalar(static_cast<T>(total), expected, tol_output<T>(), std::string(name) + " total norm");
    check_grads(pr, fx, c);
  }
}

TEST_CASE_TEMPLATE("clip_grad_value_ matches torch.nn.utils.clip_grad_value_", T, float, double) {
  Fixture fx("clip_grad");
  for (const char* name : {"value_0_25", "value_3"}) {
    const std::string c = std::string(name) + "/";
    auto pr = clip_problem<T>(fx);
    optim::clip_grad_value_(pr.ptrs(), fx.scalar(c + "clip_value"));
    check_grads(pr, fx, c);
  }
}

namespace {
template <class T>
struct ClipTestModule : Module<T, Backend> {
  Parameter<T, Backend> weight, bias;
  void members(Members<T, Backend>& m) override { m("weight", weight)("bias", bias); }
};
}  // namespace

TEST_CASE_TEMPLATE("clip_grad_norm_ on a module: hand-computed norms, frozen and large tensors", T, float, double) {
  ClipTestModule<T> m;
  m.weight.reset({2, 2});
  m.bias.reset({1});
  m.weight.grad.assign(std::vector<double>{3, 0, 0, 0});
  m.bias.grad.assign(std::vector<double>{4});
  // ||(3, 4)|| = 5 -> scaled by 1 / (5 + 1e-6)
  CHECK(optim::clip_grad_norm_(m, 1.0) == doctest::Approx(5.0));
  CHECK(m.weight.grad.to_vector()[0] == doctest::Approx(0.6).epsilon(1e-5));
  CHECK(m.bias.grad.to_vector()[0] == doctest::Approx(0.8).epsilon(1e-5));
  // frozen bias: only the weight counts
  m.bias.requires_grad = false;
  m.weight.grad.assign(std::vector<double>{0, -6, 8, 0});
  CHECK(optim::clip_grad_norm_(m, 20.0) == doctest::Approx(10.0));
  CHECK(m.weight.grad.to_vector()[2] == T(8));  // coefficient clamped to 1: unchanged
  CHECK(optim::clip_grad_norm_(m, 5.0, INFINITY) == doctest::Approx(8.0));
  CHECK(m.weight.grad.to_vector()[1] == doctest::Approx(-6 * 5 / (8 + 1e-6)).epsilon(1e-5));
  // no parameter with a gradient
  m.weight.requires_grad = false;
  CHECK(optim::clip_grad_norm_(m, 1.0) == 0.0);
  // a tensor larger than one reduction block, with its maximum in the last block
  std::vector<Parameter<T, Backend>> big(1);
  big[0].reset({3, 5000});
  std::vector<double> g(15000, 0.5);
  g[14999] = -7.0;
  big[0].grad.assign(g);
  std::vector<Parameter<T, Backend>*> bp{&big[0]};
  CHECK(optim::clip_grad_norm_(bp, 100.0, INFINITY) == doctest::Approx(7.0));
  const double l2 = std::sqrt(14999 * 0.25 + 49.0);
  CHECK(optim::clip_grad_norm_(bp, 100.0) == doctest::Approx(l2).epsilon(1e-6));
}

TEST_CASE("clip_grad_norm_ with non-finite gradients") {
  std::vector<Parameter<double, Backend>> ps(2);
  ps[0].reset({3});
  ps[1].reset({2});
  ps[0].grad.assign(std::vector<double>{1, NAN, 2});
  ps[1].grad.assign(std::vector<double>{1, 1});
  std::vector<Parameter<double, Backend>*> ptrs{&ps[0], &ps[1]};
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm_(ptrs, 1.0, 2.0, true), doctest::Contains("total norm"), value_error);
  CHECK(ps[1].grad.to_vector()[0] == 1.0);  // left unchanged by the error
  CHECK_THROWS_AS(optim::clip_grad_norm_(ptrs, 1.0, INFINITY, true), value_error);
  // torch without error_if_nonfinite: the norm is NaN and every gradient becomes NaN
  CHECK(std::isnan(optim::clip_grad_norm_(ptrs, 1.0)));
  CHECK(std::isnan(ps[1].grad.to_vector()[0]));
  ps[0].grad.assign(std::vector<double>{1, INFINITY, 2});
  ps[1].grad.assign(std::vector<double>{1, 1});
  CHECK(std::isinf(optim::clip_grad_norm_(ptrs, 1.0, INFINITY)));
  CHECK(ps[1].grad.to_vector()[0] == 0.0);  // coefficient 1 / inf
}

TEST_CASE("clip_grad_norm_ and clip_grad_value_ reject bad options") {
  std::vector<Parameter<double, Backend>> ps(1);
  ps[0].reset({3});
  std::vector<Parameter<double, Backend>*> ptrs{&ps[0]};
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm_(ptrs, -1.0), doctest::Contains("mmnet::optim::clip_grad_norm_: max_norm"),
                       value_error);
  CHECK_THROWS_AS(optim::clip_grad_norm_(ptrs, NAN), value_error);
  CHECK_THROWS_WITH_AS(optim::clip_grad_norm_(ptrs, 1.0, 0.0), doctest::Contains("norm_type"), value_error);
  CHECK_THROWS_AS(optim::clip_grad_norm_(ptrs, 1.0, -2.0), value_error);
  CHECK_THROWS_AS(optim::clip_grad_norm_(ptrs, 1.0, NAN), value_error);
  CHECK_THROWS_WITH_AS(optim::clip_grad_value_(ptrs, -0.5), doctest::Contains("clip_value"), value_error);
  CHECK_THROWS_AS(optim::clip_grad_value_(ptrs, NAN), value_error);
  ps[0].grad.assign(std::vector<double>{-1e30, 0.5, 1e30});
  optim::clip_grad_value_(ptrs, INFINITY);  // no-op, as torch
  CHECK(ps[0].grad.to_vector()[2] == 1e30);
}
