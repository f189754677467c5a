// grad_scaler's DeepSpeed options (hysteresis, consecutive hysteresis, a minimum
// scale with clamp or error, DeepSpeed's fp16 optimizer's growth count) replayed
// step by step against an independent transcription of DeepSpeed's two update
// rules (deepspeed/runtime/fp16/loss_scaler.py, DynamicLossScaler.update_scale,
// used by the ZeRO stages; deepspeed/runtime/fp16/fused_optimizer.py,
// FP16_Optimizer._update_scale, fp16 without ZeRO) over long random overflow
// sequences; the error at the minimum; the counters; state version 2 and
// version 1 records.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gradclip/errors.hpp>
#include <gradclip/loss_scale.hpp>

#include "catch.hpp"

namespace {

constexpr double qnan = std::numeric_limits<double>::quiet_NaN();
constexpr double pinf = std::numeric_limits<double>::infinity();

// ---- the references: DeepSpeed's rules, in double (a Python float) -----------------

// DynamicLossScaler (ZeRO stages 1-3).
struct dynamic_loss_scaler {
  double cur_scale;
  double scale_factor;
  long long scale_window;
  double min_scale;
  int delayed_shift;
  bool consecutive_hysteresis;
  bool raise_error_at_min_scale;
  int cur_hysteresis = delayed_shift;
  long long cur_iter = 0;
  long long last_overflow_iter = -1;

  // false: it raised ("Current loss scale already at minimum"), nothing changed.
  bool update_scale(bool overflow) {
    if (overflow) {
      if (delayed_shift == 1 || cur_hysteresis == 1) {
        if (cur_scale == min_scale && raise_error_at_min_scale) return false;
        const double lowered = cur_scale / scale_factor;
        cur_scale = lowered > min_scale ? lowered : min_scale;
      } else {
        cur_hysteresis -= 1;
      }
      last_overflow_iter = cur_iter;
    } else {
      if (consecutive_hysteresis) cur_hysteresis = delayed_shift;
      if ((cur_iter - last_overflow_iter) % scale_window == 0) {
        if (!consecutive_hysteresis) cur_hysteresis = delayed_shift;
        cur_scale *= scale_factor;
      }
    }
    cur_iter += 1;
    return true;
  }
  // The growth count after an update: finite steps since the last overflow, modulo the window.
  long long tracker() const { return (cur_iter - 1 - last_overflow_iter) % scale_window; }
};

// FP16_Optimizer._update_scale (and FP16_UnfusedOptimizer's, the same): scale_factor 2,
// no hysteresis, a back-off clamped at min_loss_scale, never raises.
struct fp16_optimizer {
  double cur_scale;
  long long scale_window;
  double min_loss_scale;
  double scale_factor = 2.0;
  long long cur_iter = 0;
  long long last_overflow_iter = -1;

  void update_scale(bool skip) {
    if (skip) {
      const double lowered = cur_scale / scale_factor;
      cur_scale = lowered > min_loss_scale ? lowered : min_loss_scale;
      last_overflow_iter = cur_iter;
    } else {
      const long long stable_interval = (cur_iter - last_overflow_iter) - 1;
      if (stable_interval > 0 && stable_interval % scale_window == 0) cur_scale *= scale_factor;
    }
    cur_iter += 1;
  }
  // Counted finite steps: the first after an overflow (or of all) is not one.
  long long tracker() const {
    const long long run = cur_iter - 1 - last_overflow_iter;
    return run > 0 ? (run - 1) % scale_window : 0;
  }
};

// The counters, kept by the test.
struct counters {
  std::uint64_t steps = 0, skipped = 0, consecutive = 0;
  void add(bool overflow) {
    ++steps;
    if (overflow) {
      ++skipped;
      ++consecutive;
    } else {
      consecutive = 0;
    }
  }
};

// Overflows as a run of fp16 training makes them: rare while the scale is below a
// level, likely above it (the likelier the higher), and bursts of consecutive overflows (up to max_burst).
struct overflow_source {
  std::mt19937_64 rng;
  double critical_log2;
  int max_burst;
  double burst_rate = 0.01;  // a burst starts
  double base_rate = 0.02;   // a single overflow below the critical scale
  int burst_left = 0;

