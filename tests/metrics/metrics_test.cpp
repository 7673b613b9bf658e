// Segmentation metrics (mmnet/metrics): every metric of tests/reference/metrics_ref.py (scipy
// distance_transform_edt + binary_erosion on MONAI's code path) on hand-made, random and empty mask pairs with
// anisotropic spacing, BraTS regions of label volumes, numpy's percentile, crop invariance, bad input.
// Host-side code: the tests use cpu types (and one tensor of the test backend, copied to the host).
#include <mmnet/metrics/metrics.hpp>

#include <cmath>
#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;

namespace {

// NaN and inf must match exactly; finite values within double's 1e-10 relative.
void check_metric(double actual, double expected, const std::string& what) {
  INFO(what);
  if (std::isnan(expected)) {
    CHECK_MESSAGE(std::isnan(actual), what << ": " << actual << ", expected NaN");
  } else if (std::isinf(expected)) {
    CHECK_MESSAGE(actual == expected, what << ": " << actual << ", expected " << expected);
  } else {
    check_close_scalar<double>(actual, expected, tol_output<double>(), what);
  }
}

metrics::Dims3 dims_of(const HostArray& a) {
  REQUIRE(a.shape.size() == 3);
  return {a.shape[0], a.shape[1], a.shape[2]};
}

ops::Spacing3 spacing_of(const HostArray& a) { return {a.data.at(0), a.data.at(1), a.data.at(2)}; }

std::vector<std::uint8_t> bytes(const std::vector<double>& v) {
  std::vector<std::uint8_t> b(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) b[i] = v[i] != 0 ? 1 : 0;
  return b;
}

}  // namespace

TEST_CASE("metrics: every metric of each mask pair matches the scipy / MONAI-path reference") {
  Fixture fx("metrics");
  const int cases = static_cast<int>(fx.scalar("num_cases"));
  CHECK(cases >= 20);
  for (int k = 0; k < cases; ++k) {
    const std::string c = "case" + std::to_string(k) + "/";
    const auto& pa = fx.array(c + "pred");
    const auto& ta = fx.array(c + "truth");
    const metrics::Dims3 dims = dims_of(pa);
    const ops::Spacing3 sp = spacing_of(fx.array(c + "spacing"));
    metrics::MetricOptions opt;
    opt.nsd_tolerance_mm = fx.scalar(c + "tolerance");
    opt.hd_percentile = fx.scalar(c + "percentile");
    const auto m = metrics::evaluate(pa.data, ta.data, dims, sp, opt);
    CHECK(m.counts.tp == static_cast<std::int64_t>(fx.scalar(c + "tp")));
    CHECK(m.counts.fp == static_cast<std::int64_t>(fx.scalar(c + "fp")));
    CHECK(m.counts.fn == static_cast<std::int64_t>(fx.scalar(c + "fn")));
    CHECK(m.counts.tn == static_cast<std::int64_t>(fx.scalar(c + "tn")));
    check_metric(m.dice, fx.scalar(c + "dice"), c + "dice");
    check_metric(m.iou, fx.scalar(c + "iou"), c + "iou");
    check_metric(m.precision, fx.scalar(c + "precision"), c + "precision");
    check_metric(m.recall, fx.scalar(c + "recall"), c + "recall");
    check_metric(m.hd, fx.scalar(c + "hd"), c + "hd");
    check_metric(m.hd95, fx.scalar(c + "hd95"), c + "hd95");
    check_metric(m.assd, fx.scalar(c + "assd"), c + "assd");
    check_metric(m.nsd, fx.scalar(c + "nsd"), c + "nsd");
    // ignore_empty = false, directed and non-symmetric variants
    check_metric(metrics::dice(m.counts, false), fx.scalar(c + "dice_keep_empty"), c + "dice_keep_empty");
    check_metric(metrics::iou(m.counts, false), fx.scalar(c + "iou_keep_empty"), c + "iou_keep_empty");
    const auto sd = metrics::surface_distances(pa.data, ta.data, dims, sp);
    check_metric(metrics::hausdorff_distance(sd, true), fx.scalar(c + "hd_directed"), c + "hd_directed");
    check_metric(metrics::hausdorff_distance(sd, opt.hd_percentile, true), fx.scalar(c + "hd95_directed"),
                 c + "hd95_directed");
    check_metric(metrics::average_surface_distance(sd, false), fx.scalar(c + "asd"), c + "asd");
    // the directed distance lists themselves, voxel by voxel (row-major order of the surface voxels)
    REQUIRE(static_cast<double>(sd.pred_to_truth.size()) == fx.scalar(c + "num_pred_to_truth"));
    REQUIRE(static_cast<double>(sd.truth_to_pred.size()) == fx.scalar(c + "num_truth_to_pred"));
    if (!sd.pred_to_truth.empty() && std::isfinite(sd.pred_to_truth[0]))
      check_close(Tensor<double, Backend>::from_vector({static_cast<index_t>(sd.pred_to_truth.size())}, sd.pred_to_truth),
                  fx.array(c + "pred_to_truth"), tol_output<double>(), c + "pred_to_truth");
    if (!sd.truth_to_pred.empty() && std::isfinite(sd.truth_to_pred[0]))
      check_close(Tensor<double, Backend>::from_vector({static_cast<index_t>(sd.truth_to_pred.size())}, sd.truth_to_pred),
                  fx.array(c + "truth_to_pred"), tol_output<double>(), c + "truth_to_pred");
    for (double v : sd.pred_to_truth) CHECK((std::isinf(v) == std::isinf(sd.pred_to_truth[0])));
  }
}

