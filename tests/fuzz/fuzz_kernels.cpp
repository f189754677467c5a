// Fuzz target: the kernels through the norm and value-clipping API, over random
// bytes read as float, double, half or bfloat16 elements (every value class: NaN,
// +-inf, subnormals, +-0, the largest finite), 0..4096 elements, unaligned starts,
// strided Eigen Maps, a tuple mixing the four types, groups cut at random.
// Checked against the long-double reference (tests/fuzz/invariants.hpp): norms
// within the documented accuracy, L-inf exact, partials combining to the same
// norm, bit-identical results for the same data at another alignment; value
// clipping in range, NaN kept, nothing else written.
//
// Parameters after the case (see fuzz_input.hpp), read from the end:
//   u8 norm type (table, or >= 224: 8 raw bytes), u8 alignment check on/off,
//   u8 value-clip API, lo and hi (table, or raw)
#include <cstddef>
#include <cstdint>

#include "fuzz_input.hpp"

namespace {

const double norm_types[] = {2.0, 1.0, fz::inf, 3.0, 0.5, 1.5, 3.5, 0.25, 7.0, 64.0};
const double bounds[] = {1.0,     -1.0,     0.0,      -0.0,    0.5,      -0.5,   1e-3,   65504.0, -65504.0, 3.4e38,
                         -3.4e38, 1e308,    -1e308,   fz::inf, -fz::inf, fz::qnan, 1e-40, -1e-40,  5e-324,   0.1,
                         -0.1,    1e-8,     -1e-8,    2.0,     100.0,    -100.0, 1e-45,  6e-8};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool init = (fz::tolerate_known_issues = !fz::strict_from_environment(), true);
  (void)init;
  fz::tail_reader in{data, size};
  fz::decoded_case d = fz::decode_case(in);
  const double p = fz::decode_double(in, norm_types, sizeof norm_types / sizeof norm_types[0]);
  const bool alignment = in.u8() & 1;
  const auto api = static_cast<fz::value_api>(in.u8() % 4);
  const double lo = fz::decode_double(in, bounds, sizeof bounds / sizeof bounds[0]);
  const double hi = fz::decode_double(in, bounds, sizeof bounds / sizeof bounds[0]);
  fz::fcase c = fz::fill_elements(std::move(d), in);
  if (fz::known_issue_norm_type(p)) return 0;

  fz::require(fz::check_norms(c, p, alignment));
  fz::require(fz::check_clip_value(c, api, lo, hi));
  return 0;
}
