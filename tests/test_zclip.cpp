// ZClip: step by step against an independent transcription of the published rule
// (Kumar et al. 2025, arXiv:2504.02507; the authors' zclip.py) over long random
// norm sequences with spikes, every mode, the cap, the warm-up boundary, non-finite
// steps under each policy, state round trips and bad arguments.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gradclip/adaptive/norm_stats.hpp>
#include <gradclip/adaptive/zclip.hpp>
#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

using group_t = std::vector<std::vector<double>>;

// ---- the reference ---------------------------------------------------------------
// Plain double code written from the paper's and zclip.py's rule, not from the
// library: record the first `warmup` norms, then mean/population variance; each
// later norm g: z = (g - mean) / (std + eps); a spike gets the threshold
// mean + z_thresh^2 * std / z (times clip_factor), the mean ('mean' mode) or
// mean + z_thresh * std ('percentile', spike when g exceeds it); the group is
// clipped to min(threshold, cap) after a spike, to cap otherwise; then
// mean = a*mean + (1-a)*x, var = a*var + (1-a)*(x - new mean)^2, x = the threshold
// after a spike, g otherwise. The library's documented choices are modelled too:
// non-finite norms are ignored by the statistics; warm-up 0 acts as 1.
struct zclip_ref {
  explicit zclip_ref(const gradclip::zclip_options& options) : o(options) {}

  gradclip::zclip_options o;
  std::vector<double> recorded;
  bool ready = false;
  double mean = 0, var = 0;
  int spikes = 0, clips = 0;

  struct step_out {
    double scale;
    bool clipped;
    bool spike;
  };

  static step_out coefficient(double limit, double g, double eps) {
    const double c = limit / (g + eps);
    return c < 1.0 ? step_out{c, true, false} : step_out{1.0, false, false};
  }

  step_out step(double g) {
    const double cap = o.max_grad_norm;
    if (!std::isfinite(g)) return coefficient(cap, g, o.eps);  // as clip_by_global_norm(cap)
    if (!ready) {
      recorded.push_back(g);
      if (static_cast<std::int64_t>(recorded.size()) >= std::max<std::int64_t>(o.warmup_steps, 1)) {
        double s = 0;
        for (double x : recorded) s += x;
        mean = s / static_cast<double>(recorded.size());
        double q = 0;
        for (double x : recorded) q += (x - mean) * (x - mean);
        var = q / static_cast<double>(recorded.size());
        ready = true;
      }
      auto out = coefficient(cap, g, o.eps);
      clips += out.clipped;
      return out;
    }
    const double sd = std::sqrt(var);
    bool spike = false;
    double threshold = 0;
    if (o.mode == gradclip::zclip_mode::percentile) {
      threshold = mean + o.z_thresh * sd;
      spike = g > threshold;
    } else {
      const double z = (g - mean) / (sd + o.eps);
      spike = z > o.z_thresh;
      if (o.mode == gradclip::zclip_mode::mean) {
        threshold = mean;
      } else {
        threshold = o.clip_factor * (mean + o.z_thresh * o.z_thresh * sd / z);
      }
    }
    auto out = coefficient(spike ? std::min(threshold, cap) : cap, g, o.eps);
    out.spike = spike;
    spikes += spike;
    clips += out.clipped;
    if (!(spike && o.skip_update_on_spike)) {
      const double x = spike ? threshold : g;
      mean = o.alpha * mean + (1 - o.alpha) * x;
      var = o.alpha * var + (1 - o.alpha) * (x - mean) * (x - mean);
    }
    return out;
  }
};

// ---- data ------------------------------------------------------------------------

// A drifting, noisy norm with occasional spikes of 3x to 40x.
std::vector<double> norm_sequence(std::size_t n, std::uint64_t seed, double spike_rate = 0.03) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, 0.15);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> g(n);
  for (std::size_t t = 0; t < n; ++t) {
    const double base = 0.4 + 2.0 * std::exp(-static_cast<double>(t) / 300.0);
    g[t] = base * std::exp(noise(rng));
    if (u(rng) < spike_rate) g[t] *= 3.0 + 37.0 * u(rng);
  }
  return g;
}

