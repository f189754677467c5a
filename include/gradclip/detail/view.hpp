// gradclip internals: every buffer the user passes becomes a strided_view, the one
// shape the kernels see: outer_size segments of inner_size elements each.
#ifndef GRADCLIP_DETAIL_VIEW_HPP
#define GRADCLIP_DETAIL_VIEW_HPP

#include <cstddef>
#include <functional>
#include <iterator>
#include <tuple>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "../config.hpp"
#include "element.hpp"

namespace gradclip::detail {

template <class T>
struct strided_view {
  T* data = nullptr;
  std::size_t inner_size = 0;       // elements per segment
  std::ptrdiff_t inner_stride = 1;  // between elements of a segment
  std::size_t outer_size = 0;       // segments
  std::ptrdiff_t outer_stride = 0;  // between segment starts

  std::size_t size() const noexcept { return inner_size * outer_size; }
  T* segment(std::size_t k) const noexcept { return data + static_cast<std::ptrdiff_t>(k) * outer_stride; }
};

template <class T>
strided_view<const T> to_const(const strided_view<T>& v) noexcept {
  return {v.data, v.inner_size, v.inner_stride, v.outer_size, v.outer_stride};
}

// A view whose segments are adjacent and unit-stride is one contiguous segment.
template <class T>
GRADCLIP_ALWAYS_INLINE strided_view<T> make_view(T* data, std::size_t inner, std::ptrdiff_t inner_stride, std::size_t outer,
                          std::ptrdiff_t outer_stride) noexcept {
  if (inner == 0 || outer == 0) return {data, 0, 1, 0, 0};
  if (inner == 1) {  // a single element per segment: the outer stride is the element stride
    inner_stride = outer_stride;
    inner = outer;
    outer = 1;
  }
  if (inner_stride == 1 && (outer == 1 || outer_stride == static_cast<std::ptrdiff_t>(inner))) {
    return {data, inner * outer, 1, 1, static_cast<std::ptrdiff_t>(inner * outer)};
  }
  if (outer == 1) outer_stride = static_cast<std::ptrdiff_t>(inner) * inner_stride;
  return {data, inner, inner_stride, outer, outer_stride};
}

// ---- what a buffer is -------------------------------------------------------

template <class X, class = void>
struct is_eigen_dense : std::false_type {};
template <class X>
struct is_eigen_dense<X, std::enable_if_t<std::is_base_of_v<Eigen::DenseBase<X>, X>>> : std::true_type {};

template <class X, class = void>
struct contiguous_element {
  using type = void;
};
template <class X>
struct contiguous_element<X, std::void_t<decltype(std::data(std::declval<X&>())), decltype(std::size(std::declval<X&>()))>> {
  using pointer = decltype(std::data(std::declval<X&>()));
  using type = std::conditional_t<std::is_pointer_v<pointer>, std::remove_pointer_t<pointer>, void>;
};

template <class X, class = void>
struct buffer_kind : std::integral_constant<int, 0> {};  // 0: not a buffer

template <class X>
struct buffer_kind<X, std::enable_if_t<is_eigen_dense<X>::value>>
    : std::integral_constant<int, is_element_v<typename X::Scalar> ? 1 : 0> {};

template <class X>
struct buffer_kind<X, std::enable_if_t<!is_eigen_dense<X>::value && !std::is_void_v<typename contiguous_element<X>::type>>>
    : std::integral_constant<int, is_element_v<typename contiguous_element<X>::type> ? 2 : 0> {};

template <class X>
struct is_reference_wrapper : std::false_type {};
template <class X>
struct is_reference_wrapper<std::reference_wrapper<X>> : std::true_type {};

// Groups may hold buffers by pointer or std::reference_wrapper; both are looked through.
template <class X>
decltype(auto) unwrap(X&& x) noexcept {
  using D = std::remove_cv_t<std::remove_reference_t<X>>;
  if constexpr (std::is_pointer_v<D>) {
    return *x;
  } else if constexpr (is_reference_wrapper<D>::value) {
    return x.get();
  } else {
    return std::forward<X>(x);
  }
}

template <class X>
using plain_t = std::remove_cv_t<std::remove_reference_t<X>>;

template <class X, class = void>
struct unwrapped {
  using type = plain_t<X>;
};
template <class X>
struct unwrapped<X*> {
  using type = plain_t<X>;
};
template <class X>
struct unwrapped<X* const> {
  using type = plain_t<X>;
};
template <class X>
struct unwrapped<std::reference_wrapper<X>> {
  using type = plain_t<X>;
};

template <class X>
inline constexpr bool is_buffer_v = buffer_kind<typename unwrapped<plain_t<X>>::type>::value != 0;

// The view of one buffer; const-ness follows the buffer's own data() access.
template <class X>
GRADCLIP_ALWAYS_INLINE auto as_view(X& x) noexcept {
  using B = plain_t<X>;
  if constexpr (buffer_kind<B>::value == 1) {
    static_assert(int(B::Flags) & int(Eigen::DirectAccessBit),
                  "gradclip: this Eigen expression has no direct access to its data; evaluate it into a "
                  "Matrix/Array or pass a Map, Ref or Block of one");
    using P = std::remove_pointer_t<decltype(x.data())>;
    return make_view<P>(x.data(), static_cast<std::size_t>(x.innerSize()), static_cast<std::ptrdiff_t>(x.innerStride()),
                        static_cast<std::size_t>(x.outerSize()), static_cast<std::ptrdiff_t>(x.outerStride()));
  } else {
    static_assert(buffer_kind<B>::value == 2, "gradclip: not a buffer of float, double, Eigen::half or Eigen::bfloat16");
    using P = std::remove_pointer_t<decltype(std::data(x))>;
    const std::size_t n = static_cast<std::size_t>(std::size(x));
    return make_view<P>(std::data(x), n, 1, 1, static_cast<std::ptrdiff_t>(n));
  }
}

// ---- what a group is --------------------------------------------------------

template <class X, class = void>
struct is_tuple_like : std::false_type {};
template <class X>
struct is_tuple_like<X, std::void_t<decltype(std::tuple_size<X>::value)>> : std::true_type {};

template <class X, class = void>
struct range_element {
  using type = void;
};
template <class X>
struct range_element<X, std::void_t<decltype(*std::begin(std::declval<X&>())), decltype(std::end(std::declval<X&>()))>> {
  using type = std::remove_reference_t<decltype(*std::begin(std::declval<X&>()))>;
};

template <class X, class = std::make_index_sequence<std::tuple_size<X>::value>>
struct tuple_of_buffers : std::false_type {};
template <class X, std::size_t... I>
struct tuple_of_buffers<X, std::index_sequence<I...>>
    : std::bool_constant<(is_buffer_v<std::tuple_element_t<I, X>> && ...)> {};

template <class X, class = void>
struct group_kind : std::integral_constant<int, 0> {};  // 0: not a group
template <class X>
struct group_kind<X, std::enable_if_t<!is_buffer_v<X> && is_tuple_like<X>::value>>
    : std::integral_constant<int, tuple_of_buffers<X>::value ? 2 : 0> {};
template <class X>
struct group_kind<X, std::enable_if_t<!is_buffer_v<X> && !is_tuple_like<X>::value &&
                                      !std::is_void_v<typename range_element<X>::type>>>
    : std::integral_constant<int, is_buffer_v<typename range_element<X>::type> ? 1 : 0> {};

template <class X>
inline constexpr bool is_group_v = group_kind<plain_t<X>>::value != 0;

template <class X>
struct is_strided_view : std::false_type {};
template <class T>
struct is_strided_view<strided_view<T>> : std::true_type {};

// Calls f(index, view) for each buffer in group order. A single buffer (or an
// internal view of one) is a group of one.
template <class G, class F>
void for_each_buffer(G&& g, F&& f) {
  using P = plain_t<G>;
  if constexpr (is_strided_view<P>::value) {
    f(std::size_t{0}, g);
  } else if constexpr (is_buffer_v<P>) {
    auto&& b = unwrap(g);
    f(std::size_t{0}, as_view(b));
  } else if constexpr (group_kind<P>::value == 2) {
    std::apply(
        [&f](auto&&... b) {
          std::size_t i = 0;
          (f(i++, as_view(unwrap(b))), ...);
        },
        g);
  } else {
    static_assert(group_kind<P>::value == 1,
                  "gradclip: not a buffer or a group of buffers (a range or tuple of Eigen objects, std::vector, "
                  "std::array, std::span or gradclip::buffer_view of float, double, Eigen::half or Eigen::bfloat16)");
    std::size_t i = 0;
    for (auto&& b : g) f(i++, as_view(unwrap(b)));
  }
}

// How many buffers a group holds (a buffer is a group of one).
template <class G>
std::size_t buffer_count(G&& g) noexcept {
  using P = plain_t<G>;
  if constexpr (is_strided_view<P>::value || is_buffer_v<P>) {
    return 1;
  } else if constexpr (group_kind<P>::value == 2) {
    return std::tuple_size_v<P>;
  } else if constexpr (std::is_base_of_v<std::random_access_iterator_tag,
                                         typename std::iterator_traits<decltype(std::begin(g))>::iterator_category>) {
    return static_cast<std::size_t>(std::end(g) - std::begin(g));
  } else {
    std::size_t n = 0;
    for (auto it = std::begin(g); it != std::end(g); ++it) ++n;
    return n;
  }
}

}  // namespace gradclip::detail

#endif  // GRADCLIP_DETAIL_VIEW_HPP
