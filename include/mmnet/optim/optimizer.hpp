// mmnet/optim/optimizer.hpp: the optimizer base (torch.optim.Optimizer with one parameter group).
//
// An optimizer holds pointers to a module's parameters (module.parameters()), so the module must outlive it
// and must not be moved while it is in use. step() reads each parameter's grad and updates its value;
// parameters with requires_grad == false are skipped without touching their state, as PyTorch skips
// parameters whose grad is None. Per-parameter state (momentum, Adam moments) is created at a parameter's
// first update, on the parameter's backend.
//
//   optim::Adam<float, mmnet::cpu> opt(model.parameters(), optim::AdamOptions(1e-3));
//   opt.zero_grad(); loss.backward ...; opt.step();
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/module.hpp"

namespace mmnet::optim {

template <class T, class Backend>
class Optimizer {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::optim::Optimizer: T must be float or double");

 public:
  using parameter = Parameter<T, Backend>;

  Optimizer(std::vector<parameter*> params, double lr, std::string name)
      : params_(std::move(params)), name_(std::move(name)) {
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (!params_[i]) fail<value_error>(name_, "parameter " + std::to_string(i), "a parameter", "a null pointer");
    set_lr(lr);
  }
  virtual ~Optimizer() = default;
  // Not copyable: a copy would share the parameters and, tensors being shallow, the state too.
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) noexcept = default;
  Optimizer& operator=(Optimizer&&) noexcept = default;

  // One update of every trainable parameter from its current grad.
  virtual void step() = 0;

  // Zeroes every parameter's grad (torch's zero_grad(set_to_none=False)).
  void zero_grad() {
    for (auto* p : params_)
      if (p->grad.defined()) p->grad.zero_();
  }

  double lr() const { return lr_; }
  // For learning-rate schedules; takes effect at the next step().
  void set_lr(double lr) {
    if (!(lr >= 0) || !std::isfinite(lr)) fail<value_error>(name_, "lr", "a finite value >= 0", lr);
    lr_ = lr;
  }
  // Number of step() calls so far.
  std::int64_t step_count() const { return step_count_; }
  const std::vector<parameter*>& parameters() const { return params_; }
  const std::string& name() const { return name_; }

 protected:
  // Whether parameter i takes part in this step (PyTorch: p.grad is not None). Checks the grad's shape.
  bool active(std::size_t i) const {
    const parameter& p = *params_[i];
    if (!p.requires_grad || !p.value.defined() || !p.grad.defined()) return false;
    if (p.grad.shape() != p.value.shape())
      fail<shape_error>(name_, "grad shape of parameter " + std::to_string(i), p.value.shape().str(),
                        p.grad.shape().str());
    return true;
  }
  // Validation helper for the options of derived optimizers.
  void require(bool ok, const std::string& what, const std::string& expected, double actual) const {
    if (!ok) fail<value_error>(name_, what, expected, actual);
  }

  std::vector<parameter*> params_;
  double lr_ = 0;
  std::int64_t step_count_ = 0;

 private:
  std::string name_;
};

}  // namespace mmnet::optim
