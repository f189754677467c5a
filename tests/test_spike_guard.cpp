// spike_guard: step by step against a plain transcription of OLMo-core's skip-step
// rule (src/olmo_core/optim/skip_step_optimizer.py) over long random loss and
// grad-norm sequences with planted spikes, both sidednesses, the loss alone, both,
// and the two mixed; the warm-up boundary, small windows, a zero standard
// deviation, non-finite values, the fixed bound, the streak error, bad arguments
// and the state record.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <gradclip/adaptive/spike_guard.hpp>

#include "catch.hpp"

namespace {

// A grad norm or none (std::optional<double> trips GCC 12's maybe-uninitialized
// warning at -O2).
struct maybe_norm {
  bool has = false;
  double value = 0.0;
  maybe_norm() = default;
  maybe_norm(double v) : has(true), value(v) {}  // NOLINT(google-explicit-constructor): as optional's
  explicit operator bool() const { return has; }
  double operator*() const { return value; }
};


using gradclip::spike_guard;
using gradclip::spike_guard_options;
using gradclip::spike_streak_error;
using gradclip::spike_verdict;

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double qnan = std::numeric_limits<double>::quiet_NaN();

// ---- the reference ---------------------------------------------------------------
// OLMo-core's SkipStepOptimizer, written plainly in long double: each series is a
// list that gets the new value appended and is trimmed to window + 1; the step is
// taken while fewer than max(2, window // 2) losses are listed, else when
// (x - mean) <= sigma * std (|x - mean| with two_sided) for the loss and, when
// given, the grad norm, mean and std (n - 1) over the list without its newest
// value. The library's documented deviations are modelled on top: non-finite steps
// skip and record nothing; a series is judged only with 2 values before the newest
// and by its own count; sigma = inf never skips; a grad norm above max_grad_norm
// skips; the (max + 1)-th skip in a row raises and records nothing.
struct olmo_reference {
  spike_guard_options o;
  std::deque<long double> losses, norms;
  std::uint64_t steps = 0, skipped = 0, run = 0;

  struct decision {
    bool skip = false;
    bool raise = false;
    spike_verdict verdict = spike_verdict::taken;
    bool ambiguous = false;  // within rounding of the bound: double may decide otherwise
  };

  static void append(std::deque<long double>& list, long double x, std::size_t window) {
    list.push_back(x);
    while (list.size() > window + 1) list.pop_front();
  }

  // Upstream's comparison on a list whose newest value is x; true: within bounds.
  bool within(const std::deque<long double>& list, bool& ambiguous) const {
    const std::size_t n = list.size() - 1;  // the values before the newest
    if (list.size() < std::max<std::size_t>(2, o.window / 2) || n < 2 || std::isinf(o.sigma)) return true;
    long double sum = 0;
    for (std::size_t i = 0; i < n; ++i) sum += list[i];
    const long double mean = sum / static_cast<long double>(n);
    long double squares = 0;
    for (std::size_t i = 0; i < n; ++i) squares += (list[i] - mean) * (list[i] - mean);
    const long double std_dev = std::sqrt(squares / static_cast<long double>(n - 1));
    const long double d = o.two_sided ? std::fabs(list.back() - mean) : list.back() - mean;
    const long double bound = static_cast<long double>(o.sigma) * std_dev;
    const long double margin = d - bound;
    if (margin != 0 && std::fabs(margin) <= 1e-9L * (std::fabs(d) + bound)) ambiguous = true;
    return d <= bound;
  }

  decision decide(double loss, maybe_norm norm) const {
    decision out;
    const bool finite = std::isfinite(loss) && (!norm || std::isfinite(*norm));
    if (!finite) {
      out.verdict = spike_verdict::nonfinite;
    } else {
      std::deque<long double> l = losses, g = norms;
      append(l, loss, o.window);
      if (norm) append(g, *norm, o.window);
      if (norm && *norm > o.max_grad_norm) {
        out.verdict = spike_verdict::grad_norm_limit;
      } else if (!within(l, out.ambiguous)) {
        out.verdict = spike_verdict::loss_spike;
      } else if (norm && !within(g, out.ambiguous)) {
        out.verdict = spike_verdict::grad_norm_spike;
      }
    }
    out.skip = out.verdict != spike_verdict::taken;
    out.raise = out.skip && o.max_consecutive_skips != 0 && run >= o.max_consecutive_skips;
    return out;
  }

