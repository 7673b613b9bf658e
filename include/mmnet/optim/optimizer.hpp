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
//
// state_dict() mirrors torch's optimizer.state_dict() flattened into dotted names (a StateDict, so that it
// can be written to HDF5 next to the model, see io/checkpoint.hpp):
//   param_groups.0.lr, param_groups.0.<hyperparameter>, param_groups.0.params (int64 indices 0..n-1),
//   param_groups.0.initial_lr (only once a scheduler has set it, as torch's group['initial_lr']),
//   state.<i>.<name> for every parameter i that has state (step as a 0-d int64, tensors with the parameter's
//   shape and dtype), and step_count (mmnet's number of step() calls; not in torch).
// Booleans (nesterov, amsgrad) are 0-d int64 0/1. load_state_dict() restores the hyperparameters too, as
// torch's does, and replaces all per-parameter state; it checks everything first and changes nothing when
// anything does not fit (every problem listed in one mmnet::state_dict_error).
#pragma once
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../core/module.hpp"
#include "../core/state_dict.hpp"

namespace mmnet::optim {

namespace detail {

inline HostArray scalar_f64(double v) { return HostArray{DType::f64, {}, {v}}; }
inline HostArray scalar_i64(std::int64_t v) { return HostArray{DType::i64, {}, {static_cast<double>(v)}}; }
inline HostArray vector_f64(std::vector<double> v) {
  const auto n = static_cast<index_t>(v.size());
  return HostArray{DType::f64, {n}, std::move(v)};
}
template <class T, class B>
HostArray tensor_to_host(const Tensor<T, B>& t) {
  const auto v = t.to_vector();
  return HostArray{std::is_same_v<T, float> ? DType::f32 : DType::f64, t.shape().to_vector(),
                   std::vector<double>(v.begin(), v.end())};
}

// Reads a state dict for load_state_dict(): records every problem (missing, unexpected, wrong shape or
// dtype, invalid value) and throws them all at once from finish(), before the caller changes anything.
class StateDictReader {
 public:
  StateDictReader(const StateDict& sd, std::string component) : sd_(sd), component_(std::move(component)) {}

  bool has(const std::string& key) const { return sd_.contains(key); }
  // Whether any entry starts with prefix.
  bool has_prefix(const std::string& prefix) const {
    for (auto& e : sd_)
      if (e.first.compare(0, prefix.size(), prefix) == 0) return true;
    return false;
  }
  // A required entry (recorded as missing when absent).
  const HostArray* get(const std::string& key) {
    const HostArray* a = sd_.find(key);
    if (!a) missing_.push_back(key);
    else used_.insert(key);
    return a;
  }
  // A 0-d (or one-element) number; fallback when missing or malformed.
  double number(const std::string& key, double fallback) {
    const HostArray* a = get(key);
    if (!a) return fallback;
    if (a->numel() != 1 || a->data.size() != 1) {
      problem(key + " (expected a scalar, got shape " + a->shape_str() + ")");
      return fallback;
    }
    return a->data[0];
  }
  double real(const std::string& key, double fallback) {
    const double v = number(key, fallback);
    const HostArray* a = sd_.find(key);
    if (a && a->dtype == DType::i64) problem(key + " (expected a floating-point scalar, got int64)");
    return v;
  }
  std::int64_t integer(const std::string& key, std::int64_t fallback) {
    const double v = number(key, static_cast<double>(fallback));
    if (v != std::floor(v) || !std::isfinite(v)) {
      problem(key + " (expected an integer, got " + std::to_string(v) + ")");
      return fallback;
    }
    return static_cast<std::int64_t>(v);
  }
  bool boolean(const std::string& key, bool fallback) {
    const std::int64_t v = integer(key, fallback ? 1 : 0);
    if (v != 0 && v != 1) problem(key + " (expected 0 or 1, got " + std::to_string(v) + ")");
    return v != 0;
  }
  // A floating-point array of the given shape (nullptr when missing or mismatched).
  const HostArray* array(const std::string& key, const Shape& shape) {
    const HostArray* a = get(key);
    if (!a) return nullptr;
    if (a->dtype == DType::i64) {
      problem(key + " (expected a floating-point array, got int64)");
      return nullptr;
    }
    if (a->shape != shape.to_vector()) {
      problem(key + " (expected shape " + shape.str() + ", got " + a->shape_str() + ")");
      return nullptr;
    }
    return a;
  }
  // Marks an entry as known without reading it.
  void accept(const std::string& key) {
    if (sd_.contains(key)) used_.insert(key);
  }
  void problem(const std::string& what) { problems_.push_back(what); }

