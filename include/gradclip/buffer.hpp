// gradclip: what a buffer and a group are.
//
// A buffer is a view of user memory holding float, double, Eigen::half or
// Eigen::bfloat16 -- never a copy:
//   - any Eigen dense object with direct access: Matrix, Array, Map, Ref, Block
//     (strided ones included);
//   - std::vector<T>, std::array<T, N>, C arrays, std::span<T> (C++20);
//   - gradclip::buffer_view<T>{ptr, n} for raw memory, e.g.
//       gradclip::clip_by_norm(gradclip::buffer_view{ptr, n}, 1.0);
// A group is a list of buffers, clipped as one vector:
//   - any range of buffers: std::vector<Eigen::VectorXf>,
//     std::vector<Eigen::Map<Eigen::VectorXf>> (views over one gradient arena),
//     std::vector<std::span<float>>, ...; elements may also be pointers to buffers
//     or std::reference_wrapper of buffers;
//   - a tuple of buffers, which may mix element types: std::tie(dW, db, dU).
// Wherever a group is expected a single buffer is accepted as a group of one.
#ifndef GRADCLIP_BUFFER_HPP
#define GRADCLIP_BUFFER_HPP

#include <cstddef>

#include "detail/view.hpp"

namespace gradclip {

// A contiguous run of n elements at data; the one-liner for raw pointers.
template <class T>
struct buffer_view {
  T* ptr = nullptr;
  std::size_t n = 0;

  buffer_view() = default;
  buffer_view(T* data, std::size_t size) noexcept : ptr(data), n(size) {}

  T* data() const noexcept { return ptr; }
  std::size_t size() const noexcept { return n; }
};

template <class T>
buffer_view(T*, std::size_t) -> buffer_view<T>;

// True for the types gradclip reads as one buffer.
template <class X>
inline constexpr bool is_buffer_v = detail::is_buffer_v<X>;

// True for the types gradclip reads as a group of buffers (a buffer is not one).
template <class X>
inline constexpr bool is_group_v = detail::is_group_v<X>;

}  // namespace gradclip

#endif  // GRADCLIP_BUFFER_HPP
