// mmnet/losses/residual_bce.hpp: ConResNet's residual loss (spec §3.3, the official `BCELossBoud`): a clamped,
// count-weighted binary cross-entropy. No PyTorch built-in; reference: the spec's formula written in torch.
//
// Input P: N x K x D x H x W (any rank >= 3; S = voxels of one sample), target T of the same shape in [0, 1]:
//   t_k  = ln(S / (Σ_{n,s} T[n, k, s] + 1))        constant (no gradient); pos_weight_scope(sample): per (n, k)
//   q    = clamp(P, 1e-3, 1 - 1e-3)                 on_logits(true), the code: the raw logit used as a probability
//        = clamp(sigmoid(P), 1e-3, 1 - 1e-3)        on_logits(false), the paper's sigmoid outputs
//   l_k  = -(1 / (N S)) Σ_{n,s} [t_k T ln q + (1 - T) ln(1 - q)],     L = (1/K) Σ_k l_k
// dq/dP is 1 (sigmoid'(P) with on_logits(false)) where the clamp's argument lies in [1e-3, 1 - 1e-3] (inclusive,
// as torch.clamp's backward), else 0. Defaults: on_logits(true) and pos_weight_scope(batch) (code parity, spec
// §7.1-7.2). The gradient is w.r.t. P (the residual logits).
//
//   losses::ResidualBCE<float, mmnet::cpu> lb;
//   float l = lb.forward(res_logits, y_res);   // N x 3 x D x H x W
//   auto dl_dp = lb.backward();
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#include "reduction.hpp"

namespace mmnet::losses {

// Where the positive weight's voxel count is taken: over the batch (the code) or per sample.
enum class PosWeightScope { batch, sample };

class ResidualBCEOptions {
 public:
  ResidualBCEOptions() = default;
  // true (default): clamp the raw input (the code); false: clamp sigmoid(input) (the paper).
  ResidualBCEOptions& on_logits(bool v) {
    on_logits_ = v;
    return *this;
  }
  bool on_logits() const { return on_logits_; }
  // batch (default): t_k from the positives of channel k over the whole batch; sample: per (n, k).
  ResidualBCEOptions& pos_weight_scope(PosWeightScope s) {
    scope_ = s;
    return *this;
  }
  PosWeightScope pos_weight_scope() const { return scope_; }

 private:
  bool on_logits_ = true;
  PosWeightScope scope_ = PosWeightScope::batch;
};

namespace detail {

struct ResidualBCEProblem {
  index_t n = 0, k = 0, s = 0;
  bool on_logits = true;
  bool per_sample = false;
};

MMNET_HOST_DEVICE inline double residual_q(double p, bool on_logits, double* dq) {
  const double lo = 1e-3, hi = 1 - 1e-3;
  double a = p, da = 1;
  if (!on_logits) {
    const double e = std::exp(-std::abs(p));
    a = p >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
    da = a * (1 - a);
  }
  const bool inside = a >= lo && a <= hi;
  if (dq) *dq = inside ? da : 0.0;
  return a < lo ? lo : (a > hi ? hi : a);
}

template <class T, class Backend>
double block_sum(const T* pt, index_t n) {
  return backend::reduce_sum<double>(Backend{}, n, MMNET_KERNEL(index_t i) { return static_cast<double>(pt[i]); });
}

// Σ over all elements of t T ln q + (1 - T) ln(1 - q) with t = weights[(n, k) block or k].
template <class T, class Backend>
double residual_bce_sum(const ResidualBCEProblem pr, const T* p, const T* t, const double* w) {
  return backend::reduce_sum<double>(Backend{}, pr.n * pr.k * pr.s, MMNET_KERNEL(index_t i) {
    const index_t blk = i / pr.s;
    const double wk = w[pr.per_sample ? blk : blk % pr.k];
    const double q = residual_q(static_cast<double>(p[i]), pr.on_logits, nullptr);
    const double ti = t[i];
    return wk * ti * std::log(q) + (1 - ti) * std::log(1 - q);
  });
}

template <class T, class Backend>
void residual_bce_backward(const ResidualBCEProblem pr, const T* p, const T* t, const double* w, double scale, T* dp) {
  backend::parallel_for(Backend{}, pr.n * pr.k * pr.s, MMNET_KERNEL(index_t i) {
    const index_t blk = i / pr.s;
    const double wk = w[pr.per_sample ? blk : blk % pr.k];
    double dq = 0;
    const double q = residual_q(static_cast<double>(p[i]), pr.on_logits, &dq);
    const double ti = t[i];
    dp[i] = static_cast<T>(-scale * (wk * ti / q - (1 - ti) / (1 - q)) * dq);
  });
}

}  // namespace detail

template <class T, class Backend>
class ResidualBCE {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::losses::ResidualBCE: T must be float or double");

