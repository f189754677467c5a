// gradclip kernels: the element loops over contiguous float and double data.
//
// This is the only file with explicit SIMD. Reductions accumulate into
// `lane_count` double lanes, element i of a run going to lane i % lane_count, so
// the order of every floating-point operation is fixed by the data layout alone.
// The vector path (GNU vector extension, mapped by the compiler onto SSE2, AVX2,
// AVX-512, NEON, ...) and the portable scalar path perform the same operations
// lane by lane, so both compute the same sums.
#ifndef GRADCLIP_DETAIL_KERNELS_LANES_HPP
#define GRADCLIP_DETAIL_KERNELS_LANES_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../../config.hpp"
#include "../float_bits.hpp"

#if GRADCLIP_SIMD && defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace gradclip::detail::kernels {

inline constexpr std::size_t lane_count = 32;

enum class term { abs, square };

#if GRADCLIP_SIMD
// Vector types are used only inside function bodies: passing them by value would
// make the calling convention depend on the target flags (-Wpsabi).
typedef double vd8 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf16 __attribute__((vector_size(64)));
typedef std::uint64_t vu64x8 __attribute__((vector_size(64)));
typedef std::int64_t vi64x8 __attribute__((vector_size(64)));
typedef std::uint32_t vu32x16 __attribute__((vector_size(64)));
typedef std::int32_t vi32x16 __attribute__((vector_size(64)));
#endif

#if GRADCLIP_SIMD
// float -> double for 8 lanes. The one hand-written intrinsic, behind the target's
// own macro: GCC splits the generic conversion into 128-bit pieces even where
// AVX-512 converts 8 lanes in one instruction. Every other target uses the
// generic form. (The zero-masking form: GCC 12 reports the plain intrinsic's
// undefined pass-through operand as maybe-uninitialized.)
#if defined(__AVX512F__)
#define GRADCLIP_WIDEN(f) ((vd8)_mm512_maskz_cvtps_pd(static_cast<__mmask8>(0xff), (__m256)(f)))
#else
#define GRADCLIP_WIDEN(f) __builtin_convertvector((f), vd8)
#endif
#endif

// acc[i % lane_count] += term(x[i] * scale) for i in [0, n). With Scaled == false
// the multiplication is skipped (scale must then be 1).
template <term K, bool Scaled, class T>
void accumulate(double* acc, const T* x, std::size_t n, double scale) noexcept {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  std::size_t i = 0;
#if GRADCLIP_SIMD
  // Four named accumulators (not an array): compilers keep them in registers.
  vd8 a0, a1, a2, a3;
  std::memcpy(&a0, acc, sizeof a0);
  std::memcpy(&a1, acc + 8, sizeof a1);
  std::memcpy(&a2, acc + 16, sizeof a2);
  std::memcpy(&a3, acc + 24, sizeof a3);
  for (; i + lane_count <= n; i += lane_count) {
    vd8 v0, v1, v2, v3;
    if constexpr (std::is_same_v<T, float>) {
      vf8 f0, f1, f2, f3;
      std::memcpy(&f0, x + i, sizeof f0);
      std::memcpy(&f1, x + i + 8, sizeof f1);
      std::memcpy(&f2, x + i + 16, sizeof f2);
      std::memcpy(&f3, x + i + 24, sizeof f3);
      v0 = GRADCLIP_WIDEN(f0);
      v1 = GRADCLIP_WIDEN(f1);
      v2 = GRADCLIP_WIDEN(f2);
      v3 = GRADCLIP_WIDEN(f3);
    } else {
      std::memcpy(&v0, x + i, sizeof v0);
      std::memcpy(&v1, x + i + 8, sizeof v1);
      std::memcpy(&v2, x + i + 16, sizeof v2);
      std::memcpy(&v3, x + i + 24, sizeof v3);
    }
    if constexpr (Scaled) {
      v0 *= scale;
      v1 *= scale;
      v2 *= scale;
      v3 *= scale;
    }
    if constexpr (K == term::square) {
      a0 += v0 * v0;
      a1 += v1 * v1;
      a2 += v2 * v2;
      a3 += v3 * v3;
    } else {
      constexpr std::uint64_t magnitude = 0x7fffffffffffffffULL;
      a0 += (vd8)((vu64x8)v0 & magnitude);
      a1 += (vd8)((vu64x8)v1 & magnitude);
      a2 += (vd8)((vu64x8)v2 & magnitude);
      a3 += (vd8)((vu64x8)v3 & magnitude);
    }
  }
  std::memcpy(acc, &a0, sizeof a0);
  std::memcpy(acc + 8, &a1, sizeof a1);
  std::memcpy(acc + 16, &a2, sizeof a2);
  std::memcpy(acc + 24, &a3, sizeof a3);
#else
  for (; i + lane_count <= n; i += lane_count) {
    for (std::size_t j = 0; j < lane_count; ++j) {
      double v = static_cast<double>(x[i + j]);
      if constexpr (Scaled) v *= scale;
      acc[j] += K == term::square ? v * v : std::fabs(v);
    }
  }
#endif
  for (std::size_t j = 0; i < n; ++i, ++j) {
    double v = static_cast<double>(x[i]);
    if constexpr (Scaled) v *= scale;
    acc[j] += K == term::square ? v * v : std::fabs(v);
  }
}

// acc[i % lane_count] += |x[i] * scale|^p: general p has no vector pow, but keeps
// the lane layout so the blocking above it is shared.
template <class T>
void accumulate_pow(double* acc, const T* x, std::size_t n, double scale, double p) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    acc[i % lane_count] += std::pow(std::fabs(static_cast<double>(x[i]) * scale), p);
  }
}

