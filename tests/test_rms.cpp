// Block-rms clipping (Adafactor's update clipping, Shazeer & Stern 2018; Optax
// clip_by_block_rms): every block against a long-double reference of
// u / max(1, rms(u) / d), over a 500-step sequence with spikes, blocks of every
// size and form, every element type; policies; bad arguments.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include <gradclip/adaptive/norm_stats.hpp>
#include <gradclip/adaptive/rms.hpp>
#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

using ref::near;
using ref::norm2;
using ref::sum_of;

using Eigen::Dynamic;
using ref::col_major;
using ref::is_eigen;
using ref::row_major;
using ref::ulp_distance;

// A block's values by coefficient (no strides).
template <class X>
std::vector<long double> get(const X& x) {
  if constexpr (is_eigen<X>) {
    std::vector<long double> v;
    for (Eigen::Index r = 0; r < x.rows(); ++r)
      for (Eigen::Index c = 0; c < x.cols(); ++c) v.push_back(ref::value(x(r, c)));
    return v;
  } else {
    return ref::values(x.data(), x.size());
  }
}

template <class X>
void set(X&& x, const std::vector<long double>& v) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(*x.data())>>;
  std::size_t k = 0;
  if constexpr (is_eigen<X>) {
    for (Eigen::Index r = 0; r < x.rows(); ++r)
      for (Eigen::Index c = 0; c < x.cols(); ++c) x(r, c) = ref::from_double<T>(static_cast<double>(v[k++]));
  } else {
    for (auto& e : x) e = ref::from_double<T>(static_cast<double>(v[k++]));
  }
}

// Optax's rule in long double: u / max(1, sqrt(mean(u^2)) / threshold).
struct ref_block {
  long double norm, rms, denominator;
  bool clipped, ambiguous;
};

ref_block reference_block(const std::vector<long double>& u, double threshold) {
  const long double norm = ref::norm(u, 2.0);
  if (u.empty()) return {0, 0, 1, false, false};
  const long double rms = norm / std::sqrt(static_cast<long double>(u.size()));
  const long double ratio = rms / static_cast<long double>(threshold);
  return {norm, rms, std::max(1.0L, ratio), ratio > 1, std::fabs(ratio - 1) < 1e-12L};
}

template <class T>
double spike() {
  return std::is_same_v<T, Eigen::half> ? 1e2 : 1e4;
}

template <class T>
void run_sequence(double threshold, int steps, std::uint64_t seed) {
  std::vector<T> empty, one(1), seven(7), hundred(100), big(1000);
  col_major<T> matrix(30, 40);
  row_major<T> arena = row_major<T>::Zero(20, 30);
  Eigen::Matrix<T, 1, Dynamic> row(1, 9);
  auto group = std::make_tuple(std::ref(empty), std::ref(one), std::ref(seven), std::ref(hundred), std::ref(big),
                               std::ref(matrix), arena.block(3, 4, 11, 13), std::ref(row));
  constexpr std::size_t blocks = std::tuple_size_v<decltype(group)>;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::normal_distribution<double> normal;
  std::size_t clipped_total = 0, nonempty_total = 0;

  for (int step = 0; step < steps; ++step) {
    const std::size_t spiked = rng() % blocks;
    const bool spiking = rng() % 8 == 0;
    std::vector<std::vector<long double>> before;
    std::apply(
        [&](auto&... x) {
          std::size_t i = 0;
          auto draw = [&](auto& b) {
            std::vector<long double> v = get(b);
            for (auto& e : v) e = normal(rng);
            const long double rms = v.empty() ? 0 : ref::norm(v, 2.0) / std::sqrt(static_cast<long double>(v.size()));
            long double target = threshold * std::pow(10.0L, 1.5L * uniform(rng));
            if (spiking && i == spiked) target *= spike<T>();
            if (rng() % 16 == 0) target = 0;
            for (auto& e : v) e = e * target / rms;
            set(b, v);
            before.push_back(get(b));
            ++i;
          };
          (draw(x), ...);
        },
        group);

    const auto results = gradclip::clip_by_block_rms(group, threshold);

    INFO("step " << step << ", threshold " << threshold);
    REQUIRE(results.size() == blocks);
    std::size_t i = 0;
    std::apply(
        [&](auto&... x) {
          auto check = [&](auto& b) {
            const std::vector<long double> after = get(b);
            const ref_block want = reference_block(before[i], threshold);
            const auto& r = results[i];
            INFO("block " << i << " of " << before[i].size());
            CHECK(ref::rel_err(r.clip.total_norm, want.norm) <= ref::norm_bound<T>(2.0));
            CHECK(ref::rel_err(r.rms, want.rms) <= ref::norm_bound<T>(2.0));
            if (!before[i].empty()) ++nonempty_total;
            if (!want.ambiguous) {
              CHECK(r.clip.clipped == want.clipped);
              if (want.clipped) {
                ++clipped_total;
                CHECK(ref::rel_err(r.clip.scale, 1 / want.denominator) <= ref::norm_bound<T>(2.0));
                double worst = 0;
                for (std::size_t k = 0; k < after.size(); ++k) {
                  worst = std::max(worst, ulp_distance(ref::from_double<T>(static_cast<double>(after[k])),
                                                       before[i][k] / want.denominator));
                }
                CHECK(worst <= (std::is_same_v<T, float> ? 1.6 : std::is_same_v<T, double> ? 4.0 : 1.0));
                // The clipped rms is the threshold.
                const ref_block now = reference_block(after, threshold);
                CHECK(static_cast<double>(now.rms) ==
                      Approx(threshold).epsilon(std::is_same_v<T, float> || std::is_same_v<T, double> ? 1e-6 : 1e-2));
              } else {
                CHECK(r.clip.scale == 1.0);
                CHECK(after == before[i]);  // not written
              }
            }
            ++i;
          };
          (check(x), ...);
        },
        group);
  }
  const double fraction = static_cast<double>(clipped_total) / static_cast<double>(nonempty_total);
  CHECK(fraction > 0.3);
  CHECK(fraction < 0.7);
  CHECK(arena.block(0, 0, 3, 30).isZero());
  CHECK(arena.block(14, 0, 6, 30).isZero());
  CHECK(arena.block(0, 0, 20, 4).isZero());
  CHECK(arena.block(0, 17, 20, 13).isZero());
}

