// The strong guarantee: every public function and every stateful clipper either
// completes or throws with the gradients and the clipper exactly as they were
// (their bytes, and the clipper's save() bytes). One test per function and
// exception: std::invalid_argument for every bad argument, nonfinite_error under
// nonfinite::error, nonfinite_streak_error, state_error for every corrupted record
// (every truncation, every flipped bit, another clipper's record, bad version,
// trailing payload). Also the rows of docs/bad_inputs.md that are about what a
// call does with a bad input (empty groups, zero-length buffers, aliasing, ...).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <list>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <gradclip/adaptive/agc.hpp>
#include <gradclip/adaptive/clip_units.hpp>
#include <gradclip/adaptive/rms.hpp>
#include <gradclip/gradclip.hpp>
#include <gradclip/loss_scale.hpp>

#include "catch.hpp"
#include "fuzz/stateful.hpp"

namespace {

constexpr double inf = std::numeric_limits<double>::infinity();
constexpr double qnan = std::numeric_limits<double>::quiet_NaN();

// Gradients of every element type and form: a tuple mixing them, and one vector
// of Maps over an arena.
struct grads {
  std::vector<float> a{0.5f, -2.0f, 3.0f, 0.25f, 1.0f};
  Eigen::MatrixXd b = (Eigen::MatrixXd(3, 2) << 1, -2, 3, 4, -5, 6).finished();
  std::vector<Eigen::half> c{Eigen::half(1.5f), Eigen::half(-0.5f), Eigen::half(8.0f)};
  std::vector<Eigen::bfloat16> d{Eigen::bfloat16(2.0f), Eigen::bfloat16(-4.0f)};

  auto group() { return std::tie(a, b, c, d); }

  std::string bytes() const {
    std::string s;
    auto add = [&s](const void* p, std::size_t n) { s.append(static_cast<const char*>(p), n); };
    add(a.data(), a.size() * sizeof(float));
    add(b.data(), static_cast<std::size_t>(b.size()) * sizeof(double));
    add(c.data(), c.size() * 2);
    add(d.data(), d.size() * 2);
    return s;
  }
  void poison(double v) { b(1, 1) = v; }  // one non-finite element, in buffer 1
};

// Calls f, which must throw E; the gradients' and the clipper's bytes must be as before.
template <class E, class F>
void expect_throw_unchanged(grads& g, const std::function<std::string()>& state, F&& f, const char* what) {
  INFO(what);
  const std::string data_before = g.bytes();
  const std::string state_before = state();
  bool threw = false;
  try {
    f();
  } catch (const E&) {
    threw = true;
  }
  CHECK(threw);
  CHECK(g.bytes() == data_before);
  CHECK(state() == state_before);
}

std::string no_state() { return ""; }

template <class E, class F>
void expect_throw_unchanged(grads& g, F&& f, const char* what) {
  expect_throw_unchanged<E>(g, no_state, std::forward<F>(f), what);
}

}  // namespace

// ---- the core API -------------------------------------------------------------

TEST_CASE("norms throw std::invalid_argument for a bad norm_type and read only", "[strong][norm]") {
  grads g;
  auto grp = g.group();
  for (double p : {0.0, -1.0, -0.0, qnan, -inf}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::global_norm(grp, p); }, "global_norm");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::norm(g.a, p); }, "norm");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::partial_norm(grp, p); }, "partial_norm");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::combine_partials({}, {}, p); }, "combine_partials");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::norm_from_partial({}, p); }, "norm_from_partial");
  }
}

TEST_CASE("norm clipping throws std::invalid_argument for every bad argument, writing nothing", "[strong][clip]") {
  grads g;
  auto grp = g.group();
  using gradclip::clip_options;
  const auto prop = gradclip::nonfinite::propagate;
  const std::vector<std::pair<double, clip_options>> bad = {
      {-1.0, {}},       {qnan, {}},        {-inf, {}},           {1.0, {0.0, 1e-6, prop}}, {1.0, {-2.0, 1e-6, prop}},
      {1.0, {qnan, 1e-6, prop}}, {1.0, {2.0, -1e-6, prop}}, {1.0, {2.0, qnan, prop}}, {1.0, {2.0, inf, prop}},
      {1.0, {2.0, 1e-6, static_cast<gradclip::nonfinite>(7)}}};  // not a policy
  for (const auto& entry : bad) {
    const double max_norm = entry.first;  // (no structured binding: lambdas capture these)
    const clip_options o = entry.second;
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_by_global_norm(grp, max_norm, o); },
                                                  "clip_by_global_norm");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_by_norm(g.a, max_norm, o); }, "clip_by_norm");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_with_norm(grp, max_norm, 100.0, o); },
                                                  "clip_with_norm");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_coefficient(grp, max_norm, o); },
                                                  "clip_coefficient");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_each_by_norm(grp, max_norm, o); },
                                                  "clip_each_by_norm");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::norm_clipper(max_norm, o); }, "norm_clipper");
  }
  // clip_with_norm: a negative total norm (-0 is a zero norm, NaN a non-finite one).
  for (double total : {-1.0, -inf, -1e-300}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_with_norm(grp, 1.0, total); },
                                                  "clip_with_norm, negative total_norm");
  }
  // clip_each_by_norm: a wrong number of limits, a bad one among good ones.
  expect_throw_unchanged<std::invalid_argument>(
      g, [&] { gradclip::clip_each_by_norm(grp, std::vector<double>{1.0, 1.0, 1.0}); }, "3 limits for 4 buffers");
  expect_throw_unchanged<std::invalid_argument>(
      g, [&] { gradclip::clip_each_by_norm(grp, std::vector<double>{1, 1, 1, 1, 1}); }, "5 limits for 4 buffers");
  expect_throw_unchanged<std::invalid_argument>(
      g, [&] { gradclip::clip_each_by_norm(grp, std::list<double>{0.1, 0.1, 0.1, -1.0}); }, "a bad last limit");
  expect_throw_unchanged<std::invalid_argument>(
      g, [&] { gradclip::clip_each_by_norm(grp, std::vector<double>{0.1, qnan, 0.1, 0.1}); }, "a NaN limit");
}

