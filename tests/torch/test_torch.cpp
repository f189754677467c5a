// gradclip::torch against libtorch 1.13's torch::nn::utils::clip_grad_norm_ and clip_grad_value_,
// run in the same process on copies of the same parameters: random parameter lists (0..10000
// elements, 0-d to 3-d), p = 1, 2, 3, inf, float and double; half and bfloat16; error_if_nonfinite;
// non-overlapping and dense gradients that are not contiguous (channels_last, channels_last_3d,
// transposed, permuted; from a real conv model too), read in place as one run; the overloads
// (vector, braced list, Tensor, at::TensorList, named_parameters()); the fallback to libtorch
// (overlapping, gapped, sparse and complex gradients, arguments gradclip rejects); and the places
// where gradclip deliberately differs (range-safe norms, no write when the coefficient is 1); the
// gradient_arena. A long-double reference says which side is right where they differ.
#include <algorithm>
#include <gradclip/torch.hpp>  // first: the header must be self-contained

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "reference.hpp"

namespace {

using at::Tensor;
using params_t = std::vector<Tensor>;

constexpr double inf = std::numeric_limits<double>::infinity();

// A parameter of the given shape whose gradient holds values of mixed sign and magnitude.
Tensor make_param(at::IntArrayRef shape, at::ScalarType dtype, std::mt19937_64& rng, double magnitude = 1.0) {
  auto p = at::zeros(shape, at::TensorOptions().dtype(dtype)).requires_grad_(true);
  auto g = at::empty(shape, at::TensorOptions().dtype(at::kDouble));
  auto* d = g.data_ptr<double>();
  for (std::int64_t i = 0; i < g.numel(); ++i) {
    const double u = static_cast<double>(rng() >> 11) * 0x1p-53;
    const double v = std::ldexp(u + 0.5, static_cast<int>(rng() % 9) - 4) * magnitude;
    d[i] = (rng() & 1) ? v : -v;
  }
  p.mutable_grad() = g.to(dtype);
  return p;
}

// count parameters of random shapes (0..10000 elements; 0-d, 1-d, 2-d, 3-d), some without a gradient.
params_t random_params(std::size_t count, at::ScalarType dtype, std::uint64_t seed, bool allow_empty = true) {
  std::mt19937_64 rng(seed);
  params_t params;
  for (std::size_t i = 0; i < count; ++i) {
    const auto r = rng() % 100;
    std::int64_t n = static_cast<std::int64_t>(r < 10 ? rng() % 10 : (r < 80 ? rng() % 1000 : rng() % 10001));
    if (!allow_empty && n == 0) n = 1;
    switch (rng() % 4) {
      case 0:
        params.push_back(n == 1 ? make_param({}, dtype, rng) : make_param({n}, dtype, rng));
        break;
      case 1:
        params.push_back(make_param({n, 1}, dtype, rng));
        break;
      case 2:
        params.push_back(n % 2 == 0 ? make_param({2, n / 2}, dtype, rng) : make_param({n}, dtype, rng));
        break;
      default:
        params.push_back(n % 6 == 0 ? make_param({2, 3, n / 6}, dtype, rng) : make_param({1, n}, dtype, rng));
        break;
    }
    if (rng() % 10 == 0) {  // a parameter without a gradient
      auto q = at::ones({3}, at::TensorOptions().dtype(dtype)).requires_grad_(true);
      params.push_back(q);
    }
  }
  return params;
}

// The gradient of the k-th parameter that has one.
Tensor with_grad(const params_t& params, std::size_t k) {
  for (const auto& p : params) {
    if (p.grad().defined() && k-- == 0) return p.grad();
  }
  FAIL("fewer parameters with gradients than asked for");
  return {};
}

// Deep copy: new parameters with copies of their gradients, strides kept (clone() would make a
// strided gradient contiguous).
params_t copy_params(const params_t& params) {
  params_t out;
  for (const auto& p : params) {
    auto q = p.detach().clone().requires_grad_(true);
    if (p.grad().defined()) {
      const auto& g = p.grad();
      auto c = at::empty_strided(g.sizes(), g.strides(), g.options());
      c.copy_(g);
      q.mutable_grad() = c;
    }
    out.push_back(q);
  }
  return out;
}

// Every gradient element as long double, in parameter order.
std::vector<long double> grad_values(const params_t& params) {
  std::vector<long double> v;
  for (const auto& p : params) {
    if (!p.grad().defined()) continue;
    const auto g = p.grad().to(at::kDouble).contiguous();
    const double* d = g.data_ptr<double>();
    for (std::int64_t i = 0; i < g.numel(); ++i) v.push_back(d[i]);
  }
  return v;
}

// Bitwise equality of two gradients' contents (same dtype, any strides).
bool same_grad(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const auto x = a.contiguous(), y = b.contiguous();
  return x.numel() == 0 || std::memcmp(x.data_ptr(), y.data_ptr(), static_cast<std::size_t>(x.nbytes())) == 0;
}

bool same_grads(const params_t& a, const params_t& b) {
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same_grad(a[i].grad(), b[i].grad())) return false;
  return true;
}

// Largest |a - b| / (|b| + tiny) over all gradient elements; NaN positions must agree.
double worst_relative(const params_t& a, const params_t& b, bool* nan_mismatch = nullptr) {
  const auto x = grad_values(a), y = grad_values(b);
  REQUIRE(x.size() == y.size());
  double worst = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::isnan(x[i]) || std::isnan(y[i])) {
      if (std::isnan(x[i]) != std::isnan(y[i]) && nan_mismatch) *nan_mismatch = true;
      continue;
    }
    if (x[i] == y[i]) continue;
    worst = std::max(worst, static_cast<double>(std::fabs(x[i] - y[i]) / (std::fabs(y[i]) + 1e-300L)));
  }
  return worst;
}

// gradclip's bound on its norm of a dtype: double lanes for double (1e-13 with the
// other p), float lanes for the L1 and L2 norms of float, half and bfloat16
// (gradclip/options.hpp, the default accuracy the adapter uses).
double gradclip_bound(at::ScalarType dtype, double p) {
  return dtype == at::kDouble ? 1e-13 : std::max(1e-13, ref::norm_bound<float>(p));
}

}  // namespace

TEST_CASE("clip_grad_norm_ matches libtorch on random parameter lists", "[torch][norm]") {
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const bool is_float = dtype == at::kFloat;
    // libtorch sums float gradients in float (per-tensor norms, then the norm of the stacked norms):
    // measured differences reach 1.4e-6 relative (p = 1 and 3 over ~10^4 elements); double agrees
    // to ~2e-15. gradclip's own norm is checked against the long-double reference at its bound.
    const double norm_tol = is_float ? 3e-6 : 1e-12;
    // Gradients: the coefficient differs by the norm's difference plus libtorch's float rounding of
    // it (two steps), and each product is rounded once on each side.
    const double grad_tol = is_float ? norm_tol + 4 * 0x1p-24 : 1e-12;
    double worst_norm = 0, worst_grad = 0;
    for (std::uint64_t seed = 1; seed <= 12; ++seed) {
      for (double p : {1.0, 2.0, 3.0, inf}) {
        // libtorch 1.13 cannot take the inf norm of an empty tensor (checked below).
        const auto params = random_params(1 + seed % 7 * 3, dtype, seed * 31, p != inf);
        const long double exact = ref::norm(grad_values(params), p);
        for (double fraction : {0.25, 4.0}) {
          INFO("dtype = " << dtype << ", seed = " << seed << ", p = " << p << ", fraction = " << fraction);
          auto ours = copy_params(params);
          auto theirs = copy_params(params);
          const double max_norm = static_cast<double>(exact) * fraction;
          REQUIRE(gradclip::torch::uses_gradclip(ours));
          const double n_ours = gradclip::torch::clip_grad_norm_(ours, max_norm, p);
          const double n_theirs = torch::nn::utils::clip_grad_norm_(theirs, max_norm, p);
          CHECK(ref::rel_err(n_ours, exact) <= gradclip_bound(dtype, p));  // gradclip's bound, whatever the dtype
          const double norm_diff = ref::rel_err(n_ours, n_theirs);
          CHECK(norm_diff <= norm_tol);
          worst_norm = std::max(worst_norm, norm_diff);
          if (fraction > 1) {
            CHECK(same_grads(ours, theirs));  // libtorch multiplied by exactly 1, gradclip wrote nothing
            CHECK(same_grads(ours, params));
          } else {
            const double d = worst_relative(ours, theirs);
            CHECK(d <= grad_tol);
            worst_grad = std::max(worst_grad, d);
          }
        }
      }
    }
    WARN("dtype " << dtype << ": largest relative difference from libtorch: norm " << worst_norm << ", gradient "
                  << worst_grad);
  }
}