template <class X>
std::vector<unsigned char> bytes_of(const X& x) {
  return std::vector<unsigned char>(reinterpret_cast<const unsigned char*>(x.data()),
                                    reinterpret_cast<const unsigned char*>(x.data() + x.size()));
}

}  // namespace

TEMPLATE_TEST_CASE("every block is divided by max(1, rms / threshold), over a 500-step sequence", "[rms]", float,
                   double, Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  run_sequence<T>(1.0, 500, 1);  // Adafactor's d = 1
  run_sequence<T>(0.05, 200, 2);
  run_sequence<T>(3.0, 200, 3);
}

TEST_CASE("worked example: the limit grows with sqrt(n)", "[rms]") {
  // [3, 4]: rms = sqrt(12.5); threshold 1 -> divided by sqrt(12.5).
  std::vector<double> a{3, 4};
  // 100 elements of 0.5: rms 0.5, within 1.
  std::vector<float> b(100, 0.5f);
  // 4 elements of 2: rms 2 -> halved.
  Eigen::Vector4f c = Eigen::Vector4f::Constant(2.0f);
  const auto r = gradclip::clip_by_block_rms(std::tie(a, b, c), 1.0);
  REQUIRE(r.size() == 3);
  CHECK(r[0].rms == Approx(std::sqrt(12.5)).epsilon(1e-15));
  CHECK(r[0].clip.total_norm == 5.0);
  CHECK(r[0].clip.clipped);
  CHECK(a[0] == Approx(3 / std::sqrt(12.5)).epsilon(1e-15));
  CHECK(a[1] == Approx(4 / std::sqrt(12.5)).epsilon(1e-15));
  CHECK(r[1].rms == Approx(0.5).epsilon(1e-15));
  CHECK_FALSE(r[1].clip.clipped);
  CHECK(b[0] == 0.5f);
  CHECK(r[2].rms == 2.0);
  CHECK(r[2].clip.scale == 0.5);
  CHECK(c == Eigen::Vector4f::Constant(1.0f));
  // Exactly at the threshold: not written.
  std::vector<double> d{1, -1, 1, -1};
  CHECK_FALSE(gradclip::clip_by_block_rms(d, 1.0)[0].clip.clipped);
  // Empty and all-zero blocks; threshold = inf clips nothing.
  std::vector<float> empty, zeros(5, 0.0f), big(5, 1e30f);
  const auto r2 = gradclip::clip_by_block_rms(std::tie(empty, zeros, big), ref::inf);
  CHECK(r2[0].rms == 0.0);
  CHECK(r2[1].rms == 0.0);
  CHECK_FALSE(r2[2].clip.clipped);
  CHECK(big[0] == 1e30f);
  const auto r3 = gradclip::clip_by_block_rms(std::tie(empty, zeros, big), 1e-3);
  CHECK_FALSE(r3[0].clip.clipped);
  CHECK_FALSE(r3[1].clip.clipped);
  CHECK(r3[2].clip.clipped);
  CHECK(big[0] == Approx(1e-3f).epsilon(1e-6));
}

