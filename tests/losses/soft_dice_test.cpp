// SoftDice: PyTorch fixtures (tests/reference/soft_dice_ref.py), central differences, bad input.
#include <mmnet/core/parallel.hpp>
#include <mmnet/losses/one_hot.hpp>
#include <mmnet/losses/soft_dice.hpp>

#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

// Probabilities strictly inside (0, 1), so central differences stay in range.
template <class T>
TestTensor<T> dice_probabilities(const Shape& s, std::uint64_t seed) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<T>(g.uniform(0.05, 0.95));
  return TestTensor<T>::from_vector(s, v);
}
template <class T>
TestTensor<T> dice_labels(const Shape& s, std::uint64_t seed, bool soft) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<T>(soft ? g.uniform() : (g.uniform() < 0.3 ? 1.0 : 0.0));
  return TestTensor<T>::from_vector(s, v);
}

void dice_central_difference(const losses::SoftDiceOptions& o, const Shape& s, bool soft, const std::string& what) {
  INFO(what);
  losses::SoftDice<double, Backend> dice(o);
  auto p = dice_probabilities<double>(s, 3);
  const auto g = dice_labels<double>(s, 4, soft);
  dice.forward(p, g);
  const auto analytic = dice.backward().to_vector();
  central_difference_check(
      what, p.numel(), analytic, [&] { return static_cast<double>(dice.forward(p, g)); },
      [&](index_t i, double h) { perturb_element(p, i, h); });
}

}  // namespace

TEST_CASE_TEMPLATE("SoftDice matches PyTorch", T, float, double) {
  Fixture fx("soft_dice");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    const auto o = losses::SoftDiceOptions()
                       .smooth_nr(fx.scalar(c + "smooth_nr"))
                       .smooth_dr(fx.scalar(c + "smooth_dr"))
                       .batch(fx.scalar(c + "batch") != 0)
                       .include_background(fx.scalar(c + "include_background") != 0)
                       .per_channel(fx.scalar(c + "per_channel") != 0);
    losses::SoftDice<T, Backend> dice(o);
    auto g = fx.tensor<T>(c + "g");
    if (fx.scalar(c + "has_labels") != 0) {  // softmax probabilities: the target is one_hot(labels, C)
      g = losses::one_hot(fx.tensor<T>(c + "labels"), g.size(1));
      check_close(g, fx.array(c + "g"), 0.0, "one_hot " + c);
    }
    const T loss = dice.forward(fx.tensor<T>(c + "p"), g);
    check_close_scalar(loss, fx.scalar(c + "loss"), tol_output<T>(), "soft dice " + c + "loss");
    check_close(dice.backward(static_cast<T>(fx.scalar(c + "grad_loss"))), fx.array(c + "grad"), tol_grad<T>(),
                "soft dice " + c + "grad");
  }
}

TEST_CASE("SoftDice passes the central-difference gradient check") {
  using O = losses::SoftDiceOptions;
  dice_central_difference(O(), {2, 3, 4, 5, 3}, false, "batch, binary target");
  dice_central_difference(O().batch(false), {2, 3, 4, 5, 3}, false, "per (n, c), binary target");
  dice_central_difference(O().batch(false).smooth_nr(1e-5).smooth_dr(1e-5), {3, 2, 5, 4}, true, "per (n, c), soft target");
  dice_central_difference(O().smooth_nr(0).smooth_dr(0.5), {2, 1, 4, 6, 5}, true, "batch, soft target");
  dice_central_difference(O().batch(false).smooth_nr(0.3).smooth_dr(2), {4, 3}, false, "rank 2");
  dice_central_difference(O().include_background(false).smooth_nr(1e-5).smooth_dr(1e-5), {2, 3, 4, 5, 3}, false,
                          "no background, one ratio");
  dice_central_difference(O().per_channel(true).include_background(false), {2, 3, 3, 5, 4}, true,
                          "batch per channel, no background");
  dice_central_difference(O().batch(false).include_background(false), {3, 2, 5, 4}, false, "per (n, c), no background");
}

