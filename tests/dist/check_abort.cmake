# Runs dist_abort under mpiexec and checks that the job ended quickly, with a
# non-zero status and rank 1's message, instead of hanging.
#   cmake -DMPIEXEC=... -DNP_FLAG=-np -DFLAGS="a;b" -DPROGRAM=... -DMODE=run_or_abort -P check_abort.cmake
execute_process(COMMAND ${MPIEXEC} ${NP_FLAG} 2 ${FLAGS} ${PROGRAM} ${MODE}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
set(all "${out}${err}")
message("mpiexec result: ${rc}\n${all}")
if(rc MATCHES "timeout|Timeout")
  message(FATAL_ERROR "the job hung: still running after 60 s")
endif()
if(rc EQUAL 0 OR rc EQUAL 3)
  message(FATAL_ERROR "the job was not aborted (exit status ${rc})")
endif()
if(MODE STREQUAL "run_or_abort")
  set(expect "lamina: rank 1 of 2: lamina::dist_abort: batch 2 on rank 1: expected no failure, got a deliberate one; aborting the job")
else()
  set(expect "lamina: rank 1 of 2: an exception left the scope of dist::MpiEnvironment; aborting the job")
endif()
string(FIND "${all}" "${expect}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "missing the message: ${expect}")
endif()
