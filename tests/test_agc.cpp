// Adaptive gradient clipping (Brock et al. 2021; Optax adaptive_grad_clip): every
// unit of every buffer against a long-double reference of the published rule, over
// a 500-step training sequence with spikes, both axes, every buffer shape and
// form (strided blocks, row-major, vectors, std::vector), every element type and
// mixed precision; masks; non-finite policies; bad arguments.
#include <cmath>
#include <cstring>
#include <limits>
#include <list>
#include <random>
#include <tuple>
#include <vector>

#include <gradclip/adaptive/agc.hpp>
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
using units_t = std::vector<std::vector<long double>>;

using ref::col_major;
using ref::is_eigen;
using ref::row_major;
using ref::ulp_distance;

// AGC's units, read by coefficient (no strides): the rows or columns of a matrix
// with both dimensions > 1, else the whole buffer.
template <class X>
units_t get_units(const X& x, axis along) {
  units_t u;
  if constexpr (is_eigen<X>) {
    if (x.rows() > 1 && x.cols() > 1) {
      const bool rows = along == axis::rows;
      for (Eigen::Index i = 0; i < (rows ? x.rows() : x.cols()); ++i) {
        u.emplace_back();
        for (Eigen::Index k = 0; k < (rows ? x.cols() : x.rows()); ++k) u.back().push_back(ref::value(rows ? x(i, k) : x(k, i)));
      }
    } else {
      u.emplace_back();
      for (Eigen::Index r = 0; r < x.rows(); ++r)
        for (Eigen::Index c = 0; c < x.cols(); ++c) u.back().push_back(ref::value(x(r, c)));
    }
  } else {
    u.push_back(ref::values(x.data(), x.size()));
  }
  return u;
}

// Writes units back (rounded to the element type), in get_units' order.
template <class X>
void set_units(X&& x, axis along, const units_t& u) {
  using T = std::remove_cv_t<std::remove_reference_t<decltype(*x.data())>>;
  if constexpr (is_eigen<X>) {
    if (x.rows() > 1 && x.cols() > 1) {
      const bool rows = along == axis::rows;
      for (Eigen::Index i = 0; i < (rows ? x.rows() : x.cols()); ++i)
        for (Eigen::Index k = 0; k < (rows ? x.cols() : x.rows()); ++k)
          (rows ? x(i, k) : x(k, i)) = ref::from_double<T>(static_cast<double>(u[static_cast<std::size_t>(i)][static_cast<std::size_t>(k)]));
    } else {
      std::size_t k = 0;
      for (Eigen::Index r = 0; r < x.rows(); ++r)
        for (Eigen::Index c = 0; c < x.cols(); ++c) x(r, c) = ref::from_double<T>(static_cast<double>(u[0][k++]));
    }
  } else {
    for (std::size_t k = 0; k < x.size(); ++k) x[k] = ref::from_double<T>(static_cast<double>(u[0][k]));
  }
}

template <class A, class B, class F, std::size_t... I>
void zip_impl(A& a, B& b, F& f, std::index_sequence<I...>) {
  (f(I, std::get<I>(a), std::get<I>(b)), ...);
}
// f(index, a_i, b_i) for every pair of elements of two tuples.
template <class A, class B, class F>
void zip(A& a, B& b, F f) {
  static_assert(std::tuple_size_v<A> == std::tuple_size_v<B>);
  zip_impl(a, b, f, std::make_index_sequence<std::tuple_size_v<A>>{});
}

// The published rule, long double.
struct ref_unit {
  long double grad_norm;
  long double coefficient;  // 1 when not clipped
  bool clipped;
  bool ambiguous;  // within rounding of the boundary
};

