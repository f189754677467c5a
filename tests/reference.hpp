// Independent reference arithmetic for the tests: long double, element by element,
// with no code shared with the library.
#ifndef GRADCLIP_TESTS_REFERENCE_HPP
#define GRADCLIP_TESTS_REFERENCE_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <gradclip/options.hpp>

namespace ref {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double nan = std::numeric_limits<double>::quiet_NaN();

// Element -> long double, through Eigen's own conversions for the 16-bit types.
template <class T>
long double value(T x) {
  if constexpr (std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>) {
    return static_cast<long double>(static_cast<float>(x));
  } else {
    return static_cast<long double>(x);
  }
}

template <class T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, Eigen::half> || std::is_same_v<T, Eigen::bfloat16>) {
    return T(static_cast<float>(v));
  } else {
    return static_cast<T>(v);
  }
}

// Pairwise sum: the reference's own rounding stays far below the tolerances.
inline long double pairwise(const long double* x, std::size_t n) {
  if (n <= 8) {
    long double s = 0;
    for (std::size_t i = 0; i < n; ++i) s += x[i];
    return s;
  }
  return pairwise(x, n / 2) + pairwise(x + n / 2, n - n / 2);
}

// ||x||_p of the values, long double throughout; NaN if any NaN, else inf if any inf.
inline long double norm(const std::vector<long double>& x, double p) {
  bool has_nan = false, has_inf = false;
  for (long double v : x) {
    has_nan = has_nan || std::isnan(v);
    has_inf = has_inf || std::isinf(v);
  }
  if (has_nan) return std::numeric_limits<long double>::quiet_NaN();
  if (has_inf) return std::numeric_limits<long double>::infinity();
  if (std::isinf(p)) {
    long double m = 0;
    for (long double v : x) m = std::max(m, std::fabs(v));
    return m;
  }
  std::vector<long double> t(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) t[i] = std::pow(std::fabs(x[i]), static_cast<long double>(p));
  const long double s = pairwise(t.data(), t.size());
  return std::pow(s, 1.0L / static_cast<long double>(p));
}

template <class T>
std::vector<long double> values(const T* x, std::size_t n) {
  std::vector<long double> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = value(x[i]);
  return v;
}

// The library's bound on the relative error of a norm of T data (gradclip/options.hpp):
// the L2 and L1 norms of float, half and bfloat16 at the default accuracy are summed
// in float lanes of at most 16 terms (gamma_16 / 2 = 4.8e-7 for L2, 15 * 2^-24 for
// L1); everything else in double lanes (1e-14; 1e-13 for other p, pow's rounding).
template <class T>
double norm_bound(double p, gradclip::norm_accuracy accuracy = gradclip::norm_accuracy::fast) {
  const bool float_lanes = !std::is_same_v<T, double> && accuracy == gradclip::norm_accuracy::fast;
  if (float_lanes && p == 2.0) return 4.8e-7;
  if (float_lanes && p == 1.0) return 9e-7;
  return (p == 1.0 || p == 2.0) ? 1e-14 : 1e-13;
}

inline double rel_err(double got, long double want) {
  if (want == 0) return got == 0 ? 0.0 : inf;
  return static_cast<double>(std::fabs((static_cast<long double>(got) - want) / want));
}

// Same bits, NaN == NaN. (x87 long double has padding bytes: compare values.)
template <class T>
bool same_bits(const T& a, const T& b) {
  if constexpr (std::is_same_v<T, long double>) {
    return (a == b && std::signbit(a) == std::signbit(b)) || (std::isnan(a) && std::isnan(b));
  } else {
    return std::memcmp(&a, &b, sizeof(T)) == 0;
  }
}

// Deterministic values of mixed sign and magnitude.
template <class T>
std::vector<T> random_values(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::vector<T> v(n);
  for (auto& e : v) {
    const double u = static_cast<double>(rng() >> 11) * 0x1p-53;  // [0, 1)
    const double mag = std::ldexp(u + 0.5, static_cast<int>(rng() % 9) - 4);
    e = from_double<T>((rng() & 1) ? scale * mag : -scale * mag);
  }
  return v;
}

// Of an Eigen matrix: L2 norm, sum, and element-wise closeness, in long double. (Eigen's own vectorised
// reductions trip GCC 12's false maybe-uninitialized warning under AVX-512.)
template <class X>
double norm2(const X& x) {
  std::vector<long double> v;
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    for (Eigen::Index c = 0; c < x.cols(); ++c) v.push_back(ref::value(x(r, c)));
  return static_cast<double>(ref::norm(v, 2.0));
}
template <class X>
double sum_of(const X& x) {
  long double s = 0;
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    for (Eigen::Index c = 0; c < x.cols(); ++c) s += ref::value(x(r, c));
  return static_cast<double>(s);
}
template <class X, class Y>
bool near(const X& x, const Y& y, double rel) {
  if (x.rows() != y.rows() || x.cols() != y.cols()) return false;
  for (Eigen::Index r = 0; r < x.rows(); ++r)
    for (Eigen::Index c = 0; c < x.cols(); ++c) {
      const long double a = ref::value(x(r, c)), b = ref::value(y(r, c));
      if (std::fabs(a - b) > rel * std::max(std::fabs(a), std::fabs(b))) return false;
    }
  return true;
}

// Matrices of either storage order, for the unit-wise tests.
template <class T>
using col_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;
template <class T>
using row_major = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// |got - want| in units in the last place of T at want (want exact; T's subnormal
// step below its normal range).
template <class T>
double ulp_distance(T got, long double want) {
  const long double g = value(got);
  if (g == want) return 0;
  int digits, min_exp;
  if constexpr (std::is_same_v<T, Eigen::half>) {
    digits = 11, min_exp = -14;
  } else if constexpr (std::is_same_v<T, Eigen::bfloat16>) {
    digits = 8, min_exp = -126;
  } else {
    digits = std::numeric_limits<T>::digits, min_exp = std::numeric_limits<T>::min_exponent - 1;
  }
  const long double ulp = std::ldexp(1.0L, std::max(std::ilogb(static_cast<double>(want)), min_exp) - (digits - 1));
  return static_cast<double>(std::fabs(g - want) / ulp);
}

// Whether X is an Eigen dense object.
template <class X>
constexpr bool is_eigen = std::is_base_of_v<Eigen::DenseBase<std::decay_t<X>>, std::decay_t<X>>;

}  // namespace ref

#endif