  // Throws mmnet::state_dict_error listing every problem, the missing and the unexpected keys.
  void finish() const {
    std::vector<std::string> unexpected;
    for (auto& e : sd_)
      if (!used_.count(e.first)) unexpected.push_back(e.first);
    if (problems_.empty() && missing_.empty() && unexpected.empty()) return;
    std::string msg = component_ + "::load_state_dict: the state dict does not fit";
    auto list = [&msg](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      msg += std::string("; ") + what + " (" + std::to_string(v.size()) + "):";
      for (auto& s : v) msg += " " + s;
    };
    list("invalid entries", problems_);
    list("missing keys", missing_);
    list("unexpected keys", unexpected);
    throw state_dict_error(msg);
  }

 private:
  const StateDict& sd_;
  std::string component_;
  std::unordered_set<std::string> used_;
  std::vector<std::string> missing_, problems_;
};

}  // namespace detail

// What learning-rate schedulers and checkpoints need from any optimizer, whatever its T and Backend.
class OptimizerBase {
 public:
  virtual ~OptimizerBase() = default;

  // One update of every trainable parameter from its current grad.
  virtual void step() = 0;
  // Zeroes every parameter's grad (torch's zero_grad(set_to_none=False)).
  virtual void zero_grad() = 0;

  double lr() const { return lr_; }
  // For learning-rate schedules; takes effect at the next step().
  void set_lr(double lr) {
    if (!(lr >= 0) || !std::isfinite(lr)) fail<value_error>(name_, "lr", "a finite value >= 0", lr);
    lr_ = lr;
  }
  // The lr the first scheduler attached to this optimizer started from (torch's group['initial_lr']); later
  // schedulers start from it too.
  const std::optional<double>& initial_lr() const { return initial_lr_; }
  void set_initial_lr(double lr) {
    if (!(lr >= 0) || !std::isfinite(lr)) fail<value_error>(name_, "initial_lr", "a finite value >= 0", lr);
    initial_lr_ = lr;
  }
  // Number of step() calls so far.
  std::int64_t step_count() const { return step_count_; }
  const std::string& name() const { return name_; }

  // The whole optimizer state (hyperparameters, per-parameter state), see the file comment for the names.
  virtual StateDict state_dict() const = 0;
  // Restores state_dict()'s output; all or nothing.
  virtual void load_state_dict(const StateDict& sd) = 0;
  // Throws exactly what load_state_dict(sd) would, without changing anything.
  virtual void check_state_dict(const StateDict& sd) const = 0;

 protected:
  OptimizerBase(double lr, std::string name) : name_(std::move(name)) { set_lr(lr); }
  OptimizerBase(const OptimizerBase&) = delete;
  OptimizerBase& operator=(const OptimizerBase&) = delete;
  OptimizerBase(OptimizerBase&&) noexcept = default;
  OptimizerBase& operator=(OptimizerBase&&) noexcept = default;

  // Validation helper for the options of derived optimizers.
  void require(bool ok, const std::string& what, const std::string& expected, double actual) const {
    if (!ok) fail<value_error>(name_, what, expected, actual);
  }

  double lr_ = 0;
  std::optional<double> initial_lr_;
  std::int64_t step_count_ = 0;