// A group of three double buffers whose L2 norm is `norm` (up to rounding).
group_t make_group(double norm, std::uint64_t seed) {
  group_t g{ref::random_values<double>(7, seed), ref::random_values<double>(60, seed + 1),
            ref::random_values<double>(1, seed + 2)};
  std::vector<long double> all;
  for (const auto& b : g) all.insert(all.end(), b.begin(), b.end());
  const long double n = ref::norm(all, 2.0);
  for (auto& b : g)
    for (double& x : b) x = static_cast<double>(x * (static_cast<long double>(norm) / n));
  return g;
}

long double group_norm(const group_t& g) {
  std::vector<long double> all;
  for (const auto& b : g) all.insert(all.end(), b.begin(), b.end());
  return ref::norm(all, 2.0);
}

bool same_bits(const group_t& a, const group_t& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return false;
    if (!a[i].empty() && std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(double)) != 0) return false;
  }
  return true;
}

std::string saved(const gradclip::zclip& c) {
  std::ostringstream out;
  c.save(out);
  return out.str();
}

bool close(double got, double want, double rel = 1e-12) {
  if (std::isnan(want)) return std::isnan(got);
  if (got == want) return true;
  return std::fabs(got - want) <= rel * std::max(std::fabs(want), 1e-300);
}

// Runs the clipper and the reference side by side over `norms`, checking every
// step; returns the reference for the caller's counts.
zclip_ref run_against_reference(const gradclip::zclip_options& o, const std::vector<double>& norms,
                                std::uint64_t seed) {
  gradclip::zclip clip(o);
  zclip_ref want(o);
  for (std::size_t t = 0; t < norms.size(); ++t) {
    auto g = make_group(norms[t], seed + 3 * t);
    const auto before = g;
    const auto r = clip(g);
    INFO("step " << t << ", norm " << norms[t]);
    REQUIRE(ref::rel_err(r.total_norm, group_norm(before)) <= 1e-13);
    const auto w = want.step(r.total_norm);
    REQUIRE(r.clipped == w.clipped);
    REQUIRE(close(r.scale, w.scale));
    // The data is scaled by exactly the reported factor (double: one rounding).
    for (std::size_t b = 0; b < g.size(); ++b)
      for (std::size_t i = 0; i < g[b].size(); ++i) REQUIRE(g[b][i] == before[b][i] * r.scale);
    REQUIRE(clip.step() == t + 1);
    REQUIRE(clip.warmed_up() == want.ready);
    if (want.ready) {
      REQUIRE(close(clip.mean(), want.mean));
      REQUIRE(close(clip.variance(), want.var, 1e-11));
    } else {
      REQUIRE(std::isnan(clip.mean()));
      REQUIRE(std::isnan(clip.stddev()));
    }
  }
  return want;
}

}  // namespace

TEST_CASE("zclip follows the published rule step by step (defaults)", "[zclip]") {
  const auto norms = norm_sequence(700, 1);
  const gradclip::zclip_options o;  // alpha 0.97, z_thresh 2.5, warm-up 25, no cap
  CHECK(o.alpha == 0.97);
  CHECK(o.z_thresh == 2.5);
  CHECK(o.warmup_steps == 25);
  CHECK(o.eps == 1e-6);
  CHECK(std::isinf(o.max_grad_norm));
  CHECK(o.clip_factor == 1.0);
  CHECK(o.mode == gradclip::zclip_mode::zscore);
  const auto r = run_against_reference(o, norms, 1000);
  // The sequence exercises the rule: spikes were found and cut.
  CHECK(r.spikes >= 10);
  CHECK(r.clips == r.spikes);
}

