// gradclip internals: the data path over a whole group, built on the kernels:
// partials per buffer -> combined in group order -> total norm; scale; clamp.
#ifndef GRADCLIP_DETAIL_GROUP_OPS_HPP
#define GRADCLIP_DETAIL_GROUP_OPS_HPP

#include <cstddef>
#include <type_traits>

#include "element.hpp"
#include "kernels/kernels.hpp"
#include "norm_accumulator.hpp"
#include "view.hpp"

namespace gradclip::detail {

template <class View>
using view_element_t = std::remove_pointer_t<decltype(std::declval<View>().data)>;

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
  for_each_buffer(g, [&](std::size_t, const auto& v) {
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
void scale_all(G&& g, double coefficient) noexcept {
  for_each_buffer(g, [&](std::size_t, const auto& v) {
    require_writable<std::decay_t<decltype(v)>>();
    kernels::scale(v, coefficient);
  });
}

// Bounds are rounded inward to each buffer's element type, so every clipped value
// lies in [lo, hi]; when no value of the type lies there, both round to nearest(lo).
template <class G>
void clamp_all(G&& g, double lo, double hi) noexcept {
  for_each_buffer(g, [&](std::size_t, const auto& v) {
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