  bool next(double scale) {
    std::uniform_real_distribution<double> u(0.0, 1.0);
    if (burst_left > 0) {
      --burst_left;
      return true;
    }
    const double x = u(rng);
    if (x < burst_rate) {
      burst_left = static_cast<int>(rng() % static_cast<std::uint64_t>(max_burst));  // this one and up to max_burst - 1 more
      return true;
    }
    const double above = std::log2(scale) - critical_log2;  // ever likelier above the critical scale
    return x < (above >= 0 ? std::min(0.6 + 0.1 * above, 0.99) : burst_rate + base_rate);
  }
};

std::string saved(const gradclip::grad_scaler& s) {
  std::ostringstream out;
  s.save(out);
  return out.str();
}

void load(gradclip::grad_scaler& s, const std::string& bytes) {
  std::istringstream in(bytes);
  s.load(in);
}

gradclip::grad_scaler_options ds_options(double init, double factor, int window, int hysteresis, bool consecutive,
                                         double min_scale, bool raise) {
  gradclip::grad_scaler_options o;
  o.init_scale = init;
  o.growth_factor = factor;
  o.backoff_factor = 1.0 / factor;
  o.growth_interval = window;
  o.hysteresis = hysteresis;
  o.consecutive_hysteresis = consecutive;
  o.min_scale = min_scale;
  o.at_min_scale = raise ? gradclip::min_scale_policy::error : gradclip::min_scale_policy::clamp;
  return o;
}

// The scale stays where float and double agree (the transcription keeps a double).
void require_float_range(double scale) {
  INFO("reference scale " << scale);
  REQUIRE(scale >= 0x1p-126);
  REQUIRE(scale <= 0x1p127);
}

}  // namespace

TEST_CASE("grad_scaler replays DeepSpeed's DynamicLossScaler step by step", "[loss_scale][deepspeed]") {
  struct config {
    const char* name;
    gradclip::grad_scaler_options options;
    int steps;
    double critical_log2;
    int max_burst;
    double rate = 0.01;  // of bursts, and of single overflows
  };
  const std::vector<config> configs{
      {"hysteresis 1, no minimum (GradScaler's rule)", ds_options(65536.0, 2.0, 8, 1, false, 0.0, false), 8000, 20, 12},
      {"DeepSpeed defaults", gradclip::grad_scaler_options::deepspeed(), 60000, 20, 24, 0.0002},
      {"hysteresis 2, min 1, raise", ds_options(65536.0, 2.0, 16, 2, false, 1.0, true), 8000, 12, 25},
      {"hysteresis 2 consecutive, min 1, raise", ds_options(65536.0, 2.0, 16, 2, true, 1.0, true), 8000, 12, 25},
      {"hysteresis 3, min 2^-4, clamp", ds_options(1024.0, 2.0, 5, 3, false, 0x1p-4, false), 8000, 8, 30},
      {"hysteresis 4 consecutive, min 2^10, clamp", ds_options(32768.0, 2.0, 3, 4, true, 1024.0, false), 8000, 18,
       12},
      {"hysteresis 5, min 2^8, raise, window 1", ds_options(4096.0, 2.0, 1, 5, false, 256.0, true), 8000, 14, 16},
      {"hysteresis 1 consecutive, min 0.5, raise", ds_options(64.0, 2.0, 2, 1, true, 0.5, true), 8000, 9, 14},
      {"hysteresis 7 consecutive, min 4, clamp, window 50", ds_options(65536.0, 2.0, 50, 7, true, 4.0, false), 10000,
       17, 20},
      {"scale_factor 4, hysteresis 2, min 2^-2, raise", ds_options(65536.0, 4.0, 10, 2, false, 0.25, true), 8000, 16,
       14},
      {"scale_factor 4, hysteresis 3 consecutive, min 1, clamp", ds_options(256.0, 4.0, 6, 3, true, 1.0, false), 8000,
       12, 10},
  };
  std::uint64_t seed = 1;
  for (const config& c : configs) {
    INFO("config: " << c.name);
    const auto& o = c.options;
    dynamic_loss_scaler ref{o.init_scale,   o.growth_factor,
                            o.growth_interval, o.min_scale,
                            o.hysteresis,   o.consecutive_hysteresis,
                            o.at_min_scale == gradclip::min_scale_policy::error};
    gradclip::grad_scaler scaler(o);
    counters n;
    overflow_source source{std::mt19937_64(seed++), c.critical_log2, c.max_burst, c.rate, c.rate};
    std::size_t raised = 0, absorbed = 0, backoffs = 0, growths = 0, clamped = 0, longest = 0, reloads = 0;
    for (int i = 0; i < c.steps; ++i) {
      INFO("step " << i);
      const bool overflow = source.next(ref.cur_scale);
      const double before = ref.cur_scale;
      if (!ref.update_scale(overflow)) {
        // DeepSpeed raises and changes nothing: so does the scaler.
        const std::string state = saved(scaler);
        bool thrown = false;
        try {
          scaler.update(overflow);
        } catch (const gradclip::loss_scale_error& e) {
          thrown = true;
          CHECK(e.scale() == ref.cur_scale);
          CHECK(e.min_scale() == o.min_scale);
        }
        REQUIRE(thrown);
        REQUIRE(saved(scaler) == state);
        ++raised;
      } else {
        scaler.update(overflow);
        n.add(overflow);
        if (overflow && ref.cur_scale == before) ++absorbed;
        if (overflow && ref.cur_scale < before) ++backoffs;
        if (overflow && ref.cur_scale == o.min_scale && before / o.growth_factor < o.min_scale) ++clamped;
        if (!overflow && ref.cur_scale > before) ++growths;
      }
      require_float_range(ref.cur_scale);
      REQUIRE(scaler.scale() == ref.cur_scale);
      REQUIRE(scaler.hysteresis_left() == ref.cur_hysteresis);
      REQUIRE(scaler.growth_tracker() == ref.tracker());
      REQUIRE(scaler.steps() == static_cast<std::uint64_t>(ref.cur_iter));
      REQUIRE(scaler.steps() == n.steps);
      REQUIRE(scaler.skipped_steps() == n.skipped);
      REQUIRE(scaler.consecutive_overflows() == n.consecutive);
      longest = std::max<std::size_t>(longest, static_cast<std::size_t>(n.consecutive));
      // A saved and reloaded scaler carries on identically (checked by the steps after).
      if (i % 331 == 17) {
        gradclip::grad_scaler other;
        load(other, saved(scaler));
        REQUIRE(saved(other) == saved(scaler));
        scaler = other;
        ++reloads;
      }
    }
    INFO("raised " << raised << ", absorbed " << absorbed << ", back-offs " << backoffs << ", growths " << growths
                   << ", clamped " << clamped << ", longest run " << longest);
    CHECK(growths > 20);
    CHECK(backoffs > 20);
    CHECK(longest >= 8);
    CHECK(reloads > 10);
    if (o.hysteresis > 1) CHECK(absorbed > 10);
    if (o.min_scale > 0) {
      CHECK(clamped + raised > 0);
      if (o.at_min_scale == gradclip::min_scale_policy::error) CHECK(raised > 0);
    }
  }
}

