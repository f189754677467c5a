// gradclip kernels: many units at once, when the units run across the storage
// order, e.g. the rows of a column-major matrix or the columns of a row-major one.
// Read alone, such a unit strides through memory with one cache line per element,
// ~20x slower than a contiguous read. These loops sweep memory in storage order
// instead, a tile of adjacent units at a time, with one accumulator per unit:
//
//   across_partials(x, units, ..., spec, out)   out[u] = partial norm of unit u
//   across_scale(x, units, ..., c)              unit u *= c[u], unless c[u] == 1
//   across_add(dst, x, units, ..., include)     dst += unit u, for each included u
//
// Element u, k (unit u, position k) is x[u * unit_stride + k * element_stride].
// Accumulators live on the stack (about 40 KiB for a full tile): no allocation.
//
// Sums: each unit's terms (in double, as the other kernels) are added plainly in
// blocks of across_block, and the block sums with Neumaier compensation: the
// accuracy class of partial_norm (a clipping coefficient within a few ulps). When a sum may have overflowed or lost precision
// to underflow (double input, or general p), that unit alone is recomputed with
// partial_norm's range-safe pass. Writes follow scale() and add_scaled() element
// by element, so a unit gets the same bits as it would through them.
#ifndef GRADCLIP_DETAIL_KERNELS_ACROSS_HPP
#define GRADCLIP_DETAIL_KERNELS_ACROSS_HPP

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include "../element.hpp"
#include "../float_bits.hpp"
#include "../view.hpp"
#include "kernels.hpp"

namespace gradclip::detail::kernels {

inline constexpr std::size_t across_tile = 1024;  // units swept together: 4 KiB of floats per page touched
inline constexpr std::size_t across_block = 8;     // terms added plainly per unit before compensation

template <class T>
double across_value(T x) noexcept {
  return static_cast<double>(element_traits<T>::to_compute(x));
}

// Sums of terms of up to across_tile units.
template <class T, class Term>
void across_sums(const T* x, std::size_t units, std::ptrdiff_t unit_stride, std::size_t length,
                 std::ptrdiff_t element_stride, Term term, double* out) noexcept {
  double block[across_tile];
  compensated_sum total[across_tile];
  std::fill(block, block + units, 0.0);
  for (std::size_t k = 0; k < length; ++k) {
    const T* segment = x + static_cast<std::ptrdiff_t>(k) * element_stride;
    if (unit_stride == 1) {
      for (std::size_t u = 0; u < units; ++u) block[u] += term(across_value(segment[u]));
    } else {
      for (std::size_t u = 0; u < units; ++u) {
        block[u] += term(across_value(segment[static_cast<std::ptrdiff_t>(u) * unit_stride]));
      }
    }
    if ((k + 1) % across_block == 0 || k + 1 == length) {
      for (std::size_t u = 0; u < units; ++u) {
        total[u].add(block[u]);
        block[u] = 0.0;
      }
    }
  }
  for (std::size_t u = 0; u < units; ++u) out[u] = total[u].value();
}

// max |x| of up to across_tile units; NaN for a unit holding a NaN.
template <class T>
void across_max_abs(const T* x, std::size_t units, std::ptrdiff_t unit_stride, std::size_t length,
                    std::ptrdiff_t element_stride, double* out) noexcept {
  std::fill(out, out + units, 0.0);
  for (std::size_t k = 0; k < length; ++k) {
    const T* segment = x + static_cast<std::ptrdiff_t>(k) * element_stride;
    for (std::size_t u = 0; u < units; ++u) {
      const double a = std::fabs(across_value(segment[static_cast<std::ptrdiff_t>(u) * unit_stride]));
      if (!is_nan(out[u]) && (is_nan(a) || a > out[u])) out[u] = a;
    }
  }
}

// The partial norm of each of `units` units (any count), as partial_norm gives it
// for the unit alone, up to the order of the additions.
template <class T>
void across_partials(const T* x, std::size_t units, std::ptrdiff_t unit_stride, std::size_t length,
                     std::ptrdiff_t element_stride, const norm_spec& spec, norm_partial* out) noexcept {
  for (std::size_t first = 0; first < units; first += across_tile) {
    const std::size_t n = std::min(across_tile, units - first);
    const T* base = x + static_cast<std::ptrdiff_t>(first) * unit_stride;
    double sums[across_tile];
    switch (spec.kind) {
      case norm_kind::linf:
        across_max_abs(base, n, unit_stride, length, element_stride, sums);
        break;
      case norm_kind::l1:
        across_sums(base, n, unit_stride, length, element_stride, [](double v) { return std::fabs(v); }, sums);
        break;
      case norm_kind::l2:
        across_sums(base, n, unit_stride, length, element_stride, [](double v) { return v * v; }, sums);
        break;
      default: {
        const double p = spec.p;
        across_sums(base, n, unit_stride, length, element_stride, [p](double v) { return std::pow(std::fabs(v), p); },
                    sums);
        break;
      }
    }
    for (std::size_t u = 0; u < n; ++u) {
      out[first + u] = {1.0, sums[u]};
      if (spec.kind != norm_kind::linf && range_checked<T>(spec) && needs_scaled_pass(sums[u], length, spec)) {
        const strided_view<const T> unit =
            make_view<const T>(base + static_cast<std::ptrdiff_t>(u) * unit_stride, length, element_stride, 1, 0);
        out[first + u] = partial_norm(unit, spec);
      }
    }
  }
}

// x *= c, rounded as scale_segment rounds it for T.
template <class T>
struct across_scaler {
  double c = 1.0;
  float cf = 1.0f;
  bool wide = false;

