// gradclip: the options every norm clipper shares, and what a clip reports.
//
// clip_options is the one core: the options of every norm-based clipper are, or
// hold, a clip_options (auto_clip_options, zclip_options, adagc_options,
// unit_clip_options, unscale_options), and detail::check_options validates it for
// all of them.
#ifndef GRADCLIP_OPTIONS_HPP
#define GRADCLIP_OPTIONS_HPP

#include <stdexcept>

#include "detail/kernels/partials.hpp"
#include "detail/validate.hpp"

namespace gradclip {

// What to do when the total norm is NaN or infinite.
enum class nonfinite {
  propagate,  // exactly PyTorch: a NaN norm makes every element NaN; an inf norm gives
              // coefficient 0 (finite elements become 0, infinite ones NaN)
  error,      // throw nonfinite_error; nothing is modified
  skip        // modify nothing; return clipped == false with the non-finite total_norm,
              // so the caller can skip the optimizer step
};

// How the L1 and L2 norms of float, half and bfloat16 data are summed (double data,
// other p and L-inf are the same in both).
enum class norm_accuracy {
  fast,  // in float lanes, flushed to double every 16 terms per lane: relative error
         // <= 1e-6 for any input (4.8e-7 for L2), at the memory's speed
  exact  // every term in double: relative error <= 1e-14, at about half of it
};

struct clip_options {
  double norm_type = 2.0;  // p > 0, or infinity
  double eps = 1e-6;       // added to the norm before dividing, as PyTorch does
  nonfinite on_nonfinite = nonfinite::propagate;
  norm_accuracy accuracy = norm_accuracy::fast;
};

struct clip_result {
  double total_norm = 0.0;  // the norm before clipping
  double scale = 1.0;       // the factor applied; 1 when nothing was written
  bool clipped = false;     // whether the data was scaled
};

namespace detail {

inline void check_policy(nonfinite policy) {
  if (policy != nonfinite::propagate && policy != nonfinite::error && policy != nonfinite::skip) {
    throw std::invalid_argument("gradclip: on_nonfinite is not a nonfinite policy");
  }
}

inline void check_accuracy(norm_accuracy accuracy) {
  if (accuracy != norm_accuracy::fast && accuracy != norm_accuracy::exact) {
    throw std::invalid_argument("gradclip: accuracy is not a norm_accuracy");
  }
}

// The one validation of the core: norm_type > 0 (or infinity), eps finite and >= 0,
// a known policy and accuracy.
inline void check_options(const clip_options& options) {
  check_norm_type(options.norm_type);
  check_eps(options.eps);
  check_policy(options.on_nonfinite);
  check_accuracy(options.accuracy);
}

// The kernels' name for the norm asked for.
inline kernels::norm_spec spec_of(double norm_type, norm_accuracy accuracy) noexcept {
  return kernels::norm_spec::from(norm_type, accuracy == norm_accuracy::exact);
}
inline kernels::norm_spec spec_of(const clip_options& options) noexcept {
  return spec_of(options.norm_type, options.accuracy);
}

inline void check_clip_options(double max_norm, const clip_options& options) {
  check_max_norm(max_norm);
  check_options(options);
}

}  // namespace detail

}  // namespace gradclip

#endif  // GRADCLIP_OPTIONS_HPP
