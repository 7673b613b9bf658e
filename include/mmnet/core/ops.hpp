// mmnet/core/ops.hpp: element-wise tensor arithmetic shared by all components. One kernel body per op,
// run by backend::parallel_for on either backend. Mixing backends or element types is a compile error.
#pragma once
#include <cmath>
#include <type_traits>

#include "tensor.hpp"

namespace mmnet {
namespace detail {
template <class T1, class B1, class T2, class B2>
constexpr void check_same_kind() {
  static_assert(std::is_same_v<B1, B2>,
                "mmnet: tensors on different backends cannot be mixed in one expression; "
                "copy one explicitly with .to<Backend>() first");
  static_assert(std::is_same_v<T1, T2>,
                "mmnet: tensors of different element types (float and double) cannot be mixed in one "
                "expression; convert one explicitly with .cast<T>() first");
}
template <class T, class B>
void check_same_numel(const char* op, const Tensor<T, B>& a, const Tensor<T, B>& b) {
  if (a.shape() != b.shape()) fail<shape_error>(std::string("mmnet::") + op, "operand shape", a.shape().str(), b.shape().str());
}
}  // namespace detail

// y += alpha * x (the gradient-accumulation primitive).
template <class T1, class B1, class T2, class B2>
void axpy_(Tensor<T1, B1>& y, T1 alpha, const Tensor<T2, B2>& x) {
  detail::check_same_kind<T1, B1, T2, B2>();
  detail::check_same_numel("axpy_", y, x);
  T1* py = y.data();
  const T1* px = x.data();
  backend::parallel_for(B1{}, y.numel(), MMNET_KERNEL(index_t i) { py[i] += alpha * px[i]; });
}
// y += x
template <class T1, class B1, class T2, class B2>
void add_(Tensor<T1, B1>& y, const Tensor<T2, B2>& x) {
  axpy_(y, T1(1), x);
}
// y *= s
template <class T, class B>
void scale_(Tensor<T, B>& y, T s) {
  T* py = y.data();
  backend::parallel_for(B{}, y.numel(), MMNET_KERNEL(index_t i) { py[i] *= s; });
}

template <class T1, class B1, class T2, class B2>
Tensor<T1, B1> add(const Tensor<T1, B1>& a, const Tensor<T2, B2>& b) {
  detail::check_same_kind<T1, B1, T2, B2>();
  detail::check_same_numel("add", a, b);
  Tensor<T1, B1> y(a.shape());
  T1* py = y.data();
  const T1 *pa = a.data(), *pb = b.data();
  backend::parallel_for(B1{}, y.numel(), MMNET_KERNEL(index_t i) { py[i] = pa[i] + pb[i]; });
  return y;
}
template <class T1, class B1, class T2, class B2>
Tensor<T1, B1> sub(const Tensor<T1, B1>& a, const Tensor<T2, B2>& b) {
  detail::check_same_kind<T1, B1, T2, B2>();
  detail::check_same_numel("sub", a, b);
  Tensor<T1, B1> y(a.shape());
  T1* py = y.data();
  const T1 *pa = a.data(), *pb = b.data();
  backend::parallel_for(B1{}, y.numel(), MMNET_KERNEL(index_t i) { py[i] = pa[i] - pb[i]; });
  return y;
}
template <class T1, class B1, class T2, class B2>
Tensor<T1, B1> mul(const Tensor<T1, B1>& a, const Tensor<T2, B2>& b) {
  detail::check_same_kind<T1, B1, T2, B2>();
  detail::check_same_numel("mul", a, b);
  Tensor<T1, B1> y(a.shape());
  T1* py = y.data();
  const T1 *pa = a.data(), *pb = b.data();
  backend::parallel_for(B1{}, y.numel(), MMNET_KERNEL(index_t i) { py[i] = pa[i] * pb[i]; });
  return y;
}
template <class T1, class B1, class T2, class B2>
Tensor<T1, B1> operator+(const Tensor<T1, B1>& a, const Tensor<T2, B2>& b) { return add(a, b); }
template <class T1, class B1, class T2, class B2>
Tensor<T1, B1> operator-(const Tensor<T1, B1>& a, const Tensor<T2, B2>& b) { return sub(a, b); }
template <class T1, class B1, class T2, class B2>
Tensor<T1, B1> operator*(const Tensor<T1, B1>& a, const Tensor<T2, B2>& b) { return mul(a, b); }

// Sum of all elements, accumulated in double.
template <class T, class B>
double sum(const Tensor<T, B>& a) {
  const T* pa = a.data();
  return backend::reduce_sum<double>(B{}, a.numel(), MMNET_KERNEL(index_t i) { return static_cast<double>(pa[i]); });
}
// Sum of a * b, accumulated in double.
template <class T1, class B1, class T2, class B2>
double dot(const Tensor<T1, B1>& a, const Tensor<T2, B2>& b) {
  detail::check_same_kind<T1, B1, T2, B2>();
  detail::check_same_numel("dot", a, b);
  const T1 *pa = a.data(), *pb = b.data();
  return backend::reduce_sum<double>(B1{}, a.numel(),
                                     MMNET_KERNEL(index_t i) { return static_cast<double>(pa[i]) * pb[i]; });
}
// Number of NaN or infinite elements.
template <class T, class B>
index_t count_nonfinite(const Tensor<T, B>& a) {
  const T* pa = a.data();
  return static_cast<index_t>(backend::reduce_sum<double>(
      B{}, a.numel(), MMNET_KERNEL(index_t i) { return (pa[i] - pa[i] == T(0)) ? 0.0 : 1.0; }));
}

}  // namespace mmnet
