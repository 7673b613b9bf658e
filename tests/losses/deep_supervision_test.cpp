// DeepSupervision: PyTorch fixtures (tests/reference/deep_supervision_ref.py), central differences, bad input.
#include <mmnet/losses/cross_entropy.hpp>
#include <mmnet/losses/deep_supervision.hpp>
#include <mmnet/losses/dice_ce.hpp>
#include <mmnet/losses/soft_dice.hpp>

#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class Loss>
void check_fixture(const Fixture& fx, const std::string& name, const Loss& prototype) {
  using T = typename Loss::tensor::value_type;
  const int outputs = static_cast<int>(fx.scalar(name + "/num_outputs"));
  std::vector<typename Loss::tensor> z, y;
  for (int k = 0; k < outputs; ++k) {
    z.push_back(fx.tensor<T>(name + "/out" + std::to_string(k) + "/input"));
    y.push_back(fx.tensor<T>(name + "/out" + std::to_string(k) + "/labels"));
  }
  losses::DeepSupervision<Loss> ds(fx.array(name + "/weights").data, prototype);
  const T l = ds.forward(z, y);
  check_close_scalar(l, fx.scalar(name + "/loss"), tol_output<T>(), "deep supervision " + name + " loss");
  const auto grads = ds.backward(static_cast<T>(fx.scalar(name + "/grad_loss")));
  REQUIRE(grads.size() == static_cast<std::size_t>(outputs));
  for (int k = 0; k < outputs; ++k) {
    const std::string pre = name + "/out" + std::to_string(k) + "/";
    if (fx.scalar(pre + "skipped") != 0) {
      CHECK_MESSAGE(!grads[static_cast<std::size_t>(k)].defined(), pre << ": a skipped term has no gradient");
      CHECK(ds.terms()[static_cast<std::size_t>(k)] == 0.0);
    } else {
      check_close(grads[static_cast<std::size_t>(k)], fx.array(pre + "grad"), tol_grad<T>(), "deep supervision " + pre + "grad");
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("DeepSupervision matches PyTorch (MAML, HMRNet and plain CE weights)", T, float, double) {
  Fixture fx("deep_supervision");
  check_fixture(fx, "maml", losses::DiceCE<T, Backend>(losses::DiceCEOptions::nnunet()));
  check_fixture(fx, "hmrnet", losses::DiceCE<T, Backend>(losses::DiceCEOptions::hmrnet(2.5)));
  check_fixture(fx, "ce", losses::CrossEntropy<T, Backend>());
  // the fixture's MAML weights are nnU-Net's
  const auto w = losses::nnunet_weights(3);
  const auto& ref = fx.array("maml/weights").data;
  for (std::size_t k = 0; k < 3; ++k) CHECK(w[k] == doctest::Approx(ref[k]).epsilon(1e-15));
}

TEST_CASE("DeepSupervision: nnU-Net weights") {
  const auto w5 = losses::nnunet_weights(5);
  const double e5[] = {8.0 / 15, 4.0 / 15, 2.0 / 15, 1.0 / 15, 0.0};
  for (std::size_t k = 0; k < 5; ++k) CHECK(w5[k] == doctest::Approx(e5[k]).epsilon(1e-15));
  const auto w4 = losses::nnunet_weights(4);
  const double e4[] = {4.0 / 7, 2.0 / 7, 1.0 / 7, 0.0};
  for (std::size_t k = 0; k < 4; ++k) CHECK(w4[k] == doctest::Approx(e4[k]).epsilon(1e-15));
  CHECK(losses::nnunet_weights(1) == std::vector<double>{1.0});
  CHECK_THROWS_AS(losses::nnunet_weights(0), value_error);
}

TEST_CASE("DeepSupervision passes the central-difference gradient check") {
  using DS = losses::DeepSupervision<losses::DiceCE<double, Backend>>;
  DS ds({0.5, 0.3, 0.2}, losses::DiceCE<double, Backend>(losses::DiceCEOptions::hmrnet(2.0)));
  std::vector<TestTensor<double>> z = {randn<double>({2, 2, 4, 6, 2}, 1), randn<double>({2, 2, 2, 3, 1}, 2),
                                       randn<double>({2, 2, 1, 2, 1}, 3)};
  std::vector<TestTensor<double>> y;
  Generator g(4);
  for (const auto& t : z) {
    std::vector<double> v(static_cast<std::size_t>(t.numel() / 2));
    for (auto& e : v) e = g.uniform() < 0.4 ? 1.0 : 0.0;
    y.push_back(TestTensor<double>::from_vector({t.size(0), 1, t.size(2), t.size(3), t.size(4)}, v));
  }
  ds.forward(z, y);
  const auto grads = ds.backward();
  for (std::size_t k = 0; k < z.size(); ++k) {
    INFO("output " << k);
    central_difference_check(
        "deep supervision output " + std::to_string(k), z[k].numel(), grads[k].to_vector(),
        [&] { return static_cast<double>(ds.forward(z, y)); }, [&](index_t i, double h) { perturb_element(z[k], i, h); });
  }
}

TEST_CASE_TEMPLATE("DeepSupervision: a zero weight skips its term; backward scales", T, float, double) {
  using Dice = losses::SoftDice<T, Backend>;
  losses::DeepSupervision<Dice> ds({1.0, 0.0});
  const auto p = TestTensor<T>::full({1, 1, 2, 3, 4}, T(0.5));
  const auto g = TestTensor<T>::full({1, 1, 2, 3, 4}, T(1));
  // the skipped term's operands are not even looked at (an empty tensor would throw if it were evaluated)
  const T l = ds.forward({p, TestTensor<T>()}, {g, TestTensor<T>()});
  Dice single;
  CHECK(l == single.forward(p, g));
  const auto grads = ds.backward(T(3));
  CHECK(!grads[1].defined());
  const auto a = grads[0].to_vector(), b = single.backward(T(3)).to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]));
}

TEST_CASE_TEMPLATE("DeepSupervision rejects bad input", T, float, double) {
  using CE = losses::CrossEntropy<T, Backend>;
  using DS = losses::DeepSupervision<CE>;
  CHECK_THROWS_AS(DS({}), value_error);
  CHECK_THROWS_WITH_AS(DS({1.0, -0.5}), doctest::Contains("weight[1]"), value_error);
  CHECK_THROWS_AS(DS({1.0, NAN}), value_error);
  DS ds({0.6, 0.4});
  const auto x = randn<T>({2, 3, 4}, 1);
  const auto y = TestTensor<T>({2, 4});
  CHECK_THROWS_WITH_AS(ds.forward({x}, {y, y}), doctest::Contains("expected 2, got 1"), shape_error);
  CHECK_THROWS_WITH_AS(ds.forward({x, x}, {y}), doctest::Contains("target count"), shape_error);
  // an error inside a term names the output
  CHECK_THROWS_WITH_AS(ds.forward({x, x}, {y, TestTensor<T>({2, 5})}), doctest::Contains("output 1"), shape_error);
  auto bad = y.clone();
  perturb_element(bad, 0, 9.0);
  CHECK_THROWS_WITH_AS(ds.forward({x, x}, {bad, y}), doctest::Contains("output 0"), value_error);
  CHECK_THROWS_AS(DS({1.0}).backward(), value_error);
}
