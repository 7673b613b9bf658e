// FNWeightedDice: PyTorch fixtures (tests/reference/fn_weighted_dice_ref.py), central differences, bad input.
#include <mmnet/losses/fn_weighted_dice.hpp>
#include <mmnet/losses/soft_dice.hpp>

#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

TEST_CASE_TEMPLATE("FNWeightedDice matches PyTorch", T, float, double) {
  Fixture fx("fn_weighted_dice");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    losses::FNWeightedDice<T, Backend> loss(losses::FNWeightedDiceOptions(fx.scalar(c + "theta"))
                                                .smooth_nr(fx.scalar(c + "smooth_nr"))
                                                .smooth_dr(fx.scalar(c + "smooth_dr"))
                                                .batch(fx.scalar(c + "batch") != 0)
                                                .include_background(fx.scalar(c + "include_background") != 0));
    const T l = loss.forward(fx.tensor<T>(c + "p"), fx.tensor<T>(c + "g"));
    check_close_scalar(l, fx.scalar(c + "loss"), tol_output<T>(), "fn dice " + c + "loss");
    check_close(loss.backward(static_cast<T>(fx.scalar(c + "grad_loss"))), fx.array(c + "grad"), tol_grad<T>(),
                "fn dice " + c + "grad");
  }
}

TEST_CASE("FNWeightedDice passes the central-difference gradient check") {
  using O = losses::FNWeightedDiceOptions;
  struct Case {
    O o;
    Shape s;
    const char* what;
  };
  const Case cases[] = {{O(2.5), {2, 2, 3, 4, 5}, "theta 2.5, batch, foreground"},
                        {O(3.5).batch(false), {2, 3, 4, 3, 5}, "theta 3.5, per sample"},
                        {O(0.5).include_background(true).smooth_nr(1).smooth_dr(1), {3, 2, 7}, "theta 0.5, background"}};
  for (const auto& cs : cases) {
    INFO(cs.what);
    losses::FNWeightedDice<double, Backend> loss(cs.o);
    auto p = uniform_tensor<double>(cs.s, 0.05, 0.95, 41);
    const auto g = binary_tensor<double>(cs.s, 0.3, 42);
    loss.forward(p, g);
    const auto analytic = loss.backward().to_vector();
    central_difference_check(
        cs.what, p.numel(), analytic, [&] { return static_cast<double>(loss.forward(p, g)); },
        [&](index_t i, double h) { perturb_element(p, i, h); });
  }
}

TEST_CASE_TEMPLATE("FNWeightedDice: theta 1 is the plain soft Dice; theta > 1 penalises misses more", T, float, double) {
  const Shape s{2, 3, 4, 3, 5};
  const auto p = uniform_tensor<T>(s, 0.05, 0.95, 1);
  const auto g = binary_tensor<T>(s, 0.3, 2);
  losses::FNWeightedDice<T, Backend> fn1(losses::FNWeightedDiceOptions(1.0).include_background(false));
  losses::SoftDice<T, Backend> plain(
      losses::SoftDiceOptions().per_channel(true).include_background(false).smooth_nr(1e-5).smooth_dr(1e-5));
  check_close_scalar(fn1.forward(p, g), static_cast<double>(plain.forward(p, g)), tol_output<T>(), "theta 1 vs soft dice");
  const auto a = fn1.backward().to_vector(), b = plain.backward().to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));
  losses::FNWeightedDice<T, Backend> fn3(losses::FNWeightedDiceOptions(3.0));
  CHECK(fn3.forward(p, g) > fn1.forward(p, g));
  CHECK(fn1.dice_coefficients().size() == 2);
  // a perfect prediction has loss 0 for every theta
  CHECK(fn3.forward(g, g) == doctest::Approx(0.0));
}

TEST_CASE_TEMPLATE("FNWeightedDice rejects bad input", T, float, double) {
  using FND = losses::FNWeightedDice<T, Backend>;
  FND loss(losses::FNWeightedDiceOptions(2.0));
  const auto p = uniform_tensor<T>({2, 2, 3, 4}, 0.1, 0.9, 1);
  const auto g = binary_tensor<T>({2, 2, 3, 4}, 0.3, 2);
  try {
    loss.forward(p, binary_tensor<T>({2, 2, 4, 3}, 0.3, 2));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("mmnet::losses::FNWeightedDice") != std::string::npos);
    CHECK(m.find("(2, 2, 3, 4)") != std::string::npos);
    CHECK(m.find("(2, 2, 4, 3)") != std::string::npos);
  }
  CHECK_THROWS_AS(loss.forward(uniform_tensor<T>({2, 1, 3, 4}, 0.1, 0.9, 1), binary_tensor<T>({2, 1, 3, 4}, 0.3, 2)),
                  shape_error);  // one channel without the background
  CHECK_THROWS_AS(loss.forward(uniform_tensor<T>({8}, 0.1, 0.9, 1), binary_tensor<T>({8}, 0.3, 2)), shape_error);
  auto bad = p.clone();
  perturb_element(bad, 3, 1.5);  // logits, not probabilities
  CHECK_THROWS_WITH_AS(loss.forward(bad, g), doctest::Contains("element 3"), value_error);
  perturb_element(bad, 3, NAN);
  CHECK_THROWS_AS(loss.forward(bad, g), value_error);
  // no smoothing, nothing predicted, nothing labelled: 0 / 0
  FND raw(losses::FNWeightedDiceOptions(2.0).smooth_nr(0).smooth_dr(0));
  CHECK_THROWS_WITH_AS(raw.forward(TestTensor<T>({2, 2, 3, 4}), TestTensor<T>({2, 2, 3, 4})), doctest::Contains("loss"),
                       value_error);
  CHECK_THROWS_AS(FND(losses::FNWeightedDiceOptions(-1.0)), value_error);
  CHECK_THROWS_AS(FND(losses::FNWeightedDiceOptions(NAN)), value_error);
  CHECK_THROWS_AS(FND(losses::FNWeightedDiceOptions().smooth_dr(-1)), value_error);
  CHECK_THROWS_AS(FND().backward(), value_error);
}
