// mmnet/backend/cpu/leaky_relu.hpp: the cpu fast path of LeakyReLU's kernels (overloads on the cpu tag of the
// generic kernels in layers/activation.hpp). The generic body, run through parallel_for's closure, is not
// vectorised (the stores may alias the captured pointers, so they are reloaded per value); here each thread runs
// a plain loop over restrict pointers on one block, which the compiler vectorises (a compare and a blend). The
// arithmetic is the same single multiply, so the results equal the generic kernels' bit for bit.
#pragma once
#include "memory.hpp"

namespace mmnet::backend {
namespace cpu_leaky_relu {

// Values per OpenMP block: enough to amortise the scheduling, small enough to spread a plane over threads.
inline constexpr index_t block = 16384;

template <class T>
inline void forward(const T* __restrict x, index_t n, T slope, T* __restrict y) {
  for (index_t j = 0; j < n; ++j) {
    const T v = x[j];
    y[j] = v > T(0) ? v : v * slope;
  }
}

template <class T>
inline void backward(const T* __restrict x, const T* __restrict dy, index_t n, T slope, T* __restrict dx) {
  for (index_t j = 0; j < n; ++j) {
    const T g = dy[j];
    dx[j] = x[j] > T(0) ? g : g * slope;
  }
}

// f(begin, length) on consecutive blocks of n values, one OpenMP iteration a block.
template <class F>
inline void for_blocks(index_t n, F&& f) {
  const index_t blocks = (n + block - 1) / block;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (blocks > 1)
#endif
  for (index_t b = 0; b < blocks; ++b) {
    const index_t begin = b * block;
    f(begin, n - begin < block ? n - begin : block);
  }
}

}  // namespace cpu_leaky_relu

// y = x > 0 ? x : x * slope over n values.
template <class T>
void leaky_relu_forward(cpu, index_t n, const T* x, T slope, T* y) {
  cpu_leaky_relu::for_blocks(n, [&](index_t begin, index_t len) {
    cpu_leaky_relu::forward(x + begin, len, slope, y + begin);
  });
}

// dx = x > 0 ? dy : dy * slope over n values.
template <class T>
void leaky_relu_backward(cpu, index_t n, const T* x, const T* dy, T slope, T* dx) {
  cpu_leaky_relu::for_blocks(n, [&](index_t begin, index_t len) {
    cpu_leaky_relu::backward(x + begin, dy + begin, len, slope, dx + begin);
  });
}

}  // namespace mmnet::backend
