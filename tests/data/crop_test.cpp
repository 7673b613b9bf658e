// Bounding boxes, crop and uncrop (include/mmnet/data/crop.hpp): hand-made masks, round trips, bad boxes.
#include <mmnet/data/crop.hpp>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using mmnet::data::Box;
using mmnet::data::LabelMap;
using mmnet::data::Volume;

namespace {
Volume ramp(index_t c, index_t d, index_t h, index_t w) {
  Volume v(c, d, h, w, {3.5, 0.5, 0.6});
  for (std::size_t i = 0; i < v.data.size(); ++i) v.data[i] = static_cast<float>(i) * 0.25f - 7.0f;
  return v;
}
}  // namespace

TEST_CASE("bounding_box of hand-made masks") {
  LabelMap m(5, 6, 7);
  CHECK(data::bounding_box(m).empty());
  CHECK(data::bounding_box(m) == Box{});
  m.at(2, 3, 4) = 1;
  CHECK(data::bounding_box(m) == Box{{2, 3, 4}, {3, 4, 5}});
  m.at(1, 5, 0) = 2;
  m.at(4, 0, 6) = 1;
  CHECK(data::bounding_box(m) == Box{{1, 0, 0}, {5, 6, 7}});
  LabelMap corner(5, 6, 7);
  corner.at(0, 0, 0) = 1;
  corner.at(0, 1, 2) = 1;
  CHECK(data::bounding_box(corner) == Box{{0, 0, 0}, {1, 2, 3}});
  // Margins grow the box and are clamped at the grid.
  CHECK(data::expand(Box{{0, 0, 0}, {1, 2, 3}}, {1, 2, 3}, 5, 6, 7) == Box{{0, 0, 0}, {2, 4, 6}});
  CHECK(data::expand(Box{{2, 3, 4}, {3, 4, 5}}, {1, 1, 5}, 5, 6, 7) == Box{{1, 2, 0}, {4, 5, 7}});
  CHECK_THROWS_AS(data::expand(Box{{2, 3, 4}, {3, 4, 5}}, {1, -1, 0}, 5, 6, 7), value_error);
  CHECK(Box{{1, 2, 3}, {4, 6, 8}}.voxels() == 60);
  CHECK(Box{{1, 2, 3}, {4, 6, 8}}.str() == "[1:4, 2:6, 3:8]");
}

TEST_CASE("body_box: Otsu mask of the chosen channel, margin, constant volume") {
  Volume v(2, 6, 9, 8);
  // Channel 0: a bright block at [1:4, 2:7, 3:5); channel 1: bright everywhere except one corner voxel.
  for (index_t z = 1; z < 4; ++z)
    for (index_t y = 2; y < 7; ++y)
      for (index_t x = 3; x < 5; ++x) v.at(0, z, y, x) = 100.0f + static_cast<float>(z + y + x);
  std::fill_n(v.channel(1), v.voxels(), 50.0f);
  v.at(1, 0, 0, 0) = 0.0f;
  CHECK(data::body_box(v, 0) == Box{{1, 2, 3}, {4, 7, 5}});
  CHECK(data::body_box(v, 0, {1, 1, 1}) == Box{{0, 1, 2}, {5, 8, 6}});
  CHECK(data::body_box(v, 0, {10, 10, 10}) == Box::full(6, 9, 8));
  CHECK(data::body_box(v, 1) == Box::full(6, 9, 8));
  Volume flat(1, 3, 4, 5);
  std::fill(flat.data.begin(), flat.data.end(), 1.0f);
  CHECK(data::body_box(flat, 0) == Box::full(3, 4, 5));
}

TEST_CASE("crop then uncrop: round trip inside the box, background outside") {
  const Volume v = ramp(2, 5, 6, 7);
  const Box b{{1, 2, 3}, {4, 6, 6}};
  const Volume c = data::crop(v, b);
  CHECK(c.shape() == Shape{2, 3, 4, 3});
  CHECK(c.spacing == v.spacing);
  for (index_t ch = 0; ch < 2; ++ch)
    for (index_t z = 0; z < 3; ++z)
      for (index_t y = 0; y < 4; ++y)
        for (index_t x = 0; x < 3; ++x) CHECK(c.at(ch, z, y, x) == v.at(ch, z + 1, y + 2, x + 3));
  const Volume u = data::uncrop(c, b, 5, 6, 7, -9.0f);
  for (index_t ch = 0; ch < 2; ++ch)
    for (index_t z = 0; z < 5; ++z)
      for (index_t y = 0; y < 6; ++y)
        for (index_t x = 0; x < 7; ++x) {
          const bool in = z >= 1 && z < 4 && y >= 2 && y < 6 && x >= 3 && x < 6;
          CHECK(u.at(ch, z, y, x) == (in ? v.at(ch, z, y, x) : -9.0f));
        }
  // crop of the uncropped result gives the crop back; the whole box is the identity.
  CHECK(data::crop(u, b).data == c.data);
  CHECK(data::crop(v, Box::full(5, 6, 7)).data == v.data);

  LabelMap m(5, 6, 7);
  for (std::size_t i = 0; i < m.data.size(); ++i) m.data[i] = static_cast<std::uint8_t>(i % 3);
  const LabelMap mc = data::crop(m, b);
  CHECK(mc.shape() == Shape{3, 4, 3});
  const LabelMap mu = data::uncrop(mc, b, 5, 6, 7);
  for (index_t z = 0; z < 5; ++z)
    for (index_t y = 0; y < 6; ++y)
      for (index_t x = 0; x < 7; ++x) {
        const bool in = z >= 1 && z < 4 && y >= 2 && y < 6 && x >= 3 && x < 6;
        CHECK(mu.at(z, y, x) == (in ? m.at(z, y, x) : 0));
      }
  // Size-1 axes.
  const Box thin{{4, 0, 6}, {5, 6, 7}};
  CHECK(data::uncrop(data::crop(m, thin), thin, 5, 6, 7, 7).at(4, 5, 6) == m.at(4, 5, 6));
  CHECK(data::uncrop(data::crop(m, thin), thin, 5, 6, 7, 7).at(0, 0, 0) == 7);
}

TEST_CASE("crop and uncrop reject boxes outside the grid and mismatched extents") {
  const Volume v = ramp(1, 5, 6, 7);
  check_throws_naming<shape_error>([&] { data::crop(v, Box{{0, 0, 0}, {5, 7, 7}}); },
                                   {"mmnet::data::crop", "box", "[0:5, 0:7, 0:7]", "0:6"});
  CHECK_THROWS_AS(data::crop(v, Box{{-1, 0, 0}, {2, 2, 2}}), shape_error);
  CHECK_THROWS_AS(data::crop(v, Box{{2, 2, 2}, {2, 3, 3}}), shape_error);  // empty
  LabelMap m(3, 3, 3);
  check_throws_naming<shape_error>([&] { data::uncrop(m, Box{{0, 0, 0}, {3, 3, 4}}, 5, 6, 7); },
                                   {"mmnet::data::uncrop", "(3, 3, 4)", "(3, 3, 3)"});
  CHECK_THROWS_AS(data::uncrop(m, Box{{3, 0, 0}, {6, 3, 3}}, 5, 6, 7), shape_error);
  CHECK_THROWS_AS(data::uncrop(v, Box{{0, 0, 0}, {5, 6, 6}}, 5, 6, 7), shape_error);
}
