// gradclip kernels: partial norms, the currency between the stages.
//
// A partial is what measure produces for one segment, for a group, or for one
// process's shard: norm^p = scale^p * sum, or max |x| for L-inf. Partials combine
// (norm_accumulator) in a fixed order, and the same combination is what
// distributed training all-reduces (gradclip::combine_partials, gradclip/mpi.hpp).
#ifndef GRADCLIP_DETAIL_KERNELS_PARTIALS_HPP
#define GRADCLIP_DETAIL_KERNELS_PARTIALS_HPP

#include <algorithm>
#include <cmath>
#include <limits>

#include "../float_bits.hpp"

namespace gradclip::detail::kernels {

enum class norm_kind { l1, l2, linf, lp };

// Which norm: p = norm_type; kind picks the specialised kernel. exact: sums of
// float, half and bfloat16 terms in double lanes (1e-14) instead of blocks of float
// lanes (1e-6; arch/target.hpp); double input is summed in double either way.
struct norm_spec {
  norm_kind kind;
  double p;
  bool exact = false;

  static norm_spec from(double norm_type, bool exact = false) noexcept {
    if (norm_type == 1.0) return {norm_kind::l1, 1.0, exact};
    if (norm_type == 2.0) return {norm_kind::l2, 2.0, exact};
    if (is_inf(norm_type)) return {norm_kind::linf, norm_type, exact};
    return {norm_kind::lp, norm_type, exact};
  }

  // The same norm summed exactly.
  norm_spec as_exact() const noexcept { return {kind, p, true}; }
};

// One buffer's contribution to a norm. For finite p: norm^p = scale^p * sum, where
// scale is 1 unless the range-safe pass was needed; then it is a power of two for
// p = 1 and 2, and max |x| for general p. For L-inf:
// sum holds max |x| and scale is 1. A NaN or infinite sum marks a non-finite input.
struct norm_partial {
  double scale = 1.0;
  double sum = 0.0;
};

// Neumaier's compensated sum. value() of a non-finite sum is that sum: the
// compensation term of an infinity is NaN and must not leak into the result.
struct compensated_sum {
  double sum = 0.0;
  double comp = 0.0;

  void add(double v) noexcept {
    const double t = sum + v;
    if (std::fabs(sum) >= std::fabs(v)) {
      comp += (sum - t) + v;
    } else {
      comp += (v - t) + sum;
    }
    sum = t;
  }
  double value() const noexcept { return is_finite(sum) ? sum + comp : sum; }
};

class norm_accumulator {
 public:
  explicit norm_accumulator(const norm_spec& spec) noexcept : spec_(spec) {}

  void add(const norm_partial& part) noexcept {
    if (is_nan(part.sum)) {
      nan_ = true;
    } else if (is_inf(part.sum)) {
      inf_ = true;
    } else if (spec_.kind == norm_kind::linf) {
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
  norm_partial partial() const noexcept {
    if (nan_) return {1.0, std::numeric_limits<double>::quiet_NaN()};
    if (inf_) return {1.0, std::numeric_limits<double>::infinity()};
    if (spec_.kind == norm_kind::linf) return {1.0, max_};
    return {scale_, sum_.value()};
  }

  // The norm of everything added: NaN if any input was NaN, else inf if any was
  // infinite (as PyTorch's sum of |x|^p gives), else scale * sum^(1/p).
  double total() const noexcept { return finish(partial(), spec_); }

  static double finish(const norm_partial& part, const norm_spec& spec) noexcept {
    if (!is_finite(part.sum) || spec.kind == norm_kind::linf) return part.sum;
    return part.scale * root(part.sum, spec);
  }

  // sum^(1/p)
  static double root(double sum, const norm_spec& spec) noexcept {
    switch (spec.kind) {
      case norm_kind::l1:
        return sum;
      case norm_kind::l2:
        return std::sqrt(sum);
      default:
        return std::pow(sum, 1.0 / spec.p);
    }
  }

 private:
  // ratio^p for a ratio of two powers of two (exact for p = 1 and 2).
  double power(double ratio) const noexcept {
    switch (spec_.kind) {
      case norm_kind::l1:
        return ratio;
      case norm_kind::l2:
        return ratio * ratio;
      default:
        return std::pow(ratio, spec_.p);
    }
  }

  norm_spec spec_;
  compensated_sum sum_;
  double scale_ = 1.0;
  double max_ = 0.0;
  bool nan_ = false;
  bool inf_ = false;
};

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_PARTIALS_HPP
