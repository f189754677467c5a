// gradclip kernels: the portable implementation of the element operations.
//
// Every ISA implements the same small set of operations over contiguous runs of
// float or double (max_magnitude_bits also over 16-bit elements):
//
//   accumulate<term, scaled>(acc, x, n, scale, stream)  acc[i % lane_count] += term(x[i] * scale)
//   accumulate_float<term>(acc, x, n, stream)         the same terms of float, half or bfloat16
//                                                     summed in float lanes, in blocks (target.hpp)
//   accumulate_own, accumulate_float_own(acc, ...)    the same terms summed in lanes of their own
//                                                     (from 0), folded and added to acc's
//                                                     folded_lane_count lanes; returns reduce_lanes
//                                                     of them (when asked)
//   add_folded(acc, lanes)                            acc's folded lanes += lanes, folded
//   reduce_lanes(acc)                                    the lanes summed in a fixed pairwise tree
//   reduce_folded(acc)                                   folded lanes summed by the rest of that tree
//   sqrt_unmarked(x, n)                                  x[i] = sqrt(x[i]), but -x[i] where x[i] < 0
//                                                     (a value marked as final by its sign)
//   max_magnitude_bits(x, n, stream)                     max of |x[i]|'s bit pattern (NaN above inf)
//   decode(out, x, n)                                    half, bfloat16: out[i] = float(x[i]), exact
//   scale(x, n, c)                                       x[i] *= c in the element's own precision
//   scale_rounded(x, n, c)                               half, bfloat16: x[i] = x[i] * c (c a double),
//                                                        correctly rounded
//   clamp(x, n, lo, hi)                                  x[i] = min(max(x[i], lo), hi), NaN kept
//                                                        (16-bit elements compared as floats)
//
// This one is plain C++ with the same lane layout as the vector ones of the same
// target (arch/target.hpp), so it computes the same bits; GRADCLIP_NO_SIMD
// selects it, and the vector implementations hand it their tails.
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_SCALAR_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_SCALAR_HPP

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../../element.hpp"
#include "target.hpp"

namespace gradclip::detail::kernels {

// The unsigned integer of an element's width, and its magnitude mask.
template <class T>
using bits_of_width = std::conditional_t<
    sizeof(T) == 8, std::uint64_t,
    std::conditional_t<sizeof(T) == 4, std::uint32_t, std::conditional_t<sizeof(T) == 2, std::uint16_t, void>>>;

template <class T>
inline constexpr bits_of_width<T> magnitude_mask =
    static_cast<bits_of_width<T>>(static_cast<bits_of_width<T>>(~bits_of_width<T>{0}) >> 1);  // no promotion to int

struct scalar_arch {
  static constexpr const char* name() noexcept { return "scalar"; }

  template <term K, bool Scaled, class T>
  static void accumulate(double* acc, const T* x, std::size_t n, double scale, bool stream = false) noexcept {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
    std::size_t i = 0;
    for (; i + lane_count <= n; i += lane_count) {
      if (stream) prefetch_ahead(x + i, lane_count);
      for (std::size_t j = 0; j < lane_count; ++j) acc[j] = add_term<K, Scaled>(acc[j], x[i + j], scale);
    }
    for (std::size_t j = 0; i < n; ++i, ++j) acc[j] = add_term<K, Scaled>(acc[j], x[i], scale);
  }

  // x[i] of each block of float_block elements goes to float lane i % float_lane_count
  // (decoded exactly to float); each block ends with flush_float_lanes.
  template <term K, class T>
  static void accumulate_float(double* acc, const T* x, std::size_t n, bool stream = false) noexcept {
    for (std::size_t b = 0; b < n; b += float_block) {
      float f[float_lane_count] = {};
      const std::size_t m = n - b < float_block ? n - b : float_block;
      for (std::size_t i = 0; i < m; ++i) {
        if (stream && i % float_lane_count == 0) prefetch_ahead(x + b + i, float_lane_count);
        const float v = element_traits<T>::to_compute(x[b + i]);
        float& lane = f[i % float_lane_count];
        lane = K == term::square ? add_square(lane, v) : lane + std::fabs(v);
      }
      flush_float_lanes(acc, f);
    }
  }

  // A short buffer of a group: its terms summed in lanes of their own (its own
  // sum, reduce_lanes of them, returned when Reduce), folded and added to the
  // group's folded lanes.
  template <term K, bool Scaled, bool Reduce, class T>
  static double accumulate_own(double* acc, const T* x, std::size_t n, double scale) noexcept {
    double lanes[lane_count] = {};
    accumulate<K, Scaled>(lanes, x, n, scale);
    return add_own<Reduce>(acc, lanes);
  }

