// gradclip under -ffast-math / -ffinite-math-only (this file is compiled with the
// flag; reference.cpp, the ground truth, without it). The library detects NaN and
// inf by their bits (detail/float_bits.hpp) so that detection survives flags that
// let the compiler assume there are none. This program checks that promise and
// reports what else does and does not hold:
//   REQUIRED  non-finite detection: NaN/inf norms, nonfinite::error throws with the
//             right buffer and writes nothing, nonfinite::skip writes nothing,
//             found_inf, the guard, clip_with_norm given a NaN/inf norm;
//             propagate's NaN/zero results; value clipping keeping NaN and
//             clamping inf
//   info      accuracy of finite norms (the compensation), subnormals (FTZ/DAZ),
//             the clip bound, determinism
// Exit status 1 when a REQUIRED row fails. Run: gradclip_fastmath, gradclip_finite_math.
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <type_traits>
#include <string>
#include <tuple>
#include <vector>

#include <gradclip/adaptive/nonfinite_guard.hpp>
#include <gradclip/gradclip.hpp>
#include <gradclip/loss_scale.hpp>

#include "reference.hpp"

#ifndef GRADCLIP_FASTMATH_FLAGS
#define GRADCLIP_FASTMATH_FLAGS "?"
#endif

namespace {

int required_failures = 0;

void row(bool required, const std::string& what, bool holds, const std::string& detail = "") {
  std::printf("%-9s %-4s %s%s%s\n", required ? "REQUIRED" : "info", holds ? "ok" : "NO", what.c_str(),
              detail.empty() ? "" : "  -- ", detail.c_str());
  if (required && !holds) ++required_failures;
}

template <class T>
std::vector<T> data(std::size_t n, double scale = 1.0) {
  std::vector<T> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double x = scale * (0.25 + 0.5 * static_cast<double>((i * 7919) % 1000) / 1000.0) * ((i % 3) ? 1 : -1);
    v[i] = T(static_cast<float>(x));
  }
  return v;
}

template <class T>
T nan_of() {
  if constexpr (std::is_same_v<T, double>) {
    return fm::make_nan();
  } else {
    return T(fm::make_nanf());
  }
}
template <class T>
T inf_of() {
  if constexpr (std::is_same_v<T, double>) {
    return fm::make_inf();
  } else {
    return T(fm::make_inff());
  }
}

template <class T>
bool elem_is_nan(T x) {
  return fm::is_nan(static_cast<double>(static_cast<float>(x)));
}
template <>
bool elem_is_nan<double>(double x) {
  return fm::is_nan(x);
}

