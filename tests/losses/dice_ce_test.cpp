// DiceCE: PyTorch fixtures after nnU-Net's DC_and_CE_loss (tests/reference/dice_ce_ref.py), central differences,
// bad input.
#include <mmnet/core/parallel.hpp>
#include <mmnet/losses/cross_entropy.hpp>
#include <mmnet/losses/dice_ce.hpp>
#include <mmnet/losses/fn_weighted_dice.hpp>

#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
TestTensor<T> class_labels(const Shape& s, index_t classes, std::uint64_t seed) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<T>(g.integer(static_cast<std::uint64_t>(classes)));
  return TestTensor<T>::from_vector(s, v);
}

losses::DiceCEOptions fixture_options(const Fixture& fx, const std::string& c) {
  losses::DiceCEOptions o;
  o.smooth_nr(fx.scalar(c + "smooth_nr"))
      .smooth_dr(fx.scalar(c + "smooth_dr"))
      .fn_weight(fx.scalar(c + "theta"))
      .batch(fx.scalar(c + "batch") != 0)
      .include_background(fx.scalar(c + "include_background") != 0)
      .dice_term(fx.scalar(c + "negative") != 0 ? losses::DiceTerm::negative : losses::DiceTerm::one_minus)
      .weight_ce(fx.scalar(c + "weight_ce"))
      .weight_dice(fx.scalar(c + "weight_dice"));
  if (fx.scalar(c + "has_ce_weight") != 0) o.ce_weight(fx.array(c + "ce_weight").data);
  if (fx.scalar(c + "has_ignore") != 0) o.ignore_index(static_cast<index_t>(fx.scalar(c + "ignore_index")));
  return o;
}

}  // namespace

TEST_CASE_TEMPLATE("DiceCE matches PyTorch (nnU-Net DC_and_CE_loss, HMRNet fn-Dice + CE)", T, float, double) {
  Fixture fx("dice_ce");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    losses::DiceCE<T, Backend> loss(fixture_options(fx, c));
    const T l = loss.forward(fx.tensor<T>(c + "input"), fx.tensor<T>(c + "labels"));
    check_close_scalar(l, fx.scalar(c + "loss"), tol_output<T>(), "dice ce " + c + "loss");
    check_close(loss.backward(static_cast<T>(fx.scalar(c + "grad_loss"))), fx.array(c + "grad"), tol_grad<T>(),
                "dice ce " + c + "grad");
  }
}

TEST_CASE("DiceCE passes the central-difference gradient check") {
  using O = losses::DiceCEOptions;
  struct Case {
    O o;
    Shape s, ls;
    const char* what;
  };
  const Case cases[] = {
      {O::nnunet(), {2, 3, 3, 4, 5}, {2, 1, 3, 4, 5}, "nnU-Net"},
      {O::hmrnet(2.5), {2, 2, 4, 3, 5}, {2, 4, 3, 5}, "HMRNet theta 2.5"},
      {O().batch(false).include_background(true).dice_term(losses::DiceTerm::one_minus).ce_weight({0.5, 1, 2, 1}),
       {2, 4, 3, 5}, {2, 1, 3, 5}, "per sample, background, CE weights"},
      {O::nnunet().ignore_index(9).weight_ce(0.3).weight_dice(1.7), {2, 3, 4, 5}, {2, 1, 4, 5}, "ignore_index"},
  };
  for (const auto& cs : cases) {
    INFO(cs.what);
    losses::DiceCE<double, Backend> loss(cs.o);
    auto x = randn<double>(cs.s, 51);
    scale_(x, 1.5);
    auto y = class_labels<double>(cs.ls, cs.s[1], 52);
    if (cs.o.ignore_index()) {
      perturb_element(y, 1, 9.0 - y.to_vector()[1]);
      perturb_element(y, 6, 9.0 - y.to_vector()[6]);
    }
    loss.forward(x, y);
    const auto analytic = loss.backward().to_vector();
    central_difference_check(
        cs.what, x.numel(), analytic, [&] { return static_cast<double>(loss.forward(x, y)); },
        [&](index_t i, double h) { perturb_element(x, i, h); });
  }
}

