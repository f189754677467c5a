// Mixed precision: the fused unscale + clip against an independent long-double
// reference (fp16, bf16, float, double; found-inf cases write nothing), and
// grad_scaler replayed step by step against PyTorch GradScaler's recorded scales
// (tests/reference/gradscaler_reference.txt), its options and its state record.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gradclip/gradclip.hpp>
#include <gradclip/loss_scale.hpp>

#include "catch.hpp"
#include "reference.hpp"

namespace {

template <class T>
using group_t = std::vector<std::vector<T>>;

// The stored (scaled) gradients: loss_scale * g rounded to T, g of magnitude ~`magnitude`.
template <class T>
group_t<T> scaled_group(std::initializer_list<std::size_t> sizes, std::uint64_t seed, double loss_scale,
                        double magnitude = 1e-3) {
  group_t<T> g;
  for (std::size_t n : sizes) {
    std::vector<T> b = ref::random_values<T>(n, seed++, magnitude);
    for (T& x : b) x = ref::from_double<T>(static_cast<double>(ref::value(x)) * loss_scale);
    g.push_back(std::move(b));
  }
  return g;
}

template <class T>
std::vector<long double> flatten(const group_t<T>& g) {
  std::vector<long double> v;
  for (const auto& b : g)
    for (const T& x : b) v.push_back(ref::value(x));
  return v;
}

template <class T>
bool same_bits(const group_t<T>& a, const group_t<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return false;
    if (!a[i].empty() && std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(T)) != 0) return false;
  }
  return true;
}

// |got - want| in ulps of T at want (subnormal spacing below T's normal range).
template <class T>
double ulp_distance(T got, long double want) {
  const long double g = ref::value(got);
  if (g == want) return 0;
  int min_exp, digits;
  if constexpr (std::is_same_v<T, Eigen::half>) {
    min_exp = -14, digits = 11;
  } else if constexpr (std::is_same_v<T, Eigen::bfloat16>) {
    min_exp = -126, digits = 8;
  } else {
    min_exp = std::numeric_limits<T>::min_exponent - 1, digits = std::numeric_limits<T>::digits;
  }
  const int e = want == 0 ? min_exp : std::max(std::ilogb(static_cast<double>(want)), min_exp);
  return static_cast<double>(std::fabs(g - want) / std::ldexp(1.0L, e - (digits - 1)));
}

}  // namespace

TEMPLATE_TEST_CASE("unscale_and_clip: the norm of g, then x * coefficient / loss_scale, one rounding",
                   "[loss_scale]", Eigen::half, Eigen::bfloat16, float, double) {
  using T = TestType;
  for (double loss_scale : {65536.0, 1024.0, 3.0, 1.0, 0.25}) {
    for (double p : {1.0, 2.0, 3.0, ref::inf}) {
      for (double fraction : {0.5, 1e-3, 2.0, ref::inf}) {
        auto g = scaled_group<T>({0, 1, 17, 300, 4097}, 100, loss_scale);
        const auto before = flatten(g);
        const long double true_norm = ref::norm(before, p) / static_cast<long double>(loss_scale);
        const double max_norm = fraction == ref::inf ? ref::inf : static_cast<double>(true_norm) * fraction;
        INFO("loss_scale = " << loss_scale << ", p = " << p << ", max_norm = " << max_norm);
        const auto r = gradclip::unscale_and_clip(g, loss_scale, max_norm, {p, 1e-6});
        CHECK_FALSE(r.found_inf);
        CHECK(ref::rel_err(r.total_norm, true_norm) <= ref::norm_bound<T>(p));
        long double coef = static_cast<long double>(max_norm) / (static_cast<long double>(r.total_norm) + 1e-6L);
        if (!(coef < 1)) coef = 1;
        CHECK(r.clipped == (coef < 1));
        CHECK(ref::rel_err(r.coefficient, coef) <= 1e-15);
        if (coef == 1 && loss_scale == 1.0) {
          CHECK(r.scale == 1.0);
          CHECK(flatten(g) == before);  // nothing written
          continue;
        }
        // The factor: the coefficient divided by the loss scale, two double roundings.
        CHECK(ref::rel_err(r.scale, coef / static_cast<long double>(loss_scale)) <= 1e-15);
        // Every element is x times that factor, rounded once to T (16-bit types go
        // through float: at most 2^-13 ulp more); float multiplies by the float-rounded
        // factor (PyTorch's arithmetic): 0.5 ulp + 2^-24 relative < 1.5 ulp.
        const auto after = flatten(g);
        double worst = 0;
        for (std::size_t i = 0; i < after.size(); ++i) {
          const long double exact = before[i] * static_cast<long double>(r.scale);
          worst = std::max(worst, ulp_distance(ref::from_double<T>(static_cast<double>(after[i])), exact));
        }
        CHECK(worst <= (std::is_same_v<T, float> ? 1.5 : 0.5 + 0x1p-12));
      }
    }
  }
}