TEST_CASE("grad_scaler replays DeepSpeed's FP16_Optimizer (fp16 without ZeRO) step by step",
          "[loss_scale][deepspeed]") {
  for (int window : {1, 2, 5, 16, 1000}) {
    for (double min_scale : {1.0, 0x1p-20, 512.0}) {
      INFO("window " << window << ", min_loss_scale " << min_scale);
      gradclip::grad_scaler_options o = ds_options(65536.0, 2.0, window, 1, false, min_scale, false);
      o.growth_counting = gradclip::growth_rule::fp16_optimizer;
      fp16_optimizer ref{65536.0, window, min_scale};
      gradclip::grad_scaler scaler(o);
      counters n;
      const double rate = window >= 1000 ? 0.0002 : 0.01;
      overflow_source source{std::mt19937_64(static_cast<std::uint64_t>(window) * 7 + 3), 18.0, 15, rate, rate};
      std::size_t growths = 0, backoffs = 0;
      const int steps = window >= 1000 ? 30000 : 6000;
      for (int i = 0; i < steps; ++i) {
        INFO("step " << i);
        const bool overflow = source.next(ref.cur_scale);
        const double before = ref.cur_scale;
        ref.update_scale(overflow);
        scaler.update(overflow);
        n.add(overflow);
        growths += ref.cur_scale > before;
        backoffs += ref.cur_scale < before;
        require_float_range(ref.cur_scale);
        REQUIRE(scaler.scale() == ref.cur_scale);
        REQUIRE(scaler.growth_tracker() == ref.tracker());
        REQUIRE(scaler.hysteresis_left() == 1);
        REQUIRE(scaler.steps() == n.steps);
        REQUIRE(scaler.skipped_steps() == n.skipped);
        REQUIRE(scaler.consecutive_overflows() == n.consecutive);
        if (i % 500 == 250) {
          gradclip::grad_scaler other;
          load(other, saved(scaler));
          REQUIRE(saved(other) == saved(scaler));
          scaler = other;
        }
      }
      CHECK(growths > 10);
      CHECK(backoffs > 10);
    }
  }
  // The two growth counts differ: the first growth after window + 1 finite steps.
  gradclip::grad_scaler_options o;
  o.growth_interval = 3;
  gradclip::grad_scaler consecutive(o);
  o.growth_counting = gradclip::growth_rule::fp16_optimizer;
  gradclip::grad_scaler fp16(o);
  for (int i = 0; i < 3; ++i) {
    consecutive.update(false);
    fp16.update(false);
  }
  CHECK(consecutive.scale() == 131072.0);
  CHECK(fp16.scale() == 65536.0);
  fp16.update(false);
  CHECK(fp16.scale() == 131072.0);
  fp16.update(true);
  for (int i = 0; i < 3; ++i) fp16.update(false);
  CHECK(fp16.scale() == 65536.0);
  fp16.update(false);
  CHECK(fp16.scale() == 131072.0);
  for (int i = 0; i < 3; ++i) fp16.update(false);
  CHECK(fp16.scale() == 262144.0);  // then every window
}

