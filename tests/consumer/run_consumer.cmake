# Builds and runs one consumer project against gradclip, the way a user would consume it.
#
#   cmake -DMODE=<mode> -DGRADCLIP_SOURCE_DIR=<dir> -DWORK_DIR=<dir> [options] -P run_consumer.cmake
#
# MODE
#   find_package      `cmake --install` GRADCLIP_BINARY_DIR into a prefix, then find_package(gradclip)
#   pkgconfig         the same install, then compile main.cpp with `pkg-config --cflags gradclip`
#   add_subdirectory  add_subdirectory(GRADCLIP_SOURCE_DIR)
#   fetchcontent      FetchContent from a file:// archive of the files a release ships
#   plain_install     configure GRADCLIP_SOURCE_DIR as `cmake -S . -B build` does, with Catch2, Google
#                     Benchmark, MPI and libtorch hidden (CMAKE_DISABLE_FIND_PACKAGE_<name>): it must
#                     succeed, print one skip message per missing dependency and install; the install
#                     is then used with find_package. With -DGRADCLIP_BUILD_TESTS=ON it must fail.
# Options passed on to the consumer's configure step: CMAKE_GENERATOR, CMAKE_GENERATOR_PLATFORM,
# CMAKE_GENERATOR_TOOLSET, CMAKE_MAKE_PROGRAM, CMAKE_CXX_COMPILER, CMAKE_BUILD_TYPE, Eigen3_DIR.
# PKG_CONFIG_EXECUTABLE is needed for MODE pkgconfig. WORK_DIR is emptied first.
cmake_minimum_required(VERSION 3.14...3.31)

foreach(var MODE GRADCLIP_SOURCE_DIR WORK_DIR)
    if(NOT DEFINED ${var})
        message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
    endif()
endforeach()

set(consumer_dir "${CMAKE_CURRENT_LIST_DIR}")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(run)
    string(REPLACE ";" " " shown "${ARGN}")
    message(STATUS "> ${shown}")
    execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "failed (${rc}): ${shown}")
    endif()
endfunction()

function(install_gradclip prefix)
    if(NOT DEFINED GRADCLIP_BINARY_DIR)
        message(FATAL_ERROR "run_consumer.cmake: MODE ${MODE} needs -DGRADCLIP_BINARY_DIR=...")
    endif()
    set(config_args "")
    if(CMAKE_BUILD_TYPE)
        set(config_args --config "${CMAKE_BUILD_TYPE}")
    endif()
    run("${CMAKE_COMMAND}" --install "${GRADCLIP_BINARY_DIR}" --prefix "${prefix}" ${config_args})
endfunction()

# The generator, toolchain and Eigen arguments every configure step here passes on, into <out>.
function(toolchain_args out)
    set(args "")
    if(CMAKE_GENERATOR)
        list(APPEND args -G "${CMAKE_GENERATOR}")
    endif()
    if(CMAKE_GENERATOR_PLATFORM)
        list(APPEND args -A "${CMAKE_GENERATOR_PLATFORM}")
    endif()
    if(CMAKE_GENERATOR_TOOLSET)
        list(APPEND args -T "${CMAKE_GENERATOR_TOOLSET}")
    endif()
    foreach(var CMAKE_MAKE_PROGRAM CMAKE_CXX_COMPILER CMAKE_BUILD_TYPE Eigen3_DIR)
        if(${var})
            list(APPEND args "-D${var}=${${var}}")
        endif()
    endforeach()
    set(${out} "${args}" PARENT_SCOPE)
endfunction()

# Configures <project> (a folder beside this script) in WORK_DIR/build with the extra cache
# arguments given, builds it and runs its tests.
function(build_and_run project)
    toolchain_args(toolchain)
    set(args -S "${consumer_dir}/${project}" -B "${WORK_DIR}/build" ${toolchain})
    set(config Release)
    if(CMAKE_BUILD_TYPE)
        set(config "${CMAKE_BUILD_TYPE}")
    endif()

    run("${CMAKE_COMMAND}" ${args} ${ARGN})
    run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build" --config "${config}")
    execute_process(COMMAND "${CMAKE_CTEST_COMMAND}" -C "${config}" --output-on-failure
        WORKING_DIRECTORY "${WORK_DIR}/build" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "the ${project} consumer failed")
    endif()