ref_unit reference_unit(const std::vector<long double>& w, const std::vector<long double>& g, double clipping,
                        double eps) {
  const long double wn = ref::norm(w, 2.0), gn = ref::norm(g, 2.0);
  const long double max_norm = static_cast<long double>(clipping) * std::max(wn, static_cast<long double>(eps));
  const bool ambiguous = std::fabs(gn - max_norm) <= 1e-12L * max_norm;
  if (!(gn > max_norm)) return {gn, 1, false, ambiguous};
  return {gn, max_norm / std::max(gn, 1e-6L), true, ambiguous};
}

// Every form of buffer in one model: out x in matrices of both storage orders, a
// strided block (with other strides in the gradients), a zero-initialised bias as
// a std::vector, a 1 x n and an n x 1 matrix and a 1 x 1 (one unit each), an
// empty matrix, and a final classifier that the paper leaves unclipped.
template <class Tp, class Tg>
struct model {
  col_major<Tp> w1 = col_major<Tp>(8, 5);
  row_major<Tp> w2 = row_major<Tp>(6, 7);
  col_major<Tp> w3_arena = col_major<Tp>::Zero(12, 10);
  std::vector<Tp> b1 = std::vector<Tp>(8, Tp(0));
  Eigen::Matrix<Tp, 1, Dynamic> v = Eigen::Matrix<Tp, 1, Dynamic>(1, 6);
  col_major<Tp> column = col_major<Tp>(5, 1);
  col_major<Tp> scalar = col_major<Tp>(1, 1);
  col_major<Tp> empty = col_major<Tp>(0, 4);
  row_major<Tp> head = row_major<Tp>(3, 8);

  col_major<Tg> g1 = col_major<Tg>(8, 5);
  row_major<Tg> g2 = row_major<Tg>(6, 7);
  row_major<Tg> g3_arena = row_major<Tg>::Zero(9, 11);
  std::vector<Tg> gb1 = std::vector<Tg>(8);
  Eigen::Matrix<Tg, 1, Dynamic> gv = Eigen::Matrix<Tg, 1, Dynamic>(1, 6);
  col_major<Tg> gcolumn = col_major<Tg>(5, 1);
  col_major<Tg> gscalar = col_major<Tg>(1, 1);
  col_major<Tg> gempty = col_major<Tg>(0, 4);
  row_major<Tg> ghead = row_major<Tg>(3, 8);

  static constexpr std::size_t size = 9;

  auto params() {
    return std::make_tuple(std::ref(w1), std::ref(w2), w3_arena.block(2, 3, 5, 4), std::ref(b1), std::ref(v),
                           std::ref(column), std::ref(scalar), std::ref(empty), std::ref(head));
  }
  auto grads() {
    return std::make_tuple(std::ref(g1), std::ref(g2), g3_arena.block(1, 4, 5, 4), std::ref(gb1), std::ref(gv),
                           std::ref(gcolumn), std::ref(gscalar), std::ref(gempty), std::ref(ghead));
  }

  explicit model(std::uint64_t seed) {
    auto p = params();
    std::apply(
        [&](auto&... x) {
          std::uint64_t s = seed;
          (fill(x, s++), ...);
        },
        p);
    std::fill(b1.begin(), b1.end(), Tp(0));
  }

  template <class X>
  static void fill(X& x, std::uint64_t seed) {
    units_t u = get_units(x, axis::rows);
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> normal(0.0, 0.5);
    for (auto& unit : u)
      for (auto& e : unit) e = normal(rng);
    set_units(x, axis::rows, u);
  }
};

template <class T>
double spike() {
  return std::is_same_v<T, Eigen::half> ? 1e2 : 1e4;
}

