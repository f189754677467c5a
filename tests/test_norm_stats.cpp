// norm_stats: Welford's moments against a two-pass long-double reference, window
// quantiles against numpy's linear interpolation (checked on numpy's own output),
// the ring buffer, non-finite norms, and the state record (round trip, and every
// kind of bad data leaving the object unchanged).
#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gradclip/adaptive/norm_stats.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

// numpy.quantile(data, q) (method "linear", numpy >= 1.22), written from numpy's
// source: index (n - 1) q, neighbours floor and floor + 1, _lerp from the nearer end.
double numpy_quantile(std::vector<double> data, double q) {
  std::sort(data.begin(), data.end());
  const std::size_t n = data.size();
  const double vi = static_cast<double>(n - 1) * q;
  if (vi >= static_cast<double>(n - 1)) return data[n - 1];
  const double prev = std::floor(vi);
  const double gamma = vi - prev;
  const double a = data[static_cast<std::size_t>(prev)], b = data[static_cast<std::size_t>(prev) + 1];
  const double diff_b_a = b - a;
  return gamma >= 0.5 ? b - diff_b_a * (1 - gamma) : a + diff_b_a * gamma;
}

// Two-pass moments in long double over the finite values.
struct moments {
  long double mean = 0, variance = 0;
  double min = ref::inf, max = -ref::inf;
  std::size_t n = 0;
};

moments two_pass(const std::vector<double>& x) {
  moments m;
  long double s = 0;
  for (double v : x) {
    if (!std::isfinite(v)) continue;
    s += v;
    ++m.n;
    m.min = std::min(m.min, v);
    m.max = std::max(m.max, v);
  }
  if (m.n == 0) return m;
  m.mean = s / static_cast<long double>(m.n);
  long double ss = 0;
  for (double v : x) {
    if (std::isfinite(v)) ss += (v - m.mean) * (v - m.mean);
  }
  m.variance = ss / static_cast<long double>(m.n);
  return m;
}

// Lognormal norms with spikes, zeros, NaNs and infinities.
std::vector<double> norm_sequence(std::size_t n, std::uint64_t seed, double offset = 0.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> gauss(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> out(n);
  for (double& x : out) {
    const double r = u(rng);
    x = offset + std::exp(gauss(rng));
    if (r < 0.03) x *= 1e3;                 // spike
    else if (r < 0.04) x = ref::nan;
    else if (r < 0.045) x = ref::inf;
    else if (r < 0.05) x = offset;          // a zero gradient (plus offset)
  }
  return out;
}

bool same(double a, double b) { return ref::same_bits(a, b); }

std::string saved(const gradclip::norm_stats& s) {
  std::ostringstream out;
  s.save(out);
  return out.str();
}

void load(gradclip::norm_stats& s, const std::string& bytes) {
  std::istringstream in(bytes);
  s.load(in);
}

// A record with chosen fields, for the inconsistent-data cases.
struct stats_fields {
  std::uint64_t window = 4, count = 3, finite = 3, nonfinite = 0, clipped = 1;
  double mean = 2.0, m2 = 2.0, min = 1.0, max = 3.0;
  std::uint64_t next = 3;
  std::vector<double> recent{1.0, 2.0, 3.0};
};

std::string record(const stats_fields& f, const char* kind = "norm_stats", std::uint32_t version = 1) {
  gradclip::detail::state_writer w(kind, version);
  w.put_u64(f.window);
  w.put_u64(f.count);
  w.put_u64(f.finite);
  w.put_u64(f.nonfinite);
  w.put_u64(f.clipped);
  w.put_double(f.mean);
  w.put_double(f.m2);
  w.put_double(f.min);
  w.put_double(f.max);
  w.put_u64(f.next);
  w.put_doubles(f.recent);
  std::ostringstream out;
  w.write(out);
  return out.str();
}

void check_all_same(const gradclip::norm_stats& a, const gradclip::norm_stats& b) {
  CHECK(a.count() == b.count());
  CHECK(a.nonfinite_count() == b.nonfinite_count());
  CHECK(a.clipped_count() == b.clipped_count());
  CHECK(same(a.clip_rate(), b.clip_rate()));
  CHECK(same(a.mean(), b.mean()));
  CHECK(same(a.variance(), b.variance()));
  CHECK(same(a.min(), b.min()));
  CHECK(same(a.max(), b.max()));
  CHECK(a.window() == b.window());
  for (double q : {0.0, 0.1, 0.5, 0.9, 1.0}) CHECK(same(a.quantile(q), b.quantile(q)));
  CHECK(saved(a) == saved(b));
}

}  // namespace

