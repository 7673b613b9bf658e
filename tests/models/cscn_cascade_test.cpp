// CSCN views, blocks, ROI, multi-view inference and the cascade (models/cscn/{views,cascade,training}.hpp) against
// tests/reference/cscn_ref.py, spec shared/specs/cascaded-fcn.md §8 points 2 (α map), 3 (focal loss), 5 (ROI rule
// and cascade), 6 (metrics) and 7 (smoke training), plus the §2.1 permutations, the §4.4 block grid and minimum
// extent, the §4.2 block sampling and flips, and bad input.
#include <chrono>
#include <cmath>
#include <map>

#include <mmnet/cscn.hpp>
#include <mmnet/layers/flip_permute.hpp>
#include <mmnet/metrics/metrics.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using models::cscn::Box3;
using models::cscn::View;

namespace {

Box3 box(std::array<index_t, 3> lo, std::array<index_t, 3> hi) {
  Box3 b;
  b.lo = lo;
  b.hi = hi;
  return b;
}

Box3 fixture_box(const HostArray& a) {
  return box({static_cast<index_t>(a.data[0]), static_cast<index_t>(a.data[1]), static_cast<index_t>(a.data[2])},
             {static_cast<index_t>(a.data[3]), static_cast<index_t>(a.data[4]), static_cast<index_t>(a.data[5])});
}

// A (D, H, W) byte mask with the given half-open boxes set.
std::vector<std::uint8_t> boxes_mask(const ops::Dims3& d, const std::vector<Box3>& boxes) {
  std::vector<std::uint8_t> m(static_cast<std::size_t>(d.numel()), 0);
  for (const auto& b : boxes)
    for (index_t z = b.lo[0]; z < b.hi[0]; ++z)
      for (index_t y = b.lo[1]; y < b.hi[1]; ++y)
        for (index_t x = b.lo[2]; x < b.hi[2]; ++x) m[static_cast<std::size_t>((z * d.h + y) * d.w + x)] = 1;
  return m;
}

template <class T>
TestTensor<T> as_volume(const HostArray& a) {
  std::vector<index_t> s{1, 1};
  s.insert(s.end(), a.shape.begin(), a.shape.end());
  return TestTensor<T>::from_vector(Shape(s), a.data);
}

template <class T>
TestTensor<T> squeeze(const TestTensor<T>& t, const HostArray& like) {
  return t.reshape(Shape(like.shape));
}

}  // namespace

TEST_CASE_TEMPLATE("CSCN α map: EDT + 1 on the full-volume GT, cropped (spec §8.2)", T, float, double) {
  Fixture fx("cscn");
  const auto gt = as_volume<T>(fx.array("alpha_case/gt"));
  const auto alpha = losses::distance_weight_map(gt);
  check_close(squeeze(alpha, fx.array("alpha_case/alpha")), fx.array("alpha_case/alpha"), std::is_same_v<T, double> ? 0.0 : 1e-7,
              "alpha map (exact in double)");
  const auto v = alpha.to_vector();
  std::map<long long, int> counts;  // by round(1e6 alpha)
  double total = 0;
  int tumour = 0;
  for (T a : v) {
    counts[std::llround(1e6 * static_cast<double>(a))]++;
    total += static_cast<double>(a);
    tumour += a > T(1);
  }
  CHECK(tumour == 141);
  CHECK(total == doctest::Approx(1002.656854249).epsilon(1e-9));
  CHECK(counts[1000000] == 699);
  CHECK(counts[2000000] == 119);
  CHECK(counts[std::llround(1e6 * (1 + std::sqrt(2.0)))] == 4);
  CHECK(counts[3000000] == 16);
  CHECK(counts[4000000] == 2);
  auto at = [&](index_t z, index_t y, index_t x) { return static_cast<double>(v[static_cast<std::size_t>((z * 10 + y) * 14 + x)]); };
  CHECK(at(2, 5, 6) == doctest::Approx(1 + std::sqrt(2.0)));
  CHECK(at(2, 4, 7) == 3);
  CHECK(at(4, 8, 2) == 2);
  CHECK(at(5, 9, 13) == 4);  // the outside of the volume is not background
  // The block [2:6, 2:10, 2:14] of the full map (what training cuts), not α of the cropped GT.
  const auto block = models::cscn::crop_box(alpha, box({2, 2, 2}, {6, 10, 14}), T(1));
  check_close(squeeze(block, fx.array("alpha_case/block")), fx.array("alpha_case/block"), tol_output<T>(), "alpha block");
  CHECK(mmnet::sum(block) == doctest::Approx(511.656854249).epsilon(1e-9));
  const auto from_crop = losses::distance_weight_map(models::cscn::crop_box(gt, box({2, 2, 2}, {6, 10, 14})));
  const auto bv = block.to_vector(), cv = from_crop.to_vector();
  int differ = 0;
  for (std::size_t i = 0; i < bv.size(); ++i) differ += bv[i] != cv[i];
  CHECK(differ == 9);
  check_throws_naming<value_error>([] { losses::distance_weight_map(TestTensor<T>::full(Shape{1, 1, 3, 4, 5}, T(1))); },
                                   {"distance_weight_map", "non-foreground"});
}

