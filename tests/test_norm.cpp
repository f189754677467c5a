// Norms against the long-double reference: every element type, every length
// 0..300 at every misalignment, strided Eigen views, groups, and the extremes of
// the floating-point range.
#include <array>
#include <cfloat>
#include <limits>
#include <type_traits>
#include <vector>

#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

const double norm_types[] = {1.0, 2.0, 3.0, 0.5, 3.5, ref::inf};

using gradclip::norm_accuracy;

// Tolerances on the relative error of the norm: ref::norm_bound (float lanes for
// float and 16-bit L1 / L2 by default; double lanes with compensation across blocks
// otherwise; general p adds pow()'s own rounding).
template <class T>
void check_norm_at(const T* x, std::size_t n, double p, norm_accuracy accuracy) {
  const double got = gradclip::norm(gradclip::buffer_view{x, n}, p, accuracy);
  const long double exact = ref::norm(ref::values(x, n), p);
  // The best a double result can be: the exact norm rounded to double (inf when it
  // exceeds DBL_MAX; coarse when it is subnormal).
  const double want = static_cast<double>(exact);
  INFO("n = " << n << ", p = " << p << ", accuracy " << static_cast<int>(accuracy) << ", got " << got << ", want "
              << want);
  if (std::isinf(p) || std::isinf(want) || std::isnan(want)) {
    CHECK(ref::same_bits(got, want));  // max |x| is exact; inf and NaN are results too
  } else if (want < std::numeric_limits<double>::min()) {
    CHECK(std::fabs(got - want) <= std::numeric_limits<double>::denorm_min());
  } else {
    CHECK(ref::rel_err(got, exact) <= ref::norm_bound<T>(p, accuracy));
  }
}

// Both accuracies where they differ (float, half and bfloat16, p = 1 and 2).
template <class T>
void check_norm(const T* x, std::size_t n, double p) {
  check_norm_at(x, n, p, norm_accuracy::fast);
  if (!std::is_same_v<T, double> && (p == 1.0 || p == 2.0)) check_norm_at(x, n, p, norm_accuracy::exact);
}

}  // namespace

TEMPLATE_TEST_CASE("norm matches the long-double reference for every length and misalignment", "[norm]", float,
                   double, Eigen::half, Eigen::bfloat16) {
  const auto data = ref::random_values<TestType>(300 + 16, 42);
  for (double p : {1.0, 2.0, ref::inf, 3.0}) {
    for (std::size_t offset = 0; offset < 16; ++offset) {
      for (std::size_t n = 0; n + offset <= data.size() && n <= 300; ++n) {
        check_norm(data.data() + offset, n, p);
      }
    }
  }
}

TEMPLATE_TEST_CASE("norm of large buffers stays accurate", "[norm]", float, double) {
  for (std::size_t n : {4095u, 4096u, 4097u, 65536u + 33u, 1000003u}) {
    const auto data = ref::random_values<TestType>(n, n);
    for (double p : norm_types) check_norm(data.data(), n, p);
  }
}

TEST_CASE("a float sum that float accumulation gets wrong: exact to double accuracy, else within the bound",
          "[norm]") {
  // 2^24 + many ones: a float accumulator stalls at 2^24 (the ones that share its
  // lane within a block are lost; every later block starts from zero).
  std::vector<float> x(1 << 20, 1.0f);
  x[0] = 4096.0f;  // 4096^2 = 2^24
  const double want = std::sqrt(16777216.0 + static_cast<double>(x.size() - 1));
  CHECK(gradclip::norm(x, 2.0, norm_accuracy::exact) == Approx(want).epsilon(1e-15));
  CHECK(gradclip::norm(x, 1.0, norm_accuracy::exact) == 4096.0 + static_cast<double>(x.size() - 1));
  CHECK(ref::rel_err(gradclip::norm(x), want) <= ref::norm_bound<float>(2.0));
  CHECK(gradclip::norm(x) < want);  // the lost ones show
  CHECK(gradclip::norm(x, 1.0) == 4096.0 + static_cast<double>(x.size() - 1));  // small integers: exact in float
}

TEMPLATE_TEST_CASE("norm is range-safe for any finite input", "[norm][range]", float, double) {
  using T = TestType;
  constexpr T big = std::numeric_limits<T>::max();
  constexpr T tiny = std::numeric_limits<T>::denorm_min();
  constexpr T small = std::numeric_limits<T>::min();
  const std::vector<std::vector<T>> cases = {
      {big, big, big},
      {big, -big / 2, T(1)},
      {tiny, tiny, -tiny},
      {small, tiny, small / 3},
      {T(1e-20), T(-3e-21), T(1e-19)},
      {T(1e19), T(-1e20), T(3e20)},  // squares overflow float, not double
      std::vector<T>(1000, big / 7),
      std::vector<T>(1000, tiny),
  };
  for (const auto& x : cases) {
    for (double p : norm_types) check_norm(x.data(), x.size(), p);
    check_norm(x.data(), x.size(), 8.5);  // |x|^p overflows double for float max
  }
}

