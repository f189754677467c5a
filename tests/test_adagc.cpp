// AdaGC: step by step against an independent transcription of the published rule
// (Wang et al. 2025, arXiv:2502.11034; the authors' Megatron AdaGC class) over long
// random per-buffer norm sequences with spikes and decay, the warm-up boundary,
// non-finite buffers under each policy, a changing group size, state round trips
// and bad arguments.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gradclip/adaptive/adagc.hpp>
#include <gradclip/adaptive/norm_stats.hpp>
#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

using group_t = std::vector<std::vector<double>>;

// ---- the reference ---------------------------------------------------------------
// Plain double code written from the paper's Algorithm and the authors' code, not
// from the library. Step t = 1, 2, ...:
//   t <= T_start: h = min(lambda_abs / (||g|| + eps), 1) on the whole group;
//                 gamma_i = min(gamma_i, h * ||g_i||) (the first one sets it)
//   t >  T_start: per buffer, gamma_i unset -> ||g_i||; if ||g_i|| > lambda_rel * gamma_i
//                 (with the library's documented choice: a zero norm never sets gamma)
//                 the buffer is scaled to lambda_rel * gamma_i (coefficient
//                 lambda_rel * gamma_i / (||g_i|| + eps), the library's core rule);
//                 gamma_i = beta * gamma_i + (1 - beta) * min(||g_i||, lambda_rel * gamma_i)
struct adagc_ref {
  explicit adagc_ref(const gradclip::adagc_options& options) : o(options) {}

  gradclip::adagc_options o;
  std::uint64_t t = 0;
  std::vector<double> gamma;
  std::vector<bool> has;
  int local_clips = 0, global_clips = 0;

  struct out {
    bool warmup;
    std::vector<double> scale;
    std::vector<bool> clipped;
  };

  out step(double total, const std::vector<double>& norms) {
    if (gamma.empty()) {
      gamma.assign(norms.size(), std::numeric_limits<double>::quiet_NaN());
      has.assign(norms.size(), false);
    }
    ++t;
    out r{t <= static_cast<std::uint64_t>(o.warmup_steps), std::vector<double>(norms.size(), 1.0),
          std::vector<bool>(norms.size(), false)};
    if (r.warmup) {
      const double h = o.max_norm / (total + o.eps);
      const bool clip = h < 1.0;
      global_clips += clip;
      for (std::size_t i = 0; i < norms.size(); ++i) {
        r.scale[i] = clip ? h : 1.0;
        r.clipped[i] = clip;
        if (!std::isfinite(total)) continue;
        const double clipped_norm = clip ? h * norms[i] : norms[i];
        if (clipped_norm == 0) continue;
        if (!has[i] || clipped_norm < gamma[i]) gamma[i] = clipped_norm;
        has[i] = true;
      }
      return r;
    }
    for (std::size_t i = 0; i < norms.size(); ++i) {
      const double g = norms[i];
      if (!std::isfinite(g)) continue;  // the non-finite cases are checked on their own
      if (!has[i]) {
        if (g == 0) continue;
        gamma[i] = g;
        has[i] = true;
      }
      const double limit = o.lambda_rel * gamma[i];
      const double c = limit / (g + o.eps);
      if (c < 1.0) {
        r.scale[i] = c;
        r.clipped[i] = true;
        ++local_clips;
      }
      const double x = g > limit ? limit : g;
      gamma[i] = gamma[i] * o.beta + x * (1.0 - o.beta);
    }
    return r;
  }
};

// ---- data ------------------------------------------------------------------------

// Per-buffer norms: each buffer its own scale and decay, noise, and spikes of 3x to
// 40x that hit one buffer at a time.
std::vector<std::vector<double>> norm_sequences(std::size_t steps, std::size_t buffers, std::uint64_t seed,
                                                double spike_rate = 0.02) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0.0, 0.1);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<double> base(buffers), tau(buffers);
  for (std::size_t i = 0; i < buffers; ++i) {
    base[i] = 0.05 + 2.0 * u(rng);
    tau[i] = 100.0 + 1000.0 * u(rng);
  }
  std::vector<std::vector<double>> n(steps, std::vector<double>(buffers));
  for (std::size_t t = 0; t < steps; ++t) {
    for (std::size_t i = 0; i < buffers; ++i) {
      n[t][i] = base[i] * (0.2 + std::exp(-static_cast<double>(t) / tau[i])) * std::exp(noise(rng));
      if (u(rng) < spike_rate) n[t][i] *= 3.0 + 37.0 * u(rng);
    }
  }
  return n;
}

