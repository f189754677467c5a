# gradclip::torch: the opt-in header gradclip/torch.hpp with libtorch.
#
# Included by the top-level CMakeLists.txt after the gradclip target, its tests and its install
# rules. When libtorch is found (find_package(Torch CONFIG), or a `torch` target the parent project
# already has) it defines
#   gradclip_torch, alias gradclip::torch    INTERFACE target: gradclip + libtorch
# and, in gradclip's own build: the libtorch tests (tests/torch, `ctest -L torch`) with
# GRADCLIP_BUILD_TESTS, the example gradclip_example_torch_clip with GRADCLIP_BUILD_EXAMPLES, and
# with GRADCLIP_INSTALL the file gradclipTorchTarget.cmake, which the installed gradclipConfig.cmake
# loads to define gradclip::torch for consumers that have found Torch (or ask for the component
# `torch`). Without libtorch none of this exists and nothing fails, unless GRADCLIP_TORCH_REQUIRED.
#
# Debian's libtorch-dev puts TorchConfig.cmake in /usr/lib/<multiarch>/cmake/Torch, which
# find_package searches by default; elsewhere pass -DTorch_DIR=<libtorch>/share/cmake/Torch or add
# libtorch to CMAKE_PREFIX_PATH.
#
# gradclip/torch.hpp has no compile check of its own (gradclip_header_check leaves it out): libtorch
# units take minutes to compile, and tests/torch/test_torch.cpp includes it first.

# As a subproject gradclip looks for libtorch only if the parent project has already found it (or
# sets GRADCLIP_TORCH=ON).
if(GRADCLIP_IS_TOP_LEVEL OR TARGET torch)
    set(_gradclip_torch_default ON)
else()
    set(_gradclip_torch_default OFF)
endif()
option(GRADCLIP_TORCH "Define gradclip::torch (gradclip/torch.hpp) when libtorch is found" ${_gradclip_torch_default})
option(GRADCLIP_TORCH_REQUIRED "Fail when libtorch is not found (CI's torch stage)" OFF)
if(NOT GRADCLIP_TORCH AND NOT GRADCLIP_TORCH_REQUIRED)
    return()
endif()

if(NOT TARGET torch)
    if(GRADCLIP_TORCH_REQUIRED)
        find_package(Torch REQUIRED CONFIG)
    else()
        find_package(Torch QUIET CONFIG)
    endif()
endif()
if(NOT TARGET torch)
    message(STATUS "gradclip: libtorch not found; no gradclip::torch, libtorch tests or example")
    return()
endif()

# TORCH_LIBRARIES is the imported `torch` target (its include directories come in as SYSTEM, like
# any imported target's, and it carries TORCH_CXX_FLAGS), torch_library (links libtorch with
# --no-as-needed, for its operator registrations) and libc10. A parent project that found Torch in
# another directory scope may not have the variable: then `torch` alone.
if(DEFINED TORCH_LIBRARIES)
    set(_gradclip_torch_libraries ${TORCH_LIBRARIES})
else()
    set(_gradclip_torch_libraries torch)
endif()

add_library(gradclip_torch INTERFACE)
add_library(gradclip::torch ALIAS gradclip_torch)
target_link_libraries(gradclip_torch INTERFACE gradclip ${_gradclip_torch_libraries})
if(DEFINED Torch_VERSION)
    message(STATUS "gradclip: gradclip::torch with libtorch ${Torch_VERSION}")
else()
    message(STATUS "gradclip: gradclip::torch with the parent project's libtorch")
endif()

# libtorch's process groups (gradclip/torch_distributed.hpp needs only the generic c10d headers,
# which libtorch ships): the c10d tests and example run a Gloo group, whose header
# (ProcessGroupGloo.hpp) is empty without USE_C10D_GLOO and includes Debian's libgloo-dev headers.
# Without them those are left out, with one message.
find_path(GRADCLIP_GLOO_INCLUDE_DIR gloo/config.h)
set(GRADCLIP_TORCH_GLOO OFF)
if(GRADCLIP_GLOO_INCLUDE_DIR)
    set(GRADCLIP_TORCH_GLOO ON)
else()
    message(STATUS "gradclip: gloo headers (libgloo-dev) not found; no c10d (torch_distributed) tests or example")
