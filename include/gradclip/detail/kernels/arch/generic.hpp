// gradclip kernels: the portable vector primitives (GNU vector extension at the
// target's width), the fallback every vector ISA file starts from.
//
// An ISA file derives from generic_isa and replaces the primitives it has a better
// instruction for; vector.hpp builds the element operations (scalar.hpp's list)
// from these primitives:
//
//   load_widened(p)            dwidth floats or doubles at p, as doubles
//   load_widened_partial(p, m) the first m < dwidth of them, the other lanes +0,
//                              reading nothing past p + m (used when partial_loads)
//   add_square(acc, v)         acc + v * v, fused where fused_squares says so
#ifndef GRADCLIP_DETAIL_KERNELS_ARCH_GENERIC_HPP
#define GRADCLIP_DETAIL_KERNELS_ARCH_GENERIC_HPP

#include "../../../config.hpp"

#if GRADCLIP_SIMD

#include <cmath>
#include <cstddef>
#include <cstring>

#include "target.hpp"

namespace gradclip::detail::kernels {

struct generic_isa {
  static constexpr const char* name() noexcept { return "generic vector"; }

  // Tails are left to the scalar loop: no masked loads here.
  static constexpr bool partial_loads = false;

  static vd load_widened(const float* p) noexcept {
    typedef float half_vf __attribute__((vector_size(vector_bytes / 2)));
    half_vf f;
    std::memcpy(&f, p, sizeof f);
    return __builtin_convertvector(f, vd);
  }

  static vd load_widened(const double* p) noexcept {
    vd v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }

  template <class T>
  static vd load_widened_partial(const T* p, std::size_t m) noexcept {
    vd v = {};
    for (std::size_t k = 0; k < m; ++k) v[k] = static_cast<double>(p[k]);
    return v;
  }

  static vd add_square(vd acc, vd v) noexcept {
    if constexpr (fused_squares) {  // lane by lane, the same rounding as one vector FMA
      for (std::size_t k = 0; k < dwidth; ++k) acc[k] = std::fma(v[k], v[k], acc[k]);
      return acc;
    } else {
      return acc + v * v;
    }
  }
};

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_SIMD

#endif  // GRADCLIP_DETAIL_KERNELS_ARCH_GENERIC_HPP