TEST_CASE("norm clipping under nonfinite::error throws nonfinite_error, writing nothing", "[strong][clip][nonfinite]") {
  const gradclip::clip_options error{2.0, 1e-6, gradclip::nonfinite::error};
  for (double bad : {qnan, inf, -inf}) {
    grads g;
    g.poison(bad);
    auto grp = g.group();
    expect_throw_unchanged<gradclip::nonfinite_error>(g, [&] { gradclip::clip_by_global_norm(grp, 0.1, error); },
                                                      "clip_by_global_norm");
    expect_throw_unchanged<gradclip::nonfinite_error>(g, [&] { gradclip::clip_by_norm(g.b, 0.1, error); },
                                                      "clip_by_norm");
    expect_throw_unchanged<gradclip::nonfinite_error>(g, [&] { gradclip::clip_coefficient(grp, 0.1, error); },
                                                      "clip_coefficient");
    expect_throw_unchanged<gradclip::nonfinite_error>(g, [&] { gradclip::clip_each_by_norm(grp, 0.1, error); },
                                                      "clip_each_by_norm (buffer 0 is before the bad one)");
    expect_throw_unchanged<gradclip::nonfinite_error>(g, [&] { gradclip::norm_clipper(0.1, error)(grp); },
                                                      "norm_clipper");
  }
  grads g;
  auto grp = g.group();
  for (double total : {qnan, inf}) {
    expect_throw_unchanged<gradclip::nonfinite_error>(g, [&] { gradclip::clip_with_norm(grp, 0.1, total, error); },
                                                      "clip_with_norm with a non-finite total");
  }
}

TEST_CASE("value clipping throws std::invalid_argument for bad bounds, writing nothing", "[strong][value]") {
  grads g;
  auto grp = g.group();
  for (auto [lo, hi] : std::vector<std::pair<double, double>>{{1.0, -1.0}, {qnan, 1.0}, {-1.0, qnan}, {inf, -inf}}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&, lo = lo, hi = hi] { gradclip::clip_by_value(grp, lo, hi); },
                                                  "clip_by_value(lo, hi)");
    expect_throw_unchanged<std::invalid_argument>(g, [&, lo = lo, hi = hi] { gradclip::value_clipper(lo, hi); },
                                                  "value_clipper(lo, hi)");
  }
  for (double c : {-1.0, qnan, -inf, -1e-300}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_by_value(grp, c); }, "clip_by_value(c)");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::value_clipper{c}; }, "value_clipper(c)");
  }
}

// ---- loss scaling -----------------------------------------------------------------

TEST_CASE("unscale_and_clip throws std::invalid_argument for bad arguments, writing nothing", "[strong][loss_scale]") {
  grads g;
  auto grp = g.group();
  for (double s : {0.0, -1.0, qnan, inf, 0x1p-127}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::unscale_and_clip(grp, s, 1.0); }, "loss_scale");
  }
  for (double m : {-1.0, qnan}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::unscale_and_clip(grp, 2.0, m); }, "max_norm");
  }
  expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::unscale_and_clip(grp, 2.0, 1.0, {0.0, 1e-6}); },
                                                "norm_type");
  expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::unscale_and_clip(grp, 2.0, 1.0, {2.0, -1.0}); },
                                                "eps");
  // A non-finite gradient is not an error: found_inf, nothing written.
  g.poison(qnan);
  const std::string before = g.bytes();
  const auto r = gradclip::unscale_and_clip(grp, 1024.0, 1.0);
  CHECK(r.found_inf);
  CHECK(g.bytes() == before);
}

