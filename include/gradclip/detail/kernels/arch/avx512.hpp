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
  GRADCLIP_ALWAYS_INLINE static vd load_widened(const float* p) noexcept {
    return (vd)_mm512_maskz_cvtps_pd(static_cast<__mmask8>(0xff), _mm256_loadu_ps(p));
  }
  GRADCLIP_ALWAYS_INLINE static vd load_widened(const double* p) noexcept { return (vd)_mm512_loadu_pd(p); }

  GRADCLIP_ALWAYS_INLINE static vd load_widened_partial(const float* p, std::size_t m) noexcept {
    // AVX's masked load (AVX-512F alone has no 8-float one without casts that
    // GCC 12 warns about).
    alignas(32) static constexpr std::int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ones + 8 - m));
    return (vd)_mm512_maskz_cvtps_pd(static_cast<__mmask8>(0xff), _mm256_maskload_ps(p, mask));
  }
  GRADCLIP_ALWAYS_INLINE static vd load_widened_partial(const double* p, std::size_t m) noexcept {
    return (vd)_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << m) - 1u), p);
  }

  GRADCLIP_ALWAYS_INLINE static vd add_square(vd acc, vd v) noexcept {
    return (vd)_mm512_fmadd_pd((__m512d)v, (__m512d)v, (__m512d)acc);
  }
  GRADCLIP_ALWAYS_INLINE static vf add_square(vf acc, vf v) noexcept {
    return (vf)_mm512_fmadd_ps((__m512)v, (__m512)v, (__m512)acc);
  }

  // 16 halves or bfloat16s: one conversion instruction, or a widening and a shift
  // (zero-masking forms, as above).
  GRADCLIP_ALWAYS_INLINE static vf load_float(const float* p) noexcept { return (vf)_mm512_loadu_ps(p); }
  GRADCLIP_ALWAYS_INLINE static vf load_float(const Eigen::half* p) noexcept { return from_half(_mm256_loadu_si256(as_m256i(p))); }
  GRADCLIP_ALWAYS_INLINE static vf load_float(const Eigen::bfloat16* p) noexcept { return from_bfloat16(_mm256_loadu_si256(as_m256i(p))); }

  GRADCLIP_ALWAYS_INLINE static void widen_halves(vf v, vd& lo, vd& hi) noexcept {
    const __m512 f = (__m512)v;
    const __mmask8 all = static_cast<__mmask8>(0xff);
    lo = (vd)_mm512_maskz_cvtps_pd(all, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(all, _mm512_castps_pd(f), 0)));
    hi = (vd)_mm512_maskz_cvtps_pd(all, _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(all, _mm512_castps_pd(f), 1)));
  }

  // vmin/vmax return their second operand when either is NaN or the two are equal:
  // with the bound first, NaN lanes and a -0 beside a +0 bound are kept. (Not under
  // fast-math, where the compiler may swap the operands: the generic form then.)
#if !defined(__FAST_MATH__) && !(defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__)
  GRADCLIP_ALWAYS_INLINE static vf clamp_lanes(vf v, vf lo, vf hi) noexcept {
    const __mmask16 all = static_cast<__mmask16>(0xffff);
    return (vf)_mm512_maskz_max_ps(all, (__m512)lo, _mm512_maskz_min_ps(all, (__m512)hi, (__m512)v));
  }
  GRADCLIP_ALWAYS_INLINE static vd clamp_lanes(vd v, vd lo, vd hi) noexcept {
    const __mmask8 all = static_cast<__mmask8>(0xff);
    return (vd)_mm512_maskz_max_pd(all, (__m512d)lo, _mm512_maskz_min_pd(all, (__m512d)hi, (__m512d)v));
  }
#endif

  GRADCLIP_ALWAYS_INLINE static vd product_error(vd a, vd b, vd p) noexcept {
    return (vd)_mm512_fmsub_pd((__m512d)a, (__m512d)b, (__m512d)p);
  }
  GRADCLIP_ALWAYS_INLINE static vd sqrt(vd v) noexcept { return (vd)_mm512_maskz_sqrt_pd(static_cast<__mmask8>(0xff), (__m512d)v); }
  using generic_isa::store_narrowed;
  GRADCLIP_ALWAYS_INLINE static void store_narrowed(Eigen::half* p, vf v) noexcept {
    const __m256i h = _mm512_maskz_cvtps_ph(static_cast<__mmask16>(0xffff), (__m512)v, _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
  }

  GRADCLIP_ALWAYS_INLINE static vf load_float_partial(const float* p, std::size_t m) noexcept {
    return (vf)_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << m) - 1u), p);
  }
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  GRADCLIP_ALWAYS_INLINE static vf load_float_partial(const Eigen::half* p, std::size_t m) noexcept {
    return from_half(_mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << m) - 1u), p));
  }
  GRADCLIP_ALWAYS_INLINE static vf load_float_partial(const Eigen::bfloat16* p, std::size_t m) noexcept {
    return from_bfloat16(_mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << m) - 1u), p));
  }
#else
  using generic_isa::load_float_partial;
#endif

 private:
  template <class T>
  GRADCLIP_ALWAYS_INLINE static const __m256i* as_m256i(const T* p) noexcept {
    return reinterpret_cast<const __m256i*>(p);
  }
  GRADCLIP_ALWAYS_INLINE static vf from_half(__m256i h) noexcept { return (vf)_mm512_maskz_cvtph_ps(static_cast<__mmask16>(0xffff), h); }
  GRADCLIP_ALWAYS_INLINE static vf from_bfloat16(__m256i h) noexcept {
    return (vf)((vu32)_mm512_maskz_cvtepu16_epi32(static_cast<__mmask16>(0xffff), h) << 16);
  }
};

}  // namespace gradclip::detail::kernels

#endif

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_AVX512_HPP
