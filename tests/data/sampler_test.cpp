// Patch sampling (include/mmnet/data/sampler.hpp): determinism, nnU-Net's foreground oversampling, padding,
// bad input.
#include <mmnet/data/sampler.hpp>

#include <set>

#include "../support/mmnet_test.hpp"

using namespace mmnet;
using namespace mmnet::test;
using mmnet::data::Box;
using mmnet::data::Case;
using mmnet::data::LabelMap;
using mmnet::data::PatchSampler;
using mmnet::data::SamplerOptions;
using mmnet::data::Volume;

namespace {

// A case whose image values encode the voxel position (channel c: c * 1000 + linear index).
Case make_case(index_t c, index_t d, index_t h, index_t w, const std::string& name) {
  Case k{Volume(c, d, h, w), LabelMap(d, h, w), name};
  for (index_t ch = 0; ch < c; ++ch)
    for (index_t i = 0; i < k.image.voxels(); ++i) k.image.channel(ch)[i] = static_cast<float>(ch * 1000 + i);
  return k;
}

bool has_label(const LabelMap& m, std::uint8_t l) {
  for (auto v : m.data)
    if (v == l) return true;
  return false;
}

bool has_foreground(const LabelMap& m) {
  for (auto v : m.data)
    if (v) return true;
  return false;
}

}  // namespace

TEST_CASE("PatchSampler: the same seed gives the same patches") {
  std::vector<Case> cases{make_case(2, 9, 12, 10, "a"), make_case(2, 7, 15, 11, "b")};
  cases[0].label.at(4, 5, 6) = 1;
  cases[1].label.at(1, 2, 3) = 2;
  PatchSampler s(cases, SamplerOptions({4, 6, 5}));
  Generator g1(42), g2(42), g3(43);
  bool any_difference = false;
  for (int rep = 0; rep < 10; ++rep) {
    const auto a = s.sample_batch(3, g1), b = s.sample_batch(3, g2), c = s.sample_batch(3, g3);
    REQUIRE(a.size() == 3);
    for (std::size_t i = 0; i < a.size(); ++i) {
      CHECK(a[i].case_index == b[i].case_index);
      CHECK(a[i].box == b[i].box);
      CHECK(a[i].image.data == b[i].image.data);
      CHECK(a[i].label.data == b[i].label.data);
      CHECK(a[i].image.shape() == Shape{2, 4, 6, 5});
      if (!(a[i].box == c[i].box) || a[i].case_index != c[i].case_index) any_difference = true;
    }
  }
  CHECK(any_difference);
}

TEST_CASE("PatchSampler: forced patches per batch follow nnU-Net's rounding") {
  PatchSampler s({make_case(1, 4, 5, 6, "x")}, SamplerOptions({2, 3, 4}));
  CHECK(s.forced_per_batch(8) == 3);  // round(8 * 2/3) = 5 random
  CHECK(s.forced_per_batch(2) == 1);
  CHECK(s.forced_per_batch(3) == 1);
  CHECK(s.forced_per_batch(1) == 0);  // round(2/3) = 1: nnU-Net does not oversample batches of 1
  CHECK(!s.forced(4, 8));
  CHECK(s.forced(5, 8));
  PatchSampler half({make_case(1, 4, 5, 6, "x")}, SamplerOptions({2, 3, 4}).oversample_foreground(0.5));
  CHECK(half.forced_per_batch(5) == 3);  // round(2.5) = 2 (half to even)
  CHECK(half.forced_per_batch(7) == 3);  // round(3.5) = 4
  PatchSampler all({make_case(1, 4, 5, 6, "x")}, SamplerOptions({2, 3, 4}).oversample_foreground(1.0));
  CHECK(all.forced_per_batch(4) == 4);
}

