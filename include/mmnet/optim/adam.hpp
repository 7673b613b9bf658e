// mmnet/optim/adam.hpp: Adam and AMSGrad (torch.optim.Adam, torch 1.13, single-tensor path).
//
// Per parameter w with gradient g, at the parameter's own step t (counted from its first update, as
// PyTorch's state['step']):
//   g += weight_decay w                                       (coupled weight decay; AdamW: optim/adamw.hpp)
//   m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
//   amsgrad: v_max = max(v_max, v), and v_max replaces v below
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps,   w -= lr / (1 - beta1^t) * m / denom
//
//   optim::Adam<float, mmnet::cuda> opt(model.parameters(), optim::AdamOptions(1e-3).betas({0.9, 0.999}));
//
// state_dict(): param_groups.0.{lr, betas (2,), eps, weight_decay, amsgrad, params}, and per parameter that
// has been updated state.<i>.{step (0-d int64), exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad only)}, as
// torch's Adam.state_dict(); see optimizer.hpp.
#pragma once
#include <cmath>
#include <utility>
#include <vector>

#include "optimizer.hpp"

namespace mmnet::optim {

namespace detail {

// The options shared by Adam and AdamW; Derived is the concrete options class (chained setters return it).
template <class Derived>
class AdamOptionsBase {
 public:
  // Learning rate (>= 0).
  Derived& lr(double v) {
    lr_ = v;
    return self();
  }
  double lr() const { return lr_; }
  // Decay rates of the first and second moment estimates, each in [0, 1). Default (0.9, 0.999).
  Derived& betas(std::pair<double, double> v) {
    betas_ = v;
    return self();
  }
  const std::pair<double, double>& betas() const { return betas_; }
  // Added to the denominator (>= 0). Default 1e-8.
  Derived& eps(double v) {
    eps_ = v;
    return self();
  }
  double eps() const { return eps_; }
  // Weight decay (>= 0): an L2 term added to the gradient for Adam, the decoupled p *= 1 - lr wd for AdamW.
  Derived& weight_decay(double v) {
    weight_decay_ = v;
    return self();
  }
  double weight_decay() const { return weight_decay_; }
  // AMSGrad: normalise by the largest second moment seen so far. Default false.
  Derived& amsgrad(bool v) {
    amsgrad_ = v;
    return self();
  }
  bool amsgrad() const { return amsgrad_; }

 protected:
  AdamOptionsBase(double lr, double weight_decay) : lr_(lr), weight_decay_(weight_decay) {}

 private:
  Derived& self() { return static_cast<Derived&>(*this); }
  double lr_;
  std::pair<double, double> betas_{0.9, 0.999};
  double eps_ = 1e-8;
  double weight_decay_;
  bool amsgrad_ = false;
};

}  // namespace detail

// torch.optim.Adam's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0, amsgrad false.
class AdamOptions : public detail::AdamOptionsBase<AdamOptions> {
 public:
  explicit AdamOptions(double lr = 1e-3) : AdamOptionsBase(lr, 0.0) {}
};

namespace detail {

// Scalars of one Adam update for one parameter, in the parameter's precision (the bias corrections are
// computed in double on the host, as PyTorch computes them in Python floats).
template <class T>
struct AdamStep {
  T beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  T bias_correction2_sqrt, step_size;  // sqrt(1 - beta2^t), lr / (1 - beta1^t)
  T decay;                             // AdamW: 1 - lr weight_decay, applied to w before the update
  bool amsgrad, decoupled;
};

template <class T, class Backend>
void adam_update(T* w, const T* grad, T* m, T* v, T* v_max, AdamStep<T> s, index_t n) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) {
    T wi = w[i];
    T g = grad[i];
    if (s.decoupled) {
      wi = wi * s.decay;
    } else if (s.weight_decay != T(0)) {
      g = g + s.weight_decay * wi;
    }
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
    w[i] = wi - s.step_size * (mi / denom);
  });
}

// Adam and AdamW: the same moments and state, differing only in how weight decay enters.
template <class T, class Backend, class Options>
class AdamBase : public Optimizer<T, Backend> {
  using base = Optimizer<T, Backend>;

 public:
  using typename base::parameter;

  // Per-parameter state, created at the parameter's first update.
  struct State {
    std::int64_t step = 0;
    Tensor<T, Backend> exp_avg, exp_avg_sq, max_exp_avg_sq;  // the last only with amsgrad
  };

