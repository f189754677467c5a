// Axis-wise clipping (tf.clip_by_norm with axes; DP-SGD per-example clipping):
// every unit against a long-double reference of the published rules, over long
// random sequences with spikes, both axes, strided and row-major Eigen inputs,
// every element type; the accumulated sum; policies; bad arguments.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <vector>

#include <gradclip/adaptive/clip_units.hpp>
#include <gradclip/adaptive/norm_stats.hpp>
#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

using ref::near;
using ref::norm2;
using ref::sum_of;

using gradclip::axis;
using Eigen::Dynamic;

using ref::col_major;
using ref::row_major;
using ref::ulp_distance;

// A spike factor that keeps T finite.
template <class T>
double max_spike() {
  return std::is_same_v<T, Eigen::half> ? 1e2 : 1e6;
}

// The units of any Eigen object, read by coefficient (no strides): literal rows
// or columns.
template <class M>
std::vector<std::vector<long double>> units_of(const M& m, axis along) {
  std::vector<std::vector<long double>> u;
  const bool rows = along == axis::rows;
  const Eigen::Index count = rows ? m.rows() : m.cols(), length = rows ? m.cols() : m.rows();
  for (Eigen::Index i = 0; i < count; ++i) {
    std::vector<long double> v;
    for (Eigen::Index k = 0; k < length; ++k) v.push_back(ref::value(rows ? m(i, k) : m(k, i)));
    u.push_back(v);
  }
  return u;
}

template <class M>
void fill(M&& m, std::uint64_t seed, double scale) {
  using T = typename std::decay_t<M>::Scalar;
  const auto v = ref::random_values<T>(static_cast<std::size_t>(m.size()), seed, scale);
  std::size_t k = 0;
  for (Eigen::Index c = 0; c < m.cols(); ++c)
    for (Eigen::Index r = 0; r < m.rows(); ++r) m(r, c) = v[k++];
}

// Scales unit i by factors[i] (through T).
template <class M>
void scale_units(M&& m, axis along, const std::vector<double>& factors) {
  using T = typename std::decay_t<M>::Scalar;
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    for (Eigen::Index c = 0; c < m.cols(); ++c) {
      const double f = factors[static_cast<std::size_t>(along == axis::rows ? r : c)];
      m(r, c) = ref::from_double<T>(static_cast<double>(ref::value(m(r, c))) * f);
    }
}

// The published rule, long double: coefficient max_norm / (norm + eps) when < 1.
// eps = 0 is TF's clip_norm / max(norm, clip_norm) and Abadi et al.'s.
struct ref_unit {
  long double norm;
  long double coefficient;  // 1 when not clipped
  bool clipped;
  bool ambiguous;  // within rounding of the boundary: either outcome is right
};

ref_unit reference_unit(const std::vector<long double>& u, double max_norm, double p, double eps) {
  const long double n = ref::norm(u, p);
  const long double denominator = n + static_cast<long double>(eps);
  if (denominator == 0) return {n, 1, false, false};
  const long double c = static_cast<long double>(max_norm) / denominator;
  return {n, c < 1 ? c : 1, c < 1, std::fabs(c - 1) < 1e-12L};
}

