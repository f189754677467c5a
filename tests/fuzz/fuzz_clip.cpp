// Fuzz target: every norm-clipping call, option and policy over random groups (the
// cases of fuzz_kernels): clip_by_global_norm, clip_by_norm, clip_with_norm (any
// given total, negative and NaN included), clip_coefficient, norm_clipper,
// clip_each_by_norm (one limit, or one per buffer, or a wrong number of limits);
// any norm_type, eps and max_norm (valid or not); propagate, error and skip.
// Checked (tests/fuzz/invariants.hpp): std::invalid_argument for every bad argument
// with the data untouched; the policies; the decision and the scale bit for bit;
// every element scaled within its rounding or not written at all; nothing outside
// the buffers written; the norm after clipping <= max_norm (1 + rounding).
//
// Parameters after the case (see fuzz_input.hpp), read from the end:
//   u8 API, norm_type, eps, max_norm as a fraction of the norm (or raw), u8 policy,
//   given total (clip_with_norm), u8 limit mode (each), limits
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_input.hpp"

namespace {

const double norm_types[] = {2.0, 1.0, fz::inf, 3.0, 0.5, 1.5, 3.5, 0.25, 7.0, 64.0, 0.0, -2.0, fz::qnan};
const double epsilons[] = {1e-6, 0.0, 1e-3, 1.0, 1e300, 5e-324, -1e-6, fz::inf, fz::qnan};
// max_norm = norm * fraction (raw selector: the value itself)
const double fractions[] = {0.5, 1e-3, 0.0, 0.999999, 1.0, 1.000001, 2.0, 1e-10, 1e-30, 1e-300, fz::inf, -1.0, fz::qnan};
const double totals[] = {1.0, 0.0, 10.0, 1e-30, 1e30, fz::inf, fz::qnan, -1.0, -0.0, 1e308, 5e-324};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool init = (fz::tolerate_known_issues = !fz::strict_from_environment(), true);
  (void)init;
  fz::tail_reader in{data, size};
  fz::decoded_case d = fz::decode_case(in);
  const std::uint8_t api_byte = in.u8();
  gradclip::clip_options o;
  o.norm_type = fz::decode_double(in, norm_types, sizeof norm_types / sizeof norm_types[0]);
  o.eps = fz::decode_double(in, epsilons, sizeof epsilons / sizeof epsilons[0]);
  const std::uint8_t max_sel = in.u8();
  const double max_raw = max_sel >= 224 ? in.f64() : 0.0;
  o.on_nonfinite = static_cast<gradclip::nonfinite>(in.u8() % 3);
  const double given = fz::decode_double(in, totals, sizeof totals / sizeof totals[0]);
  const std::uint8_t limit_mode = in.u8();
  std::vector<std::uint8_t> limit_sel(9);
  for (auto& s : limit_sel) s = in.u8();
  fz::fcase c = fz::fill_elements(std::move(d), in);
  if (fz::known_issue_norm_type(o.norm_type)) return 0;

  auto limit_from = [&](std::uint8_t s, double norm) {
    const double f = fractions[s % (sizeof fractions / sizeof fractions[0])];
    return (std::isfinite(norm) && norm > 0) ? norm * f : f;
  };
  if (api_byte % 6 < 5) {
    const auto api = static_cast<fz::clip_api>(api_byte % 6);
    double norm = 1.0;
    if (fz::valid_norm_type(o.norm_type)) {
      norm = c.with_group([&](auto& g) { return gradclip::global_norm(g, o.norm_type); });
    }
    const double max_norm = max_sel >= 224 ? max_raw : limit_from(max_sel, norm);
    fz::require(fz::check_clip_norm(c, api, max_norm, o, api == fz::clip_api::with_norm ? given * (norm > 0 && std::isfinite(norm) ? norm : 1.0) : 0.0));
  } else {
    const bool one = limit_mode & 1;
    std::vector<double> limits;
    const std::size_t n = one ? 1 : (limit_mode & 2 ? (limit_mode >> 2) % 10 : c.count());  // sometimes a wrong count
    for (std::size_t i = 0; i < n; ++i) {
      double norm = 1.0;
      if (i < c.count() && fz::valid_norm_type(o.norm_type)) {
        norm = c.with_buffer(i, [&](auto& b) { return gradclip::norm(b, o.norm_type); });
      }
      limits.push_back(limit_from(limit_sel[i % limit_sel.size()], norm));
    }
    if (one && limits.empty()) limits.push_back(1.0);
    fz::require(fz::check_clip_each(c, limits, one, o));
  }
  return 0;
}