TEST_CASE("double norms survive 1e300 and 1e-300 where a plain sum of squares does not", "[norm][range]") {
  const std::vector<double> huge(10, 1e300), small(10, 1e-300), sub(10, 1e-310);
  CHECK(gradclip::norm(huge) == Approx(std::sqrt(10.0) * 1e300).epsilon(1e-15));
  CHECK(gradclip::norm(small) == Approx(std::sqrt(10.0) * 1e-300).epsilon(1e-15));
  CHECK(ref::rel_err(gradclip::norm(sub), ref::norm(ref::values(sub.data(), sub.size()), 2.0)) < 1e-14);
  // Mixed: a huge buffer and a tiny one in one group.
  std::vector<std::vector<double>> group{huge, small, {3.0}};
  std::vector<long double> all;
  for (auto& b : group)
    for (double v : b) all.push_back(v);
  for (double p : norm_types) {
    CHECK(ref::rel_err(gradclip::global_norm(group, p), ref::norm(all, p)) < 1e-13);
  }
}

TEST_CASE("half and bfloat16 accumulate wide: 60000 in fp16 has a finite norm", "[norm][range]") {
  const std::vector<Eigen::half> h(100, Eigen::half(60000.0f));
  CHECK(gradclip::norm(h) == Approx(600000.0).epsilon(1e-15));
  const std::vector<Eigen::bfloat16> b(100, Eigen::bfloat16(3e38f));
  const double b0 = static_cast<double>(static_cast<float>(b[0]));
  CHECK(gradclip::norm(b) == Approx(10.0 * b0).epsilon(1e-15));
  // fp16 subnormals decode exactly.
  std::vector<Eigen::half> s(10);
  for (std::size_t i = 0; i < s.size(); ++i) {
    s[i] = Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(i + 1));
  }
  check_norm(s.data(), s.size(), 2.0);
  check_norm(s.data(), s.size(), 1.0);
}

TEMPLATE_TEST_CASE("non-finite values: NaN wins, then inf, for every norm type", "[norm][nonfinite]", float, double,
                   Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  for (std::size_t n : {1u, 7u, 64u, 5000u}) {
    for (std::size_t pos : {std::size_t{0}, n / 2, n - 1}) {
      auto x = ref::random_values<T>(n, 7 + n);
      for (double p : norm_types) {
        auto y = x;
        y[pos] = ref::from_double<T>(ref::inf);
        CHECK(gradclip::norm(y, p) == ref::inf);
        y[pos] = ref::from_double<T>(-ref::inf);
        CHECK(gradclip::norm(y, p) == ref::inf);
        y[pos] = ref::from_double<T>(ref::nan);
        CHECK(std::isnan(gradclip::norm(y, p)));
        y[0] = ref::from_double<T>(ref::inf);  // inf and NaN together: NaN
        y[n - 1] = ref::from_double<T>(ref::nan);
        CHECK(std::isnan(gradclip::norm(y, p)));
      }
    }
  }
}

TEST_CASE("strided Eigen views: blocks, rows, inner strides", "[norm][eigen]") {
  Eigen::MatrixXd m(37, 23);
  const auto vals = ref::random_values<double>(37 * 23, 3);
  std::memcpy(m.data(), vals.data(), vals.size() * sizeof(double));
  auto check = [](const auto& expr, const Eigen::MatrixXd& copy) {
    std::vector<long double> v;
    for (Eigen::Index j = 0; j < copy.cols(); ++j)
      for (Eigen::Index i = 0; i < copy.rows(); ++i) v.push_back(copy(i, j));
    for (double p : norm_types) {
      INFO("p = " << p);
      CHECK(ref::rel_err(gradclip::norm(expr, p), ref::norm(v, p)) <= 1e-13);
    }
  };
  check(m, m);
  check(m.block(3, 4, 10, 9), m.block(3, 4, 10, 9));
  check(m.row(5), m.row(5));
  check(m.col(7), m.col(7));
  check(m.topRows(1), m.topRows(1));
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = m;
  check(r.block(2, 1, 5, 20), m.block(2, 1, 5, 20));
  check(r.col(3), m.col(3));
  Eigen::Map<const Eigen::VectorXd, 0, Eigen::InnerStride<3>> every_third(m.data(), 100);
  Eigen::MatrixXd third(100, 1);
  for (int i = 0; i < 100; ++i) third(i) = m.data()[3 * i];
  check(every_third, third);
  Eigen::Ref<const Eigen::MatrixXd> ref_block = m.block(1, 1, 30, 3);
  check(ref_block, m.block(1, 1, 30, 3));
  Eigen::ArrayXXd arr = m.array();
  check(arr, m);
}