// One step: clip m (any Eigen form) and check every unit and the sum.
template <class M, class Sum>
std::size_t check_step(M&& m, axis along, double max_norm, double p, double eps, Sum* sum, std::uint64_t step) {
  using T = typename std::decay_t<M>::Scalar;
  const auto before = units_of(m, along);
  std::vector<long double> sum_before;
  if (sum) sum_before = ref::values(sum->data(), static_cast<std::size_t>(sum->size()));
  // The exact sums: this checks every element's one rounding against the reference
  // coefficient (the default accuracy's unit norms: test_norm.cpp, the fuzz targets).
  gradclip::unit_clip_options options{along, p, eps, gradclip::nonfinite::propagate};
  options.accuracy = gradclip::norm_accuracy::exact;
  const auto r = sum ? gradclip::clip_units_and_accumulate(m, max_norm, *sum, options)
                     : gradclip::clip_units_by_norm(m, max_norm, options);
  const auto after = units_of(m, along);
  INFO("step " << step << ", p = " << p << ", eps = " << eps << ", axis " << (along == axis::rows ? "rows" : "cols"));
  REQUIRE(r.units == before.size());
  std::size_t clipped = 0, ambiguous = 0;
  long double largest = 0, smallest_coefficient = 1;
  std::vector<long double> norms;
  for (std::size_t i = 0; i < before.size(); ++i) {
    const ref_unit want = reference_unit(before[i], max_norm, p, eps);
    norms.push_back(want.norm);
    largest = std::max(largest, want.norm);
    if (want.ambiguous) {
      ++ambiguous;
      continue;
    }
    if (want.clipped) {
      ++clipped;
      smallest_coefficient = std::min(smallest_coefficient, want.coefficient);
    }
    double worst = 0;
    for (std::size_t k = 0; k < before[i].size(); ++k) {
      if (!want.clipped) {
        CHECK(after[i][k] == before[i][k]);  // not written
      } else {
        worst = std::max(worst, ulp_distance(ref::from_double<T>(static_cast<double>(after[i][k])),
                                             before[i][k] * want.coefficient));
      }
    }
    // float multiplies by the float-rounded coefficient (<= 1.5 ulp); double and
    // 16-bit round the exact product once, after a coefficient good to ~1e-15.
    // For p other than 2 the norm itself is good to ~1e-14 (std::pow), hence the
    // wider double tolerance.
    CHECK(worst <= (std::is_same_v<T, float> ? 1.6 : std::is_same_v<T, double> ? (p == 2.0 ? 4.0 : 64.0) : 1.0));
  }
  if (ambiguous == 0) {
    CHECK(r.clipped == clipped);
    CHECK(r.summary.clipped == (clipped > 0));
    CHECK(ref::rel_err(r.summary.scale, smallest_coefficient) <= 1e-13);
  }
  CHECK(ref::rel_err(r.max_unit_norm, largest) <= 1e-13);
  CHECK(ref::rel_err(r.summary.total_norm, ref::norm(norms, p)) <= 1e-13);
  CHECK(r.nonfinite == 0);
  if (sum) {
    // sum += every clipped unit, each add in double and rounded once into the sum.
    using S = typename Sum::Scalar;
    const double unit_eps = std::is_same_v<S, double> ? 0x1p-52 : std::is_same_v<S, float> ? 0x1p-23 : 0x1p-10;
    for (std::size_t k = 0; k < sum_before.size(); ++k) {
      long double want = sum_before[k], magnitude = std::fabs(sum_before[k]);
      for (const auto& u : after) {
        want += u[k];
        magnitude += std::fabs(u[k]);
      }
      const long double got = ref::value((*sum)(static_cast<Eigen::Index>(k)));
      CHECK(std::fabs(got - want) <= magnitude * unit_eps * static_cast<double>(after.size() + 1));
    }
  }
  return r.clipped;
}

// Random matrices whose units have norms spread over max_norm * 10^(+-1.5), with
// occasional spikes and all-zero units.
template <class T, class M, class Sum>
void run_sequence(M&& m, axis along, double p, double eps, Sum* sum, std::uint64_t seed, int steps) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  const std::size_t count = static_cast<std::size_t>(along == axis::rows ? m.rows() : m.cols());
  std::size_t clipped = 0;
  for (int step = 0; step < steps; ++step) {
    const double max_norm = std::pow(10.0, uniform(rng));
    fill(m, seed * 1000 + static_cast<std::uint64_t>(step), 1.0);
    const auto units = units_of(m, along);
    std::vector<double> factors(count);
    for (std::size_t i = 0; i < count; ++i) {
      const double n = static_cast<double>(ref::norm(units[i], p));
      factors[i] = n == 0 ? 1.0 : max_norm * std::pow(10.0, 1.5 * uniform(rng)) / n;
    }
    if (count > 0 && rng() % 10 == 0) factors[rng() % count] *= max_spike<T>();  // a spike
    if (count > 0 && rng() % 10 == 0) factors[rng() % count] = 0.0;             // an all-zero unit
    scale_units(m, along, factors);
    clipped += check_step(m, along, max_norm, p, eps, sum, static_cast<std::uint64_t>(step));
  }
  // The sequence mixes clipped and untouched units.
  const double fraction = static_cast<double>(clipped) / static_cast<double>(count * static_cast<std::size_t>(steps));
  CHECK(fraction > 0.3);
  CHECK(fraction < 0.7);
}