  // Records the step the guard took (skip) or nothing when it raised.
  void commit(double loss, maybe_norm norm, bool skip) {
    if (std::isfinite(loss) && (!norm || std::isfinite(*norm))) {
      append(losses, loss, o.window);
      if (norm) append(norms, *norm, o.window);
    }
    ++steps;
    if (skip) {
      ++skipped;
      ++run;
    } else {
      run = 0;
    }
  }

  // Mean and std over the values the next step is judged against.
  static std::pair<long double, long double> stats(const std::deque<long double>& list, std::size_t window) {
    const std::size_t n = std::min(list.size(), window);
    const std::size_t first = list.size() - n;
    long double sum = 0;
    for (std::size_t i = first; i < list.size(); ++i) sum += list[i];
    const long double mean = sum / static_cast<long double>(n);
    long double squares = 0;
    for (std::size_t i = first; i < list.size(); ++i) squares += (list[i] - mean) * (list[i] - mean);
    return {mean, n < 2 ? static_cast<long double>(qnan) : std::sqrt(squares / static_cast<long double>(n - 1))};
  }
};

// A slowly falling loss and a log-normal grad norm, with planted spikes (single and
// in bursts), dips, non-finite values, and optionally values on a 1/4 grid (so that
// equal values and zero deviations come up).
struct stream {
  std::mt19937_64 rng;
  bool quantised;
  double level = 3.0;
  int burst = 0;
  explicit stream(std::uint64_t seed, bool q = false) : rng(seed), quantised(q) {}

  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }
  double normal() { return std::normal_distribution<double>(0.0, 1.0)(rng); }

  std::pair<double, double> next() {
    level = std::max(0.5, level * 0.9995);
    double loss = level * (1.0 + 0.03 * normal());
    double norm = std::exp(0.3 * normal());
    if (burst == 0 && uniform() < 0.004) burst = 2 + static_cast<int>(uniform() * 8);
    const double r = uniform();
    if (burst > 0) {
      --burst;
      loss *= 2.0 + 10.0 * uniform();
      if (uniform() < 0.5) norm *= 20.0;
    } else if (r < 0.02) {
      loss *= 1.5 + 20.0 * uniform();
    } else if (r < 0.04) {
      norm *= 5.0 + 100.0 * uniform();
    } else if (r < 0.06) {
      loss *= 0.3;
      norm *= 0.01;
    } else if (r < 0.07) {
      const double bad[] = {qnan, inf, -inf};
      if (uniform() < 0.5) {
        loss = bad[static_cast<int>(uniform() * 3) % 3];
      } else {
        norm = uniform() < 0.5 ? qnan : inf;
      }
    }
    if (quantised) {
      if (std::isfinite(loss)) loss = std::round(loss * 4.0) / 4.0;
      if (std::isfinite(norm)) norm = std::round(norm * 4.0) / 4.0;
    }
    return {loss, norm};
  }
};

enum class inputs { loss_only, both, mixed };

std::string saved(const spike_guard& g) {
  std::ostringstream out;
  g.save(out);
  return out.str();
}

void load(spike_guard& g, const std::string& bytes) {
  std::istringstream in(bytes);
  g.load(in);
}

// One call; 0 skip, 1 take, 2 raised (with the guard unchanged).
int drive(spike_guard& g, double loss, maybe_norm norm) {
  const std::string before = saved(g);
  try {
    return (norm ? g(loss, *norm) : g(loss)) ? 1 : 0;
  } catch (const spike_streak_error& e) {
    REQUIRE(saved(g) == before);
    REQUIRE(e.consecutive() == g.consecutive_skips() + 1);
    REQUIRE(e.max_consecutive() == g.options().max_consecutive_skips);
    return 2;
  }
}

void check_same(const spike_guard& g, const olmo_reference& r) {
  REQUIRE(g.steps() == r.steps);
  REQUIRE(g.skipped() == r.skipped);
  REQUIRE(g.consecutive_skips() == r.run);
  // The guard keeps `window` values, upstream window + 1 (the newest being the judged one).
  REQUIRE(g.loss_count() == std::min(r.losses.size(), r.o.window));
  REQUIRE(g.grad_norm_count() == std::min(r.norms.size(), r.o.window));
  if (!r.losses.empty()) {
    const auto [mean, std_dev] = olmo_reference::stats(r.losses, r.o.window);
    REQUIRE(g.loss_mean() == Approx(static_cast<double>(mean)).epsilon(1e-12).margin(1e-12));
    if (std::isnan(static_cast<double>(std_dev))) {
      REQUIRE(std::isnan(g.loss_stddev()));
    } else {
      REQUIRE(g.loss_stddev() == Approx(static_cast<double>(std_dev)).epsilon(1e-9).margin(1e-12));
    }
  } else {
    REQUIRE(std::isnan(g.loss_mean()));
  }
}

