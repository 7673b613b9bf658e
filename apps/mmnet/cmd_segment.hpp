// apps/mmnet/cmd_segment.hpp: `mmnet segment`: a trained run's model on a split of a data set. The model is rebuilt
// from config.json next to the weights (a checkpoint of another model or config is refused), each case gets the
// training preprocessing (T1 body box, body z-score with the clips, crop), Gaussian sliding-window inference with
// the training patch as the window (optional mirror TTA over H and W, the augmented axes; all three axes for
// MAML), threshold 0.5 (MMFNet) or argmax (MAML), optional largest connected component (binary models), then the crop is undone and PRED/CASE.nii.gz is written with the case's
// reference header (same geometry as the input). MAML with --modalities: only those modalities are read into the
// network (the branch of a single one, the fused head for all, the mean of the branches for 2..M-1; spec §4.5).
// CSCN: each case resampled to the run's 1 mm grid and z-scored (non-zero voxels), CSCN::predict (multi-view BUNet,
// ROI, multi-view ACDNet, λ fusion, mask = P_final > 0.5; --stage coarse: BUNet's multi-view mask P_coarse > 0.5,
// the BUNet-alone baseline), optional largest component, then back onto the case's grid (nearest neighbour).
// --png adds PRED/CASE.png: the CET1 (T1ce) slice through the middle of
// the predicted lesion (the volume's middle slice when nothing is predicted), prediction red, truth outline green.
#pragma once
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <mmnet/core/parallel.hpp>
#include <mmnet/data/crop.hpp>
#include <mmnet/data/dataset.hpp>
#include <mmnet/inference/postprocess.hpp>
#include <mmnet/inference/sliding_window.hpp>
#include <mmnet/io/checkpoint.hpp>
#include <mmnet/cscn.hpp>
#include <mmnet/maml.hpp>
#include <mmnet/mmfnet.hpp>

#include "cli_common.hpp"
#include "conresnet_cli.hpp"
#include "hmrnet_cli.hpp"
#include "models.hpp"
#include "pipeline.hpp"
#include "png.hpp"