TEST_CASE("grad_scaler: the default options are GradScaler's rule, the DeepSpeed fields inert",
          "[loss_scale][deepspeed]") {
  const gradclip::grad_scaler_options o;
  CHECK(o.hysteresis == 1);
  CHECK_FALSE(o.consecutive_hysteresis);
  CHECK(o.min_scale == 0.0);
  CHECK(o.at_min_scale == gradclip::min_scale_policy::clamp);
  CHECK(o.growth_counting == gradclip::growth_rule::consecutive);
  const auto d = gradclip::grad_scaler_options::deepspeed();
  CHECK(d.init_scale == 65536.0);
  CHECK(d.growth_factor == 2.0);
  CHECK(d.backoff_factor == 0.5);
  CHECK(d.growth_interval == 1000);
  CHECK(d.hysteresis == 2);
  CHECK_FALSE(d.consecutive_hysteresis);
  CHECK(d.min_scale == 1.0);
  CHECK(d.at_min_scale == gradclip::min_scale_policy::error);
  CHECK(d.growth_counting == gradclip::growth_rule::consecutive);

  // GradScaler's update, written out, against the scaler over a random sequence that
  // backs the scale off to 0 and grows it back.
  gradclip::grad_scaler s({1.0, 2.0, 0.5, 3});
  float scale = 1.0f;
  int tracker = 0;
  std::mt19937_64 rng(5);
  bool reached_zero = false;
  for (int i = 0; i < 20000; ++i) {
    const bool found_inf = i > 19000 && i < 19200 ? true : rng() % 4 == 0;
    if (found_inf) {
      scale = static_cast<float>(static_cast<double>(scale) * 0.5);
      tracker = 0;
    } else if (++tracker == 3) {
      const double grown = static_cast<double>(scale) * 2.0;
      if (grown <= static_cast<double>(std::numeric_limits<float>::max())) scale = static_cast<float>(grown);
      tracker = 0;
    }
    s.update(found_inf);
    REQUIRE(s.scale() == static_cast<double>(scale));
    REQUIRE(s.growth_tracker() == tracker);
    REQUIRE(s.hysteresis_left() == 1);
    reached_zero = reached_zero || scale == 0.0f;
  }
  CHECK(reached_zero);
  CHECK(s.steps() == 20000);
}