TEST_CASE_TEMPLATE("CSCN focal loss with the §8.2 α, gamma 0 and 2; gamma 0 with α = 1 is cross-entropy (spec §8.3)", T,
                   float, double) {
  Fixture fx("cscn");
  const auto z = fx.tensor<T>("loss_case/logits");
  const auto gt = as_volume<T>(fx.array("alpha_case/gt"));
  const auto alpha = losses::distance_weight_map(gt);
  for (int gamma : {0, 2}) {
    const std::string g = "loss_case/gamma" + std::to_string(gamma) + "/";
    losses::DistanceWeightedFocal<T, Backend> focal(losses::DistanceWeightedFocalOptions().gamma(gamma));
    check_close_scalar(focal.forward(z, gt, alpha), fx.scalar(g + "loss"), tol_output<T>(), g + "loss");
    check_close(focal.backward(), fx.array(g + "grad"), tol_grad<T>(), g + "dL/dlogits");
  }
  losses::DistanceWeightedFocal<T, Backend> ce(losses::DistanceWeightedFocalOptions().gamma(0));
  check_close_scalar(ce.forward(z, gt, TestTensor<T>::full(gt.shape(), T(1))), fx.scalar("loss_case/ce/loss"),
                     tol_output<T>(), "gamma 0, alpha 1 vs F.cross_entropy");
  check_close(ce.backward(), fx.array("loss_case/ce/grad"), tol_grad<T>(), "gamma 0, alpha 1 gradient vs F.cross_entropy");
}

