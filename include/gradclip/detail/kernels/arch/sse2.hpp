// gradclip kernels: SSE2 (every x86-64). Two floats widened by one cvtps2pd; the
// rest is the generic vector code at 16 bytes.
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_SSE2_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_SSE2_HPP

#include "../../../config.hpp"

#if GRADCLIP_SIMD && defined(__SSE2__) && !defined(__AVX__)  // 16-byte vectors

#include <immintrin.h>

#include <cstring>

#include "generic.hpp"

namespace gradclip::detail::kernels {

struct sse2_isa : generic_isa {
  static constexpr const char* name() noexcept { return "sse2"; }

  using generic_isa::load_widened;
  GRADCLIP_ALWAYS_INLINE static vd load_widened(const float* p) noexcept {
    double two;  // 8 bytes = 2 floats, loaded without reading past them
    std::memcpy(&two, p, sizeof two);
    return (vd)_mm_cvtps_pd(_mm_castpd_ps(_mm_load_sd(&two)));
  }

  GRADCLIP_ALWAYS_INLINE static vd sqrt(vd v) noexcept { return (vd)_mm_sqrt_pd((__m128d)v); }
};

}  // namespace gradclip::detail::kernels

#endif

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_SSE2_HPP
