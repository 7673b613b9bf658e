// mmnet/backend/cuda/memory.hpp: thrust::device_vector storage and Thrust launches for the cuda backend.
// Under nvcc this is real CUDA; under g++ with THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP the very same
// code runs on OpenMP threads, which is how CI executes every cuda-backend code path without a GPU.
#pragma once
#include <thrust/copy.h>
#include <thrust/device_vector.h>
#include <thrust/execution_policy.h>
#include <thrust/fill.h>
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/transform_reduce.h>

#include "../../core/backend.hpp"
#include "../../core/config.hpp"

namespace mmnet {

template <>
struct backend_traits<cuda> {
  template <class T>
  using storage = thrust::device_vector<T>;

  template <class T>
  static storage<T> allocate(index_t n) { return storage<T>(static_cast<std::size_t>(n), T(0)); }
  template <class T>
  static T* data(storage<T>& s) { return thrust::raw_pointer_cast(s.data()); }
  template <class T>
  static const T* data(const storage<T>& s) { return thrust::raw_pointer_cast(s.data()); }
  template <class T>
  static void copy_from_host(const T* src, index_t n, storage<T>& dst) {
    if (n) thrust::copy(src, src + n, dst.begin());
  }
  template <class T>
  static void copy_to_host(const storage<T>& src, index_t n, T* dst) {
    if (n) thrust::copy(src.begin(), src.begin() + n, dst);
  }
  template <class T>
  static void copy(const T* src, index_t n, T* dst) {
    if (n) thrust::copy(thrust::device, src, src + n, dst);
  }
  template <class T>
  static void fill(T* p, index_t n, T v) {
    if (n) thrust::fill(thrust::device, p, p + n, v);
  }
};

namespace backend {

template <class F>
void parallel_for(cuda, index_t n, F&& f) {
  if (n > 0) thrust::for_each_n(thrust::device, thrust::counting_iterator<index_t>(0), n, f);
}

namespace detail {
template <class A>
struct plus_op {
  MMNET_HOST_DEVICE A operator()(A a, A b) const { return a + b; }
};
}  // namespace detail

template <class A, class F>
A reduce_sum(cuda, index_t n, F&& f) {
  if (n <= 0) return A(0);
  return thrust::transform_reduce(thrust::device, thrust::counting_iterator<index_t>(0),
                                  thrust::counting_iterator<index_t>(n), f, A(0), detail::plus_op<A>{});
}

}  // namespace backend
}  // namespace mmnet
