// Intensity normalisation (include/mmnet/data/normalize.hpp): Otsu thresholds and normalised volumes against
// tests/reference/normalize_ref.py (a numpy re-implementation of skimage.filters.threshold_otsu), hand-checked
// values, and bad input. Volumes are float32 (host data), so volumes are compared with the float tolerance and
// thresholds/statistics (computed in double from the same floats) with the double one.
#include <mmnet/data/crop.hpp>
#include <mmnet/data/normalize.hpp>

#include <algorithm>
#include <limits>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using mmnet::data::Volume;

namespace {

Volume volume_from(const HostArray& a) {
  REQUIRE(a.shape.size() == 4);
  Volume v(a.shape[0], a.shape[1], a.shape[2], a.shape[3]);
  for (std::size_t i = 0; i < a.data.size(); ++i) v.data[i] = static_cast<float>(a.data[i]);
  return v;
}

void check_volume(const Volume& v, const HostArray& expected, const std::string& what) {
  INFO(what);
  REQUIRE(v.shape().to_vector() == expected.shape);
  const double err = relative_error(std::vector<double>(v.data.begin(), v.data.end()), expected.data);
  ErrorStats::get().record(false, err, what);
  CHECK_MESSAGE(err <= tol_output<float>(), what << ": relative error " << err);
}

}  // namespace

TEST_CASE("otsu_threshold and normalisation match the numpy/skimage reference") {
  Fixture fx("normalize");
  const auto names = case_names(fx);
  REQUIRE(names.size() == 7);
  for (const auto& name : names) {
    const Volume v = volume_from(fx.array(name + "/input"));
    const auto& thr = fx.array(name + "/threshold").data;
    const auto& cnt = fx.array(name + "/mask_voxels").data;
    for (index_t c = 0; c < v.channels; ++c) {
      const std::string what = name + " channel " + std::to_string(c);
      check_close_scalar(data::otsu_threshold(v, c), thr[static_cast<std::size_t>(c)], tol_output<double>(),
                         what + " threshold");
      const auto mask = data::otsu_mask(v, c);
      index_t n = 0;
      for (auto m : mask) n += m;
      CHECK_MESSAGE(n == static_cast<index_t>(cnt[static_cast<std::size_t>(c)]), what << " mask voxels");
    }
    // Body z-score with MMFNet's clips (a prefix of them for cases with fewer than three channels).
    Volume body = v;
    auto o = data::NormalizeOptions();
    const double clips[3][2] = {{-2.0, 1.0}, {-3.0, 2.0}, {-2.0, 3.5}};
    for (index_t c = 0; c < std::min<index_t>(v.channels, 3); ++c) o.clip(c, clips[c][0], clips[c][1]);
    const auto stats = data::normalize(body, o, name);
    check_volume(body, fx.array(name + "/body"), name + " body z-score");
    if (v.channels == 3) {
      Volume preset = v;
      data::normalize(preset, data::NormalizeOptions::mmfnet(), name);
      check_volume(preset, fx.array(name + "/body"), name + " body z-score, NormalizeOptions::mmfnet()");
    }
    for (index_t c = 0; c < v.channels; ++c) {
      const auto k = static_cast<std::size_t>(c);
      const std::string what = name + " channel " + std::to_string(c);
      check_close_scalar(stats[k].threshold, thr[k], tol_output<double>(), what + " stats threshold");
      check_close_scalar(stats[k].mean, fx.array(name + "/body_mean").data[k], tol_output<double>(), what + " body mean");
      // std == 0 (a constant channel) cannot be compared relatively.
      if (fx.array(name + "/body_std").data[k] > 0)
        check_close_scalar(stats[k].std, fx.array(name + "/body_std").data[k], tol_output<double>(), what + " body std");
      else
        CHECK(stats[k].std == 0.0);
    }

    Volume z = v;
    data::normalize(z, data::NormalizeOptions(data::NormalizeMode::zscore), name);
    check_volume(z, fx.array(name + "/zscore"), name + " plain z-score");

    Volume ct = v;
    const auto cst = data::normalize(ct, data::NormalizeOptions(data::NormalizeMode::ct_percentile), name);
    check_volume(ct, fx.array(name + "/ct"), name + " ct percentile z-score");
    for (index_t c = 0; c < v.channels; ++c) {
      const auto k = static_cast<std::size_t>(c);
      check_close_scalar(cst[k].lower, fx.array(name + "/ct_lower").data[k], tol_output<double>(), name + " ct lower");
      check_close_scalar(cst[k].upper, fx.array(name + "/ct_upper").data[k], tol_output<double>(), name + " ct upper");
    }
  }
}