// A training run: each step draws gradients whose unit norms are spread over
// max_i * 10^(+-1.5) (with spikes and all-zero units), clips them, checks every
// unit against the reference, and takes an SGD step with the clipped gradients.
template <class Tp, class Tg>
void run_training(axis along, double clipping, double eps, bool mask_head, int steps, std::uint64_t seed) {
  model<Tp, Tg> m(seed);
  auto params = m.params();
  auto grads = m.grads();
  gradclip::agc_options options;
  options.accuracy = gradclip::norm_accuracy::exact;  // the reference's unit norms, to double accuracy
  options.units = along;
  if (mask_head) {
    options.mask.assign(model<Tp, Tg>::size, true);
    options.mask.back() = false;
  }
  const gradclip::agc clip(clipping, eps, options);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::normal_distribution<double> normal;
  std::size_t clipped_total = 0, units_total = 0;

  for (int step = 0; step < steps; ++step) {
    // Gradients.
    const bool spiking = rng() % 8 == 0;
    const std::size_t spiked = static_cast<std::size_t>(rng() % model<Tp, Tg>::size);
    zip(params, grads, [&](std::size_t i, auto& w, auto& g) {
      const units_t wu = get_units(w, along);
      units_t gu = get_units(g, along);
      for (std::size_t u = 0; u < gu.size(); ++u) {
        for (auto& e : gu[u]) e = normal(rng);
        const long double n = ref::norm(gu[u], 2.0);
        const long double max_norm =
            static_cast<long double>(clipping) * std::max(ref::norm(wu[u], 2.0), static_cast<long double>(eps));
        long double target = max_norm * std::pow(10.0L, 1.5L * uniform(rng));
        if (spiking && i == spiked) target *= spike<Tg>();
        if (rng() % 16 == 0) target = 0;
        for (auto& e : gu[u]) e = n == 0 ? 0 : e * target / n;
      }
      set_units(g, along, gu);
    });

    // Reference, from the values as stored.
    std::vector<units_t> w_before, g_before;
    zip(params, grads, [&](std::size_t, auto& w, auto& g) {
      w_before.push_back(get_units(w, along));
      g_before.push_back(get_units(g, along));
    });

    const gradclip::agc_result r = clip(params, grads);

    INFO("step " << step << ", axis " << (along == axis::rows ? "rows" : "cols") << ", clipping " << clipping
                 << ", eps " << eps);
    std::size_t units = 0, clipped = 0, ambiguous = 0;
    long double smallest = 1;
    std::vector<long double> norms;
    zip(params, grads, [&](std::size_t i, auto& w, auto& g) {
      using T = std::remove_cv_t<std::remove_reference_t<decltype(*g.data())>>;
      const units_t after = get_units(g, along);
      CHECK(get_units(w, along) == w_before[i]);  // parameters are only read
      const bool included = !(mask_head && i == model<Tp, Tg>::size - 1);
      if (!included) {
        CHECK(after == g_before[i]);
        return;
      }
      units += after.size();
      for (std::size_t u = 0; u < after.size(); ++u) {
        const ref_unit want = reference_unit(w_before[i][u], g_before[i][u], clipping, eps);
        norms.push_back(want.grad_norm);
        if (want.ambiguous) {
          ++ambiguous;
          continue;
        }
        if (!want.clipped) {
          CHECK(after[u] == g_before[i][u]);  // not written
          continue;
        }
        ++clipped;
        smallest = std::min(smallest, want.coefficient);
        double worst = 0;
        for (std::size_t k = 0; k < after[u].size(); ++k) {
          worst = std::max(worst, ulp_distance(ref::from_double<T>(static_cast<double>(after[u][k])),
                                               g_before[i][u][k] * want.coefficient));
        }
        CHECK(worst <= (std::is_same_v<T, float> ? 1.6 : std::is_same_v<T, double> ? 4.0 : 1.0));
      }
    });
    CHECK(r.units == units);
    CHECK(r.excluded == (mask_head ? 1u : 0u));
    CHECK(r.nonfinite == 0);
    CHECK(ref::rel_err(r.summary.total_norm, ref::norm(norms, 2.0)) <= 1e-13);
    if (ambiguous == 0) {
      CHECK(r.clipped == clipped);
      CHECK(r.summary.clipped == (clipped > 0));
      CHECK(ref::rel_err(r.summary.scale, smallest) <= 1e-13);
    }
    clipped_total += r.clipped;
    units_total += r.units;

    // SGD step with the clipped gradients.
    zip(params, grads, [&](std::size_t, auto& w, auto& g) {
      units_t wu = get_units(w, along);
      const units_t gu = get_units(g, along);
      for (std::size_t u = 0; u < wu.size(); ++u)
        for (std::size_t k = 0; k < wu[u].size(); ++k) wu[u][k] -= 0.1L * gu[u][k];
      set_units(w, along, wu);
    });
  }
  const double fraction = static_cast<double>(clipped_total) / static_cast<double>(units_total);
  CHECK(fraction > 0.3);
  CHECK(fraction < 0.7);
  // Only the blocks were touched inside their arenas.
  CHECK(m.w3_arena.block(0, 0, 2, 10).isZero());
  CHECK(m.w3_arena.block(0, 0, 12, 3).isZero());
  CHECK(m.g3_arena.block(0, 0, 1, 11).isZero());
  CHECK(m.g3_arena.block(0, 8, 9, 3).isZero());
  CHECK(m.g3_arena.block(6, 0, 3, 11).isZero());
}