namespace mmnet_cli {

struct SegmentArgs {
  std::string weights, data, split = "test", out, modalities, stage = "cascade";
  double overlap = 0.5;
  bool tta = false, png = false, largest = false;
  int threads = 0;
};

inline CLI::App* add_segment_command(CLI::App& app, SegmentArgs& a) {
  auto* c = app.add_subcommand("segment", "Segment a data set split with a trained run; writes PRED/CASE.nii.gz in the input's geometry");
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a later option wins
  c->add_option("--weights", a.weights, "Checkpoint of `mmnet train` (RUN/best.h5; RUN/config.json is read with it)")->required();
  c->add_option("--data", a.data, "Data set directory (dataset.json)")->required();
  c->add_option("--split", a.split, "train or test")->capture_default_str()->check(CLI::IsMember({"train", "test"}));
  c->add_option("--out", a.out, "Output directory for CASE.nii.gz (and CASE.png)")->required();
  c->add_option("--overlap", a.overlap, "Sliding-window overlap in [0, 1)")->capture_default_str();
  c->add_flag("--tta", a.tta, "Mirror test-time augmentation over H and W (4 network calls per window)");
  c->add_flag("--largest-component", a.largest, "Keep only the largest connected component (26-connectivity)");
  c->add_option("--modalities", a.modalities, "maml: the modalities available, e.g. T1ce or T1ce,FLAIR (names or indices; default all)");
  c->add_option("--stage", a.stage, "cscn: cascade (CSCN's P_final), or coarse (BUNet's multi-view P_coarse alone, the baseline); hmrnet: cascade (two-stage) or coarse (stage 1's labels alone)")
      ->capture_default_str()->check(CLI::IsMember({"cascade", "coarse"}));
  c->add_flag("--png", a.png, "Also write a mid-lesion CET1 slice with the prediction overlaid, CASE.png");
  c->add_option("--threads", a.threads, "Threads (0: OpenMP's default)")->capture_default_str();
  return c;
}

namespace segment_detail {

// The axial slice through the middle of the predicted foreground (the volume's middle when there is none).
inline index_t overlay_slice(const mmnet::data::LabelMap& pred) {
  const mmnet::data::Box b = mmnet::data::bounding_box(pred);
  return b.empty() ? pred.depth / 2 : (b.begin[0] + b.end[0] - 1) / 2;
}

// The channel shown under the overlay (of the channels given to the network, `present` in the run's modality
// order) and its grey range: the contrast-enhanced T1 when present (CET1 / T1ce), else the first; MMFNet's clip
// range of that channel, or [-2.5, 3.5] (z-scores) without clips.
struct OverlayChannel {
  index_t channel = 0;
  double lo = -2.5, hi = 3.5;
};
inline OverlayChannel overlay_channel(const RunConfig& rc, const std::vector<index_t>& present) {
  OverlayChannel o;
  for (std::size_t i = 0; i < present.size(); ++i) {
    const std::string& n = rc.modalities[static_cast<std::size_t>(present[i])];
    if (n == "CET1" || n == "T1ce" || n == "T1c" || n == "T1Gd") o.channel = static_cast<index_t>(i);
  }
  if (present.size() == 3 && rc.modalities.size() == 3 && !rc.nonzero()) o.channel = 2;  // MMFNet's (T1, T2, CET1)
  const std::size_t m = static_cast<std::size_t>(present[static_cast<std::size_t>(o.channel)]);
  if (m < rc.clips.size()) o.lo = rc.clips[m][0], o.hi = rc.clips[m][1];
  return o;
}

inline void write_overlay(const std::string& path, const PreparedCase& c, const mmnet::data::LabelMap& pred,
                          const std::optional<mmnet::data::LabelMap>& truth, const OverlayChannel& oc) {
  const auto& img = c.full_image;
  const index_t ch = oc.channel;
  const double lo = oc.lo, hi = oc.hi;
  const index_t z = overlay_slice(pred), H = img.height, W = img.width, s = 3;  // 3x nearest upscaling
  std::vector<std::uint8_t> rgb(static_cast<std::size_t>(H * s * W * s * 3));
  auto on = [&](const mmnet::data::LabelMap& m, index_t y, index_t x) {
    return y >= 0 && y < H && x >= 0 && x < W && m.at(z, y, x) != 0;
  };
  for (index_t y = 0; y < H; ++y)
    for (index_t x = 0; x < W; ++x) {
      const double v = std::clamp((img.at(ch, z, y, x) - lo) / (hi - lo), 0.0, 1.0) * 255.0;
      double r = v, g = v, b = v;
      if (on(pred, y, x)) r = 0.5 * v + 127.5, g = 0.5 * v, b = 0.5 * v;
      if (truth && on(*truth, y, x) &&
          !(on(*truth, y - 1, x) && on(*truth, y + 1, x) && on(*truth, y, x - 1) && on(*truth, y, x + 1)))
        r = 0, g = 255, b = 0;
      for (index_t dy = 0; dy < s; ++dy)
        for (index_t dx = 0; dx < s; ++dx) {
          const std::size_t o = static_cast<std::size_t>(((y * s + dy) * W * s + x * s + dx) * 3);
          rgb[o] = static_cast<std::uint8_t>(r);
          rgb[o + 1] = static_cast<std::uint8_t>(g);
          rgb[o + 2] = static_cast<std::uint8_t>(b);
        }
    }
  write_png_rgb(path, static_cast<int>(W * s), static_cast<int>(H * s), rgb);
}

}  // namespace segment_detail

// Loads a checkpoint into the rebuilt model of its run (strict: every name and shape) and sets eval mode; a mismatch
// names the file and the model.
template <class Net>
void load_run_weights(Net& net, const mmnet::io::Checkpoint& ck, const std::string& weights, const ModelSpec& spec) {
  try {
    net.load_state_dict(ck.model, /*strict=*/true);
  } catch (const mmnet::error& e) {
    throw cli_error(weights + ": does not fit " + spec.name() + " (" + e.what() + ")");
  }
  net.eval();
}

// The data set to segment: it must fit the run (channels, classes, the modality names it was trained with in their
// order) and have cases in --split.
inline mmnet::data::Dataset open_segment_data(const SegmentArgs& a, const RunConfig& rc, const ModelSpec& spec,
                                              const std::string& config_path) {
  mmnet::data::Dataset ds = mmnet::data::open_dataset(a.data);
  check_dataset_fits(ds, spec.modalities(), spec.classes(), "the model of " + config_path);
  for (std::size_t m = 0; m < rc.modalities.size(); ++m)
    if (ds.modalities[m] != rc.modalities[m])
      throw cli_error(join_path(ds.dir, "dataset.json") + ": modality " + std::to_string(m) + " is " + ds.modalities[m] +
                      "; the run was trained with " + rc.modalities[m]);
  if (ds.cases(a.split).empty()) throw cli_error(join_path(ds.dir, "dataset.json") + ": no cases in split " + a.split);
  return ds;
}

// The model of a run, rebuilt and loaded, as a probability function over windows: N x M x roi -> N x C x roi.
class SegmentModel {
 public:
  SegmentModel(const ModelSpec& spec, const RunConfig& rc, const mmnet::io::Checkpoint& ck, const std::string& weights,
               const mmnet::models::ModalitySet& present)
      : present_(present) {
    if (spec.kind == ModelKind::maml) {
      maml_ = std::make_unique<mmnet::MAML<float, mmnet::cpu>>(*spec.maml);
      load_run_weights(*maml_, ck, weights, spec);
    } else {
      mmfnet_ = std::make_unique<mmnet::MMFNet<float, mmnet::cpu>>(*spec.mmfnet);
      load_run_weights(*mmfnet_, ck, weights, spec);
    }
    (void)rc;
  }
  mmnet::Tensor<float, mmnet::cpu> operator()(const mmnet::Tensor<float, mmnet::cpu>& x) {
    return maml_ ? maml_->predict(x, present_) : mmfnet_->forward(x);
  }

