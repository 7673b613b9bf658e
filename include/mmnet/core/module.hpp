// mmnet/core/module.hpp: the module contract.
//
// A module is a plain struct: its parameters, buffers and child modules are named members, and one virtual
// function, members(), lists them in PyTorch's registration order:
//
//   void members(Members<T, B>& m) override { m("conv1", conv1)("bn1", bn1)("conv2", conv2); }
//
// Everything else -- named_parameters(), named_buffers(), state_dict(), load_state_dict(), zero_grad(),
// train()/eval(), freeze() -- is derived from that list, so dotted names always equal the member names of the
// PyTorch reference ("enc0.block1.conv.weight"). Nothing stores pointers to members: modules can be moved and
// returned from functions.
//
// Layers follow dlib's contract (written out in docs/architecture.md):
//   Tensor forward(const Tensor& x)      keeps what backward needs (shallow tensor copies, no data copy);
//   Tensor backward(const Tensor& dy)    returns dL/dx and ADDS dL/dparam into each parameter's grad,
//                                        so a parameter reached twice sums, as PyTorch's .grad does.
// A frozen parameter (requires_grad == false) receives no gradient and optimizers skip it.
#pragma once
#include <cmath>
#include <functional>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "error.hpp"
#include "state_dict.hpp"
#include "tensor.hpp"

namespace mmnet {

template <class T, class Backend>
struct Parameter {
  Tensor<T, Backend> value;
  Tensor<T, Backend> grad;
  bool requires_grad = true;

  // Allocates value and a zero gradient.
  void reset(const Shape& shape) {
    value = Tensor<T, Backend>(shape);
    grad = Tensor<T, Backend>(shape);
  }
  bool defined() const { return value.defined(); }
  // Whether backward should accumulate into grad.
  bool wants_grad() const { return requires_grad && value.defined(); }
};

template <class T, class Backend>
struct Buffer {
  Tensor<T, Backend> value;
  bool defined() const { return value.defined(); }
};

// An int64 scalar buffer, e.g. BatchNorm's num_batches_tracked (a 0-d int64 in PyTorch).
struct Counter {
  std::int64_t value = 0;
};

template <class T, class Backend>
class Module;

// What a walk over a module tree does at each member (named with its full dotted name).
template <class T, class Backend>
struct MemberVisitor {
  virtual ~MemberVisitor() = default;
  virtual void on_module(const std::string& /*name*/, Module<T, Backend>& /*m*/) {}
  virtual void on_parameter(const std::string& /*name*/, Parameter<T, Backend>& /*p*/) {}
  virtual void on_buffer(const std::string& /*name*/, Buffer<T, Backend>& /*b*/) {}
  virtual void on_counter(const std::string& /*name*/, Counter& /*c*/) {}
};

// The list a module's members() fills; each call names one member (chainable).
template <class T, class Backend>
class Members {
 public:
  Members(MemberVisitor<T, Backend>& v, std::string prefix) : v_(v), prefix_(std::move(prefix)) {}

  Members& operator()(const std::string& name, Parameter<T, Backend>& p) {
    if (p.defined()) v_.on_parameter(prefix_ + name, p);  // an absent bias is not listed, as in PyTorch
    return *this;
  }
  Members& operator()(const std::string& name, Buffer<T, Backend>& b) {
    if (b.defined()) v_.on_buffer(prefix_ + name, b);
    return *this;
  }
  Members& operator()(const std::string& name, Counter& c) {
    v_.on_counter(prefix_ + name, c);
    return *this;
  }
  template <class M, class = std::enable_if_t<std::is_base_of_v<Module<T, Backend>, M>>>
  Members& operator()(const std::string& name, M& m) {
    const std::string full = prefix_ + name;
    v_.on_module(full, m);
    Members sub(v_, full + ".");
    m.members(sub);
    return *this;
  }
  // Lists m's members as if they were this module's own (no name level added): for a component whose
  // PyTorch counterpart registers its parameters directly on the parent (e.g. MAML's fusion and MA modules).
  template <class M, class = std::enable_if_t<std::is_base_of_v<Module<T, Backend>, M>>>
  Members& splice(M& m) {
    v_.on_module(prefix_.empty() ? std::string() : prefix_.substr(0, prefix_.size() - 1), m);
    m.members(*this);
    return *this;
  }
  // A list of child modules named name.first, name.(first+1), ... (nn.ModuleList / ModuleDict of ints).
  template <class M>
  Members& operator()(const std::string& name, std::vector<M>& ms, int first_index = 0) {
    for (std::size_t i = 0; i < ms.size(); ++i) (*this)(name + "." + std::to_string(first_index + static_cast<int>(i)), ms[i]);
    return *this;
  }