TEST_CASE("grad_scaler: hysteresis delays the back-off, consecutive_hysteresis refills it on a finite step",
          "[loss_scale][deepspeed]") {
  SECTION("plain hysteresis: refilled only at a growth point") {
    gradclip::grad_scaler s(ds_options(1024.0, 2.0, 4, 3, false, 0.0, false));
    s.update(true);  // absorbed
    CHECK(s.scale() == 1024.0);
    CHECK(s.hysteresis_left() == 2);
    s.update(false);
    CHECK(s.hysteresis_left() == 2);  // not refilled by a finite step
    s.update(true);                   // absorbed
    CHECK(s.scale() == 1024.0);
    CHECK(s.hysteresis_left() == 1);
    s.update(true);  // backs off; stays at 1
    CHECK(s.scale() == 512.0);
    CHECK(s.hysteresis_left() == 1);
    s.update(false);
    s.update(true);  // every overflow backs off until a growth point
    CHECK(s.scale() == 256.0);
    CHECK(s.skipped_steps() == 4);
    CHECK(s.consecutive_overflows() == 1);
    for (int i = 0; i < 4; ++i) s.update(false);
    CHECK(s.scale() == 512.0);  // grown, and refilled
    CHECK(s.hysteresis_left() == 3);
    CHECK(s.consecutive_overflows() == 0);
    CHECK(s.steps() == 10);
  }
  SECTION("consecutive hysteresis: hysteresis - 1 overflows in a row are absorbed") {
    gradclip::grad_scaler s(ds_options(1024.0, 2.0, 100, 3, true, 0.0, false));
    for (int round = 0; round < 5; ++round) {
      s.update(true);
      s.update(true);
      CHECK(s.scale() == 1024.0);
      CHECK(s.hysteresis_left() == 1);
      s.update(false);
      CHECK(s.hysteresis_left() == 3);
    }
    s.update(true);
    s.update(true);
    s.update(true);
    CHECK(s.scale() == 512.0);
    s.update(true);
    CHECK(s.scale() == 256.0);
    CHECK(s.consecutive_overflows() == 4);
    CHECK(s.growth_tracker() == 0);
  }
}

TEST_CASE("grad_scaler: at min_scale an overflow throws loss_scale_error (scaler unchanged) or clamps",
          "[loss_scale][deepspeed]") {
  auto o = ds_options(12.0, 2.0, 1000, 2, false, 2.0, true);
  gradclip::grad_scaler s(o);
  s.update(true);  // absorbed
  s.update(true);  // 6
  s.update(true);  // 3
  CHECK(s.scale() == 3.0);
  s.update(true);  // max(1.5, 2): the back-off is floored, even under error
  CHECK(s.scale() == 2.0);
  const std::string before = saved(s);
  for (int k = 0; k < 3; ++k) {
    bool thrown = false;
    try {
      s.update(true);
    } catch (const gradclip::loss_scale_error& e) {
      thrown = true;
      const std::string what = e.what();
      CHECK(what.find("loss scale already at minimum") != std::string::npos);
      CHECK(e.scale() == 2.0);
      CHECK(e.min_scale() == 2.0);
    }
    CHECK(thrown);
    CHECK(saved(s) == before);
  }
  CHECK(s.steps() == 4);
  CHECK(s.skipped_steps() == 4);
  // A loss_scale_error is a std::runtime_error.
  CHECK_THROWS_AS(s.update(true), std::runtime_error);
  s.update(false);  // a finite step goes on
  CHECK(s.steps() == 5);
  CHECK(s.consecutive_overflows() == 0);
  // An absorbed overflow at the minimum does not throw (DeepSpeed checks only when backing off).
  gradclip::grad_scaler t(ds_options(2.0, 2.0, 1000, 3, true, 2.0, true));
  CHECK_NOTHROW(t.update(true));
  CHECK_NOTHROW(t.update(true));
  CHECK_THROWS_AS(t.update(true), gradclip::loss_scale_error);
  CHECK(t.hysteresis_left() == 1);
  CHECK(t.steps() == 2);

  o.at_min_scale = gradclip::min_scale_policy::clamp;
  gradclip::grad_scaler c(o);
  for (int k = 0; k < 50; ++k) c.update(true);
  CHECK(c.scale() == 2.0);
  CHECK(c.skipped_steps() == 50);
  CHECK(c.consecutive_overflows() == 50);
}

