# gradclip_add_header_check(<target> INCLUDE_DIR <dir> [EXCLUDE <header>...])
#
# Adds the OBJECT library <target> (built with ALL) holding one translation unit per header
# <dir>/gradclip/**/*.hpp. Each unit includes its header twice and nothing else, so the build fails
# when a header relies on an include it does not make itself or lacks an include guard.
# EXCLUDE names headers relative to <dir> (e.g. gradclip/mpi.hpp) that need optional dependencies.
#
# CMake 3.24's VERIFY_INTERFACE_HEADER_SETS covers the first half of this, but gradclip supports
# CMake 3.14.
function(gradclip_add_header_check target)
    cmake_parse_arguments(PARSE_ARGV 1 arg "" "INCLUDE_DIR" "EXCLUDE")

    file(GLOB_RECURSE headers CONFIGURE_DEPENDS RELATIVE "${arg_INCLUDE_DIR}"
        "${arg_INCLUDE_DIR}/gradclip/*.hpp")
    foreach(excluded IN LISTS arg_EXCLUDE)
        list(REMOVE_ITEM headers "${excluded}")
    endforeach()
    list(SORT headers)
    if(NOT headers)
        message(FATAL_ERROR "gradclip_add_header_check: no headers under ${arg_INCLUDE_DIR}/gradclip")
    endif()

    set(sources "")
    foreach(header IN LISTS headers)
        set(source "${CMAKE_CURRENT_BINARY_DIR}/${target}/${header}.cpp")
        set(content "#include <${header}>\n#include <${header}>\n")
        # Rewrite only on change so that reconfiguring does not rebuild every unit.
        set(old "")
        if(EXISTS "${source}")
            file(READ "${source}" old)
        endif()
        if(NOT old STREQUAL content)
            file(WRITE "${source}" "${content}")
        endif()
        list(APPEND sources "${source}")
    endforeach()

    add_library(${target} OBJECT ${sources})
    target_link_libraries(${target} PRIVATE gradclip::gradclip gradclip_dev_flags)
endfunction()
