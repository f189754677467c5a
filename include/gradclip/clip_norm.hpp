// gradclip: clipping by norm (PyTorch's clip_grad_norm_ and clip_grads_with_norm_).
//
//   coefficient = max_norm / (total_norm + eps), clamped to 1
//   every buffer is scaled by the coefficient when it is < 1; when it is 1 nothing
//   is written at all (PyTorch always multiplies).
#ifndef GRADCLIP_CLIP_NORM_HPP
#define GRADCLIP_CLIP_NORM_HPP

#include <cstddef>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "buffer.hpp"
#include "errors.hpp"
#include "norm.hpp"
#include "detail/float_bits.hpp"
#include "detail/group_ops.hpp"
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

struct clip_options {
  double norm_type = 2.0;  // p > 0, or infinity
  double eps = 1e-6;       // added to the norm before dividing, as PyTorch does
  nonfinite on_nonfinite = nonfinite::propagate;
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

inline void check_clip_options(double max_norm, const clip_options& options) {
  check_max_norm(max_norm);
  check_norm_type(options.norm_type);
  check_eps(options.eps);
  check_policy(options.on_nonfinite);
}

// The clipping decision for a total norm, without writing: scale is the
// coefficient to apply (1 when none is), clipped whether one is.
template <class G>
clip_result decide(const G& g, double max_norm, double total_norm, const clip_options& options) {
  if (!is_finite(total_norm)) {
    if (options.on_nonfinite == nonfinite::error) throw nonfinite_error(total_norm, first_nonfinite(g));
    if (options.on_nonfinite == nonfinite::skip) return {total_norm, 1.0, false};
    // propagate, as PyTorch's max_norm / (total + eps): NaN for a NaN norm (or inf
    // over inf), else 0. Decided by bits, not by NaN arithmetic, which
    // -ffinite-math-only lets the compiler fold away.
    const bool nan_coefficient = is_nan(total_norm) || is_inf(max_norm);
    return {total_norm, nan_coefficient ? std::numeric_limits<double>::quiet_NaN() : 0.0, true};
  }
  const double denominator = total_norm + options.eps;
  // A zero norm with eps = 0 would give 0/0: the data is all zeros, nothing to do.
  if (denominator == 0.0) return {total_norm, 1.0, false};
  const double coefficient = max_norm / denominator;
  // The NaN test by bits: under -ffinite-math-only a plain comparison may be folded.
  if (!is_nan(coefficient) && coefficient >= 1.0) return {total_norm, 1.0, false};
  return {total_norm, coefficient, true};  // coefficient < 1, or NaN under nonfinite::propagate
}

// The coefficient a decision applies, exact-range: r.scale itself unless it is
// below DBL_MIN (a norm of 1e300 clipped to 1e-20), where it is recomputed in two
// factors (kernels::split_quotient) so that double data keeps the bound.
inline kernels::coefficient applied_coefficient(const clip_result& r, double max_norm, const clip_options& options) {
  if (!(r.scale < std::numeric_limits<double>::min())) return r.scale;
  return kernels::split_quotient(max_norm, r.total_norm + options.eps);
}

template <class G>
clip_result clip_given_norm(G&& g, double max_norm, double total_norm, const clip_options& options) {
  const clip_result r = decide(g, max_norm, total_norm, options);
  if (r.clipped) scale_all(g, applied_coefficient(r, max_norm, options));
  return r;
}

}  // namespace detail

// Scales the whole group so that its norm is at most max_norm; returns the norm
// before clipping. Throws std::invalid_argument (max_norm < 0 or NaN, norm_type <= 0
// or NaN, eps < 0 or not finite) and nonfinite_error before modifying anything.
template <class Group>
clip_result clip_by_global_norm(Group&& group, double max_norm, const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_by_global_norm: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_clip_options(max_norm, options);
  const double total = detail::total_norm(group, detail::kernels::norm_spec::from(options.norm_type));
  return detail::clip_given_norm(group, max_norm, total, options);
}

// The same for one buffer.
template <class Buffer>
clip_result clip_by_norm(Buffer&& x, double max_norm, const clip_options& options = {}) {
  static_assert(is_buffer_v<Buffer>,
                "gradclip::clip_by_norm takes one buffer; use gradclip::clip_by_global_norm for a group");
  return clip_by_global_norm(std::forward<Buffer>(x), max_norm, options);
}

