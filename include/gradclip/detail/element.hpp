// gradclip internals: the element types a buffer may hold, and how the kernels
// read, write and round them.
//
// float and double are computed on directly. Eigen::half and Eigen::bfloat16 are
// decoded to float (exactly) and accumulated in double like float, so that squares
// never overflow (60000 in fp16 has a finite norm) and sums keep double accuracy.
//
// Writes: every value a kernel stores is computed in double and converted by the
// element type's one conversion, element_traits<T>::nearest (round to nearest
// even). A product or sum that double cannot hold exactly is first rounded to odd
// (round_once below), which carries its exact position to any type of 51 bits or
// fewer: the stored element is the correctly rounded x * c or d + x, rounded once.
#ifndef GRADCLIP_DETAIL_ELEMENT_HPP
#define GRADCLIP_DETAIL_ELEMENT_HPP

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include <Eigen/Core>

#include "float_bits.hpp"

namespace gradclip::detail {

// y = hi + lo exactly, hi = y rounded to nearest: y rounded to odd (toward zero,
// then the last bit set if that was inexact). Rounding the result to a format of
// at most 51 bits gives the correctly rounded y (Boldo and Melquiond 2008).
inline double round_to_odd(double hi, double lo) noexcept {
  if (lo == 0.0 || !is_finite(hi)) return hi;
  std::uint64_t b = bits_of(hi);
  if ((b ^ bits_of(lo)) >> 63) b -= 1;  // opposite signs: |y| < |hi|, so step toward zero
  return double_from_bits(b | 1u);
}

// The float nearest to v, rounded to odd: the same property one step down (float's
// 24 bits carry v's position to the 11 and 8 bits of half and bfloat16).
inline float round_to_odd_float(double v) noexcept;

// Primary template: not an element type gradclip computes on.
template <class T>
struct element_traits {
  static constexpr bool supported = false;
};

template <>
struct element_traits<double> {
  static constexpr bool supported = true;
  using compute_type = double;  // what the kernels read the element as
  static double to_compute(double x) noexcept { return x; }
  static bool is_finite(double x) noexcept { return detail::is_finite(x); }
  static double next_up(double x) noexcept { return std::nextafter(x, std::numeric_limits<double>::infinity()); }
  static double next_down(double x) noexcept { return std::nextafter(x, -std::numeric_limits<double>::infinity()); }
  static double nearest(double v) noexcept { return v; }
};

template <>
struct element_traits<float> {
  static constexpr bool supported = true;
  using compute_type = float;
  static float to_compute(float x) noexcept { return x; }
  static bool is_finite(float x) noexcept { return (bits_of(x) & 0x7fffffffu) < 0x7f800000u; }
  static float next_up(float x) noexcept { return std::nextafter(x, std::numeric_limits<float>::infinity()); }
  static float next_down(float x) noexcept { return std::nextafter(x, -std::numeric_limits<float>::infinity()); }
  // Out-of-range finite doubles go to +-inf or +-FLT_MAX explicitly (a plain
  // conversion is undefined there); 0x1.ffffffp127 is the midpoint between FLT_MAX
  // and 2^128.
  static float nearest(double v) noexcept {
    // NaN and inf by their bits first: under -ffinite-math-only the comparisons
    // below may take a NaN for a large value and return inf.
    if (!detail::is_finite(v)) return static_cast<float>(v);
    constexpr float inf = std::numeric_limits<float>::infinity();
    constexpr float max = std::numeric_limits<float>::max();
    if (v > static_cast<double>(max)) return v >= 0x1.ffffffp127 ? inf : max;
    if (v < -static_cast<double>(max)) return v <= -0x1.ffffffp127 ? -inf : -max;
    return static_cast<float>(v);
  }
};

// Shared by the two 16-bit formats: sign-magnitude bit stepping and raw access.
template <class T, std::uint16_t ExponentMask>
struct sixteen_bit_traits {
  static constexpr bool supported = true;
  using compute_type = float;

