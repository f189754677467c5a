// gradclip internals: argument checks, all done before any data is touched.
#ifndef GRADCLIP_DETAIL_VALIDATE_HPP
#define GRADCLIP_DETAIL_VALIDATE_HPP

#include <stdexcept>
#include <string>

#include "float_bits.hpp"

namespace gradclip::detail {

inline std::string number_text(double x) {
  if (is_nan(x)) return "nan";
  return std::to_string(x);
}

inline void check_norm_type(double norm_type) {
  if (is_nan(norm_type) || !(norm_type > 0.0)) {
    throw std::invalid_argument("gradclip: norm_type must be > 0 (or infinity), got " + number_text(norm_type));
  }
}

inline void check_max_norm(double max_norm) {
  if (is_nan(max_norm) || !(max_norm >= 0.0)) {
    throw std::invalid_argument("gradclip: max_norm must be >= 0, got " + number_text(max_norm));
  }
}

inline void check_eps(double eps) {
  if (is_nan(eps) || !(eps >= 0.0) || is_inf(eps)) {
    throw std::invalid_argument("gradclip: eps must be finite and >= 0, got " + number_text(eps));
  }
}

inline void check_clip_value(double clip_value) {
  if (is_nan(clip_value) || !(clip_value >= 0.0)) {
    throw std::invalid_argument("gradclip: clip_value must be >= 0, got " + number_text(clip_value));
  }
}

inline void check_bounds(double lo, double hi) {
  if (is_nan(lo) || is_nan(hi)) throw std::invalid_argument("gradclip: clip bounds must not be NaN");
  if (lo > hi) {
    throw std::invalid_argument("gradclip: clip bounds need lo <= hi, got [" + number_text(lo) + ", " +
                                number_text(hi) + "]");
  }
}

}  // namespace gradclip::detail

#endif  // GRADCLIP_DETAIL_VALIDATE_HPP
