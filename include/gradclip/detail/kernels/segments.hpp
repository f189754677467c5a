// gradclip kernels: the segments the three stages run over.
//
// A group's buffers are visited in group order as strided views (detail/view.hpp);
// the units of a matrix (its rows or columns) are a unit_layout. Whether units are
// read along the storage order, one unit at a time, or across it, a tile of units
// per sweep (across.hpp), is decided by the stages from the layout: callers never
// choose.
#ifndef GRADCLIP_DETAIL_KERNELS_SEGMENTS_HPP
#define GRADCLIP_DETAIL_KERNELS_SEGMENTS_HPP

#include <cstddef>
#include <cstdlib>
#include <iterator>
#include <type_traits>
#include <utility>

#include "../view.hpp"
#include "arch/target.hpp"

namespace gradclip::detail::kernels {

template <class View>
using view_element_t = std::remove_pointer_t<decltype(std::declval<View>().data)>;

template <class View>
constexpr void require_writable() noexcept {
  static_assert(!std::is_const_v<view_element_t<View>>,
                "gradclip: cannot clip a read-only buffer (const object, Map<const ...> or span<const T>)");
}

// Bytes of a buffer fetched ahead (for_each_buffer_ahead): 1 KiB covers the
// small buffers that dominate by count (biases, norms); larger ones are long
// enough for the hardware prefetcher.
inline constexpr std::size_t buffer_lookahead_bytes = 1024;
inline constexpr std::size_t buffer_lookahead = 4;  // buffers ahead

// for_each_buffer, with a hint to fetch the start of the next buffers of a range
// while this one is processed: a group of many small, separately allocated
// buffers (a model's parameters) is otherwise read at memory latency, one buffer
// after the other. Tuples and single buffers: as for_each_buffer.
template <class G, class F>
GRADCLIP_ALWAYS_INLINE void for_each_buffer_ahead(G&& g, F&& f) {
  using P = plain_t<G>;
  if constexpr (!is_strided_view<P>::value && !is_buffer_v<P> && group_kind<P>::value == 1) {
    auto it = std::begin(g);
    const auto end = std::end(g);
    auto ahead = it;  // buffer_lookahead buffers in front of it
    const auto fetch = [&ahead]() GRADCLIP_INLINE_LAMBDA {
      const auto v = as_view(unwrap(*ahead));
      const std::size_t run = v.inner_stride == 1 ? v.inner_size * sizeof(*v.data) : 1;
      prefetch_bytes(v.data, run < buffer_lookahead_bytes ? run : buffer_lookahead_bytes);
      ++ahead;
    };
    for (std::size_t k = 0; k < buffer_lookahead && ahead != end; ++k) fetch();
    for (std::size_t i = 0; it != end; ++i, ++it) {
      if (ahead != end) fetch();
      f(i, as_view(unwrap(*it)));
    }
  } else {
    for_each_buffer(std::forward<G>(g), std::forward<F>(f));
  }
}

// Calls f(x, n, stride) for every run of a view.
template <class T, class F>
void for_each_run(const strided_view<T>& v, F&& f) {
  for (std::size_t k = 0; k < v.outer_size; ++k) f(v.segment(k), v.inner_size, v.inner_stride);
}

// The units of a buffer: count runs of `length` elements, `unit_stride` apart,
// elements `element_stride` apart within a unit.
template <class P>
struct unit_layout {
  P* data = nullptr;
  std::size_t count = 0;
  std::size_t length = 0;
  std::ptrdiff_t unit_stride = 0;
  std::ptrdiff_t element_stride = 1;

  strided_view<P> operator[](std::size_t u) const noexcept {
    // Units of no element (of an empty matrix, whose data may be null) are not
    // offset: null + offset is undefined.
    if (length == 0) return make_view<P>(data, 0, element_stride, 1, 0);
    return make_view<P>(unit(u), length, element_stride, 1, 0);
  }
  P* unit(std::size_t u) const noexcept { return data + static_cast<std::ptrdiff_t>(u) * unit_stride; }
  // Units closer together in memory than the elements of a unit (the rows of a
  // column-major matrix): swept a tile at a time in storage order.
  bool across() const noexcept {
    return count > 1 && length > 1 && std::abs(unit_stride) < std::abs(element_stride);
  }
};

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_SEGMENTS_HPP
