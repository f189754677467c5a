# gradclip::mpi: the opt-in header gradclip/mpi.hpp with MPI.
#
# Included by the top-level CMakeLists.txt after the gradclip target and its install rules. When
# MPI is found (find_package(MPI COMPONENTS CXX), or an MPI::MPI_CXX target the parent project
# already has) it defines
#   gradclip_mpi, alias gradclip::mpi    INTERFACE target: gradclip + MPI::MPI_CXX
# and, in gradclip's own build: the MPI tests (tests/mpi, `ctest -L mpi`) with
# GRADCLIP_BUILD_TESTS, the MPI example (examples/mpi) with GRADCLIP_BUILD_EXAMPLES, a compile
# check of gradclip/mpi.hpp with GRADCLIP_VERIFY_HEADERS, and with GRADCLIP_INSTALL the export
# file gradclipMPITargets.cmake, which the installed gradclipConfig.cmake loads when the consumer
# finds MPI too. Without MPI none of this exists and nothing fails.

# As a subproject gradclip defines nothing but its library unless asked, and looks for MPI only if
# the parent project has already found it (or sets GRADCLIP_MPI=ON).
if(GRADCLIP_IS_TOP_LEVEL OR TARGET MPI::MPI_CXX)
    set(_gradclip_mpi_default ON)
else()
    set(_gradclip_mpi_default OFF)
endif()
option(GRADCLIP_MPI "Define gradclip::mpi (gradclip/mpi.hpp) when MPI is found" ${_gradclip_mpi_default})
if(NOT GRADCLIP_MPI)
    return()
endif()

if(NOT TARGET MPI::MPI_CXX)
    find_package(MPI COMPONENTS CXX QUIET)
endif()
# FindMPI creates MPI::MPI_CXX even when it finds no MPI (an empty target), so the target alone
# proves nothing: a parent project's target counts unless its own find said MPI_CXX_FOUND false.
if(NOT TARGET MPI::MPI_CXX OR (DEFINED MPI_CXX_FOUND AND NOT MPI_CXX_FOUND))
    message(STATUS "gradclip: MPI not found; no gradclip::mpi, MPI tests or MPI example")
    return()
endif()
message(STATUS "gradclip: gradclip::mpi with MPI ${MPI_CXX_VERSION} (${MPIEXEC_EXECUTABLE})")

add_library(gradclip_mpi INTERFACE)
add_library(gradclip::mpi ALIAS gradclip_mpi)
set_target_properties(gradclip_mpi PROPERTIES EXPORT_NAME mpi)
target_link_libraries(gradclip_mpi INTERFACE gradclip MPI::MPI_CXX)

if(GRADCLIP_BUILD_TESTS OR GRADCLIP_BUILD_EXAMPLES)
    # Arguments for mpiexec in our tests, after -np N. Open MPI refuses to run as root (CI
    # containers) and to start more ranks than cores (the tests use 4) unless told; both flags are
    # harmless otherwise. Other MPIs get none.
    if(NOT DEFINED GRADCLIP_MPIEXEC_FLAGS)
        set(_gradclip_mpiexec_flags "")
        execute_process(COMMAND "${MPIEXEC_EXECUTABLE}" --version
            OUTPUT_VARIABLE _gradclip_mpiexec_version ERROR_VARIABLE _gradclip_mpiexec_version
            RESULT_VARIABLE _gradclip_mpiexec_rc TIMEOUT 30)
        if(_gradclip_mpiexec_version MATCHES "Open MPI|OpenRTE")
            set(_gradclip_mpiexec_flags --allow-run-as-root --oversubscribe)
        endif()
    endif()
    set(GRADCLIP_MPIEXEC_FLAGS "${_gradclip_mpiexec_flags}" CACHE STRING
        "mpiexec arguments for gradclip's MPI tests (a ;-list, after the rank count)")
    mark_as_advanced(GRADCLIP_MPIEXEC_FLAGS)

    # gradclip_add_mpi_test(<name> <ranks> <executable target> [args...])
    function(gradclip_add_mpi_test name ranks target)
        add_test(NAME ${name}
            COMMAND "${MPIEXEC_EXECUTABLE}" ${MPIEXEC_NUMPROC_FLAG} ${ranks} ${GRADCLIP_MPIEXEC_FLAGS}
                    ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${target}> ${MPIEXEC_POSTFLAGS} ${ARGN})
        # PROCESSORS keeps ctest -j from starting other tests beside an N-rank run.
        set_tests_properties(${name} PROPERTIES LABELS mpi PROCESSORS ${ranks} TIMEOUT 300)
        if(GRADCLIP_SANITIZE MATCHES "address")
            # Open MPI keeps allocations until exit in components it unloads at MPI_Finalize, so
            # LeakSanitizer reports them with no module to suppress by; the other tests check leaks.
            set_property(TEST ${name} APPEND PROPERTY ENVIRONMENT
                "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1")
        endif()
    endfunction()
endif()

if(GRADCLIP_BUILD_TESTS AND GRADCLIP_HAVE_CATCH2)
    add_subdirectory("${PROJECT_SOURCE_DIR}/tests/mpi" "${PROJECT_BINARY_DIR}/tests/mpi")
endif()

if(GRADCLIP_BUILD_EXAMPLES)
    add_subdirectory("${PROJECT_SOURCE_DIR}/examples/mpi" "${PROJECT_BINARY_DIR}/examples/mpi")
endif()

if(GRADCLIP_VERIFY_HEADERS)
    # The same check as gradclip_header_check, which leaves this header out for want of MPI.
    set(_gradclip_mpi_check "${PROJECT_BINARY_DIR}/gradclip_mpi_header_check/gradclip/mpi.hpp.cpp")
    set(_gradclip_content "#include <gradclip/mpi.hpp>\n#include <gradclip/mpi.hpp>\n")
    set(_gradclip_old "")
    if(EXISTS "${_gradclip_mpi_check}")
        file(READ "${_gradclip_mpi_check}" _gradclip_old)
    endif()
    if(NOT _gradclip_old STREQUAL _gradclip_content)
        file(WRITE "${_gradclip_mpi_check}" "${_gradclip_content}")
    endif()
    add_library(gradclip_mpi_header_check OBJECT "${_gradclip_mpi_check}")
    target_link_libraries(gradclip_mpi_header_check PRIVATE gradclip::mpi gradclip_dev_flags)
endif()

if(GRADCLIP_INSTALL)
    # A separate export file, so that consumers without MPI can still load gradclipTargets.cmake.
    install(TARGETS gradclip_mpi EXPORT gradclipMPITargets)
    install(EXPORT gradclipMPITargets
        NAMESPACE gradclip::
        DESTINATION "${GRADCLIP_INSTALL_CMAKEDIR}")
endif()