template <class T>
void detection(const char* type) {
  const std::string t = type;
  for (double p : {2.0, 1.0, 3.0, fm::make_inf()}) {
    const std::string pt = " (" + t + ", p = " + (fm::is_inf(p) ? std::string("inf") : std::to_string(p).substr(0, 3)) + ")";
    std::vector<T> x = data<T>(300);
    x[123] = nan_of<T>();
    row(true, "norm of data with a NaN is NaN" + pt, fm::is_nan(gradclip::norm(x, p)));
    x[123] = inf_of<T>();
    row(true, "norm of data with an inf is inf" + pt, fm::is_inf(gradclip::norm(x, p)));
    x[5] = nan_of<T>();
    row(true, "norm of data with a NaN and an inf is NaN" + pt, fm::is_nan(gradclip::norm(x, p)));
    std::vector<T> big = data<T>(70000);  // several blocks of the kernels
    big[69999] = nan_of<T>();
    row(true, "norm of 70000 elements, NaN last, is NaN" + pt, fm::is_nan(gradclip::norm(big, p)));
  }
  std::vector<T> a = data<T>(10), b = data<T>(20);
  b[7] = nan_of<T>();
  std::vector<std::vector<T>> g{a, b};
  const auto before = g;
  bool threw = false, index_ok = false;
  try {
    gradclip::clip_by_global_norm(g, 0.1, {2.0, 1e-6, gradclip::nonfinite::error});
  } catch (const gradclip::nonfinite_error& e) {
    threw = true;
    index_ok = e.tensor_index() == 1 && fm::is_nan(e.total_norm());
  }
  auto unchanged = [&] {
    return fm::same_bytes(g[0].data(), before[0].data(), 10 * sizeof(T)) &&
           fm::same_bytes(g[1].data(), before[1].data(), 20 * sizeof(T));
  };
  row(true, "nonfinite::error throws nonfinite_error (" + t + ")", threw);
  row(true, "nonfinite_error names buffer 1 and a NaN norm (" + t + ")", index_ok);
  row(true, "nonfinite::error wrote nothing (" + t + ")", unchanged());
  const auto r = gradclip::clip_by_global_norm(g, 0.1, {2.0, 1e-6, gradclip::nonfinite::skip});
  row(true, "nonfinite::skip: not clipped, NaN norm reported (" + t + ")", !r.clipped && fm::is_nan(r.total_norm));
  row(true, "nonfinite::skip wrote nothing (" + t + ")", unchanged());
  const auto e = gradclip::clip_each_by_norm(g, 0.1, {2.0, 1e-6, gradclip::nonfinite::skip});
  row(true, "clip_each_by_norm, skip: the NaN buffer left alone, the other clipped (" + t + ")",
      e.size() == 2 && e[0].clipped && !e[1].clipped && fm::same_bytes(g[1].data(), before[1].data(), 20 * sizeof(T)));
  const auto u = gradclip::unscale_and_clip(g, 1024.0, 1.0);
  row(true, "unscale_and_clip: found_inf, nothing written (" + t + ")",
      u.found_inf && fm::same_bytes(g[1].data(), before[1].data(), 20 * sizeof(T)));
  gradclip::nonfinite_guard guard(3);
  row(true, "nonfinite_guard skips the step (" + t + ")", !guard(g).apply);
  // propagate: every element NaN.
  auto h = g;
  const auto pr = gradclip::clip_by_global_norm(h, 0.1);
  bool all_nan = pr.clipped;
  for (const auto& buf : h)
    for (T v : buf) all_nan = all_nan && elem_is_nan(v);
  row(true, "propagate with a NaN norm makes every element NaN (" + t + ")", all_nan);
  // inf norm: finite elements become 0.
  std::vector<std::vector<T>> k{data<T>(8)};
  k[0][2] = inf_of<T>();
  const auto pk = gradclip::clip_by_global_norm(k, 1.0);
  bool zeros = pk.clipped && pk.scale == 0.0;
  for (std::size_t i = 0; i < 8; ++i) zeros = zeros && (i == 2 ? elem_is_nan(k[0][i]) : static_cast<double>(k[0][i]) == 0.0);
  row(true, "propagate with an inf norm: coefficient 0, finite elements 0, inf * 0 = NaN (" + t + ")", zeros);
  // Value clipping: NaN kept, inf clamped. Long enough for the vector path.
  std::vector<T> v = data<T>(67, 3.0);
  v[3] = nan_of<T>();
  v[40] = nan_of<T>();
  v[66] = nan_of<T>();  // the scalar tail
  v[10] = inf_of<T>();
  v[11] = T(-static_cast<float>(inf_of<float>()));
  gradclip::clip_by_value(v, -0.5, 0.5);
  row(true, "clip_by_value keeps NaN (vector body and scalar tail) (" + t + ")",
      elem_is_nan(v[3]) && elem_is_nan(v[40]) && elem_is_nan(v[66]));
  row(true, "clip_by_value clamps +-inf to the bounds (" + t + ")",
      static_cast<double>(v[10]) == 0.5 && static_cast<double>(v[11]) == -0.5);
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> m(6, 5);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = T(static_cast<float>(i) - 10.0f);
  m(2, 3) = nan_of<T>();
  auto blk = m.row(2);  // strided: the scalar clamp
  gradclip::clip_by_value(blk, -1.0, 1.0);
  row(true, "clip_by_value keeps NaN in a strided row (" + t + ")", elem_is_nan(m(2, 3)));
  // clip_with_norm given a non-finite norm.
  std::vector<T> w = data<T>(10);
  const std::vector<T> w0 = w;
  bool wthrew = false;
  try {
    gradclip::clip_with_norm(w, 1.0, fm::make_nan(), {2.0, 1e-6, gradclip::nonfinite::error});
  } catch (const gradclip::nonfinite_error&) {
    wthrew = true;
  }
  const auto ws = gradclip::clip_with_norm(w, 1.0, fm::make_inf(), {2.0, 1e-6, gradclip::nonfinite::skip});
  row(true, "clip_with_norm(NaN norm) throws under error, inf skipped under skip (" + t + ")",
      wthrew && !ws.clipped && fm::same_bytes(w.data(), w0.data(), 10 * sizeof(T)));
}

