// mmnet/core/xtensor.hpp: cpu tensors as xtensor expressions (no copy), for the convenient, non-critical
// paths (data preparation, tests, examples). Kernels use raw pointers instead.
#pragma once
#include <vector>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>

#include "tensor.hpp"

namespace mmnet {

// A view of t's storage with t's shape; valid while t (or a shallow copy) lives.
template <class T>
auto as_xtensor(Tensor<T, cpu>& t) {
  std::vector<std::size_t> shape(t.shape().begin(), t.shape().end());
  return xt::adapt(t.data(), static_cast<std::size_t>(t.numel()), xt::no_ownership(), shape);
}

// A new cpu tensor holding the values of an xtensor expression (rank 1 to 5).
template <class T, class E>
Tensor<T, cpu> from_xtensor(const xt::xexpression<E>& e) {
  xt::xarray<T> a = e.derived_cast();
  std::vector<index_t> dims(a.shape().begin(), a.shape().end());
  return Tensor<T, cpu>::from_host(Shape(dims), a.data());
}

}  // namespace mmnet
