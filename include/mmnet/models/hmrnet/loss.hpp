// mmnet/models/hmrnet/loss.hpp: HMRNet's deep-supervised fine-stage loss (spec hmrnet.md §3, Eqs. 9-11). No
// single PyTorch module: tests/reference/hmrnet_ref.py `total_loss`.
//
//   L = Σ_s λ_s (L_fnDice(θ) + L_CE)(y_s, label[::s])      over HMRNet::forward()'s [y0, y1, y2, y3]
//
// L_fnDice = 1 - (2 TP + 1e-5) / (2 TP + θ FN + FP + 1e-5), foreground channel, batch Dice (sums over batch and
// space); L_CE = mean cross-entropy (losses::DiceCE with DiceCEOptions::hmrnet(θ)). θ = 1 is the plain Dice+CE.
// G_s = label[::s] per axis (strided picking from index 0, nn::downsample_labels_strided), s = label size /
// output size per axis (2, 4, 8 for -p; 2, 4, (8, 8, 4) for -s). Default λ = (0.4, 0.3, 0.3, 0) for (y0, y1, y2, y3)
// [spec §3, R]; a term with λ = 0 is SKIPPED, not multiplied by 0 (nnU-Net MultipleOutputLoss2): backward()
// returns an undefined gradient for it, so HMRNet leaves that head (dpvision_con3) without a gradient.
// θ per structure [P]: cerebellum 2.0, transverse sinus 2.0, falx 3.0, sagittal sinus 3.0, tentorium 3.5,
// ventricles 2.5 (HMRNetLossOptions::theta_for(structure)).
//
//   HMRNetLoss<float, mmnet::cpu> loss(HMRNetLossOptions().theta(2.5));
//   float l = loss.forward(net.forward(x), labels);   // labels: N x 1 x D x H x W, values 0 / 1
//   net.backward(loss.backward());
#pragma once
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "../../layers/label_resample.hpp"
#include "../../losses/deep_supervision.hpp"
#include "../../losses/dice_ce.hpp"

namespace mmnet::models {

class HMRNetLossOptions {
 public:
  HMRNetLossOptions() = default;

  // θ, the weight of the false negatives in L_fnDice (default 1: plain Dice + CE).
  HMRNetLossOptions& theta(double v) { theta_ = v; return *this; }
  double theta() const { return theta_; }
  // λ for (y0, y1, y2, y3) (default 0.4, 0.3, 0.3, 0).
  HMRNetLossOptions& lambda(std::array<double, 4> v) { lambda_ = v; return *this; }
  const std::array<double, 4>& lambda() const { return lambda_; }

  // The paper's θ of an ABCs structure label (1 cerebellum 2.0, 2 falx 3.0, 3 sinus 3.0 (sagittal; the transverse
  // part uses 2.0), 4 tentorium 3.5, 5 ventricles 2.5); transverse_sinus selects 2.0 for label 3.
  static double theta_for(int structure, bool transverse_sinus = false) {
    switch (structure) {
      case 1: return 2.0;
      case 2: return 3.0;
      case 3: return transverse_sinus ? 2.0 : 3.0;
      case 4: return 3.5;
      case 5: return 2.5;
      default: fail<value_error>("mmnet::HMRNetLossOptions::theta_for", "structure label", "1..5", structure);
    }
    return 1.0;
  }

  void validate() const {
    const std::string who = "mmnet::HMRNetLossOptions";
    if (!(theta_ >= 0) || !std::isfinite(theta_)) fail<value_error>(who, "theta", "a finite value >= 0", theta_);
    for (std::size_t k = 0; k < 4; ++k)
      if (!(lambda_[k] >= 0) || !std::isfinite(lambda_[k]))
        fail<value_error>(who, "lambda[" + std::to_string(k) + "]", "a finite value >= 0", lambda_[k]);
  }

 private:
  double theta_ = 1.0;
  std::array<double, 4> lambda_{0.4, 0.3, 0.3, 0.0};
};

template <class T, class Backend>
class HMRNetLoss {
 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::HMRNetLoss";

  explicit HMRNetLoss(const HMRNetLossOptions& options = HMRNetLossOptions())
      : options_(validated(options)),
        ds_(std::vector<double>(options.lambda().begin(), options.lambda().end()),
            losses::DiceCE<T, Backend>(losses::DiceCEOptions::hmrnet(options.theta()))) {}
  const HMRNetLossOptions& options() const { return options_; }

  // outputs: [y0, y1, y2, y3] (N x K x ...); labels: N x 1 x D x H x W class indices at y0's resolution.
  T forward(const std::vector<tensor>& outputs, const tensor& labels) {
    if (outputs.size() != 4) fail<shape_error>(name, "output count ([y0, y1, y2, y3])", 4, outputs.size());
    check_rank(name, "labels", labels, 5);
    std::vector<tensor> targets(4);
    for (std::size_t k = 0; k < 4; ++k) {
      if (options_.lambda()[k] == 0) continue;  // skipped term: no target needed
      const tensor& y = outputs[k];
      check_rank(name, "output y" + std::to_string(k), y, 5);
      index_t f[3];
      for (int a = 0; a < 3; ++a) {
        const index_t n = labels.size(2 + a), m = y.size(2 + a);
        if (m < 1 || n % m != 0)
          fail<shape_error>(name, "label extent " + std::string(1, "DHW"[a]) + " (a multiple of y" + std::to_string(k) + "'s)",
                            "a multiple of " + std::to_string(m), n,
                            "labels shape " + labels.shape().str() + ", y" + std::to_string(k) + " shape " + y.shape().str());
        f[a] = n / m;
      }
      targets[k] = (f[0] == 1 && f[1] == 1 && f[2] == 1) ? labels
                                                          : nn::downsample_labels_strided(labels, ExpandingArray3(f[0], f[1], f[2]));
    }
    return ds_.forward(outputs, targets);
  }

  // One gradient per output, λ_s dL_fseg/dy_s; undefined for skipped (λ = 0) terms.
  std::vector<tensor> backward(T grad = T(1)) const { return ds_.backward(grad); }

  // L_fseg of each output of the last forward (0 where skipped).
  const std::vector<double>& terms() const { return ds_.terms(); }

 private:
  static const HMRNetLossOptions& validated(const HMRNetLossOptions& o) {
    o.validate();
    return o;
  }
  HMRNetLossOptions options_;
  losses::DeepSupervision<losses::DiceCE<T, Backend>> ds_;
};

}  // namespace mmnet::models