TEST_CASE("grad_scaler: DeepSpeed option checks", "[loss_scale][deepspeed]") {
  auto with = [](auto edit) {
    gradclip::grad_scaler_options o;
    edit(o);
    return o;
  };
  const std::vector<gradclip::grad_scaler_options> bad{
      with([](auto& o) { o.hysteresis = 0; }),
      with([](auto& o) { o.hysteresis = -2; }),
      with([](auto& o) { o.min_scale = -1.0; }),
      with([](auto& o) { o.min_scale = -0x1p-149; }),
      with([](auto& o) { o.min_scale = qnan; }),
      with([](auto& o) { o.min_scale = pinf; }),
      with([](auto& o) { o.min_scale = 1e-50; }),    // positive, but 0 as a float
      with([](auto& o) { o.min_scale = 131072.0; }),  // above init_scale
      with([](auto& o) {
        o.init_scale = 0.1;
        o.min_scale = 0.10000001;  // a float above 0.1f
      }),
      with([](auto& o) { o.at_min_scale = static_cast<gradclip::min_scale_policy>(7); }),
      with([](auto& o) { o.growth_counting = static_cast<gradclip::growth_rule>(9); }),
  };
  const std::vector<const char*> words{"hysteresis", "hysteresis", "min_scale", "min_scale", "min_scale", "min_scale",
                                       "float's range", "init_scale", "init_scale", "at_min_scale", "growth_counting"};
  for (std::size_t i = 0; i < bad.size(); ++i) {
    INFO("case " << i);
    bool thrown = false;
    try {
      gradclip::grad_scaler s(bad[i]);
    } catch (const std::invalid_argument& e) {
      thrown = true;
      INFO(e.what());
      CHECK(std::string(e.what()).find(words[i]) != std::string::npos);
    }
    CHECK(thrown);
  }
  // The edges that are accepted.
  CHECK_NOTHROW(gradclip::grad_scaler(with([](auto& o) { o.min_scale = o.init_scale; })));
  CHECK_NOTHROW(gradclip::grad_scaler(with([](auto& o) { o.min_scale = 0x1p-149; })));  // the least float
  CHECK_NOTHROW(gradclip::grad_scaler(with([](auto& o) { o.hysteresis = std::numeric_limits<int>::max(); })));
  CHECK_NOTHROW(gradclip::grad_scaler(gradclip::grad_scaler_options::deepspeed()));
  // min_scale is rounded to float, as init_scale.
  gradclip::grad_scaler s(with([](auto& o) {
    o.init_scale = 1.0;
    o.min_scale = 0.1;
  }));
  for (int k = 0; k < 10; ++k) s.update(true);
  CHECK(s.scale() == static_cast<double>(0.1f));
}

// ---- state --------------------------------------------------------------------

namespace {

struct v2_fields {
  double init = 65536.0, growth = 2.0, backoff = 0.5;
  std::uint64_t interval = 1000, hysteresis = 3;
  bool consecutive_hysteresis = false;
  double min_scale = 1.0;
  std::uint64_t policy = 1, rule = 0;
  double scale = 1024.0;
  std::uint64_t tracker = 7, left = 2, steps = 500, skipped = 40, consecutive = 0;
};

std::string record_v2(const v2_fields& f, std::uint32_t version = 2) {
  gradclip::detail::state_writer w("grad_scaler", version);
  w.put_double(f.init);
  w.put_double(f.growth);
  w.put_double(f.backoff);
  w.put_u64(f.interval);
  w.put_u64(f.hysteresis);
  w.put_bool(f.consecutive_hysteresis);
  w.put_double(f.min_scale);
  w.put_u64(f.policy);
  w.put_u64(f.rule);
  w.put_double(f.scale);
  w.put_u64(f.tracker);
  w.put_u64(f.left);
  w.put_u64(f.steps);
  w.put_u64(f.skipped);
  w.put_u64(f.consecutive);
  std::ostringstream out;
  w.write(out);
  return out.str();
}

std::string record_v1(double init, double growth, double backoff, std::uint64_t interval, double scale,
                      std::uint64_t tracker) {
  gradclip::detail::state_writer w("grad_scaler", 1);
  w.put_double(init);
  w.put_double(growth);
  w.put_double(backoff);
  w.put_u64(interval);
  w.put_double(scale);
  w.put_u64(tracker);
  std::ostringstream out;
  w.write(out);
  return out.str();
}

}  // namespace

