// The pipeline's contract, path by path: every write rounded once (against an exact
// binary128 reference), the clip bound with coefficients below DBL_MIN and FLT_MIN
// for every function that clips, one options core that rejects what it should, and
// the element-operation implementation this build runs.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

#if defined(__SIZEOF_FLOAT128__)
__extension__ typedef __float128 quad;  // 113 bits: every product and sum below is exact in it
#define GRADCLIP_TEST_QUAD 1
#elif LDBL_MANT_DIG >= 113
typedef long double quad;
#define GRADCLIP_TEST_QUAD 1
#else
#define GRADCLIP_TEST_QUAD 0
#endif

template <class T>
std::uint64_t bits(T x) {
  std::uint64_t u = 0;
  std::memcpy(&u, &x, sizeof x);
  return u;
}

template <class T>
T from_bits(std::uint64_t u) {
  T x;
  std::memcpy(static_cast<void*>(&x), &u, sizeof x);
  return x;
}

// The next value of T toward +inf / -inf (finite, sign-magnitude stepping).
template <class T>
T step(T x, bool up) {
  constexpr std::uint64_t sign = std::uint64_t{1} << (8 * sizeof(T) - 1);
  std::uint64_t u = bits(x);
  if ((u & ~sign) == 0) return from_bits<T>(up ? 1 : sign | 1);
  const bool negative = (u & sign) != 0;
  u = (up != negative) ? u + 1 : u - 1;
  return from_bits<T>(u);
}

#if GRADCLIP_TEST_QUAD
template <class T>
quad exact(T x) {
  return static_cast<quad>(ref::value(x));
}

// The value of T nearest to y, ties to even, by comparing exact distances (for y
// within T's finite range).
template <class T>
T nearest_exact(quad y) {
  T c = ref::from_double<T>(static_cast<double>(y));
  for (int pass = 0; pass < 3; ++pass) {
    T best = c;
    for (T cand : {step(c, false), step(c, true)}) {
      const quad dc = exact(cand) > y ? exact(cand) - y : y - exact(cand);
      const quad db = exact(best) > y ? exact(best) - y : y - exact(best);
      if (dc < db || (dc == db && (bits(cand) & 1) == 0)) best = cand;
    }
    c = best;
  }
  return c;
}
#endif

using ref::inf;

template <class T>
std::vector<T> moderate_values(std::size_t n, std::uint64_t seed) {
  return ref::random_values<T>(n, seed);
}

// Long-double L2 norm of a buffer.
template <class T>
long double l2(const std::vector<T>& x) {
  long double s = 0;
  for (T e : x) s += ref::value(e) * ref::value(e);
  return std::sqrt(s);
}

template <class T>
double round_tolerance() {
  return std::is_same_v<T, double> ? 1e-12 : 0x1p-22;
}

}  // namespace

#if GRADCLIP_TEST_QUAD
TEMPLATE_TEST_CASE("every write by a coefficient is the correctly rounded x * c", "[pipeline][rounding]", float,
                   double, Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  std::mt19937_64 rng(7);
  const std::vector<T> x = moderate_values<T>(2000, 11);
  std::vector<double> coefficients = {0x1.66666654c94ecp-1, 0.7, 0.1, 1.0 / 3.0};
  for (int i = 0; i < 40; ++i) coefficients.push_back(static_cast<double>(rng() >> 11) * 0x1p-53);
  if constexpr (std::is_same_v<T, float>) {
    coefficients.push_back(0x1.3p-110);  // below 2^-102: applied in double, correctly rounded
  }
  if constexpr (std::is_same_v<T, double>) {
    coefficients.push_back(0x1.8p-1040);  // below DBL_MIN: the split coefficient
    coefficients.push_back(3e-320);
  }
  for (double c : coefficients) {
    if (!(c > 0.0 && c < 1.0)) continue;
    // The applied rule for float: the coefficient rounded to float once (above 2^-102).
    const bool float_rounded = std::is_same_v<T, float> && c >= 0x1p-102;
    const quad applied = float_rounded ? static_cast<quad>(static_cast<float>(c)) : static_cast<quad>(c);
    SECTION("clip_with_norm") {
      std::vector<T> y = x;
      const auto r = gradclip::clip_with_norm(y, c, 1.0, {2.0, 0.0});
      REQUIRE(r.clipped);
      for (std::size_t i = 0; i < x.size(); ++i) {
        INFO("x = " << ref::value(x[i]) << ", c = " << c);
        REQUIRE(bits(y[i]) == bits(nearest_exact<T>(exact(x[i]) * applied)));
      }
    }
    SECTION("unscale_and_clip, only unscaling") {
      if (c < 0x1p-126) continue;  // loss scales below FLT_MIN are refused
      std::vector<T> y = x;
      const double loss_scale = 1.0 / c;
      gradclip::unscale_and_clip(y, loss_scale, inf);
      const double k = 1.0 / loss_scale;
      const bool narrow = std::is_same_v<T, float> && k >= 0x1p-102;
      const quad a = narrow ? static_cast<quad>(static_cast<float>(k)) : static_cast<quad>(k);
      for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(bits(y[i]) == bits(nearest_exact<T>(exact(x[i]) * a)));
    }
  }
  SECTION("the issue's example: half 0x1.ff4p-1 times 0x1.66666654c94ecp-1") {
    if constexpr (std::is_same_v<T, Eigen::half>) {
      std::vector<T> y{T(0x1.ff4p-1f)};
      gradclip::clip_with_norm(y, 0x1.66666654c94ecp-1, 1.0, {2.0, 0.0});
      REQUIRE(static_cast<float>(y[0]) == 0x1.65cp-1f);
    }
  }
}