TEST_CASE("CSCN views: permutations, inverses, block extraction, flips, grid and minimum extent (spec §2.1, §4.2, §4.4)") {
  using models::cscn::permutation;
  using models::cscn::inverse_permutation;
  const auto vol = randn<double>(Shape{1, 2, 5, 6, 7}, 1);
  for (View v : models::cscn::all_views) {
    const auto p = permutation(v), q = inverse_permutation(v);
    for (int k = 0; k < 3; ++k) CHECK(q[static_cast<std::size_t>(p[static_cast<std::size_t>(k)])] == k);
    const auto V = nn::permute(vol, p);
    CHECK(nn::permute(V, q).to_vector() == vol.to_vector());
    // A block inside the view equals the slice of the permuted volume; one reaching outside is zero-padded.
    const ExpandingArray3 size{3, 4, 2};
    for (std::array<index_t, 3> o : {std::array<index_t, 3>{1, 0, 2}, std::array<index_t, 3>{-2, 3, 5}}) {
      for (bool flip : {false, true}) {
        const auto b = models::cscn::extract_block(vol, v, o, size, -7.0, flip).to_vector();
        const auto Vv = V.to_vector();
        const index_t VD = V.size(2), VH = V.size(3), VW = V.size(4);
        const int fx = models::cscn::x_axis_in_view(v);
        bool ok = true;
        for (index_t c = 0; c < 2; ++c)
          for (index_t d = 0; d < 3; ++d)
            for (index_t h = 0; h < 4; ++h)
              for (index_t w = 0; w < 2; ++w) {
                index_t j[3] = {d, h, w};
                if (flip) j[fx] = size[fx] - 1 - j[fx];
                const index_t s[3] = {o[0] + j[0], o[1] + j[1], o[2] + j[2]};
                const bool in = s[0] >= 0 && s[0] < VD && s[1] >= 0 && s[1] < VH && s[2] >= 0 && s[2] < VW;
                const double want = in ? Vv[static_cast<std::size_t>(((c * VD + s[0]) * VH + s[1]) * VW + s[2])] : -7.0;
                ok = ok && b[static_cast<std::size_t>(((c * 3 + d) * 4 + h) * 2 + w)] == want;
              }
        CHECK_MESSAGE(ok, models::cscn::view_name(v) << " origin " << o[0] << "," << o[1] << "," << o[2] << " flip " << flip);
      }
    }
  }
  // The flip is along volume X: W for axial and coronal, D for sagittal.
  CHECK(models::cscn::x_axis_in_view(View::axial) == 2);
  CHECK(models::cscn::x_axis_in_view(View::coronal) == 2);
  CHECK(models::cscn::x_axis_in_view(View::sagittal) == 0);
  // Flipping the cut block = cutting the X-flipped volume at the mirrored origin.
  const auto flipped_vol = nn::flip(vol, {2});
  const auto a = models::cscn::extract_block(vol, View::sagittal, {1, 0, 2}, {4, 4, 4}, 0.0, true).to_vector();
  const auto b = models::cscn::extract_block(flipped_vol, View::sagittal, {7 - 1 - 4, 0, 2}, {4, 4, 4}, 0.0, false).to_vector();
  CHECK(a == b);

  using models::cscn::block_grid;
  CHECK(block_grid(10, 4, 2) == std::vector<index_t>{0, 2, 4, 6});
  CHECK(block_grid(14, 8, 4) == std::vector<index_t>{0, 4, 6});
  CHECK(block_grid(18, 12, 6) == std::vector<index_t>{0, 6});
  CHECK(block_grid(13, 8, 4) == std::vector<index_t>{0, 4, 5});
  CHECK(block_grid(8, 8, 4) == std::vector<index_t>{0});
  CHECK(block_grid(103, 8, 4).back() == 95);
  CHECK_THROWS_AS(block_grid(7, 8, 4), value_error);
  CHECK(models::cscn::min_extent({8, 24, 24}) == std::array<index_t, 3>{24, 24, 24});
  CHECK(models::cscn::min_extent({4, 8, 12}) == std::array<index_t, 3>{8, 12, 12});
}

TEST_CASE("CSCN ROI rule: largest 26-connected component, margin, growth to the minimum extent (spec §8.5)") {
  const ops::Dims3 d{10, 14, 18};
  const auto m = models::cscn::min_extent({4, 8, 12});
  // A = [4:6, 5:7, 7:9] plus (6, 7, 9), joined only diagonally (9 voxels); B = line [8, 1, 0:9] (9 voxels, later).
  const auto mask = boxes_mask(d, {box({4, 5, 7}, {6, 7, 9}), box({6, 7, 9}, {7, 8, 10}), box({8, 1, 0}, {9, 2, 9})});
  CHECK(models::cscn::roi_from_mask(mask.data(), d, 2, m) == box({2, 1, 3}, {10, 13, 15}));
  CHECK(models::cscn::roi_from_mask(mask.data(), d, 2, m, 6) == box({2, 0, 0}, {10, 12, 12}));
  // B alone: what "last of the tied" would give.
  const auto only_b = boxes_mask(d, {box({8, 1, 0}, {9, 2, 9})});
  CHECK(models::cscn::roi_from_mask(only_b.data(), d, 2, m) == box({2, 0, 0}, {10, 12, 12}));
  const std::vector<std::uint8_t> empty(static_cast<std::size_t>(d.numel()), 0);
  CHECK(models::cscn::roi_from_mask(empty.data(), d, 2, m) == box({0, 0, 0}, {10, 14, 18}));
  // The same through a probability map (P > 0.5).
  std::vector<double> prob(mask.size());
  for (std::size_t i = 0; i < mask.size(); ++i) prob[i] = mask[i] ? 0.75 : 0.5;
  CHECK(models::cscn::roi_from_probability(TestTensor<double>::from_vector(Shape{1, 1, 10, 14, 18}, prob), 2, m) ==
        box({2, 1, 3}, {10, 13, 15}));
  // An axis shorter than the minimum extent keeps the whole axis (the crop is padded by stage_predict).
  const ops::Dims3 small{6, 20, 20};
  const auto s = boxes_mask(small, {box({2, 9, 9}, {3, 10, 10})});
  CHECK(models::cscn::roi_from_mask(s.data(), small, 2, m) == box({0, 4, 4}, {6, 16, 16}));
  // Training ROI: bbox(GT ∪ largest CC of P_c > 0.5) + margin, clipped, no growth.
  std::vector<double> gt(mask.size(), 0.0);
  gt[static_cast<std::size_t>((1 * 14 + 12) * 18 + 16)] = 1;
  const auto roi = models::cscn::training_roi(TestTensor<double>::from_vector(Shape{1, 1, 10, 14, 18}, gt),
                                              TestTensor<double>::from_vector(Shape{1, 1, 10, 14, 18}, prob), 2);
  CHECK(roi == box({0, 3, 5}, {9, 14, 18}));
}

