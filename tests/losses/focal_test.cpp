// FocalLoss: PyTorch fixtures (tests/reference/focal_ref.py), central differences, bad input.
#include <mmnet/losses/cross_entropy.hpp>
#include <mmnet/losses/focal.hpp>

#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

template <class T>
TestTensor<T> focal_labels(const Shape& s, index_t classes, std::uint64_t seed) {
  Generator g(seed);
  std::vector<T> v(static_cast<std::size_t>(s.numel()));
  for (auto& x : v) x = static_cast<T>(g.integer(static_cast<std::uint64_t>(classes)));
  return TestTensor<T>::from_vector(s, v);
}

void focal_central_difference(const losses::FocalLossOptions& o, const Shape& s, const Shape& ts, const Shape& ms,
                              const std::string& what) {
  INFO(what);
  losses::FocalLoss<double, Backend> fl(o);
  auto x = randn<double>(s, 21);
  scale_(x, 2.0);
  const bool softmax = o.mode() == losses::FocalMode::softmax;
  const auto t = softmax ? focal_labels<double>(ts, s[1], 22) : uniform_tensor<double>(ts, 0, 1, 22);
  const bool has_map = ms.rank() > 0;
  const auto m = has_map ? uniform_tensor<double>(ms, 0.5, 3.0, 23) : TestTensor<double>();
  auto value = [&] { return static_cast<double>(has_map ? fl.forward(x, t, m) : fl.forward(x, t)); };
  value();
  const auto analytic = fl.backward().to_vector();
  central_difference_check(what, x.numel(), analytic, value, [&](index_t i, double h) { perturb_element(x, i, h); });
}

}  // namespace

TEST_CASE_TEMPLATE("FocalLoss matches PyTorch", T, float, double) {
  Fixture fx("focal");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    losses::FocalLossOptions o;
    o.mode(fx.scalar(c + "sigmoid") != 0 ? losses::FocalMode::sigmoid : losses::FocalMode::softmax)
        .gamma(fx.scalar(c + "gamma"))
        .reduction(fx.scalar(c + "sum") != 0 ? losses::Reduction::sum : losses::Reduction::mean);
    if (fx.scalar(c + "has_alpha") != 0) o.alpha(fx.scalar(c + "alpha"));
    if (fx.scalar(c + "has_class_weight") != 0) o.class_weight(fx.array(c + "class_weight").data);
    losses::FocalLoss<T, Backend> fl(o);
    const auto x = fx.tensor<T>(c + "input");
    const auto t = fx.tensor<T>(c + "target");
    const T loss = fx.scalar(c + "has_weight_map") != 0 ? fl.forward(x, t, fx.tensor<T>(c + "weight_map")) : fl.forward(x, t);
    check_close_scalar(loss, fx.scalar(c + "loss"), tol_output<T>(), "focal " + c + "loss");
    check_close(fl.backward(static_cast<T>(fx.scalar(c + "grad_loss"))), fx.array(c + "grad"), tol_grad<T>(),
                "focal " + c + "grad");
  }
}

TEST_CASE("FocalLoss passes the central-difference gradient check") {
  using O = losses::FocalLossOptions;
  using losses::FocalMode;
  using losses::Reduction;
  focal_central_difference(O().gamma(2), {2, 3, 4, 5, 3}, {2, 1, 4, 5, 3}, {}, "softmax gamma 2");
  focal_central_difference(O().gamma(0), {2, 2, 3, 5, 4}, {2, 3, 5, 4}, {}, "softmax gamma 0");
  focal_central_difference(O().gamma(0.5).alpha(0.3).class_weight({1.0, 2.0, 0.5, 1.5}), {2, 4, 3, 5}, {2, 3, 5},
                           {2, 1, 3, 5}, "softmax gamma 0.5, alpha, class weights, map");
  focal_central_difference(O().gamma(3).reduction(Reduction::sum), {3, 2, 7}, {3, 7}, {3, 7}, "softmax sum, map N x ...");
  focal_central_difference(O().mode(FocalMode::sigmoid), {2, 3, 4, 5, 3}, {2, 3, 4, 5, 3}, {}, "sigmoid gamma 2");
  focal_central_difference(O().mode(FocalMode::sigmoid).gamma(1.5).alpha(0.25).class_weight({0.5, 2.0}), {2, 2, 3, 4},
                           {2, 2, 3, 4}, {2, 1, 3, 4}, "sigmoid alpha, class weights, broadcast map");
  focal_central_difference(O().mode(FocalMode::sigmoid).gamma(0).reduction(Reduction::sum), {2, 3, 5}, {2, 3, 5},
                           {2, 3, 5}, "sigmoid gamma 0, full map");
}

