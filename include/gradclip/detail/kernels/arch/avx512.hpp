// gradclip kernels: AVX-512F (64-byte vectors, FMA). Tails by masked loads.
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_AVX512_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_AVX512_HPP

#include "../../../config.hpp"

#if GRADCLIP_SIMD && defined(__AVX512F__)

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "generic.hpp"

namespace gradclip::detail::kernels {

struct avx512_isa : generic_isa {
  static constexpr const char* name() noexcept { return "avx512"; }

  static constexpr bool partial_loads = true;

  // The zero-masking form: GCC 12 warns that the plain one's pass-through operand
  // may be uninitialized.
  static vd load_widened(const float* p) noexcept {
    return (vd)_mm512_maskz_cvtps_pd(static_cast<__mmask8>(0xff), _mm256_loadu_ps(p));
  }
  static vd load_widened(const double* p) noexcept { return (vd)_mm512_loadu_pd(p); }

  static vd load_widened_partial(const float* p, std::size_t m) noexcept {
    // AVX's masked load (AVX-512F alone has no 8-float one without casts that
    // GCC 12 warns about).
    alignas(32) static constexpr std::int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ones + 8 - m));
    return (vd)_mm512_maskz_cvtps_pd(static_cast<__mmask8>(0xff), _mm256_maskload_ps(p, mask));
  }
  static vd load_widened_partial(const double* p, std::size_t m) noexcept {
    return (vd)_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << m) - 1u), p);
  }

  static vd add_square(vd acc, vd v) noexcept {
    return (vd)_mm512_fmadd_pd((__m512d)v, (__m512d)v, (__m512d)acc);
  }
};

}  // namespace gradclip::detail::kernels

#endif

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_AVX512_HPP
