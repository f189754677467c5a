// gradclip kernels: the portable vector primitives (GNU vector extension at the
// target's width), the fallback every vector ISA file starts from.
//
// An ISA file derives from generic_isa and replaces the primitives it has a better
// instruction for; vector.hpp builds the element operations (scalar.hpp's list)
// from these primitives:
//
//   load_widened(p)            dwidth floats or doubles at p, as doubles
//   load_widened_partial(p, m) the first m < dwidth of them, the other lanes +0,
//                              reading nothing past p + m (used when partial_loads)
//   add_square(acc, v)         acc + v * v, fused where fused_squares says so
//                              (for vectors of doubles and of floats)
//   load_float(p)              fwidth floats, halves or bfloat16s at p, as floats
//                              (exact: every 16-bit value is a float)
//   load_float_partial(p, m)   the first m < fwidth of them, the other lanes +0
//   widen_halves(v, lo, hi)    a float vector's two halves as vectors of doubles
//   clamp_lanes(v, lo, hi)     v clamped into [lo, hi] lane by lane, NaN and -0 kept
//   product_error(a, b, p)     a * b - p, fused (the exact error of p = a * b)
//   sqrt(v)                    the correctly rounded square roots of v's lanes
//   store_narrowed(p, v)       fwidth floats stored as halves or bfloat16s at p,
//                              rounded to nearest even (no NaN among them)
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_GENERIC_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_GENERIC_HPP

#include "../../../config.hpp"

#if GRADCLIP_SIMD

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../../element.hpp"
#include "target.hpp"

namespace gradclip::detail::kernels {

struct generic_isa {
  static constexpr const char* name() noexcept { return "generic vector"; }

  // Tails are left to the scalar loop: no masked loads here.
  static constexpr bool partial_loads = false;

  GRADCLIP_ALWAYS_INLINE static vd load_widened(const float* p) noexcept {
    typedef float half_vf __attribute__((vector_size(vector_bytes / 2)));
    half_vf f;
    std::memcpy(&f, p, sizeof f);
    return __builtin_convertvector(f, vd);
  }

  GRADCLIP_ALWAYS_INLINE static vd load_widened(const double* p) noexcept {
    vd v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }

  template <class T>
  GRADCLIP_ALWAYS_INLINE static vd load_widened_partial(const T* p, std::size_t m) noexcept {
    vd v = {};
    for (std::size_t k = 0; k < m; ++k) v[k] = static_cast<double>(p[k]);
    return v;
  }

  GRADCLIP_ALWAYS_INLINE static vd add_square(vd acc, vd v) noexcept {
    if constexpr (fused_squares) {  // lane by lane, the same rounding as one vector FMA
      for (std::size_t k = 0; k < dwidth; ++k) acc[k] = std::fma(v[k], v[k], acc[k]);
      return acc;
    } else {
      return acc + v * v;
    }
  }

  GRADCLIP_ALWAYS_INLINE static vf add_square(vf acc, vf v) noexcept {
    if constexpr (fused_squares) {
      for (std::size_t k = 0; k < fwidth; ++k) acc[k] = std::fma(v[k], v[k], acc[k]);
      return acc;
    } else {
      return acc + v * v;
    }
  }

  GRADCLIP_ALWAYS_INLINE static vf load_float(const float* p) noexcept {
    vf v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }

  // bfloat16 is the upper half of a float.
  GRADCLIP_ALWAYS_INLINE static vf load_float(const Eigen::bfloat16* p) noexcept { return (vf)(widen_bits(p) << 16); }

  // element_traits<Eigen::half>::to_compute, lane by lane: subnormals through an
  // exact integer conversion (no subnormal float arithmetic, so flush-to-zero
  // modes cannot change it), the others by rebiasing the exponent.
  GRADCLIP_ALWAYS_INLINE static vf load_float(const Eigen::half* p) noexcept {
    typedef std::int32_t vi32 __attribute__((vector_size(vector_bytes)));
    const vu32 u = widen_bits(p);
    const vu32 sign = (u & 0x8000u) << 16;
    const vu32 magnitude = u & 0x7fffu;
    const vu32 subnormal = (vu32)(__builtin_convertvector((vi32)magnitude, vf) * 0x1p-24f);
    const vu32 normal = (magnitude << 13) + 0x38000000u;
    const vu32 special = (magnitude << 13) | 0x7f800000u;
    const vu32 is_special = (vu32)(magnitude >= 0x7c00u);
    const vu32 is_subnormal = (vu32)(magnitude < 0x0400u);
    const vu32 body = (special & is_special) | (normal & ~is_special);
    return (vf)(((subnormal & is_subnormal) | (body & ~is_subnormal)) | sign);
  }