TEMPLATE_TEST_CASE("unscale_and_clip: a NaN or an infinity is found in the norm pass and nothing is written",
                   "[loss_scale]", Eigen::half, Eigen::bfloat16, float, double) {
  using T = TestType;
  for (double p : {1.0, 2.0, 3.0, ref::inf}) {
    for (double bad : {ref::inf, -ref::inf, ref::nan}) {
      for (std::size_t where : {0, 3, 4096}) {
        auto g = scaled_group<T>({7, 0, 5000}, 200, 65536.0);
        (where < 7 ? g[0][where] : g[2][where]) = ref::from_double<T>(bad);
        const auto copy = g;
        INFO("p = " << p << ", bad = " << bad << ", at " << where);
        const auto r = gradclip::unscale_and_clip(g, 65536.0, 1.0, {p, 1e-6});
        CHECK(r.found_inf);
        CHECK((std::isnan(bad) ? std::isnan(r.total_norm) : r.total_norm == ref::inf));
        CHECK(r.coefficient == 1.0);
        CHECK(r.scale == 1.0);
        CHECK_FALSE(r.clipped);
        CHECK(same_bits(g, copy));
      }
    }
    // NaN wins over inf, as in the norm.
    auto g = scaled_group<T>({10, 10}, 300, 1024.0);
    g[0][1] = ref::from_double<T>(ref::inf);
    g[1][2] = ref::from_double<T>(ref::nan);
    const auto copy = g;
    const auto r = gradclip::unscale_and_clip(g, 1024.0, ref::inf, {p, 1e-6});
    CHECK(r.found_inf);
    CHECK(std::isnan(r.total_norm));
    CHECK(same_bits(g, copy));
  }
}

TEST_CASE("unscale_and_clip: fp16 values that overflow only before unscaling are found", "[loss_scale]") {
  // The classic fp16 case: 70000 * g does not fit, so backward produced inf.
  std::vector<Eigen::half> g{Eigen::half(1000.0f), Eigen::half(std::numeric_limits<float>::infinity())};
  const auto copy = g;
  const auto r = gradclip::unscale_and_clip(g, 65536.0, 1.0);
  CHECK(r.found_inf);
  CHECK(std::memcmp(g.data(), copy.data(), sizeof(Eigen::half) * g.size()) == 0);
  // The largest finite fp16 values are not an overflow: their squares fit in float.
  std::vector<Eigen::half> big(1000, Eigen::half(65504.0f));
  const auto r2 = gradclip::unscale_and_clip(big, 65536.0, ref::inf);
  CHECK_FALSE(r2.found_inf);
  CHECK(ref::rel_err(r2.total_norm, 65504.0L * std::sqrt(1000.0L) / 65536.0L) <= ref::norm_bound<Eigen::half>(2.0));
  CHECK(ref::value(big[0]) == 65504.0L / 65536.0L);
}

