// gradclip internals: the units of a buffer for unit-wise methods (AGC, per-example
// clipping): the rows or the columns of a matrix, or the whole of anything else.
#ifndef GRADCLIP_DETAIL_UNITS_HPP
#define GRADCLIP_DETAIL_UNITS_HPP

#include <cstddef>

#include "../axis.hpp"
#include "view.hpp"

namespace gradclip::detail {

// Number of units of x along `along`: rows or columns of a matrix with both
// dimensions > 1, else 1 (a vector, a 1x1 matrix, a std::vector, ...).
template <class X>
std::size_t unit_count(const X& x, axis along) noexcept {
  using B = plain_t<X>;
  if constexpr (buffer_kind<B>::value == 1) {
    if (x.rows() > 1 && x.cols() > 1) return static_cast<std::size_t>(along == axis::rows ? x.rows() : x.cols());
  }
  (void)along;
  return 1;
}

// Calls f(unit_index, view) for each unit of x.
template <class X, class F>
void for_each_unit(X& x, axis along, F&& f) {
  using B = plain_t<X>;
  if constexpr (buffer_kind<B>::value == 1) {
    if (x.rows() > 1 && x.cols() > 1) {
      using P = std::remove_pointer_t<decltype(x.data())>;
      const bool by_rows = along == axis::rows;
      const auto units = by_rows ? x.rows() : x.cols();
      const auto length = static_cast<std::size_t>(by_rows ? x.cols() : x.rows());
      const auto unit_stride = static_cast<std::ptrdiff_t>(by_rows ? x.rowStride() : x.colStride());
      const auto element_stride = static_cast<std::ptrdiff_t>(by_rows ? x.colStride() : x.rowStride());
      for (decltype(x.rows()) u = 0; u < units; ++u) {
        P* start = x.data() + static_cast<std::ptrdiff_t>(u) * unit_stride;
        f(static_cast<std::size_t>(u), make_view<P>(start, length, element_stride, 1, 0));
      }
      return;
    }
  }
  f(std::size_t{0}, as_view(x));
}

}  // namespace gradclip::detail

#endif  // GRADCLIP_DETAIL_UNITS_HPP