template <class M>
std::vector<unsigned char> bytes_of(const M& m) {
  std::vector<unsigned char> b;
  for (Eigen::Index c = 0; c < m.cols(); ++c)
    for (Eigen::Index r = 0; r < m.rows(); ++r) {
      const auto x = m(r, c);
      const auto* p = reinterpret_cast<const unsigned char*>(&x);
      b.insert(b.end(), p, p + sizeof x);
    }
  return b;
}

}  // namespace

TEMPLATE_TEST_CASE("every unit is clipped by max_norm / (norm + eps), over a long random sequence", "[units]", float,
                   double, Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  for (axis along : {axis::rows, axis::cols}) {
    for (double eps : {1e-6, 0.0}) {
      col_major<T> a(13, 37);
      run_sequence<T>(a, along, 2.0, eps, static_cast<col_major<double>*>(nullptr), 11, 200);
      row_major<T> b(9, 300);
      run_sequence<T>(b, along, 2.0, eps, static_cast<col_major<double>*>(nullptr), 12, 150);
      // A strided block of a larger matrix, both storage orders.
      col_major<T> big = col_major<T>::Zero(40, 50);
      run_sequence<T>(big.block(3, 5, 17, 21), along, 2.0, eps, static_cast<col_major<double>*>(nullptr), 13, 150);
      row_major<T> big_r = row_major<T>::Zero(40, 50);
      run_sequence<T>(big_r.block(2, 1, 11, 30), along, 2.0, eps, static_cast<col_major<double>*>(nullptr), 14, 150);
      // Outside the blocks nothing changed.
      CHECK(big.block(0, 0, 3, 50).isZero());
      CHECK(big.block(20, 0, 20, 50).isZero());
      CHECK(big.block(3, 0, 17, 5).isZero());
      CHECK(big.block(3, 26, 17, 24).isZero());
      CHECK(big_r.block(0, 0, 2, 50).isZero());
      CHECK(big_r.block(2, 31, 11, 19).isZero());
    }
  }
}

TEMPLATE_TEST_CASE("other norms: 1, 3 and infinity", "[units]", float, double) {
  using T = TestType;
  for (double p : {1.0, 3.0, ref::inf}) {
    for (axis along : {axis::rows, axis::cols}) {
      col_major<T> a(16, 24);
      run_sequence<T>(a, along, p, 1e-6, static_cast<col_major<double>*>(nullptr), 21, 100);
      row_major<T> big = row_major<T>::Zero(30, 30);
      run_sequence<T>(big.block(1, 2, 20, 7), along, p, 0.0, static_cast<col_major<double>*>(nullptr), 22, 100);
    }
  }
}

TEMPLATE_TEST_CASE("DP-SGD: the clipped examples are summed, over 500 micro-batches", "[units][sum]", float, double,
                   Eigen::half) {
  using T = TestType;
  // 16 examples x 40 parameters per micro-batch; the sum runs over all of them.
  {
    col_major<T> batch(16, 40);
    Eigen::VectorXd sum = Eigen::VectorXd::Zero(40);
    run_sequence<T>(batch, axis::rows, 2.0, 1e-6, &sum, 31, 500);
  }
  {
    Eigen::RowVectorXf sum = Eigen::RowVectorXf::Zero(25);  // float sum, row vector
    row_major<T> big = row_major<T>::Zero(20, 30);
    run_sequence<T>(big.block(2, 3, 12, 25), axis::rows, 2.0, 0.0, &sum, 32, 300);
  }
  {
    // Examples as columns (params x batch), accumulated into a strided column.
    col_major<T> batch(33, 8);
    Eigen::MatrixXd sums = Eigen::MatrixXd::Zero(33, 3);
    auto column = sums.col(1);
    run_sequence<T>(batch, axis::cols, 2.0, 1e-6, &column, 33, 300);
    CHECK(sums.col(0).isZero());
    CHECK(sums.col(2).isZero());
  }
}