 public:
  using tensor = Tensor<T, Backend>;

  explicit ResidualBCE(const ResidualBCEOptions& options = ResidualBCEOptions()) : options_(options) {}
  const ResidualBCEOptions& options() const { return options_; }

  // p: residual outputs N x K x ... (rank >= 3), t: residual targets of the same shape in [0, 1].
  T forward(const tensor& p, const tensor& t) {
    detail::check_loss_operands(name, p, "input", t, "target");
    if (p.rank() < 3)
      fail<shape_error>(name, "input rank", ">= 3 (N x K x spatial)", p.rank(), "shape " + p.shape().str());
    detail::check_loss_values(name, "input", p, false);
    detail::check_loss_values(name, "target", t, true);
    pr_ = detail::ResidualBCEProblem{p.size(0), p.size(1), p.numel() / (p.size(0) * p.size(1)), options_.on_logits(),
                                     options_.pos_weight_scope() == PosWeightScope::sample};
    // t_k from the positive counts (one reduction per (n, k) block, added on the host in a fixed order).
    std::vector<double> count(static_cast<std::size_t>(pr_.n * pr_.k), 0.0);
    for (index_t b = 0; b < pr_.n * pr_.k; ++b) count[static_cast<std::size_t>(b)] = detail::block_sum<T, Backend>(t.data() + b * pr_.s, pr_.s);
    const auto vox = static_cast<double>(pr_.s);
    weights_.assign(static_cast<std::size_t>(pr_.per_sample ? pr_.n * pr_.k : pr_.k), 0.0);
    for (index_t n = 0; n < pr_.n; ++n)
      for (index_t k = 0; k < pr_.k; ++k) {
        const auto j = static_cast<std::size_t>(pr_.per_sample ? n * pr_.k + k : k);
        weights_[j] += count[static_cast<std::size_t>(n * pr_.k + k)];
      }
    for (auto& w : weights_) w = std::log(vox / (w + 1.0));
    w_dev_.assign(weights_);
    const double total = detail::residual_bce_sum<T, Backend>(pr_, p.data(), t.data(), w_dev_.data());
    const double loss = -total / static_cast<double>(pr_.n * pr_.s * pr_.k);
    if (!std::isfinite(loss)) fail<value_error>(name, "loss", "a finite value", loss, "input shape " + p.shape().str());
    p_ = p;
    t_ = t;
    return static_cast<T>(loss);
  }

  // dL/dp times grad_loss.
  tensor backward(T grad_loss = T(1)) const {
    if (!p_.defined()) fail<value_error>(std::string(name) + "::backward", "state", "a preceding forward()", "none");
    tensor dp(p_.shape());
    detail::residual_bce_backward<T, Backend>(pr_, p_.data(), t_.data(), w_dev_.data(),
                                              static_cast<double>(grad_loss) / static_cast<double>(pr_.n * pr_.s * pr_.k),
                                              dp.data());
    return dp;
  }

  // t_k (or t_{n,k} with pos_weight_scope(sample)) of the last forward.
  const std::vector<double>& pos_weights() const { return weights_; }

  static constexpr const char* name = "mmnet::losses::ResidualBCE";

 private:
  ResidualBCEOptions options_;
  detail::ResidualBCEProblem pr_;
  std::vector<double> weights_;
  detail::DeviceDoubles<Backend> w_dev_;
  tensor p_, t_;
};

}  // namespace mmnet::losses