TEST_CASE("clip_grad_norm_: the overloads, parameters without gradients, empty lists", "[torch][norm]") {
  std::mt19937_64 rng(5);
  auto a = make_param({40}, at::kFloat, rng), b = make_param({3, 5}, at::kFloat, rng);
  auto no_grad = at::ones({7}).requires_grad_(true);
  const long double before = ref::norm(grad_values({a, b}), 2.0);
  const double n = gradclip::torch::clip_grad_norm_({a, no_grad, b}, 0.5);  // initializer_list overload
  CHECK(ref::rel_err(n, before) <= gradclip_bound(at::kFloat, 2.0));
  CHECK(ref::rel_err(static_cast<double>(ref::norm(grad_values({a, b}), 2.0)), 0.5) <= 1e-6);
  CHECK_FALSE(no_grad.grad().defined());
  // A single tensor, like libtorch's overload.
  auto c = make_param({100}, at::kDouble, rng);
  const double nc = static_cast<double>(ref::norm(grad_values({c}), 2.0));
  CHECK(ref::rel_err(gradclip::torch::clip_grad_norm_(c, 1.0), nc) <= 1e-14);
  CHECK(ref::rel_err(gradclip::torch::clip_grad_norm_(c, 1.0), 1.0) <= 1e-6);
  // Nothing to clip: 0, as libtorch returns, even with error_if_nonfinite.
  CHECK(gradclip::torch::clip_grad_norm_(params_t{}, 1.0) == 0.0);
  CHECK(gradclip::torch::clip_grad_norm_(params_t{no_grad}, 1.0, 2.0, true) == 0.0);
  CHECK(torch::nn::utils::clip_grad_norm_(params_t{no_grad}, 1.0, 2.0, true) == 0.0);
}

TEST_CASE("clip_grad_norm_: half and bfloat16 gradients", "[torch][norm][16bit]") {
  for (const auto dtype : {at::kHalf, at::kBFloat16}) {
    for (double p : {1.0, 2.0, 3.0, inf}) {
      INFO("dtype = " << dtype << ", p = " << p);
      const auto params = random_params(9, dtype, 77, p != inf);
      const long double exact = ref::norm(grad_values(params), p);
      const double max_norm = static_cast<double>(exact) / 3;
      auto ours = copy_params(params);
      const double n = gradclip::torch::clip_grad_norm_(ours, max_norm, p);
      CHECK(ref::rel_err(n, exact) <= gradclip_bound(dtype, p));
      // libtorch on float32 copies (exact: every half and bfloat16 value is a float): the same
      // norm to float accuracy, and gradients that round to ours within one ulp of the dtype.
      params_t as_float;
      for (const auto& q : params) {
        auto f = q.detach().to(at::kFloat).requires_grad_(true);
        if (q.grad().defined()) f.mutable_grad() = q.grad().to(at::kFloat);
        as_float.push_back(f);
      }
      const double nf = torch::nn::utils::clip_grad_norm_(as_float, max_norm, p);
      CHECK(ref::rel_err(n, nf) <= 1e-6);
      const double ulp = dtype == at::kHalf ? 0x1p-10 : 0x1p-7;  // relative spacing at the bottom of a binade
      const auto x = grad_values(ours);
      const auto y = grad_values(as_float);
      for (std::size_t i = 0; i < x.size(); ++i) {
        const long double tol = std::fabs(y[i]) * ulp + (dtype == at::kHalf ? 0x1p-24L : 0.0L);
        if (std::fabs(x[i] - y[i]) > tol) FAIL_CHECK("element " << i << ": " << double(x[i]) << " vs " << double(y[i]));
      }
    }
  }
  // libtorch 1.13 itself: half has no CPU clamp ("clamp_max_scalar_cpu" not implemented for 'Half');
  // bfloat16 works, accumulating p != 2 norms in bfloat16.
  auto h = random_params(3, at::kHalf, 78);
  bool torch_half_ok = true;
  try {
    torch::nn::utils::clip_grad_norm_(copy_params(h), 1e-3);
  } catch (const c10::Error&) {
    torch_half_ok = false;
  }
  WARN("libtorch " << (torch_half_ok ? "clips" : "cannot clip") << " half gradients on the CPU");
  CHECK_NOTHROW(gradclip::torch::clip_grad_norm_(h, 1e-3));
  auto b = random_params(5, at::kBFloat16, 79);
  auto b2 = copy_params(b);
  const long double exact = ref::norm(grad_values(b), 2.0);
  const double nb = torch::nn::utils::clip_grad_norm_(b2, 1e-2);
  const double ob = gradclip::torch::clip_grad_norm_(b, 1e-2);
  CHECK(ref::rel_err(ob, exact) <= gradclip_bound(at::kBFloat16, 2.0));
  CHECK(ref::rel_err(nb, exact) <= 0x1p-6);  // libtorch rounds each tensor's norm and the total to bfloat16
  CHECK(worst_relative(b, b2) <= 0x1p-6);     // its coefficient is rounded to bfloat16 too
}

TEST_CASE("clip_grad_norm_: a list mixing float, double, half and bfloat16", "[torch][norm]") {
  params_t params;
  std::mt19937_64 rng(11);
  for (const auto dtype : {at::kHalf, at::kDouble, at::kBFloat16, at::kFloat, at::kHalf, at::kFloat})
    params.push_back(make_param({static_cast<std::int64_t>(rng() % 3000 + 1)}, dtype, rng));
  for (double p : {1.0, 2.0, 3.0, inf}) {
    INFO("p = " << p);
    const long double exact = ref::norm(grad_values(params), p);
    auto ours = copy_params(params);
    REQUIRE(gradclip::torch::uses_gradclip(ours));
    const double max_norm = static_cast<double>(exact) / 5;
    const double n = gradclip::torch::clip_grad_norm_(ours, max_norm, p);
    CHECK(ref::rel_err(n, exact) <= gradclip_bound(at::kFloat, p));  // the mixed list: float lanes bound it
    // libtorch on double copies: the same norm, and gradients that are ours before rounding.
    params_t as_double;
    for (const auto& q : params) {
      auto d = q.detach().to(at::kDouble).requires_grad_(true);
      d.mutable_grad() = q.grad().to(at::kDouble);
      as_double.push_back(d);
    }
    CHECK(ref::rel_err(torch::nn::utils::clip_grad_norm_(as_double, max_norm, p), exact) <= 1e-13);
    for (std::size_t i = 0; i < ours.size(); ++i) {
      const auto rounded = as_double[i].grad().to(ours[i].grad().scalar_type());
      const auto diff = (ours[i].grad().to(at::kDouble) - rounded.to(at::kDouble)).abs().max().item<double>();
      // The element's rounding, plus the coefficient's error: the norm's, float lanes here.
      const double spacing =
          (ours[i].grad().scalar_type() == at::kDouble ? 1e-15 : 0x1p-8) + gradclip_bound(at::kFloat, p);
      CHECK(diff <= spacing * rounded.to(at::kDouble).abs().max().item<double>());
    }
  }
}

TEST_CASE("clip_grad_norm_: error_if_nonfinite throws libtorch's c10::Error and modifies nothing",
          "[torch][norm][nonfinite]") {
  for (double bad : {ref::inf, -ref::inf, ref::nan}) {
    for (double p : {1.0, 2.0, inf}) {
      INFO("bad = " << bad << ", p = " << p);
      auto params = random_params(4, at::kFloat, 21, false);
      with_grad(params, 1).view(-1)[0] = bad;
      auto ours = copy_params(params), theirs = copy_params(params);
      std::string our_msg, their_msg;
      try {
        gradclip::torch::clip_grad_norm_(ours, 1.0, p, true);
      } catch (const c10::Error& e) {
        our_msg = e.msg();
      }
      try {
        torch::nn::utils::clip_grad_norm_(theirs, 1.0, p, true);
      } catch (const c10::Error& e) {
        their_msg = e.msg();
      }
      CHECK_FALSE(our_msg.empty());
      CHECK(our_msg == their_msg);
      CHECK(same_grads(ours, params));
      CHECK(same_grads(theirs, params));
      // Without the check both propagate: NaN everywhere for NaN, zeros (inf * 0 = NaN) for inf.
      const double n_ours = gradclip::torch::clip_grad_norm_(ours, 1.0, p);
      const double n_theirs = torch::nn::utils::clip_grad_norm_(theirs, 1.0, p);
      CHECK(ref::same_bits(n_ours, std::isnan(bad) ? n_ours : ref::inf));
      CHECK(std::isnan(n_ours) == std::isnan(n_theirs));
      CHECK((std::isnan(n_ours) || n_ours == n_theirs));
      bool nan_mismatch = false;
      CHECK(worst_relative(ours, theirs, &nan_mismatch) == 0.0);
      CHECK_FALSE(nan_mismatch);
    }
  }
}

TEST_CASE("clip_grad_norm_ defers to libtorch for gradients gradclip does not read", "[torch][norm][fallback]") {
  std::mt19937_64 rng(3);
  auto base = random_params(3, at::kFloat, 31, false);
  SECTION("a gradient with gaps (a narrowed inner dimension)") {
    auto p = at::zeros({30, 40}).requires_grad_(true);
    p.mutable_grad() = make_param({30, 50}, at::kFloat, rng).grad().narrow(1, 0, 40);
    REQUIRE_FALSE(p.grad().is_non_overlapping_and_dense());
    base.push_back(p);
  }
  SECTION("a strided gradient (every other element)") {
    auto p = at::zeros({500}).requires_grad_(true);
    p.mutable_grad() = make_param({1000}, at::kFloat, rng).grad().slice(0, 0, 1000, 2);
    base.push_back(p);
  }
  SECTION("a complex gradient") {
    auto p = at::zeros({64}, at::TensorOptions().dtype(at::kComplexFloat)).requires_grad_(true);
    p.mutable_grad() = at::randn({64}, at::TensorOptions().dtype(at::kComplexFloat));
    base.push_back(p);
  }
  REQUIRE_FALSE(gradclip::torch::uses_gradclip(base));
  for (double p : {1.0, 2.0, inf}) {
    auto ours = copy_params(base), theirs = copy_params(base);
    REQUIRE_FALSE(gradclip::torch::uses_gradclip(ours));
    const double a = gradclip::torch::clip_grad_norm_(ours, 0.1, p);
    const double b = torch::nn::utils::clip_grad_norm_(theirs, 0.1, p);
    CHECK(ref::same_bits(a, b));
    CHECK(same_grads(ours, theirs));
  }
}

