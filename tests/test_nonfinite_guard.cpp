// nonfinite_guard: step by step against a reference of Optax's apply_if_finite
// (with its "give up" turned into a raise), every input form, the wrapped
// clipper, bad arguments, and the state record.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gradclip/adaptive/auto_clip.hpp>
#include <gradclip/adaptive/nonfinite_guard.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

using gradclip::guard_step;
using gradclip::nonfinite_guard;
using gradclip::nonfinite_streak_error;
using group_t = std::vector<std::vector<float>>;

// Optax's apply_if_finite update, transcribed:
//   notfinite_count = 0 if isfinite else notfinite_count + 1
//   apply inner   if isfinite or notfinite_count > max_consecutive_errors   (Optax: "give up and accept")
//   total_notfinite += not isfinite
// The guard raises where Optax gives up, and then keeps its state.
struct optax_reference {
  std::uint64_t max_consecutive;
  std::uint64_t notfinite_count = 0, total_notfinite = 0, steps = 0;
  bool last_finite = true;

  enum outcome { apply, reject, give_up };
  outcome update(bool isfinite) {
    const std::uint64_t count = isfinite ? 0 : notfinite_count + 1;
    if (!isfinite && count > max_consecutive) return give_up;  // state untouched
    notfinite_count = count;
    last_finite = isfinite;
    total_notfinite += isfinite ? 0 : 1;
    ++steps;
    return isfinite ? apply : reject;
  }
};

bool same_bits(const group_t& a, const group_t& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return false;
    if (std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)) != 0) return false;
  }
  return true;
}

std::string saved(const nonfinite_guard& g) {
  std::ostringstream out;
  g.save(out);
  return out.str();
}

void load(nonfinite_guard& g, const std::string& bytes) {
  std::istringstream in(bytes);
  g.load(in);
}

void check_same_counts(const nonfinite_guard& g, const optax_reference& r) {
  REQUIRE(g.steps() == r.steps);
  REQUIRE(g.consecutive() == r.notfinite_count);
  REQUIRE(g.total_skipped() == r.total_notfinite);
  REQUIRE(g.last_finite() == r.last_finite);
}

// Finite steps with runs of non-finite ones of random length (0 .. 2 max + 2).
struct step_stream {
  std::mt19937_64 rng;
  std::uint64_t max;
  std::uint64_t run = 0;
  step_stream(std::uint64_t seed, std::uint64_t m) : rng(seed), max(m) {}
  bool next_finite() {
    if (run > 0) {
      --run;
      return false;
    }
    if (rng() % 4 == 0) {
      run = rng() % (2 * max + 3);
      if (run > 0) {
        --run;
        return false;
      }
    }
    return true;
  }
};

}  // namespace

TEST_CASE("nonfinite_guard: Optax's rule, raising where Optax gives up", "[nonfinite_guard]") {
  for (std::uint64_t max : {0, 1, 3, 10}) {
    INFO("max_consecutive = " << max);
    nonfinite_guard guard(static_cast<long long>(max));
    optax_reference want{max};
    step_stream stream(40 + max, max);
    std::mt19937_64 rng(7);
    std::size_t raised = 0;
    for (int step = 0; step < 3000; ++step) {
      INFO("step " << step);
      const bool finite = stream.next_finite();
      group_t g{ref::random_values<float>(5, rng()), ref::random_values<float>(40, rng()),
                ref::random_values<float>(3, rng())};
      std::size_t bad = guard_step::npos;
      if (!finite) {
        bad = rng() % 3;
        g[bad][rng() % g[bad].size()] = (rng() & 1) ? std::numeric_limits<float>::quiet_NaN()
                                                    : -std::numeric_limits<float>::infinity();
      }
      const group_t copy = g;
      const auto expect = want.update(finite);
      // Each step through one of the forms, in turn.
      const int form = step % 3;
      if (expect == optax_reference::give_up) {
        ++raised;
        try {
          if (form == 0) guard(g);
          else if (form == 1) guard(gradclip::global_norm(g));
          else guard(gradclip::clip_result{gradclip::global_norm(g), 1.0, false});
          FAIL("no exception");
        } catch (const nonfinite_streak_error& e) {
          CHECK(e.consecutive() == max + 1);
          CHECK(e.max_consecutive() == max);
          CHECK(e.tensor_index() == (form == 0 ? bad : nonfinite_streak_error::npos));
        }
      } else {
        guard_step s;
        if (form == 0) s = guard(g);
        else if (form == 1) s = guard(gradclip::global_norm(g));
        else s = guard(gradclip::clip_result{gradclip::global_norm(g), 1.0, false});
        REQUIRE(s.apply == (expect == optax_reference::apply));
        REQUIRE(static_cast<bool>(s) == s.apply);
        REQUIRE(s.consecutive == want.notfinite_count);
        REQUIRE(s.tensor_index == (form == 0 ? bad : guard_step::npos));
      }
      REQUIRE(same_bits(g, copy));  // never modified
      check_same_counts(guard, want);
    }
    CHECK(raised > 0);
    CHECK(guard.max_consecutive() == max);
  }
}

