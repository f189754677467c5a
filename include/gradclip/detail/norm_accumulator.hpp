// gradclip internals: combining per-buffer partials into one total norm, in group
// order. This is the step distributed training repeats across ranks.
#ifndef GRADCLIP_DETAIL_NORM_ACCUMULATOR_HPP
#define GRADCLIP_DETAIL_NORM_ACCUMULATOR_HPP

#include <algorithm>
#include <cmath>
#include <limits>

#include "float_bits.hpp"
#include "kernels/kernels.hpp"

namespace gradclip::detail {

class norm_accumulator {
 public:
  explicit norm_accumulator(const kernels::norm_spec& spec) noexcept : spec_(spec) {}

  void add(const kernels::norm_partial& part) noexcept {
    if (is_nan(part.sum)) {
      nan_ = true;
    } else if (is_inf(part.sum)) {
      inf_ = true;
    } else if (spec_.kind == kernels::norm_kind::linf) {
      max_ = part.sum > max_ ? part.sum : max_;
    } else if (part.sum != 0.0) {
      if (sum_.sum == 0.0) {
        scale_ = part.scale;  // the first contribution sets the scale
        sum_ = {};
      } else if (part.scale > scale_) {  // move the running sum onto the larger scale
        const double f = power(scale_ / part.scale);
        sum_.sum *= f;
        sum_.comp *= f;
        scale_ = part.scale;
      }
      double value = part.scale == scale_ ? part.sum : part.sum * power(part.scale / scale_);
      // Partials that are each finite can add past DBL_MAX: rebase everything onto a
      // scale 2^k larger (sums shrink by 2^-kp) before adding.
      if (!(sum_.sum + value <= 0x1p1000)) {
        const int k = static_cast<int>(std::min(std::ceil(600.0 / spec_.p), 1000.0));
        const double grow = std::ldexp(1.0, k);
        const double shrink = power(1.0 / grow);
        sum_.sum *= shrink;
        sum_.comp *= shrink;
        value *= shrink;
        scale_ *= grow;
      }
      sum_.add(value);
    }
  }

  // Everything added, as one partial.
  kernels::norm_partial partial() const noexcept {
    if (nan_) return {1.0, std::numeric_limits<double>::quiet_NaN()};
    if (inf_) return {1.0, std::numeric_limits<double>::infinity()};
    if (spec_.kind == kernels::norm_kind::linf) return {1.0, max_};
    return {scale_, sum_.value()};
  }

  // The norm of everything added: NaN if any input was NaN, else inf if any was
  // infinite (as PyTorch's sum of |x|^p gives), else scale * sum^(1/p).
  double total() const noexcept { return finish(partial(), spec_); }

  static double finish(const kernels::norm_partial& part, const kernels::norm_spec& spec) noexcept {
    if (!is_finite(part.sum) || spec.kind == kernels::norm_kind::linf) return part.sum;
    return part.scale * root(part.sum, spec);
  }

  // sum^(1/p)
  static double root(double sum, const kernels::norm_spec& spec) noexcept {
    switch (spec.kind) {
      case kernels::norm_kind::l1:
        return sum;
      case kernels::norm_kind::l2:
        return std::sqrt(sum);
      default:
        return std::pow(sum, 1.0 / spec.p);
    }
  }

 private:
  // ratio^p for a ratio of two powers of two (exact for p = 1 and 2).
  double power(double ratio) const noexcept {
    switch (spec_.kind) {
      case kernels::norm_kind::l1:
        return ratio;
      case kernels::norm_kind::l2:
        return ratio * ratio;
      default:
        return std::pow(ratio, spec_.p);
    }
  }

  kernels::norm_spec spec_;
  kernels::compensated_sum sum_;
  double scale_ = 1.0;
  double max_ = 0.0;
  bool nan_ = false;
  bool inf_ = false;
};

}  // namespace gradclip::detail

#endif  // GRADCLIP_DETAIL_NORM_ACCUMULATOR_HPP
