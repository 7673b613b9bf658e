// DistanceWeightedFocal and distance_weight_map: PyTorch + scipy fixtures
// (tests/reference/distance_weighted_focal_ref.py), central differences, bad input.
#include <mmnet/losses/distance_weighted_focal.hpp>
#include <mmnet/losses/focal.hpp>

#include <string>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

losses::DistanceWeightedFocalOptions fixture_options(const Fixture& fx, const std::string& c) {
  const auto& sp = fx.array(c + "spacing").data;
  losses::DistanceWeightedFocalOptions o;
  o.gamma(fx.scalar(c + "gamma"))
      .foreground(static_cast<index_t>(fx.scalar(c + "foreground")))
      .spacing({sp[0], sp[1], sp[2]})
      .reduction(fx.scalar(c + "sum") != 0 ? losses::Reduction::sum : losses::Reduction::mean);
  if (fx.scalar(c + "has_alpha_max") != 0) o.alpha_max(fx.scalar(c + "alpha_max"));
  return o;
}

// Labels with a ball of class 1 (and some class 2) that never fills a volume.
TestTensor<double> ball_labels(const Shape& s, bool class2 = true) {
  std::vector<double> v(static_cast<std::size_t>(s.numel()), 0.0);
  const index_t d = s[2], h = s[3], w = s[4];
  for (index_t n = 0; n < s[0]; ++n)
    for (index_t z = 0; z < d; ++z)
      for (index_t y = 0; y < h; ++y)
        for (index_t x = 0; x < w; ++x) {
          const double r2 = (z - 1.5 - n) * (z - 1.5 - n) + (y - 2.0) * (y - 2.0) + (x - 2.5) * (x - 2.5);
          v[static_cast<std::size_t>(((n * d + z) * h + y) * w + x)] = r2 <= 4.5 ? 1.0 : (class2 && x == w - 1 ? 2.0 : 0.0);
        }
  return TestTensor<double>::from_vector(s, v);
}

}  // namespace

TEST_CASE_TEMPLATE("DistanceWeightedFocal matches PyTorch with scipy's EDT", T, float, double) {
  Fixture fx("distance_weighted_focal");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    const auto o = fixture_options(fx, c);
    losses::DistanceWeightedFocal<T, Backend> loss(o);
    const auto x = fx.tensor<T>(c + "input");
    const auto labels = fx.tensor<T>(c + "labels");
    T l;
    if (fx.scalar(c + "alpha_given") != 0) {
      l = loss.forward(x, labels, fx.tensor<T>(c + "alpha"));
    } else {
      l = loss.forward(x, labels);
      check_close(loss.alpha(), fx.array(c + "alpha"), tol_output<T>(), "alpha map " + c);
      check_close(losses::distance_weight_map(labels, o.foreground(), o.spacing(), o.alpha_max()), fx.array(c + "alpha"),
                  tol_output<T>(), "distance_weight_map " + c);
    }
    check_close_scalar(l, fx.scalar(c + "loss"), tol_output<T>(), "distance weighted focal " + c + "loss");
    check_close(loss.backward(static_cast<T>(fx.scalar(c + "grad_loss"))), fx.array(c + "grad"), tol_grad<T>(),
                "distance weighted focal " + c + "grad");
  }
  // spec §3: alpha from the full volume, then cropped, differs from alpha of the cropped labels
  CHECK(fx.scalar("block_alpha_sum") == doctest::Approx(511.656854249).epsilon(1e-12));
  CHECK(fx.scalar("block_alpha_from_crop_sum") != doctest::Approx(fx.scalar("block_alpha_sum")));
}

TEST_CASE("DistanceWeightedFocal passes the central-difference gradient check") {
  const Shape s{2, 3, 4, 5, 6};
  const auto labels = ball_labels({2, 1, 4, 5, 6});
  for (double gamma : {0.0, 2.0, 0.7}) {
    INFO("gamma " << gamma);
    losses::DistanceWeightedFocal<double, Backend> loss(
        losses::DistanceWeightedFocalOptions().gamma(gamma).spacing({2.0, 1.0, 0.5}));
    auto x = randn<double>(s, 31);
    loss.forward(x, labels);
    const auto analytic = loss.backward().to_vector();
    central_difference_check(
        "distance weighted focal", x.numel(), analytic, [&] { return static_cast<double>(loss.forward(x, labels)); },
        [&](index_t i, double h) { perturb_element(x, i, h); });
  }
}

