// examples/hmrnet_two_stage.cpp: HMRNet's two-stage segmentation of the five brain barriers (spec hmrnet.md §1,
// §4) on synthetic CT / T1c / T2 phantoms, end to end on the CPU.
//
// What it shows, in order:
//   1. barriers phantoms in memory (data/phantom.hpp, PhantomTask::barriers: 48 x 56 x 48 voxels of 1.2 mm,
//      labels 1 cerebellum, 2 falx, 3 sinuses, 4 tentorium, 5 ventricles), z-scored per image and channel ([R]);
//   2. stage 1: a small multi-class nnU-Net-style U-Net (maml::Branch on 3 input channels, deep supervision,
//      Dice + CE) trained on whole volumes; only its bounding boxes are used later;
//   3. stage 2: one small binary HMRNet per part of TwoStagePlan::abcs() (-p for cerebellum, tentorium,
//      ventricles; -s for falx and the two sinus parts), trained on the ground-truth crops (margin 10; sinus split
//      into a sagittal slab and transverse slices, margin 5) with HMRNet's loss (fn-weighted Dice + CE, the paper's θ per structure);
//   4. segment_two_stage on held-out phantoms: stage-1 prediction -> boxes -> crops -> each HMRNet through
//      inference::sliding_window_inference -> paste-back; Dice and ASSD per structure, stage 1 alone vs two-stage.
// It is a demo: a few hundred steps and Adam (not the paper's 300 x 250 SGD iterations), tiny widths.
//
//   hmrnet_two_stage [stage-1 steps] [stage-2 steps per part]      (defaults: 300, 200)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <mmnet/data/crop.hpp>
#include <mmnet/data/phantom.hpp>
#include <mmnet/hmrnet.hpp>
#include <mmnet/inference/postprocess.hpp>
#include <mmnet/inference/sliding_window.hpp>
#include <mmnet/layers/label_resample.hpp>
#include <mmnet/layers/softmax.hpp>
#include <mmnet/losses/deep_supervision.hpp>
#include <mmnet/losses/dice_ce.hpp>
#include <mmnet/maml.hpp>
#include <mmnet/metrics/metrics.hpp>
#include <mmnet/optim/adam.hpp>
#include <mmnet/optim/clip_grad.hpp>

using T = float;
using B = mmnet::cpu;  // mmnet::cuda works the same way where the cuda backend is built
using tensor = mmnet::Tensor<T, B>;
namespace data = mmnet::data;
namespace hs = mmnet::hmrnet;

struct Case {
  data::Volume image;
  data::LabelMap label;
};

// A phantom, z-scored per channel over the whole volume (spec §4 [R]).
Case make_case(std::uint64_t seed, int index) {
  data::Phantom p = data::make_phantom(data::PhantomOptions::barriers(), data::derive_seed(seed, static_cast<std::uint64_t>(index)));
  for (mmnet::index_t c = 0; c < p.image.channels; ++c) {
    float* v = p.image.channel(c);
    double s = 0, s2 = 0;
    for (mmnet::index_t i = 0; i < p.image.voxels(); ++i) s += v[i], s2 += static_cast<double>(v[i]) * v[i];
    const double n = static_cast<double>(p.image.voxels()), mean = s / n, sd = std::sqrt(std::max(s2 / n - mean * mean, 1e-12));
    for (mmnet::index_t i = 0; i < p.image.voxels(); ++i) v[i] = static_cast<float>((v[i] - mean) / sd);
  }
  return {p.image, p.label};
}

tensor image_tensor(const data::Volume& v) {
  return tensor::from_vector(mmnet::Shape{1, v.channels, v.depth, v.height, v.width}, v.data);
}
tensor label_tensor(const data::LabelMap& m) {
  return tensor::from_vector(mmnet::Shape{1, 1, m.depth, m.height, m.width}, std::vector<T>(m.data.begin(), m.data.end()));
}

// The smallest size >= n that is a multiple of k and holds >= 2 voxels at HMRNet's coarsest level.
mmnet::index_t round_up(mmnet::index_t n, mmnet::index_t k) { return std::max((n + k - 1) / k, mmnet::index_t(2)) * k; }

// Zero-pads a crop (and its target) at the end of each axis to HMRNet's size rule.
data::Box padded_box(const data::Box& b, const mmnet::HMRNetOptions& o) {
  const auto m = o.size_multiple();
  data::Box p{{0, 0, 0}, {round_up(b.extent(0), m[0]), round_up(b.extent(1), m[1]), round_up(b.extent(2), m[2])}};
  return p;
}
data::Volume pad(const data::Volume& v, const data::Box& p) {
  return data::uncrop(v, data::Box{{0, 0, 0}, {v.depth, v.height, v.width}}, p.end[0], p.end[1], p.end[2]);
}
data::LabelMap pad(const data::LabelMap& m, const data::Box& p) {
  return data::uncrop(m, data::Box{{0, 0, 0}, {m.depth, m.height, m.width}}, p.end[0], p.end[1], p.end[2]);
}