  static std::uint16_t bits(T x) noexcept { return Eigen::numext::bit_cast<std::uint16_t>(x); }
  static T from_bits(std::uint16_t u) noexcept { return Eigen::numext::bit_cast<T>(u); }
  static bool is_finite(T x) noexcept { return (bits(x) & ExponentMask) != ExponentMask; }
  static T next_up(T x) noexcept {
    const std::uint16_t u = bits(x);
    if ((u & 0x7fffu) == 0) return from_bits(0x0001u);
    return from_bits(static_cast<std::uint16_t>((u & 0x8000u) ? u - 1 : u + 1));
  }
  static T next_down(T x) noexcept {
    const std::uint16_t u = bits(x);
    if ((u & 0x7fffu) == 0) return from_bits(0x8001u);
    return from_bits(static_cast<std::uint16_t>((u & 0x8000u) ? u + 1 : u - 1));
  }
  // Round to nearest even, once: to odd in float, then to nearest in 16 bits.
  static T nearest(double v) noexcept { return T(round_to_odd_float(v)); }
};

template <>
struct element_traits<Eigen::half> : sixteen_bit_traits<Eigen::half, 0x7c00u> {
  // Exact, branch-free decoding (vectorizes, and needs no subnormal float support,
  // so it stays exact under flush-to-zero / denormals-are-zero).
  static float to_compute(Eigen::half h) noexcept {
    const std::uint32_t u = bits(h);
    const std::uint32_t sign = (u & 0x8000u) << 16;
    const std::uint32_t magnitude = u & 0x7fffu;
    const float subnormal = static_cast<float>(static_cast<std::int32_t>(magnitude)) * 0x1p-24f;
    const std::uint32_t normal = (magnitude << 13) + 0x38000000u;     // rebias 15 -> 127
    const std::uint32_t special = (magnitude << 13) | 0x7f800000u;    // inf, NaN (payload kept)
    const std::uint32_t body = magnitude >= 0x7c00u ? special : normal;
    const std::uint32_t r = magnitude < 0x0400u ? bits_of(subnormal) : body;
    return float_from_bits(r | sign);
  }
};

template <>
struct element_traits<Eigen::bfloat16> : sixteen_bit_traits<Eigen::bfloat16, 0x7f80u> {
  static float to_compute(Eigen::bfloat16 b) noexcept { return float_from_bits(static_cast<std::uint32_t>(bits(b)) << 16); }
};

inline float round_to_odd_float(double v) noexcept {
  const float f = element_traits<float>::nearest(v);
  if (!is_finite(v) || static_cast<double>(f) == v) return f;
  std::uint32_t b = bits_of(f);
  if (std::fabs(static_cast<double>(f)) > std::fabs(v)) b -= 1;  // f beyond v: step toward zero
  return float_from_bits(b | 1u);
}

// y = hi + lo exactly (hi = y rounded to nearest), rounded once into T.
template <class T>
T round_once(double hi, double lo) noexcept {
  if constexpr (std::is_same_v<T, double>) {
    (void)lo;
    return hi;
  } else {
    return element_traits<T>::nearest(round_to_odd(hi, lo));
  }
}

template <class T>
inline constexpr bool is_element_v = element_traits<std::remove_cv_t<T>>::supported;

template <class T>
double to_double(T x) noexcept {
  return static_cast<double>(element_traits<T>::to_compute(x));
}

// The correctly rounded x * c in T (for c a double: one rounding in all).
template <class T>
T times(T x, double c) noexcept {
  const double xd = to_double(x);
  const double hi = xd * c;
  if constexpr (std::is_same_v<T, double>) {
    return hi;
  } else {
    // The product's exact error: exact unless the product is below ~2^-969, where every float
    // or 16-bit result rounds to 0 anyway.
    return round_once<T>(hi, std::fma(xd, c, -hi));
  }
}

// The correctly rounded d + x in D, for elements of any two types.
template <class D, class S>
D plus(D d, S x) noexcept {
  const double a = to_double(d), b = to_double(x);
  const double s = a + b;
  if constexpr (std::is_same_v<D, double>) {
    return s;
  } else {
    const double bb = s - a;  // Knuth's two-sum: the exact error of a + b
    return round_once<D>(s, (a - (s - bb)) + (b - bb));
  }
}

// The largest value of T that is <= v, and the smallest that is >= v: value
// clipping rounds its bounds inward so that every clipped element lies in [lo, hi].
template <class T>
T round_down_to(double v) noexcept {
  using traits = element_traits<T>;
  T c = traits::nearest(v);
  while (to_double(c) > v) c = traits::next_down(c);
  return c;
}

template <class T>
T round_up_to(double v) noexcept {
  using traits = element_traits<T>;
  T c = traits::nearest(v);
  while (to_double(c) < v) c = traits::next_up(c);
  return c;
}

}  // namespace gradclip::detail

#endif  // GRADCLIP_DETAIL_ELEMENT_HPP