TEST_CASE("otsu_threshold on hand-made inputs") {
  // Two equal clusters: the threshold is the centre of the last bin of the lower cluster's side.
  std::vector<float> x = {0, 0, 0, 0, 10, 10, 10, 10};
  const double t = data::otsu_threshold(x.data(), static_cast<index_t>(x.size()));
  CHECK(t > 0.0);
  CHECK(t < 10.0);
  // skimage: the first maximum, i.e. bin 0's centre 10/512.
  CHECK(t == doctest::Approx(10.0 / 512.0).epsilon(1e-12));
  // A constant input returns the constant; its mask is empty.
  std::vector<float> k(7, 3.5f);
  CHECK(data::otsu_threshold(k.data(), 7) == 3.5);
  Volume v(1, 1, 1, 7);
  std::fill(v.data.begin(), v.data.end(), 3.5f);
  for (auto m : data::otsu_mask(v, 0)) CHECK(m == 0);
  // A single voxel.
  float one = -2.0f;
  CHECK(data::otsu_threshold(&one, 1) == -2.0);
}

TEST_CASE("normalize: body z-score by hand, clips, and a constant channel") {
  // 2 background voxels at 0 and 4 body voxels 10, 12, 14, 16: mean 13, std sqrt(5).
  Volume v(2, 1, 2, 3);
  const float ch0[6] = {0, 0, 10, 12, 14, 16};
  std::copy(ch0, ch0 + 6, v.channel(0));
  std::fill_n(v.channel(1), 6, 2.0f);
  auto o = data::NormalizeOptions().clip(0, -1.0, 1.0);
  const auto st = data::normalize(v, o, "hand");
  CHECK(st[0].mask_voxels == 4);
  CHECK(st[0].mean == doctest::Approx(13.0));
  CHECK(st[0].std == doctest::Approx(std::sqrt(5.0)));
  CHECK(v.at(0, 0, 0, 0) == -1.0f);                                        // -13/sqrt5 clipped
  CHECK(v.at(0, 0, 1, 0) == doctest::Approx(-1.0 / std::sqrt(5.0)));       // 12
  CHECK(v.at(0, 0, 1, 2) == 1.0f);                                         // 3/sqrt5 clipped
  // Constant channel: empty body mask, all voxels used, std 0 floored at eps -> zeros.
  CHECK(st[1].mask_voxels == 0);
  for (index_t i = 0; i < 6; ++i) CHECK(v.channel(1)[i] == 0.0f);
}

TEST_CASE("normalize: ct_percentile with dataset statistics") {
  Volume v(1, 1, 1, 5);
  const float x[5] = {-100, 0, 50, 100, 2000};
  std::copy(x, x + 5, v.data.begin());
  data::normalize(v, data::NormalizeOptions(data::NormalizeMode::ct_percentile).dataset_stats(0, {-50, 150, 50, 100}));
  const float expect[5] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f};
  for (int i = 0; i < 5; ++i) CHECK(v.data[static_cast<std::size_t>(i)] == doctest::Approx(expect[i]));
  CHECK(data::percentile({1, 2, 3, 4}, 50) == doctest::Approx(2.5));
  CHECK(data::percentile({5}, 99.5) == 5.0);
}

