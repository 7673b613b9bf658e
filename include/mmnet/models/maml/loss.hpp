// mmnet/models/maml/loss.hpp: MAML's total loss (spec maml.md §3; official MAMLTrainerV2 + nnU-Net v1
// MultipleOutputLoss2 over DC_and_CE_loss). No single PyTorch module: tests/reference/maml_ref.py `total_loss`.
//
//   L = w_joint L_seg(Z, Y) + lambda Σ_i Σ_k alpha_k L_seg(z_i^(k), Y^(k))
//
// over MAML::forward()'s list [Z, z_0^(0..P-1), ..., z_{M-1}^(0..P-1)]. L_seg = losses::DiceCE with
// DiceCEOptions::nnunet() (CE - mean foreground batch Dice). Y^(0) = y, Y^(k)[o] = y[2^k o + 2^(k-1)] per axis,
// each from the full-resolution label (nn::downsample_labels_centered). Presets:
//   MAMLLossOptions::code(P)    w_joint = alpha_0, lambda 1, alpha = nnunet_weights(P)   (official code; default)
//   MAMLLossOptions::paper(P)   w_joint 1, lambda 0.5, alpha = [1, 0, ...]              (paper, no deep supervision)
// and the ablations by .variant(): ms_ma drops the intra terms (lambda 0), ms_ensemble the joint term (w_joint 0),
// the other weights kept (spec §3.3 table).
// A term whose weight is 0 is NOT evaluated (MultipleOutputLoss2), and an undefined output (a branch or Z that
// modality dropout or a missing-modality forward left out) is skipped: backward() returns an undefined gradient
// for both, so the network leaves the parameters behind them without a gradient (spec §3.3). When no term is
// left the loss is 0 and every gradient undefined.
//
//   MAMLLoss<float, mmnet::cpu> loss(MAMLLossOptions::code(5));
//   float l = loss.forward(net.forward(x), labels);     // labels: N x 1 x D x H x W class indices
//   net.backward(loss.backward());
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "../../layers/label_resample.hpp"
#include "../../losses/deep_supervision.hpp"
#include "../../losses/dice_ce.hpp"
#include "options.hpp"

namespace mmnet::models {

class MAMLLossOptions {
 public:
  // The code preset for P deep-supervision levels.
  explicit MAMLLossOptions(index_t num_pool) : alpha_(losses::nnunet_weights(static_cast<std::size_t>(checked(num_pool)))) {
    w_joint_ = alpha_[0];
  }
  static MAMLLossOptions code(index_t num_pool) { return MAMLLossOptions(num_pool); }
  static MAMLLossOptions paper(index_t num_pool) {
    std::vector<double> a(static_cast<std::size_t>(checked(num_pool)), 0.0);
    a[0] = 1;
    return MAMLLossOptions(num_pool).w_joint(1).lambda(0.5).alpha(std::move(a));
  }

  // Weight of the joint term L_seg(Z).
  MAMLLossOptions& w_joint(double v) { w_joint_ = v; return *this; }
  double w_joint() const { return variant_ == MAMLVariant::ms_ensemble ? 0.0 : w_joint_; }
  // Weight of the intra (per-branch) terms.
  MAMLLossOptions& lambda(double v) { lambda_ = v; return *this; }
  double lambda() const { return variant_ == MAMLVariant::ms_ma ? 0.0 : lambda_; }
  // Deep-supervision weights alpha_k, k = 0 (full resolution) .. P-1; their count is P.
  MAMLLossOptions& alpha(std::vector<double> v) { alpha_ = std::move(v); return *this; }
  const std::vector<double>& alpha() const { return alpha_; }
  // Ablation: ms_ma makes lambda() 0, ms_ensemble makes w_joint() 0 (whatever was set); maml keeps both.
  MAMLLossOptions& variant(MAMLVariant v) { variant_ = v; return *this; }
  MAMLVariant variant() const { return variant_; }
  // L_seg's options (default DiceCEOptions::nnunet()).
  MAMLLossOptions& seg(const losses::DiceCEOptions& v) { seg_ = v; return *this; }
  const losses::DiceCEOptions& seg() const { return seg_; }

  index_t num_pool() const { return static_cast<index_t>(alpha_.size()); }

