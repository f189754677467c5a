// gradclip kernels: AVX and AVX2 (32-byte vectors), with FMA where the target has
// it. Tails by masked loads, so the lane accumulators stay whole vectors.
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_AVX2_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_AVX2_HPP

#include "../../../config.hpp"

#if GRADCLIP_SIMD && defined(__AVX__) && !defined(__AVX512F__)  // 32-byte vectors

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "generic.hpp"

namespace gradclip::detail::kernels {

struct avx2_isa : generic_isa {
  static constexpr const char* name() noexcept { return fused_squares ? "avx2" : "avx"; }

  static constexpr bool partial_loads = true;

  GRADCLIP_ALWAYS_INLINE static vd load_widened(const float* p) noexcept { return (vd)_mm256_cvtps_pd(_mm_loadu_ps(p)); }
  GRADCLIP_ALWAYS_INLINE static vd load_widened(const double* p) noexcept { return (vd)_mm256_loadu_pd(p); }

  GRADCLIP_ALWAYS_INLINE static vd load_widened_partial(const float* p, std::size_t m) noexcept {
    alignas(16) static constexpr std::int32_t ones[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
    const __m128i mask = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ones + 4 - m));
    return (vd)_mm256_cvtps_pd(_mm_maskload_ps(p, mask));
  }
  GRADCLIP_ALWAYS_INLINE static vd load_widened_partial(const double* p, std::size_t m) noexcept {
    alignas(32) static constexpr std::int64_t ones[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
    const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ones + 4 - m));
    return (vd)_mm256_maskload_pd(p, mask);
  }

#if defined(__FMA__)
  GRADCLIP_ALWAYS_INLINE static vd add_square(vd acc, vd v) noexcept {
    return (vd)_mm256_fmadd_pd((__m256d)v, (__m256d)v, (__m256d)acc);
  }
  GRADCLIP_ALWAYS_INLINE static vf add_square(vf acc, vf v) noexcept {
    return (vf)_mm256_fmadd_ps((__m256)v, (__m256)v, (__m256)acc);
  }
#else
  using generic_isa::add_square;
#endif

  using generic_isa::load_float;
  GRADCLIP_ALWAYS_INLINE static vf load_float(const float* p) noexcept { return (vf)_mm256_loadu_ps(p); }
#if defined(__F16C__)
  GRADCLIP_ALWAYS_INLINE static vf load_float(const Eigen::half* p) noexcept {
    return (vf)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
#endif
#if defined(__AVX2__)
  GRADCLIP_ALWAYS_INLINE static vf load_float(const Eigen::bfloat16* p) noexcept {
    return (vf)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16);
  }
#endif

  GRADCLIP_ALWAYS_INLINE static void widen_halves(vf v, vd& lo, vd& hi) noexcept {
    const __m256 f = (__m256)v;
    lo = (vd)_mm256_cvtps_pd(_mm256_castps256_ps128(f));
    hi = (vd)_mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
  }

#if defined(__FMA__)
  GRADCLIP_ALWAYS_INLINE static vd product_error(vd a, vd b, vd p) noexcept {
    return (vd)_mm256_fmsub_pd((__m256d)a, (__m256d)b, (__m256d)p);
  }  static vd sqrt(vd v) noexcept { return (vd)_mm256_sqrt_pd((__m256d)v); }

#endif
  // As avx512.hpp: the bound first, so NaN lanes and -0 beside +0 are kept.
#if !defined(__FAST_MATH__) && !(defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__)
  GRADCLIP_ALWAYS_INLINE static vf clamp_lanes(vf v, vf lo, vf hi) noexcept {
    return (vf)_mm256_max_ps((__m256)lo, _mm256_min_ps((__m256)hi, (__m256)v));
  }
  GRADCLIP_ALWAYS_INLINE static vd clamp_lanes(vd v, vd lo, vd hi) noexcept {
    return (vd)_mm256_max_pd((__m256d)lo, _mm256_min_pd((__m256d)hi, (__m256d)v));
  }
#endif

  using generic_isa::store_narrowed;
#if defined(__F16C__)
  GRADCLIP_ALWAYS_INLINE static void store_narrowed(Eigen::half* p, vf v) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));
  }
#endif

  using generic_isa::load_float_partial;
  GRADCLIP_ALWAYS_INLINE static vf load_float_partial(const float* p, std::size_t m) noexcept {
    alignas(32) static constexpr std::int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ones + 8 - m));
    return (vf)_mm256_maskload_ps(p, mask);
  }
};

}  // namespace gradclip::detail::kernels

#endif

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_AVX2_HPP