TEST_CASE("DP-SGD worked example: Optax's per_example_global_norm_clip", "[units][sum]") {
  // Optax's docstring example: rows [0,0,0], [0,3,4], [4,0,3], [3,4,0] (norms 0, 5, 5, 5).
  Eigen::MatrixXf g(4, 3);
  g << 0, 0, 0, 0, 3, 4, 4, 0, 3, 3, 4, 0;
  const Eigen::MatrixXf original = g;
  const gradclip::unit_clip_options tf{axis::rows, 2.0, 0.0, gradclip::nonfinite::propagate};
  Eigen::VectorXf sum = Eigen::VectorXf::Zero(3);
  auto r = gradclip::clip_units_and_accumulate(g, ref::inf, sum, tf);
  CHECK(r.clipped == 0);
  CHECK(sum == Eigen::Vector3f(7, 7, 7));
  sum.setZero();
  g = original;
  r = gradclip::clip_units_and_accumulate(g, 0.0, sum, tf);
  CHECK(r.clipped == 3);  // the zero row is left alone (TF would compute 0/0)
  CHECK(sum.isZero());
  CHECK(g.allFinite());
  sum.setZero();
  g = original;
  r = gradclip::clip_units_and_accumulate(g, 1.25, sum, tf);
  CHECK(r.clipped == 3);
  CHECK(r.units == 4);
  CHECK(r.max_unit_norm == 5.0);
  CHECK(r.summary.total_norm == Approx(std::sqrt(75.0)).epsilon(1e-15));
  CHECK(r.summary.scale == 0.25);
  CHECK(near(sum, Eigen::Vector3f(1.75f, 1.75f, 1.75f), 1e-6f));
  // The clipped rows have norm exactly max_norm here (0.25 is exact).
  CHECK(norm2(g.row(1)) == 1.25f);
  // With eps = 1e-6 (Opacus) the coefficient is 1.25 / (5 + 1e-6).
  g = original;
  r = gradclip::clip_units_by_norm(g, 1.25);
  CHECK(r.summary.scale == 1.25 / (5.0 + 1e-6));
}