TEST_CASE_TEMPLATE("one_hot: classes on axis 1, both layouts of rank, bad labels", T, float, double) {
  const auto labels = TestTensor<T>::from_vector({2, 1, 2, 3}, std::vector<double>{0, 1, 2, 2, 1, 0, 1, 1, 0, 2, 2, 0});
  const auto g = losses::one_hot(labels, 3);
  REQUIRE(g.shape() == Shape{2, 3, 2, 3});
  const auto h = g.to_vector(), l = labels.to_vector();
  for (index_t n = 0; n < 2; ++n)
    for (index_t c = 0; c < 3; ++c)
      for (index_t s = 0; s < 6; ++s)
        CHECK(h[static_cast<std::size_t>((n * 3 + c) * 6 + s)] == (l[static_cast<std::size_t>(n * 6 + s)] == T(c) ? 1 : 0));
  CHECK(losses::one_hot(TestTensor<T>::from_vector({3, 1}, std::vector<double>{1, 0, 1}), 2).to_vector() ==
        std::vector<T>{0, 1, 1, 0, 0, 1});
  // bad labels: out of range, negative, fractional, NaN; bad shapes and class counts
  CHECK_THROWS_WITH_AS(losses::one_hot(labels, 2), doctest::Contains("element 2"), value_error);
  auto bad = labels.clone();
  perturb_element(bad, 4, -2.0);
  CHECK_THROWS_WITH_AS(losses::one_hot(bad, 3), doctest::Contains("[0, 3)"), value_error);
  bad = labels.clone();
  perturb_element(bad, 0, 0.5);
  CHECK_THROWS_AS(losses::one_hot(bad, 3), value_error);
  bad = labels.clone();
  perturb_element(bad, 0, NAN);
  CHECK_THROWS_AS(losses::one_hot(bad, 3), value_error);
  CHECK_THROWS_WITH_AS(losses::one_hot(TestTensor<T>({2, 2, 3}), 3), doctest::Contains("N x 1"), shape_error);
  CHECK_THROWS_AS(losses::one_hot(TestTensor<T>(), 3), shape_error);
  CHECK_THROWS_AS(losses::one_hot(labels, 0), value_error);
}

TEST_CASE("SoftDice: include_background(false) ignores channel 0; per_channel equals a mean of channel ratios") {
  const auto p = dice_probabilities<double>({2, 3, 3, 4, 5}, 5);
  const auto g = dice_labels<double>({2, 3, 3, 4, 5}, 6, false);
  losses::SoftDice<double, Backend> fg(losses::SoftDiceOptions().include_background(false).per_channel(true));
  const double l = fg.forward(p, g);
  const auto d = fg.backward().to_vector();
  for (index_t n = 0; n < 2; ++n)  // no gradient into the background channel
    for (index_t s = 0; s < 60; ++s) CHECK(d[static_cast<std::size_t>(n * 180 + s)] == 0.0);
  // changing the background channel changes nothing
  auto p2 = p.clone();
  perturb_element(p2, 7, 0.01);
  perturb_element(p2, 180 + 3, -0.02);
  CHECK(fg.forward(p2, g) == l);
  // the mean of the two foreground channels' batch ratios, by hand
  const auto hp = p.to_vector(), hg = g.to_vector();
  double expected = 0;
  for (index_t c = 1; c < 3; ++c) {
    double inter = 0, total = 0;
    for (index_t n = 0; n < 2; ++n)
      for (index_t s = 0; s < 60; ++s) {
        const auto i = static_cast<std::size_t>((n * 3 + c) * 60 + s);
        inter += hp[i] * hg[i];
        total += hp[i] + hg[i];
      }
    expected += 1 - (2 * inter + 1) / (total + 1);
  }
  CHECK(l == doctest::Approx(expected / 2).epsilon(1e-13));
  CHECK(fg.dice_coefficients().size() == 2);
}

TEST_CASE("SoftDice: batch(true) and batch(false) agree for one sample and channel; backward scales") {
  const auto p = dice_probabilities<double>({1, 1, 3, 4, 5}, 1);
  const auto g = dice_labels<double>({1, 1, 3, 4, 5}, 2, false);
  losses::SoftDice<double, Backend> a, b(losses::SoftDiceOptions().batch(false));
  CHECK(a.forward(p, g) == doctest::Approx(b.forward(p, g)).epsilon(1e-14));
  const auto da = a.backward(2.5).to_vector(), db = b.backward().to_vector();
  for (std::size_t i = 0; i < da.size(); ++i) CHECK(da[i] == doctest::Approx(2.5 * db[i]).epsilon(1e-14));
  // A perfect prediction of a non-empty label has loss 0 (with smooth_nr == smooth_dr).
  losses::SoftDice<double, Backend> c;
  CHECK(c.forward(g, g) == doctest::Approx(0.0).epsilon(1e-15));
}