TEST_CASE_TEMPLATE("CSCN cascade matches the PyTorch/numpy reference: P_c, ROI, P_f, P_final, mask (spec §8.5)", T, float,
                   double) {
  Fixture fx("cscn");
  models::CSCN<T, Backend> cscn(models::CSCNOptions::tiny());
  cscn.bunet[0].load_state_dict(fx.group("cascade/bunet"));
  cscn.acdnet[0].load_state_dict(fx.group("cascade/acdnet"));
  CHECK(cscn.state_dict().size() == 66 + 252);
  CHECK(cscn.state_dict().keys().front() == "bunet.e1.0.conv.weight");
  for (const char* which : {"auto", "forced", "small"}) {
    const std::string g = std::string("cascade/") + which + "/";
    const auto image = as_volume<T>(fx.array(std::string(which) == "small" ? "cascade/small_image" : "cascade/image"));
    const Box3 ref_roi = fixture_box(fx.array(g + "roi"));
    // In float, a P_c within rounding of 0.5 could move the ROI; then stage 2 is checked on the reference's ROI.
    double closest = 1;
    for (double p : fx.array(g + "p_coarse").data) closest = std::min(closest, std::abs(p - 0.5));
    const bool forced = std::string(which) != "auto" || (std::is_same_v<T, float> && closest < 1e-4);
    const auto r = forced ? cscn.predict(image, ref_roi) : cscn.predict(image);
    check_close(squeeze(r.p_coarse, fx.array(g + "p_coarse")), fx.array(g + "p_coarse"), tol_output<T>(), g + "P_c");
    CHECK_MESSAGE(r.roi == ref_roi, g << "ROI " << r.roi.str() << " vs " << ref_roi.str());
    if (std::string(which) == "auto") CHECK(cscn.roi(r.p_coarse) == ref_roi);
    check_close(squeeze(r.p_fine, fx.array(g + "p_fine")), fx.array(g + "p_fine"), tol_output<T>(), g + "P_f");
    check_close(squeeze(r.p_final, fx.array(g + "p_final")), fx.array(g + "p_final"), tol_output<T>(), g + "P_final");
    // The mask where the reference's P_final is not within rounding of the threshold.
    const auto& pf = fx.array(g + "p_final").data;
    const auto& mk = fx.array(g + "mask").data;
    const auto ours = r.mask.to_vector();
    int bad = 0, compared = 0, ones = 0;
    for (std::size_t i = 0; i < pf.size(); ++i) {
      if (std::abs(pf[i] - 0.5) <= (std::is_same_v<T, double> ? 1e-9 : 1e-4)) continue;
      ++compared;
      ones += mk[i] > 0.5;
      bad += static_cast<double>(ours[i]) != mk[i];
    }
    CHECK_MESSAGE(bad == 0, g << bad << " of " << compared << " mask voxels differ");
    MESSAGE(g << "mask: " << ones << " tumour voxels of " << compared << " compared; ROI " << r.roi.str());
  }
}