struct run_counts {
  std::uint64_t skipped = 0, raised = 0, ambiguous = 0, steps = 0;
};

run_counts run_against_reference(const spike_guard_options& o, inputs in, std::uint64_t seed, int steps,
                                 bool quantised = false) {
  spike_guard guard(o);
  olmo_reference ref{o, {}, {}};
  stream s(seed, quantised);
  std::mt19937_64 pick(seed ^ 0x9e3779b97f4a7c15ULL);
  run_counts counts;
  for (int k = 0; k < steps; ++k) {
    INFO("step " << k);
    const auto [loss, n] = s.next();
    const bool with_norm = in == inputs::both || (in == inputs::mixed && pick() % 3 != 0);
    const maybe_norm norm = with_norm ? maybe_norm(n) : maybe_norm{};
    const auto want = ref.decide(loss, norm);
    const int got = drive(guard, loss, norm);
    if (want.ambiguous) {
      ++counts.ambiguous;
    } else {
      REQUIRE(got == (want.raise ? 2 : want.skip ? 0 : 1));
      if (got != 2) REQUIRE(guard.last_verdict() == want.verdict);
    }
    if (got == 2) {
      ++counts.raised;
    } else {
      ref.commit(loss, norm, got == 0);
      counts.skipped += got == 0;
    }
    ++counts.steps;
    check_same(guard, ref);
  }
  return counts;
}

// A well-formed record with the given fields.
struct fields {
  std::uint64_t window = 4;
  double sigma = 6.0;
  bool two_sided = false;
  std::uint64_t max_consecutive = 0;
  double max_grad_norm = inf;
  std::uint64_t steps = 5, skipped = 1, consecutive = 1, verdict = 3;
  std::vector<double> losses{1.0, 2.0, 1.5, 9.0}, norms{0.5, 0.25, 1.0};
  const char* kind = "spike_guard";
  std::uint32_t version = 1;
};

std::string record(const fields& f) {
  gradclip::detail::state_writer w(f.kind, f.version);
  w.put_u64(f.window);
  w.put_double(f.sigma);
  w.put_bool(f.two_sided);
  w.put_u64(f.max_consecutive);
  w.put_double(f.max_grad_norm);
  w.put_u64(f.steps);
  w.put_u64(f.skipped);
  w.put_u64(f.consecutive);
  w.put_u64(f.verdict);
  w.put_doubles(f.losses);
  w.put_doubles(f.norms);
  std::ostringstream out;
  w.write(out);
  return out.str();
}

}  // namespace

TEST_CASE("spike_guard follows OLMo-core's rule step by step", "[spike_guard]") {
  std::uint64_t seed = 1;
  for (std::size_t window : {1, 2, 3, 4, 5, 7, 16, 40, 128}) {
    for (double sigma : {6.0, 2.5, 1.0}) {
      for (bool two_sided : {false, true}) {
        for (inputs in : {inputs::loss_only, inputs::both, inputs::mixed}) {
          spike_guard_options o;
          o.window = window;
          o.sigma = sigma;
          o.two_sided = two_sided;
          const int steps = window >= 40 ? 2500 : 1200;
          INFO("window " << window << ", sigma " << sigma << ", two-sided " << two_sided << ", inputs "
                         << static_cast<int>(in) << ", seed " << seed);
          const run_counts c = run_against_reference(o, in, seed++, steps);
          CHECK(c.ambiguous <= c.steps / 200);
          if (window >= 3) CHECK(c.skipped > 0);
        }
      }
    }
  }
}

TEST_CASE("spike_guard: defaults against the reference over a long run", "[spike_guard]") {
  const run_counts c = run_against_reference(spike_guard_options{}, inputs::both, 2024, 20000);
  CHECK(c.skipped > 100);
  CHECK(c.skipped < c.steps / 5);
  CHECK(c.ambiguous <= 20);
}

