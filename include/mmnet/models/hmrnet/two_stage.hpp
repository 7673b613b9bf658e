// mmnet/models/hmrnet/two_stage.hpp: HMRNet's two-stage pipeline (spec hmrnet.md §1, §4 "Crops", "Sinus split",
// "Inference") as host-side library calls on data::Volume / data::LabelMap. No PyTorch equivalent; the official
// scripts are HMRNet/data_process/{Extract_class_and_crop, Organ3_to_two_part, Organ3_two_parts_fusion,
// Organs_fuse}.py of HiLab-git/ABCs_2020.
//
//   auto plan = hmrnet::TwoStagePlan::abcs();            // 6 parts: cerebellum p, falx s, sinus S s, sinus T s,
//                                                        // tentorium p, ventricles p
//   auto r = hmrnet::segment_two_stage(image,            // C x D x H x W (CT, T1c, T2)
//       [&](const data::Volume& v) { return coarse_labels(v); },                  // stage 1 -> LabelMap 0..5
//       [&](const hmrnet::TwoStagePart& p, const data::Volume& crop) { return fine_labels(p, crop); },  // 0 / 1
//       plan);
//   r.labels;                                            // the fused label map
//
// Conventions (all in voxels, boxes data::Box [begin, end) along (D, H, W)):
//   * structure box [C]: the official code slices [min - m, max + m) with max the LAST foreground index, so the
//     box holds m voxels below the structure and m - 1 above it; clipped to the volume. m = 10 for structures.
//   * sinus split [C]: sagittal region S = all z, y and x in [mid - 20, mid + 20), mid = floor(W / 2); transverse
//     region T = z in [0, 50) ([R]; the fusion script uses 55), all y, x. Per part: the box of the sinus voxels
//     inside its region with the same [min - 5, max + 5) convention, clipped to the region. A region without sinus
//     voxels is skipped [R]. The two regions overlap: sinus voxels there belong to both parts' targets [C].
//   * paste-back [C]: labels ascending (plan order within a label); for label k: inside the union of its parts'
//     boxes clear label k, then write k where any part's fine prediction is non-zero (each part only inside its own
//     box). Later labels overwrite earlier ones. Outside the boxes the stage-1 labels stay, including the sinus
//     label outside S and T [R] (the code drops it). A part whose stage-1 structure is absent is skipped: nothing
//     of that label changes. No connected-component post-processing.
// The callables decide how to run a network (e.g. inference::sliding_window_inference with
// SlidingWindowOptions::nnunet, then inference::to_label_map): any stage-1 U-Net and any fine model work.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../../core/error.hpp"
#include "../../data/crop.hpp"
#include "../../data/volume.hpp"
#include "options.hpp"