TEST_CASE_TEMPLATE("DiceCE: the terms equal CrossEntropy and FNWeightedDice on softmax probabilities", T, float, double) {
  const Shape s{2, 3, 3, 4, 5};
  const auto x = randn<T>(s, 3);
  const auto y = class_labels<T>({2, 1, 3, 4, 5}, 3, 4);
  losses::DiceCE<T, Backend> dce(losses::DiceCEOptions::hmrnet(2.0));
  const T l = dce.forward(x, y);
  losses::CrossEntropy<T, Backend> ce;
  const double ce_value = static_cast<double>(ce.forward(x, y));
  check_close_scalar(static_cast<T>(dce.ce_term()), ce_value, tol_output<T>(), "ce term");
  // the Dice term on softmax probabilities with one-hot targets
  const auto xv = x.to_vector();
  std::vector<T> pv(xv.size());
  for (index_t n = 0; n < 2; ++n)
    for (index_t v = 0; v < 60; ++v) {
      double m = -INFINITY, se = 0;
      for (index_t c = 0; c < 3; ++c) m = std::max(m, static_cast<double>(xv[static_cast<std::size_t>((n * 3 + c) * 60 + v)]));
      for (index_t c = 0; c < 3; ++c) se += std::exp(xv[static_cast<std::size_t>((n * 3 + c) * 60 + v)] - m);
      for (index_t c = 0; c < 3; ++c)
        pv[static_cast<std::size_t>((n * 3 + c) * 60 + v)] = static_cast<T>(std::exp(xv[static_cast<std::size_t>((n * 3 + c) * 60 + v)] - m) / se);
    }
  losses::FNWeightedDice<T, Backend> fnd(losses::FNWeightedDiceOptions(2.0));
  const double dice = static_cast<double>(fnd.forward(TestTensor<T>::from_vector(s, pv), losses::one_hot(y, 3)));
  check_close_scalar(static_cast<T>(dce.dice_term()), dice, tol_output<T>(), "dice term");
  check_close_scalar(l, ce_value + dice, tol_output<T>(), "dice ce sum");
  CHECK(dce.dice_coefficients().size() == 2);
  // nnU-Net's sign: L = CE - mean dc (so L >= -1), with 1e-8 more in the denominator
  losses::DiceCE<T, Backend> nn;
  const T l_nn = nn.forward(x, y);
  losses::FNWeightedDice<T, Backend> fnd1(losses::FNWeightedDiceOptions(1.0).smooth_dr(1e-5 + 1e-8));
  const double mean_dc = 1 - static_cast<double>(fnd1.forward(TestTensor<T>::from_vector(s, pv), losses::one_hot(y, 3)));
  check_close_scalar(static_cast<T>(nn.dice_term()), -mean_dc, tol_output<T>(), "nnU-Net dice term");
  check_close_scalar(l_nn, ce_value - mean_dc, tol_output<T>(), "nnU-Net loss");
}

TEST_CASE_TEMPLATE("DiceCE on a large volume does not depend on the thread count", T, float, double) {
  // 2 x 3 x 8 x 40 x 36: many reduction blocks and threaded loops.
  const auto x = randn<T>({2, 3, 8, 40, 36}, 13);
  auto y = class_labels<T>({2, 1, 8, 40, 36}, 3, 14);
  perturb_element(y, 100, 255.0 - y.to_vector()[100]);
  losses::DiceCE<T, Backend> loss(losses::DiceCEOptions().ignore_index(255).ce_weight({1.0, 2.0, 0.5}));
  const T l_all = loss.forward(x, y);
  const auto d_all = loss.backward().to_vector();
  const int threads = get_num_threads();
  set_num_threads(1);
  const T l_one = loss.forward(x, y);
  const auto d_one = loss.backward().to_vector();
  set_num_threads(threads);
  CHECK(l_one == l_all);
  CHECK(d_one == d_all);
}

TEST_CASE_TEMPLATE("DiceCE rejects bad input", T, float, double) {
  using DCE = losses::DiceCE<T, Backend>;
  DCE loss;
  const auto x = randn<T>({2, 3, 4, 5}, 1);
  const auto y = class_labels<T>({2, 1, 4, 5}, 3, 2);
  try {
    loss.forward(x, class_labels<T>({2, 1, 5, 4}, 3, 2));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("mmnet::losses::DiceCE") != std::string::npos);
    CHECK(m.find("(2, 1, 4, 5) or (2, 4, 5)") != std::string::npos);
    CHECK(m.find("(2, 1, 5, 4)") != std::string::npos);
  }
  CHECK_THROWS_AS(loss.forward(randn<T>({2, 1, 4, 5}, 1), TestTensor<T>({2, 1, 4, 5})), shape_error);  // C = 1, no bg
  auto bad = y.clone();
  perturb_element(bad, 6, 3.0 - bad.to_vector()[6]);
  CHECK_THROWS_WITH_AS(loss.forward(x, bad), doctest::Contains("element 6"), value_error);
  auto xn = x.clone();
  perturb_element(xn, 2, -INFINITY);
  CHECK_THROWS_AS(loss.forward(xn, y), value_error);
  // everything ignored: the CE term is 0 / 0
  DCE ign(losses::DiceCEOptions().ignore_index(4));
  CHECK_THROWS_WITH_AS(ign.forward(x, TestTensor<T>::full({2, 1, 4, 5}, T(4))), doctest::Contains("cross-entropy"), value_error);
  CHECK_THROWS_AS(DCE(losses::DiceCEOptions().ce_weight({1.0, 1.0})).forward(x, y), shape_error);
  CHECK_THROWS_AS(DCE(losses::DiceCEOptions().weight_ce(-1)), value_error);
  CHECK_THROWS_AS(DCE(losses::DiceCEOptions().fn_weight(NAN)), value_error);
  CHECK_THROWS_AS(DCE(losses::DiceCEOptions().smooth_nr(-1e-5)), value_error);
  CHECK_THROWS_AS(DCE().backward(), value_error);
}