 private:
  std::string name_;
};

template <class T, class Backend>
class Optimizer : public OptimizerBase {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "mmnet::optim::Optimizer: T must be float or double");

 public:
  using parameter = Parameter<T, Backend>;
  using tensor = Tensor<T, Backend>;

  Optimizer(std::vector<parameter*> params, double lr, std::string name)
      : OptimizerBase(lr, std::move(name)), params_(std::move(params)) {
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (!params_[i]) fail<value_error>(this->name(), "parameter " + std::to_string(i), "a parameter", "a null pointer");
  }
  // Not copyable: a copy would share the parameters and, tensors being shallow, the state too.
  Optimizer(Optimizer&&) noexcept = default;
  Optimizer& operator=(Optimizer&&) noexcept = default;

  void zero_grad() override {
    for (auto* p : params_)
      if (p->grad.defined()) p->grad.zero_();
  }

  const std::vector<parameter*>& parameters() const { return params_; }

 protected:
  // Whether parameter i takes part in this step (PyTorch: p.grad is not None). Checks the grad's shape.
  bool active(std::size_t i) const {
    const parameter& p = *params_[i];
    if (!p.requires_grad || !p.value.defined() || !p.grad.defined()) return false;
    if (p.grad.shape() != p.value.shape())
      fail<shape_error>(name(), "grad shape of parameter " + std::to_string(i), p.value.shape().str(),
                        p.grad.shape().str());
    return true;
  }

  // The entries every optimizer writes: lr, initial_lr, params and step_count.
  void write_common_state(StateDict& sd) const {
    sd.insert("param_groups.0.lr", detail::scalar_f64(lr_));
    if (initial_lr_) sd.insert("param_groups.0.initial_lr", detail::scalar_f64(*initial_lr_));
    std::vector<double> idx(params_.size());
    for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<double>(i);
    const auto n = static_cast<index_t>(idx.size());
    sd.insert("param_groups.0.params", HostArray{DType::i64, {n}, std::move(idx)});
    sd.insert("step_count", detail::scalar_i64(step_count_));
  }
  struct CommonState {
    double lr = 0;
    std::optional<double> initial_lr;
    std::int64_t step_count = 0;
  };
  // Reads (and checks) the common entries; the parameter list must have this optimizer's length.
  CommonState read_common_state(detail::StateDictReader& r) const {
    CommonState c;
    c.lr = r.real("param_groups.0.lr", lr_);
    if (!(c.lr >= 0) || !std::isfinite(c.lr)) r.problem("param_groups.0.lr (expected a finite value >= 0)");
    if (r.has("param_groups.0.initial_lr")) c.initial_lr = r.real("param_groups.0.initial_lr", 0);
    if (const HostArray* a = r.get("param_groups.0.params")) {
      bool ok = a->shape.size() == 1 && a->numel() == static_cast<index_t>(params_.size());
      for (std::size_t i = 0; ok && i < a->data.size(); ++i) ok = a->data[i] == static_cast<double>(i);
      if (!ok)
        r.problem("param_groups.0.params (the state was saved for " + std::to_string(a->numel()) +
                  " parameters; this optimizer has " + std::to_string(params_.size()) + ")");
    }
    c.step_count = r.integer("step_count", 0);
    if (c.step_count < 0) r.problem("step_count (expected >= 0)");
    return c;
  }
  void apply_common_state(const CommonState& c) {
    lr_ = c.lr;
    initial_lr_ = c.initial_lr;
    step_count_ = c.step_count;
  }
  // "state.<i>.": whether the state dict holds state for parameter i.
  static std::string state_prefix(std::size_t i) { return "state." + std::to_string(i) + "."; }
  // A state tensor shaped like parameter i, filled from a host array.
  tensor make_state(std::size_t i, const HostArray& a) const {
    tensor t(params_[i]->value.shape());
    t.assign(a.data);
    return t;
  }

  std::vector<parameter*> params_;
};

}  // namespace mmnet::optim