TEST_CASE("CSCN stage_predict: independent of the blocks per call; view-specific weights; bad input") {
  models::CSCN<double, Backend> shared(models::CSCNOptions::tiny().inference_batch(1));
  models::CSCN<double, Backend> batched(models::CSCNOptions::tiny().inference_batch(7));
  batched.load_state_dict(shared.state_dict());
  const auto image = randn<double>(Shape{1, 1, 8, 13, 12}, 4);
  const auto a = shared.coarse(image), b = batched.coarse(image);
  CHECK(relative_error(std::vector<double>(a.to_vector()), std::vector<double>(b.to_vector())) <= 1e-13);
  // Three networks per stage: state-dict names bunet.{0,1,2}.*, and view v uses network v.
  models::CSCN<double, Backend> specific(models::CSCNOptions::tiny().view_specific_weights(true));
  CHECK(specific.bunet.size() == 3);
  CHECK(specific.state_dict().size() == 3 * (66 + 252));
  CHECK(specific.state_dict().keys().front() == "bunet.0.e1.0.conv.weight");
  for (std::size_t i = 0; i < 3; ++i) {
    specific.bunet[i].load_state_dict(shared.bunet[0].state_dict());
    specific.acdnet[i].load_state_dict(shared.acdnet[0].state_dict());
  }
  CHECK(specific.coarse(image).to_vector() == a.to_vector());
  CHECK(&specific.bunet_for(View::sagittal) == &specific.bunet[2]);

  auto net = [&](const TestTensor<double>& x, View) { return shared.bunet[0].forward(x); };
  check_throws_naming<value_error>([&] { models::cscn::stage_predict(net, image, {6, 8, 12}, {2, 4, 6}); },
                                   {"stage_predict", "block size D", "multiple of 4", "6"});
  check_throws_naming<value_error>([&] { models::cscn::stage_predict(net, image, {4, 8, 12}, {2, 0, 6}); },
                                   {"stage_predict", "stride H", "0"});
  check_throws_naming<shape_error>([&] { models::cscn::stage_predict(net, randn<double>(Shape{2, 1, 8, 8, 8}, 1), {4, 8, 12}, {2, 4, 6}); },
                                   {"stage_predict", "volume batch size", "1", "2"});
  check_throws_naming<shape_error>([&] { shared.predict(randn<double>(Shape{1, 2, 8, 12, 12}, 1)); },
                                   {"mmnet::models::CSCN", "image channels", "1", "2"});
  check_throws_naming<value_error>([&] { shared.predict(image, box({0, 0, 0}, {9, 13, 12})); },
                                   {"mmnet::models::CSCN", "ROI on axis Z", "[0:9, 0:13, 0:12]"});
  check_throws_naming<value_error>([&] { models::cscn::extract_block(image, View::axial, {0, 0, 0}, {0, 4, 4}); },
                                   {"extract_block", "block size D", "0"});
}