TEST_CASE("nonfinite_guard: the raise, step by step", "[nonfinite_guard]") {
  nonfinite_guard guard(2);
  CHECK(guard.last_finite());
  CHECK(guard(1.0).apply);
  auto s = guard(ref::nan);
  CHECK_FALSE(s);
  CHECK(s.consecutive == 1);
  s = guard(ref::inf);
  CHECK_FALSE(s);
  CHECK(s.consecutive == 2);
  CHECK_THROWS_AS(guard(-ref::inf), nonfinite_streak_error);
  CHECK_THROWS_AS(guard(ref::nan), nonfinite_streak_error);  // still too many: raises again
  CHECK(guard.consecutive() == 2);
  CHECK(guard.total_skipped() == 2);
  CHECK(guard.steps() == 3);
  CHECK(guard(0.0).apply);  // a finite step resets the run
  CHECK(guard.consecutive() == 0);
  CHECK_FALSE(guard(ref::nan));
  CHECK(guard.total_skipped() == 3);
  CHECK(guard.steps() == 5);

  nonfinite_guard strict(0);  // raises on the first
  CHECK(strict(2.0).apply);
  try {
    strict(ref::nan);
    FAIL("no exception");
  } catch (const std::runtime_error& e) {  // a runtime_error, like nonfinite_error
    CHECK(std::string(e.what()).find("1 non-finite gradient steps in a row") != std::string::npos);
  }
}

TEST_CASE("nonfinite_guard: a wrapped clipper runs on finite steps only", "[nonfinite_guard]") {
  nonfinite_guard guard(1);
  int calls = 0;
  auto clipper = [&calls](auto& g) {
    ++calls;
    return gradclip::clip_by_global_norm(g, 1.0);
  };
  std::vector<double> g{3.0, 4.0};
  auto s = guard(g, clipper);
  CHECK(s.apply);
  REQUIRE(s.result);
  CHECK(s.result->total_norm == 5.0);
  CHECK(s.result->clipped);
  CHECK(calls == 1);
  CHECK(g[0] == Approx(0.6));

  std::vector<double> bad{1.0, ref::nan};
  s = guard(bad, clipper);
  CHECK_FALSE(s);
  CHECK_FALSE(s.result);
  CHECK(s.tensor_index == 0);
  CHECK(calls == 1);
  CHECK(bad[0] == 1.0);
  CHECK_THROWS_AS(guard(bad, clipper), nonfinite_streak_error);
  CHECK(calls == 1);

  // A clipper that throws: nothing is recorded.
  nonfinite_guard other(3);
  std::vector<double> fine{1.0};
  auto thrower = [](auto&) -> int { throw std::logic_error("clipper failed"); };
  CHECK_THROWS_AS(other(fine, thrower), std::logic_error);
  CHECK(other.steps() == 0);

  // With a stateful clipper: AutoClip never sees the non-finite steps.
  nonfinite_guard g2(5);
  gradclip::auto_clip clip(50);
  std::vector<float> a{3.0f, 4.0f}, nan{1.0f, std::numeric_limits<float>::quiet_NaN()};
  g2(a, clip);
  g2(nan, clip);
  std::vector<float> b{0.6f, 0.8f};
  const auto r = g2(b, clip);
  REQUIRE(r.result);
  CHECK(clip.count() == 2);
  CHECK(clip.threshold() == Approx(3.0));
  CHECK(g2.steps() == 3);
}

TEST_CASE("nonfinite_guard: group forms and element types", "[nonfinite_guard]") {
  nonfinite_guard guard(100);
  Eigen::VectorXd x = Eigen::VectorXd::Ones(10);
  std::vector<Eigen::half> h(9, Eigen::half(1.0f));
  std::vector<Eigen::bfloat16> b(4, Eigen::bfloat16(1.0f));
  CHECK(guard(std::tie(x, h, b)).apply);
  h[8] = Eigen::half(std::numeric_limits<float>::infinity());
  auto s = guard(std::tie(x, h, b));
  CHECK_FALSE(s);
  CHECK(s.tensor_index == 1);
  h[8] = Eigen::half(1.0f);
  b[0] = Eigen::bfloat16(std::numeric_limits<float>::quiet_NaN());
  x[3] = std::numeric_limits<double>::quiet_NaN();
  s = guard(std::tie(x, h, b));
  CHECK(s.tensor_index == 0);
  CHECK(s.consecutive == 2);
  // A single buffer, read-only.
  const std::vector<float> c(3, 1.0f);
  CHECK(guard(c).apply);
  CHECK(guard.steps() == 4);
}