template <class X>
std::vector<unsigned char> bytes_of(const X& x) {
  std::vector<unsigned char> b(reinterpret_cast<const unsigned char*>(x.data()),
                               reinterpret_cast<const unsigned char*>(x.data() + x.size()));
  return b;
}

}  // namespace

TEMPLATE_TEST_CASE("AGC matches the published rule over a 500-step training run", "[agc]", float, double,
                   Eigen::half, Eigen::bfloat16) {
  using T = TestType;
  run_training<T, T>(axis::rows, 0.01, 1e-3, true, 500, 1);
  run_training<T, T>(axis::cols, 0.01, 1e-3, true, 200, 2);
  run_training<T, T>(axis::rows, 0.16, 1e-3, false, 200, 3);
  run_training<T, T>(axis::cols, 0.05, 0.0, false, 200, 4);
}

TEST_CASE("AGC with mixed precision: float weights, half and bfloat16 gradients", "[agc]") {
  run_training<float, Eigen::half>(axis::rows, 0.01, 1e-3, true, 300, 5);
  run_training<float, Eigen::bfloat16>(axis::cols, 0.02, 1e-3, false, 300, 6);
  run_training<double, float>(axis::rows, 0.01, 1e-3, true, 300, 7);
}

TEST_CASE("AGC worked cases: strict threshold, eps for zero weights, the 1e-6 guard", "[agc]") {
  // A unit exactly at the limit is not written; just above it is.
  Eigen::MatrixXd w(2, 2), g(2, 2);
  w << 60, 80, 0, 0;  // row norms 100 and 0
  g << 30, 40, 3, 4;  // row norms 50 and 5
  auto r = gradclip::adaptive_grad_clip(w, g, 0.5, 1e-3);
  CHECK(r.units == 2);
  CHECK(r.clipped == 1);  // row 0 at exactly 0.5 * 100 stays; row 1 is clipped to 0.5 * 1e-3
  CHECK(g(0, 0) == 30);
  CHECK(g(0, 1) == 40);
  CHECK(norm2(g.row(1)) == Approx(5e-4).epsilon(1e-14));
  CHECK(r.summary.scale == Approx(1e-4).epsilon(1e-14));
  CHECK(r.summary.total_norm == Approx(std::sqrt(2525.0)).epsilon(1e-15));
  g << 30, 40.001, 3, 4;
  r = gradclip::adaptive_grad_clip(w, g, 0.5, 1e-3);
  CHECK(r.clipped == 2);
  CHECK(norm2(g.row(0)) == Approx(50).epsilon(1e-14));

  // Columns: units are the columns.
  Eigen::MatrixXf wc(2, 2), gc(2, 2);
  wc << 3, 0, 4, 1;  // column norms 5 and 1
  gc << 1, 1, 0, 1;  // column norms 1 and sqrt(2)
  r = gradclip::adaptive_grad_clip(wc, gc, 0.1, 1e-3, {axis::cols});
  CHECK(r.clipped == 2);
  CHECK(norm2(gc.col(0)) == Approx(0.5f).epsilon(1e-6));
  CHECK(norm2(gc.col(1)) == Approx(0.1f).epsilon(1e-6));

  // The 1e-6 guard: a tiny gradient above a tinier limit is scaled by max / 1e-6
  // (Optax's div_eps), not max / ||G||.
  std::vector<double> tiny_w{0.0}, tiny_g{1e-7};
  r = gradclip::adaptive_grad_clip(tiny_w, tiny_g, 1e-5, 1e-3);  // max = 1e-8
  CHECK(r.clipped == 1);
  CHECK(tiny_g[0] == Approx(1e-7 * 1e-8 / 1e-6).epsilon(1e-14));

  // clipping = 0 zeroes every gradient; clipping = inf clips nothing; eps = 0 with
  // zero weights gives a limit of 0.
  Eigen::VectorXf a = Eigen::VectorXf::Constant(4, 2.0f), b = Eigen::VectorXf::Constant(4, 3.0f);
  CHECK(gradclip::adaptive_grad_clip(a, b, 0.0, 1e-3).clipped == 1);
  CHECK(b.isZero());
  b.setConstant(3.0f);
  CHECK(gradclip::adaptive_grad_clip(a, b, ref::inf, 0.0).clipped == 0);
  CHECK(b == Eigen::VectorXf::Constant(4, 3.0f));
  a.setZero();
  CHECK(gradclip::adaptive_grad_clip(a, b, ref::inf, 0.0).clipped == 0);  // inf * 0 is no limit, not NaN
  CHECK(gradclip::adaptive_grad_clip(a, b, 0.5, 0.0).clipped == 1);
  CHECK(b.isZero());
  // An all-zero gradient is never written.
  CHECK(gradclip::adaptive_grad_clip(a, b, 0.5, 0.0).clipped == 0);
}