 private:
  MemberVisitor<T, Backend>& v_;
  std::string prefix_;
};

// Report of a non-strict load (PyTorch's _IncompatibleKeys).
struct LoadResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

template <class T, class Backend>
class Module {
 public:
  using value_type = T;
  using backend_type = Backend;
  using tensor_type = Tensor<T, Backend>;
  using parameter_type = Parameter<T, Backend>;

  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = default;
  Module(Module&&) noexcept = default;
  Module& operator=(const Module&) = default;
  Module& operator=(Module&&) noexcept = default;

  // Lists parameters, buffers and children in registration order. Leaves without state keep the default.
  virtual void members(Members<T, Backend>& /*m*/) {}

  // Walks this module's tree; v sees every member with its dotted name relative to this module.
  void walk(MemberVisitor<T, Backend>& v) {
    Members<T, Backend> m(v, "");
    members(m);
  }

  std::vector<std::pair<std::string, Parameter<T, Backend>*>> named_parameters() {
    struct V : MemberVisitor<T, Backend> {
      std::vector<std::pair<std::string, Parameter<T, Backend>*>> out;
      void on_parameter(const std::string& n, Parameter<T, Backend>& p) override { out.emplace_back(n, &p); }
    } v;
    walk(v);
    return std::move(v.out);
  }
  std::vector<Parameter<T, Backend>*> parameters() {
    std::vector<Parameter<T, Backend>*> out;
    for (auto& np : named_parameters()) out.push_back(np.second);
    return out;
  }
  // Buffers in PyTorch's sense: running statistics and counters (num_batches_tracked).
  struct BufferRef {
    Buffer<T, Backend>* tensor = nullptr;
    Counter* counter = nullptr;
  };
  std::vector<std::pair<std::string, BufferRef>> named_buffers() {
    struct V : MemberVisitor<T, Backend> {
      std::vector<std::pair<std::string, BufferRef>> out;
      void on_buffer(const std::string& n, Buffer<T, Backend>& b) override { out.emplace_back(n, BufferRef{&b, nullptr}); }
      void on_counter(const std::string& n, Counter& c) override { out.emplace_back(n, BufferRef{nullptr, &c}); }
    } v;
    walk(v);
    return std::move(v.out);
  }

  // Number of parameter values (all, or only those with requires_grad).
  index_t num_parameters(bool trainable_only = false) {
    index_t n = 0;
    for (auto& np : named_parameters())
      if (!trainable_only || np.second->requires_grad) n += np.second->value.numel();
    return n;
  }

  void zero_grad() {
    for (auto* p : parameters()) p->grad.zero_();
  }

