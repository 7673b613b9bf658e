// mmnet/core/state_dict.hpp: host-side state dict, the exchange format between modules and files.
// An ordered list of (dotted name, array), in PyTorch's state_dict order.
#pragma once
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "config.hpp"
#include "error.hpp"

namespace mmnet {

enum class DType { f32, f64, i64 };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i64: return "int64";
  }
  return "?";
}

// Values are held as double: exact for float32, float64 and the int64 counters a model has.
struct HostArray {
  DType dtype = DType::f64;
  std::vector<index_t> shape;  // empty: a 0-d scalar, as PyTorch writes num_batches_tracked
  std::vector<double> data;

  index_t numel() const {
    index_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  std::string shape_str() const {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
  }
};

class StateDict {
 public:
  using value_type = std::pair<std::string, HostArray>;

  // Adds an entry, or replaces the array of an existing name in place (order kept).
  void insert(const std::string& name, HostArray a) {
    auto it = index_.find(name);
    if (it != index_.end()) {
      entries_[it->second].second = std::move(a);
      return;
    }
    index_.emplace(name, entries_.size());
    entries_.emplace_back(name, std::move(a));
  }
  const HostArray* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second].second;
  }
  const HostArray& at(const std::string& name) const {
    const HostArray* a = find(name);
    if (!a) throw state_dict_error("mmnet::StateDict: no entry named '" + name + "'");
    return *a;
  }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }
  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    for (auto& e : entries_) k.push_back(e.first);
    return k;
  }

 private:
  std::vector<value_type> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

}  // namespace mmnet