TEST_CASE("nonfinite_guard: max_consecutive of any integer type; negative throws", "[nonfinite_guard]") {
  CHECK_THROWS_AS(nonfinite_guard(-1), std::invalid_argument);
  CHECK_THROWS_AS(nonfinite_guard(static_cast<signed char>(-3)), std::invalid_argument);
  CHECK_NOTHROW(nonfinite_guard(0));
  const std::size_t n = 4;
  const int i = 5;
  const short h = 6;
  CHECK(nonfinite_guard{n}.max_consecutive() == 4);
  CHECK(nonfinite_guard{i}.max_consecutive() == 5);
  CHECK(nonfinite_guard{h}.max_consecutive() == 6);
  nonfinite_guard never{std::numeric_limits<std::uint64_t>::max()};
  for (int k = 0; k < 100; ++k) CHECK_FALSE(never(ref::nan));
  CHECK(never.consecutive() == 100);
  std::ostringstream out;
  never.save(out);
  nonfinite_guard copy(0);
  load(copy, out.str());
  CHECK(copy.max_consecutive() == std::numeric_limits<std::uint64_t>::max());
}

TEST_CASE("nonfinite_guard: a saved state resumes identically", "[nonfinite_guard]") {
  for (std::uint64_t max : {0, 2, 7}) {
    for (int k : {0, 11, 400}) {
      INFO("max " << max << ", saved at " << k);
      nonfinite_guard a(static_cast<long long>(max));
      step_stream stream(9, max);
      auto drive = [](nonfinite_guard& g, bool finite) -> int {
        try {
          return g(finite ? 1.0 : ref::nan).apply ? 1 : 0;
        } catch (const nonfinite_streak_error&) {
          return 2;
        }
      };
      for (int i = 0; i < k; ++i) drive(a, stream.next_finite());
      nonfinite_guard b(99);
      load(b, saved(a));
      CHECK(b.max_consecutive() == max);
      CHECK(saved(b) == saved(a));
      for (int i = 0; i < 500; ++i) {
        const bool finite = stream.next_finite();
        REQUIRE(drive(a, finite) == drive(b, finite));
        REQUIRE(b.consecutive() == a.consecutive());
      }
      CHECK(saved(b) == saved(a));
    }
  }
}

namespace {

std::string record(std::uint64_t max, std::uint64_t steps, std::uint64_t skipped, std::uint64_t consecutive,
                   const char* kind = "nonfinite_guard", std::uint32_t version = 1) {
  gradclip::detail::state_writer w(kind, version);
  w.put_u64(max);
  w.put_u64(steps);
  w.put_u64(skipped);
  w.put_u64(consecutive);
  std::ostringstream out;
  w.write(out);
  return out.str();
}

}  // namespace

TEST_CASE("nonfinite_guard: bad state data throws state_error and changes nothing", "[nonfinite_guard]") {
  nonfinite_guard victim(4);
  for (double x : {1.0, ref::nan, 2.0, ref::nan, ref::inf}) victim(x);
  const std::string before = saved(victim);
  const std::string good = record(3, 10, 4, 2);
  nonfinite_guard probe(0);
  load(probe, good);
  CHECK(probe.max_consecutive() == 3);
  CHECK(probe.steps() == 10);
  CHECK(probe.total_skipped() == 4);
  CHECK(probe.consecutive() == 2);

  SECTION("truncated") {
    for (std::size_t n = 0; n < good.size(); ++n) {
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
    CHECK_THROWS_AS(load(victim, record(3, 10, 4, 2, "norm_stats")), gradclip::state_error);
    std::ostringstream out;
    gradclip::auto_clip().save(out);
    CHECK_THROWS_AS(load(victim, out.str()), gradclip::state_error);
  }
  SECTION("wrong version") {
    CHECK_THROWS_AS(load(victim, record(3, 10, 4, 2, "nonfinite_guard", 2)), gradclip::state_error);
  }
  SECTION("inconsistent fields") {
    CHECK_THROWS_AS(load(victim, record(3, 10, 11, 2)), gradclip::state_error);  // more skipped than steps
    CHECK_THROWS_AS(load(victim, record(3, 10, 1, 2)), gradclip::state_error);   // a run longer than the total
    CHECK_THROWS_AS(load(victim, record(1, 10, 4, 2)), gradclip::state_error);   // a run the guard would have refused
    CHECK_THROWS_AS(load(victim, record(0, 0, 0, 1)), gradclip::state_error);    // a run with no steps
  }
  CHECK(saved(victim) == before);
}
