// gradclip against PyTorch 1.13: tests/reference/torch_reference.txt holds inputs
// and torch's outputs for clip_grad_norm_, clip_grad_value_ and clamp (see the
// README there). torch computes in the tensor's own dtype and overflows where
// gradclip does not, so each comparison says which tolerance applies and why.
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gradclip/gradclip.hpp>

#include "catch.hpp"
#include "reference.hpp"

#ifndef GRADCLIP_TORCH_REFERENCE
#error "GRADCLIP_TORCH_REFERENCE must name tests/reference/torch_reference.txt"
#endif

namespace {

struct torch_case {
  int id = 0;
  std::string op, dtype;
  double param1 = 0, param2 = 0;
  std::vector<std::vector<double>> in, out;
  double total_norm = 0;
};

double parse_number(const std::string& s) { return std::strtod(s.c_str(), nullptr); }

std::vector<double> parse_values(std::istringstream& line) {
  std::size_t n = 0;
  line >> n;
  std::vector<double> v(n);
  std::string tok;
  for (auto& x : v) {
    line >> tok;
    x = parse_number(tok);
  }
  return v;
}

std::vector<torch_case> load_cases() {
  std::ifstream file(GRADCLIP_TORCH_REFERENCE);
  REQUIRE(file.good());
  std::vector<torch_case> cases;
  std::string text;
  torch_case c;
  while (std::getline(file, text)) {
    if (text.empty() || text[0] == '#') continue;
    std::istringstream line(text);
    std::string tag;
    line >> tag;
    if (tag == "case") {
      c = torch_case{};
      std::string p1, p2;
      line >> c.id >> c.op >> c.dtype >> p1 >> p2;
      c.param1 = parse_number(p1);
      c.param2 = parse_number(p2);
    } else if (tag == "in") {
      c.in.push_back(parse_values(line));
    } else if (tag == "out") {
      c.out.push_back(parse_values(line));
    } else if (tag == "total_norm") {
      std::string t;
      line >> t;
      c.total_norm = parse_number(t);
    } else if (tag == "end") {
      cases.push_back(c);
    }
  }
  return cases;
}

const std::vector<torch_case>& cases() {
  static const std::vector<torch_case> all = load_cases();
  return all;
}

template <class T>
std::vector<std::vector<T>> to_group(const std::vector<std::vector<double>>& in) {
  std::vector<std::vector<T>> g;
  for (const auto& b : in) {
    std::vector<T> v;
    for (double x : b) v.push_back(ref::from_double<T>(x));
    g.push_back(v);
  }
  return g;
}

// Relative agreement of elements with torch's: torch's coefficient comes from its
// own dtype-precision norm (float32: ~1e-6 off; bfloat16 norms for p != 2 are
// accumulated in bfloat16 and can be far off, see the reference README).
template <class T>
double element_tolerance() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  if constexpr (std::is_same_v<T, float>) return 2e-5;
  return 1.6e-2;
}