TEMPLATE_TEST_CASE("non-finite blocks follow the policy", "[rms][nonfinite]", float, double, Eigen::half) {
  using T = TestType;
  const T one = ref::from_double<T>(1.0), five = ref::from_double<T>(5.0);
  std::vector<T> a(4, five), b(4, five), c(4, five);
  b[1] = ref::from_double<T>(ref::nan);
  c[2] = ref::from_double<T>(ref::inf);
  const auto a0 = a, b0 = b, c0 = c;
  SECTION("propagate: Optax's result") {
    const auto r = gradclip::clip_by_block_rms(std::tie(a, b, c), 1.0);
    CHECK(r[0].clip.clipped);
    CHECK(ref::value(a[0]) == ref::value(one));
    CHECK(std::isnan(r[1].rms));
    for (const T& x : b) CHECK(std::isnan(ref::value(x)));
    CHECK(std::isinf(r[2].rms));
    for (std::size_t k = 0; k < 4; ++k) {
      if (k == 2) {
        CHECK(std::isnan(ref::value(c[k])));
      } else {
        CHECK(ref::value(c[k]) == 0);
      }
    }
  }
  SECTION("skip: such blocks are left alone") {
    const auto r = gradclip::clip_by_block_rms(std::tie(a, b, c), 1.0, {gradclip::nonfinite::skip});
    CHECK(r[0].clip.clipped);
    CHECK_FALSE(r[1].clip.clipped);
    CHECK_FALSE(r[2].clip.clipped);
    CHECK(bytes_of(b) == bytes_of(b0));
    CHECK(bytes_of(c) == bytes_of(c0));
  }
  SECTION("error: throws naming the block; nothing is written") {
    try {
      gradclip::clip_by_block_rms(std::tie(a, b, c), 1.0, {gradclip::nonfinite::error});
      FAIL("no exception");
    } catch (const gradclip::nonfinite_error& e) {
      CHECK(e.tensor_index() == 1);
    }
    CHECK(bytes_of(a) == bytes_of(a0));
    CHECK(bytes_of(b) == bytes_of(b0));
    CHECK(bytes_of(c) == bytes_of(c0));
  }
}

TEST_CASE("bad thresholds throw std::invalid_argument before anything is modified", "[rms][errors]") {
  std::vector<std::vector<float>> g{std::vector<float>(10, 3.0f), std::vector<float>(3, 2.0f)};
  const auto copy = g;
  for (double t : {0.0, -1.0, -ref::inf, ref::nan}) {
    CHECK_THROWS_AS(gradclip::clip_by_block_rms(g, t), std::invalid_argument);
    CHECK_THROWS_AS(gradclip::block_rms_clipper(t), std::invalid_argument);
  }
  CHECK(g == copy);
}

TEST_CASE("block_rms_clipper, group forms and norm_stats", "[rms][functor]") {
  const gradclip::block_rms_clipper clip(0.5);
  CHECK(clip.threshold() == 0.5);
  CHECK(clip.options().on_nonfinite == gradclip::nonfinite::propagate);
  std::vector<Eigen::VectorXd> g{Eigen::VectorXd::Constant(16, 2.0), Eigen::VectorXd::Constant(4, 0.25)};
  const auto r = clip(g);
  CHECK(r[0].clip.clipped);
  CHECK(norm2(g[0]) / 4 == Approx(0.5).epsilon(1e-15));
  CHECK_FALSE(r[1].clip.clipped);
  // A single buffer is a group of one; a strided row of a matrix is a block.
  Eigen::MatrixXf m = Eigen::MatrixXf::Constant(3, 8, 4.0f);
  const auto r1 = clip(m.row(1));
  REQUIRE(r1.size() == 1);
  CHECK(r1[0].rms == 4.0);
  CHECK(m.row(1) == Eigen::RowVectorXf::Constant(8, 0.5f));
  CHECK(m.row(0) == Eigen::RowVectorXf::Constant(8, 4.0f));
  gradclip::norm_stats stats;
  for (const auto& x : r) stats.record(x);
  CHECK(stats.count() == 2);
  CHECK(stats.clipped_count() == 1);
}
