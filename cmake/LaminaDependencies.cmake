# Dependencies of the lamina::lamina interface. Shared by the build tree and,
# through laminaConfig.cmake, by consumers of the installed package.
include(CMakeFindDependencyMacro OPTIONAL)

find_package(Eigen3 3.4 REQUIRED NO_MODULE)
find_package(xsimd 8.1 REQUIRED)
# Debian's xsimd 8.1 config lists a link dependency on 'xtl' that is not a target
# and not needed by the headers; drop it so consumers do not try to link -lxtl.
if(TARGET xsimd)
  get_target_property(_lamina_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_lamina_xsimd_links)
    list(REMOVE_ITEM _lamina_xsimd_links xtl)
    set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "${_lamina_xsimd_links}")
  endif()
endif()
find_package(ZLIB REQUIRED)
# Boost.Math (header-only): the regularised incomplete beta of lamina/attention/ebqm.hpp.
# Optional for everything else; the test suite requires it.
find_package(Boost 1.74 QUIET)
if(NOT DEFINED LAMINA_OPENMP OR LAMINA_OPENMP)
  find_package(OpenMP COMPONENTS CXX)
endif()