TEST_CASE("clip_grad_norm_: arguments gradclip rejects get libtorch's results", "[torch][norm][fallback]") {
  const auto params = random_params(3, at::kFloat, 41, false);
  for (double max_norm : {-1.0, ref::nan}) {
    auto ours = copy_params(params), theirs = copy_params(params);
    const double a = gradclip::torch::clip_grad_norm_(ours, max_norm);
    const double b = torch::nn::utils::clip_grad_norm_(theirs, max_norm);
    CHECK(ref::same_bits(a, b));
    CHECK(same_grads(ours, theirs));
  }
  // norm_type 0: libtorch 1.13 returns the number of gradients and clips by it.
  for (double norm_type : {0.0, -2.0}) {
    auto ours = copy_params(params), theirs = copy_params(params);
    const double a = gradclip::torch::clip_grad_norm_(ours, 1.0, norm_type);
    const double b = torch::nn::utils::clip_grad_norm_(theirs, 1.0, norm_type);
    CHECK(ref::same_bits(a, b));
    CHECK(same_grads(ours, theirs));
  }
}

TEST_CASE("clip_grad_norm_: gradclip's norm stays finite where libtorch's float norm overflows",
          "[torch][norm][range]") {
  std::mt19937_64 rng(9);
  auto p = make_param({1000}, at::kFloat, rng, 1e20);
  auto theirs = copy_params({p});
  const long double exact = ref::norm(grad_values({p}), 2.0);
  const double n = gradclip::torch::clip_grad_norm_(p, 1.0);
  CHECK(ref::rel_err(n, exact) <= 1e-13);
  CHECK(ref::rel_err(gradclip::global_norm(gradclip::buffer_view<float>(p.grad().data_ptr<float>(), 1000)), 1.0) <=
        1e-6);
  // libtorch: the sum of squares overflows float, the norm is inf and every gradient becomes 0.
  CHECK(torch::nn::utils::clip_grad_norm_(theirs, 1.0) == ref::inf);
  CHECK(theirs[0].grad().abs().max().item<float>() == 0.0f);
}

TEST_CASE("clip_grad_norm_: the clip bound holds with a coefficient below FLT_MIN and DBL_MIN",
          "[torch][norm][range]") {
  std::mt19937_64 rng(10);
  for (auto dtype : {at::kFloat, at::kDouble}) {
    const bool is_double = dtype == at::kDouble;
    auto p = make_param({500}, dtype, rng, is_double ? 1e300 : 1e35);
    const double max_norm = is_double ? 1e-20 : 1e-10;  // coefficient ~1e-322 / ~1e-46
    gradclip::torch::clip_grad_norm_(p, max_norm);
    const long double after = ref::norm(grad_values({p}), 2.0);
    // eps = 1e-6 is negligible against these norms: the norm lands on max_norm.
    CHECK(after <= static_cast<long double>(max_norm) * (1 + (is_double ? 1e-12 : 0x1p-22)));
    CHECK(after >= static_cast<long double>(max_norm) * (1 - 1e-6));
  }
}

TEST_CASE("clip_grad_norm_: the infinity norm skips empty gradients, where libtorch 1.13 raises",
          "[torch][norm]") {
  std::mt19937_64 rng(12);
  params_t params{make_param({0}, at::kFloat, rng), make_param({10}, at::kFloat, rng)};
  const double expected = params[1].grad().abs().max().item<double>();
  CHECK_THROWS_AS(torch::nn::utils::clip_grad_norm_(copy_params(params), 1.0, inf), c10::Error);
  CHECK(gradclip::torch::clip_grad_norm_(params, 1e-3, inf) == expected);
  CHECK(params[1].grad().abs().max().item<double>() == Approx(1e-3).epsilon(1e-6));
}

TEST_CASE("clip_grad_value_ matches libtorch bit for bit", "[torch][value]") {
  for (const auto dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    // (A bound beyond float's range makes libtorch throw for float gradients; gradclip clamps to
    // +-inf, i.e. leaves them as they are.)
    for (double clip_value : {0.0, 0.1, 0.5, 3.0, 1e30}) {
      INFO("dtype = " << dtype << ", clip_value = " << clip_value);
      auto params = random_params(6, dtype, 51);
      // Special values: NaN stays NaN, infinities go to the bounds, signed zeros as libtorch's.
      auto z = with_grad(params, 0).view(-1);
      z.narrow(0, 0, std::min<std::int64_t>(4, z.numel())).zero_();
      auto g = with_grad(params, 1).view(-1);
      if (g.numel() >= 4) {
        g[0] = ref::nan;
        g[1] = ref::inf;
        g[2] = -ref::inf;
        g[3] = -0.0;
      }
      auto ours = copy_params(params), theirs = copy_params(params);
      gradclip::torch::clip_grad_value_(ours, clip_value);
      torch::nn::utils::clip_grad_value_(theirs, clip_value);
      for (std::size_t i = 0; i < ours.size(); ++i) {
        if (!ours[i].grad().defined()) continue;
        // NaN payloads aside, every element is libtorch's bit for bit.
        const auto a = ours[i].grad().nan_to_num(0.5), b = theirs[i].grad().nan_to_num(0.5);
        CHECK(same_grad(a, b));
        CHECK(at::equal(ours[i].grad().isnan(), theirs[i].grad().isnan()));
      }
    }
  }
}

TEST_CASE("clip_grad_value_: half, fallbacks, overloads, negative clip values", "[torch][value]") {
  std::mt19937_64 rng(61);
  // half: libtorch 1.13 has no CPU clamp for it; gradclip clamps to the nearest half of the bound.
  auto h = make_param({1000}, at::kHalf, rng);
  const auto before = h.grad().to(at::kFloat);
  gradclip::torch::clip_grad_value_(h, 0.1);
  const float bound = static_cast<float>(at::Half(0.1f));
  CHECK(at::equal(h.grad().to(at::kFloat), before.clamp(-bound, bound)));

  // A gradient with gaps beside a float one: each clamped, libtorch's way for the one gradclip
  // does not read.
  auto t = at::zeros({20, 30}).requires_grad_(true);
  t.mutable_grad() = make_param({20, 60}, at::kFloat, rng).grad().slice(1, 0, 60, 2);
  REQUIRE_FALSE(gradclip::torch::uses_gradclip(t));
  auto f = make_param({77}, at::kFloat, rng);
  auto ours = copy_params({t, f}), theirs = copy_params({t, f});
  gradclip::torch::clip_grad_value_({ours[0], ours[1]}, 0.25);
  torch::nn::utils::clip_grad_value_({theirs[0], theirs[1]}, 0.25);
  CHECK(same_grads(ours, theirs));
  CHECK_FALSE(ours[0].grad().is_contiguous());

  // A bound beyond float's range: libtorch cannot convert it; gradclip clamps to +-inf.
  {
    auto a = copy_params({f});
    CHECK_THROWS_AS(torch::nn::utils::clip_grad_value_(copy_params({f}), 1e300), std::runtime_error);
    gradclip::torch::clip_grad_value_(a, 1e300);
    CHECK(same_grads(a, {f}));
  }

  // clip_value < 0: libtorch's clamp with lo > hi (every element becomes hi).
  for (double v : {-0.5, ref::nan}) {
    auto a = copy_params({f}), b = copy_params({f});
    gradclip::torch::clip_grad_value_(a, v);
    torch::nn::utils::clip_grad_value_(b, v);
    CHECK(at::equal(a[0].grad().isnan(), b[0].grad().isnan()));
    CHECK(same_grad(a[0].grad().nan_to_num(0.5), b[0].grad().nan_to_num(0.5)));
  }
}