namespace mmnet::models::hmrnet {

// The code's margin convention: tight = [min, max + 1) (data::bounding_box's box) grown to [min - margin,
// max + margin), clipped to `clip`. margin >= 1. An empty tight box gives an empty box.
inline data::Box margin_box(const data::Box& tight, index_t margin, const data::Box& clip) {
  if (margin < 1) fail<value_error>("mmnet::hmrnet::margin_box", "margin", ">= 1 (the box is [min - m, max + m))", margin);
  if (tight.empty()) return data::Box{};
  data::Box b;
  for (std::size_t a = 0; a < 3; ++a) {
    b.begin[a] = std::max(clip.begin[a], tight.begin[a] - margin);
    b.end[a] = std::min(clip.end[a], tight.end[a] - 1 + margin);
  }
  return b.empty() ? data::Box{} : b;
}

// The tight box [min, max + 1) of the voxels equal to `label` inside `region` (empty Box when there are none).
inline data::Box label_box(const data::LabelMap& labels, int label, const data::Box& region) {
  data::detail::check_box("mmnet::hmrnet::label_box", region, labels.depth, labels.height, labels.width);
  data::Box b{{labels.depth, labels.height, labels.width}, {0, 0, 0}};
  bool any = false;
  for (index_t z = region.begin[0]; z < region.end[0]; ++z)
    for (index_t y = region.begin[1]; y < region.end[1]; ++y)
      for (index_t x = region.begin[2]; x < region.end[2]; ++x)
        if (labels.at(z, y, x) == label) {
          any = true;
          b.begin = {std::min(b.begin[0], z), std::min(b.begin[1], y), std::min(b.begin[2], x)};
          b.end = {std::max(b.end[0], z + 1), std::max(b.end[1], y + 1), std::max(b.end[2], x + 1)};
        }
  return any ? b : data::Box{};
}

// Structure k's crop box: [min - margin, max + margin) around the voxels labelled k, clipped to the volume
// (spec §4 "Crops", margin 10). Empty when k is absent.
inline data::Box structure_box(const data::LabelMap& labels, int label, index_t margin = 10) {
  const data::Box full = data::Box::full(labels.depth, labels.height, labels.width);
  return margin_box(label_box(labels, label, full), margin, full);
}

// The sinus split (spec §4 "Sinus split", [C] with the [R] z-limit 50).
class SinusSplitOptions {
 public:
  SinusSplitOptions() = default;
  // Half width of the sagittal slab along W: x in [mid - h, mid + h), mid = floor(W / 2); default 20.
  SinusSplitOptions& half_width(index_t v) { half_width_ = v; return *this; }
  index_t half_width() const { return half_width_; }
  // End of the transverse region along D: z in [0, end); default 50 (the fusion script's 55 is the alternative).
  SinusSplitOptions& transverse_end(index_t v) { transverse_end_ = v; return *this; }
  index_t transverse_end() const { return transverse_end_; }
  // Margin of each part's box, same [min - m, max + m) convention, clipped to the region; default 5.
  SinusSplitOptions& margin(index_t v) { margin_ = v; return *this; }
  index_t margin() const { return margin_; }
  void validate() const {
    const char* who = "mmnet::hmrnet::SinusSplitOptions";
    if (half_width_ < 1) fail<value_error>(who, "half_width", ">= 1", half_width_);
    if (transverse_end_ < 1) fail<value_error>(who, "transverse_end", ">= 1", transverse_end_);
    if (margin_ < 1) fail<value_error>(who, "margin", ">= 1", margin_);
  }

 private:
  index_t half_width_ = 20, transverse_end_ = 50, margin_ = 5;
};

// The two regions of the whole volume (not of a box), clipped to it.
struct SinusRegions {
  data::Box sagittal, transverse;
};
inline SinusRegions sinus_regions(index_t d, index_t h, index_t w, const SinusSplitOptions& o = SinusSplitOptions()) {
  o.validate();
  const index_t mid = w / 2;
  SinusRegions r;
  r.sagittal = data::Box{{0, 0, std::max<index_t>(0, mid - o.half_width())}, {d, h, std::min(w, mid + o.half_width())}};
  r.transverse = data::Box{{0, 0, 0}, {std::min(d, o.transverse_end()), h, w}};
  return r;
}

// Which part of the volume a fine model sees: the whole structure, or one of the two sinus parts.
enum class PartRegion { whole, sinus_sagittal, sinus_transverse };

inline const char* to_string(PartRegion r) {
  return r == PartRegion::whole ? "whole" : r == PartRegion::sinus_sagittal ? "sinus_sagittal" : "sinus_transverse";
}

// One fine (stage-2) model: a binary HMRNet of `form` for label `label` on `region`.
struct TwoStagePart {
  std::string name;
  int label = 1;
  HMRNetForm form = HMRNetForm::p;
  PartRegion region = PartRegion::whole;
};

// Structures -> fine models, the box margin and the sinus split.
struct TwoStagePlan {
  std::vector<TwoStagePart> parts;
  index_t margin = 10;       // structure boxes
  SinusSplitOptions sinus;   // sinus parts (regions and margin 5)

