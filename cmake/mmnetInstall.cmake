# install(): headers, the exported targets mmnet::mmnet and mmnet::thrust_omp, and a package config that
# finds the dependencies with find_dependency, so a consumer needs only find_package(mmnet CONFIG REQUIRED).
include(CMakePackageConfigHelpers)
install(DIRECTORY include/mmnet DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(PROGRAMS tools/torch2h5.py tools/h52torch.py DESTINATION ${CMAKE_INSTALL_DATADIR}/mmnet/tools)
install(TARGETS mmnet mmnet_thrust_omp EXPORT mmnetTargets)
install(EXPORT mmnetTargets NAMESPACE mmnet:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/mmnet)
configure_package_config_file(cmake/mmnetConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/mmnetConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/mmnet)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/mmnetConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/mmnetConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/mmnetConfigVersion.cmake
  cmake/FindNIfTI.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/mmnet)