  across_scaler() = default;
  explicit across_scaler(double coefficient) noexcept
      : c(coefficient), cf(static_cast<float>(coefficient)), wide(!(coefficient >= min_float_coefficient)) {}

  void operator()(T& e) const noexcept {
    if constexpr (std::is_same_v<T, double>) {
      e *= c;
    } else if constexpr (std::is_same_v<T, float>) {
      e = wide ? static_cast<float>(static_cast<double>(e) * c) : e * cf;
    } else {
      using traits = element_traits<T>;
      e = traits::from_compute(static_cast<float>(static_cast<double>(traits::to_compute(e)) * c));
    }
  }
};

// Scales unit u by c[u], for each of `units` units; a unit whose coefficient is 1
// is not written.
template <class T>
void across_scale(T* x, std::size_t units, std::ptrdiff_t unit_stride, std::size_t length,
                  std::ptrdiff_t element_stride, const double* c) noexcept {
  for (std::size_t first = 0; first < units; first += across_tile) {
    const std::size_t n = std::min(across_tile, units - first);
    T* base = x + static_cast<std::ptrdiff_t>(first) * unit_stride;
    std::size_t written[across_tile];  // the units to write, and their scalers
    across_scaler<T> scalers[across_tile];
    std::size_t count = 0;
    for (std::size_t u = 0; u < n; ++u) {
      if (c[first + u] == 1.0) continue;  // false for NaN: a NaN coefficient is applied
      written[count] = u;
      scalers[count] = across_scaler<T>(c[first + u]);
      ++count;
    }
    if (count == 0) continue;
    for (std::size_t k = 0; k < length; ++k) {
      T* segment = base + static_cast<std::ptrdiff_t>(k) * element_stride;
      for (std::size_t i = 0; i < count; ++i) scalers[i](segment[static_cast<std::ptrdiff_t>(written[i]) * unit_stride]);
    }
  }
}

// dst[k] += unit u [k] for each included unit, in unit order, computed in double
// and rounded into dst's type after each unit, exactly as add_scaled(dst, unit, 1)
// called unit by unit. dst has `length` elements, dst_stride apart.
template <class D, class S>
void across_add(D* dst, std::ptrdiff_t dst_stride, const S* x, std::size_t units, std::ptrdiff_t unit_stride,
                std::size_t length, std::ptrdiff_t element_stride, const bool* include) noexcept {
  using dst_traits = element_traits<D>;
  for (std::size_t k = 0; k < length; ++k) {
    D& d = dst[static_cast<std::ptrdiff_t>(k) * dst_stride];
    const S* segment = x + static_cast<std::ptrdiff_t>(k) * element_stride;
    D value = d;
    for (std::size_t u = 0; u < units; ++u) {
      if (!include[u]) continue;
      const double sum = static_cast<double>(dst_traits::to_compute(value)) +
                         across_value(segment[static_cast<std::ptrdiff_t>(u) * unit_stride]);
      if constexpr (std::is_same_v<D, double>) {
        value = sum;
      } else if constexpr (std::is_same_v<D, float>) {
        value = static_cast<float>(sum);
      } else {
        value = dst_traits::from_compute(static_cast<float>(sum));
      }
    }
    d = value;
  }
}

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_ACROSS_HPP
