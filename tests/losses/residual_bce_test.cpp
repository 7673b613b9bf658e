// ResidualBCE (ConResNet §3.3): PyTorch fixtures (tests/reference/residual_bce_ref.py), central differences,
// bad input.
#include <mmnet/losses/residual_bce.hpp>

#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE_TEMPLATE("ResidualBCE matches PyTorch", T, float, double) {
  Fixture fx("residual_bce");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    if (std::is_same_v<T, float> && fx.scalar(c + "double_only") != 0) continue;  // inputs on the clamp bounds
    losses::ResidualBCE<T, Backend> loss(losses::ResidualBCEOptions()
                                             .on_logits(fx.scalar(c + "on_logits") != 0)
                                             .pos_weight_scope(fx.scalar(c + "per_sample") != 0 ? losses::PosWeightScope::sample
                                                                                                : losses::PosWeightScope::batch));
    const T l = loss.forward(fx.tensor<T>(c + "input"), fx.tensor<T>(c + "target"));
    check_close_scalar(l, fx.scalar(c + "loss"), tol_output<T>(), "residual bce " + c + "loss");
    check_close(loss.backward(static_cast<T>(fx.scalar(c + "grad_loss"))), fx.array(c + "grad"), tol_grad<T>(),
                "residual bce " + c + "grad");
  }
}

TEST_CASE("ResidualBCE passes the central-difference gradient check (away from the clamp bounds)") {
  for (bool on_logits : {true, false})
    for (auto scope : {losses::PosWeightScope::batch, losses::PosWeightScope::sample}) {
      INFO("on_logits " << on_logits << ", per sample " << (scope == losses::PosWeightScope::sample));
      losses::ResidualBCE<double, Backend> loss(losses::ResidualBCEOptions().on_logits(on_logits).pos_weight_scope(scope));
      const Shape s{2, 3, 3, 4, 5};
      // logits mode: values in (0.05, 0.95) and a few far outside (zero gradient); sigmoid mode: any logit
      auto p = on_logits ? uniform_tensor<double>(s, 0.05, 0.95, 61) : randn<double>(s, 61);
      if (on_logits) {
        perturb_element(p, 4, 2.0);
        perturb_element(p, 9, -1.5);
      }
      const auto t = binary_tensor<double>(s, 0.2, 62);
      loss.forward(p, t);
      const auto analytic = loss.backward().to_vector();
      if (on_logits) CHECK(analytic[4] == 0.0);
      central_difference_check(
          "residual bce", p.numel(), analytic, [&] { return static_cast<double>(loss.forward(p, t)); },
          [&](index_t i, double h) { perturb_element(p, i, h); });
    }
}

TEST_CASE_TEMPLATE("ResidualBCE: the positive weight is ln(S / (count + 1)), over the batch or per sample", T, float, double) {
  const Shape s{2, 2, 2, 3, 4};  // S = 24
  auto t = TestTensor<T>({2, 2, 2, 3, 4});
  std::vector<T> v(48 * 2, T(0));
  for (int i = 0; i < 5; ++i) v[static_cast<std::size_t>(i)] = 1;            // n 0, k 0: 5 positives
  for (int i = 0; i < 2; ++i) v[static_cast<std::size_t>(72 + i)] = 1;       // n 1, k 1: 2 positives
  t.assign(v);
  const auto p = uniform_tensor<T>(s, 0.1, 0.9, 1);
  losses::ResidualBCE<T, Backend> batch, sample(losses::ResidualBCEOptions().pos_weight_scope(losses::PosWeightScope::sample));
  batch.forward(p, t);
  REQUIRE(batch.pos_weights().size() == 2);
  CHECK(batch.pos_weights()[0] == doctest::Approx(std::log(24.0 / 6)));
  CHECK(batch.pos_weights()[1] == doctest::Approx(std::log(24.0 / 3)));
  sample.forward(p, t);
  REQUIRE(sample.pos_weights().size() == 4);
  CHECK(sample.pos_weights()[0] == doctest::Approx(std::log(24.0 / 6)));
  CHECK(sample.pos_weights()[1] == doctest::Approx(std::log(24.0)));
  CHECK(sample.pos_weights()[2] == doctest::Approx(std::log(24.0)));
  CHECK(sample.pos_weights()[3] == doctest::Approx(std::log(24.0 / 3)));
}

TEST_CASE_TEMPLATE("ResidualBCE rejects bad input", T, float, double) {
  using RB = losses::ResidualBCE<T, Backend>;
  RB loss;
  const auto p = uniform_tensor<T>({2, 3, 4, 5}, 0.1, 0.9, 1);
  const auto t = binary_tensor<T>({2, 3, 4, 5}, 0.3, 2);
  try {
    loss.forward(p, binary_tensor<T>({2, 3, 5, 4}, 0.3, 2));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("mmnet::losses::ResidualBCE") != std::string::npos);
    CHECK(m.find("(2, 3, 4, 5)") != std::string::npos);
    CHECK(m.find("(2, 3, 5, 4)") != std::string::npos);
  }
  CHECK_THROWS_AS(loss.forward(uniform_tensor<T>({2, 3}, 0.1, 0.9, 1), binary_tensor<T>({2, 3}, 0.3, 2)), shape_error);
  auto bad = p.clone();
  perturb_element(bad, 2, NAN);
  CHECK_THROWS_AS(loss.forward(bad, t), value_error);
  auto bt = t.clone();
  perturb_element(bt, 2, 3.0);
  CHECK_THROWS_WITH_AS(loss.forward(p, bt), doctest::Contains("[0, 1]"), value_error);
  CHECK_THROWS_AS(RB().backward(), value_error);
}
