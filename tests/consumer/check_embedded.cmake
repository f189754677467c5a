# gradclip_check_embedded(<gradclip binary dir>)
#
# Fails the configure step when gradclip, added as a subproject, defines more than its library:
# a subproject must not build gradclip's tests, examples, benchmarks or header check, must not add
# install rules to the consumer, and must not push gradclip's warning flags onto the consumer.
function(gradclip_check_embedded dir)
    if(NOT TARGET gradclip::gradclip)
        message(FATAL_ERROR "gradclip::gradclip is not defined")
    endif()
    foreach(target gradclip_header_check gradclip_dev_flags)
        if(TARGET ${target})
            message(FATAL_ERROR "gradclip as a subproject defined its own target ${target}")
        endif()
    endforeach()
    foreach(option GRADCLIP_BUILD_TESTS GRADCLIP_BUILD_EXAMPLES GRADCLIP_BUILD_BENCHMARKS
                   GRADCLIP_VERIFY_HEADERS GRADCLIP_INSTALL)
        if(${option})
            message(FATAL_ERROR "${option} defaults to ON for a subproject")
        endif()
    endforeach()

    get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
    get_property(tests DIRECTORY "${dir}" PROPERTY TESTS)
    if(subdirs OR tests)
        message(FATAL_ERROR "gradclip as a subproject added directories (${subdirs}) or tests (${tests})")
    endif()
    if(NOT CMAKE_VERSION VERSION_LESS 3.17)
        get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
        if(NOT targets STREQUAL "gradclip")
            message(FATAL_ERROR "gradclip as a subproject defined targets other than gradclip: ${targets}")
        endif()
    endif()

    get_target_property(options gradclip INTERFACE_COMPILE_OPTIONS)
    if(options)
        message(FATAL_ERROR "gradclip passes compile options to its consumers: ${options}")
    endif()
endfunction()
