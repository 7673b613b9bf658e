// mmnet/optim/sgd.hpp: stochastic gradient descent with momentum (torch.optim.SGD, torch 1.13).
//
// Per parameter w with gradient g:
//   g += weight_decay w                                     (coupled weight decay)
//   momentum != 0:  buf = g at the parameter's first update, then buf = momentum buf + (1 - dampening) g
//                   g = g + momentum buf (nesterov)  or  g = buf
//   w -= lr g
//
//   optim::SGD<double, mmnet::cpu> opt(model.parameters(), optim::SGDOptions(0.1).momentum(0.9).nesterov(true));
//
// state_dict(): param_groups.0.{lr, momentum, dampening, nesterov, weight_decay, params} and
// state.<i>.momentum_buffer for every parameter that has a buffer, as torch's SGD.state_dict() (torch keeps a
// None buffer without momentum; mmnet writes nothing then); see optimizer.hpp.
#pragma once
#include <vector>

#include "optimizer.hpp"

namespace mmnet::optim {

class SGDOptions {
 public:
  explicit SGDOptions(double lr) : lr_(lr) {}
  // Learning rate (>= 0).
  SGDOptions& lr(double v) {
    lr_ = v;
    return *this;
  }
  double lr() const { return lr_; }
  // Momentum factor (>= 0; 0 = plain SGD, no buffer).
  SGDOptions& momentum(double v) {
    momentum_ = v;
    return *this;
  }
  double momentum() const { return momentum_; }
  // Dampening of the gradient added to the momentum buffer (not applied at the first update).
  SGDOptions& dampening(double v) {
    dampening_ = v;
    return *this;
  }
  double dampening() const { return dampening_; }
  // Nesterov momentum; needs momentum > 0 and dampening 0.
  SGDOptions& nesterov(bool v) {
    nesterov_ = v;
    return *this;
  }
  bool nesterov() const { return nesterov_; }
  // L2 penalty added to the gradient (>= 0).
  SGDOptions& weight_decay(double v) {
    weight_decay_ = v;
    return *this;
  }
  double weight_decay() const { return weight_decay_; }

 private:
  double lr_;
  double momentum_ = 0;
  double dampening_ = 0;
  bool nesterov_ = false;
  double weight_decay_ = 0;
};

namespace detail {

// Scalars of one SGD update, already in the parameter's precision.
template <class T>
struct SGDStep {
  T lr, momentum, dampening_keep, weight_decay;  // dampening_keep = 1 - dampening
  bool use_momentum, first, nesterov;
};

template <class T, class Backend>
void sgd_update(T* w, const T* grad, T* buf, SGDStep<T> s, index_t n) {
  backend::parallel_for(Backend{}, n, MMNET_KERNEL(index_t i) {
    T g = grad[i];
    if (s.weight_decay != T(0)) g = g + s.weight_decay * w[i];
    if (s.use_momentum) {
      const T b = s.first ? g : s.momentum * buf[i] + s.dampening_keep * g;
      buf[i] = b;
      g = s.nesterov ? g + s.momentum * b : b;
    }
    w[i] = w[i] - s.lr * g;
  });
}

}  // namespace detail

template <class T, class Backend>
class SGD : public Optimizer<T, Backend> {
  using base = Optimizer<T, Backend>;

 public:
  using typename base::parameter;

  SGD(std::vector<parameter*> params, const SGDOptions& options)
      : base(std::move(params), options.lr(), "mmnet::optim::SGD"), options_(options) {
    validate(options_);
    buffers_.resize(this->params_.size());
  }
  // All parameters of a module (which must outlive the optimizer).
  SGD(Module<T, Backend>& module, const SGDOptions& options) : SGD(module.parameters(), options) {}

  const SGDOptions& options() const { return options_; }