 private:
  mmnet::models::ModalitySet present_;
  std::unique_ptr<mmnet::MAML<float, mmnet::cpu>> maml_;
  std::unique_ptr<mmnet::MMFNet<float, mmnet::cpu>> mmfnet_;
};

// CSCN (spec cascaded-fcn §4.4): per case CSCN::predict on the preprocessed volume, mask P > 0.5 (cascade or coarse).
inline int run_segment_cscn(const SegmentArgs& a, const RunConfig& rc, const ModelSpec& spec, const mmnet::io::Checkpoint& ck,
                            const std::string& config_path) {
  using tensor = mmnet::Tensor<float, mmnet::cpu>;
  if (a.tta) throw cli_error("--tta: not for cscn (its inference averages the three views instead)");
  if (a.png) throw cli_error("--png: not for cscn");
  mmnet::CSCN<float, mmnet::cpu> net(*spec.cscn);
  load_run_weights(net, ck, a.weights, spec);
  const mmnet::data::Dataset ds = open_segment_data(a, rc, spec, config_path);
  const auto& cases = ds.cases(a.split);
  const bool coarse = a.stage == "coarse";
  OutputGuard guard;
  guard.make_dir(a.out);
  std::printf("segment: %s from %s, %zu %s cases of %s, %s, block %s, stride %s, on the %s mm grid%s\n", spec.name().c_str(),
              a.weights.c_str(), cases.size(), a.split.c_str(), a.data.c_str(),
              coarse ? "BUNet alone (P_coarse > 0.5)" : "cascade (P_final > 0.5)", spec.cscn->block().str().c_str(),
              spec.cscn->stride().str().c_str(), (fmt(rc.spacing[0], 2) + " x " + fmt(rc.spacing[1], 2) + " x " + fmt(rc.spacing[2], 2)).c_str(),
              a.largest ? ", largest component" : "");
  std::fflush(stdout);
  const auto norm = rc.normalize_options();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const PreparedCase c = prepare_case(mmnet::data::load_case(ds, cases[i]), norm, false, rc.resample_target());
    const auto& v = c.image;
    const tensor x = tensor::from_vector(mmnet::Shape{1, v.channels, v.depth, v.height, v.width}, v.data);
    std::string roi;
    tensor prob;
    if (coarse) {
      prob = net.coarse(x);
    } else {
      const auto r = net.predict(x);
      prob = r.p_final;
      roi = ", ROI " + r.roi.str();
    }
    const auto p = prob.to_vector();
    mmnet::data::LabelMap cropped(v.depth, v.height, v.width, v.spacing);
    for (std::size_t j = 0; j < p.size(); ++j) cropped.data[j] = p[j] > 0.5f ? 1 : 0;
    if (a.largest)
      cropped.data = mmnet::ops::largest_connected_component(cropped.data.data(), mmnet::ops::Dims3{v.depth, v.height, v.width}, 26);
    const mmnet::data::LabelMap full = to_original_grid(cropped, c);
    const std::string path = join_path(a.out, c.name + ".nii.gz");
    guard.add(path);
    mmnet::data::write_label_map(path, full, c.reference);
    std::int64_t fg = 0;
    for (auto e : full.data) fg += e != 0;
    const double voxel_ml = c.spacing[0] * c.spacing[1] * c.spacing[2] / 1000.0;
    std::printf("segment: [%zu/%zu] %s: %lld foreground voxels (%s ml)%s, %.1f s -> %s\n", i + 1, cases.size(), c.name.c_str(),
                static_cast<long long>(fg), fmt(fg * voxel_ml, 2).c_str(), roi.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), path.c_str());
    std::fflush(stdout);
  }
  guard.commit();
  return 0;
}

