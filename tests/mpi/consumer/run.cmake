# Installs the gradclip build GRADCLIP_BINARY_DIR into WORK_DIR/prefix, builds the consumer project
# beside this script against it with find_package(gradclip COMPONENTS mpi), and runs it on 2 ranks.
#
#   cmake -DGRADCLIP_BINARY_DIR=<dir> -DWORK_DIR=<dir> -DMPIEXEC_EXECUTABLE=<mpiexec> [options]
#         -P run.cmake
# Options: CMAKE_GENERATOR, CMAKE_MAKE_PROGRAM, CMAKE_CXX_COMPILER, CMAKE_BUILD_TYPE, Eigen3_DIR,
# MPIEXEC_NUMPROC_FLAG (default -n), GRADCLIP_MPIEXEC_FLAGS (|-separated). WORK_DIR is emptied first.
cmake_minimum_required(VERSION 3.15...3.31)

foreach(var GRADCLIP_BINARY_DIR WORK_DIR MPIEXEC_EXECUTABLE)
    if(NOT DEFINED ${var})
        message(FATAL_ERROR "run.cmake: -D${var}=... is required")
    endif()
endforeach()
string(REPLACE "|" ";" GRADCLIP_MPIEXEC_FLAGS "${GRADCLIP_MPIEXEC_FLAGS}")
if(NOT MPIEXEC_NUMPROC_FLAG)
    set(MPIEXEC_NUMPROC_FLAG -n)
endif()

function(run)
    string(REPLACE ";" " " shown "${ARGN}")
    message(STATUS "> ${shown}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "failed (${rc}): ${shown}")
    endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
set(config Release)
if(CMAKE_BUILD_TYPE)
    set(config "${CMAKE_BUILD_TYPE}")
endif()
run("${CMAKE_COMMAND}" --install "${GRADCLIP_BINARY_DIR}" --prefix "${prefix}" --config "${config}")
file(GLOB_RECURSE mpi_targets "${prefix}/gradclipMPITargets.cmake")
if(NOT mpi_targets)
    message(FATAL_ERROR "no gradclipMPITargets.cmake installed under ${prefix}")
endif()

set(args -S "${CMAKE_CURRENT_LIST_DIR}" -B "${WORK_DIR}/build" "-DCMAKE_PREFIX_PATH=${prefix}")
if(CMAKE_GENERATOR)
    list(APPEND args -G "${CMAKE_GENERATOR}")
endif()
foreach(var CMAKE_MAKE_PROGRAM CMAKE_CXX_COMPILER CMAKE_BUILD_TYPE Eigen3_DIR)
    if(${var})
        list(APPEND args "-D${var}=${${var}}")
    endif()
endforeach()
run("${CMAKE_COMMAND}" ${args})
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build" --config "${config}")

file(GLOB_RECURSE exe LIST_DIRECTORIES false "${WORK_DIR}/build/consumer_mpi" "${WORK_DIR}/build/consumer_mpi.exe")
if(NOT exe)
    message(FATAL_ERROR "the consumer executable was not built in ${WORK_DIR}/build")
endif()
list(GET exe 0 exe)
run("${MPIEXEC_EXECUTABLE}" ${MPIEXEC_NUMPROC_FLAG} 2 ${GRADCLIP_MPIEXEC_FLAGS} "${exe}")
