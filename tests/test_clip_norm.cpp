// Norm clipping: semantics against the long-double reference, every policy, every
// bad argument (with data untouched), and the functor form.
#include <cfloat>
#include <limits>
#include <tuple>
#include <vector>

#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

template <class T>
using group_t = std::vector<std::vector<T>>;

template <class T>
group_t<T> make_group(std::initializer_list<std::size_t> sizes, std::uint64_t seed, double scale = 1.0) {
  group_t<T> g;
  for (std::size_t n : sizes) g.push_back(ref::random_values<T>(n, seed++, scale));
  return g;
}

template <class T>
std::vector<long double> flatten(const group_t<T>& g) {
  std::vector<long double> v;
  for (const auto& b : g)
    for (const T& x : b) v.push_back(ref::value(x));
  return v;
}

template <class T>
bool same_bits(const group_t<T>& a, const group_t<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return false;
    if (!a[i].empty() && std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(T)) != 0) return false;
  }
  return true;
}

// ulps of T between got and want (want exact).
template <class T>
double ulp_distance(T got, long double want) {
  const long double g = ref::value(got);
  if (g == want) return 0;
  long double ulp;
  if constexpr (std::is_same_v<T, Eigen::half>) {
    ulp = std::ldexp(1.0L, std::max(std::ilogb(static_cast<double>(want)), -14) - 10);
  } else if constexpr (std::is_same_v<T, Eigen::bfloat16>) {
    ulp = std::ldexp(1.0L, std::max(std::ilogb(static_cast<double>(want)), -126) - 7);
  } else {
    ulp = std::ldexp(1.0L, std::max(std::ilogb(static_cast<double>(want)), std::numeric_limits<T>::min_exponent - 1) -
                               (std::numeric_limits<T>::digits - 1));
  }
  return static_cast<double>(std::fabs(g - want) / ulp);
}

}  // namespace

TEMPLATE_TEST_CASE("clip_by_global_norm scales every buffer by max_norm / (norm + eps)", "[clip]", float, double,
                   Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  for (double p : {1.0, 2.0, 3.0, ref::inf}) {
    for (double fraction : {0.5, 1e-3}) {
      auto g = make_group<T>({0, 1, 17, 300, 4097}, 100);
      const auto before = flatten(g);
      const long double total = ref::norm(before, p);
      const double max_norm = static_cast<double>(total) * fraction;
      const auto r = gradclip::clip_by_global_norm(g, max_norm, {p, 1e-6, gradclip::nonfinite::propagate});
      INFO("p = " << p << ", fraction = " << fraction);
      CHECK(ref::rel_err(r.total_norm, total) <= ref::norm_bound<T>(p));
      CHECK(r.clipped);
      const long double coef = static_cast<long double>(max_norm) / (static_cast<long double>(r.total_norm) + 1e-6L);
      CHECK(ref::rel_err(r.scale, coef) <= 1e-15);
      // Every element is its exact product with the coefficient applied, rounded:
      // double and 16-bit types round once (<= 0.5 ulp; 16-bit adds a float step far
      // below that); float multiplies by the float-rounded coefficient, as PyTorch
      // does: <= 0.5 ulp + 2^-24 relative < 1.5 ulp.
      const auto after = flatten(g);
      double worst = 0;
      for (std::size_t i = 0; i < after.size(); ++i) {
        const long double exact = before[i] * static_cast<long double>(r.scale);
        worst = std::max(worst, ulp_distance(ref::from_double<T>(static_cast<double>(after[i])), exact));
      }
      CHECK(worst <= (std::is_same_v<T, float> ? 1.5 : 1.0));
      // The norm after clipping is max_norm (up to eps and the element rounding).
      const double rel = std::is_same_v<T, float> || std::is_same_v<T, double> ? 1e-6 : 1e-2;
      CHECK(static_cast<double>(ref::norm(after, p)) <= max_norm * (1 + rel));
    }
  }
}

TEMPLATE_TEST_CASE("nothing is written when the coefficient is 1", "[clip]", float, double, Eigen::half,
                   Eigen::bfloat16) {
  using T = TestType;
  auto g = make_group<T>({5, 100, 33}, 200);
  const auto copy = g;
  const double total = gradclip::global_norm(g);
  for (double max_norm : {total * 2, total + 1e-6, 1e30, ref::inf}) {
    const auto r = gradclip::clip_by_global_norm(g, max_norm);
    CHECK_FALSE(r.clipped);
    CHECK(r.scale == 1.0);
    CHECK(r.total_norm == total);
    CHECK(same_bits(g, copy));
  }
}