// HMRNet (spec hmrnet.md §4 "Inference"): per case the run's z-score (whole volume), hmrnet::segment_two_stage --
// stage 1 by nnU-Net's sliding window (window = the stage-1 patch) and argmax, the boxes of its labels (margin 10;
// the sinus split, margin 5), each part's HMRNet through the sliding window on its crop (window = the part's
// patch; a smaller crop is padded), argmax, paste-back -- or, with --stage coarse, stage 1's labels alone.
inline int run_segment_hmrnet(const SegmentArgs& a, const RunConfig& rc, const ModelSpec& spec, const mmnet::io::Checkpoint& ck,
                              const std::string& config_path) {
  namespace hs = mmnet::hmrnet;
  if (a.png) throw cli_error("--png: not for hmrnet");
  if (a.largest) throw cli_error("--largest-component: only for binary models (" + spec.name() + " is multi-class)");
  if (spec.hmrnet->single) throw cli_error(config_path + ": config " + rc.config + " is one fine network, not a two-stage run");
  const hs::TwoStagePlan plan = hmrnet_plan(rc);
  if (rc.parts.size() != plan.parts.size())
    throw cli_error(config_path + ": " + std::to_string(rc.parts.size()) + " hmrnet parts; the plan has " +
                    std::to_string(plan.parts.size()));
  HMRNetSystem<float, mmnet::cpu> sys(*spec.hmrnet, plan);
  load_run_weights(sys, ck, a.weights, spec);
  const mmnet::data::Dataset ds = open_segment_data(a, rc, spec, config_path);
  const auto& cases = ds.cases(a.split);
  const bool coarse = a.stage == "coarse";
  const auto sw1 = hmrnet_window(rc.patch, a.overlap, a.tta);
  std::vector<mmnet::inference::SlidingWindowOptions> sw2;
  for (const auto& p : rc.parts) sw2.push_back(hmrnet_window(p.patch, a.overlap, a.tta));
  OutputGuard guard;
  guard.make_dir(a.out);
  std::printf("segment: %s from %s, %zu %s cases of %s, %s, nnU-Net sliding window (overlap %s, Gaussian%s), stage-1 "
              "window %s\n",
              spec.name().c_str(), a.weights.c_str(), cases.size(), a.split.c_str(), a.data.c_str(),
              coarse ? "stage 1 alone (--stage coarse)" : "two-stage (boxes, fine HMRNets, paste-back)", fmt(a.overlap, 2).c_str(),
              a.tta ? ", mirror TTA on W" : "", shape_str(rc.patch).c_str());
  std::fflush(stdout);
  const auto norm = rc.normalize_options();
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const PreparedCase c = prepare_case(mmnet::data::load_case(ds, cases[i]), norm);
    auto coarse_fn = [&](const mmnet::data::Volume& v) { return hmrnet_coarse(sys.stage1, v, sw1); };
    mmnet::data::LabelMap labels;
    std::string parts;
    if (coarse) {
      labels = coarse_fn(c.image);
    } else {
      auto fine_fn = [&](const hs::TwoStagePart& part, const mmnet::data::Volume& crop) {
        std::size_t k = 0;
        while (plan.parts[k].name != part.name) ++k;
        return hmrnet_fine(*sys.fine[k], crop, sw2[k]);
      };
      const auto r = hs::segment_two_stage(c.image, coarse_fn, fine_fn, plan);
      labels = r.labels;
      int skipped = 0;
      for (const auto& pc : r.crops) skipped += pc.box.empty();
      parts = ", " + std::to_string(r.crops.size() - static_cast<std::size_t>(skipped)) + " of " + std::to_string(r.crops.size()) + " parts refined";
    }
    const mmnet::data::LabelMap full = to_original_grid(labels, c);
    const std::string path = join_path(a.out, c.name + ".nii.gz");
    guard.add(path);
    mmnet::data::write_label_map(path, full, c.reference);
    std::int64_t count[6] = {};
    for (auto v : full.data)
      if (v < 6) ++count[v];
    std::printf("segment: [%zu/%zu] %s: voxels per label 1..5: %lld %lld %lld %lld %lld%s, %.1f s -> %s\n", i + 1, cases.size(),
                c.name.c_str(), static_cast<long long>(count[1]), static_cast<long long>(count[2]), static_cast<long long>(count[3]),
                static_cast<long long>(count[4]), static_cast<long long>(count[5]), parts.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), path.c_str());
    std::fflush(stdout);
  }
  guard.commit();
  return 0;
}