TEST_CASE("unscale_and_clip on a mixed-type group (tuple of half, bfloat16, float, double)", "[loss_scale]") {
  const double loss_scale = 8192.0;
  auto h = scaled_group<Eigen::half>({333}, 400, loss_scale)[0];
  auto b = scaled_group<Eigen::bfloat16>({1000}, 401, loss_scale)[0];
  auto f = scaled_group<float>({77}, 402, loss_scale)[0];
  auto d = scaled_group<double>({5}, 403, loss_scale)[0];
  std::vector<long double> all;
  for (auto x : h) all.push_back(ref::value(x));
  for (auto x : b) all.push_back(ref::value(x));
  for (auto x : f) all.push_back(ref::value(x));
  for (auto x : d) all.push_back(ref::value(x));
  const long double true_norm = ref::norm(all, 2.0) / loss_scale;
  const auto hb = h;
  const auto bb = b;
  const auto fb = f;
  const auto db = d;
  const auto r = gradclip::unscale_and_clip(std::tie(h, b, f, d), loss_scale, static_cast<double>(true_norm) / 4);
  CHECK(ref::rel_err(r.total_norm, true_norm) <= ref::norm_bound<float>(2.0));
  CHECK(r.clipped);
  CHECK(ref::rel_err(r.scale, static_cast<long double>(r.coefficient) / loss_scale) == 0);  // a power of two
  const long double factor = r.scale;
  for (std::size_t i = 0; i < h.size(); ++i) CHECK(ulp_distance(h[i], ref::value(hb[i]) * factor) <= 0.5 + 0x1p-12);
  for (std::size_t i = 0; i < b.size(); ++i) CHECK(ulp_distance(b[i], ref::value(bb[i]) * factor) <= 0.5 + 0x1p-12);
  for (std::size_t i = 0; i < f.size(); ++i) CHECK(ulp_distance(f[i], ref::value(fb[i]) * factor) <= 1.5);
  for (std::size_t i = 0; i < d.size(); ++i) CHECK(ulp_distance(d[i], ref::value(db[i]) * factor) <= 0.5);
}

TEMPLATE_TEST_CASE("unscale_and_clip with a power-of-two scale is bit for bit unscale-then-clip_by_global_norm",
                   "[loss_scale]", float, double) {
  using T = TestType;
  for (double p : {1.0, 2.0, ref::inf}) {
    for (double fraction : {0.3, 3.0}) {
      const double loss_scale = 0x1p20;
      auto scaled = scaled_group<T>({3, 1000, 20000}, 500, loss_scale);
      group_t<T> plain = scaled;
      for (auto& buf : plain)
        for (T& x : buf) x = static_cast<T>(x / static_cast<T>(loss_scale));  // exact
      const double max_norm = gradclip::global_norm(plain, p) * fraction;
      const auto r = gradclip::unscale_and_clip(scaled, loss_scale, max_norm, {p, 1e-6});
      const auto c = gradclip::clip_by_global_norm(plain, max_norm, {p, 1e-6, gradclip::nonfinite::propagate});
      INFO("p = " << p << ", fraction = " << fraction);
      CHECK(ref::same_bits(r.total_norm, c.total_norm));
      CHECK(ref::same_bits(r.coefficient, c.scale));
      CHECK(r.clipped == c.clipped);
      CHECK(same_bits(scaled, plain));
    }
  }
}

