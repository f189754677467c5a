// gradclip kernels: the element loops over contiguous float and double data.
//
// This is the only file with explicit SIMD. Reductions accumulate into
// `lane_count` double lanes, element i of a run going to lane i % lane_count, so
// the order of every floating-point operation is fixed by the data layout alone.
// The vector path (GNU vector extension at the target's natural width: 16 bytes
// for SSE2 / NEON, 32 for AVX, 64 for AVX-512) and the portable scalar path
// (GRADCLIP_NO_SIMD) perform the same operations lane by lane, so the two builds
// of one target compute the same sums. Squares are added with a fused
// multiply-add wherever the target has one, in both paths (add_square). Targets
// with another width or without FMA add in another order: their sums may differ
// in the last bits, within the documented accuracy.
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

// The target's natural vector width (the build's, not the running CPU's).
#if defined(__AVX512F__)
inline constexpr std::size_t vector_bytes = 64;
#elif defined(__AVX__)
inline constexpr std::size_t vector_bytes = 32;
#else
inline constexpr std::size_t vector_bytes = 16;
#endif

// Eight vectors of doubles at that width (16 lanes for SSE2 / NEON, 32 for AVX,
// 64 for AVX-512): eight independent chains keep two FMA units busy through their
// latency. The scalar path (GRADCLIP_NO_SIMD) uses the same count, so it adds in
// the same order as the vector path of the same target.
inline constexpr std::size_t lane_count = vector_bytes;

enum class term { abs, square };

// acc + v * v, rounded once where the target has FMA (half the instructions of a
// multiply and an add in the norm's inner loop, and one rounding fewer).
#if defined(__FMA__) || defined(__AVX512F__) || defined(__ARM_FEATURE_FMA)
inline constexpr bool fused_squares = true;
#else
inline constexpr bool fused_squares = false;
#endif

inline double add_square(double acc, double v) noexcept {
  if constexpr (fused_squares) {
    return std::fma(v, v, acc);
  } else {
    return acc + v * v;
  }
}

#if GRADCLIP_SIMD
// ---- the vector layer: one width per target, the only ISA dispatch point -------
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

// The first m < dwidth values at p, widened, the other lanes +0, without reading
// past p + m: the tail of a run in whole vectors. Adding +0 (or its square) leaves
// a lane's sum as it was, so the sums are the scalar tail's, bit for bit, and the
// accumulators stay whole vectors in memory (a vector load after scalar stores to
// the same lanes would stall on store forwarding, per call: many small buffers).
#if defined(__AVX512F__) || defined(__AVX__)
inline constexpr bool partial_loads = true;
#else
inline constexpr bool partial_loads = false;
#endif

inline vd load_widened_partial(const float* p, std::size_t m) noexcept {
#if defined(__AVX512F__)
  // AVX's masked load (AVX-512F alone has no 8-float one without casts that GCC 12
  // warns about).
  alignas(32) static constexpr std::int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ones + 8 - m));
  return (vd)_mm512_maskz_cvtps_pd(static_cast<__mmask8>(0xff), _mm256_maskload_ps(p, mask));
#elif defined(__AVX__)
  alignas(16) static constexpr std::int32_t ones[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
  const __m128i mask = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ones + 4 - m));
  return (vd)_mm256_cvtps_pd(_mm_maskload_ps(p, mask));
#else
  vd v = {};
  for (std::size_t k = 0; k < m; ++k) v[k] = static_cast<double>(p[k]);
  return v;
#endif
}

inline vd load_widened_partial(const double* p, std::size_t m) noexcept {
#if defined(__AVX512F__)
  return (vd)_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << m) - 1u), p);
#elif defined(__AVX__)
  alignas(32) static constexpr std::int64_t ones[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
  const __m256i mask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ones + 4 - m));
  return (vd)_mm256_maskload_pd(p, mask);
#else
  vd v = {};
  for (std::size_t k = 0; k < m; ++k) v[k] = p[k];
  return v;
#endif
}

