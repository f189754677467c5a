// gradclip: clipping by value (PyTorch's clip_grad_value_ and clamp).
//
// Each element becomes min(max(x, lo), hi); NaN stays NaN, as torch.clamp keeps it.
// The bounds are rounded inward to each buffer's element type, so every result lies
// in [lo, hi] (PyTorch rounds them to nearest, which can land one ulp outside).
#ifndef GRADCLIP_CLIP_VALUE_HPP
#define GRADCLIP_CLIP_VALUE_HPP

#include "buffer.hpp"
#include "detail/kernels/apply.hpp"
#include "detail/validate.hpp"

namespace gradclip {

// Clamps every element of a buffer or group into [lo, hi].
// Throws std::invalid_argument (NaN bound, lo > hi) before modifying anything.
template <class BufferOrGroup>
void clip_by_value(BufferOrGroup&& x, double lo, double hi) {
  static_assert(is_group_v<BufferOrGroup> || is_buffer_v<BufferOrGroup>,
                "gradclip::clip_by_value: not a buffer or a group of buffers (see gradclip/buffer.hpp)");
  detail::check_bounds(lo, hi);
  detail::kernels::clamp_all(x, lo, hi);
}

// Clamps every element into [-clip_value, clip_value].
// Throws std::invalid_argument if clip_value < 0 or NaN.
template <class BufferOrGroup>
void clip_by_value(BufferOrGroup&& x, double clip_value) {
  detail::check_clip_value(clip_value);
  clip_by_value(x, -clip_value, clip_value);
}

// A fixed value-clipping configuration for a training loop.
class value_clipper {
 public:
  explicit value_clipper(double clip_value) : lo_(-clip_value), hi_(clip_value) { detail::check_clip_value(clip_value); }
  value_clipper(double lo, double hi) : lo_(lo), hi_(hi) { detail::check_bounds(lo, hi); }

  template <class BufferOrGroup>
  void operator()(BufferOrGroup&& x) const {
    clip_by_value(x, lo_, hi_);
  }

  double lo() const noexcept { return lo_; }
  double hi() const noexcept { return hi_; }

 private:
  double lo_;
  double hi_;
};

}  // namespace gradclip

#endif  // GRADCLIP_CLIP_VALUE_HPP