// Non-overlapping and dense gradients that are not contiguous (channels_last, channels_last_3d,
// transposed, permuted): gradclip reads their numel() elements from data_ptr() as one run, in
// memory order, and scales them there.
namespace {

enum class dense_layout { channels_last, channels_last_3d, transposed, permuted };

// A parameter whose gradient has the given layout, its values as make_param's.
Tensor make_dense_param(dense_layout kind, at::ScalarType dtype, std::mt19937_64& rng) {
  const auto options = at::TensorOptions().dtype(dtype);
  Tensor p;
  switch (kind) {
    case dense_layout::channels_last:
      p = make_param({4, 6, 5, 3}, dtype, rng);
      p.mutable_grad() = p.grad().contiguous(at::MemoryFormat::ChannelsLast);
      break;
    case dense_layout::channels_last_3d:
      p = make_param({2, 5, 3, 4, 3}, dtype, rng);
      p.mutable_grad() = p.grad().contiguous(at::MemoryFormat::ChannelsLast3d);
      break;
    case dense_layout::transposed:
      p = at::zeros({53, 37}, options).requires_grad_(true);
      p.mutable_grad() = make_param({37, 53}, dtype, rng).grad().t();
      break;
    default:
      p = at::zeros({13, 7, 11}, options).requires_grad_(true);
      p.mutable_grad() = make_param({7, 11, 13}, dtype, rng).grad().permute({2, 0, 1});
      break;
  }
  REQUIRE(p.grad().is_non_overlapping_and_dense());
  REQUIRE_FALSE(p.grad().is_contiguous());
  return p;
}

// One parameter of each layout, a contiguous one and one without a gradient.
params_t dense_params(at::ScalarType dtype, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  params_t params;
  params.push_back(make_dense_param(dense_layout::channels_last, dtype, rng));
  params.push_back(make_param({static_cast<std::int64_t>(rng() % 2000 + 1)}, dtype, rng));
  params.push_back(make_dense_param(dense_layout::transposed, dtype, rng));
  params.push_back(at::ones({3}, at::TensorOptions().dtype(dtype)).requires_grad_(true));
  params.push_back(make_dense_param(dense_layout::channels_last_3d, dtype, rng));
  params.push_back(make_dense_param(dense_layout::permuted, dtype, rng));
  return params;
}

// A gradient's numel() elements from data_ptr(), in memory order: a contiguous 1-D copy of what
// gradclip reads.
Tensor storage_run(const Tensor& g) { return at::from_blob(g.data_ptr(), {g.numel()}, g.options()).clone(); }

// Parameters whose gradients are the storage runs of params' gradients.
params_t as_storage_runs(const params_t& params) {
  params_t out;
  for (const auto& p : params) {
    const auto& g = p.grad();
    const std::int64_t n = g.defined() ? g.numel() : 1;
    auto q = at::zeros({n}, at::TensorOptions().dtype(p.scalar_type())).requires_grad_(true);
    if (g.defined()) q.mutable_grad() = storage_run(g);
    out.push_back(q);
  }
  return out;
}

// Copies of params (strides kept) in a dtype, gradients included; copies also in their own dtype.
params_t converted(const params_t& params, at::ScalarType dtype) {
  params_t out;
  for (const auto& q : params) {
    auto c = q.detach().to(dtype, false, /*copy=*/true).requires_grad_(true);
    if (q.grad().defined()) {
      c.mutable_grad() = q.grad().to(dtype, false, /*copy=*/true);  // MemoryFormat::Preserve: the same strides
      REQUIRE(c.grad().strides() == q.grad().strides());
    }
    out.push_back(c);
  }
  return out;
}

// Relative spacing of a dtype at the bottom of a binade (16-bit types: the tolerance of one rounding).
double dtype_ulp(at::ScalarType dtype) {
  return dtype == at::kHalf ? 0x1p-10 : (dtype == at::kBFloat16 ? 0x1p-7 : 0.0);
}

struct worst_seen {
  double norm = 0, grad = 0;
};

// gradclip's clip_grad_norm_ on copies of params (gradients of one dtype, any layout gradclip
// reads) against libtorch's: the norm within 1e-5 relative of libtorch's and within gradclip's bound
// of the exact one; the gradients within 1e-5 relative of libtorch's (float, double) or one rounding
// of the dtype from libtorch's float result (half, bfloat16: libtorch 1.13 cannot clip half on the
// CPU and sums bfloat16 in bfloat16, so it runs on float copies); written in place (same memory, same
// strides), not at all when the coefficient is 1; and bit for bit gradclip's own result on the
// gradients' storage runs.
void check_dense_norm(const params_t& params, at::ScalarType dtype, double p, double fraction, worst_seen& worst) {
  const long double exact = ref::norm(grad_values(params), p);
  const double max_norm = static_cast<double>(exact) * fraction;
  auto ours = copy_params(params);
  REQUIRE(gradclip::torch::uses_gradclip(ours));
  std::vector<const void*> where;
  std::vector<std::vector<std::int64_t>> strides;
  for (const auto& q : ours) {
    if (!q.grad().defined()) continue;
    where.push_back(q.grad().data_ptr());
    strides.push_back(q.grad().strides().vec());
  }
  const double n = gradclip::torch::clip_grad_norm_(ours, max_norm, p);
  CHECK(ref::rel_err(n, exact) <= gradclip_bound(dtype, p));
  std::size_t k = 0;
  for (const auto& q : ours) {
    if (!q.grad().defined()) continue;
    CHECK(q.grad().data_ptr() == where[k]);
    CHECK(q.grad().strides().vec() == strides[k]);
    ++k;
  }

  const bool wide = dtype == at::kFloat || dtype == at::kDouble;
  auto theirs = wide ? copy_params(params) : converted(params, at::kFloat);
  const double n_theirs = torch::nn::utils::clip_grad_norm_(theirs, max_norm, p);
  const double norm_diff = ref::rel_err(n, n_theirs);
  CHECK(norm_diff <= 1e-5);
  worst.norm = std::max(worst.norm, norm_diff);
  if (fraction > 1) {
    CHECK(same_grads(ours, params));  // coefficient 1: nothing written
  } else {
    const double d = worst_relative(ours, wide ? theirs : converted(theirs, dtype));
    CHECK(d <= (wide ? 1e-5 : dtype_ulp(dtype)));
    worst.grad = std::max(worst.grad, d);
  }

  // What gradclip read: the storage runs give the same bits.
  auto runs = as_storage_runs(params);
  CHECK(ref::same_bits(gradclip::torch::clip_grad_norm_(runs, max_norm, p), n));
  for (std::size_t i = 0; i < ours.size(); ++i) {
    if (ours[i].grad().defined()) CHECK(same_grad(storage_run(ours[i].grad()), runs[i].grad()));
  }
}

// A small model whose weights are not contiguous: a Conv2d with a channels_last weight, a Conv3d
// with a channels_last_3d one, a Linear with a transposed one. Autograd's AccumulateGrad gives a
// non-overlapping and dense parameter's gradient the parameter's strides.
struct dense_net : ::torch::nn::Module {
  dense_net()
      : conv2(register_module("conv2", ::torch::nn::Conv2d(::torch::nn::Conv2dOptions(3, 4, 3).padding(1)))),
        conv3(register_module("conv3", ::torch::nn::Conv3d(::torch::nn::Conv3dOptions(2, 3, 3)))),
        fc(register_module("fc", ::torch::nn::Linear(4 * 5 * 5, 6))) {}
  ::torch::nn::Conv2d conv2;
  ::torch::nn::Conv3d conv3;
  ::torch::nn::Linear fc;
};

// The model in dtype after one backward pass on channels_last inputs.
std::shared_ptr<dense_net> trained_dense_net(at::ScalarType dtype) {
  at::manual_seed(1);
  auto net = std::make_shared<dense_net>();
  net->to(dtype);
  net->conv2->weight.set_data(net->conv2->weight.data().contiguous(at::MemoryFormat::ChannelsLast));
  net->conv3->weight.set_data(net->conv3->weight.data().contiguous(at::MemoryFormat::ChannelsLast3d));
  net->fc->weight.set_data(net->fc->weight.data().t().contiguous().t());
  const auto options = at::TensorOptions().dtype(dtype);
  const auto x2 = at::randn({2, 3, 5, 5}, options).contiguous(at::MemoryFormat::ChannelsLast);
  const auto x3 = at::randn({1, 2, 4, 4, 4}, options).contiguous(at::MemoryFormat::ChannelsLast3d);
  const auto y = net->fc->forward(net->conv2->forward(x2).flatten(1));
  const auto z = net->conv3->forward(x3);
  (y.pow(2).sum() + 10 * z.pow(2).sum()).backward();
  const auto& w2 = net->conv2->weight.grad();
  const auto& w3 = net->conv3->weight.grad();
  const auto& wf = net->fc->weight.grad();
  REQUIRE((w2.is_contiguous(at::MemoryFormat::ChannelsLast) && !w2.is_contiguous()));
  REQUIRE((w3.is_contiguous(at::MemoryFormat::ChannelsLast3d) && !w3.is_contiguous()));
  REQUIRE((wf.t().is_contiguous() && !wf.is_contiguous()));
  return net;
}

// The c10::Error message f throws ("" when it returns).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.msg().empty() ? std::string("(c10::Error)") : e.msg();
  }
  return {};
}

}  // namespace

TEST_CASE("clip_grad_norm_ on channels_last, transposed and permuted gradients, in place", "[torch][norm][dense]") {
  for (const auto dtype : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16}) {
    worst_seen worst;
    for (std::uint64_t seed = 1; seed <= 3; ++seed) {
      const auto params = dense_params(dtype, seed * 101);
      for (double p : {1.0, 2.0, 3.0, inf}) {
        for (double fraction : {0.25, 4.0}) {
          INFO("dtype = " << dtype << ", seed = " << seed << ", p = " << p << ", fraction = " << fraction);
          check_dense_norm(params, dtype, p, fraction, worst);
        }
      }
    }
    WARN("dense gradients, dtype " << dtype << ": largest relative difference from libtorch: norm " << worst.norm
                                   << ", gradient " << worst.grad);
  }
}

