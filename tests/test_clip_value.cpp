// Value clipping: bounds, NaN and infinities, inward rounding of the bounds to the
// element type, strided views, groups, bad arguments.
#include <cstdint>
#include <limits>
#include <utility>
#include <tuple>
#include <vector>

#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

TEMPLATE_TEST_CASE("clip_by_value clamps into [-c, c] and [lo, hi], keeping NaN", "[value]", float, double,
                   Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 64u, 1000u}) {
    for (auto bounds : {std::pair<double, double>{-0.5, 0.5}, {-2.0, 1.0}, {0.0, 0.0}, {1.0, 3.0}, {-3.0, -1.0}}) {
      auto x = ref::random_values<T>(n, n + 1, 2.0);
      if (n > 3) {
        x[1] = ref::from_double<T>(ref::nan);
        x[2] = ref::from_double<T>(ref::inf);
        x[3] = ref::from_double<T>(-ref::inf);
      }
      const auto before = x;
      gradclip::clip_by_value(x, bounds.first, bounds.second);
      for (std::size_t i = 0; i < n; ++i) {
        const long double b = ref::value(before[i]);
        const long double a = ref::value(x[i]);
        INFO("n = " << n << ", i = " << i << ", before " << static_cast<double>(b));
        if (std::isnan(b)) {
          CHECK(std::isnan(a));
        } else {
          const long double want = std::min<long double>(std::max<long double>(b, bounds.first), bounds.second);
          CHECK(a == want);  // these bounds are representable in every type
        }
      }
    }
  }
}

TEST_CASE("symmetric clip_by_value(c) equals [-c, c]", "[value]") {
  auto a = ref::random_values<float>(1000, 1, 3.0);
  auto b = a;
  gradclip::clip_by_value(a, 1.5);
  gradclip::clip_by_value(b, -1.5, 1.5);
  CHECK(a == b);
  // clip_value 0: everything becomes a zero (negative values -0, as PyTorch).
  gradclip::clip_by_value(a, 0.0);
  for (float v : a) CHECK(v == 0.0f);
}

TEMPLATE_TEST_CASE("bounds round inward, so every result lies in [lo, hi]", "[value][rounding]", float, Eigen::half,
                   Eigen::bfloat16) {
  using T = TestType;
  auto x = ref::random_values<T>(500, 3, 1.0);
  const double lo = -0.1, hi = 0.3;  // neither is representable in binary
  gradclip::clip_by_value(x, lo, hi);
  long double smallest = 1, largest = -1;
  for (const T& v : x) {
    const long double a = ref::value(v);
    CHECK(a >= lo);
    CHECK(a <= hi);
    smallest = std::min(smallest, a);
    largest = std::max(largest, a);
  }
  // ... and they are the closest values inside.
  CHECK(ref::value(ref::from_double<T>(static_cast<double>(smallest))) == smallest);
  CHECK(static_cast<double>(smallest) - lo < 0.01);
  CHECK(hi - static_cast<double>(largest) < 0.01);
}

TEST_CASE("infinite bounds and bounds beyond the type's range", "[value][rounding]") {
  std::vector<Eigen::half> h{Eigen::half(1.0f), Eigen::half(-60000.0f),
                             Eigen::half(std::numeric_limits<float>::infinity())};
  gradclip::clip_by_value(h, -1e10, 1e10);  // +inf lies above 1e10: the largest half below it is 65504
  CHECK(static_cast<float>(h[0]) == 1.0f);
  CHECK(static_cast<float>(h[1]) == -60000.0f);
  CHECK(static_cast<float>(h[2]) == 65504.0f);
  std::vector<double> d{1.0, -ref::inf, ref::inf};
  gradclip::clip_by_value(d, -ref::inf, ref::inf);
  CHECK(d == std::vector<double>{1.0, -ref::inf, ref::inf});
}

TEST_CASE("clip_by_value on strided views touches only the view", "[value][eigen]") {
  Eigen::MatrixXf m = Eigen::MatrixXf::Constant(6, 5, 10.0f);
  gradclip::clip_by_value(m.block(1, 1, 3, 2), 1.0);
  gradclip::clip_by_value(m.row(5), -2.0, 2.0);
  for (int i = 0; i < 6; ++i) {
    for (int j = 0; j < 5; ++j) {
      const bool in_block = i >= 1 && i < 4 && j >= 1 && j < 3;
      CHECK(m(i, j) == (in_block ? 1.0f : (i == 5 ? 2.0f : 10.0f)));
    }
  }
}

TEST_CASE("clip_by_value on a mixed-type tuple group and value_clipper", "[value][group]") {
  Eigen::MatrixXd w = Eigen::MatrixXd::Constant(2, 2, -5.0);
  Eigen::VectorXf b = Eigen::VectorXf::Constant(3, 5.0f);
  std::vector<Eigen::half> h(4, Eigen::half(-7.0f));
  gradclip::clip_by_value(std::tie(w, b, h), 1.0);
  CHECK((w.array() == -1.0).all());
  CHECK((b.array() == 1.0f).all());
  for (auto v : h) CHECK(static_cast<float>(v) == -1.0f);
  const gradclip::value_clipper clip(-0.25, 0.5);
  CHECK(clip.lo() == -0.25);
  CHECK(clip.hi() == 0.5);
  clip(std::tie(w, b));
  CHECK((w.array() == -0.25).all());
  CHECK((b.array() == 0.5f).all());
}

TEST_CASE("value clipping rejects bad bounds and modifies nothing", "[value][errors]") {
  std::vector<float> x{-3, 0, 3};
  const auto copy = x;
  CHECK_THROWS_AS(gradclip::clip_by_value(x, -1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_value(x, ref::nan), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_value(x, 2.0, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_value(x, ref::nan, 1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_by_value(x, 0.0, ref::nan), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::value_clipper(-1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::value_clipper(1.0, 0.0), std::invalid_argument);
  CHECK(x == copy);
}

TEMPLATE_TEST_CASE("every half and bfloat16 pattern clamps as the element rule says, at every misalignment",
                   "[value][simd]", Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  std::vector<T> all(65536 + 40);
  for (std::size_t u = 0; u < all.size(); ++u) {
    all[u] = Eigen::numext::bit_cast<T>(static_cast<std::uint16_t>(u * 40503u));  // every pattern, shuffled
  }
  for (const auto& [lo, hi] : std::vector<std::pair<double, double>>{{-1.0, 1.0}, {-0.0, 0.0}, {0.5, 3e4}, {-7e-5, 2.0}}) {
    for (std::size_t offset : {0u, 1u, 5u, 17u}) {
      std::vector<T> x(all.begin() + static_cast<std::ptrdiff_t>(offset), all.end());
      const std::vector<T> before = x;
      gradclip::clip_by_value(x, lo, hi);
      // The bounds rounded inward: the least value of T >= lo, the greatest <= hi.
      long double lo_t = ref::inf, hi_t = -ref::inf;
      for (const T& e : all) {
        const long double v = ref::value(e);
        if (v >= lo && v < lo_t) lo_t = v;
        if (v <= hi && v > hi_t) hi_t = v;
      }
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const long double v = ref::value(before[i]);
        if (std::isnan(v) || (v >= lo && v <= hi)) {
          wrong += !ref::same_bits(x[i], before[i]);  // NaN and values inside kept, bits and all (-0 too)
        } else {
          wrong += ref::value(x[i]) != (v < lo ? lo_t : hi_t);
        }
      }
      INFO("lo " << lo << ", hi " << hi << ", offset " << offset);
      CHECK(wrong == 0);
    }
  }
}
