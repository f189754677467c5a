// Property tests: many seeded random cases of the invariants every call keeps
// (tests/fuzz/invariants.hpp, shared with the fuzz targets), over every element
// type, group shape (vector of views, strided Eigen Maps, a tuple mixing types),
// misalignment, split and value class, plus the hard cases named explicitly:
// coefficients below FLT_MIN, huge and tiny norms, any split of the same data.
#include <cfloat>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "fuzz/invariants.hpp"

namespace {

using fz::etype;
using fz::fcase;

constexpr double norm_types[] = {1.0, 2.0, fz::inf, 3.0, 0.5, 1.5, 3.5};
constexpr gradclip::nonfinite policies[] = {gradclip::nonfinite::propagate, gradclip::nonfinite::error,
                                            gradclip::nonfinite::skip};

struct gen {
  std::mt19937_64 rng;
  explicit gen(std::uint64_t seed) : rng(seed) {}

  std::uint64_t bits() { return rng(); }
  double uniform() { return static_cast<double>(rng() >> 11) * 0x1p-53; }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng() % n); }
  bool chance(double p) { return uniform() < p; }
  template <class T, std::size_t N>
  T pick(const T (&a)[N]) {
    return a[below(N)];
  }

  std::size_t size() {
    const std::size_t r = below(100);
    if (r < 60) return below(20);
    if (r < 85) return below(300);
    if (r < 95) return 4090 + below(12);  // around one block of the kernels
    return below(4097);
  }

  // A value of type t: mostly ordinary gradients, sometimes any magnitude the type
  // has, sometimes a special value.
  double value(etype t, double special_rate) {
    if (chance(special_rate)) {
      const double s[] = {fz::qnan, fz::inf, -fz::inf, 0.0, -0.0, DBL_MIN, 5e-324, FLT_MIN, 1e-45, FLT_MAX, -FLT_MAX,
                          65504.0, 6e-8, DBL_MAX};
      return s[below(sizeof s / sizeof s[0])];
    }
    const double mag = std::ldexp(0.5 + uniform(), static_cast<int>(below(9)) - 4);
    double v = mag;
    if (chance(0.2)) {  // anywhere in the type's range
      const int lo = fz::min_exponent_of(t) - fz::digits_of(t), hi = t == etype::f64 ? 1023 : (t == etype::f16 ? 15 : 127);
      v = std::ldexp(0.5 + uniform(), lo + static_cast<int>(below(static_cast<std::size_t>(hi - lo))));
    }
    return chance(0.5) ? -v : v;
  }

  fcase make(double special_rate, std::size_t max_buffers = 6) {
    const fz::shape shapes[] = {fz::shape::views, fz::shape::maps, fz::shape::tuple};
    const fz::shape k = pick(shapes);
    fcase c;
    if (k == fz::shape::tuple) {
      std::size_t sizes[4], offsets[4];
      for (int i = 0; i < 4; ++i) {
        sizes[i] = chance(0.2) ? 0 : size();
        offsets[i] = below(17);
      }
      c = fcase::mixed(sizes, offsets);
    } else {
      const etype t = static_cast<etype>(below(4));
      std::vector<std::size_t> sizes(below(max_buffers + 1));
      for (auto& n : sizes) n = size();
      c = fcase::homogeneous(t, k, sizes, below(17), 1 + static_cast<std::ptrdiff_t>(below(3)), below(3));
    }
    for (std::size_t i = 0; i < c.count(); ++i)
      for (std::size_t j = 0; j < c.buffers[i].n; ++j) c.set_value(i, j, value(c.buffers[i].type, special_rate));
    return c;
  }

  // A limit relative to the norm: the interesting region is around it.
  double max_norm(double norm) {
    const double fractions[] = {0.0, 1e-300, 1e-30, 1e-3, 0.5, 0.999999, 1.0, 1.000001, 2.0};
    if (chance(0.1)) return fz::inf;
    if (!std::isfinite(norm) || norm == 0) return uniform() * 4;
    return norm * pick(fractions);
  }
};

#define CHECK_INVARIANT(expr)         \
  do {                                \
    const std::string failure_ = (expr); \
    INFO(failure_);                   \
    CHECK(failure_.empty());          \
    if (!failure_.empty()) return;    \
  } while (0)

}  // namespace

TEST_CASE("norms match the long-double reference for random groups of every shape", "[properties][norm]") {
  gen g(1);
  for (int iter = 0; iter < 150; ++iter) {
    fcase c = g.make(0.02);
    const double p = g.pick(norm_types);
    INFO("iteration " << iter);
    CHECK_INVARIANT(fz::check_norms(c, p, iter % 3 == 0));
  }
}

