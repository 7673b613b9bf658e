# nvcc for the real-CUDA build of the cuda backend (tests and benchmarks only; the library is header-only).
if(NOT CMAKE_CUDA_COMPILER)
  set(CMAKE_CUDA_COMPILER ${MMNET_NVCC})
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)  # Hopper (H100/H200), the GPUs our device checks run on
endif()
enable_language(CUDA)
set(CMAKE_CUDA_STANDARD 17)
# nvcc's -O sets the host compiler's level (device code is optimised by ptxas regardless); the test suites are
# compile-bound, so they use -O1 as the g++ suites do.
set(CMAKE_CUDA_FLAGS_RELEASE "-O1 -DNDEBUG")
set(CMAKE_CUDA_STANDARD_REQUIRED ON)

function(mmnet_cuda_target tgt)
  target_compile_options(${tgt} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:--extended-lambda --expt-relaxed-constexpr
    -Xcompiler=-fopenmp -Wno-deprecated-gpu-targets>)
  set_target_properties(${tgt} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
endfunction()