template <class T>
void finite_results(const char* type) {
  const std::string t = type;
  // Accuracy of finite norms against the long-double reference.
  for (std::size_t n : {1000u, 1000003u}) {
    const std::vector<T> x = data<T>(n, 3.0);
    for (double p : {1.0, 2.0, 3.0}) {
      // The documented bounds (README "Accuracy"): float lanes for float L1 / L2 by
      // default, double lanes otherwise and at norm_accuracy::exact.
      for (auto accuracy : {gradclip::norm_accuracy::fast, gradclip::norm_accuracy::exact}) {
        const bool float_lanes = std::is_same_v<T, float> && p != 3.0 && accuracy == gradclip::norm_accuracy::fast;
        if (!std::is_same_v<T, float> && accuracy == gradclip::norm_accuracy::exact) continue;  // the same sums
        const double bound = float_lanes ? (p == 1.0 ? 9e-7 : 4.8e-7) : (p == 3.0 ? 1e-13 : 1e-14);
        const double err = fm::rel_err(gradclip::norm(x, p, accuracy), fm::norm_ref(x.data(), n, p));
        char buf[128];
        std::snprintf(buf, sizeof buf, "relative error %.2e (documented: %.2g)", err, bound);
        row(false,
            "norm accuracy, n = " + std::to_string(n) + ", p = " + std::to_string(static_cast<int>(p)) + " (" + t +
                (accuracy == gradclip::norm_accuracy::exact ? ", exact" : "") + ")",
            err <= bound, buf);
      }
    }
    const double linf = gradclip::norm(x, fm::make_inf());
    row(false, "L-inf exact, n = " + std::to_string(n) + " (" + t + ")", fm::same_bits(linf, fm::norm_ref(x.data(), n, 0)));
  }
  // Compensated summation across blocks: one block summing to 2^53, then 2000 blocks
  // summing to 0.5 each. A plain sum of the block sums loses every 0.5 (the ulp at
  // 2^53 is 2); Neumaier's compensation keeps them. -fassociative-math may simplify
  // the compensation term ((s - t) + v) to 0.
  {
    const std::size_t block = 4096;
    std::vector<T> y(block * 2001, T(0x1p-13f));
    for (std::size_t i = 0; i < block; ++i) y[i] = T(0x1p41f);
    const double got = gradclip::norm(y, 1.0);
    const double want = 0x1p53 + 1000.0;
    char buf[160];
    std::snprintf(buf, sizeof buf, "got 2^53 + %.0f, exact 2^53 + 1000 (relative error %.1e)", got - 0x1p53,
                  fm::rel_err(got, want));
    row(false, "compensated summation across blocks (" + t + ")", got == want, buf);
  }
  // The same bits for the same data at another alignment.
  std::vector<T> a = data<T>(5001, 2.0), b(5002);
  std::memcpy(static_cast<void*>(b.data() + 1), a.data(), 5001 * sizeof(T));
  row(false, "same bits at another alignment (" + t + ")",
      fm::same_bits(gradclip::norm(a), gradclip::norm(gradclip::buffer_view<T>{b.data() + 1, 5001})));
  // Clip bound.
  std::vector<T> c = data<T>(3000, 1e3);
  const auto r = gradclip::clip_by_norm(c, 0.5);
  const double after = fm::norm_ref(c.data(), c.size(), 2.0);
  row(false, "clip bound: norm after <= max_norm (1 + 1e-5) (" + t + ")", r.clipped && after <= 0.5 * (1 + 1e-5));
}

}  // namespace

int main() {
  std::printf("gradclip under %s (" __VERSION__ ")\n", GRADCLIP_FASTMATH_FLAGS);
#if defined(__FAST_MATH__)
  std::printf("__FAST_MATH__ is defined\n");
#endif
#if defined(__FINITE_MATH_ONLY__) && __FINITE_MATH_ONLY__
  std::printf("__FINITE_MATH_ONLY__ is 1\n");
#endif
  detection<float>("float");
  detection<double>("double");
  detection<Eigen::half>("half");
  detection<Eigen::bfloat16>("bfloat16");
  finite_results<float>("float");
  finite_results<double>("double");
  // Float coefficient below FLT_MIN (the widened scale path).
  std::vector<float> x(1000, 1e35f);
  gradclip::clip_by_norm(x, 1e-10);
  const double after = fm::norm_ref(x.data(), x.size(), 2.0);
  row(false, "float 1e35 clipped to 1e-10 keeps the bound (coefficient < FLT_MIN)", after <= 1e-10 * (1 + 1e-5) && after > 0,
      "norm after " + std::to_string(after / 1e-10) + "e-10");
  // Subnormal inputs (flush-to-zero / denormals-are-zero under -ffast-math's crtfastmath).
  std::vector<float> sub(10, 1e-40f);
  const double ns = gradclip::norm(sub, 1.0);
  row(false, "float subnormals are counted (no DAZ)", ns > 0, "norm = " + std::to_string(ns * 1e40) + "e-40");
  std::vector<Eigen::half> hsub(10, Eigen::half(6e-8f));
  row(false, "half subnormals are counted (decoded by bits)", gradclip::norm(hsub, 1.0) > 0);
  std::printf("\n%s\n", required_failures == 0 ? "all REQUIRED rows hold" : "REQUIRED rows FAILED");
  return required_failures == 0 ? 0 : 1;
}
