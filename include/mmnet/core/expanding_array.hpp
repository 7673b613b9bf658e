// mmnet/core/expanding_array.hpp: per-axis sizes of 3D layers (kernel, stride, padding, dilation).
#pragma once
#include <string>

#include "config.hpp"

namespace mmnet {

// One value per spatial axis (D, H, W), given as a single int for all three or as {d, h, w}
// (libtorch's ExpandingArray<3>).
struct ExpandingArray3 {
  index_t d = 0, h = 0, w = 0;

  ExpandingArray3() = default;
  ExpandingArray3(index_t all) : d(all), h(all), w(all) {}  // NOLINT: implicit, as torch::ExpandingArray
  ExpandingArray3(index_t d_, index_t h_, index_t w_) : d(d_), h(h_), w(w_) {}

  index_t operator[](int i) const { return i == 0 ? d : (i == 1 ? h : w); }
  bool all_equal(index_t v) const { return d == v && h == v && w == v; }
  std::string str() const {
    return "(" + std::to_string(d) + ", " + std::to_string(h) + ", " + std::to_string(w) + ")";
  }
  friend bool operator==(const ExpandingArray3& a, const ExpandingArray3& b) {
    return a.d == b.d && a.h == b.h && a.w == b.w;
  }
  friend bool operator!=(const ExpandingArray3& a, const ExpandingArray3& b) { return !(a == b); }
};

namespace nn {
using mmnet::ExpandingArray3;
}

}  // namespace mmnet
