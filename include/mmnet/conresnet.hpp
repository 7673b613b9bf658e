// mmnet/conresnet.hpp: ConResNet, inter-slice context residual learning for 3D segmentation (Zhang et al.,
// "Inter-slice Context Residual Learning for 3D Medical Image Segmentation", IEEE TMI 2020; spec
// shared/specs/conresnet.md) and what training and inference need:
//
//   #include <mmnet/conresnet.hpp>
//   mmnet::ConResNet<float, mmnet::cpu> net(mmnet::ConResNetOptions::brats());      // 19,018,732 parameters
//   mmnet::ConResNetLoss<float, mmnet::cpu> loss;                                    // code mode, λ 0.5
//   mmnet::optim::Adam<float, mmnet::cpu> opt(net.parameters(), mmnet::conresnet::adam_options());
//   auto y = mmnet::conresnet::region_targets(labels, mmnet::conresnet::brats_regions_nnunet());  // [ET, WT, TC]
//   opt.set_lr(mmnet::conresnet::poly_lr(1e-4, t, 40000));
//   opt.zero_grad();
//   float l = loss.forward(net.forward(x, mmnet::conresnet::image_residual(x)), y, mmnet::conresnet::label_residual(y));
//   net.backward(loss.backward());
//   opt.step();
//   auto prob = mmnet::conresnet::sliding_window_probabilities(net, volume, {80, 160, 160});
//
// The network is models/conresnet/conresnet.hpp (blocks: models/conresnet/blocks.hpp, the context residual module:
// attention/context_residual.hpp), options and presets models/conresnet/options.hpp, the loss
// models/conresnet/loss.hpp, targets models/conresnet/targets.hpp, optimiser settings models/conresnet/training.hpp,
// the sliding window models/conresnet/inference.hpp.
#pragma once

#include "models/conresnet/blocks.hpp"
#include "models/conresnet/conresnet.hpp"
#include "models/conresnet/inference.hpp"
#include "models/conresnet/loss.hpp"
#include "models/conresnet/options.hpp"
#include "models/conresnet/targets.hpp"
#include "models/conresnet/training.hpp"
#include "optim/adam.hpp"

namespace mmnet {
using models::ConResNetLossOptions;
using models::ConResNetOptions;
namespace conresnet = models::conresnet;
template <class T, class Backend>
using ConResNet = models::ConResNet<T, Backend>;
template <class T, class Backend>
using ConResNetLoss = models::ConResNetLoss<T, Backend>;
}  // namespace mmnet