TEST_CASE("spike_guard: values on a grid (equal values, zero deviations) against the reference", "[spike_guard]") {
  std::uint64_t seed = 500;
  for (std::size_t window : {2, 3, 4, 6, 10}) {
    for (bool two_sided : {false, true}) {
      for (inputs in : {inputs::loss_only, inputs::both}) {
        spike_guard_options o;
        o.window = window;
        o.sigma = 1.0;
        o.two_sided = two_sided;
        INFO("window " << window << ", two-sided " << two_sided << ", seed " << seed);
        const run_counts c = run_against_reference(o, in, seed++, 1500, true);
        CHECK(c.ambiguous <= c.steps / 100);
      }
    }
  }
}

TEST_CASE("spike_guard: the fixed bound and the streak error against the reference", "[spike_guard]") {
  std::uint64_t seed = 900;
  for (double max_norm : {inf, 3.0, 0.9}) {
    for (std::uint64_t max_skips : {0, 1, 3}) {
      for (double sigma : {6.0, 2.0, inf}) {
        spike_guard_options o;
        o.window = 16;
        o.sigma = sigma;
        o.max_grad_norm = max_norm;
        o.max_consecutive_skips = max_skips;
        INFO("max_grad_norm " << max_norm << ", max skips " << max_skips << ", sigma " << sigma);
        const run_counts c = run_against_reference(o, inputs::mixed, seed++, 2000);
        if (max_skips == 1 && (max_norm < 1.0 || sigma == 2.0)) CHECK(c.raised > 0);
        if (max_skips == 0) CHECK(c.raised == 0);
      }
    }
  }
}

TEST_CASE("spike_guard: the warm-up boundary", "[spike_guard][warmup]") {
  // window 128: judged once 64 losses are listed upstream (this one included),
  // i.e. from the 64th call on, against the 63 before it.
  auto history = [](spike_guard& g, int n) {
    for (int i = 0; i < n; ++i) REQUIRE(g(i % 2 == 0 ? 1.0 : 2.0));
  };
  {
    spike_guard g;
    history(g, 62);
    CHECK(g(1000.0));  // the 63rd: still warming up (and now recorded)
    CHECK(g.skipped() == 0);
  }
  {
    spike_guard g;
    history(g, 63);
    CHECK_FALSE(g(1000.0));  // the 64th: judged
    CHECK(g.last_verdict() == spike_verdict::loss_spike);
    CHECK(g.loss_count() == 64);  // a skipped step's loss is recorded, as upstream
    CHECK(g(1.5));
  }
  // Small windows: max(2, window / 2) values listed and 2 before the judged one.
  for (std::size_t window : {2, 3, 4, 5}) {
    INFO("window " << window);
    spike_guard_options o;
    o.window = window;
    spike_guard a(o), b(o);
    CHECK(a(1.0));
    CHECK(a(100.0));   // one value before: no standard deviation, taken
    CHECK(b(1.0));
    CHECK(b(2.0));
    CHECK_FALSE(b(100.0));  // two before: judged
  }
  {
    spike_guard_options o;
    o.window = 6;  // warm-up max(2, 3) = 3 listed: judged from the 3rd call
    spike_guard g(o);
    CHECK(g(1.0));
    CHECK(g(2.0));
    CHECK_FALSE(g(50.0));
  }
  {
    spike_guard_options o;
    o.window = 10;  // warm-up 5 listed: the 5th call is the first judged
    spike_guard a(o), b(o);
    for (double x : {1.0, 2.0, 1.0}) {
      CHECK(a(x));
      CHECK(b(x));
    }
    CHECK(a(50.0));  // 4th call
    CHECK(b(1.0));
    CHECK_FALSE(b(50.0));  // 5th call
  }
  {
    spike_guard_options o;
    o.window = 1;  // one previous value only: never a standard deviation, never a statistical skip
    spike_guard g(o);
    for (double x : {1.0, 1e6, 1.0, 1e12, -5.0}) CHECK(g(x, std::fabs(x)));
    CHECK(g.loss_count() == 1);
    CHECK(std::isnan(g.loss_stddev()));
  }
}