// ---- stateless adaptive clippers ----------------------------------------------------

TEST_CASE("AGC throws before writing: bad arguments, mismatched groups, nonfinite::error", "[strong][agc]") {
  grads g, w;
  auto grp = g.group();
  auto params = w.group();
  for (double clipping : {-0.1, qnan}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::adaptive_grad_clip(params, grp, clipping); },
                                                  "clipping");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::agc{clipping}; }, "agc(clipping)");
  }
  for (double eps : {-1.0, qnan, inf}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::adaptive_grad_clip(params, grp, 0.01, eps); },
                                                  "eps");
  }
  auto fewer = std::tie(w.a, w.b, w.c);
  expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::adaptive_grad_clip(fewer, grp, 0.01); },
                                                "3 parameter buffers for 4");
  Eigen::MatrixXd other(2, 3);
  other.setOnes();
  auto reshaped = std::tie(w.a, other, w.c, w.d);
  expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::adaptive_grad_clip(reshaped, grp, 0.01); },
                                                "a 2x3 parameter for a 3x2 gradient");
  gradclip::agc_options masked;
  masked.mask = {true, false};
  expect_throw_unchanged<std::invalid_argument>(
      g, [&] { gradclip::adaptive_grad_clip(params, grp, 0.01, 1e-3, masked); }, "a mask of 2 for 4 buffers");
  gradclip::agc_options bad_axis;
  bad_axis.units = static_cast<gradclip::axis>(7);
  expect_throw_unchanged<std::invalid_argument>(
      g, [&] { gradclip::adaptive_grad_clip(params, grp, 0.01, 1e-3, bad_axis); }, "an axis out of range");
  gradclip::agc_options error;
  error.on_nonfinite = gradclip::nonfinite::error;
  g.poison(inf);
  expect_throw_unchanged<gradclip::nonfinite_error>(
      g, [&] { gradclip::adaptive_grad_clip(params, grp, 1e-6, 1e-3, error); }, "a non-finite gradient");
  grads g2;
  auto grp2 = g2.group();
  w.poison(qnan);
  expect_throw_unchanged<gradclip::nonfinite_error>(
      g2, [&] { gradclip::adaptive_grad_clip(params, grp2, 1e-6, 1e-3, error); }, "a NaN weight");
}

TEST_CASE("clip_units throws before writing: bad arguments, a bad sum, nonfinite::error", "[strong][units]") {
  grads g;
  for (double m : {-1.0, qnan}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_units_by_norm(g.b, m); }, "max_norm");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::unit_norm_clipper{m}; }, "unit_norm_clipper");
  }
  expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_units_by_norm(g.b, 1.0, {gradclip::axis::rows, 0.0}); },
                                                "norm_type");
  expect_throw_unchanged<std::invalid_argument>(
      g, [&] { gradclip::clip_units_by_norm(g.b, 1.0, {gradclip::axis::rows, 2.0, -1.0}); }, "eps");
  expect_throw_unchanged<std::invalid_argument>(
      g, [&] { gradclip::clip_units_by_norm(g.b, 1.0, {static_cast<gradclip::axis>(3)}); }, "axis");
  Eigen::VectorXf wrong(3), matrix_sum(4);
  wrong.setZero();
  Eigen::MatrixXf square(2, 2);
  square.setZero();
  expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_units_and_accumulate(g.b, 0.1, wrong); },
                                                "a sum of 3 for rows of 2");
  expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_units_and_accumulate(g.b, 0.1, square); },
                                                "a matrix sum");
  g.poison(qnan);
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(2);
  const Eigen::VectorXd sum_before = sum;
  expect_throw_unchanged<gradclip::nonfinite_error>(
      g,
      [&] {
        gradclip::clip_units_and_accumulate(g.b, 0.1, sum, {gradclip::axis::rows, 2.0, 1e-6, gradclip::nonfinite::error});
      },
      "a non-finite row");
  CHECK(sum == sum_before);
}

TEST_CASE("clip_by_block_rms throws before writing", "[strong][rms]") {
  grads g;
  auto grp = g.group();
  for (double t : {0.0, -1.0, qnan, -inf}) {
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::clip_by_block_rms(grp, t); }, "threshold");
    expect_throw_unchanged<std::invalid_argument>(g, [&] { gradclip::block_rms_clipper{t}; }, "block_rms_clipper");
  }
  g.poison(-inf);
  expect_throw_unchanged<gradclip::nonfinite_error>(
      g, [&] { gradclip::clip_by_block_rms(grp, 1e-3, {gradclip::nonfinite::error}); }, "a non-finite block");
}

// ---- stateful clippers: every exception of a step leaves the clipper as it was -----