const std::vector<std::size_t> sizes{16, 3, 100, 1, 40};

// A group whose buffer i has L2 norm norms[i] (up to rounding).
group_t make_group(const std::vector<double>& norms, std::uint64_t seed) {
  group_t g;
  for (std::size_t i = 0; i < norms.size(); ++i) {
    auto b = ref::random_values<double>(sizes[i % sizes.size()], seed + i);
    const long double n = ref::norm(ref::values(b.data(), b.size()), 2.0);
    for (double& x : b) x = static_cast<double>(x * (static_cast<long double>(norms[i]) / n));
    g.push_back(std::move(b));
  }
  return g;
}

long double buffer_norm(const std::vector<double>& b) { return ref::norm(ref::values(b.data(), b.size()), 2.0); }

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

// Equal element by element, NaN (an unset gamma) equal to NaN.
bool same_values(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i])))) return false;
  return true;
}

std::string saved(const gradclip::adagc& c) {
  std::ostringstream out;
  c.save(out);
  return out.str();
}

bool close(double got, double want, double rel = 1e-12) {
  if (std::isnan(want)) return std::isnan(got);
  if (got == want) return true;
  return std::fabs(got - want) <= rel * std::fabs(want);
}

std::vector<double> norms_of(const gradclip::adagc_result& r) {
  std::vector<double> n;
  for (const auto& b : r.buffers) n.push_back(b.total_norm);
  return n;
}

// Runs the clipper and the reference side by side, checking every step.
adagc_ref run_against_reference(const gradclip::adagc_options& o, const std::vector<std::vector<double>>& norms,
                                std::uint64_t seed) {
  gradclip::adagc clip(o);
  adagc_ref want(o);
  for (std::size_t t = 0; t < norms.size(); ++t) {
    auto g = make_group(norms[t], seed + 7 * t);
    const auto before = g;
    const auto r = clip(g);
    INFO("step " << t + 1);
    REQUIRE(r.buffers.size() == g.size());
    REQUIRE(ref::rel_err(r.total_norm, group_norm(before)) <= 1e-13);
    for (std::size_t i = 0; i < g.size(); ++i) {
      REQUIRE(ref::rel_err(r.buffers[i].total_norm, buffer_norm(before[i])) <= 1e-13);
      REQUIRE(ref::same_bits(r.buffers[i].total_norm, gradclip::norm(before[i])));  // measured as norm() does
    }
    const auto w = want.step(r.total_norm, norms_of(r));
    REQUIRE(r.warmup == w.warmup);
    for (std::size_t i = 0; i < g.size(); ++i) {
      INFO("buffer " << i);
      REQUIRE(r.buffers[i].clipped == w.clipped[i]);
      REQUIRE(close(r.buffers[i].scale, w.scale[i]));
      // Scaled by exactly the reported factor (double: one rounding per element).
      for (std::size_t k = 0; k < g[i].size(); ++k) REQUIRE(g[i][k] == before[i][k] * r.buffers[i].scale);
      REQUIRE(close(clip.gamma(i), want.gamma[i]));
    }
    REQUIRE(clip.step() == t + 1);
  }
  return want;
}

}  // namespace

TEST_CASE("adagc follows the published rule step by step (defaults)", "[adagc]") {
  const gradclip::adagc_options o;
  CHECK(o.lambda_rel == 1.05);
  CHECK(o.beta == 0.98);
  CHECK(o.warmup_steps == 100);
  CHECK(o.max_norm == 1.0);
  CHECK(o.eps == 1e-6);
  const auto norms = norm_sequences(700, 5, 1);
  const auto r = run_against_reference(o, norms, 100);
  // The sequence exercises both phases.
  CHECK(r.global_clips >= 50);
  CHECK(r.local_clips >= 50);
}

TEST_CASE("adagc with other lambda_rel, beta and warm-up lengths", "[adagc]") {
  const auto norms = norm_sequences(500, 5, 2, 0.04);
  for (double lambda_rel : {1.01, 1.04, 1.5}) {
    for (double beta : {0.0, 0.9, 0.99}) {
      for (std::int64_t warmup : {0, 1, 37}) {
        gradclip::adagc_options o;
        o.lambda_rel = lambda_rel;
        o.beta = beta;
        o.warmup_steps = warmup;
        o.max_norm = 2.5;
        INFO("lambda_rel " << lambda_rel << ", beta " << beta << ", warmup " << warmup);
        run_against_reference(o, norms, 200);
      }
    }
  }
  // lambda_rel below 1 clips every step; no warm-up-limit at all (max_norm = inf).
  gradclip::adagc_options o;
  o.lambda_rel = 0.9;
  o.warmup_steps = 3;
  o.max_norm = ref::inf;
  const auto r = run_against_reference(o, norms, 300);
  CHECK(r.global_clips == 0);
  CHECK(r.local_clips >= 4 * 490);
}

