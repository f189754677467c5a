// gradclip kernels: AArch64 NEON (16-byte vectors, FMA).
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_NEON_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_NEON_HPP

#include "../../../config.hpp"

#if GRADCLIP_SIMD && defined(__ARM_NEON) && defined(__aarch64__)

#include <arm_neon.h>

#include "generic.hpp"

namespace gradclip::detail::kernels {

struct neon_isa : generic_isa {
  static constexpr const char* name() noexcept { return "neon"; }

  using generic_isa::load_widened;
  GRADCLIP_ALWAYS_INLINE static vd load_widened(const float* p) noexcept { return (vd)vcvt_f64_f32(vld1_f32(p)); }

  GRADCLIP_ALWAYS_INLINE static vd add_square(vd acc, vd v) noexcept {
    return (vd)vfmaq_f64((float64x2_t)acc, (float64x2_t)v, (float64x2_t)v);
  }

  GRADCLIP_ALWAYS_INLINE static vd sqrt(vd v) noexcept { return (vd)vsqrtq_f64((float64x2_t)v); }
};

}  // namespace gradclip::detail::kernels

#endif

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_NEON_HPP