// Sums the lanes in a fixed pairwise order.
inline double reduce_lanes(double* acc) noexcept {
  for (std::size_t width = lane_count / 2; width > 0; width /= 2) {
    for (std::size_t j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

// max |x[i]| over the bit patterns: for non-negative IEEE values the integer order
// is the numeric order, and every NaN sorts above infinity, so a NaN anywhere
// yields a NaN. Exact, and independent of the floating-point flags.
inline std::uint32_t max_abs_bits(const float* x, std::size_t n) noexcept {
  std::uint32_t m = 0;
  std::size_t i = 0;
#if GRADCLIP_SIMD
  vu32x16 m0 = {}, m1 = {};
  for (; i + 32 <= n; i += 32) {
    vu32x16 b0, b1;
    std::memcpy(&b0, x + i, sizeof b0);
    std::memcpy(&b1, x + i + 16, sizeof b1);
    b0 &= 0x7fffffffu;
    b1 &= 0x7fffffffu;
    const vu32x16 g0 = (vu32x16)(b0 > m0);
    const vu32x16 g1 = (vu32x16)(b1 > m1);
    m0 = (m0 & ~g0) | (b0 & g0);
    m1 = (m1 & ~g1) | (b1 & g1);
  }
  for (int j = 0; j < 16; ++j) {
    m = m0[j] > m ? m0[j] : m;
    m = m1[j] > m ? m1[j] : m;
  }
#endif
  for (; i < n; ++i) {
    const std::uint32_t b = bits_of(x[i]) & 0x7fffffffu;
    m = b > m ? b : m;
  }
  return m;
}

inline std::uint64_t max_abs_bits(const double* x, std::size_t n) noexcept {
  std::uint64_t m = 0;
  std::size_t i = 0;
#if GRADCLIP_SIMD
  vu64x8 m0 = {}, m1 = {};
  for (; i + 16 <= n; i += 16) {
    vu64x8 b0, b1;
    std::memcpy(&b0, x + i, sizeof b0);
    std::memcpy(&b1, x + i + 8, sizeof b1);
    b0 &= 0x7fffffffffffffffULL;
    b1 &= 0x7fffffffffffffffULL;
    const vu64x8 g0 = (vu64x8)(b0 > m0);
    const vu64x8 g1 = (vu64x8)(b1 > m1);
    m0 = (m0 & ~g0) | (b0 & g0);
    m1 = (m1 & ~g1) | (b1 & g1);
  }
  for (int j = 0; j < 8; ++j) {
    m = m0[j] > m ? m0[j] : m;
    m = m1[j] > m ? m1[j] : m;
  }
#endif
  for (; i < n; ++i) {
    const std::uint64_t b = bits_of(x[i]) & 0x7fffffffffffffffULL;
    m = b > m ? b : m;
  }
  return m;
}

// x[i] *= c, in the element's own precision.
template <class T>
void scale(T* x, std::size_t n, T c) noexcept {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  std::size_t i = 0;
#if GRADCLIP_SIMD
  typedef T vt __attribute__((vector_size(64)));
  constexpr std::size_t w = 64 / sizeof(T);
  for (; i + 2 * w <= n; i += 2 * w) {
    vt v0, v1;
    std::memcpy(&v0, x + i, sizeof v0);
    std::memcpy(&v1, x + i + w, sizeof v1);
    v0 *= c;
    v1 *= c;
    std::memcpy(x + i, &v0, sizeof v0);
    std::memcpy(x + i + w, &v1, sizeof v1);
  }
#endif
  for (; i < n; ++i) x[i] *= c;
}

// x[i] = float(double(x[i]) * c): for coefficients too small for a float to hold
// with full precision, where a float multiply would lose the norm bound.
inline void scale_widened(float* x, std::size_t n, double c) noexcept {
  std::size_t i = 0;
#if GRADCLIP_SIMD
  for (; i + 8 <= n; i += 8) {
    vf8 f;
    std::memcpy(&f, x + i, sizeof f);
    vd8 d = GRADCLIP_WIDEN(f);
    d *= c;
    f = __builtin_convertvector(d, vf8);
    std::memcpy(x + i, &f, sizeof f);
  }
#endif
  for (; i < n; ++i) x[i] = static_cast<float>(static_cast<double>(x[i]) * c);
}

// x[i] = min(max(x[i], lo), hi), leaving NaN as it is (both comparisons are false).
template <class T>
void clamp(T* x, std::size_t n, T lo, T hi) noexcept {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  std::size_t i = 0;
#if GRADCLIP_SIMD
  typedef T vt __attribute__((vector_size(64)));
  typedef std::conditional_t<std::is_same_v<T, float>, vu32x16, vu64x8> vbits;
  vt vlo, vhi;  // broadcast by element: vt{} + lo would turn a -0 bound into +0
  for (std::size_t k = 0; k < 64 / sizeof(T); ++k) {
    vlo[k] = lo;
    vhi[k] = hi;
  }
  for (; i + 64 / sizeof(T) <= n; i += 64 / sizeof(T)) {
    vt v;
    std::memcpy(&v, x + i, sizeof v);
    const vbits below = (vbits)(v < vlo);
    const vbits above = (vbits)(v > vhi);
    const vbits r = ((vbits)v & ~(below | above)) | ((vbits)vlo & below) | ((vbits)vhi & above);
    std::memcpy(x + i, &r, sizeof r);
  }
#endif
  for (; i < n; ++i) {
    const T v = x[i];
    x[i] = v < lo ? lo : (v > hi ? hi : v);
  }
}

}  // namespace gradclip::detail::kernels

#if GRADCLIP_SIMD
#undef GRADCLIP_WIDEN
#endif

#endif  // GRADCLIP_DETAIL_KERNELS_LANES_HPP