inline vd add_square(vd acc, vd v) noexcept {
#if defined(__AVX512F__)
  return (vd)_mm512_fmadd_pd((__m512d)v, (__m512d)v, (__m512d)acc);
#elif defined(__FMA__) && defined(__AVX__)
  return (vd)_mm256_fmadd_pd((__m256d)v, (__m256d)v, (__m256d)acc);
#elif defined(__ARM_FEATURE_FMA) && defined(__ARM_NEON) && defined(__aarch64__)
  return (vd)vfmaq_f64((float64x2_t)acc, (float64x2_t)v, (float64x2_t)v);
#else
  if constexpr (fused_squares) {  // FMA without a vector form named here: lane by lane
    for (std::size_t k = 0; k < dwidth; ++k) acc[k] = std::fma(v[k], v[k], acc[k]);
    return acc;
  } else {
    return acc + v * v;
  }
#endif
}

// Narrowing for the widened scale pass: dwidth doubles to floats at p.
inline void store_narrowed(float* p, vd v) noexcept {
  for (std::size_t k = 0; k < dwidth; ++k) p[k] = static_cast<float>(v[k]);
}
#endif  // GRADCLIP_SIMD

#if GRADCLIP_SIMD
// One vector of terms into an accumulator.
template <term K, bool Scaled>
inline vd add_terms(vd acc, vd v, double scale) noexcept {
  if constexpr (Scaled) v *= scale;
  if constexpr (K == term::square) {
    return add_square(acc, v);
  } else {
    return acc + (vd)((vu64)v & 0x7fffffffffffffffULL);
  }
}
#endif

// Data streamed from beyond the caches: a hint to fetch what the loop reads
// stream_distance bytes later. The norm's loop (a conversion and an FMA per
// vector) is longer than a plain sum's, so the out-of-order window covers fewer
// outstanding misses; the hint restores them (float norm at 1e8 elements: 0.86 ->
// 1.1 of a plain sum's speed here). Never faults, changes no result.
inline constexpr std::size_t stream_distance = 2048;

// A hint to fetch the cache lines of [p, p + bytes). Never faults.
inline void prefetch_bytes(const void* p, std::size_t bytes) noexcept {
  const char* c = static_cast<const char*>(p);
  for (std::size_t b = 0; b < bytes; b += 64) {
#if defined(__GNUC__)
    __builtin_prefetch(c + b);
#elif defined(_M_X64) || defined(_M_IX86)
    _mm_prefetch(c + b, _MM_HINT_T0);
#else
    (void)c;
#endif
  }
}

template <class T>
inline void prefetch_ahead(const T* x, std::size_t count) noexcept {
  prefetch_bytes(reinterpret_cast<const char*>(x) + stream_distance, count * sizeof(T));
}

// acc[i % lane_count] += term(x[i] * scale) for i in [0, n). With Scaled == false
// the multiplication is skipped (scale must then be 1). stream: the data comes
// from memory, not cache (prefetch_ahead).
template <term K, bool Scaled, class T>
void accumulate(double* acc, const T* x, std::size_t n, double scale, bool stream = false) noexcept {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  std::size_t i = 0;
#if GRADCLIP_SIMD
  // The lanes in registers, loaded and stored as whole vectors (a memcpy of the
  // array may move it in narrower pieces, and vector loads after those stall on
  // store forwarding: per call, so per buffer of a group of small ones).
  vd a[accumulators];
#pragma GCC unroll 16
  for (std::size_t k = 0; k < accumulators; ++k) a[k] = load_widened(acc + k * dwidth);
  for (; i + lane_count <= n; i += lane_count) {
    if (stream) prefetch_ahead(x + i, lane_count);
#pragma GCC unroll 16
    for (std::size_t k = 0; k < accumulators; ++k) a[k] = add_terms<K, Scaled>(a[k], load_widened(x + i + k * dwidth), scale);
  }
  if constexpr (partial_loads) {
    // Every accumulator takes its part of the tail, possibly nothing (all lanes +0).
    const std::size_t rest = n - i;
    if (rest != 0) {
#pragma GCC unroll 16
      for (std::size_t k = 0; k < accumulators; ++k) {
        const std::size_t from = k * dwidth < rest ? k * dwidth : rest;
        const std::size_t m = rest - from < dwidth ? rest - from : dwidth;
        a[k] = add_terms<K, Scaled>(a[k], load_widened_partial(x + i + from, m), scale);
      }
    }
  }
#pragma GCC unroll 16
  for (std::size_t k = 0; k < accumulators; ++k) {
    const vd v = a[k];
    std::memcpy(acc + k * dwidth, &v, sizeof v);
  }
  if constexpr (partial_loads) return;
#else
  for (; i + lane_count <= n; i += lane_count) {
    if (stream) prefetch_ahead(x + i, lane_count);
    for (std::size_t j = 0; j < lane_count; ++j) {
      double v = static_cast<double>(x[i + j]);
      if constexpr (Scaled) v *= scale;
      acc[j] = K == term::square ? add_square(acc[j], v) : acc[j] + std::fabs(v);
    }
  }
#endif
  for (std::size_t j = 0; i < n; ++i, ++j) {
    double v = static_cast<double>(x[i]);
    if constexpr (Scaled) v *= scale;
    acc[j] = K == term::square ? add_square(acc[j], v) : acc[j] + std::fabs(v);
  }
}