  template <term K, bool Reduce, class T>
  static double accumulate_float_own(double* acc, const T* x, std::size_t n) noexcept {
    double lanes[lane_count] = {};
    accumulate_float<K>(lanes, x, n);
    return add_own<Reduce>(acc, lanes);
  }

  // Folds lanes in place; acc[j] += lanes[j], j < folded_lane_count.
  template <bool Reduce>
  static double add_own(double* acc, double* lanes) noexcept {
    for (std::size_t w = lane_count / 2; w >= folded_lane_count; w /= 2) {
      for (std::size_t j = 0; j < w; ++j) lanes[j] += lanes[j + w];
    }
    for (std::size_t j = 0; j < folded_lane_count; ++j) acc[j] += lanes[j];
    return Reduce ? reduce_folded(lanes) : 0.0;
  }

  static void add_folded(double* acc, const double* lanes) noexcept {
    double copy[lane_count];
    std::memcpy(copy, lanes, sizeof copy);
    add_own<false>(acc, copy);
  }

  static double reduce_folded(double* acc) noexcept { return reduce_lanes(acc, folded_lane_count / 2); }

  // acc[j % lane_count] += f[j] in ascending j: double lane d takes float lane d,
  // then float lane d + lane_count.
  static void flush_float_lanes(double* acc, const float* f) noexcept {
    for (std::size_t j = 0; j < float_lane_count; ++j) acc[j % lane_count] += static_cast<double>(f[j]);
  }

  // acc[j] += acc[j + w] for w = width, width / 2, ..., 1.
  static double reduce_lanes(double* acc, std::size_t width = lane_count / 2) noexcept {
    for (; width > 0; width /= 2) {
      for (std::size_t j = 0; j < width; ++j) acc[j] += acc[j + width];
    }
    return acc[0];
  }

  static void sqrt_unmarked(double* x, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) x[i] = x[i] < 0.0 ? -x[i] : std::sqrt(x[i]);
  }

  // For non-negative IEEE values the integer order of the bit patterns is the
  // numeric order and every NaN sorts above infinity: exact, and independent of
  // the floating-point flags.
  template <class T>
  static bits_of_width<T> max_magnitude_bits(const T* x, std::size_t n, bool = false) noexcept {
    using bits = bits_of_width<T>;
    bits m = 0;
    for (std::size_t i = 0; i < n; ++i) {
      bits b;
      std::memcpy(&b, x + i, sizeof b);
      b &= magnitude_mask<T>;
      m = b > m ? b : m;
    }
    return m;
  }

  template <class T>
  static void scale(T* x, std::size_t n, T c) noexcept {
    for (std::size_t i = 0; i < n; ++i) x[i] *= c;
  }

  // Half and bfloat16 decoded to float (exactly).
  template <class T>
  static void decode(float* out, const T* x, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) out[i] = element_traits<T>::to_compute(x[i]);
  }

  // Half and bfloat16: x[i] = the correctly rounded x[i] * c (element.hpp's times).
  template <class T>
  static void scale_rounded(T* x, std::size_t n, double c) noexcept {
    for (std::size_t i = 0; i < n; ++i) x[i] = times(x[i], c);
  }

  template <class T>
  static void clamp(T* x, std::size_t n, T lo, T hi) noexcept {
    for (std::size_t i = 0; i < n; ++i) {
      const T v = x[i];
      bits_of_width<T> b;
      std::memcpy(&b, &v, sizeof b);
      // NaN by its bits: under -ffinite-math-only the comparisons may not see it.
      if ((b & magnitude_mask<T>) > infinity_bits<T>()) continue;
      x[i] = v < lo ? lo : (v > hi ? hi : v);
    }
  }

  template <class T>
  static constexpr bits_of_width<T> infinity_bits() noexcept {
    if constexpr (std::is_same_v<T, Eigen::half>) return 0x7c00u;
    if constexpr (std::is_same_v<T, Eigen::bfloat16>) return 0x7f80u;
    return static_cast<bits_of_width<T>>(sizeof(T) == 8 ? 0x7ff0000000000000ull : 0x7f800000ull);
  }

 private:
  template <term K, bool Scaled, class T>
  static double add_term(double acc, T x, double scale) noexcept {
    double v = static_cast<double>(x);
    if constexpr (Scaled) v *= scale;
    return K == term::square ? add_square(acc, v) : acc + std::fabs(v);
  }
};

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_SCALAR_HPP