// A unit with two non-zero elements a, b has norm sqrt(a * a + b * b) rounded as
// every path computes it (exact squares, the one sum rounded once in double, zeros
// adding nothing), so its coefficient max_norm / norm can be recomputed.
TEMPLATE_TEST_CASE("unit-wise writes (along and across the storage order) are rounded once", "[pipeline][rounding]",
                   float, double, Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  using Col = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  using Row = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Index rows = 3000, cols = 7;
  // At most 24 significant bits, so that every square is exact in double and the
  // norm is the same whether a build fuses a * a + b * b or not.
  const std::vector<float> w = moderate_values<float>(2 * static_cast<std::size_t>(rows), 5);
  std::vector<T> v;
  for (float e : w) v.push_back(ref::from_double<T>(e));
  std::mt19937_64 rng(3);
  Col m = Col::Zero(rows, cols);
  std::vector<double> row_norm(static_cast<std::size_t>(rows));
  for (Eigen::Index r = 0; r < rows; ++r) {
    const auto i = static_cast<Eigen::Index>(rng() % cols);
    const auto j = (i + 1 + static_cast<Eigen::Index>(rng() % (cols - 1))) % cols;
    const T a = v[2 * static_cast<std::size_t>(r)], b = v[2 * static_cast<std::size_t>(r) + 1];
    m(r, std::min(i, j)) = a;
    m(r, std::max(i, j)) = b;
    const double da = static_cast<double>(ref::value(a)), db = static_cast<double>(ref::value(b));
    row_norm[static_cast<std::size_t>(r)] = std::sqrt(da * da + db * db);
  }
  const double max_norm = 0.3;
  // The exact sums: squares of 24-bit values are exact in double, not in float.
  gradclip::unit_clip_options exact_rows{gradclip::axis::rows, 2.0, 0.0};
  exact_rows.accuracy = gradclip::norm_accuracy::exact;
  auto expected = [&](Eigen::Index r, T x) {
    const double norm = row_norm[static_cast<std::size_t>(r)];
    if (!(norm > max_norm)) return x;
    const double c = max_norm / norm;
    const quad a = std::is_same_v<T, float> ? static_cast<quad>(static_cast<float>(c)) : static_cast<quad>(c);
    return nearest_exact<T>(exact(x) * a);
  };
  auto check = [&](const auto& got) {
    for (Eigen::Index r = 0; r < rows; ++r) {
      for (Eigen::Index k = 0; k < cols; ++k) REQUIRE(bits(got(r, k)) == bits(expected(r, m(r, k))));
    }
  };
  SECTION("across: the rows of a column-major matrix") {
    Col g = m;
    gradclip::clip_units_by_norm(g, max_norm, exact_rows);
    check(g);
  }
  SECTION("along: the rows of a row-major matrix") {
    Row g = m;
    gradclip::clip_units_by_norm(g, max_norm, exact_rows);
    check(g);
  }
  SECTION("AGC, across") {
    Col g = m;
    Col w = Col::Zero(rows, cols);
    for (Eigen::Index r = 0; r < rows; ++r) w(r, 0) = T(1.0f);  // ||W_r|| = 1: max_r = clipping
    gradclip::adaptive_grad_clip(w, g, max_norm, 1e-3);
    check(g);
  }
  SECTION("the accumulated sum: each addition rounded once") {
    Col g = m;
    std::vector<T> sum(static_cast<std::size_t>(cols), T(0.25f));
    std::vector<T> want = sum;
    gradclip::clip_units_and_accumulate(g, inf, sum, {gradclip::axis::rows, 2.0, 0.0});
    for (Eigen::Index r = 0; r < rows; ++r) {
      for (Eigen::Index k = 0; k < cols; ++k) {
        T& d = want[static_cast<std::size_t>(k)];
        d = nearest_exact<T>(exact(d) + exact(m(r, k)));
      }
    }
    for (std::size_t k = 0; k < want.size(); ++k) REQUIRE(bits(sum[k]) == bits(want[k]));
  }
}
#endif  // GRADCLIP_TEST_QUAD

