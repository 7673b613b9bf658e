// mmnet/losses/reduction.hpp: how a loss folds its per-element terms into one number (torch's reduction=),
// and the input checks every loss shares.
#pragma once
#include <string>
#include <vector>

#include "../core/tensor.hpp"

namespace mmnet::losses {

// mean: the sum divided by the element count (torch's default); sum: the plain sum.
enum class Reduction { mean, sum };

inline const char* to_string(Reduction r) { return r == Reduction::mean ? "mean" : "sum"; }

namespace detail {

// Throws shape_error unless a and b are defined, non-empty and of one shape.
template <class T, class B>
void check_loss_operands(const char* component, const Tensor<T, B>& a, const char* a_name, const Tensor<T, B>& b,
                         const char* b_name) {
  if (!a.defined() || a.numel() == 0)
    fail<shape_error>(component, a_name, "a non-empty tensor", a.defined() ? "shape " + a.shape().str() : "an empty tensor");
  if (!b.defined() || b.numel() == 0)
    fail<shape_error>(component, b_name, "a non-empty tensor", b.defined() ? "shape " + b.shape().str() : "an empty tensor");
  if (a.shape() != b.shape())
    fail<shape_error>(component, std::string(b_name) + " shape (must equal the " + a_name + " shape)", a.shape().str(),
                      b.shape().str());
}

// Throws value_error if an element is not finite or, with unit_range, lies outside [0, 1]. One device pass;
// only a failing tensor is copied to the host, to name the first offending element.
template <class T, class B>
void check_loss_values(const char* component, const char* what, const Tensor<T, B>& t, bool unit_range) {
  const T* pt = t.data();
  const double bad = backend::reduce_sum<double>(B{}, t.numel(), MMNET_KERNEL(index_t i) {
    const T v = pt[i];
    const bool ok = unit_range ? (v >= T(0) && v <= T(1)) : (v - v == T(0));  // NaN fails both tests
    return ok ? 0.0 : 1.0;
  });
  if (bad == 0) return;
  const std::vector<T> h = t.to_vector();
  for (std::size_t i = 0; i < h.size(); ++i) {
    const T v = h[i];
    if (unit_range ? (v >= T(0) && v <= T(1)) : (v - v == T(0))) continue;
    fail<value_error>(component, what, unit_range ? "finite values in [0, 1]" : "finite values", v,
                      "element " + std::to_string(i) + ", one of " + std::to_string(static_cast<index_t>(bad)) +
                          " such elements; shape " + t.shape().str());
  }
}

}  // namespace detail

}  // namespace mmnet::losses