TEST_CASE("stateful clippers: a throwing step changes neither the gradients nor the clipper", "[strong][stateful]") {
  const gradclip::nonfinite error = gradclip::nonfinite::error;
  auto warm = [](auto& clipper, int steps) {
    for (int k = 0; k < steps; ++k) {
      grads h;
      for (float& x : h.a) x *= static_cast<float>(1 + k % 3);
      clipper(h.group());
    }
  };
  {
    gradclip::auto_clip_options o;
    o.on_nonfinite = error;
    for (auto window : {gradclip::auto_clip_options::unbounded, std::size_t{3}}) {
      for (bool streaming : {false, true}) {
        if (streaming && window != gradclip::auto_clip_options::unbounded) continue;
        o.window = window;
        o.streaming = streaming;
        gradclip::auto_clip clip(10.0, o);
        warm(clip, 8);
        auto state = [&] { return fz::saved(clip); };
        grads g;
        auto grp = g.group();
        expect_throw_unchanged<std::invalid_argument>(g, state, [&] { clip(grp, -1.0); }, "auto_clip: negative norm");
        g.poison(qnan);
        expect_throw_unchanged<gradclip::nonfinite_error>(g, state, [&] { clip(grp); }, "auto_clip: NaN gradient");
        expect_throw_unchanged<gradclip::nonfinite_error>(g, state, [&] { clip(grp, inf); }, "auto_clip: inf norm");
      }
    }
  }
  {
    gradclip::zclip_options o;
    o.on_nonfinite = error;
    o.warmup_steps = 3;
    for (int steps : {1, 10}) {  // in the warm-up and after it
      gradclip::zclip clip(o);
      warm(clip, steps);
      auto state = [&] { return fz::saved(clip); };
      grads g;
      auto grp = g.group();
      expect_throw_unchanged<std::invalid_argument>(g, state, [&] { clip.with_norm(grp, -2.0); }, "zclip: negative norm");
      g.poison(inf);
      expect_throw_unchanged<gradclip::nonfinite_error>(g, state, [&] { clip(grp); }, "zclip: inf gradient");
      expect_throw_unchanged<gradclip::nonfinite_error>(g, state, [&] { clip.with_norm(grp, qnan); }, "zclip: NaN norm");
    }
  }
  {
    gradclip::adagc_options o;
    o.on_nonfinite = error;
    o.warmup_steps = 3;
    for (int steps : {1, 10}) {
      gradclip::adagc clip(o);
      warm(clip, steps);
      auto state = [&] { return fz::saved(clip); };
      grads g;
      auto fewer = std::tie(g.a, g.b);
      expect_throw_unchanged<std::invalid_argument>(g, state, [&] { clip(fewer); }, "adagc: 2 buffers for 4");
      g.poison(qnan);
      auto grp = g.group();
      expect_throw_unchanged<gradclip::nonfinite_error>(g, state, [&] { clip(grp); }, "adagc: NaN gradient");
    }
  }
  {
    gradclip::nonfinite_guard guard(2);
    grads g;
    g.poison(qnan);
    auto grp = g.group();
    guard(grp);
    guard(grp);  // two skipped in a row
    auto state = [&] { return fz::saved(guard); };
    expect_throw_unchanged<gradclip::nonfinite_streak_error>(g, state, [&] { guard(grp); }, "guard: third in a row");
    expect_throw_unchanged<gradclip::nonfinite_streak_error>(g, state, [&] { guard(qnan); }, "guard: a NaN norm");
    grads ok;
    auto okg = ok.group();
    expect_throw_unchanged<gradclip::nonfinite_error>(
        ok, state,
        [&] { guard(okg, [](auto& x) { return gradclip::clip_with_norm(x, 1.0, qnan, {2.0, 0.0, gradclip::nonfinite::error}); }); },
        "guard: the clipper throws, nothing recorded");
    CHECK_THROWS_AS(gradclip::nonfinite_guard(-1), std::invalid_argument);
  }
  {
    gradclip::grad_scaler scaler;
    scaler.update(true);
    auto state = [&] { return fz::saved(scaler); };
    grads g;
    auto grp = g.group();
    expect_throw_unchanged<std::invalid_argument>(g, state, [&] { scaler.unscale_and_clip(grp, -1.0); },
                                                  "grad_scaler: max_norm");
    for (auto bad : {gradclip::grad_scaler_options{0.0}, gradclip::grad_scaler_options{65536.0, 1.0},
                     gradclip::grad_scaler_options{65536.0, 2.0, 1.0}, gradclip::grad_scaler_options{65536.0, 2.0, 0.5, 0},
                     gradclip::grad_scaler_options{1e39}}) {
      CHECK_THROWS_AS(gradclip::grad_scaler(bad), std::invalid_argument);
    }
  }
  {
    // DeepSpeed's error at the minimum scale: the scaler is unchanged.
    gradclip::grad_scaler_options o = gradclip::grad_scaler_options::deepspeed();
    o.init_scale = 2.0;
    gradclip::grad_scaler scaler(o);
    scaler.update(true);  // absorbed by the hysteresis
    scaler.update(true);  // 2 -> 1, the minimum
    auto state = [&] { return fz::saved(scaler); };
    grads g;
    expect_throw_unchanged<gradclip::loss_scale_error>(g, state, [&] { scaler.update(true); },
                                                       "grad_scaler: an overflow at min_scale");
    gradclip::grad_scaler_options h;
    h.hysteresis = 0;
    CHECK_THROWS_AS(gradclip::grad_scaler(h), std::invalid_argument);
    h.hysteresis = 1;
    h.min_scale = -1.0;
    CHECK_THROWS_AS(gradclip::grad_scaler(h), std::invalid_argument);
  }
  {
    gradclip::norm_stats stats(4);
    for (double x : {1.0, 2.0, qnan, 3.0}) stats.record(x, x > 1.5);
    auto state = [&] { return fz::saved(stats); };
    grads g;
    for (double q : {-0.1, 1.1, qnan}) {
      expect_throw_unchanged<std::invalid_argument>(g, state, [&] { (void)stats.quantile(q); }, "norm_stats: q");
    }
    CHECK_THROWS_AS(gradclip::norm_stats(0), std::invalid_argument);
  }
}