TEST_CASE("unscale_and_clip: bad arguments throw before anything is read or written", "[loss_scale]") {
  auto g = scaled_group<float>({10, 20}, 600, 1024.0);
  const auto copy = g;
  for (double s : {0.0, -1.0, ref::nan, ref::inf, 0x1p-127}) {
    INFO("loss_scale = " << s);
    CHECK_THROWS_AS(gradclip::unscale_and_clip(g, s, 1.0), std::invalid_argument);
  }
  auto smallest = copy;
  CHECK_NOTHROW(gradclip::unscale_and_clip(smallest, 0x1p-126, ref::inf));  // FLT_MIN is accepted
  CHECK_THROWS_AS(gradclip::unscale_and_clip(g, 1024.0, -1.0), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::unscale_and_clip(g, 1024.0, ref::nan), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::unscale_and_clip(g, 1024.0, 1.0, {0.0, 1e-6}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::unscale_and_clip(g, 1024.0, 1.0, {ref::nan, 1e-6}), std::invalid_argument);
  CHECK_THROWS_AS(gradclip::unscale_and_clip(g, 1024.0, 1.0, {2.0, -1.0}), std::invalid_argument);
  CHECK(same_bits(g, copy));
}

TEST_CASE("unscale_and_clip: max_norm = 0 zeroes, zero gradients stay zero", "[loss_scale]") {
  auto g = scaled_group<double>({10}, 700, 4.0);
  auto r = gradclip::unscale_and_clip(g, 4.0, 0.0);
  CHECK(r.clipped);
  CHECK(r.coefficient == 0.0);
  for (double x : g[0]) CHECK(x == 0.0);
  group_t<float> z{std::vector<float>(5, 0.0f)};
  r = gradclip::unscale_and_clip(z, 4.0, 1.0, {2.0, 0.0});
  CHECK_FALSE(r.found_inf);
  CHECK(r.total_norm == 0.0);
  CHECK_FALSE(r.clipped);
  for (float x : z[0]) CHECK(x == 0.0f);
}

// ---- grad_scaler ------------------------------------------------------------------

namespace {

struct scaler_step {
  double bad;  // 0, or the injected NaN / inf / -inf
  bool skipped;
  double scale_used, scale_after;
  int tracker_after;
};

struct scaler_config {
  std::string name;
  gradclip::grad_scaler_options options;
  std::vector<scaler_step> steps;
};

std::string reference_path() {
#if defined(GRADCLIP_GRADSCALER_REFERENCE)
  return GRADCLIP_GRADSCALER_REFERENCE;
#else
  std::string here = __FILE__;
  return here.substr(0, here.find_last_of("/\\") + 1) + "reference/gradscaler_reference.txt";
#endif
}

double number(const std::string& token) {
  if (token == "nan") return ref::nan;
  if (token == "inf") return ref::inf;
  if (token == "-inf") return -ref::inf;
  char* end = nullptr;
  const double v = std::strtod(token.c_str(), &end);
  REQUIRE(end == token.c_str() + token.size());
  return v;
}

std::vector<scaler_config> read_reference() {
  std::ifstream in(reference_path());
  INFO("reading " << reference_path());
  REQUIRE(in.good());
  std::vector<scaler_config> configs;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string tag, init, growth, backoff;
    std::size_t steps = 0;
    scaler_config c;
    words >> tag >> c.name >> init >> growth >> backoff >> c.options.growth_interval >> steps;
    REQUIRE(tag == "config");
    c.options.init_scale = number(init);
    c.options.growth_factor = number(growth);
    c.options.backoff_factor = number(backoff);
    for (std::size_t i = 0; i < steps; ++i) {
      REQUIRE(std::getline(in, line));
      std::istringstream f(line);
      std::string bad, used, after;
      int skipped = -1;
      scaler_step s{};
      f >> bad >> skipped >> used >> after >> s.tracker_after;
      REQUIRE(!f.fail());
      s.bad = number(bad);
      s.skipped = skipped == 1;
      s.scale_used = number(used);
      s.scale_after = number(after);
      c.steps.push_back(s);
    }
    REQUIRE(std::getline(in, line));
    REQUIRE(line == "end");
    configs.push_back(std::move(c));
  }
  return configs;
}

std::string saved(const gradclip::grad_scaler& s) {
  std::ostringstream out;
  s.save(out);
  return out.str();
}

void load(gradclip::grad_scaler& s, const std::string& bytes) {
  std::istringstream in(bytes);
  s.load(in);
}

}  // namespace