  // The paper's assignment (spec §7.15): p for cerebellum (1), tentorium (4), ventricles (5); s for falx (2) and
  // the sinus (3), split into sagittal and transverse parts (or one whole-sinus -s part without the split).
  static TwoStagePlan abcs(bool split_sinus = true) {
    TwoStagePlan p;
    p.parts.push_back({"cerebellum", 1, HMRNetForm::p, PartRegion::whole});
    p.parts.push_back({"falx", 2, HMRNetForm::s, PartRegion::whole});
    if (split_sinus) {
      p.parts.push_back({"sinus_sagittal", 3, HMRNetForm::s, PartRegion::sinus_sagittal});
      p.parts.push_back({"sinus_transverse", 3, HMRNetForm::s, PartRegion::sinus_transverse});
    } else {
      p.parts.push_back({"sinuses", 3, HMRNetForm::s, PartRegion::whole});
    }
    p.parts.push_back({"tentorium", 4, HMRNetForm::p, PartRegion::whole});
    p.parts.push_back({"ventricles", 5, HMRNetForm::p, PartRegion::whole});
    return p;
  }

  // Throws value_error naming the first invalid entry: labels 1..255, margin >= 1, no (label, region) twice, a
  // label with a whole part has no sinus part.
  void validate() const {
    const char* who = "mmnet::hmrnet::TwoStagePlan";
    if (margin < 1) fail<value_error>(who, "margin", ">= 1", margin);
    sinus.validate();
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const auto& a = parts[i];
      if (a.label < 1 || a.label > 255) fail<value_error>(who, "label of part '" + a.name + "'", "1..255", a.label);
      for (std::size_t j = 0; j < i; ++j) {
        const auto& b = parts[j];
        if (a.label != b.label) continue;
        if (a.region == b.region || a.region == PartRegion::whole || b.region == PartRegion::whole)
          fail<value_error>(who, "parts of label " + std::to_string(a.label),
                            "one whole part, or a sagittal and a transverse part", "'" + b.name + "' and '" + a.name + "'");
      }
    }
  }
};

// A part and its box in the volume (empty box: the stage-1 structure is absent, the part is skipped).
struct PartCrop {
  TwoStagePart part;
  data::Box box;
};

// The crop box of every part of `plan` from a label map (stage-1 prediction at test time, the ground truth for
// training), one PartCrop per part in plan order.
inline std::vector<PartCrop> plan_crops(const TwoStagePlan& plan, const data::LabelMap& labels) {
  plan.validate();
  const data::Box full = data::Box::full(labels.depth, labels.height, labels.width);
  const SinusRegions regions = sinus_regions(labels.depth, labels.height, labels.width, plan.sinus);
  std::vector<PartCrop> out;
  for (const auto& p : plan.parts) {
    PartCrop c{p, data::Box{}};
    if (p.region == PartRegion::whole) {
      c.box = margin_box(label_box(labels, p.label, full), plan.margin, full);
    } else {
      const data::Box& region = p.region == PartRegion::sinus_sagittal ? regions.sagittal : regions.transverse;
      if (!region.empty()) c.box = margin_box(label_box(labels, p.label, region), plan.sinus.margin(), region);
    }
    out.push_back(c);
  }
  return out;
}

// The binary training target of a part: 1 where `labels` equals the part's label inside its box (for a sinus part,
// every sinus voxel in the box, also those of the other region [C]). Box-sized, the labels' spacing.
inline data::LabelMap part_target(const data::LabelMap& labels, const PartCrop& c) {
  data::detail::check_box("mmnet::hmrnet::part_target", c.box, labels.depth, labels.height, labels.width);
  data::LabelMap t = data::crop(labels, c.box);
  for (auto& v : t.data) v = v == c.part.label ? 1 : 0;
  return t;
}

