// gradclip kernels: many units at once, when the units run across the storage
// order, e.g. the rows of a column-major matrix or the columns of a row-major one.
// Read alone, such a unit strides through memory with one cache line per element,
// ~20x slower than a contiguous read. These loops sweep memory in storage order
// instead, a tile of adjacent units at a time, with one accumulator per unit:
//
//   across_measure(x, units, ..., spec, out)  out[u] = unit u's fast sum of terms (max |x| for L-inf)
//   across_scale(x, units, ..., k)            unit u *= k[u], unless k[u] is 1
//   across_add(dst, x, units, ..., include)   dst += unit u, for each included u
//
// Element u, k (unit u, position k) is x[u * unit_stride + k * element_stride].
// Accumulators live on the stack (about 40 KiB for a full tile): no allocation.
// measure_units and apply_units (measure.hpp, apply.hpp) call these; the range
// check of a unit's sum, the coefficient rule and the rounding of each write are
// theirs (measure.hpp's checked, coefficient.hpp's element_scaler, element.hpp's
// plus), so a unit gets the same bits as it would on its own up to the order of
// its additions.
#ifndef GRADCLIP_DETAIL_KERNELS_ACROSS_HPP
#define GRADCLIP_DETAIL_KERNELS_ACROSS_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "../element.hpp"
#include "../float_bits.hpp"
#include "coefficient.hpp"
#include "partials.hpp"

namespace gradclip::detail::kernels {

inline constexpr std::size_t across_tile = 1024;  // units swept together: 4 KiB of floats per page touched
inline constexpr std::size_t across_block = 8;     // terms added plainly per unit before compensation

// Calls f(u, element) for units [0, units) at position k, in unit order.
template <class T, class F>
void across_row(T* x, std::size_t units, std::ptrdiff_t unit_stride, std::size_t k, std::ptrdiff_t element_stride,
                F&& f) noexcept {
  T* segment = x + static_cast<std::ptrdiff_t>(k) * element_stride;
  if (unit_stride == 1) {
    for (std::size_t u = 0; u < units; ++u) f(u, segment[u]);
  } else {
    for (std::size_t u = 0; u < units; ++u) f(u, segment[static_cast<std::ptrdiff_t>(u) * unit_stride]);
  }
}

// Sums of terms of up to across_tile units: added plainly in blocks of
// across_block, the block sums with Neumaier compensation.
template <class T, class Term>
void across_sums(const T* x, std::size_t units, std::ptrdiff_t unit_stride, std::size_t length,
                 std::ptrdiff_t element_stride, Term term, double* out) noexcept {
  double block[across_tile];
  compensated_sum total[across_tile];
  std::fill(block, block + units, 0.0);
  for (std::size_t k = 0; k < length; ++k) {
    across_row(x, units, unit_stride, k, element_stride, [&](std::size_t u, const T& e) { block[u] += term(to_double(e)); });
    if ((k + 1) % across_block == 0 || k + 1 == length) {
      for (std::size_t u = 0; u < units; ++u) {
        total[u].add(block[u]);
        block[u] = 0.0;
      }
    }
  }
  for (std::size_t u = 0; u < units; ++u) out[u] = total[u].value();
}

// The fast sum of terms (or max |x|) of each of up to across_tile units.
template <class T>
void across_measure(const T* x, std::size_t units, std::ptrdiff_t unit_stride, std::size_t length,
                    std::ptrdiff_t element_stride, const norm_spec& spec, double* out) noexcept {
  switch (spec.kind) {
    case norm_kind::linf:
      std::fill(out, out + units, 0.0);
      for (std::size_t k = 0; k < length; ++k) {
        across_row(x, units, unit_stride, k, element_stride, [&](std::size_t u, const T& e) {
          const double a = std::fabs(to_double(e));
          if (!is_nan(out[u]) && (is_nan(a) || a > out[u])) out[u] = a;
        });
      }
      break;
    case norm_kind::l1:
      across_sums(x, units, unit_stride, length, element_stride, [](double v) { return std::fabs(v); }, out);
      break;
    case norm_kind::l2:
      across_sums(x, units, unit_stride, length, element_stride, [](double v) { return v * v; }, out);
      break;
    default: {
      const double p = spec.p;
      across_sums(x, units, unit_stride, length, element_stride, [p](double v) { return std::pow(std::fabs(v), p); },
                  out);
      break;
    }
  }
}

// Scales unit u by k[u], for each of up to across_tile units; a unit whose
// coefficient is 1 is not written.
template <class T>
void across_scale(T* x, std::size_t units, std::ptrdiff_t unit_stride, std::size_t length,
                  std::ptrdiff_t element_stride, const coefficient* k) noexcept {
  std::size_t written[across_tile];  // the units to write, and their scalers
  element_scaler<T> scalers[across_tile];
  std::size_t count = 0;
  for (std::size_t u = 0; u < units; ++u) {
    if (k[u].is_one()) continue;
    written[count] = u;
    scalers[count] = element_scaler<T>(k[u]);
    ++count;
  }
  for (std::size_t j = 0; j < length && count != 0; ++j) {
    T* segment = x + static_cast<std::ptrdiff_t>(j) * element_stride;
    for (std::size_t i = 0; i < count; ++i) {
      T& e = segment[static_cast<std::ptrdiff_t>(written[i]) * unit_stride];
      e = scalers[i](e);
    }
  }
}

// dst[k] += unit u [k] for each included unit, in unit order, each addition
// rounded once into dst's type (exactly as adding the units one by one). dst has
// `length` elements, dst_stride apart.
template <class D, class S>
void across_add(D* dst, std::ptrdiff_t dst_stride, const S* x, std::size_t units, std::ptrdiff_t unit_stride,
                std::size_t length, std::ptrdiff_t element_stride, const bool* include) noexcept {
  for (std::size_t k = 0; k < length; ++k) {
    D& d = dst[static_cast<std::ptrdiff_t>(k) * dst_stride];
    D value = d;
    across_row(x, units, unit_stride, k, element_stride, [&](std::size_t u, const S& e) {
      if (include[u]) value = plus(value, e);
    });
    d = value;
  }
}

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_ACROSS_HPP