TEST_CASE("grad_scaler replays PyTorch GradScaler's scales step by step, bit for bit", "[loss_scale][grad_scaler]") {
  const auto configs = read_reference();
  REQUIRE(configs.size() == 6);
  std::size_t total_steps = 0, skipped = 0, growths = 0;
  for (const auto& c : configs) {
    INFO("config " << c.name);
    gradclip::grad_scaler scaler(c.options);
    std::mt19937_64 rng(42);
    for (std::size_t i = 0; i < c.steps.size(); ++i) {
      const scaler_step& s = c.steps[i];
      INFO("step " << i);
      REQUIRE(ref::same_bits(scaler.scale(), s.scale_used));
      // The gradients of this step: scale * g, with the recorded non-finite value.
      std::vector<double> grads(8);
      for (double& x : grads) x = (static_cast<double>(rng() >> 11) * 0x1p-52 - 1.0) * scaler.scale();
      if (s.bad != 0) grads[rng() % 8] = s.bad;
      bool found_inf;
      if (scaler.scale() >= 0x1p-126) {
        const auto before = grads;
        const auto r = scaler.unscale_and_clip(grads, ref::inf);
        found_inf = r.found_inf;
        if (found_inf) CHECK(std::memcmp(before.data(), grads.data(), sizeof(double) * 8) == 0);
        REQUIRE(ref::same_bits(scaler.scale(), s.scale_used));  // unscaling changes no state
      } else {
        // Backed off below FLT_MIN: gradclip refuses to unscale (PyTorch would unscale into inf/NaN).
        CHECK_THROWS_AS(scaler.unscale_and_clip(grads, ref::inf), std::invalid_argument);
        found_inf = s.bad != 0;
      }
      REQUIRE(found_inf == (s.bad != 0));
      CHECK(found_inf == s.skipped);
      scaler.update(found_inf);
      REQUIRE(ref::same_bits(scaler.scale(), s.scale_after));
      REQUIRE(scaler.growth_tracker() == s.tracker_after);
      growths += s.scale_after > s.scale_used;
      skipped += s.skipped;
      ++total_steps;
      // A saved and reloaded scaler carries on identically.
      if (i % 97 == 5) {
        gradclip::grad_scaler other;
        load(other, saved(scaler));
        CHECK(saved(other) == saved(scaler));
        scaler = other;
      }
    }
  }
  CHECK(total_steps > 3500);
  CHECK(skipped > 100);
  CHECK(growths > 100);
}

TEST_CASE("grad_scaler: PyTorch's defaults and option checks", "[loss_scale][grad_scaler]") {
  const gradclip::grad_scaler s;
  CHECK(s.scale() == 65536.0);
  CHECK(s.growth_tracker() == 0);
  CHECK(s.options().growth_factor == 2.0);
  CHECK(s.options().backoff_factor == 0.5);
  CHECK(s.options().growth_interval == 2000);
  // init_scale is rounded to float, as in GradScaler's float32 tensor.
  CHECK(gradclip::grad_scaler({0.1, 2.0, 0.5, 10}).scale() == static_cast<double>(0.1f));

  using o = gradclip::grad_scaler_options;
  const std::vector<o> bad{
      {0.0, 2.0, 0.5, 1},      {-1.0, 2.0, 0.5, 1},     {ref::nan, 2.0, 0.5, 1}, {ref::inf, 2.0, 0.5, 1},
      {1e39, 2.0, 0.5, 1},     {1e-50, 2.0, 0.5, 1},    {1.0, 1.0, 0.5, 1},      {1.0, 0.5, 0.5, 1},
      {1.0, ref::nan, 0.5, 1}, {1.0, ref::inf, 0.5, 1}, {1.0, 2.0, 1.0, 1},      {1.0, 2.0, 0.0, 1},
      {1.0, 2.0, -0.5, 1},     {1.0, 2.0, ref::nan, 1}, {1.0, 2.0, 0.5, 0},      {1.0, 2.0, 0.5, -3},
  };
  for (std::size_t i = 0; i < bad.size(); ++i) {
    INFO("case " << i);
    CHECK_THROWS_AS(gradclip::grad_scaler(bad[i]), std::invalid_argument);
  }
}

TEST_CASE("grad_scaler: the step with an inf is skipped, the next one runs at the backed-off scale",
          "[loss_scale][grad_scaler]") {
  gradclip::grad_scaler scaler({1024.0, 2.0, 0.5, 2});
  std::vector<float> g{1024.0f * 3.0f, 1024.0f * 4.0f};
  auto r = scaler.unscale_and_clip(g, 1.0);
  CHECK_FALSE(r.found_inf);
  CHECK(r.total_norm == 5.0);
  CHECK(g[0] == Approx(0.6f));
  scaler.update(r.found_inf);
  CHECK(scaler.growth_tracker() == 1);
  g = {1.0f, std::numeric_limits<float>::quiet_NaN()};
  r = scaler.unscale_and_clip(g, 1.0);
  CHECK(r.found_inf);
  CHECK(g[0] == 1.0f);
  scaler.update(r.found_inf);
  CHECK(scaler.scale() == 512.0);
  CHECK(scaler.growth_tracker() == 0);
  scaler.update(false);
  scaler.update(false);
  CHECK(scaler.scale() == 1024.0);
  CHECK(scaler.growth_tracker() == 0);
}