TEST_CASE("metrics: byte, vector and tensor (cpu float/double, test backend) inputs give the same values") {
  Fixture fx("metrics");
  for (int k : {3, 6, 18}) {
    const std::string c = "case" + std::to_string(k) + "/";
    const auto& pa = fx.array(c + "pred");
    const auto& ta = fx.array(c + "truth");
    const metrics::Dims3 dims = dims_of(pa);
    const ops::Spacing3 sp = spacing_of(fx.array(c + "spacing"));
    const auto ref = metrics::evaluate(pa.data, ta.data, dims, sp);
    const auto pb = bytes(pa.data), tb = bytes(ta.data);
    const auto a = metrics::evaluate(pb.data(), tb.data(), dims, sp);
    const Shape s{dims.d, dims.h, dims.w}, s5{1, 1, dims.d, dims.h, dims.w};
    const auto b = metrics::evaluate(Tensor<float, cpu>::from_vector(s, pa.data), Tensor<float, cpu>::from_vector(s, ta.data), sp);
    const auto d = metrics::evaluate(Tensor<double, cpu>::from_vector(s5, pa.data), Tensor<double, cpu>::from_vector(s5, ta.data), sp);
    const auto e = metrics::evaluate(TestTensor<double>::from_vector(s, pa.data), TestTensor<double>::from_vector(s, ta.data), sp);
    for (const auto* m : {&a, &b, &d, &e}) {
      CHECK(m->dice == ref.dice);
      CHECK(m->hd == ref.hd);
      CHECK(m->hd95 == ref.hd95);
      CHECK(m->assd == ref.assd);
      CHECK(m->nsd == ref.nsd);
      CHECK(m->counts.tp == ref.counts.tp);
    }
    const auto cc = metrics::confusion_counts(Tensor<double, cpu>::from_vector(s, pa.data), Tensor<double, cpu>::from_vector(s, ta.data));
    CHECK(cc.tp == ref.counts.tp);
    CHECK(cc.fn == ref.counts.fn);
    // surface = false leaves the surface metrics NaN and the overlap ones unchanged
    metrics::MetricOptions no_surface;
    no_surface.surface = false;
    const auto f = metrics::evaluate(pa.data, ta.data, dims, sp, no_surface);
    CHECK(f.dice == ref.dice);
    CHECK(std::isnan(f.hd));
    CHECK(std::isnan(f.nsd));
  }
}

