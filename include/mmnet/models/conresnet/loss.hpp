// mmnet/models/conresnet/loss.hpp: ConResNet's training loss (spec conresnet.md §3.2-3.4; the official
// DiceLoss4BraTS + BCELoss4BraTS on seg and BCELossBoud on the three residual outputs, utils/loss.py):
//
//   L = L_dice(seg) + L_bce(seg) + L_b(res) + λ (L_b(resx2) + L_b(resx4))           λ = 0.5 (code, paper Eq. 9)
//   L_dice = mean over (n, k) of 1 - 2 Σ_v p y / (Σ_v p + Σ_v y + 1),  p = sigmoid(seg)   (smooth 1, denominator only)
//   L_bce  = Σ_k mean over (n, v) of BCE-with-logits(seg, y)                               (SUM over channels)
//   L_b    = losses::ResidualBCE: clamped, ln(V / (count + 1))-weighted BCE against the full-resolution Y_res;
//            res_on_logits(true) (default, code) clamps the raw logits, false (the paper) sigmoid(logits) first;
//            pos_weight_scope batch (default, the per-process batch of the code) or sample (spec §7.2).
// Baseline outputs ({seg} only): L = L_dice + L_bce, y_res unused.
//
//   ConResNetLoss<float, cpu> loss(ConResNetLossOptions().res_on_logits(true).lambda(0.5));
//   float l = loss.forward(net.forward(x, x_res), y, y_res);   // y, y_res: N x K x D x H x W in {0, 1}
//   net.backward(loss.backward());                             // {dseg, dres, dresx2, dresx4}
#pragma once
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "../../core/tensor.hpp"
#include "../../layers/activation.hpp"
#include "../../losses/bce_with_logits.hpp"
#include "../../losses/residual_bce.hpp"
#include "../../losses/soft_dice.hpp"

namespace mmnet::models {

class ConResNetLossOptions {
 public:
  ConResNetLossOptions() = default;
  // true (default, the code): the residual BCE clamps the raw logits; false (the paper): sigmoid first.
  ConResNetLossOptions& res_on_logits(bool v) { on_logits_ = v; return *this; }
  bool res_on_logits() const { return on_logits_; }
  // λ, the deep-supervision weight of L_b(resx2) and L_b(resx4). Default 0.5.
  ConResNetLossOptions& lambda(double v) { lambda_ = v; return *this; }
  double lambda() const { return lambda_; }
  // Where the residual BCE's positive count is taken: batch (default, the code) or per sample.
  ConResNetLossOptions& pos_weight_scope(losses::PosWeightScope v) { scope_ = v; return *this; }
  losses::PosWeightScope pos_weight_scope() const { return scope_; }

 private:
  bool on_logits_ = true;
  double lambda_ = 0.5;
  losses::PosWeightScope scope_ = losses::PosWeightScope::batch;
};

template <class T, class Backend>
class ConResNetLoss {
 public:
  using tensor = Tensor<T, Backend>;
  static constexpr const char* name = "mmnet::ConResNetLoss";

  // The terms of the last forward (in double).
  struct Terms {
    double dice = 0, bce = 0, res = 0, resx2 = 0, resx4 = 0, total = 0;
  };

  explicit ConResNetLoss(const ConResNetLossOptions& options = ConResNetLossOptions())
      : options_(options),
        dice_(losses::SoftDiceOptions().batch(false).smooth_nr(0).smooth_dr(1)),
        lb_{losses::ResidualBCE<T, Backend>(rb_options(options)), losses::ResidualBCE<T, Backend>(rb_options(options)),
            losses::ResidualBCE<T, Backend>(rb_options(options))} {
    if (!std::isfinite(options.lambda()) || options.lambda() < 0)
      fail<value_error>(name, "lambda", "a finite value >= 0", options.lambda());
  }
  const ConResNetLossOptions& options() const { return options_; }

  // outs: {seg, res, resx2, resx4} logits (or {seg}); y: N x K x D x H x W binary region targets; y_res:
  // conresnet::label_residual(y) (unused with one output).
  T forward(const std::vector<tensor>& outs, const tensor& y, const tensor& y_res) {
    if (outs.size() != 4 && outs.size() != 1)
      fail<shape_error>(name, "number of outputs", "4 ({seg, res, resx2, resx4}) or 1 ({seg}, baseline)", outs.size());
    check_rank(name, "seg logits", outs[0], 5);
    n_out_ = outs.size();
    const tensor& seg = outs[0];
    Terms t;
    t.dice = static_cast<double>(dice_.forward(sigmoid_.forward(seg), y));
    t.bce = static_cast<double>(bce_.forward(seg, y)) * static_cast<double>(seg.size(1));
    k_ = seg.size(1);
    if (n_out_ == 4) {
      for (std::size_t j = 1; j < 4; ++j)
        if (outs[j].shape() != seg.shape())
          fail<shape_error>(name, "shape of output " + std::to_string(j) + " (seg's)", seg.shape().str(),
                            outs[j].shape().str());
      t.res = static_cast<double>(lb_[0].forward(outs[1], y_res));
      t.resx2 = static_cast<double>(lb_[1].forward(outs[2], y_res));
      t.resx4 = static_cast<double>(lb_[2].forward(outs[3], y_res));
    }
    t.total = t.dice + t.bce + t.res + options_.lambda() * (t.resx2 + t.resx4);
    if (!std::isfinite(t.total)) fail<value_error>(name, "loss", "a finite value", t.total);
    terms_ = t;
    return static_cast<T>(t.total);
  }

  // One gradient per output of the last forward, times grad_loss.
  std::vector<tensor> backward(T grad_loss = T(1)) const {
    if (n_out_ == 0) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    tensor dseg = sigmoid_.backward(dice_.backward(grad_loss));
    add_(dseg, bce_.backward(static_cast<T>(static_cast<double>(grad_loss) * static_cast<double>(k_))));
    std::vector<tensor> d{dseg};
    if (n_out_ == 4) {
      const T gl = static_cast<T>(static_cast<double>(grad_loss) * options_.lambda());
      d.push_back(lb_[0].backward(grad_loss));
      d.push_back(lb_[1].backward(gl));
      d.push_back(lb_[2].backward(gl));
    }
    return d;
  }

  const Terms& terms() const { return terms_; }
  // t_k of residual output j (0 res, 1 resx2, 2 resx4) in the last forward (per (n, k) with pos_weight_scope sample).
  const std::vector<double>& pos_weights(int j) const { return lb_.at(static_cast<std::size_t>(j)).pos_weights(); }

 private:
  static losses::ResidualBCEOptions rb_options(const ConResNetLossOptions& o) {
    return losses::ResidualBCEOptions().on_logits(o.res_on_logits()).pos_weight_scope(o.pos_weight_scope());
  }

  ConResNetLossOptions options_;
  losses::SoftDice<T, Backend> dice_;
  losses::BCEWithLogits<T, Backend> bce_;
  std::array<losses::ResidualBCE<T, Backend>, 3> lb_;
  mutable nn::Sigmoid<T, Backend> sigmoid_;
  Terms terms_;
  std::size_t n_out_ = 0;
  index_t k_ = 1;
};

}  // namespace mmnet::models
