// mmnet/cscn.hpp: CSCN (Guo et al., "MRI Image Segmentation of Nasopharyngeal Carcinoma Using Multi-Scale Cascaded
// Fully Convolutional Network", 2021; spec shared/specs/cascaded-fcn.md): BUNet (coarse 3D U-Net) -> ACDNet
// (ASPP-DenseNet with a multi-scale decoder) on 3D blocks cut in three views, and what training them needs.
//
//   #include <mmnet/cscn.hpp>
//   mmnet::CSCN<float, mmnet::cpu> cscn(mmnet::CSCNOptions::paper());   // BUNet 1,147,090 + ACDNet 1,673,234 params
//   auto r = cscn.predict(image);                  // image 1 x 1 x Z x Y x X -> r.p_coarse, r.roi, r.p_fine,
//                                                  //   r.p_final, r.mask (spec §4.4)
//   // Training one stage (spec §3, §4.2-4.3): blocks of (8, 24, 24) in the view frame, focal loss on logits
//   auto& net = cscn.bunet[0];
//   mmnet::models::cscn::he_normal_init(net);
//   mmnet::optim::Adam<float, mmnet::cpu> opt(net.parameters(), mmnet::models::cscn::adam_options());
//   mmnet::losses::DistanceWeightedFocal<float, mmnet::cpu> focal;                  // gamma 2
//   auto alpha = mmnet::losses::distance_weight_map(label);                        // FULL volume, then cut
//   auto d = mmnet::models::cscn::draw_block(g, cases, cscn.options().block());     // case, view, centre, flip
//   auto b = mmnet::models::cscn::cut_block(image, label, alpha, d, cscn.options().block());
//   opt.zero_grad();
//   float loss = focal.forward(net.forward(b.input), b.label, b.alpha);
//   net.backward(focal.backward());
//   opt.set_lr(mmnet::models::cscn::exponential_lr(t, cscn.options()));            // 1e-3 * 0.9^(t / 500)
//   opt.step();
//
// Headers: models/cscn/{options,cbr,bunet,acdnet,views,cascade,training}.hpp.
#pragma once

#include "losses/distance_weighted_focal.hpp"
#include "models/cscn/acdnet.hpp"
#include "models/cscn/bunet.hpp"
#include "models/cscn/cascade.hpp"
#include "models/cscn/cbr.hpp"
#include "models/cscn/options.hpp"
#include "models/cscn/training.hpp"
#include "models/cscn/views.hpp"
#include "optim/adam.hpp"

namespace mmnet {
using models::ACDNetOptions;
using models::BUNetOptions;
using models::CSCNOptions;
template <class T, class Backend>
using BUNet = models::BUNet<T, Backend>;
template <class T, class Backend>
using ACDNet = models::ACDNet<T, Backend>;
template <class T, class Backend>
using CSCN = models::CSCN<T, Backend>;
}  // namespace mmnet