TEST_CASE_TEMPLATE("FocalLoss: gamma 0 without weights is cross-entropy; gamma lowers easy voxels", T, float, double) {
  const auto x = randn<T>({2, 3, 3, 4, 5}, 3);
  const auto y = focal_labels<T>({2, 1, 3, 4, 5}, 3, 4);
  losses::FocalLoss<T, Backend> fl0(losses::FocalLossOptions().gamma(0));
  losses::CrossEntropy<T, Backend> ce;
  const T a = fl0.forward(x, y), b = ce.forward(x, y);
  check_close_scalar(a, static_cast<double>(b), tol_output<T>(), "focal gamma 0 vs cross entropy");
  const auto ga = fl0.backward().to_vector(), gb = ce.backward().to_vector();
  for (std::size_t i = 0; i < ga.size(); ++i) CHECK(ga[i] == doctest::Approx(gb[i]).epsilon(1e-5));
  losses::FocalLoss<T, Backend> fl2;  // gamma 2 by default
  CHECK(fl2.forward(x, y) < a);
  // a confident, correct voxel (p_t -> 1, q underflows to 0) contributes neither loss nor NaN gradient
  const auto xc = TestTensor<T>::from_vector({1, 2, 1}, std::vector<double>{800, -800});
  const auto yc = TestTensor<T>::from_vector({1, 1}, std::vector<double>{0});
  losses::FocalLoss<T, Backend> half(losses::FocalLossOptions().gamma(0.5));
  CHECK(half.forward(xc, yc) == doctest::Approx(0.0));
  for (T v : half.backward().to_vector()) CHECK(std::isfinite(static_cast<double>(v)));
}

TEST_CASE_TEMPLATE("FocalLoss rejects bad input", T, float, double) {
  using FL = losses::FocalLoss<T, Backend>;
  using losses::FocalLossOptions;
  FL fl;
  const auto x = randn<T>({2, 3, 4, 5}, 1);
  const auto y = focal_labels<T>({2, 1, 4, 5}, 3, 2);
  try {
    fl.forward(x, focal_labels<T>({2, 1, 5, 4}, 3, 2));
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("mmnet::losses::FocalLoss") != std::string::npos);
    CHECK(m.find("(2, 1, 5, 4)") != std::string::npos);
  }
  auto bad = y.clone();
  perturb_element(bad, 3, 3.0 - bad.to_vector()[3]);
  CHECK_THROWS_WITH_AS(fl.forward(x, bad), doctest::Contains("element 3"), value_error);
  auto xn = x.clone();
  perturb_element(xn, 0, NAN);
  CHECK_THROWS_AS(fl.forward(xn, y), value_error);
  // weight maps: shape, sign, finiteness
  CHECK_THROWS_WITH_AS(fl.forward(x, y, TestTensor<T>({2, 3, 4, 5})), doctest::Contains("weight_map"), shape_error);
  auto wm = TestTensor<T>::full({2, 1, 4, 5}, T(1));
  perturb_element(wm, 2, -3.0);
  CHECK_THROWS_WITH_AS(fl.forward(x, y, wm), doctest::Contains("negative"), value_error);
  perturb_element(wm, 2, NAN);
  CHECK_THROWS_AS(fl.forward(x, y, wm), value_error);
  // sigmoid: target shape and range
  FL sg(FocalLossOptions().mode(losses::FocalMode::sigmoid));
  CHECK_THROWS_AS(sg.forward(x, y), shape_error);
  auto t = uniform_tensor<T>({2, 3, 4, 5}, 0, 1, 3);
  perturb_element(t, 1, 5.0);
  CHECK_THROWS_WITH_AS(sg.forward(x, t), doctest::Contains("[0, 1]"), value_error);
  // options
  CHECK_THROWS_AS(FL(FocalLossOptions().gamma(-1)), value_error);
  CHECK_THROWS_AS(FL(FocalLossOptions().gamma(INFINITY)), value_error);
  CHECK_THROWS_AS(FL(FocalLossOptions().alpha(1.5)), value_error);
  CHECK_THROWS_AS(FL(FocalLossOptions().class_weight({1.0, -1.0, 1.0})), value_error);
  CHECK_THROWS_WITH_AS(FL(FocalLossOptions().class_weight({1.0, 1.0})).forward(x, y), doctest::Contains("expected 3, got 2"),
                       shape_error);
  CHECK_THROWS_AS(FL().backward(), value_error);
}