TEST_CASE("clip_grad_norm_ on a conv model's channels_last and transposed gradients", "[torch][norm][dense]") {
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    const auto net = trained_dense_net(dtype);
    const auto params = net->parameters();
    REQUIRE(gradclip::torch::uses_gradclip(params));
    REQUIRE(gradclip::torch::uses_gradclip(net->named_parameters()));
    worst_seen worst;
    for (double p : {1.0, 2.0, 3.0, inf}) {
      for (double fraction : {0.25, 4.0}) {
        INFO("dtype = " << dtype << ", p = " << p << ", fraction = " << fraction);
        check_dense_norm(params, dtype, p, fraction, worst);
      }
    }
    WARN("conv model, dtype " << dtype << ": largest relative difference from libtorch: norm " << worst.norm
                              << ", gradient " << worst.grad);
    if (dtype != at::kFloat) continue;
    // The same gradients in half and bfloat16 (the model itself runs in float: libtorch 1.13's CPU
    // convolutions are not all there for them).
    for (const auto d16 : {at::kHalf, at::kBFloat16}) {
      const auto params16 = converted(params, d16);
      worst_seen w16;
      for (double p : {1.0, 2.0, 3.0, inf}) {
        for (double fraction : {0.25, 4.0}) {
          INFO("dtype = " << d16 << ", p = " << p << ", fraction = " << fraction);
          check_dense_norm(params16, d16, p, fraction, w16);
        }
      }
      WARN("conv model, dtype " << d16 << ": largest relative difference from libtorch (float): norm " << w16.norm
                                << ", gradient " << w16.grad);
    }
  }
}

TEST_CASE("clip_grad_norm_: a list mixing dtypes and layouts", "[torch][norm][dense]") {
  std::mt19937_64 rng(13);
  params_t params{make_dense_param(dense_layout::channels_last, at::kHalf, rng),
                  make_dense_param(dense_layout::transposed, at::kDouble, rng),
                  make_param({777}, at::kFloat, rng),
                  make_dense_param(dense_layout::permuted, at::kBFloat16, rng),
                  make_dense_param(dense_layout::channels_last_3d, at::kFloat, rng),
                  make_param({3, 50}, at::kHalf, rng)};
  for (double p : {1.0, 2.0, 3.0, inf}) {
    INFO("p = " << p);
    const long double exact = ref::norm(grad_values(params), p);
    const double max_norm = static_cast<double>(exact) / 5;
    auto ours = copy_params(params);
    REQUIRE(gradclip::torch::uses_gradclip(ours));
    const double n = gradclip::torch::clip_grad_norm_(ours, max_norm, p);
    CHECK(ref::rel_err(n, exact) <= gradclip_bound(at::kFloat, p));
    // libtorch on double copies (strides kept): the same norm, and gradients that round to ours.
    auto as_double = converted(params, at::kDouble);
    CHECK(ref::rel_err(n, torch::nn::utils::clip_grad_norm_(as_double, max_norm, p)) <= 1e-5);
    for (std::size_t i = 0; i < ours.size(); ++i) {
      const auto dtype = ours[i].grad().scalar_type();
      const auto rounded = converted({as_double[i]}, dtype);
      CHECK(worst_relative({ours[i]}, rounded) <= std::max(1e-5, dtype_ulp(dtype)));
    }
    auto runs = as_storage_runs(params);
    CHECK(ref::same_bits(gradclip::torch::clip_grad_norm_(runs, max_norm, p), n));
    for (std::size_t i = 0; i < ours.size(); ++i) CHECK(same_grad(storage_run(ours[i].grad()), runs[i].grad()));
  }
}

TEST_CASE("clip_grad_norm_: error_if_nonfinite with a non-finite value in a channels_last gradient",
          "[torch][norm][nonfinite][dense]") {
  for (double bad : {ref::inf, -ref::inf, ref::nan}) {
    for (double p : {1.0, 2.0, inf}) {
      INFO("bad = " << bad << ", p = " << p);
      auto params = dense_params(at::kFloat, 23);
      params[0].grad()[1][2][3][1].fill_(bad);
      auto ours = copy_params(params), theirs = copy_params(params);
      const std::string our_msg = error_of([&] { gradclip::torch::clip_grad_norm_(ours, 1.0, p, true); });
      const std::string their_msg = error_of([&] { torch::nn::utils::clip_grad_norm_(theirs, 1.0, p, true); });
      CHECK_FALSE(our_msg.empty());
      CHECK(our_msg == their_msg);
      CHECK(same_grads(ours, params));
      CHECK(same_grads(theirs, params));
      const double n_ours = gradclip::torch::clip_grad_norm_(ours, 1.0, p);
      const double n_theirs = torch::nn::utils::clip_grad_norm_(theirs, 1.0, p);
      CHECK(ref::same_bits(n_ours, std::isnan(bad) ? n_ours : ref::inf));
      CHECK(std::isnan(n_ours) == std::isnan(n_theirs));
      CHECK((std::isnan(n_ours) || n_ours == n_theirs));
      bool nan_mismatch = false;
      CHECK(worst_relative(ours, theirs, &nan_mismatch) == 0.0);
      CHECK_FALSE(nan_mismatch);
    }
  }
}

TEST_CASE("a dense gradient inside a larger storage: only its own elements are read and written", "[torch][dense]") {
  std::mt19937_64 rng(14);
  for (int value_clip = 0; value_clip < 2; ++value_clip) {
    INFO("clip_grad_" << (value_clip ? "value_" : "norm_"));
    const auto big = make_param({10, 7}, at::kFloat, rng).grad();
    const auto before = big.clone();
    auto p = at::zeros({7, 3}).requires_grad_(true);
    p.mutable_grad() = big.narrow(0, 2, 3).t();  // rows 2..4, transposed: offset 14, strides (1, 7)
    REQUIRE(p.grad().storage_offset() == 14);
    REQUIRE((p.grad().is_non_overlapping_and_dense() && !p.grad().is_contiguous()));
    REQUIRE(gradclip::torch::uses_gradclip(p));
    auto theirs = copy_params({p});
    if (value_clip) {
      gradclip::torch::clip_grad_value_(p, 0.3);
      torch::nn::utils::clip_grad_value_(theirs, 0.3);
      CHECK(same_grads({p}, theirs));
    } else {
      const double n = gradclip::torch::clip_grad_norm_(p, 0.1);
      CHECK(ref::rel_err(n, torch::nn::utils::clip_grad_norm_(theirs, 0.1)) <= 1e-5);
      CHECK(worst_relative({p}, theirs) <= 1e-5);
    }
    CHECK(at::equal(big.narrow(0, 0, 2), before.narrow(0, 0, 2)));
    CHECK(at::equal(big.narrow(0, 5, 5), before.narrow(0, 5, 5)));
    CHECK_FALSE(at::equal(big.narrow(0, 2, 3), before.narrow(0, 2, 3)));
  }
}

TEST_CASE("clip_grad_value_ on dense non-contiguous gradients matches libtorch bit for bit", "[torch][value][dense]") {
  for (const auto dtype : {at::kFloat, at::kDouble, at::kBFloat16}) {
    for (double clip_value : {0.0, 0.1, 0.5, 3.0}) {
      INFO("dtype = " << dtype << ", clip_value = " << clip_value);
      auto params = dense_params(dtype, 31);
      auto g = params[2].grad();  // transposed
      g[0][0].fill_(ref::nan);
      g[1][0].fill_(ref::inf);
      g[2][0].fill_(-ref::inf);
      g[3][0].fill_(-0.0);
      auto ours = copy_params(params), theirs = copy_params(params);
      REQUIRE(gradclip::torch::uses_gradclip(ours));
      const void* where = ours[0].grad().data_ptr();
      gradclip::torch::clip_grad_value_(ours, clip_value);
      torch::nn::utils::clip_grad_value_(theirs, clip_value);
      CHECK(ours[0].grad().data_ptr() == where);
      for (std::size_t i = 0; i < ours.size(); ++i) {
        if (!ours[i].grad().defined()) continue;
        CHECK(ours[i].grad().strides() == params[i].grad().strides());
        CHECK(same_grad(ours[i].grad().nan_to_num(0.5), theirs[i].grad().nan_to_num(0.5)));
        CHECK(at::equal(ours[i].grad().isnan(), theirs[i].grad().isnan()));
      }
    }
  }
  // half: no CPU clamp in libtorch 1.13; the nearest half of the bound, as for contiguous gradients.
  auto h = dense_params(at::kHalf, 32);
  const auto before = converted(h, at::kFloat);
  gradclip::torch::clip_grad_value_(h, 0.1);
  const float bound = static_cast<float>(at::Half(0.1f));
  for (std::size_t i = 0; i < h.size(); ++i) {
    if (h[i].grad().defined()) CHECK(at::equal(h[i].grad().to(at::kFloat), before[i].grad().clamp(-bound, bound)));
  }
}