// The norm after clipping is max_norm (eps = 0), up to one rounding per element,
// also when the coefficient is below DBL_MIN (double) or FLT_MIN (float): every
// function that clips.
TEMPLATE_TEST_CASE("the clip bound holds below DBL_MIN and FLT_MIN on every path", "[pipeline][bound]", float,
                   double) {
  using T = TestType;
  const bool is_double = std::is_same_v<T, double>;
  const double big = is_double ? 1e300 : 1e35;       // elements: norm ~ big * sqrt(n)
  const double max_norm = is_double ? 1e-20 : 1e-10;  // coefficient ~1e-322 / ~1e-46
  const double tol = round_tolerance<T>();
  const std::size_t n = 64;
  const std::vector<T> data = ref::random_values<T>(n, 21, big);
  auto within = [&](long double after, double limit) {
    INFO("after " << static_cast<double>(after) << ", limit " << limit);
    CHECK(after <= static_cast<long double>(limit) * (1 + tol));
    CHECK(after >= static_cast<long double>(limit) * (1 - 1e-6));
  };
  const gradclip::clip_options exact{2.0, 0.0};

  SECTION("clip_by_norm, clip_by_global_norm, clip_with_norm, clip_each_by_norm") {
    std::vector<T> a = data, b = data, c = data, d = data;
    gradclip::clip_by_norm(a, max_norm, exact);
    within(l2(a), max_norm);
    std::vector<std::vector<T>> group{b, data};
    gradclip::clip_by_global_norm(group, max_norm, exact);
    within(std::sqrt(l2(group[0]) * l2(group[0]) + l2(group[1]) * l2(group[1])), max_norm);
    gradclip::clip_with_norm(c, max_norm, gradclip::norm(c), exact);
    within(l2(c), max_norm);
    gradclip::clip_each_by_norm(d, max_norm, exact);
    within(l2(d), max_norm);
  }
  SECTION("clip_by_block_rms") {
    std::vector<T> a = data;
    gradclip::clip_by_block_rms(a, max_norm / std::sqrt(static_cast<double>(n)));
    within(l2(a), max_norm);
  }
  SECTION("clip_units_by_norm along and across, and the accumulated sum") {
    using Col = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
    using Row = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Col m(4, 16);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = data[static_cast<std::size_t>(i)];
    Col across = m;
    Row along = m;
    Eigen::Matrix<T, Eigen::Dynamic, 1> sum = Eigen::Matrix<T, Eigen::Dynamic, 1>::Zero(16);
    gradclip::clip_units_by_norm(along, max_norm, {gradclip::axis::rows, 2.0, 0.0});
    gradclip::clip_units_and_accumulate(across, max_norm, sum, {gradclip::axis::rows, 2.0, 0.0});
    for (Eigen::Index r = 0; r < 4; ++r) {
      long double sa = 0, sb = 0;
      for (Eigen::Index k = 0; k < 16; ++k) {
        sa += ref::value(along(r, k)) * ref::value(along(r, k));
        sb += ref::value(across(r, k)) * ref::value(across(r, k));
      }
      within(std::sqrt(sa), max_norm);
      within(std::sqrt(sb), max_norm);
    }
  }
  SECTION("adaptive_grad_clip") {
    std::vector<T> g = data;
    std::vector<T> w(n, T(is_double ? 1e-21 : 1e-12));  // ||W|| * clipping: the limit
    const double clipping = 1e-1;
    gradclip::adaptive_grad_clip(w, g, clipping, 0.0);
    within(l2(g), clipping * static_cast<double>(l2(w)));
  }
  SECTION("unscale_and_clip") {
    std::vector<T> g = data;
    const double loss_scale = 65536.0;
    gradclip::unscale_and_clip(g, loss_scale, max_norm, {2.0, 0.0});
    within(l2(g), max_norm);
  }
  SECTION("auto_clip, zclip, adagc") {
    std::vector<T> g = data;
    gradclip::zclip_options zo;
    zo.max_grad_norm = max_norm;
    zo.eps = 0.0;
    gradclip::zclip z{zo};
    z(g);  // warm-up: clipped to the cap
    within(l2(g), max_norm);

    gradclip::adagc_options ao;
    ao.max_norm = max_norm;
    ao.eps = 0.0;
    gradclip::adagc a{ao};
    std::vector<T> h = data;
    a(h);
    within(l2(h), max_norm);

    gradclip::auto_clip_options co;
    co.eps = 0.0;
    gradclip::auto_clip ac{0.0, co};  // the minimum of the history
    std::vector<T> small(n, T(0));
    small[0] = T(max_norm);
    ac(small);  // history: max_norm
    std::vector<T> k = data;
    ac(k);
    within(l2(k), max_norm);
  }
}