TEST_CASE("zclip modes, clip_factor, alpha and skip_update_on_spike", "[zclip]") {
  const auto norms = norm_sequence(600, 2, 0.05);
  using gradclip::zclip_mode;
  for (zclip_mode mode : {zclip_mode::zscore, zclip_mode::mean, zclip_mode::percentile}) {
    for (double clip_factor : {0.7, 1.0, 1.3}) {
      for (bool skip : {false, true}) {
        gradclip::zclip_options o;
        o.mode = mode;
        o.clip_factor = clip_factor;
        o.skip_update_on_spike = skip;
        o.alpha = skip ? 0.9 : 0.99;
        o.z_thresh = mode == zclip_mode::percentile ? 2.0 : 3.0;
        o.warmup_steps = 10;
        INFO("mode " << static_cast<int>(mode) << ", clip_factor " << clip_factor << ", skip " << skip);
        const auto r = run_against_reference(o, norms, 2000);
        CHECK(r.spikes >= 10);
      }
    }
  }
}

TEST_CASE("zclip: the cap clips alone during warm-up and bounds the threshold after", "[zclip][cap]") {
  const auto norms = norm_sequence(600, 3, 0.05);
  gradclip::zclip_options o;
  o.max_grad_norm = 1.2;  // below many early norms and above the late ones
  const auto r = run_against_reference(o, norms, 3000);
  CHECK(r.clips > r.spikes);  // the cap clipped ordinary norms too

  // A spike whose threshold is above the cap is clipped to the cap.
  gradclip::zclip_options c;
  c.warmup_steps = 3;
  c.max_grad_norm = 5.0;
  gradclip::zclip clip(c);
  for (double n : {10.0, 12.0, 14.0}) {
    auto g = make_group(n, 7);
    const auto res = clip(g);
    CHECK(res.clipped);  // warm-up: the cap alone
    CHECK(res.scale == Approx(5.0 / (n + 1e-6)).epsilon(1e-12));
  }
  auto g = make_group(1000.0, 8);
  const auto res = clip(g);
  CHECK(res.clipped);
  CHECK(static_cast<double>(group_norm(g)) == Approx(5.0).epsilon(1e-9));
}

TEST_CASE("zclip warm-up boundary", "[zclip][warmup]") {
  for (std::int64_t warmup : {0, 1, 2, 25}) {
    gradclip::zclip_options o;
    o.warmup_steps = warmup;
    gradclip::zclip clip(o);
    const std::int64_t n = std::max<std::int64_t>(warmup, 1);
    std::vector<double> recorded;
    INFO("warmup_steps " << warmup);
    // During the warm-up, even a huge norm passes unclipped (no cap).
    for (std::int64_t t = 0; t < n; ++t) {
      const double norm = t == n - 1 ? 1e6 : 1.0 + 0.1 * static_cast<double>(t % 3);
      CHECK_FALSE(clip.warmed_up());
      CHECK(clip.warmup_count() == static_cast<std::size_t>(t));
      auto g = make_group(norm, 40 + static_cast<std::uint64_t>(t));
      const auto before = g;
      const auto r = clip(g);
      recorded.push_back(r.total_norm);
      CHECK_FALSE(r.clipped);
      CHECK(same_bits(g, before));
    }
    // The last warm-up step set mean and population variance of the recorded norms.
    REQUIRE(clip.warmed_up());
    CHECK(clip.warmup_count() == 0);
    long double m = 0, v = 0;
    for (double x : recorded) m += x;
    m /= recorded.size();
    for (double x : recorded) v += (x - m) * (x - m);
    v /= recorded.size();
    CHECK(ref::rel_err(clip.mean(), m) <= 1e-15);
    if (v == 0) {
      CHECK(clip.variance() == 0.0);
    } else {
      CHECK(ref::rel_err(clip.variance(), v) <= 1e-12);
    }
    // The first step after it is adaptive: a spike far above the mean is clipped.
    auto g = make_group(1e9, 99);
    const auto r = clip(g);
    CHECK(r.clipped);
    CHECK(clip.step() == static_cast<std::uint64_t>(n + 1));
  }
}