TEST_CASE("the overloads: vector, braced list, Tensor, at::TensorList and named_parameters() give the same bits",
          "[torch][overloads][dense]") {
  const auto net = trained_dense_net(at::kFloat);
  const auto params = net->parameters();
  REQUIRE(params.size() == 6);
  const auto original = copy_params(params);
  const auto restore = [&] {
    for (std::size_t i = 0; i < params.size(); ++i) params[i].grad().copy_(original[i].grad());
  };
  const at::TensorList list(params);
  CHECK(gradclip::torch::uses_gradclip(list));
  CHECK(gradclip::torch::uses_gradclip({params[0], params[1], params[2]}));
  CHECK(gradclip::torch::uses_gradclip(params[0]));
  for (double p : {1.0, 2.0, inf}) {
    for (double max_norm : {1e-3, 1e6}) {
      INFO("p = " << p << ", max_norm = " << max_norm);
      auto want = copy_params(original);
      const double n = gradclip::torch::clip_grad_norm_(want, max_norm, p);  // the vector form
      restore();
      CHECK(ref::same_bits(gradclip::torch::clip_grad_norm_(net->named_parameters(), max_norm, p), n));
      CHECK(same_grads(params, want));
      restore();
      CHECK(ref::same_bits(gradclip::torch::clip_grad_norm_(list, max_norm, p), n));
      CHECK(same_grads(params, want));
      restore();
      CHECK(ref::same_bits(gradclip::torch::clip_grad_norm_(
                               {params[0], params[1], params[2], params[3], params[4], params[5]}, max_norm, p),
                           n));
      CHECK(same_grads(params, want));
      // One tensor (the channels_last conv weight).
      restore();
      auto one = copy_params({original[0]});
      CHECK(ref::same_bits(gradclip::torch::clip_grad_norm_(params[0], max_norm, p),
                           gradclip::torch::clip_grad_norm_(one, max_norm, p)));
      CHECK(same_grad(params[0].grad(), one[0].grad()));
    }
  }
  for (double clip_value : {1e-3, 0.05}) {
    INFO("clip_value = " << clip_value);
    auto want = copy_params(original);
    gradclip::torch::clip_grad_value_(want, clip_value);
    restore();
    gradclip::torch::clip_grad_value_(net->named_parameters(), clip_value);
    CHECK(same_grads(params, want));
    restore();
    gradclip::torch::clip_grad_value_(list, clip_value);
    CHECK(same_grads(params, want));
    restore();
    gradclip::torch::clip_grad_value_({params[0], params[1], params[2], params[3], params[4], params[5]}, clip_value);
    CHECK(same_grads(params, want));
    restore();
    gradclip::torch::clip_grad_value_(params[0], clip_value);
    CHECK(same_grad(params[0].grad(), want[0].grad()));
  }
  // A dict with a gradient gradclip does not read: libtorch's call on its values.
  std::mt19937_64 rng(15);
  auto gapped = at::zeros({12, 20}).requires_grad_(true);
  gapped.mutable_grad() = make_param({12, 40}, at::kFloat, rng).grad().slice(1, 0, 40, 2);
  const auto make_dict = [&](const params_t& ps) {
    ::torch::OrderedDict<std::string, Tensor> dict;
    for (std::size_t i = 0; i < ps.size(); ++i) dict.insert("p" + std::to_string(i), ps[i]);
    return dict;
  };
  const params_t mixed{original[0], gapped, original[5]};
  auto ours = copy_params(mixed), theirs = copy_params(mixed);
  CHECK_FALSE(gradclip::torch::uses_gradclip(make_dict(ours)));
  CHECK_FALSE(gradclip::torch::uses_gradclip(at::TensorList(ours)));
  CHECK(ref::same_bits(gradclip::torch::clip_grad_norm_(make_dict(ours), 1e-3),
                       torch::nn::utils::clip_grad_norm_(theirs, 1e-3)));
  CHECK(same_grads(ours, theirs));
}

namespace {

// A list of dense gradients (on gradclip's kernels alone) plus one that gradclip does not read,
// built the same way on every call.
params_t deferred_case(int kind) {
  auto params = dense_params(at::kFloat, 41);
  std::mt19937_64 rng(42);
  Tensor p, g;
  switch (kind) {
    case 0:  // expanded: stride 0, overlapping
      p = at::zeros({20, 30});
      g = make_param({1, 30}, at::kFloat, rng).grad().expand({20, 30});
      break;
    case 1:  // as_strided with overlapping rows
      p = at::zeros({10, 10});
      g = make_param({60}, at::kFloat, rng).grad().as_strided({10, 10}, {5, 1});
      break;
    case 2:  // a slice with a step (x[:, ::2])
      p = at::zeros({12, 20});
      g = make_param({12, 40}, at::kFloat, rng).grad().slice(1, 0, 40, 2);
      break;
    case 3:  // channels_last, narrowed along the channels: gaps
      p = at::zeros({3, 5, 4, 5});
      g = make_param({3, 8, 4, 5}, at::kFloat, rng).grad().contiguous(at::MemoryFormat::ChannelsLast).narrow(1, 0, 5);
      break;
    case 4:  // transposed, with gaps
      p = at::zeros({40, 30});
      g = make_param({30, 50}, at::kFloat, rng).grad().narrow(1, 0, 40).t();
      break;
    default:  // sparse
      p = at::zeros({50});
      g = make_param({50}, at::kFloat, rng).grad().to_sparse();
      break;
  }
  p.requires_grad_(true);
  p.mutable_grad() = g;
  params.insert(params.begin() + 2, p);
  return params;
}

bool same_grads_any_layout(const params_t& a, const params_t& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto& x = a[i].grad();
    const auto& y = b[i].grad();
    if (x.defined() && x.is_sparse() && y.defined() && y.is_sparse()) {
      if (!same_grad(x.to_dense(), y.to_dense())) return false;
    } else if (!same_grad(x, y)) {
      return false;
    }
  }
  return true;
}

}  // namespace

TEST_CASE("overlapping, gapped and sparse gradients still go to libtorch, beside dense ones",
          "[torch][fallback][dense]") {
  const char* names[] = {"expanded", "as_strided, overlapping", "slice with a step", "channels_last, narrowed channels",
                         "transposed with gaps", "sparse"};
  for (int kind = 0; kind < 6; ++kind) {
    INFO("gradient: " << names[kind]);
    REQUIRE_FALSE(gradclip::torch::uses_gradclip(deferred_case(kind)));
    if (kind != 5) REQUIRE_FALSE(deferred_case(kind)[2].grad().is_non_overlapping_and_dense());
    std::string outcomes;
    for (double p : {1.0, 2.0, inf}) {
      INFO("p = " << p);
      auto ours = deferred_case(kind), theirs = deferred_case(kind);
      double a = 0, b = 0;
      const auto ea = error_of([&] { a = gradclip::torch::clip_grad_norm_(ours, 0.1, p); });
      const auto eb = error_of([&] { b = torch::nn::utils::clip_grad_norm_(theirs, 0.1, p); });
      CHECK(ea == eb);
      if (ea.empty()) {
        CHECK(ref::same_bits(a, b));
        CHECK(same_grads_any_layout(ours, theirs));
      }
      outcomes += (ea.empty() ? " ok" : " throws");
    }
    // clip_grad_value_: per tensor, libtorch's clamp_ for this one.
    auto ours = deferred_case(kind), theirs = deferred_case(kind);
    const auto ea = error_of([&] { gradclip::torch::clip_grad_value_(ours, 0.2); });
    const auto eb = error_of([&] { torch::nn::utils::clip_grad_value_(theirs, 0.2); });
    CHECK(ea == eb);
    if (ea.empty()) CHECK(same_grads_any_layout(ours, theirs));
    WARN(names[kind] << ": libtorch's clip_grad_norm_ (p = 1, 2, inf):" << outcomes << "; clip_grad_value_: "
                     << (ea.empty() ? "ok" : ea.substr(0, 80)));
  }
}

// ---- gradient_arena: a real small model's gradients bound to one buffer per dtype, backward
// accumulating into it, zero_grad in both modes over several steps, and clip_grad_norm_ /
// clip_grad_value_ through the arena against libtorch's on a copy of the model.

namespace arena_test {
namespace {

struct small_net : ::torch::nn::Module {
  small_net() {
    conv = register_module("conv", ::torch::nn::Conv2d(::torch::nn::Conv2dOptions(2, 3, 3)));
    fc1 = register_module("fc1", ::torch::nn::Linear(3 * 3 * 3, 8));
    fc2 = register_module("fc2", ::torch::nn::Linear(8, 2));
    frozen = register_parameter("frozen", at::ones({4}), /*requires_grad=*/false);
  }
  at::Tensor forward(const at::Tensor& x) {
    return fc2->forward(at::tanh(fc1->forward(conv->forward(x).flatten(1)))) + frozen.sum();
  }
  ::torch::nn::Conv2d conv{nullptr};
  ::torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  at::Tensor frozen;
};

// The same weights in a second model.
void copy_weights(small_net& to, const small_net& from) {
  ::torch::NoGradGuard no_grad;
  auto a = to.parameters();
  auto b = from.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) a[i].copy_(b[i]);
}

// Two models with the same weights (seed 7): the first is clipped through the arena, the
// second by libtorch.
std::pair<std::shared_ptr<small_net>, std::shared_ptr<small_net>> twin_nets() {
  at::manual_seed(7);
  auto net = std::make_shared<small_net>();
  auto ref = std::make_shared<small_net>();
  copy_weights(*ref, *net);
  return {net, ref};
}

double loss_backward(small_net& net, std::int64_t step, double scale) {
  at::manual_seed(100 + step);
  const auto x = at::randn({4, 2, 5, 5});
  auto loss = net.forward(x).pow(2).sum() * scale;
  loss.backward();
  return loss.item<double>();
}

bool in_range(const at::Tensor& g, const at::Tensor& flat) {
  const auto* lo = static_cast<const char*>(flat.data_ptr());
  const auto* hi = lo + flat.nbytes();
  const auto* p = static_cast<const char*>(g.data_ptr());
  return p >= lo && p + g.nbytes() <= hi;
}

double max_rel(const at::Tensor& a, const at::Tensor& b) {
  const auto d = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
  const auto r = d / (b.to(at::kDouble).abs() + 1e-30);
  return r.numel() == 0 ? 0.0 : r.max().item<double>();
}

// The gradients agree before and after clip_grad_norm_ through the arena and libtorch's on the
// reference (which must clip); then both optimizers step.
void clip_and_step(const gradclip::torch::gradient_arena& arena, small_net& net, small_net& ref,
                   ::torch::optim::Optimizer& opt, ::torch::optim::Optimizer& opt_ref) {
  const auto np = net.parameters(), rp = ref.parameters();
  for (std::size_t i = 0; i < np.size(); ++i) {
    if (np[i].requires_grad()) CHECK(max_rel(np[i].grad(), rp[i].grad()) <= 1e-5);
  }
  const double max_norm = 0.25;
  const double ours = gradclip::torch::clip_grad_norm_(arena, max_norm);
  const double theirs = ::torch::nn::utils::clip_grad_norm_(rp, max_norm);
  CHECK(std::fabs(ours - theirs) <= 1e-5 * theirs);
  REQUIRE(theirs > max_norm);  // it clipped
  for (std::size_t i = 0; i < np.size(); ++i) {
    if (np[i].requires_grad()) CHECK(max_rel(np[i].grad(), rp[i].grad()) <= 1e-5);
  }
  opt.step();
  opt_ref.step();
}

// The weights after the steps agree.
void check_weights(small_net& net, small_net& ref) {
  const auto np = net.parameters(), rp = ref.parameters();
  for (std::size_t i = 0; i < np.size(); ++i) CHECK(max_rel(np[i], rp[i]) <= 1e-4);
}

}  // namespace
}  // namespace arena_test

