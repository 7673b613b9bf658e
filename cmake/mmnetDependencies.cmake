# Dependencies of the header-only library (Debian: xtensor-dev libxsimd-dev xtl-dev libhdf5-dev libthrust-dev
# libnifti2-dev nlohmann-json3-dev).
include(GNUInstallDirs)
find_package(xtl CONFIG REQUIRED)
find_package(xsimd CONFIG REQUIRED)
find_package(xtensor CONFIG REQUIRED)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(Threads REQUIRED)
find_package(NIfTI MODULE REQUIRED)  # cmake/FindNIfTI.cmake: NIfTI::NIfTI (io/nifti.hpp)
find_package(nlohmann_json 3 CONFIG REQUIRED)  # dataset.json (data/dataset.hpp)

# Thrust headers for the g++/OpenMP build of the cuda backend: Debian's libthrust-dev in /usr/include.
find_path(MMNET_THRUST_INCLUDE_DIR thrust/version.h PATHS /usr/include NO_DEFAULT_PATH)
if(NOT MMNET_THRUST_INCLUDE_DIR)
  find_path(MMNET_THRUST_INCLUDE_DIR thrust/version.h PATHS /usr/local/cuda/include/cccl /usr/local/cuda/include)
endif()
if(MMNET_THRUST_INCLUDE_DIR STREQUAL "/usr/include")
  set(MMNET_THRUST_INCLUDE_DIR "")  # already a system path
endif()
