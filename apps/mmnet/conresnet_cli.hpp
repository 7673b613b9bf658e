// apps/mmnet/conresnet_cli.hpp: what `mmnet train|segment|forward --model conresnet` share: ConResNet as a
// train::Trainer model (forward(x) computes X_res = conresnet::image_residual(x) itself; the state dict is the
// network's own), the region targets of a label batch, and the label map of the three sigmoid regions.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include <mmnet/conresnet.hpp>
#include <mmnet/data/volume.hpp>

#include "cli_common.hpp"

namespace mmnet_cli {

// ConResNet on one input: X_res from the batch itself (spec §3.1: the residual of the patch the network sees).
template <class T, class B>
struct ConResNetTrainable : mmnet::Module<T, B> {
  using tensor = mmnet::Tensor<T, B>;
  mmnet::ConResNet<T, B> net;

  ConResNetTrainable(const mmnet::ConResNetOptions& o, mmnet::Generator& g) : net(o, g) {}
  void members(mmnet::Members<T, B>& m) override { m.splice(net); }
  std::vector<tensor> forward(const tensor& x) { return net.forward(x, mmnet::conresnet::image_residual(x)); }
  tensor backward(const std::vector<tensor>& d) { return net.backward(d).first; }
  // The Dropout3d mask generator of fusionConv (a resumed run continues its sequence).
  mmnet::Generator& dropout_generator() { return net.fusionConv.dropout->generator(); }
};

// Region probabilities (K x D x H x W of one case, K = 3 in [ET, WT, TC] order) -> nnU-Net's BraTS label map:
// WT -> 1 (edema), TC -> 2 (non-enhancing), ET -> 3 (enhancing), written in that order so that each overwrites
// the previous one (spec §4.4 with the phantom's labels).
inline mmnet::data::LabelMap conresnet_label_map(const std::vector<float>& p, index_t d, index_t h, index_t w,
                                                 const mmnet::data::Spacing& spacing) {
  mmnet::data::LabelMap m(d, h, w, spacing);
  const std::size_t v = static_cast<std::size_t>(d * h * w);
  if (p.size() != 3 * v) throw std::logic_error("conresnet_label_map: expected 3 region channels");
  for (std::size_t i = 0; i < v; ++i) {
    std::uint8_t l = 0;
    if (p[v + i] > 0.5f) l = 1;      // WT
    if (p[2 * v + i] > 0.5f) l = 2;  // TC
    if (p[i] > 0.5f) l = 3;          // ET
    m.data[i] = l;
  }
  return m;
}

}  // namespace mmnet_cli