TEST_CASE("AGC accepts every group form, with the same results", "[agc][forms]") {
  const std::vector<float> arena_init = ref::random_values<float>(5 * 4 + 3 + 6 * 2, 91, 1.0);
  const std::vector<float> weights_init = ref::random_values<float>(5 * 4 + 3 + 6 * 2, 92, 30.0);
  auto make = [](const std::vector<float>& v) {
    std::vector<Eigen::MatrixXf> g;
    g.push_back(Eigen::Map<const Eigen::MatrixXf>(v.data(), 5, 4));
    g.push_back(Eigen::Map<const Eigen::MatrixXf>(v.data() + 20, 3, 1));
    g.push_back(Eigen::Map<const Eigen::MatrixXf>(v.data() + 23, 6, 2));
    return g;
  };
  const std::vector<Eigen::MatrixXf> weights = make(weights_init);  // const: only read
  std::vector<Eigen::MatrixXf> expected = make(arena_init);
  const auto r0 = gradclip::agc(0.01)(weights, expected);
  REQUIRE(r0.clipped > 0);
  REQUIRE(r0.clipped < r0.units);

  // Maps over one gradient arena.
  std::vector<float> arena = arena_init;
  std::vector<Eigen::Map<Eigen::MatrixXf>> maps{{arena.data(), 5, 4}, {arena.data() + 20, 3, 1}, {arena.data() + 23, 6, 2}};
  const auto r1 = gradclip::agc(0.01)(weights, maps);
  CHECK(ref::same_bits(r1.summary.total_norm, r0.summary.total_norm));
  CHECK(r1.clipped == r0.clipped);
  for (std::size_t i = 0; i < 3; ++i) CHECK(maps[i] == expected[i]);

  // Pointers to weights, a std::list of gradients.
  std::vector<const Eigen::MatrixXf*> pointers{&weights[0], &weights[1], &weights[2]};
  std::list<Eigen::MatrixXf> list;
  for (const auto& m : make(arena_init)) list.push_back(m);
  gradclip::agc(0.01)(pointers, list);
  std::size_t i = 0;
  for (const auto& m : list) CHECK(m == expected[i++]);

  // A tuple of gradients against a vector of weights; the vector-like 3 x 1 gradient
  // given as a std::vector (same size, one unit).
  Eigen::MatrixXf g0 = make(arena_init)[0], g2 = make(arena_init)[2];
  std::vector<float> g1(arena_init.begin() + 20, arena_init.begin() + 23);
  gradclip::agc(0.01)(weights, std::tie(g0, g1, g2));
  CHECK(g0 == expected[0]);
  CHECK(Eigen::Map<Eigen::VectorXf>(g1.data(), 3) == expected[1]);
  CHECK(g2 == expected[2]);

  // A single buffer pair, and norm_stats.
  Eigen::MatrixXf single = make(arena_init)[0];
  const auto r2 = gradclip::agc(0.01)(weights[0], single);
  CHECK(single == expected[0]);
  gradclip::norm_stats stats;
  stats.record(r2);
  CHECK(stats.count() == 1);
  CHECK(stats.mean() == r2.summary.total_norm);
}

