// gradclip kernels: the pipeline, the only code that touches elements.
//
// Every norm, clip and clamp of the library runs through three stages over a list
// of segments (a group's buffers, segments.hpp; a matrix's units, unit_layout):
//
//   1. measure  (measure.hpp)   segments, norm spec -> partial norms: combined in
//                               group order and, from the same pass, per segment
//                               (measure), per unit (measure_units). Range-safe, written once;
//                               non-finite data shows in the same pass.
//   2. decide   (decide.hpp)    norm, limit, policy -> keep / scale by a coefficient
//                               / fail; the coefficient keeps its precision below
//                               DBL_MIN (coefficient.hpp).
//   3. apply    (apply.hpp)     segments, coefficients -> the writes (scale, add,
//                               clamp), each element rounded once by one rule.
//
// Public functions and adaptive methods compute their limits and call these; the
// MPI and libtorch adapters reduce measure's partials across processes
// (partials.hpp) and call decide and apply. Nothing above this layer loops over
// elements.
//
// Below the stages, one dispatch point (arch/select.hpp) picks the implementation
// of a small set of element operations over contiguous runs (arch/scalar.hpp lists
// them: accumulate in double lanes, accumulate_float in float lanes, their _own
// forms for a group's short buffers, reduce_lanes, max_magnitude_bits, decode,
// scale, scale_rounded, clamp): the portable
// scalar one, or the GNU-vector one built from an ISA's primitives (generic,
// SSE2, AVX/AVX2, AVX-512, NEON). A new backend implements that set; see
// arch/select.hpp.
#ifndef GRADCLIP_DETAIL_KERNELS_KERNELS_HPP
#define GRADCLIP_DETAIL_KERNELS_KERNELS_HPP

#include "apply.hpp"
#include "arch/select.hpp"
#include "decide.hpp"
#include "measure.hpp"
#include "partials.hpp"

namespace gradclip::detail::kernels {

// Which element-operation implementation this build runs ("avx512", "scalar", ...).
inline constexpr const char* arch_name() noexcept { return arch::name(); }

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_KERNELS_HPP