endfunction()

if(MODE STREQUAL "find_package")
    set(prefix "${WORK_DIR}/prefix")
    install_gradclip("${prefix}")
    build_and_run(find_package "-DCMAKE_PREFIX_PATH=${prefix}")
    # Make sure the package came from the fresh install, not from some gradclip already on the system.
    file(STRINGS "${WORK_DIR}/build/CMakeCache.txt" found_dir REGEX "^gradclip_DIR:")
    string(REGEX REPLACE "^[^=]*=" "" found_dir "${found_dir}")
    get_filename_component(found_dir "${found_dir}" REALPATH)
    get_filename_component(prefix_real "${prefix}" REALPATH)
    string(FIND "${found_dir}" "${prefix_real}/" at)
    if(NOT at EQUAL 0)
        message(FATAL_ERROR "find_package(gradclip) found ${found_dir}, not the install in ${prefix}")
    endif()

elseif(MODE STREQUAL "pkgconfig")
    if(NOT PKG_CONFIG_EXECUTABLE OR NOT CMAKE_CXX_COMPILER)
        message(FATAL_ERROR "MODE pkgconfig needs -DPKG_CONFIG_EXECUTABLE=... and -DCMAKE_CXX_COMPILER=...")
    endif()
    set(prefix "${WORK_DIR}/prefix")
    install_gradclip("${prefix}")
    file(GLOB_RECURSE pc_file "${prefix}/gradclip.pc")
    if(NOT pc_file)
        message(FATAL_ERROR "no gradclip.pc installed under ${prefix}")
    endif()
    get_filename_component(pc_dir "${pc_file}" DIRECTORY)
    if(DEFINED ENV{PKG_CONFIG_PATH} AND NOT "$ENV{PKG_CONFIG_PATH}" STREQUAL "")
        set(ENV{PKG_CONFIG_PATH} "${pc_dir}:$ENV{PKG_CONFIG_PATH}")
    else()
        set(ENV{PKG_CONFIG_PATH} "${pc_dir}")
    endif()

    foreach(query modversion cflags libs)
        execute_process(COMMAND "${PKG_CONFIG_EXECUTABLE}" --${query} gradclip
            OUTPUT_VARIABLE ${query} OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
        if(NOT rc EQUAL 0)
            message(FATAL_ERROR "pkg-config --${query} gradclip failed (PKG_CONFIG_PATH=$ENV{PKG_CONFIG_PATH})")
        endif()
        message(STATUS "pkg-config --${query} gradclip: ${${query}}")
    endforeach()
    if(NOT modversion MATCHES "^([0-9]+)\\.([0-9]+)\\.([0-9]+)$")
        message(FATAL_ERROR "unexpected gradclip.pc version '${modversion}'")
    endif()
    math(EXPR expected_version "${CMAKE_MATCH_1} * 10000 + ${CMAKE_MATCH_2} * 100 + ${CMAKE_MATCH_3}")
    separate_arguments(cflags UNIX_COMMAND "${cflags}")
    separate_arguments(libs UNIX_COMMAND "${libs}")
    set(exe "${WORK_DIR}/consumer${CMAKE_EXECUTABLE_SUFFIX}")
    run("${CMAKE_CXX_COMPILER}" -std=c++17 ${cflags} -DGRADCLIP_EXPECTED_VERSION=${expected_version}
        "${consumer_dir}/main.cpp" -o "${exe}" ${libs})
    run("${exe}")

elseif(MODE STREQUAL "add_subdirectory")
    build_and_run(add_subdirectory "-DGRADCLIP_SOURCE_DIR=${GRADCLIP_SOURCE_DIR}")

elseif(MODE STREQUAL "fetchcontent")
    # The archive holds what a release (and the conan recipe) ships: no tests, examples or benchmarks,
    # which also proves the top-level CMakeLists.txt does not need them in a subproject.
    set(archive "${WORK_DIR}/gradclip-src.tar.gz")
    execute_process(COMMAND "${CMAKE_COMMAND}" -E tar czf "${archive}" --
            CMakeLists.txt LICENSE cmake include
        WORKING_DIRECTORY "${GRADCLIP_SOURCE_DIR}" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "could not pack ${GRADCLIP_SOURCE_DIR} into ${archive}")
    endif()
    file(SHA256 "${archive}" hash)
    if(archive MATCHES "^/")
        set(url "file://${archive}")
    else()
        set(url "file:///${archive}")
    endif()
    build_and_run(fetchcontent "-DGRADCLIP_URL=${url}" "-DGRADCLIP_URL_HASH=${hash}")

elseif(MODE STREQUAL "plain_install")
    set(hidden "")
    foreach(package Catch2 benchmark MPI Torch)
        list(APPEND hidden "-DCMAKE_DISABLE_FIND_PACKAGE_${package}=ON")
    endforeach()
    toolchain_args(args)
    set(build "${WORK_DIR}/gradclip")
    string(REPLACE ";" " " shown "${hidden}")
    message(STATUS "> cmake -S ${GRADCLIP_SOURCE_DIR} -B ${build} ${shown}")
    execute_process(COMMAND "${CMAKE_COMMAND}" -S "${GRADCLIP_SOURCE_DIR}" -B "${build}" ${args} ${hidden}
        RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
    message("${out}")
    if(NOT rc EQUAL 0)
        message(FATAL_ERROR "configuring gradclip without its test dependencies failed (${rc})")
    endif()
    # One message for each dependency left out, exactly once (the patterns stop before the messages'
    # semicolons, which would split the list of matches).
    foreach(skip
            "gradclip: Catch2 not found"
            "gradclip: Google Benchmark not found"
            "gradclip: MPI not found"
            "gradclip: libtorch not found")
        string(REGEX MATCHALL "${skip}" hits "${out}")
        list(LENGTH hits n)
        if(NOT n EQUAL 1)
            message(FATAL_ERROR "expected the message '${skip}' once in the configure output, got it ${n} times")
        endif()
    endforeach()
    # The tests stayed on by default (nothing asked for them), which is the case that must not fail.
    file(STRINGS "${build}/CMakeCache.txt" tests_option REGEX "^GRADCLIP_BUILD_TESTS:BOOL=")
    if(NOT tests_option STREQUAL "GRADCLIP_BUILD_TESTS:BOOL=ON")
        message(FATAL_ERROR "expected GRADCLIP_BUILD_TESTS to default to ON, got '${tests_option}'")
    endif()

    set(prefix "${WORK_DIR}/prefix")
    set(GRADCLIP_BINARY_DIR "${build}")
    install_gradclip("${prefix}")
    foreach(file include/gradclip/gradclip.hpp share/cmake/gradclip/gradclipConfig.cmake)
        if(NOT EXISTS "${prefix}/${file}")
            message(FATAL_ERROR "the install has no ${file}")
        endif()
    endforeach()
    build_and_run(find_package "-DCMAKE_PREFIX_PATH=${prefix}")

    # Tests asked for explicitly (as the CI presets do) need Catch2: that configure must fail.
    execute_process(COMMAND "${CMAKE_COMMAND}" -S "${GRADCLIP_SOURCE_DIR}" -B "${WORK_DIR}/asked"
            ${args} ${hidden} -DGRADCLIP_BUILD_TESTS=ON
        RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
    if(rc EQUAL 0 OR NOT out MATCHES "Catch2")
        message("${out}")
        message(FATAL_ERROR "-DGRADCLIP_BUILD_TESTS=ON without Catch2 must fail the configure, naming Catch2")
    endif()
    message(STATUS "-DGRADCLIP_BUILD_TESTS=ON without Catch2 fails, as it must")

else()
    message(FATAL_ERROR "run_consumer.cmake: unknown MODE '${MODE}'")
endif()