TEST_CASE("grad_scaler: state version 2 keeps every DeepSpeed field and counter; a resume is bit-identical",
          "[loss_scale][deepspeed][state]") {
  for (bool consecutive : {false, true}) {
    for (auto rule : {gradclip::growth_rule::consecutive, gradclip::growth_rule::fp16_optimizer}) {
      auto o = ds_options(65536.0, 2.0, 7, 3, consecutive, 8.0, true);
      o.growth_counting = rule;
      gradclip::grad_scaler a(o);
      overflow_source source{std::mt19937_64(99), 18, 10};
      for (int i = 0; i < 3000; ++i) {
        try {
          a.update(source.next(a.scale()));
        } catch (const gradclip::loss_scale_error&) {
        }
        if (i % 250 != 100) continue;
        // Resume from the record mid-sequence; both carry on bit for bit.
        gradclip::grad_scaler b;
        load(b, saved(a));
        CHECK(saved(b) == saved(a));
        CHECK(b.options().hysteresis == 3);
        CHECK(b.options().consecutive_hysteresis == consecutive);
        CHECK(b.options().min_scale == 8.0);
        CHECK(b.options().at_min_scale == gradclip::min_scale_policy::error);
        CHECK(b.options().growth_counting == rule);
        CHECK(b.steps() == a.steps());
        CHECK(b.skipped_steps() == a.skipped_steps());
        CHECK(b.consecutive_overflows() == a.consecutive_overflows());
        CHECK(b.hysteresis_left() == a.hysteresis_left());
        gradclip::grad_scaler a2 = a;
        overflow_source s2 = source;
        for (int k = 0; k < 400; ++k) {
          const bool overflow = s2.next(a2.scale());
          bool ta = false, tb = false;
          try {
            a2.update(overflow);
          } catch (const gradclip::loss_scale_error&) {
            ta = true;
          }
          try {
            b.update(overflow);
          } catch (const gradclip::loss_scale_error&) {
            tb = true;
          }
          REQUIRE(ta == tb);
          REQUIRE(saved(a2) == saved(b));
        }
      }
      CHECK(a.skipped_steps() > 100);
    }
  }
  // The record of a fresh scaler, and its layout: version 2 with 15 fields.
  const std::string fresh = saved(gradclip::grad_scaler{});
  v2_fields f;
  f.interval = 2000;
  f.hysteresis = 1;
  f.min_scale = 0.0;
  f.policy = 0;
  f.scale = 65536.0;
  f.tracker = 0;
  f.left = 1;
  f.steps = f.skipped = 0;
  CHECK(fresh == record_v2(f));
}

TEST_CASE("grad_scaler: a version 1 record loads with GradScaler's rule and the counters at 0",
          "[loss_scale][deepspeed][state]") {
  gradclip::grad_scaler s(gradclip::grad_scaler_options::deepspeed());
  for (int i = 0; i < 20; ++i) s.update(i % 3 == 0);
  load(s, record_v1(1000.1, 1.1, 0.7, 5, 256.0, 3));
  CHECK(s.scale() == 256.0);
  CHECK(s.growth_tracker() == 3);
  CHECK(s.options().init_scale == 1000.1);
  CHECK(s.options().growth_interval == 5);
  CHECK(s.options().hysteresis == 1);
  CHECK_FALSE(s.options().consecutive_hysteresis);
  CHECK(s.options().min_scale == 0.0);
  CHECK(s.options().at_min_scale == gradclip::min_scale_policy::clamp);
  CHECK(s.options().growth_counting == gradclip::growth_rule::consecutive);
  CHECK(s.hysteresis_left() == 1);
  CHECK(s.steps() == 0);
  CHECK(s.skipped_steps() == 0);
  CHECK(s.consecutive_overflows() == 0);
  // It carries on as GradScaler would, and saves as version 2.
  s.update(false);
  s.update(false);
  CHECK(s.scale() == static_cast<double>(static_cast<float>(256.0 * 1.1)));
  s.update(true);
  CHECK(s.scale() == static_cast<double>(static_cast<float>(static_cast<double>(static_cast<float>(256.0 * 1.1)) * 0.7)));
  CHECK(s.steps() == 3);
  CHECK(s.skipped_steps() == 1);
  gradclip::grad_scaler t;
  load(t, saved(s));
  CHECK(saved(t) == saved(s));
  CHECK(saved(s).find(std::string("grad_scaler\x02\0\0\0", 15)) != std::string::npos);
  // A version 1 scale of 0 (backed off all the way) still loads.
  load(t, record_v1(1.0, 2.0, 0.5, 3, 0.0, 2));
  CHECK(t.scale() == 0.0);
}