TEST_CASE("metrics: label volumes, BraTS regions (WT/TC/ET) and labels 1..4") {
  Fixture fx("metrics");
  const auto& pa = fx.array("labels/pred");
  const auto& ta = fx.array("labels/truth");
  const metrics::Dims3 dims = dims_of(pa);
  const ops::Spacing3 sp = spacing_of(fx.array("labels/spacing"));
  metrics::MetricOptions opt;
  opt.nsd_tolerance_mm = fx.scalar("labels/tolerance");
  auto regions = metrics::brats_regions();
  const auto per_label = metrics::label_regions(4);
  regions.insert(regions.end(), per_label.begin(), per_label.end());
  REQUIRE(regions.size() == 7);
  CHECK(regions[0].name == "WT");
  CHECK(regions[6].name == "4");
  const auto res = metrics::evaluate_regions(pa.data, ta.data, dims, sp, regions, opt);
  // int labels and a label tensor give the same
  std::vector<int> pi(pa.data.begin(), pa.data.end()), ti(ta.data.begin(), ta.data.end());
  const auto res_int = metrics::evaluate_regions(pi, ti, dims, sp, regions, opt);
  const Shape s{dims.d, dims.h, dims.w};
  const auto res_t = metrics::evaluate_regions(Tensor<float, cpu>::from_vector(s, pa.data), Tensor<float, cpu>::from_vector(s, ta.data),
                                               sp, regions, opt);
  REQUIRE(res.size() == regions.size());
  for (std::size_t r = 0; r < regions.size(); ++r) {
    const std::string p = "labels/" + regions[r].name + "/";
    const auto& m = res[r];
    CHECK(m.counts.tp == static_cast<std::int64_t>(fx.scalar(p + "tp")));
    CHECK(m.counts.fp == static_cast<std::int64_t>(fx.scalar(p + "fp")));
    CHECK(m.counts.fn == static_cast<std::int64_t>(fx.scalar(p + "fn")));
    check_metric(m.dice, fx.scalar(p + "dice"), p + "dice");
    check_metric(m.iou, fx.scalar(p + "iou"), p + "iou");
    check_metric(m.precision, fx.scalar(p + "precision"), p + "precision");
    check_metric(m.recall, fx.scalar(p + "recall"), p + "recall");
    check_metric(m.hd, fx.scalar(p + "hd"), p + "hd");
    check_metric(m.hd95, fx.scalar(p + "hd95"), p + "hd95");
    check_metric(m.assd, fx.scalar(p + "assd"), p + "assd");
    check_metric(m.nsd, fx.scalar(p + "nsd"), p + "nsd");
    check_metric(res_int[r].hd95, m.hd95, p + "hd95 (int labels)");
    check_metric(res_t[r].assd, m.assd, p + "assd (tensor labels)");
  }
  // label 3 is in neither volume: every metric NaN (the region is absent, MONAI's both-empty rule)
  CHECK(std::isnan(res[5].dice));
  CHECK(std::isnan(res[5].hd));
  CHECK(std::isnan(res[5].nsd));
}

TEST_CASE("metrics::percentile equals numpy.percentile (linear interpolation)") {
  Fixture fx("metrics");
  const auto& qs = fx.array("percentile/q").data;
  const int lists = static_cast<int>(fx.scalar("percentile/num_lists"));
  for (int k = 0; k < lists; ++k) {
    const std::string p = "percentile/list" + std::to_string(k) + "/";
    const auto& v = fx.array(p + "values").data;
    const auto& e = fx.array(p + "expected").data;
    for (std::size_t i = 0; i < qs.size(); ++i)
      check_metric(metrics::percentile(v, qs[i]), e[i], p + "q=" + std::to_string(qs[i]));
  }
  CHECK(std::isnan(metrics::percentile({}, 95)));
  const double inf = INFINITY;
  CHECK(metrics::percentile({inf, inf, inf}, 95) == inf);  // MONAI (torch.quantile) gives NaN: documented
  CHECK(metrics::percentile({inf}, 0) == inf);
}

