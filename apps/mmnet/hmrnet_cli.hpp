// apps/mmnet/hmrnet_cli.hpp: what `mmnet train|segment|info --model hmrnet` share: the two-stage system as one
// module (stage-1 U-Net + one binary HMRNet per part of TwoStagePlan::abcs(); its state dict is RUN/best.h5:
// "stage1.*", "cerebellum.*", "falx.*", "sinus_sagittal.*", "sinus_transverse.*", "tentorium.*", "ventricles.*"),
// the plan of a run, the fine networks' patches (from the ground-truth crops) and the two inference callables
// (nnU-Net's sliding window, softmax, argmax) that hmrnet::segment_two_stage takes.
#pragma once
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <mmnet/data/crop.hpp>
#include <mmnet/hmrnet.hpp>
#include <mmnet/inference/postprocess.hpp>
#include <mmnet/inference/sliding_window.hpp>
#include <mmnet/layers/softmax.hpp>
#include <mmnet/maml.hpp>

#include "cli_common.hpp"
#include "models.hpp"
#include "pipeline.hpp"

namespace mmnet_cli {

namespace hs = mmnet::hmrnet;

// The run's plan: the paper's parts and forms, the run's box margin and sinus split.
inline hs::TwoStagePlan hmrnet_plan(const RunConfig& rc) {
  hs::TwoStagePlan plan = hs::TwoStagePlan::abcs();
  plan.margin = rc.box_margin;
  plan.sinus.half_width(rc.sinus_split[0]).transverse_end(rc.sinus_split[1]).margin(rc.sinus_split[2]);
  plan.validate();
  return plan;
}

// The sinus split the paper's (half width 20 of W = 164, z < 50 of D = 142 [R]) scales to on the barriers
// phantom's 48 x 56 x 48 grid -- half width 6, z < 22 (its transverse sinus lies at z 15..18) -- as fractions of
// W and D for other grids: round(W / 8), round(11 D / 24).
inline std::array<index_t, 3> default_sinus_split(index_t depth, index_t width) {
  return {std::max<index_t>(1, (width + 4) / 8), std::max<index_t>(1, (11 * depth + 12) / 24), 5};
}

inline mmnet::HMRNetForm form_of(const std::string& f) { return f == "s" ? mmnet::HMRNetForm::s : mmnet::HMRNetForm::p; }

// A fine network's patch: the largest ground-truth crop of the part over the training cases, each axis rounded up
// to the form's size multiple and at least 2 voxels at the coarsest level (HMRNet's rule), at most max_patch (spec §4:
// 128; the CPU presets 32): a larger crop is covered by random patches in training and the sliding window.
inline std::vector<index_t> part_patch(const std::vector<mmnet::data::Box>& boxes, const mmnet::HMRNetOptions& o,
                                       index_t max_patch) {
  const auto m = o.size_multiple();
  std::vector<index_t> p(3, 0);
  for (const auto& b : boxes)
    for (int a = 0; a < 3; ++a) p[static_cast<std::size_t>(a)] = std::max(p[static_cast<std::size_t>(a)], b.extent(a));
  for (int a = 0; a < 3; ++a) {
    const index_t k = m[static_cast<std::size_t>(a)];
    index_t v = std::max((p[static_cast<std::size_t>(a)] + k - 1) / k, index_t(2)) * k;
    p[static_cast<std::size_t>(a)] = std::min(v, std::max(max_patch / k * k, 2 * k));
  }
  return p;
}

// Stage 1 and the fine networks as one module (the checkpoint RUN/best.h5).
template <class T, class B>
struct HMRNetSystem : mmnet::Module<T, B> {
  mmnet::models::maml::Branch<T, B> stage1;
  std::vector<std::unique_ptr<mmnet::HMRNet<T, B>>> fine;
  std::vector<std::string> names;

  HMRNetSystem(const HMRNetPreset& preset, const hs::TwoStagePlan& plan, mmnet::Generator& g = mmnet::default_generator())
      : stage1(preset.unet, 3, g) {
    for (const auto& p : plan.parts) {
      fine.push_back(std::make_unique<mmnet::HMRNet<T, B>>(preset.fine(p.form), g));
      names.push_back(p.name);
    }
  }
  void members(mmnet::Members<T, B>& m) override {
    m("stage1", stage1);
    for (std::size_t i = 0; i < fine.size(); ++i) m(names[i], *fine[i]);
  }
};

// nnU-Net's sliding window (step 0.5 by default, its Gaussian; mirror TTA over W only with `tta`: training flips
// only left-right, the anatomy's one symmetry) on `roi`, then argmax.
inline mmnet::inference::SlidingWindowOptions hmrnet_window(const std::vector<index_t>& roi, double overlap, bool tta) {
  return mmnet::inference::SlidingWindowOptions::nnunet({roi[0], roi[1], roi[2]})
      .overlap(overlap)
      .mirror_axes(tta ? std::vector<int>{2} : std::vector<int>{});
}

// Stage-1 labels of a volume: softmax of the U-Net's full-resolution head, argmax.
template <class B>
mmnet::data::LabelMap hmrnet_coarse(mmnet::models::maml::Branch<float, B>& unet, const mmnet::data::Volume& v,
                                    const mmnet::inference::SlidingWindowOptions& sw) {
  mmnet::nn::Softmax<float, B> softmax;
  const auto probs = mmnet::inference::sliding_window_inference<B, float>(
      v, [&](const mmnet::Tensor<float, B>& x) { return softmax.forward(unet.forward(x)[0]); }, sw);
  return mmnet::inference::to_label_map(probs, mmnet::inference::PostprocessOptions::argmax());
}

// A fine network's binary labels of a crop: softmax(y0), argmax.
template <class B>
mmnet::data::LabelMap hmrnet_fine(mmnet::HMRNet<float, B>& net, const mmnet::data::Volume& crop,
                                  const mmnet::inference::SlidingWindowOptions& sw) {
  const auto probs = mmnet::inference::sliding_window_inference<B, float>(
      crop, [&](const mmnet::Tensor<float, B>& x) { return net.predict(x); }, sw);
  return mmnet::inference::to_label_map(probs, mmnet::inference::PostprocessOptions::argmax());
}

}  // namespace mmnet_cli
