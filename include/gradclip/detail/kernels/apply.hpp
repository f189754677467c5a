// gradclip kernels, stage 3: apply. The writes: scale a group or a tile of units
// by decide's coefficients, add units into a sum, clamp a group into bounds.
// Every element a write stores goes through one rule: element_scaler for a
// coefficient (coefficient.hpp), plus for a sum (element.hpp), both correctly
// rounded once into the element type (float: by the float-rounded coefficient);
// the vector path (arch::scale) is used only where it gives the same bits.
#ifndef GRADCLIP_DETAIL_KERNELS_APPLY_HPP
#define GRADCLIP_DETAIL_KERNELS_APPLY_HPP

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "../element.hpp"
#include "../float_bits.hpp"
#include "../view.hpp"
#include "across.hpp"
#include "arch/select.hpp"
#include "coefficient.hpp"
#include "parallel.hpp"
#include "segments.hpp"

namespace gradclip::detail::kernels {

// Runs f(x, n, stride) over a run, split into chunks on threads when large.
template <class T, class F>
void write_run(T* x, std::size_t n, std::ptrdiff_t stride, F&& f) {
  const std::size_t chunks = (n + chunk_size - 1) / chunk_size;
  if (chunks <= 1 || !use_threads(n)) {
    f(x, n, stride);
    return;
  }
  for_each_chunk(chunks, true, [&](std::size_t c) {
    const std::size_t begin = c * chunk_size;
    f(x + static_cast<std::ptrdiff_t>(begin) * stride, std::min(chunk_size, n - begin), stride);
  });
}

// x[i * stride] = f(x[i * stride]) for i in [0, n).
template <class T, class F>
void update_each(T* x, std::size_t n, std::ptrdiff_t stride, F&& f) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    T& e = x[static_cast<std::ptrdiff_t>(i) * stride];
    e = f(e);
  }
}

template <class T>
void scale_run(T* x, std::size_t n, std::ptrdiff_t stride, const element_scaler<T>& s) noexcept {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    if (stride == 1 && s.uniform()) {
      arch::scale(x, n, s.factor());
      return;
    }
  } else {
    if (stride == 1 && s.uniform()) {  // half, bfloat16: the same rule, in vectors
      arch::scale_rounded(x, n, s.value());
      return;
    }
  }
  update_each(x, n, stride, s);
}

template <class T>
void scale_view(const strided_view<T>& v, const coefficient& k) noexcept {
  const element_scaler<T> s(k);
  for_each_run(v, [&s](T* x, std::size_t n, std::ptrdiff_t stride) {
    write_run(x, n, stride, [&s](T* y, std::size_t m, std::ptrdiff_t st) { scale_run(y, m, st, s); });
  });
}

// Every buffer of a group times k (callers skip the call when k is 1).
template <class G>
void apply(G&& g, const coefficient& k) noexcept {
  for_each_buffer_ahead(g, [&](std::size_t, const auto& v) {
    require_writable<std::decay_t<decltype(v)>>();
    scale_view(v, k);
  });
}

// Units [first, first + n) of a layout, n <= across_tile, each times its own
// k[i]; a unit whose coefficient is 1 is not written.
template <class P>
void apply_units(const unit_layout<P>& l, std::size_t first, std::size_t n, const coefficient* k) noexcept {
  require_writable<strided_view<P>>();
  if (l.across()) {
    across_scale(l.unit(first), n, l.unit_stride, l.length, l.element_stride, k);
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (!k[i].is_one()) scale_view(l[first + i], k[i]);
  }
}

// dst += src element by element (views of one size), each sum rounded once into
// dst's type.
template <class D, class S>
void add_view(const strided_view<D>& dst, const strided_view<const S>& src) noexcept {
  const std::size_t n = dst.size();
  for (std::size_t i = 0; i < n; ++i) {
    D& d = dst.segment(i / dst.inner_size)[static_cast<std::ptrdiff_t>(i % dst.inner_size) * dst.inner_stride];
    const S& x = src.segment(i / src.inner_size)[static_cast<std::ptrdiff_t>(i % src.inner_size) * src.inner_stride];
    d = plus(d, x);
  }
}

// sum += unit first + i for each i with include[i], in unit order. sum is a
// vector of the units' length (one run).
template <class D, class P>
void add_units(const strided_view<D>& sum, const unit_layout<P>& l, std::size_t first, std::size_t n,
               const bool* include) noexcept {
  if (l.across()) {
    across_add(sum.data, sum.inner_stride, l.unit(first), n, l.unit_stride, l.length, l.element_stride, include);
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (include[i]) add_view(sum, to_const(l[first + i]));
  }
}

template <class T>
void clamp_run(T* x, std::size_t n, std::ptrdiff_t stride, T lo, T hi) noexcept {
  if (stride == 1) {
    arch::clamp(x, n, lo, hi);
    return;
  }
  using traits = element_traits<T>;
  const auto lo_c = traits::to_compute(lo);
  const auto hi_c = traits::to_compute(hi);
  update_each(x, n, stride, [&](T e) {
    const auto c = traits::to_compute(e);
    if (is_nan(c)) return e;  // by its bits: under -ffinite-math-only the comparisons below may not see NaN
    return c < lo_c ? lo : (c > hi_c ? hi : e);
  });
}

// Every element of a group into [lo, hi]. The bounds are rounded inward to each
// buffer's element type, so every clipped value lies in [lo, hi]; when no value
// of the type lies there, both round to nearest(lo).
template <class G>
void clamp_all(G&& g, double lo, double hi) noexcept {
  for_each_buffer_ahead(g, [&](std::size_t, const auto& v) {
    using V = std::decay_t<decltype(v)>;
    require_writable<V>();
    using T = std::remove_const_t<view_element_t<V>>;
    T lo_t = round_up_to<T>(lo);
    T hi_t = round_down_to<T>(hi);
    if (to_double(lo_t) > to_double(hi_t)) lo_t = hi_t = element_traits<T>::nearest(lo);
    for_each_run(v, [lo_t, hi_t](T* x, std::size_t n, std::ptrdiff_t stride) {
      write_run(x, n, stride, [lo_t, hi_t](T* y, std::size_t m, std::ptrdiff_t s) { clamp_run(y, m, s, lo_t, hi_t); });
    });
  });
}

}  // namespace gradclip::detail::kernels

#endif  // GRADCLIP_DETAIL_KERNELS_APPLY_HPP