// The scaling step alone, for a total norm computed elsewhere (another pass, other
// ranks): PyTorch's clip_grads_with_norm_. options.norm_type is not used. Under
// nonfinite::error, tensor_index() is npos when no buffer here is non-finite.
template <class Group>
clip_result clip_with_norm(Group&& group, double max_norm, double total_norm, const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_with_norm: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_clip_options(max_norm, options);
  if (!detail::is_nan(total_norm) && total_norm < 0.0) {
    throw std::invalid_argument("gradclip: total_norm must be >= 0, got " + detail::number_text(total_norm));
  }
  return detail::clip_given_norm(group, max_norm, total_norm, options);
}

// The norm and the coefficient clip_by_global_norm would apply, writing nothing:
// for folding the scale into an optimizer step (multiply the gradient by r.scale
// as it is read). r.clipped says whether a coefficient other than 1 applies. The
// same arguments, checks and policies as clip_by_global_norm.
template <class Group>
clip_result clip_coefficient(const Group& group, double max_norm, const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_coefficient: not a group of buffers (see gradclip/buffer.hpp)");
  detail::check_clip_options(max_norm, options);
  const double total = detail::total_norm(group, detail::kernels::norm_spec::from(options.norm_type));
  return detail::decide(group, max_norm, total, options);
}

// Clips every buffer of a group by its own norm (Keras' clipnorm): max_norms is one
// limit for all, or a range with one limit per buffer. Returns one result per
// buffer, in group order. Under propagate and skip each buffer is measured and
// scaled while it is in cache; under error every norm is computed first, so a
// non-finite buffer anywhere throws before any buffer is written.
// Throws std::invalid_argument (a bad limit, or as many limits as buffers is not
// the case) before modifying anything.
template <class Group, class MaxNorms>
std::vector<clip_result> clip_each_by_norm(Group&& group, const MaxNorms& max_norms,
                                           const clip_options& options = {}) {
  static_assert(is_group_v<Group> || is_buffer_v<Group>,
                "gradclip::clip_each_by_norm: not a group of buffers (see gradclip/buffer.hpp)");
  std::size_t count = 0;
  detail::for_each_buffer(group, [&count](std::size_t, const auto&) { ++count; });
  std::vector<double> limits;
  if constexpr (std::is_arithmetic_v<MaxNorms>) {
    detail::check_max_norm(static_cast<double>(max_norms));  // also for an empty group
    limits.assign(count, static_cast<double>(max_norms));
  } else {
    for (const auto& m : max_norms) limits.push_back(static_cast<double>(m));
    if (limits.size() != count) {
      throw std::invalid_argument("gradclip::clip_each_by_norm: " + std::to_string(limits.size()) + " limits for " +
                                  std::to_string(count) + " buffers");
    }
  }
  for (double m : limits) detail::check_max_norm(m);
  detail::check_norm_type(options.norm_type);
  detail::check_eps(options.eps);
  detail::check_policy(options.on_nonfinite);
  auto limit = [&limits](std::size_t i) { return limits[i]; };

  const auto spec = detail::kernels::norm_spec::from(options.norm_type);
  std::vector<clip_result> results(count);
  if (options.on_nonfinite == nonfinite::error) {
    detail::for_each_buffer(group, [&](std::size_t i, const auto& v) {
      const double total = detail::total_norm(v, spec);
      if (!detail::is_finite(total)) throw nonfinite_error(total, i);
      results[i] = detail::decide(v, limit(i), total, options);
    });
    detail::for_each_buffer(group, [&](std::size_t i, const auto& v) {
      if (results[i].clipped) detail::scale_all(v, detail::applied_coefficient(results[i], limit(i), options));
    });
  } else {
    detail::for_each_buffer(group, [&](std::size_t i, const auto& v) {
      results[i] = detail::clip_given_norm(v, limit(i), detail::total_norm(v, spec), options);
    });
  }
  return results;
}

// A fixed clipping configuration for a training loop:
//   gradclip::norm_clipper clip(1.0);   ...   auto r = clip(grads);
class norm_clipper {
 public:
  explicit norm_clipper(double max_norm, const clip_options& options = {}) : max_norm_(max_norm), options_(options) {
    detail::check_clip_options(max_norm, options);
  }

  template <class Group>
  clip_result operator()(Group&& group) const {
    return clip_by_global_norm(std::forward<Group>(group), max_norm_, options_);
  }

  double max_norm() const noexcept { return max_norm_; }
  const clip_options& options() const noexcept { return options_; }

 private:
  double max_norm_;
  clip_options options_;
};

}  // namespace gradclip

#endif  // GRADCLIP_CLIP_NORM_HPP
