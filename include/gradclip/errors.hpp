// gradclip: the exceptions the library throws.
#ifndef GRADCLIP_ERRORS_HPP
#define GRADCLIP_ERRORS_HPP

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "detail/float_bits.hpp"

namespace gradclip {

// Thrown by the nonfinite::error policy when the total norm is NaN or infinite.
// Nothing has been modified when it is thrown.
class nonfinite_error : public std::runtime_error {
 public:
  // Returned by tensor_index() when no buffer of the group holds a non-finite
  // value (a norm computed elsewhere, e.g. on another rank, was non-finite, or the
  // norm of finite double data passed DBL_MAX).
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  // what: "buffer", or "unit" for the index of a unit (a row or column) of a matrix.
  nonfinite_error(double total_norm, std::size_t tensor_index, const char* what = "buffer")
      : std::runtime_error(make_message(total_norm, tensor_index, what)),
        total_norm_(total_norm),
        tensor_index_(tensor_index) {}

  // The non-finite total norm that triggered the error.
  double total_norm() const noexcept { return total_norm_; }
  // Index, in group order, of the first buffer (or unit, for the unit-wise methods)
  // holding a NaN or an infinity; npos if none.
  std::size_t tensor_index() const noexcept { return tensor_index_; }

 private:
  static std::string make_message(double total_norm, std::size_t index, const char* what) {
    std::string msg = "gradclip: the total norm of the gradients is ";
    msg += detail::is_nan(total_norm) ? "NaN" : (total_norm > 0 ? "inf" : "-inf");
    if (index == npos) {
      msg += " although no buffer of this group holds a non-finite value (a norm given by the caller, or finite "
             "values whose norm exceeds the largest double)";
    } else {
      msg += std::string("; ") + what + " " + std::to_string(index) + " is the first that holds a non-finite value";
    }
    msg += "; nothing was modified";
    return msg;
  }

  double total_norm_;
  std::size_t tensor_index_;
};

// Thrown by spike_guard when a step would be the (max_consecutive + 1)-th skipped in a
// row. A std::runtime_error, like nonfinite_streak_error (nonfinite_guard's). The
// guard is unchanged: the raising step's values were not recorded.
class spike_streak_error : public std::runtime_error {
 public:
  // reason: why the raising step would have been skipped, e.g. "a loss spike".
  spike_streak_error(std::uint64_t consecutive, std::uint64_t max_consecutive, const char* reason, double loss,
                     double grad_norm)
      : std::runtime_error(make_message(consecutive, max_consecutive, reason, loss, grad_norm)),
        consecutive_(consecutive),
        max_consecutive_(max_consecutive),
        loss_(loss),
        grad_norm_(grad_norm) {}

  // Skips in a row, the one that raised included (max_consecutive + 1).
  std::uint64_t consecutive() const noexcept { return consecutive_; }
  std::uint64_t max_consecutive() const noexcept { return max_consecutive_; }
  // The raising step's values; grad_norm() is NaN when the guard was given a loss only.
  double loss() const noexcept { return loss_; }
  double grad_norm() const noexcept { return grad_norm_; }

 private:
  static std::string text(double x) {
    if (detail::is_nan(x)) return "nan";
    if (detail::is_inf(x)) return x > 0 ? "inf" : "-inf";
    return std::to_string(x);
  }
  static std::string make_message(std::uint64_t consecutive, std::uint64_t max_consecutive, const char* reason,
                                  double loss, double grad_norm) {
    std::string msg = "gradclip::spike_guard: " + std::to_string(consecutive) +
                      " steps in a row would be skipped (at most " + std::to_string(max_consecutive) +
                      " may be); the last for " + reason + " (loss " + text(loss);
    if (!detail::is_nan(grad_norm)) msg += ", grad norm " + text(grad_norm);
    return msg + ")";
  }

  std::uint64_t consecutive_, max_consecutive_;
  double loss_, grad_norm_;
};

// Thrown by grad_scaler::update() under min_scale_policy::error (DeepSpeed's
// raise_error_at_min_scale) for an overflow that would back the loss scale off
// while it is already at min_scale. A std::runtime_error. The scaler is unchanged:
// the raising step is not counted.
class loss_scale_error : public std::runtime_error {
 public:
  loss_scale_error(double scale, double min_scale)
      : std::runtime_error(make_message(scale, min_scale)), scale_(scale), min_scale_(min_scale) {}

  // The scale when it was raised (at min_scale) and the minimum.
  double scale() const noexcept { return scale_; }
  double min_scale() const noexcept { return min_scale_; }

 private:
  static std::string make_message(double scale, double min_scale) {
    char text[64];
    std::string msg = "gradclip::grad_scaler: loss scale already at minimum (";
    std::snprintf(text, sizeof text, "%.9g", scale);
    msg += text;
    msg += ", min_scale ";
    std::snprintf(text, sizeof text, "%.9g", min_scale);
    msg += text;
    return msg + "): cannot back it off on another overflow; the scaler is unchanged";
  }

  double scale_, min_scale_;
};

// Thrown by a stateful clipper's load() when the data is truncated, corrupted, of
// another clipper, or of an unsupported version. The clipper is left as it was.
class state_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace gradclip

#endif  // GRADCLIP_ERRORS_HPP