TEST_CASE("zclip: the adaptive threshold in numbers", "[zclip]") {
  // Warm-up of two norms 1 and 3: mean 2, var 1, std 1. Then g = 12 (eps = 0):
  // z = 10, threshold = 2 + 2.5 * 1 / (10 / 2.5) = 2.625.
  gradclip::zclip_options o;
  o.warmup_steps = 2;
  o.eps = 0.0;
  gradclip::zclip clip(o);
  std::vector<double> a{1.0}, b{3.0}, c{12.0};
  clip(a);
  clip(b);
  CHECK(clip.mean() == 2.0);
  CHECK(clip.variance() == 1.0);
  const auto r = clip(c);
  CHECK(r.clipped);
  CHECK(c[0] == Approx(2.625).epsilon(1e-15));
  // mean = 0.97 * 2 + 0.03 * 2.625; var = 0.97 * 1 + 0.03 * (2.625 - mean)^2.
  const double mean = 0.97 * 2.0 + 0.03 * 2.625;
  CHECK(clip.mean() == Approx(mean).epsilon(1e-15));
  CHECK(clip.variance() == Approx(0.97 + 0.03 * (2.625 - mean) * (2.625 - mean)).epsilon(1e-15));
  // A norm with z <= z_thresh is left alone and enters the statistics as it is.
  std::vector<double> d{2.5};
  CHECK_FALSE(clip(d).clipped);
  CHECK(d[0] == 2.5);
  // 'mean' mode clips a spike to the mean.
  o.mode = gradclip::zclip_mode::mean;
  gradclip::zclip m(o);
  a = {1.0};
  b = {3.0};
  c = {12.0};
  m(a);
  m(b);
  CHECK(m(c).clipped);
  CHECK(c[0] == Approx(2.0).epsilon(1e-15));
}

TEST_CASE("zclip: non-finite norms never reach the statistics", "[zclip][nonfinite]") {
  const auto norms = norm_sequence(400, 5, 0.04);
  for (auto policy : {gradclip::nonfinite::propagate, gradclip::nonfinite::skip, gradclip::nonfinite::error}) {
    for (double cap : {ref::inf, 2.0}) {
      gradclip::zclip_options o;
      o.on_nonfinite = policy;
      o.max_grad_norm = cap;
      o.warmup_steps = 20;
      gradclip::zclip clip(o);
      zclip_ref want(o);
      std::uint64_t steps = 0;
      INFO("policy " << static_cast<int>(policy) << ", cap " << cap);
      for (std::size_t t = 0; t < norms.size(); ++t) {
        auto g = make_group(norms[t], 5000 + t);
        const bool bad = t % 37 == 5;  // in the warm-up and after it
        if (bad) g[1][3] = t % 2 ? ref::nan : ref::inf;
        const auto before = g;
        if (bad && policy == gradclip::nonfinite::error) {
          const std::string state = saved(clip);
          try {
            clip(g);
            FAIL("no exception");
          } catch (const gradclip::nonfinite_error& e) {
            CHECK(e.tensor_index() == 1);
          }
          CHECK(same_bits(g, before));
          CHECK(saved(clip) == state);
          continue;
        }
        const auto r = clip(g);
        ++steps;
        if (bad) {
          // Exactly what clip_by_global_norm(cap) does under the policy.
          auto expected = before;
          const auto e = gradclip::clip_by_global_norm(expected, cap, {2.0, 1e-6, policy});
          CHECK(ref::same_bits(r.scale, e.scale));
          CHECK(r.clipped == e.clipped);
          CHECK(same_bits(g, expected));
          if (policy == gradclip::nonfinite::skip) CHECK(same_bits(g, before));
          want.step(r.total_norm);  // ignored by the reference's statistics too
        } else {
          const auto w = want.step(r.total_norm);
          REQUIRE(r.clipped == w.clipped);
          REQUIRE(close(r.scale, w.scale));
        }
        REQUIRE(clip.step() == steps);
        REQUIRE(clip.warmed_up() == want.ready);
        if (want.ready) {
          REQUIRE(std::isfinite(clip.mean()));
          REQUIRE(close(clip.mean(), want.mean));
          REQUIRE(close(clip.variance(), want.var, 1e-11));
        }
      }
      CHECK(want.spikes >= 5);
    }
  }
}

