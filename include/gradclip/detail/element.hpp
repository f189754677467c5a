// gradclip internals: the element types a buffer may hold, and how the kernels
// read, write and round them.
//
// float and double are computed on directly. Eigen::half and Eigen::bfloat16 are
// decoded to float (exactly) and accumulated in double like float, so that squares
// never overflow (60000 in fp16 has a finite norm) and sums keep double accuracy.
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
  // Out-of-range doubles go to +-inf or +-FLT_MAX explicitly (a plain conversion is
  // undefined there); 0x1.ffffffp127 is the midpoint between FLT_MAX and 2^128.
  static float nearest(double v) noexcept {
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
  // Round to nearest even through float; a later exact comparison corrects the
  // rare double rounding where that matters (see round_down_to / round_up_to).
  static T nearest(double v) noexcept { return T(element_traits<float>::nearest(v)); }
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
  static Eigen::half from_compute(float f) noexcept { return Eigen::half(f); }
};

template <>
struct element_traits<Eigen::bfloat16> : sixteen_bit_traits<Eigen::bfloat16, 0x7f80u> {
  static float to_compute(Eigen::bfloat16 b) noexcept { return float_from_bits(static_cast<std::uint32_t>(bits(b)) << 16); }
  static Eigen::bfloat16 from_compute(float f) noexcept { return Eigen::bfloat16(f); }
};

template <class T>
inline constexpr bool is_element_v = element_traits<std::remove_cv_t<T>>::supported;

template <class T>
double to_double(T x) noexcept {
  return static_cast<double>(element_traits<T>::to_compute(x));
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
