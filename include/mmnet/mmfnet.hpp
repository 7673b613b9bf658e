// mmnet/mmfnet.hpp: MMFNet (Chen et al., "MMFNet: A multi-modality MRI fusion network for segmentation of
// nasopharyngeal carcinoma", Neurocomputing 2020) and what training it needs:
//
//   #include <mmnet/mmfnet.hpp>
//   mmnet::MMFNet<float, mmnet::cpu> net(mmnet::MMFNetOptions::paper());     // 1,548,403 parameters
//   mmnet::losses::SoftDice<float, mmnet::cpu> dice;                           // spec §3: eps 1, batch-global
//   mmnet::optim::Adam<float, mmnet::cpu> opt(net.parameters(), mmnet::optim::AdamOptions(1e-3));
//   opt.zero_grad();
//   float loss = dice.forward(net.forward(x), labels);                        // x: N x 3 x D x H x W (T1, T2, CET1)
//   net.backward(dice.backward());
//   opt.step();
//
// The network is models/mmfnet/mmfnet.hpp; its options and presets (paper, tiny, single-modality and the
// ablations) models/mmfnet/options.hpp.
#pragma once

#include "losses/soft_dice.hpp"
#include "models/mmfnet/decoder.hpp"
#include "models/mmfnet/encoder.hpp"
#include "models/mmfnet/fusion_block.hpp"
#include "models/mmfnet/mmfnet.hpp"
#include "models/mmfnet/options.hpp"
#include "models/mmfnet/training.hpp"
#include "optim/adam.hpp"

namespace mmnet {
using models::MMFNetFusion;
using models::MMFNetOptions;
template <class T, class Backend>
using MMFNet = models::MMFNet<T, Backend>;
}  // namespace mmnet