TEST_CASE("norm_stats: the numpy-style reference matches numpy", "[norm_stats]") {
  // numpy 1.24: np.quantile(data, p / 100) for each p.
  const std::vector<double> data{1.001847, 1.565364, 0.66285,  0.262925, 0.394273, 0.225944, 1.09441,
                                 7.465727, 0.477921, 0.394273, 2.084988, 1.708013, 1.171308};
  const double ps[] = {0, 1e-9, 3.7, 10, 25, 33.3, 50, 61.8, 90, 99.99, 100};
  const double numpy[] = {0.225944, 0.22594400000443773, 0.242363564, 0.2891946, 0.394273, 0.47758640799999996,
                          1.001847, 1.126399568, 2.009593,  7.459270113199996, 7.465727};
  for (std::size_t i = 0; i < std::size(ps); ++i) CHECK(same(numpy_quantile(data, ps[i] / 100), numpy[i]));
  // Cases where numpy's _lerp differs from a + t (b - a) in the last bit.
  CHECK(same(numpy_quantile({0.4225, 0.4542, 0.8946, 1.6366, 2.2773, 2.3589, 2.6264, 5.0608, 13.1037}, 96.2 / 100),
             10.658658400000006));
  CHECK(same(numpy_quantile({0.3209, 1.0535, 1.1049, 1.2537, 1.7518, 2.9045, 5.1725, 6.2725, 8.7522}, 73.7 / 100),
             4.936628));
}

TEST_CASE("norm_stats: moments, extremes and window quantiles follow the reference step by step", "[norm_stats]") {
  for (std::size_t window : {std::size_t{1}, std::size_t{7}, std::size_t{100}, std::size_t{1000}, std::size_t{5000}}) {
    INFO("window = " << window);
    const auto norms = norm_sequence(2500, 11 + window);
    gradclip::norm_stats stats(window);
    std::vector<double> seen;
    std::deque<double> recent;  // the reference ring: the last `window` finite norms
    std::mt19937_64 rng(5);
    std::uint64_t clipped = 0, nonfinite = 0;
    double worst_mean = 0, worst_var = 0, worst_quantile = 0;
    for (std::size_t step = 0; step < norms.size(); ++step) {
      const double x = norms[step];
      const bool c = (rng() & 3) == 0;
      stats.record(x, c);
      seen.push_back(x);
      clipped += c;
      if (std::isfinite(x)) {
        recent.push_back(x);
        if (recent.size() > window) recent.pop_front();
      } else {
        ++nonfinite;
      }
      REQUIRE(stats.count() == step + 1);
      REQUIRE(stats.clipped_count() == clipped);
      REQUIRE(stats.nonfinite_count() == nonfinite);
      REQUIRE(same(stats.clip_rate(), static_cast<double>(clipped) / static_cast<double>(step + 1)));
      const moments m = two_pass(seen);
      if (m.n == 0) {
        CHECK(std::isnan(stats.mean()));
        continue;
      }
      worst_mean = std::max(worst_mean, ref::rel_err(stats.mean(), m.mean));
      if (m.variance > 0) worst_var = std::max(worst_var, ref::rel_err(stats.variance(), m.variance));
      else CHECK(stats.variance() == 0.0);
      REQUIRE(stats.min() == m.min);
      REQUIRE(stats.max() == m.max);
      const std::vector<double> r(recent.begin(), recent.end());
      for (double q : {0.0, 0.1, 0.25, 0.5, 0.9, 0.999, 1.0}) {
        const double want = numpy_quantile(r, q);
        const double got = stats.quantile(q);
        // norm_stats interpolates as a + t (b - a); numpy from the nearer end:
        // the two may differ in the last bit or so of the larger neighbour.
        const double scale = *std::max_element(r.begin(), r.end());
        worst_quantile = std::max(worst_quantile, std::fabs(got - want) / scale);
        if (q == 0.0 || q == 1.0 || r.size() == 1) REQUIRE(got == want);
      }
    }
    CHECK(worst_mean <= 1e-13);
    CHECK(worst_var <= 1e-12);
    CHECK(worst_quantile <= 4 * std::numeric_limits<double>::epsilon());
  }
}