TEST_CASE("adagc warm-up boundary: global clipping, then per buffer from the minimum", "[adagc][warmup]") {
  gradclip::adagc_options o;
  o.warmup_steps = 3;
  o.max_norm = 1.0;
  o.eps = 0.0;
  gradclip::adagc clip(o);
  // Two buffers: norms (3, 4) -> total 5, h = 0.2, clipped norms (0.6, 0.8);
  // then (0.3, 0.4) -> unclipped; then (6, 8) -> h = 0.1, clipped (0.6, 0.8).
  const std::vector<std::vector<double>> steps{{3, 4}, {0.3, 0.4}, {6, 8}};
  for (const auto& s : steps) {
    std::vector<std::vector<double>> g{{s[0]}, {s[1]}};
    const auto r = clip(g);
    CHECK(r.warmup);
    CHECK(r.buffers[0].scale == r.buffers[1].scale);
    CHECK(std::hypot(g[0][0], g[1][0]) <= 1.0 + 1e-15);
  }
  CHECK(clip.gamma(0) == Approx(0.3).epsilon(1e-15));  // min(0.6, 0.3, 0.6)
  CHECK(clip.gamma(1) == Approx(0.4).epsilon(1e-15));
  // Step 4 is the first per-buffer step: limits 1.05 * (0.3, 0.4) = (0.315, 0.42).
  std::vector<std::vector<double>> g{{0.31}, {2.0}};
  const auto r = clip(g);
  CHECK_FALSE(r.warmup);
  CHECK_FALSE(r.buffers[0].clipped);
  CHECK(g[0][0] == 0.31);
  CHECK(r.buffers[1].clipped);
  CHECK(g[1][0] == Approx(0.42).epsilon(1e-15));
  CHECK(r.total_norm == Approx(std::hypot(0.31, 2.0)).epsilon(1e-15));
  CHECK(clip.gamma(0) == Approx(0.98 * 0.3 + 0.02 * 0.31).epsilon(1e-15));
  CHECK(clip.gamma(1) == Approx(0.98 * 0.4 + 0.02 * 0.42).epsilon(1e-15));
}

TEST_CASE("adagc without warm-up starts each gamma at the buffer's first norm", "[adagc][warmup]") {
  gradclip::adagc_options o;
  o.warmup_steps = 0;
  gradclip::adagc clip(o);
  CHECK_FALSE(clip.sized());
  std::vector<std::vector<double>> g{{3.0, 4.0}, {12.0}};
  const auto r = clip(g);
  CHECK_FALSE(r.warmup);
  CHECK_FALSE(r.buffers[0].clipped);
  CHECK_FALSE(r.buffers[1].clipped);
  CHECK(clip.sized());
  CHECK(clip.buffer_count() == 2);
  CHECK(clip.gamma(0) == 5.0);
  CHECK(clip.gamma(1) == 12.0);
  CHECK_THROWS_AS(clip.gamma(2), std::out_of_range);
}

TEST_CASE("adagc: a buffer without gradient does not get a zero gamma", "[adagc][warmup]") {
  // Buffer 1 is all zeros at the first warm-up step (an unused expert, say). Its
  // gamma must come from its non-zero norms only, or it would be clipped to zero
  // for good once the warm-up is over.
  gradclip::adagc_options o;
  o.warmup_steps = 3;
  gradclip::adagc clip(o);
  adagc_ref want(o);
  const std::vector<std::vector<double>> norms{{0.5, 0.0}, {0.5, 0.0}, {0.4, 0.6}, {0.5, 0.7}, {0.5, 0.0}, {0.5, 0.6}};
  for (std::size_t t = 0; t < norms.size(); ++t) {
    auto g = make_group(norms[t], 31 + t);
    if (norms[t][1] == 0.0) g[1].assign(g[1].size(), 0.0);
    const auto r = clip(g);
    const auto w = want.step(r.total_norm, norms_of(r));
    INFO("step " << t + 1);
    for (std::size_t i = 0; i < 2; ++i) {
      CHECK(r.buffers[i].clipped == w.clipped[i]);
      CHECK(close(clip.gamma(i), want.gamma[i]));
    }
    if (t < 2) CHECK(std::isnan(clip.gamma(1)));
  }
  CHECK(clip.gamma(1) > 0.5);
  // Without a warm-up too: the first non-zero norm sets gamma.
  o.warmup_steps = 0;
  gradclip::adagc late(o);
  std::vector<std::vector<double>> zero{{1.0}, {0.0, 0.0}};
  late(zero);
  CHECK(late.gamma(0) == 1.0);
  CHECK(std::isnan(late.gamma(1)));
  std::vector<std::vector<double>> some{{1.0}, {3.0, 4.0}};
  CHECK_FALSE(late(some).buffers[1].clipped);
  CHECK(late.gamma(1) == 5.0);
}