TEST_CASE("CSCN block sampling: case, view, centre 50 % on tumour, origin c - B // 2, flips (spec §4.2)") {
  // Label with a small tumour; α of the full volume.
  std::vector<double> lab(10 * 14 * 18, 0.0);
  for (index_t z = 3; z < 6; ++z)
    for (index_t y = 5; y < 8; ++y)
      for (index_t x = 7; x < 9; ++x) lab[static_cast<std::size_t>((z * 14 + y) * 18 + x)] = 1;
  const auto label = TestTensor<double>::from_vector(Shape{1, 1, 10, 14, 18}, lab);
  const auto alpha = losses::distance_weight_map(label);
  const auto image = randn<double>(Shape{1, 2, 10, 14, 18}, 9);
  const ops::Dims3 d{10, 14, 18};
  std::vector<models::cscn::SamplingCase> cases{models::cscn::sampling_case(label, models::cscn::whole_volume(d)),
                                                models::cscn::sampling_case(label, box({2, 3, 4}, {8, 10, 12}))};
  CHECK(cases[0].tumour.size() == 18);
  const ExpandingArray3 block{4, 8, 12};
  Generator g(5);
  int on_tumour = 0, flips = 0, views[3] = {0, 0, 0}, case1 = 0;
  const int n = 3000;
  for (int i = 0; i < n; ++i) {
    const auto dr = models::cscn::draw_block(g, cases, block);
    const auto& c = dr.centre;
    on_tumour += lab[static_cast<std::size_t>((c[0] * 14 + c[1]) * 18 + c[2])] == 1;
    flips += dr.flip;
    views[static_cast<int>(dr.view)]++;
    if (dr.case_index == 1) {
      ++case1;
      const bool in_region = c[0] >= 2 && c[0] < 8 && c[1] >= 3 && c[1] < 10 && c[2] >= 4 && c[2] < 12;
      CHECK((in_region || lab[static_cast<std::size_t>((c[0] * 14 + c[1]) * 18 + c[2])] == 1));
    }
    const auto p = models::cscn::permutation(dr.view);
    for (int k = 0; k < 3; ++k) CHECK(dr.origin[static_cast<std::size_t>(k)] == c[static_cast<std::size_t>(p[k])] - block[k] / 2);
  }
  // 50 % tumour centres plus the uniform ones that land on the tumour (18 of 2520 voxels, or of the 336-voxel ROI).
  CHECK(on_tumour > 0.47 * n);
  CHECK(on_tumour < 0.56 * n);
  CHECK(std::abs(flips - n / 2) < 0.05 * n);
  for (int v : views) CHECK(std::abs(v - n / 3) < 0.05 * n);
  CHECK(std::abs(case1 - n / 2) < 0.05 * n);

  // cut_block: same view, origin and flip for image, label and α; outside: 0, 0 and 1.
  models::cscn::BlockDraw dr;
  dr.view = View::sagittal;
  dr.centre = {1, 2, 16};
  const auto p = models::cscn::permutation(dr.view);
  for (int k = 0; k < 3; ++k) dr.origin[static_cast<std::size_t>(k)] = dr.centre[static_cast<std::size_t>(p[k])] - block[k] / 2;
  for (bool flip : {false, true}) {
    dr.flip = flip;
    const auto b = models::cscn::cut_block(image, label, alpha, dr, block);
    CHECK(b.input.shape() == Shape{1, 2, 4, 8, 12});
    CHECK(b.input.to_vector() == models::cscn::extract_block(image, dr.view, dr.origin, block, 0.0, flip).to_vector());
    CHECK(b.label.to_vector() == models::cscn::extract_block(label, dr.view, dr.origin, block, 0.0, flip).to_vector());
    CHECK(b.alpha.to_vector() == models::cscn::extract_block(alpha, dr.view, dr.origin, block, 1.0, flip).to_vector());
    const auto av = b.alpha.to_vector();
    CHECK(av.front() == 1.0);  // (d, h, w) = (0, 0, 0) lies outside (centre near the volume's corner)
    CHECK(*std::min_element(av.begin(), av.end()) == 1.0);
  }
  const auto batch = models::cscn::stack(std::vector<TestTensor<double>>{image, image});
  CHECK(batch.shape() == Shape{2, 2, 10, 14, 18});
  CHECK_THROWS_AS(models::cscn::stack(std::vector<TestTensor<double>>{image, label}), shape_error);
}

TEST_CASE("CSCN metrics: DSC, ASSD as the mean of the two directed means, micro F1 (spec §5, §8.6)") {
  const ops::Dims3 d{20, 20, 20};
  auto eval = [&](const std::vector<Box3>& x, const std::vector<Box3>& y) {
    const auto mx = boxes_mask(d, x), my = boxes_mask(d, y);
    const auto counts = metrics::confusion_counts(my, mx);
    const auto sd = metrics::surface_distances(my.data(), mx.data(), d);
    return std::make_tuple(counts, sd);
  };
  const Box3 X = box({5, 5, 5}, {15, 15, 15});
  // (a) shift by +1 along X.
  const auto [ca, sa] = eval({X}, {box({5, 5, 6}, {15, 15, 16})});
  CHECK(metrics::dice(ca) == doctest::Approx(0.9).epsilon(1e-12));
  CHECK(sa.pred_to_truth.size() == 488);
  CHECK(sa.truth_to_pred.size() == 488);
  CHECK(models::cscn::assd_mean_of_means(sa) == doctest::Approx(0.336065574).epsilon(1e-9));
  // (b) an 8^3 cube inside: the two ASSD variants separate.
  const auto [cb, sb] = eval({X}, {box({6, 6, 7}, {14, 14, 15})});
  CHECK(metrics::dice(cb) == doctest::Approx(0.677248677).epsilon(1e-9));
  CHECK(sb.truth_to_pred.size() == 488);
  CHECK(sb.pred_to_truth.size() == 296);
  CHECK(models::cscn::assd_mean_of_means(sb) == doctest::Approx(1.029331807).epsilon(1e-9));
  // The library's average_symmetric_surface_distance is MONAI's pooled mean -- the variant the spec rejects.
  CHECK(metrics::average_symmetric_surface_distance(sb) == doctest::Approx(1.059681129).epsilon(1e-9));
  // (c) touching Z = 0: the outside of the volume is background for the surfaces.
  const auto [cc, sc] = eval({box({0, 5, 5}, {10, 15, 15})}, {box({0, 6, 7}, {8, 14, 15})});
  CHECK(sc.truth_to_pred.size() == 488);
  CHECK(sc.pred_to_truth.size() == 296);
  CHECK(models::cscn::assd_mean_of_means(sc) == doctest::Approx(1.017877610).epsilon(1e-9));
  (void)cc;
  // Micro F1 over (a) and (b), next to the mean per-case DSC.
  metrics::ConfusionCounts sum = ca;
  sum.tp += cb.tp, sum.fp += cb.fp, sum.fn += cb.fn, sum.tn += cb.tn;
  const double p = metrics::precision(sum), r = metrics::recall(sum);
  CHECK(2 * p * r / (p + r) == doctest::Approx(0.804100228).epsilon(1e-9));
  CHECK(0.5 * (metrics::dice(ca) + metrics::dice(cb)) == doctest::Approx(0.788624339).epsilon(1e-9));
  // An empty mask: ASSD undefined (excluded and counted by the caller).
  const auto [ce, se] = eval({X}, {});
  (void)ce;
  CHECK(std::isnan(models::cscn::assd_mean_of_means(se)));
}