TEST_CASE_TEMPLATE("SoftDice on a large volume: host sums, independent of the thread count", T, float, double) {
  // 2 x 3 x 8 x 40 x 36 = 69,120 elements: many reduction blocks and threaded loops.
  const Shape s{2, 3, 8, 40, 36};
  const auto p = dice_probabilities<T>(s, 21);
  const auto g = dice_labels<T>(s, 22, false);
  const auto hp = p.to_vector(), hg = g.to_vector();
  for (bool batch : {true, false}) {
    INFO("batch " << batch);
    const index_t groups = batch ? 1 : 6, k = s.numel() / groups;
    double expected = 0;
    for (index_t j = 0; j < groups; ++j) {
      double inter = 0, total = 0;
      for (index_t i = j * k; i < (j + 1) * k; ++i) {
        inter += static_cast<double>(hp[i]) * hg[i];
        total += static_cast<double>(hp[i]) + hg[i];
      }
      expected += 1 - (2 * inter + 1) / (total + 1);
    }
    expected /= static_cast<double>(groups);
    losses::SoftDice<T, Backend> dice(losses::SoftDiceOptions().batch(batch));
    check_close_scalar(dice.forward(p, g), expected, tol_output<T>(), "soft dice large volume");
    const auto d_all = dice.backward().to_vector();
    const int threads = get_num_threads();
    set_num_threads(1);
    const T l1 = dice.forward(p, g);
    const auto d_one = dice.backward().to_vector();
    set_num_threads(threads);
    CHECK(l1 == dice.forward(p, g));
    CHECK(d_one == d_all);
  }
}

TEST_CASE_TEMPLATE("SoftDice rejects bad input", T, float, double) {
  using Dice = losses::SoftDice<T, Backend>;
  Dice dice;
  const auto p = dice_probabilities<T>({2, 1, 3, 4}, 1);
  const auto g = dice_labels<T>({2, 1, 3, 4}, 2, false);

  // shape mismatch: shape_error naming the component and both shapes
  try {
    dice.forward(p, dice_labels<T>({2, 1, 4, 3}, 2, false));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("mmnet::losses::SoftDice") != std::string::npos);
    CHECK(m.find("(2, 1, 3, 4)") != std::string::npos);
    CHECK(m.find("(2, 1, 4, 3)") != std::string::npos);
  }
  CHECK_THROWS_AS(dice.forward(TestTensor<T>(), g), shape_error);
  Dice per_group(losses::SoftDiceOptions().batch(false));
  CHECK_THROWS_AS(per_group.forward(dice_probabilities<T>({6}, 1), dice_labels<T>({6}, 2, false)), shape_error);

  // non-finite and out-of-range values
  auto bad = p.clone();
  perturb_element(bad, 5, std::nan(""));
  CHECK_THROWS_AS(dice.forward(bad, g), value_error);
  CHECK_THROWS_AS(dice.forward(p, bad), value_error);
  auto inf = p.clone();
  perturb_element(inf, 0, INFINITY);
  CHECK_THROWS_AS(dice.forward(inf, g), value_error);
  auto logits = p.clone();
  perturb_element(logits, 3, 2.0);  // logits instead of probabilities
  CHECK_THROWS_WITH_AS(dice.forward(logits, g), doctest::Contains("element 3"), value_error);
  auto label255 = g.clone();
  perturb_element(label255, 1, 255.0);
  CHECK_THROWS_AS(dice.forward(p, label255), value_error);

  // non-finite loss: nothing predicted, nothing labelled and no smoothing is 0/0
  Dice raw(losses::SoftDiceOptions().smooth_nr(0).smooth_dr(0));
  const TestTensor<T> zero({2, 1, 3, 4});
  CHECK_THROWS_WITH_AS(raw.forward(zero, zero), doctest::Contains("loss"), value_error);

  // include_background(false) and per_channel need a channel axis with C >= 2
  Dice no_bg(losses::SoftDiceOptions().include_background(false));
  CHECK_THROWS_WITH_AS(no_bg.forward(p, g), doctest::Contains(">= 2"), shape_error);
  CHECK_THROWS_AS(no_bg.forward(dice_probabilities<T>({6}, 1), dice_labels<T>({6}, 2, false)), shape_error);
  Dice per_channel(losses::SoftDiceOptions().per_channel(true));
  CHECK_THROWS_AS(per_channel.forward(dice_probabilities<T>({6}, 1), dice_labels<T>({6}, 2, false)), shape_error);

  // options and call order
  CHECK_THROWS_AS(Dice(losses::SoftDiceOptions().smooth_nr(-1)), value_error);
  CHECK_THROWS_AS(Dice(losses::SoftDiceOptions().smooth_dr(NAN)), value_error);
  CHECK_THROWS_AS(Dice().backward(), value_error);
}