  // The lower and upper halves of a float vector, each as doubles.
  GRADCLIP_ALWAYS_INLINE static void widen_halves(vf v, vd& lo, vd& hi) noexcept {
    typedef float half_vf __attribute__((vector_size(vector_bytes / 2)));
    half_vf l, h;
    std::memcpy(&l, &v, sizeof l);
    std::memcpy(&h, reinterpret_cast<const char*>(&v) + sizeof l, sizeof h);
    lo = __builtin_convertvector(l, vd);
    hi = __builtin_convertvector(h, vd);
  }

  // min(max(v, lo), hi) lane by lane, NaN lanes kept and -0 kept beside a +0 bound
  // (the scalar clamp's rule). NaN by its bits: under -ffinite-math-only the
  // compiler may turn the comparisons into min/max, which drop NaN.
  template <class V>
  GRADCLIP_ALWAYS_INLINE static V clamp_lanes(V v, V lo, V hi) noexcept {
    using E = std::remove_reference_t<decltype(v[0])>;
    using bits = std::conditional_t<sizeof(E) == 8, std::uint64_t, std::uint32_t>;
    typedef bits vbits __attribute__((vector_size(vector_bytes)));
    constexpr bits mask = static_cast<bits>(~bits{0} >> 1);
    constexpr bits inf = sizeof(E) == 8 ? static_cast<bits>(0x7ff0000000000000ull) : static_cast<bits>(0x7f800000u);
    const vbits nan = (vbits)(((vbits)v & mask) > inf);
    const vbits below = (vbits)(v < lo) & ~nan;
    const vbits above = (vbits)(v > hi) & ~nan;
    return (V)(((vbits)v & ~(below | above)) | ((vbits)lo & below) | ((vbits)hi & above));
  }

  GRADCLIP_ALWAYS_INLINE static vd product_error(vd a, vd b, vd p) noexcept {
    for (std::size_t k = 0; k < dwidth; ++k) a[k] = std::fma(a[k], b[k], -p[k]);
    return a;
  }

  GRADCLIP_ALWAYS_INLINE static vd sqrt(vd v) noexcept {
    for (std::size_t k = 0; k < dwidth; ++k) v[k] = std::sqrt(v[k]);
    return v;
  }

  // Eigen's rounding, as a vector: bias by 0x7fff plus the kept part's last bit.
  GRADCLIP_ALWAYS_INLINE static void store_narrowed(Eigen::bfloat16* p, vf v) noexcept {
    typedef std::uint16_t vu16 __attribute__((vector_size(vector_bytes / 2)));
    const vu32 b = (vu32)v;
    const vu16 r = __builtin_convertvector((b + 0x7fffu + ((b >> 16) & 1u)) >> 16, vu16);
    std::memcpy(static_cast<void*>(p), &r, sizeof r);
  }
  GRADCLIP_ALWAYS_INLINE static void store_narrowed(Eigen::half* p, vf v) noexcept {
    for (std::size_t k = 0; k < fwidth; ++k) p[k] = Eigen::half(v[k]);
  }

  template <class T>
  GRADCLIP_ALWAYS_INLINE static vf load_float_partial(const T* p, std::size_t m) noexcept {
    vf v = {};
    for (std::size_t k = 0; k < m; ++k) v[k] = element_traits<T>::to_compute(p[k]);
    return v;
  }

 protected:
  // fwidth 16-bit patterns at p, zero-extended to 32 bits.
  template <class T>
  GRADCLIP_ALWAYS_INLINE static vu32 widen_bits(const T* p) noexcept {
    typedef std::uint16_t vu16 __attribute__((vector_size(vector_bytes / 2)));
    vu16 h;
    std::memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, vu32);
  }
};

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_SIMD

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_GENERIC_HPP