TEST_CASE("metrics: hand-computed values and the empty-mask conventions") {
  const metrics::Dims3 dims{5, 6, 7};
  std::vector<std::uint8_t> a(210, 0), b(210, 0), none(210, 0);
  a[(1 * 6 + 2) * 7 + 3] = 1;
  b[(4 * 6 + 0) * 7 + 6] = 1;
  const ops::Spacing3 sp{3.0, 0.8, 0.6};
  const auto m = metrics::evaluate(a, b, dims, sp);
  const double d = std::sqrt(9.0 * 9.0 + 1.6 * 1.6 + 1.8 * 1.8);
  CHECK(m.hd == doctest::Approx(d).epsilon(1e-14));
  CHECK(m.hd95 == doctest::Approx(d).epsilon(1e-14));
  CHECK(m.assd == doctest::Approx(d).epsilon(1e-14));
  CHECK(m.nsd == 0.0);
  CHECK(m.dice == 0.0);
  // a mask against itself: 1 and 0 everywhere, also when it fills the whole volume (surface on the border)
  std::vector<std::uint8_t> full(210, 1);
  const auto s = metrics::evaluate(full, full, dims, sp);
  CHECK(s.dice == 1.0);
  CHECK(s.iou == 1.0);
  CHECK(s.hd == 0.0);
  CHECK(s.assd == 0.0);
  CHECK(s.nsd == 1.0);
  CHECK(metrics::detail::count_nonzero(metrics::surface_voxels(full.data(), dims)) == 210 - 3 * 4 * 5);
  // empty prediction / truth / both
  const auto ep = metrics::evaluate(none, b, dims, sp), et = metrics::evaluate(a, none, dims, sp),
             eb = metrics::evaluate(none, none, dims, sp);
  CHECK(ep.dice == 0.0);
  CHECK(std::isnan(ep.precision));
  CHECK(ep.recall == 0.0);
  CHECK(std::isinf(ep.hd));
  CHECK(std::isinf(ep.hd95));
  CHECK(std::isinf(ep.assd));
  CHECK(ep.nsd == 0.0);
  CHECK(std::isnan(et.dice));
  CHECK(std::isnan(et.iou));
  CHECK(et.precision == 0.0);
  CHECK(std::isnan(et.recall));
  CHECK(std::isinf(et.hd));
  CHECK(et.nsd == 0.0);
  CHECK(std::isnan(eb.dice));
  CHECK(std::isnan(eb.hd));
  CHECK(std::isnan(eb.hd95));
  CHECK(std::isnan(eb.assd));
  CHECK(std::isnan(eb.nsd));
  CHECK(metrics::dice(et.counts, false) == 0.0);
  CHECK(metrics::dice(eb.counts, false) == 1.0);
  CHECK(metrics::iou(eb.counts, false) == 1.0);
  // MONAI: an empty prediction gives one inf per truth surface voxel in the P->G list too
  const auto sd = metrics::surface_distances(none, b, dims, sp);
  CHECK(sd.pred_to_truth.size() == 1);
  CHECK(sd.truth_to_pred.size() == 1);
  CHECK(std::isinf(metrics::hausdorff_distance(sd, true)));
}

TEST_CASE("metrics: results do not depend on where the masks sit in the volume (cropping)") {
  Fixture fx("metrics");
  for (int k : {5, 8, 17, 18}) {
    const std::string c = "case" + std::to_string(k) + "/";
    const auto& pa = fx.array(c + "pred");
    const auto& ta = fx.array(c + "truth");
    const metrics::Dims3 dims = dims_of(pa);
    const ops::Spacing3 sp = spacing_of(fx.array(c + "spacing"));
    // embed at an offset into a larger volume: the masks no longer touch the border, so only masks that did
    // not touch it keep their values; compare those and check a shift changes nothing
    bool touches = false;
    for (index_t z = 0; z < dims.d; ++z)
      for (index_t y = 0; y < dims.h; ++y)
        for (index_t x = 0; x < dims.w; ++x) {
          const index_t i = (z * dims.h + y) * dims.w + x;
          const bool border = z == 0 || y == 0 || x == 0 || z == dims.d - 1 || y == dims.h - 1 || x == dims.w - 1;
          touches = touches || (border && (pa.data[static_cast<std::size_t>(i)] != 0 || ta.data[static_cast<std::size_t>(i)] != 0));
        }
    const metrics::Dims3 big{dims.d + 5, dims.h + 3, dims.w + 7};
    std::vector<double> pb(static_cast<std::size_t>(big.numel()), 0.0), tb(pb.size(), 0.0);
    for (index_t z = 0; z < dims.d; ++z)
      for (index_t y = 0; y < dims.h; ++y)
        for (index_t x = 0; x < dims.w; ++x) {
          const auto i = static_cast<std::size_t>((z * dims.h + y) * dims.w + x);
          const auto j = static_cast<std::size_t>(((z + 2) * big.h + y + 1) * big.w + x + 4);
          pb[j] = pa.data[i], tb[j] = ta.data[i];
        }
    const auto a = metrics::evaluate(pa.data, ta.data, dims, sp), b = metrics::evaluate(pb, tb, big, sp);
    CHECK(a.dice == b.dice);
    if (!touches) {
      check_metric(b.hd, a.hd, c + "embedded hd");
      check_metric(b.hd95, a.hd95, c + "embedded hd95");
      check_metric(b.assd, a.assd, c + "embedded assd");
      check_metric(b.nsd, a.nsd, c + "embedded nsd");
    }
  }
}

