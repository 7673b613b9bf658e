// HMRNet's two-stage pipeline (models/hmrnet/two_stage.hpp, spec hmrnet.md §4): structure boxes with the code's
// [min - 10, max + 10) convention and clipping, the sinus split (sagittal slab / transverse slices, margin 5, boxes
// clipped to their region, overlap), the plan (p / s assignment), training targets, paste-back order and overlap
// rules (clear k inside box k, write k where fine = 1, sinus OR, stage-1 sinus kept outside its boxes), and the
// driver with stub predictors. Expected values are derived by hand in the comments (the boxes were cross-checked
// once with numpy slicing m[min-10:max+10], no fixture needed). Host-only code: the same checks on every backend.
#include <mmnet/hmrnet.hpp>
#include <mmnet/data/phantom.hpp>

#include <string>
#include <vector>

#include "../support/mmnet_test.hpp"

namespace hmrnet_two_stage_test {

using namespace mmnet;
using data::Box;
using data::LabelMap;
using data::Volume;
namespace hs = mmnet::models::hmrnet;

inline void fill(LabelMap& m, const Box& b, std::uint8_t v) {
  for (index_t z = b.begin[0]; z < b.end[0]; ++z)
    for (index_t y = b.begin[1]; y < b.end[1]; ++y)
      for (index_t x = b.begin[2]; x < b.end[2]; ++x) m.at(z, y, x) = v;
}
inline Box box(index_t z0, index_t y0, index_t x0, index_t z1, index_t y1, index_t x1) { return Box{{z0, y0, x0}, {z1, y1, x1}}; }

TEST_CASE("hmrnet two-stage: structure box [min - 10, max + 10), clipped to the volume") {
  LabelMap m(30, 40, 50);
  // label 2 occupies z 12..14, y 15..20, x 20..29 (inclusive): numpy [min-10:max+10] = [2:24, 5:30, 10:39]
  fill(m, box(12, 15, 20, 15, 21, 30), 2);
  CHECK(hs::structure_box(m, 2) == box(2, 5, 10, 24, 30, 39));
  // the upper margin holds 9 voxels after the last foreground index (max + 10 exclusive)
  CHECK(hs::structure_box(m, 2).end[0] - 1 - 14 == 9);
  CHECK(12 - hs::structure_box(m, 2).begin[0] == 10);
  // clipping: label 1 at z 0..2, y 35..39, x 45..49 -> [0:12, 25:40, 35:50] (max+10 = 12, 49 + 10 = 59 -> 50)
  fill(m, box(0, 35, 45, 3, 40, 50), 1);
  CHECK(hs::structure_box(m, 1) == box(0, 25, 35, 12, 40, 50));
  // a single voxel at (5, 5, 5) with margin 3: [2, 8)
  LabelMap one(10, 11, 12);
  one.at(5, 5, 5) = 4;
  CHECK(hs::structure_box(one, 4, 3) == box(2, 2, 2, 8, 8, 8));
  CHECK(hs::structure_box(one, 4, 1) == box(4, 4, 4, 6, 6, 6));
  // an absent label: an empty box
  CHECK(hs::structure_box(m, 5).empty());
  CHECK_THROWS_AS(hs::structure_box(m, 2, 0), value_error);
  // margin_box directly
  CHECK(hs::margin_box(box(3, 4, 5, 6, 7, 8), 2, Box::full(10, 10, 10)) == box(1, 2, 3, 7, 8, 9));
  CHECK(hs::margin_box(Box{}, 2, Box::full(10, 10, 10)).empty());
}

TEST_CASE("hmrnet two-stage: sinus regions (sagittal slab around floor(W/2), transverse z < 50), clipped") {
  // the ABCs grid 142 x 194 x 164 (z, y, x): slab [62, 102), transverse [0, 50)
  const auto r = hs::sinus_regions(142, 194, 164);
  CHECK(r.sagittal == box(0, 0, 62, 142, 194, 102));
  CHECK(r.transverse == box(0, 0, 0, 50, 194, 164));
  // an odd, small grid: W = 31 -> mid 15, half width 20 -> [0, 31); D = 30 < 50 -> the whole depth
  const auto s = hs::sinus_regions(30, 20, 31);
  CHECK(s.sagittal == box(0, 0, 0, 30, 20, 31));
  CHECK(s.transverse == box(0, 0, 0, 30, 20, 31));
  const auto t = hs::sinus_regions(40, 20, 48, hs::SinusSplitOptions().half_width(6).transverse_end(18));
  CHECK(t.sagittal == box(0, 0, 18, 40, 20, 30));
  CHECK(t.transverse == box(0, 0, 0, 18, 20, 48));
  CHECK_THROWS_AS(hs::sinus_regions(40, 20, 48, hs::SinusSplitOptions().half_width(0)), value_error);
  CHECK_THROWS_AS(hs::sinus_regions(40, 20, 48, hs::SinusSplitOptions().margin(0)), value_error);
}

// A sinus-like label map on 40 x 30 x 48 (z, y, x), split with half width 6 (slab x in [18, 30)) and z < 18:
//   sagittal tube: z 25..34, y 10..12, x 23..24  (inside the slab only)
//   transverse tube: z 10..11, y 3..5, x 5..42    (crosses the slab: x 18..29 lie in both regions)
inline LabelMap sinus_map() {
  LabelMap m(40, 30, 48);
  fill(m, box(25, 10, 23, 35, 13, 25), 3);
  fill(m, box(10, 3, 5, 12, 6, 43), 3);
  return m;
}
inline hs::TwoStagePlan small_plan() {
  hs::TwoStagePlan p = hs::TwoStagePlan::abcs();
  p.sinus.half_width(6).transverse_end(18);
  return p;
}

TEST_CASE("hmrnet two-stage: sinus split boxes (margin 5 in the code's convention, clipped to the region)") {
  const LabelMap m = sinus_map();
  const auto crops = hs::plan_crops(small_plan(), m);
  REQUIRE(crops.size() == 6);
  CHECK(crops[2].part.name == "sinus_sagittal");
  CHECK(crops[3].part.name == "sinus_transverse");
  // sagittal: sinus voxels with x in [18, 30): z 10..34, y 3..12, x 18..29 -> [5:39, 0:17, 13:34] clipped to the slab
  // [18, 30) along x: (5, 0, 18) .. (39, 17, 30)
  CHECK(crops[2].box == box(5, 0, 18, 39, 17, 30));
  // transverse: sinus voxels with z < 18: z 10..11, y 3..5, x 5..42 -> [5:16, 0:10, 0:47], clipped to z < 18
  CHECK(crops[3].box == box(5, 0, 0, 16, 10, 47));
  // the other structures are absent: empty boxes
  for (int i : {0, 1, 4, 5}) CHECK(crops[static_cast<std::size_t>(i)].box.empty());
  // training targets: every sinus voxel inside the box, also those of the other region (the overlap)
  const LabelMap ts = hs::part_target(m, crops[2]);
  CHECK(ts.shape() == Shape{34, 17, 12});
  index_t n = 0;
  for (auto v : ts.data) { CHECK(v <= 1); n += v; }
  // sagittal tube 10 x 3 x 2 = 60, transverse tube x 18..29 inside the box: 2 x 3 x 12 = 72
  CHECK(n == 60 + 72);
  const LabelMap tt = hs::part_target(m, crops[3]);
  index_t nt = 0;
  for (auto v : tt.data) nt += v;
  CHECK(nt == 2 * 3 * 38);  // the whole transverse tube
  // a region without sinus voxels is skipped
  LabelMap top(40, 30, 48);
  fill(top, box(25, 10, 23, 35, 13, 25), 3);  // only the sagittal tube, z >= 25 > 18
  const auto c2 = hs::plan_crops(small_plan(), top);
  CHECK_FALSE(c2[2].box.empty());
  CHECK(c2[3].box.empty());
  // without the split: one whole-sinus part with margin 10
  const auto c3 = hs::plan_crops(hs::TwoStagePlan::abcs(false), m);
  REQUIRE(c3.size() == 5);
  CHECK(c3[2].part.name == "sinuses");
  CHECK(c3[2].box == box(0, 0, 0, 40, 22, 48));  // z 10..34 -> [0, 44) -> 40; y 3..12 -> [0, 22); x 5..42 -> [0, 52) -> 48
}

TEST_CASE("hmrnet two-stage: the plan assigns p to cerebellum, tentorium, ventricles and s to falx and sinus parts") {
  const auto p = hs::TwoStagePlan::abcs();
  REQUIRE(p.parts.size() == 6);
  const std::vector<std::string> names{"cerebellum", "falx", "sinus_sagittal", "sinus_transverse", "tentorium", "ventricles"};
  const std::vector<int> labels{1, 2, 3, 3, 4, 5};
  const std::vector<HMRNetForm> forms{HMRNetForm::p, HMRNetForm::s, HMRNetForm::s, HMRNetForm::s, HMRNetForm::p, HMRNetForm::p};
  for (std::size_t i = 0; i < 6; ++i) {
    CHECK(p.parts[i].name == names[i]);
    CHECK(p.parts[i].label == labels[i]);
    CHECK(p.parts[i].form == forms[i]);
  }
  CHECK(p.margin == 10);
  CHECK(p.sinus.half_width() == 20);
  CHECK(p.sinus.transverse_end() == 50);
  CHECK(p.sinus.margin() == 5);
  hs::TwoStagePlan bad = p;
  bad.parts.push_back({"again", 1, HMRNetForm::p, hs::PartRegion::whole});
  CHECK_THROWS_AS(bad.validate(), value_error);
  bad = p;
  bad.parts[0].label = 0;
  CHECK_THROWS_AS(bad.validate(), value_error);
  bad = p;
  bad.margin = 0;
  CHECK_THROWS_AS(bad.validate(), value_error);
}

TEST_CASE("hmrnet two-stage: paste-back clears k inside box k, writes k where fine = 1, later labels win") {
  LabelMap coarse(10, 12, 14);
  fill(coarse, box(2, 2, 2, 6, 6, 6), 1);   // stage-1 structure 1
  fill(coarse, box(7, 8, 9, 9, 10, 12), 1); // a stage-1 false positive of 1 OUTSIDE box 1: kept
  fill(coarse, box(4, 4, 4, 8, 8, 8), 2);   // structure 2 overlaps 1's box
  std::vector<hs::PartCrop> crops{{{"one", 1, HMRNetForm::p, hs::PartRegion::whole}, box(1, 1, 1, 7, 7, 7)},
                                  {{"two", 2, HMRNetForm::s, hs::PartRegion::whole}, box(3, 3, 3, 9, 9, 9)}};
  std::vector<LabelMap> fine{LabelMap(6, 6, 6), LabelMap(6, 6, 6)};
  fine[0].at(0, 0, 0) = 1;  // -> (1, 1, 1): new voxel of 1
  fine[0].at(4, 4, 4) = 1;  // -> (5, 5, 5): inside structure 2's fine prediction too, 2 is pasted later and wins
  fine[1].at(2, 2, 2) = 1;  // -> (5, 5, 5)
  fine[1].at(5, 5, 5) = 1;  // -> (8, 8, 8)
  const LabelMap out = hs::paste_back(coarse, crops, fine);
  CHECK(out.at(1, 1, 1) == 1);
  CHECK(out.at(5, 5, 5) == 2);
  CHECK(out.at(8, 8, 8) == 2);
  CHECK(out.at(2, 2, 2) == 0);    // old 1 inside box 1, fine = 0: cleared
  CHECK(out.at(7, 8, 9) == 1);    // old 1 outside box 1: kept
  CHECK(out.at(4, 4, 4) == 0);    // old 2 inside box 2 cleared (box 1 clears only 1)
  CHECK(out.at(3, 3, 3) == 0);    // old 1 there, in both boxes: cleared by box 1
  // a label other than k inside box k stays unless the fine prediction overwrites it
  LabelMap c2(10, 12, 14);
  fill(c2, box(1, 1, 1, 3, 3, 3), 5);
  std::vector<hs::PartCrop> cr2{{{"one", 1, HMRNetForm::p, hs::PartRegion::whole}, box(0, 0, 0, 4, 4, 4)}};
  std::vector<LabelMap> f2{LabelMap(4, 4, 4)};
  f2[0].at(1, 1, 1) = 1;
  const LabelMap o2 = hs::paste_back(c2, cr2, f2);
  CHECK(o2.at(1, 1, 1) == 1);
  CHECK(o2.at(2, 2, 2) == 5);
  // order is by label, not by crop order: the same crops listed 2 then 1 give the same result
  std::vector<hs::PartCrop> rev{crops[1], crops[0]};
  std::vector<LabelMap> frev{fine[1], fine[0]};
  CHECK(hs::paste_back(coarse, rev, frev).data == out.data);
  // bad sizes
  std::vector<LabelMap> wrong{LabelMap(6, 6, 5), LabelMap(6, 6, 6)};
  CHECK_THROWS_AS(hs::paste_back(coarse, crops, wrong), shape_error);
  CHECK_THROWS_AS(hs::paste_back(coarse, crops, std::vector<LabelMap>(1)), shape_error);
}

TEST_CASE("hmrnet two-stage: sinus paste-back is the OR of the parts in their boxes, stage-1 sinus kept outside") {
  const LabelMap truth = sinus_map();
  LabelMap coarse = truth;
  coarse.at(39, 29, 0) = 3;  // a stage-1 sinus voxel far outside both parts' boxes: kept [R]
  const auto crops = hs::plan_crops(small_plan(), truth);
  std::vector<LabelMap> fine(crops.size());
  for (std::size_t i : {2, 3}) fine[i] = LabelMap(crops[i].box.extent(0), crops[i].box.extent(1), crops[i].box.extent(2));
  // part S predicts only the sagittal tube, part T only the part of the transverse tube with x < 18 (it misses
  // the overlap); the OR still restores the transverse tube at x 18..29? No: S's box covers x 18..29 of the
  // transverse tube and S predicts nothing there, T predicts nothing there: those voxels are cleared.
  const Box& bs = crops[2].box;
  const Box& bt = crops[3].box;
  for (index_t z = 25; z < 35; ++z)
    for (index_t y = 10; y < 13; ++y)
      for (index_t x = 23; x < 25; ++x) fine[2].at(z - bs.begin[0], y - bs.begin[1], x - bs.begin[2]) = 1;
  for (index_t z = 10; z < 12; ++z)
    for (index_t y = 3; y < 6; ++y)
      for (index_t x = 5; x < 18; ++x) fine[3].at(z - bt.begin[0], y - bt.begin[1], x - bt.begin[2]) = 1;
  const LabelMap out = hs::paste_back(coarse, crops, fine);
  CHECK(out.at(30, 11, 23) == 3);
  CHECK(out.at(10, 3, 5) == 3);
  CHECK(out.at(10, 3, 20) == 0);   // in both boxes, neither part predicts it
  CHECK(out.at(10, 3, 35) == 0);   // in T's box only, T misses it
  CHECK(out.at(39, 29, 0) == 3);   // outside both boxes: the stage-1 label stays
  index_t n = 0;
  for (auto v : out.data) n += v == 3;
  CHECK(n == 60 + 2 * 3 * 13 + 1);
  // now part S also predicts the overlap: the OR restores x 18..29
  for (index_t z = 10; z < 12; ++z)
    for (index_t y = 3; y < 6; ++y)
      for (index_t x = 18; x < 30; ++x) fine[2].at(z - bs.begin[0], y - bs.begin[1], x - bs.begin[2]) = 1;
  const LabelMap out2 = hs::paste_back(coarse, crops, fine);
  CHECK(out2.at(10, 3, 20) == 3);
  CHECK(out2.at(10, 3, 35) == 0);
}

TEST_CASE("hmrnet two-stage: the driver with stub predictors (perfect fine models restore the truth)") {
  data::PhantomOptions o = data::PhantomOptions::barriers().noise(data::PhantomNoise::none);
  const auto ph = data::make_phantom(o, 3);
  hs::TwoStagePlan plan = hs::TwoStagePlan::abcs();
  plan.sinus.half_width(6).transverse_end(22);
  // stage 1: the truth with every label eroded away at the boundary of a 1-voxel shift (a coarse model), plus a
  // stray voxel of 2 far from the falx inside nothing else.
  const LabelMap& truth = ph.label;
  int coarse_calls = 0, fine_calls = 0;
  auto coarse = [&](const Volume& v) {
    ++coarse_calls;
    CHECK(v.shape() == ph.image.shape());
    LabelMap c(v.depth, v.height, v.width, v.spacing);
    for (index_t z = 1; z < v.depth; ++z)
      for (index_t y = 0; y < v.height; ++y)
        for (index_t x = 0; x < v.width; ++x) c.at(z, y, x) = truth.at(z - 1, y, x);  // shifted by one slice
    return c;
  };
  auto fine = [&](const hs::TwoStagePart& part, const Volume& crop) {
    ++fine_calls;
    CHECK(crop.channels == 3);
    // this part's box, planned from the stage-1 map as the driver does
    Box b;
    for (const auto& c : hs::plan_crops(plan, coarse(ph.image)))
      if (c.part.name == part.name) b = c.box;
    --coarse_calls;
    REQUIRE_FALSE(b.empty());
    CHECK(crop.depth == b.extent(0));
    CHECK(crop.height == b.extent(1));
    CHECK(crop.width == b.extent(2));
    CHECK(crop.at(0, 0, 0, 0) == ph.image.at(0, b.begin[0], b.begin[1], b.begin[2]));
    return hs::part_target(truth, hs::PartCrop{part, b});
  };
  const auto r = hs::segment_two_stage(ph.image, coarse, fine, plan);
  CHECK(coarse_calls == 1);
  CHECK(fine_calls == 6);
  REQUIRE(r.crops.size() == 6);
  CHECK(r.labels.shape() == truth.shape());
  // every structure lies inside its coarse box (margin 10 >> the 1-slice shift), so perfect fine models give the
  // truth back, except the sinus voxels outside both split boxes, where the shifted stage-1 label stays.
  index_t diff = 0, diff_not_sinus = 0;
  for (std::size_t i = 0; i < truth.data.size(); ++i)
    if (r.labels.data[i] != truth.data[i]) {
      ++diff;
      if (truth.data[i] != 3 && r.labels.data[i] != 3) ++diff_not_sinus;
    }
  CHECK(diff_not_sinus == 0);
  // with the sinus as one whole part, the truth exactly
  hs::TwoStagePlan whole = hs::TwoStagePlan::abcs(false);
  auto fine_whole = [&](const hs::TwoStagePart& part, const Volume& crop) {
    const auto cs = hs::plan_crops(whole, coarse(ph.image));
    for (const auto& c : cs)
      if (c.part.name == part.name) {
        CHECK(crop.depth == c.box.extent(0));
        return hs::part_target(truth, c);
      }
    return LabelMap();
  };
  const auto r2 = hs::segment_two_stage(ph.image, coarse, fine_whole, whole);
  CHECK(r2.labels.data == truth.data);
  // a stage-1 map of the wrong size
  auto bad = [&](const Volume&) { return LabelMap(2, 2, 2); };
  CHECK_THROWS_AS(hs::segment_two_stage(ph.image, bad, fine, plan), shape_error);
  (void)diff;
}

}  // namespace hmrnet_two_stage_test