  const Options& options() const { return options_; }

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
                                  static_cast<T>(1.0 - this->lr() * o.weight_decay()),
                                  o.amsgrad(),
                                  decoupled_};
      detail::adam_update<T, Backend>(p.value.data(), p.grad.data(), st.exp_avg.data(), st.exp_avg_sq.data(),
                                      o.amsgrad() ? st.max_exp_avg_sq.data() : nullptr, s, p.value.numel());
    }
    ++this->step_count_;
  }

  // The state of parameter i (step 0 and undefined tensors before its first update).
  const State& state(std::size_t i) const { return state_.at(i); }

  StateDict state_dict() const override {
    StateDict sd;
    this->write_common_state(sd);
    sd.insert("param_groups.0.betas", vector_f64({options_.betas().first, options_.betas().second}));
    sd.insert("param_groups.0.eps", scalar_f64(options_.eps()));
    sd.insert("param_groups.0.weight_decay", scalar_f64(options_.weight_decay()));
    sd.insert("param_groups.0.amsgrad", scalar_i64(options_.amsgrad() ? 1 : 0));
    for (std::size_t i = 0; i < state_.size(); ++i) {
      const State& st = state_[i];
      if (st.step == 0) continue;
      const std::string p = this->state_prefix(i);
      sd.insert(p + "step", scalar_i64(st.step));
      sd.insert(p + "exp_avg", tensor_to_host(st.exp_avg));
      sd.insert(p + "exp_avg_sq", tensor_to_host(st.exp_avg_sq));
      if (st.max_exp_avg_sq.defined()) sd.insert(p + "max_exp_avg_sq", tensor_to_host(st.max_exp_avg_sq));
    }
    return sd;
  }
  void load_state_dict(const StateDict& sd) override { apply(read(sd)); }
  void check_state_dict(const StateDict& sd) const override { read(sd); }

 protected:
  AdamBase(std::vector<parameter*> params, const Options& options, std::string name, bool decoupled)
      : base(std::move(params), options.lr(), std::move(name)), options_(options), decoupled_(decoupled) {
    validate(options_);
    state_.resize(this->params_.size());
  }

 private:
  struct LoadedState {
    std::int64_t step = 0;
    const HostArray *exp_avg = nullptr, *exp_avg_sq = nullptr, *max_exp_avg_sq = nullptr;
  };
  struct Loaded {
    typename base::CommonState common;
    Options options;
    std::vector<LoadedState> states;
  };

  Loaded read(const StateDict& sd) const {
    StateDictReader r(sd, this->name());
    Loaded l{this->read_common_state(r), options_, {}};
    l.options.lr(l.common.lr);
    if (const HostArray* b = r.get("param_groups.0.betas")) {
      if (b->numel() == 2 && b->shape.size() == 1) l.options.betas({b->data[0], b->data[1]});
      else r.problem("param_groups.0.betas (expected shape (2,), got " + b->shape_str() + ")");
    }
    l.options.eps(r.real("param_groups.0.eps", options_.eps()))
        .weight_decay(r.real("param_groups.0.weight_decay", options_.weight_decay()))
        .amsgrad(r.boolean("param_groups.0.amsgrad", options_.amsgrad()));
    try {
      validate(l.options);
    } catch (const value_error& e) {
      r.problem(std::string("hyperparameters: ") + e.what());
    }
    l.states.resize(this->params_.size());
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      const std::string p = this->state_prefix(i);
      if (!r.has_prefix(p)) continue;  // never updated
      const Shape& shape = this->params_[i]->value.shape();
      LoadedState& s = l.states[i];
      s.step = r.integer(p + "step", 1);
      if (s.step < 1) r.problem(p + "step (expected >= 1, got " + std::to_string(s.step) + ")");
      s.exp_avg = r.array(p + "exp_avg", shape);
      s.exp_avg_sq = r.array(p + "exp_avg_sq", shape);
      if (l.options.amsgrad()) s.max_exp_avg_sq = r.array(p + "max_exp_avg_sq", shape);
    }
    r.finish();
    return l;
  }
  void apply(const Loaded& l) {
    this->apply_common_state(l.common);
    options_ = l.options;
    for (std::size_t i = 0; i < state_.size(); ++i) {
      const LoadedState& s = l.states[i];
      State st;
      if (s.exp_avg) {
        st.step = s.step;
        st.exp_avg = this->make_state(i, *s.exp_avg);
        st.exp_avg_sq = this->make_state(i, *s.exp_avg_sq);
        if (s.max_exp_avg_sq) st.max_exp_avg_sq = this->make_state(i, *s.max_exp_avg_sq);
      }
      state_[i] = st;
    }
  }
  void validate(const Options& o) const {
    this->require(o.eps() >= 0 && std::isfinite(o.eps()), "eps", "a finite value >= 0", o.eps());
    this->require(o.betas().first >= 0 && o.betas().first < 1, "betas[0]", "a value in [0, 1)", o.betas().first);
    this->require(o.betas().second >= 0 && o.betas().second < 1, "betas[1]", "a value in [0, 1)", o.betas().second);
    this->require(o.weight_decay() >= 0 && std::isfinite(o.weight_decay()), "weight_decay", "a finite value >= 0",
                  o.weight_decay());
  }

  Options options_;
  bool decoupled_;
  std::vector<State> state_;
};

}  // namespace detail

template <class T, class Backend>
class Adam : public detail::AdamBase<T, Backend, AdamOptions> {
  using base = detail::AdamBase<T, Backend, AdamOptions>;

 public:
  using typename base::parameter;

  Adam(std::vector<parameter*> params, const AdamOptions& options)
      : base(std::move(params), options, "mmnet::optim::Adam", /*decoupled=*/false) {}
  // All parameters of a module (which must outlive the optimizer).
  Adam(Module<T, Backend>& module, const AdamOptions& options) : Adam(module.parameters(), options) {}
};

}  // namespace mmnet::optim