// ConResNet (spec conresnet.md §4.4): per case the run's preprocessing (non-zero crop, z-score), the official
// sliding window (conresnet::sliding_window_probabilities: tiles = the training patch, overlap 1/3, uniform
// average of the sigmoid, X_res of the whole volume), p > 0.5 per region [ET, WT, TC], the label map WT -> 1,
// TC -> 2, ET -> 3 (each overwriting the previous), uncropped.
inline int run_segment_conresnet(const SegmentArgs& a, const RunConfig& rc, const ModelSpec& spec, const mmnet::io::Checkpoint& ck,
                                 const std::string& config_path) {
  using tensor = mmnet::Tensor<float, mmnet::cpu>;
  if (a.tta) throw cli_error("--tta: not for conresnet (its sliding window has no mirroring, spec §4.4)");
  if (a.png) throw cli_error("--png: not for conresnet");
  if (a.largest) throw cli_error("--largest-component: only for binary models (" + spec.name() + " is multi-class)");
  mmnet::ConResNet<float, mmnet::cpu> net(*spec.conresnet);
  load_run_weights(net, ck, a.weights, spec);
  const mmnet::data::Dataset ds = open_segment_data(a, rc, spec, config_path);
  const auto& cases = ds.cases(a.split);
  OutputGuard guard;
  guard.make_dir(a.out);
  std::printf("segment: %s from %s, %zu %s cases of %s, ConResNet sliding window (tiles %s, overlap 1/3, uniform "
              "average of the sigmoid), regions ET, WT, TC > 0.5 -> labels WT 1, TC 2, ET 3\n",
              spec.name().c_str(), a.weights.c_str(), cases.size(), a.split.c_str(), a.data.c_str(), shape_str(rc.patch).c_str());
  std::fflush(stdout);
  const auto norm = rc.normalize_options();
  const mmnet::ExpandingArray3 patch(rc.patch[0], rc.patch[1], rc.patch[2]);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const PreparedCase c = prepare_case(mmnet::data::load_case(ds, cases[i]), norm);
    const auto& v = c.image;
    const tensor x = tensor::from_vector(mmnet::Shape{1, v.channels, v.depth, v.height, v.width}, v.data);
    const auto p = mmnet::conresnet::sliding_window_probabilities(net, x, patch).to_vector();
    const mmnet::data::LabelMap full = to_original_grid(conresnet_label_map(p, v.depth, v.height, v.width, v.spacing), c);
    const std::string path = join_path(a.out, c.name + ".nii.gz");
    guard.add(path);
    mmnet::data::write_label_map(path, full, c.reference);
    std::int64_t count[4] = {};
    for (auto l : full.data)
      if (l < 4) ++count[l];
    std::printf("segment: [%zu/%zu] %s: voxels edema %lld, non-enhancing %lld, enhancing %lld, %.1f s -> %s\n", i + 1,
                cases.size(), c.name.c_str(), static_cast<long long>(count[1]), static_cast<long long>(count[2]),
                static_cast<long long>(count[3]), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                path.c_str());
    std::fflush(stdout);
  }
  guard.commit();
  return 0;
}

