# The installed package, add_subdirectory and FetchContent each build a consumer.
foreach(mode find_package add_subdirectory fetchcontent)
  add_test(NAME "package: ${mode}"
           COMMAND ${CMAKE_COMMAND} -DMODE=${mode} -DSOURCE=${PROJECT_SOURCE_DIR}
                   -DWORK=${CMAKE_CURRENT_BINARY_DIR}/package-${mode}
                   -DEXPECT_MPI=$<TARGET_EXISTS:lamina_mpi> -P ${CMAKE_CURRENT_SOURCE_DIR}/package/run_consumer.cmake)
  set_tests_properties("package: ${mode}" PROPERTIES TIMEOUT 600 LABELS package)
endforeach()
