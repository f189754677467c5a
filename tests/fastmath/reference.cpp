// Compiled without -ffast-math (see CMakeLists.txt): the ground truth.
#include "reference.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace fm {

double make_nan() { return std::numeric_limits<double>::quiet_NaN(); }
double make_inf() { return std::numeric_limits<double>::infinity(); }
float make_nanf() { return std::numeric_limits<float>::quiet_NaN(); }
float make_inff() { return std::numeric_limits<float>::infinity(); }
bool is_nan(double x) { return std::isnan(x); }
bool is_inf(double x) { return std::isinf(x); }
bool is_nanf(float x) { return std::isnan(x); }
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool same_bytes(const void* a, const void* b, std::size_t n) { return std::memcmp(a, b, n) == 0; }

template <class T>
double norm_impl(const T* x, std::size_t n, double p) {
  long double m = 0;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<long double>(x[i])));
  if (p == 0 || m == 0) return static_cast<double>(m);
  std::vector<long double> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = std::pow(std::fabs(static_cast<long double>(x[i])) / m, static_cast<long double>(p));
  // pairwise
  for (std::size_t w = 1; w < n; w *= 2)
    for (std::size_t i = 0; i + w < n; i += 2 * w) t[i] += t[i + w];
  return static_cast<double>(m * std::pow(t[0], 1.0L / static_cast<long double>(p)));
}
double norm_ref(const float* x, std::size_t n, double p) { return norm_impl(x, n, p); }
double norm_ref(const double* x, std::size_t n, double p) { return norm_impl(x, n, p); }
double rel_err(double got, double want) { return want == 0 ? (got == 0 ? 0 : 1) : std::fabs((got - want) / want); }

}  // namespace fm