template <class T>
void check_norm_case(const torch_case& c) {
  auto g = to_group<T>(c.in);
  std::vector<long double> flat;
  bool finite_inputs = true;
  for (const auto& b : c.in)
    for (double x : b) {
      flat.push_back(x);
      finite_inputs = finite_inputs && std::isfinite(x);
    }
  const double p = c.param1;
  const long double want = ref::norm(flat, p);
  const auto r = gradclip::clip_by_global_norm(g, c.param2, {p, 1e-6, gradclip::nonfinite::propagate});
  INFO("case " << c.id << " " << c.dtype << " p = " << p << " max_norm = " << c.param2 << " torch norm "
               << c.total_norm << " ours " << r.total_norm);

  // Our norm against the exact one, always.
  if (std::isnan(static_cast<double>(want))) {
    CHECK(std::isnan(r.total_norm));
    CHECK(std::isnan(c.total_norm));
  } else if (std::isinf(static_cast<double>(want))) {
    CHECK(r.total_norm == ref::inf);
    CHECK(c.total_norm == ref::inf);
  } else {
    CHECK(ref::rel_err(r.total_norm, want) <= ref::norm_bound<T>(p));
  }

  // Where torch's own norm overflowed or underflowed on finite input, it is wrong
  // and its outputs are not a reference (gradclip's norm above is checked instead).
  const bool torch_range_failure =
      finite_inputs && (!std::isfinite(c.total_norm) || (c.total_norm == 0.0 && want != 0.0L));
  const bool torch_low_precision = std::is_same_v<T, Eigen::bfloat16> && p != 2.0;
  if (torch_range_failure || torch_low_precision) return;
  if (std::isfinite(c.total_norm) && want != 0.0L) {
    CHECK(ref::rel_err(c.total_norm, want) <= element_tolerance<T>());
  }

  for (std::size_t b = 0; b < g.size(); ++b) {
    REQUIRE(g[b].size() == c.out[b].size());
    for (std::size_t i = 0; i < g[b].size(); ++i) {
      const double ours = static_cast<double>(ref::value(g[b][i]));
      const double theirs = c.out[b][i];
      INFO("buffer " << b << " element " << i << " ours " << ours << " torch " << theirs);
      if (std::isnan(theirs)) {
        CHECK(std::isnan(ours));
      } else if (theirs == 0.0 || ours == 0.0) {
        CHECK(std::fabs(ours - theirs) <= 1e-300 + std::fabs(static_cast<double>(c.in[b][i])) * 1e-6);
      } else {
        CHECK(std::fabs(ours - theirs) <= element_tolerance<T>() * std::fabs(theirs));
      }
    }
  }
}

template <class T>
void check_value_case(const torch_case& c) {
  auto g = to_group<T>(c.in);
  double lo, hi;
  if (c.op == "clip_grad_value") {
    lo = -c.param1;
    hi = c.param1;
  } else {
    lo = c.param1;
    hi = c.param2;
  }
  INFO("case " << c.id << " " << c.op << " " << c.dtype << " [" << lo << ", " << hi << "]");
  if (lo > hi) {  // torch answers hi; gradclip rejects the bounds
    CHECK_THROWS_AS(gradclip::clip_by_value(g, lo, hi), std::invalid_argument);
    return;
  }
  gradclip::clip_by_value(g, lo, hi);
  for (std::size_t b = 0; b < g.size(); ++b) {
    for (std::size_t i = 0; i < g[b].size(); ++i) {
      const double ours = static_cast<double>(ref::value(g[b][i]));
      const double theirs = c.out[b][i];
      INFO("element " << i << " in " << c.in[b][i] << " ours " << ours << " torch " << theirs);
      if (std::isnan(theirs)) {
        CHECK(std::isnan(ours));
        continue;
      }
      CHECK(ours >= lo);
      CHECK(ours <= hi);
      // Identical, except where torch rounded a bound to nearest and landed outside
      // [lo, hi]: gradclip takes the neighbouring value inside.
      if (theirs >= lo && theirs <= hi) {
        CHECK(ref::same_bits(ours, theirs));
      } else {
        CHECK(std::fabs(ours - theirs) <= std::fabs(theirs) * (std::is_same_v<T, float> ? 1.2e-7 : 8e-3));
      }
    }
  }
}

template <class Check>
int for_dtype(const torch_case& c, Check&& check) {
  if (c.dtype == "float32") return check(float{}), 1;
  if (c.dtype == "float64") return check(double{}), 1;
  if (c.dtype == "bfloat16") return check(Eigen::bfloat16{}), 1;
  if (c.dtype == "float16") return check(Eigen::half{}), 1;
  return 0;
}

}  // namespace

TEST_CASE("clip_grad_norm_ cases agree with PyTorch", "[torch]") {
  int n = 0;
  for (const auto& c : cases()) {
    if (c.op != "clip_grad_norm") continue;
    n += for_dtype(c, [&](auto tag) { check_norm_case<decltype(tag)>(c); });
  }
  CHECK(n > 200);
}

TEST_CASE("clip_grad_value_ and clamp cases agree with PyTorch", "[torch]") {
  int n = 0;
  for (const auto& c : cases()) {
    if (c.op != "clip_grad_value" && c.op != "clamp") continue;
    n += for_dtype(c, [&](auto tag) { check_value_case<decltype(tag)>(c); });
  }
  CHECK(n > 30);
}