TEMPLATE_TEST_CASE("AGC non-finite units follow the policy", "[agc][nonfinite]", float, double, Eigen::half) {
  using T = TestType;
  const T nan = ref::from_double<T>(ref::nan), inf = ref::from_double<T>(ref::inf);
  col_major<T> w(4, 3), g(4, 3);
  for (Eigen::Index r = 0; r < 4; ++r)
    for (Eigen::Index c = 0; c < 3; ++c) {
      w(r, c) = ref::from_double<T>(1.0 + static_cast<double>(r + c));
      g(r, c) = ref::from_double<T>(10.0);  // every finite row is clipped
    }
  g(1, 1) = nan;
  g(2, 0) = inf;
  w(3, 2) = nan;  // NaN weights: the limit is NaN
  std::vector<T> wb(3, ref::from_double<T>(1.0)), gb(3, ref::from_double<T>(10.0));
  const col_major<T> g_original = g;
  const std::vector<T> gb_original = gb;
  auto value = [](T x) { return ref::value(x); };

  SECTION("propagate: Optax's result") {
    const auto r = gradclip::adaptive_grad_clip(std::tie(w, wb), std::tie(g, gb), 0.01, 1e-3);
    CHECK(r.units == 5);
    CHECK(r.nonfinite == 3);
    CHECK(r.clipped == 5);
    CHECK(std::isnan(r.summary.total_norm));
    CHECK(std::isnan(r.summary.scale));
    for (Eigen::Index c = 0; c < 3; ++c) {
      CHECK(std::isnan(value(g(1, c))));  // NaN gradient norm
      CHECK(std::isnan(value(g(3, c))));  // NaN weight norm
      if (c == 0) {
        CHECK(std::isnan(value(g(2, c))));  // inf * 0
      } else {
        CHECK(value(g(2, c)) == 0);
      }
    }
    CHECK(static_cast<double>(ref::norm(get_units(g, axis::rows)[0], 2.0)) ==
          Approx(0.01 * std::sqrt(1.0 + 4.0 + 9.0)).epsilon(std::is_same_v<T, Eigen::half> ? 2e-3 : 1e-6));
  }
  SECTION("skip: non-finite units are left as they are") {
    const auto r = gradclip::adaptive_grad_clip(std::tie(w, wb), std::tie(g, gb), 0.01, 1e-3,
                                                {axis::rows, {}, gradclip::nonfinite::skip});
    CHECK(r.nonfinite == 3);
    CHECK(r.clipped == 2);
    for (Eigen::Index row : {1, 2, 3}) {
      for (Eigen::Index c = 0; c < 3; ++c) CHECK(ref::same_bits(g(row, c), g_original(row, c)));
    }
    CHECK(value(g(0, 0)) < 1);
    CHECK(value(gb[0]) < 1);
  }
  SECTION("error: throws naming the buffer; nothing is written") {
    // The first non-finite unit is in buffer 1 when the matrix comes second.
    try {
      gradclip::adaptive_grad_clip(std::tie(wb, w), std::tie(gb, g), 0.01, 1e-3,
                                   {axis::rows, {}, gradclip::nonfinite::error});
      FAIL("no exception");
    } catch (const gradclip::nonfinite_error& e) {
      CHECK(e.tensor_index() == 1);
      CHECK(std::isnan(e.total_norm()));
    }
    CHECK(bytes_of(g) == bytes_of(g_original));
    CHECK(bytes_of(gb) == bytes_of(gb_original));
    // Only NaN weights: the norm reported is NaN.
    g = g_original;
    g(1, 1) = ref::from_double<T>(1.0);
    g(2, 0) = ref::from_double<T>(1.0);
    const col_major<T> g2 = g;
    try {
      gradclip::adaptive_grad_clip(w, g, 0.01, 1e-3, {axis::rows, {}, gradclip::nonfinite::error});
      FAIL("no exception");
    } catch (const gradclip::nonfinite_error& e) {
      CHECK(e.tensor_index() == 0);
      CHECK(std::isnan(e.total_norm()));
    }
    CHECK(bytes_of(g) == bytes_of(g2));
    // A masked-out buffer is not looked at.
    gradclip::agc_options masked{axis::rows, {true, false}, gradclip::nonfinite::error};
    const auto r = gradclip::adaptive_grad_clip(std::tie(wb, w), std::tie(gb, g), 0.01, 1e-3, masked);
    CHECK(r.excluded == 1);
    CHECK(r.units == 1);
    CHECK(bytes_of(g) == bytes_of(g2));
  }
}

