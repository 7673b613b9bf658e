// mmnet/core/backend.hpp: compile-time backend tags. A backend is a type, chosen as a template argument
// (`Tensor<float, mmnet::cpu>`), like a std::execution policy; kernels are overloaded on the tag.
#pragma once
#include <type_traits>

namespace mmnet {

// SIMD CPU backend: aligned host storage, xsimd kernels, OpenMP threads.
struct cpu {
  static constexpr const char* name = "cpu";
};
// CUDA backend: thrust::device_vector storage, kernels through Thrust. Built by g++ with
// THRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP the same code runs on CPU threads (how CI exercises it).
struct cuda {
  static constexpr const char* name = "cuda";
};

template <class B>
inline constexpr bool is_backend_v = std::is_same_v<B, cpu> || std::is_same_v<B, cuda>;

// Storage and memory primitives; specialised in backend/cpu/memory.hpp and backend/cuda/memory.hpp.
template <class Backend>
struct backend_traits;

// Accumulator type for reductions: sums of float run in double so that BN statistics, Dice sums and
// gradient reductions over large volumes keep float within its tolerance.
template <class T>
using acc_t = double;

}  // namespace mmnet
