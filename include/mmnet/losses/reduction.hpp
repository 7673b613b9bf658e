// mmnet/losses/reduction.hpp: how a loss folds its per-element terms into one number (torch's reduction=),
// and the input checks every loss shares.
#pragma once
#include <cmath>
#include <optional>
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

// Host doubles (class weights, Dice coefficients) copied to the backend's memory; data() is null when empty.
template <class B>
class DeviceDoubles {
 public:
  DeviceDoubles() = default;
  explicit DeviceDoubles(const std::vector<double>& v) { assign(v); }
  void assign(const std::vector<double>& v) {
    n_ = static_cast<index_t>(v.size());
    s_ = backend_traits<B>::template allocate<double>(n_);
    backend_traits<B>::copy_from_host(v.data(), n_, s_);
  }
  const double* data() const { return n_ ? backend_traits<B>::data(s_) : nullptr; }

 private:
  typename backend_traits<B>::template storage<double> s_;
  index_t n_ = 0;
};

// Class weights must be finite and >= 0, one per class when given.
inline void check_class_weights(const char* component, const char* what, const std::vector<double>& w) {
  for (std::size_t k = 0; k < w.size(); ++k)
    if (!(w[k] >= 0) || !std::isfinite(w[k]))
      fail<value_error>(component, std::string(what) + "[" + std::to_string(k) + "]", "a finite value >= 0", w[k]);
}

MMNET_HOST_DEVICE inline bool label_ok(double v, double num_classes, bool has_ignore, double ignore) {
  return (has_ignore && v == ignore) || (v >= 0 && v < num_classes && v == std::floor(v));  // NaN fails
}

// Integer class labels stored in T: each must be a whole number in [0, num_classes), or equal ignore_index when
// one is given. One device pass; a failing tensor is copied to the host to name the first offending element.
template <class T, class B>
void check_labels(const char* component, const Tensor<T, B>& labels, index_t num_classes,
                  const std::optional<index_t>& ignore_index = std::nullopt) {
  const T* pl = labels.data();
  const bool has_ignore = ignore_index.has_value();
  const double ignore = has_ignore ? static_cast<double>(*ignore_index) : 0.0;
  const double hi = static_cast<double>(num_classes);
  const double bad = backend::reduce_sum<double>(B{}, labels.numel(), MMNET_KERNEL(index_t i) {
    return label_ok(static_cast<double>(pl[i]), hi, has_ignore, ignore) ? 0.0 : 1.0;
  });
  if (bad == 0) return;
  const std::vector<T> h = labels.to_vector();
  std::string range = "integer class labels in [0, " + std::to_string(num_classes) + ")";
  if (has_ignore) range += " or the ignore_index " + std::to_string(*ignore_index);
  for (std::size_t i = 0; i < h.size(); ++i) {
    if (label_ok(static_cast<double>(h[i]), hi, has_ignore, ignore)) continue;
    fail<value_error>(component, "labels", range, h[i],
                      "element " + std::to_string(i) + ", one of " + std::to_string(static_cast<index_t>(bad)) +
                          " such elements; shape " + labels.shape().str());
  }
}

// N x C x S view of class scores (logits or probabilities) of rank >= 2: S is the product of the spatial axes.
struct ClassLayout {
  index_t n = 0, c = 0, s = 0;
};

template <class T, class B>
ClassLayout class_layout(const char* component, const char* what, const Tensor<T, B>& x) {
  if (!x.defined() || x.numel() == 0)
    fail<shape_error>(component, what, "a non-empty tensor", x.defined() ? "shape " + x.shape().str() : "an empty tensor");
  if (x.rank() < 2)
    fail<shape_error>(component, std::string(what) + " rank", ">= 2 (N x C x ...)", x.rank(), "shape " + x.shape().str());
  return {x.size(0), x.size(1), x.numel() / (x.size(0) * x.size(1))};
}

// Labels for N x C x ... scores: N x 1 x ... (the same rank) or N x ... (one rank less), spatial axes equal.
template <class T, class B>
void check_label_shape(const char* component, const Tensor<T, B>& labels, const Shape& scores) {
  std::vector<index_t> a = scores.to_vector(), b = a;
  a[1] = 1;          // N x 1 x ...
  b.erase(b.begin() + 1);  // N x ...
  const bool ok = labels.defined() && (labels.shape().to_vector() == a || labels.shape().to_vector() == b);
  if (!ok)
    fail<shape_error>(component, "labels shape (N x 1 x ... or N x ... for scores " + scores.str() + ")",
                      Shape(a).str() + " or " + Shape(b).str(),
                      labels.defined() ? labels.shape().str() : std::string("an empty tensor"));
}

}  // namespace detail

}  // namespace mmnet::losses