TEST_CASE("norm_stats: Welford stays accurate with a large common offset", "[norm_stats]") {
  // Naive sum-of-squares loses every digit here; Welford keeps most of them.
  gradclip::norm_stats stats(10);
  std::vector<double> seen;
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int i = 0; i < 20000; ++i) {
    const double x = 1e9 + u(rng);
    stats.record(x, false);
    seen.push_back(x);
  }
  const moments m = two_pass(seen);
  CHECK(ref::rel_err(stats.mean(), m.mean) <= 1e-14);
  CHECK(ref::rel_err(stats.variance(), m.variance) <= 1e-6);
  CHECK(ref::rel_err(stats.stddev(), std::sqrt(m.variance)) <= 1e-6);
}

TEST_CASE("norm_stats: the window is a ring of the most recent finite norms", "[norm_stats]") {
  gradclip::norm_stats stats(3);
  for (double x : {5.0, 1.0, 4.0}) stats.record(x, false);
  CHECK(stats.quantile(0.0) == 1.0);
  CHECK(stats.quantile(1.0) == 5.0);
  stats.record(2.0, false);  // evicts 5
  CHECK(stats.quantile(1.0) == 4.0);
  CHECK(stats.quantile(0.5) == 2.0);
  stats.record(ref::nan, true);  // not in the ring: evicts nothing
  stats.record(ref::inf, false);
  CHECK(stats.quantile(0.0) == 1.0);
  CHECK(stats.quantile(1.0) == 4.0);
  stats.record(9.0, false);  // evicts 1
  CHECK(stats.quantile(0.0) == 2.0);
  CHECK(stats.quantile(1.0) == 9.0);
  CHECK(stats.quantile(0.25) == 3.0);
  // Moments and extremes cover everything finite ever recorded.
  CHECK(stats.min() == 1.0);
  CHECK(stats.max() == 9.0);
  CHECK(stats.mean() == Approx(21.0 / 5));
  CHECK(stats.count() == 7);
  CHECK(stats.nonfinite_count() == 2);
  CHECK(stats.clipped_count() == 1);
}

TEST_CASE("norm_stats: empty and non-finite-only statistics", "[norm_stats]") {
  gradclip::norm_stats stats;
  CHECK(stats.window() == 1000);
  CHECK(stats.clip_rate() == 0.0);
  CHECK(std::isnan(stats.mean()));
  CHECK(std::isnan(stats.variance()));
  CHECK(std::isnan(stats.stddev()));
  CHECK(std::isnan(stats.min()));
  CHECK(std::isnan(stats.max()));
  CHECK(std::isnan(stats.quantile(0.5)));
  stats.record(gradclip::clip_result{ref::nan, 1.0, false});
  stats.record(gradclip::clip_result{ref::inf, 0.0, true});
  stats.record(-ref::inf, false);
  CHECK(stats.count() == 3);
  CHECK(stats.nonfinite_count() == 3);
  CHECK(stats.clipped_count() == 1);
  CHECK(stats.clip_rate() == Approx(1.0 / 3));
  CHECK(std::isnan(stats.mean()));
  CHECK(std::isnan(stats.quantile(0.5)));
  stats.record(gradclip::clip_result{2.5, 0.5, true});
  CHECK(stats.mean() == 2.5);
  CHECK(stats.variance() == 0.0);
  CHECK(stats.quantile(0.3) == 2.5);
}