TEST_CASE("every options struct is checked by the one core: policy, eps, norm_type, accuracy", "[pipeline][options]") {
  const auto bad_policy = static_cast<gradclip::nonfinite>(7);
  std::vector<float> g(8, 1.0f), w(8, 1.0f);
  Eigen::MatrixXf m = Eigen::MatrixXf::Ones(3, 4);
  std::vector<std::function<void(const gradclip::clip_options&)>> calls = {
      [&](const gradclip::clip_options& o) { gradclip::clip_by_global_norm(g, 1.0, o); },
      [&](const gradclip::clip_options& o) { gradclip::clip_by_norm(g, 1.0, o); },
      [&](const gradclip::clip_options& o) { gradclip::clip_with_norm(g, 1.0, 2.0, o); },
      [&](const gradclip::clip_options& o) { gradclip::clip_coefficient(g, 1.0, o); },
      [&](const gradclip::clip_options& o) { gradclip::clip_each_by_norm(g, 1.0, o); },
      [&](const gradclip::clip_options& o) { gradclip::norm_clipper(1.0, o); },
      [&](const gradclip::clip_options& o) {
        gradclip::clip_units_by_norm(m, 1.0, {gradclip::axis::rows, o.norm_type, o.eps, o.on_nonfinite});
      },
      [&](const gradclip::clip_options& o) {
        gradclip::unit_norm_clipper(1.0, {gradclip::axis::rows, o.norm_type, o.eps, o.on_nonfinite});
      },
      [&](const gradclip::clip_options& o) {
        gradclip::auto_clip_options a;
        static_cast<gradclip::clip_options&>(a) = o;
        gradclip::auto_clip{10.0, a};
      },
      [&](const gradclip::clip_options& o) {
        gradclip::zclip_options z;
        static_cast<gradclip::clip_options&>(z) = o;
        gradclip::zclip{z};
      },
      [&](const gradclip::clip_options& o) {
        gradclip::adagc_options a;
        static_cast<gradclip::clip_options&>(a) = o;
        gradclip::adagc{a};
      },
      [&](const gradclip::clip_options& o) {
        gradclip::unscale_and_clip(g, 1.0, 1.0, {o.norm_type, o.eps, o.on_nonfinite});
      },
  };
  const std::vector<float> before = g;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    INFO("call " << i);
    CHECK_THROWS_AS(calls[i]({2.0, 1e-6, bad_policy}), std::invalid_argument);
    CHECK_THROWS_AS(calls[i]({2.0, -1.0}), std::invalid_argument);
    CHECK_THROWS_AS(calls[i]({2.0, inf}), std::invalid_argument);
    CHECK_THROWS_AS(calls[i]({0.0, 1e-6}), std::invalid_argument);
    CHECK_THROWS_AS(calls[i]({ref::nan, 1e-6}), std::invalid_argument);
    CHECK_NOTHROW(calls[i]({2.0, 1e-6, gradclip::nonfinite::skip}));
    g = before;
  }
  // The policy-only options: AGC and block RMS.
  gradclip::agc_options ao;
  ao.on_nonfinite = bad_policy;
  CHECK_THROWS_AS(gradclip::adaptive_grad_clip(w, g, 0.01, 1e-3, ao), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::agc(0.01, 1e-3, ao), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_block_rms(g, 1.0, {bad_policy}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::block_rms_clipper(1.0, {bad_policy}), std::invalid_argument);
  // accuracy: not a norm_accuracy value, through the options and the norm calls.
  const auto bad_accuracy = static_cast<gradclip::norm_accuracy>(9);
  gradclip::clip_options bad;
  bad.accuracy = bad_accuracy;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    if (i == 6 || i == 7 || i == 11) continue;  // those calls build their own options from the core's fields
    INFO("call " << i);
    CHECK_THROWS_AS(calls[i](bad), std::invalid_argument);
  }
  gradclip::unit_clip_options units{gradclip::axis::rows};
  units.accuracy = bad_accuracy;
  CHECK_THROWS_AS(gradclip::clip_units_by_norm(m, 1.0, units), std::invalid_argument);
  gradclip::unscale_options unscale;
  unscale.accuracy = bad_accuracy;
  CHECK_THROWS_AS(gradclip::unscale_and_clip(g, 1.0, 1.0, unscale), std::invalid_argument);
  gradclip::agc_options agc_bad;
  agc_bad.accuracy = bad_accuracy;
  CHECK_THROWS_AS(gradclip::adaptive_grad_clip(w, g, 0.01, 1e-3, agc_bad), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::norm(g, 2.0, bad_accuracy), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::global_norm(g, 2.0, bad_accuracy), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::partial_norm(g, 2.0, bad_accuracy), std::invalid_argument);
  CHECK(g == before);
}