using arena_test::small_net;
using arena_test::clip_and_step;
using arena_test::check_weights;
using arena_test::twin_nets;
using arena_test::loss_backward;
using arena_test::in_range;
using arena_test::max_rel;

TEST_CASE("gradient_arena: backward writes into the arena; zero_grad both modes; clip matches libtorch",
          "[torch][arena]") {
  for (const bool set_to_none : {false, true}) {
    INFO("set_to_none = " << set_to_none);
    const auto [net, ref] = twin_nets();
    gradclip::torch::gradient_arena arena(net->parameters());
    REQUIRE(arena.flat().size() == 1);
    const auto flat = arena.flat(at::kFloat);
    std::int64_t total = 0;
    for (const auto& p : net->parameters())
      if (p.requires_grad()) total += p.numel();
    REQUIRE(flat.numel() == total);
    REQUIRE(arena.bound());
    ::torch::optim::SGD opt(net->parameters(), ::torch::optim::SGDOptions(0.01));
    ::torch::optim::SGD opt_ref(ref->parameters(), ::torch::optim::SGDOptions(0.01));
    for (std::int64_t step = 0; step < 4; ++step) {
      INFO("step " << step);
      // Alternate the optimizer's zero_grad (libtorch 1.13: in place, detach_() and zero_()) and
      // the module's, which also takes set_to_none.
      if (step % 2 == 0 && !set_to_none) {
        opt.zero_grad();
      } else {
        net->zero_grad(set_to_none);
      }
      ref->zero_grad(set_to_none);
      if (set_to_none) {
        REQUIRE_FALSE(net->parameters()[0].grad().defined());
        REQUIRE_FALSE(arena.bound());
        // Without bind(): backward allocates outside the arena, clip stays correct (checked on step 1).
        if (step != 1) REQUIRE(arena.bind() == 6);
      } else {
        REQUIRE(arena.bound());
        REQUIRE(arena.bind() == 0);
      }
      // Two backward passes: accumulation into the arena.
      loss_backward(*net, step, 1.0);
      loss_backward(*net, step + 10, 0.5);
      loss_backward(*ref, step, 1.0);
      loss_backward(*ref, step + 10, 0.5);
      const bool expect_bound = !(set_to_none && step == 1);
      CHECK(arena.bound() == expect_bound);
      for (const auto& p : net->parameters()) {
        if (!p.requires_grad()) {
          CHECK_FALSE(p.grad().defined());
          continue;
        }
        REQUIRE(p.grad().defined());
        CHECK(in_range(p.grad(), flat) == expect_bound);
      }
      REQUIRE(gradclip::torch::uses_gradclip(arena));
      clip_and_step(arena, *net, *ref, opt, opt_ref);
    }
    check_weights(*net, *ref);
  }
}

TEST_CASE("gradient_arena: float and double parameters, one run per dtype, clip_grad_value_", "[torch][arena]") {
  at::manual_seed(3);
  ::torch::nn::Linear a(5, 4), b(4, 3);
  b->to(at::kDouble);
  std::vector<at::Tensor> params{a->weight, b->weight, a->bias, b->bias, at::ones({2})};  // the last: no grad
  gradclip::torch::gradient_arena arena(params);
  REQUIRE(arena.flat().size() == 2);
  REQUIRE(arena.flat(at::kFloat).numel() == 24);
  REQUIRE(arena.flat(at::kDouble).numel() == 15);
  REQUIRE_FALSE(arena.flat(at::kHalf).defined());
  CHECK(arena.contains(b->bias));
  CHECK_FALSE(arena.contains(params[4]));
  const auto x = at::randn({6, 5});
  (b->forward(at::relu(a->forward(x)).to(at::kDouble)).pow(2).sum() * 10).backward();
  REQUIRE(arena.bound());
  // The flat tensors are the gradients.
  CHECK(arena.flat(at::kFloat).data_ptr() == a->weight.grad().data_ptr());
  CHECK(static_cast<float*>(arena.flat(at::kFloat).data_ptr()) + 20 == a->bias.grad().data_ptr());
  CHECK(static_cast<double*>(arena.flat(at::kDouble).data_ptr()) + 12 == b->bias.grad().data_ptr());

  std::vector<at::Tensor> copy;
  for (const auto& p : params) {
    auto q = p.detach().clone().requires_grad_(p.requires_grad());
    if (p.grad().defined()) q.mutable_grad() = p.grad().clone();
    copy.push_back(q);
  }
  const double ours = gradclip::torch::clip_grad_norm_(arena, 1.0);
  const double theirs = ::torch::nn::utils::clip_grad_norm_(copy, 1.0);
  REQUIRE(theirs > 1.0);
  CHECK(std::fabs(ours - theirs) <= 1e-5 * theirs);
  for (std::size_t i = 0; i < 4; ++i) CHECK(max_rel(params[i].grad(), copy[i].grad()) <= 1e-5);

  gradclip::torch::clip_grad_value_(arena, 0.01);
  ::torch::nn::utils::clip_grad_value_(copy, 0.01);
  for (std::size_t i = 0; i < 4; ++i) CHECK(max_rel(params[i].grad(), copy[i].grad()) <= 1e-5);
  CHECK(arena.bound());

  // A gradient replaced from outside: not bound, the ordinary path, still correct; bind() copies it in.
  b->weight.mutable_grad() = at::full({3, 4}, 2.0, at::kDouble);
  CHECK_FALSE(arena.bound());
  copy[1].mutable_grad() = at::full({3, 4}, 2.0, at::kDouble);
  const double n1 = gradclip::torch::clip_grad_norm_(arena, 0.5);
  const double n2 = ::torch::nn::utils::clip_grad_norm_(copy, 0.5);
  CHECK(std::fabs(n1 - n2) <= 1e-5 * n2);
  for (std::size_t i = 0; i < 4; ++i) CHECK(max_rel(params[i].grad(), copy[i].grad()) <= 1e-5);
  const auto before = b->weight.grad().clone();
  CHECK(arena.bind() == 1);
  CHECK(arena.bound());
  CHECK(max_rel(b->weight.grad(), before) == 0.0);
  CHECK(static_cast<double*>(arena.flat(at::kDouble).data_ptr()) == b->weight.grad().data_ptr());
  // The same gradient tensor (one TensorImpl) moved in place: set_ onto other memory, or
  // onto the arena one element off its slice, overlapping it. Not bound; bind() copies the
  // values back into the slice (the overlapping case through a copy).
  const auto elsewhere = at::full({3, 4}, 0.25, at::kDouble);
  b->weight.grad().set_(elsewhere.storage(), 0, {3, 4}, {4, 1});
  CHECK_FALSE(arena.bound());
  CHECK(arena.bind() == 1);
  CHECK(arena.bound());
  CHECK(max_rel(b->weight.grad(), elsewhere) == 0.0);
  const auto flat_double = arena.flat(at::kDouble);
  b->weight.grad().set_(flat_double.storage(), flat_double.storage_offset() + 1, {3, 4}, {4, 1});
  CHECK_FALSE(arena.bound());
  CHECK(arena.bind() == 1);
  CHECK(arena.bound());
  // A parameter without a slot that has a gradient: not bound, still counted.
  params[4].mutable_grad() = at::full({2}, 3.0);
  CHECK_FALSE(arena.bound());
}

