// Catch2 v2 (single header, Debian's catch2 2.13) or v3, whichever the build found.
#ifndef GRADCLIP_TESTS_CATCH_HPP
#define GRADCLIP_TESTS_CATCH_HPP

#if defined(GRADCLIP_CATCH2_V3)
#include <catch2/catch_all.hpp>
using Catch::Approx;
#else
#include <catch2/catch.hpp>
#endif

#endif