  void validate() const {
    const std::string who = "mmnet::MAMLLossOptions";
    auto weight = [&who](const std::string& what, double v) {
      if (!(v >= 0) || !std::isfinite(v)) fail<value_error>(who, what, "a finite value >= 0", v);
    };
    weight("w_joint", w_joint_);
    weight("lambda", lambda_);
    if (alpha_.empty()) fail<value_error>(who, "alpha count (num_pool)", ">= 1", 0);
    for (std::size_t k = 0; k < alpha_.size(); ++k) weight("alpha[" + std::to_string(k) + "]", alpha_[k]);
  }

 private:
  static index_t checked(index_t p) {
    if (p < 1) fail<value_error>("mmnet::MAMLLossOptions", "num_pool", ">= 1", p);
    return p;
  }
  double w_joint_ = 0, lambda_ = 1;
  std::vector<double> alpha_;
  MAMLVariant variant_ = MAMLVariant::maml;
  losses::DiceCEOptions seg_ = losses::DiceCEOptions::nnunet();
};

template <class T, class Backend>
class MAMLLoss {
 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::MAMLLoss";

  explicit MAMLLoss(const MAMLLossOptions& options) : options_(validated(options)) {}
  const MAMLLossOptions& options() const { return options_; }

  // outputs: MAML::forward()'s list, 1 + M P tensors (P = options().num_pool()); labels: N x 1 x D x H x W at
  // full resolution. Undefined outputs and zero-weight terms are skipped.
  T forward(const std::vector<tensor>& outputs, const tensor& labels) {
    const auto p = static_cast<std::size_t>(options_.num_pool());
    if (outputs.empty() || (outputs.size() - 1) % p != 0)
      fail<shape_error>(name, "output count", "1 + M * " + std::to_string(p) + " (Z, then num_pool logit maps per branch)",
                        outputs.size());
    check_rank(name, "labels", labels, 5);
    const std::size_t n = outputs.size();
    if (losses_.size() != n) losses_.assign(n, losses::DiceCE<T, Backend>(options_.seg()));
    terms_.assign(n, 0.0);
    weights_.assign(n, 0.0);
    evaluated_.assign(n, false);
    std::vector<tensor> targets(p);
    auto target = [&](std::size_t k) -> const tensor& {
      if (!targets[k].defined())
        targets[k] = k == 0 ? labels : nn::downsample_labels_centered(labels, ExpandingArray3(index_t(1) << k));
      return targets[k];
    };
    double loss = 0;
    for (std::size_t j = 0; j < n; ++j) {
      const std::size_t k = j == 0 ? 0 : (j - 1) % p;
      const double w = j == 0 ? options_.w_joint() : options_.lambda() * options_.alpha()[k];
      if (w == 0 || !outputs[j].defined()) continue;  // not evaluated: no gradient behind it
      try {
        terms_[j] = static_cast<double>(losses_[j].forward(outputs[j], target(k)));
      } catch (const shape_error& e) {
        throw shape_error(std::string(name) + ": output " + std::to_string(j) + ": " + e.what());
      } catch (const value_error& e) {
        throw value_error(std::string(name) + ": output " + std::to_string(j) + ": " + e.what());
      }
      weights_[j] = w;
      evaluated_[j] = true;
      loss += w * terms_[j];
    }
    done_ = true;
    return static_cast<T>(loss);
  }

  // One gradient per output: w_j grad dL_seg/dz_j, undefined where the term was not evaluated.
  std::vector<tensor> backward(T grad = T(1)) const {
    if (!done_) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    std::vector<tensor> g(losses_.size());
    for (std::size_t j = 0; j < g.size(); ++j)
      if (evaluated_[j]) g[j] = losses_[j].backward(static_cast<T>(weights_[j] * static_cast<double>(grad)));
    return g;
  }

  // L_seg of each output of the last forward (0 where skipped), and which were evaluated.
  const std::vector<double>& terms() const { return terms_; }
  const std::vector<bool>& evaluated() const { return evaluated_; }

 private:
  static const MAMLLossOptions& validated(const MAMLLossOptions& o) {
    o.validate();
    return o;
  }

  MAMLLossOptions options_;
  std::vector<losses::DiceCE<T, Backend>> losses_;
  std::vector<double> terms_, weights_;
  std::vector<bool> evaluated_;
  bool done_ = false;
};

}  // namespace mmnet::models
