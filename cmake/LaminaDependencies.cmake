# Dependencies of the lamina::lamina interface. Shared by the build tree and,
# through laminaConfig.cmake, by consumers of the installed package.
# In the installed laminaConfig.cmake (_lamina_as_package set) each dependency
# goes through find_dependency, so a missing one makes find_package(lamina) fail
# with the dependency's name and honours the caller's QUIET and REQUIRED.
include(CMakeFindDependencyMacro)
macro(_lamina_dependency)
  if(_lamina_as_package)
    find_dependency(${ARGN})
  else()
    find_package(${ARGN} REQUIRED)
  endif()
endmacro()

_lamina_dependency(Eigen3 3.4 NO_MODULE)
_lamina_dependency(xsimd 8.1)
# Debian's xsimd 8.1 config lists a link dependency on 'xtl' that is not a target
# and not needed by the headers; drop it so consumers do not try to link -lxtl.
if(TARGET xsimd)
  get_target_property(_lamina_xsimd_links xsimd INTERFACE_LINK_LIBRARIES)
  if(_lamina_xsimd_links)
    list(REMOVE_ITEM _lamina_xsimd_links xtl)
    set_target_properties(xsimd PROPERTIES INTERFACE_LINK_LIBRARIES "${_lamina_xsimd_links}")
  endif()
endif()
_lamina_dependency(ZLIB)
# Boost.Math (header-only): the regularised incomplete beta of lamina/attention/ebqm.hpp.
# Optional for everything else; the test suite requires it.
# The exported target links Boost::headers exactly when the build found it.
if(NOT _lamina_as_package)
  find_package(Boost 1.74 QUIET)
elseif(LAMINA_BOOST)
  find_dependency(Boost 1.74)
endif()
if(_lamina_as_package)
  # The exported target links OpenMP::OpenMP_CXX exactly when the build did.
  if(LAMINA_OPENMP)
    find_dependency(OpenMP COMPONENTS CXX)
  endif()
elseif(LAMINA_OPENMP)
  find_package(OpenMP COMPONENTS CXX)
endif()