TEST_CASE("norm clipping keeps its promises for random groups, limits, options and policies", "[properties][clip]") {
  gen g(2);
  const fz::clip_api apis[] = {fz::clip_api::by_global_norm, fz::clip_api::with_norm, fz::clip_api::coefficient,
                               fz::clip_api::functor, fz::clip_api::by_norm_single};
  const double epsilons[] = {0.0, 1e-6, 1e-3, 1.0};
  for (int iter = 0; iter < 250; ++iter) {
    fcase c = g.make(iter % 4 == 0 ? 0.01 : 0.0, iter % 5 == 0 ? 1 : 6);
    gradclip::clip_options o;
    o.norm_type = g.pick(norm_types);
    o.eps = g.pick(epsilons);
    o.on_nonfinite = g.pick(policies);
    const double norm = c.with_group([&](auto& grp) { return gradclip::global_norm(grp, o.norm_type); });
    const fz::clip_api api = g.pick(apis);
    double given = norm;
    if (api == fz::clip_api::with_norm && g.chance(0.3)) {
      const double others[] = {0.0, fz::qnan, fz::inf, norm * 10, norm * 0.1};
      given = g.pick(others);
    }
    INFO("iteration " << iter);
    CHECK_INVARIANT(fz::check_clip_norm(c, api, g.max_norm(norm), o, given));
  }
}

TEST_CASE("clip_each_by_norm clips every buffer as clip_by_norm would alone", "[properties][each]") {
  gen g(3);
  for (int iter = 0; iter < 120; ++iter) {
    fcase c = g.make(iter % 3 == 0 ? 0.01 : 0.0);
    gradclip::clip_options o;
    o.norm_type = g.pick(norm_types);
    o.eps = g.chance(0.5) ? 0.0 : 1e-6;
    o.on_nonfinite = g.pick(policies);
    std::vector<double> limits(c.count());
    for (std::size_t i = 0; i < c.count(); ++i) {
      limits[i] = g.max_norm(c.with_buffer(i, [&](auto& b) { return gradclip::norm(b, o.norm_type); }));
    }
    const bool one = g.chance(0.3) || limits.empty();
    if (one) limits.assign(1, g.uniform() * 3);
    INFO("iteration " << iter);
    CHECK_INVARIANT(fz::check_clip_each(c, limits, one, o));
  }
}

TEST_CASE("value clipping keeps NaN, stays in range and writes only what is out of range", "[properties][value]") {
  gen g(4);
  const fz::value_api apis[] = {fz::value_api::bounds, fz::value_api::symmetric, fz::value_api::functor_bounds,
                                fz::value_api::functor_symmetric};
  for (int iter = 0; iter < 200; ++iter) {
    fcase c = g.make(0.05);
    double lo = g.value(etype::f64, 0.05), hi = g.value(etype::f64, 0.05);
    if (g.chance(0.8) && lo > hi) std::swap(lo, hi);
    if (g.chance(0.1)) hi = lo;  // a single point, often between two values of the type
    const fz::value_api api = g.pick(apis);
    if ((api == fz::value_api::symmetric || api == fz::value_api::functor_symmetric) && g.chance(0.8)) {
      hi = std::fabs(hi);
    }
    INFO("iteration " << iter);
    CHECK_INVARIANT(fz::check_clip_value(c, api, lo, hi));
  }
}

TEST_CASE("the clip bound holds when the coefficient is below FLT_MIN", "[properties][range]") {
  gen g(5);
  for (int iter = 0; iter < 40; ++iter) {
    // Float gradients of norm ~1e35 clipped to 1e-10: coefficient ~1e-45.
    const std::size_t n = 1 + g.below(3000);
    fcase c = fcase::homogeneous(etype::f32, iter % 2 ? fz::shape::maps : fz::shape::views, {n, g.size()},
                                 g.below(9), 1 + static_cast<std::ptrdiff_t>(g.below(2)));
    for (std::size_t i = 0; i < c.count(); ++i)
      for (std::size_t j = 0; j < c.buffers[i].n; ++j) c.set_value(i, j, g.value(etype::f32, 0.0) * 1e33);
    const double p = g.pick(norm_types);
    const double norm = c.with_group([&](auto& grp) { return gradclip::global_norm(grp, p); });
    INFO("iteration " << iter << ", norm " << norm);
    CHECK_INVARIANT(fz::check_clip_norm(c, fz::clip_api::by_global_norm, 1e-10, {p, 1e-6, gradclip::nonfinite::error}));
  }
  // The exact case of the brief: 1000 x 1e35f clipped to 1e-10.
  fcase c = fcase::homogeneous(etype::f32, fz::shape::views, {1000}, 3);
  for (std::size_t j = 0; j < 1000; ++j) c.set_value(0, j, 1e35);
  CHECK_INVARIANT(fz::check_clip_norm(c, fz::clip_api::by_global_norm, 1e-10, {}));
  const auto after = c.values(0);
  for (auto v : after) CHECK(v == after[0]);  // direction: all still equal
}

