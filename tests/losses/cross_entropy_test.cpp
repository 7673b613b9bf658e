// CrossEntropy: PyTorch fixtures (tests/reference/cross_entropy_ref.py), central differences, bad input.
#include <mmnet/losses/cross_entropy.hpp>

#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
TestTensor<T> random_labels(const Shape& s, index_t classes, std::uint64_t seed) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<T>(std::min<index_t>(classes - 1, static_cast<index_t>(g.uniform() * classes)));
  return TestTensor<T>::from_vector(s, v);
}

losses::CrossEntropyOptions fixture_options(const Fixture& fx, const std::string& c) {
  losses::CrossEntropyOptions o;
  o.reduction(fx.scalar(c + "sum") != 0 ? losses::Reduction::sum : losses::Reduction::mean);
  if (fx.scalar(c + "has_weight") != 0) o.weight(fx.array(c + "weight").data);
  if (fx.scalar(c + "has_ignore") != 0) o.ignore_index(static_cast<index_t>(fx.scalar(c + "ignore_index")));
  return o;
}

void ce_central_difference(const losses::CrossEntropyOptions& o, const Shape& s, const Shape& ls, double scale,
                           const std::string& what) {
  INFO(what);
  losses::CrossEntropy<double, Backend> ce(o);
  auto x = randn<double>(s, 11);
  scale_(x, scale);
  auto y = random_labels<double>(ls, s[1], 12);
  if (o.ignore_index()) {  // a few ignored voxels
    perturb_element(y, 0, static_cast<double>(*o.ignore_index()) - y.to_vector()[0]);
    perturb_element(y, 3, static_cast<double>(*o.ignore_index()) - y.to_vector()[3]);
  }
  ce.forward(x, y);
  const auto analytic = ce.backward().to_vector();
  central_difference_check(
      what, x.numel(), analytic, [&] { return static_cast<double>(ce.forward(x, y)); },
      [&](index_t i, double h) { perturb_element(x, i, h); });
}

}  // namespace

TEST_CASE_TEMPLATE("CrossEntropy matches PyTorch", T, float, double) {
  Fixture fx("cross_entropy");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    losses::CrossEntropy<T, Backend> ce(fixture_options(fx, c));
    const T loss = ce.forward(fx.tensor<T>(c + "input"), fx.tensor<T>(c + "labels"));
    check_close_scalar(loss, fx.scalar(c + "loss"), tol_output<T>(), "cross entropy " + c + "loss");
    check_close(ce.backward(static_cast<T>(fx.scalar(c + "grad_loss"))), fx.array(c + "grad"), tol_grad<T>(),
                "cross entropy " + c + "grad");
  }
}

TEST_CASE("CrossEntropy passes the central-difference gradient check") {
  using O = losses::CrossEntropyOptions;
  using losses::Reduction;
  ce_central_difference(O(), {2, 3, 4, 5, 3}, {2, 1, 4, 5, 3}, 2.0, "mean");
  ce_central_difference(O().weight({0.5, 2.0, 1.0}).ignore_index(-100), {2, 3, 3, 5, 4}, {2, 3, 5, 4}, 1.0,
                        "weighted mean, ignore_index, labels N x ...");
  ce_central_difference(O().reduction(Reduction::sum).weight({1.0, 0.0, 3.0, 0.25}), {3, 4, 5}, {3, 5}, 3.0,
                        "weighted sum, rank 3");
  ce_central_difference(O(), {5, 2}, {5}, 1.0, "rank 2");
}

TEST_CASE_TEMPLATE("CrossEntropy: one class and extreme logits stay exact", T, float, double) {
  // One class: softmax is 1, the loss and the gradient are 0.
  losses::CrossEntropy<T, Backend> ce;
  CHECK(ce.forward(randn<T>({2, 1, 3, 4}, 1), TestTensor<T>({2, 1, 3, 4})) == T(0));
  for (T v : ce.backward().to_vector()) CHECK(v == T(0));
  // Logits +-1000 never overflow: the wrong class costs exactly 2000.
  const auto x = TestTensor<T>::from_vector({2, 2}, std::vector<double>{1000, -1000, 1000, -1000});
  const auto y = TestTensor<T>::from_vector({2}, std::vector<double>{0, 1});
  check_close_scalar(ce.forward(x, y), 1000.0, tol_output<T>(), "cross entropy extreme logits");
}

TEST_CASE_TEMPLATE("CrossEntropy rejects bad input", T, float, double) {
  using CE = losses::CrossEntropy<T, Backend>;
  CE ce;
  const auto x = randn<T>({2, 3, 4, 5}, 1);
  const auto y = random_labels<T>({2, 1, 4, 5}, 3, 2);
  // label shape mismatch: names the component, the expected and the actual shape
  try {
    ce.forward(x, random_labels<T>({2, 1, 5, 4}, 3, 2));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("mmnet::losses::CrossEntropy") != std::string::npos);
    CHECK(m.find("(2, 1, 4, 5) or (2, 4, 5)") != std::string::npos);
    CHECK(m.find("(2, 1, 5, 4)") != std::string::npos);
  }
  CHECK_THROWS_AS(ce.forward(x, TestTensor<T>()), shape_error);
  CHECK_THROWS_AS(ce.forward(TestTensor<T>(), y), shape_error);
  CHECK_THROWS_AS(ce.forward(randn<T>({6}, 1), random_labels<T>({6}, 3, 2)), shape_error);  // no class axis
  // labels out of range, negative, fractional, NaN
  auto bad = y.clone();
  perturb_element(bad, 5, 3.0 - bad.to_vector()[5]);
  CHECK_THROWS_WITH_AS(ce.forward(x, bad), doctest::Contains("element 5"), value_error);
  bad = y.clone();
  perturb_element(bad, 2, -1.0 - bad.to_vector()[2]);
  CHECK_THROWS_WITH_AS(ce.forward(x, bad), doctest::Contains("[0, 3)"), value_error);
  bad = y.clone();
  perturb_element(bad, 1, 0.5);
  CHECK_THROWS_AS(ce.forward(x, bad), value_error);
  bad = y.clone();
  perturb_element(bad, 1, NAN);
  CHECK_THROWS_AS(ce.forward(x, bad), value_error);
  // 255 is fine only as the ignore_index
  bad = y.clone();
  perturb_element(bad, 0, 255.0 - bad.to_vector()[0]);
  CHECK_THROWS_AS(ce.forward(x, bad), value_error);
  CHECK_NOTHROW(CE(losses::CrossEntropyOptions().ignore_index(255)).forward(x, bad));
  // non-finite logits
  auto xn = x.clone();
  perturb_element(xn, 9, INFINITY);
  CHECK_THROWS_WITH_AS(ce.forward(xn, y), doctest::Contains("element 9"), value_error);
  // everything ignored: 0 / 0 (torch: NaN)
  CE ign(losses::CrossEntropyOptions().ignore_index(7));
  CHECK_THROWS_WITH_AS(ign.forward(x, TestTensor<T>::full(y.shape(), T(7))), doctest::Contains("loss"), value_error);
  // class weights: count and values
  CHECK_THROWS_WITH_AS(CE(losses::CrossEntropyOptions().weight({1.0, 2.0})).forward(x, y),
                       doctest::Contains("expected 3, got 2"), shape_error);
  CHECK_THROWS_AS(CE(losses::CrossEntropyOptions().weight({1.0, -2.0, 1.0})), value_error);
  CHECK_THROWS_AS(CE(losses::CrossEntropyOptions().weight({1.0, NAN, 1.0})), value_error);
  CHECK_THROWS_AS(CE().backward(), value_error);
}