TEST_CASE("AGC bad arguments throw std::invalid_argument before anything is modified", "[agc][errors]") {
  Eigen::MatrixXf w = Eigen::MatrixXf::Constant(4, 3, 1.0f), g = Eigen::MatrixXf::Constant(4, 3, 5.0f);
  std::vector<float> wb(3, 1.0f), gb(3, 5.0f);
  const Eigen::MatrixXf g_original = g;
  const std::vector<float> gb_original = gb;
  using gradclip::adaptive_grad_clip;
  CHECK_THROWS_AS(adaptive_grad_clip(w, g, -0.01), std::invalid_argument);
  CHECK_THROWS_AS(adaptive_grad_clip(w, g, ref::nan), std::invalid_argument);
  CHECK_THROWS_AS(adaptive_grad_clip(w, g, 0.01, -1e-3), std::invalid_argument);
  CHECK_THROWS_AS(adaptive_grad_clip(w, g, 0.01, ref::nan), std::invalid_argument);
  CHECK_THROWS_AS(adaptive_grad_clip(w, g, 0.01, ref::inf), std::invalid_argument);
  CHECK_THROWS_AS(adaptive_grad_clip(w, g, 0.01, 1e-3, {static_cast<axis>(5)}), std::invalid_argument);
  // Counts and shapes; the bad buffer comes last so a partial write would show.
  CHECK_THROWS_AS(adaptive_grad_clip(std::tie(g_original), std::tie(g, gb), 0.01), std::invalid_argument);
  Eigen::MatrixXf wt = Eigen::MatrixXf::Constant(3, 4, 1.0f);
  CHECK_THROWS_AS(adaptive_grad_clip(std::tie(wb, wt), std::tie(gb, g), 0.01), std::invalid_argument);
  std::vector<float> w4(4, 1.0f);
  CHECK_THROWS_AS(adaptive_grad_clip(std::tie(w, w4), std::tie(g, gb), 0.01), std::invalid_argument);
  Eigen::MatrixXf w31 = Eigen::MatrixXf::Constant(3, 1, 1.0f), w13 = Eigen::MatrixXf::Constant(1, 3, 1.0f);
  CHECK_THROWS_AS(adaptive_grad_clip(std::tie(w31, w), std::tie(gb, wt), 0.01), std::invalid_argument);
  // A matrix against a vector of the same size.
  std::vector<float> w12(12, 1.0f);
  CHECK_THROWS_AS(adaptive_grad_clip(std::tie(wb, w12), std::tie(gb, g), 0.01), std::invalid_argument);
  // Mask of the wrong size.
  CHECK_THROWS_AS(adaptive_grad_clip(std::tie(w, wb), std::tie(g, gb), 0.01, 1e-3, {axis::rows, {true}}),
                  std::invalid_argument);
  CHECK_THROWS_AS(gradclip::agc(-1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::agc(0.01, -1.0), std::invalid_argument);
  CHECK(g == g_original);
  CHECK(gb == gb_original);
  // 1 x n against n x 1 is the same vector: accepted.
  std::vector<float> gb2 = gb;
  CHECK(adaptive_grad_clip(std::tie(w13, w31), std::tie(gb, gb2), 0.01).clipped == 2);
  const gradclip::agc clip;
  CHECK(clip.clipping() == 0.01);
  CHECK(clip.eps() == 1e-3);
  CHECK(clip.options().units == axis::rows);
}

TEMPLATE_TEST_CASE("AGC over several tiles of units, across and along the storage order", "[agc][across]", float,
                   double, Eigen::half) {
  using T = TestType;
  std::mt19937_64 rng(101);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  for (axis along : {axis::rows, axis::cols}) {
    // Weights column-major, gradients row-major: one side is read across, the other along.
    const Eigen::Index units = 2300, length = 3;
    col_major<T> w = along == axis::rows ? col_major<T>(units, length) : col_major<T>(length, units);
    row_major<T> g(w.rows(), w.cols());
    units_t wu = get_units(w, along), gu = get_units(g, along);
    for (std::size_t u = 0; u < wu.size(); ++u) {
      for (auto& e : wu[u]) e = normal(rng);
      if (u % 100 == 7) std::fill(wu[u].begin(), wu[u].end(), 0.0L);  // zero weights: eps applies
      const long double max_norm = 0.02L * std::max(ref::norm(wu[u], 2.0), 1e-3L);
      for (auto& e : gu[u]) e = normal(rng);
      const long double scale = max_norm * std::pow(10.0L, 1.5L * uniform(rng)) / ref::norm(gu[u], 2.0);
      for (auto& e : gu[u]) e *= scale;
    }
    set_units(w, along, wu);
    set_units(g, along, gu);
    const units_t w_before = get_units(w, along), g_before = get_units(g, along);
    const auto r = gradclip::adaptive_grad_clip(w, g, 0.02, 1e-3, {along});
    const units_t after = get_units(g, along);
    REQUIRE(r.units == static_cast<std::size_t>(units));
    std::size_t clipped = 0;
    for (std::size_t u = 0; u < after.size(); ++u) {
      const ref_unit want = reference_unit(w_before[u], g_before[u], 0.02, 1e-3);
      if (want.ambiguous) continue;
      if (!want.clipped) {
        CHECK(after[u] == g_before[u]);
        continue;
      }
      ++clipped;
      double worst = 0;
      for (std::size_t k = 0; k < after[u].size(); ++k) {
        worst = std::max(worst, ulp_distance(ref::from_double<T>(static_cast<double>(after[u][k])),
                                             g_before[u][k] * want.coefficient));
      }
      CHECK(worst <= (std::is_same_v<T, float> ? 1.6 : std::is_same_v<T, double> ? 4.0 : 1.0));
    }
    CHECK(r.clipped == clipped);
    CHECK(clipped > 600);
    CHECK(clipped < 1700);
  }
}