double dice(const data::LabelMap& a, const data::LabelMap& b, int k) {
  long long inter = 0, na = 0, nb = 0;
  for (std::size_t i = 0; i < a.data.size(); ++i) {
    const bool x = a.data[i] == k, y = b.data[i] == k;
    inter += x && y, na += x, nb += y;
  }
  return na + nb ? 2.0 * static_cast<double>(inter) / static_cast<double>(na + nb) : 1.0;
}
double assd(const data::LabelMap& a, const data::LabelMap& b, int k) {
  std::vector<std::uint8_t> pa(a.data.size()), pb(b.data.size());
  for (std::size_t i = 0; i < a.data.size(); ++i) pa[i] = a.data[i] == k, pb[i] = b.data[i] == k;
  const auto sd = mmnet::metrics::surface_distances(pa.data(), pb.data(), mmnet::ops::Dims3{a.depth, a.height, a.width},
                                                    {a.spacing[0], a.spacing[1], a.spacing[2]});
  return mmnet::metrics::average_symmetric_surface_distance(sd);
}

int main(int argc, char** argv) {
  const int steps1 = argc > 1 ? std::atoi(argv[1]) : 300;
  const int steps2 = argc > 2 ? std::atoi(argv[2]) : 200;
  const bool quick = steps1 < 10;  // the ctest run: no mirror TTA
  try {
    // 1. Data: 4 training and 2 held-out phantoms.
    std::vector<Case> train, test;
    for (int i = 0; i < (quick ? 1 : 4); ++i) train.push_back(make_case(1, i));
    for (int i = 0; i < (quick ? 1 : 2); ++i) test.push_back(make_case(2, i));
    const auto names = data::phantom_labels(data::PhantomTask::barriers);

    // 2. Stage 1: a 3-level U-Net (base 8 channels) on [CT, T1c, T2], 6 classes, deep supervision (nnU-Net weights).
    mmnet::Generator init(0);
    const auto uo = mmnet::MAMLOptions(1, 6).base_channels(8).num_pool(3).max_channels(32);
    mmnet::models::maml::Branch<T, B> unet(uo, 3, init);
    mmnet::losses::DeepSupervision<mmnet::losses::DiceCE<T, B>> ds(mmnet::losses::nnunet_weights(3));
    mmnet::optim::Adam<T, B> opt1(unet.parameters(), mmnet::optim::AdamOptions(3e-3));
    std::printf("stage 1: U-Net, %lld parameters, %d steps on whole 48 x 56 x 48 volumes\n",
                static_cast<long long>(unet.num_parameters()), steps1);
    for (int step = 1; step <= steps1; ++step) {
      const Case& c = train[static_cast<std::size_t>(step - 1) % train.size()];
      const tensor y = label_tensor(c.label);
      opt1.zero_grad();
      const auto z = unet.forward(image_tensor(c.image));
      const T l = ds.forward(z, {y, mmnet::nn::downsample_labels_strided(y, mmnet::ExpandingArray3(2)),
                                 mmnet::nn::downsample_labels_strided(y, mmnet::ExpandingArray3(4))});
      unet.backward(ds.backward());
      mmnet::optim::clip_grad_norm_(unet.parameters(), 12.0);
      opt1.step();
      if (step % 25 == 0 || step == steps1) std::printf("  step %4d  loss %.4f\n", step, static_cast<double>(l));
    }
    mmnet::nn::Softmax<T, B> softmax;  // over the class axis
    auto coarse_predict = [&](const data::Volume& v) {
      const auto probs = mmnet::inference::sliding_window_inference<B, T>(
          v, [&](const tensor& x) { return softmax.forward(unet.forward(x)[0]); },
          mmnet::inference::SlidingWindowOptions::nnunet({48, 56, 48}).mirror_axes(quick ? std::vector<int>{} : std::vector<int>{2}));
      return mmnet::inference::to_label_map(probs, mmnet::inference::PostprocessOptions::argmax());
    };

    // 3. Stage 2: one binary HMRNet per part, trained on the ground-truth crops.
    hs::TwoStagePlan plan = hs::TwoStagePlan::abcs();
    plan.sinus.half_width(6).transverse_end(22);  // the paper's 20 / 50 voxels scaled to this 48 x 56 x 48 grid
    std::vector<std::unique_ptr<mmnet::HMRNet<T, B>>> nets;
    std::vector<mmnet::HMRNetOptions> net_options;
    for (const auto& part : plan.parts) {
      const auto o = part.form == mmnet::HMRNetForm::p ? mmnet::HMRNetOptions::tiny_p() : mmnet::HMRNetOptions::tiny_s();
      net_options.push_back(o);
      nets.push_back(std::make_unique<mmnet::HMRNet<T, B>>(o, init));
      auto& net = *nets.back();
      // the crops of every training case for this part (ground-truth boxes, spec §4 "Crops")
      std::vector<std::pair<tensor, tensor>> samples;
      for (const auto& c : train)
        for (const auto& pc : hs::plan_crops(plan, c.label))
          if (pc.part.name == part.name && !pc.box.empty()) {
            const data::Box pb = padded_box(pc.box, o);
            samples.emplace_back(image_tensor(pad(data::crop(c.image, pc.box), pb)), label_tensor(pad(hs::part_target(c.label, pc), pb)));
          }
      // θ of the paper per structure (falx 3, tentorium 3.5, ...): false negatives of thin sheets cost more
      const double theta = mmnet::HMRNetLossOptions::theta_for(part.label, part.region == hs::PartRegion::sinus_transverse);
      mmnet::HMRNetLoss<T, B> loss(mmnet::HMRNetLossOptions().theta(theta));
      mmnet::optim::Adam<T, B> opt(net.parameters(), mmnet::optim::AdamOptions(3e-3));
      double last = 0;
      for (int step = 1; step <= steps2 && !samples.empty(); ++step) {
        const auto& s = samples[static_cast<std::size_t>(step - 1) % samples.size()];
        opt.zero_grad();
        last = loss.forward(net.forward(s.first), s.second);
        net.backward(loss.backward());
        mmnet::optim::clip_grad_norm_(net, hs::clip_norm);
        opt.step();
      }
      // Dice of the trained model on its own training crops (argmax of y0 vs the target)
      long long tp = 0, np_ = 0, ng = 0;
      for (const auto& s : samples) {
        const auto prob = net.predict(s.first).to_vector();
        const auto lab = s.second.to_vector();
        const std::size_t n = lab.size();
        for (std::size_t i = 0; i < n; ++i) {
          const bool pr = prob[n + i] > prob[i], gt = lab[i] > 0.5f;
          tp += pr && gt, np_ += pr, ng += gt;
        }
      }
      std::printf("stage 2: %-16s HMRNet-%s (%lld parameters), theta %.1f, %zu crop(s) e.g. %lld x %lld x %lld, loss %.4f, "
                  "training-crop Dice %.4f\n",
                  part.name.c_str(), mmnet::models::to_string(part.form), static_cast<long long>(net.num_parameters()), theta,
                  samples.size(), samples.empty() ? 0LL : static_cast<long long>(samples[0].first.size(2)),
                  samples.empty() ? 0LL : static_cast<long long>(samples[0].first.size(3)),
                  samples.empty() ? 0LL : static_cast<long long>(samples[0].first.size(4)), last,
                  np_ + ng ? 2.0 * static_cast<double>(tp) / static_cast<double>(np_ + ng) : 1.0);
    }
    // A fine model runs through nnU-Net's sliding window (one window: the padded crop size), softmax, argmax.
    auto fine_predict = [&](const hs::TwoStagePart& part, const data::Volume& crop) {
      std::size_t i = 0;
      while (plan.parts[i].name != part.name) ++i;
      const data::Box pb = padded_box(data::Box{{0, 0, 0}, {crop.depth, crop.height, crop.width}}, net_options[i]);
      // mirror TTA only left-right (W): the demo trains without flip augmentation, and the anatomy is mirror-
      // symmetric only about the mid-sagittal plane (nnU-Net mirrors all three axes because it trains with flips)
      auto sw = mmnet::inference::SlidingWindowOptions::nnunet({pb.end[0], pb.end[1], pb.end[2]})
                    .mirror_axes(quick ? std::vector<int>{} : std::vector<int>{2});
      auto& net = *nets[i];
      const auto probs = mmnet::inference::sliding_window_inference<B, T>(crop, [&](const tensor& x) { return net.predict(x); }, sw);
      return mmnet::inference::to_label_map(probs, mmnet::inference::PostprocessOptions::argmax());
    };

    // 4. Two-stage inference on the held-out phantoms.
    unet.eval();
    for (auto& n : nets) n->eval();
    std::vector<double> d1(6, 0), d2(6, 0), a1(6, 0), a2(6, 0);
    for (const auto& c : test) {
      const auto r = hs::segment_two_stage(c.image, coarse_predict, fine_predict, plan);
      for (int k = 1; k <= 5; ++k) {
        d1[static_cast<std::size_t>(k)] += dice(r.coarse, c.label, k) / static_cast<double>(test.size());
        d2[static_cast<std::size_t>(k)] += dice(r.labels, c.label, k) / static_cast<double>(test.size());
        a1[static_cast<std::size_t>(k)] += assd(r.coarse, c.label, k) / static_cast<double>(test.size());
        a2[static_cast<std::size_t>(k)] += assd(r.labels, c.label, k) / static_cast<double>(test.size());
      }
    }
    std::printf("%zu held-out phantom(s): Dice / ASSD (mm), stage 1 alone vs two-stage\n", test.size());
    std::printf("%-12s %10s %10s %10s %10s\n", "structure", "Dice s1", "Dice 2st", "ASSD s1", "ASSD 2st");
    for (int k = 1; k <= 5; ++k)
      std::printf("%-12s %10.4f %10.4f %10.3f %10.3f\n", names[static_cast<std::size_t>(k)].c_str(), d1[static_cast<std::size_t>(k)],
                  d2[static_cast<std::size_t>(k)], a1[static_cast<std::size_t>(k)], a2[static_cast<std::size_t>(k)]);
  } catch (const mmnet::error& e) {
    std::fprintf(stderr, "hmrnet_two_stage: %s\n", e.what());
    return 1;
  }
  return 0;
}