TEST_CASE("PatchSampler: exactly the forced patches contain foreground when it is rare") {
  // One foreground voxel in a corner: a random 8 x 6 x 10 patch of a 30 x 33 x 41 volume holds it only if it
  // starts at (0, 0, 0) (probability 1 / (23 * 28 * 32)).
  Case k = make_case(1, 30, 33, 41, "rare");
  k.label.at(0, 0, 0) = 1;
  PatchSampler s({k}, SamplerOptions({8, 6, 10}));
  Generator g(7);
  index_t forced = 0, with_fg = 0;
  const index_t batches = 150, b = 8;
  for (index_t it = 0; it < batches; ++it) {
    const auto patches = s.sample_batch(b, g);
    for (index_t i = 0; i < b; ++i) {
      const auto& p = patches[static_cast<std::size_t>(i)];
      CHECK(p.forced_foreground == s.forced(i, b));
      forced += p.forced_foreground;
      const bool fg = has_foreground(p.label);
      with_fg += fg;
      CHECK_MESSAGE(fg == p.forced_foreground, "batch " << it << " sample " << i << " box " << p.box.str());
    }
  }
  CHECK(forced == batches * 3);
  CHECK(with_fg == forced);
}

TEST_CASE("PatchSampler: forced patches choose the class uniformly, then a voxel of it") {
  // Class 1: a large block; class 2: one voxel far away. Per-class choice: about half the forced patches hold 2.
  Case k = make_case(1, 20, 24, 22, "classes");
  for (index_t z = 0; z < 6; ++z)
    for (index_t y = 0; y < 8; ++y)
      for (index_t x = 0; x < 7; ++x) k.label.at(z, y, x) = 1;
  k.label.at(19, 23, 21) = 2;
  PatchSampler s({k}, SamplerOptions({4, 5, 3}).oversample_foreground(1.0));
  CHECK(s.classes(0) == std::vector<std::uint8_t>{1, 2});
  Generator g(3);
  index_t two = 0, n = 0;
  for (int it = 0; it < 100; ++it)
    for (const auto& p : s.sample_batch(4, g)) {
      ++n;
      CHECK(has_foreground(p.label));
      two += has_label(p.label, 2);
    }
  CHECK(n == 400);
  CHECK(two > 160);
  CHECK(two < 240);
}

TEST_CASE("PatchSampler: center_foreground puts the voxel at the patch centre") {
  Case k = make_case(1, 20, 24, 22, "centre");
  k.label.at(10, 11, 12) = 3;
  PatchSampler s({k}, SamplerOptions({5, 6, 7}).center_foreground(true).oversample_foreground(1.0));
  Generator g(5);
  for (const auto& p : s.sample_batch(3, g)) {
    CHECK(p.box == Box{{8, 8, 9}, {13, 14, 16}});
    CHECK(p.label.at(2, 3, 3) == 3);
  }
  // Near the border the start is clamped at 0 (nnU-Net's max(lb, voxel - patch // 2)).
  Case e = make_case(1, 20, 24, 22, "edge");
  e.label.at(1, 0, 2) = 1;
  PatchSampler se({e}, SamplerOptions({5, 6, 7}).center_foreground(true).oversample_foreground(1.0));
  CHECK(se.sample_batch(1, g)[0].box == Box{{0, 0, 0}, {5, 6, 7}});
}

