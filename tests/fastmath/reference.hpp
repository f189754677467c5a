// The fast-math test's ground truth, compiled WITHOUT -ffast-math (reference.cpp):
// classification by bits and a long-double norm, so that the flags under test cannot
// fold the checks themselves away.
#ifndef GRADCLIP_TESTS_FASTMATH_REFERENCE_HPP
#define GRADCLIP_TESTS_FASTMATH_REFERENCE_HPP

#include <cstddef>

namespace fm {

double make_nan();
double make_inf();
float make_nanf();
float make_inff();
bool is_nan(double x);
bool is_inf(double x);
bool is_nanf(float x);
bool same_bits(double a, double b);
bool same_bytes(const void* a, const void* b, std::size_t n);
// ||x||_p in long double (x finite), p = 0 for max |x|.
double norm_ref(const float* x, std::size_t n, double p);
double norm_ref(const double* x, std::size_t n, double p);
double rel_err(double got, double want);

}  // namespace fm

#endif
