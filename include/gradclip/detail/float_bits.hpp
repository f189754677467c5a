// gradclip internals: classification of floating-point values by their bits.
//
// Training code is often built with -ffast-math / -ffinite-math-only, under which
// std::isnan and x != x may be folded to false. Testing the exponent bits keeps
// non-finite detection working whatever the floating-point flags.
#ifndef GRADCLIP_DETAIL_FLOAT_BITS_HPP
#define GRADCLIP_DETAIL_FLOAT_BITS_HPP

#include <cstdint>
#include <cstring>

namespace gradclip::detail {

inline std::uint64_t bits_of(double x) noexcept {
  std::uint64_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

inline double double_from_bits(std::uint64_t u) noexcept {
  double x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline std::uint32_t bits_of(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

inline float float_from_bits(std::uint32_t u) noexcept {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline constexpr std::uint64_t double_abs_mask = 0x7fffffffffffffffULL;
inline constexpr std::uint64_t double_inf_bits = 0x7ff0000000000000ULL;

inline bool is_nan(double x) noexcept { return (bits_of(x) & double_abs_mask) > double_inf_bits; }
inline bool is_inf(double x) noexcept { return (bits_of(x) & double_abs_mask) == double_inf_bits; }
inline bool is_finite(double x) noexcept { return (bits_of(x) & double_abs_mask) < double_inf_bits; }
inline bool is_nan(float x) noexcept { return (bits_of(x) & 0x7fffffffu) > 0x7f800000u; }

}  // namespace gradclip::detail

#endif  // GRADCLIP_DETAIL_FLOAT_BITS_HPP