namespace {

struct scaler_fields {
  double init = 65536.0, growth = 2.0, backoff = 0.5;
  std::uint64_t interval = 2000;
  double scale = 1024.0;
  std::uint64_t tracker = 7;
};

std::string record(const scaler_fields& f, const char* kind = "grad_scaler", std::uint32_t version = 1) {
  gradclip::detail::state_writer w(kind, version);
  w.put_double(f.init);
  w.put_double(f.growth);
  w.put_double(f.backoff);
  w.put_u64(f.interval);
  w.put_double(f.scale);
  w.put_u64(f.tracker);
  std::ostringstream out;
  w.write(out);
  return out.str();
}

}  // namespace

TEST_CASE("grad_scaler: save and load restore the options, the scale and the tracker", "[loss_scale][grad_scaler]") {
  gradclip::grad_scaler a({1000.1, 1.1, 0.7, 5});
  for (int i = 0; i < 23; ++i) a.update(i % 7 == 3);
  gradclip::grad_scaler b;
  load(b, saved(a));
  CHECK(saved(a) == saved(b));
  CHECK(ref::same_bits(a.scale(), b.scale()));
  CHECK(a.growth_tracker() == b.growth_tracker());
  CHECK(b.options().growth_interval == 5);
  CHECK(b.options().growth_factor == 1.1);
  for (int i = 0; i < 50; ++i) {
    a.update(i % 11 == 0);
    b.update(i % 11 == 0);
    CHECK(ref::same_bits(a.scale(), b.scale()));
  }
  // A scale backed off to 0 is a state GradScaler reaches; it loads.
  load(b, record({1.0, 2.0, 0.5, 3, 0.0, 2}));
  CHECK(b.scale() == 0.0);
}

TEST_CASE("grad_scaler: bad state data throws state_error and changes nothing", "[loss_scale][grad_scaler]") {
  gradclip::grad_scaler victim({4096.0, 1.5, 0.25, 9});
  for (int i = 0; i < 13; ++i) victim.update(i == 4);
  const std::string before = saved(victim);
  const std::string good = record(scaler_fields{});

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
    CHECK_THROWS_AS(load(victim, record(scaler_fields{}, "norm_stats")), gradclip::state_error);
    CHECK_THROWS_AS(load(victim, std::string("not a state at all")), gradclip::state_error);
  }
  SECTION("wrong version") {
    // Version 2 has more fields (tests/test_deepspeed_scaler.cpp); 3 is unknown.
    CHECK_THROWS_AS(load(victim, record(scaler_fields{}, "grad_scaler", 2)), gradclip::state_error);
    CHECK_THROWS_AS(load(victim, record(scaler_fields{}, "grad_scaler", 3)), gradclip::state_error);
    CHECK_THROWS_AS(load(victim, record(scaler_fields{}, "grad_scaler", 0)), gradclip::state_error);
  }
  SECTION("inconsistent fields") {
    std::vector<scaler_fields> bad(12);
    bad[0].interval = 0;
    bad[1].interval = std::uint64_t{1} << 40;
    bad[2].tracker = 2000;  // not below the interval
    bad[3].growth = 1.0;
    bad[4].backoff = 1.0;
    bad[5].backoff = ref::nan;
    bad[6].init = 0.0;
    bad[7].scale = -1.0;
    bad[8].scale = ref::nan;
    bad[9].scale = ref::inf;
    bad[10].scale = 0.1;  // not a float
    bad[11].init = 1e40;
    for (std::size_t i = 0; i < bad.size(); ++i) {
      INFO("case " << i);
      CHECK_THROWS_AS(load(victim, record(bad[i])), gradclip::state_error);
    }
  }
  CHECK(saved(victim) == before);
  load(victim, good);  // the base record is valid
  CHECK(victim.scale() == 1024.0);
  CHECK(victim.growth_tracker() == 7);
}