TEST_CASE("the clip bound holds for half and bfloat16 gradients clipped far down", "[properties][range]") {
  gen g(6);
  for (int iter = 0; iter < 40; ++iter) {
    const etype t = iter % 2 ? etype::f16 : etype::bf16;
    fcase c = fcase::homogeneous(t, fz::shape::views, {g.size(), g.size()}, g.below(9));
    for (std::size_t i = 0; i < c.count(); ++i)
      for (std::size_t j = 0; j < c.buffers[i].n; ++j) c.set_value(i, j, g.value(t, 0.0) * (t == etype::f16 ? 100 : 1e30));
    const double fractions[] = {1e-3, 1e-6, 1e-9, 0.5};
    const double norm = c.with_group([&](auto& grp) { return gradclip::global_norm(grp); });
    INFO("iteration " << iter);
    CHECK_INVARIANT(fz::check_clip_norm(c, fz::clip_api::by_global_norm, norm * g.pick(fractions), {}));
  }
}

TEST_CASE("norms and clips agree within tolerance for every split of the same data", "[properties][split]") {
  gen g(7);
  for (int iter = 0; iter < 30; ++iter) {
    const etype t = static_cast<etype>(g.below(4));
    const std::size_t n = g.size() + 1;
    std::vector<double> data(n);
    for (auto& v : data) v = g.value(t, 0.0);
    const double p = g.pick(norm_types);
    std::vector<double> norms;
    std::vector<std::vector<fz::ld>> clipped;
    double max_norm = -1;
    for (int split = 0; split < 5; ++split) {
      // Cut points at random (the first try: one buffer).
      std::vector<std::size_t> cuts{0, n};
      for (int k = 0; split > 0 && k < 1 + static_cast<int>(g.below(8)); ++k) cuts.push_back(g.below(n + 1));
      std::sort(cuts.begin(), cuts.end());
      std::vector<std::size_t> sizes;
      for (std::size_t k = 1; k < cuts.size(); ++k) sizes.push_back(cuts[k] - cuts[k - 1]);
      fcase c = fcase::homogeneous(t, split % 2 ? fz::shape::maps : fz::shape::views, sizes, g.below(9),
                                   1 + static_cast<std::ptrdiff_t>(g.below(2)), g.below(2));
      std::size_t at = 0;
      for (std::size_t i = 0; i < c.count(); ++i)
        for (std::size_t j = 0; j < c.buffers[i].n; ++j) c.set_value(i, j, data[at++]);
      CHECK_INVARIANT(fz::check_norms(c, p, false));
      norms.push_back(c.with_group([&](auto& grp) { return gradclip::global_norm(grp, p); }));
      if (max_norm < 0) max_norm = norms[0] * 0.25;
      CHECK_INVARIANT(fz::check_clip_norm(c, fz::clip_api::by_global_norm, max_norm, {p, 0.0, gradclip::nonfinite::error}));
      clipped.push_back(c.values());
    }
    const double tol = fz::norm_tolerance(p, t != fz::etype::f64);
    for (std::size_t s = 1; s < norms.size(); ++s) {
      INFO("iteration " << iter << " split " << s << " p " << p);
      CHECK(std::fabs(norms[s] - norms[0]) <= 2 * tol * norms[0]);
      for (std::size_t k = 0; k < n; ++k) {
        // The coefficient differs by at most the norms' difference (2 tol), and each
        // clipped value by that plus 2 ulp of rounding.
        CHECK(std::fabs(clipped[s][k] - clipped[0][k]) <= 2 * fz::ulp(t, clipped[0][k]) +
                                                              2 * tol * std::fabs(clipped[0][k]) +
                                                              3 * fz::denorm_min(t));
      }
    }
  }
}