TEST_CASE("PatchSampler: a patch larger than the volume is centred and padded") {
  Case k = make_case(2, 3, 4, 5, "small");
  k.label.at(2, 3, 4) = 1;
  PatchSampler s({k}, SamplerOptions({5, 6, 9}).pad_value({-2.0f, -3.0f}));
  Generator g(11);
  for (const auto& p : s.sample_batch(3, g)) {
    // pad (2, 2, 4): lb = (-1, -1, -2), the only start.
    CHECK(p.box == Box{{-1, -1, -2}, {4, 5, 7}});
    for (index_t c = 0; c < 2; ++c)
      for (index_t z = 0; z < 5; ++z)
        for (index_t y = 0; y < 6; ++y)
          for (index_t x = 0; x < 9; ++x) {
            const index_t sz = z - 1, sy = y - 1, sx = x - 2;
            const bool in = sz >= 0 && sz < 3 && sy >= 0 && sy < 4 && sx >= 0 && sx < 5;
            CHECK(p.image.at(c, z, y, x) == (in ? k.image.at(c, sz, sy, sx) : (c == 0 ? -2.0f : -3.0f)));
            CHECK(p.label.at(z, y, x) == (in ? k.label.at(sz, sy, sx) : 0));
          }
  }
  // A box partly and one wholly outside: padding fills the rest.
  const auto p = s.extract(0, Box{{-4, 2, 3}, {1, 8, 12}});
  CHECK(p.image.at(0, 4, 0, 0) == k.image.at(0, 0, 2, 3));
  CHECK(p.image.at(1, 4, 1, 1) == k.image.at(1, 0, 3, 4));
  CHECK(p.image.at(0, 3, 0, 0) == -2.0f);
  CHECK(p.image.at(0, 4, 2, 0) == -2.0f);
  const auto out = s.extract(0, Box{{10, 10, 10}, {15, 16, 19}});
  for (float v : out.image.data) CHECK((v == -2.0f || v == -3.0f));
  CHECK(!has_foreground(out.label));
  // Padded on one axis only: D fits (start random), H and W are larger.
  PatchSampler s2({k}, SamplerOptions({2, 5, 5}));
  for (const auto& q : s2.sample_batch(6, g)) {
    CHECK(q.box.begin[1] == 0);  // pad 1: lb = 0, ub = 0
    CHECK(q.box.begin[2] == 0);
    CHECK(q.box.begin[0] >= 0);
    CHECK(q.box.begin[0] <= 1);
  }
}

TEST_CASE("PatchSampler rejects bad cases and options, naming component, expected and actual") {
  std::vector<Case> cases{make_case(2, 4, 5, 6, "a"), make_case(3, 4, 5, 6, "b")};
  check_throws_naming<shape_error>([&] { PatchSampler(cases, SamplerOptions({2, 2, 2})); },
                                   {"mmnet::data::PatchSampler", "channels", "expected 2", "got 3", "'b'"});
  Case wrong = make_case(2, 4, 5, 6, "wrong_label");
  wrong.label = LabelMap(4, 6, 5);
  check_throws_naming<shape_error>([&] { PatchSampler({wrong}, SamplerOptions({2, 2, 2})); },
                                   {"mmnet::data::PatchSampler", "label shape", "(4, 5, 6)", "(4, 6, 5)", "wrong_label"});
  check_throws_naming<value_error>([&] { PatchSampler({make_case(1, 4, 5, 6, "a")}, SamplerOptions({2, 0, 2})); },
                                   {"mmnet::data::PatchSampler", "patch size", "> 0", "got 0"});
  CHECK_THROWS_AS(PatchSampler({make_case(1, 4, 5, 6, "a")}, SamplerOptions({2, 2, 2}).oversample_foreground(1.5)),
                  value_error);
  CHECK_THROWS_AS(PatchSampler({}, SamplerOptions({2, 2, 2})), value_error);
  check_throws_naming<shape_error>(
      [&] { PatchSampler({make_case(2, 4, 5, 6, "a")}, SamplerOptions({2, 2, 2}).pad_value({0.0f})); },
      {"pad_value", "expected 2", "got 1"});
  CHECK_THROWS_AS(PatchSampler({Case{Volume(1, 0, 5, 6), LabelMap(0, 5, 6), "empty"}}, SamplerOptions({2, 2, 2})),
                  shape_error);
  PatchSampler s({make_case(1, 4, 5, 6, "a")}, SamplerOptions({2, 2, 2}));
  Generator g(1);
  CHECK_THROWS_AS(s.sample_batch(0, g), value_error);
  CHECK_THROWS_AS(s.sample(3, false, g), value_error);
  CHECK_THROWS_AS(s.extract(0, Box{{0, 0, 0}, {2, 2, 3}}), shape_error);
}