TEST_CASE("gradient_arena: half and bfloat16 slices, a parameter listed twice, others left out",
          "[torch][arena]") {
  at::manual_seed(11);
  auto h = at::randn({3, 4}).to(at::kHalf).requires_grad_(true);
  auto b = at::randn({5}).to(at::kBFloat16).requires_grad_(true);
  auto f = at::randn({7}).requires_grad_(true);
  auto c = at::randn({2}, at::kComplexFloat).requires_grad_(true);  // no slice: not a gradclip dtype
  {
    gradclip::torch::gradient_arena arena(std::vector<at::Tensor>{h, b, f, c});
    REQUIRE(arena.flat().size() == 3);
    CHECK(arena.flat(at::kHalf).numel() == 12);
    CHECK(arena.flat(at::kBFloat16).numel() == 5);
    CHECK_FALSE(arena.contains(c));
    CHECK_FALSE(c.grad().defined());
    // Gradients written in place (as backward's accumulation does).
    {
      const at::NoGradGuard no_grad;
      h.mutable_grad().copy_(at::randn({3, 4}).mul(40));
      b.mutable_grad().copy_(at::randn({5}).mul(40));
      f.mutable_grad().copy_(at::randn({7}).mul(40));
    }
    REQUIRE(arena.bound());
    std::vector<at::Tensor> copy;
    for (const auto& p : {h, b, f}) {
      auto q = p.detach().clone().requires_grad_(true);
      q.mutable_grad() = p.grad().clone();
      copy.push_back(q);
    }
    const double ours = gradclip::torch::clip_grad_norm_(arena, 1.0);
    const double theirs = gradclip::torch::clip_grad_norm_(copy, 1.0);  // the path without an arena
    CHECK(std::fabs(ours - theirs) <= 1e-12 * theirs);
    CHECK(max_rel(h.grad(), copy[0].grad()) <= 1e-3);
    CHECK(max_rel(b.grad(), copy[1].grad()) <= 1e-2);
    CHECK(max_rel(f.grad(), copy[2].grad()) <= 1e-6);
    // A complex gradient appears: not bound; the whole call is then libtorch's.
    c.mutable_grad() = at::ones({2}, at::kComplexFloat);
    CHECK_FALSE(arena.bound());
    CHECK_FALSE(gradclip::torch::uses_gradclip(arena));
  }
  // Listed twice: one slice, never bound (the list counts it twice, as libtorch's call does).
  auto p = at::randn({4}).requires_grad_(true);
  gradclip::torch::gradient_arena twice(std::vector<at::Tensor>{p, p});
  CHECK(twice.flat(at::kFloat).numel() == 4);
  CHECK_FALSE(twice.bound());
  {
    const at::NoGradGuard no_grad;
    p.mutable_grad().fill_(1.0);
  }
  CHECK(gradclip::torch::clip_grad_norm_(twice, 100.0) == Approx(std::sqrt(8.0)));
}

// ---- binding_check::on_change: hooks on the gradient accumulators keep backward's gradients in
// the arena, and calls trust what the hooks saw.

TEST_CASE("gradient_arena on_change: no bind() needed around backward; clip matches libtorch", "[torch][arena]") {
  for (const bool set_to_none : {false, true}) {
    INFO("set_to_none = " << set_to_none);
    const auto [net, ref] = twin_nets();
    gradclip::torch::gradient_arena arena(net->parameters(), gradclip::torch::binding_check::on_change);
    REQUIRE(arena.check() == gradclip::torch::binding_check::on_change);
    const auto flat = arena.flat(at::kFloat);
    REQUIRE(arena.bound());
    REQUIRE(arena.runs_flat());
    ::torch::optim::SGD opt(net->parameters(), ::torch::optim::SGDOptions(0.01));
    ::torch::optim::SGD opt_ref(ref->parameters(), ::torch::optim::SGDOptions(0.01));
    for (std::int64_t step = 0; step < 4; ++step) {
      INFO("step " << step);
      net->zero_grad(set_to_none);  // never followed by bind()
      ref->zero_grad(set_to_none);
      loss_backward(*net, step, 1.0);
      loss_backward(*net, step + 10, 0.5);
      loss_backward(*ref, step, 1.0);
      loss_backward(*ref, step + 10, 0.5);
      // The hooks put every fresh gradient back into its slice, right after backward.
      for (const auto& p : net->parameters()) {
        if (!p.requires_grad()) continue;
        REQUIRE(p.grad().defined());
        CHECK(in_range(p.grad(), flat));
      }
      CHECK(arena.runs_flat());
      CHECK(arena.bound());
      clip_and_step(arena, *net, *ref, opt, opt_ref);
    }
    check_weights(*net, *ref);
  }
}

namespace {
std::shared_ptr<::torch::autograd::Node> accumulator_of(const at::Tensor& p) {
  return ::torch::autograd::impl::grad_accumulator(p);
}
double norm_of(std::initializer_list<at::Tensor> ts) {
  long double s = 0.0L;
  for (const auto& t : ts) {
    const auto d = t.to(at::kDouble).contiguous();
    const double* x = d.data_ptr<double>();
    for (std::int64_t i = 0; i < d.numel(); ++i) s += static_cast<long double>(x[i]) * x[i];
  }
  return static_cast<double>(std::sqrt(s));
}
}  // namespace

TEST_CASE("gradient_arena on_change: unreached parameters, create_graph, what it trusts, hook lifetime",
          "[torch][arena]") {
  using gradclip::torch::binding_check;
  auto a = at::randn({5}).requires_grad_();
  auto b = at::randn({3, 2}).requires_grad_();
  const auto node_a = accumulator_of(a), node_b = accumulator_of(b);
  REQUIRE(node_a->post_hooks().empty());
  {
    gradclip::torch::gradient_arena arena(std::vector<at::Tensor>{a, b}, binding_check::on_change);
    CHECK(node_a->post_hooks().size() == 1);
    CHECK(node_b->post_hooks().size() == 1);
    const auto flat = arena.flat(at::kFloat);
    const auto huge = 1e30;

    SECTION("set_to_none, then a backward that reaches only a: b's stale slice is not counted") {
      (a.pow(2).sum() + b.pow(2).sum()).backward();
      REQUIRE(arena.runs_flat());
      a.mutable_grad().reset();
      b.mutable_grad().reset();
      a.pow(3).sum().backward();  // b not reached: no gradient, its slice still holds 2b
      CHECK(in_range(a.grad(), flat));
      CHECK_FALSE(b.grad().defined());
      CHECK_FALSE(arena.runs_flat());
      const double total = gradclip::torch::clip_grad_norm_(arena, huge);
      CHECK(std::fabs(total - norm_of({3 * a.detach().pow(2)})) <= 1e-6 * total);
      CHECK_FALSE(b.grad().defined());  // calls do not bind
      REQUIRE(arena.bind() == 1);       // b: zeroed slice
      CHECK(arena.runs_flat());
      CHECK(b.grad().abs().max().item<double>() == 0.0);
    }

    SECTION("create_graph: backward replaces the gradients, the hooks put them back") {
      (a.pow(2).sum() + b.pow(2).sum()).backward({}, /*retain_graph=*/true, /*create_graph=*/true);
      (a.pow(2).sum()).backward({}, true, true);
      CHECK(in_range(a.grad(), flat));
      CHECK(in_range(b.grad(), flat));
      CHECK(arena.runs_flat());
      const double total = gradclip::torch::clip_grad_norm_(arena, huge);
      CHECK(std::fabs(total - norm_of({4 * a.detach(), 2 * b.detach()})) <= 1e-6 * total);
    }

    SECTION("a gradient replaced outside backward without bind(): the call clips the stale slice (the promise)") {
      (a.pow(2).sum() + b.pow(2).sum()).backward();
      a.mutable_grad() = at::full({5}, 3.0f);  // outside backward: no hook sees it
      CHECK_FALSE(arena.bound());
      CHECK(arena.runs_flat());  // trusted
      const double stale = gradclip::torch::clip_grad_norm_(arena, huge);
      CHECK(std::fabs(stale - norm_of({2 * a.detach(), 2 * b.detach()})) <= 1e-6 * stale);
      REQUIRE(arena.bind() == 1);  // the promise kept: bind() after the change
      CHECK(in_range(a.grad(), flat));
      const double total = gradclip::torch::clip_grad_norm_(arena, huge);
      CHECK(std::fabs(total - norm_of({at::full({5}, 3.0), 2 * b.detach()})) <= 1e-6 * total);
    }

    SECTION("copies share the arena; the hooks stay while one lives") {
      auto copy = std::make_unique<gradclip::torch::gradient_arena>(arena);
      arena = gradclip::torch::gradient_arena();
      CHECK(node_a->post_hooks().size() == 1);
      (a.pow(2).sum() + b.pow(2).sum()).backward();
      CHECK(copy->runs_flat());
      copy.reset();
      CHECK(node_a->post_hooks().empty());
      CHECK(node_b->post_hooks().empty());
    }
  }
  // The arena is gone: its hooks are removed, backward works as without it.
  CHECK(node_a->post_hooks().empty());
  CHECK(node_b->post_hooks().empty());
  a.mutable_grad().reset();
  a.sum().backward();
  CHECK(a.grad().defined());
}

TEST_CASE("gradient_arena: a parameter resized after the arena was built is left out of it", "[torch][arena]") {
  auto a = at::randn({5}).requires_grad_();
  auto b = at::randn({3, 2}).requires_grad_();
  gradclip::torch::gradient_arena arena(std::vector<at::Tensor>{a, b});
  const auto flat = arena.flat(at::kFloat);
  {
    ::torch::NoGradGuard no_grad;
    a.set_data(at::randn({7}));
  }
  a.mutable_grad().reset();
  CHECK(arena.bind() == 0);  // a's slice no longer fits: a keeps no gradient
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(arena.bound());
  (a.pow(2).sum() + b.pow(2).sum()).backward();
  CHECK_FALSE(in_range(a.grad(), flat));
  CHECK(a.grad().numel() == 7);
  CHECK(in_range(b.grad(), flat));
  CHECK_FALSE(arena.runs_flat());
  const double total = gradclip::torch::clip_grad_norm_(arena, 1e30);
  CHECK(std::fabs(total - norm_of({2 * a.detach(), 2 * b.detach()})) <= 1e-6 * total);
}