// acc[i % lane_count] += (|x[i]| / unit)^p: general p has no vector pow, but keeps
// the lane layout so the blocking above it is shared. A divisor, not a multiplier:
// the range-safe pass divides by max |x| itself, which may be subnormal (its
// reciprocal would overflow); dividing by 1 in the fast pass is exact.
template <class T>
void accumulate_pow(double* acc, const T* x, std::size_t n, double unit, double p) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    acc[i % lane_count] += std::pow(std::fabs(static_cast<double>(x[i])) / unit, p);
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
auto max_abs_bits(const T* x, std::size_t n, bool stream = false) noexcept {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  using bits = std::conditional_t<std::is_same_v<T, float>, std::uint32_t, std::uint64_t>;
  constexpr bits magnitude = static_cast<bits>(~bits{0} >> 1);
  bits m = 0;
  std::size_t i = 0;
#if GRADCLIP_SIMD
  typedef std::conditional_t<std::is_same_v<T, float>, vu32, vu64> vb;
  constexpr std::size_t w = vector_bytes / sizeof(T);
  vb m0 = {}, m1 = {}, m2 = {}, m3 = {};
  for (; i + 4 * w <= n; i += 4 * w) {
    if (stream) prefetch_ahead(x + i, 4 * w);
    vb b0, b1, b2, b3;
    std::memcpy(&b0, x + i, sizeof b0);
    std::memcpy(&b1, x + i + w, sizeof b1);
    std::memcpy(&b2, x + i + 2 * w, sizeof b2);
    std::memcpy(&b3, x + i + 3 * w, sizeof b3);
    b0 &= magnitude;
    b1 &= magnitude;
    b2 &= magnitude;
    b3 &= magnitude;
    // The vector ?: lowers to the target's unsigned max where it has one.
    m0 = b0 > m0 ? b0 : m0;
    m1 = b1 > m1 ? b1 : m1;
    m2 = b2 > m2 ? b2 : m2;
    m3 = b3 > m3 ? b3 : m3;
  }
  m0 = m1 > m0 ? m1 : m0;
  m2 = m3 > m2 ? m3 : m2;
  m0 = m2 > m0 ? m2 : m0;
  for (std::size_t j = 0; j < w; ++j) m = m0[j] > m ? m0[j] : m;
#else
  (void)stream;  // the scalar path is not memory-bound
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
  using bit_type = std::conditional_t<std::is_same_v<T, float>, std::uint32_t, std::uint64_t>;
  constexpr bit_type abs_mask = static_cast<bit_type>(~bit_type{0} >> 1);
  constexpr bit_type inf_bits = static_cast<bit_type>(std::is_same_v<T, float> ? 0x7f800000ull : 0x7ff0000000000000ull);
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
  // NaN lanes are found by their bits and kept: under -ffinite-math-only the
  // compiler may turn the float comparisons into min/max, which drop NaN.
  for (; i + w <= n; i += w) {
    vt v;
    std::memcpy(&v, x + i, sizeof v);
    const vbits nan = (vbits)(((vbits)v & abs_mask) > inf_bits);
    const vbits below = (vbits)(v < vlo) & ~nan;
    const vbits above = (vbits)(v > vhi) & ~nan;
    const vbits r = ((vbits)v & ~(below | above)) | ((vbits)vlo & below) | ((vbits)vhi & above);
    std::memcpy(x + i, &r, sizeof r);
  }
#endif
  for (; i < n; ++i) {
    const T v = x[i];
    if ((bits_of(v) & abs_mask) > inf_bits) continue;  // NaN, by its bits as above
    x[i] = v < lo ? lo : (v > hi ? hi : v);
  }
}

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_LANES_HPP