// Fuses box-sized binary fine predictions (fine[i] for crops[i]; ignored where crops[i].box is empty) into the
// stage-1 label map by the paste-back rules at the top of the file.
inline data::LabelMap paste_back(const data::LabelMap& coarse, const std::vector<PartCrop>& crops,
                                 const std::vector<data::LabelMap>& fine) {
  const char* who = "mmnet::hmrnet::paste_back";
  if (fine.size() != crops.size()) fail<shape_error>(who, "number of fine predictions (one per crop)", crops.size(), fine.size());
  for (std::size_t i = 0; i < crops.size(); ++i) {
    const data::Box& b = crops[i].box;
    if (b.empty()) continue;
    data::detail::check_box(who, b, coarse.depth, coarse.height, coarse.width);
    const auto& f = fine[i];
    if (f.depth != b.extent(0) || f.height != b.extent(1) || f.width != b.extent(2) ||
        static_cast<index_t>(f.data.size()) != b.voxels())
      fail<shape_error>(who, "fine prediction of part '" + crops[i].part.name + "' (the box's size)",
                        "(" + std::to_string(b.extent(0)) + ", " + std::to_string(b.extent(1)) + ", " + std::to_string(b.extent(2)) + ")",
                        "(" + std::to_string(f.depth) + ", " + std::to_string(f.height) + ", " + std::to_string(f.width) + ")");
  }
  std::vector<int> order;
  for (const auto& c : crops) order.push_back(c.part.label);
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());

  data::LabelMap out = coarse;
  for (const int k : order) {
    // clear k inside the union of the label's boxes
    for (const auto& c : crops) {
      if (c.part.label != k || c.box.empty()) continue;
      for (index_t z = c.box.begin[0]; z < c.box.end[0]; ++z)
        for (index_t y = c.box.begin[1]; y < c.box.end[1]; ++y)
          for (index_t x = c.box.begin[2]; x < c.box.end[2]; ++x)
            if (out.at(z, y, x) == k) out.at(z, y, x) = 0;
    }
    // write k where any part predicts foreground (the OR of the sinus parts)
    for (std::size_t i = 0; i < crops.size(); ++i) {
      const auto& c = crops[i];
      if (c.part.label != k || c.box.empty()) continue;
      const auto& f = fine[i];
      for (index_t z = 0; z < f.depth; ++z)
        for (index_t y = 0; y < f.height; ++y)
          for (index_t x = 0; x < f.width; ++x)
            if (f.at(z, y, x) != 0) out.at(c.box.begin[0] + z, c.box.begin[1] + y, c.box.begin[2] + x) = static_cast<std::uint8_t>(k);
    }
  }
  return out;
}

// What segment_two_stage computed: the stage-1 labels, the crops it planned from them, each part's fine
// prediction (box-sized; empty for a skipped part) and the fused labels.
struct TwoStageResult {
  data::LabelMap coarse, labels;
  std::vector<PartCrop> crops;
  std::vector<data::LabelMap> fine;
};

// The two-stage inference (spec §4 "Inference"): coarse_predict(image) -> data::LabelMap of the image's D x H x W
// (stage 1); for each part with a non-empty box, fine_predict(part, crop of every image channel) -> a box-sized
// data::LabelMap, non-zero = the structure; then paste_back.
template <class CoarsePredict, class FinePredict>
TwoStageResult segment_two_stage(const data::Volume& image, CoarsePredict&& coarse_predict, FinePredict&& fine_predict,
                                 const TwoStagePlan& plan = TwoStagePlan::abcs()) {
  const char* who = "mmnet::hmrnet::segment_two_stage";
  if (image.channels < 1 || image.voxels() == 0)
    fail<shape_error>(who, "image", "a non-empty C x D x H x W volume", image.shape().str());
  TwoStageResult r;
  r.coarse = coarse_predict(image);
  if (r.coarse.depth != image.depth || r.coarse.height != image.height || r.coarse.width != image.width)
    fail<shape_error>(who, "stage-1 label map", Shape{image.depth, image.height, image.width}.str(), r.coarse.shape().str());
  r.crops = plan_crops(plan, r.coarse);
  r.fine.resize(r.crops.size());
  for (std::size_t i = 0; i < r.crops.size(); ++i)
    if (!r.crops[i].box.empty()) r.fine[i] = fine_predict(static_cast<const TwoStagePart&>(r.crops[i].part), data::crop(image, r.crops[i].box));
  r.labels = paste_back(r.coarse, r.crops, r.fine);
  return r;
}

}  // namespace mmnet::models::hmrnet
