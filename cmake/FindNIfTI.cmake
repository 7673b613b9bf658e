# FindNIfTI: niftilib's NIfTI-2 library (Debian libnifti2-dev: nifti2_io.h, libnifti2, libznz) and zlib, as the
# imported target NIfTI::NIfTI. A module of our own because Debian's NIFTIConfig.cmake names files that the
# packages do not install (/usr/lib/libnifti2.so.2.1.0, /usr/bin/nifti_tool) and stops the configure.
include(FindPackageHandleStandardArgs)
find_path(NIfTI_INCLUDE_DIR nifti2_io.h PATH_SUFFIXES nifti)
find_library(NIfTI_nifti2_LIBRARY NAMES nifti2)
find_library(NIfTI_znz_LIBRARY NAMES znz)
find_package(ZLIB QUIET)
find_package_handle_standard_args(NIfTI
  REQUIRED_VARS NIfTI_INCLUDE_DIR NIfTI_nifti2_LIBRARY NIfTI_znz_LIBRARY ZLIB_FOUND
  REASON_FAILURE_MESSAGE "install Debian's libnifti2-dev and zlib1g-dev (scripts/install_deps.sh)")
if(NIfTI_FOUND AND NOT TARGET NIfTI::NIfTI)
  add_library(NIfTI::NIfTI INTERFACE IMPORTED)
  set_target_properties(NIfTI::NIfTI PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${NIfTI_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${NIfTI_nifti2_LIBRARY};${NIfTI_znz_LIBRARY};ZLIB::ZLIB;m")
endif()
mark_as_advanced(NIfTI_INCLUDE_DIR NIfTI_nifti2_LIBRARY NIfTI_znz_LIBRARY)
