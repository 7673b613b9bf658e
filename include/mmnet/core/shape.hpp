// mmnet/core/shape.hpp: a small fixed-capacity shape (rank 0-5), NCDHW for volumes.
#pragma once
#include <array>
#include <initializer_list>
#include <string>
#include <vector>

#include "config.hpp"
#include "error.hpp"

namespace mmnet {

inline constexpr int max_rank = 5;

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<index_t> dims) { assign(dims.begin(), dims.end()); }
  explicit Shape(const std::vector<index_t>& dims) { assign(dims.begin(), dims.end()); }

  int rank() const { return rank_; }
  index_t operator[](int i) const { return dims_[i]; }
  index_t& operator[](int i) { return dims_[i]; }
  const index_t* begin() const { return dims_.data(); }
  const index_t* end() const { return dims_.data() + rank_; }
  index_t numel() const {
    index_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  std::vector<index_t> to_vector() const { return {begin(), end()}; }
  std::string str() const {
    std::string s = "(";
    for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
    return s + (rank_ == 1 ? ",)" : ")");
  }
  friend bool operator==(const Shape& a, const Shape& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[i] != b.dims_[i]) return false;
    return true;
  }
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }
  friend std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

 private:
  template <class It>
  void assign(It first, It last) {
    const auto n = static_cast<int>(last - first);
    if (n > max_rank) fail<shape_error>("mmnet::Shape", "rank", "at most 5", n);
    rank_ = n;
    for (int i = 0; i < n; ++i, ++first) {
      if (*first < 0) fail<shape_error>("mmnet::Shape", "dimension " + std::to_string(i), ">= 0", *first);
      dims_[i] = *first;
    }
  }
  std::array<index_t, max_rank> dims_{};
  int rank_ = 0;
};

}  // namespace mmnet