TEST_CASE("zclip with_norm takes a norm computed elsewhere", "[zclip]") {
  const auto norms = norm_sequence(200, 6);
  gradclip::zclip a, b;
  for (std::size_t t = 0; t < norms.size(); ++t) {
    auto g = make_group(norms[t], 6000 + t);
    auto h = g;
    const auto ra = a(g);
    const auto rb = b.with_norm(h, gradclip::global_norm(h));
    REQUIRE(ref::same_bits(ra.scale, rb.scale));
    REQUIRE(same_bits(g, h));
  }
  CHECK(ref::same_bits(a.mean(), b.mean()));
  std::vector<double> x{1.0};
  const std::string state = saved(b);
  CHECK_THROWS_AS(b.with_norm(x, -1.0), std::invalid_argument);
  CHECK(saved(b) == state);
  CHECK(x[0] == 1.0);
  // Any norm_stats can record its results.
  gradclip::norm_stats stats;
  stats.record(a(x));
  CHECK(stats.count() == 1);
}

// Found by the state fuzz target: a clip_factor of 1e308 made a spike's threshold
// inf, the mean inf and the saved state unloadable.
TEST_CASE("zclip: the statistics stay finite at the edge of double's range", "[zclip][state]") {
  const double biggest = std::numeric_limits<double>::max();
  const auto check_state = [](const gradclip::zclip& c) {
    REQUIRE(std::isfinite(c.mean()));
    REQUIRE(std::isfinite(c.stddev()));
    REQUIRE(c.mean() >= 0.0);
    gradclip::zclip d;
    std::istringstream in(saved(c));
    REQUIRE_NOTHROW(d.load(in));
    REQUIRE(saved(d) == saved(c));
  };
  SECTION("a threshold past DBL_MAX is folded as DBL_MAX") {
    gradclip::zclip_options o;
    o.warmup_steps = 3;
    o.clip_factor = 1e308;
    gradclip::zclip c(o);
    std::vector<double> x{3.0};
    for (int k = 0; k < 3; ++k) c.with_norm(x, 3.0);
    const auto r = c.with_norm(x, 1e300);  // a spike: threshold (3 + ...) * 1e308 = inf
    CHECK_FALSE(r.clipped);                // the threshold is above the norm
    CHECK(c.mean() == o.alpha * 3.0 + (1.0 - o.alpha) * biggest);
    check_state(c);
    for (int k = 0; k < 5; ++k) {
      c.with_norm(x, k % 2 ? 1e308 : 1.0);
      check_state(c);
    }
  }
  SECTION("norms near DBL_MAX, every alpha") {
    for (double alpha : {0.0, 0.3, 0.5, 0.97, 0.999999}) {
      gradclip::zclip_options o;
      o.warmup_steps = 2;
      o.alpha = alpha;
      o.mode = gradclip::zclip_mode::percentile;
      gradclip::zclip c(o);
      std::vector<double> x{1.0};
      for (double g : {biggest, 0.0, biggest, biggest, 0.0, biggest, biggest * 0.75, biggest}) {
        INFO("alpha " << alpha << ", norm " << g);
        c.with_norm(x, g);
        if (c.warmed_up()) check_state(c);
      }
    }
  }
}