TEST_CASE("unscale_and_clip follows its policy on non-finite gradients", "[pipeline][options]") {
  std::vector<float> g(16, 2.0f);
  g[3] = std::numeric_limits<float>::infinity();
  const std::vector<float> before = g;
  const auto r = gradclip::unscale_and_clip(g, 4.0, 1.0);  // default: skip
  CHECK(r.found_inf);
  CHECK(g == before);
  CHECK_THROWS_AS(gradclip::unscale_and_clip(g, 4.0, 1.0, {2.0, 1e-6, gradclip::nonfinite::error}),
                  gradclip::nonfinite_error);
  CHECK(g == before);
  const auto p = gradclip::unscale_and_clip(g, 4.0, 1.0, {2.0, 1e-6, gradclip::nonfinite::propagate});
  CHECK(p.found_inf);
  CHECK(p.clipped);
  CHECK(g[0] == 0.0f);          // finite * 0
  CHECK(std::isnan(g[3]));      // inf * 0
}

TEST_CASE("unit-wise errors name the unit", "[pipeline][options]") {
  Eigen::MatrixXf m = Eigen::MatrixXf::Ones(4, 3);
  m(2, 1) = std::numeric_limits<float>::quiet_NaN();
  try {
    gradclip::clip_units_by_norm(m, 1.0, {gradclip::axis::rows, 2.0, 1e-6, gradclip::nonfinite::error});
    FAIL("no exception");
  } catch (const gradclip::nonfinite_error& e) {
    CHECK(e.tensor_index() == 2);
    CHECK(std::string(e.what()).find("unit 2") != std::string::npos);
  }
}

TEST_CASE("the element operations this build runs", "[pipeline][arch]") {
  const std::string name = gradclip::detail::kernels::arch_name();
  WARN("element operations: " << name);
#if defined(GRADCLIP_NO_SIMD)
  CHECK(name == "scalar");
#elif defined(__AVX512F__)
  CHECK(name == "avx512");
#elif defined(__AVX__)
  CHECK((name == "avx2" || name == "avx"));
#elif defined(__SSE2__)
  CHECK(name == "sse2");
#endif
}