TEST_CASE("adagc works on mixed element types and other norms", "[adagc]") {
  gradclip::adagc_options o;
  o.norm_type = 1.0;
  o.warmup_steps = 10;
  gradclip::adagc clip(o);
  adagc_ref want(o);
  const auto norms = norm_sequences(300, 3, 3, 0.05);
  for (std::size_t t = 0; t < norms.size(); ++t) {
    auto a = ref::random_values<float>(20, 10 * t);
    Eigen::VectorXd b = Eigen::Map<const Eigen::VectorXd>(ref::random_values<double>(7, 10 * t + 1).data(), 7);
    auto c = ref::random_values<Eigen::half>(9, 10 * t + 2);
    const double na = gradclip::norm(a, 1.0), nb = gradclip::norm(b, 1.0);
    for (float& x : a) x = static_cast<float>(x * (norms[t][0] / na));
    b *= norms[t][1] / nb;
    const auto r = clip(std::tie(a, b, c));
    REQUIRE(r.buffers.size() == 3);
    const auto w = want.step(r.total_norm, norms_of(r));
    for (std::size_t i = 0; i < 3; ++i) {
      REQUIRE(r.buffers[i].clipped == w.clipped[i]);
      REQUIRE(close(r.buffers[i].scale, w.scale[i]));
      REQUIRE(close(clip.gamma(i), want.gamma[i]));
    }
    if (!r.warmup && r.buffers[0].clipped) {
      REQUIRE(gradclip::norm(a, 1.0) == Approx(w.scale[0] * r.buffers[0].total_norm).epsilon(1e-6));
    }
  }
  CHECK(want.local_clips >= 5);
}

TEST_CASE("adagc: the number of buffers is fixed by the first call", "[adagc][errors]") {
  gradclip::adagc clip;
  group_t g = make_group({1.0, 2.0, 3.0}, 1);
  clip(g);
  const std::string state = saved(clip);
  for (std::size_t n : {0, 2, 4}) {
    group_t h = make_group(std::vector<double>(n, 5.0), 2);
    const auto copy = h;
    CHECK_THROWS_AS(clip(h), std::invalid_argument);
    CHECK(same_bits(h, copy));
    CHECK(saved(clip) == state);
  }
  CHECK_NOTHROW(clip(g));
  // A failed first call fixes nothing.
  gradclip::adagc_options o;
  o.on_nonfinite = gradclip::nonfinite::error;
  gradclip::adagc e(o);
  group_t bad = make_group({1.0, 2.0}, 3);
  bad[1][0] = ref::nan;
  CHECK_THROWS_AS(e(bad), gradclip::nonfinite_error);
  CHECK_FALSE(e.sized());
  CHECK(e.step() == 0);
  CHECK_NOTHROW(e(g));
  CHECK(e.buffer_count() == 3);
}

