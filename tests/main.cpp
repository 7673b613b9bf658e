// tests/main.cpp: doctest runner shared by every backend's test executable.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>

#include <mmnet/core/parallel.hpp>

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

int main(int argc, char** argv) {
#if defined(__CUDACC__)
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device visible: the nvcc-built cuda tests are skipped\n");
    return 77;  // ctest SKIP_RETURN_CODE
  }
#endif
  if (const char* t = std::getenv("MMNET_NUM_THREADS")) mmnet::set_num_threads(std::atoi(t));
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
