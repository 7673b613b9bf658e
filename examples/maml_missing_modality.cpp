// examples/maml_missing_modality.cpp: MAML (modality-aware mutual learning) trained on BraTS-like phantoms and
// asked to segment with a modality missing.
//
// What it shows, in order:
//   1. BraTS-like phantoms in memory (T1, T1ce, T2, FLAIR; labels 1 edema, 2 non-enhancing, 3 enhancing), with
//      nnU-Net's preprocessing: crop to the non-zero box, z-score inside the non-zero mask (MAML spec §4.2);
//   2. a small MAML (4 branches of 8 base channels, 3 poolings) trained with the loss of the official code (joint
//      fused Dice-CE + deep-supervised Dice-CE of every branch, spec §3) and SGD-Nesterov with poly LR and
//      gradient clipping (spec §4.1), written as a plain loop: zero_grad, forward, loss, backward, clip, step;
//      optional modality dropout (a step may train only some branches, mmnet's extension);
//   3. inference on held-out phantoms with nnU-Net's sliding window: once with all four modalities (the fused
//      head), then with each modality alone (that branch's own prediction; no zero-filled channels: the
//      network receives only what is there), with the whole-tumour / tumour-core / enhancing Dice of each.
//
//   maml_missing_modality [steps] [modality dropout]      (defaults: 300 steps, 0)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <mmnet/data/crop.hpp>
#include <mmnet/data/loader.hpp>
#include <mmnet/data/normalize.hpp>
#include <mmnet/data/phantom.hpp>
#include <mmnet/inference/postprocess.hpp>
#include <mmnet/inference/sliding_window.hpp>
#include <mmnet/maml.hpp>
#include <mmnet/metrics/metrics.hpp>
#include <mmnet/optim/lr_scheduler.hpp>
#include <mmnet/optim/sgd.hpp>

using T = float;
using B = mmnet::cpu;  // mmnet::cuda works the same way where the cuda backend is built
using tensor = mmnet::Tensor<T, B>;

// A phantom, cropped to its non-zero box and normalised as nnU-Net does for MRI.
mmnet::data::Case prepared_phantom(std::uint64_t seed, int index) {
  mmnet::data::Phantom p = mmnet::data::make_phantom(mmnet::data::PhantomOptions::brats(), mmnet::data::derive_seed(seed, index));
  const mmnet::data::Box box = mmnet::data::nonzero_box(p.image);
  mmnet::data::normalize(p.image, mmnet::data::NormalizeOptions::nnunet_mri(), p.name);
  return {mmnet::data::crop(p.image, box), mmnet::data::crop(p.label, box), p.name, {}};
}

