// mmnet/backend/cpu/memory.hpp: host storage (aligned for xsimd) and the OpenMP loop every cpu kernel uses.
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "../../core/backend.hpp"
#include "../../core/config.hpp"

namespace mmnet {

template <>
struct backend_traits<cpu> {
  template <class T>
  using storage = std::vector<T, xsimd::aligned_allocator<T>>;

  template <class T>
  static storage<T> allocate(index_t n) { return storage<T>(static_cast<std::size_t>(n), T(0)); }
  template <class T>
  static T* data(storage<T>& s) { return s.data(); }
  template <class T>
  static const T* data(const storage<T>& s) { return s.data(); }
  template <class T>
  static void copy_from_host(const T* src, index_t n, storage<T>& dst) {
    if (n) std::memcpy(dst.data(), src, sizeof(T) * static_cast<std::size_t>(n));
  }
  template <class T>
  static void copy_to_host(const storage<T>& src, index_t n, T* dst) {
    if (n) std::memcpy(dst, src.data(), sizeof(T) * static_cast<std::size_t>(n));
  }
  template <class T>
  static void copy(const T* src, index_t n, T* dst) {
    if (n) std::memcpy(dst, src, sizeof(T) * static_cast<std::size_t>(n));
  }
  template <class T>
  static void fill(T* p, index_t n, T v) { std::fill(p, p + n, v); }
};

namespace backend {

// Loops shorter than this stay on one thread: thread start-up costs more than it saves.
inline constexpr index_t parallel_grain = 2048;

// Runs f(i) for i in [0, n). Each i must write only its own outputs (no atomics anywhere in mmnet), so
// results do not depend on the thread count.
template <class F>
void parallel_for(cpu, index_t n, F&& f) {
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (n >= parallel_grain)
#endif
  for (index_t i = 0; i < n; ++i) f(i);
}

// Sum of f(i) over [0, n) in acc type A, with a fixed blocking independent of the thread count.
template <class A, class F>
A reduce_sum(cpu, index_t n, F&& f) {
  constexpr index_t block = 4096;
  const index_t nb = (n + block - 1) / block;
  std::vector<A> partial(static_cast<std::size_t>(nb), A(0));
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (nb > 1)
#endif
  for (index_t b = 0; b < nb; ++b) {
    A s(0);
    const index_t end = std::min(n, (b + 1) * block);
    for (index_t i = b * block; i < end; ++i) s += f(i);
    partial[static_cast<std::size_t>(b)] = s;
  }
  A s(0);
  for (A p : partial) s += p;
  return s;
}

}  // namespace backend
}  // namespace mmnet