inline int run_segment(const SegmentArgs& a) {
  using namespace segment_detail;
  if (a.threads < 0) throw cli_error("--threads: expected >= 0, got " + std::to_string(a.threads));
  if (a.threads > 0) mmnet::set_num_threads(a.threads);
  if (!(a.overlap >= 0 && a.overlap < 1)) throw cli_error("--overlap: expected a value in [0, 1), got " + fmt(a.overlap, 4));
  std::error_code ec;
  if (!fs::exists(a.weights, ec)) throw cli_error(a.weights + ": no such checkpoint (--weights)");
  const std::string config_path = join_path(fs::path(a.weights).parent_path().string(), "config.json");
  const RunConfig rc = RunConfig::read(config_path);
  const ModelSpec spec = model_spec(rc.model, rc.config);
  if (static_cast<index_t>(rc.modalities.size()) != spec.modalities())
    throw cli_error(config_path + ": " + std::to_string(rc.modalities.size()) + " modalities for " + spec.name());
  mmnet::models::ModalitySet present;
  for (index_t m = 0; m < spec.modalities(); ++m) present.push_back(m);
  if (!a.modalities.empty()) {
    if (spec.kind != ModelKind::maml)
      throw cli_error("--modalities: only for a maml run (" + spec.name() + (spec.kind == ModelKind::cscn ? " has one modality)" : " needs all)"));
    present = parse_modalities(a.modalities, rc.modalities);
  }
  const bool all_present = static_cast<index_t>(present.size()) == spec.modalities();

  // The weights must be this run's model: the checkpoint's model name and every tensor shape.
  const mmnet::io::Checkpoint ck = mmnet::io::read_checkpoint(a.weights);
  if (!ck.model_name.empty() && ck.model_name != rc.checkpoint_name())
    throw cli_error(a.weights + ": a checkpoint of " + ck.model_name + ", but " + config_path + " describes " +
                    rc.checkpoint_name());
  if (spec.kind != ModelKind::cscn && spec.kind != ModelKind::hmrnet && a.stage != "cascade")
    throw cli_error("--stage: only for a cscn or hmrnet run");
  if (spec.kind == ModelKind::cscn) return run_segment_cscn(a, rc, spec, ck, config_path);
  if (spec.kind == ModelKind::hmrnet) return run_segment_hmrnet(a, rc, spec, ck, config_path);
  if (spec.kind == ModelKind::conresnet) return run_segment_conresnet(a, rc, spec, ck, config_path);
  SegmentModel net(spec, rc, ck, a.weights, present);

  const mmnet::data::Dataset ds = open_segment_data(a, rc, spec, config_path);
  const auto& cases = ds.cases(a.split);

  auto sw = mmnet::inference::SlidingWindowOptions({rc.patch[0], rc.patch[1], rc.patch[2]})
                .overlap(a.overlap).mode(mmnet::inference::BlendMode::gaussian);
  if (spec.kind == ModelKind::maml)  // nnU-Net's tiles and Gaussian (MAML spec §4.6); MMFNet keeps MONAI's
    sw.placement(mmnet::inference::WindowPlacement::nnunet).gaussian_style(mmnet::inference::GaussianStyle::nnunet);
  if (a.tta) sw.mirror_axes(spec.kind == ModelKind::maml ? std::vector<int>{0, 1, 2} : std::vector<int>{1, 2});
  auto post = spec.output_channels() == 1 ? mmnet::inference::PostprocessOptions::threshold(0.5)
                                          : mmnet::inference::PostprocessOptions::argmax();
  if (a.largest) {
    if (spec.output_channels() != 1) throw cli_error("--largest-component: only for binary models (" + spec.name() + " is multi-class)");
    post.component_filter(mmnet::inference::keep_largest_component(26));
  }
  const auto norm = rc.normalize_options();
  std::string used;
  for (auto m : present) used += (used.empty() ? "" : ",") + rc.modalities[static_cast<std::size_t>(m)];

  OutputGuard guard;
  guard.make_dir(a.out);
  std::printf("segment: %s from %s, %zu %s cases of %s, window %s, overlap %s, gaussian%s%s%s\n", spec.name().c_str(),
              a.weights.c_str(), cases.size(), a.split.c_str(), a.data.c_str(), shape_str(rc.patch).c_str(),
              fmt(a.overlap, 2).c_str(), a.tta ? (spec.kind == ModelKind::maml ? ", mirror TTA (D, H, W)" : ", mirror TTA (H, W)") : "",
              a.largest ? ", largest component" : "",
              all_present ? "" : (", modalities " + used + (present.size() == 1 ? " (its branch)" : " (mean of their branches)")).c_str());
  std::fflush(stdout);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    mmnet::data::LoadedCase lc = mmnet::data::load_case(ds, cases[i]);
    if (!all_present) select_channels(lc, present);
    const PreparedCase c = prepare_case(std::move(lc), norm, a.png, rc.resample_target());
    const auto probs = mmnet::inference::sliding_window_inference<mmnet::cpu, float>(
        c.image, [&](const mmnet::Tensor<float, mmnet::cpu>& x) { return net(x); }, sw);
    const mmnet::data::LabelMap cropped = mmnet::inference::to_label_map(probs, post);
    const mmnet::data::LabelMap full = to_original_grid(cropped, c);
    const std::string path = join_path(a.out, c.name + ".nii.gz");
    guard.add(path);
    mmnet::data::write_label_map(path, full, c.reference);
    std::int64_t fg = 0;
    for (auto v : full.data) fg += v != 0;
    if (a.png) {
      std::optional<mmnet::data::LabelMap> truth;
      if (c.label) truth = mmnet::data::uncrop(*c.label, c.box, c.depth, c.height, c.width);
      const std::string png = join_path(a.out, c.name + ".png");
      guard.add(png);
      write_overlay(png, c, full, truth, overlay_channel(rc, present));
    }
    const double voxel_ml = full.spacing[0] * full.spacing[1] * full.spacing[2] / 1000.0;
    std::printf("segment: [%zu/%zu] %s: %lld foreground voxels (%s ml), %.1f s -> %s\n", i + 1, cases.size(), c.name.c_str(),
                static_cast<long long>(fg), fmt(fg * voxel_ml, 2).c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), path.c_str());
    std::fflush(stdout);
  }
  guard.commit();
  return 0;
}

}  // namespace mmnet_cli