TEST_CASE("max_norm = 0 zeroes the gradients", "[clip]") {
  auto g = make_group<float>({10, 20}, 300);
  const auto r = gradclip::clip_by_global_norm(g, 0.0);
  CHECK(r.clipped);
  CHECK(r.scale == 0.0);
  for (auto& b : g)
    for (float x : b) CHECK(x == 0.0f);
}

TEST_CASE("all-zero gradients with eps = 0 are left alone", "[clip]") {
  group_t<double> g{std::vector<double>(8, 0.0)};
  const auto r = gradclip::clip_by_global_norm(g, 0.0, {2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK_FALSE(r.clipped);
  CHECK(r.total_norm == 0.0);
  for (double x : g[0]) CHECK(x == 0.0);
}

TEST_CASE("a float clip keeps its bound when the coefficient is below FLT_MIN", "[clip][range]") {
  std::vector<float> x(1000, 1e35f);
  const auto r = gradclip::clip_by_norm(x, 1e-10);
  CHECK(r.clipped);
  CHECK(r.scale < static_cast<double>(FLT_MIN));
  const double after = gradclip::norm(x);
  CHECK(after <= 1e-10 * (1 + 1e-5));
  CHECK(after >= 1e-10 * (1 - 1e-5));
  // Direction kept: all elements equal still.
  for (float v : x) CHECK(v == x[0]);
}

TEST_CASE("clipping huge float gradients does not silently zero them", "[clip][range]") {
  // PyTorch's float norm overflows to inf here and zeroes the gradients.
  std::vector<float> x{3e30f, -4e30f};
  const auto r = gradclip::clip_by_norm(x, 1.0);
  CHECK(r.total_norm == Approx(5e30).epsilon(1e-7));
  CHECK(x[0] == Approx(0.6f).epsilon(1e-6));
  CHECK(x[1] == Approx(-0.8f).epsilon(1e-6));
}

TEMPLATE_TEST_CASE("nonfinite::propagate gives exactly PyTorch's result", "[clip][nonfinite]", float, double,
                   Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  for (double p : {1.0, 2.0, ref::inf}) {
    auto g = make_group<T>({4, 6}, 400);
    g[1][2] = ref::from_double<T>(ref::inf);
    auto r = gradclip::clip_by_global_norm(g, 1.0, {p, 1e-6, gradclip::nonfinite::propagate});
    CHECK(r.total_norm == ref::inf);
    CHECK(r.clipped);
    CHECK(r.scale == 0.0);
    for (std::size_t b = 0; b < g.size(); ++b) {
      for (std::size_t i = 0; i < g[b].size(); ++i) {
        const long double v = ref::value(g[b][i]);
        if (b == 1 && i == 2) {
          CHECK(std::isnan(v));  // inf * 0
        } else {
          CHECK(v == 0);
        }
      }
    }
    auto h = make_group<T>({4, 6}, 500);
    h[0][1] = ref::from_double<T>(ref::nan);
    r = gradclip::clip_by_global_norm(h, 1.0, {p, 1e-6, gradclip::nonfinite::propagate});
    CHECK(std::isnan(r.total_norm));
    CHECK(r.clipped);
    for (auto& b : h)
      for (auto& x : b) CHECK(std::isnan(ref::value(x)));
  }
}

TEMPLATE_TEST_CASE("nonfinite::error throws, names the first bad buffer, and writes nothing", "[clip][nonfinite]",
                   float, double, Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  for (double bad : {ref::nan, ref::inf, -ref::inf}) {
    auto g = make_group<T>({3, 0, 8, 8}, 600, 1e3);
    g[2][5] = ref::from_double<T>(bad);
    g[3][0] = ref::from_double<T>(ref::nan);
    const auto copy = g;
    try {
      gradclip::clip_by_global_norm(g, 1.0, {2.0, 1e-6, gradclip::nonfinite::error});
      FAIL("no exception");
    } catch (const gradclip::nonfinite_error& e) {
      CHECK(e.tensor_index() == 2);
      CHECK(std::string(e.what()).find("buffer 2") != std::string::npos);
      CHECK_FALSE(gradclip::detail::is_finite(e.total_norm()));
    }
    CHECK(same_bits(g, copy));
    // It is a std::runtime_error.
    CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, 1.0, {2.0, 1e-6, gradclip::nonfinite::error}),
                    std::runtime_error);
  }
}