TEST_CASE_TEMPLATE("DistanceWeightedFocal: alpha is EDT + 1 inside, 1 outside; gamma 0 and alpha 1 is CE", T, float, double) {
  const auto labels = ball_labels({2, 1, 4, 5, 6}).cast<T>();
  const auto alpha = losses::distance_weight_map(labels);
  const auto a = alpha.to_vector(), l = labels.to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (l[i] == T(1)) CHECK(a[i] >= T(2));  // inside: distance >= 1 on a unit grid
    if (l[i] != T(1)) CHECK(a[i] == T(1));
  }
  // capped
  const auto capped = losses::distance_weight_map(labels, 1, {1, 1, 1}, 2.5).to_vector();
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(capped[i] == std::min(a[i], T(2.5)));
  // empty foreground: alpha == 1 everywhere, and the loss is the focal loss
  const TestTensor<T> empty({2, 1, 4, 5, 6});
  for (T v : losses::distance_weight_map(empty).to_vector()) CHECK(v == T(1));
  const auto x = randn<T>({2, 3, 4, 5, 6}, 9);
  losses::DistanceWeightedFocal<T, Backend> dwf(losses::DistanceWeightedFocalOptions().gamma(0));
  losses::FocalLoss<T, Backend> fl(losses::FocalLossOptions().gamma(0));
  check_close_scalar(dwf.forward(x, empty), static_cast<double>(fl.forward(x, empty)), tol_output<T>(),
                     "distance weighted focal, empty foreground");
}

TEST_CASE_TEMPLATE("DistanceWeightedFocal rejects bad input", T, float, double) {
  using DWF = losses::DistanceWeightedFocal<T, Backend>;
  DWF loss;
  const auto x = randn<T>({2, 2, 3, 4, 5}, 1);
  const auto labels = ball_labels({2, 1, 3, 4, 5}, false).cast<T>();
  // an all-foreground sample: the EDT is undefined (spec §3)
  auto all = TestTensor<T>::full({2, 1, 3, 4, 5}, T(1));
  CHECK_THROWS_WITH_AS(loss.forward(x, all), doctest::Contains("non-foreground"), value_error);
  // shapes
  try {
    loss.forward(x, ball_labels({2, 1, 3, 5, 4}, false).cast<T>());
    FAIL("no exception");
  } catch (const shape_error& e) {
    const std::string m = e.what();
    CHECK(m.find("mmnet::losses::DistanceWeightedFocal") != std::string::npos);
    CHECK(m.find("(2, 1, 3, 5, 4)") != std::string::npos);
  }
  CHECK_THROWS_AS(loss.forward(randn<T>({2, 2, 12}, 1), TestTensor<T>({2, 1, 12})), shape_error);  // rank 3 logits
  CHECK_THROWS_AS(loss.forward(x, labels, TestTensor<T>({2, 2, 3, 4, 5})), shape_error);        // alpha shape
  CHECK_THROWS_AS(loss.forward(randn<T>({2, 1, 3, 4, 5}, 1), TestTensor<T>({2, 1, 3, 4, 5})), shape_error);  // C <= fg
  // labels out of range
  auto bad = labels.clone();
  perturb_element(bad, 4, 7.0);
  CHECK_THROWS_AS(loss.forward(x, bad), value_error);
  // options
  CHECK_THROWS_AS(DWF(losses::DistanceWeightedFocalOptions().alpha_max(0.5)), value_error);
  CHECK_THROWS_AS(DWF(losses::DistanceWeightedFocalOptions().gamma(-2)), value_error);
  CHECK_THROWS_AS(DWF(losses::DistanceWeightedFocalOptions().foreground(-1)), value_error);
  CHECK_THROWS_AS(DWF(losses::DistanceWeightedFocalOptions().spacing({1.0, 0.0, 1.0})).forward(x, labels), value_error);
  CHECK_THROWS_AS(losses::distance_weight_map(TestTensor<T>({3, 4})), shape_error);
  CHECK_THROWS_AS(DWF().backward(), value_error);
}