TEST_CASE("norm_stats: bad arguments throw", "[norm_stats]") {
  CHECK_THROWS_AS(gradclip::norm_stats(0), std::invalid_argument);
  gradclip::norm_stats stats;
  stats.record(1.0, false);
  for (double q : {-0.1, 1.0000001, ref::nan, ref::inf, -ref::inf}) {
    CHECK_THROWS_AS(stats.quantile(q), std::invalid_argument);
  }
}

TEST_CASE("norm_stats: a saved state resumes bit-identically", "[norm_stats]") {
  for (std::size_t window : {std::size_t{1}, std::size_t{17}, std::size_t{1000}}) {
    for (std::size_t k : {std::size_t{0}, std::size_t{5}, std::size_t{300}}) {
      INFO("window = " << window << ", saved at step " << k);
      const auto norms = norm_sequence(700, 23);
      gradclip::norm_stats a(window);
      for (std::size_t i = 0; i < k; ++i) a.record(norms[i], i % 3 == 0);
      gradclip::norm_stats b(5);  // another window: load restores it
      load(b, saved(a));
      check_all_same(a, b);
      for (std::size_t i = k; i < norms.size(); ++i) {
        a.record(norms[i], i % 3 == 0);
        b.record(norms[i], i % 3 == 0);
      }
      check_all_same(a, b);
    }
  }
}

TEST_CASE("norm_stats: bad state data throws state_error and changes nothing", "[norm_stats]") {
  gradclip::norm_stats victim(50);
  const auto norms = norm_sequence(80, 31);
  for (std::size_t i = 0; i < norms.size(); ++i) victim.record(norms[i], i % 2 == 0);
  const std::string before = saved(victim);

  gradclip::norm_stats source(6);
  for (double x : {1.0, 2.0, 3.0, ref::nan, 4.0}) source.record(x, true);
  const std::string good = saved(source);

  SECTION("truncated") {
    for (std::size_t n = 0; n < good.size(); ++n) {
      INFO("kept " << n << " of " << good.size() << " bytes");
      CHECK_THROWS_AS(load(victim, good.substr(0, n)), gradclip::state_error);
    }
  }
  SECTION("corrupted") {
    for (std::size_t i = 0; i < good.size(); ++i) {
      for (unsigned char flip : {0x01, 0x80}) {
        std::string bad = good;
        bad[i] = static_cast<char>(static_cast<unsigned char>(bad[i]) ^ flip);
        INFO("byte " << i << " ^ " << int(flip));
        CHECK_THROWS_AS(load(victim, bad), gradclip::state_error);
      }
    }
  }
  SECTION("wrong kind") {
    CHECK_THROWS_AS(load(victim, record(stats_fields{}, "auto_clip")), gradclip::state_error);
    CHECK_THROWS_AS(load(victim, std::string("not a state at all")), gradclip::state_error);
  }
  SECTION("wrong version") {
    CHECK_THROWS_AS(load(victim, record(stats_fields{}, "norm_stats", 2)), gradclip::state_error);
    CHECK_THROWS_AS(load(victim, record(stats_fields{}, "norm_stats", 0)), gradclip::state_error);
  }
  SECTION("inconsistent fields") {
    load(victim, record(stats_fields{}));  // the base record is valid...
    load(victim, before);
    std::vector<stats_fields> bad(10);
    bad[0].window = 0;
    bad[1].recent = {1, 2, 3, 4, 5};  // more than the window
    bad[2].next = 4;                  // outside the window
    bad[3].nonfinite = 1;             // finite + nonfinite != count
    bad[4].clipped = 4;               // more clipped than recorded
    bad[5].finite = 2, bad[5].nonfinite = 1;  // more recent norms than finite ones
    bad[6].m2 = -1.0;
    bad[7].m2 = ref::nan;
    bad[8].next = 1;                    // not full, yet the next slot is not the end
    bad[9].finite = 5, bad[9].count = 5;  // 5 finite norms, a window of 4, but only 3 kept
    for (std::size_t i = 0; i < bad.size(); ++i) {
      INFO("case " << i);
      CHECK_THROWS_AS(load(victim, record(bad[i])), gradclip::state_error);
    }
  }
  CHECK(saved(victim) == before);
}