TEST_CASE("units are literal: an n x 1 matrix has n rows", "[units]") {
  Eigen::VectorXd v(4);
  v << 3, -0.5, -2, 1;
  auto r = gradclip::clip_units_by_norm(v, 1.0, {axis::rows, 2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK(r.units == 4);
  CHECK(r.clipped == 2);
  CHECK(v == Eigen::Vector4d(1, -0.5, -1, 1));
  Eigen::VectorXd w(2);
  w << 3, 4;
  r = gradclip::clip_units_by_norm(w, 1.0, {axis::cols, 2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK(r.units == 1);
  CHECK(near(w, Eigen::Vector2d(0.6, 0.8), 1e-15));
  // Empty matrices: no units, or units of no elements.
  Eigen::MatrixXf empty(0, 5);
  r = gradclip::clip_units_by_norm(empty, 1.0);
  CHECK(r.units == 0);
  CHECK(r.summary.total_norm == 0.0);
  Eigen::MatrixXf thin(3, 0);
  r = gradclip::clip_units_by_norm(thin, 1.0);
  CHECK(r.units == 3);
  CHECK(r.clipped == 0);
}

TEMPLATE_TEST_CASE("non-finite units follow the policy", "[units][nonfinite]", float, double, Eigen::half) {
  using T = TestType;
  // Column-major rows: the tiled path across the storage order.
  const double p = GENERATE(1.0, 2.0, ref::inf);
  INFO("p = " << p);
  const T nan = ref::from_double<T>(ref::nan), inf = ref::from_double<T>(ref::inf);
  col_major<T> m(5, 6);
  fill(m, 41, 100.0);
  m(1, 2) = nan;
  m(3, 4) = inf;
  const col_major<T> original = m;
  auto value = [](T x) { return ref::value(x); };

  SECTION("propagate: a NaN unit becomes NaN, an inf unit 0 (inf * 0 = NaN)") {
    Eigen::VectorXd sum = Eigen::VectorXd::Zero(6);
    const auto r = gradclip::clip_units_and_accumulate(m, 1.0, sum, {axis::rows, p, 1e-6, gradclip::nonfinite::propagate});
    CHECK(r.nonfinite == 2);
    CHECK(r.clipped == 5);
    CHECK(std::isnan(r.max_unit_norm));
    CHECK(std::isnan(r.summary.total_norm));
    CHECK(std::isnan(r.summary.scale));
    for (Eigen::Index c = 0; c < 6; ++c) {
      CHECK(std::isnan(value(m(1, c))));
      if (c == 4) {
        CHECK(std::isnan(value(m(3, c))));
      } else {
        CHECK(value(m(3, c)) == 0);
      }
      CHECK(std::isnan(sum(c)));
    }
  }
  SECTION("skip: non-finite units are left alone and out of the sum") {
    Eigen::VectorXd sum = Eigen::VectorXd::Zero(6);
    const auto r = gradclip::clip_units_and_accumulate(m, 1.0, sum, {axis::rows, p, 1e-6, gradclip::nonfinite::skip});
    CHECK(r.nonfinite == 2);
    CHECK(r.clipped == 3);
    CHECK(bytes_of(m.row(1)) == bytes_of(original.row(1)));
    CHECK(bytes_of(m.row(3)) == bytes_of(original.row(3)));
    for (std::size_t i : {0, 2, 4}) CHECK(static_cast<double>(ref::norm(units_of(m, axis::rows)[i], p)) <= 1.001);
    Eigen::VectorXd want = Eigen::VectorXd::Zero(6);
    for (Eigen::Index i : {0, 2, 4})
      for (Eigen::Index c = 0; c < 6; ++c) want(c) += static_cast<double>(value(m(i, c)));
    CHECK(near(sum, want, 1e-12));
  }
  SECTION("error: throws naming the first non-finite unit; nothing is written") {
    Eigen::VectorXd sum = Eigen::VectorXd::Constant(6, 2.0);
    try {
      gradclip::clip_units_and_accumulate(m, 1.0, sum, {axis::rows, p, 1e-6, gradclip::nonfinite::error});
      FAIL("no exception");
    } catch (const gradclip::nonfinite_error& e) {
      CHECK(e.tensor_index() == 1);
      CHECK(std::isnan(e.total_norm()));
    }
    CHECK(bytes_of(m) == bytes_of(original));
    CHECK(sum == Eigen::VectorXd::Constant(6, 2.0));
    // By columns the first non-finite unit is column 2.
    try {
      gradclip::clip_units_by_norm(m, 1.0, {axis::cols, p, 1e-6, gradclip::nonfinite::error});
      FAIL("no exception");
    } catch (const gradclip::nonfinite_error& e) {
      CHECK(e.tensor_index() == 2);
    }
    CHECK(bytes_of(m) == bytes_of(original));
  }
}

TEST_CASE("a double unit whose norm overflows counts as non-finite", "[units][nonfinite]") {
  Eigen::MatrixXd m(2, 2);
  m << 1.5e308, 1.5e308, 1, 1;
  const auto r = gradclip::clip_units_by_norm(m, 1.0, {axis::rows, 2.0, 1e-6, gradclip::nonfinite::skip});
  CHECK(r.nonfinite == 1);
  CHECK(r.clipped == 1);
  CHECK(m(0, 0) == 1.5e308);
  CHECK(norm2(m.row(1)) == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("unit clipping: bad arguments throw std::invalid_argument before anything is modified", "[units][errors]") {
  col_major<float> m(4, 5);
  fill(m, 51, 10.0);
  const col_major<float> original = m;
  Eigen::VectorXf sum = Eigen::VectorXf::Constant(5, 1.0f);
  const auto prop = gradclip::nonfinite::propagate;
  using opts = gradclip::unit_clip_options;
  CHECK_THROWS_AS(gradclip::clip_units_by_norm(m, -1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_units_by_norm(m, ref::nan), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_units_by_norm(m, 1.0, opts{axis::rows, 0.0, 1e-6, prop}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_units_by_norm(m, 1.0, opts{axis::rows, ref::nan, 1e-6, prop}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_units_by_norm(m, 1.0, opts{axis::rows, 2.0, -1e-6, prop}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_units_by_norm(m, 1.0, opts{axis::rows, 2.0, ref::inf, prop}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_units_by_norm(m, 1.0, opts{static_cast<axis>(7), 2.0, 1e-6, prop}),
                  std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_units_and_accumulate(m, -1.0, sum), std::invalid_argument);
  Eigen::VectorXf short_sum = Eigen::VectorXf::Constant(4, 1.0f);
  CHECK_THROWS_AS(gradclip::clip_units_and_accumulate(m, 0.1, short_sum), std::invalid_argument);
  // By columns the units have 4 elements: this sum fits, the 5-element one does not.
  CHECK_THROWS_AS(gradclip::clip_units_and_accumulate(m, 0.1, sum, opts{axis::cols, 2.0, 1e-6, prop}),
                  std::invalid_argument);
  Eigen::MatrixXf square_sum = Eigen::MatrixXf::Zero(5, 5);
  CHECK_THROWS_AS(gradclip::clip_units_and_accumulate(m, 0.1, square_sum), std::invalid_argument);
  std::vector<double> vector_sum(6, 0.0);
  CHECK_THROWS_AS(gradclip::clip_units_and_accumulate(m, 0.1, vector_sum), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::unit_norm_clipper(-1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::unit_norm_clipper(1.0, opts{axis::rows, 2.0, ref::nan, prop}), std::invalid_argument);
  CHECK(bytes_of(m) == bytes_of(original));
  CHECK(sum == Eigen::VectorXf::Constant(5, 1.0f));
  CHECK(short_sum == Eigen::VectorXf::Constant(4, 1.0f));
  CHECK(square_sum.isZero());
  for (double x : vector_sum) CHECK(x == 0.0);
}

TEST_CASE("unit_norm_clipper, sums of other types, and norm_stats", "[units][functor]") {
  const gradclip::unit_norm_clipper clip(0.5, {axis::rows, 2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK(clip.max_norm() == 0.5);
  CHECK(clip.options().eps == 0.0);
  col_major<double> m(6, 3);
  fill(m, 61, 40.0);
  col_major<double> copy = m;
  std::vector<float> sum(3, 0.0f);  // any buffer of the right size
  const auto r = clip.accumulate(m, sum);
  CHECK(r.clipped == 6);
  for (Eigen::Index i = 0; i < 6; ++i) CHECK(norm2(m.row(i)) == Approx(0.5).epsilon(1e-15));
  for (int k = 0; k < 3; ++k) CHECK(sum[static_cast<std::size_t>(k)] == Approx(sum_of(m.col(k))).epsilon(1e-6));
  const auto r2 = clip(copy);
  CHECK(r2.clipped == 6);
  CHECK(copy == m);  // the same clipping with or without a sum
  gradclip::norm_stats stats;
  stats.record(r);
  CHECK(stats.count() == 1);
  CHECK(stats.clipped_count() == 1);
  CHECK(stats.mean() == r.summary.total_norm);
  // A Map over raw memory and an rvalue block.
  std::vector<float> raw(12, 3.0f);
  CHECK(gradclip::clip_units_by_norm(Eigen::Map<Eigen::MatrixXf>(raw.data(), 3, 4), 1.0).clipped == 3);
  CHECK(raw[0] == Approx(0.5f).epsilon(1e-5));
}

TEMPLATE_TEST_CASE("units across the storage order, over several tiles", "[units][across]", float, double,
                   Eigen::half) {
  using T = TestType;
  // Rows of a column-major matrix and columns of a row-major one lie across the
  // storage order; 2500 of them take three tiles.
  col_major<T> a(2500, 3);
  run_sequence<T>(a, axis::rows, 2.0, 1e-6, static_cast<col_major<double>*>(nullptr), 71, 20);
  row_major<T> b(5, 2100);
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(5);
  run_sequence<T>(b, axis::cols, 2.0, 0.0, &sum, 72, 20);
  col_major<T> big = col_major<T>::Zero(3000, 4);
  run_sequence<T>(big.block(10, 1, 2200, 2), axis::rows, ref::inf, 1e-6, static_cast<col_major<double>*>(nullptr), 73,
                  10);
  run_sequence<T>(big.block(10, 1, 2200, 2), axis::rows, 1.0, 1e-6, static_cast<col_major<double>*>(nullptr), 74, 10);
}

TEST_CASE("double units whose squares overflow or underflow, in both storage orders", "[units][range]") {
  // Limits: 1 for the huge rows, 1e-170 for the tiny ones (both clip every row).
  for (const double limit : {1.0, 1e-170}) {
    col_major<double> a(3, 4);
    if (limit == 1.0) {
      a.row(0).setConstant(1e200);  // squares overflow
      a.row(1) << 3e300, 4e300, 0, 0;  // norm 5e300
      a.row(2) << 0, -1e308, 1e308, 1e308;  // norm above DBL_MAX / 2
    } else {
      a.row(0).setConstant(-3e-170);  // squares underflow
      a.row(1) << 3e-300, 4e-300, 0, 0;
      a.row(2) << 4.9e-324, 0, 0, 1e-323;  // subnormal
    }
    row_major<double> b = a;
    for (int order = 0; order < 2; ++order) {
      INFO((order == 0 ? "column-major: rows across the storage order" : "row-major: rows contiguous") << ", limit "
                                                                                                           << limit);
      const gradclip::unit_clip_options tf{axis::rows, 2.0, 0.0, gradclip::nonfinite::error};
      const auto before = order == 0 ? units_of(a, axis::rows) : units_of(b, axis::rows);
      const auto r = order == 0 ? gradclip::clip_units_by_norm(a, limit, tf) : gradclip::clip_units_by_norm(b, limit, tf);
      const auto after = order == 0 ? units_of(a, axis::rows) : units_of(b, axis::rows);
      CHECK(r.nonfinite == 0);
      long double largest = 0;
      for (const auto& u : before) largest = std::max(largest, ref::norm(u, 2.0));
      CHECK(ref::rel_err(r.max_unit_norm, largest) <= 1e-15);
      for (std::size_t i = 0; i < 3; ++i) {
        const long double want = ref::norm(before[i], 2.0);
        INFO("row " << i);
        if (want > limit) {
          CHECK(ref::rel_err(static_cast<double>(ref::norm(after[i], 2.0)), limit) <= 1e-15);
        } else {
          CHECK(after[i] == before[i]);
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("the accumulated sum does not depend on the storage order", "[units][sum][across]", float,
                   Eigen::half) {
  using T = TestType;
  col_major<T> a(1500, 7);  // rows across the storage order: the tiled path
  fill(a, 81, 1.0);
  row_major<T> b = a;  // rows contiguous: one unit at a time
  std::vector<float> sa(7, 0.5f), sb(7, 0.5f);
  gradclip::clip_units_and_accumulate(a, ref::inf, sa);
  gradclip::clip_units_and_accumulate(b, ref::inf, sb);
  CHECK(std::memcmp(sa.data(), sb.data(), sizeof(float) * 7) == 0);  // same additions, same roundings
  // Clipping too: equal up to the last bits of the coefficients.
  gradclip::clip_units_and_accumulate(a, 0.5, sa);
  gradclip::clip_units_and_accumulate(b, 0.5, sb);
  for (std::size_t k = 0; k < 7; ++k) CHECK(sa[k] == Approx(sb[k]).epsilon(1e-5));
  CHECK(near(a.template cast<float>(), b.template cast<float>(), 1e-3f));
}
