// gradclip kernels: the element loops over contiguous float and double data.
//
// This is the only file with explicit SIMD. Reductions accumulate into
// `lane_count` double lanes, element i of a run going to lane i % lane_count, so
// the order of every floating-point operation is fixed by the data layout alone.
// The vector path (GNU vector extension at the target's natural width: 16 bytes
// for SSE2 / NEON, 32 for AVX, 64 for AVX-512) and the portable scalar path
// (GRADCLIP_NO_SIMD) perform the same operations lane by lane, so every build
// computes the same sums (up to the compiler's choice to contract a*b+c into an
// FMA, which -ffp-contract controls).
#ifndef GRADCLIP_DETAIL_KERNELS_LANES_HPP
#define GRADCLIP_DETAIL_KERNELS_LANES_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../../config.hpp"
#include "../float_bits.hpp"

#if GRADCLIP_SIMD && (defined(__SSE2__) || defined(_M_X64))
#include <immintrin.h>
#endif
#if GRADCLIP_SIMD && defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#endif

namespace gradclip::detail::kernels {

inline constexpr std::size_t lane_count = 32;

enum class term { abs, square };

#if GRADCLIP_SIMD
// ---- the vector layer: one width per target, the only ISA dispatch point -------
#if defined(__AVX512F__)
inline constexpr std::size_t vector_bytes = 64;
#elif defined(__AVX__)
inline constexpr std::size_t vector_bytes = 32;
#else
inline constexpr std::size_t vector_bytes = 16;
#endif
inline constexpr std::size_t dwidth = vector_bytes / 8;  // doubles per vector
inline constexpr std::size_t accumulators = lane_count / dwidth;

typedef double vd __attribute__((vector_size(vector_bytes)));
typedef std::uint64_t vu64 __attribute__((vector_size(vector_bytes)));
typedef float vf __attribute__((vector_size(vector_bytes)));
typedef std::uint32_t vu32 __attribute__((vector_size(vector_bytes)));

// dwidth floats at p, widened to double. Compilers lower the generic
// __builtin_convertvector poorly from a half-width float vector, so each x86 and
// AArch64 level names its one conversion instruction; other targets use the
// generic form.
inline vd load_widened(const float* p) noexcept {
#if defined(__AVX512F__)
  // The zero-masking form: GCC 12 warns that the plain one's pass-through operand
  // may be uninitialized.
  return (vd)_mm512_maskz_cvtps_pd(static_cast<__mmask8>(0xff), _mm256_loadu_ps(p));
#elif defined(__AVX__)
  return (vd)_mm256_cvtps_pd(_mm_loadu_ps(p));
#elif defined(__SSE2__) || defined(_M_X64)
  double two;  // 8 bytes = 2 floats, loaded without reading past them
  std::memcpy(&two, p, sizeof two);
  return (vd)_mm_cvtps_pd(_mm_castpd_ps(_mm_load_sd(&two)));
#elif defined(__ARM_NEON) && defined(__aarch64__)
  return (vd)vcvt_f64_f32(vld1_f32(p));
#else
  typedef float half_vf __attribute__((vector_size(vector_bytes / 2)));
  half_vf f;
  std::memcpy(&f, p, sizeof f);
  return __builtin_convertvector(f, vd);
#endif
}

inline vd load_widened(const double* p) noexcept {
  vd v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Narrowing for the widened scale pass: dwidth doubles to floats at p.
inline void store_narrowed(float* p, vd v) noexcept {
  for (std::size_t k = 0; k < dwidth; ++k) p[k] = static_cast<float>(v[k]);
}
#endif  // GRADCLIP_SIMD

// acc[i % lane_count] += term(x[i] * scale) for i in [0, n). With Scaled == false
// the multiplication is skipped (scale must then be 1).
template <term K, bool Scaled, class T>
void accumulate(double* acc, const T* x, std::size_t n, double scale) noexcept {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  std::size_t i = 0;
#if GRADCLIP_SIMD
  vd a[accumulators];
  std::memcpy(a, acc, sizeof a);
  for (; i + lane_count <= n; i += lane_count) {
    // Fully unrolled, so the accumulators live in registers.
#pragma GCC unroll 16
    for (std::size_t k = 0; k < accumulators; ++k) {
      vd v = load_widened(x + i + k * dwidth);
      if constexpr (Scaled) v *= scale;
      if constexpr (K == term::square) {
        a[k] += v * v;
      } else {
        a[k] += (vd)((vu64)v & 0x7fffffffffffffffULL);
      }
    }
  }
  std::memcpy(acc, a, sizeof a);
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

// Sums the lanes in a fixed pairwise order: acc[j] += acc[j + w] for w = 16, 8,
// ..., 1 (whole vectors while w allows, the same additions either way).
inline double reduce_lanes(double* acc) noexcept {
  std::size_t width = lane_count / 2;
#if GRADCLIP_SIMD
  for (; width >= dwidth; width /= 2) {
    for (std::size_t j = 0; j < width; j += dwidth) {
      vd lo, hi;
      std::memcpy(&lo, acc + j, sizeof lo);
      std::memcpy(&hi, acc + j + width, sizeof hi);
      lo += hi;
      std::memcpy(acc + j, &lo, sizeof lo);
    }
  }
#endif
  for (; width > 0; width /= 2) {
    for (std::size_t j = 0; j < width; ++j) acc[j] += acc[j + width];
  }
  return acc[0];
}

// max |x[i]| over the bit patterns: for non-negative IEEE values the integer order
// is the numeric order, and every NaN sorts above infinity, so a NaN anywhere
// yields a NaN. Exact, and independent of the floating-point flags.
template <class T>
auto max_abs_bits(const T* x, std::size_t n) noexcept {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  using bits = std::conditional_t<std::is_same_v<T, float>, std::uint32_t, std::uint64_t>;
  constexpr bits magnitude = static_cast<bits>(~bits{0} >> 1);
  bits m = 0;
  std::size_t i = 0;
#if GRADCLIP_SIMD
  typedef std::conditional_t<std::is_same_v<T, float>, vu32, vu64> vb;
  constexpr std::size_t w = vector_bytes / sizeof(T);
  vb m0 = {}, m1 = {};
  for (; i + 2 * w <= n; i += 2 * w) {
    vb b0, b1;
    std::memcpy(&b0, x + i, sizeof b0);
    std::memcpy(&b1, x + i + w, sizeof b1);
    b0 &= magnitude;
    b1 &= magnitude;
    const vb g0 = (vb)(b0 > m0);
    const vb g1 = (vb)(b1 > m1);
    m0 = (m0 & ~g0) | (b0 & g0);
    m1 = (m1 & ~g1) | (b1 & g1);
  }
  for (std::size_t j = 0; j < w; ++j) {
    m = m0[j] > m ? m0[j] : m;
    m = m1[j] > m ? m1[j] : m;
  }
#endif
  for (; i < n; ++i) {
    bits b;
    std::memcpy(&b, x + i, sizeof b);
    b &= magnitude;
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
  typedef T vt __attribute__((vector_size(vector_bytes)));
  constexpr std::size_t w = vector_bytes / sizeof(T);
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
  for (; i + dwidth <= n; i += dwidth) store_narrowed(x + i, load_widened(x + i) * c);
#endif
  for (; i < n; ++i) x[i] = static_cast<float>(static_cast<double>(x[i]) * c);
}

// x[i] = min(max(x[i], lo), hi), leaving NaN as it is (both comparisons are false).
template <class T>
void clamp(T* x, std::size_t n, T lo, T hi) noexcept {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  std::size_t i = 0;
#if GRADCLIP_SIMD
  typedef T vt __attribute__((vector_size(vector_bytes)));
  typedef std::conditional_t<std::is_same_v<T, float>, vu32, vu64> vbits;
  constexpr std::size_t w = vector_bytes / sizeof(T);
  vt vlo, vhi;  // broadcast by element: vt{} + lo would turn a -0 bound into +0
  for (std::size_t k = 0; k < w; ++k) {
    vlo[k] = lo;
    vhi[k] = hi;
  }
  for (; i + w <= n; i += w) {
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

#endif  // GRADCLIP_DETAIL_KERNELS_LANES_HPP