TEST_CASE("huge and tiny double norms are range-safe", "[properties][range]") {
  gen g(8);
  for (int iter = 0; iter < 40; ++iter) {
    const double scales[] = {1e300, 1e-300, 1e-320, 1e200, 1e-200};
    const double s = g.pick(scales);
    fcase c = fcase::homogeneous(etype::f64, fz::shape::views, {g.size(), g.size()}, g.below(9));
    for (std::size_t i = 0; i < c.count(); ++i)
      for (std::size_t j = 0; j < c.buffers[i].n; ++j) c.set_value(i, j, g.value(etype::f64, 0.0) * s);
    const double p = g.pick(norm_types);
    INFO("iteration " << iter << " scale " << s);
    CHECK_INVARIANT(fz::check_norms(c, p, false));
    const double norm = c.with_group([&](auto& grp) { return gradclip::global_norm(grp, p); });
    CHECK_INVARIANT(fz::check_clip_norm(c, fz::clip_api::by_global_norm, norm * 0.5, {p, 0.0, gradclip::nonfinite::error}));
  }
}

// ---- bugs the fuzz targets found, fixed: regression tests ---------------------------

TEST_CASE("fixed: norm_type above 1000 gives a norm of 0", "[properties][norm][regression]") {
  // The range-safe pass scales max |x| into [0.5, 1); for p > ~1075 its p-th power
  // underflows to 0, and so does the norm: clip_by_norm(x, max_norm, {p}) then never
  // clips. (norm_type is documented as any p > 0.)
  for (double p : {1100.0, 2000.0, 1e6, 1e300}) {
    fcase c = fcase::homogeneous(etype::f64, fz::shape::views, {3}, 0);
    c.set_value(0, 0, 0.6);
    c.set_value(0, 1, -0.3);
    c.set_value(0, 2, 1e10);
    INFO("p = " << p);
    CHECK_INVARIANT(fz::check_norms(c, p, false));
  }
}

TEST_CASE("fixed: a large norm_type of all-subnormal double data gives a norm of 0", "[properties][norm][regression]") {
  // Same cause: when max |x| < 2^-1021 the scale exponent is clamped at -1021, so
  // max |x| stays far below 0.5 after scaling and its p-th power underflows (p > ~24).
  fcase c = fcase::homogeneous(etype::f64, fz::shape::views, {2}, 0);
  c.set_value(0, 0, 2e-321);
  c.set_value(0, 1, 1e-322);
  for (double p : {30.0, 64.0}) {
    INFO("p = " << p);
    CHECK_INVARIANT(fz::check_norms(c, p, false));
  }
}

TEST_CASE("fixed: the clip bound for double gradients when the coefficient is below DBL_MIN", "[properties][range][regression]") {
  // The double analogue of the float case the library handles (scale_widened): a
  // coefficient max_norm / norm below DBL_MIN is subnormal and keeps only a few bits,
  // so the clipped norm misses max_norm by up to 2^-11 relative (1e-320: 11 bits).
  for (double max_norm : {1e-20, 1e-15}) {
    fcase c = fcase::homogeneous(etype::f64, fz::shape::views, {4}, 1);
    for (std::size_t j = 0; j < 4; ++j) c.set_value(0, j, 1e300 * static_cast<double>(j + 1));
    INFO("max_norm = " << max_norm);
    CHECK_INVARIANT(fz::check_clip_norm(c, fz::clip_api::by_global_norm, max_norm, {}));
  }
}

TEST_CASE("fixed: a group norm overflows when its buffers' partial sums add past DBL_MAX", "[properties][norm][regression]") {
  // Each buffer's partial (sum of x^p at scale 1) is finite, so the range-safe pass
  // keeps it; norm_accumulator then adds the partials at one scale and overflows to
  // inf. The norm of finite gradients is reported as inf, and clip_by_global_norm
  // treats them as non-finite: under the default policy it zeroes them. Affects double
  // data for every p, and float/half/bfloat16 for p other than 1 and 2;
  // combine_partials (the MPI all-reduce) likewise.
  fcase d = fcase::homogeneous(etype::f64, fz::shape::views, {1, 1}, 0);
  d.set_value(0, 0, 1.3e154);
  d.set_value(1, 0, -1.3e154);
  CHECK_INVARIANT(fz::check_norms(d, 2.0, false));
  fcase h = fcase::homogeneous(etype::f16, fz::shape::views, {1, 1}, 0);
  h.set_value(0, 0, 65504.0);
  h.set_value(1, 0, 65504.0);
  CHECK_INVARIANT(fz::check_norms(h, 64.0, false));
  CHECK_INVARIANT(fz::check_clip_norm(d, fz::clip_api::by_global_norm, 1.0, {}));
}