TEST_CASE("adagc: non-finite buffers never reach gamma", "[adagc][nonfinite]") {
  for (auto policy : {gradclip::nonfinite::propagate, gradclip::nonfinite::skip, gradclip::nonfinite::error}) {
    gradclip::adagc_options o;
    o.on_nonfinite = policy;
    o.warmup_steps = 20;
    gradclip::adagc clip(o);
    adagc_ref want(o);
    const auto norms = norm_sequences(300, 5, 4, 0.03);
    std::uint64_t steps = 0;
    INFO("policy " << static_cast<int>(policy));
    for (std::size_t t = 0; t < norms.size(); ++t) {
      auto g = make_group(norms[t], 4000 + 7 * t);
      const bool bad = t % 23 == 4;  // in the warm-up and after it
      const std::size_t bad_buffer = t % 5;
      if (bad) g[bad_buffer][0] = t % 2 ? ref::nan : -ref::inf;
      const auto before = g;
      if (bad && policy == gradclip::nonfinite::error) {
        const std::string state = saved(clip);
        try {
          clip(g);
          FAIL("no exception");
        } catch (const gradclip::nonfinite_error& e) {
          CHECK(e.tensor_index() == bad_buffer);
        }
        CHECK(same_bits(g, before));
        CHECK(saved(clip) == state);
        continue;
      }
      const std::vector<double> gammas = clip.gammas();
      const auto r = clip(g);
      ++steps;
      REQUIRE(clip.step() == steps);
      if (!bad) {
        const auto w = want.step(r.total_norm, norms_of(r));
        for (std::size_t i = 0; i < g.size(); ++i) {
          REQUIRE(r.buffers[i].clipped == w.clipped[i]);
          REQUIRE(close(r.buffers[i].scale, w.scale[i]));
          REQUIRE(close(clip.gamma(i), want.gamma[i]));
        }
        continue;
      }
      want.step(r.total_norm, norms_of(r));  // skips the bad buffer (or, in the warm-up, the group)
      if (r.warmup) {
        // The group as clip_by_global_norm(group, max_norm) leaves it; no gamma moves.
        auto expected = before;
        const auto e = gradclip::clip_by_global_norm(expected, o.max_norm, {2.0, 1e-6, policy});
        CHECK(same_bits(g, expected));
        for (const auto& b : r.buffers) CHECK(ref::same_bits(b.scale, e.scale));
        CHECK(same_values(clip.gammas(), gammas));
      } else {
        // The bad buffer as clip_by_norm(buffer, lambda_rel * gamma) leaves it; its
        // gamma stays; the others went on as the reference says.
        auto expected = before[bad_buffer];
        const auto e = gradclip::clip_by_norm(expected, o.lambda_rel * gammas[bad_buffer], {2.0, 1e-6, policy});
        CHECK(std::memcmp(expected.data(), g[bad_buffer].data(), expected.size() * sizeof(double)) == 0);
        CHECK(ref::same_bits(r.buffers[bad_buffer].scale, e.scale));
        CHECK(clip.gamma(bad_buffer) == gammas[bad_buffer]);
        if (policy == gradclip::nonfinite::skip) {
          CHECK_FALSE(r.buffers[bad_buffer].clipped);
          CHECK(std::memcmp(before[bad_buffer].data(), g[bad_buffer].data(), g[bad_buffer].size() * sizeof(double)) == 0);
        }
      }
      for (std::size_t i = 0; i < g.size(); ++i) {
        REQUIRE(std::isfinite(clip.gamma(i)));
        REQUIRE(close(clip.gamma(i), want.gamma[i]));
      }
    }
  }
}

TEST_CASE("adagc state round trip gives a bit-identical continuation", "[adagc][state]") {
  const auto norms = norm_sequences(600, 5, 5, 0.04);
  gradclip::adagc_options o;
  o.lambda_rel = 1.04;
  o.beta = 0.99;
  o.warmup_steps = 50;
  for (std::size_t k : {0, 1, 25, 49, 50, 51, 400}) {
    gradclip::adagc a(o);
    for (std::size_t t = 0; t < k; ++t) {
      auto g = make_group(norms[t], 5000 + 7 * t);
      a(g);
    }
    const std::string state = saved(a);
    gradclip::adagc b;  // other options: the load brings the saved ones
    {
      group_t other = make_group({1.0, 1.0}, 9);
      b(other);  // and another size
    }
    std::istringstream in(state);
    b.load(in);
    CHECK(b.options().lambda_rel == 1.04);
    CHECK(b.options().warmup_steps == 50);
    CHECK(b.sized() == (k > 0));
    CHECK(saved(b) == state);
    INFO("saved at step " << k);
    for (std::size_t t = k; t < norms.size(); ++t) {
      auto g = make_group(norms[t], 5000 + 7 * t);
      auto h = g;
      const auto ra = a(g);
      const auto rb = b(h);
      REQUIRE(ref::same_bits(ra.total_norm, rb.total_norm));
      REQUIRE(ra.warmup == rb.warmup);
      for (std::size_t i = 0; i < ra.buffers.size(); ++i) {
        REQUIRE(ref::same_bits(ra.buffers[i].scale, rb.buffers[i].scale));
        REQUIRE(ra.buffers[i].clipped == rb.buffers[i].clipped);
        REQUIRE(ref::same_bits(a.gamma(i), b.gamma(i)));
      }
      REQUIRE(same_bits(g, h));
    }
    CHECK(saved(a) == saved(b));
  }
}

