// gradclip kernels: a clipping coefficient that keeps its precision below DBL_MIN.
//
// decide produces it and apply multiplies by it. As one double, a coefficient
// below DBL_MIN (a norm of 1e300 clipped to 1e-20) would be subnormal, with too
// few bits to keep the norm bound on double data; it is then held as a
// full-precision factor and the tail 2^-1022.
#ifndef GRADCLIP_DETAIL_KERNELS_COEFFICIENT_HPP
#define GRADCLIP_DETAIL_KERNELS_COEFFICIENT_HPP

#include <cmath>
#include <limits>
#include <type_traits>

#include "../element.hpp"
#include "../float_bits.hpp"

namespace gradclip::detail::kernels {

struct coefficient {
  static constexpr double small_tail = 0x1p-1022;

  double factor = 1.0;  // the coefficient itself, or, with tail 2^-1022, the coefficient * 2^1022
  double tail = 1.0;    // 1 or small_tail

  constexpr coefficient() noexcept = default;
  constexpr coefficient(double value) noexcept : factor(value) {}  // NOLINT(google-explicit-constructor)

  double value() const noexcept { return factor * tail; }  // rounded: for reporting, never for applying
  bool is_one() const noexcept { return factor == 1.0 && tail == 1.0; }
  // Whether applying it changes the data: below 1, or NaN (under nonfinite::propagate).
  bool changes_data() const noexcept { return tail != 1.0 || is_nan(factor) || factor < 1.0; }

  // This coefficient divided by d (> 0), exact-range: the quotient is rounded
  // once, as factor / d, and held as factor * 2^-1022 when it is below DBL_MIN.
  coefficient over(double d) const noexcept {
    if (tail == 1.0) {
      const double q = factor / d;
      if (!(q > 0.0 && q < std::numeric_limits<double>::min()) || !is_finite(d)) return {q};
    }
    int ef = 0, ed = 0;
    const double r = std::frexp(factor, &ef) / std::frexp(d, &ed);  // the same rounding as factor / d
    const int e = ef - ed - (tail == 1.0 ? 0 : 1022);
    if (e >= -1021) return {std::ldexp(r, e)};  // normal again (r in (0.5, 2))
    // Below 2^-2044 even the factor is subnormal: every element then rounds to
    // (nearly) zero, which keeps the bound.
    coefficient k;
    k.factor = std::ldexp(r, e + 1022);
    k.tail = small_tail;
    return k;
  }
};

// Smallest coefficient a float multiply applies with full relative precision:
// below it the float coefficient would lose bits and the norm bound with them.
inline constexpr double min_float_coefficient = 0x1p-102;

// How a coefficient multiplies one element of T, the one rule every write by a
// coefficient follows (apply's runs, the unit sweeps):
//   double: x * c, rounded once; below DBL_MIN (x * factor, rounded to odd) * 2^-1022,
//           rounded once more into the subnormal result: the correctly rounded x * c;
//   float:  x * float(c) in float (the coefficient rounded to nearest float once, the
//           product once: SIMD at memory speed); below 2^-102 the correctly rounded x * c;
//   half, bfloat16: the correctly rounded x * c.
template <class T>
class element_scaler {
 public:
  element_scaler() noexcept = default;  // multiplies by 1
  explicit element_scaler(const coefficient& k) noexcept : k_(k) {
    if constexpr (std::is_same_v<T, float>) {
      narrow_ = !is_nan(k.value()) && k.value() >= min_float_coefficient;  // NaN by bits (fast-math)
      cf_ = element_traits<float>::nearest(k.value());
    }
  }

  T operator()(T x) const noexcept {
    if constexpr (std::is_same_v<T, double>) {
      if (k_.tail == 1.0) return x * k_.factor;
      const double hi = x * k_.factor;
      return round_to_odd(hi, std::fma(x, k_.factor, -hi)) * k_.tail;
    } else if constexpr (std::is_same_v<T, float>) {
      return narrow_ ? x * cf_ : times(x, k_.value());
    } else {
      return times(x, k_.value());
    }
  }

  // Whether the whole run may be multiplied by factor() in T's own arithmetic
  // (the vector path, arch::scale): the same bits as operator() element by element.
  // Half and bfloat16: whether arch::scale_rounded by value() may run (a finite
  // coefficient; it computes operator()'s bits in vectors).
  bool uniform() const noexcept {
    if constexpr (std::is_same_v<T, double>) return k_.tail == 1.0;
    if constexpr (std::is_same_v<T, float>) return narrow_;
    return is_finite(k_.value());
  }
  double value() const noexcept { return k_.value(); }
  T factor() const noexcept {
    if constexpr (std::is_same_v<T, double>) {
      return k_.factor;
    } else if constexpr (std::is_same_v<T, float>) {
      return cf_;
    } else {
      return T{};  // never uniform
    }
  }

 private:
  coefficient k_;
  float cf_ = 1.0f;
  bool narrow_ = true;
};

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_COEFFICIENT_HPP