TEST_CASE("zclip state round trip gives a bit-identical continuation", "[zclip][state]") {
  const auto norms = norm_sequence(600, 7, 0.05);
  gradclip::zclip_options o;
  o.max_grad_norm = 3.0;
  o.clip_factor = 0.9;
  for (std::size_t k : {0, 10, 24, 25, 26, 300}) {
    gradclip::zclip a(o);
    for (std::size_t t = 0; t < k; ++t) {
      auto g = make_group(norms[t], 7000 + t);
      a(g);
    }
    const std::string state = saved(a);
    gradclip::zclip_options other;
    other.alpha = 0.5;
    other.warmup_steps = 3;
    gradclip::zclip b(other);  // the load brings the options with it
    std::istringstream in(state);
    b.load(in);
    CHECK(b.options().alpha == o.alpha);
    CHECK(b.options().max_grad_norm == o.max_grad_norm);
    CHECK(b.options().clip_factor == o.clip_factor);
    CHECK(saved(b) == state);
    INFO("saved at step " << k);
    for (std::size_t t = k; t < norms.size(); ++t) {
      auto g = make_group(norms[t], 7000 + t);
      auto h = g;
      const auto ra = a(g);
      const auto rb = b(h);
      REQUIRE(ref::same_bits(ra.total_norm, rb.total_norm));
      REQUIRE(ref::same_bits(ra.scale, rb.scale));
      REQUIRE(ra.clipped == rb.clipped);
      REQUIRE(same_bits(g, h));
      REQUIRE(ref::same_bits(a.mean(), b.mean()));
      REQUIRE(ref::same_bits(a.variance(), b.variance()));
    }
    CHECK(saved(a) == saved(b));
  }
}

TEST_CASE("zclip load rejects bad data and leaves the clipper unchanged", "[zclip][state]") {
  gradclip::zclip a;
  for (std::size_t t = 0; t < 40; ++t) {
    auto g = make_group(1.0 + 0.01 * static_cast<double>(t), 8000 + t);
    a(g);
  }
  const std::string good = saved(a);
  gradclip::zclip b;
  for (std::size_t t = 0; t < 5; ++t) {
    auto g = make_group(2.0, 9000 + t);
    b(g);
  }
  const std::string before = saved(b);
  auto rejects = [&](const std::string& data) {
    std::istringstream in(data);
    CHECK_THROWS_AS(b.load(in), gradclip::state_error);
    CHECK(saved(b) == before);
  };
  // Truncated anywhere.
  for (std::size_t n : {std::size_t{0}, std::size_t{3}, std::size_t{20}, good.size() / 2, good.size() - 1})
    rejects(good.substr(0, n));
  // Corrupted: any flipped payload byte fails the checksum.
  for (std::size_t at : {std::size_t{30}, good.size() / 2, good.size() - 9}) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ 0x10);
    rejects(bad);
  }
  // Another clipper's state.
  std::ostringstream other;
  gradclip::norm_stats().save(other);
  rejects(other.str());
  // A version this build does not know (the u32 after "GCLP", format, kind length
  // and "zclip"; 1 and 2 load), or none.
  for (char version : {'\0', '\3', '\x7f'}) {
    std::string other_version = good;
    other_version[4 + 4 + 4 + 5] = version;
    rejects(other_version);
  }
  // Well-formed records with impossible contents, written by hand.
  auto record = [](double alpha, bool warmed_up, std::vector<double> warmup, double var) {
    gradclip::detail::state_writer w("zclip", 1);
    w.put_double(alpha);
    w.put_double(2.5);  // z_thresh
    w.put_u64(25);      // warmup_steps
    w.put_double(1e-6);
    w.put_double(ref::inf);
    w.put_double(1.0);  // clip_factor
    w.put_u64(0);       // mode
    w.put_bool(false);
    w.put_double(2.0);
    w.put_u64(0);  // on_nonfinite
    w.put_u64(40);
    w.put_bool(warmed_up);
    w.put_double(warmed_up ? 1.0 : 0.0);
    w.put_double(var);
    w.put_doubles(warmup);
    std::ostringstream out;
    w.write(out);
    return out.str();
  };
  {
    // The writer itself is right: a consistent record loads.
    gradclip::zclip c;
    std::istringstream in(record(0.97, true, {}, 0.5));
    CHECK_NOTHROW(c.load(in));
    CHECK(c.mean() == 1.0);
    CHECK(c.step() == 40);
  }
  rejects(record(1.5, true, {}, 0.5));                // alpha out of range
  rejects(record(0.97, true, {1.0}, 0.5));            // warm-up norms after the warm-up
  rejects(record(0.97, true, {}, -1.0));              // negative variance
  rejects(record(0.97, true, {}, ref::nan));          // NaN variance
  rejects(record(0.97, false, {1.0, ref::nan}, 0.0));  // a non-finite recorded norm
  rejects(record(0.97, false, std::vector<double>(25, 1.0), 0.0));  // a full warm-up not yet applied
}

