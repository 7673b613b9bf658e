// mmnet/optim/adam.hpp: Adam and AMSGrad (torch.optim.Adam, torch 1.13, single-tensor path).
//
// Per parameter w with gradient g, at the parameter's own step t (counted from its first update, as
// PyTorch's state['step']):
//   g += weight_decay w                                       (coupled weight decay, not AdamW)
//   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
//   amsgrad: v_max = max(v_max, v), and v_max replaces v below
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps,   w -= lr / (1 - beta1^t) * m / denom
//
//   optim::Adam<float, mmnet::cuda> opt(model.parameters(), optim::AdamOptions(1e-3).betas({0.9, 0.999}));
#pragma once
#include <cmath>
#include <utility>
#include <vector>

#include "optimizer.hpp"

namespace mmnet::optim {

class AdamOptions {
 public:
  explicit AdamOptions(double lr = 1e-3) : lr_(lr) {}
  // Learning rate (>= 0).
  AdamOptions& lr(double v) {
    lr_ = v;
    return *this;
  }
  double lr() const { return lr_; }
  // Decay rates of the first and second moment estimates, each in [0, 1).
  AdamOptions& betas(std::pair<double, double> v) {
    betas_ = v;
    return *this;
  }
  const std::pair<double, double>& betas() const { return betas_; }
  // Added to the denominator (>= 0).
  AdamOptions& eps(double v) {
    eps_ = v;
    return *this;
  }
  double eps() const { return eps_; }
  // L2 penalty added to the gradient (>= 0).
  AdamOptions& weight_decay(double v) {
    weight_decay_ = v;
    return *this;
  }
  double weight_decay() const { return weight_decay_; }
  // AMSGrad: normalise by the largest second moment seen so far.
  AdamOptions& amsgrad(bool v) {
    amsgrad_ = v;
    return *this;
  }
  bool amsgrad() const { return amsgrad_; }

 private:
  double lr_;
  std::pair<double, double> betas_{0.9, 0.999};
  double eps_ = 1e-8;
  double weight_decay_ = 0;
  bool amsgrad_ = false;
};

namespace detail {

// Scalars of one Adam update for one parameter, in the parameter's precision (the bias corrections are
// computed in double on the host, as PyTorch computes them in Python floats).
template <class T>
struct AdamStep {
  T beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  T bias_correction2_sqrt, step_size;  // sqrt(1 - beta2^t), lr / (1 - beta1^t)
  bool amsgrad;
};

template <class T, class Backend>
void adam_update(T* w, const T* grad, T* m, T* v, T* v_max, AdamStep<T> s, index_t n) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) {
    T g = grad[i];
    if (s.weight_decay != T(0)) g = g + s.weight_decay * w[i];
    const T mi = m[i] * s.beta1 + s.one_minus_beta1 * g;
    const T vi = v[i] * s.beta2 + s.one_minus_beta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    T second = vi;
    if (s.amsgrad) {
      second = v_max[i] > vi ? v_max[i] : vi;
      v_max[i] = second;
    }
    const T denom = std::sqrt(second) / s.bias_correction2_sqrt + s.eps;
    w[i] = w[i] - s.step_size * (mi / denom);
  });
}

}  // namespace detail

template <class T, class Backend>
class Adam : public Optimizer<T, Backend> {
  using base = Optimizer<T, Backend>;

 public:
  using typename base::parameter;

  // Per-parameter state, created at the parameter's first update.
  struct State {
    std::int64_t step = 0;
    Tensor<T, Backend> exp_avg, exp_avg_sq, max_exp_avg_sq;  // the last only with amsgrad
  };

  Adam(std::vector<parameter*> params, const AdamOptions& options)
      : base(std::move(params), options.lr(), "mmnet::optim::Adam"), options_(options) {
    const auto& o = options_;
    this->require(o.eps() >= 0 && std::isfinite(o.eps()), "eps", "a finite value >= 0", o.eps());
    this->require(o.betas().first >= 0 && o.betas().first < 1, "betas[0]", "a value in [0, 1)", o.betas().first);
    this->require(o.betas().second >= 0 && o.betas().second < 1, "betas[1]", "a value in [0, 1)", o.betas().second);
    this->require(o.weight_decay() >= 0 && std::isfinite(o.weight_decay()), "weight_decay", "a finite value >= 0",
                  o.weight_decay());
    state_.resize(this->params_.size());
  }
  // All parameters of a module (which must outlive the optimizer).
  Adam(Module<T, Backend>& module, const AdamOptions& options) : Adam(module.parameters(), options) {}

  const AdamOptions& options() const { return options_; }

  void step() override {
    const auto& o = options_;
    const double beta1 = o.betas().first, beta2 = o.betas().second;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      if (!this->active(i)) continue;
      parameter& p = *this->params_[i];
      State& st = state_[i];
      if (st.step == 0) {
        st.exp_avg = Tensor<T, Backend>(p.value.shape());
        st.exp_avg_sq = Tensor<T, Backend>(p.value.shape());
        if (o.amsgrad()) st.max_exp_avg_sq = Tensor<T, Backend>(p.value.shape());
      }
      ++st.step;
      const double t = static_cast<double>(st.step);
      const double bias_correction1 = 1.0 - std::pow(beta1, t);
      const double bias_correction2 = 1.0 - std::pow(beta2, t);
      const detail::AdamStep<T> s{static_cast<T>(beta1),
                                  static_cast<T>(beta2),
                                  static_cast<T>(1.0 - beta1),
                                  static_cast<T>(1.0 - beta2),
                                  static_cast<T>(o.eps()),
                                  static_cast<T>(o.weight_decay()),
                                  static_cast<T>(std::sqrt(bias_correction2)),
                                  static_cast<T>(this->lr() / bias_correction1),
                                  o.amsgrad()};
      detail::adam_update<T, Backend>(p.value.data(), p.grad.data(), st.exp_avg.data(), st.exp_avg_sq.data(),
                                      o.amsgrad() ? st.max_exp_avg_sq.data() : nullptr, s, p.value.numel());
    }
    ++this->step_count_;
  }

  // The state of parameter i (step 0 and undefined tensors before its first update).
  const State& state(std::size_t i) const { return state_.at(i); }

 private:
  AdamOptions options_;
  std::vector<State> state_;
};

}  // namespace mmnet::optim
