// mmnet/core/config.hpp: compiler switches and the index type shared by every header.
#pragma once
#include <cstdint>

#define MMNET_VERSION_MAJOR 0
#define MMNET_VERSION_MINOR 1
#define MMNET_VERSION_PATCH 0
#define MMNET_VERSION_STRING "0.1.0"

// Host/device qualifier: real under a CUDA compiler, empty under g++ (tiny-cuda-nn's habit), so the same
// small functions and kernel bodies build for both the cpu backend and Thrust's OpenMP device system.
#if defined(__CUDACC__)
#define MMNET_HOST_DEVICE __host__ __device__
#define MMNET_CUDA_COMPILER 1
#else
#define MMNET_HOST_DEVICE
#define MMNET_CUDA_COMPILER 0
#endif

// A lambda that Thrust may run on the device: nvcc needs --extended-lambda for this form.
#define MMNET_KERNEL [=] MMNET_HOST_DEVICE

namespace mmnet {
using index_t = std::int64_t;
inline constexpr const char* version_string = MMNET_VERSION_STRING;
}  // namespace mmnet
