// Resampling to a spacing (include/mmnet/data/resample.hpp): trilinear images and nearest labels against
// tests/reference/resample_ref.py (torch F.interpolate(trilinear, align_corners=True) = scipy zoom(order=1)),
// extents, identity, round trips and bad inputs.
#include <mmnet/data/resample.hpp>

#include <cmath>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using mmnet::data::LabelMap;
using mmnet::data::Spacing;
using mmnet::data::Volume;

namespace {
const char* cases[] = {"npc", "mixed", "down", "halves", "size1", "identity"};

Spacing spacing_of(const HostArray& a) { return {a.data.at(0), a.data.at(1), a.data.at(2)}; }
}  // namespace

TEST_CASE("resample matches the reference (trilinear images, nearest labels)") {
  Fixture fx("resample");
  double worst = 0;
  for (const char* name : cases) {
    const std::string n = name;
    const HostArray& in = fx.array(n + "/input");
    const Spacing from = spacing_of(fx.array(n + "/spacing")), to = spacing_of(fx.array(n + "/target"));
    Volume v(in.shape[0], in.shape[1], in.shape[2], in.shape[3], from);
    for (std::size_t i = 0; i < v.data.size(); ++i) v.data[i] = static_cast<float>(in.data[i]);
    const HostArray& ext = fx.array(n + "/extent");
    const data::Extent3 e{static_cast<index_t>(ext.data[0]), static_cast<index_t>(ext.data[1]), static_cast<index_t>(ext.data[2])};
    CHECK_MESSAGE(data::resampled_extent({v.depth, v.height, v.width}, from, to) == e, n);

    const Volume r = data::resample(v, to);
    const HostArray& want = fx.array(n + "/trilinear");
    REQUIRE_MESSAGE((r.channels == v.channels && r.depth == e[0] && r.height == e[1] && r.width == e[2]), n);
    CHECK(r.spacing == to);
    double scale = 0, err = 0;
    for (std::size_t i = 0; i < r.data.size(); ++i) {
      scale = std::max(scale, std::abs(want.data[i]));
      err = std::max(err, std::abs(static_cast<double>(r.data[i]) - want.data[i]));
    }
    CHECK_MESSAGE(err <= tol_output<float>() * scale, n << ": trilinear error " << err);
    worst = std::max(worst, err / scale);

    const HostArray& lab = fx.array(n + "/labels");
    LabelMap m(lab.shape[0], lab.shape[1], lab.shape[2], from);
    for (std::size_t i = 0; i < m.data.size(); ++i) m.data[i] = static_cast<std::uint8_t>(lab.data[i]);
    const LabelMap rl = data::resample(m, to);
    const HostArray& wl = fx.array(n + "/nearest");
    REQUIRE((rl.depth == e[0] && rl.height == e[1] && rl.width == e[2]));
    CHECK(rl.spacing == to);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < rl.data.size(); ++i) wrong += rl.data[i] != static_cast<std::uint8_t>(wl.data[i]);
    CHECK_MESSAGE(wrong == 0, n << ": " << wrong << " labels differ");
  }
  MESSAGE("[mmnet] resample: largest relative trilinear error " << worst);
}

TEST_CASE("resample: extents, identity, corners and the way back") {
  // 24 slices of 3 mm -> 72 of 1 mm (the npc-like phantom); 0.6 mm -> floor(n 0.6 + 0.5).
  CHECK(data::resampled_extent({24, 64, 64}, {3.0, 1.0, 1.0}, {1.0, 1.0, 1.0}) == data::Extent3{72, 64, 64});
  CHECK(data::resampled_extent({5, 10, 3}, {1.0, 0.6, 0.5}, {1.0, 1.0, 1.0}) == data::Extent3{5, 6, 2});
  CHECK(data::resampled_extent({1, 1, 1}, {0.1, 0.1, 0.1}, {1.0, 1.0, 1.0}) == data::Extent3{1, 1, 1});
  Volume v(1, 3, 4, 5, {3.0, 1.0, 1.0});
  for (std::size_t i = 0; i < v.data.size(); ++i) v.data[i] = static_cast<float>(i % 7) - 2.5f;
  const Volume same = data::resample(v, {3.0, 1.0, 1.0});
  CHECK(same.data == v.data);
  // Align corners: the corner voxels keep their values; a linear ramp along D stays linear.
  Volume ramp(1, 4, 2, 2, {3.0, 1.0, 1.0});
  for (index_t z = 0; z < 4; ++z)
    for (index_t y = 0; y < 2; ++y)
      for (index_t x = 0; x < 2; ++x) ramp.at(0, z, y, x) = static_cast<float>(3 * z);
  const Volume up = data::resample(ramp, {1.0, 1.0, 1.0});
  REQUIRE(up.depth == 12);
  for (index_t z = 0; z < 12; ++z) CHECK(up.at(0, z, 1, 0) == doctest::Approx(9.0 * z / 11.0).epsilon(1e-6));
  // A label map up-sampled along D and resampled back onto its own grid is unchanged (nearest, align corners).
  LabelMap m(6, 5, 4, {3.0, 1.0, 1.0});
  for (std::size_t i = 0; i < m.data.size(); ++i) m.data[i] = static_cast<std::uint8_t>((i * 7) % 3);
  const LabelMap iso = data::resample(m, {1.0, 1.0, 1.0});
  CHECK(iso.depth == 18);
  const LabelMap back = data::resample_to_shape(iso, {6, 5, 4}, m.spacing);
  CHECK(back.data == m.data);
  CHECK(back.spacing == m.spacing);
}

TEST_CASE("resample: bad inputs") {
  Volume v(1, 3, 4, 5);
  CHECK_THROWS_AS(data::resample(v, {0.0, 1.0, 1.0}), value_error);
  CHECK_THROWS_AS(data::resample(v, {1.0, -1.0, 1.0}), value_error);
  CHECK_THROWS_AS(data::resample(v, {1.0, 1.0, NAN}), value_error);
  CHECK_THROWS_AS(data::resample_to_shape(v, {0, 4, 5}, {1.0, 1.0, 1.0}), shape_error);
  Volume empty(1, 0, 4, 5, {2.0, 1.0, 1.0});
  CHECK_THROWS_AS(data::resample(empty, {1.0, 1.0, 1.0}), shape_error);
  LabelMap m(3, 4, 5);
  CHECK_THROWS_AS(data::resample_to_shape(m, {3, 0, 5}, {1.0, 1.0, 1.0}), shape_error);
  CHECK_THROWS_AS(data::resampled_extent({3, 4, 5}, {1.0, 1.0, 0.0}, {1.0, 1.0, 1.0}), value_error);
}