TEST_CASE("the global norm does not depend on how the data is split into buffers", "[norm][group]") {
  const auto data = ref::random_values<float>(20000, 11);
  const std::vector<long double> all = ref::values(data.data(), data.size());
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<gradclip::buffer_view<const float>> parts;
    std::size_t at = 0;
    while (at < data.size()) {
      const std::size_t len = std::min<std::size_t>(rng() % 3000, data.size() - at);
      parts.emplace_back(data.data() + at, len);
      at += len;
    }
    for (double p : norm_types) {
      INFO("trial " << trial << ", p = " << p);
      const double got = gradclip::global_norm(parts, p);
      if (std::isinf(p)) {
        CHECK(static_cast<long double>(got) == ref::norm(all, p));
      } else {
        CHECK(ref::rel_err(got, ref::norm(all, p)) <= ref::norm_bound<float>(p));
      }
    }
  }
}

TEST_CASE("empty groups and zero-length buffers have norm 0", "[norm][group]") {
  std::vector<Eigen::VectorXf> none;
  CHECK(gradclip::global_norm(none) == 0.0);
  std::vector<Eigen::VectorXf> empties(3);
  for (double p : norm_types) CHECK(gradclip::global_norm(empties, p) == 0.0);
  std::vector<double> zeros(100, 0.0);
  for (double p : norm_types) CHECK(gradclip::norm(zeros, p) == 0.0);
}

TEST_CASE("the same input gives the same bits on every call", "[norm][determinism]") {
  const auto data = ref::random_values<double>(300000, 9);
  for (double p : norm_types) {
    const double a = gradclip::norm(data, p);
    const double b = gradclip::norm(gradclip::buffer_view{data.data(), data.size()}, p);
    CHECK(ref::same_bits(a, b));
  }
}

TEST_CASE("bad norm types are rejected", "[norm][errors]") {
  const std::vector<float> x{1, 2, 3};
  for (double p : {0.0, -1.0, -ref::inf, ref::nan}) {
    CHECK_THROWS_AS(gradclip::norm(x, p), std::invalid_argument);
    CHECK_THROWS_AS(gradclip::global_norm(std::vector<std::vector<float>>{x}, p), std::invalid_argument);
  }
}

TEST_CASE("partial norms combine to the norm of the whole", "[norm][partial]") {
  const auto a = ref::random_values<double>(1000, 21, 1e200);   // needs range-safe scaling
  const auto b = ref::random_values<double>(3000, 22, 1e-200);  // likewise, far below
  const auto c = ref::random_values<float>(500, 23);
  std::vector<long double> all = ref::values(a.data(), a.size());
  for (double x : b) all.push_back(x);
  for (float x : c) all.push_back(x);
  for (double p : norm_types) {
    INFO("p = " << p);
    const auto pa = gradclip::partial_norm(a, p), pb = gradclip::partial_norm(b, p), pc = gradclip::partial_norm(c, p);
    const auto ab_c = gradclip::combine_partials(gradclip::combine_partials(pa, pb, p), pc, p);
    const auto c_ba = gradclip::combine_partials(pc, gradclip::combine_partials(pb, pa, p), p);
    const double want = static_cast<double>(ref::norm(all, p));
    CHECK(ref::rel_err(gradclip::norm_from_partial(ab_c, p), want) <= 1e-13);
    CHECK(ref::rel_err(gradclip::norm_from_partial(c_ba, p), want) <= 1e-13);
    CHECK(ref::same_bits(gradclip::norm_from_partial(gradclip::partial_norm(c, p), p), gradclip::norm(c, p)));
  }
  // Non-finite partials: NaN wins over inf wins over finite, in any order.
  const gradclip::norm_partial nan_part{1.0, ref::nan}, inf_part{1.0, ref::inf}, one{1.0, 1.0};
  CHECK(std::isnan(gradclip::norm_from_partial(gradclip::combine_partials(inf_part, nan_part, 2.0), 2.0)));
  CHECK(std::isnan(gradclip::norm_from_partial(gradclip::combine_partials(nan_part, one, 2.0), 2.0)));
  CHECK(gradclip::norm_from_partial(gradclip::combine_partials(one, inf_part, 2.0), 2.0) == ref::inf);
}

TEST_CASE("finite partials that add past DBL_MAX are rebased, not overflowed", "[norm][range]") {
  // Each buffer's sum of squares (~1.7e308) is finite; their total is not.
  const std::vector<std::vector<double>> group{{1.3e154}, {1.3e154}, {-1.3e154, 1e150}};
  std::vector<long double> all;
  for (const auto& b : group)
    for (double x : b) all.push_back(x);
  for (double p : {1.0, 2.0, 3.0, 0.5}) {
    INFO("p = " << p);
    CHECK(ref::rel_err(gradclip::global_norm(group, p), ref::norm(all, p)) <= 1e-13);
  }
  auto g = group;
  const auto r = gradclip::clip_by_global_norm(g, 1.0);
  CHECK(std::isfinite(r.total_norm));
  CHECK(gradclip::global_norm(g) == Approx(1.0).epsilon(1e-6));
}