TEST_CASE("CSCN smoke training: ACDNet-tiny on a synthetic sphere, 200 iterations of batch 4, loss falls > 50 % (spec §8.7)") {
  using T = float;
  const index_t Z = 12, Y = 16, X = 20;
  std::vector<T> img(static_cast<std::size_t>(Z * Y * X)), lab(img.size()), pc(img.size());
  Generator noise(1);
  for (index_t z = 0; z < Z; ++z)
    for (index_t y = 0; y < Y; ++y)
      for (index_t x = 0; x < X; ++x) {
        const double r2 = (z - 6.0) * (z - 6.0) + (y - 8.0) * (y - 8.0) + (x - 10.0) * (x - 10.0);
        const std::size_t i = static_cast<std::size_t>((z * Y + y) * X + x);
        lab[i] = r2 <= 16.0 ? T(1) : T(0);
        img[i] = static_cast<T>(lab[i] + 0.3 * noise.normal());
        pc[i] = static_cast<T>(1.0 / (1.0 + std::exp(std::sqrt(r2) - 4.5)));  // a soft coarse prediction
      }
  const Shape s{1, 1, Z, Y, X};
  const auto image = TestTensor<T>::from_vector(s, img), label = TestTensor<T>::from_vector(s, lab);
  const auto input = nn::cat_channels(std::vector<TestTensor<T>>{image, TestTensor<T>::from_vector(s, pc)});
  const auto alpha = losses::distance_weight_map(label);
  const auto o = models::CSCNOptions::tiny();
  Generator g(0);
  models::ACDNet<T, Backend> net(o.acdnet(), g);
  models::cscn::he_normal_init(net, g);
  optim::Adam<T, Backend> adam(net.parameters(), models::cscn::adam_options(o));
  losses::DistanceWeightedFocal<T, Backend> focal(losses::DistanceWeightedFocalOptions().gamma(o.gamma()));
  const ops::Dims3 d{Z, Y, X};
  const std::vector<models::cscn::SamplingCase> cases{models::cscn::sampling_case(label, models::cscn::whole_volume(d))};
  std::vector<double> losses;
  const auto t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < 200; ++t) {
    std::vector<TestTensor<T>> xs, ys, as;
    for (int i = 0; i < 4; ++i) {
      const auto b = models::cscn::cut_block(input, label, alpha, models::cscn::draw_block(g, cases, o.block()), o.block());
      xs.push_back(b.input), ys.push_back(b.label), as.push_back(b.alpha);
    }
    adam.set_lr(models::cscn::exponential_lr(t, o));
    adam.zero_grad();
    const T l = focal.forward(net.forward(models::cscn::stack(xs)), models::cscn::stack(ys), models::cscn::stack(as));
    net.backward(focal.backward());
    adam.step();
    losses.push_back(static_cast<double>(l));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double first = 0, last = 0;
  for (int i = 0; i < 20; ++i) first += losses[static_cast<std::size_t>(i)], last += losses[losses.size() - 1 - static_cast<std::size_t>(i)];
  MESSAGE("smoke: mean loss of the first 20 iterations " << first / 20 << ", last 20 " << last / 20 << ", " << secs << " s");
  CHECK(last < 0.5 * first);
}