TEST_CASE("normalize rejects non-finite intensities and bad options, naming case and channel") {
  Volume v(2, 2, 3, 4);
  for (std::size_t i = 0; i < v.data.size(); ++i) v.data[i] = static_cast<float>(i % 7);
  Volume bad = v;
  bad.at(1, 1, 2, 3) = std::numeric_limits<float>::quiet_NaN();
  check_throws_naming<value_error>([&] { data::normalize(bad, data::NormalizeOptions(), "patient_7"); },
                                   {"mmnet::data::normalize", "finite", "nan", "patient_7", "channel 1", "(1, 2, 3)"});
  bad = v;
  bad.at(0, 0, 0, 1) = std::numeric_limits<float>::infinity();
  check_throws_naming<value_error>(
      [&] { data::normalize(bad, data::NormalizeOptions(data::NormalizeMode::zscore), "p8"); },
      {"mmnet::data::normalize", "inf", "p8", "channel 0"});
  check_throws_naming<value_error>([&] { data::otsu_threshold(bad, 0); }, {"mmnet::data::otsu_threshold", "finite"});
  // More clip ranges than channels.
  check_throws_naming<shape_error>([&] { Volume w = v; data::normalize(w, data::NormalizeOptions::mmfnet(), "p9"); },
                                   {"mmnet::data::normalize", "clip", "<= 2", "3", "p9"});
  CHECK_THROWS_AS(data::NormalizeOptions().clip(0, 1.0, -1.0), value_error);
  CHECK_THROWS_AS(data::NormalizeOptions().percentiles(99, 1), value_error);
  CHECK_THROWS_AS(data::otsu_threshold(v, 2), value_error);
  Volume empty(1, 0, 3, 4);
  CHECK_THROWS_AS(data::normalize(empty, data::NormalizeOptions()), shape_error);
}

TEST_CASE("normalize: nnU-Net's masked z-score (use_nonzero_mask) and nonzero_box match the numpy/scipy reference") {
  Fixture fx("normalize");
  const auto names = case_names(fx, "volume");
  REQUIRE(names.size() == 4);
  for (const auto& name : names) {
    const Volume v = volume_from(fx.array(name + "/volume"));
    // The mask: any channel non-zero, holes filled (scipy.ndimage.binary_fill_holes).
    const auto mask = data::nonzero_mask(v);
    const auto& want_mask = fx.array(name + "/mask").data;
    REQUIRE(mask.size() == want_mask.size());
    index_t wrong = 0, inside = 0;
    for (std::size_t i = 0; i < mask.size(); ++i) {
      wrong += mask[i] != static_cast<std::uint8_t>(want_mask[i]);
      inside += mask[i];
    }
    CHECK_MESSAGE(wrong == 0, name << ": " << wrong << " mask voxels differ");
    // The crop box of nnU-Net's crop_to_nonzero.
    const auto& b = fx.array(name + "/box").data;
    const data::Box box = data::nonzero_box(v);
    for (int a = 0; a < 3; ++a) {
      CHECK(box.begin[static_cast<std::size_t>(a)] == static_cast<index_t>(b[static_cast<std::size_t>(2 * a)]));
      CHECK(box.end[static_cast<std::size_t>(a)] == static_cast<index_t>(b[static_cast<std::size_t>(2 * a + 1)]));
    }
    // The masked z-score, via the preset and via the option.
    for (const auto& o : {data::NormalizeOptions::nnunet_mri(),
                          data::NormalizeOptions(data::NormalizeMode::zscore).use_nonzero_mask(true)}) {
      Volume z = v;
      const auto st = data::normalize(z, o, name);
      check_volume(z, fx.array(name + "/output"), name + " masked z-score");
      for (index_t c = 0; c < v.channels; ++c) {
        const auto k = static_cast<std::size_t>(c);
        CHECK(st[k].mask_voxels == inside);
        check_close_scalar(st[k].mean, fx.array(name + "/mean").data[k], tol_output<double>(), name + " mean");
        check_close_scalar(st[k].std, fx.array(name + "/std").data[k], tol_output<double>(), name + " std");
        // Outside the mask: exactly 0.
        for (std::size_t i = 0; i < mask.size(); ++i)
          if (!mask[i]) REQUIRE(z.channel(c)[i] == 0.0f);
      }
    }
  }
}