TEST_CASE("spike_guard: a zero standard deviation", "[spike_guard]") {
  // Upstream compares x - mean <= sigma * std: with std 0, x == mean is taken and
  // anything above the mean skips (below: taken one-sided, skipped two-sided).
  for (bool two_sided : {false, true}) {
    INFO("two-sided " << two_sided);
    spike_guard_options o;
    o.window = 8;
    o.two_sided = two_sided;
    spike_guard g(o);
    for (int i = 0; i < 8; ++i) REQUIRE(g(2.5, 0.75));
    CHECK(g.loss_stddev() == 0.0);
    CHECK(g.loss_mean() == 2.5);
    CHECK(g(2.5, 0.75));
    CHECK_FALSE(g(std::nextafter(2.5, 3.0), 0.75));
    CHECK(g.last_verdict() == spike_verdict::loss_spike);
    spike_guard h(o);
    for (int i = 0; i < 8; ++i) REQUIRE(h(2.5, 0.75));
    CHECK(h(2.5, 0.75));
    CHECK(h(std::nextafter(2.5, 0.0), 0.75) == !two_sided);
    spike_guard k(o);
    for (int i = 0; i < 8; ++i) REQUIRE(k(2.5, 0.75));
    CHECK_FALSE(k(2.5, 0.8));
    CHECK(k.last_verdict() == spike_verdict::grad_norm_spike);
  }
}

TEST_CASE("spike_guard: non-finite values skip and never reach the statistics", "[spike_guard][nonfinite]") {
  spike_guard_options o;
  o.window = 8;
  spike_guard g(o);
  for (int i = 0; i < 8; ++i) REQUIRE(g(1.0 + 0.25 * (i % 3), 1.0 + 0.5 * (i % 2)));
  const double mean = g.loss_mean(), sd = g.loss_stddev();
  const double norm_mean = g.grad_norm_mean();
  int k = 0;
  const std::vector<std::pair<double, double>> bad{{qnan, 1.0}, {inf, 1.0}, {-inf, 1.0}, {1.0, qnan}, {1.0, inf}};
  for (auto [loss, norm] : bad) {
    INFO("case " << k);
    CHECK_FALSE(g(loss, norm));
    CHECK(g.last_verdict() == spike_verdict::nonfinite);
    CHECK(g.consecutive_skips() == static_cast<std::uint64_t>(++k));
    CHECK(g.loss_count() == 8);
    CHECK(g.loss_mean() == mean);
    CHECK(g.loss_stddev() == sd);
    CHECK(g.grad_norm_mean() == norm_mean);
  }
  CHECK_FALSE(g(qnan));
  CHECK(g.skipped() == 6);
  CHECK(g(1.0, 1.0));
  CHECK(g.consecutive_skips() == 0);
  CHECK(g.last_verdict() == spike_verdict::taken);
  CHECK(g.steps() == 15);

  // Non-finite steps do not count toward the warm-up.
  spike_guard w(o);  // warm-up: 4 listed
  for (double x : {1.0, qnan, 2.0, inf, qnan}) w(x);
  CHECK(w.loss_count() == 2);
  CHECK(w(100.0));  // the 3rd finite loss: still warming up
  CHECK(w(1.5));
  CHECK_FALSE(w(1000.0));
}

TEST_CASE("spike_guard: bad arguments throw std::invalid_argument and change nothing", "[spike_guard][errors]") {
  spike_guard g;
  for (int i = 0; i < 70; ++i) g(1.0 + (i % 5), 0.5);
  const std::string before = saved(g);
  CHECK_THROWS_AS(g(1.0, -1.0), std::invalid_argument);
  CHECK_THROWS_AS(g(1.0, -inf), std::invalid_argument);
  CHECK_THROWS_AS(g(qnan, -0.5), std::invalid_argument);
  CHECK(saved(g) == before);
  CHECK(g(1.0, -0.0));  // -0 is a norm of 0

  auto options = [](auto edit) {
    spike_guard_options o;
    edit(o);
    return o;
  };
  CHECK_THROWS_AS(spike_guard(options([](auto& o) { o.window = 0; })), std::invalid_argument);
  CHECK_THROWS_AS(spike_guard(options([](auto& o) { o.sigma = 0.0; })), std::invalid_argument);
  CHECK_THROWS_AS(spike_guard(options([](auto& o) { o.sigma = -1.0; })), std::invalid_argument);
  CHECK_THROWS_AS(spike_guard(options([](auto& o) { o.sigma = qnan; })), std::invalid_argument);
  CHECK_THROWS_AS(spike_guard(options([](auto& o) { o.max_grad_norm = -1.0; })), std::invalid_argument);
  CHECK_THROWS_AS(spike_guard(options([](auto& o) { o.max_grad_norm = qnan; })), std::invalid_argument);
  CHECK_NOTHROW(spike_guard(options([](auto& o) { o.sigma = inf; })));
  CHECK_NOTHROW(spike_guard(options([](auto& o) { o.max_grad_norm = 0.0; })));
  try {
    spike_guard(options([](auto& o) { o.window = 0; }));
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("window") != std::string::npos);
  }
}

