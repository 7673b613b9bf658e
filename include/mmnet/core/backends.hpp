// mmnet/core/backends.hpp: pulls in the backends this translation unit can build. The cpu backend is always
// there; the cuda backend needs Thrust: it is enabled under nvcc, or under g++ when a Thrust device system is
// chosen (-DTHRUST_DEVICE_SYSTEM=THRUST_DEVICE_SYSTEM_OMP) or MMNET_ENABLE_CUDA_BACKEND is defined.
#pragma once
#include "../backend/cpu/memory.hpp"

#if defined(__CUDACC__) || defined(THRUST_DEVICE_SYSTEM) || defined(MMNET_ENABLE_CUDA_BACKEND)
#define MMNET_HAS_CUDA_BACKEND 1
#include "../backend/cuda/memory.hpp"
#else
#define MMNET_HAS_CUDA_BACKEND 0
#endif
