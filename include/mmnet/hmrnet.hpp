// mmnet/hmrnet.hpp: HMRNet, high- and multi-resolution network with bidirectional feature calibration (Fu et al.,
// "HMRNet: High and Multi-Resolution Network with Bidirectional Feature Calibration for Brain Structure
// Segmentation in Radiotherapy"; spec shared/specs/hmrnet.md) and what training it needs:
//
//   #include <mmnet/hmrnet.hpp>
//   mmnet::HMRNet<float, mmnet::cpu> net(mmnet::HMRNetOptions::paper_p());     // 3,124,092 parameters
//   mmnet::HMRNetLoss<float, mmnet::cpu> loss(mmnet::HMRNetLossOptions().theta(2.5));
//   mmnet::optim::SGD<float, mmnet::cpu> opt(net.parameters(), mmnet::hmrnet::sgd_options());
//   opt.zero_grad();
//   float l = loss.forward(net.forward(x), labels);  // x: N x 3 x D x H x W (CT, T1c, T2), D, H, W % 8 == 0
//   net.backward(loss.backward());                   // dpvision_con3 (λ = 0) is left without a gradient
//   mmnet::optim::clip_grad_norm_(net, mmnet::hmrnet::clip_norm);
//   opt.step();
//   auto prob = net.predict(x);                      // softmax(y0)
//
// HMRNetOptions::paper_s() is the 2.5D separable form (D, H, W multiples of (8, 8, 4), slice axis W). The
// network is models/hmrnet/hmrnet.hpp (block B: models/hmrnet/block.hpp, BFC levels: attention/bfc.hpp),
// options and presets models/hmrnet/options.hpp, the loss models/hmrnet/loss.hpp, optimiser settings and the
// train::Trainer adapter models/hmrnet/training.hpp, the two-stage pipeline (stage-1 boxes, sinus split,
// paste-back, segment_two_stage) models/hmrnet/two_stage.hpp.
#pragma once

#include "models/hmrnet/block.hpp"
#include "models/hmrnet/hmrnet.hpp"
#include "models/hmrnet/loss.hpp"
#include "models/hmrnet/options.hpp"
#include "models/hmrnet/training.hpp"
#include "models/hmrnet/two_stage.hpp"
#include "optim/clip_grad.hpp"

namespace mmnet {
using models::HMRNetForm;
using models::HMRNetLossOptions;
using models::HMRNetOptions;
namespace hmrnet = models::hmrnet;
template <class T, class Backend>
using HMRNet = models::HMRNet<T, Backend>;
template <class T, class Backend>
using HMRNetLoss = models::HMRNetLoss<T, Backend>;
}  // namespace mmnet