TEST_CASE("spike_guard: the fixed bound, and sigma = infinity", "[spike_guard]") {
  spike_guard_options o;
  o.sigma = inf;  // the statistical rule off: the fixed-threshold form
  o.max_grad_norm = 2.0;
  o.max_consecutive_skips = 2;
  spike_guard g(o);
  CHECK_FALSE(g(1.0, 2.5));  // from the first step
  CHECK(g.last_verdict() == spike_verdict::grad_norm_limit);
  CHECK(g.grad_norm_count() == 1);  // recorded, as any skipped step's values
  CHECK(g(1.0, 2.0));               // not above
  CHECK(g(1e9));                    // the loss alone: no bound, no statistics
  for (int i = 0; i < 200; ++i) REQUIRE(g(1.0 + (i % 2), 1.0));
  CHECK(g(1e12, 1.5));  // no statistical skip
  CHECK_FALSE(g(1.0, 3.0));
  CHECK_FALSE(g(1.0, 3.0));
  const std::string before = saved(g);
  try {
    g(1.0, 4.0);
    FAIL("no spike_streak_error");
  } catch (const spike_streak_error& e) {
    CHECK(e.consecutive() == 3);
    CHECK(e.max_consecutive() == 2);
    CHECK(e.loss() == 1.0);
    CHECK(e.grad_norm() == 4.0);
    CHECK(std::string(e.what()).find("max_grad_norm") != std::string::npos);
  }
  CHECK(saved(g) == before);
  CHECK_THROWS_AS(g(qnan), spike_streak_error);  // again, and for any skip
  CHECK(saved(g) == before);
  CHECK(g(1.0, 1.0));  // a taken step ends the run
  CHECK(g.consecutive_skips() == 0);
  CHECK_FALSE(g(1.0, 3.0));
}

TEST_CASE("spike_guard: max_consecutive_skips on spikes", "[spike_guard]") {
  spike_guard_options o;
  o.window = 8;
  o.max_consecutive_skips = 3;
  spike_guard g(o);
  for (int i = 0; i < 8; ++i) REQUIRE(g(1.0 + 0.1 * (i % 2)));
  // Spikes enter the history and widen it; each needs to be further out.
  double x = 100.0;
  for (int i = 0; i < 3; ++i, x *= 100.0) REQUIRE_FALSE(g(x));
  CHECK(g.consecutive_skips() == 3);
  CHECK_THROWS_AS(g(x), spike_streak_error);
  CHECK(g.consecutive_skips() == 3);
  CHECK(g.skipped() == 3);
}

TEST_CASE("spike_guard: a saved state resumes bit-identically", "[spike_guard][state]") {
  for (std::size_t window : {1, 3, 16, 128}) {
    for (int at : {0, 5, 17, 300}) {
      INFO("window " << window << ", saved after " << at);
      spike_guard_options o;
      o.window = window;
      o.sigma = 3.0;
      o.two_sided = window == 16;
      o.max_consecutive_skips = window == 3 ? 2 : 0;
      o.max_grad_norm = window == 128 ? 4.0 : inf;
      spike_guard a(o);
      stream s(77 + window);
      std::mt19937_64 pick(at);
      auto next = [&]() {
        const auto [loss, norm] = s.next();
        return std::pair{loss, pick() % 4 == 0 ? maybe_norm{} : maybe_norm(norm)};
      };
      for (int i = 0; i < at; ++i) {
        const auto [loss, norm] = next();
        drive(a, loss, norm);
      }
      spike_guard b;  // other options: load replaces them
      load(b, saved(a));
      CHECK(saved(b) == saved(a));
      CHECK(b.options().window == window);
      CHECK(b.options().two_sided == o.two_sided);
      CHECK(b.options().max_grad_norm == o.max_grad_norm);
      for (int i = 0; i < 600; ++i) {
        const auto [loss, norm] = next();
        REQUIRE(drive(a, loss, norm) == drive(b, loss, norm));
        REQUIRE(a.last_verdict() == b.last_verdict());
        if (i % 97 == 0) REQUIRE(saved(a) == saved(b));
      }
      CHECK(saved(b) == saved(a));
      // And a state saved after the ring wrapped loads into a third guard.
      spike_guard c;
      load(c, saved(a));
      CHECK(saved(c) == saved(a));
      CHECK(c.loss_mean() == a.loss_mean());
      CHECK((c.loss_stddev() == a.loss_stddev() || (std::isnan(c.loss_stddev()) && std::isnan(a.loss_stddev()))));
    }
  }
}