TEST_CASE("adagc load rejects bad data and leaves the clipper unchanged", "[adagc][state]") {
  gradclip::adagc a;
  const auto norms = norm_sequences(150, 5, 6);
  for (const auto& n : norms) {
    auto g = make_group(n, 77);
    a(g);
  }
  const std::string good = saved(a);
  gradclip::adagc b;
  {
    group_t g = make_group({1.0, 2.0}, 5);
    b(g);
  }
  const std::string before = saved(b);
  auto rejects = [&](const std::string& data) {
    std::istringstream in(data);
    CHECK_THROWS_AS(b.load(in), gradclip::state_error);
    CHECK(saved(b) == before);
  };
  for (std::size_t n : {std::size_t{0}, std::size_t{5}, std::size_t{21}, good.size() / 2, good.size() - 1})
    rejects(good.substr(0, n));
  for (std::size_t at : {std::size_t{30}, good.size() / 2, good.size() - 9}) {
    std::string bad = good;
    bad[at] = static_cast<char>(bad[at] ^ 0x04);
    rejects(bad);
  }
  std::ostringstream other;
  gradclip::norm_stats().save(other);
  rejects(other.str());
  std::string v2 = good;
  v2[4 + 4 + 4 + 5] = 2;  // the u32 version after "GCLP", format, kind length and "adagc"
  rejects(v2);
  // Well-formed records with impossible contents, written by hand.
  auto record = [](double lambda_rel, std::uint64_t step, bool sized, std::vector<double> gamma) {
    gradclip::detail::state_writer w("adagc", 1);
    w.put_double(lambda_rel);
    w.put_double(0.98);
    w.put_u64(100);
    w.put_double(1.0);
    w.put_double(1e-6);
    w.put_double(2.0);
    w.put_u64(0);
    w.put_u64(step);
    w.put_bool(sized);
    w.put_doubles(gamma);
    std::ostringstream out;
    w.write(out);
    return out.str();
  };
  {
    gradclip::adagc c;
    std::istringstream in(record(1.05, 3, true, {0.5, ref::nan}));
    CHECK_NOTHROW(c.load(in));
    CHECK(c.buffer_count() == 2);
    CHECK(std::isnan(c.gamma(1)));
  }
  rejects(record(-1.0, 3, true, {0.5}));       // lambda_rel out of range
  rejects(record(1.05, 3, true, {-0.5}));      // negative gamma
  rejects(record(1.05, 3, true, {ref::inf}));  // infinite gamma
  rejects(record(1.05, 0, true, {0.5}));       // sized without a step
  rejects(record(1.05, 3, false, {}));         // steps without a size
  rejects(record(1.05, 0, false, {0.5}));      // gammas without a size
}

TEST_CASE("adagc bad options throw std::invalid_argument", "[adagc][errors]") {
  auto bad = [](auto&& set) {
    gradclip::adagc_options o;
    set(o);
    CHECK_THROWS_AS(gradclip::adagc(o), std::invalid_argument);
  };
  for (double v : {0.0, -1.0, ref::nan, ref::inf}) bad([v](auto& o) { o.lambda_rel = v; });
  for (double v : {-0.1, 1.0, 2.0, ref::nan}) bad([v](auto& o) { o.beta = v; });
  bad([](auto& o) { o.warmup_steps = -1; });
  for (double v : {-1.0, ref::nan}) bad([v](auto& o) { o.max_norm = v; });
  for (double v : {-1e-6, ref::nan, ref::inf}) bad([v](auto& o) { o.eps = v; });
  for (double v : {0.0, ref::nan}) bad([v](auto& o) { o.norm_type = v; });
  bad([](auto& o) { o.on_nonfinite = static_cast<gradclip::nonfinite>(5); });
  gradclip::adagc_options ok;
  ok.beta = 0.0;
  ok.warmup_steps = 0;
  ok.max_norm = ref::inf;
  ok.eps = 0.0;
  CHECK_NOTHROW(gradclip::adagc(ok));
  // Results feed norm_stats buffer by buffer.
  gradclip::adagc clip;
  group_t g = make_group({1.0, 2.0}, 11);
  gradclip::norm_stats stats;
  for (const auto& b : clip(g).buffers) stats.record(b);
  CHECK(stats.count() == 2);
}
