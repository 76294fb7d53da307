include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(DIRECTORY include/lamina DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS lamina EXPORT laminaTargets)
if(TARGET lamina_dispatch)
  install(TARGETS lamina_dispatch EXPORT laminaTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
if(TARGET lamina_mpi)
  install(TARGETS lamina_mpi EXPORT laminaTargets)
  set(LAMINA_CONFIG_MPI ON)
else()
  set(LAMINA_CONFIG_MPI OFF)
endif()
install(EXPORT laminaTargets NAMESPACE lamina:: DESTINATION ${CMAKE_INSTALL_DATADIR}/lamina/cmake)

if(LAMINA_OPENMP AND OpenMP_CXX_FOUND)
  set(LAMINA_CONFIG_OPENMP ON)
else()
  set(LAMINA_CONFIG_OPENMP OFF)
endif()
if(TARGET Boost::headers)
  set(LAMINA_CONFIG_BOOST ON)
else()
  set(LAMINA_CONFIG_BOOST OFF)
endif()
configure_package_config_file(cmake/laminaConfig.cmake.in
  ${PROJECT_BINARY_DIR}/laminaConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_DATADIR}/lamina/cmake)
# Header-only: the package fits any architecture.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/laminaConfigVersion.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES
  ${PROJECT_BINARY_DIR}/laminaConfig.cmake
  ${PROJECT_BINARY_DIR}/laminaConfigVersion.cmake
  cmake/LaminaDependencies.cmake
  DESTINATION ${CMAKE_INSTALL_DATADIR}/lamina/cmake)