TEST_CASE("spike_guard: bad state data throws state_error and changes nothing", "[spike_guard][state]") {
  spike_guard victim;
  {
    stream s(5);
    for (int i = 0; i < 150; ++i) {
      const auto [loss, norm] = s.next();
      victim(loss, norm);
    }
  }
  const std::string before = saved(victim);
  auto fails = [&](const std::string& bytes, const std::string& what) {
    INFO(what);
    CHECK_THROWS_AS(load(victim, bytes), gradclip::state_error);
    CHECK(saved(victim) == before);
  };

  const fields base;
  {
    spike_guard probe;
    load(probe, record(base));
    CHECK(probe.options().window == 4);
    CHECK(probe.steps() == 5);
    CHECK(probe.skipped() == 1);
    CHECK(probe.consecutive_skips() == 1);
    CHECK(probe.last_verdict() == spike_verdict::loss_spike);
    CHECK(probe.loss_count() == 4);
    CHECK(probe.grad_norm_count() == 3);
    CHECK(probe.loss_mean() == 3.375);
    CHECK(saved(probe) == record(base));
  }

  const std::string good = record(base);
  fails("", "empty");
  for (std::size_t n = 1; n < good.size(); ++n) fails(good.substr(0, n), "truncated to " + std::to_string(n));
  for (std::size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    fails(bad, "byte " + std::to_string(i) + " flipped");
  }

  auto with = [&](auto edit, const char* what) {
    fields f = base;
    edit(f);
    fails(record(f), what);
  };
  with([](fields& f) { f.version = 2; }, "unknown version");
  with([](fields& f) { f.version = 0; }, "version 0");
  with([](fields& f) { f.kind = "nonfinite_guard"; }, "another kind");
  with([](fields& f) { f.window = 0; }, "window 0");
  with([](fields& f) { f.sigma = 0.0; }, "sigma 0");
  with([](fields& f) { f.sigma = qnan; }, "sigma NaN");
  with([](fields& f) { f.max_grad_norm = -1.0; }, "negative max_grad_norm");
  with([](fields& f) { f.skipped = 6; }, "skipped > steps");
  with([](fields& f) { f.consecutive = 2; }, "consecutive > skipped");
  with([](fields& f) { f.max_consecutive = 1, f.skipped = 3, f.consecutive = 2; }, "consecutive > max");
  with([](fields& f) { f.verdict = 5; }, "unknown verdict");
  with([](fields& f) { f.verdict = 0; }, "taken with a run of skips");
  with([](fields& f) { f.consecutive = 0; }, "a skip verdict without a run");
  with([](fields& f) { f.losses.push_back(1.0); }, "more losses than the window");
  with([](fields& f) { f.norms = {1, 2, 3, 4, 5}; }, "more norms than the window");
  with([](fields& f) { f.steps = 3, f.skipped = 1; }, "more values than steps");
  with([](fields& f) { f.losses[1] = qnan; }, "NaN loss");
  with([](fields& f) { f.losses[0] = -inf; }, "infinite loss");
  with([](fields& f) { f.norms[2] = -0.5; }, "negative norm");
  with([](fields& f) { f.norms[0] = inf; }, "infinite norm");
  // Payload too long or short for its fields (checksum right).
  {
    gradclip::detail::state_writer w("spike_guard", 1);
    w.put_u64(4);
    std::ostringstream out;
    w.write(out);
    fails(out.str(), "payload too short");
  }
  {
    fields f = base;
    std::string r = record(f);
    // A record whose length field claims one byte more than the stream has.
    fails(r.substr(0, r.size() - 1), "last byte missing");
  }
}

TEST_CASE("spike_guard: the verdict names", "[spike_guard]") {
  gradclip::spike_guard g{gradclip::spike_guard_options{}};
  CHECK(g(1.0));
  CHECK(std::string(gradclip::to_string(spike_verdict::loss_spike)) == "a loss spike");
  CHECK(std::string(gradclip::to_string(spike_verdict::taken)) == "a taken step");
}