endif()

# libtorch is not built with sanitizers: an ASan/UBSan build reports libtorch's own allocations and
# static initialisers, so the sanitizer builds leave the libtorch tests and example out.
if(GRADCLIP_SANITIZE)
    message(STATUS "gradclip: GRADCLIP_SANITIZE is set; not building the libtorch tests and example")
else()
    # Our warnings (gradclip_dev_flags: -Wall -Wextra -Wpedantic -Werror) apply to these units too:
    # libtorch's headers are SYSTEM includes, so only our own code is held to them.
    if(GRADCLIP_BUILD_TESTS AND GRADCLIP_HAVE_CATCH2)
        add_subdirectory("${PROJECT_SOURCE_DIR}/tests/torch" "${PROJECT_BINARY_DIR}/tests/torch")
    endif()
    if(GRADCLIP_BUILD_EXAMPLES)
        add_executable(gradclip_example_torch_clip "${PROJECT_SOURCE_DIR}/examples/torch_clip.cpp")
        target_link_libraries(gradclip_example_torch_clip PRIVATE gradclip::torch gradclip_dev_flags)
        if(GRADCLIP_BUILD_TESTS)
            add_test(NAME gradclip_example_torch_clip COMMAND gradclip_example_torch_clip --steps 30)
            set_tests_properties(gradclip_example_torch_clip PROPERTIES LABELS torch ENVIRONMENT "OMP_NUM_THREADS=1")
        endif()
        if(GRADCLIP_TORCH_GLOO)
            add_executable(gradclip_example_torch_distributed "${PROJECT_SOURCE_DIR}/examples/torch_distributed.cpp")
            target_compile_definitions(gradclip_example_torch_distributed PRIVATE USE_C10D_GLOO)
            target_include_directories(gradclip_example_torch_distributed SYSTEM PRIVATE "${GRADCLIP_GLOO_INCLUDE_DIR}")
            target_link_libraries(gradclip_example_torch_distributed PRIVATE gradclip::torch gradclip_dev_flags)
            if(GRADCLIP_BUILD_TESTS)
                add_test(NAME gradclip_example_torch_distributed
                         COMMAND bash "${PROJECT_SOURCE_DIR}/tests/torch/run_ranks.sh" 4
                                 $<TARGET_FILE:gradclip_example_torch_distributed>)
                set_tests_properties(gradclip_example_torch_distributed PROPERTIES LABELS torch TIMEOUT 150
                                     ENVIRONMENT "OMP_NUM_THREADS=1")
            endif()
        endif()
    endif()
endif()

if(GRADCLIP_INSTALL)
    # Not an exported target: the consumer's own libtorch (its TORCH_LIBRARIES) is what
    # gradclip::torch must link, wherever that libtorch is installed.
    set(_gradclip_torch_target_file "${PROJECT_BINARY_DIR}/gradclipTorchTarget.cmake")
    file(WRITE "${_gradclip_torch_target_file}" [=[
# gradclip::torch for consumers of the installed gradclip: loaded by gradclipConfig.cmake. Defined
# when the consumer has found Torch, or asks for the component (find_package(gradclip COMPONENTS
# torch)), which then looks for it. Sets gradclip_torch_FOUND.
set(gradclip_torch_FOUND FALSE)
if(NOT TARGET torch AND "torch" IN_LIST gradclip_FIND_COMPONENTS)
    find_package(Torch QUIET CONFIG)
endif()
if(TARGET torch)
    if(NOT TARGET gradclip::torch)
        add_library(gradclip::torch INTERFACE IMPORTED)
        if(DEFINED TORCH_LIBRARIES)
            set_target_properties(gradclip::torch PROPERTIES
                INTERFACE_LINK_LIBRARIES "gradclip::gradclip;${TORCH_LIBRARIES}")
        else()
            set_target_properties(gradclip::torch PROPERTIES INTERFACE_LINK_LIBRARIES "gradclip::gradclip;torch")
        endif()
    endif()
    set(gradclip_torch_FOUND TRUE)
endif()
]=])
    install(FILES "${_gradclip_torch_target_file}" DESTINATION "${GRADCLIP_INSTALL_CMAKEDIR}")
endif()