TEST_CASE("grad_scaler: bad version 2 records throw state_error and change nothing",
          "[loss_scale][deepspeed][state]") {
  gradclip::grad_scaler victim(ds_options(4096.0, 2.0, 9, 4, true, 0.5, true));
  for (int i = 0; i < 13; ++i) victim.update(i == 4 || i == 5);
  const std::string before = saved(victim);
  const std::string good = record_v2(v2_fields{});
  {
    gradclip::grad_scaler probe;
    load(probe, good);  // the base record is valid
    CHECK(probe.hysteresis_left() == 2);
    CHECK(probe.steps() == 500);
  }

  SECTION("truncated and corrupted") {
    for (std::size_t n = 0; n < good.size(); ++n) {
      INFO("kept " << n << " of " << good.size() << " bytes");
      CHECK_THROWS_AS(load(victim, good.substr(0, n)), gradclip::state_error);
    }
    for (std::size_t i = 0; i < good.size(); ++i) {
      for (unsigned char flip : {0x01, 0x80}) {
        std::string bad = good;
        bad[i] = static_cast<char>(static_cast<unsigned char>(bad[i]) ^ flip);
        INFO("byte " << i << " ^ " << int(flip));
        CHECK_THROWS_AS(load(victim, bad), gradclip::state_error);
      }
    }
  }
  SECTION("versions: 3 is unknown; a version 2 payload labelled 1 and the reverse do not parse") {
    CHECK_THROWS_AS(load(victim, record_v2(v2_fields{}, 3)), gradclip::state_error);
    CHECK_THROWS_AS(load(victim, record_v2(v2_fields{}, 1)), gradclip::state_error);
    CHECK_THROWS_AS(load(victim, record_v2(v2_fields{}, 0)), gradclip::state_error);
    std::string v1 = record_v1(65536.0, 2.0, 0.5, 2000, 1024.0, 7);
    const std::size_t version_at = 12 + std::string("grad_scaler").size();
    v1[version_at] = '\x02';
    std::string rewrapped = v1.substr(0, v1.size() - 8);
    const std::uint64_t h = gradclip::detail::fnv1a(rewrapped);
    for (int k = 0; k < 8; ++k) rewrapped.push_back(static_cast<char>((h >> (8 * k)) & 0xff));
    CHECK_THROWS_AS(load(victim, rewrapped), gradclip::state_error);
  }
  SECTION("a boolean that is not 0 or 1") {
    std::string bad = good;
    const std::size_t payload = 14 * 8 + 1;                // 14 fields of 8 bytes and the boolean
    const std::size_t at = good.size() - 8 - payload + 5 * 8;  // the boolean, after 5 fields
    REQUIRE(bad[at] == '\0');
    bad[at] = '\x02';
    std::string body = bad.substr(0, bad.size() - 8);
    const std::uint64_t h = gradclip::detail::fnv1a(body);
    for (int k = 0; k < 8; ++k) body.push_back(static_cast<char>((h >> (8 * k)) & 0xff));
    CHECK_THROWS_AS(load(victim, body), gradclip::state_error);
  }
  SECTION("inconsistent fields") {
    std::vector<v2_fields> bad(20);
    bad[0].hysteresis = 0;
    bad[1].hysteresis = std::uint64_t{1} << 40;
    bad[2].min_scale = -1.0;
    bad[3].min_scale = qnan;
    bad[4].min_scale = 1e6;  // above init_scale
    bad[5].policy = 2;
    bad[6].rule = 2;
    bad[7].scale = 0.5;  // below min_scale
    bad[8].left = 0;
    bad[9].left = 4;  // above hysteresis
    bad[10].skipped = 501;  // more than the steps
    bad[11].consecutive = 41;  // more than the skipped steps
    bad[12].consecutive = 2;  // after an overflow, the tracker is 0
    bad[13].consecutive_hysteresis = true;  // then left must be hysteresis (no overflow in the run)
    bad[14].consecutive_hysteresis = true;
    bad[14].tracker = 0;
    bad[14].consecutive = 2;  // then left must be 1
    bad[15].tracker = 1000;  // not below the interval
    bad[16].interval = 0;
    bad[17].min_scale = 1e-50;  // positive, 0 as a float
    bad[18].scale = 0.1;  // not a float
    bad[19].growth = 1.0;
    for (std::size_t i = 0; i < bad.size(); ++i) {
      INFO("case " << i);
      CHECK_THROWS_AS(load(victim, record_v2(bad[i])), gradclip::state_error);
    }
    // Their consistent neighbours load.
    v2_fields ok = bad[14];
    ok.left = 1;
    gradclip::grad_scaler probe;
    CHECK_NOTHROW(load(probe, record_v2(ok)));
    ok = bad[13];
    ok.left = 3;
    CHECK_NOTHROW(load(probe, record_v2(ok)));
  }
  CHECK(saved(victim) == before);
}
