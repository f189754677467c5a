// gradclip kernels: the one dispatch point. `arch` is the implementation of the
// element operations (arch/scalar.hpp lists them) for this build: the widest
// vector ISA the target has, or the portable scalar one under GRADCLIP_NO_SIMD
// (and on compilers without the GNU vector extension). arch::name() says which,
// for tests and benchmarks to print.
//
// A new ISA (SVE, a partial-load NEON path) adds one file with a struct deriving
// from generic_isa that replaces the primitives it does better, and one line
// here. A backend that does not run on the host's vectors (CUDA) implements the
// element operations as a whole, as scalar_arch does.
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_SELECT_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_SELECT_HPP

#include "../../../config.hpp"
#include "scalar.hpp"

#if !GRADCLIP_SIMD
namespace gradclip::detail::kernels {
using arch = scalar_arch;
}
#else
#include "avx2.hpp"
#include "avx512.hpp"
#include "generic.hpp"
#include "neon.hpp"
#include "sse2.hpp"
#include "vector.hpp"
namespace gradclip::detail::kernels {
#if defined(__AVX512F__)
using arch = vector_arch<avx512_isa>;
#elif defined(__AVX__)
using arch = vector_arch<avx2_isa>;
#elif defined(__SSE2__)
using arch = vector_arch<sse2_isa>;
#elif defined(__ARM_NEON) && defined(__aarch64__)
using arch = vector_arch<neon_isa>;
#else
using arch = vector_arch<generic_isa>;
#endif
}  // namespace gradclip::detail::kernels
#endif

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_SELECT_HPP
