// BCEWithLogits: PyTorch fixtures (tests/reference/bce_with_logits_ref.py), central differences, bad input.
#include <mmnet/losses/bce_with_logits.hpp>

#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
TestTensor<T> bce_targets(const Shape& s, std::uint64_t seed, bool soft) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<T>(soft ? g.uniform() : (g.uniform() < 0.4 ? 1.0 : 0.0));
  return TestTensor<T>::from_vector(s, v);
}

void bce_central_difference(const losses::BCEWithLogitsOptions& o, const Shape& s, double logit_scale, bool soft,
                   const std::string& what) {
  INFO(what);
  losses::BCEWithLogits<double, Backend> bce(o);
  auto x = randn<double>(s, 5);
  scale_(x, logit_scale);
  const auto y = bce_targets<double>(s, 6, soft);
  bce.forward(x, y);
  const auto analytic = bce.backward().to_vector();
  central_difference_check(
      what, x.numel(), analytic, [&] { return static_cast<double>(bce.forward(x, y)); },
      [&](index_t i, double h) { perturb_element(x, i, h); });
}

}  // namespace

TEST_CASE_TEMPLATE("BCEWithLogits matches PyTorch", T, float, double) {
  Fixture fx("bce_with_logits");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    auto o = losses::BCEWithLogitsOptions().reduction(fx.scalar(c + "sum") != 0 ? losses::Reduction::sum
                                                                                 : losses::Reduction::mean);
    if (fx.scalar(c + "has_pos_weight") != 0) o.pos_weight(fx.scalar(c + "pos_weight"));
    losses::BCEWithLogits<T, Backend> bce(o);
    const T loss = bce.forward(fx.tensor<T>(c + "input"), fx.tensor<T>(c + "target"));
    check_close_scalar(loss, fx.scalar(c + "loss"), tol_output<T>(), "bce " + c + "loss");
    check_close(bce.backward(static_cast<T>(fx.scalar(c + "grad_loss"))), fx.array(c + "grad"), tol_grad<T>(),
                "bce " + c + "grad");
  }
}

TEST_CASE("BCEWithLogits passes the central-difference gradient check") {
  using O = losses::BCEWithLogitsOptions;
  using losses::Reduction;
  bce_central_difference(O(), {2, 3, 4, 5, 3}, 2.0, false, "mean, binary target");
  bce_central_difference(O().reduction(Reduction::sum), {3, 4, 5}, 3.0, true, "sum, soft target");
  bce_central_difference(O().pos_weight(3.5), {2, 1, 4, 6, 5}, 2.0, false, "mean, pos_weight 3.5");
  bce_central_difference(O().reduction(Reduction::sum).pos_weight(0.4), {17}, 6.0, true, "sum, pos_weight 0.4, large logits");
}

TEST_CASE_TEMPLATE("BCEWithLogits stays finite and exact at extreme logits", T, float, double) {
  // x = +-50 with the matching target costs ~exp(-50); with the wrong target, exactly 50.
  const auto x = TestTensor<T>::from_vector({4}, std::vector<double>{50, -50, 50, -50});
  const auto y = TestTensor<T>::from_vector({4}, std::vector<double>{1, 0, 0, 1});
  losses::BCEWithLogits<T, Backend> bce(losses::BCEWithLogitsOptions().reduction(losses::Reduction::sum));
  check_close_scalar(bce.forward(x, y), 100.0, tol_output<T>(), "bce extreme logits");
  const auto d = bce.backward().to_vector();
  CHECK(d[0] == doctest::Approx(0.0)); CHECK(d[1] == doctest::Approx(0.0));
  CHECK(d[2] == doctest::Approx(1.0)); CHECK(d[3] == doctest::Approx(-1.0));
}

TEST_CASE_TEMPLATE("BCEWithLogits rejects bad input", T, float, double) {
  using BCE = losses::BCEWithLogits<T, Backend>;
  BCE bce;
  const auto x = randn<T>({2, 3, 4}, 1);
  const auto y = bce_targets<T>({2, 3, 4}, 2, false);
  try {
    bce.forward(x, bce_targets<T>({2, 4, 3}, 2, false));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("mmnet::losses::BCEWithLogits") != std::string::npos);
    CHECK(m.find("(2, 3, 4)") != std::string::npos);
    CHECK(m.find("(2, 4, 3)") != std::string::npos);
  }
  CHECK_THROWS_AS(bce.forward(x, TestTensor<T>()), shape_error);
  auto bad = x.clone();
  perturb_element(bad, 7, std::nan(""));
  CHECK_THROWS_WITH_AS(bce.forward(bad, y), doctest::Contains("element 7"), value_error);
  CHECK_THROWS_AS(bce.forward(x, bad), value_error);
  auto inf = x.clone();
  perturb_element(inf, 0, -INFINITY);
  CHECK_THROWS_AS(bce.forward(inf, y), value_error);
  CHECK_THROWS_AS(BCE(losses::BCEWithLogitsOptions().pos_weight(-1.0)), value_error);
  CHECK_THROWS_AS(BCE(losses::BCEWithLogitsOptions().pos_weight(NAN)), value_error);
  CHECK_THROWS_AS(BCE().backward(), value_error);
}