  void step() override {
    const auto& o = options_;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      if (!this->active(i)) continue;
      parameter& p = *this->params_[i];
      const bool use_momentum = o.momentum() != 0;
      const bool first = use_momentum && !buffers_[i].defined();
      if (first) buffers_[i] = Tensor<T, Backend>(p.value.shape());
      const detail::SGDStep<T> s{static_cast<T>(this->lr()), static_cast<T>(o.momentum()),
                                 static_cast<T>(1.0 - o.dampening()), static_cast<T>(o.weight_decay()),
                                 use_momentum, first, o.nesterov()};
      detail::sgd_update<T, Backend>(p.value.data(), p.grad.data(), use_momentum ? buffers_[i].data() : nullptr, s,
                                     p.value.numel());
    }
    ++this->step_count_;
  }

  // The momentum buffer of parameter i (undefined before its first update or without momentum).
  const Tensor<T, Backend>& momentum_buffer(std::size_t i) const { return buffers_.at(i); }

  // param_groups.0.{lr, momentum, dampening, nesterov, weight_decay, params}, state.<i>.momentum_buffer for
  // every parameter with a buffer, step_count (see optimizer.hpp).
  StateDict state_dict() const override {
    StateDict sd;
    this->write_common_state(sd);
    sd.insert("param_groups.0.momentum", detail::scalar_f64(options_.momentum()));
    sd.insert("param_groups.0.dampening", detail::scalar_f64(options_.dampening()));
    sd.insert("param_groups.0.nesterov", detail::scalar_i64(options_.nesterov() ? 1 : 0));
    sd.insert("param_groups.0.weight_decay", detail::scalar_f64(options_.weight_decay()));
    for (std::size_t i = 0; i < buffers_.size(); ++i)
      if (buffers_[i].defined()) sd.insert(this->state_prefix(i) + "momentum_buffer", detail::tensor_to_host(buffers_[i]));
    return sd;
  }
  void load_state_dict(const StateDict& sd) override { apply(read(sd)); }
  void check_state_dict(const StateDict& sd) const override { read(sd); }

 private:
  struct Loaded {
    typename base::CommonState common;
    SGDOptions options{0};
    std::vector<const HostArray*> buffers;
  };
  Loaded read(const StateDict& sd) const {
    detail::StateDictReader r(sd, this->name());
    Loaded l;
    l.common = this->read_common_state(r);
    l.options = SGDOptions(l.common.lr)
                    .momentum(r.real("param_groups.0.momentum", 0))
                    .dampening(r.real("param_groups.0.dampening", 0))
                    .nesterov(r.boolean("param_groups.0.nesterov", false))
                    .weight_decay(r.real("param_groups.0.weight_decay", 0));
    try {
      validate(l.options);
    } catch (const value_error& e) {
      r.problem(std::string("hyperparameters: ") + e.what());
    }
    l.buffers.assign(this->params_.size(), nullptr);
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      const std::string key = this->state_prefix(i) + "momentum_buffer";
      if (r.has(key)) l.buffers[i] = r.array(key, this->params_[i]->value.shape());
    }
    r.finish();
    return l;
  }
  void apply(const Loaded& l) {
    this->apply_common_state(l.common);
    options_ = l.options;
    for (std::size_t i = 0; i < buffers_.size(); ++i)
      buffers_[i] = l.buffers[i] ? this->make_state(i, *l.buffers[i]) : Tensor<T, Backend>();
  }
  void validate(const SGDOptions& o) const {
    this->require(o.momentum() >= 0 && std::isfinite(o.momentum()), "momentum", "a finite value >= 0", o.momentum());
    this->require(std::isfinite(o.dampening()), "dampening", "a finite value", o.dampening());
    this->require(o.weight_decay() >= 0 && std::isfinite(o.weight_decay()), "weight_decay", "a finite value >= 0",
                  o.weight_decay());
    if (o.nesterov() && (o.momentum() <= 0 || o.dampening() != 0))
      fail<value_error>(this->name(), "nesterov momentum", "momentum > 0 and dampening 0",
                        "momentum " + std::to_string(o.momentum()) + ", dampening " + std::to_string(o.dampening()));
  }

  SGDOptions options_;
  std::vector<Tensor<T, Backend>> buffers_;
};

}  // namespace mmnet::optim