  // Train / eval mode for this module and every descendant (BatchNorm and Dropout read it).
  void train(bool on = true) {
    struct V : MemberVisitor<T, Backend> {
      bool on;
      void on_module(const std::string&, Module<T, Backend>& m) override { m.training_ = on; }
    } v;
    v.on = on;
    training_ = on;
    walk(v);
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Freezing: frozen parameters get no gradient and optimizers skip them (requires_grad = false in PyTorch).
  void freeze() { set_requires_grad(false); }
  void unfreeze() { set_requires_grad(true); }
  void set_requires_grad(bool on) {
    for (auto* p : parameters()) p->requires_grad = on;
  }

  // Host copy of every parameter and buffer, in registration order, with PyTorch shapes and dtypes.
  StateDict state_dict() {
    struct V : MemberVisitor<T, Backend> {
      StateDict sd;
      void on_parameter(const std::string& n, Parameter<T, Backend>& p) override { sd.insert(n, to_host(p.value)); }
      void on_buffer(const std::string& n, Buffer<T, Backend>& b) override { sd.insert(n, to_host(b.value)); }
      void on_counter(const std::string& n, Counter& c) override {
        sd.insert(n, HostArray{DType::i64, {}, {static_cast<double>(c.value)}});
      }
    } v;
    walk(v);
    return std::move(v.sd);
  }

  // Loads values by name, converting float <-> double. Shape mismatches always throw; with strict, missing
  // and unexpected keys throw too. Every problem is listed in one message, and nothing is modified unless
  // the whole load can succeed.
  LoadResult load_state_dict(const StateDict& sd, bool strict = true) {
    struct Collect : MemberVisitor<T, Backend> {
      std::vector<std::pair<std::string, Tensor<T, Backend>*>> tensors;
      std::vector<std::pair<std::string, Counter*>> counters;
      void on_parameter(const std::string& n, Parameter<T, Backend>& p) override { tensors.emplace_back(n, &p.value); }
      void on_buffer(const std::string& n, Buffer<T, Backend>& b) override { tensors.emplace_back(n, &b.value); }
      void on_counter(const std::string& n, Counter& c) override { counters.emplace_back(n, &c); }
    } c;
    walk(c);

    LoadResult r;
    std::vector<std::string> mismatched;
    std::unordered_set<std::string> known;
    for (auto& [name, t] : c.tensors) {
      known.insert(name);
      const HostArray* a = sd.find(name);
      if (!a) {
        r.missing_keys.push_back(name);
      } else if (a->shape != t->shape().to_vector()) {
        mismatched.push_back(name + " (expected " + t->shape().str() + ", got " + a->shape_str() + ")");
      } else if (a->dtype == DType::i64) {
        mismatched.push_back(name + " (expected a floating-point array, got int64)");
      }
    }
    for (auto& [name, ctr] : c.counters) {
      known.insert(name);
      const HostArray* a = sd.find(name);
      if (!a) r.missing_keys.push_back(name);
      else if (a->numel() != 1) mismatched.push_back(name + " (expected a scalar, got shape " + a->shape_str() + ")");
      else if (!(std::abs(a->data[0]) < 9.007199254740992e15) || a->data[0] != std::floor(a->data[0]))
        mismatched.push_back(name + " (expected an integer count, got " + std::to_string(a->data[0]) + ")");
    }
    for (auto& e : sd)
      if (!known.count(e.first)) r.unexpected_keys.push_back(e.first);
    if (!mismatched.empty() || (strict && (!r.missing_keys.empty() || !r.unexpected_keys.empty()))) {
      std::string msg = "mmnet::Module::load_state_dict: the state dict does not fit the module";
      auto list = [&msg](const char* what, const std::vector<std::string>& v) {
        if (v.empty()) return;
        msg += std::string("; ") + what + " (" + std::to_string(v.size()) + "):";
        for (auto& s : v) msg += " " + s;
      };
      list("shape mismatch", mismatched);
      if (strict) {
        list("missing keys", r.missing_keys);
        list("unexpected keys", r.unexpected_keys);
      }
      throw state_dict_error(msg);
    }
    for (auto& [name, t] : c.tensors)
      if (const HostArray* a = sd.find(name)) t->assign(a->data);  // in place: shallow copies see it
    for (auto& [name, ctr] : c.counters)
      if (const HostArray* a = sd.find(name)) ctr->value = static_cast<std::int64_t>(a->data[0]);
    return r;
  }

 protected:
  static HostArray to_host(const Tensor<T, Backend>& t) {
    const auto v = t.to_vector();
    return HostArray{std::is_same_v<T, float> ? DType::f32 : DType::f64, t.shape().to_vector(),
                     std::vector<double>(v.begin(), v.end())};
  }

  bool training_ = true;
};

}  // namespace mmnet