TEST_CASE("stateful clippers reject bad options with std::invalid_argument", "[strong][stateful]") {
  CHECK_THROWS_AS(gradclip::auto_clip(-1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::auto_clip(100.5), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::auto_clip(qnan), std::invalid_argument);
  gradclip::auto_clip_options ao;
  ao.window = 0;
  CHECK_THROWS_AS(gradclip::auto_clip(10.0, ao), std::invalid_argument);
  ao.window = 5;
  ao.streaming = true;
  CHECK_THROWS_AS(gradclip::auto_clip(10.0, ao), std::invalid_argument);
  auto z = [](auto edit) {
    gradclip::zclip_options o;
    edit(o);
    return o;
  };
  CHECK_THROWS_AS(gradclip::zclip(z([](auto& o) { o.alpha = 1.0; })), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::zclip(z([](auto& o) { o.z_thresh = 0.0; })), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::zclip(z([](auto& o) { o.warmup_steps = -1; })), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::zclip(z([](auto& o) { o.clip_factor = inf; })), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::zclip(z([](auto& o) { o.max_grad_norm = -1.0; })), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::zclip(z([](auto& o) { o.mode = static_cast<gradclip::zclip_mode>(9); })),
                  std::invalid_argument);
  auto a = [](auto edit) {
    gradclip::adagc_options o;
    edit(o);
    return o;
  };
  CHECK_THROWS_AS(gradclip::adagc(a([](auto& o) { o.lambda_rel = 0.0; })), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::adagc(a([](auto& o) { o.beta = 1.0; })), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::adagc(a([](auto& o) { o.warmup_steps = -5; })), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::adagc(a([](auto& o) { o.on_nonfinite = static_cast<gradclip::nonfinite>(5); })),
                  std::invalid_argument);
}

// ---- load(): every corruption is a state_error with the clipper unchanged -----------

namespace {

template <class C>
C stepped() {
  C c = fz::stateful<C>::make();
  for (int k = 0; k < 9; ++k) {
    std::vector<float> g{0.5f * static_cast<float>(k + 1), -2.0f, 3.0f};
    if (k == 6) g[1] = std::numeric_limits<float>::infinity();
    try {
      fz::stateful<C>::step(c, g, gradclip::norm(g));
    } catch (const std::exception&) {
    }
  }
  return c;
}

template <class C>
void expect_load_fails(C& c, const std::string& bytes, const std::string& what) {
  INFO(what);
  const std::string before = fz::saved(c);
  std::istringstream in(bytes);
  CHECK_THROWS_AS(c.load(in), gradclip::state_error);
  CHECK(fz::saved(c) == before);
}

}  // namespace

TEST_CASE("load() of a corrupted record throws state_error and changes nothing, for every stateful clipper",
          "[strong][state]") {
  // Another clipper's valid record, for the wrong-kind case.
  const std::string foreign = fz::saved(stepped<gradclip::nonfinite_guard>());
  fz::for_each_stateful([&](auto* tag) {
    using C = std::remove_pointer_t<decltype(tag)>;
    const std::string good = fz::saved(stepped<C>());
    C c = stepped<C>();
    // A round trip works.
    {
      C d = fz::stateful<C>::make();
      std::istringstream in(good);
      d.load(in);
      CHECK(fz::saved(d) == good);
    }
    C victim = fz::stateful<C>::make();  // fresh, and after use
    for (C* target : {&c, &victim}) {
      expect_load_fails(*target, "", "empty stream");
      for (std::size_t n = 1; n < good.size(); ++n) {
        expect_load_fails(*target, good.substr(0, n), "truncated to " + std::to_string(n) + " bytes");
      }
      for (std::size_t i = 0; i < good.size(); ++i) {
        for (int bit : {0, 7}) {
          std::string bad = good;
          bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
          expect_load_fails(*target, bad, "bit " + std::to_string(bit) + " of byte " + std::to_string(i) + " flipped");
        }
      }
      if (foreign != good) expect_load_fails(*target, foreign, "another clipper's record");
      // A well-formed record with an unknown version, or a payload with trailing data.
      std::string versioned = good;
      const std::size_t version_at = 12 + static_cast<unsigned char>(good[8]);
      versioned[version_at] = static_cast<char>(versioned[version_at] + 1);
      std::string rewrapped = versioned.substr(0, versioned.size() - 8);
      fz::put_le(rewrapped, fz::fnv1a(rewrapped), 8);
      expect_load_fails(*target, rewrapped, "unknown state version");
      expect_load_fails(*target, fz::wrap_payload<C>(fz::payload_of(good) + std::string(1, '\0')), "trailing payload");
      expect_load_fails(*target, fz::wrap_payload<C>(fz::payload_of(good).substr(1)), "payload one byte short");
    }
  });
}

// ---- bugs the fuzz targets found, fixed: regression tests ---------------------------

TEST_CASE("fixed: zclip: a state reached through the API saves and loads", "[strong][state][regression]") {
  // The variance EMA squared (x - mean): for norms above ~1e154 it overflowed to inf,
  // zclip stopped detecting spikes for good, and load() rejected the saved inf. The
  // standard deviation is kept now (the variance itself, ~1e398, has no double).
  gradclip::zclip_options o;
  o.warmup_steps = 1;
  gradclip::zclip clip(o);
  std::vector<double> big{1e200}, small{1.0};
  clip(big);
  clip(small);
  CHECK(std::isfinite(clip.stddev()));
  CHECK(clip.stddev() == Approx(std::sqrt(0.03) * 0.97e200).epsilon(1e-12));
  const std::string saved = fz::saved(clip);
  gradclip::zclip other;
  std::istringstream in(saved);
  CHECK_NOTHROW(other.load(in));
}

TEST_CASE("zclip loads a version 1 record (which stored the variance)", "[strong][state]") {
  gradclip::zclip_options o;
  o.warmup_steps = 2;
  gradclip::zclip clip(o);
  std::vector<double> a{3.0}, b{5.0}, c{4.5};
  clip(a);
  clip(b);
  clip(c);
  REQUIRE(clip.warmed_up());
  // The version 1 payload: the same fields, the variance where version 2 keeps the
  // standard deviation (offset 90: six doubles and the mode, a bool, norm_type,
  // policy, step, a bool, mean).
  std::string payload = fz::payload_of(fz::saved(clip));
  const double variance = clip.stddev() * clip.stddev();
  std::memcpy(&payload[90], &variance, 8);
  std::string record = fz::wrap_payload<gradclip::zclip>(payload);
  const std::size_t version_at = 12 + std::string("zclip").size();
  REQUIRE(static_cast<unsigned char>(record[version_at]) == 2);
  record[version_at] = 1;
  record.resize(record.size() - 8);  // a new checksum for the changed header
  fz::put_le(record, fz::fnv1a(record), 8);
  gradclip::zclip loaded;
  std::istringstream in(record);
  REQUIRE_NOTHROW(loaded.load(in));
  CHECK(loaded.mean() == clip.mean());
  CHECK(loaded.stddev() == Approx(clip.stddev()).epsilon(1e-15));
  CHECK(loaded.step() == clip.step());
  // A version 1 record with a negative variance is still refused.
  const double negative = -1.0;
  std::memcpy(&payload[90], &negative, 8);
  std::string bad = fz::wrap_payload<gradclip::zclip>(payload);
  bad[version_at] = 1;
  bad.resize(bad.size() - 8);
  fz::put_le(bad, fz::fnv1a(bad), 8);
  std::istringstream bad_in(bad);
  CHECK_THROWS_AS(loaded.load(bad_in), gradclip::state_error);
  CHECK(loaded.stddev() == Approx(clip.stddev()).epsilon(1e-15));
}

TEST_CASE("fixed: norm_stats: load rejects inconsistent statistics", "[strong][state][regression]") {
  // load() checks the counters and m2 >= 0 but not the statistics themselves: a
  // well-formed record (checksum right) with a NaN mean, or with a non-zero mean and
  // no finite norm recorded, loads. The next record() then makes m2 NaN or negative
  // (Welford's update from a mean of 1e158 loses the norm) and the state no longer
  // loads. load() should require mean = m2 = 0, min = +inf, max = -inf when no finite
  // norm was recorded, else finite mean/min/max with min <= max, and finite norms in
  // the window.
  auto corrupted = [](std::size_t count, std::size_t field, double value) {
    gradclip::norm_stats s(4);
    for (std::size_t k = 0; k < count; ++k) s.record(1.0 + static_cast<double>(k), false);
    std::string payload = fz::payload_of(fz::saved(s));
    std::memcpy(&payload[field * 8], &value, 8);  // window, count, finite, nonfinite, clipped, mean, m2, min, max
    return fz::wrap_payload<gradclip::norm_stats>(payload);
  };
  const std::pair<std::string, std::string> cases[] = {
      {"NaN mean", corrupted(3, 5, qnan)},
      {"inf max", corrupted(3, 8, inf)},
      {"min above max", corrupted(3, 7, 100.0)},
      {"mean 1e158 with no finite norm", corrupted(0, 5, 1e158)},
  };
  for (const auto& [what, record] : cases) {
    INFO(what);
    gradclip::norm_stats t(4);
    std::istringstream in(record);
    CHECK_THROWS_AS(t.load(in), gradclip::state_error);
  }
  // What the mean of 1e158 leads to once loaded.
  gradclip::norm_stats t(4);
  std::istringstream in(corrupted(0, 5, 1e158));
  try {
    t.load(in);
  } catch (const gradclip::state_error&) {
    return;  // fixed
  }
  t.record(3.0, false);
  CHECK(t.variance() >= 0);
}

TEST_CASE("fixed: clip_each_by_norm rejects a bad limit for an empty group", "[strong][each][regression]") {
  // One limit for all is checked once per buffer: with no buffer, never.
  std::vector<std::vector<float>> none;
  CHECK_THROWS_AS(gradclip::clip_each_by_norm(none, -1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::clip_each_by_norm(none, qnan), std::invalid_argument);
}

// ---- docs/bad_inputs.md: what a call does with each bad input ------------------------

TEST_CASE("bad inputs: empty groups and zero-length buffers", "[bad_inputs]") {
  std::vector<std::vector<float>> none;
  CHECK(gradclip::global_norm(none) == 0.0);
  CHECK_FALSE(gradclip::clip_by_global_norm(none, 1.0).clipped);
  CHECK(gradclip::clip_each_by_norm(none, 1.0).empty());
  CHECK_NOTHROW(gradclip::clip_by_value(none, 1.0));
  std::vector<std::vector<float>> zeros(3);  // three empty buffers
  CHECK(gradclip::global_norm(zeros, 3.0) == 0.0);
  const auto r = gradclip::clip_by_global_norm(zeros, 0.0, {2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK_FALSE(r.clipped);  // 0 / (0 + 0): nothing to do
  CHECK(r.scale == 1.0);
  // A zero-length buffer_view may have a null pointer.
  gradclip::buffer_view<float> null_view{nullptr, 0};
  CHECK(gradclip::norm(null_view) == 0.0);
  CHECK_FALSE(gradclip::clip_by_norm(null_view, 1.0).clipped);
  gradclip::clip_by_value(null_view, -1.0, 1.0);
  // Empty group for the adaptive clippers.
  gradclip::adagc adagc;
  CHECK(adagc(none).buffers.empty());
  CHECK(gradclip::clip_by_block_rms(none, 1.0).empty());
  const auto rms = gradclip::clip_by_block_rms(zeros, 1.0);
  REQUIRE(rms.size() == 3);
  CHECK(rms[0].rms == 0.0);
  CHECK_FALSE(rms[0].clip.clipped);
}

TEST_CASE("bad inputs: aliasing buffers of one group count and scale the overlap twice", "[bad_inputs][aliasing]") {
  // Two buffers of a group viewing the same memory are not detected: the norm counts
  // the shared elements once per buffer, and clipping scales them once per buffer.
  std::vector<float> arena{3.0f, 4.0f, 0.0f, 0.0f};
  std::vector<gradclip::buffer_view<float>> twice{{arena.data(), 2}, {arena.data(), 2}};
  CHECK(gradclip::global_norm(twice) == Approx(std::sqrt(50.0)));  // not 5
  const auto r = gradclip::clip_by_global_norm(twice, 1.0, {2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK(r.total_norm == Approx(std::sqrt(50.0)));
  CHECK(r.scale == Approx(1.0 / std::sqrt(50.0)));
  // Scaled by the coefficient twice: x * c^2 = x / 50.
  CHECK(arena[0] == Approx(3.0f / 50.0f).epsilon(1e-6));
  CHECK(arena[1] == Approx(4.0f / 50.0f).epsilon(1e-6));
  CHECK(gradclip::norm(gradclip::buffer_view<float>{arena.data(), 2}) == Approx(0.1).epsilon(1e-6));  // not 1
  // Partial overlap: only the shared element is scaled twice.
  std::vector<float> b{1.0f, 1.0f, 1.0f};
  std::vector<gradclip::buffer_view<float>> overlap{{b.data(), 2}, {b.data() + 1, 2}};
  const auto r2 = gradclip::clip_by_global_norm(overlap, 1.0, {2.0, 0.0, gradclip::nonfinite::propagate});
  CHECK(r2.total_norm == Approx(2.0));  // sqrt(4 elements), b[1] counted twice
  CHECK(b[0] == Approx(0.5f));
  CHECK(b[1] == Approx(0.25f));
  CHECK(b[2] == Approx(0.5f));
  // Value clipping is idempotent, so aliasing is harmless there.
  std::vector<float> v{5.0f, -5.0f};
  std::vector<gradclip::buffer_view<float>> same{{v.data(), 2}, {v.data(), 2}};
  gradclip::clip_by_value(same, 1.0);
  CHECK(v[0] == 1.0f);
  CHECK(v[1] == -1.0f);
}

TEST_CASE("bad inputs: a finite double group whose norm overflows is treated as non-finite", "[bad_inputs]") {
  // ||(1.7e308, 1.7e308)|| = 2.4e308 > DBL_MAX: the norm is inf, so propagate zeroes
  // the gradients (as PyTorch does), and error throws with tensor_index() == npos.
  std::vector<double> x{1.7e308, 1.7e308};
  const std::vector<double> copy = x;
  try {
    gradclip::clip_by_norm(x, 1.0, {2.0, 1e-6, gradclip::nonfinite::error});
    FAIL("no exception");
  } catch (const gradclip::nonfinite_error& e) {
    CHECK(e.tensor_index() == gradclip::nonfinite_error::npos);
  }
  CHECK(x == copy);
  const auto r = gradclip::clip_by_norm(x, 1.0);
  CHECK(std::isinf(r.total_norm));
  CHECK(x[0] == 0.0);
}

TEST_CASE("bad inputs: adagc fixes its buffer count on the first call, an empty group included", "[bad_inputs]") {
  gradclip::adagc clip;
  std::vector<std::vector<float>> none;
  clip(none);  // now tracks 0 buffers
  CHECK(clip.sized());
  CHECK(clip.buffer_count() == 0);
  std::vector<std::vector<float>> one{{1.0f, 2.0f}};
  const std::string before = fz::saved(clip);
  CHECK_THROWS_AS(clip(one), std::invalid_argument);
  CHECK(fz::saved(clip) == before);
}

TEST_CASE("bad inputs: extreme norm types", "[bad_inputs]") {
  std::vector<double> x{1.0, 2.0};
  // p -> 0: the norm grows without bound (2^(1/p) * geometric mean): inf in double.
  CHECK(std::isinf(gradclip::norm(x, 1e-300)));
  // Small p loses accuracy as 1/p (|x|^p rounds toward 1): still within 1e-10 at 1e-3.
  const double p = 1e-3;
  const long double exact = std::pow(1.0L + std::pow(2.0L, static_cast<long double>(p)), 1.0L / p);
  CHECK(std::fabs((gradclip::norm(x, p) - static_cast<double>(exact)) / static_cast<double>(exact)) < 1e-10);
  // p = +inf is max |x|; -inf, 0, NaN are rejected (see the [strong] tests).
  CHECK(gradclip::norm(x, inf) == 2.0);
}

TEST_CASE("bad inputs: max_norm = inf never clips a finite norm; an infinite norm gives NaN", "[bad_inputs]") {
  std::vector<float> x{3e38f, 3e38f};  // finite float data, norm 4.2e38 (finite in double)
  const std::vector<float> copy = x;
  CHECK_FALSE(gradclip::clip_by_norm(x, inf).clipped);
  CHECK(x == copy);
  std::vector<float> y{1.0f, std::numeric_limits<float>::infinity()};
  const auto r = gradclip::clip_by_norm(y, inf);  // inf / (inf + eps) = NaN, as PyTorch
  CHECK(r.clipped);
  CHECK(std::isnan(r.scale));
  CHECK(std::isnan(y[0]));
}

TEST_CASE("bad inputs: value bounds with no value of the element type between them", "[bad_inputs]") {
  // [0.1, 0.1] holds no float: every element becomes the float nearest 0.1, one
  // rounding step outside the bounds at most.
  std::vector<float> x{-5.0f, 0.0f, 5.0f, std::numeric_limits<float>::quiet_NaN()};
  gradclip::clip_by_value(x, 0.1, 0.1);
  CHECK(x[0] == 0.1f);
  CHECK(x[1] == 0.1f);
  CHECK(x[2] == 0.1f);
  CHECK(std::isnan(x[3]));
  // Infinite bounds: nothing changes, infinities included.
  std::vector<double> y{-inf, 1.0, inf};
  const std::vector<double> copy = y;
  gradclip::clip_by_value(y, -inf, inf);
  gradclip::clip_by_value(y, inf);
  CHECK(y == copy);
}