TEST_CASE("WindowSampler: MMFNet's Z windows on the stride grid, centred on the roi, jittered, padded") {
  // D = 11 with 4-deep windows at stride 3: starts 0, 3, 6 (7 is off the grid).
  Case k = make_case(2, 11, 20, 18, "w");
  k.roi = Box{{2, 4, 3}, {9, 14, 13}};  // centre (H, W) = (9, 8)
  k.label.at(5, 9, 8) = 1;
  data::WindowSampler s({k}, data::WindowOptions({4, 6, 5}).z_stride(3).max_offset({0, 0, 0}).pad_value({-2, -3}));
  CHECK(s.windows(0) == 3);
  CHECK(s.window_box(0, 0) == Box{{0, 6, 6}, {4, 12, 11}});
  CHECK(s.window_box(0, 2) == Box{{6, 6, 6}, {10, 12, 11}});
  CHECK(s.window_box(0, 1, {-1, 2, -3}) == Box{{2, 8, 3}, {6, 14, 8}});
  Generator g(1);
  std::set<index_t> starts;
  for (const auto& p : s.sample_batch(40, g)) {
    CHECK(p.box.begin[0] % 3 == 0);
    CHECK(p.box.begin[1] == 6);
    CHECK(p.box.begin[2] == 6);
    starts.insert(p.box.begin[0]);
    CHECK(p.image.data == data::extract_patch(k, 0, p.box, {-2, -3}).image.data);
  }
  CHECK(starts == std::set<index_t>{0, 3, 6});
  // Offsets: uniform integers in [-o, o], all values reached; windows past the volume are padded.
  data::WindowSampler j({k}, data::WindowOptions({4, 6, 5}).z_stride(3).max_offset({2, 3, 1}).pad_value({-2, -3}));
  std::set<index_t> dy;
  Generator g2(2);
  for (int i = 0; i < 200; ++i) {
    const auto p = j.sample(0, g2);
    CHECK(p.box.begin[0] >= -2);
    CHECK(p.box.begin[0] <= 8);
    CHECK(std::abs(p.box.begin[2] - 6) <= 1);
    dy.insert(p.box.begin[1] - 6);
    if (p.box.begin[0] < 0) CHECK(p.image.at(1, 0, 0, 0) == -3.0f);
  }
  CHECK(dy == std::set<index_t>{-3, -2, -1, 0, 1, 2, 3});
  // A volume shallower than the window: one start, padded; no roi: the whole volume's centre.
  data::WindowSampler sh({make_case(1, 2, 8, 8, "shallow")}, data::WindowOptions({4, 4, 4}).max_offset({0, 0, 0}));
  CHECK(sh.windows(0) == 1);
  CHECK(sh.window_box(0, 0) == Box{{0, 2, 2}, {4, 6, 6}});
  // Same seed, same windows.
  Generator a(9), b(9);
  const auto pa = j.sample_batch(5, a), pb = j.sample_batch(5, b);
  for (std::size_t i = 0; i < 5; ++i) CHECK(pa[i].box == pb[i].box);
  // Bad input.
  Case bad = make_case(2, 11, 20, 18, "bad_roi");
  bad.roi = Box{{0, 0, 0}, {12, 20, 18}};
  check_throws_naming<shape_error>([&] { data::WindowSampler({bad}, data::WindowOptions({4, 6, 5})); },
                                   {"mmnet::data::WindowSampler", "roi", "[0:12, 0:20, 0:18]", "bad_roi"});
  CHECK_THROWS_AS(data::WindowSampler({k}, data::WindowOptions({4, 6, 5}).z_stride(0)), value_error);
  CHECK_THROWS_AS(data::WindowSampler({k}, data::WindowOptions({4, 6, 5}).max_offset({0, -1, 0})), value_error);
  CHECK_THROWS_AS(data::WindowSampler({k}, data::WindowOptions({4, 6, 5}).pad_value({0})), shape_error);
  CHECK_THROWS_AS(s.window_box(0, 3), value_error);
  CHECK(data::WindowOptions::mmfnet().patch() == data::PatchSize{16, 256, 256});
}
