// gradclip internals: the data path over a whole group, built on the kernels:
// partials per buffer -> combined in group order -> total norm; scale; clamp.
#ifndef GRADCLIP_DETAIL_GROUP_OPS_HPP
#define GRADCLIP_DETAIL_GROUP_OPS_HPP

#include <cstddef>
#include <iterator>
#include <type_traits>
#include <utility>

#include "element.hpp"
#include "kernels/kernels.hpp"
#include "norm_accumulator.hpp"
#include "view.hpp"

namespace gradclip::detail {

template <class View>
using view_element_t = std::remove_pointer_t<decltype(std::declval<View>().data)>;

// Bytes of a buffer fetched ahead (for_each_buffer_ahead): 1 KiB covers the
// small buffers that dominate by count (biases, norms); larger ones are long
// enough for the hardware prefetcher.
inline constexpr std::size_t buffer_lookahead_bytes = 1024;
inline constexpr std::size_t buffer_lookahead = 4;  // buffers ahead

// for_each_buffer, with a hint to fetch the start of the next buffer of a range
// while this one is processed: a group of many small, separately allocated
// buffers (a model's parameters) is otherwise read at memory latency, one buffer
// after the other. Tuples and single buffers: as for_each_buffer.
template <class G, class F>
void for_each_buffer_ahead(G&& g, F&& f) {
  using P = plain_t<G>;
  if constexpr (!is_strided_view<P>::value && !is_buffer_v<P> && group_kind<P>::value == 1) {
    auto it = std::begin(g);
    const auto end = std::end(g);
    auto ahead = it;  // buffer_lookahead buffers in front of it
    const auto fetch = [&ahead] {
      const auto v = as_view(unwrap(*ahead));
      const std::size_t run = v.inner_stride == 1 ? v.inner_size * sizeof(*v.data) : 1;
      kernels::prefetch_bytes(v.data, run < buffer_lookahead_bytes ? run : buffer_lookahead_bytes);
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

// The partial norm of a whole group. One fast pass sums the terms of every buffer
// into shared lanes. Only when a buffer type or p that can leave double's range is
// present, and the sum says it may have (overflow, or underflow losing precision),
// is the group summed again buffer by buffer with the range-safe scaled partials.
template <class G>
kernels::norm_partial group_partial(G&& g, const kernels::norm_spec& spec) noexcept {
  norm_accumulator acc(spec);
  if (spec.kind == kernels::norm_kind::linf) {
    for_each_buffer(g, [&](std::size_t, const auto& v) { acc.add({1.0, kernels::max_abs(to_const(v))}); });
    return acc.partial();
  }
  kernels::sum_accumulator fast;
  std::size_t count = 0;
  bool checked = false;
  for_each_buffer_ahead(g, [&](std::size_t, const auto& v) {
    using T = std::remove_const_t<view_element_t<std::decay_t<decltype(v)>>>;
    checked = checked || kernels::range_checked<T>(spec);
    count += v.size();
    fast.add(to_const(v), spec, 1.0);
  });
  const double sum = fast.finish();
  if (!checked || !kernels::needs_scaled_pass(sum, count, spec)) return {1.0, sum};
  for_each_buffer(g, [&](std::size_t, const auto& v) { acc.add(kernels::partial_norm(to_const(v), spec)); });
  return acc.partial();
}

template <class G>
double total_norm(G&& g, const kernels::norm_spec& spec) noexcept {
  return norm_accumulator::finish(group_partial(g, spec), spec);
}

// Index of the first buffer holding a NaN or an infinity, or npos.
template <class G>
std::size_t first_nonfinite(G&& g) noexcept {
  std::size_t found = static_cast<std::size_t>(-1);
  for_each_buffer(g, [&](std::size_t i, const auto& v) {
    if (found == static_cast<std::size_t>(-1) && kernels::has_nonfinite(v)) found = i;
  });
  return found;
}

template <class View>
constexpr void require_writable() noexcept {
  static_assert(!std::is_const_v<view_element_t<View>>,
                "gradclip: cannot clip a read-only buffer (const object, Map<const ...> or span<const T>)");
}

template <class G>
void scale_all(G&& g, kernels::coefficient k) noexcept {
  for_each_buffer_ahead(g, [&](std::size_t, const auto& v) {
    require_writable<std::decay_t<decltype(v)>>();
    kernels::scale(v, k);
  });
}

// Bounds are rounded inward to each buffer's element type, so every clipped value
// lies in [lo, hi]; when no value of the type lies there, both round to nearest(lo).
template <class G>
void clamp_all(G&& g, double lo, double hi) noexcept {
  for_each_buffer_ahead(g, [&](std::size_t, const auto& v) {
    using V = std::decay_t<decltype(v)>;
    require_writable<V>();
    using T = std::remove_const_t<view_element_t<V>>;
    T lo_t = round_up_to<T>(lo);
    T hi_t = round_down_to<T>(hi);
    if (to_double(lo_t) > to_double(hi_t)) lo_t = hi_t = element_traits<T>::nearest(lo);
    kernels::clamp(v, lo_t, hi_t);
  });
}

}  // namespace gradclip::detail

#endif  // GRADCLIP_DETAIL_GROUP_OPS_HPP
