# install() + export so that another project can find_package(hdssl) and link hdssl::hdssl.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
set(HDSSL_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/hdssl")

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/hdssl" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(TARGETS hdssl EXPORT hdsslTargets)
install(EXPORT hdsslTargets NAMESPACE hdssl:: DESTINATION "${HDSSL_CMAKE_DIR}")
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/hdsslConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/hdsslConfig.cmake" INSTALL_DESTINATION "${HDSSL_CMAKE_DIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/hdsslConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/hdsslConfig.cmake" "${PROJECT_BINARY_DIR}/hdsslConfigVersion.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/FindNIfTI.cmake" "${PROJECT_SOURCE_DIR}/cmake/hdsslDependencies.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/hdsslCuda.cmake"
  DESTINATION "${HDSSL_CMAKE_DIR}")
if(HDSSL_BUILD_EXAMPLES AND HDSSL_EXAMPLE_TARGETS)
  install(TARGETS ${HDSSL_EXAMPLE_TARGETS} RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
endif()