// Keeps the channels of `present` (what a scanner delivered), in order.
mmnet::data::Volume channels_of(const mmnet::data::Volume& v, const mmnet::ModalitySet& present) {
  mmnet::data::Volume out(static_cast<mmnet::index_t>(present.size()), v.depth, v.height, v.width, v.spacing);
  for (std::size_t i = 0; i < present.size(); ++i)
    std::copy_n(v.channel(present[i]), v.voxels(), out.channel(static_cast<mmnet::index_t>(i)));
  return out;
}

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 300;
  const double dropout = argc > 2 ? std::atof(argv[2]) : 0.0;
  try {
    // 1. Data: 10 training and 3 test phantoms (48^3 voxels of 1 mm).
    std::vector<mmnet::data::Case> train, test;
    for (int i = 0; i < 10; ++i) train.push_back(prepared_phantom(1, i));
    for (int i = 0; i < 3; ++i) test.push_back(prepared_phantom(2, i));
    const std::vector<std::string> names = mmnet::data::phantom_modalities(mmnet::data::PhantomTask::brats_like);

    // 2. The network: M = 4 modalities, K = 4 classes; patches 32^3 (multiples of 2^3).
    mmnet::Generator init(0);
    const auto options = mmnet::MAMLOptions::small().modality_dropout(dropout);
    mmnet::MAML<T, B> net(options, init);
    mmnet::MAMLLoss<T, B> loss(mmnet::MAMLLossOptions::code(options.num_pool()));
    mmnet::optim::SGD<T, B> opt(net.parameters(), mmnet::maml::sgd_options());
    mmnet::optim::PolyLR poly(opt, mmnet::optim::PolyLROptions(steps));  // lr 0.01 (1 - t/T)^0.9, per step here
    std::printf("MAML small: %lld parameters, %d steps, modality dropout %.2f\n",
                static_cast<long long>(net.num_parameters()), steps, dropout);

    // Batches of 2 patches, the second forced to hold tumour (nnU-Net's oversampling), flips on every axis.
    auto sampler = std::make_shared<mmnet::data::PatchSampler>(train, mmnet::data::SamplerOptions({32, 32, 32}));
    mmnet::data::BatchLoader loader(sampler, mmnet::data::LoaderOptions(2).seed(3).augment(
        mmnet::data::AugmentOptions::none().flip_probability({0.5, 0.5, 0.5})));
    net.train();
    double running = 0;
    for (int step = 1; step <= steps; ++step) {
      const mmnet::data::Batch b = loader.next();
      opt.zero_grad();
      const std::vector<tensor> outs = net.forward(b.images);  // [Z, branch logits...]; absent ones undefined
      const T l = loss.forward(outs, b.labels);
      net.backward(loss.backward());  // heads without a loss term keep NO gradient: SGD skips them
      mmnet::optim::clip_grad_norm_(net.parameters(), mmnet::maml::clip_norm);
      opt.step();
      poly.step();
      running = step == 1 ? l : 0.95 * running + 0.05 * l;
      if (step % 25 == 0 || step == steps) std::printf("  step %4d  loss %.4f\n", step, running);
    }
    loader.stop();

    // 3. Inference: nnU-Net's sliding window (tiles of the patch size, step 0.5, Gaussian), softmax outputs.
    net.eval();
    const auto sw = mmnet::inference::SlidingWindowOptions({32, 32, 32})
                        .overlap(0.5).mode(mmnet::inference::BlendMode::gaussian)
                        .placement(mmnet::inference::WindowPlacement::nnunet)
                        .gaussian_style(mmnet::inference::GaussianStyle::nnunet);
    const auto regions = mmnet::metrics::nnunet_brats_regions();  // WT {1,2,3}, TC {2,3}, ET {3}
    std::vector<mmnet::ModalitySet> sets{{0, 1, 2, 3}, {0}, {1}, {2}, {3}};
    std::printf("%-26s %8s %8s %8s\n", "available modalities", "WT", "TC", "ET");
    for (const auto& present : sets) {
      double dice[3] = {0, 0, 0};
      int count[3] = {0, 0, 0};
      for (const auto& c : test) {
        const auto probs = mmnet::inference::sliding_window_inference<B, T>(
            channels_of(c.image, present), [&](const tensor& x) { return net.predict(x, present); }, sw);
        const auto pred = mmnet::inference::to_label_map(probs, mmnet::inference::PostprocessOptions::argmax());
        mmnet::metrics::MetricOptions mo;
        mo.surface = false;
        const auto m = mmnet::metrics::evaluate_regions(pred.data, c.label.data,
                                                        mmnet::ops::Dims3{pred.depth, pred.height, pred.width},
                                                        {1.0, 1.0, 1.0}, regions, mo);
        for (int r = 0; r < 3; ++r)
          if (m[static_cast<std::size_t>(r)].dice == m[static_cast<std::size_t>(r)].dice)  // NaN: empty truth
            dice[r] += m[static_cast<std::size_t>(r)].dice, ++count[r];
      }
      std::string label = present.size() == 4 ? "all (fused head)" : names[static_cast<std::size_t>(present[0])] + " only (its branch)";
      std::printf("%-26s %8.4f %8.4f %8.4f\n", label.c_str(), count[0] ? dice[0] / count[0] : 0.0,
                  count[1] ? dice[1] / count[1] : 0.0, count[2] ? dice[2] / count[2] : 0.0);
    }
  } catch (const mmnet::error& e) {
    std::fprintf(stderr, "maml_missing_modality: %s\n", e.what());
    return 1;
  }
  return 0;
}