TEST_CASE("zclip bad options throw std::invalid_argument", "[zclip][errors]") {
  auto bad = [](auto&& set) {
    gradclip::zclip_options o;
    set(o);
    CHECK_THROWS_AS(gradclip::zclip(o), std::invalid_argument);
  };
  for (double v : {-0.1, 1.0, 1.5, ref::nan, ref::inf}) bad([v](auto& o) { o.alpha = v; });
  for (double v : {0.0, -1.0, ref::nan, ref::inf}) bad([v](auto& o) { o.z_thresh = v; });
  bad([](auto& o) { o.warmup_steps = -1; });
  for (double v : {-1e-6, ref::nan, ref::inf}) bad([v](auto& o) { o.eps = v; });
  for (double v : {-1.0, ref::nan, -ref::inf}) bad([v](auto& o) { o.max_grad_norm = v; });
  for (double v : {0.0, -1.0, ref::nan, ref::inf}) bad([v](auto& o) { o.clip_factor = v; });
  for (double v : {0.0, -2.0, ref::nan}) bad([v](auto& o) { o.norm_type = v; });
  bad([](auto& o) { o.mode = static_cast<gradclip::zclip_mode>(7); });
  bad([](auto& o) { o.on_nonfinite = static_cast<gradclip::nonfinite>(9); });
  // Edges that are valid.
  gradclip::zclip_options ok;
  ok.alpha = 0.0;
  ok.warmup_steps = 0;
  ok.eps = 0.0;
  ok.max_grad_norm = 0.0;
  ok.norm_type = ref::inf;
  CHECK_NOTHROW(gradclip::zclip(ok));
}

TEST_CASE("zclip works on float buffers and other norms", "[zclip]") {
  gradclip::zclip_options o;
  o.norm_type = 1.0;
  o.warmup_steps = 5;
  gradclip::zclip clip(o);
  zclip_ref want(o);
  const auto norms = norm_sequence(300, 9, 0.05);
  for (std::size_t t = 0; t < norms.size(); ++t) {
    std::vector<float> x = ref::random_values<float>(33, 9000 + t);
    const double l1 = gradclip::norm(x, 1.0);
    for (float& v : x) v = static_cast<float>(v * (norms[t] / l1));
    const auto before = x;
    const auto r = clip(x);
    REQUIRE(ref::rel_err(r.total_norm, ref::norm(ref::values(before.data(), before.size()), 1.0)) <=
            ref::norm_bound<float>(1.0));
    const auto w = want.step(r.total_norm);
    REQUIRE(r.clipped == w.clipped);
    REQUIRE(close(r.scale, w.scale));
    if (r.clipped) REQUIRE(gradclip::norm(x, 1.0) == Approx(r.scale * r.total_norm).epsilon(1e-6));
  }
  CHECK(want.spikes >= 5);
}
