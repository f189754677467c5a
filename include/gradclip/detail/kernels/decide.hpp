// gradclip kernels, stage 2: decide. From a norm and a limit, what apply does:
// keep the data, scale it by a coefficient, or fail (the caller, which owns the
// data, builds the exception: it knows which buffer or unit to name).
//
// The rule is PyTorch's, coefficient = max_norm / (norm + eps) applied when < 1,
// with two variations a limit can ask for: a floor under the divisor and a strict
// test (AGC: max_norm / max(norm, 1e-6), a norm at or below max_norm never
// written). Non-finite norms follow the policy; under propagate the coefficient
// is PyTorch's IEEE result (NaN, or 0 for an infinite norm under a finite
// limit), decided by bits so -ffinite-math-only cannot fold it away.
#ifndef GRADCLIP_DETAIL_KERNELS_DECIDE_HPP
#define GRADCLIP_DETAIL_KERNELS_DECIDE_HPP

#include <limits>

#include "../../options.hpp"
#include "../float_bits.hpp"
#include "coefficient.hpp"

namespace gradclip::detail::kernels {

struct clip_limit {
  double max_norm;
  double eps = 0.0;     // added to the norm before dividing
  double floor = 0.0;   // the divisor is at least this
  bool strict = false;  // a norm <= max_norm is kept whatever the quotient
};

enum class verdict { keep, scale, fail };

struct decision {
  verdict action = verdict::keep;
  coefficient k;          // what apply multiplies by, when action == scale
  double quotient = 1.0;  // max_norm / divisor rounded once (k.value() rounds twice below DBL_MIN)

  bool scales() const noexcept { return action == verdict::scale; }
  // The factor a clip_result reports: 1 unless the data is scaled.
  double reported() const noexcept { return scales() ? quotient : 1.0; }
};

inline decision decide(double norm, const clip_limit& limit, nonfinite policy) noexcept {
  const double max_norm = limit.max_norm;
  if (!is_finite(norm) || is_nan(max_norm)) {
    if (policy == nonfinite::error) return {verdict::fail, {}};
    if (policy == nonfinite::skip) return {};
    if (limit.strict && norm <= max_norm) return {};  // inf within an infinite limit
    const bool nan_coefficient = is_nan(norm) || is_nan(max_norm) || is_inf(max_norm);
    const double c = nan_coefficient ? std::numeric_limits<double>::quiet_NaN() : 0.0;
    return {verdict::scale, {c}, c};
  }
  if (limit.strict && norm <= max_norm) return {};
  double divisor = norm + limit.eps;
  if (divisor < limit.floor) divisor = limit.floor;
  // A zero norm with eps = 0 would give 0/0: the data is all zeros, nothing to do.
  if (divisor == 0.0) return {};
  const coefficient k = coefficient{max_norm}.over(divisor);
  if (!k.changes_data()) return {};
  return {verdict::scale, k, max_norm / divisor};
}

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_DECIDE_HPP
