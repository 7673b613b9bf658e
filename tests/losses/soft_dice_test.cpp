// SoftDice: PyTorch fixtures (tests/reference/soft_dice_ref.py), central differences, bad input.
#include <mmnet/core/parallel.hpp>
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
                       .batch(fx.scalar(c + "batch") != 0);
    losses::SoftDice<T, Backend> dice(o);
    const T loss = dice.forward(fx.tensor<T>(c + "p"), fx.tensor<T>(c + "g"));
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

  // options and call order
  CHECK_THROWS_AS(Dice(losses::SoftDiceOptions().smooth_nr(-1)), value_error);
  CHECK_THROWS_AS(Dice(losses::SoftDiceOptions().smooth_dr(NAN)), value_error);
  CHECK_THROWS_AS(Dice().backward(), value_error);
}
