// gradclip: version and build configuration.
#ifndef GRADCLIP_CONFIG_HPP
#define GRADCLIP_CONFIG_HPP

#define GRADCLIP_VERSION_MAJOR 0
#define GRADCLIP_VERSION_MINOR 1
#define GRADCLIP_VERSION_PATCH 0
#define GRADCLIP_VERSION (GRADCLIP_VERSION_MAJOR * 10000 + GRADCLIP_VERSION_MINOR * 100 + GRADCLIP_VERSION_PATCH)

#if __cplusplus < 201703L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 201703L)
#error "gradclip requires C++17 or later"
#endif

// std::span support (C++20 library), used when available and never required.
#if defined(__has_include)
#if __has_include(<version>)
#include <version>
#endif
#endif
#if defined(__cpp_lib_span) && __cpp_lib_span >= 202002L
#define GRADCLIP_HAS_SPAN 1
#else
#define GRADCLIP_HAS_SPAN 0
#endif

// The kernels use the GNU vector extension (GCC and Clang) for explicit SIMD that
// maps onto whatever the target offers (SSE2, AVX2, AVX-512, NEON, ...). Defining
// GRADCLIP_NO_SIMD selects the portable scalar path, which computes the same
// lane-by-lane arithmetic and therefore the same results.
#if !defined(GRADCLIP_NO_SIMD) && (defined(__GNUC__) || defined(__clang__))
#define GRADCLIP_SIMD 1
#else
#define GRADCLIP_SIMD 0
#endif

// Forces inlining where the compiler's size limits would otherwise stop it: in a
// large translation unit GCC stops inlining the per-buffer steps of a group's
// pass, and their calls cost more than the work of a small buffer.
// GRADCLIP_INLINE_LAMBDA: the same for a lambda, after its parameter list.
// GRADCLIP_NOINLINE keeps a rare path (a range rescue) out of such a loop, where
// its code would take registers from the common one. Unoptimized and sanitized
// builds only get `inline`: forcing it there buys no speed and costs compile time
// (results are the same bits either way).
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define GRADCLIP_DETAIL_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define GRADCLIP_DETAIL_SANITIZED 1
#endif
#if (defined(__GNUC__) || defined(__clang__)) && defined(__OPTIMIZE__) && !defined(GRADCLIP_DETAIL_SANITIZED)
#define GRADCLIP_ALWAYS_INLINE __attribute__((always_inline)) inline
#define GRADCLIP_INLINE_LAMBDA __attribute__((always_inline))
#define GRADCLIP_NOINLINE __attribute__((noinline))
#elif defined(__GNUC__) || defined(__clang__)
#define GRADCLIP_ALWAYS_INLINE inline
#define GRADCLIP_INLINE_LAMBDA
#define GRADCLIP_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER) && !defined(_DEBUG)
#define GRADCLIP_ALWAYS_INLINE __forceinline
#define GRADCLIP_INLINE_LAMBDA
#define GRADCLIP_NOINLINE __declspec(noinline)
#else
#define GRADCLIP_ALWAYS_INLINE inline
#define GRADCLIP_INLINE_LAMBDA
#define GRADCLIP_NOINLINE
#endif

namespace gradclip {

struct version_info {
  int major, minor, patch;
};

inline constexpr version_info version{GRADCLIP_VERSION_MAJOR, GRADCLIP_VERSION_MINOR, GRADCLIP_VERSION_PATCH};

}  // namespace gradclip

#endif  // GRADCLIP_CONFIG_HPP
