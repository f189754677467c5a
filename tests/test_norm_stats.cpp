// norm_stats: Welford's moments against a two-pass long-double reference, window
// quantiles against numpy's linear interpolation (checked on numpy's own output),
// the ring buffer, non-finite norms, window and EMA clip rates and skipped steps
// against plain loops, post-clip norms, the histogram's edges and bins at their
// boundaries, its CSV and JSON text, the suggestion against auto_clip, the report,
// and the state record (round trip, version 1 records, and every kind of bad data
// leaving the object unchanged).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <locale>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <gradclip/adaptive/adagc.hpp>
#include <gradclip/adaptive/agc.hpp>
#include <gradclip/adaptive/auto_clip.hpp>
#include <gradclip/adaptive/clip_units.hpp>
#include <gradclip/adaptive/norm_stats.hpp>
#include <gradclip/clip_norm.hpp>

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
  // The figures version 2 added.
  CHECK(same(a.ema_alpha(), b.ema_alpha()));
  CHECK(same(a.clip_rate_ema(), b.clip_rate_ema()));
  CHECK(a.skipped_count() == b.skipped_count());
  CHECK(a.legacy_count() == b.legacy_count());
  CHECK(a.recent_count() == b.recent_count());
  CHECK(a.recent_clipped_count() == b.recent_clipped_count());
  CHECK(a.recent_skipped_count() == b.recent_skipped_count());
  CHECK(same(a.recent_clip_rate(), b.recent_clip_rate()));
  CHECK(a.post_count() == b.post_count());
  CHECK(a.post_nonfinite_count() == b.post_nonfinite_count());
  CHECK(same(a.post_mean(), b.post_mean()));
  CHECK(same(a.post_variance(), b.post_variance()));
  CHECK(same(a.post_min(), b.post_min()));
  CHECK(same(a.post_max(), b.post_max()));
  for (double q : {0.0, 0.1, 0.5, 0.9, 1.0}) CHECK(same(a.post_quantile(q), b.post_quantile(q)));
  for (double p : {0.0, 10.0, 50.0, 100.0}) CHECK(same(a.suggest_max_norm(p), b.suggest_max_norm(p)));
  CHECK(a.histogram().zero == b.histogram().zero);
  CHECK(a.histogram().underflow == b.histogram().underflow);
  CHECK(a.histogram().counts == b.histogram().counts);
  CHECK(a.histogram().overflow == b.histogram().overflow);
  CHECK(a.histogram().nonfinite == b.histogram().nonfinite);
  std::ostringstream ra, rb;
  a.report(ra);
  a.write_histogram_csv(ra);
  a.write_histogram_json(ra);
  b.report(rb);
  b.write_histogram_csv(rb);
  b.write_histogram_json(rb);
  CHECK(ra.str() == rb.str());
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
      gradclip::norm_stats a(gradclip::norm_stats_options{window, 0.9});
      // Every form of record: plain norms, clip_results (a post-clip norm), skipped steps.
      const auto feed = [&norms](gradclip::norm_stats& s, std::size_t i) {
        if (i % 2 == 0) {
          s.record(norms[i], i % 3 == 0);
        } else {
          s.record(gradclip::clip_result{norms[i], 0.25, i % 3 == 0}, i % 7 != 0);
        }
      };
      for (std::size_t i = 0; i < k; ++i) feed(a, i);
      gradclip::norm_stats b(5);  // another window and alpha: load restores them
      load(b, saved(a));
      check_all_same(a, b);
      for (std::size_t i = k; i < norms.size(); ++i) {
        feed(a, i);
        feed(b, i);
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
    CHECK_THROWS_AS(load(victim, record(stats_fields{}, "norm_stats", 2)), gradclip::state_error);  // v1 fields only
    CHECK_THROWS_AS(load(victim, record(stats_fields{}, "norm_stats", 3)), gradclip::state_error);
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

// ---- version 2: recent and EMA clip rates, skipped steps, post-clip norms, the
// histogram, the suggestion and the report ----

namespace {

// The histogram slot of a norm, from long double log10: 0 for <= 0, 1 below 1e-8,
// 2 + floor(10 log10 x) + 80 in [1e-8, 1e8), 162 above, 163 non-finite.
std::size_t reference_slot(double x) {
  if (!std::isfinite(x)) return 163;
  if (x <= 0) return 0;
  const long double tenths = std::floor(10.0L * std::log10(static_cast<long double>(x)));
  if (tenths < -80) return 1;
  if (tenths >= 80) return 162;
  return static_cast<std::size_t>(tenths + 80) + 2;
}

// A stream locale that would show if the library's text depended on it.
struct comma_numpunct : std::numpunct<char> {
  char do_decimal_point() const override { return ','; }
  char do_thousands_sep() const override { return '.'; }
  std::string do_grouping() const override { return "\3"; }
};

std::uint64_t slot_count(const gradclip::norm_histogram& h, std::size_t slot) {
  if (slot == 0) return h.zero;
  if (slot == 1) return h.underflow;
  if (slot == 162) return h.overflow;
  if (slot == 163) return h.nonfinite;
  return h.counts[slot - 2];
}

// Version 2's record of chosen fields (version 1's, then the extension).
struct v2_fields {
  stats_fields v1;  // window 4, norms 1, 2, 3, the second clipped
  double alpha = 0.99, ema = 0.0;
  std::uint64_t skipped = 1, legacy = 0, flags_next = 3;
  std::vector<std::pair<bool, bool>> flags{{false, false}, {true, true}, {false, false}};  // clipped, skipped
  std::uint64_t post_finite = 3, post_nonfinite = 0;
  double post_mean = 0, post_m2 = 0, post_min = 1.0, post_max = 3.0;
  std::uint64_t post_next = 3;
  std::vector<double> post_recent{1.0, 1.0, 3.0};
  std::vector<std::uint64_t> histogram = std::vector<std::uint64_t>(164, 0);

  v2_fields() {
    // What norm_stats(4) reaches through the records of base_stats(): the EMA and
    // Welford's moments of the post-clip norms 1, 1, 3, step by step in double.
    bool first = true;
    for (double flag : {0.0, 1.0, 0.0}) {
      ema = first ? flag : alpha * ema + (1 - alpha) * flag;
      first = false;
    }
    double n = 0;
    for (double x : post_recent) {
      ++n;
      const double d = x - post_mean;
      post_mean += d / n;
      post_m2 += d * (x - post_mean);
    }
    for (double x : {1.0, 2.0, 3.0}) ++histogram[reference_slot(x)];
  }
};

gradclip::norm_stats base_stats() {
  gradclip::norm_stats s(4);
  s.record(gradclip::clip_result{1.0, 1.0, false});
  s.record(gradclip::clip_result{2.0, 0.5, true}, false);
  s.record(gradclip::clip_result{3.0, 1.0, false});
  return s;
}

std::string record(const v2_fields& f) {
  gradclip::detail::state_writer w("norm_stats", 2);
  const stats_fields& v = f.v1;
  for (std::uint64_t u : {v.window, v.count, v.finite, v.nonfinite, v.clipped}) w.put_u64(u);
  for (double d : {v.mean, v.m2, v.min, v.max}) w.put_double(d);
  w.put_u64(v.next);
  w.put_doubles(v.recent);
  w.put_double(f.alpha);
  w.put_double(f.ema);
  w.put_u64(f.skipped);
  w.put_u64(f.legacy);
  w.put_u64(f.flags_next);
  w.put_u64(f.flags.size());
  for (auto [c, k] : f.flags) {
    w.put_bool(c);
    w.put_bool(k);
  }
  w.put_u64(f.post_finite);
  w.put_u64(f.post_nonfinite);
  for (double d : {f.post_mean, f.post_m2, f.post_min, f.post_max}) w.put_double(d);
  w.put_u64(f.post_next);
  w.put_doubles(f.post_recent);
  for (std::uint64_t h : f.histogram) w.put_u64(h);
  std::ostringstream out;
  w.write(out);
  return out.str();
}

}  // namespace

TEST_CASE("norm_stats: window and EMA clip rates and skipped steps follow a reference step by step", "[norm_stats]") {
  for (std::size_t window : {std::size_t{1}, std::size_t{10}, std::size_t{333}}) {
    for (double alpha : {0.0, 0.5, 0.99}) {
      INFO("window = " << window << ", alpha = " << alpha);
      gradclip::norm_stats stats(gradclip::norm_stats_options{window, alpha});
      CHECK(stats.clip_rate_ema() == 0.0);
      CHECK(stats.recent_clip_rate() == 0.0);
      const auto norms = norm_sequence(2000, 7 + window);
      std::mt19937_64 rng(window);
      std::deque<std::pair<bool, bool>> recent;  // clipped, skipped
      long double ema = 0;
      std::uint64_t skipped = 0;
      double worst = 0;
      for (std::size_t i = 0; i < norms.size(); ++i) {
        // Clipping in bursts, as a real run: the rate drifts.
        const bool c = (rng() % 100) < (i / 250 % 2 ? 70u : 5u);
        const bool taken = rng() % 9 != 0;
        switch (i % 3) {
          case 0: stats.record(norms[i], c, taken); break;
          case 1: stats.record(gradclip::clip_result{norms[i], c ? 0.5 : 1.0, c}, taken); break;
          default:
            if (taken) stats.record(gradclip::clip_result{norms[i], c ? 0.5 : 1.0, c});
            else stats.record(norms[i], c, false);
        }
        recent.emplace_back(c, !taken);
        if (recent.size() > window) recent.pop_front();
        ema = i == 0 ? (c ? 1 : 0) : alpha * ema + (1 - static_cast<long double>(alpha)) * (c ? 1 : 0);
        skipped += !taken;
        std::uint64_t rc = 0, rs = 0;
        for (auto [a, b] : recent) rc += a, rs += b;
        REQUIRE(stats.recent_count() == recent.size());
        REQUIRE(stats.recent_clipped_count() == rc);
        REQUIRE(stats.recent_skipped_count() == rs);
        REQUIRE(same(stats.recent_clip_rate(), static_cast<double>(rc) / static_cast<double>(recent.size())));
        REQUIRE(stats.skipped_count() == skipped);
        worst = std::max(worst, static_cast<double>(std::fabs(stats.clip_rate_ema() - ema)));
        REQUIRE(stats.clip_rate_ema() >= 0.0);
        REQUIRE(stats.clip_rate_ema() <= 1.0);
      }
      CHECK(worst <= 1e-13);
      CHECK(stats.count() == norms.size());  // skipped steps are records too
    }
  }
  CHECK_THROWS_AS(gradclip::norm_stats(gradclip::norm_stats_options{10, 1.0}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::norm_stats(gradclip::norm_stats_options{10, -0.1}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::norm_stats(gradclip::norm_stats_options{10, ref::nan}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::norm_stats(gradclip::norm_stats_options{0, 0.5}), std::invalid_argument);
  CHECK(gradclip::norm_stats().ema_alpha() == 0.99);
}

TEST_CASE("norm_stats: post-clip norms follow a reference and only clip results carry them", "[norm_stats]") {
  const std::size_t window = 50;
  gradclip::norm_stats stats(window);
  const auto norms = norm_sequence(900, 41);
  std::mt19937_64 rng(2);
  std::uniform_real_distribution<double> u(0.01, 1.0);
  std::vector<double> post;
  std::deque<double> recent;
  for (std::size_t i = 0; i < norms.size(); ++i) {
    const bool c = rng() % 2 == 0;
    const double scale = c ? u(rng) : 1.0;
    if (i % 4 == 3) {
      stats.record(norms[i], c);  // no post-clip norm
    } else {
      stats.record(gradclip::clip_result{norms[i], scale, c});
      const long double p = c ? static_cast<long double>(norms[i]) * scale : norms[i];
      post.push_back(static_cast<double>(p));
      if (std::isfinite(post.back())) {
        recent.push_back(post.back());
        if (recent.size() > window) recent.pop_front();
      }
    }
  }
  const moments m = two_pass(post);
  CHECK(stats.post_count() == post.size());
  CHECK(stats.post_nonfinite_count() == post.size() - m.n);
  CHECK(ref::rel_err(stats.post_mean(), m.mean) <= 1e-13);
  CHECK(ref::rel_err(stats.post_variance(), m.variance) <= 1e-12);
  CHECK(ref::rel_err(stats.post_stddev(), std::sqrt(m.variance)) <= 1e-12);
  CHECK(stats.post_min() == m.min);
  CHECK(stats.post_max() == m.max);
  const std::vector<double> r(recent.begin(), recent.end());
  for (double q : {0.0, 0.1, 0.5, 0.9, 1.0}) {
    CHECK(std::fabs(stats.post_quantile(q) - numpy_quantile(r, q)) <= 4 * DBL_EPSILON * m.max);
  }
  CHECK_THROWS_AS(stats.post_quantile(1.5), std::invalid_argument);

  // The real thing: the post-clip norm of a clip is the norm of the clipped data.
  std::vector<double> g{3.0, -4.0, 12.0};
  gradclip::norm_stats one;
  one.record(gradclip::clip_by_global_norm(g, 2.0));
  CHECK(one.mean() == 13.0);
  CHECK(ref::rel_err(one.post_mean(), ref::norm({g[0], g[1], g[2]}, 2.0)) <= 1e-15);
  CHECK(one.clipped_count() == 1);
  gradclip::norm_stats two;
  two.record(gradclip::clip_by_global_norm(g, 5.0));  // not clipped: the same norm after
  CHECK(two.clipped_count() == 0);
  CHECK(two.post_mean() == two.mean());

  // Per-unit summaries carry no post-clip norm (their scale is the smallest of
  // many); adagc's result gives one during its warm-up only.
  gradclip::norm_stats units;
  gradclip::agc_result a;
  a.units = 3;
  a.clipped = 1;
  a.summary = {4.0, 0.25, true};
  units.record(a);
  gradclip::unit_clip_result cu;
  cu.summary = {5.0, 0.5, false};
  units.record(cu, false);
  CHECK(units.count() == 2);
  CHECK(units.clipped_count() == 1);
  CHECK(units.skipped_count() == 1);
  CHECK(units.post_count() == 0);
  CHECK(units.mean() == 4.5);
  gradclip::adagc_result w;
  w.total_norm = 8.0;
  w.warmup = true;
  w.buffers = {{6.0, 0.125, true}, {0.0, 0.125, true}};
  units.record(w);
  CHECK(units.post_count() == 1);
  CHECK(units.post_mean() == 1.0);
  w.warmup = false;
  w.buffers = {{6.0, 1.0, false}, {0.0, 1.0, false}};
  units.record(w);
  CHECK(units.post_count() == 1);
  CHECK(units.count() == 4);
  CHECK(units.clipped_count() == 2);
}

TEST_CASE("norm_stats: histogram edges and bins at their boundaries", "[norm_stats][long_double]") {
  using H = gradclip::norm_histogram;
  // Each edge is the double nearest to 10^(k/10 - 8); the decades are their literals.
  for (std::size_t k = 0; k <= H::bins; ++k) {
    INFO("edge " << k);
    const long double want = std::pow(10.0L, static_cast<long double>(static_cast<int>(k) - 80) / 10);
    const double e = H::edge(k);
    const long double err = std::fabs(static_cast<long double>(e) - want);
    if (std::numeric_limits<long double>::digits > std::numeric_limits<double>::digits) {
      CHECK(err <= std::fabs(static_cast<long double>(std::nextafter(e, ref::inf)) - want));
      CHECK(err <= std::fabs(static_cast<long double>(std::nextafter(e, 0.0)) - want));
    } else {  // long double is double: pow itself may be an ulp off
      CHECK(err <= static_cast<long double>(std::nextafter(e, ref::inf) - e));
    }
    if (k % 10 == 0) CHECK(e == std::stod("1e" + std::to_string(static_cast<int>(k / 10) - 8)));
    if (k > 0) CHECK(H::edge(k - 1) < e);
  }
  CHECK(H::edge(80) == 1.0);
  CHECK(std::isnan(H::edge(161)));

  gradclip::norm_stats stats;
  std::vector<std::uint64_t> want(164, 0);
  const auto put = [&](double x, std::size_t slot) {
    INFO("norm " << x);
    stats.record(x, false);
    ++want[slot];
    CHECK(H::slot_of(x) == slot);
  };
  // The edges belong to the bin above them; the double just below to the one below.
  for (std::size_t k = 0; k <= H::bins; ++k) {
    put(H::edge(k), k + 2);
    put(std::nextafter(H::edge(k), 0.0), k + 1);
  }
  put(1e-5, 32);   // an exact decade
  put(1e7, 152);
  put(0.0, 0);
  put(-0.0, 0);
  put(-1.0, 0);    // no norm, but it has a place
  put(std::numeric_limits<double>::denorm_min(), 1);
  put(std::numeric_limits<double>::min(), 1);
  put(std::numeric_limits<double>::max(), 162);
  put(ref::inf, 163);
  put(ref::nan, 163);
  // Away from the edges, the bin is floor(10 log10 x) + 80.
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<double> exponent(-9.0, 9.0);
  for (int i = 0; i < 5000; ++i) {
    const double x = std::pow(10.0, exponent(rng));
    const long double t = 10.0L * std::log10(static_cast<long double>(x));
    if (std::fabs(t - std::round(t)) < 1e-9L) continue;
    put(x, reference_slot(x));
  }
  for (std::size_t s = 0; s < 164; ++s) {
    INFO("slot " << s);
    CHECK(slot_count(stats.histogram(), s) == want[s]);
  }
  CHECK(stats.histogram().total() == stats.count());
  CHECK(H::bin_of(1.0) == 80);
  CHECK(H::bin_of(1e8) == H::bins);
  CHECK(H::bin_of(ref::nan) == H::bins);
}

TEST_CASE("norm_stats: the histogram as CSV and JSON, exactly", "[norm_stats]") {
  gradclip::norm_stats stats;
  {
    std::ostringstream csv, json;
    stats.write_histogram_csv(csv);
    stats.write_histogram_json(json);
    CHECK(csv.str() == "bin,lower,upper,count\n");
    CHECK(json.str() == "{\"bins_per_decade\":10,\"lowest\":1e-08,\"highest\":1e+08,\"zero\":0,\"underflow\":0,"
                        "\"overflow\":0,\"nonfinite\":0,\"bins\":[]}\n");
  }
  for (double x : {1.0, 1.2, 0.0, 2e8, ref::nan, 1e-5, 3e-9, 1.2589254117941673}) stats.record(x, false);
  std::ostringstream csv, json;
  csv.imbue(std::locale(std::locale::classic(), new comma_numpunct));  // whatever the stream's locale
  json.imbue(csv.getloc());
  stats.write_histogram_csv(csv);
  stats.write_histogram_json(json);
  CHECK(csv.str() ==
        "bin,lower,upper,count\n"
        "zero,0,0,1\n"
        "underflow,0,1e-08,1\n"
        "30,1e-05,1.2589254117941671e-05,1\n"
        "80,1,1.2589254117941673,2\n"
        "81,1.2589254117941673,1.5848931924611134,1\n"
        "overflow,1e+08,inf,1\n"
        "nonfinite,nan,nan,1\n");
  CHECK(json.str() ==
        "{\"bins_per_decade\":10,\"lowest\":1e-08,\"highest\":1e+08,\"zero\":1,\"underflow\":1,\"overflow\":1,"
        "\"nonfinite\":1,\"bins\":[{\"bin\":30,\"lower\":1e-05,\"upper\":1.2589254117941671e-05,\"count\":1},"
        "{\"bin\":80,\"lower\":1,\"upper\":1.2589254117941673,\"count\":2},"
        "{\"bin\":81,\"lower\":1.2589254117941673,\"upper\":1.5848931924611134,\"count\":1}]}\n");
  // Every number printed reads back as the edge it names.
  for (std::size_t k = 0; k <= gradclip::norm_histogram::bins; ++k) {
    CHECK(std::stod(gradclip::detail::exact_text(gradclip::norm_histogram::edge(k))) ==
          gradclip::norm_histogram::edge(k));
  }
}

TEST_CASE("norm_stats: the suggested max_norm is AutoClip's percentile of the recorded norms", "[norm_stats]") {
  for (std::size_t window : {std::size_t{1}, std::size_t{20}, std::size_t{500}}) {
    INFO("window = " << window);
    gradclip::norm_stats stats(window);
    gradclip::auto_clip_options o;
    o.window = window;
    gradclip::auto_clip clip(10.0, o);
    gradclip::auto_clip clip90(90.0, o);
    CHECK(std::isnan(stats.suggest_max_norm()));
    const auto norms = norm_sequence(1500, 3 + window);
    std::deque<double> recent;
    std::vector<double> dummy{0.0};
    for (double x : norms) {
      stats.record(clip(dummy, x));
      (void)clip90(dummy, x);
      if (std::isfinite(x)) {
        recent.push_back(x);
        if (recent.size() > window) recent.pop_front();
      }
      if (recent.empty()) continue;
      REQUIRE(same(stats.suggest_max_norm(), clip.threshold()));
      REQUIRE(same(stats.suggest_max_norm(90), clip90.threshold()));
      const std::vector<double> r(recent.begin(), recent.end());
      const double scale = *std::max_element(r.begin(), r.end());
      REQUIRE(std::fabs(stats.suggest_max_norm() - numpy_quantile(r, 0.1)) <= 4 * DBL_EPSILON * scale);
    }
  }
  gradclip::norm_stats stats;
  stats.record(1.0, false);
  for (double p : {-1.0, 100.5, ref::nan, ref::inf}) CHECK_THROWS_AS(stats.suggest_max_norm(p), std::invalid_argument);
  CHECK(stats.suggest_max_norm(0) == 1.0);
}

TEST_CASE("norm_stats: the report shows every figure", "[norm_stats]") {
  gradclip::norm_stats stats(4);
  for (double x : {1.0, 1.0, 0.0, 2e8, ref::nan, 1e-5, 3e-9}) {
    stats.record(gradclip::clip_result{x, 0.5, x > 1.5}, x != 0.0);
  }
  std::ostringstream out;
  out.imbue(std::locale(std::locale::classic(), new comma_numpunct));
  out.precision(2);  // the stream's settings do not matter
  stats.report(out);
  // Figures (independently): 7 records, 1 NaN; clipped 1 of 7 (2e8), in the last 4
  // (2e8, NaN, 1e-5, 3e-9) 1; EMA 0, 0, 0, 0.01, 0.0099, 0.009801, 0.00970299;
  // skipped 1 (the 0), none in the last 4. Finite before: 1, 1, 0, 2e8, 1e-5, 3e-9:
  // mean 2e8 / 6, population stddev sqrt(5/36) 2e8; the last 4 finite 0, 2e8, 1e-5,
  // 3e-9: sorted 0, 3e-9, 1e-5, 2e8; p10 at 0.3: 9e-10, p50 at 1.5: 5.0015e-06,
  // p90 at 2.7: 1.4e8, p99 at 2.97: 1.94e8. After: 1, 1, 0, 1e8, 1e-5, 3e-9 (NaN).
  CHECK(out.str() ==
        "norm_stats: 7 records (non-finite norms: 1), window 4\n"
        "clipped: 14.2857% of all (1), 25% of the last 4 (1), EMA 0.970299% (alpha 0.99)\n"
        "skipped steps: 1 (0 of the last 4)\n"
        "before clipping: mean 3.33333e+07 stddev 7.45356e+07 min 0 max 2e+08 | last 4 finite: p10 9e-10 p50 5.0015e-06 "
        "p90 1.4e+08 p99 1.94e+08\n"
        "after clipping (7 records, 1 non-finite): mean 1.66667e+07 stddev 3.72678e+07 min 0 max 1e+08 | last 4 finite: "
        "p10 9e-10 p50 5.0015e-06 p90 7e+07 p99 9.7e+07\n"
        "suggested max_norm: 9e-10 (10th percentile of the last 4 finite norms, as AutoClip)\n");
  std::ostringstream empty;
  gradclip::norm_stats().report(empty);
  CHECK(empty.str().find("suggested max_norm: nan") != std::string::npos);
}

TEST_CASE("norm_stats: a version 1 record loads, and what it lacks starts at the resume", "[norm_stats]") {
  // What gradclip 0.1 wrote after 1, 2, 3 (the second clipped) with window 4.
  gradclip::norm_stats s(gradclip::norm_stats_options{7, 0.5});
  load(s, record(stats_fields{}));
  CHECK(s.window() == 4);
  CHECK(s.count() == 3);
  CHECK(s.clipped_count() == 1);
  CHECK(s.mean() == 2.0);
  CHECK(s.quantile(0.5) == 2.0);
  CHECK(s.legacy_count() == 3);
  CHECK(s.ema_alpha() == 0.5);  // this object's
  CHECK(s.clip_rate_ema() == s.clip_rate());
  CHECK(s.skipped_count() == 0);
  CHECK(s.recent_count() == 0);
  CHECK(s.post_count() == 0);
  CHECK(s.histogram().total() == 0);
  std::ostringstream text;
  s.report(text);
  CHECK(text.str().find("resumed from a version 1 record after 3 records") != std::string::npos);
  // It records on; its version 2 record resumes it exactly.
  for (double x : {4.0, ref::nan, 5.0, 0.5}) s.record(gradclip::clip_result{x, 0.5, x > 4.5}, x != 0.5);
  CHECK(s.count() == 7);
  CHECK(s.legacy_count() == 3);
  CHECK(s.histogram().total() == 4);
  CHECK(s.recent_count() == 4);
  CHECK(s.recent_clipped_count() == 1);
  CHECK(s.skipped_count() == 1);
  CHECK(s.post_count() == 4);
  CHECK(same(s.clip_rate_ema(), ((1.0 / 3 * 0.5 * 0.5) * 0.5 + 0.5) * 0.5));  // flags 0, 0, 1, 0 after 1/3
  gradclip::norm_stats t;
  load(t, saved(s));
  check_all_same(s, t);
}

TEST_CASE("norm_stats: inconsistent version 2 records throw state_error and change nothing", "[norm_stats]") {
  const v2_fields base;
  REQUIRE(record(base) == saved(base_stats()));  // the base is what norm_stats writes
  gradclip::norm_stats victim(9);
  for (double x : {0.5, 7.0, ref::inf}) victim.record(gradclip::clip_result{x, 0.5, x > 1}, x < 7);
  const std::string before = saved(victim);
  std::vector<std::pair<const char*, v2_fields>> bad;
  const auto add = [&](const char* what, auto change) {
    v2_fields f;
    change(f);
    bad.emplace_back(what, f);
  };
  add("alpha 1", [](v2_fields& f) { f.alpha = 1.0; });
  add("alpha < 0", [](v2_fields& f) { f.alpha = -0.25; });
  add("alpha NaN", [](v2_fields& f) { f.alpha = ref::nan; });
  add("EMA > 1", [](v2_fields& f) { f.ema = 1.5; });
  add("EMA < 0", [](v2_fields& f) { f.ema = -0.0625; });
  add("EMA NaN", [](v2_fields& f) { f.ema = ref::nan; });
  add("more skipped than recorded", [](v2_fields& f) { f.skipped = 4; });
  add("fewer skipped than the window's", [](v2_fields& f) { f.skipped = 0; });
  add("legacy > count", [](v2_fields& f) { f.legacy = 4; });
  add("legacy without room for the flags", [](v2_fields& f) { f.legacy = 1; });
  add("a flag too many", [](v2_fields& f) { f.flags.push_back({false, false}); });
  add("a flag too few", [](v2_fields& f) { f.flags.pop_back(); });
  add("next flag outside the window", [](v2_fields& f) { f.flags_next = 4; });
  add("next flag not at the end", [](v2_fields& f) { f.flags_next = 1; });
  add("more clipped flags than clipped", [](v2_fields& f) { f.flags[0].first = true; });
  add("more post-clip norms than records", [](v2_fields& f) {
    f.post_nonfinite = 1;
  });
  add("post ring not the last finite", [](v2_fields& f) { f.post_recent.pop_back(); });
  add("post mean NaN", [](v2_fields& f) { f.post_mean = ref::nan; });
  add("post min > max", [](v2_fields& f) { f.post_min = 4.0; });
  add("post m2 < 0", [](v2_fields& f) { f.post_m2 = -1.0; });
  add("post next outside", [](v2_fields& f) { f.post_next = 7; });
  add("histogram short", [](v2_fields& f) { --f.histogram[reference_slot(1.0)]; });
  add("histogram long", [](v2_fields& f) { ++f.histogram[reference_slot(2.0)]; });
  add("histogram wrapping to the right total", [](v2_fields& f) {
    f.histogram[0] = std::numeric_limits<std::uint64_t>::max();
    ++f.histogram[reference_slot(1.0)];
  });
  add("histogram below min", [](v2_fields& f) {
    --f.histogram[reference_slot(2.0)];
    ++f.histogram[reference_slot(0.5)];
  });
  add("histogram above max", [](v2_fields& f) {
    --f.histogram[reference_slot(2.0)];
    ++f.histogram[reference_slot(30.0)];
  });
  add("histogram min's slot empty", [](v2_fields& f) {
    --f.histogram[reference_slot(1.0)];
    ++f.histogram[reference_slot(2.0)];
  });
  add("histogram non-finite without non-finite norms", [](v2_fields& f) {
    --f.histogram[reference_slot(2.0)];
    ++f.histogram[163];
  });
  add("an empty state with an EMA", [](v2_fields& f) {
    f = v2_fields{};
    f.v1 = stats_fields{4, 0, 0, 0, 0, 0.0, 0.0, ref::inf, -ref::inf, 0, {}};
    f.skipped = 0;
    f.flags_next = 0;
    f.flags.clear();
    f.post_finite = 0, f.post_mean = 0, f.post_m2 = 0, f.post_min = ref::inf, f.post_max = -ref::inf, f.post_next = 0;
    f.post_recent.clear();
    f.histogram.assign(164, 0);
    f.ema = 0.5;
  });
  for (const auto& [what, f] : bad) {
    INFO(what);
    CHECK_THROWS_AS(load(victim, record(f)), gradclip::state_error);
    CHECK(saved(victim) == before);
  }
  // The empty state without the EMA loads (the case above is that one bit off).
  v2_fields empty = bad.back().second;
  empty.ema = 0.0;
  load(victim, record(empty));
  CHECK(victim.count() == 0);
}
