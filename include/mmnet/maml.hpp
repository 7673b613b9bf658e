// mmnet/maml.hpp: MAML, modality-aware mutual learning (Zhang et al., "Modality-aware Mutual Learning for
// Multi-modal Medical Image Segmentation", MICCAI 2021; spec shared/specs/maml.md) and what training it needs:
//
//   #include <mmnet/maml.hpp>
//   mmnet::MAML<float, mmnet::cpu> net(mmnet::MAMLOptions::brats());          // 66,484,752 parameters
//   mmnet::MAMLLoss<float, mmnet::cpu> loss(mmnet::MAMLLossOptions::code(5)); // joint 8/15 + deep-supervised intra
//   mmnet::optim::SGD<float, mmnet::cpu> opt(net.parameters(), mmnet::maml::sgd_options());
//   opt.zero_grad();
//   float l = loss.forward(net.forward(x), labels);   // x: N x 4 x D x H x W (T1, T1ce, T2, FLAIR), D, H, W % 32 == 0
//   net.backward(loss.backward());                    // parameters no term reaches are left without a gradient
//   mmnet::optim::clip_grad_norm_(net, mmnet::maml::clip_norm);
//   opt.step();
//   auto prob = net.predict(x);                       // softmax(Z); net.predict(x, {1}): T1ce only
//
// The network is models/maml/maml.hpp (branches models/maml/branch.hpp), options and presets
// models/maml/options.hpp, the loss models/maml/loss.hpp, optimiser settings and the train::Trainer adapter
// models/maml/training.hpp.
#pragma once

#include "models/maml/branch.hpp"
#include "models/maml/loss.hpp"
#include "models/maml/maml.hpp"
#include "models/maml/options.hpp"
#include "models/maml/training.hpp"
#include "optim/clip_grad.hpp"

namespace mmnet {
using models::MAMLLossOptions;
using models::MAMLOptions;
using models::MAMLVariant;
using models::ModalitySet;
namespace maml = models::maml;
template <class T, class Backend>
using MAML = models::MAML<T, Backend>;
template <class T, class Backend>
using MAMLLoss = models::MAMLLoss<T, Backend>;
}  // namespace mmnet