TEST_CASE("metrics: bad input names the component, the expected and the actual value") {
  const metrics::Dims3 dims{3, 4, 5};
  std::vector<double> a(60, 1.0), short_v(59, 1.0);
  CHECK_THROWS_AS(metrics::evaluate(a, short_v, dims), shape_error);
  CHECK_THROWS_AS(metrics::evaluate(short_v, a, dims), shape_error);
  CHECK_THROWS_AS(metrics::evaluate(a, a, dims, {1.0, 0.0, 1.0}), value_error);
  CHECK_THROWS_AS(metrics::evaluate(a, a, dims, {1.0, NAN, 1.0}), value_error);
  CHECK_THROWS_AS(metrics::evaluate(a, a, metrics::Dims3{0, 4, 5}), shape_error);
  metrics::MetricOptions bad;
  bad.hd_percentile = 101;
  CHECK_THROWS_AS(metrics::evaluate(a, a, dims, {1, 1, 1}, bad), value_error);
  bad = {};
  bad.nsd_tolerance_mm = -1;
  CHECK_THROWS_AS(metrics::evaluate(a, a, dims, {1, 1, 1}, bad), value_error);
  bad.nsd_tolerance_mm = INFINITY;
  CHECK_THROWS_AS(metrics::evaluate(a, a, dims, {1, 1, 1}, bad), value_error);
  CHECK_THROWS_AS(metrics::percentile({1.0}, -1), value_error);
  CHECK_THROWS_AS(metrics::normalized_surface_dice({}, -0.5), value_error);
  CHECK_THROWS_AS(metrics::confusion_counts(a, short_v), shape_error);
  const auto t = Tensor<double, cpu>::from_vector({3, 4, 5}, a);
  const auto u = Tensor<double, cpu>::from_vector({3, 5, 4}, a);
  CHECK_THROWS_AS(metrics::evaluate(t, u), shape_error);
  CHECK_THROWS_AS(metrics::confusion_counts(t, u), shape_error);
  CHECK_THROWS_AS(metrics::evaluate(Tensor<double, cpu>::from_vector({2, 3, 2, 5}, a), Tensor<double, cpu>::from_vector({2, 3, 2, 5}, a)), shape_error);
  CHECK_THROWS_AS(metrics::evaluate(Tensor<double, cpu>::from_vector({60}, a), Tensor<double, cpu>::from_vector({60}, a)), shape_error);
  CHECK_THROWS_AS(metrics::evaluate_regions(a, a, dims, {1, 1, 1}, {}), value_error);
  CHECK_THROWS_AS(metrics::evaluate_regions(a, a, dims, {1, 1, 1}, {{"x", {}}}), value_error);
  CHECK_THROWS_AS(metrics::label_regions(0), value_error);
  try {
    metrics::evaluate(a, a, dims, {1.0, -2.0, 1.0});
    FAIL("no throw");
  } catch (const value_error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("mmnet::metrics::evaluate") != std::string::npos);
    CHECK(msg.find("spacing[1]") != std::string::npos);
    CHECK(msg.find("-2") != std::string::npos);
  }
}