TEMPLATE_TEST_CASE("nonfinite::skip touches nothing and reports the norm", "[clip][nonfinite]", float, double) {
  using T = TestType;
  auto g = make_group<T>({3, 9}, 700, 1e3);
  g[1][8] = ref::from_double<T>(ref::nan);
  const auto copy = g;
  const auto r = gradclip::clip_by_global_norm(g, 1.0, {2.0, 1e-6, gradclip::nonfinite::skip});
  CHECK_FALSE(r.clipped);
  CHECK(std::isnan(r.total_norm));
  CHECK(r.scale == 1.0);
  CHECK(same_bits(g, copy));
  // Finite norms are clipped as usual under skip.
  auto f = make_group<T>({3, 9}, 800, 1e3);
  CHECK(gradclip::clip_by_global_norm(f, 1.0, {2.0, 1e-6, gradclip::nonfinite::skip}).clipped);
}

TEST_CASE("bad arguments throw std::invalid_argument before anything is modified", "[clip][errors]") {
  auto g = make_group<float>({10, 3}, 900, 100.0);
  const auto copy = g;
  using gradclip::clip_options;
  const gradclip::nonfinite prop = gradclip::nonfinite::propagate;
  CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, -1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, ref::nan), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, -ref::inf), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, 1.0, clip_options{0.0, 1e-6, prop}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, 1.0, clip_options{-2.0, 1e-6, prop}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, 1.0, clip_options{ref::nan, 1e-6, prop}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, 1.0, clip_options{2.0, -1e-6, prop}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_global_norm(g, 1.0, clip_options{2.0, ref::nan, prop}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_norm(g[0], -1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_with_norm(g, -1.0, 5.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_with_norm(g, 1.0, -5.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::norm_clipper(-1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::norm_clipper(1.0, clip_options{0.0, 1e-6, prop}), std::invalid_argument);
  CHECK(same_bits(g, copy));
}

TEST_CASE("clip_with_norm applies a norm computed elsewhere", "[clip]") {
  auto g = make_group<double>({10, 3}, 1000);
  const auto before = flatten(g);
  const auto r = gradclip::clip_with_norm(g, 1.0, 4.0, {2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK(r.clipped);
  CHECK(r.total_norm == 4.0);
  CHECK(r.scale == 0.25);
  const auto after = flatten(g);
  for (std::size_t i = 0; i < after.size(); ++i) CHECK(after[i] == before[i] * 0.25L);
  // Under the error policy the index is npos when this group is finite.
  try {
    gradclip::clip_with_norm(g, 1.0, ref::inf, {2.0, 1e-6, gradclip::nonfinite::error});
    FAIL("no exception");
  } catch (const gradclip::nonfinite_error& e) {
    CHECK(e.tensor_index() == gradclip::nonfinite_error::npos);
  }
  // Skip: untouched.
  const auto copy = g;
  CHECK_FALSE(gradclip::clip_with_norm(g, 1.0, ref::nan, {2.0, 1e-6, gradclip::nonfinite::skip}).clipped);
  CHECK(same_bits(g, copy));
}

TEST_CASE("norm_clipper holds a configuration", "[clip][functor]") {
  const gradclip::norm_clipper clip(1.0, {1.0, 1e-6, gradclip::nonfinite::skip});
  CHECK(clip.max_norm() == 1.0);
  CHECK(clip.options().norm_type == 1.0);
  auto g = make_group<float>({50}, 1100);
  const double l1 = gradclip::global_norm(g, 1.0);
  const auto r = clip(g);
  CHECK(r.total_norm == l1);
  CHECK(r.clipped);
  CHECK(gradclip::global_norm(g, 1.0) == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("clip_by_norm clips one buffer by its own norm", "[clip]") {
  Eigen::VectorXd v(3);
  v << 3, 4, 0;
  const auto r = gradclip::clip_by_norm(v, 1.0, {2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK(r.total_norm == 5.0);
  CHECK(v(0) == Approx(0.6).epsilon(1e-15));
  CHECK(v(1) == Approx(0.8).epsilon(1e-15));
}

TEST_CASE("clip_coefficient gives clip_by_global_norm's decision and writes nothing", "[clip][coefficient]") {
  auto g = make_group<float>({100, 7}, 1200, 10.0);
  const auto copy = g;
  const auto c = gradclip::clip_coefficient(g, 1.0);
  CHECK(same_bits(g, copy));
  CHECK(c.clipped);
  const auto r = gradclip::clip_by_global_norm(g, 1.0);
  CHECK(ref::same_bits(c.total_norm, r.total_norm));
  CHECK(ref::same_bits(c.scale, r.scale));
  const auto none = gradclip::clip_coefficient(g, 1e9);
  CHECK_FALSE(none.clipped);
  CHECK(none.scale == 1.0);
  g[0][3] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(gradclip::clip_coefficient(g, 1.0, {2.0, 1e-6, gradclip::nonfinite::error}),
                  gradclip::nonfinite_error);
  CHECK_FALSE(gradclip::clip_coefficient(g, 1.0, {2.0, 1e-6, gradclip::nonfinite::skip}).clipped);
  CHECK(std::isnan(gradclip::clip_coefficient(g, 1.0).scale));
  CHECK_THROWS_AS(gradclip::clip_coefficient(g, -1.0), std::invalid_argument);
}

TEMPLATE_TEST_CASE("clip_each_by_norm clips every buffer by its own norm", "[clip][each]", float, double, Eigen::half) {
  using T = TestType;
  auto g = make_group<T>({0, 10, 300, 5000}, 1300, 4.0);
  const auto before = g;
  const std::vector<double> limits{1.0, 2.0, 1e9, 3.0};
  const auto results = gradclip::clip_each_by_norm(g, limits, {2.0, 0.0, gradclip::nonfinite::propagate});
  REQUIRE(results.size() == 4);
  for (std::size_t i = 0; i < g.size(); ++i) {
    const long double want = ref::norm(ref::values(before[i].data(), before[i].size()), 2.0);
    INFO("buffer " << i);
    CHECK(ref::rel_err(results[i].total_norm, want) <= ref::norm_bound<T>(2.0));
    CHECK(results[i].clipped == (want > limits[i]));
    const double after = gradclip::norm(g[i]);
    if (results[i].clipped) {
      CHECK(after == Approx(limits[i]).epsilon(std::is_same_v<T, Eigen::half> ? 1e-3 : 1e-6));
    } else if (!g[i].empty()) {  // memcmp must not see the null data() of an empty vector
      CHECK(std::memcmp(g[i].data(), before[i].data(), g[i].size() * sizeof(T)) == 0);
    }
  }
  // One limit for all (Keras clipnorm).
  auto h = make_group<T>({20, 30}, 1400, 4.0);
  for (const auto& r : gradclip::clip_each_by_norm(h, 0.5)) CHECK(r.clipped);
  for (const auto& b : h) CHECK(gradclip::norm(b) == Approx(0.5).epsilon(std::is_same_v<T, Eigen::half> ? 1e-3 : 1e-6));
}

TEST_CASE("clip_each_by_norm checks every limit first and honours the error policy", "[clip][each][errors]") {
  auto g = make_group<float>({10, 10, 10}, 1500, 4.0);
  const auto copy = g;
  CHECK_THROWS_AS(gradclip::clip_each_by_norm(g, std::vector<double>{1.0, 1.0}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_each_by_norm(g, std::vector<double>{1.0, -1.0, 1.0}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_each_by_norm(g, ref::nan), std::invalid_argument);
  CHECK(same_bits(g, copy));
  g[2][4] = std::numeric_limits<float>::infinity();
  const auto copy2 = g;
  try {
    gradclip::clip_each_by_norm(g, 0.1, {2.0, 1e-6, gradclip::nonfinite::error});
    FAIL("no exception");
  } catch (const gradclip::nonfinite_error& e) {
    CHECK(e.tensor_index() == 2);
  }
  CHECK(same_bits(g, copy2));  // buffers 0 and 1 were not clipped either
  const auto skipped = gradclip::clip_each_by_norm(g, 0.1, {2.0, 1e-6, gradclip::nonfinite::skip});
  CHECK(skipped[0].clipped);
  CHECK(skipped[1].clipped);
  CHECK_FALSE(skipped[2].clipped);
  CHECK(std::isinf(skipped[2].total_norm));
}