TEST_CASE("normalize: masked z-score by hand, an all-zero volume, and modes it does not apply to") {
  // Channel 0: 0 0 | 2 4 ; channel 1: 0 0 | 0 8 (voxel 2 is in the mask through channel 0). 1 x 1 x 4, no holes.
  Volume v(2, 1, 1, 4);
  const float c0[4] = {0, 0, 2, 4}, c1[4] = {0, 0, 0, 8};
  std::copy(c0, c0 + 4, v.channel(0));
  std::copy(c1, c1 + 4, v.channel(1));
  CHECK(data::nonzero_mask(v) == std::vector<std::uint8_t>{0, 0, 1, 1});
  CHECK(data::nonzero_box(v).str() == data::Box{{0, 0, 2}, {1, 1, 4}}.str());
  const auto st = data::normalize(v, data::NormalizeOptions::nnunet_mri(), "hand");
  CHECK(st[0].mean == 3.0);
  CHECK(st[0].std == 1.0);
  CHECK(st[1].mean == 4.0);
  CHECK(st[1].std == 4.0);
  const float w0[4] = {0, 0, -1, 1}, w1[4] = {0, 0, -1, 1};
  for (int i = 0; i < 4; ++i) {
    CHECK(v.channel(0)[i] == w0[i]);
    CHECK(v.channel(1)[i] == w1[i]);
  }
  // A 3 x 3 x 3 shell of ones around a zero centre: the centre is a hole, filled, so inside the mask.
  Volume shell(1, 3, 3, 3);
  std::fill(shell.data.begin(), shell.data.end(), 1.0f);
  shell.at(0, 1, 1, 1) = 0.0f;
  const auto m = data::nonzero_mask(shell);
  CHECK(std::count(m.begin(), m.end(), 1) == 27);
  // All zero: the mask is empty, the volume stays 0, nonzero_box falls back to the whole volume.
  Volume zero(2, 2, 3, 4);
  const auto zs = data::normalize(zero, data::NormalizeOptions::nnunet_mri());
  CHECK(zs[0].mask_voxels == 0);
  CHECK(std::all_of(zero.data.begin(), zero.data.end(), [](float x) { return x == 0.0f; }));
  CHECK(data::nonzero_box(zero).str() == data::Box::full(2, 3, 4).str());
  CHECK(data::nonzero_box(v, {1, 1, 1}).str() == data::Box{{0, 0, 1}, {1, 1, 4}}.str());
  // use_nonzero_mask is nnU-Net's option of the z-score only.
  CHECK(data::NormalizeOptions().use_nonzero_mask() == false);
  CHECK(data::NormalizeOptions::nnunet_mri().use_nonzero_mask());
  CHECK(data::NormalizeOptions::nnunet_mri().mode() == data::NormalizeMode::zscore);
  Volume w = v;
  check_throws_naming<value_error>([&] { data::normalize(w, data::NormalizeOptions().use_nonzero_mask(true), "p3"); },
                                   {"mmnet::data::normalize", "use_nonzero_mask", "body_zscore", "p3"});
  check_throws_naming<value_error>(
      [&] { data::normalize(w, data::NormalizeOptions(data::NormalizeMode::ct_percentile).use_nonzero_mask(true)); },
      {"use_nonzero_mask", "ct_percentile"});
  // Non-finite voxels are still rejected, naming the channel.
  Volume bad = v;
  bad.at(1, 0, 0, 1) = std::numeric_limits<float>::quiet_NaN();
  check_throws_naming<value_error>([&] { data::normalize(bad, data::NormalizeOptions::nnunet_mri(), "p4"); },
                                   {"finite", "p4", "channel 1"});
}
